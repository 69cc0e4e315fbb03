//! The heartbeat datagram codec.
//!
//! A datagram is `MAGIC` (4 bytes) + `WIRE_VERSION` (1 byte) + the bincode 2 (`standard()`
//! config, byte limit) encoding of one [`Heartbeat`]. Nothing else travels in it.
//!
//! `encode` and `decode` are pure functions of bytes so that the authentication layer
//! (`seal`: AEAD with a key derived from the cluster secret) wraps them without touching the
//! socket or the detector: a sealed datagram is `seal(encode(hb))` and the receiver runs
//! `decode(open(bytes))`. Without a secret the plaintext encoding goes on the wire as is.
//!
//! Decoding is strict: the input must be the one canonical encoding of some heartbeat (no
//! trailing bytes, no over-long varints). That makes "valid datagram" a precise notion that the
//! tests can check, and it leaves no room for two different byte strings meaning the same thing.

use serde::{Deserialize, Serialize};

use crate::types::{Epoch, LogIndex, NodeId, NodeRole, ResourceHealth, ServiceReport, Term};

/// First bytes of every heartbeat datagram: anything else on the port is not ours.
pub const MAGIC: [u8; 4] = *b"QRHB";

/// The only datagram layout this build understands. Bump it when `Heartbeat` changes shape:
/// bincode carries no field names, so old and new layouts cannot be told apart otherwise.
pub const WIRE_VERSION: u8 = 3;

/// `MAGIC` + version byte.
pub const HEADER_BYTES: usize = MAGIC.len() + 1;

/// Largest datagram we send or accept. A heartbeat is at most 162 bytes (with a full service
/// report and its final-for-epoch tag; 77 typical), plus 45 of seal; 1024 leaves room for an
/// authentication tag and nonce and stays far below any path MTU, so datagrams never fragment.
pub const MAX_DATAGRAM_BYTES: usize = 1024;

/// Largest bincode payload after the header.
pub const MAX_PAYLOAD_BYTES: usize = MAX_DATAGRAM_BYTES - HEADER_BYTES;

/// The Raft role of the sender as the heartbeat reports it (a wire copy of openraft's
/// `ServerState`, kept here so the wire format does not change when openraft does).
///
/// The default is `Learner`, like openraft's: what a node is before it has joined.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RaftRoleWire {
    Leader,
    Follower,
    Candidate,
    #[default]
    Learner,
    Shutdown,
}

impl RaftRoleWire {
    /// The wire form of openraft's server state.
    pub fn from_server_state(state: openraft::ServerState) -> Self {
        match state {
            openraft::ServerState::Leader => RaftRoleWire::Leader,
            openraft::ServerState::Follower => RaftRoleWire::Follower,
            openraft::ServerState::Candidate => RaftRoleWire::Candidate,
            openraft::ServerState::Learner => RaftRoleWire::Learner,
            openraft::ServerState::Shutdown => RaftRoleWire::Shutdown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RaftRoleWire::Leader => "leader",
            RaftRoleWire::Follower => "follower",
            RaftRoleWire::Candidate => "candidate",
            RaftRoleWire::Learner => "learner",
            RaftRoleWire::Shutdown => "shutdown",
        }
    }
}

impl std::fmt::Display for RaftRoleWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the sender echoes back of the last heartbeat it received from the datagram's
/// addressee, so that the addressee can measure the round trip on its own clock alone.
///
/// How the round trip is computed (A measures its RTT to B):
/// 1. A sends a heartbeat to B stamped `sent_mono_ns = t_a` (A's monotonic clock).
/// 2. B keeps it; when B next sends to A (after holding it `held_ns`, measured on B's clock) it
///    puts `Echo { peer_sent_mono_ns: t_a, held_ns, incarnation: A's incarnation }` in it.
/// 3. A receives that at `now_a` and computes `rtt = (now_a - t_a) - held_ns`.
///
/// `now_a - t_a` is a difference of two readings of A's clock, and `held_ns` a difference of
/// two readings of B's clock: the two clocks are never compared, so no clock sync is needed.
/// The echoed incarnation lets A discard echoes of heartbeats its previous process sent: those
/// carry timestamps of another clock origin and would give nonsense.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Echo {
    /// The addressee's own `sent_mono_ns`, echoed back to it.
    pub peer_sent_mono_ns: u64,
    /// How long the sender held that heartbeat before sending this one (sender's clock).
    pub held_ns: u64,
    /// The addressee's incarnation in the echoed heartbeat.
    pub incarnation: u64,
}

/// One heartbeat from `from` to `to`. Sent every `heartbeat_interval` on every link.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Heartbeat {
    /// Hash of the cluster name ([`cluster_id`]); datagrams of other clusters are dropped.
    pub cluster_id: u64,
    pub from: NodeId,
    pub to: NodeId,
    /// Higher at every start of the sender (a counter in its data dir): a new value tells
    /// the receiver that the sender restarted, a lower one is a recording of an earlier life.
    pub incarnation: u64,
    /// Increases by one every sending round (the same value on every link of a round), so the
    /// receiver can drop duplicates and reordered datagrams per link.
    pub seq: u64,
    pub term: Term,
    pub member_role: NodeRole,
    pub raft_state: RaftRoleWire,
    pub leader_id: Option<NodeId>,
    /// `Some(epoch)` while the sender acts as primary at that epoch.
    pub primary_epoch: Option<Epoch>,
    pub applied_index: LogIndex,
    pub health: ResourceHealth,
    /// The sender's service report (role, position, timeline, health claim) from its last
    /// monitor run; all `None` when its monitor reports none. Added in wire version 2.
    pub service: ServiceReport,
    /// `Some(e)`: the sender's report was taken after it lost the primary of epoch `e` (or a
    /// later one), so its position is final for that primary; a zero-loss failover waits for
    /// this from every candidate. Added in wire version 3.
    pub report_after_loss: Option<Epoch>,
    /// The sender's monotonic clock when it sent this datagram (ns since its process origin).
    pub sent_mono_ns: u64,
    /// The last heartbeat the sender got from `to`, for RTT measurement (see [`Echo`]).
    pub echo: Option<Echo>,
}

/// Why a heartbeat could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error(
        "heartbeat does not fit in {max} bytes (MAX_DATAGRAM_BYTES); \
         this is a bug in quorate: report it with the heartbeat contents"
    )]
    TooLarge { max: usize },
    #[error("cannot encode heartbeat: {0}; this is a bug in quorate, please report it")]
    Bincode(String),
}

/// Why a datagram was not accepted as a heartbeat. Every input maps to `Ok` or one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {len} bytes is shorter than the {HEADER_BYTES}-byte heartbeat header")]
    TooShort { len: usize },
    #[error("datagram of {len} bytes exceeds MAX_DATAGRAM_BYTES ({MAX_DATAGRAM_BYTES})")]
    TooLong { len: usize },
    #[error("datagram does not start with the quorate heartbeat magic: another program sends to the heartbeat port")]
    BadMagic,
    #[error(
        "heartbeat wire version {0} is not supported (this build speaks {WIRE_VERSION}); \
         run the same quorate version on every node"
    )]
    UnsupportedVersion(u8),
    #[error("malformed heartbeat payload: {0}")]
    Malformed(String),
    #[error("{extra} unexpected bytes after the heartbeat payload")]
    TrailingBytes { extra: usize },
    #[error("heartbeat payload is not in canonical encoding (over-long integer)")]
    NonCanonical,
}

/// The bincode configuration of the payload: varint integers, little endian, and a byte limit
/// so that no field can claim more than one datagram's worth of input.
fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_PAYLOAD_BYTES>()
}

/// Encode `hb` into the payload part of `buf`, returning the payload length.
fn encode_payload(hb: &Heartbeat, buf: &mut [u8; MAX_PAYLOAD_BYTES]) -> Result<usize, EncodeError> {
    bincode::serde::encode_into_slice(hb, buf.as_mut_slice(), bincode_config()).map_err(|e| match e
    {
        bincode::error::EncodeError::UnexpectedEnd => EncodeError::TooLarge {
            max: MAX_DATAGRAM_BYTES,
        },
        other => EncodeError::Bincode(other.to_string()),
    })
}

/// Encode one heartbeat as a complete datagram (header + payload), at most
/// `MAX_DATAGRAM_BYTES` long.
pub fn encode(hb: &Heartbeat) -> Result<Vec<u8>, EncodeError> {
    let mut payload = [0u8; MAX_PAYLOAD_BYTES];
    let len = encode_payload(hb, &mut payload)?;
    let mut out = Vec::with_capacity(HEADER_BYTES + len);
    out.extend_from_slice(&MAGIC);
    out.push(WIRE_VERSION);
    out.extend_from_slice(&payload[..len]);
    if out.len() > MAX_DATAGRAM_BYTES {
        return Err(EncodeError::TooLarge {
            max: MAX_DATAGRAM_BYTES,
        });
    }
    Ok(out)
}

/// Decode one datagram. Never panics; the length is checked before any parsing.
pub fn decode(bytes: &[u8]) -> Result<Heartbeat, DecodeError> {
    if bytes.len() > MAX_DATAGRAM_BYTES {
        return Err(DecodeError::TooLong { len: bytes.len() });
    }
    if bytes.len() < HEADER_BYTES {
        return Err(DecodeError::TooShort { len: bytes.len() });
    }
    let (magic, rest) = bytes.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let (version, payload) = rest.split_at(1);
    if version[0] != WIRE_VERSION {
        return Err(DecodeError::UnsupportedVersion(version[0]));
    }
    let (hb, used): (Heartbeat, usize) =
        bincode::serde::decode_from_slice(payload, bincode_config())
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(DecodeError::TrailingBytes {
            extra: payload.len().saturating_sub(used),
        });
    }
    // Re-encode and compare: rejects over-long varints so that each heartbeat has exactly one
    // valid datagram. A heartbeat is tiny and this runs on the stack, so the cost is negligible.
    let mut again = [0u8; MAX_PAYLOAD_BYTES];
    match encode_payload(&hb, &mut again) {
        Ok(len) if again[..len] == *payload => Ok(hb),
        _ => Err(DecodeError::NonCanonical),
    }
}

/// Stable 64-bit id of a cluster name (FNV-1a). Stable across builds and platforms, unlike
/// std's `DefaultHasher`, because nodes of different builds must agree on it.
pub fn cluster_id(cluster_name: &str) -> u64 {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    cluster_name
        .as_bytes()
        .iter()
        .fold(FNV_OFFSET_BASIS, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
        })
}

#[cfg(test)]
pub(crate) mod tests;
