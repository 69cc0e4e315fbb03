//! Notifications: the `notify` action runs on every node for every role change anywhere in
//! the cluster (keepalived's notify scripts, Pacemaker's alerts).
//!
//! Two sources, both pure: every new entry of the replicated history (promotions,
//! demotions, local restarts, operation steps, maintenance, drains — identical on every node
//! because they are committed) and every change of this node's own local role (a primary
//! whose lease lapsed is `suspended` long before anything is committed). A node that starts,
//! or catches up after a long absence, does not replay old history: it notifies from the
//! first state it sees on, and at most [`MAX_NOTIFICATIONS_PER_STEP`] at once (the newest;
//! `QUORATE_EVENT_SEQ` shows the gap).

use serde::Serialize;

use super::action::LocalRole;
use crate::cluster::{ClusterState, HistoryEntry, HistoryEvent};
use crate::types::{Epoch, NodeId};

/// Most notifications one step emits (a node catching up on many entries notifies only
/// the newest ones).
pub const MAX_NOTIFICATIONS_PER_STEP: usize = 32;

/// One notification: what the `notify` action gets in its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// `QUORATE_EVENT`: promoted, demoted, restarted, operation_started, operation_step,
    /// operation_ended, maintenance, drained, or local_role.
    pub event: &'static str,
    /// `QUORATE_EVENT_NODE`: the node the event is about.
    pub node: Option<NodeId>,
    /// `QUORATE_EVENT_EPOCH`.
    pub epoch: Option<Epoch>,
    /// `QUORATE_EVENT_SEQ`: the history entry's sequence number (None for local_role).
    pub seq: Option<u64>,
    /// `QUORATE_EVENT_ROLE`: for local_role, this node's new role (starting, replica,
    /// rejoining, promoting, primary, suspended, demoting).
    pub role: Option<&'static str>,
    /// `QUORATE_EVENT_JSON`: the whole event as JSON.
    pub json: String,
    /// `QUORATE_ROLE`: this node's own local role when the event was seen.
    pub local_role: &'static str,
}

impl Notification {
    /// The environment variables of the notify action, in a fixed order.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        vec![
            ("QUORATE_EVENT", self.event.to_string()),
            ("QUORATE_EVENT_NODE", opt(self.node)),
            ("QUORATE_EVENT_EPOCH", opt(self.epoch.map(|e| e.get()))),
            ("QUORATE_EVENT_SEQ", opt(self.seq)),
            (
                "QUORATE_EVENT_ROLE",
                self.role.unwrap_or_default().to_string(),
            ),
            ("QUORATE_EVENT_JSON", self.json.clone()),
        ]
    }
}

/// The name of a local role in notifications and status.
pub fn local_role_name(role: LocalRole) -> &'static str {
    match role {
        LocalRole::Starting => "starting",
        LocalRole::Replica => "replica",
        LocalRole::Rejoining => "rejoining",
        LocalRole::Promoting { .. } => "promoting",
        LocalRole::Primary { .. } => "primary",
        LocalRole::Suspended { .. } => "suspended",
        LocalRole::Demoting { .. } => "demoting",
    }
}

fn local_role_epoch(role: LocalRole) -> Option<Epoch> {
    match role {
        LocalRole::Starting | LocalRole::Replica | LocalRole::Rejoining => None,
        LocalRole::Promoting { epoch }
        | LocalRole::Primary { epoch }
        | LocalRole::Suspended { epoch }
        | LocalRole::Demoting { epoch } => Some(epoch),
    }
}

fn event_name(e: &HistoryEvent) -> &'static str {
    match e {
        HistoryEvent::Promoted { .. } => "promoted",
        HistoryEvent::Demoted { .. } => "demoted",
        HistoryEvent::Restarted { .. } => "restarted",
        HistoryEvent::OperationStarted { .. } => "operation_started",
        HistoryEvent::OperationStep { .. } => "operation_step",
        HistoryEvent::OperationEnded { .. } => "operation_ended",
        HistoryEvent::Maintenance { .. } => "maintenance",
        HistoryEvent::OperationData { .. } => "operation_data",
        HistoryEvent::Drained { .. } => "drained",
    }
}

fn event_node_epoch(e: &HistoryEvent) -> (Option<NodeId>, Option<Epoch>) {
    match e {
        HistoryEvent::Promoted { node, epoch, .. }
        | HistoryEvent::Demoted { node, epoch, .. }
        | HistoryEvent::Restarted { node, epoch, .. } => (Some(*node), Some(*epoch)),
        HistoryEvent::OperationStarted { to, .. } => (Some(*to), None),
        HistoryEvent::Drained { node, .. } => (Some(*node), None),
        HistoryEvent::OperationStep { .. }
        | HistoryEvent::OperationEnded { .. }
        | HistoryEvent::Maintenance { .. } => (None, None),
        HistoryEvent::OperationData { node, .. } => (Some(*node), None),
    }
}

fn from_history(e: &HistoryEntry, local_role: &'static str) -> Notification {
    let (node, epoch) = event_node_epoch(&e.event);
    Notification {
        event: event_name(&e.event),
        node,
        epoch,
        seq: Some(e.seq),
        role: None,
        json: serde_json::to_string(e).unwrap_or_default(),
        local_role,
    }
}

#[derive(Serialize)]
struct LocalRoleJson<'a> {
    event: &'a str,
    node: NodeId,
    from: &'a str,
    to: &'a str,
    epoch: Option<Epoch>,
}

/// What was notified so far.
#[derive(Clone, Debug, Default)]
pub struct NotifyTracker {
    /// `seq` of the next history entry to notify (None before the first step).
    next_seq: Option<u64>,
    role: Option<LocalRole>,
}

impl NotifyTracker {
    /// The notifications due now, oldest first.
    pub fn step(
        &mut self,
        local: NodeId,
        state: &ClusterState,
        role: LocalRole,
    ) -> Vec<Notification> {
        let mut out = Vec::new();
        let total = state.history.total();
        match self.next_seq {
            // The first state seen: nothing before it is news.
            None => {}
            Some(next) if total > next => {
                let fresh: Vec<&HistoryEntry> = state.history.since(next).collect();
                let skip = fresh.len().saturating_sub(MAX_NOTIFICATIONS_PER_STEP);
                out.extend(
                    fresh
                        .into_iter()
                        .skip(skip)
                        .map(|e| from_history(e, local_role_name(role))),
                );
            }
            // The same history, or an older one (a snapshot from before): nothing new.
            Some(_) => {}
        }
        self.next_seq = Some(total);
        if let Some(before) = self.role.replace(role) {
            if local_role_name(before) != local_role_name(role) {
                let json = serde_json::to_string(&LocalRoleJson {
                    event: "local_role",
                    node: local,
                    from: local_role_name(before),
                    to: local_role_name(role),
                    epoch: local_role_epoch(role),
                })
                .unwrap_or_default();
                out.push(Notification {
                    event: "local_role",
                    node: Some(local),
                    epoch: local_role_epoch(role),
                    seq: None,
                    role: Some(local_role_name(role)),
                    json,
                    local_role: local_role_name(role),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::PromoteReason;

    fn promoted(state: &mut ClusterState, node: NodeId, epoch: u64) {
        state.history.push(
            1_000 + epoch,
            None,
            HistoryEvent::Promoted {
                node,
                epoch: Epoch(epoch),
                previous: None,
                reason: PromoteReason::Failover,
            },
        );
    }

    #[test]
    fn old_history_is_not_news_and_every_new_entry_is_notified_once() {
        let mut state = ClusterState::default();
        promoted(&mut state, 1, 1);
        let mut t = NotifyTracker::default();
        assert!(t.step(2, &state, LocalRole::Replica).is_empty());
        promoted(&mut state, 3, 2);
        let n = t.step(2, &state, LocalRole::Replica);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].event, "promoted");
        assert_eq!(n[0].node, Some(3));
        assert_eq!(n[0].epoch, Some(Epoch(2)));
        assert_eq!(n[0].seq, Some(1));
        assert!(n[0].json.contains("\"promoted\""), "{}", n[0].json);
        assert!(t.step(2, &state, LocalRole::Replica).is_empty(), "once");
        let env = n[0].env();
        assert!(env.contains(&("QUORATE_EVENT", "promoted".into())));
        assert!(env.contains(&("QUORATE_EVENT_NODE", "3".into())));
    }

    #[test]
    fn a_local_role_change_is_notified_with_the_new_role() {
        let state = ClusterState::default();
        let mut t = NotifyTracker::default();
        assert!(t.step(1, &state, LocalRole::Starting).is_empty());
        let n = t.step(1, &state, LocalRole::Promoting { epoch: Epoch(4) });
        assert_eq!(n.len(), 1);
        assert_eq!((n[0].event, n[0].role), ("local_role", Some("promoting")));
        assert_eq!(n[0].epoch, Some(Epoch(4)));
        // Primary at the same epoch is a change; Primary again is not.
        assert_eq!(
            t.step(1, &state, LocalRole::Primary { epoch: Epoch(4) })
                .len(),
            1
        );
        assert!(t
            .step(1, &state, LocalRole::Primary { epoch: Epoch(4) })
            .is_empty());
        let n = t.step(1, &state, LocalRole::Suspended { epoch: Epoch(4) });
        assert!(n[0].json.contains("\"from\":\"primary\""), "{}", n[0].json);
    }

    #[test]
    fn a_node_catching_up_notifies_only_the_newest_entries() {
        let mut state = ClusterState::default();
        let mut t = NotifyTracker::default();
        t.step(2, &state, LocalRole::Replica);
        for e in 0..100 {
            promoted(&mut state, 1, e + 1);
        }
        let n = t.step(2, &state, LocalRole::Replica);
        assert_eq!(n.len(), MAX_NOTIFICATIONS_PER_STEP);
        assert_eq!(n.last().and_then(|n| n.seq), Some(99));
        assert_eq!(n[0].seq, Some(100 - MAX_NOTIFICATIONS_PER_STEP as u64));
    }

    #[test]
    fn an_older_history_after_a_snapshot_install_notifies_nothing() {
        let mut state = ClusterState::default();
        promoted(&mut state, 1, 1);
        promoted(&mut state, 1, 2);
        let mut t = NotifyTracker::default();
        t.step(2, &state, LocalRole::Replica);
        let older = ClusterState::default();
        assert!(t.step(2, &older, LocalRole::Replica).is_empty());
    }
}
