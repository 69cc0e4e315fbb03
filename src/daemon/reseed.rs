//! `quorate recover`: check a stopped node's Raft data, and re-seed the node from its peers when
//! the data is damaged.
//!
//! Re-seeding moves the log and the snapshot aside (never deletes them) and leaves a marker file.
//! A node with an empty log must not vote until it has caught up: it would grant its vote to a
//! candidate that lacks entries the cluster committed (Raft's up-to-date check compares against
//! its own, now empty, log), and it may have forgotten a vote it gave earlier in the current
//! term. So while the marker exists the node refuses vote and pre-vote requests and does not
//! campaign. It removes the marker once it has applied everything the leader had applied when
//! the node first heard from it; from then on it is an ordinary member.

use crate::types::LogIndex;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftLogReader, RaftLogStorage};
use serde::Serialize;

use crate::config::Config;
use crate::consensus::log_store::LogStore;
use crate::consensus::snapshot;
use crate::datadir::DataDir;
use std::process::ExitCode;

pub use crate::consensus::reseed_gate::{ReseedFlag, RESEED_MARKER};
/// Entries decoded per read while checking the log (bounds the memory of a check).
const CHECK_BATCH_ENTRIES: u64 = 1024;
/// How often a re-seeding node checks whether it has caught up.
const RESEED_POLL: Duration = Duration::from_millis(200);
/// How long after first hearing of a leader the catch-up target is fixed: by then a newly
/// elected leader has committed and applied the entry of its own term, so its applied index
/// covers every entry committed before the re-seed.
pub const RESEED_SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    DataDir(#[from] crate::datadir::DataDirError),
    #[error("{what} {path}: {source}; check the permissions and free space of the data dir")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What one part of the data dir looked like.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PartCheck {
    pub path: String,
    pub ok: bool,
    /// What was found: entry range, snapshot index, or the problem.
    pub detail: String,
}

/// The result of checking a data dir.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub data_dir: String,
    pub log: PartCheck,
    pub snapshot: PartCheck,
    /// The saved vote, when the log could be read: (term, voted for, committed).
    pub vote: Option<String>,
    /// A re-seed is under way (the marker exists).
    pub reseeding: bool,
}

impl CheckReport {
    pub fn healthy(&self) -> bool {
        self.log.ok && self.snapshot.ok
    }
}

/// Checks the Raft log (every entry decodes) and the snapshot (checksum and body) of a data
/// dir whose lock the caller holds.
pub async fn check(dir: &DataDir) -> CheckReport {
    let log_dir = dir.raft_log_dir();
    let (log, vote) = check_log(&log_dir).await;
    let snap_dir = dir.snapshot_dir();
    let snapshot = match snapshot::load(&snap_dir) {
        Ok(Some((body, _))) => PartCheck {
            path: snap_dir.display().to_string(),
            ok: true,
            detail: format!(
                "snapshot up to index {}",
                body.meta
                    .last_log_id
                    .map(|l| l.index.to_string())
                    .unwrap_or_else(|| "none".into())
            ),
        },
        Ok(None) => PartCheck {
            path: snap_dir.display().to_string(),
            ok: true,
            detail: "no snapshot yet".into(),
        },
        Err(e) => PartCheck {
            path: snap_dir.display().to_string(),
            ok: false,
            detail: e.to_string(),
        },
    };
    CheckReport {
        data_dir: dir.path.display().to_string(),
        log,
        snapshot,
        vote,
        reseeding: dir.path.join(RESEED_MARKER).exists(),
    }
}

async fn check_log(log_dir: &Path) -> (PartCheck, Option<String>) {
    let path = log_dir.display().to_string();
    let bad = |detail: String| PartCheck {
        path: path.clone(),
        ok: false,
        detail,
    };
    if !log_dir.exists() {
        return (
            PartCheck {
                path: path.clone(),
                ok: true,
                detail: "no log yet".into(),
            },
            None,
        );
    }
    let mut store = match LogStore::open(log_dir) {
        Ok(s) => s,
        Err(e) => return (bad(e.to_string()), None),
    };
    let vote = match store.read_vote().await {
        Ok(v) => v.map(|v| v.to_string()),
        Err(e) => return (bad(format!("vote unreadable: {e}")), None),
    };
    let state = match store.get_log_state().await {
        Ok(s) => s,
        Err(e) => return (bad(format!("log state unreadable: {e}")), vote),
    };
    let first = state.last_purged_log_id.map(|l| l.index + 1).unwrap_or(0);
    let Some(last) = state.last_log_id.map(|l| l.index) else {
        return (
            PartCheck {
                path: path.clone(),
                ok: true,
                detail: "empty log".into(),
            },
            vote,
        );
    };
    let mut next = first;
    while next <= last {
        let end = (next + CHECK_BATCH_ENTRIES).min(last + 1);
        match store.try_get_log_entries(next..end).await {
            Ok(entries) if entries.len() as u64 == end - next => {}
            Ok(entries) => {
                return (
                    bad(format!(
                        "entries {next}..{end} expected, {} found: the log has a hole",
                        entries.len()
                    )),
                    vote,
                )
            }
            Err(e) => return (bad(e.to_string()), vote),
        }
        next = end;
    }
    (
        PartCheck {
            path,
            ok: true,
            detail: format!("entries {first}..={last} all decode"),
        },
        vote,
    )
}

/// Moves the log and the snapshot of `dir` into `<data_dir>/recovered-<unix ms>/`, writes the
/// old vote (when it was readable) into a fresh log, and leaves the re-seed marker. Returns
/// where the old data went.
pub async fn reseed(dir: &DataDir) -> Result<PathBuf, RecoverError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| RecoverError::Io { what, path, source }
    };
    let old_vote = match LogStore::open(&dir.raft_log_dir()) {
        Ok(mut s) => s.read_vote().await.ok().flatten(),
        Err(_) => None,
    };
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let aside = dir.path.join(format!("recovered-{stamp}"));
    std::fs::create_dir_all(&aside).map_err(io("cannot create", &aside))?;
    // The marker first: if we crash half-way, the node still refuses to vote.
    let marker = dir.path.join(RESEED_MARKER);
    write_synced(
        &marker,
        format!(
            "re-seeding since unix ms {stamp}; old data in {}\n",
            aside.display()
        )
        .as_bytes(),
    )
    .map_err(io("cannot write", &marker))?;
    for part in [dir.raft_log_dir(), dir.snapshot_dir()] {
        if part.exists() {
            let name = part.file_name().map(|n| n.to_owned()).unwrap_or_default();
            let to = aside.join(name);
            std::fs::rename(&part, &to).map_err(io("cannot move", &part))?;
        }
    }
    sync_dir(&aside).map_err(io("cannot sync", &aside))?;
    sync_dir(&dir.path).map_err(io("cannot sync", &dir.path))?;
    if let Some(vote) = old_vote {
        let log_dir = dir.raft_log_dir();
        let mut fresh =
            LogStore::open(&log_dir).map_err(io("cannot create a fresh log in", &log_dir))?;
        fresh
            .save_vote(&vote)
            .await
            .map_err(io("cannot save the old vote in", &log_dir))?;
    }
    Ok(aside)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The pure part of the catch-up rule: the target is fixed at the leader's applied index
/// [`RESEED_SETTLE`] after a leader is first heard of; the node has caught up once it applied
/// that far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CatchUp {
    first_contact: Option<Instant>,
    target: Option<LogIndex>,
}

impl CatchUp {
    /// `leader_applied`: what the current leader (not this node) reports as applied, if a
    /// leader is known. Returns true once caught up.
    pub fn observe(
        &mut self,
        now: Instant,
        leader_applied: Option<LogIndex>,
        local_applied: LogIndex,
    ) -> bool {
        if self.target.is_none() {
            match (self.first_contact, leader_applied) {
                (None, Some(_)) => self.first_contact = Some(now),
                (Some(t), Some(a)) if now.saturating_duration_since(t) >= RESEED_SETTLE => {
                    self.target = Some(a)
                }
                _ => {}
            }
        }
        self.target.is_some_and(|t| local_applied >= t)
    }

    pub fn target(&self) -> Option<LogIndex> {
        self.target
    }
}

/// Runs on a re-seeding node: waits until it caught up, then removes the marker, lets the node
/// vote again and (voters only) campaign.
pub async fn watch_reseed(node: Arc<super::assembly::Node>, flag: ReseedFlag) {
    if !flag.active() {
        return;
    }
    tracing::warn!(
        "re-seeding from peers: this node refuses votes and does not campaign until it has caught up"
    );
    let mut catch_up = CatchUp::default();
    loop {
        let m = node.metrics();
        let leader_applied = m.current_leader.filter(|l| *l != node.id()).and_then(|l| {
            node.heartbeat
                .view
                .borrow()
                .peer(l)
                .and_then(|p| p.last.as_ref().map(|h| h.applied_index))
        });
        let local = LogIndex(m.last_applied.map(|l| l.index).unwrap_or(0));
        if catch_up.observe(Instant::now(), leader_applied, local) {
            let marker = node.config.data_dir.join(RESEED_MARKER);
            match std::fs::remove_file(&marker).and_then(|_| sync_dir(&node.config.data_dir)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(
                        "caught up, but cannot remove {}: {e}; the node keeps refusing votes until it can",
                        marker.display()
                    );
                    tokio::time::sleep(RESEED_POLL * 10).await;
                    continue;
                }
            }
            flag.clear();
            if node.config.node.role == crate::types::NodeRole::Voter {
                node.consensus.raft.runtime_config().elect(true);
            }
            tracing::info!(
                applied = local.get(),
                target = catch_up.target().unwrap_or_default().get(),
                "re-seed complete: caught up with the leader; this node votes again"
            );
            return;
        }
        tokio::time::sleep(RESEED_POLL).await;
    }
}

/// `quorate recover`: checks a stopped node's Raft data and, with `--reseed --yes`, moves it
/// aside so the node re-seeds from its peers.
pub async fn recover_command(
    file: &std::path::Path,
    data_dir: Option<PathBuf>,
    reseed: bool,
    yes: bool,
    json: bool,
) -> ExitCode {
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid config\n{e}");
            return ExitCode::from(1);
        }
    };
    let dir_path = data_dir.unwrap_or(config.data_dir.clone());
    if reseed && !yes {
        eprintln!(
            "error: --reseed discards this node's copy of the Raft log (it is moved aside, not \
             deleted) and makes the node take everything from its peers; add --yes to confirm"
        );
        return ExitCode::from(2);
    }
    let dir = match crate::datadir::DataDir::open_locked(&dir_path) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let report = check(&dir).await;
    let moved = if reseed {
        match self::reseed(&dir).await {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    if json {
        let v = serde_json::json!({
            "check": report,
            "healthy": report.healthy(),
            "reseeded": moved.as_ref().map(|p| p.display().to_string()),
        });
        println!("{v}");
    } else {
        for (name, part) in [("log", &report.log), ("snapshot", &report.snapshot)] {
            println!(
                "{name:<9} {} {}: {}",
                if part.ok { "ok     " } else { "DAMAGED" },
                part.path,
                part.detail
            );
        }
        if let Some(v) = &report.vote {
            println!("vote      {v}");
        }
        if report.reseeding {
            println!("note: a re-seed was already under way (the RESEEDING marker exists)");
        }
        match &moved {
            Some(p) => println!(
                "re-seeded: the old data is in {}; start the daemon (`systemctl start quorate`): \
                 it takes the log from the leader and votes again once it has caught up",
                p.display()
            ),
            None if !report.healthy() => println!(
                "next: with the other nodes healthy, run `quorate recover --config {} --reseed --yes`, \
                 then start the daemon",
                file.display()
            ),
            None => println!("the Raft data is sound; nothing to do"),
        }
    }
    if moved.is_some() || report.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_up_target_is_fixed_a_settle_time_after_first_contact() {
        let t0 = Instant::now();
        let mut c = CatchUp::default();
        assert!(
            !c.observe(t0, None, LogIndex(0)),
            "no leader known: not caught up"
        );
        assert!(
            !c.observe(t0, Some(LogIndex(5)), LogIndex(10)),
            "no target before the settle time"
        );
        assert_eq!(c.target(), None);
        let t1 = t0 + RESEED_SETTLE;
        assert!(!c.observe(t1, Some(LogIndex(100)), LogIndex(10)));
        assert_eq!(c.target(), Some(LogIndex(100)));
        // The leader moves on; the target stays.
        assert!(!c.observe(t1 + RESEED_POLL, Some(LogIndex(500)), LogIndex(99)));
        assert!(c.observe(t1 + RESEED_POLL * 2, Some(LogIndex(600)), LogIndex(100)));
        assert_eq!(c.target(), Some(LogIndex(100)));
    }

    #[test]
    fn losing_the_leader_before_the_settle_time_keeps_waiting() {
        let t0 = Instant::now();
        let mut c = CatchUp::default();
        c.observe(t0, Some(LogIndex(7)), LogIndex(0));
        assert!(!c.observe(t0 + RESEED_SETTLE, None, LogIndex(50)));
        assert_eq!(c.target(), None);
        assert!(c.observe(t0 + RESEED_SETTLE * 2, Some(LogIndex(40)), LogIndex(50)));
    }
}
