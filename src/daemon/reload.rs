//! SIGHUP: re-read the config and apply what may change at runtime.

use super::assembly::RunningNode;
use super::{log_filter, LogReload};
use crate::config::Config;

/// SIGHUP: re-reads the config file and applies what may change at runtime (the log filter
/// and the hook settings), or refuses the whole reload, saying why. The daemon goes on with
/// its running settings either way. Returns the outcome in one line (also logged).
pub fn reload(
    path: &std::path::Path,
    running_config: &mut Config,
    running: &RunningNode,
    log_reload: Option<&LogReload>,
) -> String {
    let mut new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            let msg = format!(
                "reload refused, nothing applied: the config file is invalid; fix it and send SIGHUP again (`systemctl reload quorate`): {e}"
            );
            tracing::error!("{msg}");
            return msg;
        }
    };
    // A --data-dir override stays in force.
    new.data_dir = running_config.data_dir.clone();
    let plan = match crate::config::reload::plan(running_config, &new) {
        Ok(p) => p,
        Err(e) => {
            let msg = e.to_string();
            tracing::error!("{msg}");
            return msg;
        }
    };
    if plan.changed.is_empty() {
        let msg = "reload: nothing changed".to_string();
        tracing::info!("{msg}");
        return msg;
    }
    let new_filter = if plan.changed.contains(&"log.level") {
        match log_filter(&new.log.level) {
            Ok(f) => Some(f),
            Err(e) => {
                let msg = format!("reload refused, nothing applied: {e}");
                tracing::error!("{msg}");
                return msg;
            }
        }
    } else {
        None
    };
    if let Err(msg) = running.node.reload_hooks(&new) {
        tracing::error!("{msg}");
        return msg;
    }
    if let (Some(filter), Some(handle)) = (new_filter, log_reload) {
        if let Err(e) = handle.reload(filter) {
            tracing::error!("reload: the log filter could not be changed: {e}");
        }
    }
    *running_config = new;
    let msg = format!("reloaded: {}", plan.changed.join(", "));
    tracing::info!("{msg}");
    msg
}
