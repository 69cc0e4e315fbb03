//! The CLI's HTTP client for a node's API.

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

pub struct Client {
    http: reqwest::Client,
    pub addr: String,
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
        if let Some(t) = token {
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
        let resp =
            self.http
                .get(self.url(path))
                .send()
                .await
                .map_err(|e| ClientError::Unreachable {
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
