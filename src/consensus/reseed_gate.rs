//! The vote gate of a re-seeding node.
//!
//! A node whose log was moved aside by `quorate recover --reseed` must not vote until it has
//! caught up: it would grant its vote to a candidate that lacks entries the cluster committed
//! (Raft's up-to-date check compares against its own, now empty, log), and it may have
//! forgotten a vote it gave earlier in the current term. While the marker file exists the
//! transport answers vote and pre-vote requests with a refusal (see
//! [`crate::rules::may_vote`]) and the node does not campaign. The daemon's re-seed watcher
//! removes the marker and clears the flag once the node has caught up.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The marker file in the data dir while a re-seeded node catches up.
pub const RESEED_MARKER: &str = "RESEEDING";

/// Whether this node is re-seeding (refuses votes). Shared by the transport, the early
/// elections and the re-seed watcher.
#[derive(Clone, Debug, Default)]
pub struct ReseedFlag(Arc<AtomicBool>);

impl ReseedFlag {
    /// Set when the data dir holds the marker.
    pub fn from_data_dir(data_dir: &Path) -> ReseedFlag {
        ReseedFlag(Arc::new(AtomicBool::new(
            data_dir.join(RESEED_MARKER).exists(),
        )))
    }

    pub fn active(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Lets the node vote again (after its marker was removed).
    pub fn clear(&self) {
        self.0.store(false, Ordering::Release);
    }
}
