//! The hook log written by `cluster-config/local/hooks/marker.sh`, and the primary
//! exclusivity checker over it.
//!
//! Every line is `<CLOCK_MONOTONIC ns> <node> <event> <epoch>`. All nodes run on one machine,
//! so the timestamps share one clock and the log is a total order of hook starts. A node
//! holds the service from the start of its promote hook until the start of its next demote
//! hook (or, if it is killed, until it is fenced or restarted: a killed daemon's service is
//! taken to be gone once the node's next hook of any kind runs, i.e. after its restart, or
//! once another node fenced it).

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HookEvent {
    pub at_ns: u64,
    pub node: u64,
    pub event: String,
    pub epoch: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HookLogError {
    #[error("hook log line {line}: {problem}: {text:?}")]
    Malformed {
        line: usize,
        problem: &'static str,
        text: String,
    },
}

/// Parses the whole log; blank lines are skipped, malformed ones are errors.
pub fn parse(text: &str) -> Result<Vec<HookEvent>, HookLogError> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = l.split_whitespace().collect();
        let bad = |problem| HookLogError::Malformed {
            line: i + 1,
            problem,
            text: l.to_string(),
        };
        if f.len() != 4 {
            return Err(bad("expected 4 fields"));
        }
        out.push(HookEvent {
            at_ns: f[0].parse().map_err(|_| bad("bad timestamp"))?,
            node: f[1].parse().map_err(|_| bad("bad node id"))?,
            event: f[2].to_string(),
            epoch: f[3].parse().map_err(|_| bad("bad epoch"))?,
        });
    }
    out.sort_by_key(|e| e.at_ns);
    Ok(out)
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Anomaly {
    /// Two nodes held the service at the same time.
    TwoPrimaries {
        at_ns: u64,
        holders: Vec<(u64, u64)>,
    },
    /// A promotion reused or went back to an epoch.
    EpochNotIncreasing {
        at_ns: u64,
        node: u64,
        epoch: u64,
        previous: u64,
    },
}

/// Checks that at every instant at most one node holds the service, and that promotions
/// carry strictly increasing epochs (a local restart re-promotes at the same epoch on the
/// same node, which is allowed).
pub fn check_exclusive(events: &[HookEvent]) -> Vec<Anomaly> {
    use std::collections::BTreeMap;
    let mut holding: BTreeMap<u64, u64> = BTreeMap::new(); // node -> epoch
    let mut last_epoch: Option<(u64, u64)> = None; // (node, epoch)
    let mut anomalies = Vec::new();
    for e in events {
        match e.event.as_str() {
            "promote" => {
                if let Some((n, prev)) = last_epoch {
                    let same_restart = n == e.node && prev == e.epoch;
                    if e.epoch < prev || (e.epoch == prev && !same_restart) {
                        anomalies.push(Anomaly::EpochNotIncreasing {
                            at_ns: e.at_ns,
                            node: e.node,
                            epoch: e.epoch,
                            previous: prev,
                        });
                    }
                }
                last_epoch = Some((e.node, e.epoch.max(last_epoch.map(|x| x.1).unwrap_or(0))));
                holding.insert(e.node, e.epoch);
                if holding.len() > 1 {
                    anomalies.push(Anomaly::TwoPrimaries {
                        at_ns: e.at_ns,
                        holders: holding.iter().map(|(n, ep)| (*n, *ep)).collect(),
                    });
                }
            }
            "demote" | "rejoin" => {
                holding.remove(&e.node);
            }
            "fence" => {
                // The fence hook of `e.node` targets the recorded primary; the marker does
                // not log the target, so a fence releases every *other* holder.
                holding.retain(|n, _| *n == e.node);
            }
            _ => {}
        }
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(text: &str) -> Vec<HookEvent> {
        parse(text).unwrap()
    }

    #[test]
    fn clean_failover_passes() {
        let log = "1 2 demote 0\n2 1 promote 1\n5 2 fence 1\n6 2 promote 2\n9 1 demote 2\n";
        assert!(check_exclusive(&ev(log)).is_empty());
    }

    #[test]
    fn overlapping_primaries_are_caught() {
        let log = "2 1 promote 1\n6 2 promote 2\n9 1 demote 2\n";
        let a = check_exclusive(&ev(log));
        assert!(
            matches!(a[0], Anomaly::TwoPrimaries { at_ns: 6, .. }),
            "{a:?}"
        );
    }

    #[test]
    fn epoch_going_back_is_caught_and_local_restart_is_allowed() {
        let ok = "1 1 promote 1\n2 1 demote 1\n3 1 promote 1\n";
        assert!(check_exclusive(&ev(ok)).is_empty());
        let bad = "1 1 promote 2\n2 1 demote 2\n3 2 promote 2\n";
        assert!(matches!(
            check_exclusive(&ev(bad))[0],
            Anomaly::EpochNotIncreasing { .. }
        ));
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(parse("1 2 promote\n").is_err());
        assert!(parse("x 2 promote 1\n").is_err());
    }
}
