//! Raft frames inside the Noise channel (`consensus::secure::FrameConn::recv`): bytes nobody
//! sealed never yield a frame; the same bytes sealed by the peer decode as a frame would, and
//! the session stays in step (a genuine frame still goes through after each input).
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use quorate::consensus::codec::{self, CodecError};
use quorate::consensus::network::RpcRequest;
use quorate::consensus::secure::{FrameConn, MAX_CHUNK_PLAINTEXT_BYTES};
use quorate_fuzz::{block_on, seal_message, secure_pair, stable, Feed};

struct Session {
    peer: snow::TransportState,
    node: FrameConn<Feed, tokio::io::Sink>,
    feed: Feed,
}

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

fn session() -> Session {
    SESSION.with(|s| s.borrow_mut().take()).unwrap_or_else(|| {
        let (peer, node) = secure_pair();
        let feed = Feed::default();
        Session {
            peer,
            node: FrameConn::secure(feed.clone(), tokio::io::sink(), node),
            feed,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let mut s = session();
    s.feed.set(data);
    let got = block_on(s.node.recv::<RpcRequest>());
    assert!(
        !matches!(got, Ok(Some(_))),
        "unsealed bytes read as a frame: {got:?}"
    );
    if !data.is_empty() && data.len() <= MAX_CHUNK_PLAINTEXT_BYTES {
        let sealed = seal_message(&mut s.peer, data);
        s.feed.set(&sealed);
        match block_on(s.node.recv::<RpcRequest>()) {
            Ok(Some(v)) => {
                let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
                assert_eq!(len, data.len() - 4, "frame of another length accepted");
                stable(&v);
            }
            Ok(None) => panic!("an authenticated message read as end of stream"),
            Err(CodecError::FrameTooLarge { .. } | CodecError::EmptyFrame) => {}
            Err(CodecError::Channel(_) | CodecError::Io(_)) => {}
            Err(CodecError::UnsupportedVersion(_) | CodecError::Decode(_)) => {}
            Err(other) => panic!("unexpected error kind: {other}"),
        }
    }
    let hello = RpcRequest::Hello {
        cluster_id: 1,
        from: 2,
        to: 3,
    };
    let frame = match codec::encode_frame(&hello) {
        Ok(f) => f,
        Err(e) => panic!("cannot encode a hello: {e}"),
    };
    let sealed = seal_message(&mut s.peer, &frame);
    s.feed.set(&sealed);
    match block_on(s.node.recv::<RpcRequest>()) {
        Ok(Some(RpcRequest::Hello {
            cluster_id: 1,
            from: 2,
            to: 3,
        })) => {}
        other => panic!("session out of step: genuine frame read as {other:?}"),
    }
    SESSION.with(|slot| *slot.borrow_mut() = Some(s));
});
