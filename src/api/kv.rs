//! `/v1/kv/{key}`: the replicated key-value store over HTTP.
//!
//! Writes go through Raft and are acknowledged only once committed and applied. A follower
//! forwards writes and linearizable reads to the leader itself (the client never has to
//! chase the leader); a node that knows no leader, or cannot reach a quorum in
//! `WRITE_TIMEOUT`, answers 503 with `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;

use crate::api::context::ApiContext;
use crate::api::error;
use crate::config::parse_duration;
use crate::consensus::app::{AppRequest, AppResponse};
use crate::consensus::handle::ProposeError;
use crate::kv::{self, Condition, KvCommand, KvEntry, KvError, KvResult};

/// Longest blocking watch a client may ask for.
pub const MAX_WATCH: Duration = Duration::from_secs(300);
/// Default page size for prefix listings.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Wait of a watch that names no `timeout`.
pub const DEFAULT_WATCH: Duration = Duration::from_secs(30);

#[derive(Deserialize, Default)]
pub struct KvQuery {
    if_revision: Option<u64>,
    if_epoch: Option<crate::types::Epoch>,
    stale: Option<bool>,
    wait: Option<u64>,
    timeout: Option<String>,
    prefix: Option<bool>,
    limit: Option<usize>,
    start_after: Option<String>,
}

pub use crate::api::wire::{KvItem, KvList, WriteReply};

fn item(key: &str, e: &KvEntry) -> KvItem {
    let (value, encoding) = kv::encode_value_for_json(&e.value);
    KvItem {
        key: key.to_string(),
        value,
        encoding: encoding.to_string(),
        create_revision: e.create_revision,
        mod_revision: e.mod_revision,
        version: e.version,
    }
}

fn kv_error_status(e: &KvError) -> StatusCode {
    match e {
        KvError::ValueTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        KvError::KeyTooLong { .. } | KvError::BadKey { .. } | KvError::InvalidLimits { .. } => {
            StatusCode::BAD_REQUEST
        }
        KvError::CasConflict { .. } | KvError::EpochMismatch { .. } => StatusCode::CONFLICT,
        KvError::NotFound { .. } => StatusCode::NOT_FOUND,
        KvError::TooManyKeys { .. }
        | KvError::StoreFull { .. }
        | KvError::RevisionExhausted { .. } => StatusCode::INSUFFICIENT_STORAGE,
    }
}

/// Forwards a KV request to the leader's API, or answers 503 when there is nowhere to go.
#[allow(clippy::too_many_arguments)]
async fn forward_or_unavailable(
    node: &ApiContext,
    leader: Option<u64>,
    method: Method,
    key: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
    extra_wait: Duration,
) -> Response {
    let path = match raw_query {
        Some(q) => format!("/v1/kv/{key}?{q}"),
        None => format!("/v1/kv/{key}"),
    };
    crate::api::forward::to_leader(node, leader, method, &path, headers, body, extra_wait).await
}

fn propose_error(e: ProposeError) -> Response {
    match e {
        ProposeError::NotLeader { .. } => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "leadership changed; retry shortly",
        ),
        ProposeError::Timeout(_) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        ProposeError::Unknown(_) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        ProposeError::Fatal(_) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// While a switchover or failback moves the primary, the cluster pauses writes so the log
/// stops growing and the target can be exactly in sync before it takes over (no
/// acknowledged write is left behind on the old primary). A write arriving then is held
/// until the pause ends, bounded by `WRITE_TIMEOUT` (then 503 with Retry-After).
#[allow(clippy::result_large_err)] // an axum Response is the natural error here
async fn wait_until_writes_resume(node: &ApiContext) -> Result<(), Response> {
    let paused = |node: &ApiContext| {
        node.consensus
            .sm
            .cluster()
            .operation
            .as_ref()
            .is_some_and(|o| o.writes_paused())
    };
    if !paused(node) {
        return Ok(());
    }
    let mut applied = node.consensus.sm.subscribe_applied();
    let deadline = tokio::time::Instant::now() + crate::consensus::handle::WRITE_TIMEOUT;
    while paused(node) {
        match tokio::time::timeout_at(deadline, applied.changed()).await {
            Ok(Ok(())) => {}
            _ => {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "writes are paused while the primary moves (switchover or failback in progress); retry shortly",
                ))
            }
        }
    }
    Ok(())
}

async fn write(
    node: Arc<ApiContext>,
    cmd: KvCommand,
    method: Method,
    key: String,
    q: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if crate::fault::ack_before_commit() {
        // Deliberately broken (test-only): acknowledge, then propose. The chaos harness must
        // catch this as lost writes / non-linearizable reads.
        let n = node.clone();
        tokio::spawn(async move {
            let _ = n.propose(AppRequest::Kv(cmd)).await;
        });
        return (StatusCode::OK, Json(WriteReply { revision: 0 })).into_response();
    }
    if let Err(r) = wait_until_writes_resume(&node).await {
        return r;
    }
    match node.propose(AppRequest::Kv(cmd)).await {
        Ok((AppResponse::Kv(KvResult::Ok { revision, .. }), _)) => {
            (StatusCode::OK, Json(WriteReply { revision })).into_response()
        }
        Ok((AppResponse::Kv(KvResult::Failed(e)), _)) => error(kv_error_status(&e), e.to_string()),
        Ok((other, _)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected apply result {other:?}"),
        ),
        Err(ProposeError::NotLeader { leader }) => {
            forward_or_unavailable(
                &node,
                leader,
                method,
                &key,
                q.as_deref(),
                &headers,
                body,
                crate::consensus::handle::WRITE_TIMEOUT,
            )
            .await
        }
        Err(e) => propose_error(e),
    }
}

fn condition(q: &KvQuery) -> Condition {
    Condition {
        if_mod_revision: q.if_revision,
        if_value: None,
        if_epoch: q.if_epoch,
    }
}

/// Checks what can be checked before proposing, so bad input never reaches the log.
/// The value bound is the smaller of the replicated store's limit and this node's configured
/// `storage.max_value_bytes`: the operator's setting is enforced at admission whatever limit
/// the store itself carries.
#[allow(clippy::result_large_err)] // an axum Response is the natural error of an HTTP precheck
fn precheck(node: &ApiContext, key: &str, value_len: Option<usize>) -> Result<(), Response> {
    let limits = node
        .consensus
        .sm
        .read()
        .map(|s| s.app.kv.limits())
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    kv::check_key(key, limits.max_key_bytes)
        .map_err(|e| error(kv_error_status(&e), e.to_string()))?;
    if let Some(len) = value_len {
        let configured = usize::try_from(node.config.storage.max_value_bytes).unwrap_or(usize::MAX);
        let max = limits.max_value_bytes.min(configured);
        if len > max {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("value of {len} bytes exceeds the {max}-byte limit (storage.max_value_bytes); store large blobs elsewhere and keep a reference here"),
            ));
        }
        // The store's total-bytes bound, refused before proposing (apply checks it again).
        node.consensus
            .sm
            .read()
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .app
            .kv
            .check_put_size(key, len)
            .map_err(|e| error(kv_error_status(&e), e.to_string()))?;
    }
    Ok(())
}

pub async fn put(
    State(node): State<Arc<ApiContext>>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = precheck(&node, &key, Some(body.len())) {
        return r;
    }
    let cmd = KvCommand::Put {
        key: key.clone(),
        value: body.to_vec(),
        condition: condition(&q),
    };
    write(
        node,
        cmd,
        Method::PUT,
        key,
        uri.query().map(str::to_string),
        headers,
        body,
    )
    .await
}

pub async fn delete(
    State(node): State<Arc<ApiContext>>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = precheck(&node, &key, None) {
        return r;
    }
    let cmd = KvCommand::Delete {
        key: key.clone(),
        condition: condition(&q),
    };
    write(
        node,
        cmd,
        Method::DELETE,
        key,
        uri.query().map(str::to_string),
        headers,
        Bytes::new(),
    )
    .await
}

pub async fn get(
    State(node): State<Arc<ApiContext>>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let stale = q.stale.unwrap_or(false);
    // Parsed up front: a bad timeout is the client's error wherever the request would go, and
    // a forwarded watch must be given its whole wait to answer.
    let watch = match (q.wait, q.timeout.as_deref().map(parse_duration)) {
        (None, _) => None,
        (Some(_), None) => Some(DEFAULT_WATCH),
        (Some(_), Some(Ok(d))) => Some(d.min(MAX_WATCH)),
        (Some(_), Some(Err(e))) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("bad timeout: {e}; use e.g. timeout=30s"),
            )
        }
    };
    if !stale {
        if let Err(e) = node.linearizable_barrier().await {
            return match e {
                ProposeError::NotLeader { leader } => {
                    forward_or_unavailable(
                        &node,
                        leader,
                        Method::GET,
                        &key,
                        uri.query(),
                        &headers,
                        Bytes::new(),
                        crate::consensus::handle::WRITE_TIMEOUT + watch.unwrap_or_default(),
                    )
                    .await
                }
                e => propose_error(e),
            };
        }
    }
    if q.prefix.unwrap_or(false) {
        return list(&node, &key, &q);
    }
    if let Err(r) = precheck(&node, &key, None) {
        return r;
    }
    if let (Some(rev), Some(timeout)) = (q.wait, watch) {
        wait_for_change(&node, &key, rev, timeout).await;
    }
    let st = match node.consensus.sm.read() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let revision = st.app.kv.revision();
    match st.app.kv.get(&key) {
        Some(e) => {
            let mut r = Json(item(&key, e)).into_response();
            if let Ok(v) = HeaderValue::from_str(&revision.to_string()) {
                r.headers_mut().insert("x-quorate-revision", v);
            }
            r
        }
        None => error(StatusCode::NOT_FOUND, format!("key {key:?} not found")),
    }
}

/// Blocks until the key's mod revision exceeds `rev` or `timeout` passes (Consul-style).
async fn wait_for_change(node: &ApiContext, key: &str, rev: u64, timeout: Duration) {
    let mut applied = node.consensus.sm.subscribe_applied();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let changed = node
            .consensus
            .sm
            .read()
            .map(|s| s.app.kv.changed_since(key, rev))
            .unwrap_or(true);
        if changed {
            return;
        }
        match tokio::time::timeout_at(deadline, applied.changed()).await {
            Ok(Ok(())) => continue,
            _ => return,
        }
    }
}

fn list(node: &ApiContext, prefix: &str, q: &KvQuery) -> Response {
    let limit = q.limit.unwrap_or(DEFAULT_LIST_LIMIT).min(kv::MAX_LIST_PAGE);
    let st = match node.consensus.sm.read() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let (entries, more) = st.app.kv.list(prefix, q.start_after.as_deref(), limit);
    let items: Vec<KvItem> = entries.into_iter().map(|(k, e)| item(k, e)).collect();
    let next_start_after = if more {
        items.last().map(|i| i.key.clone())
    } else {
        None
    };
    Json(KvList {
        items,
        more,
        next_start_after,
        revision: st.app.kv.revision(),
    })
    .into_response()
}
