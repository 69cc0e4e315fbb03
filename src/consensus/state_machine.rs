//! The Raft state machine: applies committed entries to [`AppState`] (in memory), builds and
//! installs snapshots (on disk, see `snapshot.rs`).
//!
//! Apply is deterministic: it sees only the entry (and its index), never the clock or the
//! network, so every node that applies the same log reaches the same state.
//!
//! Keeping the safety loop off the snapshot path (issue 13): the executor, which must demote
//! within `lease`, never takes the state lock. It reads the committed [`ClusterState`] from a
//! watch channel that apply publishes to (the state is small; the KV is not). The snapshot
//! builder holds the lock only for an O(1) copy (the KV is a persistent map), and encoding,
//! checksumming, writing and decoding a snapshot run on `spawn_blocking` threads, never on the
//! runtime's workers. Snapshot bytes are shared (`Arc`), never copied.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tokio::sync::watch;

use crate::cluster::ClusterState;
use crate::consensus::app::{AppRequest, AppState};
use crate::consensus::snapshot::{self, SnapshotBody};
use crate::consensus::types::{
    LogId, Response, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};

/// What the state machine holds; readers take a short read lock and never hold it across an
/// await.
#[derive(Default)]
pub struct SmState {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub app: AppState,
    /// The bytes of the last snapshot built or installed (what a lagging follower is sent).
    current_snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
}

/// Runs CPU- or disk-heavy snapshot work off the runtime's worker threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, snapshot::SnapshotError> + Send + 'static,
) -> Result<T, io::Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("snapshot task failed: {e}")))?
        .map_err(|e| match e {
            snapshot::SnapshotError::Corrupt { .. }
            | snapshot::SnapshotError::InvalidState { .. } => {
                io::Error::new(io::ErrorKind::InvalidData, e.to_string())
            }
            other => io::Error::other(other.to_string()),
        })
}

struct Shared {
    state: RwLock<SmState>,
    snapshot_dir: PathBuf,
    /// Bumped after every applied batch (value: last applied index); KV watches and the
    /// executor wait on it instead of polling.
    applied_tx: watch::Sender<u64>,
    /// The committed cluster state, published after every entry that changes it: what the
    /// executor and the status paths read, so they never wait on `state`.
    cluster_tx: watch::Sender<Arc<ClusterState>>,
}

/// Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

fn poisoned() -> io::Error {
    io::Error::other("state machine lock poisoned by an earlier panic; restart the daemon")
}

impl StateMachineStore {
    /// Opens the state machine, loading the snapshot in `snapshot_dir` when there is one.
    /// A corrupt snapshot is an error naming the file (never silently ignored: the log may
    /// already be purged past it).
    pub fn open(snapshot_dir: PathBuf) -> Result<Self, snapshot::SnapshotError> {
        let mut st = SmState::default();
        if let Some((body, bytes)) = snapshot::load(&snapshot_dir)? {
            st.last_applied = body.meta.last_log_id;
            st.last_membership = body.meta.last_membership.clone();
            st.app = body.state;
            st.current_snapshot = Some((body.meta, Arc::new(bytes)));
        }
        let applied = st.last_applied.map(|l| l.index).unwrap_or(0);
        let (applied_tx, _) = watch::channel(applied);
        let (cluster_tx, _) = watch::channel(st.app.cluster.clone());
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                state: RwLock::new(st),
                snapshot_dir,
                applied_tx,
                cluster_tx,
            }),
        })
    }

    pub fn read(&self) -> Result<RwLockReadGuard<'_, SmState>, io::Error> {
        self.shared.state.read().map_err(|_| poisoned())
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, SmState>, io::Error> {
        self.shared.state.write().map_err(|_| poisoned())
    }

    /// The committed cluster state as of the last applied entry. Never waits on the state
    /// lock (so never on a snapshot or a long apply): the safety loop reads this.
    pub fn cluster(&self) -> Arc<ClusterState> {
        self.shared.cluster_tx.borrow().clone()
    }

    /// Subscribe to changes of the committed cluster state.
    pub fn subscribe_cluster(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.shared.cluster_tx.subscribe()
    }

    fn publish_cluster(&self, cluster: &Arc<ClusterState>) {
        self.shared.cluster_tx.send_if_modified(|current| {
            if Arc::ptr_eq(current, cluster) {
                return false;
            }
            *current = cluster.clone();
            true
        });
    }

    /// Subscribe to "something was applied" (value: last applied index).
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.shared.applied_tx.subscribe()
    }

    /// Size of the current snapshot in bytes (0 when none).
    pub fn snapshot_bytes(&self) -> u64 {
        self.read()
            .ok()
            .and_then(|s| s.current_snapshot.as_ref().map(|(_, b)| b.len() as u64))
            .unwrap_or(0)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // Copy under the read lock (O(1): the cluster state is an `Arc`, the KV a persistent
        // map), then encode, checksum and fsync on a blocking thread, so neither applies nor
        // the runtime's workers wait for a 100 MB encode or a disk write.
        let body = {
            let st = self.read()?;
            SnapshotBody {
                meta: SnapshotMeta {
                    last_log_id: st.last_applied,
                    last_membership: st.last_membership.clone(),
                },
                state: st.app.clone(),
            }
        };
        let meta = body.meta.clone();
        let dir = self.shared.snapshot_dir.clone();
        let bytes = blocking(move || {
            let bytes = snapshot::encode(&body)?;
            snapshot::write_atomic(&dir, &bytes)?;
            // Dropped here, off the runtime: the last reference to superseded KV nodes.
            drop(body);
            Ok(bytes)
        })
        .await?;
        tracing::info!(
            last_log_index = meta.last_log_id.map(|l| l.index).unwrap_or(0),
            bytes = bytes.len(),
            "snapshot built"
        );
        let bytes = Arc::new(bytes);
        self.write()?.current_snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: std::io::Cursor::new(bytes),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let st = self.read()?;
        Ok((st.last_applied, st.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut last_index = None;
        while let Some((entry, responder)) = entries.try_next().await? {
            let (response, cluster) = {
                let mut st = self.write()?;
                st.last_applied = Some(entry.log_id);
                match &entry.payload {
                    EntryPayload::Blank => (Response::default(), None),
                    EntryPayload::Normal(req) => {
                        let r = Response(st.app.apply(&req.0, entry.log_id.index));
                        let changed = matches!(req.0, AppRequest::Cluster(_));
                        (r, changed.then(|| st.app.cluster.clone()))
                    }
                    EntryPayload::Membership(m) => {
                        st.last_membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        (Response::default(), None)
                    }
                }
            };
            if let Some(c) = cluster {
                self.publish_cluster(&c);
            }
            last_index = Some(entry.log_id.index);
            if let Some(r) = responder {
                r.send(response);
            }
        }
        if let Some(i) = last_index {
            self.shared.applied_tx.send_replace(i);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        // Verify, decode and persist on a blocking thread: a 100 MB checksum and decode must
        // not occupy a runtime worker.
        let dir = self.shared.snapshot_dir.clone();
        let (body, bytes) = blocking(move || {
            let body = snapshot::decode(&bytes, "snapshot received from the leader")?;
            snapshot::write_atomic(&dir, &bytes)?;
            Ok((body, bytes))
        })
        .await?;
        if body.meta.last_log_id != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "received snapshot's contents do not match its metadata; the leader will resend it",
            ));
        }
        let (index, cluster, old) = {
            let mut st = self.write()?;
            st.last_applied = meta.last_log_id;
            st.last_membership = meta.last_membership.clone();
            let old = std::mem::replace(&mut st.app, body.state);
            st.current_snapshot = Some((meta.clone(), bytes));
            let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
            (index, st.app.cluster.clone(), old)
        };
        self.publish_cluster(&cluster);
        // The replaced state may be large: free it off the runtime and outside the lock.
        tokio::task::spawn_blocking(move || drop(old));
        tracing::info!(last_log_index = index, "snapshot installed");
        self.shared.applied_tx.send_replace(index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let st = self.read()?;
        Ok(st.current_snapshot.as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: std::io::Cursor::new(bytes.clone()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Epoch;
    use std::sync::mpsc;
    use std::time::Duration;

    /// The safety loop's read of the committed state must not wait on the state lock: a
    /// writer queued behind a long reader (or a long apply) would otherwise hold it up for
    /// as long as the lock is busy. Holds the write lock and reads from another thread.
    #[test]
    fn committed_cluster_state_is_readable_while_the_state_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateMachineStore::open(dir.path().join("snapshot")).unwrap();
        let guard = store.write().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = store.clone();
        let t = std::thread::spawn(move || {
            let _ = tx.send(reader.cluster().epoch);
        });
        let got = rx.recv_timeout(Duration::from_secs(5));
        drop(guard);
        t.join().unwrap();
        assert_eq!(
            got,
            Ok(Epoch::NONE),
            "reading the committed cluster state waited on the state lock"
        );
    }
}
