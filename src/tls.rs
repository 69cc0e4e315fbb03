//! The API's TLS files (`[api] tls_cert_file` / `tls_key_file` / `tls_ca_file`): reading
//! them, and checking that they can be served and verified. A leaf: config validation
//! (so `quorate config check` names a bad file) and the API's listener and forwarder
//! (`api::tls`) both use it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Largest certificate, key or CA file read. PEM bundles of a few certificates are a few
/// KiB; even a full system CA bundle is well under this.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;
/// The only application protocol the API speaks (axum is served as HTTP/1.1).
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// `[api] tls_cert_file`, `tls_key_file` and `tls_ca_file` (absolute paths; the files were
/// readable PEM, and the key matched the certificate, when the config was loaded). With
/// these set the API serves HTTPS only, and this node forwards to the leader's API over
/// HTTPS. Changing them needs a restart (the files are read at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTls {
    /// PEM certificate chain served on the API port, leaf first. It must name this node's
    /// API IP as an IP subject alternative name: clients and peers connect by IP.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM certificate(s) this node trusts when it forwards a request to a peer's API:
    /// normally the CA that signed every node's certificate. `None`: the certificates of
    /// `cert_file` are the trust anchors, which works when all nodes share one
    /// certificate (with every node's API IP in it) or when `cert_file` includes the
    /// issuing CA certificate after the leaf.
    pub ca_file: Option<PathBuf>,
}

/// rustls with the ring provider, named explicitly so the process never depends on a
/// process-wide default provider being installed.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
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
