//! Optional TLS on the admin API (`[api] tls_cert_file` / `tls_key_file` / `tls_ca_file`).
//!
//! With TLS configured the API port speaks HTTPS only: a plain-HTTP request never reaches
//! the router (its bytes fail the TLS handshake, which is counted and logged at most once
//! per `REJECT_LOG_INTERVAL`). The server side is rustls (ring provider) behind a listener
//! that runs every handshake in its own task with `TLS_HANDSHAKE_TIMEOUT`, at most
//! `MAX_PENDING_TLS_HANDSHAKES` at once, and hands only finished handshakes to
//! `axum::serve` — so the router, the auth guard and the body limits are the same for
//! HTTP and HTTPS.
//!
//! Followers forward some requests to the leader's API (`forward`): with TLS on they use
//! `https://` and trust the certificates of `tls_ca_file`, or, when that key is absent,
//! every certificate in the node's own `tls_cert_file`. That default works when the nodes
//! share one certificate (listing every node's API IP as a subject alternative name), or
//! when each node's cert file carries the chain up to the issuing CA; otherwise set
//! `tls_ca_file` to the CA that signed the nodes' certificates. Peers are addressed by IP,
//! so each certificate must name its node's API IP as an IP subject alternative name.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::api::auth::ApiGuard;
use crate::config::{ApiTls, Config};

/// Longest a client may take to complete the TLS handshake after connecting; a client that
/// connects and stays silent (or speaks plain HTTP and waits) is dropped after this.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// TLS handshakes in progress at once; a connection past it is closed at once (and counted),
/// so a flood of idle connections cannot hold unbounded tasks and buffers.
pub const MAX_PENDING_TLS_HANDSHAKES: usize = 64;
/// Largest certificate, key or CA file read. PEM bundles of a few certificates are a few
/// KiB; even a full system CA bundle is well under this.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;
/// Pause after an accept error that is not about one connection (e.g. out of file
/// descriptors), so the loop does not spin while the condition lasts.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(500);
/// The only application protocol the API speaks (axum is served as HTTP/1.1).
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// rustls with the ring provider, named explicitly so the process never depends on a
/// process-wide default provider being installed.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM file of at most `MAX_PEM_FILE_BYTES`; the error names the file.
fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(format!(
            "{} is larger than {MAX_PEM_FILE_BYTES} bytes, so it is not a PEM certificate or key",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_pem(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (no \"BEGIN CERTIFICATE\" section)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{} holds no PEM private key (no \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" section)",
            path.display()
        ),
        other => format!("{} is not a valid PEM private key: {other}", path.display()),
    })
}

/// Which file of `[api]` a TLS problem is about (so config validation can name the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Cert,
    Key,
    Ca,
}

impl TlsFile {
    pub fn key(self) -> &'static str {
        match self {
            TlsFile::Cert => "api.tls_cert_file",
            TlsFile::Key => "api.tls_key_file",
            TlsFile::Ca => "api.tls_ca_file",
        }
    }
}

/// A TLS file that cannot be used: which one, and why (the message names the file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[api] {}: {why}", file.key())]
pub struct TlsFileError {
    pub file: TlsFile,
    pub why: String,
}

fn file_error(file: TlsFile) -> impl Fn(String) -> TlsFileError {
    move |why| TlsFileError { file, why }
}

/// The API's rustls server config from the cert chain and key files (HTTP/1.1 only).
pub fn server_config(tls: &ApiTls) -> Result<Arc<rustls::ServerConfig>, TlsFileError> {
    let certs = load_certs(&tls.cert_file).map_err(file_error(TlsFile::Cert))?;
    let key = load_key(&tls.key_file).map_err(file_error(TlsFile::Key))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFileError {
            file: TlsFile::Cert,
            why: format!("cannot set up TLS: {e}"),
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsFileError {
            file: TlsFile::Key,
            why: format!(
                "{} cannot serve {}: {e} (is it the private key of that certificate?)",
                tls.key_file.display(),
                tls.cert_file.display()
            ),
        })?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// The certificates a node trusts when it forwards to a peer's API: `tls_ca_file`, or the
/// node's own `tls_cert_file` (see the module doc).
pub fn peer_trust_anchors(tls: &ApiTls) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    match &tls.ca_file {
        Some(ca) => load_certs(ca).map_err(file_error(TlsFile::Ca)),
        None => load_certs(&tls.cert_file).map_err(file_error(TlsFile::Cert)),
    }
}

/// Checks that this node's own certificate verifies, for its advertised API address `ip`,
/// against the trust anchors it forwards with: the way a peer with the same settings (and
/// the CLI with the same CA) will check it. Catches a certificate that does not name the IP,
/// is a CA certificate used as a server's, has expired, or was not signed by `tls_ca_file`.
pub fn check_own_cert(tls: &ApiTls, ip: std::net::IpAddr) -> Result<(), TlsFileError> {
    use rustls::client::danger::ServerCertVerifier;
    let certs = load_certs(&tls.cert_file).map_err(file_error(TlsFile::Cert))?;
    let anchors = peer_trust_anchors(tls)?;
    let mut roots = rustls::RootCertStore::empty();
    let (_, unusable) = roots.add_parsable_certificates(anchors);
    let anchor_file = tls.ca_file.as_ref().unwrap_or(&tls.cert_file);
    if roots.is_empty() {
        return Err(TlsFileError {
            file: if tls.ca_file.is_some() {
                TlsFile::Ca
            } else {
                TlsFile::Cert
            },
            why: format!(
                "none of the {unusable} certificate(s) in {} can be a trust anchor",
                anchor_file.display()
            ),
        });
    }
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsFileError {
                file: TlsFile::Ca,
                why: format!("cannot set up certificate verification: {e}"),
            })?;
    let Some((leaf, chain)) = certs.split_first() else {
        return Err(TlsFileError {
            file: TlsFile::Cert,
            why: format!("{} holds no certificate", tls.cert_file.display()),
        });
    };
    verifier
        .verify_server_cert(
            leaf,
            chain,
            &rustls::pki_types::ServerName::IpAddress(ip.into()),
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| TlsFileError {
            file: TlsFile::Cert,
            why: format!(
                "{} does not verify for this node's API address {ip} against the trust anchors in {}: {e}",
                tls.cert_file.display(),
                anchor_file.display()
            ),
        })
}

/// Every problem with the configured TLS files (empty: the daemon can serve HTTPS and
/// forward with them). Used by config validation, so `quorate config check` finds them.
pub fn check_files(tls: &ApiTls) -> Vec<TlsFileError> {
    let mut problems = Vec::new();
    if let Err(e) = server_config(tls) {
        problems.push(e);
    }
    if tls.ca_file.is_some() {
        if let Err(e) = peer_trust_anchors(tls) {
            problems.push(e);
        }
    }
    problems
}

/// How this node reaches its peers' APIs when it forwards a request to the leader: plain
/// HTTP, or HTTPS trusting only the configured anchors.
pub struct Forwarder {
    http: reqwest::Client,
    scheme: &'static str,
}

impl Forwarder {
    /// Built once at start from the node's `[api]` TLS settings.
    pub fn new(config: &Config) -> Result<Forwarder, TlsFileError> {
        let builder = reqwest::Client::builder().no_proxy();
        // The file a failure is blamed on: the trust anchors' (nothing is read without TLS).
        let anchors_file = match &config.api.tls {
            Some(tls) if tls.ca_file.is_some() => TlsFile::Ca,
            _ => TlsFile::Cert,
        };
        let (builder, scheme) = match &config.api.tls {
            None => (builder, "http"),
            Some(tls) => {
                let mut b = builder.https_only(true).tls_built_in_root_certs(false);
                for der in peer_trust_anchors(tls)? {
                    let cert =
                        reqwest::Certificate::from_der(der.as_ref()).map_err(|e| TlsFileError {
                            file: anchors_file,
                            why: format!(
                                "a certificate in it cannot be used as a trust anchor: {e}"
                            ),
                        })?;
                    b = b.add_root_certificate(cert);
                }
                (b, "https")
            }
        };
        let http = builder.build().map_err(|e| TlsFileError {
            file: anchors_file,
            why: format!("cannot build the forwarding HTTP client: {e}"),
        })?;
        Ok(Forwarder { http, scheme })
    }

    /// "http" or "https".
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// A request to `path` (with its query) on the API at `addr`, bounded by `timeout`.
    pub fn request(
        &self,
        method: reqwest::Method,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}://{addr}{path}", self.scheme))
            .timeout(timeout)
    }
}

/// The API's listener when TLS is on: accepts TCP, runs each handshake in its own task
/// (bounded in time and number) and yields only established TLS streams to `axum::serve`.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
    guard: Arc<ApiGuard>,
}

impl TlsListener {
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        guard: Arc<ApiGuard>,
    ) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
            guard,
        }
    }

    fn start_handshake(&mut self, tcp: TcpStream, peer: SocketAddr) {
        if self.handshakes.len() >= MAX_PENDING_TLS_HANDSHAKES {
            self.guard.tls_handshake_failed(
                peer,
                format_args!(
                    "refused: {MAX_PENDING_TLS_HANDSHAKES} handshakes already in progress (MAX_PENDING_TLS_HANDSHAKES)"
                ),
            );
            drop(tcp);
            return;
        }
        let acceptor = self.acceptor.clone();
        let guard = self.guard.clone();
        self.handshakes.spawn(async move {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => Some((stream, peer)),
                Ok(Err(e)) => {
                    let hint = if is_plaintext(&e) {
                        " (a plain-HTTP client? this port serves HTTPS only)"
                    } else {
                        ""
                    };
                    guard.tls_handshake_failed(peer, format_args!("{e}{hint}"));
                    None
                }
                Err(_) => {
                    guard.tls_handshake_failed(
                        peer,
                        format_args!(
                            "not completed within {}s (TLS_HANDSHAKE_TIMEOUT)",
                            TLS_HANDSHAKE_TIMEOUT.as_secs()
                        ),
                    );
                    None
                }
            }
        });
    }
}

/// Whether a handshake failed because the client's first bytes were not a TLS record, as
/// when a plain-HTTP client talks to the HTTPS port.
fn is_plaintext(e: &std::io::Error) -> bool {
    matches!(
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType
        ))
    )
}

/// Errors of `accept` that concern one connection only (the next accept may succeed).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((tcp, peer)) => self.start_handshake(tcp, peer),
                    Err(e) if is_connection_error(&e) => {}
                    Err(e) => {
                        self.guard.api_accept_failed(&e);
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(established)) = done {
                        return established;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
