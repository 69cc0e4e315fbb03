//! Stored Raft log payloads (`consensus::codec::from_bytes`, as `log_store` reads entries).
#![no_main]

use libfuzzer_sys::fuzz_target;
use openraft::{BasicNode, EntryPayload};
use quorate::consensus::codec;
use quorate::consensus::types::Request;
use quorate_fuzz::stable;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = codec::from_bytes::<EntryPayload<Request, u64, BasicNode>>(data) {
        stable(&p);
    }
});
