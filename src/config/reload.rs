//! What SIGHUP may change in a running daemon, decided without IO: the log filter and the
//! hook settings. Everything else (addresses, members, timing, policy, storage, secrets)
//! shapes Raft, the lease or the data on disk, and changes only with a restart. A reload that
//! touches any of those is refused as a whole, so a half-applied config can never run.

use super::{Config, ResourceConfig};

/// The keys SIGHUP reloads, as operators write them.
pub const RELOADABLE: &[&str] = &[
    "log.level",
    "resource.promote",
    "resource.demote",
    "resource.monitor",
    "resource.fence",
    "resource.rejoin",
    "resource.follow",
    "resource.notify",
    "resource.start",
    "resource.stop",
    "resource.hook_timeout",
    "resource.monitor_interval",
    "resource.failure_threshold",
];

/// A reload that may go ahead: the reloadable keys whose value changed (possibly none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadPlan {
    pub changed: Vec<&'static str>,
}

/// A reload that must not go ahead: keys that only a restart can change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "reload refused, nothing applied: {} changed, and {} only with a restart \
     (`systemctl restart quorate`); undo {} in the file or restart. SIGHUP reloads only: {}",
    keys.join(", "),
    if keys.len() == 1 { "that takes effect" } else { "those take effect" },
    if keys.len() == 1 { "that change" } else { "those changes" },
    RELOADABLE.join(", ")
)]
pub struct ReloadRefused {
    pub keys: Vec<String>,
}

fn resource_reloadable(r: &ResourceConfig) -> [(&'static str, String); 12] {
    [
        ("resource.promote", format!("{:?}", r.promote)),
        ("resource.demote", format!("{:?}", r.demote)),
        ("resource.monitor", format!("{:?}", r.monitor)),
        ("resource.fence", format!("{:?}", r.fence)),
        ("resource.rejoin", format!("{:?}", r.rejoin)),
        ("resource.follow", format!("{:?}", r.follow)),
        ("resource.notify", format!("{:?}", r.notify)),
        ("resource.start", format!("{:?}", r.start)),
        ("resource.stop", format!("{:?}", r.stop)),
        ("resource.hook_timeout", format!("{:?}", r.hook_timeout)),
        (
            "resource.monitor_interval",
            format!("{:?}", r.monitor_interval),
        ),
        (
            "resource.failure_threshold",
            r.failure_threshold.to_string(),
        ),
    ]
}

/// Compares the running config with the newly loaded one.
pub fn plan(running: &Config, new: &Config) -> Result<ReloadPlan, ReloadRefused> {
    let mut fixed = Vec::new();
    let mut check = |key: &str, same: bool| {
        if !same {
            fixed.push(key.to_string());
        }
    };
    check("cluster", running.cluster == new.cluster);
    check("node", running.node == new.node);
    check("listen", running.listen == new.listen);
    check("peer", running.peers == new.peers);
    check("data_dir", running.data_dir == new.data_dir);
    check("secret_file", running.secret_file == new.secret_file);
    check(
        "previous_secret_file",
        running.previous_secret_file == new.previous_secret_file,
    );
    check(
        "preferred_primary",
        running.preferred_primary == new.preferred_primary,
    );
    check("profile", running.profile == new.profile);
    check("timing", running.timing == new.timing);
    check("failback", running.failback == new.failback);
    check("api", running.api == new.api);
    check("storage", running.storage == new.storage);
    let (a, b) = (&running.resource, &new.resource);
    check(
        "resource.local_restarts",
        a.local_restarts == b.local_restarts,
    );
    check(
        "resource.restart_window",
        a.restart_window == b.restart_window,
    );
    check("resource.fencing", a.fencing == b.fencing);
    check(
        "resource.max_lag_on_failover",
        a.max_lag_on_failover == b.max_lag_on_failover,
    );
    check(
        "resource.max_service_lag_bytes",
        a.max_service_lag_bytes == b.max_service_lag_bytes,
    );
    if !fixed.is_empty() {
        return Err(ReloadRefused { keys: fixed });
    }
    let mut changed = Vec::new();
    if running.log != new.log {
        changed.push("log.level");
    }
    for ((key, old), (_, new)) in resource_reloadable(a)
        .into_iter()
        .zip(resource_reloadable(b))
    {
        if old != new {
            changed.push(key);
        }
    }
    Ok(ReloadPlan { changed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
cluster = "c"
data_dir = "/var/lib/quorate"
[node]
id = 1
role = "voter"
[listen]
raft = "127.0.0.1:7001"
heartbeat = "127.0.0.1:7002"
api = "127.0.0.1:7003"
[[peer]]
id = 1
role = "voter"
raft = "127.0.0.1:7001"
heartbeat = ["127.0.0.1:7002"]
api = "127.0.0.1:7003"
"#;

    fn load(extra: &str) -> Config {
        let text = format!("{BASE}{extra}");
        Config::from_str_at(&text, Path::new("/etc/quorate/quorate.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn log_level_and_hook_settings_reload() {
        let old = load("");
        let new = load(
            "[log]\nlevel = \"debug\"\n[resource]\nmonitor = \"/bin/true\"\nhook_timeout = \"9s\"\nfailure_threshold = 5\n",
        );
        let p = plan(&old, &new).expect("reloadable");
        assert_eq!(
            p.changed,
            vec![
                "log.level",
                "resource.monitor",
                "resource.hook_timeout",
                "resource.failure_threshold"
            ]
        );
        assert_eq!(plan(&old, &old).expect("same").changed, Vec::<&str>::new());
    }

    #[test]
    fn anything_else_is_refused_naming_every_key() {
        let old = load("");
        let new = load(
            "[timing]\nlease = \"120ms\"\n[resource]\nfencing = \"off\"\nmonitor = \"/bin/true\"\n",
        );
        let e = plan(&old, &new).expect_err("timing is not reloadable");
        assert_eq!(e.keys, vec!["timing", "resource.fencing"]);
        let text = e.to_string();
        assert!(text.contains("timing, resource.fencing"), "{text}");
        assert!(text.contains("systemctl restart quorate"), "{text}");
        assert!(text.contains("nothing applied"), "{text}");
    }
}
