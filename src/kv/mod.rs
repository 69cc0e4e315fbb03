//! The replicated key-value store: the deterministic core that lives inside the Raft state
//! machine, next to `ClusterState`.
//!
//! Every node applies the same committed [`KvCommand`]s in the same order, so every replica
//! must reach the same [`KvStore`] byte for byte. That is why this module has no clock, no
//! randomness, no `HashMap` (iteration order would differ between processes) and no panics:
//! a malformed command that slipped into the log (an old binary, a bug in a proposer) is
//! rejected the same way on every node and leaves the store untouched, instead of killing
//! the state machine on every replica at once.
//!
//! Semantics follow etcd's so operators meet no surprises:
//! - a global `revision` goes up by exactly one on every successful mutation and never
//!   otherwise (a failed CAS does not consume a revision);
//! - `create_revision` is the revision of the put that created the key after it did not exist;
//!   `mod_revision` is the revision of the last put; `version` counts puts since creation;
//! - a delete removes the key; a later put creates it anew (new `create_revision`, version 1).
//!
//! Watches: the HTTP layer long-polls on [`KvStore::changed_since`]. A deleted key leaves a
//! bounded tombstone (its delete revision) so a watcher also wakes on deletion; once the
//! tombstone history is full the oldest are dropped and a watcher older than them wakes
//! spuriously (it re-reads and finds the key absent), which is safe; missing a change is not.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::types::Epoch;

/// Default and highest allowed key length in bytes (issue 4: keys ≤ 1 KiB). Keys travel in the
/// URL path and in every watch notification, so they stay small.
pub const MAX_KEY_BYTES_CEILING: usize = 1024;
/// Default value limit: 1 MiB, like etcd's default request limit.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Highest value limit an operator may configure. One value is one Raft entry, which has to
/// fit in one replication frame and be copied to every follower; 16 MiB keeps a single write
/// from stalling replication of everything queued behind it.
pub const MAX_VALUE_BYTES_CEILING: usize = 16 * 1024 * 1024;
/// Default number of keys the store accepts; bounds memory and snapshot size.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;
/// Highest key count an operator may configure.
pub const MAX_KEYS_CEILING: usize = 10_000_000;
/// Default and highest total size of the store (keys, values and per-entry overhead, as
/// [`KvStore::approx_bytes`] counts them). A snapshot carries the whole store and is refused
/// above `MAX_SNAPSHOT_BYTES` (2 GiB) when decoded, so a bigger store could neither restart
/// a node nor catch a follower up; this stays under half of that cap, leaving room for the
/// cluster state, the encoding and growth while a snapshot is in flight.
pub const MAX_KV_TOTAL_BYTES: u64 = 768 * 1024 * 1024;
/// Most entries one [`KvStore::list`] page returns, whatever the caller asks for: a page is
/// built while the state machine is borrowed, so it must stay short.
pub const MAX_LIST_PAGE: usize = 1000;
/// Deleted keys remembered for watches. Bounded so a delete-heavy workload cannot grow the
/// state without limit; past it the oldest tombstones are dropped (see module docs).
pub const MAX_TOMBSTONES: usize = 4096;
/// Per-entry bytes counted by [`KvStore::approx_bytes`] besides key and value: three u64
/// revisions/version and two length prefixes, the worst case of the snapshot encoding.
pub const ENTRY_OVERHEAD_BYTES: u64 = 5 * 8;
/// Per-tombstone bytes besides the key: the delete revision and the key's length prefix.
pub const TOMBSTONE_OVERHEAD_BYTES: u64 = 2 * 8;

/// `encoding` value for a value that is valid UTF-8 and sent as text.
pub const ENCODING_UTF8: &str = "utf-8";
/// `encoding` value for a value that is not UTF-8 and sent as standard base64 with padding.
pub const ENCODING_BASE64: &str = "base64";

/// One stored key's value and history.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    /// Values (and the byte fields of commands) go through `serde_bytes`: encoded as one
    /// length-prefixed byte run instead of one serde call per byte (a 1 MiB value would
    /// otherwise cost a million calls on every encode: log, wire and snapshot).
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Revision of the put that created the key (after it last did not exist).
    pub create_revision: u64,
    /// Revision of the last put of this key; the value `?if_revision=` compares against.
    pub mod_revision: u64,
    /// Number of puts since creation (1 after the creating put).
    pub version: u64,
}

/// Size limits of the store. They are part of the replicated state (they travel in snapshots)
/// because they decide whether a command succeeds: two replicas with different limits would
/// diverge. Change them only through [`KvStore::set_limits`] from a committed command.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLimits {
    /// 1..=[`MAX_KEY_BYTES_CEILING`].
    pub max_key_bytes: usize,
    /// 1..=[`MAX_VALUE_BYTES_CEILING`].
    pub max_value_bytes: usize,
    /// 1..=[`MAX_KEYS_CEILING`].
    pub max_keys: usize,
    /// 1..=[`MAX_KV_TOTAL_BYTES`]: total bytes of the store, see [`KvStore::approx_bytes`].
    pub max_total_bytes: u64,
}

impl Default for KvLimits {
    fn default() -> Self {
        KvLimits {
            max_key_bytes: MAX_KEY_BYTES_CEILING,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_keys: DEFAULT_MAX_KEYS,
            max_total_bytes: MAX_KV_TOTAL_BYTES,
        }
    }
}

impl KvLimits {
    /// Checks every limit against its ceiling, so a bad config or command cannot lift a bound.
    pub fn validate(&self) -> Result<(), KvError> {
        let checks = [
            ("max_key_bytes", self.max_key_bytes, MAX_KEY_BYTES_CEILING),
            (
                "max_value_bytes",
                self.max_value_bytes,
                MAX_VALUE_BYTES_CEILING,
            ),
            ("max_keys", self.max_keys, MAX_KEYS_CEILING),
        ];
        for (name, value, ceiling) in checks {
            if value == 0 || value > ceiling {
                return Err(KvError::InvalidLimits {
                    reason: format!(
                        "{name} = {value} is outside 1..={ceiling}; pick a value in that range"
                    ),
                });
            }
        }
        if self.max_total_bytes == 0 || self.max_total_bytes > MAX_KV_TOTAL_BYTES {
            return Err(KvError::InvalidLimits {
                reason: format!(
                    "max_total_bytes = {} is outside 1..={MAX_KV_TOTAL_BYTES} (MAX_KV_TOTAL_BYTES); pick a value in that range",
                    self.max_total_bytes
                ),
            });
        }
        Ok(())
    }
}

/// Preconditions of a write. All present conditions must hold (AND); an empty condition
/// always holds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Condition {
    /// Compare-and-set on the key's mod revision; `Some(0)` means "the key must not exist".
    pub if_mod_revision: Option<u64>,
    /// Compare-and-set on the key's current value; a missing key never matches.
    #[serde(with = "serde_bytes")]
    pub if_value: Option<Vec<u8>>,
    /// Fencing token: the write fails unless the committed primary epoch equals this.
    pub if_epoch: Option<Epoch>,
}

/// A mutation of the store, proposed through Raft and applied by [`KvStore::apply`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum KvCommand {
    Put {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        #[serde(default)]
        condition: Condition,
    },
    Delete {
        key: String,
        #[serde(default)]
        condition: Condition,
    },
}

impl KvCommand {
    /// The key the command touches (for routing watch notifications before applying).
    pub fn key(&self) -> &str {
        match self {
            KvCommand::Put { key, .. } | KvCommand::Delete { key, .. } => key,
        }
    }
}

/// What a CAS compared against, for the conflict message.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum CasExpectation {
    /// `if_mod_revision` (0 = must not exist).
    ModRevision(u64),
    /// `if_value` (the value itself is not echoed back: it may be large).
    Value,
}

impl std::fmt::Display for CasExpectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CasExpectation::ModRevision(0) => f.write_str("the key to be absent (if_revision=0)"),
            CasExpectation::ModRevision(rev) => write!(f, "mod revision {rev}"),
            CasExpectation::Value => f.write_str("the given value (if_value)"),
        }
    }
}

/// Why a key was refused. Keys appear in URL paths (`/v1/kv/{key}`), so they are restricted
/// to what survives HTTP clients and proxies unchanged: `/` separates segments, and a segment
/// that is empty (`a//b`, a leading or trailing `/`) or `.`/`..` would be collapsed or
/// resolved by URL normalization, silently turning the key into another one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadKeyReason {
    Empty,
    /// ASCII control characters (NUL, newline...) break logs, CLI tables and headers.
    ControlCharacter,
    LeadingSlash,
    EmptySegment,
    DotSegment,
}

impl std::fmt::Display for BadKeyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BadKeyReason::Empty => "the key is empty",
            BadKeyReason::ControlCharacter => {
                "the key contains an ASCII control character (NUL, newline, tab...)"
            }
            BadKeyReason::LeadingSlash => "the key starts with '/'",
            BadKeyReason::EmptySegment => "the key has an empty segment ('//' or a trailing '/')",
            BadKeyReason::DotSegment => {
                "the key has a '.' or '..' segment, which URL normalization would rewrite"
            }
        })
    }
}

/// Why a command failed. Failing is deterministic: every replica returns the same error and
/// leaves the store (and its revision) unchanged.
#[derive(thiserror::Error, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum KvError {
    #[error("compare-and-set on key {key:?} failed: expected {expected}, but its mod revision is {actual_mod_revision} (0 = absent); read the key again and retry with if_revision={actual_mod_revision} if your change still applies")]
    CasConflict {
        key: String,
        expected: CasExpectation,
        actual_mod_revision: u64,
    },
    #[error("write guarded by if_epoch={expected} rejected: the committed primary epoch is {actual}; this writer has been fenced off by a newer primary, so stop writing and re-read the current epoch")]
    EpochMismatch { expected: Epoch, actual: Epoch },
    #[error("key is {len} bytes, the limit is {limit}; use a shorter key (hash long names)")]
    KeyTooLong { len: usize, limit: usize },
    #[error(
        "bad key {key:?}: {reason}; use '/'-separated non-empty segments of printable characters"
    )]
    BadKey { key: String, reason: BadKeyReason },
    #[error("{what} is {size} bytes, the limit is {limit} (kv max_value_bytes); store large data elsewhere and keep a reference here")]
    ValueTooLarge {
        what: ValueKind,
        size: usize,
        limit: usize,
    },
    #[error(
        "key {key:?} does not exist; nothing was deleted (list the prefix to see which keys exist)"
    )]
    NotFound { key: String },
    #[error(
        "the store already holds {limit} keys (kv max_keys); delete unused keys or raise max_keys"
    )]
    TooManyKeys { limit: usize },
    #[error("the store holds {total_bytes} bytes; this write would make it {after_bytes}, above its limit of {limit} bytes (kv max_total_bytes, counting keys, values and {ENTRY_OVERHEAD_BYTES} bytes per key); delete keys you no longer need, or raise storage.max_kv_bytes (at most {MAX_KV_TOTAL_BYTES})")]
    StoreFull {
        total_bytes: u64,
        after_bytes: u64,
        limit: u64,
    },
    #[error("invalid kv limits: {reason}")]
    InvalidLimits { reason: String },
    #[error("the store's revision counter is exhausted at {revision}; the store cannot accept writes, restore it from a backup into a fresh cluster")]
    RevisionExhausted { revision: u64 },
}

/// Which byte string broke the value limit.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Value,
    /// A CAS `if_value` larger than any value could be.
    ComparedValue,
}

impl std::fmt::Display for ValueKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ValueKind::Value => "value",
            ValueKind::ComparedValue => "compare value (if_value)",
        })
    }
}

/// Outcome of applying one command; it is also the Raft response the client receives.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum KvResult {
    Ok {
        /// The key that changed: the lead's watch notifier wakes its watchers.
        key: String,
        /// The store's revision after this write (= the new mod revision of a put).
        revision: u64,
        /// The entry before the write (None if the put created the key).
        prev: Option<KvEntry>,
    },
    Failed(KvError),
}

impl KvResult {
    pub fn is_ok(&self) -> bool {
        matches!(self, KvResult::Ok { .. })
    }
}

/// A page of [`KvStore::list`]: entries in key order, and whether more match after them.
pub type ListPage<'a> = (Vec<(&'a String, &'a KvEntry)>, bool);

/// The replicated key-value store. See the module docs for semantics.
///
/// Serialized form (snapshots): entries, revision, limits, tombstones, tombstone floor.
/// `approx_bytes` and the revision-ordered tombstone index are derived and rebuilt (and the
/// whole state checked) on deserialization, so a corrupt snapshot is refused, not installed.
///
/// Entries live in a persistent map (`imbl::OrdMap`, a B-tree whose nodes are shared between
/// copies) and each entry behind an `Arc`: cloning the store costs O(1), so the snapshot
/// builder copies a 100 MB store under the state machine's lock in microseconds and encodes
/// the copy elsewhere, while later writes copy only the few nodes on their path. The
/// serialized form is the same as a `BTreeMap`'s (a map in key order).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(try_from = "KvStoreWire")]
pub struct KvStore {
    entries: imbl::OrdMap<String, Arc<KvEntry>>,
    revision: u64,
    limits: KvLimits,
    /// Deleted key → revision of its delete; removed when the key is put again.
    tombstones: BTreeMap<String, u64>,
    /// Highest delete revision among tombstones dropped for space; a watcher waiting from
    /// below it may have missed a delete, so it is woken (see `changed_since`).
    tombstone_floor: u64,
    /// Same tombstones ordered by revision, to drop the oldest first.
    #[serde(skip_serializing)]
    tombstones_by_revision: BTreeMap<u64, String>,
    #[serde(skip_serializing)]
    approx_bytes: u64,
}

/// The serialized fields of [`KvStore`], in the same order.
#[derive(Deserialize)]
struct KvStoreWire {
    entries: BTreeMap<String, KvEntry>,
    revision: u64,
    limits: KvLimits,
    tombstones: BTreeMap<String, u64>,
    tombstone_floor: u64,
}

/// A deserialized store that breaks an invariant apply always keeps.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error(
    "kv snapshot is inconsistent: {0}; discard this snapshot and let the leader send a fresh one"
)]
pub struct KvSnapshotError(String);

impl TryFrom<KvStoreWire> for KvStore {
    type Error = KvSnapshotError;

    fn try_from(wire: KvStoreWire) -> Result<Self, Self::Error> {
        let bad = |msg: String| Err(KvSnapshotError(msg));
        if let Err(e) = wire.limits.validate() {
            return bad(e.to_string());
        }
        for (key, entry) in &wire.entries {
            if entry.create_revision == 0
                || entry.create_revision > entry.mod_revision
                || entry.mod_revision > wire.revision
                || entry.version == 0
            {
                return bad(format!(
                    "key {key:?} has create_revision {}, mod_revision {}, version {} with store revision {}",
                    entry.create_revision, entry.mod_revision, entry.version, wire.revision
                ));
            }
            // Keys were valid under some limit; the ceiling bounds them whatever the limit is now.
            if let Err(e) = check_key(key, MAX_KEY_BYTES_CEILING) {
                return bad(e.to_string());
            }
        }
        if wire.tombstones.len() > MAX_TOMBSTONES || wire.tombstone_floor > wire.revision {
            return bad(format!(
                "{} tombstones (max {MAX_TOMBSTONES}), floor {} with store revision {}",
                wire.tombstones.len(),
                wire.tombstone_floor,
                wire.revision
            ));
        }
        let mut tombstones_by_revision = BTreeMap::new();
        for (key, &rev) in &wire.tombstones {
            let duplicate = tombstones_by_revision.insert(rev, key.clone()).is_some();
            if duplicate
                || rev <= wire.tombstone_floor
                || rev > wire.revision
                || wire.entries.contains_key(key)
            {
                return bad(format!(
                    "tombstone of key {key:?} at revision {rev} contradicts the rest of the store"
                ));
            }
        }
        if wire.entries.len() > MAX_KEYS_CEILING {
            return bad(format!(
                "{} keys exceed the ceiling {MAX_KEYS_CEILING}",
                wire.entries.len()
            ));
        }
        let mut store = KvStore {
            entries: wire
                .entries
                .into_iter()
                .map(|(k, e)| (k, Arc::new(e)))
                .collect(),
            revision: wire.revision,
            limits: wire.limits,
            tombstones: wire.tombstones,
            tombstone_floor: wire.tombstone_floor,
            tombstones_by_revision,
            approx_bytes: 0,
        };
        store.approx_bytes = store.recompute_approx_bytes();
        if store.approx_bytes > MAX_KV_TOTAL_BYTES {
            return bad(format!(
                "{} bytes exceed the ceiling MAX_KV_TOTAL_BYTES ({MAX_KV_TOTAL_BYTES})",
                store.approx_bytes
            ));
        }
        Ok(store)
    }
}

fn entry_bytes(key: &str, entry: &KvEntry) -> u64 {
    (key.len() + entry.value.len()) as u64 + ENTRY_OVERHEAD_BYTES
}

fn tombstone_bytes(key: &str) -> u64 {
    key.len() as u64 + TOMBSTONE_OVERHEAD_BYTES
}

/// Validates a key against the rules of [`BadKeyReason`] and a length limit. Public so the
/// HTTP layer can refuse a bad key with 400 before proposing it.
pub fn check_key(key: &str, max_key_bytes: usize) -> Result<(), KvError> {
    // Length first: it bounds the work below and keeps a huge key out of the error message.
    if key.len() > max_key_bytes {
        return Err(KvError::KeyTooLong {
            len: key.len(),
            limit: max_key_bytes,
        });
    }
    let reason = if key.is_empty() {
        Some(BadKeyReason::Empty)
    } else if key.chars().any(|c| c.is_ascii_control()) {
        Some(BadKeyReason::ControlCharacter)
    } else if key.starts_with('/') {
        Some(BadKeyReason::LeadingSlash)
    } else if key.split('/').any(str::is_empty) {
        Some(BadKeyReason::EmptySegment)
    } else if key.split('/').any(|s| s == "." || s == "..") {
        Some(BadKeyReason::DotSegment)
    } else {
        None
    };
    match reason {
        Some(reason) => Err(KvError::BadKey {
            key: key.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

impl KvStore {
    /// An empty store with the given limits. Every replica must start from the same limits:
    /// use this only at bootstrap with a cluster-wide value, otherwise [`Self::set_limits`].
    pub fn with_limits(limits: KvLimits) -> Result<Self, KvError> {
        limits.validate()?;
        Ok(KvStore {
            limits,
            ..KvStore::default()
        })
    }

    pub fn limits(&self) -> KvLimits {
        self.limits
    }

    /// Replaces the limits. Call it only while applying a committed command, so every replica
    /// changes limits at the same log index. Lowering a limit keeps existing keys and values
    /// (nothing is deleted behind the operator's back); only later writes are checked. Does
    /// not change the revision: no key changed.
    pub fn set_limits(&mut self, limits: KvLimits) -> Result<(), KvError> {
        limits.validate()?;
        self.limits = limits;
        Ok(())
    }

    /// Applies one committed command. Deterministic: same store + same command + same epoch
    /// give the same result and the same new store on every replica. Never panics; a failed
    /// command changes nothing.
    ///
    /// `committed_epoch` is the primary epoch in the committed cluster state at this log
    /// index, which is what `if_epoch` fences against.
    ///
    /// Checks run in a fixed order, so all replicas report the same error when several apply:
    /// key, value size, condition (epoch, mod revision, value), key count, total bytes (put
    /// only), then (delete only) existence. A delete of a missing key is `NotFound`, a failure like any other.
    pub fn apply(&mut self, cmd: &KvCommand, committed_epoch: Epoch) -> KvResult {
        let outcome = match cmd {
            KvCommand::Put {
                key,
                value,
                condition,
            } => self.put(key, Cow::Borrowed(value), condition, committed_epoch),
            KvCommand::Delete { key, condition } => self.delete(key, condition, committed_epoch),
        };
        outcome.unwrap_or_else(KvResult::Failed)
    }

    /// [`Self::apply`] taking the command by value, which saves copying a put's value (up to
    /// `max_value_bytes`) when the caller owns the log entry anyway.
    pub fn apply_owned(&mut self, cmd: KvCommand, committed_epoch: Epoch) -> KvResult {
        let outcome = match cmd {
            KvCommand::Put {
                key,
                value,
                condition,
            } => self.put(&key, Cow::Owned(value), &condition, committed_epoch),
            KvCommand::Delete { key, condition } => self.delete(&key, &condition, committed_epoch),
        };
        outcome.unwrap_or_else(KvResult::Failed)
    }

    fn put(
        &mut self,
        key: &str,
        value: Cow<'_, [u8]>,
        condition: &Condition,
        committed_epoch: Epoch,
    ) -> Result<KvResult, KvError> {
        check_key(key, self.limits.max_key_bytes)?;
        self.check_value_size(ValueKind::Value, value.len())?;
        self.check_condition(key, condition, committed_epoch)?;
        let exists = self.entries.contains_key(key);
        if !exists && self.entries.len() >= self.limits.max_keys {
            return Err(KvError::TooManyKeys {
                limit: self.limits.max_keys,
            });
        }
        self.check_put_size(key, value.len())?;
        let revision = self.next_revision()?;
        let prev = match self.entries.get_mut(key) {
            Some(slot) => {
                let new = KvEntry {
                    value: value.into_owned(),
                    create_revision: slot.create_revision,
                    mod_revision: revision,
                    version: slot.version.saturating_add(1),
                };
                self.approx_bytes = self.approx_bytes.saturating_add(entry_bytes(key, &new));
                let old = std::mem::replace(slot, Arc::new(new));
                self.approx_bytes = self.approx_bytes.saturating_sub(entry_bytes(key, &old));
                // A copy of the value only when a snapshot still shares this entry.
                Some(Arc::unwrap_or_clone(old))
            }
            None => {
                let new = KvEntry {
                    value: value.into_owned(),
                    create_revision: revision,
                    mod_revision: revision,
                    version: 1,
                };
                self.approx_bytes = self.approx_bytes.saturating_add(entry_bytes(key, &new));
                self.entries.insert(key.to_owned(), Arc::new(new));
                if let Some(deleted_at) = self.tombstones.remove(key) {
                    self.tombstones_by_revision.remove(&deleted_at);
                    self.approx_bytes = self.approx_bytes.saturating_sub(tombstone_bytes(key));
                }
                None
            }
        };
        self.revision = revision;
        Ok(KvResult::Ok {
            key: key.to_owned(),
            revision,
            prev,
        })
    }

    fn delete(
        &mut self,
        key: &str,
        condition: &Condition,
        committed_epoch: Epoch,
    ) -> Result<KvResult, KvError> {
        check_key(key, self.limits.max_key_bytes)?;
        self.check_condition(key, condition, committed_epoch)?;
        if !self.entries.contains_key(key) {
            return Err(KvError::NotFound {
                key: key.to_owned(),
            });
        }
        let revision = self.next_revision()?;
        let Some(old) = self.entries.remove(key) else {
            // Checked just above; kept as an error rather than a panic.
            return Err(KvError::NotFound {
                key: key.to_owned(),
            });
        };
        self.approx_bytes = self.approx_bytes.saturating_sub(entry_bytes(key, &old));
        self.add_tombstone(key, revision);
        self.revision = revision;
        Ok(KvResult::Ok {
            key: key.to_owned(),
            revision,
            prev: Some(Arc::unwrap_or_clone(old)),
        })
    }

    fn add_tombstone(&mut self, key: &str, revision: u64) {
        // A key has at most one tombstone: it is removed when the key is put again, and a
        // missing key cannot be deleted, so no earlier tombstone of `key` exists here.
        self.tombstones.insert(key.to_owned(), revision);
        self.tombstones_by_revision.insert(revision, key.to_owned());
        self.approx_bytes = self.approx_bytes.saturating_add(tombstone_bytes(key));
        while self.tombstones_by_revision.len() > MAX_TOMBSTONES {
            let Some((oldest_rev, oldest_key)) = self.tombstones_by_revision.pop_first() else {
                break;
            };
            self.tombstones.remove(&oldest_key);
            self.approx_bytes = self
                .approx_bytes
                .saturating_sub(tombstone_bytes(&oldest_key));
            self.tombstone_floor = self.tombstone_floor.max(oldest_rev);
        }
    }

    /// Whether a put of `value_len` bytes at `key` keeps the store within `max_total_bytes`.
    /// A put that does not grow the store (an overwrite with a value no larger) is always
    /// allowed, so a store left above a lowered limit can still be trimmed. Public so the HTTP
    /// layer refuses early, with the same answer the apply would give.
    pub fn check_put_size(&self, key: &str, value_len: usize) -> Result<(), KvError> {
        let old = self.entries.get(key).map_or(0, |e| entry_bytes(key, e));
        let tombstone = if self.tombstones.contains_key(key) {
            tombstone_bytes(key)
        } else {
            0
        };
        let new = (key.len() as u64)
            .saturating_add(value_len as u64)
            .saturating_add(ENTRY_OVERHEAD_BYTES);
        let after = self
            .approx_bytes
            .saturating_sub(old)
            .saturating_sub(tombstone)
            .saturating_add(new);
        if after > self.limits.max_total_bytes && after > self.approx_bytes {
            return Err(KvError::StoreFull {
                total_bytes: self.approx_bytes,
                after_bytes: after,
                limit: self.limits.max_total_bytes,
            });
        }
        Ok(())
    }

    fn next_revision(&self) -> Result<u64, KvError> {
        self.revision
            .checked_add(1)
            .ok_or(KvError::RevisionExhausted {
                revision: self.revision,
            })
    }

    fn check_value_size(&self, what: ValueKind, size: usize) -> Result<(), KvError> {
        if size > self.limits.max_value_bytes {
            return Err(KvError::ValueTooLarge {
                what,
                size,
                limit: self.limits.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Checks in a fixed order (epoch, mod revision, value) so every replica reports the same
    /// error when several fail. The epoch comes first: a fenced writer must learn that it is
    /// fenced, not chase CAS conflicts.
    fn check_condition(
        &self,
        key: &str,
        condition: &Condition,
        committed_epoch: Epoch,
    ) -> Result<(), KvError> {
        if let Some(expected) = condition.if_epoch {
            if expected != committed_epoch {
                return Err(KvError::EpochMismatch {
                    expected,
                    actual: committed_epoch,
                });
            }
        }
        let current = self.get(key);
        let actual_mod_revision = current.map_or(0, |e| e.mod_revision);
        if let Some(expected) = condition.if_mod_revision {
            if expected != actual_mod_revision {
                return Err(KvError::CasConflict {
                    key: key.to_owned(),
                    expected: CasExpectation::ModRevision(expected),
                    actual_mod_revision,
                });
            }
        }
        if let Some(expected) = &condition.if_value {
            self.check_value_size(ValueKind::ComparedValue, expected.len())?;
            if current.map(|e| e.value.as_slice()) != Some(expected.as_slice()) {
                return Err(KvError::CasConflict {
                    key: key.to_owned(),
                    expected: CasExpectation::Value,
                    actual_mod_revision,
                });
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&KvEntry> {
        self.entries.get(key).map(|e| &**e)
    }

    /// Keys starting with `prefix` (all keys for ""), in key order, after `start_after` if
    /// given (the last key of the previous page), at most `min(limit, MAX_LIST_PAGE)` of them.
    /// The flag says whether more matching keys follow; pass the page's last key as
    /// `start_after` to get them. `limit = 0` returns an empty page and whether any match.
    pub fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> ListPage<'_> {
        let limit = limit.min(MAX_LIST_PAGE);
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut matching = self
            .entries
            .range::<_, str>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k, &**e));
        let page: Vec<_> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        (page, more)
    }

    /// Whether `key` changed after revision `rev`: it was put at a later revision, or deleted
    /// at a later revision. A watcher at `?wait=REV` returns as soon as this is true. May
    /// answer true spuriously for an absent key when `rev` predates the dropped tombstones;
    /// never answers false for a real change.
    pub fn changed_since(&self, key: &str, rev: u64) -> bool {
        if let Some(entry) = self.get(key) {
            return entry.mod_revision > rev;
        }
        if let Some(&deleted_at) = self.tombstones.get(key) {
            return deleted_at > rev;
        }
        rev < self.tombstone_floor
    }

    /// The store's revision: the revision of the last successful write (0 when none yet).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Approximate serialized size in bytes (keys, values, tombstones and fixed overheads),
    /// kept up to date on every write so metrics and snapshot decisions cost nothing.
    pub fn approx_bytes(&self) -> u64 {
        self.approx_bytes
    }

    fn recompute_approx_bytes(&self) -> u64 {
        let entries: u64 = self.entries.iter().map(|(k, e)| entry_bytes(k, e)).sum();
        let tombstones: u64 = self.tombstones.keys().map(|k| tombstone_bytes(k)).sum();
        entries + tombstones
    }
}

/// Renders a value for JSON: the text itself when it is UTF-8, else standard base64 (with
/// padding). Returns the text and its `encoding` ([`ENCODING_UTF8`] or [`ENCODING_BASE64`]).
pub fn encode_value_for_json(value: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(value) {
        Ok(text) => (text.to_owned(), ENCODING_UTF8),
        Err(_) => (BASE64.encode(value), ENCODING_BASE64),
    }
}

/// A value in JSON that cannot be turned back into bytes.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ValueDecodeError {
    #[error("unknown value encoding {0:?}; use \"utf-8\" or \"base64\"")]
    UnknownEncoding(String),
    #[error("value is not valid standard base64 ({0}); encode it with the standard alphabet and '=' padding")]
    InvalidBase64(String),
}

/// The inverse of [`encode_value_for_json`], for the CLI and clients that send JSON values.
pub fn decode_value_from_json(text: &str, encoding: &str) -> Result<Vec<u8>, ValueDecodeError> {
    match encoding {
        ENCODING_UTF8 => Ok(text.as_bytes().to_vec()),
        ENCODING_BASE64 => BASE64
            .decode(text)
            .map_err(|e| ValueDecodeError::InvalidBase64(e.to_string())),
        other => Err(ValueDecodeError::UnknownEncoding(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn put(key: &str, value: &[u8]) -> KvCommand {
        put_if(key, value, Condition::default())
    }

    fn put_if(key: &str, value: &[u8], condition: Condition) -> KvCommand {
        KvCommand::Put {
            key: key.to_owned(),
            value: value.to_vec(),
            condition,
        }
    }

    fn del(key: &str) -> KvCommand {
        del_if(key, Condition::default())
    }

    fn del_if(key: &str, condition: Condition) -> KvCommand {
        KvCommand::Delete {
            key: key.to_owned(),
            condition,
        }
    }

    fn if_rev(rev: u64) -> Condition {
        Condition {
            if_mod_revision: Some(rev),
            ..Condition::default()
        }
    }

    fn ok_revision(result: &KvResult) -> u64 {
        match result {
            KvResult::Ok { revision, .. } => *revision,
            KvResult::Failed(e) => panic!("expected success, got {e}"),
        }
    }

    fn failed(result: KvResult) -> KvError {
        match result {
            KvResult::Failed(e) => e,
            ok => panic!("expected failure, got {ok:?}"),
        }
    }

    fn bincode_roundtrip(store: &KvStore) -> KvStore {
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(store, config).expect("encode");
        let (back, read) =
            bincode::serde::decode_from_slice::<KvStore, _>(&bytes, config).expect("decode");
        assert_eq!(read, bytes.len());
        back
    }

    /// A copy of the store (what the snapshot builder takes under the state machine's lock)
    /// shares the values instead of copying them, and a later write to the original leaves
    /// the copy as it was.
    #[test]
    fn a_copy_of_the_store_shares_values_and_is_isolated_from_later_writes() {
        let mut kv = KvStore::default();
        for i in 0..100 {
            kv.apply(&put(&format!("k/{i:03}"), &vec![i as u8; 64 * 1024]), 0);
        }
        let copy = kv.clone();
        for i in 0..100 {
            let key = format!("k/{i:03}");
            let (a, b) = (kv.get(&key).unwrap(), copy.get(&key).unwrap());
            assert!(
                std::ptr::eq(a.value.as_ptr(), b.value.as_ptr()),
                "{key}: the copy duplicated the value"
            );
        }
        kv.apply(&put("k/000", b"new"), 0);
        kv.apply(&del("k/001"), 0);
        assert_eq!(copy.get("k/000").unwrap().value, vec![0u8; 64 * 1024]);
        assert!(copy.get("k/001").is_some());
        assert_eq!(copy.len(), 100);
        assert_eq!(kv.get("k/000").unwrap().value, b"new");
    }

    #[test]
    fn put_sets_create_and_mod_revisions_like_etcd() {
        let mut kv = KvStore::default();
        assert_eq!(kv.revision(), 0);
        let r1 = kv.apply(&put("a", b"1"), 0);
        assert_eq!(
            r1,
            KvResult::Ok {
                key: "a".into(),
                revision: 1,
                prev: None
            }
        );
        assert_eq!(ok_revision(&kv.apply(&put("b", b"x"), 0)), 2);
        let r3 = kv.apply(&put("a", b"2"), 0);
        let KvResult::Ok {
            revision: 3,
            prev: Some(prev),
            ..
        } = r3
        else {
            panic!("unexpected {r3:?}");
        };
        assert_eq!(prev.value, b"1");
        assert_eq!(
            (prev.create_revision, prev.mod_revision, prev.version),
            (1, 1, 1)
        );
        let a = kv.get("a").expect("a exists");
        assert_eq!(a.value, b"2");
        assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 3, 2));
        assert_eq!(kv.revision(), 3);
        assert_eq!(kv.len(), 2);
    }

    #[test]
    fn delete_removes_and_recreate_starts_a_new_life() {
        let mut kv = KvStore::default();
        kv.apply(&put("a", b"1"), 0);
        kv.apply(&put("a", b"2"), 0);
        let r = kv.apply(&del("a"), 0);
        let KvResult::Ok {
            revision: 3,
            prev: Some(prev),
            key,
        } = r
        else {
            panic!("unexpected {r:?}");
        };
        assert_eq!(key, "a");
        assert_eq!(prev.value, b"2");
        assert!(kv.get("a").is_none());
        assert!(kv.is_empty());
        assert_eq!(ok_revision(&kv.apply(&put("a", b"3"), 0)), 4);
        let a = kv.get("a").expect("a exists");
        assert_eq!((a.create_revision, a.mod_revision, a.version), (4, 4, 1));
    }

    #[test]
    fn delete_of_missing_key_fails_without_consuming_a_revision() {
        let mut kv = KvStore::default();
        kv.apply(&put("a", b"1"), 0);
        let before = kv.clone();
        assert_eq!(
            failed(kv.apply(&del("nope"), 0)),
            KvError::NotFound { key: "nope".into() }
        );
        assert_eq!(kv, before);
        assert_eq!(kv.revision(), 1);
    }

    #[test]
    fn cas_on_mod_revision_succeeds_only_on_the_current_revision() {
        let mut kv = KvStore::default();
        kv.apply(&put("k", b"v1"), 0);
        kv.apply(&put("other", b"x"), 0);
        assert_eq!(ok_revision(&kv.apply(&put_if("k", b"v2", if_rev(1)), 0)), 3);
        // A second writer that read revision 1 loses and learns the current revision.
        let before = kv.clone();
        let err = failed(kv.apply(&put_if("k", b"v3", if_rev(1)), 0));
        assert_eq!(
            err,
            KvError::CasConflict {
                key: "k".into(),
                expected: CasExpectation::ModRevision(1),
                actual_mod_revision: 3
            }
        );
        assert_eq!(kv, before);
        assert_eq!(kv.get("k").map(|e| e.value.clone()), Some(b"v2".to_vec()));
        // Delete is guarded the same way.
        assert!(!kv.apply(&del_if("k", if_rev(2)), 0).is_ok());
        assert!(kv.apply(&del_if("k", if_rev(3)), 0).is_ok());
        assert!(kv.get("k").is_none());
    }

    #[test]
    fn if_revision_zero_means_create_only() {
        let mut kv = KvStore::default();
        assert_eq!(
            ok_revision(&kv.apply(&put_if("lock", b"me", if_rev(0)), 0)),
            1
        );
        let err = failed(kv.apply(&put_if("lock", b"you", if_rev(0)), 0));
        assert_eq!(
            err,
            KvError::CasConflict {
                key: "lock".into(),
                expected: CasExpectation::ModRevision(0),
                actual_mod_revision: 1
            }
        );
        assert_eq!(
            kv.get("lock").map(|e| e.value.clone()),
            Some(b"me".to_vec())
        );
        // A non-zero expectation on a missing key reports revision 0 (absent).
        let err = failed(kv.apply(&put_if("free", b"x", if_rev(7)), 0));
        assert!(matches!(
            err,
            KvError::CasConflict {
                actual_mod_revision: 0,
                ..
            }
        ));
        // "Delete if absent" holds, and then there is nothing to delete.
        assert!(matches!(
            failed(kv.apply(&del_if("free", if_rev(0)), 0)),
            KvError::NotFound { .. }
        ));
    }

    #[test]
    fn cas_on_value() {
        let mut kv = KvStore::default();
        let cond = |v: &[u8]| Condition {
            if_value: Some(v.to_vec()),
            ..Condition::default()
        };
        // Missing key never matches, not even an empty value.
        assert!(matches!(
            failed(kv.apply(&put_if("k", b"a", cond(b"")), 0)),
            KvError::CasConflict {
                expected: CasExpectation::Value,
                actual_mod_revision: 0,
                ..
            }
        ));
        kv.apply(&put("k", b"a"), 0);
        assert!(kv.apply(&put_if("k", b"b", cond(b"a")), 0).is_ok());
        assert!(matches!(
            failed(kv.apply(&put_if("k", b"c", cond(b"a")), 0)),
            KvError::CasConflict {
                actual_mod_revision: 2,
                ..
            }
        ));
        assert_eq!(kv.get("k").map(|e| e.value.clone()), Some(b"b".to_vec()));
        // Both conditions must hold.
        let both = Condition {
            if_mod_revision: Some(2),
            if_value: Some(b"nope".to_vec()),
            if_epoch: None,
        };
        assert!(!kv.apply(&put_if("k", b"d", both), 0).is_ok());
    }

    #[test]
    fn if_epoch_fences_stale_writers() {
        let mut kv = KvStore::default();
        let at = |e: Epoch| Condition {
            if_epoch: Some(e),
            ..Condition::default()
        };
        assert!(kv.apply(&put_if("k", b"a", at(5)), 5).is_ok());
        let err = failed(kv.apply(&put_if("k", b"b", at(5)), 6));
        assert_eq!(
            err,
            KvError::EpochMismatch {
                expected: 5,
                actual: 6
            }
        );
        assert_eq!(
            failed(kv.apply(&del_if("k", at(4)), 6)),
            KvError::EpochMismatch {
                expected: 4,
                actual: 6
            }
        );
        assert_eq!(kv.get("k").map(|e| e.value.clone()), Some(b"a".to_vec()));
        assert_eq!(kv.revision(), 1);
        // The epoch is reported even when the CAS would also fail.
        let both = Condition {
            if_mod_revision: Some(99),
            if_value: None,
            if_epoch: Some(1),
        };
        assert!(matches!(
            failed(kv.apply(&put_if("k", b"c", both), 6)),
            KvError::EpochMismatch { .. }
        ));
        assert!(kv.apply(&del_if("k", at(6)), 6).is_ok());
    }

    #[test]
    fn key_length_limit_is_inclusive() {
        let mut kv = KvStore::default();
        let longest = "k".repeat(MAX_KEY_BYTES_CEILING);
        assert!(kv.apply(&put(&longest, b""), 0).is_ok());
        let too_long = "k".repeat(MAX_KEY_BYTES_CEILING + 1);
        assert_eq!(
            failed(kv.apply(&put(&too_long, b""), 0)),
            KvError::KeyTooLong {
                len: MAX_KEY_BYTES_CEILING + 1,
                limit: MAX_KEY_BYTES_CEILING
            }
        );
        // Multi-byte characters count in bytes: 513 two-byte chars = 1026 bytes.
        assert!(matches!(
            failed(kv.apply(&put(&"é".repeat(513), b""), 0)),
            KvError::KeyTooLong { len: 1026, .. }
        ));
        assert!(matches!(
            failed(kv.apply(&del(&too_long), 0)),
            KvError::KeyTooLong { .. }
        ));
        assert_eq!(kv.revision(), 1);
    }

    #[test]
    fn value_limit_is_inclusive_and_configurable() {
        let limits = KvLimits {
            max_value_bytes: 16,
            ..KvLimits::default()
        };
        let mut kv = KvStore::with_limits(limits).expect("valid limits");
        assert!(kv.apply(&put("k", &[7; 16]), 0).is_ok());
        assert_eq!(
            failed(kv.apply(&put("k", &[7; 17]), 0)),
            KvError::ValueTooLarge {
                what: ValueKind::Value,
                size: 17,
                limit: 16
            }
        );
        let big_compare = Condition {
            if_value: Some(vec![0; 17]),
            ..Condition::default()
        };
        assert!(matches!(
            failed(kv.apply(&put_if("k", b"", big_compare), 0)),
            KvError::ValueTooLarge {
                what: ValueKind::ComparedValue,
                ..
            }
        ));
        // The default is 1 MiB.
        let mut kv = KvStore::default();
        assert!(kv
            .apply(&put("big", &vec![1; DEFAULT_MAX_VALUE_BYTES]), 0)
            .is_ok());
        assert!(!kv
            .apply(&put("big", &vec![1; DEFAULT_MAX_VALUE_BYTES + 1]), 0)
            .is_ok());
    }

    #[test]
    fn bad_keys_are_rejected_and_good_ones_accepted() {
        let bad = [
            ("", BadKeyReason::Empty),
            ("a\0b", BadKeyReason::ControlCharacter),
            ("a\nb", BadKeyReason::ControlCharacter),
            ("tab\t", BadKeyReason::ControlCharacter),
            ("\u{7f}", BadKeyReason::ControlCharacter),
            ("/a", BadKeyReason::LeadingSlash),
            ("/", BadKeyReason::LeadingSlash),
            ("a//b", BadKeyReason::EmptySegment),
            ("a/", BadKeyReason::EmptySegment),
            (".", BadKeyReason::DotSegment),
            ("..", BadKeyReason::DotSegment),
            ("a/../b", BadKeyReason::DotSegment),
            ("./a", BadKeyReason::DotSegment),
            ("a/.", BadKeyReason::DotSegment),
        ];
        let mut kv = KvStore::default();
        for (key, reason) in bad {
            let err = failed(kv.apply(&put(key, b"v"), 0));
            assert_eq!(
                err,
                KvError::BadKey {
                    key: key.to_owned(),
                    reason
                },
                "key {key:?}"
            );
        }
        assert_eq!(kv.revision(), 0);
        for key in [
            "a",
            "a/b/c",
            "a.b",
            "..a",
            "a..",
            "ünï/ключ",
            "with space",
            "x?y#z%20",
        ] {
            assert!(kv.apply(&put(key, b"v"), 0).is_ok(), "key {key:?}");
        }
    }

    #[test]
    fn max_keys_bounds_new_keys_only() {
        let limits = KvLimits {
            max_keys: 2,
            ..KvLimits::default()
        };
        let mut kv = KvStore::with_limits(limits).expect("valid limits");
        kv.apply(&put("a", b"1"), 0);
        kv.apply(&put("b", b"1"), 0);
        assert_eq!(
            failed(kv.apply(&put("c", b"1"), 0)),
            KvError::TooManyKeys { limit: 2 }
        );
        assert!(
            kv.apply(&put("a", b"2"), 0).is_ok(),
            "updating an existing key is allowed"
        );
        kv.apply(&del("b"), 0);
        assert!(kv.apply(&put("c", b"1"), 0).is_ok());
        assert_eq!(kv.len(), 2);
    }

    #[test]
    fn limits_are_validated_and_lowering_keeps_data() {
        for bad in [
            KvLimits {
                max_key_bytes: 0,
                ..KvLimits::default()
            },
            KvLimits {
                max_key_bytes: MAX_KEY_BYTES_CEILING + 1,
                ..KvLimits::default()
            },
            KvLimits {
                max_value_bytes: MAX_VALUE_BYTES_CEILING + 1,
                ..KvLimits::default()
            },
            KvLimits {
                max_keys: 0,
                ..KvLimits::default()
            },
        ] {
            assert!(matches!(
                KvStore::with_limits(bad),
                Err(KvError::InvalidLimits { .. })
            ));
            let mut kv = KvStore::default();
            assert!(kv.set_limits(bad).is_err());
            assert_eq!(kv.limits(), KvLimits::default());
        }
        let mut kv = KvStore::default();
        kv.apply(&put("k", &[0; 100]), 0);
        let lower = KvLimits {
            max_value_bytes: 10,
            ..KvLimits::default()
        };
        kv.set_limits(lower).expect("valid limits");
        assert_eq!(kv.limits(), lower);
        assert_eq!(kv.get("k").map(|e| e.value.len()), Some(100));
        assert!(!kv.apply(&put("k", &[0; 11]), 0).is_ok());
        assert_eq!(kv.revision(), 1, "set_limits does not consume a revision");
        // Limits travel in snapshots.
        assert_eq!(bincode_roundtrip(&kv).limits(), lower);
    }

    #[test]
    fn list_paginates_within_a_prefix() {
        let mut kv = KvStore::default();
        for key in ["a", "a/1", "a/2", "a/3", "a/4", "a/5", "a0", "b/1", "0"] {
            kv.apply(&put(key, key.as_bytes()), 0);
        }
        fn keys<'a>(page: &ListPage<'a>) -> Vec<&'a str> {
            page.0.iter().map(|(k, _)| k.as_str()).collect()
        }
        let p1 = kv.list("a/", None, 2);
        assert_eq!((keys(&p1), p1.1), (vec!["a/1", "a/2"], true));
        let p2 = kv.list("a/", Some("a/2"), 2);
        assert_eq!((keys(&p2), p2.1), (vec!["a/3", "a/4"], true));
        let p3 = kv.list("a/", Some("a/4"), 2);
        assert_eq!((keys(&p3), p3.1), (vec!["a/5"], false));
        // An exact page reports no more.
        let exact = kv.list("a/", Some("a/3"), 2);
        assert_eq!((keys(&exact), exact.1), (vec!["a/4", "a/5"], false));
        // start_after before the prefix starts at the prefix; past it yields nothing.
        assert_eq!(
            keys(&kv.list("a/", Some("0"), 10)),
            vec!["a/1", "a/2", "a/3", "a/4", "a/5"]
        );
        assert_eq!(kv.list("a/", Some("zzz"), 10), (vec![], false));
        // Empty prefix lists everything in key order; values come along.
        let all = kv.list("", None, 100);
        assert_eq!(all.0.len(), 9);
        assert_eq!(all.0[0].0, "0");
        assert_eq!(all.0[0].1.value, b"0");
        assert_eq!(kv.list("a", None, 100).0.len(), 7);
        assert_eq!(kv.list("c", None, 100), (vec![], false));
        // limit 0 answers only whether something matches.
        assert_eq!(kv.list("a/", None, 0), (vec![], true));
        assert_eq!(kv.list("c/", None, 0), (vec![], false));
    }

    #[test]
    fn list_page_is_capped() {
        let mut kv = KvStore::default();
        for i in 0..MAX_LIST_PAGE + 5 {
            kv.apply(&put(&format!("k/{i:05}"), b""), 0);
        }
        let (page, more) = kv.list("k/", None, usize::MAX);
        assert_eq!(page.len(), MAX_LIST_PAGE);
        assert!(more);
        let last = page[page.len() - 1].0.clone();
        let (rest, more) = kv.list("k/", Some(&last), usize::MAX);
        assert_eq!(rest.len(), 5);
        assert!(!more);
    }

    #[test]
    fn changed_since_follows_puts_and_deletes() {
        let mut kv = KvStore::default();
        assert!(!kv.changed_since("k", 0), "never existed");
        kv.apply(&put("k", b"1"), 0); // rev 1
        assert!(kv.changed_since("k", 0));
        assert!(!kv.changed_since("k", 1));
        kv.apply(&put("other", b"1"), 0); // rev 2
        assert!(
            !kv.changed_since("k", 1),
            "other keys do not wake this watch"
        );
        kv.apply(&del("k"), 0); // rev 3
        assert!(kv.changed_since("k", 1), "a delete wakes the watcher");
        assert!(!kv.changed_since("k", 3));
        kv.apply(&put("k", b"2"), 0); // rev 4
        assert!(kv.changed_since("k", 3));
        assert!(!kv.changed_since("k", 4));
    }

    #[test]
    fn tombstones_are_bounded_and_old_watchers_wake_spuriously_not_never() {
        let mut kv = KvStore::default();
        kv.apply(&put("first", b""), 0); // rev 1
        kv.apply(&del("first"), 0); // rev 2
        for i in 0..MAX_TOMBSTONES {
            let key = format!("t/{i}");
            kv.apply(&put(&key, b""), 0);
            kv.apply(&del(&key), 0);
        }
        assert_eq!(kv.tombstones.len(), MAX_TOMBSTONES);
        assert_eq!(kv.tombstones_by_revision.len(), MAX_TOMBSTONES);
        assert!(
            !kv.tombstones.contains_key("first"),
            "oldest tombstone dropped"
        );
        assert_eq!(kv.tombstone_floor, 2);
        // A watcher from before the dropped delete is woken; one from after it is not.
        assert!(kv.changed_since("first", 1));
        assert!(!kv.changed_since("first", 2));
        assert!(
            kv.changed_since("never", 0),
            "cannot tell: wake rather than miss"
        );
        assert!(!kv.changed_since("never", kv.revision()));
        assert_eq!(kv.approx_bytes(), kv.recompute_approx_bytes());
        assert_eq!(bincode_roundtrip(&kv), kv);
    }

    fn small_total(limit: u64) -> KvStore {
        KvStore::with_limits(KvLimits {
            max_total_bytes: limit,
            ..KvLimits::default()
        })
        .unwrap()
    }

    #[test]
    fn the_total_bytes_limit_refuses_growth_past_it_and_nothing_else() {
        // Room for two entries of key "k/N" (3 bytes) and a 100-byte value.
        let one = 3 + 100 + ENTRY_OVERHEAD_BYTES;
        let mut kv = small_total(2 * one);
        assert!(kv.apply(&put("k/1", &[1; 100]), 0).is_ok());
        assert!(kv.apply(&put("k/2", &[2; 100]), 0).is_ok());
        assert_eq!(kv.approx_bytes(), 2 * one);
        let before = kv.clone();
        let err = failed(kv.apply(&put("k/3", &[3; 1]), 0));
        assert_eq!(
            err,
            KvError::StoreFull {
                total_bytes: 2 * one,
                after_bytes: 2 * one + 3 + 1 + ENTRY_OVERHEAD_BYTES,
                limit: 2 * one
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("max_total_bytes") && msg.contains("delete keys"),
            "{msg}"
        );
        assert_eq!(
            kv, before,
            "a refused put changes nothing, revision included"
        );
        // Growing an existing value is refused too; keeping or shrinking it is not.
        assert!(matches!(
            failed(kv.apply(&put("k/1", &[1; 101]), 0)),
            KvError::StoreFull { .. }
        ));
        assert!(kv.apply(&put("k/1", &[9; 100]), 0).is_ok());
        assert!(kv.apply(&put("k/1", &[9; 10]), 0).is_ok());
        // Deleting frees room (a tombstone is smaller than the entry it replaces).
        assert!(kv.apply(&del("k/2"), 0).is_ok());
        assert!(kv.apply(&put("k/3", &[3; 50]), 0).is_ok());
        assert!(kv.approx_bytes() <= 2 * one);
        // The early check the HTTP layer runs gives the same answer as the apply.
        assert_eq!(
            kv.check_put_size("k/4", 1000).err(),
            Some(failed(kv.clone().apply(&put("k/4", &[0; 1000]), 0)))
        );
    }

    #[test]
    fn a_store_left_above_a_lowered_total_limit_can_still_shrink() {
        let mut kv = KvStore::default();
        kv.apply(&put("a", &[0; 1000]), 0);
        kv.apply(&put("b", &[0; 1000]), 0);
        kv.set_limits(KvLimits {
            max_total_bytes: 100,
            ..KvLimits::default()
        })
        .unwrap();
        assert!(matches!(
            failed(kv.apply(&put("c", b"x"), 0)),
            KvError::StoreFull { .. }
        ));
        assert!(kv.apply(&put("a", b"small"), 0).is_ok());
        assert!(kv.apply(&del("b"), 0).is_ok());
    }

    #[test]
    fn total_bytes_limit_is_bounded_by_its_ceiling() {
        for bad in [0, MAX_KV_TOTAL_BYTES + 1] {
            let limits = KvLimits {
                max_total_bytes: bad,
                ..KvLimits::default()
            };
            let err = limits.validate().unwrap_err().to_string();
            assert!(err.contains("max_total_bytes"), "{err}");
        }
        assert_eq!(KvLimits::default().max_total_bytes, MAX_KV_TOTAL_BYTES);
    }

    #[test]
    fn approx_bytes_tracks_contents() {
        let mut kv = KvStore::default();
        assert_eq!(kv.approx_bytes(), 0);
        kv.apply(&put("ab", &[0; 10]), 0);
        assert_eq!(kv.approx_bytes(), 2 + 10 + ENTRY_OVERHEAD_BYTES);
        kv.apply(&put("ab", &[0; 4]), 0);
        assert_eq!(kv.approx_bytes(), 2 + 4 + ENTRY_OVERHEAD_BYTES);
        kv.apply(&del("ab"), 0);
        assert_eq!(kv.approx_bytes(), 2 + TOMBSTONE_OVERHEAD_BYTES);
        kv.apply(&put("ab", &[]), 0);
        assert_eq!(kv.approx_bytes(), 2 + ENTRY_OVERHEAD_BYTES);
    }

    #[test]
    fn snapshot_roundtrips_in_bincode_and_json() {
        let mut kv = KvStore::default();
        kv.apply(&put("a", b"text"), 0);
        kv.apply(&put("b", &[0xff, 0, 1]), 0);
        kv.apply(&put("c", b""), 0);
        kv.apply(&del("c"), 0);
        let back = bincode_roundtrip(&kv);
        assert_eq!(back, kv);
        assert_eq!(back.approx_bytes(), kv.approx_bytes());
        assert!(back.changed_since("c", 3));
        let json = serde_json::to_string(&kv).expect("json");
        assert!(
            !json.contains("approx_bytes"),
            "derived fields are not serialized: {json}"
        );
        let back: KvStore = serde_json::from_str(&json).expect("json back");
        assert_eq!(back, kv);
    }

    #[test]
    fn inconsistent_snapshots_are_refused() {
        let limits = r#""limits":{"max_key_bytes":1024,"max_value_bytes":1048576,"max_keys":1000000,"max_total_bytes":805306368}"#;
        let entry = |c: u64, m: u64, v: u64| {
            format!(r#"{{"value":[],"create_revision":{c},"mod_revision":{m},"version":{v}}}"#)
        };
        let store = |entries: String, revision: u64, tombstones: &str, floor: u64| {
            format!(
                r#"{{"entries":{{{entries}}},"revision":{revision},{limits},"tombstones":{{{tombstones}}},"tombstone_floor":{floor}}}"#
            )
        };
        let good = store(format!(r#""k":{}"#, entry(1, 2, 2)), 3, r#""gone":3"#, 0);
        assert!(serde_json::from_str::<KvStore>(&good).is_ok(), "{good}");
        let bad = [
            store(format!(r#""k":{}"#, entry(1, 5, 1)), 3, "", 0), // mod revision from the future
            store(format!(r#""k":{}"#, entry(2, 1, 1)), 3, "", 0), // created after modified
            store(format!(r#""k":{}"#, entry(0, 1, 1)), 3, "", 0), // never created
            store(format!(r#""k":{}"#, entry(1, 1, 0)), 3, "", 0), // version 0
            store(format!(r#""/k":{}"#, entry(1, 1, 1)), 3, "", 0), // bad key
            store(String::new(), 3, r#""a":2,"b":2"#, 0),          // duplicate tombstone revision
            store(format!(r#""k":{}"#, entry(1, 1, 1)), 3, r#""k":2"#, 0), // tombstone of a live key
            store(String::new(), 3, r#""a":4"#, 0), // tombstone from the future
            store(String::new(), 3, "", 4),         // floor from the future
            store(String::new(), 3, r#""a":2"#, 2), // tombstone below the floor
        ];
        for json in bad {
            let err = serde_json::from_str::<KvStore>(&json).expect_err(&json);
            assert!(
                err.to_string().contains("kv snapshot is inconsistent"),
                "{err}"
            );
        }
        let bad_limits = good.replace(r#""max_keys":1000000"#, r#""max_keys":0"#);
        assert!(serde_json::from_str::<KvStore>(&bad_limits).is_err());
    }

    #[test]
    fn exhausted_revision_fails_instead_of_wrapping() {
        let json = format!(
            r#"{{"entries":{{}},"revision":{},"limits":{{"max_key_bytes":1024,"max_value_bytes":1048576,"max_keys":1000000,"max_total_bytes":805306368}},"tombstones":{{}},"tombstone_floor":0}}"#,
            u64::MAX
        );
        let mut kv: KvStore = serde_json::from_str(&json).expect("valid store");
        let err = failed(kv.apply(&put("k", b""), 0));
        assert_eq!(err, KvError::RevisionExhausted { revision: u64::MAX });
        assert!(kv.is_empty());
    }

    #[test]
    fn apply_owned_matches_apply() {
        let cmds = [
            put("a", b"1"),
            put_if("a", b"2", if_rev(1)),
            put_if("a", b"3", if_rev(1)),
            del("a"),
            del("a"),
        ];
        let (mut x, mut y) = (KvStore::default(), KvStore::default());
        for cmd in cmds {
            assert_eq!(x.apply(&cmd, 0), y.apply_owned(cmd.clone(), 0), "{cmd:?}");
        }
        assert_eq!(x, y);
    }

    #[test]
    fn error_messages_name_the_thing_and_the_next_step() {
        let cas = KvError::CasConflict {
            key: "cfg/db".into(),
            expected: CasExpectation::ModRevision(4),
            actual_mod_revision: 9,
        }
        .to_string();
        assert!(
            cas.contains("\"cfg/db\"")
                && cas.contains("mod revision 4")
                && cas.contains("if_revision=9"),
            "{cas}"
        );
        let epoch = KvError::EpochMismatch {
            expected: 2,
            actual: 3,
        }
        .to_string();
        assert!(
            epoch.contains("if_epoch=2") && epoch.contains("fenced"),
            "{epoch}"
        );
        let big = KvError::ValueTooLarge {
            what: ValueKind::Value,
            size: 10,
            limit: 5,
        }
        .to_string();
        assert!(
            big.contains("max_value_bytes") && big.contains("10"),
            "{big}"
        );
        let bad = KvError::BadKey {
            key: "a//b".into(),
            reason: BadKeyReason::EmptySegment,
        }
        .to_string();
        assert!(
            bad.contains("\"a//b\"") && bad.contains("empty segment"),
            "{bad}"
        );
    }

    #[test]
    fn values_encode_as_text_or_base64() {
        assert_eq!(
            encode_value_for_json(b"hello"),
            ("hello".to_owned(), ENCODING_UTF8)
        );
        assert_eq!(
            encode_value_for_json("ключ".as_bytes()),
            ("ключ".to_owned(), ENCODING_UTF8)
        );
        assert_eq!(encode_value_for_json(b""), (String::new(), ENCODING_UTF8));
        assert_eq!(
            encode_value_for_json(&[0xff, 0xfe, 0x00]),
            ("//4A".to_owned(), ENCODING_BASE64)
        );
        assert_eq!(
            encode_value_for_json(&[0x80]),
            ("gA==".to_owned(), ENCODING_BASE64)
        );
        assert_eq!(
            decode_value_from_json("gA==", ENCODING_BASE64),
            Ok(vec![0x80])
        );
        assert_eq!(
            decode_value_from_json("hi", ENCODING_UTF8),
            Ok(b"hi".to_vec())
        );
        assert!(matches!(
            decode_value_from_json("gA", ENCODING_BASE64),
            Err(ValueDecodeError::InvalidBase64(_))
        ));
        assert!(matches!(
            decode_value_from_json("g*==", ENCODING_BASE64),
            Err(ValueDecodeError::InvalidBase64(_))
        ));
        assert_eq!(
            decode_value_from_json("x", "hex"),
            Err(ValueDecodeError::UnknownEncoding("hex".into()))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 200, ..ProptestConfig::default() })]

        #[test]
        fn value_encoding_roundtrips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let (text, encoding) = encode_value_for_json(&bytes);
            prop_assert_eq!(decode_value_from_json(&text, encoding), Ok(bytes));
        }

        #[test]
        fn list_pages_cover_exactly_the_prefix(
            keys in proptest::collection::btree_set("[ab]{1,2}(/[ab]{1,2}){0,2}", 0..40),
            prefix in "[ab/]{0,3}",
            page in 1usize..5,
        ) {
            let mut kv = KvStore::default();
            for key in &keys {
                prop_assert!(kv.apply(&put(key, b""), 0).is_ok());
            }
            let expected: Vec<&String> = keys.iter().filter(|k| k.starts_with(&prefix)).collect();
            let mut seen: Vec<&String> = Vec::new();
            let mut after: Option<String> = None;
            for _ in 0..=keys.len() {
                let (entries, more) = kv.list(&prefix, after.as_deref(), page);
                prop_assert!(entries.len() <= page);
                seen.extend(entries.iter().map(|(k, _)| *k));
                after = entries.last().map(|(k, _)| (*k).clone());
                if !more {
                    break;
                }
                prop_assert_eq!(entries.len(), page, "a page with more after it is full");
            }
            prop_assert_eq!(seen, expected);
        }
    }

    // ---- deterministic apply over arbitrary commands ----

    fn arb_key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec!["a", "b", "a/b", "c"]).prop_map(str::to_owned),
            1 => "[ab/.\n]{0,4}",
            1 => Just("k".repeat(MAX_KEY_BYTES_CEILING + 1)),
        ]
    }

    fn arb_condition() -> impl Strategy<Value = Condition> {
        (
            prop::option::weighted(0.4, 0u64..6),
            prop::option::weighted(0.2, proptest::collection::vec(0u8..3, 0..3)),
            prop::option::weighted(0.2, 0u64..3),
        )
            .prop_map(|(if_mod_revision, if_value, if_epoch)| Condition {
                if_mod_revision,
                if_value,
                if_epoch,
            })
    }

    fn arb_command() -> impl Strategy<Value = KvCommand> {
        prop_oneof![
            3 => (arb_key(), proptest::collection::vec(0u8..3, 0..12), arb_condition())
                .prop_map(|(key, value, condition)| KvCommand::Put { key, value, condition }),
            1 => (arb_key(), arb_condition()).prop_map(|(key, condition)| KvCommand::Delete { key, condition }),
        ]
    }

    fn small_limits() -> KvLimits {
        KvLimits {
            max_key_bytes: MAX_KEY_BYTES_CEILING,
            max_value_bytes: 8,
            max_keys: 3,
            max_total_bytes: MAX_KV_TOTAL_BYTES,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 500, ..ProptestConfig::default() })]

        #[test]
        fn apply_is_deterministic_and_revisions_count_successes(
            cmds in proptest::collection::vec((arb_command(), 0u64..3), 0..40)
        ) {
            let mut x = KvStore::with_limits(small_limits()).expect("valid limits");
            let mut y = x.clone();
            let mut successes = 0u64;
            for (i, (cmd, epoch)) in cmds.iter().enumerate() {
                if i == cmds.len() / 2 {
                    // Replica y installs a snapshot midway; it must go on exactly like x.
                    y = bincode_roundtrip(&y);
                }
                let before = x.clone();
                let rx = x.apply(cmd, *epoch);
                let ry = y.apply(cmd, *epoch);
                prop_assert_eq!(&rx, &ry);
                match &rx {
                    KvResult::Ok { key, revision, .. } => {
                        successes += 1;
                        prop_assert_eq!(*revision, before.revision() + 1);
                        prop_assert_eq!(x.revision(), *revision);
                        prop_assert_eq!(key.as_str(), cmd.key());
                        prop_assert!(x.changed_since(key, before.revision()));
                    }
                    KvResult::Failed(_) => prop_assert_eq!(&x, &before, "a failed command changed the store"),
                }
                prop_assert_eq!(x.approx_bytes(), x.recompute_approx_bytes());
                prop_assert!(x.entries.values().all(|e| e.mod_revision <= x.revision()));
            }
            prop_assert_eq!(&x, &y);
            prop_assert_eq!(x.revision(), successes);
            prop_assert_eq!(&bincode_roundtrip(&x), &x);
            let json = serde_json::to_string(&x).expect("json");
            let back: KvStore = serde_json::from_str(&json).expect("json back");
            prop_assert_eq!(&back, &x);
        }
    }

    // ---- comparison against a simple model ----

    #[derive(Clone, Debug, PartialEq)]
    struct ModelEntry {
        value: Vec<u8>,
        create: u64,
        modified: u64,
        version: u64,
    }

    /// A deliberately naive restatement of the spec, on a HashMap.
    #[derive(Default)]
    struct Model {
        map: HashMap<String, ModelEntry>,
        revision: u64,
        /// Last revision at which each key was put or deleted, for watches.
        last_change: HashMap<String, u64>,
    }

    /// Which error, without its details (the model only predicts the kind).
    #[derive(Debug, PartialEq)]
    enum Outcome {
        Ok {
            revision: u64,
            prev: Option<ModelEntry>,
        },
        Epoch,
        Cas,
        TooLarge,
        NotFound,
        TooManyKeys,
    }

    impl Model {
        fn apply(&mut self, op: &Op, key: &str, epoch: Epoch) -> Outcome {
            let limits = small_limits();
            if let Op::Put { value, .. } = op {
                if value.len() > limits.max_value_bytes {
                    return Outcome::TooLarge;
                }
            }
            let cond = op.condition(self, key);
            if cond.if_epoch.is_some_and(|e| e != epoch) {
                return Outcome::Epoch;
            }
            let current = self.map.get(key).cloned();
            let current_rev = current.as_ref().map(|e| e.modified).unwrap_or(0);
            if cond.if_mod_revision.is_some_and(|r| r != current_rev) {
                return Outcome::Cas;
            }
            if let Some(v) = &cond.if_value {
                if v.len() > limits.max_value_bytes {
                    return Outcome::TooLarge;
                }
                if current.as_ref().map(|e| &e.value) != Some(v) {
                    return Outcome::Cas;
                }
            }
            match op {
                Op::Put { value, .. } => {
                    if current.is_none() && self.map.len() >= limits.max_keys {
                        return Outcome::TooManyKeys;
                    }
                    self.revision += 1;
                    let entry = match &current {
                        Some(e) => ModelEntry {
                            value: value.clone(),
                            create: e.create,
                            modified: self.revision,
                            version: e.version + 1,
                        },
                        None => ModelEntry {
                            value: value.clone(),
                            create: self.revision,
                            modified: self.revision,
                            version: 1,
                        },
                    };
                    self.map.insert(key.to_owned(), entry);
                }
                Op::Delete { .. } => {
                    if current.is_none() {
                        return Outcome::NotFound;
                    }
                    self.revision += 1;
                    self.map.remove(key);
                }
            }
            self.last_change.insert(key.to_owned(), self.revision);
            Outcome::Ok {
                revision: self.revision,
                prev: current,
            }
        }
    }

    /// Conditions generated relative to the model's state, so CAS hits as often as it misses.
    #[derive(Clone, Debug)]
    enum RevGen {
        Zero,
        Current,
        Stale(u64),
    }

    #[derive(Clone, Debug)]
    enum ValGen {
        Current,
        Other(Vec<u8>),
    }

    #[derive(Clone, Debug)]
    struct CondGen {
        rev: Option<RevGen>,
        val: Option<ValGen>,
        epoch: Option<Epoch>,
    }

    #[derive(Clone, Debug)]
    enum Op {
        Put {
            key: usize,
            value: Vec<u8>,
            cond: CondGen,
        },
        Delete {
            key: usize,
            cond: CondGen,
        },
    }

    const MODEL_KEYS: [&str; 5] = ["a", "b", "c", "d/1", "d/2"];

    impl Op {
        fn key(&self) -> &'static str {
            match self {
                Op::Put { key, .. } | Op::Delete { key, .. } => MODEL_KEYS[*key],
            }
        }

        fn condition(&self, model: &Model, key: &str) -> Condition {
            let cond = match self {
                Op::Put { cond, .. } | Op::Delete { cond, .. } => cond,
            };
            let current = model.map.get(key);
            Condition {
                if_mod_revision: cond.rev.as_ref().map(|r| match r {
                    RevGen::Zero => 0,
                    RevGen::Current => current.map(|e| e.modified).unwrap_or(0),
                    RevGen::Stale(n) => *n,
                }),
                if_value: cond.val.as_ref().map(|v| match v {
                    ValGen::Current => current.map(|e| e.value.clone()).unwrap_or_default(),
                    ValGen::Other(v) => v.clone(),
                }),
                if_epoch: cond.epoch,
            }
        }

        fn command(&self, model: &Model) -> KvCommand {
            let key = self.key().to_owned();
            let condition = self.condition(model, &key);
            match self {
                Op::Put { value, .. } => KvCommand::Put {
                    key,
                    value: value.clone(),
                    condition,
                },
                Op::Delete { .. } => KvCommand::Delete { key, condition },
            }
        }
    }

    fn arb_cond_gen() -> impl Strategy<Value = CondGen> {
        let rev = prop_oneof![
            Just(RevGen::Zero),
            Just(RevGen::Current),
            (1u64..20).prop_map(RevGen::Stale)
        ];
        let val = prop_oneof![
            Just(ValGen::Current),
            proptest::collection::vec(0u8..2, 0..10).prop_map(ValGen::Other)
        ];
        (
            prop::option::weighted(0.4, rev),
            prop::option::weighted(0.2, val),
            prop::option::weighted(0.2, 0u64..3),
        )
            .prop_map(|(rev, val, epoch)| CondGen { rev, val, epoch })
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..MODEL_KEYS.len(), proptest::collection::vec(0u8..2, 0..10), arb_cond_gen())
                .prop_map(|(key, value, cond)| Op::Put { key, value, cond }),
            2 => (0..MODEL_KEYS.len(), arb_cond_gen()).prop_map(|(key, cond)| Op::Delete { key, cond }),
        ]
    }

    fn outcome_of(result: KvResult) -> Outcome {
        match result {
            KvResult::Ok { revision, prev, .. } => Outcome::Ok {
                revision,
                prev: prev.map(|e| ModelEntry {
                    value: e.value,
                    create: e.create_revision,
                    modified: e.mod_revision,
                    version: e.version,
                }),
            },
            KvResult::Failed(KvError::EpochMismatch { .. }) => Outcome::Epoch,
            KvResult::Failed(KvError::CasConflict { .. }) => Outcome::Cas,
            KvResult::Failed(KvError::ValueTooLarge { .. }) => Outcome::TooLarge,
            KvResult::Failed(KvError::NotFound { .. }) => Outcome::NotFound,
            KvResult::Failed(KvError::TooManyKeys { .. }) => Outcome::TooManyKeys,
            KvResult::Failed(other) => panic!("the model never produces {other:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, max_shrink_iters: 500, ..ProptestConfig::default() })]

        #[test]
        fn store_agrees_with_a_hashmap_model(
            ops in proptest::collection::vec((arb_op(), 0u64..3), 0..50)
        ) {
            let mut kv = KvStore::with_limits(small_limits()).expect("valid limits");
            let mut model = Model::default();
            for (op, epoch) in &ops {
                let watch_from = model.revision.saturating_sub(2);
                let cmd = op.command(&model);
                let expected = model.apply(op, op.key(), *epoch);
                let actual = outcome_of(kv.apply(&cmd, *epoch));
                prop_assert_eq!(actual, expected, "command {:?}", cmd);
                prop_assert_eq!(kv.revision(), model.revision);
                prop_assert_eq!(kv.len(), model.map.len());
                for key in MODEL_KEYS {
                    let got = kv.get(key).map(|e| ModelEntry {
                        value: e.value.clone(),
                        create: e.create_revision,
                        modified: e.mod_revision,
                        version: e.version,
                    });
                    prop_assert_eq!(got.as_ref(), model.map.get(key), "key {}", key);
                    let changed = model.last_change.get(key).is_some_and(|&r| r > watch_from);
                    prop_assert_eq!(kv.changed_since(key, watch_from), changed, "watch on {} from {}", key, watch_from);
                }
            }
            let (page, more) = kv.list("d/", None, MAX_LIST_PAGE);
            let mut model_d: Vec<&String> = model.map.keys().filter(|k| k.starts_with("d/")).collect();
            model_d.sort();
            prop_assert_eq!(page.into_iter().map(|(k, _)| k).collect::<Vec<_>>(), model_d);
            prop_assert!(!more);
        }
    }
}
