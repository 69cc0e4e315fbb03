//! Duration strings (`config::parse_duration`): what parses prints and parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorate::config::{format_duration, parse_duration, MAX_DURATION_TEXT_LEN};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_duration(&text) {
        Ok(d) => {
            assert!(text.trim().len() <= MAX_DURATION_TEXT_LEN);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        Err(why) => assert!(!why.is_empty()),
    }
});
