//! Human tables for the CLI (pure string building, unit-tested).

use crate::api::wire::NodeStatus;

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
        "LAG".into(),
    ]];
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
        ]);
    }
    let mut widths = [0usize; 9];
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
