//! `POST /v1/snapshot`: build a Raft snapshot on this node now (admin token required).
//!
//! openraft builds snapshots on its own every `storage.snapshot_every` entries; this endpoint
//! lets an operator compact the log before a maintenance window (or a test build one at a
//! chosen moment). The build runs in the background; the answer says which applied index the
//! snapshot will cover, and `/v1/status` shows `snapshot_index` once it is done.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};

use crate::api::context::ApiContext;
use crate::api::error;

pub async fn trigger(State(node): State<Arc<ApiContext>>) -> Response {
    let m = node.metrics();
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let previous = m.snapshot.map(|l| l.index);
    match node.consensus.raft.trigger().snapshot().await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({
                "triggered": true,
                "applied_index": applied,
                "previous_snapshot_index": previous,
            })),
        )
            .into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "cannot start a snapshot: Raft has stopped on this node ({e}); see the node's log"
            ),
        ),
    }
}
