//! Tests for loading and validation. Each rejection test asserts the Problem's key, so a
//! check that reports the wrong place (or nothing) fails.

use super::*;
use crate::types::NodeRole;
use std::time::Duration;

const PATH: &str = "/etc/quorate/node1.toml";

/// A valid 3-voter cluster seen from node 1.
const THREE_NODES: &str = r#"
cluster = "demo"
data_dir = "data/node1"

[node]
id = 1
role = "voter"

[listen]
raft = "127.0.0.1:7411"
heartbeat = "127.0.0.1:7421"
api = "127.0.0.1:7401"

[[peer]]
id = 1
role = "voter"
raft = "127.0.0.1:7411"
heartbeat = ["127.0.0.1:7421"]
api = "127.0.0.1:7401"

[[peer]]
id = 2
role = "voter"
raft = "127.0.0.1:7412"
heartbeat = ["127.0.0.1:7422"]
api = "127.0.0.1:7402"

[[peer]]
id = 3
role = "voter"
raft = "127.0.0.1:7413"
heartbeat = ["127.0.0.1:7423"]
api = "127.0.0.1:7403"
"#;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Replaces exactly one occurrence of `from` (a test bug if it is absent or repeated).
fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "edit target {from:?} must occur once"
    );
    text.replacen(from, to, 1)
}

/// THREE_NODES with `extra` inserted before `[node]` (top-level keys) or appended (tables).
fn with_top(extra: &str) -> String {
    edit(THREE_NODES, "[node]", &format!("{extra}\n[node]"))
}

fn with_table(extra: &str) -> String {
    format!("{THREE_NODES}\n{extra}\n")
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_str_at(text, Path::new(PATH))
}

fn ok(text: &str) -> Config {
    match load(text) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// Asserts the config is rejected with a problem at `key` whose message contains `needle`.
fn rejected(text: &str, key: &str, needle: &str) -> ConfigError {
    let err = match load(text) {
        Ok(_) => panic!("expected a problem at {key}, but the config was accepted"),
        Err(e) => e,
    };
    assert!(
        err.problems
            .iter()
            .any(|p| p.key == key && p.message.contains(needle)),
        "expected a problem at {key:?} mentioning {needle:?}, got:\n{err}"
    );
    for p in &err.problems {
        assert!(!p.fix.is_empty(), "problem without a fix: {p}");
    }
    err
}

#[test]
fn valid_three_node_config_loads_with_lan_defaults() {
    let c = ok(THREE_NODES);
    assert_eq!(c.cluster, "demo");
    assert_eq!(c.profile, Profile::Lan);
    assert_eq!(c.timing, Profile::Lan.timing());
    assert_eq!(c.timing.heartbeat_interval, ms(50));
    assert_eq!(c.timing.suspect_after, ms(150));
    assert_eq!(c.timing.dead_after, ms(300));
    assert_eq!(c.timing.raft_heartbeat, ms(50));
    assert_eq!(c.timing.election_timeout_min, ms(150));
    assert_eq!(c.timing.election_timeout_max, ms(300));
    assert_eq!(c.timing.lease, ms(100));
    assert_eq!(
        c.node,
        NodeSection {
            id: 1,
            role: NodeRole::Voter,
            priority: DEFAULT_PRIORITY
        }
    );
    assert_eq!(c.peers.len(), 3);
    assert_eq!(
        c.peers[1].heartbeat,
        vec!["127.0.0.1:7422".parse().unwrap()]
    );
    assert_eq!(c.self_peer().id, 1);
    assert_eq!(c.self_peer().raft, c.listen.raft);
    assert_eq!(c.voters().count(), 3);
    assert_eq!(c.quorum_size(), 2);
    assert!(!c.is_single_node_dev());
    assert_eq!(c.peer(3).map(|p| p.api.port()), Some(7403));
    assert!(c.peer(4).is_none());
    assert_eq!(c.resource.failure_threshold, 3);
    assert_eq!(c.resource.local_restarts, 1);
    assert_eq!(c.resource.hook_timeout, Duration::from_secs(10));
    assert_eq!(c.resource.restart_window, Duration::from_secs(300));
    assert_eq!(c.resource.fencing, FencingMode::BestEffort);
    assert_eq!(c.resource.max_lag_on_failover, 1000);
    assert_eq!(c.resource.promote, None);
    assert_eq!(c.failback.mode, FailbackMode::Manual);
    assert_eq!(c.failback.delay, Duration::from_secs(60));
    assert_eq!(c.failback.verify_checks, 3);
    assert_eq!(c.storage.snapshot_every, 5000);
    assert_eq!(c.storage.keep_logs, 1000);
    assert_eq!(c.storage.max_value_bytes, 1_048_576);
    assert_eq!(c.preferred_primary, None);
    assert_eq!(c.source, PathBuf::from(PATH));
    let summary = c.summary();
    assert!(
        summary.contains("lease 100ms (+15ms clock-drift margin)"),
        "{summary}"
    );
    assert!(summary.contains("3 voting, quorum 2"), "{summary}");
    assert_eq!(summary.lines().count(), 1, "{summary}");
}

#[test]
fn overrides_apply() {
    let text = with_top("preferred_primary = 2\nsecret_file = \"/run/secret\"")
        + "\n[timing]\nlease = \"120ms\"\nelection_timeout_max = \"1s\"\n\
           [resource]\npromote = \"hooks/p.sh\"\nhook_timeout = \"2.5s\"\nfailure_threshold = 5\nfencing = \"required\"\nfence = \"/usr/bin/fence\"\n\
           [failback]\nmode = \"auto\"\ncommit = \"manual\"\nverify_checks = 4\n\
           [api]\ntoken_file = \"token\"\n\
           [storage]\nsnapshot_every = 100\nmax_value_bytes = 4096\n";
    let c = ok(&text);
    assert_eq!(c.timing.lease, ms(120));
    assert_eq!(c.timing.election_timeout_max, ms(1000));
    assert_eq!(
        c.timing.election_timeout_min,
        ms(150),
        "untouched values keep the profile's"
    );
    assert_eq!(c.preferred_primary, Some(2));
    assert_eq!(c.secret_file, Some(PathBuf::from("/run/secret")));
    assert_eq!(
        c.resource.promote,
        Some(PathBuf::from("/etc/quorate/hooks/p.sh"))
    );
    assert_eq!(c.resource.fence, Some(PathBuf::from("/usr/bin/fence")));
    assert_eq!(c.resource.hook_timeout, ms(2500));
    assert_eq!(c.resource.failure_threshold, 5);
    assert_eq!(c.resource.fencing, FencingMode::Required);
    assert_eq!(c.failback.mode, FailbackMode::Auto);
    assert_eq!(c.failback.commit, FailbackCommit::Manual);
    assert_eq!(c.failback.verify_checks, 4);
    assert_eq!(c.api.token_file, Some(PathBuf::from("/etc/quorate/token")));
    assert_eq!(c.storage.snapshot_every, 100);
    assert_eq!(c.storage.max_value_bytes, 4096);
    assert_eq!(c.storage.keep_logs, 1000);
}

#[test]
fn fast_profile_values() {
    let c = ok(&with_top("profile = \"fast\""));
    assert_eq!(c.profile, Profile::Fast);
    let t = c.timing;
    assert_eq!(
        (
            t.heartbeat_interval,
            t.suspect_after,
            t.dead_after,
            t.raft_heartbeat
        ),
        (ms(20), ms(60), ms(120), ms(20))
    );
    assert_eq!(
        (t.election_timeout_min, t.election_timeout_max, t.lease),
        (ms(60), ms(120), ms(40))
    );
}

#[test]
fn both_profiles_satisfy_every_timing_rule() {
    for profile in [Profile::Lan, Profile::Fast] {
        let problems = validate::timing_problems(&profile.timing());
        assert!(problems.is_empty(), "{profile}: {problems:?}");
    }
}

#[test]
fn clock_drift_margin_is_ten_percent_with_a_floor() {
    assert_eq!(clock_drift_margin(ms(150)), ms(15));
    assert_eq!(clock_drift_margin(ms(60)), ms(6));
    assert_eq!(clock_drift_margin(ms(20)), CLOCK_DRIFT_MARGIN_MIN);
    // No overflow for any input.
    assert_eq!(clock_drift_margin(Duration::MAX), Duration::MAX / 100 * 10);
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node1.toml");
    std::fs::write(
        &file,
        edit(
            THREE_NODES,
            "data_dir = \"data/node1\"",
            "data_dir = \"data/node1\"\nsecret_file = \"keys/secret\"",
        ),
    )
    .unwrap();
    let c = Config::load(&file).unwrap();
    assert_eq!(c.data_dir, dir.path().join("data/node1"));
    assert_eq!(c.secret_file, Some(dir.path().join("keys/secret")));
    assert_eq!(c.source, file);

    let c = ok(&edit(THREE_NODES, "data/node1", "/var/lib/quorate"));
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/quorate"));
}

#[test]
fn a_relative_config_path_is_made_absolute() {
    let c = Config::from_str_at(THREE_NODES, Path::new("conf/node1.toml")).unwrap();
    assert!(c.source.is_absolute());
    assert!(c.data_dir.is_absolute());
    assert!(c.data_dir.ends_with("conf/data/node1"));
}

#[test]
fn heartbeat_accepts_a_single_string_and_several_links() {
    let c = ok(&edit(
        THREE_NODES,
        "heartbeat = [\"127.0.0.1:7422\"]",
        "heartbeat = \"127.0.0.1:7422\"",
    ));
    assert_eq!(c.peers[1].heartbeat.len(), 1);
    let c = ok(&edit(
        THREE_NODES,
        "heartbeat = [\"127.0.0.1:7422\"]",
        "heartbeat = [\"127.0.0.1:7422\", \"127.0.0.2:7422\"]",
    ));
    assert_eq!(c.peers[1].heartbeat.len(), 2);
}

#[test]
fn single_node_dev_mode_is_allowed() {
    let text = THREE_NODES
        .split("[[peer]]\nid = 2")
        .next()
        .unwrap_or_default();
    let c = ok(text);
    assert!(c.is_single_node_dev());
    assert_eq!(c.quorum_size(), 1);
}

#[test]
fn listen_may_be_unspecified_with_the_same_port() {
    let c = ok(&edit(
        THREE_NODES,
        "raft = \"127.0.0.1:7411\"\nheartbeat = \"",
        "raft = \"0.0.0.0:7411\"\nheartbeat = \"",
    ));
    assert!(c.listen.raft.ip().is_unspecified());
    assert_eq!(c.self_peer().raft.to_string(), "127.0.0.1:7411");
    // ... but not with a different port.
    rejected(
        &edit(
            THREE_NODES,
            "raft = \"127.0.0.1:7411\"\nheartbeat = \"",
            "raft = \"0.0.0.0:7499\"\nheartbeat = \"",
        ),
        "listen.raft",
        "7411",
    );
}

#[test]
fn witness_priority_and_learner_roles() {
    let text = edit(
        THREE_NODES,
        "id = 3\nrole = \"voter\"",
        "id = 3\nrole = \"witness\"",
    );
    let text = edit(
        &text,
        "id = 2\nrole = \"voter\"",
        "id = 2\nrole = \"voter\"\npriority = 50",
    );
    let text = format!("{text}\n[[peer]]\nid = 4\nrole = \"learner\"\nraft = \"127.0.0.1:7414\"\nheartbeat = \"127.0.0.1:7424\"\napi = \"127.0.0.1:7404\"\n");
    let c = ok(&text);
    assert_eq!(c.voters().map(|p| p.id).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(c.voting_members().count(), 3);
    assert_eq!(c.peer(2).map(|p| p.priority), Some(50));
    assert_eq!(c.peer(4).map(|p| p.role), Some(NodeRole::Learner));
}

#[test]
fn self_entry_inherits_node_priority() {
    let c = ok(&edit(
        THREE_NODES,
        "role = \"voter\"\n\n[listen]",
        "role = \"voter\"\npriority = 200\n\n[listen]",
    ));
    assert_eq!(c.node.priority, 200);
    assert_eq!(c.self_peer().priority, 200);
    assert_eq!(c.peer(2).map(|p| p.priority), Some(DEFAULT_PRIORITY));
}

// ---- rejections: syntax and schema ----

#[test]
fn rejects_toml_syntax_errors() {
    let err = rejected(
        &edit(THREE_NODES, "[listen]", "[listen"),
        "line 9",
        "syntax",
    );
    assert_eq!(err.problems.len(), 1);
}

#[test]
fn rejects_unknown_keys_naming_each() {
    let text = with_top("colour = \"blue\"");
    let text = edit(&text, "id = 2\n", "id = 2\nrafft = \"x\"\n");
    let text = text + "\n[timing]\nleese = \"1s\"\n";
    let err = rejected(&text, "colour", "unknown key `colour`");
    assert!(
        err.problems.iter().any(|p| p.key == "peer[1].rafft"),
        "{err}"
    );
    assert!(
        err.problems
            .iter()
            .any(|p| p.key == "timing.leese" && p.fix.contains("lease")),
        "{err}"
    );
    rejected(&with_table("[bogus]\nx = 1"), "bogus", "unknown key");
}

#[test]
fn reports_every_schema_problem_in_one_run() {
    // An unknown key, a wrongly typed required value, and two bad optional values further on:
    // each is found though serde stops at the first.
    let text = with_top("colour = \"blue\"");
    let text = edit(&text, "[\"127.0.0.1:7422\"]", "[\"127.0.0.1:7422\", 5]");
    let text = text + "\n[timing]\nlease = 100\n[failback]\nmode = \"automatic\"\n";
    let err = load(&text).unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "colour",
            "peer[1].heartbeat",
            "timing.lease",
            "failback.mode"
        ],
        "{err}"
    );
    assert!(err.problems[2].fix.contains("duration string"), "{err}");
}

#[test]
fn rejects_wrong_types_and_bad_enum_values() {
    rejected(
        &edit(THREE_NODES, "id = 3", "id = \"three\""),
        "peer[2].id",
        "invalid type",
    );
    rejected(
        &with_top("profile = \"slow\""),
        "profile",
        "unknown variant",
    );
    rejected(
        &edit(
            THREE_NODES,
            "id = 2\nrole = \"voter\"",
            "id = 2\nrole = \"boss\"",
        ),
        "peer[1].role",
        "unknown variant",
    );
    rejected(
        &with_table("[timing]\nlease = 100"),
        "timing.lease",
        "duration string",
    );
    rejected(
        &with_table("[resource]\nfencing = \"always\""),
        "resource.fencing",
        "unknown variant",
    );
}

#[test]
fn rejects_missing_required_keys() {
    rejected(
        &edit(
            THREE_NODES,
            "api = \"127.0.0.1:7401\"\n\n[[peer]]\nid = 1",
            "\n[[peer]]\nid = 1",
        ),
        "listen.api",
        "missing",
    );
    rejected(
        &edit(THREE_NODES, "cluster = \"demo\"\n", ""),
        "cluster",
        "missing",
    );
    rejected(
        &edit(THREE_NODES, "api = \"127.0.0.1:7402\"\n", ""),
        "peer[1].api",
        "missing",
    );
}

// ---- rejections: membership and addresses ----

#[test]
fn rejects_duplicate_peer_ids() {
    rejected(
        &edit(THREE_NODES, "id = 3", "id = 2"),
        "peer[2].id",
        "already used by peer[1]",
    );
}

#[test]
fn rejects_this_node_listed_twice() {
    rejected(
        &edit(THREE_NODES, "id = 3", "id = 1"),
        "peer[2].id",
        "this node's id",
    );
}

#[test]
fn rejects_duplicate_addresses() {
    rejected(
        &edit(
            THREE_NODES,
            "api = \"127.0.0.1:7402\"",
            "api = \"127.0.0.1:7401\"",
        ),
        "peer[1].api",
        "peer[0].api",
    );
    // Reuse across kinds counts too: peer 3's heartbeat on peer 2's raft address.
    rejected(
        &edit(THREE_NODES, "[\"127.0.0.1:7423\"]", "[\"127.0.0.1:7412\"]"),
        "peer[2].heartbeat",
        "peer[1].raft",
    );
}

#[test]
fn rejects_duplicate_listen_addresses() {
    rejected(
        &edit(
            THREE_NODES,
            "api = \"127.0.0.1:7401\"\n\n[[peer]]\nid = 1",
            "api = \"127.0.0.1:7411\"\n\n[[peer]]\nid = 1",
        ),
        "listen.api",
        "listen.raft",
    );
}

#[test]
fn rejects_bad_addresses_naming_the_key() {
    rejected(
        &edit(
            THREE_NODES,
            "raft = \"127.0.0.1:7412\"",
            "raft = \"127.0.0.1\"",
        ),
        "peer[1].raft",
        "not an IP:port",
    );
    rejected(
        &edit(
            THREE_NODES,
            "heartbeat = \"127.0.0.1:7421\"",
            "heartbeat = \"localhost:7421\"",
        ),
        "listen.heartbeat",
        "host names",
    );
    rejected(
        &edit(
            THREE_NODES,
            "raft = \"127.0.0.1:7413\"",
            "raft = \"127.0.0.1:0\"",
        ),
        "peer[2].raft",
        "port 0",
    );
    rejected(
        &edit(
            THREE_NODES,
            "raft = \"127.0.0.1:7413\"",
            "raft = \"0.0.0.0:7413\"",
        ),
        "peer[2].raft",
        "connect to",
    );
    rejected(
        &edit(
            THREE_NODES,
            "[\"127.0.0.1:7422\"]",
            "[\"127.0.0.1:7422\", \"nope\"]",
        ),
        "peer[1].heartbeat[1]",
        "not an IP:port",
    );
    rejected(
        &edit(THREE_NODES, "[\"127.0.0.1:7422\"]", "[]"),
        "peer[1].heartbeat",
        "no address",
    );
}

#[test]
fn rejects_too_many_heartbeat_links() {
    let links: Vec<String> = (0..=MAX_HEARTBEAT_LINKS)
        .map(|i| format!("\"10.0.0.{i}:7422\""))
        .collect();
    rejected(
        &edit(
            THREE_NODES,
            "[\"127.0.0.1:7422\"]",
            &format!("[{}]", links.join(", ")),
        ),
        "peer[1].heartbeat",
        "more than",
    );
}

#[test]
fn rejects_this_node_missing_from_peers() {
    rejected(
        &edit(THREE_NODES, "[node]\nid = 1", "[node]\nid = 4"),
        "node.id",
        "not in the [[peer]] list",
    );
}

#[test]
fn rejects_zero_ids() {
    rejected(&edit(THREE_NODES, "id = 3", "id = 0"), "peer[2].id", "is 0");
}

#[test]
fn rejects_self_entry_that_differs_from_node_and_listen() {
    rejected(
        &edit(
            THREE_NODES,
            "[node]\nid = 1\nrole = \"voter\"",
            "[node]\nid = 1\nrole = \"witness\"",
        ),
        "node.role",
        "peer[0]",
    );
    rejected(
        &edit(
            THREE_NODES,
            "raft = \"127.0.0.1:7411\"\nheartbeat = \"",
            "raft = \"127.0.0.2:7411\"\nheartbeat = \"",
        ),
        "listen.raft",
        "does not serve",
    );
    rejected(
        &edit(
            THREE_NODES,
            "heartbeat = \"127.0.0.1:7421\"",
            "heartbeat = \"127.0.0.1:7429\"",
        ),
        "listen.heartbeat",
        "7421",
    );
    rejected(
        &edit(
            THREE_NODES,
            "api = \"127.0.0.1:7401\"\n\n[[peer]]\nid = 1",
            "api = \"127.0.0.1:7409\"\n\n[[peer]]\nid = 1",
        ),
        "listen.api",
        "does not serve",
    );
    let text = edit(
        THREE_NODES,
        "id = 1\nrole = \"voter\"\nraft",
        "id = 1\nrole = \"voter\"\npriority = 7\nraft",
    );
    rejected(&text, "node.priority", "says 7");
}

#[test]
fn rejects_fewer_than_three_voting_members() {
    let text = edit(
        THREE_NODES,
        "id = 3\nrole = \"voter\"",
        "id = 3\nrole = \"learner\"",
    );
    rejected(&text, "peer", "only 2 voting member(s)");
}

#[test]
fn rejects_clusters_without_a_voter() {
    let text = THREE_NODES.replace("\"voter\"", "\"witness\"");
    let err = rejected(&text, "peer", "no member has role = \"voter\"");
    // Three witnesses are three voting members: only the "no voter" rule fires.
    assert_eq!(err.problems.len(), 1, "{err}");
}

#[test]
fn rejects_a_witness_as_preferred_primary() {
    let text = edit(
        THREE_NODES,
        "id = 3\nrole = \"voter\"",
        "id = 3\nrole = \"witness\"",
    );
    rejected(
        &edit(&text, "[node]", "preferred_primary = 3\n[node]"),
        "preferred_primary",
        "witness",
    );
}

#[test]
fn rejects_preferred_primary_that_is_not_a_member() {
    rejected(
        &with_top("preferred_primary = 9"),
        "preferred_primary",
        "not a member",
    );
}

#[test]
fn rejects_bad_cluster_names() {
    rejected(&edit(THREE_NODES, "\"demo\"", "\"Demo\""), "cluster", "'D'");
    rejected(&edit(THREE_NODES, "\"demo\"", "\"\""), "cluster", "1 to 64");
    rejected(
        &edit(THREE_NODES, "\"demo\"", &format!("\"{}\"", "a".repeat(65))),
        "cluster",
        "1 to 64",
    );
    ok(&edit(THREE_NODES, "\"demo\"", "\"prod_db-2\""));
}

#[test]
fn rejects_bad_paths() {
    rejected(
        &edit(THREE_NODES, "\"data/node1\"", "\"\""),
        "data_dir",
        "empty",
    );
    rejected(
        &edit(THREE_NODES, "\"data/node1\"", "\"~/data\""),
        "data_dir",
        "~",
    );
}

// ---- rejections: timing ----

#[test]
fn rejects_lease_too_close_to_the_election_timeout() {
    // 140ms + 15ms margin >= 150ms: not safe, though lease < election_timeout_min.
    let err = rejected(
        &with_table("[timing]\nlease = \"140ms\""),
        "timing.lease",
        "clock-drift margin 15ms",
    );
    assert!(err.problems[0].fix.contains("below 135ms"), "{err}");
    // The suggested election timeout really is safe (the margin grows with it): 140 + 16 < 156.
    assert!(err.problems[0].fix.contains("at least 156ms"), "{err}");
    ok(&with_table(
        "[timing]\nlease = \"140ms\"\nelection_timeout_min = \"156ms\"",
    ));
    rejected(
        &with_table("[timing]\nlease = \"140ms\"\nelection_timeout_min = \"155ms\""),
        "timing.lease",
        "margin",
    );
    ok(&with_table("[timing]\nlease = \"134ms\""));
}

#[test]
fn rejects_lease_shorter_than_two_raft_heartbeats() {
    rejected(
        &with_table("[timing]\nlease = \"99ms\""),
        "timing.lease",
        "two raft heartbeats",
    );
}

#[test]
fn rejects_dead_after_below_two_heartbeats() {
    rejected(
        &with_table("[timing]\ndead_after = \"90ms\"\nsuspect_after = \"60ms\""),
        "timing.dead_after",
        "two heartbeat intervals",
    );
}

#[test]
fn rejects_suspect_after_not_below_dead_after() {
    rejected(
        &with_table("[timing]\nsuspect_after = \"300ms\""),
        "timing.suspect_after",
        "not below dead_after",
    );
}

#[test]
fn rejects_suspect_after_below_one_heartbeat() {
    rejected(
        &with_table("[timing]\nsuspect_after = \"40ms\""),
        "timing.suspect_after",
        "shorter than one heartbeat",
    );
}

#[test]
fn rejects_election_timeout_min_not_above_raft_heartbeat() {
    let text = with_table("[timing]\nraft_heartbeat = \"150ms\"");
    rejected(
        &text,
        "timing.election_timeout_min",
        "not above raft_heartbeat",
    );
}

#[test]
fn rejects_election_timeout_max_not_above_min() {
    rejected(
        &with_table("[timing]\nelection_timeout_max = \"150ms\""),
        "timing.election_timeout_max",
        "not above election_timeout_min",
    );
}

#[test]
fn rejects_raft_timings_finer_than_a_millisecond() {
    rejected(
        &with_table("[timing]\nraft_heartbeat = \"40.5ms\""),
        "timing.raft_heartbeat",
        "whole number of milliseconds",
    );
    // Detector timings may be finer.
    let c = ok(&with_table("[timing]\nheartbeat_interval = \"49.5ms\""));
    assert_eq!(c.timing.heartbeat_interval, Duration::from_micros(49_500));
}

#[test]
fn rejects_zero_and_unparsable_durations() {
    rejected(
        &with_table("[timing]\nheartbeat_interval = \"0ms\""),
        "timing.heartbeat_interval",
        "greater than zero",
    );
    rejected(
        &with_table("[resource]\nhook_timeout = \"0s\""),
        "resource.hook_timeout",
        "greater than zero",
    );
    rejected(
        &with_table("[timing]\nlease = \"100\""),
        "timing.lease",
        "no unit",
    );
    rejected(
        &with_table("[failback]\ndelay = \"2 days\""),
        "failback.delay",
        "unknown unit",
    );
    rejected(
        &with_table("[resource]\nrestart_window = \"48h\""),
        "resource.restart_window",
        "longer than",
    );
}

// ---- rejections: resource, failback, storage ----

#[test]
fn rejects_zero_failure_threshold() {
    rejected(
        &with_table("[resource]\nfailure_threshold = 0"),
        "resource.failure_threshold",
        "outside",
    );
}

#[test]
fn rejects_zero_verify_checks() {
    rejected(
        &with_table("[failback]\nverify_checks = 0"),
        "failback.verify_checks",
        "outside",
    );
}

#[test]
fn rejects_verify_timeout_too_short_for_the_checks() {
    rejected(
        &with_table("[failback]\nverify_checks = 5\nverify_timeout = \"3s\""),
        "failback.verify_timeout",
        "could never pass",
    );
}

#[test]
fn rejects_required_fencing_without_a_fence_hook() {
    rejected(
        &with_table("[resource]\nfencing = \"required\""),
        "resource.fencing",
        "no resource.fence hook",
    );
}

#[test]
fn rejects_bad_storage_bounds() {
    rejected(
        &with_table("[storage]\nsnapshot_every = 0"),
        "storage.snapshot_every",
        "is 0",
    );
    rejected(
        &with_table("[storage]\nmax_value_bytes = 0"),
        "storage.max_value_bytes",
        "outside",
    );
    rejected(
        &with_table(&format!(
            "[storage]\nmax_value_bytes = {}",
            MAX_VALUE_BYTES_LIMIT + 1
        )),
        "storage.max_value_bytes",
        "outside",
    );
    for bad in [0, crate::kv::MAX_KV_TOTAL_BYTES + 1] {
        rejected(
            &with_table(&format!("[storage]\nmax_kv_bytes = {bad}")),
            "storage.max_kv_bytes",
            "outside",
        );
    }
}

// ---- reporting ----

#[test]
fn collects_every_problem_in_one_run() {
    let text = edit(THREE_NODES, "\"demo\"", "\"Demo!\"");
    let text = edit(&text, "raft = \"127.0.0.1:7413\"", "raft = \"bad\"");
    let text = text + "\n[timing]\nlease = \"200ms\"\n[resource]\nfailure_threshold = 0\n";
    let err = load(&text).unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "cluster",
        "peer[2].raft",
        "timing.lease",
        "resource.failure_threshold",
    ] {
        assert!(keys.contains(&key), "missing {key} in {keys:?}");
    }
}

#[test]
fn display_prints_one_line_per_problem_with_file_key_and_fix() {
    let text = with_table("[timing]\nlease = \"200ms\"\n[resource]\nfailure_threshold = 0");
    let err = load(&text).unwrap_err();
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), err.problems.len());
    assert!(lines.len() >= 2);
    for (line, p) in lines.iter().zip(&err.problems) {
        assert_eq!(
            *line,
            format!("{PATH}: {}: {}; fix: {}", p.key, p.message, p.fix)
        );
    }
}

#[test]
fn load_reports_unreadable_and_oversized_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let err = Config::load(&missing).unwrap_err();
    assert_eq!(err.file, missing);
    assert_eq!(err.problems[0].key, "(file)");
    let big = dir.path().join("big.toml");
    std::fs::write(&big, "#".repeat(MAX_CONFIG_BYTES as usize + 1)).unwrap();
    let err = Config::load(&big).unwrap_err();
    assert!(err.problems[0].message.contains("bytes"), "{err}");
}

#[cfg(unix)]
#[test]
fn check_hooks_reports_missing_and_non_executable_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let hooks = dir.path().join("hooks");
    std::fs::create_dir(&hooks).unwrap();
    let write = |name: &str, mode: u32| {
        let p = hooks.join(name);
        std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write("promote.sh", 0o755);
    write("demote.sh", 0o644);
    let text = with_table("[resource]\npromote = \"hooks/promote.sh\"\ndemote = \"hooks/demote.sh\"\nmonitor = \"hooks/monitor.sh\"\nfence = \"hooks\"");
    let c = Config::from_str_at(&text, &dir.path().join("node1.toml")).unwrap();
    let problems = c.check_hooks();
    let keyed = |key: &str, needle: &str| {
        problems
            .iter()
            .any(|p| p.key == key && p.message.contains(needle))
    };
    assert!(keyed("resource.demote", "not executable"), "{problems:?}");
    assert!(keyed("resource.monitor", "does not exist"), "{problems:?}");
    assert!(
        keyed("resource.fence", "not a regular file"),
        "{problems:?}"
    );
    assert!(
        !problems.iter().any(|p| p.key == "resource.promote"),
        "{problems:?}"
    );
    assert_eq!(problems.len(), 3);
}

/// The example cluster shipped in cluster-config/local must always validate, hooks included.
#[test]
fn shipped_local_cluster_configs_validate() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster-config/local");
    let mut ids = Vec::new();
    for n in 1..=3u64 {
        let file = folder.join(format!("node{n}.toml"));
        let c = match Config::load(&file) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.node.id, n);
        assert_eq!(c.peers.len(), 3);
        assert_eq!(c.profile, Profile::Lan);
        assert_eq!(c.listen.api.port(), 7400 + n as u16);
        assert_eq!(c.listen.raft.port(), 7410 + n as u16);
        assert_eq!(c.listen.heartbeat.port(), 7420 + n as u16);
        assert_eq!(c.data_dir, folder.join(format!("data/node{n}")));
        assert_eq!(c.resource.failure_threshold, 3);
        assert_eq!(c.resource.fencing, FencingMode::BestEffort);
        assert_eq!(c.resource.promote, Some(folder.join("hooks/marker.sh")));
        assert_eq!(c.check_hooks(), Vec::<Problem>::new());
        ids.push(
            c.peers
                .iter()
                .map(|p| (p.id, p.raft, p.api))
                .collect::<Vec<_>>(),
        );
    }
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "the three files must list the same members"
    );
}

#[test]
fn rotation_and_api_keys_parse() {
    let c = ok(
        &(with_top("secret_file = \"/etc/quorate/new\"\nprevious_secret_file = \"old\"")
            + "\n[api]\nprotect_reads = true\n"),
    );
    assert_eq!(c.secret_file, Some(PathBuf::from("/etc/quorate/new")));
    assert_eq!(
        c.previous_secret_file,
        Some(PathBuf::from("/etc/quorate/old"))
    );
    assert!(c.api.protect_reads);
    let c = ok(THREE_NODES);
    assert_eq!(c.previous_secret_file, None);
    assert!(!c.api.protect_reads, "reads are open by default");
}

#[test]
fn previous_secret_needs_a_current_one_and_a_different_file() {
    rejected(
        &with_top("previous_secret_file = \"/etc/quorate/old\""),
        "previous_secret_file",
        "secret_file is not",
    );
    rejected(
        &with_top("secret_file = \"/s\"\nprevious_secret_file = \"/s\""),
        "previous_secret_file",
        "same file",
    );
}

#[cfg(unix)]
#[test]
fn check_secrets_warns_without_a_secret_and_reports_an_open_mode() {
    use std::os::unix::fs::PermissionsExt;
    let c = ok(THREE_NODES);
    let problems = c.check_secrets();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "secret_file");
    assert!(
        problems[0].message.contains("neither authenticated"),
        "{problems:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, secret::ClusterSecret::generate().to_text()).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = with_top("secret_file = \"secret\"");
    let c = Config::from_str_at(&text, &dir.path().join("node1.toml")).unwrap();
    let problems = c.check_secrets();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].message.contains("chmod 600"), "{problems:?}");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(c.check_secrets(), Vec::<Problem>::new());
}

/// Writes a self-signed certificate for 127.0.0.1 and its key into `dir` (cert.pem,
/// key.pem); returns the certificate's PEM.
fn write_test_cert(dir: &Path, cert_name: &str, key_name: &str) -> String {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = ck.cert.pem();
    std::fs::write(dir.join(cert_name), &pem).unwrap();
    std::fs::write(dir.join(key_name), ck.signing_key.serialize_pem()).unwrap();
    pem
}

fn load_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
    Config::from_str_at(text, &dir.join("node1.toml"))
}

/// The problem at `key` (panics, showing every problem, when there is none).
fn problem_at<'a>(err: &'a ConfigError, key: &str) -> &'a Problem {
    err.problems
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("expected a problem at {key}, got:\n{err}"))
}

#[test]
fn api_tls_files_resolve_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    write_test_cert(dir.path(), "cert.pem", "key.pem");
    let c = load_in(
        dir.path(),
        &with_table("[api]\ntls_cert_file = \"cert.pem\"\ntls_key_file = \"key.pem\""),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tls = c.api.tls.expect("TLS configured");
    assert_eq!(tls.cert_file, dir.path().join("cert.pem"));
    assert_eq!(tls.key_file, dir.path().join("key.pem"));
    assert_eq!(tls.ca_file, None);
    assert_eq!(ok(THREE_NODES).api.tls, None, "plain HTTP by default");
}

#[test]
fn api_tls_needs_both_cert_and_key() {
    let dir = tempfile::tempdir().unwrap();
    write_test_cert(dir.path(), "cert.pem", "key.pem");
    let err = load_in(
        dir.path(),
        &with_table("[api]\ntls_cert_file = \"cert.pem\""),
    )
    .unwrap_err();
    let p = problem_at(&err, "api.tls_key_file");
    assert!(p.message.contains("missing"), "{p}");
    assert!(p.fix.contains("tls_cert_file and tls_key_file"), "{p}");
    let err = load_in(dir.path(), &with_table("[api]\ntls_key_file = \"key.pem\"")).unwrap_err();
    let p = problem_at(&err, "api.tls_cert_file");
    assert!(p.message.contains("missing"), "{p}");
    let err = load_in(dir.path(), &with_table("[api]\ntls_ca_file = \"cert.pem\"")).unwrap_err();
    problem_at(&err, "api.tls_ca_file");
}

#[test]
fn api_tls_missing_or_unusable_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    write_test_cert(dir.path(), "cert.pem", "key.pem");
    let missing = dir.path().join("nope.pem");
    let err = load_in(
        dir.path(),
        &with_table("[api]\ntls_cert_file = \"nope.pem\"\ntls_key_file = \"key.pem\""),
    )
    .unwrap_err();
    let p = problem_at(&err, "api.tls_cert_file");
    assert!(
        p.message.contains(&missing.display().to_string()),
        "names the file: {p}"
    );
    // A key that is not the certificate's: refused at load, naming the key.
    write_test_cert(dir.path(), "other-cert.pem", "other-key.pem");
    let err = load_in(
        dir.path(),
        &with_table("[api]\ntls_cert_file = \"cert.pem\"\ntls_key_file = \"other-key.pem\""),
    )
    .unwrap_err();
    let p = problem_at(&err, "api.tls_key_file");
    assert!(p.message.contains("other-key.pem"), "{p}");
    // A certificate where the key belongs, and a key where the CA belongs.
    let err = load_in(
        dir.path(),
        &with_table(
            "[api]\ntls_cert_file = \"cert.pem\"\ntls_key_file = \"cert.pem\"\ntls_ca_file = \"key.pem\"",
        ),
    )
    .unwrap_err();
    assert!(
        problem_at(&err, "api.tls_key_file")
            .message
            .contains("no PEM private key"),
        "{err}"
    );
    assert!(
        problem_at(&err, "api.tls_ca_file")
            .message
            .contains("no PEM certificate"),
        "{err}"
    );
    // A CA file that did not sign the certificate: refused, naming both files.
    let err = load_in(
        dir.path(),
        &with_table(
            "[api]\ntls_cert_file = \"cert.pem\"\ntls_key_file = \"key.pem\"\ntls_ca_file = \"other-cert.pem\"",
        ),
    )
    .unwrap_err();
    let p = problem_at(&err, "api.tls_cert_file");
    assert!(
        p.message.contains("other-cert.pem") && p.message.contains("does not verify"),
        "{p}"
    );
    // A bundle that includes the certificate is accepted and kept.
    let bundle = std::fs::read_to_string(dir.path().join("other-cert.pem")).unwrap()
        + &std::fs::read_to_string(dir.path().join("cert.pem")).unwrap();
    std::fs::write(dir.path().join("bundle.pem"), bundle).unwrap();
    let c = load_in(
        dir.path(),
        &with_table(
            "[api]\ntls_cert_file = \"cert.pem\"\ntls_key_file = \"key.pem\"\ntls_ca_file = \"bundle.pem\"",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.api.tls.and_then(|t| t.ca_file),
        Some(dir.path().join("bundle.pem"))
    );
}

#[test]
fn api_tls_certificate_must_name_this_nodes_api_ip() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["10.9.9.9".to_string()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let err = load_in(
        dir.path(),
        &with_table("[api]\ntls_cert_file = \"cert.pem\"\ntls_key_file = \"key.pem\""),
    )
    .unwrap_err();
    let p = problem_at(&err, "api.tls_cert_file");
    assert!(
        p.message.contains("127.0.0.1"),
        "names the node's API IP: {p}"
    );
    assert!(p.fix.contains("subjectAltName"), "{p}");
}

#[test]
fn lapse_grace_is_what_the_election_timeout_leaves_after_lease_and_drift() {
    let t = crate::config::Timing {
        lease: ms(100),
        election_timeout_min: ms(150),
        raft_heartbeat: ms(50),
        ..Profile::Lan.timing()
    };
    // 150 - 15 (drift) - 100 = 35 ms; the budget adds the lease and removes one heartbeat.
    assert_eq!(t.lapse_grace(), ms(35));
    assert_eq!(t.lease_budget(), ms(85));
    // Validation keeps lease + margin below the timeout, so the grace is never negative.
    let tight = crate::config::Timing {
        lease: ms(140),
        ..t
    };
    assert_eq!(tight.lapse_grace(), Duration::ZERO);
}

#[test]
fn peer_service_addresses_and_the_service_keys_load() {
    let text = edit(
        THREE_NODES,
        "api = \"127.0.0.1:7402\"",
        "api = \"127.0.0.1:7402\"\nservice = \"db2.example:5432\"",
    );
    let text = edit(
        &text,
        "api = \"127.0.0.1:7403\"",
        "api = \"127.0.0.1:7403\"\nservice = \"[::1]:5433\"",
    );
    let text =
        format!("{text}\n[resource]\nfollow = \"/bin/true\"\nmax_service_lag_bytes = 4096\n");
    let c = ok(&text);
    let services: Vec<Option<&str>> = c.peers.iter().map(|p| p.service.as_deref()).collect();
    assert_eq!(
        services,
        vec![None, Some("db2.example:5432"), Some("[::1]:5433")]
    );
    assert_eq!(c.resource.follow.as_deref(), Some(Path::new("/bin/true")));
    assert_eq!(c.resource.max_service_lag_bytes, 4096);
    assert_eq!(
        ok(THREE_NODES).resource.max_service_lag_bytes,
        defaults::MAX_SERVICE_LAG_BYTES
    );
}

#[test]
fn a_bad_peer_service_address_names_the_key_and_the_fix() {
    for (bad, needle) in [
        ("", "empty"),
        ("db2", "no port"),
        ("db2:0", "no valid port"),
        ("db2:99999", "no valid port"),
        (":5432", "no valid host"),
        ("db 2:5432", "whitespace"),
        ("[not-ipv6]:5432", "no valid host"),
    ] {
        let text = edit(
            THREE_NODES,
            "api = \"127.0.0.1:7402\"",
            &format!("api = \"127.0.0.1:7402\"\nservice = {bad:?}"),
        );
        rejected(&text, "peer[1].service", needle);
    }
}
