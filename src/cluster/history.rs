//! The bounded, replicated history of role changes and operation steps.
//!
//! History lives inside [`ClusterState`](super::ClusterState), so it is written only by
//! committed commands and is identical on every node that applied the same log prefix.
//! It is what `quorate history` prints (like `patronictl history`), so every entry says
//! what changed, why, in which Raft term and at which wall-clock time the leader stamped
//! on the command.
//!
//! The history is bounded by [`HISTORY_LIMIT`]: it rides in every snapshot, and an
//! unbounded list would make snapshots (and the time to install them on a lagging node)
//! grow for ever. The oldest entries are dropped first; `seq` keeps counting so a reader
//! can tell that entries were dropped and page with `since(seq)`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::command::{DemoteReason, PromoteReason};
use super::operation::{OperationKind, Outcome, Phase};
use crate::types::{Epoch, HookKind, NodeId, Term};

/// How many entries the replicated history keeps (oldest dropped first).
pub const HISTORY_LIMIT: usize = 1000;

/// One recorded event.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Position in the whole history since the cluster was created (never reused, keeps
    /// counting after old entries were dropped).
    pub seq: u64,
    /// Wall-clock time the leader stamped on the command (not read by apply).
    pub at_unix_ms: u64,
    /// The Raft term the proposer stamped, when the command carries one.
    pub term: Option<Term>,
    pub event: HistoryEvent,
}

impl HistoryEntry {
    /// The reason of a promotion entry (for per-reason counters), None for other entries.
    pub fn promote_reason(&self) -> Option<PromoteReason> {
        match self.event {
            HistoryEvent::Promoted { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// What happened.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HistoryEvent {
    /// `node` became primary at `epoch`.
    Promoted {
        node: NodeId,
        epoch: Epoch,
        previous: Option<NodeId>,
        reason: PromoteReason,
    },
    /// `node` released the primary role it held at `epoch`.
    Demoted {
        node: NodeId,
        epoch: Epoch,
        reason: DemoteReason,
    },
    /// The primary restarted its service locally (demote + promote hooks, same epoch).
    Restarted {
        node: NodeId,
        epoch: Epoch,
        attempt: u32,
    },
    OperationStarted {
        id: u64,
        kind: OperationKind,
        from: NodeId,
        to: NodeId,
        scheduled_at_unix_ms: Option<u64>,
    },
    /// An operation moved from one phase to the next; `duration_ms` is the time spent in
    /// `from_phase` (wall clock, leader-stamped; saturates at 0 if clocks stepped back).
    OperationStep {
        id: u64,
        kind: OperationKind,
        from_phase: Phase,
        to_phase: Phase,
        duration_ms: u64,
        /// Set when this step ends the write pause (writes resume).
        write_pause_ms: Option<u64>,
        reason: Option<String>,
    },
    OperationEnded {
        id: u64,
        kind: OperationKind,
        outcome: Outcome,
        /// Whole operation, from BeginOperation to this entry.
        duration_ms: u64,
        /// Set when the operation ended while writes were paused.
        write_pause_ms: Option<u64>,
    },
    /// A data action of operation `id` ran on `node` (snapshot, promote with its final
    /// sync, verify) and said this.
    OperationData {
        id: u64,
        node: NodeId,
        action: HookKind,
        ok: bool,
        duration_ms: u64,
        detail: String,
    },
    Maintenance {
        on: bool,
        reason: String,
    },
    Drained {
        node: NodeId,
        drained: bool,
    },
}

/// The bounded list itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct History {
    entries: VecDeque<HistoryEntry>,
    /// `seq` of the next entry.
    next_seq: u64,
}

impl History {
    /// Appends an entry, dropping the oldest one when the history is full.
    pub fn push(&mut self, at_unix_ms: u64, term: Option<Term>, event: HistoryEvent) {
        while self.entries.len() >= HISTORY_LIMIT {
            self.entries.pop_front();
        }
        self.entries.push_back(HistoryEntry {
            seq: self.next_seq,
            at_unix_ms,
            term,
            event,
        });
        self.next_seq = self.next_seq.saturating_add(1);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &HistoryEntry> + '_ {
        self.entries.iter()
    }

    pub fn last(&self) -> Option<&HistoryEntry> {
        self.entries.back()
    }

    /// Entries with `seq >= seq`, oldest first (for paging and `quorate history --since`).
    pub fn since(&self, seq: u64) -> impl Iterator<Item = &HistoryEntry> + '_ {
        self.entries.iter().filter(move |e| e.seq >= seq)
    }

    /// Total number of entries ever pushed (including dropped ones).
    pub fn total(&self) -> u64 {
        self.next_seq
    }

    /// Structural checks for a history read from a snapshot: within the bound, `seq`
    /// strictly increasing and below `next_seq`.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.entries.len() > HISTORY_LIMIT {
            return Err(format!(
                "history holds {} entries, more than the limit of {HISTORY_LIMIT}",
                self.entries.len()
            ));
        }
        let mut prev: Option<u64> = None;
        for e in &self.entries {
            if prev.is_some_and(|p| e.seq <= p) {
                return Err(format!("history seq {} does not increase", e.seq));
            }
            if e.seq >= self.next_seq {
                return Err(format!(
                    "history seq {} is not below next_seq {}",
                    e.seq, self.next_seq
                ));
            }
            prev = Some(e.seq);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> HistoryEvent {
        HistoryEvent::Drained {
            node: n,
            drained: true,
        }
    }

    #[test]
    fn push_keeps_at_most_history_limit_entries_and_drops_oldest() {
        let mut h = History::default();
        for i in 0..(HISTORY_LIMIT as u64 + 5) {
            h.push(i, None, ev(i));
        }
        assert_eq!(h.len(), HISTORY_LIMIT);
        assert_eq!(h.iter().next().map(|e| e.seq), Some(5));
        assert_eq!(h.last().map(|e| e.seq), Some(HISTORY_LIMIT as u64 + 4));
        assert_eq!(h.total(), HISTORY_LIMIT as u64 + 5);
        assert!(h.check().is_ok());
    }

    #[test]
    fn promote_reason_only_for_promotions() {
        let mut h = History::default();
        h.push(1, Some(Term(1)), ev(1));
        h.push(
            2,
            Some(Term(1)),
            HistoryEvent::Promoted {
                node: 1,
                epoch: Epoch(1),
                previous: None,
                reason: PromoteReason::Failover,
            },
        );
        let reasons: Vec<_> = h.iter().map(|e| e.promote_reason()).collect();
        assert_eq!(reasons, vec![None, Some(PromoteReason::Failover)]);
    }

    #[test]
    fn since_returns_entries_from_seq_on() {
        let mut h = History::default();
        for i in 0..10 {
            h.push(i, Some(Term(1)), ev(i));
        }
        let seqs: Vec<u64> = h.since(7).map(|e| e.seq).collect();
        assert_eq!(seqs, vec![7, 8, 9]);
    }

    #[test]
    fn check_rejects_non_increasing_seq() {
        let mut h = History::default();
        h.push(1, None, ev(1));
        h.push(2, None, ev(2));
        if let Some(e) = h.entries.back_mut() {
            e.seq = 0;
        }
        assert!(h.check().is_err());
    }
}
