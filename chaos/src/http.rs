//! The one HTTP client of the chaos harness and the benchmarks. Every client it builds
//! carries the cluster's admin token (when it has one), never goes through a proxy (the
//! nodes are on loopback or in namespaces), and bounds every request and every connect.
//! The few typed reads both tools make (`/v1/status`, `/v1/history`) live here too.

use std::net::SocketAddr;
use std::time::Duration;

use quorate::api::wire::NodeStatus;
use quorate::cluster::HistoryEntry;
use reqwest::header::HeaderMap;

use crate::launcher::LocalCluster;

/// Longest wait for a TCP connect to a node's API. A node that is paused or cut off
/// accepts nothing; waiting longer only delays the harness, never the cluster.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client ({0}); check the TLS/proxy setup of this machine")]
pub struct BuildError(String);

/// A client for `cluster`'s APIs whose requests give up after `request_timeout`.
pub fn cluster_client(
    cluster: &LocalCluster,
    request_timeout: Duration,
) -> Result<reqwest::Client, BuildError> {
    client_with_headers(cluster.auth_headers(), request_timeout)
}

/// As [`cluster_client`], for tasks that build their own client (their own connection pool)
/// from a copy of the cluster's auth headers.
pub fn client_with_headers(
    headers: HeaderMap,
    request_timeout: Duration,
) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .default_headers(headers)
        .no_proxy()
        .timeout(request_timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(request_timeout))
        .build()
        .map_err(|e| BuildError(e.to_string()))
}

/// The node's `/v1/status`, or None when it does not answer in time or answers an error.
pub async fn get_status(http: &reqwest::Client, api: SocketAddr) -> Option<NodeStatus> {
    let r = http
        .get(format!("http://{api}/v1/status"))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

#[derive(serde::Deserialize)]
struct HistoryDoc {
    entries: Vec<HistoryEntry>,
}

/// The node's committed `/v1/history`, with the reason when it cannot be read.
pub async fn get_history(
    http: &reqwest::Client,
    api: SocketAddr,
) -> Result<Vec<HistoryEntry>, String> {
    let r = http
        .get(format!("http://{api}/v1/history"))
        .send()
        .await
        .map_err(|e| format!("GET /v1/history on {api}: {e}"))?;
    let status = r.status();
    if !status.is_success() {
        return Err(format!("GET /v1/history on {api}: HTTP {status}"));
    }
    r.json::<HistoryDoc>()
        .await
        .map(|d| d.entries)
        .map_err(|e| format!("GET /v1/history on {api}: unreadable answer: {e}"))
}

/// The HTTP status code of a GET, or None when nothing answered.
pub async fn status_code(http: &reqwest::Client, url: &str) -> Option<u16> {
    http.get(url).send().await.ok().map(|r| r.status().as_u16())
}

/// The benchmarks report errors as text.
impl From<BuildError> for String {
    fn from(e: BuildError) -> String {
        e.to_string()
    }
}
