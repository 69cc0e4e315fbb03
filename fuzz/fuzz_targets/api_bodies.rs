//! HTTP API inputs: control request bodies (`api::control::decode_body`), KV values in JSON
//! (`cluster::kv::decode_value_from_json`), KV keys (`cluster::kv::check_key`) and the KV
//! answers the CLI decodes (`KvItem`, `KvList`).
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use quorate::api::control::{decode_body, FailbackBody, MaintenanceBody, SwitchoverBody};
use quorate::api::kv::{KvItem, KvList};
use quorate::cluster::kv::{
    check_key, decode_value_from_json, ENCODING_BASE64, ENCODING_UTF8, MAX_KEY_BYTES_CEILING,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn body<T: Serialize + DeserializeOwned + Default + Debug>(data: &[u8]) {
    if let Ok(v) = decode_body::<T>(data) {
        let json = match serde_json::to_vec(&v) {
            Ok(j) => j,
            Err(e) => panic!("{v:?} does not encode: {e}"),
        };
        match decode_body::<T>(&json) {
            Ok(back) => assert_eq!(format!("{back:?}"), format!("{v:?}")),
            Err(e) => panic!("{v:?} does not decode after encoding: {e}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    body::<MaintenanceBody>(data);
    body::<SwitchoverBody>(data);
    body::<FailbackBody>(data);
    if let Ok(item) = serde_json::from_slice::<KvItem>(data) {
        let _ = decode_value_from_json(&item.value, &item.encoding);
    }
    let _ = serde_json::from_slice::<KvList>(data);
    let text = String::from_utf8_lossy(data);
    for encoding in [ENCODING_UTF8, ENCODING_BASE64] {
        if let Ok(bytes) = decode_value_from_json(&text, encoding) {
            if encoding == ENCODING_UTF8 {
                assert_eq!(bytes, text.as_bytes());
            }
        }
    }
    if check_key(&text, MAX_KEY_BYTES_CEILING).is_ok() {
        assert!(!text.is_empty() && !text.starts_with('/'));
        assert!(text
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".."));
        assert!(!text.chars().any(|c| c.is_ascii_control()));
    }
});
