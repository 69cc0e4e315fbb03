//! Issue 13: the example hooks' fence must fail when it cannot confirm the old primary let go
//! (cluster-config/hooks/vip.sh and service.sh). Runs the real scripts with /bin/sh; the VIP
//! cases run in two network namespaces joined by a veth pair (root), where one namespace plays
//! the old primary that still holds the address.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("cluster-config/hooks")
        .join(name)
}

fn which(tool: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
}

/// Runs `sh <script>` as the fence hook with `env`, optionally inside network namespace `ns`.
fn fence(script: &Path, ns: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "/bin/sh"]);
            c
        }
        None => Command::new("/bin/sh"),
    };
    cmd.arg(script)
        .env("QUORATE_HOOK", "fence")
        .env("QUORATE_FENCE_TARGET", "2")
        .envs(env.iter().copied());
    cmd.output().expect("run the hook script with /bin/sh")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Without arping on PATH the VIP fence cannot check anything: it must fail and say why.
#[test]
fn vip_fence_fails_without_its_check_tool() {
    let bin = tempfile::tempdir().expect("tempdir");
    // A PATH with only what the script needs besides arping.
    for tool in ["ip", "grep", "sh"] {
        if let Some(p) = which(tool) {
            std::os::unix::fs::symlink(&p, bin.path().join(tool)).expect("symlink a tool");
        }
    }
    let path = bin.path().display().to_string();
    let out = fence(
        &script("vip.sh"),
        None,
        &[("PATH", &path), ("VIP", "192.0.2.77/24"), ("DEV", "lo")],
    );
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("cannot confirm the old primary released 192.0.2.77"),
        "{err}"
    );
    if which("ip").is_some() {
        assert!(err.contains("arping is not installed"), "{err}");
    }
}

/// service.sh's fence has no device to ask unless FENCE_COMMAND names one; a failing one
/// fails the fence, a succeeding one passes it.
#[test]
fn service_fence_fails_unless_its_fence_command_succeeds() {
    let s = script("service.sh");
    let out = fence(&s, None, &[]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stderr(&out).contains("no fencing device configured"),
        "{out:?}"
    );
    let out = fence(&s, None, &[("FENCE_COMMAND", "exit 3")]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr(&out).contains("FENCE_COMMAND failed"), "{out:?}");
    let out = fence(&s, None, &[("FENCE_COMMAND", "true")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// Two namespaces joined by a veth pair; removed on drop.
struct Lan {
    here: String,
    old_primary: String,
}

impl Lan {
    fn new() -> Result<Lan, String> {
        let tag = std::process::id() % 100_000;
        let lan = Lan {
            here: format!("qvh{tag}"),
            old_primary: format!("qvo{tag}"),
        };
        let (a, b) = (format!("qv{tag}a"), format!("qv{tag}b"));
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &lan.here],
            vec!["netns", "add", &lan.old_primary],
            vec!["link", "add", &a, "type", "veth", "peer", "name", &b],
            vec!["link", "set", &a, "netns", &lan.here],
            vec!["link", "set", &b, "netns", &lan.old_primary],
            vec!["-n", &lan.here, "addr", "add", "10.77.0.1/24", "dev", &a],
            vec![
                "-n",
                &lan.old_primary,
                "addr",
                "add",
                "10.77.0.2/24",
                "dev",
                &b,
            ],
            vec!["-n", &lan.here, "link", "set", &a, "up"],
            vec!["-n", &lan.old_primary, "link", "set", &b, "up"],
        ];
        for args in steps {
            let out = Command::new("ip")
                .args(&args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if !out.status.success() {
                return Err(format!("ip {}: {}", args.join(" "), stderr(&out)));
            }
        }
        Ok(lan)
    }

    fn dev(&self) -> String {
        format!("qv{}a", std::process::id() % 100_000)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        for ns in [&self.here, &self.old_primary] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// While another host answers for the VIP the fence fails; once it let go, it passes.
#[test]
fn vip_fence_fails_while_the_old_primary_still_answers_for_the_address() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || which("ip").is_none() || which("arping").is_none() {
        common::skip_unless_ci("needs root, ip (iproute2) and arping (iputils-arping)");
        return;
    }
    let lan = match Lan::new() {
        Ok(l) => l,
        Err(e) => {
            common::skip_unless_ci(&format!("cannot create network namespaces: {e}"));
            return;
        }
    };
    let dev = lan.dev();
    let s = script("vip.sh");
    let env = [("VIP", "10.77.0.2/24"), ("DEV", dev.as_str())];
    // The old primary still holds 10.77.0.2.
    let out = fence(&s, Some(&lan.here), &env);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr(&out).contains("still answers ARP"), "{out:?}");

    // It dropped the address (its demote ran): now the fence can confirm.
    let del = Command::new("ip")
        .args(["-n", &lan.old_primary, "addr", "del", "10.77.0.2/24", "dev"])
        .arg(format!("qv{}b", std::process::id() % 100_000))
        .output()
        .expect("ip addr del");
    assert!(del.status.success(), "{del:?}");
    let out = fence(&s, Some(&lan.here), &env);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // An out-of-band fence that fails fails the whole fence, even with the address free.
    let env = [
        ("VIP", "10.77.0.2/24"),
        ("DEV", dev.as_str()),
        ("FENCE_COMMAND", "exit 7"),
    ];
    let out = fence(&s, Some(&lan.here), &env);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr(&out).contains("FENCE_COMMAND failed"), "{out:?}");
}

/// Runs `sh <script>` as the `hook` action with `env` and a PATH whose `systemctl` records
/// its arguments in `<dir>/systemctl.log` (and fails for `is-active` of units listed in
/// `INACTIVE`), so the example's systemd calls can be read back.
fn run_with_recording_systemctl(
    script: &Path,
    dir: &Path,
    hook: &str,
    env: &[(&str, &str)],
) -> (Output, String) {
    let log = dir.join("systemctl.log");
    let fake = dir.join("systemctl");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nif [ \"$1\" = is-active ]; then for u in $INACTIVE; do [ \"$u\" = \"$3\" ] && exit 3; done; fi\nexit 0\n",
            log.display()
        ),
    )
    .expect("write the recording systemctl");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!("{}:/usr/bin:/bin", dir.display());
    let out = Command::new("/bin/sh")
        .arg(script)
        .env("PATH", path)
        .env("QUORATE_HOOK", hook)
        .env("INACTIVE", "")
        .envs(env.iter().copied())
        .output()
        .expect("run the hook script");
    (out, std::fs::read_to_string(&log).unwrap_or_default())
}

/// service.sh's follow stops the primary's unit and points the replica unit at the new
/// primary's service address; without that address it fails and names the config key.
#[test]
fn service_follow_points_the_replica_unit_at_the_new_primary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = script("service.sh");
    let env = [
        ("UNIT", "app.service"),
        ("REPLICA_UNIT", "app-replica.service"),
        ("QUORATE_PRIMARY", "3"),
        ("QUORATE_PRIMARY_SERVICE", "db3.example:5432"),
    ];
    let (out, calls) = run_with_recording_systemctl(&s, dir.path(), "follow", &env);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        [
            "stop app.service",
            "set-environment QUORATE_PRIMARY_SERVICE=db3.example:5432",
            "restart app-replica.service",
        ],
        "{calls}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("REPLICA_UNIT", "app-replica.service"),
        ("QUORATE_PRIMARY", "3"),
        ("QUORATE_PRIMARY_SERVICE", ""),
    ];
    let (out, calls) = run_with_recording_systemctl(&s, dir.path(), "follow", &env);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr(&out).contains("[[peer]]"), "{out:?}");
    assert!(!calls.contains("restart"), "{calls}");
}

/// service.sh's monitor reports the role in the JSON quorate reads, and fails when the unit
/// that should run is down.
#[test]
fn service_monitor_reports_its_role_and_fails_on_a_dead_unit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = script("service.sh");
    let env = [("UNIT", "app.service"), ("QUORATE_ROLE", "primary")];
    let (out, _) = run_with_recording_systemctl(&s, dir.path(), "monitor", &env);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report = String::from_utf8_lossy(&out.stdout);
    let parsed = quorate::resource::report::parse_report(&report).expect("a valid report");
    assert_eq!(
        parsed.map(|r| r.report.role),
        Some(Some(quorate::types::ServiceRole::Primary)),
        "{report}"
    );
    let env = [
        ("UNIT", "app.service"),
        ("QUORATE_ROLE", "primary"),
        ("INACTIVE", "app.service"),
    ];
    let (out, _) = run_with_recording_systemctl(&s, dir.path(), "monitor", &env);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
}

/// An action a script does not know fails and says so, instead of passing silently.
#[test]
fn example_scripts_refuse_an_unknown_action() {
    for name in ["service.sh", "vip.sh", "filedb.sh"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (out, _) = run_with_recording_systemctl(
            &script(name),
            dir.path(),
            "snapshot-of-the-future",
            &[
                ("FILEDB_ROOT", &dir.path().display().to_string()),
                ("QUORATE_NODE", "1"),
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
        assert!(stderr(&out).contains("unknown"), "{name}: {out:?}");
    }
}
