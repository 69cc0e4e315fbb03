//! The one place that knows how quorate encodes Raft traffic and stored entries.
//!
//! A frame on the Raft TCP connection is `len: u32 BE | version: u8 | bincode body`, where
//! `len` counts the version byte and the body. The length is checked against
//! [`MAX_FRAME_BYTES`] *before* anything is allocated, so a hostile or confused peer cannot
//! make a node allocate gigabytes by sending four bytes. Swapping the codec means changing
//! this file only.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Wire format version carried in every frame; a peer speaking another version is refused.
pub const WIRE_VERSION: u8 = 1;

/// Largest frame accepted or sent. Snapshots travel in chunks of [`SNAPSHOT_CHUNK_BYTES`], and
/// append batches are capped by `node::max_payload_entries` to half of this, so honest
/// frames stay below it; it must exceed the largest allowed KV value (16 MiB) plus overhead.
pub const MAX_FRAME_BYTES: usize = 40 * 1024 * 1024;

/// Snapshot transfer chunk size (well below [`MAX_FRAME_BYTES`]).
pub const SNAPSHOT_CHUNK_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge { len: usize, max: usize },
    #[error("empty frame (no version byte)")]
    EmptyFrame,
    #[error("unsupported wire version {0} (this node speaks {WIRE_VERSION}); run the same quorate version on every node")]
    UnsupportedVersion(u8),
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("malformed frame body: {0}")]
    Decode(String),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("encrypted channel: {0}")]
    Channel(String),
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_BYTES>()
}

/// Encodes a value with quorate's bincode configuration (used for stored entries too).
pub fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, bincode_config())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a value; trailing garbage is an error.
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_with(bytes, bincode_config())
}

/// Decodes all of `bytes` under `config`; trailing garbage is an error.
fn decode_with<T: DeserializeOwned, C: bincode::config::Config>(
    bytes: &[u8],
    config: C,
) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config)
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Decode(format!(
            "{} trailing bytes after the message",
            bytes.len() - used
        )));
    }
    Ok(value)
}

/// Snapshot bodies can exceed the frame limit; they are bounded by the snapshot layer instead.
fn unbounded_config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Encodes without the frame limit (snapshot bodies only).
pub fn to_bytes_unbounded<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, unbounded_config())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Most bytes bincode counts against its limit per input byte when it decodes quorate's
/// types: it counts the size of every integer it reads (8 for a `u64`, however short its
/// varint) and the length of every string or byte run. The widest integer in a snapshot is
/// 64 bits; 16 leaves room for a `u128`.
pub const DECODE_CLAIMS_PER_INPUT_BYTE: usize = 16;

/// The bincode limits [`from_bytes_large`] chooses from, smallest first (each 8 times the
/// previous one).
pub const LARGE_DECODE_LIMITS: [usize; 6] = [1 << 20, 1 << 23, 1 << 26, 1 << 29, 1 << 32, 1 << 35];

/// Decodes a body larger than a frame (snapshot bodies, already checksummed and size-checked);
/// trailing garbage is an error.
///
/// bincode allocates a string or byte run at its encoded length *before* reading it, and only
/// its limit stops that: with no limit, a forged length of 2^40 in a small body makes it ask
/// for a terabyte and abort the process. The limit here follows the input: the smallest of
/// [`LARGE_DECODE_LIMITS`] that covers [`DECODE_CLAIMS_PER_INPUT_BYTE`] times its length. A
/// valid body never needs more, and a forged length can cost at most that much memory.
pub fn from_bytes_large<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    fn limited<T: DeserializeOwned, const LIMIT: usize>(bytes: &[u8]) -> Result<T, CodecError> {
        decode_with(bytes, bincode::config::standard().with_limit::<LIMIT>())
    }
    let need = bytes.len().saturating_mul(DECODE_CLAIMS_PER_INPUT_BYTE);
    let [l0, l1, l2, l3, l4, l5] = LARGE_DECODE_LIMITS;
    match need {
        n if n <= l0 => limited::<T, { LARGE_DECODE_LIMITS[0] }>(bytes),
        n if n <= l1 => limited::<T, { LARGE_DECODE_LIMITS[1] }>(bytes),
        n if n <= l2 => limited::<T, { LARGE_DECODE_LIMITS[2] }>(bytes),
        n if n <= l3 => limited::<T, { LARGE_DECODE_LIMITS[3] }>(bytes),
        n if n <= l4 => limited::<T, { LARGE_DECODE_LIMITS[4] }>(bytes),
        n if n <= l5 => limited::<T, { LARGE_DECODE_LIMITS[5] }>(bytes),
        _ => Err(CodecError::FrameTooLarge {
            len: bytes.len(),
            max: l5 / DECODE_CLAIMS_PER_INPUT_BYTE,
        }),
    }
}

/// Bytes of the length prefix of a frame.
pub const LEN_PREFIX_BYTES: usize = 4;

/// One complete frame (`len | version | body`) as bytes: what goes on a plaintext connection,
/// and what the encrypted channel (`secure`) seals in chunks.
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let body = to_bytes(value)?;
    let len = body.len() + 1;
    check_frame_len(len)?;
    let mut buf = Vec::with_capacity(LEN_PREFIX_BYTES + len);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    buf.push(WIRE_VERSION);
    buf.extend_from_slice(&body);
    Ok(buf)
}

/// The check every reader makes on a frame's announced length *before* allocating for it.
pub fn check_frame_len(len: usize) -> Result<(), CodecError> {
    if len > MAX_FRAME_BYTES {
        return Err(CodecError::FrameTooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    if len == 0 {
        return Err(CodecError::EmptyFrame);
    }
    Ok(())
}

/// Decodes the part of a frame after the length prefix (`version | body`).
pub fn decode_frame_body<T: DeserializeOwned>(buf: &[u8]) -> Result<T, CodecError> {
    let Some((&version, body)) = buf.split_first() else {
        return Err(CodecError::EmptyFrame);
    };
    if version != WIRE_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    from_bytes(body)
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    value: &T,
) -> Result<(), CodecError> {
    let buf = encode_frame(value)?;
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Fills `prefix` (a length prefix). `Ok(false)` on a clean end of stream before its first
/// byte; an end of stream inside it is an error (`UnexpectedEof`), not a clean close.
pub async fn read_prefix<R: AsyncRead + Unpin>(
    r: &mut R,
    prefix: &mut [u8],
) -> Result<bool, std::io::Error> {
    let Some((first, rest)) = prefix.split_first_mut() else {
        return Ok(true);
    };
    loop {
        match r.read(std::slice::from_mut(first)).await {
            Ok(0) => return Ok(false),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    r.read_exact(rest).await?;
    Ok(true)
}

/// Reads one frame. `Ok(None)` on a clean end of stream before the first byte.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> Result<Option<T>, CodecError> {
    let mut len = [0u8; LEN_PREFIX_BYTES];
    if !read_prefix(r, &mut len).await? {
        return Ok(None);
    }
    let len = u32::from_be_bytes(len) as usize;
    check_frame_len(len)?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    decode_frame_body(&buf).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test]
    async fn frame_roundtrip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &("hello".to_string(), 42u64))
            .await
            .unwrap();
        let mut r = buf.as_slice();
        let v: Option<(String, u64)> = read_frame(&mut r).await.unwrap();
        assert_eq!(v, Some(("hello".to_string(), 42)));
        let end: Option<(String, u64)> = read_frame(&mut r).await.unwrap();
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn oversized_length_rejected_before_allocating() {
        let mut buf = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes().to_vec();
        buf.push(WIRE_VERSION);
        let mut r = buf.as_slice();
        let err = read_frame::<_, u64>(&mut r).await.unwrap_err();
        assert!(matches!(err, CodecError::FrameTooLarge { .. }), "{err}");
    }

    /// Regression (decoder fuzzing): a stream ending inside a length prefix read as a clean
    /// end of stream; it is a truncated frame.
    #[tokio::test]
    async fn end_of_stream_inside_the_length_is_an_error() {
        for cut in 1..LEN_PREFIX_BYTES {
            let frame = encode_frame(&7u64).unwrap();
            let mut r = &frame[..cut];
            let err = read_frame::<_, u64>(&mut r).await.unwrap_err();
            assert!(
                matches!(&err, CodecError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
                "{cut}: {err}"
            );
        }
        let mut empty: &[u8] = &[];
        assert!(read_frame::<_, u64>(&mut empty).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn wrong_version_rejected() {
        let mut buf = 2u32.to_be_bytes().to_vec();
        buf.extend_from_slice(&[9, 0]);
        let mut r = buf.as_slice();
        let err = read_frame::<_, u8>(&mut r).await.unwrap_err();
        assert!(matches!(err, CodecError::UnsupportedVersion(9)), "{err}");
    }

    /// Regression (decoder fuzzing): a forged string length in a snapshot body made bincode,
    /// decoding without a limit, allocate that length up front; 2^40 aborted the process.
    #[test]
    fn forged_lengths_in_large_bodies_are_refused_without_allocating() {
        for forged in [1u64 << 40, 1 << 62, u64::MAX, 1 << 20] {
            let mut bytes = vec![0xfd];
            bytes.extend_from_slice(&forged.to_le_bytes());
            bytes.extend_from_slice(b"short");
            let err = from_bytes_large::<String>(&bytes).unwrap_err();
            assert!(matches!(err, CodecError::Decode(_)), "{forged}: {err}");
            let err = from_bytes_large::<(u64, Vec<String>)>(&[[1, 1].as_slice(), &bytes].concat())
                .unwrap_err();
            assert!(matches!(err, CodecError::Decode(_)), "{forged}: {err}");
        }
    }

    #[test]
    fn large_bodies_of_small_integers_still_decode() {
        // The densest claims: one-byte varints that bincode counts as 8 bytes each, in bodies
        // just under and over the first limits.
        for n in [0usize, 1, 65_535, 65_536, 200_000, 600_000] {
            let value: (Vec<u64>, String) = (vec![7; n], "x".repeat(n / 3));
            let bytes = to_bytes_unbounded(&value).unwrap();
            assert_eq!(
                from_bytes_large::<(Vec<u64>, String)>(&bytes).unwrap(),
                value
            );
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = from_bytes::<(String, Vec<u64>, Option<bool>)>(&bytes);
        }
    }
}
