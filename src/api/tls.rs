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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::api::auth::ApiGuard;
use crate::config::Config;
use crate::tls::{peer_trust_anchors, TlsFile, TlsFileError};

/// Longest a client may take to complete the TLS handshake after connecting; a client that
/// connects and stays silent (or speaks plain HTTP and waits) is dropped after this.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// TLS handshakes in progress at once; a connection past it is closed at once (and counted),
/// so a flood of idle connections cannot hold unbounded tasks and buffers.
pub const MAX_PENDING_TLS_HANDSHAKES: usize = 64;
/// Pause after an accept error that is not about one connection (e.g. out of file
/// descriptors), so the loop does not spin while the condition lasts.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(500);

/// How this node reaches its peers' APIs when it forwards a request to the leader: plain
/// HTTP, or HTTPS trusting only the configured anchors.
#[derive(Clone)]
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
