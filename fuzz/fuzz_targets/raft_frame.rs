//! Raft frames (`consensus::codec`): frame bodies as requests and responses, and the bytes as
//! a plaintext stream of frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorate::consensus::codec::{self, CodecError, MAX_FRAME_BYTES};
use quorate::consensus::network::{RpcRequest, RpcResponse};
use quorate_fuzz::{block_on, stable};

/// Frames read from one input at most.
const MAX_FRAMES_PER_INPUT: usize = 16;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = codec::decode_frame_body::<RpcRequest>(data) {
        stable(&v);
    }
    if let Ok(v) = codec::decode_frame_body::<RpcResponse>(data) {
        stable(&v);
    }
    let mut stream = data;
    for _ in 0..MAX_FRAMES_PER_INPUT {
        match block_on(codec::read_frame::<_, RpcRequest>(&mut stream)) {
            Ok(Some(v)) => stable(&v),
            Ok(None) => break,
            Err(CodecError::FrameTooLarge { len, .. }) => {
                assert!(len > MAX_FRAME_BYTES);
                break;
            }
            Err(_) => break,
        }
    }
});
