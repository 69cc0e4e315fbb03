//! The service's data as the API reports it: each member's last service report judged
//! against the cluster's most advanced data (the same rule the candidate ranking uses,
//! [`crate::rules::candidate::ServiceReference`]), and the verdicts of the data-aware
//! health endpoints (`/replica`, `/read-only`, `/health`).
//!
//! The verdicts are pure functions of what the node knows, so every rule is unit-tested.

use std::collections::BTreeMap;

use super::wire::ServiceStatus;
use crate::rules::candidate::{Ineligible, ServiceReference};
use crate::types::{Epoch, NodeId, NodeRole, ServiceReport};

/// Every member's report as this node knows it (its own from its monitor, the others' from
/// their last heartbeat) and the reference they are judged against.
#[derive(Clone, Debug, Default)]
pub struct ServiceView {
    pub reports: BTreeMap<NodeId, ServiceReport>,
    pub primary: Option<NodeId>,
    pub reference: ServiceReference,
    pub max_service_lag_bytes: u64,
}

impl ServiceView {
    pub fn new(
        reports: BTreeMap<NodeId, ServiceReport>,
        primary: Option<NodeId>,
        max_service_lag_bytes: u64,
    ) -> ServiceView {
        let reference = ServiceReference::from_reports(
            primary.and_then(|p| reports.get(&p).copied()),
            reports.values().copied(),
        );
        ServiceView {
            reports,
            primary,
            reference,
            max_service_lag_bytes,
        }
    }

    /// `id`'s service in status form (`detail`: the local monitor's, for this node only).
    pub fn status_of(&self, id: NodeId, detail: Option<String>) -> ServiceStatus {
        let report = self.reports.get(&id).copied().unwrap_or_default();
        let standing = self.reference.standing(report, self.max_service_lag_bytes);
        let ineligible = standing
            .behind_bytes
            .filter(|b| *b > self.max_service_lag_bytes && Some(id) != self.primary)
            .map(|behind| {
                Ineligible::ServiceLagging {
                    node: id,
                    behind,
                    max: self.max_service_lag_bytes,
                }
                .to_string()
            });
        ServiceStatus {
            role: report.role.map(|r| r.as_str().to_string()),
            position: report.position,
            timeline: report.timeline,
            healthy: report.healthy,
            detail,
            lag_bytes: standing.behind_bytes,
            ineligible,
        }
    }
}

/// What `/replica` needs to know about this node.
#[derive(Clone, Debug)]
pub struct ReplicaFacts {
    pub me: NodeId,
    pub member_role: NodeRole,
    /// The policy's local role is Replica, and the node does not act as primary.
    pub serving_as_replica: bool,
    pub raft_failed: bool,
    pub healthy: bool,
    /// The committed primary and its epoch.
    pub primary: Option<(NodeId, Epoch)>,
    /// The primary is heard on heartbeats (a minority-partitioned node does not hear it).
    pub primary_heard: bool,
    /// The primary this node's follow hook last succeeded for.
    pub followed: Option<(NodeId, Epoch)>,
    pub my_report: ServiceReport,
    /// The primary's last report (from its heartbeats).
    pub primary_report: Option<ServiceReport>,
}

/// `/replica`: Ok(lag in bytes, when known) only on a healthy replica that follows the
/// current primary and is at most `max_lag_bytes` behind the primary's reported position;
/// otherwise the reason, in words an operator can act on.
pub fn replica_verdict(f: &ReplicaFacts, max_lag_bytes: u64) -> Result<Option<u64>, String> {
    if f.member_role == NodeRole::Witness {
        return Err("this node is a witness: it holds no copy of the service".into());
    }
    if f.raft_failed {
        return Err("Raft stopped on this node (see /v1/status raft_failure)".into());
    }
    if !f.serving_as_replica {
        return Err("this node is not a serving replica (primary, promoting, demoting, rejoining or starting)".into());
    }
    if !f.healthy {
        return Err("this node's service is unhealthy (monitor hook failing)".into());
    }
    let Some((primary, epoch)) = f.primary else {
        return Err("no primary is committed: there is nothing to replicate from".into());
    };
    if primary == f.me {
        return Err("the committed state names this node primary".into());
    }
    if !f.primary_heard {
        return Err(format!(
            "the primary (node {primary}) is not heard on heartbeats: this node may be cut off and its data stale"
        ));
    }
    if f.followed != Some((primary, epoch)) {
        return Err(format!(
            "this node does not follow the current primary (node {primary}, epoch {epoch}) yet: its follow hook has not succeeded"
        ));
    }
    let Some(theirs) = f.primary_report.and_then(|r| r.position) else {
        // The primary reports no position: quorate cannot judge the data, only the roles.
        return Ok(None);
    };
    let primary_timeline = f.primary_report.and_then(|r| r.timeline);
    let Some(mine) = f.my_report.position_on(primary_timeline) else {
        return Err(match f.my_report.position {
            None => "this node's monitor reports no position while the primary reports one: its lag is unknown".into(),
            Some(_) => format!(
                "this node's service is on timeline {} and the primary's on {}: it diverged and needs a rejoin",
                f.my_report.timeline.unwrap_or_default(),
                primary_timeline.unwrap_or_default()
            ),
        });
    };
    let lag = theirs.saturating_sub(mine);
    if lag > max_lag_bytes {
        return Err(format!(
            "this node's service is {lag} bytes behind the primary (more than {max_lag_bytes}; ?lag=BYTES sets the limit, default max_service_lag_bytes)"
        ));
    }
    Ok(Some(lag))
}

/// `/health`'s data verdict: Err while the service is resynchronising (a rejoin runs) or
/// diverged (rejoins failed), with the reason.
pub fn data_health(rejoining: bool, rejoin_failures: u32) -> Result<(), String> {
    if rejoining {
        return Err(
            "the service is resyncing from the primary (the rejoin hook is running)".into(),
        );
    }
    if rejoin_failures > 0 {
        return Err(format!(
            "the service's data diverged from the primary's: the rejoin hook failed {rejoin_failures} time(s); \
             see the node's log for the hook output, fix the cause (or resync by hand); quorate retries it"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(position: u64, timeline: u64) -> ServiceReport {
        ServiceReport {
            position: Some(position),
            timeline: Some(timeline),
            ..ServiceReport::default()
        }
    }

    fn facts() -> ReplicaFacts {
        ReplicaFacts {
            me: 2,
            member_role: NodeRole::Voter,
            serving_as_replica: true,
            raft_failed: false,
            healthy: true,
            primary: Some((1, Epoch(4))),
            primary_heard: true,
            followed: Some((1, Epoch(4))),
            my_report: at(900, 3),
            primary_report: Some(at(1_000, 3)),
        }
    }

    #[test]
    fn a_healthy_following_replica_within_the_lag_passes() {
        assert_eq!(replica_verdict(&facts(), 100), Ok(Some(100)));
        assert!(replica_verdict(&facts(), 99)
            .unwrap_err()
            .contains("100 bytes behind"));
    }

    #[test]
    fn every_other_replica_state_fails_with_its_reason() {
        type Change = Box<dyn Fn(&mut ReplicaFacts)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|f| f.member_role = NodeRole::Witness), "witness"),
            (Box::new(|f| f.raft_failed = true), "Raft stopped"),
            (
                Box::new(|f| f.serving_as_replica = false),
                "not a serving replica",
            ),
            (Box::new(|f| f.healthy = false), "unhealthy"),
            (Box::new(|f| f.primary = None), "no primary"),
            (Box::new(|f| f.primary_heard = false), "not heard"),
            (
                Box::new(|f| f.followed = Some((1, Epoch(3)))),
                "does not follow",
            ),
            (Box::new(|f| f.followed = None), "does not follow"),
            (
                Box::new(|f| f.my_report = ServiceReport::default()),
                "lag is unknown",
            ),
            (Box::new(|f| f.my_report = at(1_000, 2)), "diverged"),
        ];
        for (change, needle) in cases {
            let mut f = facts();
            change(&mut f);
            let e = replica_verdict(&f, u64::MAX).unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn without_positions_from_the_primary_only_roles_are_judged() {
        let mut f = facts();
        f.primary_report = None;
        f.my_report = ServiceReport::default();
        assert_eq!(replica_verdict(&f, 0), Ok(None));
    }

    #[test]
    fn status_shows_lag_and_why_a_node_is_not_eligible() {
        let reports = BTreeMap::from([(1, at(10_000, 1)), (2, at(9_500, 1)), (3, at(1_000, 1))]);
        let v = ServiceView::new(reports, Some(1), 1_000);
        let s2 = v.status_of(2, None);
        assert_eq!(s2.lag_bytes, Some(500));
        assert_eq!(s2.ineligible, None);
        let s3 = v.status_of(3, None);
        assert_eq!(s3.lag_bytes, Some(9_000));
        assert!(s3.ineligible.unwrap().contains("max_service_lag_bytes"));
        assert_eq!(
            v.status_of(1, Some("x".into())).detail.as_deref(),
            Some("x")
        );
    }

    #[test]
    fn health_fails_while_resyncing_or_diverged() {
        assert_eq!(data_health(false, 0), Ok(()));
        assert!(data_health(true, 0).unwrap_err().contains("resyncing"));
        assert!(data_health(false, 2).unwrap_err().contains("diverged"));
    }
}
