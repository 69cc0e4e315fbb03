//! The CLI's HTTP client for a node's API.
//!
//! Mutating requests need the node's admin token (`Authorization: Bearer`). The CLI reads
//! it only from the file named by `--token-file` or `$QUORATE_TOKEN_FILE`: by default it
//! reads nothing, so a command never picks up a credential the operator did not point it at
//! (and a write without one gets a 401 saying how to pass it).

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

/// How long the CLI waits for one API answer before saying the node is unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the quorate API at {addr}: {detail}; is the daemon running? (pass --api ADDR or set QUORATE_API)")]
    Unreachable { addr: String, detail: String },
    #[error("{addr} answered {status}: {body}")]
    Status {
        addr: String,
        status: u16,
        body: String,
    },
    #[error("{addr} sent a response this CLI cannot read ({detail}); are the CLI and daemon the same version?")]
    Decode { addr: String, detail: String },
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pub addr: String,
    /// Sent as `Authorization: Bearer` on every request (`send` may override it).
    token: Option<String>,
}

/// Largest token file the CLI reads.
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// Reads the admin token from `path` (trimmed; one line of visible ASCII).
pub fn read_token_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| {
        format!(
            "cannot read the API token file {}: {e}; pass the node's [api] token_file or <data_dir>/api.token",
            path.display()
        )
    })?;
    let mut raw = String::new();
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_string(&mut raw)
        .map_err(|e| format!("cannot read the API token file {}: {e}", path.display()))?;
    if raw.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(format!(
            "{} is larger than {MAX_TOKEN_FILE_BYTES} bytes: not an API token file",
            path.display()
        ));
    }
    crate::api::auth::validate_token_text(&raw)
        .map(str::to_string)
        .map_err(|why| format!("the API token file {} is not usable: {why}", path.display()))
}

impl Client {
    pub fn new(addr: &str, timeout: Duration) -> Client {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .unwrap_or_default();
        Client {
            http,
            addr: addr.to_string(),
            token: None,
        }
    }

    /// The same client, sending `token` as the bearer token on every request.
    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    /// The same client (timeout, token) talking to another node's API.
    pub fn at(&self, addr: &str) -> Client {
        Client {
            http: self.http.clone(),
            addr: addr.to_string(),
            token: self.token.clone(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request and returns the status and body, whatever the status.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        token: Option<&str>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.body(b);
        }
        if let Some(t) = token.or(self.token.as_deref()) {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            addr: self.addr.clone(),
            detail: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Unreachable {
            addr: self.addr.clone(),
            detail: e.to_string(),
        })?;
        Ok((status, bytes.to_vec()))
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            addr: self.addr.clone(),
            detail: e.to_string(),
        })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(ClientError::Status {
                addr: self.addr.clone(),
                status: status.as_u16(),
                body: body.trim().to_string(),
            });
        }
        resp.json().await.map_err(|e| ClientError::Decode {
            addr: self.addr.clone(),
            detail: e.to_string(),
        })
    }
}
