//! Packaging checks that run everywhere: the systemd unit verifies with `systemd-analyze`, its
//! exposure score stays "OK" (≤ 2.0), its system call filter lets threads lower their priority,
//! and it lets the daemon write where the default
//! configuration lets scheduled exports go; the Debian package description is complete; the
//! Avahi service file is what Avahi reads.

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
    // Exports and previews lower their threads' priority: systemd's reading of the filter
    // lets setpriority through (the rest of @resources stays denied).
    assert!(
        text.contains("setpriority is allowed"),
        "the system call filter blocks setpriority:\n{text}"
    );
}

/// Every system call in `group` (nested groups expanded), as systemd reads it.
fn syscalls(group: &str) -> std::collections::BTreeSet<String> {
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", group])
        .output()
        .expect("systemd-analyze runs (Debian's systemd package)");
    let mut all = std::collections::BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        if name.starts_with('@') {
            all.extend(syscalls(name));
        } else {
            all.insert(name.to_owned());
        }
    }
    all
}

/// The unit bounds descriptors, memory and tasks, and its system call filter lets through
/// what the hardened code calls: directory delivery through descriptors (openat2, mkdirat,
/// renameat2, linkat, unlinkat, fsync) and the HTTP server's accept loop. (`lchown` is not
/// among them: only `kasad restore` and `kasad import`, run as root outside the unit, give
/// files away; the daemon never does, and @privileged denies it.)
#[test]
fn the_unit_bounds_resources_and_its_filter_allows_what_kasad_calls() {
    let text = unit_text();
    for line in [
        "LimitNOFILE=8192",
        "MemoryHigh=50%",
        "MemoryMax=70%",
        "TasksMax=",
    ] {
        assert!(text.contains(line), "the unit lacks {line}");
    }
    let mut allowed = std::collections::BTreeSet::new();
    for l in text.lines() {
        let Some(v) = l.strip_prefix("SystemCallFilter=") else {
            continue;
        };
        let (deny, v) = match v.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, v),
        };
        for item in v.split_whitespace() {
            let set = if item.starts_with('@') {
                syscalls(item)
            } else {
                std::iter::once(item.to_owned()).collect()
            };
            for sc in set {
                if deny {
                    allowed.remove(&sc);
                } else {
                    allowed.insert(sc);
                }
            }
        }
    }
    assert!(allowed.len() > 100, "the filter was not read: {allowed:?}");
    for sc in [
        "openat2",
        "openat",
        "mkdirat",
        "renameat2",
        "linkat",
        "unlinkat",
        "fsync",
        "newfstatat",
        "statx",
        "accept4",
        "setpriority",
    ] {
        assert!(allowed.contains(sc), "the unit's filter blocks {sc}");
    }
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

/// The Debian package's description in Cargo.toml (what `cargo deb` builds; scripts/deb builds
/// and unpacks the real .deb): every asset exists, the config is a conffile, the unit is
/// installed but not started by the package, and the maintainer scripts are valid sh that
/// create the user and say how to create the first admin.
#[test]
fn the_debian_package_description_is_complete() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets: Vec<(String, String)> = deb["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_array().unwrap();
            (
                a[0].as_str().unwrap().to_owned(),
                a[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (src, _) in &assets {
        if src != "target/release/kasad" {
            assert!(root.join(src).is_file(), "asset {src} is missing");
        }
    }
    let dests: Vec<&str> = assets.iter().map(|(_, d)| d.as_str()).collect();
    for d in ["usr/bin/", "etc/kasad/kasad.toml"] {
        assert!(dests.contains(&d), "{d} in {dests:?}");
    }
    assert_eq!(
        deb["conf-files"].as_array().unwrap()[0].as_str(),
        Some("/etc/kasad/kasad.toml")
    );
    // cargo-deb installs <unit-scripts>/kasad.service and kasad.sysusers from there.
    let units = &deb["systemd-units"];
    assert_eq!(units["unit-scripts"].as_str(), Some("systemd/"));
    for f in ["systemd/kasad.service", "systemd/kasad.sysusers"] {
        assert!(root.join(f).is_file(), "{f}");
    }
    assert_eq!(
        (units["enable"].as_bool(), units["start"].as_bool()),
        (Some(false), Some(false)),
        "`dpkg -i` then `systemctl enable --now kasad`"
    );
    let scripts = root.join(deb["maintainer-scripts"].as_str().unwrap());
    for s in ["postinst", "postrm"] {
        let path = scripts.join(s);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{s} is executable");
        let ok = Command::new("sh").arg("-n").arg(&path).status().unwrap();
        assert!(ok.success(), "{s} is valid sh");
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("#DEBHELPER#")
        );
    }
    let postinst = std::fs::read_to_string(scripts.join("postinst")).unwrap();
    assert!(postinst.contains("systemd-sysusers kasad.conf"));
    assert!(postinst.contains("sudo kasad user add admin --role admin"));
    assert!(postinst.contains(
        "kasad avahi-service --config /etc/kasad/kasad.toml --out /etc/avahi/services/kasad.service"
    ));
    let postrm = std::fs::read_to_string(scripts.join("postrm")).unwrap();
    assert!(postrm.contains("rm -f /etc/avahi/services/kasad.service"));
    // The packaged config is the documented example and valid.
    let out = Command::new(BIN)
        .args(["check-config"])
        .arg(root.join("systemd/kasad.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        crate::helpers::output_text(&out)
    );
}

#[test]
fn avahi_publishes_the_packaged_config_and_nothing_when_mdns_is_off() {
    use std::ffi::OsStr;
    let config = OsStr::new(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/kasad.toml"));
    let printed = Command::new(BIN)
        .args([OsStr::new("avahi-service"), OsStr::new("--config"), config])
        .output()
        .unwrap();
    assert!(
        printed.status.success(),
        "{}",
        crate::helpers::output_text(&printed)
    );
    // Read back by Python's XML parser: the service group Avahi loads.
    let parse = r#"
import json, sys, xml.etree.ElementTree as ET
g = ET.fromstring(sys.stdin.buffer.read())
print(json.dumps({"name": g.find("name").text, "wild": g.find("name").get("replace-wildcards"),
    "services": [[s.find("type").text, s.find("port").text, [t.text for t in s.findall("txt-record")]]
                 for s in g.findall("service")]}))
"#;
    let mut py = Command::new("python3")
        .args(["-c", parse])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    py.stdin.take().unwrap().write_all(&printed.stdout).unwrap();
    let parsed = py.wait_with_output().unwrap();
    assert!(parsed.status.success());
    let v: serde_json::Value = serde_json::from_slice(&parsed.stdout).unwrap();
    assert_eq!(v["name"], "kasad on %h");
    assert_eq!(v["wild"], "yes");
    let version = format!("version={}", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        v["services"],
        serde_json::json!([
            ["_http._tcp", "5272", ["path=/"]],
            ["_kasad._tcp", "5272", ["path=/api", version]]
        ])
    );
    let dir = tempfile::tempdir().unwrap();
    let off = dir.path().join("off.toml");
    std::fs::write(&off, "[mdns]\nenabled = false\n").unwrap();
    let (ok, text) = crate::helpers::kasad_cli(&[
        OsStr::new("avahi-service"),
        OsStr::new("--config"),
        off.as_os_str(),
    ]);
    assert!(!ok && !text.contains("<service-group>"));
    assert!(text.contains("[mdns] enabled = false"), "{text}");
    // --out writes the same text, through a rename.
    let file = dir.path().join("kasad.service");
    let (ok, text) = crate::helpers::kasad_cli(&[
        OsStr::new("avahi-service"),
        OsStr::new("--config"),
        config,
        OsStr::new("--out"),
        file.as_os_str(),
    ]);
    assert!(ok, "{text}");
    assert_eq!(std::fs::read(&file).unwrap(), printed.stdout);
    assert!(!dir.path().join("kasad.service.tmp").exists());
}

/// What the README's test command installs on a fresh Debian machine, simulated as the script
/// checks it (every package missing): one apt-get line holding a package for every program
/// the suite runs. Not as root, the script prints that line and stops.
#[test]
fn the_test_command_sets_up_a_fresh_machine() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/test");
    let out = Command::new(&script)
        .arg("--print-setup")
        .env("KASAD_SETUP_SIMULATE_FRESH", "1")
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let pkgs: Vec<&str> = line
        .strip_prefix("apt-get install -y ")
        .unwrap_or_else(|| panic!("not an apt-get line: {line}"))
        .split_whitespace()
        .collect();
    // Every program the tests start, and the package that brings it on Debian 12.
    let package_of = |cmd: &str| match cmd {
        "python3" => "python3",
        "node" => "nodejs",
        "openssl" => "openssl",
        "pdftoppm" | "pdftotext" | "pdfinfo" | "pdfdetach" => "poppler-utils",
        "systemd-analyze" => "systemd",
        "timeout" => "coreutils",
        "unshare" | "setpriv" => "util-linux",
        "kill" => "procps",
        "ip" => "iproute2",
        "mosquitto" => "mosquitto",
        "victoria-metrics" => "victoria-metrics",
        "prometheus" => "prometheus",
        "mosquitto_sub" | "mosquitto_pub" => "mosquitto-clients",
        // Essential packages of every Debian system.
        "sh" | "mount" | "umount" => "",
        other => panic!("tests run {other:?}: add its Debian package to scripts/test and here"),
    };
    let mut called = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(root.join("tests/api")).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap();
        for part in text.split("Command::new(\"").skip(1) {
            called.insert(part.split('"').next().unwrap().to_owned());
        }
    }
    for extra in [
        "pdftotext",
        "pdfinfo",
        "ip",
        "mosquitto",
        "mosquitto_sub",
        "mosquitto_pub",
    ] {
        called.insert(extra.to_owned());
    }
    for cmd in &called {
        let p = package_of(cmd);
        assert!(
            p.is_empty() || pkgs.contains(&p),
            "{cmd}: {p} is not installed by {line}"
        );
    }
    for p in [
        "npm",
        "python3-venv",
        "chromium",
        "fonts-wqy-microhei",
        "fonts-dejavu-core",
    ] {
        assert!(pkgs.contains(&p), "{p} missing from {line}");
    }
    // Without root: the line to run, and a failure.
    let mut cmd = if running_as_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&script);
        c
    } else {
        Command::new(&script)
    };
    let out = cmd
        .env("KASAD_SETUP_SIMULATE_FRESH", "1")
        .output()
        .expect("setpriv (util-linux) runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("run:   sudo apt-get install -y nodejs"),
        "{err}"
    );
}

/// Whether the tests run as root (from /proc, without unsafe code).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
