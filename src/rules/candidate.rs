//! Who may become primary, and in which order: the one candidate ranking, used by the
//! leader's failover and switchover decisions (`policy`) and by the early elections
//! ([`super::election::rank`]).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::types::{NodeId, NodeRole, ResourceHealth};

/// One member as the leader sees it when choosing a primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CandidateView {
    pub id: NodeId,
    pub role: NodeRole,
    pub priority: u32,
    /// Alive on heartbeat (always true for the leader itself).
    pub alive: bool,
    pub health: ResourceHealth,
    pub drained: bool,
    /// Entries behind the leader's last log index (None: unknown, not replicating).
    pub lag: Option<u64>,
}

/// Why a member cannot become primary (shown to operators when a switchover is refused
/// or no candidate exists).
#[derive(Error, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Ineligible {
    #[error("node {0} is a {1}; only voters can become primary")]
    NotVoter(NodeId, NodeRole),
    #[error("node {0} is not a configured member")]
    NotMember(NodeId),
    #[error("node {0} is not heard on any heartbeat link")]
    NotAlive(NodeId),
    #[error("node {0}'s service is unhealthy (monitor failing), or the node is stopping")]
    Unhealthy(NodeId),
    #[error("node {0} is drained; `quorate node undrain {0}` makes it a candidate again")]
    Drained(NodeId),
    #[error("node {node} is {lag} entries behind the leader (max_lag_on_failover = {max})")]
    Lagging { node: NodeId, lag: u64, max: u64 },
    #[error("node {0}'s replication progress is unknown (ask the leader)")]
    LagUnknown(NodeId),
}

/// Eligibility rules, in the order operators usually ask about them.
///
/// Witnesses and learners never qualify: a witness only breaks ties in a two-node pair
/// and usually has no copy of the service; a learner does not vote, so a primary there
/// could not keep a quorum lease.
pub fn eligibility(c: &CandidateView, max_lag: u64) -> Result<(), Ineligible> {
    if !c.role.may_be_primary() {
        return Err(Ineligible::NotVoter(c.id, c.role));
    }
    if !c.alive {
        return Err(Ineligible::NotAlive(c.id));
    }
    if !c.health.is_usable() {
        return Err(Ineligible::Unhealthy(c.id));
    }
    if c.drained {
        return Err(Ineligible::Drained(c.id));
    }
    match c.lag {
        None => Err(Ineligible::LagUnknown(c.id)),
        Some(lag) if lag > max_lag => Err(Ineligible::Lagging {
            node: c.id,
            lag,
            max: max_lag,
        }),
        Some(_) => Ok(()),
    }
}

/// Eligible members, best first: priority (higher first), then lag (smaller first: less
/// to catch up, fewer writes at risk), then id (smaller first: a total order, so every
/// leader that sees the same inputs picks the same node).
pub fn rank_candidates(cands: &[CandidateView], max_lag: u64) -> Vec<&CandidateView> {
    let mut v: Vec<&CandidateView> = cands
        .iter()
        .filter(|c| eligibility(c, max_lag).is_ok())
        .collect();
    v.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.lag.unwrap_or(u64::MAX).cmp(&b.lag.unwrap_or(u64::MAX)))
            .then(a.id.cmp(&b.id))
    });
    v
}

/// The best eligible member, if any.
pub fn best_candidate(cands: &[CandidateView], max_lag: u64) -> Option<NodeId> {
    rank_candidates(cands, max_lag).first().map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voter(id: NodeId, priority: u32, lag: u64) -> CandidateView {
        CandidateView {
            id,
            role: NodeRole::Voter,
            priority,
            alive: true,
            health: ResourceHealth::Healthy,
            drained: false,
            lag: Some(lag),
        }
    }

    #[test]
    fn higher_priority_wins_over_smaller_lag() {
        let c = [voter(1, 1, 0), voter(2, 5, 10)];
        assert_eq!(best_candidate(&c, 100), Some(2));
    }

    #[test]
    fn equal_priority_smaller_lag_wins() {
        let c = [voter(1, 1, 7), voter(2, 1, 3)];
        assert_eq!(best_candidate(&c, 100), Some(2));
    }

    #[test]
    fn equal_priority_and_lag_smaller_id_wins() {
        let c = [voter(3, 1, 0), voter(2, 1, 0)];
        assert_eq!(best_candidate(&c, 100), Some(2));
    }

    #[test]
    fn witness_is_never_chosen_even_with_highest_priority() {
        let mut w = voter(1, 100, 0);
        w.role = NodeRole::Witness;
        let c = [w, voter(2, 1, 0)];
        assert_eq!(best_candidate(&c, 100), Some(2));
        assert_eq!(best_candidate(&c[..1], 100), None);
    }

    #[test]
    fn learner_is_never_chosen() {
        let mut l = voter(1, 100, 0);
        l.role = NodeRole::Learner;
        assert_eq!(
            eligibility(&l, 100),
            Err(Ineligible::NotVoter(1, NodeRole::Learner))
        );
    }

    #[test]
    fn dead_node_is_not_eligible() {
        let mut d = voter(1, 9, 0);
        d.alive = false;
        assert_eq!(best_candidate(&[d, voter(2, 1, 0)], 100), Some(2));
    }

    #[test]
    fn unhealthy_node_is_not_eligible_but_unknown_health_is() {
        let mut u = voter(1, 9, 0);
        u.health = ResourceHealth::Unhealthy;
        assert_eq!(eligibility(&u, 100), Err(Ineligible::Unhealthy(1)));
        u.health = ResourceHealth::Unknown;
        assert_eq!(eligibility(&u, 100), Ok(()));
    }

    #[test]
    fn drained_node_is_not_eligible() {
        let mut d = voter(1, 9, 0);
        d.drained = true;
        assert_eq!(eligibility(&d, 100), Err(Ineligible::Drained(1)));
    }

    #[test]
    fn lag_above_max_lag_is_not_eligible_and_equal_is() {
        assert_eq!(eligibility(&voter(1, 1, 100), 100), Ok(()));
        assert_eq!(
            eligibility(&voter(1, 1, 101), 100),
            Err(Ineligible::Lagging {
                node: 1,
                lag: 101,
                max: 100
            })
        );
    }

    #[test]
    fn unknown_lag_is_not_eligible() {
        let mut u = voter(1, 1, 0);
        u.lag = None;
        assert_eq!(eligibility(&u, 100), Err(Ineligible::LagUnknown(1)));
    }

    #[test]
    fn ranking_is_a_total_order_independent_of_input_order() {
        let a = [
            voter(4, 2, 1),
            voter(1, 2, 1),
            voter(3, 5, 9),
            voter(2, 2, 0),
        ];
        let mut b = a.clone();
        b.reverse();
        let ids = |v: Vec<&CandidateView>| v.iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(rank_candidates(&a, 100)), vec![3, 2, 1, 4]);
        assert_eq!(ids(rank_candidates(&b, 100)), vec![3, 2, 1, 4]);
    }
}
