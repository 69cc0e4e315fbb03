//! Property and garbage tests for every decoder that reads bytes or text from outside the
//! process: heartbeat datagrams (plaintext and sealed), Raft frames (plaintext, inside the
//! Noise channel, and the Noise handshake), stored log payloads, snapshots, the config file,
//! duration strings, and the HTTP API's request bodies, values, keys and query strings.
//!
//! For each decoder:
//! - round trip: what the encoder writes, the decoder reads back unchanged;
//! - garbage: arbitrary bytes, and valid encodings with random damage, never panic and end in
//!   `Ok` or the decoder's typed error, and that error is the one the input deserves;
//! - bounds: input past the decoder's limit is refused before it is parsed.
//!
//! Cases per property come from `QUORATE_FUZZ_CASES` (default [`DEFAULT_CASES`], so the
//! default `cargo test` stays quick). The bounded million-case run, outside the default run:
//!
//! ```text
//! QUORATE_FUZZ_CASES=1000000 cargo test --release --test decoder_fuzz
//! ```
//!
//! One decoder at a time (and its time): add a name prefix filter, e.g.
//! `-- heartbeat_ --test-threads=1`. Prefixes: `heartbeat_`, `sealed_`, `frame_`,
//! `secure_`, `handshake_`, `log_payload_`, `snapshot_`, `config_`, `duration_`, `api_`.
//! No failure-persistence files are written: a failure prints its (shrunk) input.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use futures::executor::block_on;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderError,
    TransferLeaderRequest, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, EntryPayload, Membership};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::LazyJust;
use serde::de::DeserializeOwned;
use serde::Serialize;

use quorate::api::control::{decode_body, FailbackBody, MaintenanceBody, SwitchoverBody};
use quorate::api::kv::{KvItem, KvList, KvQuery};
use quorate::cluster::{
    Command, Demote, DemoteReason, OperationKind, Outcome, Phase, Promote, PromoteReason, Step,
};
use quorate::config::{
    format_duration, parse_duration, Config, MAX_CONFIG_BYTES, MAX_DURATION_TEXT_LEN,
    MAX_HEARTBEAT_LINKS,
};
use quorate::consensus::app::{AppRequest, AppState};
use quorate::consensus::codec::{self, CodecError, LEN_PREFIX_BYTES, MAX_FRAME_BYTES};
use quorate::consensus::network::{RpcRequest, RpcResponse};
use quorate::consensus::secure::{
    self, FrameConn, RaftKeys, SecureError, MAX_CHUNK_PLAINTEXT_BYTES, NOISE_MAX_MESSAGE_BYTES,
    NOISE_TAG_BYTES,
};
use quorate::consensus::snapshot::{self, SnapshotBody, SnapshotError};
use quorate::consensus::types::{Entry, LogId, Request, SnapshotMeta, StoredMembership, Vote};
use quorate::heartbeat::seal::{
    KeySlot, OpenError, Sealer, MIN_SEALED_BYTES, NONCE_BYTES, SEALED_MAGIC, SEAL_HEADER_BYTES,
    SEAL_VERSION,
};
use quorate::heartbeat::wire::{
    self, DecodeError, Echo, Heartbeat, RaftRoleWire, HEADER_BYTES, MAGIC, MAX_DATAGRAM_BYTES,
    WIRE_VERSION,
};
use quorate::kv::{
    check_key, decode_value_from_json, encode_value_for_json, BadKeyReason, Condition, KvCommand,
    KvError, KvLimits, ValueDecodeError, ENCODING_BASE64, ENCODING_UTF8, MAX_KEY_BYTES_CEILING,
    MAX_VALUE_BYTES_CEILING,
};
use quorate::types::{Epoch, LogIndex, NodeRole, ResourceHealth, ServiceReport, ServiceRole, Term};

// -------------------------------------------------------------------------------------------
// Run size

/// Environment variable with the number of cases per property.
const CASES_ENV: &str = "QUORATE_FUZZ_CASES";
/// Cases per property when `QUORATE_FUZZ_CASES` is unset: the default test run.
const DEFAULT_CASES: u32 = 256;
/// Shrinking steps after a failure (bounded so a failing run ends quickly).
const MAX_SHRINK_ITERS: u32 = 4096;

fn cases() -> u32 {
    match std::env::var(CASES_ENV) {
        Err(_) => DEFAULT_CASES,
        Ok(text) => match text.trim().replace('_', "").parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => panic!(
                "{CASES_ENV}={text:?} is not a positive whole number of cases; unset it or use e.g. 1000000"
            ),
        },
    }
}

fn fuzz_config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: MAX_SHRINK_ITERS,
        ..ProptestConfig::default()
    }
}

/// Default cases per property for the properties that run a Noise handshake (X25519 is slow
/// in debug builds): keeps the default run quick. `QUORATE_FUZZ_CASES` applies to them too.
const DEFAULT_HANDSHAKE_CASES: u32 = 32;

fn handshake_fuzz_config() -> ProptestConfig {
    ProptestConfig {
        cases: match std::env::var(CASES_ENV) {
            Err(_) => DEFAULT_HANDSHAKE_CASES,
            Ok(_) => cases(),
        },
        ..fuzz_config()
    }
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

// -------------------------------------------------------------------------------------------
// Shared generators: integers of every varint width, and damage to valid encodings

/// u64s of every bincode varint width (1, 3, 5 and 9 bytes).
fn num() -> impl Strategy<Value = u64> + Clone {
    prop_oneof![
        0u64..=250,
        251u64..=0xffff,
        0x1_0000u64..=0xffff_ffff,
        any::<u64>()
    ]
}

/// Bytes that sit on the edges of encodings: bool/option tags, varint markers (251..=255).
const INTERESTING_BYTES: [u8; 10] = [0x00, 0x01, 0x7f, 0x80, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff];
/// bincode's marker for "a u64 follows" in its varint encoding.
const VARINT_U64_MARKER: u8 = 0xfd;
/// Most damage steps applied to one valid encoding.
const MAX_MUTATIONS: usize = 4;

#[derive(Clone, Debug)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
    /// Overwrites 9 bytes with bincode's varint form of a u64: a forged length or count.
    ForgedVarint(Index, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        2 => (any::<Index>(), prop::sample::select(INTERESTING_BYTES.to_vec()))
            .prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<Index>().prop_map(Mutation::Remove),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), num()).prop_map(|(i, w)| Mutation::ForgedVarint(i, w)),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..=MAX_MUTATIONS)
}

fn mutate(mut bytes: Vec<u8>, damage: &[Mutation]) -> Vec<u8> {
    for m in damage {
        let len = bytes.len();
        match m {
            Mutation::Insert(i, b) => bytes.insert(i.index(len + 1), *b),
            _ if len == 0 => {}
            Mutation::Flip(i, x) => bytes[i.index(len)] ^= *x,
            Mutation::Set(i, b) => bytes[i.index(len)] = *b,
            Mutation::Remove(i) => {
                bytes.remove(i.index(len));
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(len)),
            Mutation::ForgedVarint(i, w) => {
                let at = i.index(len);
                let mut forged = vec![VARINT_U64_MARKER];
                forged.extend_from_slice(&w.to_le_bytes());
                for (k, b) in forged.into_iter().enumerate() {
                    match bytes.get_mut(at + k) {
                        Some(slot) => *slot = b,
                        None => bytes.push(b),
                    }
                }
            }
        }
    }
    bytes
}

fn bytes_up_to(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

// -------------------------------------------------------------------------------------------
// Heartbeat datagram (heartbeat::wire)

fn node_role() -> impl Strategy<Value = NodeRole> {
    prop::sample::select(vec![NodeRole::Voter, NodeRole::Witness, NodeRole::Learner])
}

fn heartbeat() -> BoxedStrategy<Heartbeat> {
    let raft_state = prop::sample::select(vec![
        RaftRoleWire::Leader,
        RaftRoleWire::Follower,
        RaftRoleWire::Candidate,
        RaftRoleWire::Learner,
        RaftRoleWire::Shutdown,
    ]);
    let health = prop::sample::select(vec![
        ResourceHealth::Unknown,
        ResourceHealth::Healthy,
        ResourceHealth::Unhealthy,
    ]);
    (
        (num(), num(), num(), num(), num(), num()),
        (node_role(), raft_state, health),
        (
            prop::option::of(num()),
            prop::option::of(num()),
            num(),
            num(),
            prop::option::of((num(), num(), num())),
        ),
        (
            prop::option::of(prop::sample::select(vec![
                ServiceRole::Primary,
                ServiceRole::Replica,
                ServiceRole::Stopped,
            ])),
            prop::option::of(num()),
            prop::option::of(num()),
            prop::option::of(any::<bool>()),
        )
            .prop_map(|(role, position, timeline, healthy)| ServiceReport {
                role,
                position,
                timeline,
                healthy,
            }),
        prop::option::of(num()),
    )
        .prop_map(
            |(
                (cluster_id, from, to, incarnation, seq, term),
                (member_role, raft_state, health),
                (leader_id, primary_epoch, applied_index, sent_mono_ns, echo),
                service,
                after_loss,
            )| Heartbeat {
                cluster_id,
                from,
                to,
                incarnation,
                seq,
                term: Term(term),
                member_role,
                raft_state,
                leader_id,
                primary_epoch: primary_epoch.map(Epoch),
                applied_index: LogIndex(applied_index),
                health,
                service,
                report_after_loss: after_loss.map(Epoch),
                sent_mono_ns,
                echo: echo.map(|(peer_sent_mono_ns, held_ns, incarnation)| Echo {
                    peer_sent_mono_ns,
                    held_ns,
                    incarnation,
                }),
            },
        )
        .boxed()
}

fn encoded_heartbeat(hb: &Heartbeat) -> Result<Vec<u8>, TestCaseError> {
    wire::encode(hb).map_err(|e| fail(format!("cannot encode {hb:?}: {e}")))
}

/// Any input: `Ok` only for the canonical encoding of what it decodes to, else the error
/// that names what is wrong with this input.
fn check_heartbeat(bytes: &[u8]) -> Result<(), TestCaseError> {
    let header_ok = bytes.len() >= HEADER_BYTES
        && bytes[..MAGIC.len()] == MAGIC
        && bytes[MAGIC.len()] == WIRE_VERSION;
    match wire::decode(bytes) {
        Ok(hb) => {
            let again = encoded_heartbeat(&hb)?;
            prop_assert_eq!(again.as_slice(), bytes, "accepted a non-canonical datagram");
        }
        Err(DecodeError::TooLong { len }) => {
            prop_assert!(len == bytes.len() && len > MAX_DATAGRAM_BYTES);
        }
        Err(DecodeError::TooShort { len }) => {
            prop_assert!(len == bytes.len() && len < HEADER_BYTES);
        }
        Err(DecodeError::BadMagic) => {
            prop_assert!(bytes.len() >= HEADER_BYTES && bytes[..MAGIC.len()] != MAGIC);
        }
        Err(DecodeError::UnsupportedVersion(v)) => {
            prop_assert!(bytes.len() >= HEADER_BYTES && bytes[..MAGIC.len()] == MAGIC);
            prop_assert!(bytes[MAGIC.len()] == v && v != WIRE_VERSION);
        }
        Err(
            e @ (DecodeError::Malformed(_)
            | DecodeError::TrailingBytes { .. }
            | DecodeError::NonCanonical),
        ) => {
            prop_assert!(
                header_ok && bytes.len() <= MAX_DATAGRAM_BYTES,
                "payload error {} for a datagram whose header or size is wrong",
                e
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn heartbeat_round_trip(hb in heartbeat()) {
        let bytes = encoded_heartbeat(&hb)?;
        prop_assert!(bytes.len() <= MAX_DATAGRAM_BYTES);
        prop_assert_eq!(wire::decode(&bytes), Ok(hb));
    }

    #[test]
    fn heartbeat_garbage(bytes in bytes_up_to(MAX_DATAGRAM_BYTES + 64)) {
        check_heartbeat(&bytes)?;
    }

    #[test]
    fn heartbeat_garbage_after_a_valid_header(tail in bytes_up_to(200)) {
        let mut bytes = MAGIC.to_vec();
        bytes.push(WIRE_VERSION);
        bytes.extend_from_slice(&tail);
        check_heartbeat(&bytes)?;
    }

    #[test]
    fn heartbeat_damaged(hb in heartbeat(), damage in mutations()) {
        let bytes = mutate(encoded_heartbeat(&hb)?, &damage);
        check_heartbeat(&bytes)?;
    }

    #[test]
    fn heartbeat_oversized_is_refused_unparsed(hb in heartbeat(), extra in 1usize..=4096) {
        // A valid datagram padded past the limit: the length check fires, not the parser.
        let mut bytes = encoded_heartbeat(&hb)?;
        bytes.resize(MAX_DATAGRAM_BYTES + extra, 0);
        prop_assert_eq!(wire::decode(&bytes), Err(DecodeError::TooLong { len: bytes.len() }));
    }
}

// -------------------------------------------------------------------------------------------
// Sealed heartbeat (heartbeat::seal)

const K_CURRENT: [u8; 32] = [0x11; 32];
const K_PREVIOUS: [u8; 32] = [0x22; 32];
const K_STRANGER: [u8; 32] = [0x33; 32];

fn sealer() -> Sealer {
    Sealer::new(&K_CURRENT, Some(&K_PREVIOUS))
}

/// Bytes no key holder made: never opened, and refused for the reason the input deserves.
fn check_unauthenticated(s: &Sealer, bytes: &[u8]) -> Result<(), TestCaseError> {
    let len = bytes.len();
    let sealed_header =
        len >= SEAL_HEADER_BYTES && bytes.starts_with(&SEALED_MAGIC) && bytes[4] == SEAL_VERSION;
    match s.open(bytes) {
        Ok(opened) => return Err(fail(format!("forged datagram opened as {opened:?}"))),
        Err(OpenError::TooLong { len: l }) => prop_assert!(l == len && l > MAX_DATAGRAM_BYTES),
        Err(OpenError::Plaintext) => {
            prop_assert!(len <= MAX_DATAGRAM_BYTES && bytes.starts_with(&MAGIC));
        }
        Err(OpenError::TooShort { len: l }) => {
            prop_assert!(l == len && l < MIN_SEALED_BYTES && !bytes.starts_with(&MAGIC));
        }
        Err(OpenError::BadMagic) => {
            prop_assert!(len >= MIN_SEALED_BYTES && !bytes.starts_with(&SEALED_MAGIC));
        }
        Err(OpenError::UnsupportedVersion(v)) => {
            prop_assert!(bytes.starts_with(&SEALED_MAGIC) && bytes[4] == v && v != SEAL_VERSION);
        }
        Err(OpenError::Unauthenticated) => {
            prop_assert!(sealed_header && (MIN_SEALED_BYTES..=MAX_DATAGRAM_BYTES).contains(&len));
        }
        Err(OpenError::Inner(e)) => {
            return Err(fail(format!(
                "the inner decoder ran on unauthenticated bytes ({e})"
            )))
        }
    }
    Ok(())
}

/// Seals arbitrary plaintext as a key holder would: the only way to reach the inner decoder.
fn seal_raw(
    key: &[u8; 32],
    nonce: &[u8; NONCE_BYTES],
    plain: &[u8],
) -> Result<Vec<u8>, TestCaseError> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut out = SEALED_MAGIC.to_vec();
    out.push(SEAL_VERSION);
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: plain,
                aad: &out[..SEAL_HEADER_BYTES],
            },
        )
        .map_err(|e| fail(format!("sealing for the test failed: {e}")))?;
    out.extend_from_slice(nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn sealed_round_trip(
        hb in heartbeat(), nonce in any::<[u8; NONCE_BYTES]>(), previous in any::<bool>(),
    ) {
        let slot = if previous { KeySlot::Previous } else { KeySlot::Current };
        let s = sealer();
        let bytes = s.seal(&hb, slot, nonce).map_err(fail)?;
        prop_assert!(bytes.len() <= MAX_DATAGRAM_BYTES);
        prop_assert_eq!(s.open(&bytes), Ok((hb.clone(), slot)));
        // A node without that key cannot open it.
        prop_assert_eq!(
            Sealer::new(&K_STRANGER, None).open(&bytes),
            Err(OpenError::Unauthenticated)
        );
    }

    #[test]
    fn sealed_garbage(bytes in bytes_up_to(MAX_DATAGRAM_BYTES + 64)) {
        check_unauthenticated(&sealer(), &bytes)?;
    }

    #[test]
    fn sealed_garbage_after_a_valid_header(tail in bytes_up_to(300)) {
        let mut bytes = SEALED_MAGIC.to_vec();
        bytes.push(SEAL_VERSION);
        bytes.extend_from_slice(&tail);
        check_unauthenticated(&sealer(), &bytes)?;
    }

    #[test]
    fn sealed_damaged(
        hb in heartbeat(), nonce in any::<[u8; NONCE_BYTES]>(), damage in mutations(),
    ) {
        let s = sealer();
        let valid = s.seal(&hb, KeySlot::Current, nonce).map_err(fail)?;
        let bytes = mutate(valid.clone(), &damage);
        if bytes == valid {
            // The damage cancelled out (the same byte flipped twice by the same value).
            prop_assert_eq!(s.open(&bytes), Ok((hb, KeySlot::Current)));
        } else {
            check_unauthenticated(&s, &bytes)?;
        }
    }

    #[test]
    fn sealed_authenticated_plaintext_reaches_the_inner_decoder(
        hb in heartbeat(),
        damage in prop::collection::vec(mutation(), 0..=MAX_MUTATIONS),
        random in bytes_up_to(200),
        use_random in any::<bool>(),
        nonce in any::<[u8; NONCE_BYTES]>(),
    ) {
        // A key holder sealing a non-heartbeat (a bug or another version): authenticated, and
        // the inner decoder's verdict is exactly what it says about the plaintext alone.
        let plain = if use_random { random } else { mutate(encoded_heartbeat(&hb)?, &damage) };
        let bytes = seal_raw(&K_PREVIOUS, &nonce, &plain)?;
        match sealer().open(&bytes) {
            Ok((got, slot)) => {
                prop_assert_eq!(slot, KeySlot::Previous);
                prop_assert_eq!(wire::decode(&plain), Ok(got));
            }
            Err(OpenError::Inner(e)) => prop_assert_eq!(wire::decode(&plain), Err(e)),
            Err(OpenError::TooLong { len }) => {
                prop_assert!(len == bytes.len() && len > MAX_DATAGRAM_BYTES);
            }
            Err(other) => return Err(fail(format!("authenticated datagram refused: {other}"))),
        }
    }

    #[test]
    fn sealed_oversized_is_refused_unopened(
        hb in heartbeat(), nonce in any::<[u8; NONCE_BYTES]>(), extra in 1usize..=4096,
    ) {
        let mut bytes = sealer().seal(&hb, KeySlot::Current, nonce).map_err(fail)?;
        bytes.resize(MAX_DATAGRAM_BYTES + extra, 0);
        prop_assert_eq!(sealer().open(&bytes), Err(OpenError::TooLong { len: bytes.len() }));
    }
}

// -------------------------------------------------------------------------------------------
// Raft frames (consensus::codec) and what they carry (consensus::network, log payloads)

fn vote() -> BoxedStrategy<Vote> {
    (num(), num(), any::<bool>())
        .prop_map(|(term, node, committed)| {
            if committed {
                Vote::new_committed(term, node)
            } else {
                Vote::new(term, node)
            }
        })
        .boxed()
}

fn log_id() -> BoxedStrategy<LogId> {
    (num(), num(), num())
        .prop_map(|(term, node_id, index)| {
            LogId::new(
                openraft::impls::leader_id_adv::LeaderId { term, node_id },
                index,
            )
        })
        .boxed()
}

fn membership() -> BoxedStrategy<Membership<u64, BasicNode>> {
    (
        prop::collection::vec(prop::collection::btree_set(1u64..=9, 1..=5), 1..=2),
        prop::collection::btree_set(10u64..=12, 0..=2),
    )
        .prop_map(|(configs, learners)| {
            let nodes: BTreeMap<u64, BasicNode> = configs
                .iter()
                .flatten()
                .chain(learners.iter())
                .map(|&id| (id, BasicNode::new(format!("10.0.0.{id}:7411"))))
                .collect();
            match Membership::new(configs, nodes) {
                Ok(m) => m,
                // Every voter has a node above, so this is a bug of this generator.
                Err(e) => panic!("test generator built an invalid membership: {e}"),
            }
        })
        .boxed()
}

fn snapshot_meta() -> BoxedStrategy<SnapshotMeta> {
    (
        prop::option::of(log_id()),
        prop::option::of(log_id()),
        membership(),
    )
        .prop_map(|(last_log_id, membership_log_id, m)| SnapshotMeta {
            last_log_id,
            last_membership: StoredMembership::new(membership_log_id, m),
        })
        .boxed()
}

/// Short text: mostly ASCII, sometimes any printable Unicode.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[ -~]{0,24}", 1 => "\\PC{0,24}"]
}

fn small_id() -> impl Strategy<Value = u64> + Clone {
    prop_oneof![4 => 1u64..=5, 1 => num()]
}

fn command() -> BoxedStrategy<Command> {
    let promote_reason = prop::sample::select(vec![
        PromoteReason::Startup,
        PromoteReason::Failover,
        PromoteReason::Handover,
        PromoteReason::Switchover,
        PromoteReason::Failback,
        PromoteReason::FailbackUndo,
        PromoteReason::Forced,
    ]);
    let demote_reason = prop::sample::select(vec![
        DemoteReason::LeaseLost,
        DemoteReason::LeadershipLost,
        DemoteReason::Superseded,
        DemoteReason::ResourceFailure,
        DemoteReason::Drained,
        DemoteReason::Shutdown,
        DemoteReason::Switchover,
        DemoteReason::Failback,
        DemoteReason::FailbackUndo,
    ]);
    let step = prop::sample::select(vec![Step::Pausing, Step::Transferring, Step::Promoting]);
    let phase = prop_oneof![
        Just(Phase::Scheduled),
        Just(Phase::Syncing),
        step.clone().prop_map(Phase::CuttingOver),
        Just(Phase::Verifying),
        Just(Phase::AwaitingCommit),
        step.prop_map(Phase::Undoing),
    ];
    let outcome = prop_oneof![
        Just(Outcome::Completed),
        Just(Outcome::Committed),
        Just(Outcome::Undone),
        Just(Outcome::Cancelled),
        text().prop_map(|reason| Outcome::Aborted { reason }),
    ];
    let kind = prop::sample::select(vec![OperationKind::Switchover, OperationKind::Failback]);
    prop_oneof![
        (
            small_id(),
            num(),
            promote_reason,
            prop::option::of(small_id()),
            prop::option::of(small_id()),
            num(),
            num()
        )
            .prop_map(|(node, epoch, reason, previous, home, term, at_unix_ms)| {
                Command::Promote(Promote {
                    node,
                    epoch: Epoch(epoch),
                    reason,
                    previous,
                    home,
                    term: Term(term),
                    at_unix_ms,
                })
            }),
        (small_id(), num(), demote_reason, num(), num()).prop_map(
            |(node, epoch, reason, term, at_unix_ms)| Command::Demote(Demote {
                node,
                epoch: Epoch(epoch),
                reason,
                term: Term(term),
                at_unix_ms,
            })
        ),
        (small_id(), num(), any::<u32>(), num()).prop_map(|(node, epoch, attempt, at_unix_ms)| {
            Command::NoteRestart {
                node,
                epoch: Epoch(epoch),
                attempt,
                at_unix_ms,
            }
        }),
        (any::<bool>(), text(), num()).prop_map(|(on, reason, at_unix_ms)| {
            Command::SetMaintenance {
                on,
                reason,
                at_unix_ms,
            }
        }),
        (small_id(), any::<bool>(), num()).prop_map(|(node, drained, at_unix_ms)| {
            Command::SetDrained {
                node,
                drained,
                at_unix_ms,
            }
        }),
        (
            kind,
            small_id(),
            small_id(),
            prop::option::of(num()),
            any::<bool>(),
            num()
        )
            .prop_map(
                |(kind, from, to, scheduled_at_unix_ms, auto_commit, at_unix_ms)| {
                    Command::BeginOperation {
                        kind,
                        from,
                        to,
                        scheduled_at_unix_ms,
                        auto_commit,
                        at_unix_ms,
                    }
                }
            ),
        (
            small_id(),
            phase.clone(),
            phase,
            prop::option::of(text()),
            num()
        )
            .prop_map(|(id, from_phase, to_phase, reason, at_unix_ms)| {
                Command::AdvanceOperation {
                    id,
                    from_phase,
                    to_phase,
                    reason,
                    at_unix_ms,
                }
            }),
        (small_id(), outcome, num()).prop_map(|(id, outcome, at_unix_ms)| {
            Command::EndOperation {
                id,
                outcome,
                at_unix_ms,
            }
        }),
        (
            small_id(),
            0u64..5,
            prop_oneof![
                Just(quorate::types::HookKind::Snapshot),
                Just(quorate::types::HookKind::Verify),
                Just(quorate::types::HookKind::Promote)
            ],
            any::<bool>(),
            num(),
            text(),
            num()
        )
            .prop_map(|(id, node, action, ok, duration_ms, detail, at_unix_ms)| {
                Command::RecordOperationData {
                    id,
                    node,
                    action,
                    ok,
                    duration_ms,
                    detail,
                    at_unix_ms,
                }
            }),
    ]
    .boxed()
}

/// KV keys: mostly valid ones on a small alphabet (so puts hit the same keys), some arbitrary.
fn kv_key() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-c]{1,2}(/[a-c.]{1,2}){0,2}", 1 => "\\PC{0,12}"]
}

fn kv_command() -> BoxedStrategy<KvCommand> {
    let condition = (
        prop::option::of(prop_oneof![0u64..=8, num()]),
        prop::option::of(bytes_up_to(8)),
        prop::option::of(prop_oneof![0u64..=4, num()]),
    )
        .prop_map(|(if_mod_revision, if_value, if_epoch)| Condition {
            if_mod_revision,
            if_value,
            if_epoch: if_epoch.map(Epoch),
        })
        .boxed();
    prop_oneof![
        3 => (kv_key(), bytes_up_to(48), condition.clone()).prop_map(|(key, value, condition)| {
            KvCommand::Put { key, value, condition }
        }),
        1 => (kv_key(), condition).prop_map(|(key, condition)| KvCommand::Delete { key, condition }),
    ]
        .boxed()
}

fn kv_limits() -> BoxedStrategy<KvLimits> {
    (
        prop_oneof![1usize..=MAX_KEY_BYTES_CEILING, any::<usize>()],
        prop_oneof![1usize..=MAX_VALUE_BYTES_CEILING, any::<usize>()],
        prop_oneof![1usize..=16, any::<usize>()],
    )
        .prop_map(|(max_key_bytes, max_value_bytes, max_keys)| KvLimits {
            max_key_bytes,
            max_value_bytes,
            max_keys,
            max_total_bytes: quorate::kv::MAX_KV_TOTAL_BYTES,
        })
        .boxed()
}

fn app_request() -> BoxedStrategy<AppRequest> {
    prop_oneof![
        3 => kv_command().prop_map(AppRequest::Kv),
        2 => command().prop_map(AppRequest::Cluster),
        1 => kv_limits().prop_map(AppRequest::SetKvLimits),
    ]
    .boxed()
}

fn entry() -> BoxedStrategy<Entry> {
    let payload = prop_oneof![
        1 => Just(EntryPayload::Blank),
        4 => app_request().prop_map(|r| EntryPayload::Normal(Request(r))),
        1 => membership().prop_map(EntryPayload::Membership),
    ];
    (log_id(), payload)
        .prop_map(|(log_id, payload)| Entry { log_id, payload })
        .boxed()
}

/// Largest snapshot chunk a generated request carries (frames stay one Noise message).
const MAX_GENERATED_CHUNK: usize = 512;

fn rpc_request() -> BoxedStrategy<RpcRequest> {
    prop_oneof![
        (num(), num(), num()).prop_map(|(cluster_id, from, to)| RpcRequest::Hello {
            cluster_id,
            from,
            to
        }),
        (
            vote(),
            prop::option::of(log_id()),
            prop::collection::vec(entry(), 0..4),
            prop::option::of(log_id())
        )
            .prop_map(|(vote, prev_log_id, entries, leader_commit)| {
                RpcRequest::Append(AppendEntriesRequest {
                    vote,
                    prev_log_id,
                    entries,
                    leader_commit,
                })
            }),
        (
            vote(),
            prop::option::of(log_id()),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(vote, last, transfer, pre)| {
                let mut r = VoteRequest::new(vote, last);
                r.leadership_transfer = transfer;
                if pre {
                    RpcRequest::PreVote(r)
                } else {
                    RpcRequest::Vote(r)
                }
            }),
        (vote(), num(), prop::option::of(log_id())).prop_map(|(v, to, last)| {
            RpcRequest::TransferLeader(TransferLeaderRequest::new(v, to, last))
        }),
        (num(), num(), bytes_up_to(MAX_GENERATED_CHUNK)).prop_map(|(offset, total, data)| {
            RpcRequest::SnapshotChunk {
                offset,
                total,
                data,
            }
        }),
        (vote(), snapshot_meta()).prop_map(|(vote, meta)| RpcRequest::SnapshotDone { vote, meta }),
    ]
    .boxed()
}

fn rpc_response() -> BoxedStrategy<RpcResponse> {
    let append = prop_oneof![
        LazyJust::new(|| AppendEntriesResponse::Success),
        prop::option::of(log_id()).prop_map(AppendEntriesResponse::PartialSuccess),
        LazyJust::new(|| AppendEntriesResponse::Conflict),
        vote().prop_map(AppendEntriesResponse::HigherVote),
    ];
    let transfer = prop_oneof![
        LazyJust::new(|| Ok(())),
        (vote(), vote()).prop_map(|(expected, actual)| Err(TransferLeaderError::VoteChanged {
            expected,
            actual
        })),
        (prop::option::of(log_id()), prop::option::of(log_id())).prop_map(
            |(expected, actual)| Err(TransferLeaderError::LogNotFlushed { expected, actual })
        ),
    ];
    prop_oneof![
        LazyJust::new(|| RpcResponse::HelloOk),
        append.prop_map(RpcResponse::Append),
        (vote(), prop::option::of(log_id()), any::<bool>())
            .prop_map(|(v, last, granted)| RpcResponse::Vote(VoteResponse::new(v, last, granted))),
        transfer.prop_map(RpcResponse::TransferLeader),
        LazyJust::new(|| RpcResponse::ChunkOk),
        vote().prop_map(|v| RpcResponse::Snapshot(SnapshotResponse::new(v))),
        text().prop_map(RpcResponse::Refused),
    ]
    .boxed()
}

fn encoded_frame<T: Serialize + Debug>(value: &T) -> Result<Vec<u8>, TestCaseError> {
    codec::encode_frame(value).map_err(|e| fail(format!("cannot encode {value:?}: {e}")))
}

fn announced_len(frame: &[u8]) -> Option<usize> {
    let prefix: [u8; LEN_PREFIX_BYTES] = frame.get(..LEN_PREFIX_BYTES)?.try_into().ok()?;
    Some(u32::from_be_bytes(prefix) as usize)
}

/// Encodes `value` as a frame, decodes it (frame body, and as a stream with a clean end
/// after it) and checks the result re-encodes to the very same bytes.
fn frame_round_trip<T: Serialize + DeserializeOwned + Debug>(
    value: &T,
) -> Result<(), TestCaseError> {
    let frame = encoded_frame(value)?;
    prop_assert_eq!(announced_len(&frame), Some(frame.len() - LEN_PREFIX_BYTES));
    prop_assert_eq!(frame[LEN_PREFIX_BYTES], codec::WIRE_VERSION);
    let body: T =
        codec::decode_frame_body(&frame[LEN_PREFIX_BYTES..]).map_err(|e| fail(format!("{e}")))?;
    prop_assert_eq!(&encoded_frame(&body)?, &frame);
    prop_assert_eq!(format!("{body:?}"), format!("{value:?}"));
    let mut stream = &frame[..];
    let first: Option<T> =
        block_on(codec::read_frame(&mut stream)).map_err(|e| fail(format!("{e}")))?;
    let Some(first) = first else {
        return Err(fail("a complete frame read as end of stream"));
    };
    prop_assert_eq!(&encoded_frame(&first)?, &frame);
    let end: Option<T> =
        block_on(codec::read_frame(&mut stream)).map_err(|e| fail(format!("{e}")))?;
    prop_assert!(end.is_none(), "a second frame after the only one");
    Ok(())
}

/// A decoded value re-encodes, and that encoding decodes to the same encoding again.
fn stable<T: Serialize + DeserializeOwned + Debug>(value: &T) -> Result<(), TestCaseError> {
    let once = codec::to_bytes(value)
        .map_err(|e| fail(format!("decoded value {value:?} does not re-encode: {e}")))?;
    let back: T = codec::from_bytes(&once)
        .map_err(|e| fail(format!("re-encoding of {value:?} does not decode: {e}")))?;
    let twice = codec::to_bytes(&back).map_err(fail)?;
    prop_assert_eq!(once, twice);
    Ok(())
}

/// The part of a frame after its length (`version | body`): `Ok` values are stable, errors
/// match the input.
fn check_frame_body<T: Serialize + DeserializeOwned + Debug>(
    buf: &[u8],
) -> Result<(), TestCaseError> {
    match codec::decode_frame_body::<T>(buf) {
        Ok(v) => stable(&v)?,
        Err(CodecError::EmptyFrame) => prop_assert!(buf.is_empty()),
        Err(CodecError::UnsupportedVersion(v)) => {
            prop_assert!(buf.first() == Some(&v) && v != codec::WIRE_VERSION);
        }
        Err(CodecError::Decode(_)) => prop_assert_eq!(buf.first(), Some(&codec::WIRE_VERSION)),
        Err(other) => return Err(fail(format!("unexpected error kind: {other}"))),
    }
    Ok(())
}

/// A byte stream as the plaintext reader sees it: one frame or a typed error.
fn check_read_frame<T: Serialize + DeserializeOwned + Debug>(
    bytes: &[u8],
) -> Result<(), TestCaseError> {
    let mut stream = bytes;
    let res = block_on(codec::read_frame::<_, T>(&mut stream));
    let announced = announced_len(bytes);
    match res {
        // Only an empty stream is a clean end; one ending inside the length is an error.
        Ok(None) => prop_assert!(bytes.is_empty()),
        Ok(Some(v)) => {
            let len = announced.ok_or_else(|| fail("frame without a length"))?;
            prop_assert!(LEN_PREFIX_BYTES + len <= bytes.len());
            stable(&v)?;
        }
        Err(CodecError::FrameTooLarge { len, max }) => {
            prop_assert!(Some(len) == announced && len > MAX_FRAME_BYTES && max == MAX_FRAME_BYTES);
        }
        Err(CodecError::EmptyFrame) => prop_assert_eq!(announced, Some(0)),
        Err(CodecError::Io(e)) => {
            prop_assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            match announced {
                None => prop_assert!(!bytes.is_empty(), "end of stream error on an empty stream"),
                Some(len) => prop_assert!(bytes.len() < LEN_PREFIX_BYTES + len),
            }
        }
        Err(CodecError::UnsupportedVersion(_) | CodecError::Decode(_)) => {
            let len = announced.ok_or_else(|| fail("body error before a length"))?;
            prop_assert!(LEN_PREFIX_BYTES + len <= bytes.len());
        }
        Err(other) => return Err(fail(format!("unexpected error kind: {other}"))),
    }
    Ok(())
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn frame_request_round_trip(req in rpc_request()) {
        frame_round_trip(&req)?;
    }

    #[test]
    fn frame_response_round_trip(resp in rpc_response()) {
        frame_round_trip(&resp)?;
    }

    #[test]
    fn frame_stream_of_several_frames(reqs in prop::collection::vec(rpc_request(), 1..4)) {
        let mut stream = Vec::new();
        for r in &reqs {
            stream.extend_from_slice(&encoded_frame(r)?);
        }
        let mut rest = &stream[..];
        for r in &reqs {
            let got: Option<RpcRequest> =
                block_on(codec::read_frame(&mut rest)).map_err(|e| fail(format!("{e}")))?;
            let got = got.ok_or_else(|| fail("stream ended early"))?;
            prop_assert_eq!(encoded_frame(&got)?, encoded_frame(r)?);
        }
        let end: Option<RpcRequest> =
            block_on(codec::read_frame(&mut rest)).map_err(|e| fail(format!("{e}")))?;
        prop_assert!(end.is_none());
    }

    #[test]
    fn frame_garbage_bodies(body in bytes_up_to(600), versioned in any::<bool>()) {
        let mut buf = body;
        if versioned {
            buf.insert(0, codec::WIRE_VERSION);
        }
        check_frame_body::<RpcRequest>(&buf)?;
        check_frame_body::<RpcResponse>(&buf)?;
    }

    #[test]
    fn frame_damaged_requests(req in rpc_request(), damage in mutations()) {
        let frame = encoded_frame(&req)?;
        let damaged_body = mutate(frame[LEN_PREFIX_BYTES..].to_vec(), &damage);
        check_frame_body::<RpcRequest>(&damaged_body)?;
        // And as a stream, with the length prefix damaged as well.
        check_read_frame::<RpcRequest>(&mutate(frame, &damage))?;
    }

    #[test]
    fn frame_damaged_responses(resp in rpc_response(), damage in mutations()) {
        let frame = encoded_frame(&resp)?;
        check_frame_body::<RpcResponse>(&mutate(frame[LEN_PREFIX_BYTES..].to_vec(), &damage))?;
        check_read_frame::<RpcResponse>(&mutate(frame, &damage))?;
    }

    #[test]
    fn frame_garbage_streams(bytes in bytes_up_to(600), len in prop::option::of(0u32..700)) {
        // Random bytes, or random bytes behind a plausible length so the body is parsed.
        let mut stream = Vec::new();
        if let Some(len) = len {
            stream.extend_from_slice(&len.to_be_bytes());
            stream.push(codec::WIRE_VERSION);
        }
        stream.extend_from_slice(&bytes);
        check_read_frame::<RpcRequest>(&stream)?;
        check_read_frame::<RpcResponse>(&stream)?;
    }

    #[test]
    fn frame_oversized_length_is_refused_before_reading(
        len in (MAX_FRAME_BYTES as u32 + 1)..=u32::MAX, tail in bytes_up_to(16),
    ) {
        // Only a few bytes follow the huge length: a reader that allocated and read first
        // would report the early end instead.
        let mut stream = len.to_be_bytes().to_vec();
        stream.push(codec::WIRE_VERSION);
        stream.extend_from_slice(&tail);
        let mut r = &stream[..];
        match block_on(codec::read_frame::<_, RpcRequest>(&mut r)) {
            Err(CodecError::FrameTooLarge { len: got, max }) => {
                prop_assert_eq!(got, len as usize);
                prop_assert_eq!(max, MAX_FRAME_BYTES);
            }
            other => return Err(fail(format!("oversized frame not refused: {other:?}"))),
        }
    }

    #[test]
    fn frame_length_check_is_exact(len in prop_oneof![0usize..=16, (MAX_FRAME_BYTES - 16)..=(MAX_FRAME_BYTES + 16), any::<usize>()]) {
        match codec::check_frame_len(len) {
            Ok(()) => prop_assert!((1..=MAX_FRAME_BYTES).contains(&len)),
            Err(CodecError::EmptyFrame) => prop_assert_eq!(len, 0),
            Err(CodecError::FrameTooLarge { len: l, max }) => {
                prop_assert!(l == len && len > MAX_FRAME_BYTES && max == MAX_FRAME_BYTES);
            }
            Err(other) => return Err(fail(format!("unexpected error kind: {other}"))),
        }
    }
}

// Stored log payloads: what `log_store` decodes for every entry read from disk.

type LogPayload = EntryPayload<Request, u64, BasicNode>;

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn log_payload_round_trip(e in entry()) {
        let bytes = codec::to_bytes(&e.payload).map_err(fail)?;
        let back: LogPayload = codec::from_bytes(&bytes).map_err(fail)?;
        prop_assert_eq!(back, e.payload);
    }

    #[test]
    fn log_payload_garbage(bytes in bytes_up_to(400)) {
        if let Ok(p) = codec::from_bytes::<LogPayload>(&bytes) {
            stable(&p)?;
        }
    }

    #[test]
    fn log_payload_damaged(e in entry(), damage in mutations()) {
        let bytes = mutate(codec::to_bytes(&e.payload).map_err(fail)?, &damage);
        match codec::from_bytes::<LogPayload>(&bytes) {
            Ok(p) => stable(&p)?,
            Err(CodecError::Decode(_)) => {}
            Err(other) => return Err(fail(format!("unexpected error kind: {other}"))),
        }
    }
}

// -------------------------------------------------------------------------------------------
// Raft frames inside the Noise channel (consensus::secure), and the handshake

const CLUSTER_ID: u64 = 0x5eed;

/// An in-memory byte source that the test refills; empty reads as end of stream.
#[derive(Clone, Default)]
struct Feed(std::rc::Rc<std::cell::RefCell<std::collections::VecDeque<u8>>>);

impl Feed {
    fn set(&self, bytes: &[u8]) {
        let mut q = self.0.borrow_mut();
        q.clear();
        q.extend(bytes.iter().copied());
    }
}

impl tokio::io::AsyncRead for Feed {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut q = self.0.borrow_mut();
        let n = buf.remaining().min(q.len());
        let chunk: Vec<u8> = q.drain(..n).collect();
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

/// Runs the real handshake (initiator and responder) in memory; returns both sessions.
fn secure_pair(
    psk: &[u8; 32],
    keys: &RaftKeys,
) -> Result<(snow::TransportState, snow::TransportState), TestCaseError> {
    block_on(async {
        let (a, b) = tokio::io::duplex(1024);
        let (mut ar, mut aw) = tokio::io::split(a);
        let (mut br, mut bw) = tokio::io::split(b);
        let (client, server) = futures::join!(
            secure::initiate(&mut ar, &mut aw, psk, CLUSTER_ID),
            secure::respond(&mut br, &mut bw, keys, CLUSTER_ID)
        );
        let client = client.map_err(|e| fail(format!("initiator: {e}")))?;
        let (server, _slot) = server.map_err(|e| fail(format!("responder: {e}")))?;
        Ok((client, server))
    })
}

/// One Noise transport message as it goes on the wire (`len: u16 BE | message`).
fn seal_message(client: &mut snow::TransportState, plain: &[u8]) -> Result<Vec<u8>, TestCaseError> {
    let mut out = vec![0u8; 2 + plain.len() + NOISE_TAG_BYTES];
    let n = client
        .write_message(plain, &mut out[2..])
        .map_err(|e| fail(format!("sealing for the test failed: {e}")))?;
    let len = u16::try_from(n).map_err(|_| fail("sealed message too long for the test"))?;
    out[..2].copy_from_slice(&len.to_be_bytes());
    out.truncate(2 + n);
    Ok(out)
}

/// What one step of a secure connection receives.
#[derive(Debug)]
enum SecureStep {
    /// Bytes no key holder made.
    Garbage(Vec<u8>),
    /// Arbitrary plaintext (1..=MAX_CHUNK_PLAINTEXT_BYTES) sealed by the peer: a key holder
    /// sending something that is not a frame, or a frame with a forged length.
    ForgedPlaintext(Vec<u8>),
    /// A genuine frame, damaged on the way or not.
    Frame(Box<RpcRequest>, Vec<Mutation>),
}

fn secure_step() -> impl Strategy<Value = SecureStep> {
    let forged_len = prop_oneof![
        0u32..=64,
        (MAX_FRAME_BYTES as u32 - 4)..=(MAX_FRAME_BYTES as u32 + 4),
        any::<u32>()
    ];
    prop_oneof![
        2 => bytes_up_to(300).prop_map(SecureStep::Garbage),
        1 => prop::collection::vec(any::<u8>(), 1..=200).prop_map(SecureStep::ForgedPlaintext),
        1 => (forged_len, prop::option::of(Just(codec::WIRE_VERSION)), bytes_up_to(100))
            .prop_map(|(len, version, rest)| {
                let mut plain = len.to_be_bytes().to_vec();
                plain.extend(version);
                plain.extend_from_slice(&rest);
                SecureStep::ForgedPlaintext(plain)
            }),
        3 => (rpc_request(), prop::collection::vec(mutation(), 0..=MAX_MUTATIONS))
            .prop_map(|(r, m)| SecureStep::Frame(Box::new(r), m)),
    ]
}

type ServerConn = FrameConn<Feed, tokio::io::Sink>;

/// Expected result of a server reading `plain` as the whole of one authenticated message.
fn check_forged(
    plain: &[u8],
    got: Result<Option<RpcRequest>, CodecError>,
) -> Result<(), TestCaseError> {
    let announced = announced_len(plain);
    let body_len = plain.len().checked_sub(LEN_PREFIX_BYTES);
    match got {
        Ok(None) => return Err(fail("an authenticated message read as end of stream")),
        Ok(Some(v)) => {
            prop_assert_eq!(announced, body_len);
            stable(&v)?;
        }
        Err(CodecError::Channel(_)) => {
            // Too short for a length, or more bytes than the length announced.
            let too_long = match (announced, body_len) {
                (Some(len), Some(body)) => body > len,
                _ => true,
            };
            prop_assert!(
                too_long,
                "channel error for a message of the announced length"
            );
        }
        Err(CodecError::FrameTooLarge { len, .. }) => {
            prop_assert!(Some(len) == announced && len > MAX_FRAME_BYTES);
        }
        Err(CodecError::EmptyFrame) => prop_assert_eq!(announced, Some(0)),
        Err(CodecError::Io(e)) => {
            // The frame announced more than this message, and nothing followed.
            let len = announced.ok_or_else(|| fail(format!("io error {e} without a length")))?;
            prop_assert!(
                e.kind() == io::ErrorKind::UnexpectedEof && body_len.is_some_and(|b| b < len)
            );
        }
        Err(CodecError::UnsupportedVersion(_) | CodecError::Decode(_)) => {
            prop_assert_eq!(announced, body_len);
        }
        Err(other) => return Err(fail(format!("unexpected error kind: {other}"))),
    }
    Ok(())
}

fn recv(server: &mut ServerConn) -> Result<Option<RpcRequest>, CodecError> {
    block_on(server.recv::<RpcRequest>())
}

fn run_secure_step(
    client: &mut snow::TransportState,
    server: &mut ServerConn,
    feed: &Feed,
    step: &SecureStep,
) -> Result<(), TestCaseError> {
    match step {
        SecureStep::Garbage(bytes) => {
            feed.set(bytes);
            let got = recv(server);
            prop_assert!(
                !matches!(got, Ok(Some(_))),
                "garbage read as a frame: {:?}",
                got
            );
        }
        SecureStep::ForgedPlaintext(plain) => {
            feed.set(&seal_message(client, plain)?);
            check_forged(plain, recv(server))?;
        }
        SecureStep::Frame(req, damage) => {
            let frame = encoded_frame(req.as_ref())?;
            prop_assert!(
                frame.len() <= MAX_CHUNK_PLAINTEXT_BYTES,
                "generator made a multi-message frame"
            );
            let genuine = seal_message(client, &frame)?;
            let damaged = mutate(genuine.clone(), damage);
            feed.set(&damaged);
            match recv(server) {
                // The message itself arrived intact (the damage hit bytes after it).
                Ok(Some(got)) => {
                    prop_assert!(damaged.starts_with(&genuine), "damaged message accepted");
                    prop_assert_eq!(encoded_frame(&got)?, frame);
                    return Ok(());
                }
                Ok(None) => prop_assert!(damaged.is_empty()),
                Err(_) => prop_assert!(damaged != genuine, "genuine frame refused"),
            }
            // A message that was not read, or refused, does not move the session's nonce: the
            // genuine one still goes through, and the two sides stay in step.
            feed.set(&genuine);
            match recv(server) {
                Ok(Some(got)) => prop_assert_eq!(encoded_frame(&got)?, frame),
                other => {
                    return Err(fail(format!(
                        "genuine frame refused after a damaged copy: {other:?}"
                    )))
                }
            }
        }
    }
    Ok(())
}

/// Steps per secure-channel case.
const MAX_SECURE_STEPS: usize = 4;

/// Both ends of one encrypted connection: the peer's raw session, and the node's reader.
struct SecureSession {
    client: snow::TransportState,
    server: ServerConn,
    feed: Feed,
}

impl SecureSession {
    fn new() -> Result<SecureSession, TestCaseError> {
        let keys = RaftKeys::new(K_CURRENT, None);
        let (client, server) = secure_pair(&K_CURRENT, &keys)?;
        let feed = Feed::default();
        let server = FrameConn::secure(feed.clone(), tokio::io::sink(), server);
        Ok(SecureSession {
            client,
            server,
            feed,
        })
    }
}

thread_local! {
    static SESSION: std::cell::RefCell<Option<SecureSession>> = const { std::cell::RefCell::new(None) };
}

/// The initiator's first handshake message under `psk` (made once: each costs an X25519 key
/// generation, and the responder keeps no state between connections).
fn first_message(psk: &[u8; 32]) -> Result<Vec<u8>, TestCaseError> {
    let mut first = Vec::new();
    let mut nothing: &[u8] = &[];
    // The initiator's read of the answer then ends at the end of the empty input.
    match block_on(secure::initiate(&mut nothing, &mut first, psk, CLUSTER_ID)) {
        Err(SecureError::ClosedInHandshake) => Ok(first),
        other => Err(fail(format!(
            "initiator without an answer: {:?}",
            other.err()
        ))),
    }
}

struct FirstMessages {
    current: Vec<u8>,
    previous: Vec<u8>,
    stranger: Vec<u8>,
}

thread_local! {
    static FIRST_MESSAGES: std::cell::RefCell<Option<std::rc::Rc<FirstMessages>>> = const { std::cell::RefCell::new(None) };
}

fn first_messages() -> Result<std::rc::Rc<FirstMessages>, TestCaseError> {
    if let Some(m) = FIRST_MESSAGES.with(|m| m.borrow().clone()) {
        return Ok(m);
    }
    let m = std::rc::Rc::new(FirstMessages {
        current: first_message(&K_CURRENT)?,
        previous: first_message(&K_PREVIOUS)?,
        stranger: first_message(&K_STRANGER)?,
    });
    FIRST_MESSAGES.with(|slot| *slot.borrow_mut() = Some(m.clone()));
    Ok(m)
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn secure_frames(steps in prop::collection::vec(secure_step(), 1..=MAX_SECURE_STEPS)) {
        // One session serves the cases of this thread; a failed case drops it (it may be out
        // of step), and the next case makes a new one.
        let mut session = match SESSION.with(|s| s.borrow_mut().take()) {
            Some(session) => session,
            None => SecureSession::new()?,
        };
        for step in &steps {
            run_secure_step(&mut session.client, &mut session.server, &session.feed, step)?;
        }
        // Still in step after everything: one more genuine frame is read.
        let hello = RpcRequest::Hello { cluster_id: CLUSTER_ID, from: 1, to: 2 };
        let frame = encoded_frame(&hello)?;
        session.feed.set(&seal_message(&mut session.client, &frame)?);
        match recv(&mut session.server) {
            Ok(Some(got)) => prop_assert_eq!(encoded_frame(&got)?, frame),
            other => return Err(fail(format!("final genuine frame not read: {other:?}"))),
        }
        SESSION.with(|s| *s.borrow_mut() = Some(session));
    }
}

proptest! {
    #![proptest_config(handshake_fuzz_config())]

    #[test]
    fn handshake_garbage_is_refused(bytes in bytes_up_to(300), plausible in any::<bool>()) {
        // As the responder's first read, and as the initiator's answer.
        let mut input = bytes;
        if plausible {
            // A length a handshake message could have, so the body reaches Noise.
            let len = u16::try_from(input.len().clamp(48, 128)).unwrap_or(48);
            input.splice(0..0, len.to_be_bytes());
        }
        let keys = RaftKeys::new(K_CURRENT, Some(K_PREVIOUS));
        let mut sink = Vec::new();
        let res = block_on(secure::respond(&mut &input[..], &mut sink, &keys, CLUSTER_ID));
        prop_assert!(res.is_err(), "garbage handshake accepted");
        prop_assert!(sink.is_empty(), "the responder answered a stranger");
        let mut sink = Vec::new();
        let res = block_on(secure::initiate(&mut &input[..], &mut sink, &K_CURRENT, CLUSTER_ID));
        prop_assert!(res.is_err(), "garbage handshake answer accepted");
    }

    #[test]
    fn handshake_damaged_first_message(damage in mutations(), previous in any::<bool>()) {
        let messages = first_messages()?;
        let first = if previous { &messages.previous } else { &messages.current };
        let keys = RaftKeys::new(K_CURRENT, Some(K_PREVIOUS));
        let damaged = mutate(first.clone(), &damage);
        let mut answer = Vec::new();
        let res = block_on(secure::respond(&mut &damaged[..], &mut answer, &keys, CLUSTER_ID));
        if damaged.starts_with(first) {
            // Intact (bytes after the message are the next read's business).
            match res {
                Ok((_, slot)) => prop_assert_eq!(slot, if previous { KeySlot::Previous } else { KeySlot::Current }),
                Err(e) => return Err(fail(format!("genuine handshake refused: {e}"))),
            }
        } else {
            prop_assert!(res.is_err(), "damaged handshake accepted");
            prop_assert!(answer.is_empty(), "the responder answered a damaged handshake");
        }
        // A stranger's genuine first message, damaged the same way or not, is refused.
        for strange in [messages.stranger.clone(), mutate(messages.stranger.clone(), &damage)] {
            let mut answer = Vec::new();
            let res = block_on(secure::respond(&mut &strange[..], &mut answer, &keys, CLUSTER_ID));
            prop_assert!(res.is_err() && answer.is_empty(), "stranger accepted");
        }
    }
}

// -------------------------------------------------------------------------------------------
// Snapshots (consensus::snapshot)

const SNAPSHOT_ORIGIN: &str = "fuzzed snapshot";
/// Snapshot header: magic (4), version (1), crc32 (4), body length (8).
const SNAPSHOT_HEADER_BYTES: usize = 17;
const SNAPSHOT_CRC_AT: usize = 5;
const SNAPSHOT_LEN_AT: usize = 9;
/// Most requests applied to build one generated snapshot state.
const MAX_STATE_REQUESTS: usize = 24;

/// Aims a generated cluster command at the current state (next epoch, current primary,
/// current operation), so that a share of them is accepted and the states get interesting.
fn aimed(st: &AppState, req: &AppRequest) -> AppRequest {
    let c = &st.cluster;
    let primary = c.primary.as_ref().map(|p| (p.node, p.epoch));
    let mut req = req.clone();
    if let AppRequest::Cluster(cmd) = &mut req {
        match cmd {
            Command::Promote(p) => {
                p.epoch = c.epoch.saturating_next();
                p.previous = c.last_holder.as_ref().map(|h| h.node);
            }
            Command::Demote(Demote { node, epoch, .. })
            | Command::NoteRestart { node, epoch, .. } => {
                if let Some((n, e)) = primary {
                    *node = n;
                    *epoch = e;
                }
            }
            Command::BeginOperation { from, .. } => {
                if let Some((n, _)) = primary {
                    *from = n;
                }
            }
            Command::AdvanceOperation { id, from_phase, .. } => {
                if let Some(op) = &c.operation {
                    *id = op.id;
                    *from_phase = op.phase;
                }
            }
            Command::EndOperation { id, .. } | Command::RecordOperationData { id, .. } => {
                if let Some(op) = &c.operation {
                    *id = op.id;
                }
            }
            Command::SetMaintenance { .. } | Command::SetDrained { .. } => {}
        }
    }
    req
}

fn build_state(reqs: &[(AppRequest, bool)]) -> AppState {
    let mut st = AppState::default();
    for (i, (req, aim)) in reqs.iter().enumerate() {
        let req = if *aim { aimed(&st, req) } else { req.clone() };
        st.apply(&req, i as u64 + 1);
    }
    st
}

fn state_requests() -> impl Strategy<Value = Vec<(AppRequest, bool)>> {
    prop::collection::vec((app_request(), any::<bool>()), 0..=MAX_STATE_REQUESTS)
}

fn encoded_snapshot(body: &SnapshotBody) -> Result<Vec<u8>, TestCaseError> {
    snapshot::encode(body).map_err(fail)
}

/// Rewrites the header's checksum and length for the (damaged) body, so the damage reaches
/// the body decoder instead of being caught by the checksum.
fn reseal_snapshot(bytes: &mut [u8]) {
    if bytes.len() < SNAPSHOT_HEADER_BYTES {
        return;
    }
    let (header, body) = bytes.split_at_mut(SNAPSHOT_HEADER_BYTES);
    header[SNAPSHOT_CRC_AT..SNAPSHOT_LEN_AT].copy_from_slice(&crc32fast::hash(body).to_be_bytes());
    header[SNAPSHOT_LEN_AT..].copy_from_slice(&(body.len() as u64).to_be_bytes());
}

fn check_snapshot(bytes: &[u8]) -> Result<(), TestCaseError> {
    match snapshot::decode(bytes, SNAPSHOT_ORIGIN) {
        Ok(body) => {
            // Whatever is accepted is a state the node can snapshot again, unchanged.
            let again = encoded_snapshot(&body)?;
            match snapshot::decode(&again, SNAPSHOT_ORIGIN) {
                Ok(back) => {
                    prop_assert_eq!(&back.state, &body.state);
                    prop_assert_eq!(&back.meta, &body.meta);
                }
                Err(e) => return Err(fail(format!("re-encoded snapshot refused: {e}"))),
            }
        }
        Err(SnapshotError::Corrupt { path, problem }) => {
            prop_assert_eq!(path.as_str(), SNAPSHOT_ORIGIN);
            prop_assert!(!problem.is_empty());
        }
        // A resealed damage that still decodes to a state breaking an invariant (issue 13:
        // states are validated on decode): refused naming the origin and the invariant.
        Err(SnapshotError::InvalidState { path, source }) => {
            prop_assert_eq!(path.as_str(), SNAPSHOT_ORIGIN);
            prop_assert!(!source.to_string().is_empty());
        }
        Err(other) => return Err(fail(format!("unexpected error kind: {other}"))),
    }
    Ok(())
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn snapshot_round_trip(reqs in state_requests(), meta in snapshot_meta()) {
        let body = SnapshotBody { meta, state: build_state(&reqs) };
        let bytes = encoded_snapshot(&body)?;
        match snapshot::decode(&bytes, SNAPSHOT_ORIGIN) {
            Ok(back) => {
                prop_assert_eq!(&back.state, &body.state);
                prop_assert_eq!(&back.meta, &body.meta);
            }
            Err(e) => return Err(fail(format!("a state apply produced is refused as a snapshot: {e}"))),
        }
    }

    #[test]
    fn snapshot_garbage(bytes in bytes_up_to(400), header in any::<bool>()) {
        let mut bytes = bytes;
        if header && bytes.len() >= SNAPSHOT_HEADER_BYTES {
            bytes[..4].copy_from_slice(b"QRSN");
            bytes[4] = 1;
            reseal_snapshot(&mut bytes);
        }
        check_snapshot(&bytes)?;
    }

    #[test]
    fn snapshot_damaged(
        reqs in state_requests(), meta in snapshot_meta(), damage in mutations(), reseal in any::<bool>(),
    ) {
        let body = SnapshotBody { meta, state: build_state(&reqs) };
        let valid = encoded_snapshot(&body)?;
        let mut bytes = mutate(valid.clone(), &damage);
        if reseal {
            reseal_snapshot(&mut bytes);
        } else if bytes != valid {
            // Without a new checksum, damage is always caught.
            prop_assert!(snapshot::decode(&bytes, SNAPSHOT_ORIGIN).is_err(), "damaged snapshot accepted");
        }
        check_snapshot(&bytes)?;
    }

    #[test]
    fn snapshot_length_must_match_the_body(
        reqs in prop::collection::vec((app_request(), any::<bool>()), 0..4),
        meta in snapshot_meta(),
        claimed in num(),
    ) {
        let body = SnapshotBody { meta, state: build_state(&reqs) };
        let mut bytes = encoded_snapshot(&body)?;
        let real = (bytes.len() - SNAPSHOT_HEADER_BYTES) as u64;
        bytes[SNAPSHOT_LEN_AT..SNAPSHOT_HEADER_BYTES].copy_from_slice(&claimed.to_be_bytes());
        let res = snapshot::decode(&bytes, SNAPSHOT_ORIGIN);
        if claimed == real {
            prop_assert!(res.is_ok());
        } else {
            match res {
                Err(SnapshotError::Corrupt { problem, .. }) => {
                    // A length past the bound is refused as such, before the body is looked at.
                    let why = if claimed > snapshot::MAX_SNAPSHOT_BYTES { "MAX_SNAPSHOT_BYTES" } else { "truncated" };
                    prop_assert!(problem.contains(why), "{}", problem);
                }
                other => return Err(fail(format!("wrong length accepted: {:?}", other.err()))),
            }
        }
    }
}

// -------------------------------------------------------------------------------------------
// Config file (config::Config::from_str_at) and durations (config::parse_duration)

const CONFIG_PATH: &str = "/etc/quorate/quorate.toml";
const CONFIG_EXAMPLES: [&str; 6] = [
    include_str!("../cluster-config/three-node/node1.toml"),
    include_str!("../cluster-config/three-node/node3.toml"),
    include_str!("../cluster-config/five-node/node2.toml"),
    include_str!("../cluster-config/two-node-witness/node3.toml"),
    include_str!("../cluster-config/local/node1.toml"),
    include_str!("../cluster-config/local/node2.toml"),
];

fn parse_config(text: &str) -> Result<Config, quorate::config::ConfigError> {
    Config::from_str_at(text, Path::new(CONFIG_PATH))
}

/// Any text: a config, or problems that each say where, what and how to fix.
fn check_config(text: &str) -> Result<(), TestCaseError> {
    match parse_config(text) {
        Ok(c) => {
            // Validation guarantees: this node is listed exactly once, and is `self_peer`.
            prop_assert_eq!(c.peers.iter().filter(|p| p.id == c.node.id).count(), 1);
            prop_assert_eq!(c.self_peer().id, c.node.id);
        }
        Err(e) => {
            prop_assert!(!e.problems.is_empty(), "rejected without a problem");
            for p in &e.problems {
                prop_assert!(
                    !p.key.is_empty() && !p.message.is_empty() && !p.fix.is_empty(),
                    "{:?}",
                    p
                );
                prop_assert!(
                    p.key != "(internal)",
                    "validation reached an internal error: {}",
                    p
                );
            }
        }
    }
    Ok(())
}

/// One generated cluster seen from one member, rendered as a config file.
#[derive(Clone, Debug)]
struct ClusterSpec {
    name: String,
    /// Distinct member ids; roles[i] is ids[i]'s role.
    ids: Vec<u64>,
    roles: Vec<NodeRole>,
    priorities: Vec<Option<u32>>,
    this: usize,
    port_base: u16,
    links: usize,
    profile: Option<&'static str>,
    data_dir: String,
}

/// Ports per member: raft, api, then one heartbeat port shared by its links.
const PORTS_PER_MEMBER: u16 = 3;

fn cluster_spec() -> impl Strategy<Value = ClusterSpec> {
    // Either a single-node dev cluster, or at least 3 voting members (voters + witnesses,
    // the first always a voter) plus learners.
    let shape = prop_oneof![Just((1usize, 0usize)), (3usize..=5, 0usize..=2),];
    (
        shape,
        "[a-z0-9_-]{1,64}",
        any::<Index>(),
        1024u16..=60_000,
        1usize..=MAX_HEARTBEAT_LINKS,
    )
        .prop_flat_map(|((voting, learners), name, this, port_base, links)| {
            let n = voting + learners;
            (
                Just(name),
                member_ids(n),
                prop::collection::vec(any::<bool>(), voting..=voting),
                prop::collection::vec(prop::option::of(0u32..=1000), n..=n),
                Just((voting, learners, this, port_base, links)),
                prop::option::of(prop::sample::select(vec!["lan", "fast"])),
                "[a-zA-Z0-9_][a-zA-Z0-9_./-]{0,30}",
            )
        })
        .prop_map(
            |(
                name,
                ids,
                witness,
                priorities,
                (voting, learners, this, port_base, links),
                profile,
                data_dir,
            )| {
                let roles = (0..voting + learners)
                    .map(|i| match i {
                        0 => NodeRole::Voter,
                        i if i < voting && witness[i] => NodeRole::Witness,
                        i if i < voting => NodeRole::Voter,
                        _ => NodeRole::Learner,
                    })
                    .collect::<Vec<_>>();
                ClusterSpec {
                    name,
                    this: this.index(ids.len()),
                    ids,
                    roles,
                    priorities,
                    port_base,
                    links,
                    profile,
                    data_dir,
                }
            },
        )
}

/// Largest gap between two generated large node ids.
const MAX_ID_GAP: u64 = 1 << 40;

/// `n` distinct node ids, small ones or large ones, in random order, made distinct by
/// construction (a set that must reach a size would be regenerated, and those rejections
/// end a million-case run). TOML integers are i64: larger ids cannot be written in a config.
fn member_ids(n: usize) -> impl Strategy<Value = Vec<u64>> {
    let small = prop::sample::subsequence((1u64..=10).collect::<Vec<_>>(), n);
    let large = (
        1u64..=(i64::MAX as u64 / 2),
        prop::collection::vec(1u64..=MAX_ID_GAP, n),
    )
        .prop_map(|(start, gaps)| {
            gaps.iter()
                .scan(start, |id, gap| {
                    let this = *id;
                    *id += gap;
                    Some(this)
                })
                .collect::<Vec<_>>()
        });
    prop_oneof![small, large].prop_shuffle()
}

impl ClusterSpec {
    fn port(&self, member: usize, which: u16) -> u16 {
        self.port_base + member as u16 * PORTS_PER_MEMBER + which
    }
    fn raft(&self, m: usize) -> String {
        format!("127.0.0.1:{}", self.port(m, 0))
    }
    fn api(&self, m: usize) -> String {
        format!("127.0.0.1:{}", self.port(m, 1))
    }
    /// Link k of member m: its own loopback address, the member's heartbeat port.
    fn link(&self, m: usize, k: usize) -> String {
        format!("127.0.0.{}:{}", k + 1, self.port(m, 2))
    }

    fn render(&self) -> String {
        let mut t = format!(
            "cluster = \"{}\"\ndata_dir = \"{}\"\n",
            self.name, self.data_dir
        );
        if let Some(p) = self.profile {
            t.push_str(&format!("profile = \"{p}\"\n"));
        }
        let me = self.this;
        t.push_str(&format!(
            "\n[node]\nid = {}\nrole = \"{}\"\n",
            self.ids[me],
            self.roles[me].as_str()
        ));
        if let Some(p) = self.priorities[me] {
            t.push_str(&format!("priority = {p}\n"));
        }
        let heartbeat_bind = if self.links == 1 {
            self.link(me, 0)
        } else {
            format!("0.0.0.0:{}", self.port(me, 2))
        };
        t.push_str(&format!(
            "\n[listen]\nraft = \"{}\"\nheartbeat = \"{heartbeat_bind}\"\napi = \"{}\"\n",
            self.raft(me),
            self.api(me)
        ));
        for (m, id) in self.ids.iter().enumerate() {
            let links: Vec<String> = (0..self.links)
                .map(|k| format!("\"{}\"", self.link(m, k)))
                .collect();
            t.push_str(&format!(
                "\n[[peer]]\nid = {id}\nrole = \"{}\"\nraft = \"{}\"\nheartbeat = [{}]\napi = \"{}\"\n",
                self.roles[m].as_str(),
                self.raft(m),
                links.join(", "),
                self.api(m)
            ));
            if let Some(p) = self.priorities[m] {
                t.push_str(&format!("priority = {p}\n"));
            }
        }
        t
    }
}

/// Keys the config schema knows (and a few it does not), for TOML-shaped garbage.
const CONFIG_KEYS: [&str; 44] = [
    "cluster",
    "data_dir",
    "secret_file",
    "previous_secret_file",
    "profile",
    "preferred_primary",
    "id",
    "role",
    "priority",
    "raft",
    "heartbeat",
    "api",
    "heartbeat_interval",
    "suspect_after",
    "dead_after",
    "raft_heartbeat",
    "election_timeout_min",
    "election_timeout_max",
    "lease",
    "promote",
    "demote",
    "monitor",
    "fence",
    "rejoin",
    "hook_timeout",
    "monitor_interval",
    "failure_threshold",
    "local_restarts",
    "restart_window",
    "fencing",
    "max_lag_on_failover",
    "mode",
    "delay",
    "commit",
    "verify_checks",
    "verify_timeout",
    "token_file",
    "protect_reads",
    "snapshot_every",
    "keep_logs",
    "max_value_bytes",
    "unknown_key",
    "node.id",
    "peer",
];
const CONFIG_TABLES: [&str; 12] = [
    "[node]",
    "[listen]",
    "[[peer]]",
    "[timing]",
    "[resource]",
    "[failback]",
    "[api]",
    "[storage]",
    "[bogus]",
    "[peer]",
    "[[node]]",
    "[node.extra]",
];

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        prop_oneof![0u64..=10, Just(u64::MAX)].prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[0-9]{1,4}(\\.[0-9]{1,3})?(ns|us|ms|s|m|h|x)?".prop_map(|s| format!("\"{s}\"")),
        "(127\\.0\\.0\\.[0-9]|0\\.0\\.0\\.0|::1|\\[::1\\]|[a-z]{1,5}):[0-9]{1,5}"
            .prop_map(|s| format!("\"{s}\"")),
        prop::sample::select(vec![
            "voter",
            "witness",
            "learner",
            "lan",
            "fast",
            "best-effort",
            "required",
            "manual",
            "auto",
            ""
        ])
        .prop_map(|s| format!("\"{s}\"")),
        "[ -~]{0,20}".prop_map(|s| format!("{s:?}")),
        prop::collection::vec("(127\\.0\\.0\\.1|10\\.0\\.0\\.[1-3]):7[0-9]{3}", 0..=6).prop_map(
            |v| format!(
                "[{}]",
                v.iter()
                    .map(|a| format!("\"{a}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        ),
        Just("{ a = 1 }".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
    ]
}

fn toml_line() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (prop::sample::select(CONFIG_KEYS.to_vec()), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        2 => prop::sample::select(CONFIG_TABLES.to_vec()).prop_map(str::to_string),
        1 => Just(String::new()),
        1 => "\\PC{0,30}",
    ]
}

/// Line-level damage to a config text.
#[derive(Clone, Debug)]
enum LineEdit {
    Delete(Index),
    Duplicate(Index),
    Swap(Index, Index),
    Replace(Index, String),
}

fn line_edit() -> impl Strategy<Value = LineEdit> {
    prop_oneof![
        any::<Index>().prop_map(LineEdit::Delete),
        any::<Index>().prop_map(LineEdit::Duplicate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| LineEdit::Swap(a, b)),
        (any::<Index>(), toml_line()).prop_map(|(i, l)| LineEdit::Replace(i, l)),
    ]
}

fn edit_lines(text: &str, edits: &[LineEdit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for e in edits {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match e {
            LineEdit::Delete(i) => {
                lines.remove(i.index(n));
            }
            LineEdit::Duplicate(i) => {
                let at = i.index(n);
                let line = lines[at].clone();
                lines.insert(at, line);
            }
            LineEdit::Swap(a, b) => lines.swap(a.index(n), b.index(n)),
            LineEdit::Replace(i, l) => lines[i.index(n)] = l.clone(),
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn config_generated_clusters_load_as_written(spec in cluster_spec()) {
        let text = spec.render();
        let c = match parse_config(&text) {
            Ok(c) => c,
            Err(e) => return Err(fail(format!("valid generated config refused:\n{e}\n---\n{text}"))),
        };
        prop_assert_eq!(&c.cluster, &spec.name);
        prop_assert_eq!(c.node.id, spec.ids[spec.this]);
        prop_assert_eq!(c.node.role, spec.roles[spec.this]);
        prop_assert_eq!(c.peers.len(), spec.ids.len());
        for (m, p) in c.peers.iter().enumerate() {
            prop_assert_eq!(p.id, spec.ids[m]);
            prop_assert_eq!(p.role, spec.roles[m]);
            prop_assert_eq!(p.raft.to_string(), spec.raft(m));
            prop_assert_eq!(p.api.to_string(), spec.api(m));
            let links: Vec<String> = p.heartbeat.iter().map(|a| a.to_string()).collect();
            let expected: Vec<String> = (0..spec.links).map(|k| spec.link(m, k)).collect();
            prop_assert_eq!(links, expected);
        }
        prop_assert!(c.data_dir.is_absolute(), "data_dir {:?} not resolved", c.data_dir);
    }

    #[test]
    fn config_examples_damaged_by_line(
        which in 0..CONFIG_EXAMPLES.len(),
        edits in prop::collection::vec(line_edit(), 1..=4),
    ) {
        check_config(&edit_lines(CONFIG_EXAMPLES[which], &edits))?;
    }

    #[test]
    fn config_examples_damaged_by_byte(which in 0..CONFIG_EXAMPLES.len(), damage in mutations()) {
        let bytes = mutate(CONFIG_EXAMPLES[which].as_bytes().to_vec(), &damage);
        check_config(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn config_generated_damaged_by_line(
        spec in cluster_spec(), edits in prop::collection::vec(line_edit(), 1..=3),
    ) {
        check_config(&edit_lines(&spec.render(), &edits))?;
    }

    #[test]
    fn config_toml_shaped_garbage(lines in prop::collection::vec(toml_line(), 0..40)) {
        check_config(&lines.join("\n"))?;
    }

    #[test]
    fn config_garbage_text(text in "\\PC{0,400}|[ -~\\n\\r\\t]{0,400}") {
        check_config(&text)?;
    }

    #[test]
    fn config_oversized_is_refused_unparsed(chunk in "[ -~\\n]{1,64}") {
        // Past MAX_CONFIG_BYTES the text is refused as a whole, whatever it holds.
        let repeats = MAX_CONFIG_BYTES as usize / chunk.len() + 1;
        let text = chunk.repeat(repeats);
        match parse_config(&text) {
            Err(e) => {
                prop_assert_eq!(e.problems.len(), 1);
                prop_assert_eq!(e.problems[0].key.as_str(), "(file)");
            }
            Ok(_) => return Err(fail("oversized config accepted")),
        }
    }
}

/// Any text: a duration that prints and parses back to itself, or an error with a reason.
fn check_duration(text: &str) -> Result<(), TestCaseError> {
    match parse_duration(text) {
        Ok(d) => {
            prop_assert!(text.trim().len() <= MAX_DURATION_TEXT_LEN);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        Err(why) => prop_assert!(!why.is_empty()),
    }
    Ok(())
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn duration_round_trip(nanos in num()) {
        let d = Duration::from_nanos(nanos);
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }

    #[test]
    fn duration_garbage(text in "\\PC{0,80}") {
        check_duration(&text)?;
    }

    #[test]
    fn duration_grammar_shaped(text in "( ?[0-9.]{0,22}(ns|us|µs|ms|s|m|h|x|)){0,10} ?") {
        check_duration(&text)?;
    }

    #[test]
    fn duration_oversized_is_refused(d in num(), pad in 1usize..=256) {
        // A valid duration made longer than MAX_DURATION_TEXT_LEN by leading zeros.
        let text = format!("{}{}", "0".repeat(MAX_DURATION_TEXT_LEN + pad), format_duration(Duration::from_nanos(d)));
        match parse_duration(&text) {
            Err(why) => prop_assert!(why.contains("characters long"), "{}", why),
            Ok(d) => return Err(fail(format!("over-long text accepted as {d:?}"))),
        }
    }
}

// -------------------------------------------------------------------------------------------
// HTTP API: control request bodies, KV values, keys, query strings and the client's view of
// the answers

/// Nesting deeper than any body needs; serde_json refuses it (recursion limit) without
/// overflowing the stack.
const DEEP_JSON_NESTING: usize = 100_000;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<u64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        text().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec![
                        "on",
                        "reason",
                        "to",
                        "at_unix_ms",
                        "no_commit",
                        "x"
                    ])
                    .prop_map(str::to_string),
                    text()
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Decodes `body` as every control body; each either decodes to something that survives
/// another JSON round trip, or is an error.
fn check_control_bodies(body: &[u8]) -> Result<(), TestCaseError> {
    fn one<T: Serialize + DeserializeOwned + Default + Debug>(
        body: &[u8],
    ) -> Result<(), TestCaseError> {
        if let Ok(v) = decode_body::<T>(body) {
            let json = serde_json::to_vec(&v).map_err(fail)?;
            match decode_body::<T>(&json) {
                Ok(back) => prop_assert_eq!(format!("{back:?}"), format!("{v:?}")),
                Err(e) => return Err(fail(format!("{v:?} does not decode after encoding: {e}"))),
            }
        }
        Ok(())
    }
    one::<MaintenanceBody>(body)?;
    one::<SwitchoverBody>(body)?;
    one::<FailbackBody>(body)?;
    Ok(())
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn api_control_bodies_round_trip(
        on in any::<bool>(), reason in text(), to in prop::option::of(num()),
        at in prop::option::of(num()), no_commit in any::<bool>(),
    ) {
        let m = MaintenanceBody { on, reason: reason.clone() };
        let got: MaintenanceBody = decode_body(&serde_json::to_vec(&m).map_err(fail)?).map_err(fail)?;
        prop_assert_eq!((got.on, got.reason), (on, reason));
        let s = SwitchoverBody { to, at_unix_ms: at };
        let got: SwitchoverBody = decode_body(&serde_json::to_vec(&s).map_err(fail)?).map_err(fail)?;
        prop_assert_eq!((got.to, got.at_unix_ms), (to, at));
        let f = FailbackBody { no_commit, to };
        let got: FailbackBody = decode_body(&serde_json::to_vec(&f).map_err(fail)?).map_err(fail)?;
        prop_assert_eq!((got.no_commit, got.to), (no_commit, to));
        // An empty body is every field at its default.
        let empty: SwitchoverBody = decode_body(b"").map_err(fail)?;
        prop_assert_eq!((empty.to, empty.at_unix_ms), (None, None));
    }

    #[test]
    fn api_control_bodies_garbage(bytes in bytes_up_to(300)) {
        check_control_bodies(&bytes)?;
    }

    #[test]
    fn api_control_bodies_json_shaped(v in json_value(), damage in prop::collection::vec(mutation(), 0..=2)) {
        let json = serde_json::to_vec(&v).map_err(fail)?;
        check_control_bodies(&mutate(json, &damage))?;
    }

    #[test]
    fn api_control_bodies_deep_nesting_is_refused(open in prop::sample::select(vec![b'[', b'{']), depth in 129usize..=DEEP_JSON_NESTING) {
        let body = vec![open; depth];
        prop_assert!(decode_body::<MaintenanceBody>(&body).is_err());
        prop_assert!(decode_body::<SwitchoverBody>(&body).is_err());
    }

    #[test]
    fn api_kv_value_round_trip(value in bytes_up_to(300)) {
        let (text, encoding) = encode_value_for_json(&value);
        prop_assert_eq!(decode_value_from_json(&text, encoding), Ok(value));
    }

    #[test]
    fn api_kv_value_garbage(
        text in "\\PC{0,80}|[A-Za-z0-9+/=]{0,80}",
        encoding in prop_oneof![Just(ENCODING_UTF8.to_string()), Just(ENCODING_BASE64.to_string()), "\\PC{0,10}"],
    ) {
        match decode_value_from_json(&text, &encoding) {
            Ok(bytes) if encoding == ENCODING_UTF8 => prop_assert_eq!(bytes, text.as_bytes()),
            Ok(bytes) if encoding == ENCODING_BASE64 => {
                // Standard base64 decodes only in its one canonical spelling.
                use base64::Engine as _;
                prop_assert_eq!(base64::engine::general_purpose::STANDARD.encode(bytes), text);
            }
            Ok(bytes) => return Err(fail(format!("unknown encoding {encoding:?} decoded to {bytes:?}"))),
            Err(ValueDecodeError::UnknownEncoding(e)) => {
                prop_assert!(e == encoding && e != ENCODING_UTF8 && e != ENCODING_BASE64);
            }
            Err(ValueDecodeError::InvalidBase64(_)) => prop_assert_eq!(encoding.as_str(), ENCODING_BASE64),
        }
    }

    #[test]
    fn api_kv_keys(key in "\\PC{0,40}|[a./\\x00\\n]{0,12}|[a-c]{1,2}(/[a-c.]{0,2}){0,3}", limit in 1usize..=MAX_KEY_BYTES_CEILING) {
        match check_key(&key, limit) {
            Ok(()) => {
                prop_assert!(!key.is_empty() && key.len() <= limit);
                prop_assert!(!key.chars().any(|c| c.is_ascii_control()) && !key.starts_with('/'));
                prop_assert!(key.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
            }
            Err(KvError::KeyTooLong { len, limit: l }) => prop_assert!(len == key.len() && l == limit && len > limit),
            Err(KvError::BadKey { key: k, reason }) => {
                prop_assert_eq!(&k, &key);
                let fits = match reason {
                    BadKeyReason::Empty => key.is_empty(),
                    BadKeyReason::ControlCharacter => key.chars().any(|c| c.is_ascii_control()),
                    BadKeyReason::LeadingSlash => key.starts_with('/'),
                    BadKeyReason::EmptySegment => key.split('/').any(str::is_empty),
                    BadKeyReason::DotSegment => key.split('/').any(|s| s == "." || s == ".."),
                };
                prop_assert!(fits, "reason {:?} does not fit {:?}", reason, key);
            }
            Err(other) => return Err(fail(format!("unexpected error kind: {other}"))),
        }
    }

    #[test]
    fn api_kv_query_strings(
        pairs in prop::collection::vec((
            prop_oneof![
                prop::sample::select(vec!["if_revision", "if_epoch", "stale", "wait", "timeout", "prefix", "limit", "start_after"]).prop_map(str::to_string),
                "[a-z_%0-9]{0,8}",
            ],
            "[-a-zA-Z0-9_.~%+=]{0,24}",
        ), 0..6),
    ) {
        // The query extractor of GET/PUT/DELETE /v1/kv: any query string decodes or is a 400,
        // and a `timeout` that decodes goes through the duration parser.
        let query = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let Ok(uri) = format!("/v1/kv/a?{query}").parse::<axum::http::Uri>() else {
            return Ok(());
        };
        let _ = axum::extract::Query::<KvQuery>::try_from_uri(&uri);
        for (k, v) in &pairs {
            if k == "timeout" {
                check_duration(v)?;
            }
        }
    }

    #[test]
    fn api_kv_answers_round_trip(
        items in prop::collection::vec((kv_key(), bytes_up_to(40), num(), num(), num()), 0..5),
        more in any::<bool>(), revision in num(),
    ) {
        // What the CLI decodes from GET /v1/kv answers.
        let items: Vec<KvItem> = items.into_iter().map(|(key, value, c, m, v)| {
            let (value, encoding) = encode_value_for_json(&value);
            KvItem { key, value, encoding: encoding.to_string(), create_revision: c, mod_revision: m, version: v }
        }).collect();
        let list = KvList { next_start_after: items.last().map(|i| i.key.clone()), items, more, revision };
        let json = serde_json::to_vec(&list).map_err(fail)?;
        let back: KvList = serde_json::from_slice(&json).map_err(fail)?;
        prop_assert_eq!(&back, &list);
        for item in &list.items {
            let back: KvItem = serde_json::from_slice(&serde_json::to_vec(item).map_err(fail)?).map_err(fail)?;
            prop_assert_eq!(&back, item);
        }
    }

    #[test]
    fn api_kv_answers_garbage(v in json_value(), bytes in bytes_up_to(200)) {
        for body in [serde_json::to_vec(&v).map_err(fail)?, bytes] {
            if let Ok(item) = serde_json::from_slice::<KvItem>(&body) {
                // A decoded item's value is then decoded by the CLI: Ok or a typed error.
                let _ = decode_value_from_json(&item.value, &item.encoding);
            }
            let _ = serde_json::from_slice::<KvList>(&body);
        }
    }
}

// -------------------------------------------------------------------------------------------
// Fixed regressions and fixed cases that random generation reaches only rarely

/// Unit sanity of the harness itself: damage really changes bytes, and the examples load.
#[test]
fn harness_examples_load_and_damage_applies() {
    for (i, text) in CONFIG_EXAMPLES.iter().enumerate() {
        if let Err(e) = parse_config(text) {
            panic!("example config {i} does not load:\n{e}");
        }
    }
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let at = match any::<Index>().new_tree(&mut runner) {
        Ok(tree) => tree.current(),
        Err(e) => panic!("no index from the deterministic runner: {e}"),
    };
    let base = vec![1u8, 2, 3, 4];
    assert_ne!(mutate(base.clone(), &[Mutation::Flip(at, 0xff)]), base);
    let forged = mutate(base.clone(), &[Mutation::ForgedVarint(at, 7)]);
    let i = at.index(base.len());
    assert_eq!(forged[i], VARINT_U64_MARKER);
    assert_eq!(forged[i + 1..i + 9], 7u64.to_le_bytes());
    // A message at the Noise limit still fits the u16 length prefix.
    assert!(NOISE_MAX_MESSAGE_BYTES <= u16::MAX as usize);
}

/// A snapshot whose body forges the length of a string (a key holder, or a corrupted file
/// whose checksum was recomputed): refused as corrupt, without allocating that length.
#[test]
fn snapshot_forged_string_length_is_refused_without_allocating() {
    const KEY: &str = "zzzzzzzzzzzzzzzz";
    for forged in [1u64 << 40, 1 << 62, u64::MAX, 1 << 31, 1 << 20] {
        let mut state = AppState::default();
        state.apply(
            &AppRequest::Kv(KvCommand::Put {
                key: KEY.to_string(),
                value: b"v".to_vec(),
                condition: Condition::default(),
            }),
            1,
        );
        let body = SnapshotBody {
            meta: SnapshotMeta::default(),
            state,
        };
        let mut bytes = match snapshot::encode(&body) {
            Ok(b) => b,
            Err(e) => panic!("cannot encode the test snapshot: {e}"),
        };
        let mut pattern = vec![KEY.len() as u8];
        pattern.extend_from_slice(KEY.as_bytes());
        let Some(at) = bytes.windows(pattern.len()).position(|w| w == pattern) else {
            panic!("the key's length prefix is not in the encoding");
        };
        let mut varint = vec![VARINT_U64_MARKER];
        varint.extend_from_slice(&forged.to_le_bytes());
        bytes.splice(at..at + 1, varint);
        reseal_snapshot(&mut bytes);
        match snapshot::decode(&bytes, SNAPSHOT_ORIGIN) {
            Err(SnapshotError::Corrupt { .. }) => {}
            Err(other) => panic!("forged length {forged}: wrong error kind {other}"),
            Ok(_) => panic!("forged length {forged} accepted"),
        }
    }
}

/// Environment variable naming the folder where [`write_fuzz_seeds`] writes seed corpora.
const SEEDS_ENV: &str = "QUORATE_FUZZ_SEEDS";
/// Seeds written per fuzz target.
const SEEDS_PER_TARGET: usize = 64;

/// Writes valid encodings from these generators as starting corpora for the cargo-fuzz
/// targets in `fuzz/` (one folder per target), so libFuzzer starts from real frames,
/// snapshots and configs instead of searching for the magic bytes and checksums itself:
/// `QUORATE_FUZZ_SEEDS=fuzz/corpus cargo test --test decoder_fuzz write_fuzz_seeds -- --ignored`
#[test]
#[ignore]
fn write_fuzz_seeds() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let Ok(dir) = std::env::var(SEEDS_ENV) else {
        panic!("set {SEEDS_ENV} to the corpus folder, e.g. fuzz/corpus");
    };
    let dir = std::path::PathBuf::from(dir);
    let mut runner = TestRunner::deterministic();
    fn sample<S: Strategy>(runner: &mut TestRunner, s: &S) -> S::Value {
        match s.new_tree(runner) {
            Ok(tree) => tree.current(),
            Err(e) => panic!("generator failed: {e}"),
        }
    }
    let write = |target: &str, i: usize, bytes: &[u8]| {
        let folder = dir.join(target);
        if let Err(e) = std::fs::create_dir_all(&folder) {
            panic!("cannot create {}: {e}", folder.display());
        }
        let path = folder.join(format!("seed-{i:03}"));
        if let Err(e) = std::fs::write(&path, bytes) {
            panic!("cannot write {}: {e}", path.display());
        }
    };
    for i in 0..SEEDS_PER_TARGET {
        let hb = sample(&mut runner, &heartbeat());
        let Ok(plain) = wire::encode(&hb) else {
            panic!("cannot encode {hb:?}");
        };
        write("heartbeat_wire", i, &plain);
        write("heartbeat_sealed", i, &plain);
        let req = sample(&mut runner, &rpc_request());
        let resp = sample(&mut runner, &rpc_response());
        let (Ok(req_frame), Ok(resp_frame)) =
            (codec::encode_frame(&req), codec::encode_frame(&resp))
        else {
            panic!("cannot encode {req:?} / {resp:?}");
        };
        write("raft_frame", i, &[&req_frame[..], &resp_frame[..]].concat());
        write("raft_secure", i, &req_frame);
        let e = sample(&mut runner, &entry());
        let Ok(payload) = codec::to_bytes(&e.payload) else {
            panic!("cannot encode {e:?}");
        };
        write("log_payload", i, &payload);
        let reqs = sample(&mut runner, &state_requests());
        let meta = sample(&mut runner, &snapshot_meta());
        let body = SnapshotBody {
            meta,
            state: build_state(&reqs),
        };
        let Ok(snap) = snapshot::encode(&body) else {
            panic!("cannot encode a snapshot");
        };
        // The target reads its input both as a whole file and as a body behind a header.
        write(
            "snapshot",
            i,
            if i % 2 == 0 {
                &snap
            } else {
                &snap[SNAPSHOT_HEADER_BYTES..]
            },
        );
        let spec = sample(&mut runner, &cluster_spec());
        write("config", i, spec.render().as_bytes());
        let d = sample(&mut runner, &num());
        write(
            "duration",
            i,
            format_duration(Duration::from_nanos(d)).as_bytes(),
        );
        let v = sample(&mut runner, &json_value());
        let Ok(json) = serde_json::to_vec(&v) else {
            panic!("cannot encode {v:?}");
        };
        write("api_bodies", i, &json);
        // A stranger's first messages (the target knows no genuine one but its own), and
        // damage masks for its own: all zero (intact) or one flipped bit.
        let seed = match i % 3 {
            0 => first_messages().map(|m| m.stranger.clone()),
            1 => Ok(vec![0u8; 2 + i]),
            _ => Ok(vec![0, 0, 1 << (i % 8)]),
        };
        match seed {
            Ok(m) => write("raft_handshake", i, &m),
            Err(e) => panic!("no handshake message: {e}"),
        }
    }
    for (i, text) in CONFIG_EXAMPLES.iter().enumerate() {
        write("config", SEEDS_PER_TARGET + i, text.as_bytes());
    }
}
