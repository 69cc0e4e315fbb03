//! `kv`: write throughput and latency by client count, then linearizable and stale reads.

use std::time::{Duration, Instant};

use serde_json::json;

use quorate_chaos::http::client_with_headers;
use quorate_chaos::launcher::{ClusterSpec, LocalCluster};

use crate::common::*;

pub(crate) async fn kv(
    clients: &str,
    duration: u64,
    value_size: usize,
) -> Result<serde_json::Value, String> {
    let counts: Vec<usize> = parse_list(clients, "clients")?;
    let mut spec = ClusterSpec::voters(3);
    spec.env.push(("QUORATE_LOG".into(), "warn".into()));
    let mut c = LocalCluster::create(&spec).map_err(|e| e.to_string())?;
    with_secret_if_asked(&c)?;
    c.start_all().map_err(|e| e.to_string())?;
    let (leader, _) = c
        .wait_agreed_leader(START_TIMEOUT)
        .await
        .ok_or("no leader")?;
    let api = c.node(leader).ok_or("leader")?.member.api;
    let value = vec![b'v'; value_size];
    let auth = c.auth_headers();
    let mut results = Vec::new();
    println!("KV on the leader, 3 nodes, fsync on, {value_size}-byte values, {duration} s per row");
    println!(
        "{:>8} {:>12} {:>10} {:>10} {:>10}",
        "clients", "writes/s", "p50 ms", "p99 ms", "p999 ms"
    );
    for n in counts {
        let stop = Instant::now() + Duration::from_secs(duration);
        let mut tasks = Vec::new();
        for client_id in 0..n {
            let value = value.clone();
            let auth = auth.clone();
            tasks.push(tokio::spawn(async move {
                let http = client_with_headers(auth, REQUEST_TIMEOUT).ok()?;
                let mut lat = Vec::new();
                let mut i = 0u64;
                while Instant::now() < stop {
                    i += 1;
                    let t = Instant::now();
                    let r = http
                        .put(format!("http://{api}/v1/kv/bench/{client_id}/{i}"))
                        .body(value.clone())
                        .send()
                        .await;
                    if r.map(|r| r.status().as_u16() == 200).unwrap_or(false) {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                Some(lat)
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            if let Ok(Some(l)) = t.await {
                lat.extend(l);
            }
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        let rate = lat.len() as f64 / duration as f64;
        let p = |q| quorate_chaos::stats::percentile(&lat, q);
        println!(
            "{n:>8} {rate:>12.0} {:>10.2} {:>10.2} {:>10.2}",
            p(50.0),
            p(99.0),
            p(99.9)
        );
        results.push(json!({"clients": n, "writes_per_s": rate, "p50_ms": p(50.0), "p99_ms": p(99.0), "p999_ms": p(99.9)}));
    }
    // Reads: linearizable (ReadIndex on the leader) and stale, 16 clients, 5 s each.
    let mut reads = serde_json::Map::new();
    for (name, q) in [("linearizable", ""), ("stale", "?stale=true")] {
        let stop = Instant::now() + Duration::from_secs(5);
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let url = format!("http://{api}/v1/kv/bench/0/1{q}");
            let auth = auth.clone();
            tasks.push(tokio::spawn(async move {
                let http = client_with_headers(auth, REQUEST_TIMEOUT).ok()?;
                let mut ok = 0u64;
                while Instant::now() < stop {
                    if http
                        .get(&url)
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false)
                    {
                        ok += 1;
                    }
                }
                Some(ok)
            }));
        }
        let mut total = 0u64;
        for t in tasks {
            total += t.await.ok().flatten().unwrap_or(0);
        }
        println!("{name} reads/s (16 clients): {:.0}", total as f64 / 5.0);
        reads.insert(name.into(), json!(total as f64 / 5.0));
    }
    Ok(json!({"bench": "kv", "value_size": value_size, "writes": results, "reads_per_s": reads}))
}
