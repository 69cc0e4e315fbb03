//! Early elections from the heartbeat detector.
//!
//! openraft's own election timer fires at a random point in `[min, max)` after the leader went
//! quiet, while voters refuse votes until their leader lease (`election_timeout_max`) runs out.
//! So a first campaign often lands inside the lease, is refused, and the next try comes a whole
//! timeout later. The detector knows better: when it sees the leader dead on every link, each
//! eligible voter schedules one pre-vote campaign for the moment the lease runs out, staggered
//! by candidate rank so the best candidate goes first and votes do not split. Pre-vote means a
//! false alarm bumps no term, and voters still refuse while their lease holds (safety rule 3
//! is untouched: this only removes idle waiting).

use std::time::{Duration, Instant};

use crate::types::NodeId;

/// What the scheduler needs to know about one possible candidate (including this node).
#[derive(Clone, Debug, PartialEq)]
pub struct Contender {
    pub id: NodeId,
    pub priority: u32,
    pub applied_index: u64,
}

/// Rank of `me` among `contenders` (0 = best): priority desc, applied index desc, id asc.
/// `None` when `me` is not among them.
pub fn rank(me: NodeId, contenders: &[Contender]) -> Option<usize> {
    let mut sorted: Vec<&Contender> = contenders.iter().collect();
    sorted.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(b.applied_index.cmp(&a.applied_index))
            .then(a.id.cmp(&b.id))
    });
    sorted.iter().position(|c| c.id == me)
}

/// When this node should start a pre-vote campaign: the leader was last heard at
/// `leader_last_heard`; voters' leases run `lease` from then; rank `k` waits `k × stagger`
/// more, plus a small `margin` for clock granularity.
pub fn campaign_at(
    leader_last_heard: Instant,
    lease: Duration,
    my_rank: usize,
    stagger: Duration,
    margin: Duration,
) -> Instant {
    leader_last_heard + lease + margin + stagger * (my_rank as u32)
}

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

    fn c(id: NodeId, priority: u32, applied: u64) -> Contender {
        Contender {
            id,
            priority,
            applied_index: applied,
        }
    }

    #[test]
    fn rank_orders_by_priority_then_log_then_id() {
        let cs = vec![c(1, 100, 10), c(2, 100, 12), c(3, 200, 1), c(4, 100, 12)];
        assert_eq!(rank(3, &cs), Some(0));
        assert_eq!(rank(2, &cs), Some(1));
        assert_eq!(rank(4, &cs), Some(2));
        assert_eq!(rank(1, &cs), Some(3));
        assert_eq!(rank(9, &cs), None);
    }

    #[test]
    fn campaign_waits_for_the_lease_and_staggers_by_rank() {
        let t0 = Instant::now();
        let lease = Duration::from_millis(300);
        let stagger = Duration::from_millis(10);
        let m = Duration::from_millis(2);
        assert_eq!(
            campaign_at(t0, lease, 0, stagger, m),
            t0 + Duration::from_millis(302)
        );
        assert_eq!(
            campaign_at(t0, lease, 2, stagger, m),
            t0 + Duration::from_millis(322)
        );
    }

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
