//! Operator control endpoints: maintenance, drain, switchover, failback.
//!
//! Each request goes to the leader's executor, which checks it with the policy
//! (`plan_request`: eligible target, no other operation, ...) and commits the resulting
//! command through Raft before answering. A follower forwards to the leader.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};

use crate::api::context::ApiContext;
use crate::api::context::{OpError, OpRequest};
use crate::api::error;
use crate::consensus::handle::WRITE_TIMEOUT;
use crate::policy::OperatorRequest;
use crate::types::NodeId;

/// How long the API waits for the executor to plan and commit a request.
pub const OPERATOR_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct MaintenanceBody {
    pub on: bool,
    #[serde(default)]
    pub reason: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct SwitchoverBody {
    pub to: Option<NodeId>,
    /// Wall-clock time (Unix ms) for a scheduled switchover.
    pub at_unix_ms: Option<u64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct FailbackBody {
    #[serde(default)]
    pub no_commit: bool,
    /// Another node than the recorded home (`quorate failback --to N`).
    #[serde(default)]
    pub to: Option<NodeId>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct OpReply {
    pub accepted: bool,
    pub command: String,
    pub log_index: u64,
}

/// Sends `req` to the local executor; forwards to the leader when this node is not it.
async fn submit(node: Arc<ApiContext>, req: OperatorRequest, raw: RawRequest) -> Response {
    let RawRequest {
        method,
        uri,
        headers,
        body,
    } = raw;
    let (tx, rx) = tokio::sync::oneshot::channel();
    if node.ops.try_send(OpRequest { req, reply: tx }).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many operator requests queued; retry shortly",
        );
    }
    let answer = match tokio::time::timeout(OPERATOR_TIMEOUT, rx).await {
        Ok(Ok(a)) => a,
        Ok(Err(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the executor stopped; see the node's log",
            )
        }
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no answer within {OPERATOR_TIMEOUT:?}; check `quorate status`"),
            )
        }
    };
    match answer {
        Ok(o) => Json(OpReply {
            accepted: true,
            command: o.command,
            log_index: o.log_index,
        })
        .into_response(),
        Err(OpError::NotLeader { leader }) => {
            let path = uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            crate::api::forward::to_leader(
                &node,
                leader,
                method,
                &path,
                &headers,
                body,
                OPERATOR_TIMEOUT.max(WRITE_TIMEOUT),
            )
            .await
        }
        Err(OpError::Refused(r)) => error(StatusCode::CONFLICT, r.to_string()),
        Err(OpError::Rejected(r)) => error(StatusCode::CONFLICT, r),
        Err(OpError::Propose(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// Decodes a control request body: an empty body means every field at its default, anything
/// else must be one JSON object of `T`. Public so the decoder tests call exactly this.
pub fn decode_body<T: for<'de> Deserialize<'de> + Default>(
    body: &[u8],
) -> Result<T, serde_json::Error> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
}

#[allow(clippy::result_large_err)] // an axum Response is the natural error of a request parser
fn parse<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> Result<T, Response> {
    decode_body(body).map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

pub async fn maintenance(State(node): State<Arc<ApiContext>>, raw: RawRequest) -> Response {
    let b: MaintenanceBody = match parse(&raw.body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req = OperatorRequest::Maintenance {
        on: b.on,
        reason: b.reason,
    };
    submit(node, req, raw).await
}

pub async fn drain(
    State(node): State<Arc<ApiContext>>,
    Path(id): Path<NodeId>,
    raw: RawRequest,
) -> Response {
    let req = OperatorRequest::Drain {
        node: id,
        drained: true,
    };
    submit(node, req, raw).await
}

pub async fn undrain(
    State(node): State<Arc<ApiContext>>,
    Path(id): Path<NodeId>,
    raw: RawRequest,
) -> Response {
    let req = OperatorRequest::Drain {
        node: id,
        drained: false,
    };
    submit(node, req, raw).await
}

pub async fn switchover(State(node): State<Arc<ApiContext>>, raw: RawRequest) -> Response {
    let b: SwitchoverBody = match parse(&raw.body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req = OperatorRequest::Switchover {
        to: b.to,
        at_unix_ms: b.at_unix_ms,
    };
    submit(node, req, raw).await
}

pub async fn cancel_switchover(State(node): State<Arc<ApiContext>>, raw: RawRequest) -> Response {
    submit(node, OperatorRequest::CancelSwitchover, raw).await
}

pub async fn failback(State(node): State<Arc<ApiContext>>, raw: RawRequest) -> Response {
    let b: FailbackBody = match parse(&raw.body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    submit(
        node,
        OperatorRequest::Failback {
            no_commit: b.no_commit,
            to: b.to,
        },
        raw,
    )
    .await
}

pub async fn failback_commit(State(node): State<Arc<ApiContext>>, raw: RawRequest) -> Response {
    submit(node, OperatorRequest::FailbackCommit, raw).await
}

pub async fn failback_undo(State(node): State<Arc<ApiContext>>, raw: RawRequest) -> Response {
    submit(node, OperatorRequest::FailbackUndo, raw).await
}

/// What a control request must keep to be forwarded unchanged to the leader: one extractor
/// instead of the same four parameters on every handler.
pub struct RawRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for RawRequest {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let (method, uri, headers) = (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        );
        let body = Bytes::from_request(axum::extract::Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(RawRequest {
            method,
            uri,
            headers,
            body,
        })
    }
}
