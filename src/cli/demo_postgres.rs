//! `quorate demo --service postgres`: three PostgreSQL 15 instances under three quorate
//! nodes on 127.0.0.1, run by the built-in postgres agent from empty data dirs: bootstrap and
//! streaming, writes, a kill -9 of the primary node (quorate and postmaster) with the
//! failover measured and every acknowledged row checked, the old primary's rewind, and a
//! supervised failback. Cleans up every process and file it made unless `--keep`.

use std::time::{Duration, Instant};

use crate::cli::demo::{
    acting_primary, failback_available, failback_to, print_table, step, wait_for,
};
use crate::cli::localcluster::ClusterSpec;
use crate::cli::pgcluster::{PgLocalCluster, SUPERUSER_PASSWORD};

/// Requests a switchover to `to` through `sc` and waits until `to` acts as primary; returns
/// the milliseconds from request to `/primary` 200 on `to`.
async fn switchover_to(pg: &PgLocalCluster, via: u64, to: u64) -> Result<u128, String> {
    let c = pg.cluster();
    let sc = c.client(via, Duration::from_secs(5)).ok_or("no client")?;
    let at = Instant::now();
    let body = format!("{{\"to\": {to}}}").into_bytes();
    match sc
        .send(reqwest::Method::POST, "/v1/switchover", Some(body), None)
        .await
    {
        Ok((200, _)) => {}
        Ok((s, b)) => {
            return Err(format!(
                "switchover refused: HTTP {s}: {}",
                String::from_utf8_lossy(&b)
            ))
        }
        Err(e) => return Err(e.to_string()),
    }
    wait_for("the switchover", || async {
        (acting_primary(c).await == Some(to)).then_some(())
    })
    .await?;
    Ok(at.elapsed().as_millis())
}

pub async fn demo(keep: bool) -> Result<(), String> {
    crate::cli::pgcluster::require_postgres()?;
    let bin = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    std::env::set_var("QUORATE_BIN", &bin);
    let mut spec = ClusterSpec::voters(3);
    spec.name = "demo-pg".into();
    spec.extra = crate::cli::pgcluster::CALM_TIMING.into();
    let mut pg = PgLocalCluster::create(&spec, "monitor_interval = \"500ms\"\n", "quorum")?;
    pg.cluster_mut()
        .env
        .push(("QUORATE_LOG".into(), "warn".into()));
    println!(
        "quorate demo: 3 quorate nodes running 3 PostgreSQL 15 instances on 127.0.0.1 in {}",
        pg.cluster().path().display()
    );

    step("starting three nodes from empty data dirs (initdb on the first primary, clones on the others)");
    let t0 = Instant::now();
    pg.cluster_mut().start_all().map_err(|e| e.to_string())?;
    let first = wait_for("a primary", || acting_primary(pg.cluster()))
        .await
        .map_err(|e| format!("{e}\n{}", pg.logs_tail()))?;
    let others: Vec<u64> = pg
        .cluster()
        .ids()
        .into_iter()
        .filter(|i| *i != first)
        .collect();
    wait_for("both standbys streaming", || async {
        pg.all_stream_from(first, &others).await.then_some(())
    })
    .await
    .map_err(|e| format!("{e}\n{}", pg.logs_tail()))?;
    println!(
        "node {first} is primary and both standbys stream from it, {} ms after start",
        t0.elapsed().as_millis()
    );
    print_table(pg.cluster()).await;

    step(&format!("a writer inserts rows through node {first}; then kill -9 of node {first} (quorate and postmaster)"));
    let client = pg.sql(first).await?;
    client
        .batch_execute("CREATE TABLE demo (id bigint PRIMARY KEY, epoch bigint, server int)")
        .await
        .map_err(|e| e.to_string())?;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let writer = {
        let acked = acked.clone();
        tokio::spawn(async move {
            for i in 0..1_000_000_i64 {
                let r = tokio::time::timeout(
                    Duration::from_secs(3),
                    client.execute(
                        "INSERT INTO demo SELECT $1, epoch, inet_server_port() FROM quorate.fencing",
                        &[&i],
                    ),
                )
                .await;
                match r {
                    Ok(Ok(_)) => acked.lock().unwrap_or_else(|p| p.into_inner()).push(i),
                    _ => break,
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    pg.kill9_node(first);
    let killed = Instant::now();
    let _ = writer.await;
    let second = wait_for("a new primary", || acting_primary(pg.cluster())).await?;
    let failover_ms = killed.elapsed().as_millis();
    let acked: Vec<i64> = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let new = pg.sql(second).await?;
    let present: std::collections::HashSet<i64> = new
        .query("SELECT id FROM demo", &[])
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost = acked.iter().filter(|i| !present.contains(i)).count();
    println!(
        "node {second} took over: /primary answered 200 there {failover_ms} ms after the kill; {} acknowledged rows, {lost} lost",
        acked.len()
    );
    print_table(pg.cluster()).await;

    step(&format!(
        "restarting node {first}: it rewinds (pg_rewind) and streams from node {second}"
    ));
    pg.cluster_mut().start(first).map_err(|e| e.to_string())?;
    wait_for("the old primary streaming", || async {
        pg.all_stream_from(second, &[first]).await.then_some(())
    })
    .await
    .map_err(|e| format!("{e}\n{}", pg.logs_tail()))?;
    print_table(pg.cluster()).await;

    let third = others
        .iter()
        .copied()
        .find(|i| *i != second)
        .ok_or("a third node")?;
    step(&format!(
        "planned switchover to node {third} (maintenance of node {second}): demote, catch up, promote"
    ));
    wait_for("both standbys streaming", || async {
        pg.all_stream_from(second, &[first, third])
            .await
            .then_some(())
    })
    .await
    .map_err(|e| format!("{e}\n{}", pg.logs_tail()))?;
    let switchover_ms = switchover_to(&pg, second, third).await?;
    println!("node {third} is primary {switchover_ms} ms after the request");
    wait_for("the standbys streaming from the new primary", || async {
        pg.all_stream_from(third, &[first, second])
            .await
            .then_some(())
    })
    .await
    .map_err(|e| format!("{e}\n{}", pg.logs_tail()))?;
    print_table(pg.cluster()).await;

    step(&format!(
        "supervised failback to home node {first} (sync, cut over, verify, commit)"
    ));
    let sc = pg
        .cluster()
        .client(third, Duration::from_secs(5))
        .ok_or("no client")?;
    failback_available(&sc).await?;
    let failback_ms = failback_to(&sc, first).await?;
    println!("failback committed in {failback_ms} ms; node {first} is primary again");
    print_table(pg.cluster()).await;

    step("summary");
    println!("unplanned failover (kill -9 -> /primary 200 on the new node): {failover_ms} ms");
    println!("acknowledged commits lost: {lost} of {}", acked.len());
    println!("planned switchover (request -> /primary 200 on the target): {switchover_ms} ms");
    println!("supervised failback (request -> committed): {failback_ms} ms");
    if keep {
        println!(
            "\nthe cluster keeps running (--keep): PostgreSQL on 127.0.0.1 ports {:?} (user postgres, password {SUPERUSER_PASSWORD})",
            pg.ports()
        );
        pg.detach();
        return Ok(());
    }
    println!("\ncleaning up (use --keep to leave the cluster running)");
    if lost > 0 {
        return Err(format!("{lost} acknowledged commits were lost"));
    }
    Ok(())
}
