//! Durable Raft log, vote and committed id on the `raft-log` crate.
//!
//! raft-log is a write-ahead log with its own flush worker thread: `append`, `save_vote`, ...
//! only buffer a record, and `flush(sync = true, callback)` hands the buffer to the worker,
//! which fsyncs and then calls the callback. The ordering rule that keeps Raft safe is:
//! **nothing is acknowledged before it is on disk**. So
//! - `append` passes openraft's `IOFlushed` as the flush callback: openraft only counts the
//!   entries as persisted (and only then answers the leader / counts itself in the quorum)
//!   once the worker has fsynced them;
//! - `save_vote`, `truncate_after` and `purge` wait for their own fsync before returning,
//!   because openraft treats their return as "durable" (a vote granted and then forgotten
//!   after a crash lets one node vote twice in a term: two leaders).
//!
//! Reads can miss raft-log's cache and go to disk; they run on the blocking pool so a slow
//! disk never stalls the async workers that carry heartbeats.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::vote::RaftLeaderId;
use openraft::{OptionalSend, RaftLogReader};
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::codeq::{Decode, Encode};
use std::time::Duration;

use crate::consensus::types::{CommittedLeaderId, Entry, LogId, TypeConfig, Vote};

/// Largest encoded log payload we accept when reading back (a corrupt length prefix must not
/// make us allocate gigabytes). Entries are bounded far below this by the API's value limit.
pub const MAX_STORED_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

/// A log id as raft-log stores it: (term, leader node, index), fixed width, big endian.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredLogId {
    pub term: u64,
    pub node_id: u64,
    pub index: u64,
}

impl StoredLogId {
    fn from_log_id(id: &LogId) -> Self {
        StoredLogId {
            term: id.leader_id.term,
            node_id: id.leader_id.node_id,
            index: id.index,
        }
    }

    fn to_log_id(&self) -> LogId {
        let leader: CommittedLeaderId = openraft::impls::leader_id_adv::LeaderId {
            term: self.term,
            node_id: self.node_id,
        };
        LogId::new(leader, self.index)
    }
}

impl Encode for StoredLogId {
    fn encode<W: io::Write>(&self, mut w: W) -> Result<usize, io::Error> {
        w.write_all(&self.term.to_be_bytes())?;
        w.write_all(&self.node_id.to_be_bytes())?;
        w.write_all(&self.index.to_be_bytes())?;
        Ok(24)
    }
}

impl Decode for StoredLogId {
    fn decode<R: io::Read>(mut r: R) -> Result<Self, io::Error> {
        Ok(StoredLogId {
            term: read_u64(&mut r)?,
            node_id: read_u64(&mut r)?,
            index: read_u64(&mut r)?,
        })
    }
}

/// A vote as raft-log stores it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd)]
pub struct StoredVote {
    pub term: u64,
    pub node_id: u64,
    pub committed: bool,
}

impl StoredVote {
    fn from_vote(v: &Vote) -> Self {
        StoredVote {
            term: v.leader_id().term(),
            node_id: *v.leader_id().node_id(),
            committed: v.is_committed(),
        }
    }

    fn to_vote(&self) -> Vote {
        if self.committed {
            Vote::new_committed(self.term, self.node_id)
        } else {
            Vote::new(self.term, self.node_id)
        }
    }
}

impl Encode for StoredVote {
    fn encode<W: io::Write>(&self, mut w: W) -> Result<usize, io::Error> {
        w.write_all(&self.term.to_be_bytes())?;
        w.write_all(&self.node_id.to_be_bytes())?;
        w.write_all(&[u8::from(self.committed)])?;
        Ok(17)
    }
}

impl Decode for StoredVote {
    fn decode<R: io::Read>(mut r: R) -> Result<Self, io::Error> {
        let term = read_u64(&mut r)?;
        let node_id = read_u64(&mut r)?;
        let mut b = [0u8; 1];
        r.read_exact(&mut b)?;
        let committed = match b[0] {
            0 => false,
            1 => true,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("stored vote has committed flag {other}, expected 0 or 1"),
                ))
            }
        };
        Ok(StoredVote {
            term,
            node_id,
            committed,
        })
    }
}

/// An entry's payload, bincode-encoded (the same codec as the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPayload(pub Vec<u8>);

impl Encode for StoredPayload {
    fn encode<W: io::Write>(&self, mut w: W) -> Result<usize, io::Error> {
        let len = u32::try_from(self.0.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "log payload over 4 GiB"))?;
        w.write_all(&len.to_be_bytes())?;
        w.write_all(&self.0)?;
        Ok(4 + self.0.len())
    }
}

impl Decode for StoredPayload {
    fn decode<R: io::Read>(mut r: R) -> Result<Self, io::Error> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_STORED_PAYLOAD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("stored log payload claims {len} bytes, over the {MAX_STORED_PAYLOAD_BYTES} limit: the log is corrupt"),
            ));
        }
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf)?;
        Ok(StoredPayload(buf))
    }
}

fn read_u64<R: io::Read>(r: &mut R) -> Result<u64, io::Error> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// Flush latencies kept for the p99 (the last this many appends' fsyncs).
pub const FLUSH_LATENCY_SAMPLES: usize = 1024;

/// How long appends waited for their fsync (queued behind other flushes included): the
/// delay a follower adds to its answers, which the primary's lease budget must absorb.
/// One Raft log per process, so one process-wide window.
static FLUSH_LATENCIES: std::sync::Mutex<std::collections::VecDeque<Duration>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

fn record_flush_latency(d: Duration) {
    let mut w = FLUSH_LATENCIES.lock().unwrap_or_else(|p| p.into_inner());
    if w.len() >= FLUSH_LATENCY_SAMPLES {
        w.pop_front();
    }
    w.push_back(d);
}

/// (p99, max, samples) of the recent append fsyncs of this process's Raft log.
pub fn flush_latency_summary() -> Option<(Duration, Duration, usize)> {
    let w = FLUSH_LATENCIES.lock().unwrap_or_else(|p| p.into_inner());
    percentile_99(w.iter().copied())
}

/// (p99, max, count) of `samples` (nearest-rank p99); None for no samples.
pub fn percentile_99(
    samples: impl Iterator<Item = Duration>,
) -> Option<(Duration, Duration, usize)> {
    let mut v: Vec<Duration> = samples.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    // Nearest rank: ceil(0.99 n), 1-based.
    let rank = (n * 99).div_ceil(100).max(1);
    Some((v[rank - 1], v[n - 1], n))
}

/// Where a flush's completion goes: to openraft (append) or to a waiting task (vote...).
pub enum FlushCallback {
    /// With the time the flush was queued (for the flush-latency window).
    Raft(IOFlushed<TypeConfig>, std::time::Instant),
    Wait(tokio::sync::oneshot::Sender<Result<(), io::Error>>),
}

impl raft_log::Callback for FlushCallback {
    fn send(self, res: Result<(), io::Error>) {
        match self {
            FlushCallback::Raft(cb, queued) => {
                record_flush_latency(queued.elapsed());
                cb.io_completed(res)
            }
            FlushCallback::Wait(tx) => {
                // The waiter may have given up (shutdown); nothing else to do then.
                let _ = tx.send(res);
            }
        }
    }
}

impl Debug for FlushCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlushCallback::Raft(..) => f.write_str("FlushCallback::Raft"),
            FlushCallback::Wait(_) => f.write_str("FlushCallback::Wait"),
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RaftLogTypes;

impl raft_log::Types for RaftLogTypes {
    type LogId = StoredLogId;
    type LogPayload = StoredPayload;
    type Vote = StoredVote;
    type Callback = FlushCallback;
    type UserData = Vec<u8>;

    fn log_index(log_id: &Self::LogId) -> u64 {
        log_id.index
    }

    fn payload_size(payload: &Self::LogPayload) -> u64 {
        payload.0.len() as u64
    }
}

type Inner = raft_log::RaftLog<RaftLogTypes>;

/// Bytes of log payloads raft-log keeps in memory; older entries are read from disk.
pub const LOG_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The Raft log store. Cheap to clone: every clone shares one raft-log instance.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

fn lock(inner: &Mutex<Inner>) -> Result<MutexGuard<'_, Inner>, io::Error> {
    inner.lock().map_err(|_| {
        io::Error::other("raft log lock poisoned by an earlier panic; restart the daemon")
    })
}

fn encode_payload(entry: &Entry) -> Result<StoredPayload, io::Error> {
    crate::consensus::codec::to_bytes(&entry.payload)
        .map(StoredPayload)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

fn decode_entry(id: &StoredLogId, payload: &StoredPayload) -> Result<Entry, io::Error> {
    let payload = crate::consensus::codec::from_bytes(&payload.0).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("log entry {} cannot be decoded ({e}): the log is corrupt; run `quorate recover` or re-seed this node from its peers", id.index),
        )
    })?;
    Ok(Entry::new(id.to_log_id(), payload))
}

impl LogStore {
    /// Opens (or creates) the log under `dir`.
    pub fn open(dir: &Path) -> Result<Self, io::Error> {
        std::fs::create_dir_all(dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create raft log dir {}: {e}", dir.display()),
            )
        })?;
        let mut config = raft_log::Config::new(dir.display());
        // raft-log caches entry payloads in memory (1 GiB by default); entries past the
        // cache are read back from disk. Bounded so a burst of large values cannot grow the
        // daemon's memory by a gigabyte.
        config.log_cache_capacity = Some(LOG_CACHE_BYTES);
        let log = raft_log::RaftLog::<RaftLogTypes>::open(Arc::new(config)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{}: {e}; if the files are damaged, run `quorate recover --config FILE` \
                     (it checks the data and re-seeds this node from its peers)",
                    dir.display()
                ),
            )
        })?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(log)),
        })
    }

    /// Queues an fsync and waits for it without blocking the async runtime.
    async fn flush_and_wait(&self) -> Result<(), io::Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.inner)?.flush(true, Some(FlushCallback::Wait(tx)))?;
        rx.await.map_err(|_| {
            io::Error::other("raft log flush worker stopped before confirming an fsync")
        })?
    }

    /// Number of bytes the log occupies on disk (for metrics and the bounded-disk check).
    pub fn on_disk_bytes(&self) -> u64 {
        lock(&self.inner).map(|l| l.on_disk_size()).unwrap_or(0)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => x.saturating_add(1),
            Bound::Excluded(x) => *x,
            Bound::Unbounded => u64::MAX,
        };
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let log = lock(&inner)?;
            let mut out = Vec::new();
            for item in log.read(start, end) {
                let (id, payload) = item?;
                out.push(decode_entry(&id, &payload)?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| io::Error::other(format!("raft log read task failed: {e}")))?
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        let log = lock(&self.inner)?;
        Ok(log.log_state().vote().map(StoredVote::to_vote))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let log = lock(&self.inner)?;
        let st = log.log_state();
        let last_purged_log_id = st.purged().map(StoredLogId::to_log_id);
        let last_log_id = st.last().map(StoredLogId::to_log_id).or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        lock(&self.inner)?.save_vote(StoredVote::from_vote(vote))?;
        self.flush_and_wait().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        if let Some(c) = committed {
            let mut log = lock(&self.inner)?;
            log.commit(StoredLogId::from_log_id(&c))?;
            // Not fsynced on purpose: the committed id only speeds up recovery (openraft
            // re-derives commitment from a quorum); it rides along with the next sync.
            log.flush(false, None)?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let log = lock(&self.inner)?;
        Ok(log.log_state().committed().map(StoredLogId::to_log_id))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Vec::new();
        for e in entries {
            batch.push((StoredLogId::from_log_id(&e.log_id), encode_payload(&e)?));
        }
        let mut log = lock(&self.inner)?;
        log.append(batch)?;
        // openraft counts these entries as persisted only when the worker calls back after fsync.
        log.flush(
            true,
            Some(FlushCallback::Raft(callback, std::time::Instant::now())),
        )?;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let keep_until = last_log_id.map(|id| id.index + 1).unwrap_or(0);
        {
            let mut log = lock(&self.inner)?;
            // Nothing stored at or after `keep_until`: truncation is a no-op (raft-log would
            // look up the entry before `keep_until`, which may not exist).
            let last = log.log_state().last().map(|l| l.index);
            match last {
                Some(last) if last >= keep_until => {
                    log.truncate(keep_until)?;
                }
                _ => return Ok(()),
            }
        }
        self.flush_and_wait().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        lock(&self.inner)?.purge(StoredLogId::from_log_id(&log_id))?;
        self.flush_and_wait().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_ids_roundtrip_through_codeq() {
        let id = StoredLogId {
            term: 7,
            node_id: 3,
            index: 99,
        };
        let mut buf = Vec::new();
        id.encode(&mut buf).unwrap();
        assert_eq!(StoredLogId::decode(buf.as_slice()).unwrap(), id);
        let v = StoredVote {
            term: 4,
            node_id: 2,
            committed: true,
        };
        let mut buf = Vec::new();
        v.encode(&mut buf).unwrap();
        assert_eq!(StoredVote::decode(buf.as_slice()).unwrap(), v);
        assert_eq!(StoredVote::from_vote(&v.to_vote()), v);
    }

    #[test]
    fn corrupt_payload_length_is_rejected_without_allocating() {
        let huge = (u32::MAX).to_be_bytes();
        let err = StoredPayload::decode(huge.as_slice()).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    struct SuiteBuilder;

    impl
        openraft::testing::log::StoreBuilder<
            TypeConfig,
            LogStore,
            crate::consensus::state_machine::StateMachineStore,
            tempfile::TempDir,
        > for SuiteBuilder
    {
        async fn build(
            &self,
        ) -> Result<
            (
                tempfile::TempDir,
                LogStore,
                crate::consensus::state_machine::StateMachineStore,
            ),
            openraft::StorageError<TypeConfig>,
        > {
            use openraft::errors::ErrorSource;
            let err = |e: String| {
                openraft::StorageError::read(openraft::impls::BoxedErrorSource::from_string(e))
            };
            let dir = tempfile::tempdir().map_err(|e| err(e.to_string()))?;
            let log = LogStore::open(&dir.path().join("log")).map_err(|e| err(e.to_string()))?;
            let sm = crate::consensus::state_machine::StateMachineStore::open(
                dir.path().join("snapshot"),
            )
            .map_err(|e| err(e.to_string()))?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's own storage conformance suite, run against the raft-log adapter.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite_passes() {
        openraft::testing::log::Suite::test_all(SuiteBuilder)
            .await
            .unwrap();
    }

    #[test]
    fn bad_vote_flag_is_rejected() {
        let mut buf = vec![0u8; 16];
        buf.push(9);
        assert!(StoredVote::decode(buf.as_slice()).is_err());
    }
}

#[cfg(test)]
mod flush_latency_tests {
    use super::percentile_99;
    use std::time::Duration;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn p99_is_the_nearest_rank() {
        assert_eq!(percentile_99(std::iter::empty()), None);
        assert_eq!(percentile_99([ms(7)].into_iter()), Some((ms(7), ms(7), 1)));
        // 1..=100 ms: the 99th of 100 is 99 ms.
        let v = (1..=100).map(ms);
        assert_eq!(percentile_99(v), Some((ms(99), ms(100), 100)));
        // 1..=1000: rank 990.
        let v = (1..=1000).rev().map(ms);
        assert_eq!(percentile_99(v), Some((ms(990), ms(1000), 1000)));
    }
}
