//! The node's data directory: created with safe permissions and locked for one daemon.
//!
//! Two daemons on one data dir would both append to the same Raft log and both vote: one node
//! id voting twice in a term is exactly how Raft elects two leaders. The lock is an `flock` on
//! `<data_dir>/LOCK`, released by the kernel when the process dies (even on kill -9), so a
//! crashed daemon never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
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

/// The file in the data dir that holds the heartbeat incarnation of the latest start.
pub const INCARNATION_FILE: &str = "incarnation";

/// The first incarnation of a data dir without [`INCARNATION_FILE`] is this plus the wall clock
/// in nanoseconds (capped at this value). Before the counter, the incarnation was the wall
/// clock in nanoseconds at start, and peers running this binary may still remember such a
/// value from this node's previous process: 2^62 ns after the epoch is the year 2116, so every
/// such value is below this floor, whatever the clock said at the upgrade, and the upgraded
/// node is heard at once. The wall-clock part keeps a node whose data dir was wiped (a
/// replaced disk) above the count of its earlier life too, unless the clock is behind. Up to
/// 2^63 values remain above it: the counter never runs out.
pub const FRESH_INCARNATION_FLOOR: u64 = 1 << 62;

/// Longest incarnation file read: a u64 in decimal and a newline is 21 bytes.
const MAX_INCARNATION_FILE_BYTES: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum IncarnationError {
    #[error(
        "{path} is damaged ({problem}); it must hold the heartbeat incarnation as one decimal \
         number and a newline. Remove the file and start again: the count then restarts from \
         {FRESH_INCARNATION_FLOOR} plus the wall clock, above any value quorate sent before \
         unless this machine's clock is behind"
    )]
    Damaged { path: PathBuf, problem: String },
    #[error("{path}: cannot {what}: {source}; check that the data dir is writable and the disk is not full")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The incarnation of this start: one more than the previous start's (`stored`), so it grows
/// whatever the wall clock does; without a previous one (a new or wiped data dir, or the
/// first start after an upgrade from the wall-clock design), [`FRESH_INCARNATION_FLOOR`] plus
/// the wall clock. `None` when `stored` is `u64::MAX` (2^63 starts after a fresh count: a
/// damaged file, not a real count). Pure: the caller reads the file and the clock.
pub fn next_incarnation(stored: Option<u64>, wall_clock_ns: u64) -> Option<u64> {
    match stored {
        Some(n) => n.checked_add(1),
        None => Some(FRESH_INCARNATION_FLOOR + wall_clock_ns.clamp(1, FRESH_INCARNATION_FLOOR)),
    }
}

/// The wall clock in nanoseconds since the Unix epoch (0 if it reads before the epoch). Only
/// a fresh incarnation count looks at it.
pub fn wall_clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Reads an incarnation file's text: exactly one decimal number, optionally followed by a
/// newline. Anything else is damage, never guessed around.
pub fn parse_incarnation(text: &str) -> Result<u64, String> {
    let digits = text.strip_suffix('\n').unwrap_or(text);
    if digits.is_empty() {
        return Err("it is empty".into());
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{digits:?} is not a decimal number"));
    }
    match digits.parse::<u64>() {
        Ok(0) => Err("it holds 0, which no start ever writes".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{digits:?} does not fit in 64 bits")),
    }
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

    pub fn incarnation_path(&self) -> PathBuf {
        self.path.join(INCARNATION_FILE)
    }

    /// The heartbeat incarnation of this start, persisted before it is returned: reads
    /// [`INCARNATION_FILE`], adds one ([`next_incarnation`]) and writes it back atomically
    /// (tmp file, fsync, rename, directory fsync), so a crash right after leaves either the
    /// old or the new value and the next start is higher still. Call once per start, before
    /// the first heartbeat is sent.
    ///
    /// Why not the wall clock: peers (their replay window) refuse heartbeats of an incarnation
    /// lower than the one they know; a node restarted with its clock stepped back would be
    /// unheard by its peers until they restarted too.
    pub fn next_incarnation(&self, wall_clock_ns: u64) -> Result<u64, IncarnationError> {
        let path = self.incarnation_path();
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| IncarnationError::Io { path, what, source }
        };
        let stored = match File::open(&path) {
            Ok(f) => {
                let mut text = String::new();
                f.take(MAX_INCARNATION_FILE_BYTES + 1)
                    .read_to_string(&mut text)
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::InvalidData => IncarnationError::Damaged {
                            path: path.clone(),
                            problem: "it is not text".into(),
                        },
                        _ => IncarnationError::Io {
                            path: path.clone(),
                            what: "read it",
                            source: e,
                        },
                    })?;
                if text.len() as u64 > MAX_INCARNATION_FILE_BYTES {
                    return Err(IncarnationError::Damaged {
                        path,
                        problem: format!("it is longer than {MAX_INCARNATION_FILE_BYTES} bytes"),
                    });
                }
                let n = parse_incarnation(&text).map_err(|problem| IncarnationError::Damaged {
                    path: path.clone(),
                    problem,
                })?;
                Some(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("open it", &path)(e)),
        };
        let next =
            next_incarnation(stored, wall_clock_ns).ok_or_else(|| IncarnationError::Damaged {
                path: path.clone(),
                problem: format!("it holds {}, the largest value there is", u64::MAX),
            })?;
        let tmp = self.path.join(format!("{INCARNATION_FILE}.tmp"));
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("create it", &tmp))?;
            writeln!(f, "{next}").map_err(io("write it", &tmp))?;
            f.sync_all().map_err(io("fsync it", &tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io("rename the new value over it", &path))?;
        File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync the directory holding it", &path))?;
        // Read back what the next start will read (TigerBeetle-style paired assertion): a
        // value that does not come back is a broken disk, and this start must not go on
        // with an incarnation it could not keep.
        let back = std::fs::read_to_string(&path).map_err(io("read it back", &path))?;
        if parse_incarnation(&back) != Ok(next) {
            return Err(IncarnationError::Damaged {
                path,
                problem: format!("{next} was written but {back:?} read back"),
            });
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_start_is_one_more_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n");
        let d = DataDir::open_locked(&p).unwrap();
        let first = d.next_incarnation(5).unwrap();
        assert_eq!(first, FRESH_INCARNATION_FLOOR + 5);
        assert_eq!(d.next_incarnation(5).unwrap(), first + 1);
        drop(d);
        let d = DataDir::open_locked(&p).unwrap();
        // The clock is not consulted once a count exists.
        assert_eq!(d.next_incarnation(0).unwrap(), first + 2);
        assert_eq!(
            std::fs::read_to_string(d.incarnation_path()).unwrap(),
            format!("{}\n", first + 2)
        );
        assert!(!p.join("incarnation.tmp").exists(), "renamed away");
    }

    /// Upgrade from the wall-clock design: the first counted incarnation is above every
    /// incarnation an older binary could have sent (its wall clock in ns, below 2^62 until
    /// the year 2116), even if the clock is far ahead or broken (0) at the upgrade.
    #[test]
    fn a_fresh_count_starts_above_any_wall_clock_incarnation() {
        let now_2026 = 1_780_000_000 * 1_000_000_000u64;
        for (clock, old) in [
            (now_2026, now_2026 + 3_600_000_000_000),
            (0, now_2026),
            (u64::MAX, FRESH_INCARNATION_FLOOR - 1),
        ] {
            let first = next_incarnation(None, clock).unwrap();
            assert!(first > old, "clock {clock}: {first} <= {old}");
            assert!(first <= FRESH_INCARNATION_FLOOR * 2);
        }
        assert_eq!(next_incarnation(Some(7), now_2026), Some(8));
        assert_eq!(next_incarnation(Some(u64::MAX), now_2026), None);
    }

    #[test]
    fn a_damaged_incarnation_file_is_an_error_naming_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open_locked(&dir.path().join("n")).unwrap();
        let path = d.incarnation_path();
        for bad in [
            &b""[..],
            b"\n",
            b"12x\n",
            b"-5\n",
            b" 5\n",
            b"5\n\n",
            b"0\n",
            b"99999999999999999999999\n",
            b"18446744073709551615\n",
            b"\xff\xfe\n",
            &[b'1'; 100][..],
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = d.next_incarnation(1).unwrap_err();
            let text = e.to_string();
            assert!(
                matches!(e, IncarnationError::Damaged { .. }),
                "{bad:?}: {text}"
            );
            assert!(
                text.contains(&path.display().to_string()) && text.contains("Remove the file"),
                "{bad:?}: {text}"
            );
            // Nothing was overwritten: the operator sees what was there.
            assert_eq!(std::fs::read(&path).unwrap(), bad);
        }
        std::fs::write(&path, "41").unwrap();
        assert_eq!(d.next_incarnation(1).unwrap(), 42);
    }

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
