//! Forwarding to the leader: a follower passes writes, linearizable reads and operator
//! requests to the leader's API itself, so clients never chase the leader. With `[api]` TLS
//! on, it does so over HTTPS (see `tls::Forwarder` for the trust anchors).

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::context::ApiContext;
use crate::api::error;

/// Marks a request already forwarded once, so two nodes that disagree about the leader can
/// never bounce a request between them forever.
pub const FORWARDED_HEADER: &str = "x-quorate-forwarded";
/// Added to how long the leader may take, for the extra hop.
pub const FORWARD_SLACK: Duration = Duration::from_secs(1);

/// Sends `method path` (path includes the query) to the leader's API and relays its answer;
/// 503 with Retry-After when no leader is known or it does not answer. `leader_bound` is how
/// long the leader itself may take (e.g. the write timeout, or a watch's timeout).
pub async fn to_leader(
    node: &ApiContext,
    leader: Option<u64>,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
    leader_bound: Duration,
) -> Response {
    if headers.contains_key(FORWARDED_HEADER) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "leadership is changing (request was already forwarded once); retry shortly",
        );
    }
    let Some(addr) = leader
        .filter(|l| *l != node.id())
        .and_then(|l| node.api_addr_of(l))
    else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no leader known: an election is in progress or this node is cut off from the majority; retry shortly",
        );
    };
    let mut req = node
        .api_forward
        .request(method, addr, path, leader_bound + FORWARD_SLACK)
        .header(FORWARDED_HEADER, node.id().to_string())
        .body(body);
    for h in ["authorization", "content-type"] {
        if let Some(a) = headers.get(h) {
            req = req.header(h, a.clone());
        }
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let retry = resp.headers().get("retry-after").cloned();
            let ctype = resp.headers().get("content-type").cloned();
            let bytes = resp.bytes().await.unwrap_or_default();
            let mut r = (status, bytes).into_response();
            r.headers_mut().insert(
                "content-type",
                ctype.unwrap_or_else(|| HeaderValue::from_static("application/json")),
            );
            if let Some(v) = retry {
                r.headers_mut().insert("retry-after", v);
            }
            r
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the leader (node {}) did not answer: {e}; retry shortly",
                leader.unwrap_or_default()
            ),
        ),
    }
}
