//! Small helpers shared across layers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Logs a warning at most once per `interval` per key, counting what it suppressed, so a flood
/// of bad input cannot turn into a flood of log lines.
pub struct RateLimitedLog {
    interval: Duration,
    last: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl RateLimitedLog {
    pub fn new(interval: Duration) -> Self {
        RateLimitedLog {
            interval,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the number of suppressed occurrences to report if this one should be logged.
    fn admit(&self, key: &'static str, now: Instant) -> Option<u64> {
        let Ok(mut map) = self.last.lock() else {
            return Some(0);
        };
        match map.get_mut(key) {
            Some((at, suppressed)) if now.duration_since(*at) < self.interval => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let n = *suppressed;
                *at = now;
                *suppressed = 0;
                Some(n)
            }
            None => {
                map.insert(key, (now, 0));
                Some(0)
            }
        }
    }

    pub fn warn(&self, key: &'static str, msg: std::fmt::Arguments<'_>) {
        if let Some(suppressed) = self.admit(key, Instant::now()) {
            if suppressed > 0 {
                tracing::warn!(suppressed, "{msg}");
            } else {
                tracing::warn!("{msg}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_once_per_interval_and_counts_the_rest() {
        let l = RateLimitedLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.admit("k", t0), Some(0));
        assert_eq!(l.admit("k", t0 + Duration::from_secs(1)), None);
        assert_eq!(l.admit("k", t0 + Duration::from_secs(2)), None);
        assert_eq!(l.admit("other", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(l.admit("k", t0 + Duration::from_secs(11)), Some(2));
    }
}
