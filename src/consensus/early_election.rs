//! The bound on early elections from the heartbeat detector.
//!
//! openraft's own election timer fires at a random point in `[min, max)` after the leader went
//! quiet, while voters refuse votes until their leader lease (`election_timeout_max`) runs out.
//! So a first campaign often lands inside the lease, is refused, and the next try comes a whole
//! timeout later. The detector knows better: when it sees the leader dead on every link, each
//! eligible voter schedules one pre-vote campaign for the moment the lease runs out (who and
//! when: [`crate::rules::election`]). Pre-vote means a false alarm bumps no term, and voters
//! still refuse while their lease holds (safety rule 3 is untouched: this only removes idle
//! waiting). This module bounds how often that happens.

use std::time::{Duration, Instant};

use crate::types::NodeId;

/// Early campaigns allowed per (leader, term): a first pre-vote can still meet a voter whose
/// lease has a few milliseconds left (its last append arrived a little later than our last
/// heartbeat), so a couple of retries close the gap before openraft's own timer would.
pub const MAX_EARLY_CAMPAIGNS: u32 = 3;

/// Limits early campaigns to [`MAX_EARLY_CAMPAIGNS`] per (leader, term), at least `retry`
/// apart; openraft's own election timer covers everything after that.
#[derive(Debug)]
pub struct CampaignGuard {
    retry: Duration,
    fired_for: Option<(NodeId, u64)>,
    attempts: u32,
    last: Option<Instant>,
}

impl CampaignGuard {
    pub fn new(retry: Duration) -> Self {
        CampaignGuard {
            retry,
            fired_for: None,
            attempts: 0,
            last: None,
        }
    }

    /// True when a campaign may start now for this (leader, term).
    pub fn should_fire(&mut self, leader: NodeId, term: u64, now: Instant) -> bool {
        if self.fired_for != Some((leader, term)) {
            self.fired_for = Some((leader, term));
            self.attempts = 0;
            self.last = None;
        }
        if self.attempts >= MAX_EARLY_CAMPAIGNS {
            return false;
        }
        if let Some(last) = self.last {
            if now.saturating_duration_since(last) < self.retry {
                return false;
            }
        }
        self.attempts += 1;
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_allows_a_few_spaced_retries_per_leader_and_term() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut g = CampaignGuard::new(ms(20));
        assert!(g.should_fire(1, 5, t0));
        assert!(!g.should_fire(1, 5, t0 + ms(5)), "too soon");
        assert!(g.should_fire(1, 5, t0 + ms(25)));
        assert!(g.should_fire(1, 5, t0 + ms(50)));
        assert!(
            !g.should_fire(1, 5, t0 + ms(500)),
            "at most MAX_EARLY_CAMPAIGNS"
        );
        assert!(
            g.should_fire(1, 6, t0 + ms(501)),
            "a new term starts afresh"
        );
        assert!(g.should_fire(2, 6, t0 + ms(502)));
    }
}
