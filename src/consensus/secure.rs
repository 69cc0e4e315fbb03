//! The encrypted, authenticated Raft channel: a Noise handshake keyed by the cluster secret,
//! then every frame carried in Noise transport messages.
//!
//! # Why Noise `NNpsk0` (the `snow` crate), not TLS with certificates
//! - quorate already has exactly one shared secret per cluster (like corosync's authkey).
//!   `NNpsk0` turns that secret into mutual authentication with nothing else to manage: only
//!   a holder of the pre-shared key can produce the first handshake message or read the
//!   second. TLS would need a CA, a certificate per node, renewal and revocation (`quorate
//!   certs` with rcgen), and a pinned-identity scheme to be as strict.
//! - psk0 mixes the key in before the first message, so a stranger or a node with a wrong
//!   secret is rejected on the responder's first read (one failed tag check, no
//!   Diffie-Hellman spent on it) and never reaches the `Hello`, let alone Raft.
//! - Both sides use fresh X25519 ephemerals, so the session keys have forward secrecy: a
//!   secret stolen later does not decrypt recorded traffic.
//! - Pure Rust, one round trip of two 48-byte messages, then ChaCha20-Poly1305 per message:
//!   small next to a Raft round trip, and no system crypto library to match.
//! - The trade-off: any holder of the secret may claim any node id (the `Hello` travels inside
//!   the channel but is not bound to a per-node key). That is the trust model of corosync and
//!   keepalived: the secret *is* cluster membership. `XXpsk3` with per-node static keys would
//!   bind ids, at the cost of distributing public keys; left for later.
//!
//! # Wire
//! Every Noise message (handshake or transport) goes as `len: u16 BE | message`. A frame of
//! `codec` (`len | version | body`, up to `MAX_FRAME_BYTES`) is cut into chunks of at most
//! `MAX_CHUNK_PLAINTEXT_BYTES`, each sealed in its own transport message (Noise caps a message
//! at 65535 bytes); a frame always starts a new message. The reader learns the frame length
//! from the first chunk and checks it against `MAX_FRAME_BYTES` before allocating anything
//! for the frame, exactly as the plaintext reader does. Nonces are Noise's implicit counters:
//! a replayed, reordered, dropped or altered message fails authentication and ends the
//! connection.
//!
//! The prologue binds the handshake to this protocol version and to the cluster id.

use std::sync::OnceLock;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::secret::KeySlot;
use crate::consensus::codec::{self, CodecError, LEN_PREFIX_BYTES};
use crate::util::RateLimitedLog;

/// The Noise protocol: PSK at position 0, no static keys, X25519, ChaCha20-Poly1305, SHA-256.
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";
/// Noise's own limit on one message, tag included.
pub const NOISE_MAX_MESSAGE_BYTES: usize = 65535;
/// Poly1305 tag on every transport message.
pub const NOISE_TAG_BYTES: usize = 16;
/// Largest frame chunk sealed in one transport message.
pub const MAX_CHUNK_PLAINTEXT_BYTES: usize = NOISE_MAX_MESSAGE_BYTES - NOISE_TAG_BYTES;
/// Both NNpsk0 handshake messages are an ephemeral key plus a tag (48 bytes); anything longer
/// than this is not ours and is refused before it is read.
pub const MAX_HANDSHAKE_MESSAGE_BYTES: usize = 128;
/// Shortest handshake message (ephemeral key + tag).
pub const MIN_HANDSHAKE_MESSAGE_BYTES: usize = 32 + NOISE_TAG_BYTES;
/// Rejected handshakes are logged at most this often (they are counted always).
pub const HANDSHAKE_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Bound on the bytes prepended to the handshake (prefix + cluster id).
const PROLOGUE_PREFIX: &[u8] = b"quorate raft noise v1";

/// Why a secure connection could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection during the Noise handshake: it holds another cluster secret (check secret_file on both nodes) or is not a quorate node")]
    ClosedInHandshake,
    #[error("Noise handshake failed: the peer does not hold this cluster's secret (check that secret_file names the same secret on both nodes) or is not a quorate node")]
    Rejected,
    #[error("the peer speaks plaintext (no secret_file configured on it?) but this node requires the encrypted channel; give every node the same secret_file")]
    PlaintextPeer,
    #[error("Noise message of {len} bytes is outside the allowed {min}..={max}")]
    BadMessageLength { len: usize, min: usize, max: usize },
    #[error("Noise: {0}; this is a bug in quorate, please report it")]
    Noise(String),
}

/// The Raft pre-shared keys (see `config::secret`). Debug never prints them.
pub struct RaftKeys {
    pub current: [u8; 32],
    pub previous: Option<[u8; 32]>,
    /// During a rotation: the key each peer last accepted when we dialled it, shared by all
    /// of openraft's clients for that peer, so a peer still on the old secret costs one
    /// refused handshake per process, not one per connection.
    accepted: std::sync::Mutex<std::collections::HashMap<crate::types::NodeId, KeySlot>>,
}

impl std::fmt::Debug for RaftKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftKeys")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl RaftKeys {
    pub fn new(current: [u8; 32], previous: Option<[u8; 32]>) -> RaftKeys {
        RaftKeys {
            current,
            previous,
            accepted: Default::default(),
        }
    }

    /// The key `peer` last accepted (`Current` when unknown).
    pub fn preferred(&self, peer: crate::types::NodeId) -> KeySlot {
        let map = self.accepted.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&peer).copied().unwrap_or_default()
    }

    /// Remember that `peer` accepted the key of `slot`.
    pub fn remember(&self, peer: crate::types::NodeId, slot: KeySlot) {
        let mut map = self.accepted.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(peer, slot);
    }

    /// The key of `slot` (the current key when there is no previous one).
    pub fn key(&self, slot: KeySlot) -> &[u8; 32] {
        match (slot, &self.previous) {
            (KeySlot::Previous, Some(p)) => p,
            _ => &self.current,
        }
    }

    /// The keys to try, current first.
    pub fn candidates(&self) -> impl Iterator<Item = (KeySlot, &[u8; 32])> {
        std::iter::once((KeySlot::Current, &self.current))
            .chain(self.previous.iter().map(|p| (KeySlot::Previous, p)))
    }
}

/// The shared rate limit of handshake-failure log lines (both directions).
pub fn handshake_log() -> &'static RateLimitedLog {
    static LOG: OnceLock<RateLimitedLog> = OnceLock::new();
    LOG.get_or_init(|| RateLimitedLog::new(HANDSHAKE_LOG_INTERVAL))
}

fn prologue(cluster_id: u64) -> Vec<u8> {
    let mut p = PROLOGUE_PREFIX.to_vec();
    p.extend_from_slice(&cluster_id.to_be_bytes());
    p
}

fn noise_err(e: snow::Error) -> SecureError {
    SecureError::Noise(e.to_string())
}

fn handshake_state(
    psk: &[u8; 32],
    cluster_id: u64,
    initiator: bool,
) -> Result<snow::HandshakeState, SecureError> {
    let params: snow::params::NoiseParams = NOISE_PARAMS.parse().map_err(noise_err)?;
    let prologue = prologue(cluster_id);
    let builder = snow::Builder::new(params)
        .psk(0, psk)
        .map_err(noise_err)?
        .prologue(&prologue)
        .map_err(noise_err)?;
    if initiator {
        builder.build_initiator().map_err(noise_err)
    } else {
        builder.build_responder().map_err(noise_err)
    }
}

/// Writes one length-prefixed Noise message.
async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, msg: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    w.write_all(&out).await?;
    w.flush().await
}

/// Reads one length-prefixed Noise message into `buf` (resized to it). `Ok(None)` on a clean
/// end of stream before the first byte. The length is checked before anything is read.
async fn read_msg<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    min: usize,
    max: usize,
) -> Result<Option<()>, SecureError> {
    let mut len = [0u8; 2];
    if !codec::read_prefix(r, &mut len).await? {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes(len));
    if len < min || len > max {
        return Err(SecureError::BadMessageLength { len, min, max });
    }
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(Some(()))
}

/// Client side of the handshake with `psk`. On success the connection carries frames with
/// [`FrameConn::secure`].
pub async fn initiate<R, W>(
    r: &mut R,
    w: &mut W,
    psk: &[u8; 32],
    cluster_id: u64,
) -> Result<snow::TransportState, SecureError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut hs = handshake_state(psk, cluster_id, true)?;
    let mut out = [0u8; MAX_HANDSHAKE_MESSAGE_BYTES];
    let n = hs.write_message(&[], &mut out).map_err(noise_err)?;
    write_msg(w, &out[..n]).await?;
    let mut msg = Vec::new();
    match read_msg(
        r,
        &mut msg,
        MIN_HANDSHAKE_MESSAGE_BYTES,
        MAX_HANDSHAKE_MESSAGE_BYTES,
    )
    .await
    {
        Ok(Some(())) => {}
        Ok(None) => return Err(SecureError::ClosedInHandshake),
        Err(SecureError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            return Err(SecureError::ClosedInHandshake)
        }
        Err(e) => return Err(e),
    }
    let mut payload = [0u8; MAX_HANDSHAKE_MESSAGE_BYTES];
    hs.read_message(&msg, &mut payload)
        .map_err(|_| SecureError::Rejected)?;
    hs.into_transport_mode().map_err(noise_err)
}

/// Server side of the handshake: the first message is tried under each of `keys` (current
/// first), and answered under the one that opened it.
pub async fn respond<R, W>(
    r: &mut R,
    w: &mut W,
    keys: &RaftKeys,
    cluster_id: u64,
) -> Result<(snow::TransportState, KeySlot), SecureError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut msg = Vec::new();
    match read_msg(r, &mut msg, 1, MAX_HANDSHAKE_MESSAGE_BYTES).await {
        Ok(Some(())) => {}
        Ok(None) => return Err(SecureError::ClosedInHandshake),
        // A plaintext peer's first frame starts with a u32 length below 64 KiB: its first two
        // bytes read as a zero-length Noise message.
        Err(SecureError::BadMessageLength { len: 0, .. }) => {
            return Err(SecureError::PlaintextPeer)
        }
        Err(e) => return Err(e),
    }
    if msg.len() < MIN_HANDSHAKE_MESSAGE_BYTES {
        return Err(SecureError::BadMessageLength {
            len: msg.len(),
            min: MIN_HANDSHAKE_MESSAGE_BYTES,
            max: MAX_HANDSHAKE_MESSAGE_BYTES,
        });
    }
    let mut payload = [0u8; MAX_HANDSHAKE_MESSAGE_BYTES];
    for (slot, psk) in keys.candidates() {
        // A failed read leaves a handshake state unusable: each key gets a fresh one.
        let mut hs = handshake_state(psk, cluster_id, false)?;
        if hs.read_message(&msg, &mut payload).is_ok() {
            let mut out = [0u8; MAX_HANDSHAKE_MESSAGE_BYTES];
            let n = hs.write_message(&[], &mut out).map_err(noise_err)?;
            write_msg(w, &out[..n]).await?;
            return Ok((hs.into_transport_mode().map_err(noise_err)?, slot));
        }
    }
    Err(SecureError::Rejected)
}

/// A connection that sends and receives `codec` frames, in plaintext or sealed in Noise
/// transport messages.
pub struct FrameConn<R, W> {
    r: R,
    w: W,
    noise: Option<Box<snow::TransportState>>,
    /// Reused buffers for one sealed message and its plaintext (each at most 64 KiB).
    msg: Vec<u8>,
    plain: Vec<u8>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> FrameConn<R, W> {
    /// Frames as they are (no secret configured).
    pub fn plain(r: R, w: W) -> Self {
        FrameConn {
            r,
            w,
            noise: None,
            msg: Vec::new(),
            plain: Vec::new(),
        }
    }

    /// Frames sealed with the session keys of a finished handshake.
    pub fn secure(r: R, w: W, transport: snow::TransportState) -> Self {
        FrameConn {
            r,
            w,
            noise: Some(Box::new(transport)),
            msg: Vec::new(),
            plain: Vec::new(),
        }
    }

    pub fn is_secure(&self) -> bool {
        self.noise.is_some()
    }

    /// Takes the session back (tests reuse one handshake across many readers).
    #[cfg(test)]
    fn into_transport(self) -> Option<snow::TransportState> {
        self.noise.map(|b| *b)
    }

    /// Sends one frame (one write, one flush).
    pub async fn send<T: Serialize>(&mut self, value: &T) -> Result<(), CodecError> {
        let Some(noise) = self.noise.as_mut() else {
            return codec::write_frame(&mut self.w, value).await;
        };
        let frame = codec::encode_frame(value)?;
        let chunks = frame.len().div_ceil(MAX_CHUNK_PLAINTEXT_BYTES);
        let mut out = Vec::with_capacity(frame.len() + chunks * (2 + NOISE_TAG_BYTES));
        for chunk in frame.chunks(MAX_CHUNK_PLAINTEXT_BYTES) {
            let start = out.len();
            out.resize(start + 2 + chunk.len() + NOISE_TAG_BYTES, 0);
            let n = noise
                .write_message(chunk, &mut out[start + 2..])
                .map_err(|e| CodecError::Channel(format!("cannot seal: {e}")))?;
            out[start..start + 2].copy_from_slice(&(n as u16).to_be_bytes());
            out.truncate(start + 2 + n);
        }
        self.w.write_all(&out).await?;
        self.w.flush().await?;
        Ok(())
    }

    /// Reads one frame. `Ok(None)` on a clean end of stream before the first byte.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        if self.noise.is_none() {
            return codec::read_frame(&mut self.r).await;
        }
        if !self.read_chunk().await? {
            return Ok(None);
        }
        if self.plain.len() < LEN_PREFIX_BYTES {
            return Err(CodecError::Channel(format!(
                "first chunk of {} bytes cannot hold a frame length",
                self.plain.len()
            )));
        }
        let mut len = [0u8; LEN_PREFIX_BYTES];
        len.copy_from_slice(&self.plain[..LEN_PREFIX_BYTES]);
        let len = u32::from_be_bytes(len) as usize;
        // The bound is checked before the frame's buffer is allocated.
        codec::check_frame_len(len)?;
        let mut frame = Vec::with_capacity(len);
        frame.extend_from_slice(&self.plain[LEN_PREFIX_BYTES..]);
        while frame.len() < len {
            if !self.read_chunk().await? {
                return Err(CodecError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "peer closed the connection in the middle of a frame",
                )));
            }
            if frame.len() + self.plain.len() > len {
                break;
            }
            frame.extend_from_slice(&self.plain);
        }
        if frame.len() != len {
            return Err(CodecError::Channel(format!(
                "chunks run past the announced frame length of {len} bytes"
            )));
        }
        codec::decode_frame_body(&frame).map(Some)
    }

    /// Reads and opens one transport message into `self.plain`. `Ok(false)` on a clean end
    /// of stream (acceptable only at a frame boundary, which the caller decides).
    async fn read_chunk(&mut self) -> Result<bool, CodecError> {
        let read = read_msg(
            &mut self.r,
            &mut self.msg,
            NOISE_TAG_BYTES + 1,
            NOISE_MAX_MESSAGE_BYTES,
        )
        .await;
        match read {
            Ok(Some(())) => {}
            Ok(None) => return Ok(false),
            Err(SecureError::Io(e)) => return Err(CodecError::Io(e)),
            Err(e) => return Err(CodecError::Channel(e.to_string())),
        }
        let Some(noise) = self.noise.as_mut() else {
            return Err(CodecError::Channel("not an encrypted connection".into()));
        };
        self.plain.resize(self.msg.len(), 0);
        let n = noise
            .read_message(&self.msg, &mut self.plain)
            .map_err(|_| {
                CodecError::Channel(
                    "a message failed authentication (altered, replayed or reordered on the way)"
                        .into(),
                )
            })?;
        self.plain.truncate(n);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
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
}
