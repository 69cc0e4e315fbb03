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
mod tests;
