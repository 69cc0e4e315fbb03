//! Who may become primary, and in which order: the one candidate ranking, used by the
//! leader's failover and switchover decisions (`policy`) and by the early elections
//! ([`super::election::rank`]).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::types::{NodeId, NodeRole, ResourceHealth, ServiceReport};

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
    /// The member's service data against the best known (all `None` when services report
    /// no positions: the ranking is then by quorate's own log, as before).
    pub service: ServiceStanding,
    /// Set by a rule that judges the candidates together ([`restrict_to_final_most_advanced`]):
    /// why this member may not become primary although it qualifies on its own.
    pub excluded: Option<Ineligible>,
}

/// The most advanced service data known in the cluster, which every candidate is judged
/// against: the timeline of the last primary (its data is the data that counts) and the
/// highest position any node reported on it (the last primary's last report included: a
/// replica far behind a dead primary would lose what the primary had).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceReference {
    pub timeline: Option<u64>,
    pub position: Option<u64>,
}

impl ServiceReference {
    /// The reference from the last primary's last report (None: no primary yet, or not
    /// heard) and every other member's report. Without the primary's timeline, the highest
    /// reported timeline counts (a promotion starts a new, higher one).
    pub fn from_reports(
        last_primary: Option<ServiceReport>,
        others: impl IntoIterator<Item = ServiceReport> + Clone,
    ) -> ServiceReference {
        let timeline = last_primary
            .and_then(|r| r.timeline)
            .or_else(|| others.clone().into_iter().filter_map(|r| r.timeline).max());
        let position = last_primary
            .into_iter()
            .chain(others)
            .filter_map(|r| r.position_on(timeline))
            .max();
        ServiceReference { timeline, position }
    }

    /// Where `report` stands against this reference, with the configured limit.
    pub fn standing(&self, report: ServiceReport, max_behind_bytes: u64) -> ServiceStanding {
        let position = report.position_on(self.timeline);
        let behind_bytes = match (self.position, position) {
            (Some(best), Some(mine)) => Some(best.saturating_sub(mine)),
            _ => None,
        };
        ServiceStanding {
            position,
            behind_bytes,
            max_behind_bytes,
            timeline: report.timeline,
            reference_timeline: self.timeline,
        }
    }
}

/// A member's service data as candidacy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceStanding {
    /// Its position on the reference timeline (None: not reported, or on another timeline).
    pub position: Option<u64>,
    /// Bytes behind the reference position (None when either is unknown).
    pub behind_bytes: Option<u64>,
    /// `max_service_lag_bytes`: further behind, the member is not eligible.
    pub max_behind_bytes: u64,
    /// The timeline the member reported (None: none reported).
    pub timeline: Option<u64>,
    /// The reference timeline (the last primary's; None: no service reports timelines).
    pub reference_timeline: Option<u64>,
}

impl Default for ServiceStanding {
    /// Nothing reported: no judgement by service data.
    fn default() -> Self {
        ServiceStanding {
            position: None,
            behind_bytes: None,
            max_behind_bytes: u64::MAX,
            timeline: None,
            reference_timeline: None,
        }
    }
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
    #[error(
        "node {node}'s service is {behind} bytes behind the most advanced data known \
         (max_service_lag_bytes = {max}); let it catch up, or raise [resource] max_service_lag_bytes"
    )]
    ServiceLagging { node: NodeId, behind: u64, max: u64 },
    #[error(
        "node {0} has not passed a monitor check since it started; a planned move waits for \
         its first passing check"
    )]
    NotYetHealthy(NodeId),
    #[error(
        "node {node}'s service is not on the primary's data yet: it reports {}, the primary \
         is on timeline {reference}; a planned move waits for its rejoin or follow action \
         (`quorate actions` on node {node} shows how they went)",
        match .timeline { Some(t) => format!("timeline {t} and no position on the primary's"), None => "no timeline".to_string() }
    )]
    ServiceNotRejoined {
        node: NodeId,
        timeline: Option<u64>,
        reference: u64,
    },
    #[error(
        "node {0} has not sent a service report taken after the primary was lost; a zero-loss \
         failover (synchronous replication) promotes only a replica whose final position is \
         known (its monitor may be hung: `quorate actions` on node {0})"
    )]
    NoFinalReport(NodeId),
    #[error(
        "node {node}'s service is {behind} bytes behind node {best}'s final position; a zero-loss \
         failover (synchronous replication) promotes only the most advanced replica, which holds \
         every acknowledged commit"
    )]
    BehindMostAdvanced {
        node: NodeId,
        behind: u64,
        best: NodeId,
    },
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
    if let Some(why) = &c.excluded {
        return Err(why.clone());
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
    if let Some(behind) = c.service.behind_bytes {
        if behind > c.service.max_behind_bytes {
            return Err(Ineligible::ServiceLagging {
                node: c.id,
                behind,
                max: c.service.max_behind_bytes,
            });
        }
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

/// A planned move's target (switchover, failback): [`eligibility`], and its service must
/// be ready to take over the data, since nothing forces the move:
/// - with a monitor configured, it passed a check since it started (`Unknown` health is
///   enough for a failover, which must not wait, but a planned move can);
/// - when services report timelines, it reports a position on the primary's timeline: a
///   former primary that has not rejoined yet, or a replica still on a diverged timeline,
///   holds other data than the primary.
pub fn planned_move_eligibility(
    c: &CandidateView,
    max_lag: u64,
    monitor_configured: bool,
) -> Result<(), Ineligible> {
    eligibility(c, max_lag)?;
    if monitor_configured && c.health == ResourceHealth::Unknown {
        return Err(Ineligible::NotYetHealthy(c.id));
    }
    if let Some(reference) = c.service.reference_timeline {
        if c.service.position.is_none() {
            return Err(Ineligible::ServiceNotRejoined {
                node: c.id,
                timeline: c.service.timeline,
                reference,
            });
        }
    }
    Ok(())
}

/// The zero-loss failover rule (synchronous replication: every acknowledged commit is on at
/// least one replica, and nobody knows which). Any live member with a copy of the data
/// (not a witness) may hold such a commit, eligible or not: the rule waits for every one's
/// final position (`final_report(id)`: a report taken after the primary was lost, so no WAL
/// can have reached it since), and lets only eligible members at the highest final
/// position on the reference timeline be promoted: they hold every acknowledged commit.
/// When the most advanced member is not eligible itself (unhealthy, drained, ...), nobody
/// is: promoting another would lose what only it has.
///
/// Returns the members still waiting for a final report (empty: the rule has decided). The
/// caller waits for them for a bounded time; once it stops waiting, they stay excluded and
/// the best position is taken over the others. When no member reports a position, nothing
/// is restricted by position (the service reports none: there is nothing to compare).
pub fn restrict_to_final_most_advanced(
    cands: &mut [CandidateView],
    max_lag: u64,
    final_report: impl Fn(NodeId) -> bool,
) -> Vec<NodeId> {
    let holders: Vec<usize> = (0..cands.len())
        .filter(|i| cands[*i].alive && cands[*i].role != NodeRole::Witness)
        .collect();
    let qualifying: Vec<usize> = (0..cands.len())
        .filter(|i| eligibility(&cands[*i], max_lag).is_ok())
        .collect();
    let waiting: Vec<NodeId> = holders
        .iter()
        .map(|i| cands[*i].id)
        .filter(|id| !final_report(*id))
        .collect();
    let best = holders
        .iter()
        .filter(|i| final_report(cands[**i].id))
        .filter_map(|i| cands[*i].service.position.map(|p| (p, cands[*i].id)))
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    for i in &qualifying {
        let c = &mut cands[*i];
        if waiting.contains(&c.id) {
            c.excluded = Some(Ineligible::NoFinalReport(c.id));
            continue;
        }
        if let Some((best_pos, best_id)) = best {
            let pos = c.service.position.unwrap_or(0);
            if c.service.position.is_none() || pos < best_pos {
                c.excluded = Some(Ineligible::BehindMostAdvanced {
                    node: c.id,
                    behind: best_pos - pos.min(best_pos),
                    best: best_id,
                });
            }
        }
    }
    waiting
}

/// Eligible members, best first: priority (higher first), then the service's position on the
/// reference timeline (higher first: the most data; an unreported position ranks after every
/// reported one), then quorate log lag (smaller first: less to catch up, fewer writes at
/// risk), then id (smaller first: a total order, so every leader that sees the same inputs
/// picks the same node).
pub fn rank_candidates(cands: &[CandidateView], max_lag: u64) -> Vec<&CandidateView> {
    let mut v: Vec<&CandidateView> = cands
        .iter()
        .filter(|c| eligibility(c, max_lag).is_ok())
        .collect();
    v.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(b.service.position.cmp(&a.service.position))
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
            service: ServiceStanding::default(),
            excluded: None,
        }
    }

    #[test]
    fn a_planned_move_waits_for_a_first_passing_check_and_for_the_primarys_timeline() {
        let reference = ServiceReference {
            timeline: Some(3),
            position: Some(700),
        };
        let report = |timeline, position| ServiceReport {
            timeline: Some(timeline),
            position: Some(position),
            ..ServiceReport::default()
        };
        let mut home = voter(1, 100, 0);
        home.service = reference.standing(report(2, 900), u64::MAX);
        // Fine for a failover (no position on timeline 3 only ranks it last)...
        assert_eq!(eligibility(&home, 0), Ok(()));
        // ...not for a planned move: it holds timeline 2's data.
        let why = planned_move_eligibility(&home, 0, true).unwrap_err();
        assert_eq!(
            why,
            Ineligible::ServiceNotRejoined {
                node: 1,
                timeline: Some(2),
                reference: 3
            }
        );
        assert!(why.to_string().contains("timeline 2"), "{why}");
        home.service = reference.standing(ServiceReport::default(), u64::MAX);
        assert!(planned_move_eligibility(&home, 0, true)
            .unwrap_err()
            .to_string()
            .contains("no timeline"));
        // Rejoined: on timeline 3.
        home.service = reference.standing(report(3, 700), u64::MAX);
        assert_eq!(planned_move_eligibility(&home, 0, true), Ok(()));
        // No monitor result yet.
        home.health = ResourceHealth::Unknown;
        assert_eq!(
            planned_move_eligibility(&home, 0, true),
            Err(Ineligible::NotYetHealthy(1))
        );
        assert_eq!(
            planned_move_eligibility(&home, 0, false),
            Ok(()),
            "no monitor configured"
        );
        // No service reports at all: nothing to judge by data.
        let mut plain = voter(2, 1, 0);
        plain.service = ServiceReference::default().standing(ServiceReport::default(), u64::MAX);
        assert_eq!(planned_move_eligibility(&plain, 0, true), Ok(()));
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

    fn report(timeline: u64, position: u64) -> ServiceReport {
        ServiceReport {
            position: Some(position),
            timeline: Some(timeline),
            ..ServiceReport::default()
        }
    }

    #[test]
    fn the_reference_is_the_last_primarys_timeline_and_the_highest_position_on_it() {
        let r = ServiceReference::from_reports(
            Some(report(2, 900)),
            [report(2, 800), report(3, 5_000), report(2, 950)],
        );
        assert_eq!(r.timeline, Some(2));
        assert_eq!(r.position, Some(950));
        // Without the primary's report the highest timeline counts.
        let r = ServiceReference::from_reports(None, [report(2, 800), report(3, 10)]);
        assert_eq!(r.timeline, Some(3));
        assert_eq!(r.position, Some(10));
        // Nobody reports: no reference, and no standing is judged.
        let r = ServiceReference::from_reports(None, [ServiceReport::default()]);
        assert_eq!(r, ServiceReference::default());
        assert_eq!(r.standing(ServiceReport::default(), 10).behind_bytes, None);
    }

    #[test]
    fn a_replica_on_another_timeline_has_no_comparable_position() {
        let r = ServiceReference::from_reports(Some(report(2, 900)), [report(1, 5_000)]);
        let s = r.standing(report(1, 5_000), 100);
        assert_eq!(s.position, None);
        assert_eq!(s.behind_bytes, None);
    }

    fn with_service(
        mut c: CandidateView,
        r: &ServiceReference,
        rep: ServiceReport,
        max: u64,
    ) -> CandidateView {
        c.service = r.standing(rep, max);
        c
    }

    #[test]
    fn the_highest_service_position_wins_over_a_smaller_log_lag() {
        let r = ServiceReference::from_reports(
            Some(report(1, 1_000)),
            [report(1, 990), report(1, 400)],
        );
        let c = [
            with_service(voter(1, 1, 0), &r, report(1, 400), 10_000),
            with_service(voter(2, 1, 50), &r, report(1, 990), 10_000),
        ];
        assert_eq!(best_candidate(&c, 100), Some(2));
        // Priority still comes first.
        let c = [
            with_service(voter(1, 5, 0), &r, report(1, 400), 10_000),
            with_service(voter(2, 1, 0), &r, report(1, 990), 10_000),
        ];
        assert_eq!(best_candidate(&c, 100), Some(1));
    }

    #[test]
    fn a_reported_position_ranks_before_an_unreported_one() {
        let r = ServiceReference::from_reports(None, [report(1, 10)]);
        let c = [
            with_service(voter(1, 1, 0), &r, ServiceReport::default(), 10_000),
            with_service(voter(2, 1, 0), &r, report(1, 10), 10_000),
        ];
        assert_eq!(best_candidate(&c, 100), Some(2));
    }

    #[test]
    fn a_replica_beyond_max_service_lag_bytes_is_not_eligible_and_equal_is() {
        let r = ServiceReference::from_reports(Some(report(1, 10_000)), []);
        let at_limit = with_service(voter(1, 1, 0), &r, report(1, 9_000), 1_000);
        assert_eq!(eligibility(&at_limit, 100), Ok(()));
        let beyond = with_service(voter(2, 1, 0), &r, report(1, 8_999), 1_000);
        let e = eligibility(&beyond, 100).unwrap_err();
        assert_eq!(
            e,
            Ineligible::ServiceLagging {
                node: 2,
                behind: 1_001,
                max: 1_000
            }
        );
        assert!(e.to_string().contains("max_service_lag_bytes"), "{e}");
        assert_eq!(best_candidate(&[beyond], 100), None);
    }

    proptest::proptest! {
        /// Whatever the reports, the chosen node is never further behind than the limit,
        /// and no eligible node has a higher position at the same priority.
        #[test]
        fn the_choice_respects_position_and_limit(
            positions in proptest::collection::vec(proptest::option::of(0u64..10_000), 1..6),
            primary in proptest::option::of(0u64..10_000),
            max in 0u64..5_000,
        ) {
            let reports: Vec<ServiceReport> = positions
                .iter()
                .map(|p| ServiceReport { position: *p, timeline: Some(1), ..ServiceReport::default() })
                .collect();
            let last = primary.map(|p| report(1, p));
            let r = ServiceReference::from_reports(last, reports.iter().copied());
            let c: Vec<CandidateView> = reports
                .iter()
                .enumerate()
                .map(|(i, rep)| with_service(voter(i as u64 + 1, 1, 0), &r, *rep, max))
                .collect();
            if let Some(best) = best_candidate(&c, 100) {
                let chosen = c.iter().find(|v| v.id == best).unwrap();
                if let (Some(b), Some(mine)) = (r.position, chosen.service.position) {
                    proptest::prop_assert!(b - mine <= max);
                }
                for other in c.iter().filter(|v| eligibility(v, 100).is_ok()) {
                    proptest::prop_assert!(other.service.position <= chosen.service.position);
                }
            }
        }
    }

    #[test]
    fn a_zero_loss_failover_waits_for_final_reports_then_takes_the_most_advanced() {
        let r = ServiceReference::from_reports(
            Some(report(1, 2_000)),
            [report(1, 1_500), report(1, 1_800)],
        );
        // Node 1 has the higher priority but less data; node 3's report is not final yet.
        let mut c = vec![
            with_service(voter(1, 9, 0), &r, report(1, 1_500), u64::MAX),
            with_service(voter(2, 1, 0), &r, report(1, 1_800), u64::MAX),
            with_service(voter(3, 1, 0), &r, report(1, 1_900), u64::MAX),
        ];
        let waiting = restrict_to_final_most_advanced(&mut c, 100, |id| id != 3);
        assert_eq!(waiting, vec![3]);
        assert_eq!(eligibility(&c[2], 100), Err(Ineligible::NoFinalReport(3)));
        let e = eligibility(&c[0], 100).unwrap_err();
        assert_eq!(
            e,
            Ineligible::BehindMostAdvanced {
                node: 1,
                behind: 300,
                best: 2
            }
        );
        assert!(e.to_string().contains("node 2's final position"), "{e}");
        assert_eq!(
            best_candidate(&c, 100),
            Some(2),
            "priority does not outrank data"
        );
        // Everyone final: the most advanced one.
        let mut c = vec![
            with_service(voter(1, 9, 0), &r, report(1, 1_500), u64::MAX),
            with_service(voter(2, 1, 0), &r, report(1, 1_800), u64::MAX),
            with_service(voter(3, 1, 0), &r, report(1, 1_900), u64::MAX),
        ];
        assert!(restrict_to_final_most_advanced(&mut c, 100, |_| true).is_empty());
        assert_eq!(best_candidate(&c, 100), Some(3));
        // Equal positions: priority decides among them.
        let mut c = vec![
            with_service(voter(1, 1, 0), &r, report(1, 1_900), u64::MAX),
            with_service(voter(2, 7, 0), &r, report(1, 1_900), u64::MAX),
        ];
        restrict_to_final_most_advanced(&mut c, 100, |_| true);
        assert_eq!(best_candidate(&c, 100), Some(2));
        // A member with no position on the reference timeline loses to one with a position.
        let mut c = vec![
            with_service(voter(1, 9, 0), &r, report(2, 5_000), u64::MAX),
            with_service(voter(2, 1, 0), &r, report(1, 10), u64::MAX),
        ];
        restrict_to_final_most_advanced(&mut c, 100, |_| true);
        assert_eq!(best_candidate(&c, 100), Some(2));
        // Nobody reports positions: nothing to compare, nothing restricted.
        let mut c = vec![voter(1, 1, 0), voter(2, 3, 0)];
        restrict_to_final_most_advanced(&mut c, 100, |_| true);
        assert_eq!(best_candidate(&c, 100), Some(2));
    }

    #[test]
    fn a_most_advanced_member_that_is_not_eligible_blocks_the_others() {
        let r = ServiceReference::from_reports(None, [report(1, 1_500), report(1, 1_800)]);
        let mut unhealthy = with_service(voter(2, 1, 0), &r, report(1, 1_800), u64::MAX);
        unhealthy.health = ResourceHealth::Unhealthy;
        let mut c = vec![
            with_service(voter(1, 1, 0), &r, report(1, 1_500), u64::MAX),
            unhealthy.clone(),
        ];
        // Its report is awaited too (it may hold what only it acknowledged).
        assert_eq!(
            restrict_to_final_most_advanced(&mut c, 100, |id| id != 2),
            vec![2]
        );
        let mut c = vec![
            with_service(voter(1, 1, 0), &r, report(1, 1_500), u64::MAX),
            unhealthy,
        ];
        assert!(restrict_to_final_most_advanced(&mut c, 100, |_| true).is_empty());
        assert_eq!(
            best_candidate(&c, 100),
            None,
            "node 1 lacks 300 bytes node 2 has"
        );
        assert!(matches!(
            eligibility(&c[0], 100),
            Err(Ineligible::BehindMostAdvanced { best: 2, .. })
        ));
        // A dead member is not waited for (and its data is out of reach anyway).
        let mut dead = with_service(voter(2, 1, 0), &r, report(1, 1_800), u64::MAX);
        dead.alive = false;
        let mut c = vec![
            with_service(voter(1, 1, 0), &r, report(1, 1_500), u64::MAX),
            dead,
        ];
        assert!(restrict_to_final_most_advanced(&mut c, 100, |id| id != 2).is_empty());
        assert_eq!(best_candidate(&c, 100), Some(1));
    }

    proptest::proptest! {
        /// Zero loss: whatever the final positions, the chosen member's is the highest
        /// of every qualifying member's (so it holds every acknowledged commit), and a
        /// member without a final report is never chosen.
        #[test]
        fn a_zero_loss_choice_holds_the_highest_final_position(
            members in proptest::collection::vec(
                (proptest::option::of(0u64..10_000), 0u32..4, proptest::bool::ANY), 1..6),
        ) {
            let reports: Vec<ServiceReport> = members
                .iter()
                .map(|(p, _, _)| ServiceReport { position: *p, timeline: Some(1), ..ServiceReport::default() })
                .collect();
            let r = ServiceReference::from_reports(None, reports.iter().copied());
            let mut c: Vec<CandidateView> = members
                .iter()
                .zip(&reports)
                .enumerate()
                .map(|(i, ((_, prio, _), rep))| with_service(voter(i as u64 + 1, *prio, 0), &r, *rep, u64::MAX))
                .collect();
            let is_final = |id: NodeId| members[(id - 1) as usize].2;
            restrict_to_final_most_advanced(&mut c, 100, is_final);
            let highest_final = members.iter().filter(|m| m.2).filter_map(|m| m.0).max();
            if let Some(best) = best_candidate(&c, 100) {
                let (pos, _, fin) = members[(best - 1) as usize];
                proptest::prop_assert!(fin);
                if highest_final.is_some() {
                    proptest::prop_assert_eq!(pos, highest_final);
                }
            } else {
                proptest::prop_assert!(members.iter().all(|m| !m.2));
            }
        }
    }
}
