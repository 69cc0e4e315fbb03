//! The node's small background loops: first-start bootstrap, the KV limits the leader
//! proposes, and early elections from the heartbeat view.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ServerState};

use super::assembly::Node;
use crate::types::{LogIndex, NodeId, NodeRole};

/// First start: the lowest-id voter initializes the cluster with every voting member; the
/// others wait to be contacted. Restarts skip this (openraft remembers it is initialized), so
/// any restart order is safe. The leader also adds configured learners.
pub async fn bootstrap(node: Arc<Node>) {
    let cfg = node.config.clone();
    let lowest_voter = cfg
        .peers
        .iter()
        .filter(|p| p.role == NodeRole::Voter)
        .map(|p| p.id)
        .min();
    let voting: BTreeMap<NodeId, BasicNode> = cfg
        .peers
        .iter()
        .filter(|p| p.role.votes())
        .map(|p| (p.id, BasicNode::new(p.raft.to_string())))
        .collect();
    match node.consensus.raft.is_initialized().await {
        Ok(true) => {}
        Ok(false) if node.reseeding.active() => {
            tracing::info!(
                "re-seeding: waiting for the leader to send the log (no initialization)"
            );
        }
        Ok(false) if lowest_voter == Some(cfg.node.id) => {
            match node.consensus.raft.initialize(voting).await {
                Ok(()) => tracing::info!("initialized a new cluster from config"),
                Err(e) => tracing::info!("cluster initialization skipped: {e}"),
            }
        }
        Ok(false) => tracing::info!(
            "waiting to be contacted by the cluster (node {lowest_voter:?} initializes it)"
        ),
        Err(e) => {
            tracing::error!("cannot read raft state: {e}");
            return;
        }
    }

    let learners: Vec<_> = cfg
        .peers
        .iter()
        .filter(|p| p.role == NodeRole::Learner)
        .collect();
    if learners.is_empty() {
        return;
    }
    let mut metrics = node.consensus.raft.metrics();
    loop {
        let (is_leader, known) = {
            let m = metrics.borrow_and_update();
            let known: Vec<NodeId> = m.membership_config.nodes().map(|(id, _)| *id).collect();
            (m.state == ServerState::Leader, known)
        };
        if is_leader {
            for l in &learners {
                if !known.contains(&l.id) {
                    match node
                        .consensus
                        .raft
                        .add_learner(l.id, BasicNode::new(l.raft.to_string()), false)
                        .await
                    {
                        Ok(_) => tracing::info!(learner = l.id, "learner added"),
                        Err(e) => tracing::warn!(learner = l.id, "cannot add learner yet: {e}"),
                    }
                }
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Makes the cluster's KV limits follow the leader's config: the leader proposes them once
/// per term when the applied limits differ, so every node applies the same limits at the
/// same log index (a node-local limit would let replicas disagree about a write).
pub async fn propose_kv_limits(node: Arc<Node>) {
    use crate::kv::KvLimits;
    let want = KvLimits {
        max_value_bytes: usize::try_from(node.config.storage.max_value_bytes).unwrap_or(usize::MAX),
        max_total_bytes: node.config.storage.max_kv_bytes,
        ..KvLimits::default()
    };
    let mut metrics = node.consensus.raft.metrics();
    let mut done_term = None;
    loop {
        let (is_leader, term) = {
            let m = metrics.borrow_and_update();
            (m.state == ServerState::Leader, m.current_term)
        };
        let have = node.consensus.sm.read().map(|s| s.app.kv.limits()).ok();
        if is_leader && done_term != Some(term) && have.as_ref() != Some(&want) {
            match node
                .propose(crate::consensus::app::AppRequest::SetKvLimits(want))
                .await
            {
                Ok(_) => done_term = Some(term),
                Err(e) => tracing::debug!("KV limits not proposed yet: {e}"),
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Watches the heartbeat view; when the Raft leader is dead on every link, campaigns (pre-vote)
/// as soon as the voters' lease has run out, staggered by rank. See `early_election.rs`.
pub async fn early_elections(node: Arc<Node>) {
    use crate::consensus::early_election::CampaignGuard;
    use crate::rules::election::{
        campaign_at, may_vote, rank, Contender, ServiceLimits, CAMPAIGN_MARGIN, CAMPAIGN_RETRY,
        CAMPAIGN_STAGGER,
    };
    let cfg = node.config.clone();
    let max_lag = cfg.resource.max_lag_on_failover;
    let lease = cfg.timing.election_timeout_max;
    let mut view_rx = node.heartbeat.view.clone();
    let mut guard = CampaignGuard::new(CAMPAIGN_RETRY);
    loop {
        let plan = {
            let m = node.metrics();
            let view = view_rx.borrow_and_update().clone();
            let state = node.consensus.sm.cluster();
            let (own_health, own_service) = {
                let ex = node.executor.borrow();
                (ex.health, ex.service)
            };
            match m.current_leader {
                Some(leader) if leader != cfg.node.id && m.state != ServerState::Leader => {
                    view.peer(leader).and_then(|ls| {
                        if !ls.state.counts_as_dead() {
                            return None;
                        }
                        let age = ls.last_seen_age?;
                        let last_heard = view.at.checked_sub(age)?;
                        let mut contenders = vec![Contender {
                            id: cfg.node.id,
                            priority: cfg.node.priority,
                            applied_index: LogIndex(m.last_applied.map(|l| l.index).unwrap_or(0)),
                            health: own_health,
                            drained: state.drained.contains(&cfg.node.id),
                            service: own_service,
                        }];
                        for p in cfg.peers.iter().filter(|p| {
                            p.role == NodeRole::Voter && p.id != leader && p.id != cfg.node.id
                        }) {
                            if let Some(ps) = view.peer(p.id) {
                                if !ps.state.counts_as_dead() {
                                    contenders.push(Contender {
                                        id: p.id,
                                        priority: p.priority,
                                        applied_index: ps
                                            .last
                                            .as_ref()
                                            .map(|h| h.applied_index)
                                            .unwrap_or_default(),
                                        health: ps
                                            .last
                                            .as_ref()
                                            .map(|h| h.health)
                                            .unwrap_or_default(),
                                        drained: state.drained.contains(&p.id),
                                        service: ps
                                            .last
                                            .as_ref()
                                            .map(|h| h.service)
                                            .unwrap_or_default(),
                                    });
                                }
                            }
                        }
                        let service = ServiceLimits {
                            leader_report: ls.last.as_ref().map(|h| h.service),
                            max_service_lag_bytes: cfg.resource.max_service_lag_bytes,
                        };
                        let r = rank(cfg.node.id, &contenders, max_lag, service)?;
                        Some((
                            leader,
                            m.current_term,
                            campaign_at(last_heard, lease, r, CAMPAIGN_STAGGER, CAMPAIGN_MARGIN),
                            r,
                        ))
                    })
                }
                _ => None,
            }
        };
        if let Some((leader, term, at, r)) = plan {
            let now = Instant::now();
            if at > now {
                tokio::select! {
                    _ = tokio::time::sleep(at - now) => {}
                    r = view_rx.changed() => { if r.is_err() { return; } continue; }
                }
            }
            // Re-check: the leader may have come back, or an election already happened.
            let m = node.metrics();
            if m.current_leader == Some(leader)
                && m.current_term == term
                && may_vote(node.reseeding.active())
                && guard.should_fire(leader, term, Instant::now())
            {
                tracing::info!(
                    leader,
                    term,
                    rank = r,
                    "leader dead on every heartbeat link: starting a pre-vote campaign"
                );
                if let Err(e) = node.consensus.raft.trigger().elect(true).await {
                    tracing::warn!("cannot trigger election: {e}");
                }
            }
        }
        if view_rx.changed().await.is_err() {
            return;
        }
    }
}
