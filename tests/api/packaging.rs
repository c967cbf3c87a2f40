//! Packaging checks that run everywhere: the systemd unit verifies with `systemd-analyze` and
//! its exposure score stays "OK" (≤ 2.0), and it lets the daemon write where the default
//! configuration lets scheduled exports go.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kasad");

fn unit_text() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/kasad.service"
    ))
    .unwrap()
}

fn analyze(args: &[&str], unit: &std::path::Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze runs (Debian's systemd package)");
    (out.status.success(), crate::helpers::output_text(&out))
}

#[test]
fn the_systemd_unit_verifies_and_its_exposure_is_ok() {
    let dir = tempfile::tempdir().unwrap();
    // verify checks that ExecStart exists: point it at the binary under test.
    let unit = dir.path().join("kasad.service");
    std::fs::write(&unit, unit_text().replace("/usr/bin/kasad", BIN)).unwrap();
    let (ok, text) = analyze(&["verify"], &unit);
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify: {text}"
    );
    let (ok, text) = analyze(&["security", "--offline=yes", "--threshold=20"], &unit);
    let score: f64 = text
        .split("Overall exposure level for kasad.service: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(ok && score <= 2.0, "exposure {score} > 2.0:\n{text}");
}

#[test]
fn the_unit_lets_scheduled_exports_reach_the_default_drop_roots() {
    let text = unit_text();
    let rw: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("ReadWritePaths="))
        .flat_map(|l| l.split_whitespace())
        .map(|p| p.trim_start_matches('-'))
        .collect();
    let defaults = kasad::config::Settings::default();
    for root in &defaults.delivery.directory_roots {
        assert!(
            rw.contains(&root.to_str().unwrap()),
            "{root:?} is a default drop root but not writable under the unit: {rw:?}"
        );
    }
    for line in [
        "User=kasad",
        "Type=notify",
        "WatchdogSec=",
        "StateDirectory=kasad",
    ] {
        assert!(text.contains(line), "{line}");
    }
    let sysusers = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/kasad.sysusers"
    ))
    .unwrap();
    assert!(
        sysusers.lines().any(|l| l.starts_with("u kasad ")),
        "{sysusers}"
    );
}
