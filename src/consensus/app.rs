//! The application state replicated through Raft: the cluster state and the KV store.
//! (Placeholder until the cluster/kv modules land; replaced by the real wiring.)

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum AppRequest {
    Noop,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub enum AppResponse {
    #[default]
    Done,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct AppState {
    pub noops: u64,
}

impl AppState {
    pub fn apply(&mut self, req: &AppRequest, _index: u64) -> AppResponse {
        match req {
            AppRequest::Noop => self.noops += 1,
        }
        AppResponse::Done
    }
}
