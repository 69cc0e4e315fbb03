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
    let (value, used) = bincode::serde::decode_from_slice(bytes, bincode_config())
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

/// Decodes without the frame limit (snapshot bodies only; already checksummed and size-checked).
pub fn from_bytes_unbounded<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, unbounded_config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Decode(format!(
            "{} trailing bytes after the message",
            bytes.len() - used
        )));
    }
    Ok(value)
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

/// Reads one frame. `Ok(None)` on a clean end of stream before the first byte.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> Result<Option<T>, CodecError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
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

    #[tokio::test]
    async fn wrong_version_rejected() {
        let mut buf = 2u32.to_be_bytes().to_vec();
        buf.extend_from_slice(&[9, 0]);
        let mut r = buf.as_slice();
        let err = read_frame::<_, u8>(&mut r).await.unwrap_err();
        assert!(matches!(err, CodecError::UnsupportedVersion(9)), "{err}");
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = from_bytes::<(String, Vec<u64>, Option<bool>)>(&bytes);
        }
    }
}
