//! Sealed heartbeats (`heartbeat::seal::Sealer::open`): bytes nobody sealed never open, and
//! bytes a key holder sealed get exactly the inner decoder's verdict on the plaintext.
#![no_main]

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use libfuzzer_sys::fuzz_target;
use quorate::heartbeat::seal::{KeySlot, OpenError, Sealer, SEALED_MAGIC, SEAL_VERSION};
use quorate::heartbeat::wire::{self, MAX_DATAGRAM_BYTES};
use quorate_fuzz::{K_CURRENT, K_PREVIOUS};

const NONCE: [u8; 24] = [7; 24];

fuzz_target!(|data: &[u8]| {
    let s = Sealer::new(&K_CURRENT, Some(&K_PREVIOUS));
    if let Ok(opened) = s.open(data) {
        panic!("forged datagram opened as {opened:?}");
    }
    let cipher = XChaCha20Poly1305::new((&K_PREVIOUS).into());
    let mut sealed = SEALED_MAGIC.to_vec();
    sealed.push(SEAL_VERSION);
    let ct = match cipher.encrypt(
        XNonce::from_slice(&NONCE),
        Payload {
            msg: data,
            aad: &sealed[..],
        },
    ) {
        Ok(ct) => ct,
        Err(e) => panic!("sealing failed: {e}"),
    };
    sealed.extend_from_slice(&NONCE);
    sealed.extend_from_slice(&ct);
    match s.open(&sealed) {
        Ok((hb, slot)) => {
            assert_eq!(slot, KeySlot::Previous);
            assert_eq!(wire::decode(data), Ok(hb));
        }
        Err(OpenError::Inner(e)) => assert_eq!(wire::decode(data), Err(e)),
        Err(OpenError::TooLong { len }) => assert!(len > MAX_DATAGRAM_BYTES),
        Err(other) => panic!("authenticated datagram refused: {other}"),
    }
});
