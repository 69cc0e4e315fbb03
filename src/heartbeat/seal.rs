//! Authenticated encryption of heartbeat datagrams with the cluster secret, and the replay
//! window that goes with it.
//!
//! A sealed datagram is
//! `SEALED_MAGIC (4) | SEAL_VERSION (1) | nonce (24) | XChaCha20-Poly1305(wire::encode(hb)) + tag (16)`,
//! the 5 header bytes being the associated data, and at most `MAX_DATAGRAM_BYTES` long like a
//! plaintext one. The plaintext inside is the unchanged wire encoding, so `wire` stays the
//! one place that knows the heartbeat layout.
//!
//! Why XChaCha20-Poly1305 with a random nonce: every node sends under the same key (one
//! cluster secret), to several peers, after any number of restarts. A counter nonce would have
//! to be unique across all of that, which needs coordination or persisted state; 192 random
//! bits never collide in practice, and the 24 bytes fit easily in a datagram. ChaCha20 is
//! fast in software on any CPU, so sealing costs a microsecond or two.
//!
//! Replay: the AEAD proves a datagram was made by a holder of the key, not that it is new. An
//! attacker who records datagrams could replay them later to make a dead node look alive.
//! [`ReplayWindow`] rejects, per sender and link, anything from an older incarnation, a
//! duplicate, and anything further behind the newest sequence than `REPLAY_WINDOW_SEQS`.
//! Incarnations grow at every start of a node (a counter persisted in its data dir,
//! `DataDir::next_incarnation`), so a restarted sender's new incarnation is larger and a
//! recording of its earlier life is "too old", whatever the sender's wall clock did.

use std::collections::HashMap;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::wire::{self, DecodeError, EncodeError, Heartbeat, MAX_DATAGRAM_BYTES};
use crate::types::NodeId;

/// First bytes of a sealed heartbeat (a plaintext one starts with `wire::MAGIC`).
pub const SEALED_MAGIC: [u8; 4] = *b"QRHS";
/// Layout of the sealed envelope; bump when it changes.
pub const SEAL_VERSION: u8 = 1;
pub const SEAL_HEADER_BYTES: usize = SEALED_MAGIC.len() + 1;
pub const NONCE_BYTES: usize = 24;
pub const TAG_BYTES: usize = 16;
/// Bytes a sealed datagram adds to the plaintext encoding.
pub const SEAL_OVERHEAD_BYTES: usize = SEAL_HEADER_BYTES + NONCE_BYTES + TAG_BYTES;
/// Shortest possible sealed datagram: a header, a nonce, an empty ciphertext and a tag.
pub const MIN_SEALED_BYTES: usize = SEAL_OVERHEAD_BYTES;
/// How far behind the newest sequence of a link a datagram may be and still be accepted
/// (once). Heartbeats are sent in order, so reordering spans a few datagrams at most; 64 fits
/// the window's one-word bitmap.
pub const REPLAY_WINDOW_SEQS: u64 = 64;

pub use crate::config::secret::KeySlot;

/// Why a datagram could not be opened. Every input maps to `Ok` or one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("datagram of {len} bytes exceeds MAX_DATAGRAM_BYTES ({MAX_DATAGRAM_BYTES})")]
    TooLong { len: usize },
    #[error("datagram of {len} bytes is shorter than the {MIN_SEALED_BYTES} bytes of a sealed heartbeat")]
    TooShort { len: usize },
    #[error("plaintext heartbeat, but this node requires sealed ones: the sender has no secret_file configured; give every node the same secret")]
    Plaintext,
    #[error("datagram does not start with the sealed heartbeat magic: another program sends to the heartbeat port")]
    BadMagic,
    #[error("sealed heartbeat version {0} is not supported (this build speaks {SEAL_VERSION}); run the same quorate version on every node")]
    UnsupportedVersion(u8),
    #[error("heartbeat failed authentication: it was sealed with another secret, or altered on the way; check that every node uses the same secret_file")]
    Unauthenticated,
    #[error("authenticated heartbeat with an unreadable payload: {0}")]
    Inner(DecodeError),
}

/// Seals and opens heartbeats with the derived heartbeat key(s).
#[derive(Clone)]
pub struct Sealer {
    current: XChaCha20Poly1305,
    previous: Option<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl Sealer {
    pub fn new(current: &[u8; 32], previous: Option<&[u8; 32]>) -> Sealer {
        Sealer {
            current: XChaCha20Poly1305::new(current.into()),
            previous: previous.map(|k| XChaCha20Poly1305::new(k.into())),
        }
    }

    pub fn has_previous(&self) -> bool {
        self.previous.is_some()
    }

    /// Seals `hb` under the key in `slot` (falling back to the current key when there is no
    /// previous one) with `nonce`, which must be random: it is never derived from the
    /// heartbeat, so the caller draws it (and tests can fix it).
    pub fn seal(
        &self,
        hb: &Heartbeat,
        slot: KeySlot,
        nonce: [u8; NONCE_BYTES],
    ) -> Result<Vec<u8>, EncodeError> {
        let plain = wire::encode(hb)?;
        let cipher = match (slot, &self.previous) {
            (KeySlot::Previous, Some(p)) => p,
            _ => &self.current,
        };
        let mut out = Vec::with_capacity(SEAL_OVERHEAD_BYTES + plain.len());
        out.extend_from_slice(&SEALED_MAGIC);
        out.push(SEAL_VERSION);
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &out[..SEAL_HEADER_BYTES],
                },
            )
            .map_err(|e| EncodeError::Bincode(format!("sealing failed: {e}")))?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        if out.len() > MAX_DATAGRAM_BYTES {
            return Err(EncodeError::TooLarge {
                max: MAX_DATAGRAM_BYTES,
            });
        }
        Ok(out)
    }

    /// Opens a sealed datagram: current key first, then the previous one. Never panics; the
    /// length is checked before anything else, and nothing is decoded before the tag checks.
    pub fn open(&self, bytes: &[u8]) -> Result<(Heartbeat, KeySlot), OpenError> {
        if bytes.len() > MAX_DATAGRAM_BYTES {
            return Err(OpenError::TooLong { len: bytes.len() });
        }
        if bytes.len() >= wire::MAGIC.len() && bytes[..wire::MAGIC.len()] == wire::MAGIC {
            return Err(OpenError::Plaintext);
        }
        if bytes.len() < MIN_SEALED_BYTES {
            return Err(OpenError::TooShort { len: bytes.len() });
        }
        let (header, rest) = bytes.split_at(SEAL_HEADER_BYTES);
        if header[..SEALED_MAGIC.len()] != SEALED_MAGIC {
            return Err(OpenError::BadMagic);
        }
        if header[SEALED_MAGIC.len()] != SEAL_VERSION {
            return Err(OpenError::UnsupportedVersion(header[SEALED_MAGIC.len()]));
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        let nonce = XNonce::from_slice(nonce);
        let payload = || Payload {
            msg: ciphertext,
            aad: header,
        };
        let (plain, slot) = match self.current.decrypt(nonce, payload()) {
            Ok(p) => (p, KeySlot::Current),
            Err(_) => match &self.previous {
                Some(prev) => match prev.decrypt(nonce, payload()) {
                    Ok(p) => (p, KeySlot::Previous),
                    Err(_) => return Err(OpenError::Unauthenticated),
                },
                None => return Err(OpenError::Unauthenticated),
            },
        };
        let hb = wire::decode(&plain).map_err(OpenError::Inner)?;
        Ok((hb, slot))
    }
}

/// The verdict of the replay window on one authenticated datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Not seen before: accepted and recorded.
    Fresh,
    /// This (incarnation, seq) was already accepted on this link.
    Duplicate,
    /// More than `REPLAY_WINDOW_SEQS` behind the newest sequence of this link.
    TooOld,
    /// From an incarnation older than the newest seen from this sender on this link.
    OldIncarnation,
}

#[derive(Clone, Copy, Debug)]
struct LinkWindow {
    incarnation: u64,
    highest_seq: u64,
    /// Bit i set: sequence `highest_seq - i` was accepted (bit 0 is `highest_seq` itself).
    seen: u64,
}

/// Anti-replay state for authenticated heartbeats, per (sender, link). Pure: no clock.
///
/// Per link because every link carries the same sequence numbers in a round. The caller
/// admits only datagrams that passed authentication and the address check, so entries exist
/// only for configured (peer, link) pairs: the map is bounded by the configuration.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    links: HashMap<(NodeId, usize), LinkWindow>,
}

impl ReplayWindow {
    pub fn new() -> ReplayWindow {
        ReplayWindow::default()
    }

    /// Decides on `(incarnation, seq)` from `peer` on `link`, recording it when fresh.
    pub fn admit(
        &mut self,
        peer: NodeId,
        link: usize,
        incarnation: u64,
        seq: u64,
    ) -> ReplayVerdict {
        let Some(w) = self.links.get_mut(&(peer, link)) else {
            self.links.insert(
                (peer, link),
                LinkWindow {
                    incarnation,
                    highest_seq: seq,
                    seen: 1,
                },
            );
            return ReplayVerdict::Fresh;
        };
        if incarnation < w.incarnation {
            return ReplayVerdict::OldIncarnation;
        }
        if incarnation > w.incarnation {
            *w = LinkWindow {
                incarnation,
                highest_seq: seq,
                seen: 1,
            };
            return ReplayVerdict::Fresh;
        }
        if seq > w.highest_seq {
            let shift = seq - w.highest_seq;
            w.seen = if shift >= REPLAY_WINDOW_SEQS {
                1
            } else {
                (w.seen << shift) | 1
            };
            w.highest_seq = seq;
            return ReplayVerdict::Fresh;
        }
        let behind = w.highest_seq - seq;
        if behind >= REPLAY_WINDOW_SEQS {
            return ReplayVerdict::TooOld;
        }
        let bit = 1u64 << behind;
        if w.seen & bit != 0 {
            return ReplayVerdict::Duplicate;
        }
        w.seen |= bit;
        ReplayVerdict::Fresh
    }
}

#[cfg(test)]
mod tests;
