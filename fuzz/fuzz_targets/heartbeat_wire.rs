//! Heartbeat datagrams (`heartbeat::wire::decode`): only the canonical encoding of a
//! heartbeat is accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorate::heartbeat::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(hb) = wire::decode(data) {
        match wire::encode(&hb) {
            Ok(again) => assert_eq!(again, data, "non-canonical datagram accepted as {hb:?}"),
            Err(e) => panic!("decoded heartbeat {hb:?} does not re-encode: {e}"),
        }
    }
});
