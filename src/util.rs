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

/// Whether a process with this pid runs: it exists (one of another user's counts) and is
/// not a zombie its parent has not reaped yet (a killed postmaster's parent is init, which
/// may reap it much later; until then `kill(pid, 0)` still succeeds).
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks the pid.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name, which may hold spaces and parentheses.
            let rest = stat.get(stat.rfind(')')? + 1..)?;
            rest.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod process_tests {
    use super::process_alive;

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(process_alive(std::process::id() as i32));
        assert!(!process_alive(0));
        assert!(!process_alive(-1));
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id() as i32;
        // Exited but not reaped: a zombie, which does not count as alive.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_alive(pid) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            !process_alive(pid),
            "an exited, unreaped child counts as gone"
        );
        child.wait().expect("reap");
        assert!(!process_alive(pid));
    }
}

/// A byte count for people: `812 B`, `4.0 KiB`, `1.2 MiB`, `3.4 GiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}
