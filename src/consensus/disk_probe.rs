//! A quick measurement of fsync latency in a node's data dir, for `quorate config check`.
//!
//! A follower answers the leader's heartbeats only after its pending Raft log flush, so a
//! disk whose fsync p99 exceeds the lease budget (`Timing::lease_budget`) lapses a healthy
//! primary's lease. The daemon measures its real appends (`/v1/status` `fsync_p99_ms`); this
//! probe tells an operator before the first start.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// fsyncs the probe makes: enough for a p99 of a few outliers, short enough (well under a
/// second on any disk fit for a Raft log) for an interactive check.
pub const PROBE_FSYNCS: usize = 100;
/// Bytes written before each fsync (a typical small Raft append).
pub const PROBE_WRITE_BYTES: usize = 4096;

/// Result of [`probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsyncProbe {
    pub p99: Duration,
    pub max: Duration,
    pub samples: usize,
}

/// The directory the probe writes in: the data dir when it exists, else its nearest
/// existing ancestor (the disk it will be created on).
pub fn probe_dir(data_dir: &Path) -> Option<PathBuf> {
    data_dir
        .ancestors()
        .find(|d| d.is_dir())
        .map(Path::to_path_buf)
}

/// Writes and fsyncs a temporary file in `dir` `count` times (bounded by
/// [`PROBE_FSYNCS`]), then removes it.
pub fn probe(dir: &Path, count: usize) -> io::Result<FsyncProbe> {
    let count = count.clamp(1, PROBE_FSYNCS);
    let mut file = tempfile::Builder::new()
        .prefix(".quorate-fsync-probe-")
        .tempfile_in(dir)?;
    let block = vec![0x5au8; PROBE_WRITE_BYTES];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        file.as_file_mut().write_all(&block)?;
        file.as_file().sync_data()?;
        samples.push(t.elapsed());
    }
    let (p99, max, samples) = crate::consensus::log_store::percentile_99(samples.into_iter())
        .ok_or_else(|| io::Error::other("the fsync probe took no sample"))?;
    Ok(FsyncProbe { p99, max, samples })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_measures_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let r = probe(dir.path(), 10).unwrap();
        assert_eq!(r.samples, 10);
        assert!(r.p99 <= r.max);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // Bounded whatever is asked.
        assert_eq!(probe(dir.path(), 1_000_000).unwrap().samples, PROBE_FSYNCS);
    }

    #[test]
    fn probe_dir_is_the_nearest_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("a/b/c");
        assert_eq!(probe_dir(&missing).as_deref(), Some(dir.path()));
    }
}
