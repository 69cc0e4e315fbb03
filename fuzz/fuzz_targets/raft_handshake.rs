//! The Noise handshake (`consensus::secure::respond` / `initiate`).
//! - The input as a first message: a stranger's bytes never complete the handshake, and the
//!   responder never answers them.
//! - The input as damage (XOR, extra bytes appended) to a genuine first message: accepted
//!   only while the message itself is intact.
//! - The input as the answer to an initiator: never accepted (it cannot know the fresh key).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use quorate::consensus::secure::{self, RaftKeys, SecureError};
use quorate_fuzz::{block_on, CLUSTER_ID, K_CURRENT, K_PREVIOUS};

/// A genuine first message under the current key, made once.
fn genuine() -> &'static [u8] {
    static FIRST: OnceLock<Vec<u8>> = OnceLock::new();
    FIRST.get_or_init(|| {
        let mut first = Vec::new();
        let mut nothing: &[u8] = &[];
        match block_on(secure::initiate(
            &mut nothing,
            &mut first,
            &K_CURRENT,
            CLUSTER_ID,
        )) {
            Err(SecureError::ClosedInHandshake) => first,
            other => panic!("initiator without an answer: {:?}", other.err()),
        }
    })
}

fn respond(input: &[u8]) -> (bool, Vec<u8>) {
    let keys = RaftKeys::new(K_CURRENT, Some(K_PREVIOUS));
    let mut answer = Vec::new();
    let ok = block_on(secure::respond(
        &mut &input[..],
        &mut answer,
        &keys,
        CLUSTER_ID,
    ))
    .is_ok();
    (ok, answer)
}

fuzz_target!(|data: &[u8]| {
    let genuine = genuine();
    let (ok, answer) = respond(data);
    if data.starts_with(genuine) {
        assert!(ok && !answer.is_empty(), "genuine first message refused");
    } else {
        assert!(!ok, "a stranger's handshake was accepted");
        assert!(answer.is_empty(), "the responder answered a stranger");
    }
    let mut damaged = genuine.to_vec();
    for (i, b) in data.iter().enumerate() {
        match damaged.get_mut(i) {
            Some(slot) => *slot ^= b,
            None => damaged.push(*b),
        }
    }
    let (ok, answer) = respond(&damaged);
    if damaged.starts_with(genuine) {
        assert!(ok && !answer.is_empty(), "intact first message refused");
    } else {
        assert!(!ok, "a damaged handshake was accepted");
        assert!(
            answer.is_empty(),
            "the responder answered a damaged handshake"
        );
    }
    let mut first = Vec::new();
    let res = block_on(secure::initiate(
        &mut &data[..],
        &mut first,
        &K_CURRENT,
        CLUSTER_ID,
    ));
    assert!(res.is_err(), "a stranger's handshake answer was accepted");
});
