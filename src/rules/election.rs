//! Who campaigns, and when: the early-election timing and the vote gate.
//!
//! openraft's own election timer fires at a random point in `[min, max)` after the leader went
//! quiet, while voters refuse votes until their leader lease (`election_timeout_max`) runs
//! out. When the heartbeat detector sees the leader dead on every link, each eligible voter
//! schedules one pre-vote campaign for the moment that lease runs out, staggered by its rank
//! in the one candidate ranking ([`super::candidate::rank_candidates`]) so the best candidate
//! goes first and votes do not split.

use std::time::{Duration, Instant};

use super::candidate::{rank_candidates, CandidateView};
use crate::types::{LogIndex, NodeId, NodeRole, ResourceHealth};

/// Gap between successive candidates' early campaigns (best candidate first).
pub const CAMPAIGN_STAGGER: Duration = Duration::from_millis(15);
/// Least gap between two early campaigns for the same dead leader.
pub const CAMPAIGN_RETRY: Duration = Duration::from_millis(25);
/// Added after the voters' lease runs out before campaigning (timer granularity).
pub const CAMPAIGN_MARGIN: Duration = Duration::from_millis(3);

/// What the early-election scheduler knows about one possible candidate (this node
/// included): from its heartbeats, and from the committed state for `drained`.
#[derive(Clone, Debug, PartialEq)]
pub struct Contender {
    pub id: NodeId,
    pub priority: u32,
    pub applied_index: LogIndex,
    pub health: ResourceHealth,
    pub drained: bool,
}

/// Rank of `me` among `contenders` (0 = best) in the candidate ranking the leader uses for
/// failover: ineligible contenders (unhealthy, drained, more than `max_lag` entries behind
/// the most advanced contender) are left out; then priority desc, lag asc (applied index
/// desc), id asc. `None` when `me` is not among the eligible ones: it does not campaign
/// early (openraft's own timer still covers it).
pub fn rank(me: NodeId, contenders: &[Contender], max_lag: u64) -> Option<usize> {
    let newest = contenders.iter().map(|c| c.applied_index).max()?;
    let views: Vec<CandidateView> = contenders
        .iter()
        .map(|c| CandidateView {
            id: c.id,
            role: NodeRole::Voter,
            priority: c.priority,
            alive: true,
            health: c.health,
            drained: c.drained,
            lag: Some(newest.saturating_sub(c.applied_index)),
        })
        .collect();
    rank_candidates(&views, max_lag)
        .iter()
        .position(|c| c.id == me)
}

/// When this node should start a pre-vote campaign: the leader was last heard at
/// `leader_last_heard`; voters' leases run `lease` from then; rank `k` waits `k × stagger`
/// more, plus a small `margin` for clock granularity.
pub fn campaign_at(
    leader_last_heard: Instant,
    lease: Duration,
    my_rank: usize,
    stagger: Duration,
    margin: Duration,
) -> Instant {
    leader_last_heard + lease + margin + stagger * (my_rank as u32)
}

/// A re-seeding node (its log was moved aside by `quorate recover --reseed`) neither votes nor
/// campaigns until it has caught up: with an empty log it would grant its vote to a
/// candidate lacking committed entries, and it may have forgotten a vote it gave in the
/// current term.
pub fn may_vote(reseeding: bool) -> bool {
    !reseeding
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: NodeId, priority: u32, applied: u64) -> Contender {
        Contender {
            id,
            priority,
            applied_index: LogIndex(applied),
            health: ResourceHealth::Healthy,
            drained: false,
        }
    }

    #[test]
    fn rank_orders_by_priority_then_log_then_id() {
        let cs = vec![c(1, 100, 10), c(2, 100, 12), c(3, 200, 1), c(4, 100, 12)];
        assert_eq!(rank(3, &cs, u64::MAX), Some(0));
        assert_eq!(rank(2, &cs, u64::MAX), Some(1));
        assert_eq!(rank(4, &cs, u64::MAX), Some(2));
        assert_eq!(rank(1, &cs, u64::MAX), Some(3));
        assert_eq!(rank(9, &cs, u64::MAX), None);
    }

    #[test]
    fn unhealthy_drained_or_lagging_contenders_do_not_campaign_early() {
        let mut sick = c(1, 200, 12);
        sick.health = ResourceHealth::Unhealthy;
        let mut drained = c(2, 200, 12);
        drained.drained = true;
        let behind = c(3, 200, 2);
        let ok = c(4, 100, 12);
        let cs = vec![sick, drained, behind, ok];
        assert_eq!(rank(1, &cs, 5), None);
        assert_eq!(rank(2, &cs, 5), None);
        assert_eq!(rank(3, &cs, 5), None, "10 entries behind, max_lag 5");
        assert_eq!(rank(4, &cs, 5), Some(0));
        assert_eq!(
            rank(3, &cs, 10),
            Some(0),
            "within max_lag it ranks by priority"
        );
    }

    #[test]
    fn campaign_waits_for_the_lease_and_staggers_by_rank() {
        let t0 = Instant::now();
        let lease = Duration::from_millis(300);
        let stagger = Duration::from_millis(10);
        let m = Duration::from_millis(2);
        assert_eq!(
            campaign_at(t0, lease, 0, stagger, m),
            t0 + Duration::from_millis(302)
        );
        assert_eq!(
            campaign_at(t0, lease, 2, stagger, m),
            t0 + Duration::from_millis(322)
        );
    }

    #[test]
    fn a_reseeding_node_does_not_vote() {
        assert!(!may_vote(true));
        assert!(may_vote(false));
    }
}
