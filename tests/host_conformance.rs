//! Host conformance: the daemon (the policy's host) handles every `Action` the policy can emit
//! and produces every `Event` the policy waits for, and the hook runner knows every hook kind.
//!
//! The compiler checks that a `match` is exhaustive, not that an arm does something: a
//! wildcard arm (`_ => {}`) or a variant handled only as "log it" compiles fine. That is how a
//! policy once emitted `DemoteNow` and no host acted on it. This test reads the sources: each
//! `Action` variant must have its own arm in the executor's dispatch (`fn perform`, or the step
//! loop for `ReadyToExit`), the dispatch has no wildcard arm, each `Event` variant is
//! constructed somewhere in `src/daemon/`, and `HookKind::ALL` names every `HookKind`.
//! A checker self-test proves the check fails on a host that misses a variant.

use std::path::Path;

fn read(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Strips `//` comments (line and doc), so commented-out arms do not count.
fn code_only(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The variant names of `pub enum NAME { ... }` in `text` (top-level variants only: the lines
/// indented by exactly four spaces that start with an upper-case letter).
fn variants(text: &str, name: &str) -> Vec<String> {
    let code = code_only(text);
    let head = format!("pub enum {name} {{");
    let start = code
        .find(&head)
        .unwrap_or_else(|| panic!("no `{head}` found"));
    let body = &code[start + head.len()..];
    let end = body.find("\n}").unwrap_or(body.len());
    body[..end]
        .lines()
        .filter(|l| l.starts_with("    ") && !l.starts_with("     "))
        .filter_map(|l| {
            let t = l.trim_start();
            let word: String = t
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            word.chars()
                .next()
                .is_some_and(|c| c.is_ascii_uppercase())
                .then_some(word)
        })
        .collect()
}

/// The text of `fn NAME(` up to the next function at the same indentation (or the end).
fn function_body<'a>(code: &'a str, name: &str) -> &'a str {
    let head = format!("fn {name}(");
    let start = code
        .find(&head)
        .unwrap_or_else(|| panic!("no `{head}` in the executor"));
    let rest = &code[start + head.len()..];
    let end = rest.find("\n    fn ").unwrap_or(rest.len());
    &rest[..end]
}

/// An arm for `Action::V`: the path followed by a pattern opener or `=>`.
fn has_arm(body: &str, variant: &str) -> bool {
    let path = format!("Action::{variant}");
    body.match_indices(&path).any(|(i, _)| {
        let after = body[i + path.len()..].trim_start();
        after.starts_with('{') || after.starts_with('(') || after.starts_with("=>")
    })
}

/// Problems with a host: each `Action` variant without its own arm in `perform` (or, for
/// `ReadyToExit`, in `step_loop`), and a wildcard arm in `perform`.
fn dispatch_problems(actions: &[String], executor: &str) -> Vec<String> {
    let code = code_only(executor);
    let perform = function_body(&code, "perform");
    let mut problems = Vec::new();
    for v in actions {
        let handled = has_arm(perform, v) || (v == "ReadyToExit" && has_arm(&code, v));
        if !handled {
            problems.push(format!(
                "Action::{v} has no arm of its own in the executor's `perform`: handle it \
                 (src/daemon/executor.rs)"
            ));
        }
    }
    if perform.lines().any(|l| l.trim_start().starts_with("_ =>")) {
        problems.push(
            "the executor's `perform` has a wildcard arm `_ =>`: name every Action variant, so \
             a new one cannot be dropped silently"
                .to_string(),
        );
    }
    problems
}

fn daemon_sources() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/daemon");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| code_only(&std::fs::read_to_string(p).expect("read a daemon source")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_executor_handles_every_action_the_policy_can_emit() {
    let actions = variants(&read("src/policy/action.rs"), "Action");
    assert!(
        actions.len() >= 6 && actions.iter().any(|a| a == "DemoteNow"),
        "parsed too few Action variants: {actions:?}"
    );
    let problems = dispatch_problems(&actions, &read("src/daemon/executor.rs"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_daemon_produces_every_event_the_policy_observes() {
    let events = variants(&read("src/policy/action.rs"), "Event");
    assert!(
        events.iter().any(|e| e == "HookFinished"),
        "parsed too few Event variants: {events:?}"
    );
    let daemon = daemon_sources();
    let missing: Vec<_> = events
        .iter()
        .filter(|e| !daemon.contains(&format!("Event::{e}")))
        .collect();
    assert!(
        missing.is_empty(),
        "no code in src/daemon/ produces these policy events (the policy would wait for them \
         forever): {missing:?}"
    );
}

#[test]
fn hook_kind_all_names_every_hook_kind() {
    let text = read("src/types.rs");
    let kinds = variants(&text, "HookKind");
    assert!(
        kinds.len() >= 5,
        "parsed too few HookKind variants: {kinds:?}"
    );
    let listed: Vec<String> = quorate::types::HookKind::ALL
        .iter()
        .map(|k| format!("{k:?}"))
        .collect();
    for k in &kinds {
        assert!(
            listed.contains(k),
            "HookKind::{k} is missing from HookKind::ALL (src/types.rs): the runner, stats and \
             `config check` would not know it"
        );
    }
}

#[test]
fn the_checker_catches_a_host_that_drops_an_action() {
    let actions: Vec<String> = ["Propose", "DemoteNow", "ReadyToExit"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let good = "
impl X {
    fn step_loop(&mut self) {
        match a {
            Action::ReadyToExit => exit = true,
            other => self.perform(other),
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Propose { id, cmd } => {}
            Action::DemoteNow { reason } => stop(),
            Action::ReadyToExit => {}
        }
    }
}
";
    assert!(dispatch_problems(&actions, good).is_empty());
    let missing = good.replace("            Action::DemoteNow { reason } => stop(),\n", "");
    let p = dispatch_problems(&actions, &missing);
    assert!(p.len() == 1 && p[0].contains("Action::DemoteNow"), "{p:?}");
    let commented = good.replace(
        "            Action::DemoteNow { reason } => stop(),",
        "            // Action::DemoteNow { reason } => stop(),",
    );
    assert_eq!(dispatch_problems(&actions, &commented).len(), 1);
    let wildcard = missing.replace(
        "            Action::ReadyToExit => {}\n        }\n    }\n}",
        "            _ => {}\n        }\n    }\n}",
    );
    let p = dispatch_problems(&actions, &wildcard);
    assert!(p.iter().any(|m| m.contains("wildcard")), "{p:?}");
    // A variant named only in a log line is not an arm.
    let only_logged = good.replace(
        "            Action::DemoteNow { reason } => stop(),\n",
        "            x => tracing::info!(\"Action::DemoteNow ignored\"),\n",
    );
    assert!(!dispatch_problems(&actions, &only_logged).is_empty());
}
