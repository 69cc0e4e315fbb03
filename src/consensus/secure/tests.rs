use super::*;
use proptest::prelude::*;
use tokio::io::{duplex, DuplexStream, ReadHalf, WriteHalf};

const K1: [u8; 32] = [1; 32];
const K2: [u8; 32] = [2; 32];
const CLUSTER: u64 = 42;

type Half = FrameConn<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;

fn keys(current: [u8; 32], previous: Option<[u8; 32]>) -> RaftKeys {
    RaftKeys::new(current, previous)
}

/// Runs both handshake sides over an in-memory pipe.
async fn pair(
    client_psk: [u8; 32],
    server: RaftKeys,
    client_cluster: u64,
) -> (
    Result<Half, SecureError>,
    Result<(Half, KeySlot), SecureError>,
) {
    let (a, b) = duplex(1 << 20);
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let client = async move {
        let t = initiate(&mut ar, &mut aw, &client_psk, client_cluster).await?;
        Ok(FrameConn::secure(ar, aw, t))
    };
    let srv = async move {
        let res = respond(&mut br, &mut bw, &server, CLUSTER).await;
        match res {
            Ok((t, slot)) => Ok((FrameConn::secure(br, bw, t), slot)),
            Err(e) => {
                // Like the real server: hang up on failure.
                drop(bw);
                drop(br);
                Err(e)
            }
        }
    };
    tokio::join!(client, srv)
}

#[tokio::test]
async fn same_secret_exchanges_frames_both_ways() {
    let (c, s) = pair(K1, keys(K1, None), CLUSTER).await;
    let mut c = c.unwrap();
    let (mut s, slot) = s.unwrap();
    assert_eq!(slot, KeySlot::Current);
    assert!(c.is_secure());
    c.send(&("hello".to_string(), 7u64)).await.unwrap();
    let got: Option<(String, u64)> = s.recv().await.unwrap();
    assert_eq!(got, Some(("hello".into(), 7)));
    s.send(&vec![1u32, 2, 3]).await.unwrap();
    assert_eq!(c.recv::<Vec<u32>>().await.unwrap(), Some(vec![1, 2, 3]));
}

#[tokio::test]
async fn wrong_secret_fails_the_handshake_on_both_sides() {
    let (c, s) = pair(K2, keys(K1, None), CLUSTER).await;
    assert!(matches!(s, Err(SecureError::Rejected)), "{:?}", s.err());
    assert!(
        matches!(c, Err(SecureError::ClosedInHandshake)),
        "{:?}",
        c.err()
    );
}

#[tokio::test]
async fn another_cluster_id_fails_even_with_the_same_key() {
    let (c, s) = pair(K1, keys(K1, None), CLUSTER + 1).await;
    assert!(matches!(s, Err(SecureError::Rejected)));
    assert!(c.is_err());
}

#[tokio::test]
async fn rotation_accepts_the_previous_secret_and_says_so() {
    let (c, s) = pair(K1, keys(K2, Some(K1)), CLUSTER).await;
    assert!(c.is_ok());
    assert_eq!(s.unwrap().1, KeySlot::Previous);
    let (c, s) = pair(K2, keys(K2, Some(K1)), CLUSTER).await;
    assert!(c.is_ok());
    assert_eq!(s.unwrap().1, KeySlot::Current);
    assert_eq!(keys(K2, Some(K1)).key(KeySlot::Previous), &K1);
    assert_eq!(keys(K2, None).key(KeySlot::Previous), &K2);
}

#[tokio::test]
async fn a_plaintext_hello_is_recognised() {
    let (a, b) = duplex(4096);
    let (_ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    codec::write_frame(&mut aw, &("hello", 1u64)).await.unwrap();
    let res = respond(&mut br, &mut bw, &keys(K1, None), CLUSTER).await;
    assert!(matches!(res, Err(SecureError::PlaintextPeer)), "{res:?}");
}

#[tokio::test]
async fn an_oversized_handshake_message_is_refused_unread() {
    let (a, b) = duplex(4096);
    let (_ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    aw.write_all(&60000u16.to_be_bytes()).await.unwrap();
    let res = respond(&mut br, &mut bw, &keys(K1, None), CLUSTER).await;
    assert!(
        matches!(res, Err(SecureError::BadMessageLength { len: 60000, .. })),
        "{res:?}"
    );
}

#[tokio::test]
async fn frames_larger_than_a_noise_message_are_chunked() {
    let (c, s) = pair(K1, keys(K1, None), CLUSTER).await;
    let (mut c, (mut s, _)) = (c.unwrap(), s.unwrap());
    // Three chunks and a bit, then a small frame right after: boundaries stay aligned.
    let big: Vec<u8> = (0..3 * MAX_CHUNK_PLAINTEXT_BYTES + 1000)
        .map(|i| (i % 251) as u8)
        .collect();
    let send = async {
        c.send(&big).await.unwrap();
        c.send(&5u8).await.unwrap();
    };
    let recv = async {
        let a: Option<Vec<u8>> = s.recv().await.unwrap();
        let b: Option<u8> = s.recv().await.unwrap();
        (a, b)
    };
    let ((), (a, b)) = tokio::join!(send, recv);
    assert_eq!(a.as_deref(), Some(big.as_slice()));
    assert_eq!(b, Some(5));
}

/// A server side after a successful handshake, with the raw client stream, so tests can
/// inject hand-made transport messages.
async fn raw_client() -> (
    snow::TransportState,
    WriteHalf<DuplexStream>,
    ReadHalf<DuplexStream>,
    Half,
) {
    let (a, b) = duplex(1 << 22);
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let k = keys(K1, None);
    let (c, s) = tokio::join!(
        initiate(&mut ar, &mut aw, &K1, CLUSTER),
        respond(&mut br, &mut bw, &k, CLUSTER)
    );
    (c.unwrap(), aw, ar, FrameConn::secure(br, bw, s.unwrap().0))
}

fn sealed(t: &mut snow::TransportState, plain: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 2 + plain.len() + NOISE_TAG_BYTES];
    let n = t.write_message(plain, &mut out[2..]).unwrap();
    out[..2].copy_from_slice(&(n as u16).to_be_bytes());
    out.truncate(2 + n);
    out
}

#[tokio::test]
async fn an_oversized_frame_length_is_refused_before_allocating() {
    let (mut t, mut w, _r, mut s) = raw_client().await;
    let len = (codec::MAX_FRAME_BYTES + 1) as u32;
    let mut plain = len.to_be_bytes().to_vec();
    plain.push(codec::WIRE_VERSION);
    w.write_all(&sealed(&mut t, &plain)).await.unwrap();
    let err = s.recv::<u8>().await.unwrap_err();
    assert!(matches!(err, CodecError::FrameTooLarge { .. }), "{err}");
}

#[tokio::test]
async fn tampered_and_replayed_messages_end_the_connection() {
    let (mut t, mut w, _r, mut s) = raw_client().await;
    let good = codec::encode_frame(&9u64).unwrap();
    let m1 = sealed(&mut t, &good);
    w.write_all(&m1).await.unwrap();
    assert_eq!(s.recv::<u64>().await.unwrap(), Some(9));
    // The same message again: its nonce is used up.
    w.write_all(&m1).await.unwrap();
    let err = s.recv::<u64>().await.unwrap_err();
    assert!(matches!(err, CodecError::Channel(_)), "{err}");

    let (mut t, mut w, _r, mut s) = raw_client().await;
    let mut m = sealed(&mut t, &good);
    let last = m.len() - 1;
    m[last] ^= 1;
    w.write_all(&m).await.unwrap();
    assert!(matches!(s.recv::<u64>().await, Err(CodecError::Channel(_))));
}

#[tokio::test]
async fn a_chunk_running_past_its_frame_is_refused() {
    let (mut t, mut w, _r, mut s) = raw_client().await;
    // Announce a 10-byte frame, then deliver 5 bytes, then a 20-byte chunk.
    let mut first = 10u32.to_be_bytes().to_vec();
    first.extend_from_slice(&[codec::WIRE_VERSION, 0, 0, 0, 0]);
    w.write_all(&sealed(&mut t, &first)).await.unwrap();
    w.write_all(&sealed(&mut t, &[0u8; 20])).await.unwrap();
    let err = s.recv::<u8>().await.unwrap_err();
    assert!(err.to_string().contains("run past"), "{err}");
}

/// Feeds `bytes` to a secure reader holding the session `server` (whose peer is `client`);
/// must end in an error or end of stream, never a panic and never a frame (no key holder
/// made these bytes). With `after_valid`, one genuine frame goes first, so the garbage
/// lands mid-stream. Returns the session for the next case (a failed read does not move
/// its nonce).
async fn garbage_case(
    server: snow::TransportState,
    client: &mut snow::TransportState,
    bytes: &[u8],
    after_valid: bool,
) -> snow::TransportState {
    let (a, b) = duplex(1 << 16);
    let (_ar, mut aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let mut s = FrameConn::secure(br, bw, server);
    if after_valid {
        let good = codec::encode_frame(&1u8).unwrap();
        aw.write_all(&sealed(client, &good)).await.unwrap();
        assert_eq!(s.recv::<u8>().await.unwrap(), Some(1));
    }
    aw.write_all(bytes).await.unwrap();
    aw.shutdown().await.unwrap();
    let res = s.recv::<Vec<u8>>().await;
    assert!(!matches!(res, Ok(Some(_))), "garbage read as a frame");
    s.into_transport().unwrap()
}

fn read_garbage(bytes: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut t, _w, _r, s) = raw_client().await;
        let after_valid = bytes.first().is_some_and(|b| b & 1 == 1);
        garbage_case(s.into_transport().unwrap(), &mut t, bytes, after_valid).await;
    });
}

/// Regression (decoder fuzzing): a stream ending inside a message's length read as a
/// clean end of stream; it is a truncated message.
#[tokio::test]
async fn end_of_stream_inside_a_message_length_is_an_error() {
    let mut buf = Vec::new();
    let mut one: &[u8] = &[0];
    let res = read_msg(&mut one, &mut buf, 1, 10).await;
    assert!(
        matches!(&res, Err(SecureError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof),
        "{res:?}"
    );
    let mut empty: &[u8] = &[];
    assert!(matches!(
        read_msg(&mut empty, &mut buf, 1, 10).await,
        Ok(None)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn garbage_on_a_secure_connection_never_yields_a_frame(
        bytes in proptest::collection::vec(any::<u8>(), 0..600)
    ) {
        read_garbage(&bytes);
    }

    #[test]
    fn garbage_handshakes_are_rejected(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let (a, b) = duplex(4096);
            let (_ar, mut aw) = tokio::io::split(a);
            let (mut br, mut bw) = tokio::io::split(b);
            aw.write_all(&bytes).await.unwrap();
            aw.shutdown().await.unwrap();
            let res = respond(&mut br, &mut bw, &keys(K1, Some(K2)), CLUSTER).await;
            assert!(res.is_err());
        });
    }
}

/// The bounded million-case run of the Noise frame reader (issue 8), outside the default
/// test run:
/// `cargo test --release --lib consensus::secure::tests::million_garbage_frames -- --ignored`
/// Each case writes random bytes (half with a plausible message length in front, a
/// quarter after a genuine frame) into an established secure connection and reads one
/// frame. One handshake serves every case; a seeded generator makes failures reproducible.
#[test]
#[ignore]
fn million_garbage_frames() {
    use rand::{Rng, SeedableRng};
    const CASES: u64 = 1_000_000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0015e);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut client, _w, _r, s) = raw_client().await;
        let mut server = s.into_transport().unwrap();
        for case in 0..CASES {
            let len = rng.gen_range(0..300);
            let mut bytes = vec![0u8; len];
            rng.fill(bytes.as_mut_slice());
            if case % 2 == 1 {
                let n = rng.gen_range(NOISE_TAG_BYTES + 1..400) as u16;
                bytes.splice(0..0, n.to_be_bytes());
            }
            server = garbage_case(server, &mut client, &bytes, case % 4 == 3).await;
        }
    });
}

/// What the encrypted channel costs per frame, against plaintext, on this machine:
/// `cargo test --release --lib consensus::secure::tests::cost_per_frame -- --ignored --nocapture`
/// (a measurement, not a check: it asserts only that frames arrive).
#[test]
#[ignore]
fn cost_per_frame() {
    const FRAMES: usize = 20_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let payload = vec![7u8; 512];
    let measure = |secure: bool| {
        rt.block_on(async {
            let (c, s) = if secure {
                let (c, s) = pair(K1, keys(K1, None), CLUSTER).await;
                (c.unwrap(), s.unwrap().0)
            } else {
                let (a, b) = duplex(1 << 20);
                let (ar, aw) = tokio::io::split(a);
                let (br, bw) = tokio::io::split(b);
                (FrameConn::plain(ar, aw), FrameConn::plain(br, bw))
            };
            let (mut c, mut s) = (c, s);
            let t0 = std::time::Instant::now();
            for _ in 0..FRAMES {
                c.send(&payload).await.unwrap();
                let got: Vec<u8> = s.recv().await.unwrap().unwrap();
                assert_eq!(got.len(), payload.len());
            }
            t0.elapsed() / FRAMES as u32
        })
    };
    let plain = measure(false);
    let secure = measure(true);
    println!("512-byte frame, send+recv: plaintext {plain:?}, Noise {secure:?}");
}
