use super::*;
use crate::types::ServiceRole;
use proptest::prelude::*;

pub(crate) fn sample() -> Heartbeat {
    Heartbeat {
        cluster_id: cluster_id("test"),
        from: 1,
        to: 2,
        incarnation: 0xdead_beef_cafe_f00d,
        seq: 42,
        term: Term(7),
        member_role: NodeRole::Voter,
        raft_state: RaftRoleWire::Leader,
        leader_id: Some(1),
        primary_epoch: Some(Epoch(3)),
        applied_index: LogIndex(1_000_000),
        health: ResourceHealth::Healthy,
        service: Default::default(),
        report_after_loss: None,
        sent_mono_ns: u64::MAX,
        echo: Some(Echo {
            peer_sent_mono_ns: 123_456_789,
            held_ns: 5_000_000,
            incarnation: 99,
        }),
    }
}

fn role() -> impl Strategy<Value = NodeRole> {
    prop_oneof![
        Just(NodeRole::Voter),
        Just(NodeRole::Witness),
        Just(NodeRole::Learner)
    ]
}

fn raft_role() -> impl Strategy<Value = RaftRoleWire> {
    prop_oneof![
        Just(RaftRoleWire::Leader),
        Just(RaftRoleWire::Follower),
        Just(RaftRoleWire::Candidate),
        Just(RaftRoleWire::Learner),
        Just(RaftRoleWire::Shutdown),
    ]
}

fn health() -> impl Strategy<Value = ResourceHealth> {
    prop_oneof![
        Just(ResourceHealth::Unknown),
        Just(ResourceHealth::Healthy),
        Just(ResourceHealth::Unhealthy),
    ]
}

/// Any service report (every field independently present or absent).
pub(crate) fn any_service_report() -> impl Strategy<Value = ServiceReport> {
    (
        proptest::option::of(prop_oneof![
            Just(ServiceRole::Primary),
            Just(ServiceRole::Replica),
            Just(ServiceRole::Stopped)
        ]),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<Option<bool>>(),
    )
        .prop_map(|(role, position, timeline, healthy)| ServiceReport {
            role,
            position,
            timeline,
            healthy,
        })
}

pub(crate) fn arb_heartbeat() -> impl Strategy<Value = Heartbeat> {
    let ids = (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    );
    let state = (
        any::<u64>(),
        role(),
        raft_role(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<u64>(),
        health(),
        any::<u64>(),
        any::<Option<(u64, u64, u64)>>(),
    );
    (ids, state, any_service_report(), any::<Option<u64>>()).prop_map(
        |(
            (cluster_id, from, to, incarnation, seq),
            (term, member_role, raft_state, leader_id, primary_epoch, applied, health, sent, echo),
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
            applied_index: LogIndex(applied),
            health,
            service,
            report_after_loss: after_loss.map(Epoch),
            sent_mono_ns: sent,
            echo: echo.map(|(peer_sent_mono_ns, held_ns, incarnation)| Echo {
                peer_sent_mono_ns,
                held_ns,
                incarnation,
            }),
        },
    )
}

#[test]
fn roundtrip_sample_with_header() {
    let hb = sample();
    let bytes = encode(&hb).unwrap();
    assert_eq!(&bytes[..4], b"QRHB");
    assert_eq!(bytes[4], WIRE_VERSION);
    assert!(bytes.len() <= MAX_DATAGRAM_BYTES);
    assert_eq!(decode(&bytes).unwrap(), hb);
}

#[test]
fn every_truncation_of_a_valid_datagram_fails() {
    let bytes = encode(&sample()).unwrap();
    for len in 0..bytes.len() {
        let res = decode(&bytes[..len]);
        assert!(res.is_err(), "truncated to {len} bytes decoded: {res:?}");
        if len < HEADER_BYTES {
            assert_eq!(res, Err(DecodeError::TooShort { len }));
        }
    }
}

#[test]
fn oversized_rejected_before_parsing() {
    // A valid datagram followed by padding up to one byte past the limit: the length check
    // must fire first (TooLong), not the trailing-bytes check.
    let mut bytes = encode(&sample()).unwrap();
    bytes.resize(MAX_DATAGRAM_BYTES + 1, 0);
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::TooLong {
            len: MAX_DATAGRAM_BYTES + 1
        })
    );
    // At exactly the limit it is parsed, and rejected for the padding.
    bytes.truncate(MAX_DATAGRAM_BYTES);
    assert!(matches!(
        decode(&bytes),
        Err(DecodeError::TrailingBytes { .. })
    ));
}

#[test]
fn header_errors_are_typed() {
    let mut bytes = encode(&sample()).unwrap();
    bytes[0] = b'X';
    assert_eq!(decode(&bytes), Err(DecodeError::BadMagic));
    let mut bytes = encode(&sample()).unwrap();
    bytes[4] = 1;
    assert_eq!(decode(&bytes), Err(DecodeError::UnsupportedVersion(1)));
    let mut bytes = encode(&sample()).unwrap();
    bytes.push(0);
    assert_eq!(decode(&bytes), Err(DecodeError::TrailingBytes { extra: 1 }));
}

#[test]
fn overlong_varint_is_rejected() {
    // `cluster_id` is the first field. Encode a heartbeat whose cluster_id is 5, then replace
    // its one-byte varint by the 3-byte form (0xFB marker + u16 LE) of the same value.
    let mut hb = sample();
    hb.cluster_id = 5;
    let bytes = encode(&hb).unwrap();
    assert_eq!(bytes[HEADER_BYTES], 5);
    let mut long = bytes[..HEADER_BYTES].to_vec();
    long.extend_from_slice(&[0xFB, 5, 0]);
    long.extend_from_slice(&bytes[HEADER_BYTES + 1..]);
    assert_eq!(decode(&long), Err(DecodeError::NonCanonical));
}

#[test]
fn raft_roles_map_one_to_one() {
    use openraft::ServerState as S;
    let all = [
        S::Leader,
        S::Follower,
        S::Candidate,
        S::Learner,
        S::Shutdown,
    ];
    let names: Vec<&str> = all
        .iter()
        .map(|s| RaftRoleWire::from_server_state(*s).as_str())
        .collect();
    assert_eq!(
        names,
        ["leader", "follower", "candidate", "learner", "shutdown"]
    );
    assert_eq!(
        RaftRoleWire::default(),
        RaftRoleWire::from_server_state(S::default())
    );
}

#[test]
fn cluster_id_is_fnv1a() {
    // Published FNV-1a 64 test vectors: the id must never change between builds.
    assert_eq!(cluster_id(""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(cluster_id("a"), 0xaf63_dc4c_8601_ec8c);
    assert_ne!(cluster_id("prod"), cluster_id("staging"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn roundtrip_arbitrary(hb in arb_heartbeat()) {
        let bytes = encode(&hb).unwrap();
        prop_assert!(bytes.len() <= MAX_DATAGRAM_BYTES);
        prop_assert_eq!(decode(&bytes).unwrap(), hb);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
        if let Ok(hb) = decode(&bytes) {
            // Only a canonical encoding may decode.
            prop_assert_eq!(encode(&hb).unwrap(), bytes);
        }
    }

    #[test]
    fn arbitrary_payload_after_valid_header(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        // Random payloads get past the header checks and exercise the bincode parser.
        let mut bytes = MAGIC.to_vec();
        bytes.push(WIRE_VERSION);
        bytes.extend_from_slice(&tail);
        if let Ok(hb) = decode(&bytes) {
            prop_assert_eq!(encode(&hb).unwrap(), bytes);
        }
    }

    #[test]
    fn single_byte_corruption_never_yields_a_different_valid_reading(
        hb in arb_heartbeat(), pos in any::<prop::sample::Index>(), xor in 1u8..=255,
    ) {
        let mut bytes = encode(&hb).unwrap();
        let i = pos.index(bytes.len());
        bytes[i] ^= xor;
        // Corruption can produce another valid heartbeat (the AEAD layer will catch that);
        // it must then be exactly the one those bytes canonically encode.
        if let Ok(other) = decode(&bytes) {
            prop_assert_eq!(encode(&other).unwrap(), bytes);
        }
    }

    #[test]
    fn truncation_of_arbitrary_heartbeat_fails(hb in arb_heartbeat(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&hb).unwrap();
        let len = cut.index(bytes.len());
        prop_assert!(decode(&bytes[..len]).is_err());
    }
}

/// The largest heartbeat (every optional field present, every number at its widest varint)
/// leaves room for the seal inside one datagram, so a full service report never makes a
/// heartbeat too large to send. Run with `--nocapture` for the sizes.
#[test]
fn the_largest_heartbeat_with_a_service_report_fits_with_its_seal() {
    let mut hb = sample();
    hb.cluster_id = u64::MAX;
    hb.from = u64::MAX;
    hb.to = u64::MAX;
    hb.incarnation = u64::MAX;
    hb.seq = u64::MAX;
    hb.term = Term(u64::MAX);
    hb.leader_id = Some(u64::MAX);
    hb.primary_epoch = Some(Epoch(u64::MAX));
    hb.applied_index = LogIndex(u64::MAX);
    hb.echo = Some(Echo {
        peer_sent_mono_ns: u64::MAX,
        held_ns: u64::MAX,
        incarnation: u64::MAX,
    });
    let without = encode(&hb).unwrap().len();
    hb.service = ServiceReport {
        role: Some(ServiceRole::Replica),
        position: Some(u64::MAX),
        timeline: Some(u64::MAX),
        healthy: Some(true),
    };
    hb.report_after_loss = Some(Epoch(u64::MAX));
    let with = encode(&hb).unwrap().len();
    let typical = {
        let mut t = sample();
        t.service = ServiceReport {
            role: Some(ServiceRole::Replica),
            position: Some(0x3_0000_0060),
            timeline: Some(3),
            healthy: Some(true),
        };
        (encode(&sample()).unwrap().len(), encode(&t).unwrap().len())
    };
    eprintln!(
        "largest heartbeat: {without} bytes without a service report, {with} with one; \
         typical: {} -> {} bytes (+{} sealed)",
        typical.0,
        typical.1,
        crate::heartbeat::seal::SEAL_OVERHEAD_BYTES
    );
    assert!(with + crate::heartbeat::seal::SEAL_OVERHEAD_BYTES <= MAX_DATAGRAM_BYTES);
}
