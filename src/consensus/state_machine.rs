//! The Raft state machine: applies committed entries to [`AppState`] (in memory), builds and
//! installs snapshots (on disk, see `snapshot.rs`).
//!
//! Apply is deterministic: it sees only the entry (and its index), never the clock or the
//! network, so every node that applies the same log reaches the same state.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tokio::sync::watch;

use crate::consensus::app::AppState;
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

struct Shared {
    state: RwLock<SmState>,
    snapshot_dir: PathBuf,
    /// Bumped after every applied batch (value: last applied index); KV watches and the
    /// executor wait on it instead of polling.
    applied_tx: watch::Sender<u64>,
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
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                state: RwLock::new(st),
                snapshot_dir,
                applied_tx,
            }),
        })
    }

    pub fn read(&self) -> Result<RwLockReadGuard<'_, SmState>, io::Error> {
        self.shared.state.read().map_err(|_| poisoned())
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, SmState>, io::Error> {
        self.shared.state.write().map_err(|_| poisoned())
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
        // Copy under the read lock, encode and fsync outside it, so applies are not stalled
        // for the duration of a disk write.
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
        let bytes =
            tokio::task::spawn_blocking(move || -> Result<Vec<u8>, snapshot::SnapshotError> {
                let bytes = snapshot::encode(&body)?;
                snapshot::write_atomic(&dir, &bytes)?;
                Ok(bytes)
            })
            .await
            .map_err(|e| io::Error::other(format!("snapshot task failed: {e}")))?
            .map_err(|e| io::Error::other(e.to_string()))?;
        tracing::info!(
            last_log_index = meta.last_log_id.map(|l| l.index).unwrap_or(0),
            bytes = bytes.len(),
            "snapshot built"
        );
        let bytes = Arc::new(bytes);
        self.write()?.current_snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: std::io::Cursor::new(bytes.as_ref().clone()),
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
            let response = {
                let mut st = self.write()?;
                st.last_applied = Some(entry.log_id);
                match &entry.payload {
                    EntryPayload::Blank => Response::default(),
                    EntryPayload::Normal(req) => Response(st.app.apply(&req.0, entry.log_id.index)),
                    EntryPayload::Membership(m) => {
                        st.last_membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        Response::default()
                    }
                }
            };
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
        let body = snapshot::decode(&bytes, "snapshot received from the leader")
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if body.meta.last_log_id != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "received snapshot's contents do not match its metadata; the leader will resend it",
            ));
        }
        let dir = self.shared.snapshot_dir.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            snapshot::write_atomic(&dir, &bytes).map(|_| bytes)
        })
        .await
        .map_err(|e| io::Error::other(format!("snapshot task failed: {e}")))?
        .map_err(|e| io::Error::other(e.to_string()))?;
        let index = {
            let mut st = self.write()?;
            st.last_applied = meta.last_log_id;
            st.last_membership = meta.last_membership.clone();
            st.app = body.state;
            st.current_snapshot = Some((meta.clone(), Arc::new(bytes)));
            meta.last_log_id.map(|l| l.index).unwrap_or(0)
        };
        tracing::info!(last_log_index = index, "snapshot installed");
        self.shared.applied_tx.send_replace(index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let st = self.read()?;
        Ok(st.current_snapshot.as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: std::io::Cursor::new(bytes.as_ref().clone()),
        }))
    }
}
