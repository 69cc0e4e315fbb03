//! The hook log written by `cluster-config/local/hooks/marker.sh`, and the primary
//! exclusivity checker over it.
//!
//! Every line is `<CLOCK_MONOTONIC ns> <node> <event> <epoch>`. All nodes run on one machine,
//! so the timestamps share one clock and the log is a total order of hook starts. A node
//! holds the service from the start of its promote hook until the start of its next demote
//! or rejoin hook, or until another node fenced it *successfully*: a fence is logged as
//! `fence` at its start and then `fence_ok` or `fence_failed` (its outcome); only `fence_ok`
//! releases the holders. A failed fence proves nothing about the old primary, which may still
//! be serving, so a promotion after it overlaps the old holder unless that one demoted.

use serde::Serialize;

/// The marker's outcome line of a fence that exited 0 (see the module doc).
pub const FENCE_OK: &str = "fence_ok";
/// The marker's outcome line of a fence that failed.
pub const FENCE_FAILED: &str = "fence_failed";

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
            FENCE_OK => {
                // The fence hook of `e.node` targets the recorded primary; the marker does
                // not log the target, so a successful fence releases every *other* holder.
                // `fence` (the start) and `fence_failed` release nobody.
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
        let log = "1 2 demote 0\n2 1 promote 1\n5 2 fence 1\n5 2 fence_ok 1\n6 2 promote 2\n\
                   9 1 demote 2\n";
        assert!(check_exclusive(&ev(log)).is_empty());
    }

    /// Issue 13: node 1 holds the service and never demotes; node 2's fence of it fails and
    /// node 2 promotes anyway (best-effort fencing): two primaries, whatever the fence started.
    #[test]
    fn a_failed_fence_does_not_release_the_old_holder() {
        let log = "2 1 promote 1\n5 2 fence 1\n5 2 fence_failed 1\n6 2 promote 2\n";
        let a = check_exclusive(&ev(log));
        assert_eq!(
            a,
            vec![Anomaly::TwoPrimaries {
                at_ns: 6,
                holders: vec![(1, 1), (2, 2)]
            }],
            "{a:?}"
        );
        // A fence with no outcome line (killed by its timeout, or an old marker) is no
        // proof either.
        let log = "2 1 promote 1\n5 2 fence 1\n6 2 promote 2\n";
        assert_eq!(check_exclusive(&ev(log)).len(), 1);
    }

    #[test]
    fn a_successful_fence_releases_the_old_holder() {
        let log = "2 1 promote 1\n5 2 fence 1\n5 2 fence_ok 1\n6 2 promote 2\n";
        assert_eq!(check_exclusive(&ev(log)), vec![]);
        // A failed attempt first, then one that worked: released by the second.
        let log = "2 1 promote 1\n5 2 fence 1\n5 2 fence_failed 1\n7 2 fence 1\n\
                   7 2 fence_ok 1\n8 2 promote 2\n";
        assert_eq!(check_exclusive(&ev(log)), vec![]);
    }

    /// The shipped marker hook writes the outcome lines the checker reads: run it for real
    /// as a fence, once succeeding and once failing (its fence-fail switch).
    #[test]
    fn the_marker_hook_records_the_fence_outcome() {
        let marker = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../cluster-config/local/hooks/marker.sh");
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("hooks.log");
        let fail = dir.path().join("fence-fail");
        let run = |ns: &str| {
            std::process::Command::new("sh")
                .arg(&marker)
                .env("QUORATE_MARKER_LOG", &log)
                .env("QUORATE_FENCE_FAIL_FILE", &fail)
                .env("QUORATE_MONOTONIC_NS", ns)
                .env("QUORATE_NODE", "2")
                .env("QUORATE_EPOCH", "1")
                .env("QUORATE_HOOK", "fence")
                .status()
                .expect("run marker.sh")
        };
        assert!(run("10").success());
        std::fs::write(&fail, "").expect("create the fence-fail switch");
        assert_eq!(run("20").code(), Some(1));
        let text = std::fs::read_to_string(&log).expect("hook log");
        let events: Vec<(u64, String)> =
            ev(&text).into_iter().map(|e| (e.at_ns, e.event)).collect();
        assert_eq!(
            events,
            vec![
                (10, "fence".to_string()),
                (10, FENCE_OK.to_string()),
                (20, "fence".to_string()),
                (20, FENCE_FAILED.to_string()),
            ],
            "{text}"
        );
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
