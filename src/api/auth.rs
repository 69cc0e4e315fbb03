//! Protection of the HTTP API: the admin bearer token, and the bounds on request bodies and
//! concurrent requests.
//!
//! - Mutating requests (every method but GET/HEAD/OPTIONS: KV writes, maintenance, drain,
//!   switchover, failback) need `Authorization: Bearer <token>`. Reads are open unless
//!   `[api] protect_reads = true`; the load-balancer probes `/health`, `/primary` and
//!   `/replica` stay open always.
//! - The token comes from `[api] token_file`, else from `<data_dir>/api.token`, which the
//!   daemon creates (random, mode 0600) on first start, so a fresh install is never open.
//!   Followers forward requests to the leader with the client's `Authorization` header, so
//!   every node of a cluster must have the same token (point `token_file` at the same content
//!   on every node, or copy the first node's `api.token`).
//! - The token is compared in constant time, on SHA-256 digests, so neither its content nor
//!   its length leaks through response timing.
//! - Bodies over `max_value_bytes + BODY_LIMIT_SLACK_BYTES` get 413 before they are read;
//!   more than `MAX_CONCURRENT_API_REQUESTS` requests in flight get 503. Every rejection is
//!   counted (`/metrics`, status counters) and logged at most once per `REJECT_LOG_INTERVAL`
//!   per kind.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::api::error;
pub use crate::api::wire::{validate_token_text, MIN_TOKEN_CHARS, TOKEN_FILE_NAME};
use crate::config::Config;
use crate::types::NodeId;
use crate::util::RateLimitedLog;

/// Random bytes of a generated token (printed as hex).
pub const GENERATED_TOKEN_BYTES: usize = 32;
/// Largest token file read.
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096;
/// Requests served at once (long KV watches included); past it: 503 with Retry-After.
pub const MAX_CONCURRENT_API_REQUESTS: usize = 128;
/// Room above `storage.max_value_bytes` for a request body (JSON of control requests, and
/// so that a value exactly at the limit gets the KV layer's precise 413).
pub const BODY_LIMIT_SLACK_BYTES: usize = 64 * 1024;
/// Rejected requests of one kind are logged at most this often; all are counted.
pub const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why the token cannot be used. Messages name the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the API token {path}: {source}; create it (e.g. `quorate secret generate --out {path}`) or fix [api] token_file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the API token {path} is accessible by group or others (mode {mode:04o}). Fix: chmod 600 {path}")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the API token {path} is not usable: {why}; put one line of at least {MIN_TOKEN_CHARS} visible ASCII characters in it (`quorate secret generate --out FILE` makes one)")]
    Invalid { path: PathBuf, why: String },
    #[error("cannot create the API token {path}: {source}; check that the data dir is writable")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The admin token, kept only as its digest.
pub struct ApiToken {
    digest: [u8; 32],
    /// Where it came from (named in messages).
    pub source: PathBuf,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl ApiToken {
    pub fn from_text(text: &str, source: PathBuf) -> Result<ApiToken, TokenError> {
        let t = validate_token_text(text).map_err(|why| TokenError::Invalid {
            path: source.clone(),
            why,
        })?;
        Ok(ApiToken {
            digest: digest(t.as_bytes()),
            source,
        })
    }

    /// Constant-time check of a presented token.
    pub fn matches(&self, presented: &[u8]) -> bool {
        digest(presented).ct_eq(&self.digest).into()
    }

    /// Reads a token file, refusing one open to group or others (checked on the open file).
    pub fn load(path: &Path) -> Result<ApiToken, TokenError> {
        let read_err = |source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(TokenError::Invalid {
                path: path.to_path_buf(),
                why: "it is not a regular file".into(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut raw = Vec::new();
        file.take(MAX_TOKEN_FILE_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(read_err)?;
        if raw.len() as u64 > MAX_TOKEN_FILE_BYTES {
            return Err(TokenError::Invalid {
                path: path.to_path_buf(),
                why: format!("it is larger than {MAX_TOKEN_FILE_BYTES} bytes"),
            });
        }
        let text = String::from_utf8(raw).map_err(|_| TokenError::Invalid {
            path: path.to_path_buf(),
            why: "it is not text".into(),
        })?;
        ApiToken::from_text(&text, path.to_path_buf())
    }

    /// The token of `config`: `[api] token_file` when set, else `<data_dir>/api.token`; the file
    /// is created with a random token (mode 0600) when missing. Returns whether it was just
    /// created. Nodes that name one shared file (the local example cluster) end up with the
    /// same token even when they start at the same moment: creation is atomic (see
    /// `create_token_file`), and every node loads whichever file won.
    pub fn load_or_create(config: &Config) -> Result<(ApiToken, bool), TokenError> {
        let path = match &config.api.token_file {
            Some(p) => p.clone(),
            None => config.data_dir.join(TOKEN_FILE_NAME),
        };
        match create_token_file(&path) {
            Ok(()) => Ok((ApiToken::load(&path)?, true)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok((ApiToken::load(&path)?, false))
            }
            Err(source) => Err(TokenError::Create { path, source }),
        }
    }
}

/// Creates `path` (mode 0600, never overwriting) holding a new random token: written and
/// fsynced under a temporary name, then hard-linked into place, so a concurrent reader sees
/// either no file or the whole token (AlreadyExists when another process won).
fn create_token_file(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
    }
    let tmp = path.with_extension(format!(
        "tmp.{}.{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let _ = std::fs::remove_file(&tmp);
    write_new_token(&tmp)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked
}

fn write_new_token(path: &Path) -> std::io::Result<()> {
    use rand::RngCore;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; GENERATED_TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let mut text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    text.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Rejected API requests, by reason (exported by /metrics and the status counters).
#[derive(Debug, Default)]
pub struct ApiStats {
    /// Missing or wrong bearer token.
    pub unauthorized: AtomicU64,
    /// Body larger than the limit (413).
    pub body_too_large: AtomicU64,
    /// More than `MAX_CONCURRENT_API_REQUESTS` in flight (503).
    pub overloaded: AtomicU64,
    /// With `[api]` TLS on: connections whose TLS handshake failed (plain HTTP, an untrusted
    /// or mismatched certificate on the client's side, garbage), timed out
    /// (`tls::TLS_HANDSHAKE_TIMEOUT`) or was refused (`tls::MAX_PENDING_TLS_HANDSHAKES`).
    pub tls_handshake_failed: AtomicU64,
}

/// Everything the API middleware needs; one per node.
pub struct ApiGuard {
    token: ApiToken,
    protect_reads: bool,
    body_limit_bytes: usize,
    permits: Arc<Semaphore>,
    pub stats: ApiStats,
    log: RateLimitedLog,
    node: NodeId,
}

impl ApiGuard {
    pub fn new(config: &Config, token: ApiToken) -> ApiGuard {
        let max_value = usize::try_from(config.storage.max_value_bytes).unwrap_or(usize::MAX);
        ApiGuard {
            token,
            protect_reads: config.api.protect_reads,
            body_limit_bytes: max_value.saturating_add(BODY_LIMIT_SLACK_BYTES),
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_API_REQUESTS)),
            stats: ApiStats::default(),
            log: RateLimitedLog::new(REJECT_LOG_INTERVAL),
            node: config.node.id,
        }
    }

    /// Counts a failed TLS handshake on the API port and logs it (rate-limited).
    pub fn tls_handshake_failed(&self, peer: std::net::SocketAddr, why: std::fmt::Arguments<'_>) {
        self.stats
            .tls_handshake_failed
            .fetch_add(1, Ordering::Relaxed);
        self.log.warn(
            "api-tls-handshake",
            format_args!("API TLS handshake with {peer} failed: {why}"),
        );
    }

    /// Logs (rate-limited) an accept error on the API port that is not about one connection.
    pub fn api_accept_failed(&self, e: &std::io::Error) {
        self.log.warn(
            "api-accept",
            format_args!("cannot accept API connections: {e}; retrying"),
        );
    }

    /// Largest request body accepted.
    pub fn body_limit_bytes(&self) -> usize {
        self.body_limit_bytes
    }

    pub fn token_source(&self) -> &Path {
        &self.token.source
    }

    /// Whether a request with this method and path needs the token.
    pub fn needs_token(&self, method: &Method, path: &str) -> bool {
        let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        !read || (self.protect_reads && !is_probe(path))
    }

    fn authorized(&self, req: &Request) -> bool {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return false;
        };
        let Some(token) = value.as_bytes().strip_prefix(b"Bearer ") else {
            return false;
        };
        self.token.matches(token)
    }
}

/// Load-balancer probes: never token-protected, never counted against the request limit
/// (a saturated API must still tell HAProxy who the primary is).
fn is_probe(path: &str) -> bool {
    matches!(path, "/health" | "/primary" | "/replica" | "/read-only")
}

/// The middleware: request limit, then token, then body size.
pub async fn guard(State(g): State<Arc<ApiGuard>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let _permit = if is_probe(&path) {
        None
    } else {
        match g.permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                g.stats.overloaded.fetch_add(1, Ordering::Relaxed);
                g.log.warn(
                    "api-overloaded",
                    format_args!(
                        "API request {path} refused: {MAX_CONCURRENT_API_REQUESTS} requests in flight (MAX_CONCURRENT_API_REQUESTS)"
                    ),
                );
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("this node is serving {MAX_CONCURRENT_API_REQUESTS} requests already; retry shortly"),
                );
            }
        }
    };
    if g.needs_token(req.method(), &path) && !g.authorized(&req) {
        g.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        let presented = req.headers().contains_key(header::AUTHORIZATION);
        g.log.warn(
            "api-unauthorized",
            format_args!(
                "API request {} {path} refused: {} bearer token",
                req.method(),
                if presented { "wrong" } else { "no" }
            ),
        );
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            format!(
                "{} admin token (node {}): send the header `Authorization: Bearer <token>`, where the token is the content of the node's [api] token_file (default <data_dir>/{TOKEN_FILE_NAME}); with the CLI pass --token-file FILE or set QUORATE_TOKEN_FILE. Every node of a cluster must use the same token, since followers forward requests to the leader",
                if presented { "wrong" } else { "this request needs the" },
                g.node
            ),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"quorate\""),
        );
        return r;
    }
    let too_long = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|len| *len > g.body_limit_bytes as u64);
    if let Some(len) = too_long {
        g.stats.body_too_large.fetch_add(1, Ordering::Relaxed);
        g.log.warn(
            "api-body-too-large",
            format_args!(
                "API request {path} refused: body of {len} bytes exceeds {} bytes",
                g.body_limit_bytes
            ),
        );
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body of {len} bytes exceeds the {}-byte limit (storage.max_value_bytes + {BODY_LIMIT_SLACK_BYTES})",
                g.body_limit_bytes
            ),
        );
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn concurrent_creators_of_one_token_file_end_with_one_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.token");
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || {
                    let _ = super::create_token_file(&p);
                    super::ApiToken::load(&p).map(|t| format!("{t:?}"))
                })
            })
            .collect();
        let tokens: Vec<String> = handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect();
        assert!(tokens.windows(2).all(|w| w[0] == w[1]), "{tokens:?}");
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary files left behind");
    }

    use super::*;

    fn config_at(dir: &Path, extra: &str) -> Config {
        let text = format!(
            "cluster = \"t\"\ndata_dir = \"data\"\n[node]\nid = 1\nrole = \"voter\"\n\
             [listen]\nraft = \"127.0.0.1:7411\"\nheartbeat = \"127.0.0.1:7421\"\napi = \"127.0.0.1:7401\"\n\
             [[peer]]\nid = 1\nrole = \"voter\"\nraft = \"127.0.0.1:7411\"\nheartbeat = \"127.0.0.1:7421\"\napi = \"127.0.0.1:7401\"\n{extra}"
        );
        Config::from_str_at(&text, &dir.join("node.toml")).unwrap()
    }

    #[test]
    fn tokens_match_exactly_and_only() {
        let t = ApiToken::from_text("  0123456789abcdef-token\n", "x".into()).unwrap();
        assert!(t.matches(b"0123456789abcdef-token"));
        assert!(!t.matches(b"0123456789abcdef-toke"));
        assert!(!t.matches(b"0123456789abcdef-tokenX"));
        assert!(!t.matches(b""));
        assert!(!format!("{t:?}").contains("0123"));
    }

    #[test]
    fn weak_or_malformed_tokens_are_refused() {
        for bad in [
            "",
            "short",
            "has space in the middle of it",
            "tab\tinside-a-long-token",
        ] {
            assert!(validate_token_text(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_token_text("a-perfectly-fine-token").is_ok());
    }

    #[test]
    fn a_missing_token_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let c = config_at(dir.path(), "");
        std::fs::create_dir_all(&c.data_dir).unwrap();
        let (first, created) = ApiToken::load_or_create(&c).unwrap();
        assert!(created);
        let path = c.data_dir.join(TOKEN_FILE_NAME);
        assert_eq!(first.source, path);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 2 * GENERATED_TOKEN_BYTES);
        assert!(first.matches(text.trim().as_bytes()));
        let (second, created) = ApiToken::load_or_create(&c).unwrap();
        assert!(!created, "an existing token is kept");
        assert!(second.matches(text.trim().as_bytes()));
    }

    #[test]
    fn a_configured_token_file_is_created_when_missing_and_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let c = config_at(dir.path(), "[api]\ntoken_file = \"tok\"\n");
        let (_, created) = ApiToken::load_or_create(&c).unwrap();
        assert!(created, "a missing configured token file is created");
        let tok = dir.path().join("tok");
        std::fs::remove_file(&tok).unwrap();
        std::fs::write(&tok, "operator-chosen-token-123\n").unwrap();
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ApiToken::load_or_create(&c).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (t, created) = ApiToken::load_or_create(&c).unwrap();
        assert!(!created);
        assert!(t.matches(b"operator-chosen-token-123"));
        assert!(!c.data_dir.join(TOKEN_FILE_NAME).exists());
    }

    #[test]
    fn writes_always_need_the_token_reads_only_when_protected() {
        let dir = tempfile::tempdir().unwrap();
        let token = || ApiToken::from_text("0123456789abcdef", "x".into()).unwrap();
        let open = ApiGuard::new(&config_at(dir.path(), ""), token());
        let closed = ApiGuard::new(
            &config_at(dir.path(), "[api]\nprotect_reads = true\n"),
            token(),
        );
        for m in [Method::PUT, Method::POST, Method::DELETE, Method::PATCH] {
            assert!(open.needs_token(&m, "/v1/kv/a"));
            assert!(closed.needs_token(&m, "/v1/maintenance"));
        }
        assert!(!open.needs_token(&Method::GET, "/v1/status"));
        assert!(closed.needs_token(&Method::GET, "/v1/status"));
        assert!(closed.needs_token(&Method::GET, "/metrics"));
        for probe in ["/health", "/primary", "/replica", "/read-only"] {
            assert!(!closed.needs_token(&Method::GET, probe));
        }
        assert_eq!(
            open.body_limit_bytes(),
            1024 * 1024 + BODY_LIMIT_SLACK_BYTES
        );
    }
}
