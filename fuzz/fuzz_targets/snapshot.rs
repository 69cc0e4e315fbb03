//! Snapshots (`consensus::snapshot::decode`): the bytes as a snapshot file, and as the body of
//! a well-formed header (right checksum and length), so the body decoder sees them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorate::consensus::snapshot::{self, SnapshotError};

const ORIGIN: &str = "fuzz";

fn check(bytes: &[u8]) {
    match snapshot::decode(bytes, ORIGIN) {
        Ok(body) => {
            let again = match snapshot::encode(&body) {
                Ok(b) => b,
                Err(e) => panic!("accepted snapshot does not re-encode: {e}"),
            };
            match snapshot::decode(&again, ORIGIN) {
                Ok(back) => {
                    assert_eq!(back.state, body.state);
                    assert_eq!(back.meta, body.meta);
                }
                Err(e) => panic!("re-encoded snapshot refused: {e}"),
            }
        }
        Err(SnapshotError::Corrupt { path, .. }) => assert_eq!(path, ORIGIN),
        Err(other) => panic!("unexpected error kind: {other}"),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut framed = b"QRSN\x01".to_vec();
    framed.extend_from_slice(&crc32fast::hash(data).to_be_bytes());
    framed.extend_from_slice(&(data.len() as u64).to_be_bytes());
    framed.extend_from_slice(data);
    check(&framed);
});
