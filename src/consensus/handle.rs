//! The one handle the daemon and the API use to reach Raft: propose and wait until applied,
//! wait for a linearizable read, read the metrics, and say why Raft stopped.

use std::path::PathBuf;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;

use super::app::{AppRequest, AppResponse};
use super::log_store::LogStore;
use super::state_machine::StateMachineStore;
use super::types::{Raft, Request, TypeConfig};
use crate::types::{NodeId, Term};

/// How long a write or linearizable read may wait for Raft before the client gets 503.
/// Bounded so a minority side answers quickly instead of hanging its clients.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<NodeId> },
    #[error("no quorum answered within {0:?}: this node may be cut off from the majority; retry, or ask another node")]
    Timeout(Duration),
    #[error("the write's outcome is unknown (the leader changed while it was in flight); read the key before retrying")]
    Unknown(String),
    #[error("raft has stopped on this node: {0}")]
    Fatal(String),
}

/// Raft with its log and state machine. Cheap to clone: every part is shared.
#[derive(Clone)]
pub struct Consensus {
    pub id: NodeId,
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub log: LogStore,
    /// Named in the operator message when Raft stops (see [`describe_raft_failure`]).
    pub data_dir: PathBuf,
}

impl Consensus {
    /// A copy of the current Raft metrics. Copy first, then use: holding the watch borrow
    /// across an await blocks RaftCore from publishing and can deadlock it.
    pub fn metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// Why Raft stopped on this node, with what to do about it; None while it runs (or after
    /// a requested shutdown). Raft stops for good when storage fails (a full disk, an IO
    /// error on append or fsync): the node can no longer persist, so it cannot act as
    /// primary, vote or replicate until the daemon is restarted on a healthy disk.
    pub fn raft_failure(&self) -> Option<String> {
        let fatal = match &self.raft.metrics().borrow_watched().running_state {
            Ok(()) => return None,
            Err(openraft::errors::Fatal::Stopped) => return None,
            Err(e) => e.to_string(),
        };
        Some(describe_raft_failure(&fatal, &self.data_dir))
    }

    /// Proposes `req` through Raft on this node and waits until it is committed *and
    /// applied* (only then may the client be told it succeeded: safety rule 5).
    pub async fn propose(&self, req: AppRequest) -> Result<(AppResponse, u64), ProposeError> {
        use openraft::errors::{ClientWriteError, RaftError};
        let fut = self.raft.client_write(Request(req));
        match tokio::time::timeout(WRITE_TIMEOUT, fut).await {
            Err(_) => Err(ProposeError::Timeout(WRITE_TIMEOUT)),
            Ok(Ok(resp)) => Ok((resp.data.0, resp.log_id.index)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(RaftError::APIError(e))) => Err(ProposeError::Unknown(e.to_string())),
            Ok(Err(RaftError::Fatal(e))) => Err(ProposeError::Fatal(e.to_string())),
        }
    }

    /// Waits until a read on this node is linearizable (ReadIndex through the leader's
    /// quorum, then local apply up to it). Only valid on the leader; followers forward.
    pub async fn linearizable_barrier(&self) -> Result<(), ProposeError> {
        use openraft::errors::{LinearizableReadError, RaftError};
        let fut = self
            .raft
            .ensure_linearizable(openraft::ReadPolicy::ReadIndex);
        match tokio::time::timeout(WRITE_TIMEOUT, fut).await {
            Err(_) => Err(ProposeError::Timeout(WRITE_TIMEOUT)),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(RaftError::APIError(e))) => Err(ProposeError::Unknown(e.to_string())),
            Ok(Err(RaftError::Fatal(e))) => Err(ProposeError::Fatal(e.to_string())),
        }
    }
}

/// How long ago a quorum last acknowledged this node as leader, from Raft's metrics (the
/// rule, including the sole-voter case: [`crate::rules::quorum_acked_age`]).
pub fn quorum_acked_age(m: &openraft::RaftMetrics<TypeConfig>) -> Option<Duration> {
    let membership = m.membership_config.membership();
    let mut voters = membership.voter_ids();
    let sole_voter = voters.next() == Some(m.id) && voters.next().is_none();
    crate::rules::quorum_acked_age(
        m.state == ServerState::Leader,
        sole_voter,
        m.last_quorum_acked
            .as_ref()
            .map(|t| openraft::Instant::elapsed(&**t)),
    )
}

/// Whether this node counts as leader for decisions (the rule:
/// [`crate::rules::leader_is_current`]).
pub fn leader_is_current(m: &openraft::RaftMetrics<TypeConfig>) -> bool {
    crate::rules::leader_is_current(
        m.state == ServerState::Leader,
        m.last_applied.map(|l| Term(l.leader_id.term)),
        Term(m.current_term),
    )
}

/// Turns openraft's fatal error into an operator message: what happened and the next step.
pub fn describe_raft_failure(fatal: &str, data_dir: &std::path::Path) -> String {
    let dir = data_dir.display();
    let lower = fatal.to_ascii_lowercase();
    let next = if lower.contains("no space left") || lower.contains("quota") {
        format!(
            "the disk holding {dir} is full: free space there (`df -h {dir}`), then restart the \
             daemon (`systemctl restart quorate`); the node rejoins as a replica and catches up"
        )
    } else if lower.contains("corrupt") || lower.contains("decode") || lower.contains("checksum") {
        format!(
            "the Raft data in {dir} is damaged: stop the daemon and run \
             `quorate recover --config FILE` to check it and re-seed this node from its peers"
        )
    } else {
        format!(
            "check the disk holding {dir} (kernel log, `df -h {dir}`), then restart the daemon \
             (`systemctl restart quorate`); if it fails again at start, run \
             `quorate recover --config FILE`"
        )
    };
    format!(
        "raft stopped: {fatal}. This node cannot persist its log, so it no longer acts as primary, \
         votes or replicates. Next: {next}"
    )
}
