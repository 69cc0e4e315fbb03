//! The fault schedule: generated up front from a seed, so a run can be repeated; the node a
//! step hits when it names "the primary" is resolved when the step runs.
//!
//! Faults run one at a time (a fault, its heal, a gap, the next), so a majority is always
//! intact between heals and every fault is healed before the final checks.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Most steps a schedule may hold, whatever the duration and interval.
pub const MAX_STEPS: usize = 10_000;
/// Quiet time after the start before the first fault, so the cluster settles.
pub const WARMUP: Duration = Duration::from_secs(3);
/// Quiet time kept free of faults before the workload stops.
pub const COOLDOWN: Duration = Duration::from_secs(2);
/// Shortest gap, fault or interval the schedule produces.
pub const MIN_SPAN: Duration = Duration::from_millis(200);

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// kill -9, stay down for the step's duration, start again.
    Kill,
    /// SIGSTOP for the step's duration, then SIGCONT.
    Pause,
    /// SIGTERM (graceful stop), then start again at once.
    Restart,
    /// Planned switchover to another node.
    Switchover,
    /// Failback to the home node (refused unless the cluster is failed over).
    Failback,
    /// Network partition (netns backend): isolate, minority/majority, bridge or one-way,
    /// by the step's variant.
    Partition,
    /// Random packet loss into one node (netns backend), 20-49% by the step's variant.
    Loss,
    /// The node's link down (netns backend).
    Link,
    /// A replica's replication stalls (its service stops streaming), the primary takes a
    /// burst of writes the stalled replica misses, then the primary is killed: the failover
    /// must not choose the replica that is behind. Both heal at the step's end.
    Stall,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Restart => "restart",
            FaultKind::Switchover => "switchover",
            FaultKind::Failback => "failback",
            FaultKind::Partition => "partition",
            FaultKind::Loss => "loss",
            FaultKind::Link => "link",
            FaultKind::Stall => "stall",
        }
    }

    pub fn parse(s: &str) -> Result<FaultKind, String> {
        Ok(match s.trim() {
            "kill" => FaultKind::Kill,
            "pause" => FaultKind::Pause,
            "restart" => FaultKind::Restart,
            "switchover" => FaultKind::Switchover,
            "failback" => FaultKind::Failback,
            "partition" => FaultKind::Partition,
            "loss" => FaultKind::Loss,
            "link" => FaultKind::Link,
            "stall" => FaultKind::Stall,
            other => {
                return Err(format!(
                    "unknown nemesis {other:?}; choose from kill, pause, restart, switchover, failback, stall, and with --backend netns partition, loss, link"
                ))
            }
        })
    }

    /// Whether the step keeps its node faulted for a while (and so has a heal).
    pub fn lasts(self) -> bool {
        matches!(
            self,
            FaultKind::Kill
                | FaultKind::Pause
                | FaultKind::Partition
                | FaultKind::Loss
                | FaultKind::Link
                | FaultKind::Stall
        )
    }

    /// Whether the fault needs the netns backend's network.
    pub fn needs_network(self) -> bool {
        matches!(
            self,
            FaultKind::Partition | FaultKind::Loss | FaultKind::Link
        )
    }
}

/// Which node a step hits.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The primary when the step runs.
    Primary,
    /// A node picked by the seed: the `n`th of the cluster's nodes, modulo their count.
    Node(u64),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Step {
    /// From the start of the workload.
    pub at_ms: u64,
    pub kind: FaultKind,
    pub target: Target,
    /// How long the fault lasts (kill, pause); 0 for instantaneous ones.
    pub duration_ms: u64,
    /// Picks the shape of a partition or the loss rate.
    #[serde(default)]
    pub variant: u32,
}

#[derive(Clone, Debug)]
pub struct ScheduleSpec {
    pub seed: u64,
    pub kinds: Vec<FaultKind>,
    pub run: Duration,
    /// Mean gap between the end of one fault and the start of the next.
    pub interval: Duration,
    /// Mean length of a lasting fault.
    pub fault_duration: Duration,
    pub nodes: usize,
}

fn jitter(rng: &mut impl Rng, mean: Duration) -> Duration {
    let f: f64 = rng.gen_range(0.5..1.5);
    mean.mul_f64(f).max(MIN_SPAN)
}

/// The whole schedule; every step (and its heal) ends before `run - COOLDOWN`.
pub fn schedule(spec: &ScheduleSpec) -> Vec<Step> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let mut steps = Vec::new();
    if spec.kinds.is_empty() || spec.nodes == 0 {
        return steps;
    }
    let end = spec.run.saturating_sub(COOLDOWN);
    let mut t = WARMUP;
    while steps.len() < MAX_STEPS {
        t += jitter(&mut rng, spec.interval);
        let kind = spec.kinds[rng.gen_range(0..spec.kinds.len())];
        let duration = if kind.lasts() {
            jitter(&mut rng, spec.fault_duration)
        } else {
            Duration::ZERO
        };
        let target = if rng.gen_bool(0.5) {
            Target::Primary
        } else {
            Target::Node(rng.gen_range(0..spec.nodes as u64))
        };
        let variant = if kind.needs_network() { rng.gen() } else { 0 };
        if t + duration > end {
            break;
        }
        steps.push(Step {
            at_ms: t.as_millis() as u64,
            kind,
            target,
            duration_ms: duration.as_millis() as u64,
            variant,
        });
        t += duration;
    }
    steps
}

/// One line of `faults.jsonl`: what the nemesis did, on the run's monotonic clock.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FaultEvent {
    pub time_ns: u64,
    pub kind: FaultKind,
    /// "start", "heal", or "refused" (an operator request the cluster declined).
    pub phase: String,
    pub node: Option<u64>,
    /// The primary as the nemesis saw it just before the fault.
    pub primary_before: Option<u64>,
    #[serde(default)]
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> ScheduleSpec {
        ScheduleSpec {
            seed,
            kinds: vec![FaultKind::Kill, FaultKind::Pause, FaultKind::Switchover],
            run: Duration::from_secs(60),
            interval: Duration::from_secs(4),
            fault_duration: Duration::from_secs(3),
            nodes: 3,
        }
    }

    #[test]
    fn same_seed_same_schedule_other_seed_other_schedule() {
        assert_eq!(schedule(&spec(7)), schedule(&spec(7)));
        assert_ne!(schedule(&spec(7)), schedule(&spec(8)));
    }

    #[test]
    fn steps_do_not_overlap_and_end_before_the_cooldown() {
        let s = schedule(&spec(7));
        assert!(s.len() >= 4, "{s:?}");
        let end_ms = (Duration::from_secs(60) - COOLDOWN).as_millis() as u64;
        let mut free_from = WARMUP.as_millis() as u64;
        for st in &s {
            assert!(st.at_ms >= free_from, "{st:?} starts before {free_from}");
            assert!(st.at_ms + st.duration_ms <= end_ms);
            assert_eq!(st.duration_ms == 0, !st.kind.lasts());
            if let Target::Node(n) = st.target {
                assert!(n < 3);
            }
            free_from = st.at_ms + st.duration_ms;
        }
    }

    #[test]
    fn no_kinds_or_short_runs_give_no_faults() {
        let mut s = spec(1);
        s.kinds.clear();
        assert!(schedule(&s).is_empty());
        let mut s = spec(1);
        s.run = Duration::from_secs(4);
        assert!(schedule(&s).is_empty());
    }

    #[test]
    fn fault_names_parse_and_network_faults_are_marked() {
        assert!(FaultKind::parse("partition").unwrap().needs_network());
        assert!(!FaultKind::parse("kill").unwrap().needs_network());
        assert!(FaultKind::parse("bogus").unwrap_err().contains("netns"));
        assert_eq!(FaultKind::parse(" kill").unwrap(), FaultKind::Kill);
    }
}
