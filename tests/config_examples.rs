//! Every shipped example config must pass validation (hook files may be absent here: they
//! live under /etc/quorate on a real node).

use std::path::Path;

#[test]
fn every_example_config_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster-config");
    let mut checked = 0;
    for dir in [
        "local",
        "three-node",
        "two-node-witness",
        "five-node",
        "postgres",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).expect("example dir") {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) == Some("toml") {
                if let Err(e) = quorate::config::Config::load(&path) {
                    panic!("{} does not validate:\n{e}", path.display());
                }
                checked += 1;
            }
        }
    }
    assert_eq!(
        checked,
        3 + 3 + 3 + 5 + 3,
        "expected every example node file"
    );
}

#[test]
fn the_systemd_unit_names_the_documented_paths() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster-config/systemd/quorate.service"),
    )
    .expect("unit file");
    assert!(unit.contains("Type=notify"));
    assert!(
        unit.contains("ExecStart=/usr/local/bin/quorate run --config /etc/quorate/quorate.toml")
    );
    assert!(unit.contains("WatchdogSec="));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
}
