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
    /// "http" or "https".
    scheme: Scheme,
    /// `host:port` of the node's API (no scheme).
    pub addr: String,
    /// How long one request may take, connecting included.
    timeout: Duration,
    /// Sent as `Authorization: Bearer` on every request (`send` may override it).
    token: Option<String>,
}

/// The URL scheme the API is reached with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Largest CA file the CLI reads (a CA bundle of a few certificates is a few KiB).
pub const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// Which node API the CLI talks to, and how: `--api [http://|https://]HOST:PORT` and
/// `--ca-file FILE`. Checked once, before any request, so a wrong flag fails with a clear
/// message instead of an opaque TLS error.
#[derive(Clone)]
pub struct ApiTarget {
    scheme: Scheme,
    addr: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for ApiTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiTarget({self})")
    }
}

impl std::fmt::Display for ApiTarget {
    /// `HOST:PORT` for plain HTTP (as the CLI always printed it), `https://HOST:PORT` else.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.scheme {
            Scheme::Http => f.write_str(&self.addr),
            Scheme::Https => write!(f, "https://{}", self.addr),
        }
    }
}

impl ApiTarget {
    /// `api` is `HOST:PORT`, `http://HOST:PORT` or `https://HOST:PORT` (a trailing `/` is
    /// allowed, a path is not). HTTPS trusts only the certificates in `ca_file` (the CA that
    /// signed the nodes' API certificates, or the nodes' shared certificate): no built-in or
    /// system roots. A bare `HOST:PORT` means HTTPS when `ca_file` is given, HTTP otherwise.
    pub fn parse(api: &str, ca_file: Option<&Path>) -> Result<ApiTarget, String> {
        let text = api.trim();
        let lower = text.to_ascii_lowercase();
        let (explicit, rest) = if lower.starts_with("https://") {
            (Some(Scheme::Https), &text["https://".len()..])
        } else if lower.starts_with("http://") {
            (Some(Scheme::Http), &text["http://".len()..])
        } else if let Some((scheme, _)) = text.split_once("://") {
            return Err(format!(
                "--api {text}: unknown scheme \"{scheme}\"; use HOST:PORT, http://HOST:PORT or https://HOST:PORT"
            ));
        } else {
            (None, text)
        };
        let addr = rest.strip_suffix('/').unwrap_or(rest);
        if addr.is_empty() || addr.contains('/') || addr.contains('?') || addr.contains('#') {
            return Err(format!(
                "--api {text}: give the node's API address only, such as 127.0.0.1:7401 or https://10.0.0.1:7401"
            ));
        }
        let scheme = match (explicit, ca_file) {
            (Some(Scheme::Http), Some(ca)) => {
                return Err(format!(
                    "--ca-file {} is given but --api {text} says http://; use https://{addr} to talk TLS, or drop --ca-file (and QUORATE_CA_FILE)",
                    ca.display()
                ))
            }
            (Some(Scheme::Https), None) => {
                return Err(format!(
                    "--api {text} uses https but no --ca-file was given: pass --ca-file FILE (or set QUORATE_CA_FILE) with the CA certificate that signed the node's API certificate (or the node's own certificate)"
                ))
            }
            (Some(s), _) => s,
            (None, Some(_)) => Scheme::Https,
            (None, None) => Scheme::Http,
        };
        let mut builder = reqwest::Client::builder().no_proxy();
        if let Some(ca) = ca_file {
            builder = builder.https_only(true).tls_built_in_root_certs(false);
            for cert in read_ca_file(ca)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(ApiTarget {
            scheme,
            addr: addr.to_string(),
            http,
        })
    }

    /// Plain HTTP to `addr` (`HOST:PORT`).
    pub fn plain(addr: &str) -> ApiTarget {
        ApiTarget {
            scheme: Scheme::Http,
            addr: addr.to_string(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// `HOST:PORT`, without the scheme.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

/// The certificates of a PEM CA file, for `--ca-file` (at least one; errors name the file).
fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| {
        format!(
            "cannot read the CA file {}: {e}; check --ca-file / QUORATE_CA_FILE",
            path.display()
        )
    })?;
    let mut pem = Vec::new();
    file.take(MAX_CA_FILE_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
    if pem.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(format!(
            "the CA file {} is larger than {MAX_CA_FILE_BYTES} bytes: not a PEM certificate file",
            path.display()
        ));
    }
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("the CA file {} is not usable PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the CA file {} holds no PEM certificate (no \"BEGIN CERTIFICATE\" section)",
            path.display()
        ));
    }
    Ok(certs)
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
    /// Plain HTTP to `addr` (`HOST:PORT`).
    pub fn new(addr: &str, timeout: Duration) -> Client {
        Client::to(&ApiTarget::plain(addr), timeout)
    }

    /// The node API of `target` (HTTP or HTTPS, as `--api`/`--ca-file` said).
    pub fn to(target: &ApiTarget, timeout: Duration) -> Client {
        Client {
            http: target.http.clone(),
            scheme: target.scheme,
            addr: target.addr.clone(),
            timeout,
            token: None,
        }
    }

    /// The same client, sending `token` as the bearer token on every request.
    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The same client (scheme and trusted CAs, timeout, token) talking to another node's
    /// API at `addr` (`HOST:PORT`, as the status document lists peers).
    pub fn at(&self, addr: &str) -> Client {
        Client {
            http: self.http.clone(),
            scheme: self.scheme,
            addr: addr.to_string(),
            timeout: self.timeout,
            token: self.token.clone(),
        }
    }

    /// The address as the operator would write it in `--api`.
    fn shown(&self) -> String {
        match self.scheme {
            Scheme::Http => self.addr.clone(),
            Scheme::Https => format!("https://{}", self.addr),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme.as_str(), self.addr, path)
    }

    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        // reqwest's Display stops at "error sending request"; the cause (refused, TLS
        // certificate not trusted, ...) is in the source chain.
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        if self.scheme == Scheme::Http && !e.is_connect() && !e.is_timeout() {
            // Connected, but the answer was not HTTP: most likely a TLS-only API.
            detail.push_str(
                " (if the node serves HTTPS, its [api] tls_cert_file is set: use --api https://HOST:PORT with --ca-file FILE)",
            );
        }
        ClientError::Unreachable {
            addr: self.shown(),
            detail,
        }
    }

    /// Sends a request and returns the status and body, whatever the status.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        token: Option<&str>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .timeout(self.timeout);
        if let Some(b) = body {
            req = req.body(b);
        }
        if let Some(t) = token.or(self.token.as_deref()) {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(&e))?;
        Ok((status, bytes.to_vec()))
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let mut req = self.http.get(self.url(path)).timeout(self.timeout);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(ClientError::Status {
                addr: self.shown(),
                status: status.as_u16(),
                body: body.trim().to_string(),
            });
        }
        resp.json().await.map_err(|e| ClientError::Decode {
            addr: self.shown(),
            detail: e.to_string(),
        })
    }
}
