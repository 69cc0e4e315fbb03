//! `election`: time from a leader's death to the next leader.

use std::time::Instant;

use serde_json::json;

use quorate_chaos::launcher::LocalCluster;
use quorate_chaos::stats::summarize;

use crate::common::*;

pub(crate) async fn election(
    nodes: usize,
    trials: usize,
    profile: &str,
) -> Result<serde_json::Value, String> {
    let mut samples = Vec::new();
    for trial in 0..trials {
        let mut c =
            LocalCluster::create(&cluster_spec(nodes, 0, profile)).map_err(|e| e.to_string())?;
        with_secret_if_asked(&c)?;
        let t0 = Instant::now();
        c.start_all().map_err(|e| e.to_string())?;
        match c.wait_agreed_leader(START_TIMEOUT).await {
            Some(_) => samples.push(ms(t0.elapsed())),
            None => eprintln!("trial {trial}: no leader within {START_TIMEOUT:?}"),
        }
    }
    let s = summarize(&samples);
    print_summary("start → agreed leader", "ms", &s);
    Ok(
        json!({ "bench": "election", "nodes": nodes, "profile": profile, "ms": s, "samples_ms": samples }),
    )
}
