//! Human tables for the CLI (pure string building, unit-tested).

use crate::api::wire::NodeStatus;

pub use crate::util::human_bytes;

/// The `quorate status` table: one row per configured node, as seen from `local` plus each
/// node's own report when it answered.
pub fn status_table(local: &NodeStatus, all: &[NodeStatus]) -> String {
    let mut ids: Vec<u64> = local.peers.iter().map(|p| p.id).collect();
    ids.push(local.node_id);
    ids.sort_unstable();
    let leader_last = all
        .iter()
        .find(|s| s.raft_state == "leader")
        .map(|s| s.last_log_index);
    let mut rows = vec![[
        "NODE".to_string(),
        "ROLE".into(),
        "RAFT".into(),
        "TERM".into(),
        "HEARTBEAT".into(),
        "SERVICE".into(),
        "HEALTH".into(),
        "APPLIED".into(),
        "LOG LAG".into(),
        "DATA".into(),
        "TL".into(),
        "POSITION".into(),
        "DATA LAG".into(),
        "LAST ACTION".into(),
    ]];
    let mut ineligible = Vec::new();
    for id in ids {
        let own = all.iter().find(|s| s.node_id == id);
        let peer = local.peers.iter().find(|p| p.id == id);
        let role = own
            .map(|s| s.role.clone())
            .or_else(|| peer.map(|p| p.role.clone()))
            .unwrap_or_default();
        let hb = if id == local.node_id {
            "self".to_string()
        } else {
            peer.map(|p| p.heartbeat.clone()).unwrap_or_default()
        };
        let (raft, term, applied) = match own {
            Some(s) => (
                s.raft_state.clone(),
                s.term.to_string(),
                s.applied_index.to_string(),
            ),
            None => ("unreachable".into(), "-".into(), "-".into()),
        };
        let lag = match (leader_last, own) {
            (Some(l), Some(s)) => l.saturating_sub(s.applied_index).to_string(),
            _ => "-".into(),
        };
        let marker = if id == local.node_id { "*" } else { "" };
        let service = match own {
            Some(s) if s.acting_primary => "PRIMARY".to_string(),
            Some(s) => s.local_role.clone(),
            None => "-".into(),
        };
        let health = match own {
            Some(s) => s.health.clone(),
            None => peer
                .and_then(|p| p.health.clone())
                .unwrap_or_else(|| "-".into()),
        };
        // The data as the queried node judges it (one reference for every row).
        let data = if id == local.node_id {
            Some(&local.service)
        } else {
            peer.and_then(|p| p.service.as_ref())
        };
        let dash = || "-".to_string();
        let data_role = data.and_then(|d| d.role.clone()).unwrap_or_else(dash);
        let timeline = data
            .and_then(|d| d.timeline)
            .map(|t| t.to_string())
            .unwrap_or_else(dash);
        let position = data
            .and_then(|d| d.position)
            .map(|p| p.to_string())
            .unwrap_or_else(dash);
        let data_lag = data
            .and_then(|d| d.lag_bytes)
            .map(human_bytes)
            .unwrap_or_else(dash);
        if let Some(why) = data.and_then(|d| d.ineligible.as_ref()) {
            ineligible.push(why.clone());
        }
        let last_action = own
            .and_then(|s| s.last_action.as_ref())
            .map(|a| format!("{} {}", a.action, if a.ok { "ok" } else { "FAILED" }))
            .unwrap_or_else(dash);
        rows.push([
            format!("{id}{marker}"),
            role,
            raft,
            term,
            hb,
            service,
            health,
            applied,
            lag,
            data_role,
            timeline,
            position,
            data_lag,
            last_action,
        ]);
    }
    let mut widths = [0usize; 14];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let mut out = format!(
        "cluster {}  (queried node {}, marked *)\n",
        local.cluster, local.node_id
    );
    out.push_str(&format!(
        "primary: {}  epoch: {}{}\n",
        local
            .primary
            .map(|p| format!("node {p}"))
            .unwrap_or_else(|| "none".into()),
        local.epoch,
        local
            .maintenance
            .as_ref()
            .map(|r| format!("  MAINTENANCE ({r})"))
            .unwrap_or_default()
    ));
    if let Some(f) = &local.failed_over {
        out.push_str(&format!(
            "failed over: home node {} is not primary; see `quorate failback status`\n",
            f.get("home").unwrap_or(&serde_json::Value::Null)
        ));
    }
    if let Some(op) = &local.operation {
        out.push_str(&format!(
            "operation: {} {} -> {} ({})\n",
            op.get("kind").and_then(|v| v.as_str()).unwrap_or("?"),
            op.get("from").unwrap_or(&serde_json::Value::Null),
            op.get("to").unwrap_or(&serde_json::Value::Null),
            op.get("phase").map(|v| v.to_string()).unwrap_or_default()
        ));
    }
    if !local.drained.is_empty() {
        out.push_str(&format!("drained: {:?}\n", local.drained));
    }
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c, w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for why in &ineligible {
        out.push_str(&format!("not eligible for automatic failover: {why}\n"));
    }
    for a in all
        .iter()
        .filter_map(|s| s.last_action.as_ref().map(|a| (s.node_id, a)))
    {
        let (id, a) = a;
        if !a.ok {
            out.push_str(&format!("node {id}: last action: {}\n", a.summary));
        }
    }
    for n in &local.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    if local.reseeding {
        out.push_str("note: re-seeding from peers (quorate recover): not voting until caught up\n");
    }
    if let Some(why) = &local.raft_failure {
        out.push_str(&format!("FAILED: {why}\n"));
    }
    if !local.fault_injection_armed.is_empty() {
        out.push_str(&format!(
            "FAULT INJECTION ARMED (test build; must not run in production): {}\n",
            local.fault_injection_armed.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::{LastActionStatus, PeerStatus, ServiceStatus};

    fn service(role: &str, position: u64, lag: u64, ineligible: Option<&str>) -> ServiceStatus {
        ServiceStatus {
            role: Some(role.into()),
            position: Some(position),
            timeline: Some(2),
            healthy: Some(true),
            lag_bytes: Some(lag),
            ineligible: ineligible.map(str::to_string),
            ..ServiceStatus::default()
        }
    }

    #[test]
    fn the_table_shows_each_nodes_data_last_action_and_why_it_is_not_eligible() {
        let mut local = NodeStatus {
            cluster: "c".into(),
            node_id: 1,
            raft_state: "leader".into(),
            service: service("primary", 5_000, 0, None),
            ..NodeStatus::default()
        };
        local.peers.push(PeerStatus {
            id: 2,
            role: "voter".into(),
            api: String::new(),
            heartbeat: "alive".into(),
            last_seen_ms: None,
            rtt_ms: None,
            matched_index: None,
            applied_index: None,
            health: None,
            incarnation: None,
            service: Some(service(
                "replica",
                2_952,
                2_048,
                Some("node 2 is 2048 bytes behind (max_service_lag_bytes 1000)"),
            )),
        });
        let mut two = NodeStatus {
            node_id: 2,
            raft_state: "follower".into(),
            last_action: Some(LastActionStatus {
                action: "follow".into(),
                ok: false,
                summary: "follow hook failed with exit code 1 after 3 ms".into(),
                output: String::new(),
                finished_unix_ms: 0,
            }),
            ..NodeStatus::default()
        };
        two.service = service("replica", 2_952, 0, None);
        let t = status_table(&local, &[local.clone(), two]);
        let row = |id: &str| {
            t.lines()
                .find(|l| l.starts_with(id))
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert!(t.lines().any(|l| l.contains("DATA LAG")), "{t}");
        let one = row("1*");
        assert!(one.contains(&"primary") && one.contains(&"5000"), "{t}");
        let two = row("2 ");
        assert!(two.contains(&"2952") && two.contains(&"2.0"), "{t}");
        assert!(two.contains(&"FAILED"), "{t}");
        assert!(
            t.contains("not eligible for automatic failover: node 2 is 2048 bytes behind"),
            "{t}"
        );
        assert!(t.contains("node 2: last action: follow hook failed"), "{t}");
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
        assert_eq!(human_bytes(5 << 40), "5.0 TiB");
    }
}
