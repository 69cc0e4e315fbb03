//! The lease rules (safety rules 1 and 3): how long a primary may act on one quorum
//! acknowledgement, how much of the election timeout that leaves, and what a follower's fsync
//! may cost before a healthy primary lapses.

use std::time::Duration;

/// Clock-drift allowance on top of `lease`, as a share of `election_timeout_min`.
///
/// Why: the old primary times its lease on its own clock while the voters time their
/// election timeouts on theirs. Rule 3 (DESIGN.md) needs the old primary to stop before any
/// voter can elect a successor, i.e. `lease < election_timeout_min` on real clocks. Clock
/// *rates* differ (NTP-slewed clocks by up to 500 ppm, VMs under steal much more) and timers
/// fire late under load (a 2-core box under stress: several ms). 10 % of the election timeout
/// covers rate drift with a wide margin; the 5 ms floor covers timer and scheduling
/// lateness, which does not shrink with short timeouts. See `clock_drift_margin`.
pub const CLOCK_DRIFT_MARGIN_PERCENT: u32 = 10;
/// Floor of the clock-drift allowance (see [`CLOCK_DRIFT_MARGIN_PERCENT`]).
pub const CLOCK_DRIFT_MARGIN_MIN: Duration = Duration::from_millis(5);

/// The safety margin required between `lease` and `election_timeout_min`:
/// `max(CLOCK_DRIFT_MARGIN_PERCENT % of election_timeout_min, CLOCK_DRIFT_MARGIN_MIN)`.
pub fn clock_drift_margin(election_timeout_min: Duration) -> Duration {
    // Divide first: cannot overflow for any Duration (loses under 100 ns, irrelevant here).
    (election_timeout_min / 100 * CLOCK_DRIFT_MARGIN_PERCENT).max(CLOCK_DRIFT_MARGIN_MIN)
}

/// Rule 3: the old primary stops before any voter can elect a successor. A voter refuses
/// votes for `election_timeout_min` after the last append it received; the primary demotes
/// `lease` after its last quorum acknowledgement, which came no earlier than that append.
/// With the drift margin between them, the demote starts first.
pub fn lease_ends_before_election(lease: Duration, election_timeout_min: Duration) -> bool {
    lease + clock_drift_margin(election_timeout_min) < election_timeout_min
}

/// Smallest whole-millisecond `election_timeout_min` for which
/// [`lease_ends_before_election`] holds (the margin grows with the timeout, so "lease +
/// margin" is not enough).
pub fn min_safe_election_timeout(lease: Duration) -> Duration {
    const STEP: Duration = Duration::from_millis(1);
    /// The margin is at most 10 % of the timeout, so the answer lies within lease * 1.2 +
    /// CLOCK_DRIFT_MARGIN_MIN; this bounds the search in 1 ms steps generously.
    const MAX_STEPS: u32 = 100_000;
    let mut candidate =
        Duration::from_millis(lease.as_millis().saturating_add(1).min(u64::MAX as u128) as u64);
    for _ in 0..MAX_STEPS {
        if lease_ends_before_election(lease, candidate) {
            return candidate;
        }
        candidate += STEP;
    }
    candidate
}

/// The primary renews its lease on quorum acknowledgements, which come once per Raft
/// heartbeat: a lease shorter than two of them demotes on a single late heartbeat.
pub fn lease_covers_heartbeats(lease: Duration, raft_heartbeat: Duration) -> bool {
    lease >= raft_heartbeat * 2
}

/// How long a primary whose lease lapsed may wait for quorum acknowledgements to return (in
/// the same term) before it runs its demote hook: what is left of `election_timeout_min`
/// after `lease` and the clock-drift margin, so the demote hook still starts before any other
/// node can be elected.
pub fn lapse_grace(lease: Duration, election_timeout_min: Duration) -> Duration {
    election_timeout_min
        .saturating_sub(clock_drift_margin(election_timeout_min))
        .saturating_sub(lease)
}

/// The longest follower fsync a healthy primary survives without even a write pause: a
/// follower answers the leader's heartbeats only after its pending log flush, so the
/// primary's quorum clock can stand still for one Raft heartbeat interval plus that flush.
/// Beyond `lease + lapse_grace − raft_heartbeat` the lapse costs a demote.
pub fn lease_budget(
    lease: Duration,
    election_timeout_min: Duration,
    raft_heartbeat: Duration,
) -> Duration {
    (lease + lapse_grace(lease, election_timeout_min)).saturating_sub(raft_heartbeat)
}

/// How long ago a quorum last acknowledged this node as leader. `None` when it is not the
/// leader, or was never acknowledged. openraft records an acknowledgement only when a
/// follower answers, so a leader that is the only voter would never be acknowledged; it is
/// its own quorum, so its acknowledgement is always fresh.
pub fn quorum_acked_age(
    is_leader: bool,
    sole_voter: bool,
    last_acked_age: Option<Duration>,
) -> Option<Duration> {
    if !is_leader {
        return None;
    }
    if sole_voter {
        return Some(Duration::ZERO);
    }
    last_acked_age
}

/// Rule 1(c): the lease holds while the last quorum acknowledgement is younger than `lease`
/// (strictly: at exactly `lease` it has run out).
pub fn lease_holds(quorum_acked_age: Option<Duration>, lease: Duration) -> bool {
    quorum_acked_age.is_some_and(|age| age < lease)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_drift_margin_is_ten_percent_with_a_floor() {
        assert_eq!(clock_drift_margin(ms(150)), ms(15));
        assert_eq!(clock_drift_margin(ms(20)), CLOCK_DRIFT_MARGIN_MIN);
    }

    #[test]
    fn the_lease_must_end_a_margin_before_the_election_timeout() {
        assert!(lease_ends_before_election(ms(100), ms(150)));
        assert!(
            !lease_ends_before_election(ms(135), ms(150)),
            "135 + 15 is not below 150"
        );
        let min = min_safe_election_timeout(ms(135));
        assert!(lease_ends_before_election(ms(135), min));
        assert!(!lease_ends_before_election(ms(135), min - ms(1)));
    }

    #[test]
    fn the_lease_holds_strictly_inside_its_length() {
        assert!(lease_holds(Some(ms(99)), ms(100)));
        assert!(!lease_holds(Some(ms(100)), ms(100)));
        assert!(!lease_holds(None, ms(100)));
    }

    #[test]
    fn a_sole_voter_leader_is_its_own_fresh_quorum_and_a_follower_has_none() {
        assert_eq!(quorum_acked_age(true, true, None), Some(Duration::ZERO));
        assert_eq!(quorum_acked_age(true, false, Some(ms(7))), Some(ms(7)));
        assert_eq!(quorum_acked_age(true, false, None), None);
        assert_eq!(quorum_acked_age(false, true, Some(ms(1))), None);
    }

    #[test]
    fn grace_and_budget_are_what_the_timeout_leaves() {
        assert_eq!(lapse_grace(ms(100), ms(150)), ms(35));
        assert_eq!(lease_budget(ms(100), ms(150), ms(50)), ms(85));
        assert_eq!(lapse_grace(ms(140), ms(150)), Duration::ZERO);
    }
}
