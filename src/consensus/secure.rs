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
mod tests;
