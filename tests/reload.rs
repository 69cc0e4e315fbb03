//! SIGHUP (`systemctl reload quorate`): the log filter and the hook settings change in the
//! running daemon; anything else, an invalid file or a hook that cannot run is refused as a
//! whole, with the reason in the log and in `quorate status`, and the daemon goes on.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{marker_hook, Cluster, Options, WAIT};

const BASE_RESOURCE: &str = "\n[resource]\nhook_timeout = \"5s\"\nmonitor_interval = \"200ms\"\n";

/// The node's config as first written, with `extra` appended (more tables, or more keys of
/// the `[resource]` table, which comes last).
fn rewrite(config: &Path, original: &str, extra: &str) {
    std::fs::write(config, format!("{original}{extra}")).expect("rewrite config");
}

async fn reload_and_wait(c: &Cluster, previous: &Option<String>) -> String {
    c.signal(1, libc::SIGHUP);
    let st = c
        .wait_status(1, "the reload outcome in status", WAIT, |s| {
            s.last_reload.is_some() && s.last_reload != *previous
        })
        .await;
    st.last_reload.unwrap_or_default()
}

fn debug_lines(c: &Cluster) -> usize {
    std::fs::read_to_string(&c.node(1).log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" DEBUG "))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_log_level_and_hooks_and_refuses_the_rest() {
    let mut c = Cluster::new(
        &["voter"],
        Options {
            extra: BASE_RESOURCE.into(),
            ..Options::default()
        },
    );
    // The config's [log] level must rule, not the harness's QUORATE_LOG.
    c.set_env(1, "QUORATE_LOG", "");
    c.start_all();
    c.wait_acting_primary(&[1], WAIT).await;
    let config = c.node(1).config.clone();
    let original = std::fs::read_to_string(&config).expect("read config");
    let st = c.status(1).await.expect("status");
    assert_eq!(st.health, "unknown", "no monitor hook yet");
    assert_eq!(st.last_reload, None);
    let debug_before = debug_lines(&c);

    // 1. Log level and a new monitor hook: applied.
    let hook = marker_hook().display().to_string();
    let with_monitor = format!("monitor = \"{hook}\"\nfailure_threshold = 2\n");
    rewrite(
        &config,
        &original,
        &format!("{with_monitor}[log]\nlevel = \"debug\"\n"),
    );
    let out = reload_and_wait(&c, &None).await;
    assert!(
        out.starts_with("reloaded: ")
            && out.contains("log.level")
            && out.contains("resource.monitor")
            && out.contains("resource.failure_threshold"),
        "{out}"
    );
    c.wait_status(1, "the reloaded monitor hook runs", WAIT, |s| {
        s.health == "healthy"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        debug_lines(&c) > debug_before,
        "debug lines appear after the reload\n{}",
        c.logs_tail()
    );

    // 2. A key that needs a restart: refused as a whole, nothing applied.
    rewrite(
        &config,
        &original,
        &format!("{with_monitor}[log]\nlevel = \"info\"\n[timing]\nlease = \"120ms\"\n"),
    );
    let prev = Some(out);
    let out = reload_and_wait(&c, &prev).await;
    assert!(
        out.contains("reload refused")
            && out.contains("timing")
            && out.contains("systemctl restart quorate"),
        "{out}"
    );
    let debug_mark = debug_lines(&c);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        debug_lines(&c) > debug_mark,
        "the log level stayed debug: the refused reload applied nothing"
    );

    // 3. A hook that cannot run: refused, naming it.
    rewrite(
        &config,
        &original,
        "monitor = \"/nonexistent/quorate-hook\"\n",
    );
    let prev = Some(out);
    let out = reload_and_wait(&c, &prev).await;
    assert!(
        out.contains("reload refused") && out.contains("/nonexistent/quorate-hook"),
        "{out}"
    );

    // 4. A file that does not parse: refused.
    std::fs::write(&config, format!("{original}\nthis is not toml = = =\n")).expect("write");
    let prev = Some(out);
    let out = reload_and_wait(&c, &prev).await;
    assert!(
        out.contains("reload refused") && out.contains("invalid"),
        "{out}"
    );
    assert!(c.is_running(1), "a refused reload never stops the daemon");
    let st = c.status(1).await.expect("status");
    assert_eq!(st.health, "healthy", "the monitor hook still runs");
    assert!(st.acting_primary, "still the primary");

    // 5. Back to the original file: the monitor hook goes away, health is unknown again.
    rewrite(&config, &original, "");
    let prev = Some(out);
    let out = reload_and_wait(&c, &prev).await;
    assert!(
        out.contains("resource.monitor") && out.contains("log.level"),
        "{out}"
    );
    c.wait_status(1, "health unknown without a monitor hook", WAIT, |s| {
        s.health == "unknown"
    })
    .await;
}
