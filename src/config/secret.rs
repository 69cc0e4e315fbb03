//! The cluster secret: generating it (`quorate secret generate`), loading it safely, and
//! deriving the keys that authenticate and encrypt cluster traffic.
//!
//! One 32-byte random secret per cluster, shared by every node (as corosync's authkey). It
//! never goes on the wire itself: HKDF-SHA256 derives one key per use (heartbeat AEAD, Raft
//! Noise PSK), with the cluster name in the HKDF `info`. Separate keys mean that a weakness in
//! one use (say, a nonce reused by a heartbeat bug) cannot be turned against the other; the
//! cluster name means two clusters that were (wrongly) given the same secret still cannot
//! read or disturb each other.
//!
//! Rotation without downtime: `previous_secret_file` names the old secret while the new one
//! is rolled out. A node accepts traffic under either, and answers each peer under the
//! secret that peer last used, so old and new nodes keep talking (see `heartbeat::seal` and
//! `consensus::secure`). Rotation is two rolling restarts: first every node gets
//! `secret_file = NEW, previous_secret_file = OLD`, then `previous_secret_file` is removed.
//!
//! The file must not be readable or writable by group or others: the daemon refuses it
//! (with the `chmod 600` that fixes it) rather than run with a secret any local user may
//! have copied.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use hkdf::Hkdf;
use sha2::Sha256;

use super::{Config, Problem};

/// Bytes of randomness in a cluster secret (256 bits).
pub const SECRET_BYTES: usize = 32;
/// Bytes of each derived key (ChaCha20 and Noise PSKs are 256-bit).
pub const KEY_BYTES: usize = 32;
/// Largest secret file read. A secret is 65 bytes of text; anything much larger is the wrong
/// file, and reading it whole would be pointless.
pub const MAX_SECRET_FILE_BYTES: u64 = 1024;
/// Permission bits that must be clear on a secret file: any access by group or others.
pub const FORBIDDEN_MODE_BITS: u32 = 0o077;

/// HKDF salt: fixed and public, it only separates quorate's derivations from any other use
/// of the same secret bytes.
const HKDF_SALT: &[u8] = b"quorate cluster secret v1";
const INFO_HEARTBEAT: &[u8] = b"quorate/v1/heartbeat-aead/";
const INFO_RAFT: &[u8] = b"quorate/v1/raft-noise-psk/";

/// Why a secret could not be used. Every message names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the cluster secret {path}: {source}; check secret_file in the config and that the daemon's user may read the file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the cluster secret {path} is not a regular file; point secret_file at the file `quorate secret generate` wrote")]
    NotAFile { path: PathBuf },
    #[error("the cluster secret {path} is accessible by group or others (mode {mode:04o}); any local user could copy it. Fix: chmod 600 {path} (and make the daemon's user its owner)")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the cluster secret {path} is larger than {MAX_SECRET_FILE_BYTES} bytes, so it is not a quorate secret; create one with `quorate secret generate > {path}` then `chmod 600 {path}`")]
    TooLarge { path: PathBuf },
    #[error("the cluster secret {path} is not valid: {why}; create one with `quorate secret generate > {path}` then `chmod 600 {path}`, and copy the same file to every node")]
    Format { path: PathBuf, why: String },
    #[error("cannot derive keys from the cluster secret: {0}; this is a bug in quorate, please report it")]
    Derive(String),
}

/// The secret's 32 bytes. Debug never prints them.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret {
    bytes: [u8; SECRET_BYTES],
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

impl ClusterSecret {
    /// A new secret from the operating system's random source.
    pub fn generate() -> ClusterSecret {
        use rand::RngCore;
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        ClusterSecret { bytes }
    }

    pub fn from_bytes(bytes: [u8; SECRET_BYTES]) -> ClusterSecret {
        ClusterSecret { bytes }
    }

    /// The file form: 64 lowercase hex digits and a newline.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(2 * SECRET_BYTES + 1);
        for b in self.bytes {
            s.push_str(&format!("{b:02x}"));
        }
        s.push('\n');
        s
    }

    /// Parses the file form: 64 hex digits, or the standard base64 of 32 bytes, with
    /// surrounding whitespace ignored. The error says what was found (never the content).
    pub fn parse(text: &str) -> Result<ClusterSecret, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("the file is empty".into());
        }
        if t.len() == 2 * SECRET_BYTES && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut bytes = [0u8; SECRET_BYTES];
            for (i, out) in bytes.iter_mut().enumerate() {
                let pair = &t[2 * i..2 * i + 2];
                *out = u8::from_str_radix(pair, 16).map_err(|e| e.to_string())?;
            }
            return Ok(ClusterSecret { bytes });
        }
        match base64::engine::general_purpose::STANDARD.decode(t) {
            Ok(v) if v.len() == SECRET_BYTES => {
                let mut bytes = [0u8; SECRET_BYTES];
                bytes.copy_from_slice(&v);
                Ok(ClusterSecret { bytes })
            }
            Ok(v) => Err(format!(
                "it holds {} bytes (base64), a secret has {SECRET_BYTES}",
                v.len()
            )),
            Err(_) => Err(format!(
                "expected {} hex digits or the base64 of {SECRET_BYTES} bytes, found {} characters of something else",
                2 * SECRET_BYTES,
                t.chars().count()
            )),
        }
    }

    /// Reads and checks a secret file. Permissions are checked on the opened file itself
    /// (fstat), so the file checked is the file read.
    pub fn load(path: &Path) -> Result<ClusterSecret, SecretError> {
        let read_err = |source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(SecretError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & FORBIDDEN_MODE_BITS != 0 {
            return Err(SecretError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut raw = Vec::new();
        file.take(MAX_SECRET_FILE_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(read_err)?;
        if raw.len() as u64 > MAX_SECRET_FILE_BYTES {
            return Err(SecretError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let text = String::from_utf8(raw).map_err(|_| SecretError::Format {
            path: path.to_path_buf(),
            why: "it is not text".into(),
        })?;
        ClusterSecret::parse(&text).map_err(|why| SecretError::Format {
            path: path.to_path_buf(),
            why,
        })
    }

    /// The per-use keys of this secret for cluster `cluster`.
    pub fn derive(&self, cluster: &str) -> Result<DerivedKeys, SecretError> {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), &self.bytes);
        let expand = |label: &[u8]| -> Result<[u8; KEY_BYTES], SecretError> {
            let mut info = label.to_vec();
            info.extend_from_slice(cluster.as_bytes());
            let mut key = [0u8; KEY_BYTES];
            hk.expand(&info, &mut key)
                .map_err(|e| SecretError::Derive(e.to_string()))?;
            Ok(key)
        };
        Ok(DerivedKeys {
            heartbeat: expand(INFO_HEARTBEAT)?,
            raft: expand(INFO_RAFT)?,
        })
    }
}

/// Which of a node's secrets opened (or should seal) a message: heartbeats and the Raft
/// handshake both try `Current` first, then `Previous` during a rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum KeySlot {
    /// The key of `secret_file`.
    #[default]
    Current,
    /// The key of `previous_secret_file` (during a rotation).
    Previous,
}

/// The keys derived from one secret. Debug never prints them.
#[derive(Clone, PartialEq, Eq)]
pub struct DerivedKeys {
    /// XChaCha20-Poly1305 key of heartbeat datagrams.
    pub heartbeat: [u8; KEY_BYTES],
    /// Pre-shared key of the Raft Noise handshake.
    pub raft: [u8; KEY_BYTES],
}

impl std::fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DerivedKeys(<redacted>)")
    }
}

/// The keys a node uses: those of `secret_file`, and during a rotation those of
/// `previous_secret_file` too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyring {
    pub current: DerivedKeys,
    pub previous: Option<DerivedKeys>,
}

impl Keyring {
    /// `Ok(None)` when the config names no secret (plaintext, development only).
    pub fn load(config: &Config) -> Result<Option<Keyring>, SecretError> {
        let Some(path) = &config.secret_file else {
            return Ok(None);
        };
        let current = ClusterSecret::load(path)?.derive(&config.cluster)?;
        let previous = match &config.previous_secret_file {
            Some(p) => Some(ClusterSecret::load(p)?.derive(&config.cluster)?),
            None => None,
        };
        Ok(Some(Keyring { current, previous }))
    }

    /// The heartbeat keys, current first.
    pub fn heartbeat_keys(&self) -> (&[u8; KEY_BYTES], Option<&[u8; KEY_BYTES]>) {
        (
            &self.current.heartbeat,
            self.previous.as_ref().map(|k| &k.heartbeat),
        )
    }

    /// The Raft PSKs, current first.
    pub fn raft_keys(&self) -> (&[u8; KEY_BYTES], Option<&[u8; KEY_BYTES]>) {
        (&self.current.raft, self.previous.as_ref().map(|k| &k.raft))
    }
}

/// What `quorate config check` says about the secret: a warning when there is none
/// (traffic in plaintext), and every problem the daemon would refuse to start with.
pub fn check(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let Some(path) = &config.secret_file else {
        out.push(Problem::new(
            "secret_file",
            "no cluster secret is configured: heartbeats and Raft traffic are neither authenticated nor encrypted, so anyone on the network can disturb the cluster",
            "run `quorate secret generate > /etc/quorate/secret && chmod 600 /etc/quorate/secret`, copy the file to every node, and set secret_file (plaintext is for single-node development only)",
        ));
        return out;
    };
    for (key, p) in [
        ("secret_file", Some(path)),
        ("previous_secret_file", config.previous_secret_file.as_ref()),
    ] {
        let Some(p) = p else { continue };
        if let Err(e) = ClusterSecret::load(p) {
            out.push(Problem::new(
                key,
                e.to_string(),
                "the daemon refuses to start until this is fixed",
            ));
        }
    }
    out
}

/// Writes a new secret to `path`, created with mode 0600 and refusing to overwrite.
pub fn write_new(path: &Path) -> Result<(), std::io::Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(ClusterSecret::generate().to_text().as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_mode(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn generated_secrets_round_trip_and_differ() {
        let a = ClusterSecret::generate();
        let b = ClusterSecret::generate();
        assert_ne!(a, b);
        let text = a.to_text();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        assert_eq!(ClusterSecret::parse(&text).unwrap(), a);
        assert_eq!(format!("{a:?}"), "ClusterSecret(<redacted>)");
    }

    #[test]
    fn base64_is_accepted_and_wrong_lengths_are_not() {
        let s = ClusterSecret::from_bytes([7u8; 32]);
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(ClusterSecret::parse(&format!("  {b64}\n")).unwrap(), s);
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert!(ClusterSecret::parse(&short)
            .unwrap_err()
            .contains("16 bytes"));
        assert!(ClusterSecret::parse("").unwrap_err().contains("empty"));
        assert!(ClusterSecret::parse(&"ab".repeat(31)).is_err());
        assert!(ClusterSecret::parse(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn a_secret_readable_by_others_is_refused_with_the_chmod_fix() {
        let dir = tempfile::tempdir().unwrap();
        let text = ClusterSecret::generate().to_text();
        let p = write_mode(dir.path(), "secret", &text, 0o644);
        let err = ClusterSecret::load(&p).unwrap_err();
        assert!(matches!(err, SecretError::Permissions { mode: 0o644, .. }));
        let msg = err.to_string();
        assert!(msg.contains(&format!("chmod 600 {}", p.display())), "{msg}");
        for mode in [0o640, 0o604, 0o620, 0o660] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(ClusterSecret::load(&p).is_err(), "mode {mode:o} accepted");
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(ClusterSecret::load(&p).is_ok());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(ClusterSecret::load(&p).is_ok());
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = ClusterSecret::load(&missing).unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        let big = write_mode(dir.path(), "big", &"a".repeat(5000), 0o600);
        assert!(matches!(
            ClusterSecret::load(&big),
            Err(SecretError::TooLarge { .. })
        ));
        let bad = write_mode(dir.path(), "bad", "hunter2\n", 0o600);
        let err = ClusterSecret::load(&bad).unwrap_err().to_string();
        assert!(
            err.contains("quorate secret generate") && err.contains("bad"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "the content leaked: {err}");
        assert!(matches!(
            ClusterSecret::load(dir.path()),
            Err(SecretError::NotAFile { .. })
        ));
    }

    #[test]
    fn derived_keys_are_separate_per_use_secret_and_cluster() {
        let s = ClusterSecret::from_bytes([1u8; 32]);
        let k = s.derive("prod").unwrap();
        assert_ne!(k.heartbeat, k.raft);
        assert_ne!(k.heartbeat, [1u8; 32]);
        assert_eq!(k, s.derive("prod").unwrap(), "deterministic");
        assert_ne!(k, s.derive("staging").unwrap());
        assert_ne!(
            k,
            ClusterSecret::from_bytes([2u8; 32]).derive("prod").unwrap()
        );
        assert_eq!(format!("{k:?}"), "DerivedKeys(<redacted>)");
    }

    #[test]
    fn write_new_creates_a_private_file_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        write_new(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let first = ClusterSecret::load(&p).unwrap();
        assert!(write_new(&p).is_err());
        assert_eq!(ClusterSecret::load(&p).unwrap(), first);
    }
}
