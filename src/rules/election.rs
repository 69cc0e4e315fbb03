//! Who campaigns, and when: the early-election timing and the vote gate.
//!
//! openraft's own election timer fires at a random point in `[min, max)` after the leader went
//! quiet, while voters refuse votes until their leader lease (`election_timeout_max`) runs
//! out. When the heartbeat detector sees the leader dead on every link, each eligible voter
//! schedules one pre-vote campaign for the moment that lease runs out, staggered by its rank
//! in the one candidate ranking ([`super::candidate::rank_candidates`]) so the best candidate
//! goes first and votes do not split.

use std::time::{Duration, Instant};

use super::candidate::{rank_candidates, CandidateView, ServiceReference};
use crate::types::{LogIndex, NodeId, NodeRole, ResourceHealth, ServiceReport};

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
    /// Its service's last report (from its heartbeats; this node's from its monitor).
    pub service: ServiceReport,
}

/// What the early-election ranking judges service data by: the dead leader's last report
/// (its timeline and position are the data that counts) and `max_service_lag_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceLimits {
    pub leader_report: Option<ServiceReport>,
    pub max_service_lag_bytes: u64,
}

impl ServiceLimits {
    /// No service data: ranking by quorate's log alone.
    pub const NONE: ServiceLimits = ServiceLimits {
        leader_report: None,
        max_service_lag_bytes: u64::MAX,
    };
}

/// Rank of `me` among `contenders` (0 = best) in the candidate ranking the leader uses for
/// failover: ineligible contenders (unhealthy, drained, more than `max_lag` entries behind
/// the most advanced contender) are left out; then priority desc, lag asc (applied index
/// desc), id asc. `None` when `me` is not among the eligible ones: it does not campaign
/// early (openraft's own timer still covers it). Service positions rank and exclude as in
/// the leader's choice ([`super::candidate::rank_candidates`]).
pub fn rank(
    me: NodeId,
    contenders: &[Contender],
    max_lag: u64,
    service: ServiceLimits,
) -> Option<usize> {
    let newest = contenders.iter().map(|c| c.applied_index).max()?;
    let reference =
        ServiceReference::from_reports(service.leader_report, contenders.iter().map(|c| c.service));
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
            service: reference.standing(c.service, service.max_service_lag_bytes),
            excluded: None,
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
            service: ServiceReport::default(),
        }
    }

    #[test]
    fn early_elections_rank_by_service_position_and_skip_a_replica_too_far_behind() {
        let at = |id, applied, position| {
            let mut x = c(id, 100, applied);
            x.service = ServiceReport {
                position: Some(position),
                timeline: Some(1),
                ..ServiceReport::default()
            };
            x
        };
        // Node 1's quorate log is ahead, node 2's data is: node 2 goes first.
        let cs = vec![at(1, 12, 500), at(2, 10, 900)];
        let limits = ServiceLimits {
            leader_report: Some(ServiceReport {
                position: Some(1_000),
                timeline: Some(1),
                ..ServiceReport::default()
            }),
            max_service_lag_bytes: 200,
        };
        assert_eq!(rank(2, &cs, u64::MAX, limits), Some(0));
        // Node 1 is 500 bytes behind the dead leader's last position: it does not campaign.
        assert_eq!(rank(1, &cs, u64::MAX, limits), None);
    }

    #[test]
    fn rank_orders_by_priority_then_log_then_id() {
        let cs = vec![c(1, 100, 10), c(2, 100, 12), c(3, 200, 1), c(4, 100, 12)];
        assert_eq!(rank(3, &cs, u64::MAX, ServiceLimits::NONE), Some(0));
        assert_eq!(rank(2, &cs, u64::MAX, ServiceLimits::NONE), Some(1));
        assert_eq!(rank(4, &cs, u64::MAX, ServiceLimits::NONE), Some(2));
        assert_eq!(rank(1, &cs, u64::MAX, ServiceLimits::NONE), Some(3));
        assert_eq!(rank(9, &cs, u64::MAX, ServiceLimits::NONE), None);
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
        assert_eq!(rank(1, &cs, 5, ServiceLimits::NONE), None);
        assert_eq!(rank(2, &cs, 5, ServiceLimits::NONE), None);
        assert_eq!(
            rank(3, &cs, 5, ServiceLimits::NONE),
            None,
            "10 entries behind, max_lag 5"
        );
        assert_eq!(rank(4, &cs, 5, ServiceLimits::NONE), Some(0));
        assert_eq!(
            rank(3, &cs, 10, ServiceLimits::NONE),
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
