//! Config files (`config::Config::from_str_at`): a config, or problems that each say where,
//! what and how to fix, and never an internal error.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use quorate::config::Config;

fuzz_target!(|data: &[u8]| {
    // The loader refuses non-UTF-8 before parsing; lossy conversion keeps the rest reachable.
    let text = String::from_utf8_lossy(data);
    match Config::from_str_at(&text, Path::new("/etc/quorate/quorate.toml")) {
        Ok(c) => {
            assert_eq!(c.peers.iter().filter(|p| p.id == c.node.id).count(), 1);
            assert_eq!(c.self_peer().id, c.node.id);
        }
        Err(e) => {
            assert!(!e.problems.is_empty(), "rejected without a problem");
            for p in &e.problems {
                assert!(
                    !p.key.is_empty() && !p.message.is_empty() && !p.fix.is_empty(),
                    "{p:?}"
                );
                assert_ne!(
                    p.key, "(internal)",
                    "validation reached an internal error: {p}"
                );
            }
        }
    }
});
