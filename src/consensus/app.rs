//! The application state replicated through Raft: the cluster state and the KV store.
//! `apply` is deterministic: it sees only the command and the log index.

use serde::{Deserialize, Serialize};

use crate::cluster::kv::{KvCommand, KvResult, KvStore};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum AppRequest {
    Kv(KvCommand),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub enum AppResponse {
    #[default]
    None,
    Kv(KvResult),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct AppState {
    pub kv: KvStore,
}

impl AppState {
    /// The epoch a KV write's `if_epoch` guard is checked against.
    pub fn committed_epoch(&self) -> u64 {
        0
    }

    pub fn apply(&mut self, req: &AppRequest, _index: u64) -> AppResponse {
        match req {
            AppRequest::Kv(cmd) => {
                let epoch = self.committed_epoch();
                AppResponse::Kv(self.kv.apply(cmd, epoch))
            }
        }
    }
}
