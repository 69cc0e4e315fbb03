//! `switchover`: planned switchovers under write load, and the write pause each one costs.

use std::time::{Duration, Instant};

use serde_json::json;

use quorate_chaos::http::cluster_client;
use quorate_chaos::launcher::ClusterSpec;
use quorate_chaos::stats::summarize;

use crate::common::*;

pub(crate) async fn switchover(trials: usize, rate: u64) -> Result<serde_json::Value, String> {
    let (mut c, _log) = marker_cluster(&ClusterSpec::voters(3))?;
    let http = cluster_client(&c, Duration::from_secs(5))?;
    c.start_all().map_err(|e| e.to_string())?;
    let mut primary = wait_primary(&c, &http, None, START_TIMEOUT)
        .await
        .ok_or("no primary")?;
    let apis: Vec<std::net::SocketAddr> = c
        .ids()
        .iter()
        .filter_map(|i| c.node(*i).map(|n| n.member.api))
        .collect();
    let mut pauses = Vec::new();
    for trial in 0..trials {
        let target = c
            .ids()
            .into_iter()
            .find(|i| *i != primary)
            .ok_or("no target")?;
        // Writer: one write every 1/rate s to any node (followers forward), recording ack times.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            let http = http.clone();
            let apis = apis.clone();
            tokio::spawn(async move {
                let mut acks = Vec::new();
                let mut i = 0u64;
                let period = Duration::from_micros(1_000_000 / rate.max(1));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let api = apis[(i as usize) % apis.len()];
                    let t = Instant::now();
                    if http
                        .put(format!("http://{api}/v1/kv/sw/{trial}/{i}"))
                        .body("x")
                        .send()
                        .await
                        .map(|r| r.status().as_u16() == 200)
                        .unwrap_or(false)
                    {
                        acks.push(Instant::now());
                    }
                    if let Some(rest) = period.checked_sub(t.elapsed()) {
                        tokio::time::sleep(rest).await;
                    }
                }
                acks
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A lease lapse under CPU load can leave no acting primary for a moment: the
        // request is then refused; wait for a primary again and retry (bounded).
        let mut accepted = false;
        let mut last_refusal = String::new();
        for _ in 0..20 {
            let p = wait_primary(&c, &http, None, START_TIMEOUT)
                .await
                .ok_or("no primary")?;
            if p == target {
                accepted = true;
                break;
            }
            let api = c.node(p).ok_or("node")?.member.api;
            let r = http
                .post(format!("http://{api}/v1/switchover"))
                .body(json!({"to": target}).to_string())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status().as_u16() == 200 {
                accepted = true;
                break;
            }
            last_refusal = r.text().await.unwrap_or_default();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !accepted {
            return Err(format!("switchover refused 20 times; last: {last_refusal}"));
        }
        let np = wait_primary(&c, &http, Some(primary), START_TIMEOUT)
            .await
            .ok_or("switchover did not finish")?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let acks = writer.await.map_err(|e| e.to_string())?;
        let gap = acks
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1000.0)
            .fold(0.0, f64::max);
        eprintln!("trial {trial}: {primary} -> {np}: longest gap between acknowledged writes {gap:.1} ms ({} writes)", acks.len());
        pauses.push(gap);
        primary = np;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let s = summarize(&pauses);
    print_summary("switchover write pause", "ms", &s);
    Ok(
        json!({"bench": "switchover", "trials": trials, "rate": rate, "write_pause_ms": s, "samples_ms": pauses}),
    )
}
