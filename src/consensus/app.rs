//! The application state replicated through Raft: the cluster state and the KV store.
//! `apply` is deterministic: it sees only the command and the log index, never a clock.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cluster::{Applied, ClusterState, Command, Rejected};
use crate::kv::{KvCommand, KvLimits, KvResult, KvStore};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum AppRequest {
    /// A cluster-state change (promote, demote, maintenance, drain, operations).
    Cluster(Command),
    Kv(KvCommand),
    /// Cluster-wide KV limits, proposed by the leader from its config so every node applies
    /// the same limits at the same log index.
    SetKvLimits(KvLimits),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub enum AppResponse {
    #[default]
    None,
    Cluster(Result<Applied, Rejected>),
    Kv(KvResult),
    Limits(Result<(), String>),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct AppState {
    /// Shared copy-on-write: readers (executor, API) clone the `Arc`, not the history.
    pub cluster: Arc<ClusterState>,
    pub kv: KvStore,
}

impl AppState {
    /// The epoch a KV write's `if_epoch` guard is checked against: the highest epoch ever
    /// committed (the current primary's fencing token).
    pub fn committed_epoch(&self) -> crate::types::Epoch {
        self.cluster.epoch
    }

    pub fn apply(&mut self, req: &AppRequest, _index: u64) -> AppResponse {
        match req {
            AppRequest::Cluster(cmd) => {
                let r = Arc::make_mut(&mut self.cluster).apply(cmd);
                // Every apply keeps the invariants a decoded snapshot is checked against.
                debug_assert_eq!(self.cluster.check_invariants(), Ok(()), "after {cmd:?}");
                AppResponse::Cluster(r)
            }
            AppRequest::Kv(cmd) => {
                let epoch = self.committed_epoch();
                AppResponse::Kv(self.kv.apply(cmd, epoch))
            }
            AppRequest::SetKvLimits(l) => {
                AppResponse::Limits(self.kv.set_limits(*l).map_err(|e| e.to_string()))
            }
        }
    }
}
