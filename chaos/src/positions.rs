//! The service positions a chaos run records, and the data checker over them: no promotion
//! of a node whose reported position was behind another eligible node's by more than the
//! configured `max_service_lag_bytes`.
//!
//! In data mode the marker hook plays a replicated service (`cluster-config/local/hooks/
//! marker.sh`) and every monitor run appends `<CLOCK_MONOTONIC ns> <node> <timeline>
//! <position>` to `service/positions.log`. For each promote in the hook log the checker takes
//! every node's last report before it and compares the promoted node with each other node
//! that could have been chosen instead:
//! - its report is fresh (within [`FRESH_NS`] of the promotion: its monitor was running, so
//!   the node was up and heard);
//! - no kill or pause of that node was in force (a killed or paused node is not eligible;
//!   its files may still say otherwise; a stalled replica is up and eligible, just behind);
//! - no network fault was in force at all (who heard whom is then unknown: the promotion is
//!   skipped and counted);
//! - it is on the promoted node's timeline (positions on different timelines do not compare).
//!
//! An anomaly is such a node ahead by more than `max_service_lag_bytes` + [`SLACK_BYTES`]
//! (the slack covers the heartbeat and monitor delays, during which a streaming replica
//! moves on by at most a few monitor rounds of writes).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::hooklog::HookEvent;
use crate::nemesis::{FaultEvent, FaultKind};

/// A report older than this at a promotion says nothing about the node then.
pub const FRESH_NS: u64 = 1_500_000_000;
/// Tolerance on top of `max_service_lag_bytes` (see the module doc): four monitor rounds of
/// the marker's 64-byte writes.
pub const SLACK_BYTES: u64 = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PositionReport {
    pub at_ns: u64,
    pub node: u64,
    pub timeline: u64,
    pub position: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("positions log line {line}: {problem}: {text:?}")]
pub struct PositionLogError {
    pub line: usize,
    pub problem: &'static str,
    pub text: String,
}

/// Parses the whole log (blank lines skipped), sorted by time.
pub fn parse(text: &str) -> Result<Vec<PositionReport>, PositionLogError> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let bad = |problem| PositionLogError {
            line: i + 1,
            problem,
            text: l.to_string(),
        };
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() != 4 {
            return Err(bad("expected 4 fields"));
        }
        let num = |s: &str, what| s.parse::<u64>().map_err(|_| bad(what));
        out.push(PositionReport {
            at_ns: num(f[0], "bad timestamp")?,
            node: num(f[1], "bad node id")?,
            timeline: num(f[2], "bad timeline")?,
            position: num(f[3], "bad position")?,
        });
    }
    out.sort_by_key(|r| r.at_ns);
    Ok(out)
}

/// A promotion of a node that was further behind another eligible node than allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BehindPromotion {
    pub at_ns: u64,
    pub promoted: u64,
    pub epoch: u64,
    pub timeline: u64,
    pub promoted_position: u64,
    pub ahead: u64,
    pub ahead_position: u64,
    pub behind_bytes: u64,
}

/// What the checker found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PositionCheck {
    pub anomalies: Vec<BehindPromotion>,
    /// Promotions compared against at least one other node.
    pub checked: usize,
    /// Promotions during a network fault (not judged).
    pub skipped_network: usize,
}

/// A fault's (start, heal) on the run's monotonic clock.
type Window = (u64, u64);

/// (start, heal) per node of the faults that make a node ineligible (kill, pause),
/// and the windows of network faults. A start never healed lasts to the end.
fn windows(faults: &[FaultEvent]) -> (BTreeMap<u64, Vec<Window>>, Vec<Window>) {
    let mut sorted: Vec<&FaultEvent> = faults.iter().collect();
    sorted.sort_by_key(|f| f.time_ns);
    let mut open: Vec<(FaultKind, Option<u64>, u64)> = Vec::new();
    let mut node_windows: BTreeMap<u64, Vec<Window>> = BTreeMap::new();
    let mut network = Vec::new();
    let mut close = |kind: FaultKind, node: Option<u64>, start: u64, end: u64| {
        if kind.needs_network() {
            network.push((start, end));
        } else if kind == FaultKind::Stall {
            // A stalled replica is up, heard and eligible, just behind: a rival like any.
        } else if let Some(n) = node {
            node_windows.entry(n).or_default().push((start, end));
        }
    };
    for f in sorted {
        let lasting = f.kind.lasts();
        match f.phase.as_str() {
            "start" if lasting => open.push((f.kind, f.node, f.time_ns)),
            "heal" => {
                if let Some(i) = open
                    .iter()
                    .position(|(k, n, _)| *k == f.kind && *n == f.node)
                {
                    let (kind, node, start) = open.remove(i);
                    close(kind, node, start, f.time_ns);
                }
            }
            _ => {}
        }
    }
    for (kind, node, start) in open {
        close(kind, node, start, u64::MAX);
    }
    (node_windows, network)
}

fn within(w: &[Window], t: u64) -> bool {
    w.iter().any(|(s, e)| *s <= t && t <= *e)
}

/// The checker (see the module doc).
pub fn check(
    reports: &[PositionReport],
    hooks: &[HookEvent],
    faults: &[FaultEvent],
    max_service_lag_bytes: u64,
) -> PositionCheck {
    let (node_faults, network) = windows(faults);
    let mut result = PositionCheck::default();
    for p in hooks.iter().filter(|h| h.event == "promote") {
        let t = p.at_ns;
        // Each node's last report before the promotion.
        let mut last: BTreeMap<u64, PositionReport> = BTreeMap::new();
        for r in reports.iter().take_while(|r| r.at_ns <= t) {
            last.insert(r.node, *r);
        }
        let Some(mine) = last.get(&p.node).copied() else {
            continue;
        };
        if within(&network, t) {
            result.skipped_network += 1;
            continue;
        }
        let rivals: Vec<PositionReport> = last
            .values()
            .filter(|r| r.node != p.node)
            .filter(|r| t.saturating_sub(r.at_ns) <= FRESH_NS)
            .filter(|r| !node_faults.get(&r.node).is_some_and(|w| within(w, t)))
            .filter(|r| r.timeline == mine.timeline)
            .copied()
            .collect();
        if rivals.is_empty() {
            continue;
        }
        result.checked += 1;
        let limit = max_service_lag_bytes.saturating_add(SLACK_BYTES);
        if let Some(best) = rivals.iter().max_by_key(|r| r.position) {
            let behind = best.position.saturating_sub(mine.position);
            if behind > limit {
                result.anomalies.push(BehindPromotion {
                    at_ns: t,
                    promoted: p.node,
                    epoch: p.epoch,
                    timeline: mine.timeline,
                    promoted_position: mine.position,
                    ahead: best.node,
                    ahead_position: best.position,
                    behind_bytes: behind,
                });
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn hooks(text: &str) -> Vec<HookEvent> {
        crate::hooklog::parse(text).unwrap()
    }

    fn fault(time_ns: u64, kind: FaultKind, phase: &str, node: u64) -> FaultEvent {
        FaultEvent {
            time_ns,
            kind,
            phase: phase.into(),
            node: Some(node),
            primary_before: None,
            detail: String::new(),
        }
    }

    fn log(lines: &[(u64, u64, u64, u64)]) -> Vec<PositionReport> {
        let text: String = lines
            .iter()
            .map(|(t, n, tl, p)| format!("{t} {n} {tl} {p}\n"))
            .collect();
        parse(&text).unwrap()
    }

    #[test]
    fn promoting_the_node_far_behind_a_fresh_eligible_one_is_an_anomaly() {
        // Node 1 was primary (timeline 2); node 2 stalled at 1000, node 3 streamed to 9000.
        let reports = log(&[
            (10 * S, 2, 2, 1_000),
            (10 * S, 3, 2, 8_500),
            (10 * S + 1, 1, 2, 9_000),
        ]);
        let h = hooks(&format!("{} 2 promote 3\n", 10 * S + S / 2));
        let r = check(&reports, &h, &[], 1_024);
        assert_eq!(r.checked, 1);
        assert_eq!(r.anomalies.len(), 1, "{r:?}");
        let a = &r.anomalies[0];
        assert_eq!((a.promoted, a.ahead, a.behind_bytes), (2, 1, 8_000));
    }

    #[test]
    fn the_best_node_winning_passes_and_slack_absorbs_streaming_delay() {
        let reports = log(&[(10 * S, 2, 2, 1_000), (10 * S, 3, 2, 1_000 + 1_024 + 200)]);
        let h = hooks(&format!("{} 2 promote 3\n", 10 * S + 1));
        assert!(check(&reports, &h, &[], 1_024).anomalies.is_empty());
        let h = hooks(&format!("{} 3 promote 3\n", 10 * S + 1));
        assert!(check(&reports, &h, &[], 1_024).anomalies.is_empty());
    }

    #[test]
    fn killed_stale_other_timeline_and_network_faulted_rivals_do_not_count() {
        // Node 1 (the old primary, ahead) was killed at 9 s; node 3's last report is stale;
        // node 4 is on another timeline.
        let reports = log(&[
            (5 * S, 3, 2, 50_000),
            (10 * S, 1, 2, 90_000),
            (10 * S, 2, 2, 1_000),
            (10 * S, 4, 1, 70_000),
        ]);
        let faults = [fault(9 * S, FaultKind::Kill, "start", 1)];
        let h = hooks(&format!("{} 2 promote 3\n", 10 * S + 1));
        let r = check(&reports, &h, &faults, 1_024);
        assert!(r.anomalies.is_empty(), "{r:?}");
        assert_eq!(r.checked, 0, "no rival left to compare with");

        // The same promotion while a partition is in force is skipped, not judged.
        let faults = [
            fault(9 * S, FaultKind::Partition, "start", 3),
            fault(11 * S, FaultKind::Partition, "heal", 3),
        ];
        let reports = log(&[(10 * S, 1, 2, 90_000), (10 * S, 2, 2, 1_000)]);
        let r = check(&reports, &h, &faults, 1_024);
        assert_eq!((r.skipped_network, r.anomalies.len()), (1, 0));
    }

    #[test]
    fn malformed_lines_are_named() {
        let e = parse("1 2 3\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(parse("1 2 x 4\n")
            .unwrap_err()
            .to_string()
            .contains("timeline"));
    }
}
