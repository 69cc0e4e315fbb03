//! The node's data directory: created with safe permissions and locked for one daemon.
//!
//! Two daemons on one data dir would both append to the same Raft log and both vote: one node
//! id voting twice in a term is exactly how Raft elects two leaders. The lock is an `flock` on
//! `<data_dir>/LOCK`, released by the kernel when the process dies (even on kill -9), so a
//! crashed daemon never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data dir {dir} is locked by another quorate process (pid {holder}); stop that daemon first, or point this one at another data dir with --data-dir")]
    Locked { dir: PathBuf, holder: String },
    #[error("data dir {dir}: {what}: {source}; check the path and that this user may write there")]
    Io {
        dir: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Holds the lock for as long as it lives.
#[derive(Debug)]
pub struct DataDir {
    pub path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates `path` (mode 0700) if needed and takes the exclusive lock.
    pub fn open_locked(path: &Path) -> Result<DataDir, DataDirError> {
        let io = |what: &'static str| {
            let dir = path.to_path_buf();
            move |source| DataDirError::Io { dir, what, source }
        };
        std::fs::create_dir_all(path).map_err(io("cannot create it"))?;
        let meta = std::fs::metadata(path).map_err(io("cannot stat it"))?;
        if meta.permissions().mode() & 0o077 != 0 {
            // Tighten rather than refuse: the dir holds the Raft log and the API token.
            let mut p = meta.permissions();
            p.set_mode(0o700);
            std::fs::set_permissions(path, p)
                .map_err(io("cannot restrict its permissions to 0700"))?;
        }
        let lock_path = path.join("LOCK");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("cannot open LOCK"))?;
        // SAFETY: flock on a valid open fd has no memory-safety preconditions.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let holder = std::fs::read_to_string(&lock_path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            return Err(DataDirError::Locked {
                dir: path.to_path_buf(),
                holder: if holder.is_empty() {
                    "unknown".into()
                } else {
                    holder
                },
            });
        }
        file.set_len(0).map_err(io("cannot write LOCK"))?;
        write!(file, "{}", std::process::id()).map_err(io("cannot write LOCK"))?;
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: file,
        })
    }

    pub fn raft_log_dir(&self) -> PathBuf {
        self.path.join("raft-log")
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.path.join("snapshot")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_same_dir_fails_naming_the_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("node");
        let first = DataDir::open_locked(&d).unwrap();
        // flock locks are per open file description, so a second open in-process conflicts too.
        let err = DataDir::open_locked(&d).unwrap_err();
        assert!(err.to_string().contains(&d.display().to_string()), "{err}");
        drop(first);
        DataDir::open_locked(&d).unwrap();
    }
}
