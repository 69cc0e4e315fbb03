//! Snapshot files: checksummed, written atomically, verified on load.
//!
//! Layout: `MAGIC(4) | version(1) | crc32(body)(4, BE) | body_len(8, BE) | body`, where body is
//! the bincode encoding of [`SnapshotBody`]. The same bytes are what a leader streams to a
//! lagging follower, so the follower verifies the checksum before installing anything.
//!
//! Atomic write: write `snapshot.tmp`, fsync it, rename over `snapshot.bin`, fsync the
//! directory. A crash at any point leaves either the old snapshot or the new one, never half
//! of one (without the directory fsync the rename itself may be lost on power failure, and the
//! log may already have been purged past the old snapshot).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::consensus::app::AppState;
use crate::consensus::codec;
use crate::consensus::types::SnapshotMeta;

const MAGIC: &[u8; 4] = b"QRSN";
/// 2: the KV limits carry `max_total_bytes` (issue 13).
const FORMAT_VERSION: u8 = 2;
const HEADER_BYTES: usize = 4 + 1 + 4 + 8;
/// The snapshot file's name inside `<data_dir>/snapshot/`.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";
const SNAPSHOT_TMP: &str = "snapshot.tmp";
/// Largest snapshot accepted from a peer or from disk (named bound; the KV's own limits keep
/// honest snapshots far below it).
pub const MAX_SNAPSHOT_BYTES: u64 = 2 * 1024 * 1024 * 1024;
// The KV's total-bytes bound keeps every honest snapshot far below the decode cap.
const _: () = assert!(crate::kv::MAX_KV_TOTAL_BYTES < MAX_SNAPSHOT_BYTES / 2);

#[derive(Serialize, Deserialize)]
pub struct SnapshotBody {
    pub meta: SnapshotMeta,
    pub state: AppState,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {problem}; move the file away and restart so the node re-seeds from its peers (`quorate recover` does this)")]
    Corrupt { path: String, problem: String },
    #[error("snapshot {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The body decoded but its cluster state breaks an invariant every apply keeps: a
    /// corrupt or forged snapshot, refused before anything is installed.
    #[error("snapshot {path}: {source}; move the file away and restart so the node re-seeds from its peers (`quorate recover` does this)")]
    InvalidState {
        path: String,
        #[source]
        source: crate::cluster::InvariantViolation,
    },
    #[error("cannot encode snapshot: {0}")]
    Encode(String),
}

pub fn encode(body: &SnapshotBody) -> Result<Vec<u8>, SnapshotError> {
    // Asserted in pairs: before writing here, after reading in `decode`.
    body.state
        .cluster
        .check_invariants()
        .map_err(|e| SnapshotError::Encode(e.to_string()))?;
    let kv_bytes = body.state.kv.approx_bytes();
    if kv_bytes > crate::kv::MAX_KV_TOTAL_BYTES {
        return Err(SnapshotError::Encode(format!(
            "the KV holds {kv_bytes} bytes, above MAX_KV_TOTAL_BYTES ({}); a snapshot this large could not be loaded back",
            crate::kv::MAX_KV_TOTAL_BYTES
        )));
    }
    let payload =
        codec::to_bytes_unbounded(body).map_err(|e| SnapshotError::Encode(e.to_string()))?;
    if payload.len() as u64 > MAX_SNAPSHOT_BYTES {
        return Err(SnapshotError::Encode(format!(
            "the snapshot would be {} bytes, above MAX_SNAPSHOT_BYTES ({MAX_SNAPSHOT_BYTES}); it could not be loaded back",
            payload.len()
        )));
    }
    Ok(frame(&payload))
}

/// Header (magic, version, checksum, length) + payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Verifies and decodes snapshot bytes; `origin` names the file or peer in errors.
pub fn decode(bytes: &[u8], origin: &str) -> Result<SnapshotBody, SnapshotError> {
    let corrupt = |problem: String| SnapshotError::Corrupt {
        path: origin.to_string(),
        problem,
    };
    if bytes.len() < HEADER_BYTES {
        return Err(corrupt(format!(
            "truncated: {} bytes, header needs {HEADER_BYTES}",
            bytes.len()
        )));
    }
    if &bytes[0..4] != MAGIC {
        return Err(corrupt("not a quorate snapshot (bad magic)".into()));
    }
    if bytes[4] != FORMAT_VERSION {
        return Err(corrupt(format!(
            "unsupported snapshot format version {}",
            bytes[4]
        )));
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[5..9]);
    let crc = u32::from_be_bytes(crc);
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[9..17]);
    let len = u64::from_be_bytes(len);
    let body = &bytes[HEADER_BYTES..];
    if len > MAX_SNAPSHOT_BYTES {
        return Err(corrupt(format!(
            "header says {len} body bytes, more than MAX_SNAPSHOT_BYTES ({MAX_SNAPSHOT_BYTES})"
        )));
    }
    if body.len() as u64 != len {
        return Err(corrupt(format!(
            "truncated: header says {len} body bytes, file has {}",
            body.len()
        )));
    }
    if crc32fast::hash(body) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    let body: SnapshotBody =
        codec::from_bytes_large(body).map_err(|e| corrupt(format!("undecodable body: {e}")))?;
    // The KV checks itself while deserializing; the cluster state is checked here.
    body.state
        .cluster
        .check_invariants()
        .map_err(|source| SnapshotError::InvalidState {
            path: origin.to_string(),
            source,
        })?;
    Ok(body)
}

fn io_err(path: &Path, source: std::io::Error) -> SnapshotError {
    SnapshotError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `bytes` as the current snapshot in `dir` atomically (tmp, fsync, rename, dir fsync).
pub fn write_atomic(dir: &Path, bytes: &[u8]) -> Result<PathBuf, SnapshotError> {
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let tmp = dir.join(SNAPSHOT_TMP);
    let dst = dir.join(SNAPSHOT_FILE);
    {
        let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
        f.sync_all().map_err(|e| io_err(&tmp, e))?;
    }
    fs::rename(&tmp, &dst).map_err(|e| io_err(&dst, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))?;
    Ok(dst)
}

/// Loads and verifies the current snapshot in `dir`, if there is one.
pub fn load(dir: &Path) -> Result<Option<(SnapshotBody, Vec<u8>)>, SnapshotError> {
    let path = dir.join(SNAPSHOT_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path, e)),
    };
    let body = decode(&bytes, &path.display().to_string())?;
    Ok(Some((body, bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Epoch;

    fn sample() -> SnapshotBody {
        SnapshotBody {
            meta: SnapshotMeta::default(),
            state: AppState::default(),
        }
    }

    #[test]
    fn roundtrip_and_atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode(&sample()).unwrap();
        write_atomic(dir.path(), &bytes).unwrap();
        let (body, raw) = load(dir.path()).unwrap().unwrap();
        assert_eq!(raw, bytes);
        assert_eq!(body.state, AppState::default());
        assert!(!dir.path().join(SNAPSHOT_TMP).exists());
    }

    #[test]
    fn truncated_and_corrupted_snapshots_are_detected() {
        let bytes = encode(&sample()).unwrap();
        for cut in 0..bytes.len() {
            let err = decode(&bytes[..cut], "snap")
                .err()
                .expect("truncated snapshot must fail");
            assert!(err.to_string().contains("snap"), "{err}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        let err = decode(&flipped, "snap")
            .err()
            .expect("corrupt snapshot must fail");
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn a_snapshot_whose_cluster_state_breaks_an_invariant_is_refused() {
        use crate::cluster::ClusterState;
        use std::sync::Arc;
        // Epoch 5 with no holder of epoch 5: no sequence of applies produces this.
        let broken = ClusterState {
            epoch: Epoch(5),
            ..ClusterState::default()
        };
        let body = SnapshotBody {
            meta: SnapshotMeta::default(),
            state: AppState {
                cluster: Arc::new(broken),
                ..AppState::default()
            },
        };
        // `encode` refuses to write it (asserted in pairs)...
        let err = encode(&body).expect_err("encode must refuse a broken state");
        assert!(err.to_string().contains("epoch 5"), "{err}");
        // ...and bytes that carry it anyway (a corrupt or forged file) are refused on decode,
        // with the broken invariant and the origin named.
        let bytes = frame(&codec::to_bytes_unbounded(&body).unwrap());
        let err = decode(&bytes, "/data/snapshot/snapshot.bin")
            .err()
            .expect("decode must refuse a broken state");
        assert!(
            matches!(err, SnapshotError::InvalidState { .. }),
            "typed error: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("/data/snapshot/snapshot.bin"), "{msg}");
        assert!(
            msg.contains("epoch 5 does not match the last holder"),
            "{msg}"
        );
    }

    #[test]
    fn missing_snapshot_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
    }
}
