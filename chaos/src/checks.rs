//! Checks a recorded run directory: every checker, the figures of `summary.json`, and the
//! verdict. `quorate-chaos run` calls this at its end, `quorate-chaos check DIR` on its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::history::{Function, Op, Outcome};
use crate::hooklog::{self, HookEvent};
use crate::nemesis::{FaultEvent, FaultKind, Step};
use crate::stats::{summarize, Summary};

/// Anomalies kept per checker in summary.json (the count is always exact).
pub const MAX_ANOMALIES_SHOWN: usize = 50;
/// A promotion more than this long after a fault is not counted as that fault's failover.
pub const MAX_FAILOVER_NS: u64 = 30_000_000_000;
/// Width of the availability buckets.
pub const BUCKET_NS: u64 = 1_000_000_000;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Register,
    Append,
}

/// `run.json`: how the run was made, for re-checking and for the report.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct RunMeta {
    pub backend: String,
    pub workload: Workload,
    pub nodes: usize,
    pub clients: usize,
    pub seed: u64,
    pub duration_ms: u64,
    pub nemesis: Vec<FaultKind>,
    pub schedule: Vec<Step>,
    /// CLOCK_MONOTONIC ns when the workload started and stopped.
    pub start_ns: u64,
    pub end_ns: u64,
    pub converge_bound_ms: u64,
    /// Environment given to every node (test-only fault switches show up here).
    #[serde(default)]
    pub node_env: Vec<(String, String)>,
    /// The cluster's `max_service_lag_bytes` (None: a run from before service positions).
    #[serde(default)]
    pub max_service_lag_bytes: Option<u64>,
}

/// `convergence.json`: what the nodes said after every fault was healed.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Convergence {
    pub converged: bool,
    /// From the heal of the last fault to the first status poll that satisfied every rule.
    pub took_ms: u64,
    pub primary: Option<u64>,
    pub epoch: u64,
    /// node -> applied index in the last poll.
    pub applied: BTreeMap<u64, u64>,
    /// What was still wrong at the bound (empty when converged).
    pub problems: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot read {path}: {source}; is this a quorate-chaos run directory?")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is malformed: {detail}")]
    Malformed { path: PathBuf, detail: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Serialize, Clone, Debug)]
pub struct CheckResult {
    pub name: &'static str,
    pub passed: bool,
    pub anomaly_count: usize,
    pub anomalies: Vec<Value>,
    /// Figures about what was checked (ops, keys, states explored...).
    pub stats: Value,
}

impl CheckResult {
    fn new<T: Serialize>(name: &'static str, anomalies: &[T], stats: Value) -> CheckResult {
        CheckResult {
            name,
            passed: anomalies.is_empty(),
            anomaly_count: anomalies.len(),
            anomalies: anomalies
                .iter()
                .take(MAX_ANOMALIES_SHOWN)
                .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
                .collect(),
            stats,
        }
    }
}

/// One failover measured from the fault log and the hook log.
#[derive(Serialize, Clone, Debug)]
pub struct Failover {
    pub fault: FaultKind,
    pub fault_ns: u64,
    pub from: Option<u64>,
    pub to: u64,
    pub ms: f64,
}

#[derive(Serialize, Clone, Debug)]
pub struct Verdict {
    pub pass: bool,
    pub checks: Vec<CheckResult>,
    pub summary: Value,
}

/// Everything a run directory holds, parsed.
pub struct RunData {
    pub meta: RunMeta,
    pub ops: Vec<Op>,
    pub faults: Vec<FaultEvent>,
    pub hooks: Vec<HookEvent>,
    pub convergence: Convergence,
    /// The marker service's position reports (`service/positions.log`; empty without it).
    pub positions: Vec<crate::positions::PositionReport>,
}

fn read(path: &Path) -> Result<String, CheckError> {
    std::fs::read_to_string(path).map_err(|source| CheckError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn malformed(path: &Path, detail: impl ToString) -> CheckError {
    CheckError::Malformed {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

pub fn load(dir: &Path) -> Result<RunData, CheckError> {
    let p = dir.join("run.json");
    let meta: RunMeta = serde_json::from_str(&read(&p)?).map_err(|e| malformed(&p, e))?;
    let p = dir.join("history.jsonl");
    let events = crate::history::parse(&read(&p)?).map_err(|e| malformed(&p, e))?;
    let ops = crate::history::pair(&events).map_err(|e| malformed(&p, e))?;
    let p = dir.join("faults.jsonl");
    let mut faults = Vec::new();
    for (i, line) in read(&p)?.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        faults.push(
            serde_json::from_str::<FaultEvent>(line)
                .map_err(|e| malformed(&p, format!("line {}: {e}", i + 1)))?,
        );
    }
    let p = dir.join("hooks.log");
    // No hook ran at all is possible only if no node ever became primary; the convergence
    // check catches that, so a missing file reads as empty.
    let hooks = match std::fs::read_to_string(&p) {
        Ok(t) => hooklog::parse(&t).map_err(|e| malformed(&p, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(CheckError::Read { path: p, source }),
    };
    let p = dir.join("convergence.json");
    let convergence: Convergence =
        serde_json::from_str(&read(&p)?).map_err(|e| malformed(&p, e))?;
    let p = dir.join("service/positions.log");
    let positions = match std::fs::read_to_string(&p) {
        Ok(t) => crate::positions::parse(&t).map_err(|e| malformed(&p, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(CheckError::Read { path: p, source }),
    };
    Ok(RunData {
        meta,
        ops,
        faults,
        hooks,
        convergence,
        positions,
    })
}

/// Primary exclusivity and epochs (checker 3), on the hook log.
pub fn check_hooks(hooks: &[HookEvent]) -> CheckResult {
    let anomalies = hooklog::check_exclusive(hooks);
    let promotions = hooks.iter().filter(|e| e.event == "promote").count();
    CheckResult::new(
        "primary-exclusivity",
        &anomalies,
        json!({ "hook_events": hooks.len(), "promotions": promotions }),
    )
}

/// No promotion of a node behind another eligible one by more than `max_service_lag_bytes`
/// (checker 4), on the marker service's position reports.
pub fn check_positions(data: &RunData, max_service_lag_bytes: u64) -> CheckResult {
    let r = crate::positions::check(
        &data.positions,
        &data.hooks,
        &data.faults,
        max_service_lag_bytes,
    );
    let mut anomalies: Vec<Value> = r
        .anomalies
        .iter()
        .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
        .collect();
    if data.positions.is_empty() {
        anomalies.push(json!(
            "no service position was recorded (service/positions.log is empty): the marker's data mode did not run"
        ));
    }
    CheckResult::new(
        "service-positions",
        &anomalies,
        json!({
            "reports": data.positions.len(),
            "promotions_checked": r.checked,
            "promotions_during_network_faults": r.skipped_network,
            "max_service_lag_bytes": max_service_lag_bytes,
        }),
    )
}

/// Convergence after healing (checker 5), plus: the node every status names as primary
/// must hold the service by the hook log (its last promote/demote was a promote).
pub fn check_convergence(c: &Convergence, hooks: &[HookEvent]) -> CheckResult {
    let mut anomalies: Vec<String> = Vec::new();
    if !c.converged {
        anomalies.push(format!(
            "no convergence within the bound: {}",
            c.problems.join("; ")
        ));
    }
    if let Some(p) = c.primary.filter(|_| c.converged) {
        let last = hooks
            .iter()
            .rev()
            .find(|e| e.node == p && matches!(e.event.as_str(), "promote" | "demote"));
        match last {
            Some(e) if e.event == "promote" && e.epoch == c.epoch => {}
            Some(e) => anomalies.push(format!(
                "node {p} is the primary at epoch {} but its last hook was {} at epoch {}",
                c.epoch, e.event, e.epoch
            )),
            None => anomalies.push(format!(
                "node {p} is the primary at epoch {} but never ran its promote hook",
                c.epoch
            )),
        }
    }
    CheckResult::new(
        "convergence",
        &anomalies,
        json!({ "took_ms": c.took_ms, "primary": c.primary, "epoch": c.epoch, "applied": c.applied }),
    )
}

/// Pairs each fault that took the primary away with the next promotion elsewhere.
pub fn failovers(faults: &[FaultEvent], hooks: &[HookEvent]) -> Vec<Failover> {
    let starts: Vec<&FaultEvent> = faults.iter().filter(|f| f.phase == "start").collect();
    let mut out = Vec::new();
    for (i, f) in starts.iter().enumerate() {
        let hits_primary = match f.kind {
            FaultKind::Switchover | FaultKind::Failback => true,
            _ => f.node.is_some() && f.node == f.primary_before,
        };
        if !hits_primary {
            continue;
        }
        let next_fault = starts.get(i + 1).map(|n| n.time_ns).unwrap_or(u64::MAX);
        let limit = f.time_ns.saturating_add(MAX_FAILOVER_NS).min(next_fault);
        let promoted = hooks.iter().find(|h| {
            h.event == "promote"
                && h.at_ns >= f.time_ns
                && h.at_ns < limit
                && (f.kind == FaultKind::Restart || Some(h.node) != f.primary_before)
        });
        if let Some(h) = promoted {
            out.push(Failover {
                fault: f.kind,
                fault_ns: f.time_ns,
                from: f.primary_before,
                to: h.node,
                ms: (h.at_ns - f.time_ns) as f64 / 1e6,
            });
        }
    }
    out
}

/// A promotion within this long after a fault started or healed is taken to be its doing.
pub const PROVOKED_WINDOW_NS: u64 = 3_000_000_000;

/// Promotions that no fault explains (the first one, at startup, excepted): the primary
/// re-promoted or moved on its own, e.g. after losing its lease under load. Not a safety
/// anomaly, but each one is a short outage of the service, so the summary shows the count.
/// A promotion is explained by a fault that started or healed at most
/// `PROVOKED_WINDOW_NS` before it, or by one in force (between its start and its heal: a
/// 40 % packet loss lasting four seconds explains every promotion it causes). Operations
/// (switchover, failback) have no heal: only the window after them counts.
pub fn unprovoked_promotions(faults: &[FaultEvent], hooks: &[HookEvent]) -> usize {
    let in_force = fault_intervals(faults);
    hooks
        .iter()
        .filter(|h| h.event == "promote")
        .skip(1)
        .filter(|h| {
            let recent = faults
                .iter()
                .any(|f| f.time_ns <= h.at_ns && h.at_ns - f.time_ns <= PROVOKED_WINDOW_NS);
            let during = in_force
                .iter()
                .any(|(start, heal)| *start <= h.at_ns && h.at_ns <= *heal);
            !recent && !during
        })
        .count()
}

/// (start, heal) of each fault: a start paired with the next heal of the same kind and
/// node. A start never healed (an operation, or a fault still on at the end) gives none.
fn fault_intervals(faults: &[FaultEvent]) -> Vec<(u64, u64)> {
    let mut sorted: Vec<&FaultEvent> = faults.iter().collect();
    sorted.sort_by_key(|f| f.time_ns);
    let mut open: Vec<(FaultKind, Option<u64>, u64)> = Vec::new();
    let mut out = Vec::new();
    for f in sorted {
        match f.phase.as_str() {
            "start" => open.push((f.kind, f.node, f.time_ns)),
            "heal" => {
                if let Some(i) = open
                    .iter()
                    .position(|(k, n, _)| *k == f.kind && *n == f.node)
                {
                    let (_, _, start) = open.remove(i);
                    out.push((start, f.time_ns));
                }
            }
            _ => {}
        }
    }
    out
}

fn writes_like(f: Function) -> bool {
    matches!(f, Function::Write | Function::Cas | Function::Append)
}

/// Share of 1 s buckets of the workload in which at least one write was acknowledged, and
/// the longest stretch without one.
pub fn availability(ops: &[Op], start_ns: u64, end_ns: u64) -> Value {
    let mut acks: Vec<u64> = ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok && writes_like(o.f) && !o.final_read)
        .filter_map(|o| o.complete_ns)
        .filter(|t| *t >= start_ns && *t <= end_ns)
        .collect();
    acks.sort_unstable();
    let buckets = end_ns.saturating_sub(start_ns).div_ceil(BUCKET_NS).max(1);
    let mut hit = vec![false; buckets as usize];
    for t in &acks {
        let b = ((t - start_ns) / BUCKET_NS).min(buckets - 1);
        hit[b as usize] = true;
    }
    let mut longest_gap = 0u64;
    let mut prev = start_ns;
    for t in acks.iter().copied().chain(std::iter::once(end_ns)) {
        longest_gap = longest_gap.max(t.saturating_sub(prev));
        prev = t;
    }
    let completed = ops.iter().filter(|o| !o.final_read).count().max(1);
    let ok = ops
        .iter()
        .filter(|o| !o.final_read && o.outcome == Outcome::Ok)
        .count();
    json!({
        "write_seconds_fraction": hit.iter().filter(|h| **h).count() as f64 / buckets as f64,
        "longest_write_gap_ms": longest_gap as f64 / 1e6,
        "ok_fraction": ok as f64 / completed as f64,
    })
}

pub fn op_counts(ops: &[Op]) -> Value {
    let mut by_f: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
    for o in ops {
        let outcome = match o.outcome {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        };
        *by_f
            .entry(o.f.name())
            .or_default()
            .entry(outcome)
            .or_default() += 1;
        *totals.entry(outcome).or_default() += 1;
    }
    json!({
        "total": ops.len(),
        "ok": totals.get("ok").copied().unwrap_or(0),
        "fail": totals.get("fail").copied().unwrap_or(0),
        "info": totals.get("info").copied().unwrap_or(0),
        "by_function": by_f,
    })
}

fn ms_summary(samples: &[f64]) -> Summary {
    summarize(samples)
}

/// Runs every checker over a loaded run.
pub fn verdict(data: &RunData) -> Verdict {
    let mut checks = Vec::new();
    match data.meta.workload {
        Workload::Register => {
            let r = crate::linearizable::check(&data.ops);
            checks.push(CheckResult::new(
                "linearizable-register",
                &r.anomalies,
                json!({ "keys": r.keys, "ops_checked": r.ops_checked, "indeterminate_dropped": r.indeterminate_dropped, "states_explored": r.states_explored }),
            ));
        }
        Workload::Append => {
            let r = crate::append::check(&data.ops);
            checks.push(CheckResult::new(
                "append-lists",
                &r.anomalies,
                json!({ "keys": r.keys, "appends_ok": r.appends_ok, "appends_info": r.appends_info, "reads_checked": r.reads_checked }),
            ));
        }
    }
    checks.push(check_hooks(&data.hooks));
    if let Some(max) = data.meta.max_service_lag_bytes {
        checks.push(check_positions(data, max));
    }
    checks.push(check_convergence(&data.convergence, &data.hooks));
    let fo = failovers(&data.faults, &data.hooks);
    let fo_ms: Vec<f64> = fo.iter().map(|f| f.ms).collect();
    let lat: Vec<f64> = data
        .ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok && !o.final_read)
        .filter_map(|o| o.latency_ns())
        .map(|ns| ns as f64 / 1e6)
        .collect();
    let pass = checks.iter().all(|c| c.passed);
    let anomalies: usize = checks.iter().map(|c| c.anomaly_count).sum();
    let faults_started = data.faults.iter().filter(|f| f.phase == "start").count();
    let summary = json!({
        "pass": pass,
        "backend": data.meta.backend,
        "workload": data.meta.workload,
        "nodes": data.meta.nodes,
        "clients": data.meta.clients,
        "seed": data.meta.seed,
        "duration_s": data.meta.duration_ms as f64 / 1000.0,
        "node_env": data.meta.node_env,
        "ops": op_counts(&data.ops),
        "anomalies": anomalies,
        "checks": checks,
        "faults": faults_started,
        "failover_ms": ms_summary(&fo_ms),
        "failovers": fo,
        "unprovoked_promotions": unprovoked_promotions(&data.faults, &data.hooks),
        "latency_ok_ms": ms_summary(&lat),
        "availability": availability(&data.ops, data.meta.start_ns, data.meta.end_ns),
        "convergence_ms": data.convergence.took_ms,
    });
    Verdict {
        pass,
        checks,
        summary,
    }
}

/// Checks `dir`, writes summary.json and report.html there, and returns the verdict.
pub fn check_dir(dir: &Path) -> Result<Verdict, CheckError> {
    let data = load(dir)?;
    let v = verdict(&data);
    let p = dir.join("summary.json");
    let text = serde_json::to_string_pretty(&v.summary).map_err(|e| malformed(&p, e))?;
    std::fs::write(&p, text).map_err(|source| CheckError::Write { path: p, source })?;
    let p = dir.join("report.html");
    let html = crate::report::html(&data, &v);
    std::fs::write(&p, html).map_err(|source| CheckError::Write { path: p, source })?;
    Ok(v)
}

/// The terminal summary.
pub fn print_verdict(dir: &Path, v: &Verdict) {
    let s = &v.summary;
    let ops = &s["ops"];
    println!(
        "ops: {} (ok {}, fail {}, info {})",
        ops["total"], ops["ok"], ops["fail"], ops["info"]
    );
    let fo = &s["failover_ms"];
    println!(
        "faults: {}, failovers measured: {} (ms min {} median {} p99 {} max {}), promotions no fault explains: {}",
        s["faults"],
        fo["count"],
        fmt_ms(&fo["min"]),
        fmt_ms(&fo["median"]),
        fmt_ms(&fo["p99"]),
        fmt_ms(&fo["max"]),
        s["unprovoked_promotions"]
    );
    let a = &s["availability"];
    println!(
        "availability: writes acknowledged in {:.1}% of seconds, longest gap {} ms, {:.1}% of ops ok",
        a["write_seconds_fraction"].as_f64().unwrap_or(0.0) * 100.0,
        fmt_ms(&a["longest_write_gap_ms"]),
        a["ok_fraction"].as_f64().unwrap_or(0.0) * 100.0
    );
    for c in &v.checks {
        println!(
            "  {:<22} {}  ({} anomalies) {}",
            c.name,
            if c.passed { "ok  " } else { "FAIL" },
            c.anomaly_count,
            c.stats
        );
        for a in c.anomalies.iter().take(3) {
            println!("      {a}");
        }
    }
    println!(
        "{}: {} (details: {}/summary.json, {}/report.html)",
        if v.pass { "PASS" } else { "FAIL" },
        dir.display(),
        dir.display(),
        dir.display()
    );
}

fn fmt_ms(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.is_finite() => format!("{x:.0}"),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::testing::ops;
    use crate::history::Function::{Read, Write};
    use crate::history::Outcome::Ok;
    use serde_json::Value::Null;

    fn hook(at_ns: u64, node: u64, event: &str, epoch: u64) -> HookEvent {
        HookEvent {
            at_ns,
            node,
            event: event.into(),
            epoch,
        }
    }

    fn fault(t: u64, kind: FaultKind, node: u64, primary: u64) -> FaultEvent {
        FaultEvent {
            time_ns: t,
            kind,
            phase: "start".into(),
            node: Some(node),
            primary_before: Some(primary),
            detail: String::new(),
        }
    }

    #[test]
    fn two_overlapping_primaries_fail_the_hook_check() {
        let h = vec![hook(1, 1, "promote", 1), hook(5, 2, "promote", 2)];
        let r = check_hooks(&h);
        assert!(!r.passed);
        assert_eq!(r.anomaly_count, 1);
        let clean = vec![
            hook(1, 1, "promote", 1),
            hook(4, 1, "demote", 1),
            hook(5, 2, "promote", 2),
        ];
        assert!(check_hooks(&clean).passed);
    }

    /// Issue 13: the old holder (1) never demoted; 2's fence of it failed and 2 promoted:
    /// an overlap. The same log with a successful fence is clean.
    #[test]
    fn a_promotion_after_a_failed_fence_overlaps_the_old_holder() {
        let failed = vec![
            hook(1, 1, "promote", 1),
            hook(5, 2, "fence", 1),
            hook(5, 2, hooklog::FENCE_FAILED, 1),
            hook(6, 2, "promote", 2),
        ];
        let r = check_hooks(&failed);
        assert!(!r.passed, "{r:?}");
        assert_eq!(r.anomaly_count, 1, "{r:?}");
        let ok = vec![
            hook(1, 1, "promote", 1),
            hook(5, 2, "fence", 1),
            hook(5, 2, hooklog::FENCE_OK, 1),
            hook(6, 2, "promote", 2),
        ];
        let r = check_hooks(&ok);
        assert!(r.passed, "{r:?}");
    }

    #[test]
    fn convergence_needs_agreement_and_a_promoted_primary() {
        let hooks = vec![hook(1, 2, "promote", 3)];
        let mut c = Convergence {
            converged: true,
            primary: Some(2),
            epoch: 3,
            ..Default::default()
        };
        assert!(check_convergence(&c, &hooks).passed);
        c.epoch = 4;
        assert!(!check_convergence(&c, &hooks).passed);
        c.epoch = 3;
        let demoted = vec![hook(1, 2, "promote", 3), hook(2, 2, "demote", 3)];
        assert!(!check_convergence(&c, &demoted).passed);
        c.converged = false;
        c.problems = vec!["node 3 applied 7 < 9".into()];
        assert!(!check_convergence(&c, &hooks).passed);
    }

    #[test]
    fn failover_is_fault_to_promotion_elsewhere() {
        let faults = vec![
            fault(1_000_000_000, FaultKind::Kill, 1, 1),
            fault(5_000_000_000, FaultKind::Pause, 3, 2), // not the primary: no failover
        ];
        let hooks = vec![
            hook(1_100_000_000, 1, "promote", 1), // the victim itself: not counted
            hook(1_400_000_000, 2, "promote", 2),
        ];
        let f = failovers(&faults, &hooks);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].to, 2);
        assert!((f[0].ms - 400.0).abs() < 1e-6);
    }

    #[test]
    fn promotions_without_a_recent_fault_are_counted() {
        let s = 1_000_000_000u64;
        let mut restart = fault(12 * s, FaultKind::Kill, 1, 1);
        restart.phase = "heal".into();
        let faults = vec![fault(10 * s, FaultKind::Kill, 1, 1), restart];
        let hooks = vec![
            hook(s, 1, "promote", 1),      // startup: not counted
            hook(5 * s, 1, "promote", 2),  // no fault before it: unprovoked
            hook(11 * s, 2, "promote", 3), // 1 s after the kill: provoked
            hook(20 * s, 2, "promote", 4), // 10 s after, 8 s after the heal: unprovoked
        ];
        assert_eq!(unprovoked_promotions(&faults, &hooks), 2);
    }

    #[test]
    fn promotions_while_a_fault_is_in_force_are_provoked() {
        let s = 1_000_000_000u64;
        let mut heal = fault(18 * s, FaultKind::Loss, 2, 2);
        heal.phase = "heal".into();
        let faults = vec![fault(10 * s, FaultKind::Loss, 2, 2), heal];
        let hooks = vec![
            hook(s, 1, "promote", 1),      // startup: not counted
            hook(15 * s, 2, "promote", 2), // 5 s into the loss, still in force: provoked
            hook(20 * s, 2, "promote", 3), // 2 s after the heal: provoked
            hook(30 * s, 2, "promote", 4), // 12 s after the heal: unprovoked
        ];
        assert_eq!(unprovoked_promotions(&faults, &hooks), 1);
        // A start never healed (like an operation) explains only the window after it.
        assert_eq!(unprovoked_promotions(&faults[..1], &hooks), 3);
    }

    #[test]
    fn availability_counts_seconds_with_acknowledged_writes() {
        let s = 1_000_000_000u64;
        let h = ops(&[
            (
                0,
                Write,
                "k",
                serde_json::json!(1),
                s / 10,
                Some(s / 5),
                Ok,
                Null,
            ),
            (0, Read, "k", Null, s, Some(s + 1), Ok, Null),
            (
                0,
                Write,
                "k",
                serde_json::json!(2),
                3 * s,
                Some(3 * s + 5),
                Ok,
                Null,
            ),
        ]);
        let a = availability(&h, 0, 4 * s);
        assert_eq!(a["write_seconds_fraction"], 0.5);
        let gap = a["longest_write_gap_ms"].as_f64().unwrap();
        assert!((gap - 2800.0).abs() < 1.0, "{gap}");
    }
}
