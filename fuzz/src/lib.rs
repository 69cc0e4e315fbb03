//! Helpers shared by the fuzz targets in `fuzz_targets/` (one per decoder). A target panics
//! when a decoder panics or misbehaves (accepts what it must refuse, or decodes something
//! that does not survive re-encoding); libFuzzer then keeps the input in `artifacts/`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use serde::Serialize;

use quorate::consensus::codec;
use quorate::consensus::secure::{self, RaftKeys, NOISE_TAG_BYTES};

pub use futures::executor::block_on;

/// Keys of the fuzzed node (current and previous secret) and of the peer.
pub const K_CURRENT: [u8; 32] = [0x11; 32];
pub const K_PREVIOUS: [u8; 32] = [0x22; 32];
pub const CLUSTER_ID: u64 = 0x5eed;

/// A value a decoder accepted re-encodes, and that encoding decodes to itself again.
pub fn stable<T: Serialize + DeserializeOwned + Debug>(value: &T) {
    let once = match codec::to_bytes(value) {
        Ok(b) => b,
        Err(e) => panic!("decoded value {value:?} does not re-encode: {e}"),
    };
    let back: T = match codec::from_bytes(&once) {
        Ok(v) => v,
        Err(e) => panic!("re-encoding of {value:?} does not decode: {e}"),
    };
    match codec::to_bytes(&back) {
        Ok(twice) => assert_eq!(once, twice, "unstable encoding of {value:?}"),
        Err(e) => panic!("{back:?} does not re-encode: {e}"),
    }
}

/// An in-memory byte source that the target refills; empty reads as end of stream.
#[derive(Clone, Default)]
pub struct Feed(Rc<RefCell<VecDeque<u8>>>);

impl Feed {
    pub fn set(&self, bytes: &[u8]) {
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

/// Runs the real Noise handshake in memory; returns (peer session, node session).
pub fn secure_pair() -> (snow::TransportState, snow::TransportState) {
    let keys = RaftKeys::new(K_CURRENT, None);
    block_on(async {
        let (a, b) = tokio::io::duplex(1024);
        let (mut ar, mut aw) = tokio::io::split(a);
        let (mut br, mut bw) = tokio::io::split(b);
        let (client, server) = futures::join!(
            secure::initiate(&mut ar, &mut aw, &K_CURRENT, CLUSTER_ID),
            secure::respond(&mut br, &mut bw, &keys, CLUSTER_ID)
        );
        match (client, server) {
            (Ok(c), Ok((s, _))) => (c, s),
            (c, s) => panic!("handshake failed: {:?} / {:?}", c.err(), s.err()),
        }
    })
}

/// One Noise transport message as it goes on the wire (`len: u16 BE | message`).
pub fn seal_message(peer: &mut snow::TransportState, plain: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 2 + plain.len() + NOISE_TAG_BYTES];
    let n = match peer.write_message(plain, &mut out[2..]) {
        Ok(n) => n,
        Err(e) => panic!("sealing failed: {e}"),
    };
    let len = match u16::try_from(n) {
        Ok(l) => l,
        Err(_) => panic!("message of {n} bytes does not fit a u16 length"),
    };
    out[..2].copy_from_slice(&len.to_be_bytes());
    out.truncate(2 + n);
    out
}
