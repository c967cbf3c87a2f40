//! mDNS, end to end: `kasad run` with `[mdns]` on, in a private network namespace of the
//! test's own (`unshare`, a veth pair), found and resolved by python-zeroconf; its announced
//! address and TXT path reach the API, a new address is announced, and SIGTERM says goodbye.

use serde_json::Value;

#[test]
fn the_daemon_is_found_by_mdns_in_a_private_network() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("unshare")
        .args(["--net", "--uts", "--map-root-user", "python3"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/mdns_check.py"
        ))
        .args(["--kasad", env!("CARGO_BIN_EXE_kasad"), "--dir"])
        .arg(dir.path())
        .output()
        .expect("unshare (util-linux) runs");
    let text = crate::helpers::output_text(&out);
    assert!(out.status.success(), "mdns_check.py failed: {text}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (ty, path) in [("_http._tcp.local.", "/"), ("_kasad._tcp.local.", "/api")] {
        let s = &v["services"][ty];
        assert_eq!(
            s["name"],
            format!("kasad test on kasad-netns.{ty}"),
            "{ty} not resolved: {text}"
        );
        assert_eq!(s["server"], "kasad-netns.local.");
        assert_eq!(s["port"], 5272);
        assert_eq!(s["txt"]["path"], path);
        let addrs = s["addresses"].as_array().unwrap();
        assert!(addrs.contains(&Value::from("198.18.0.1")), "{s}");
        assert!(
            !addrs
                .iter()
                .any(|a| a.as_str().unwrap().starts_with("127.")),
            "{s}"
        );
        assert_eq!(
            v["removed"][ty].as_array().map(Vec::len),
            Some(1),
            "no goodbye: {text}"
        );
    }
    assert_eq!(
        v["services"]["_kasad._tcp.local."]["txt"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(v["health_via_mdns"]["status"], 200, "{text}");
    assert_eq!(v["health_via_mdns"]["body"]["status"], "ok");
    assert!(
        v["addresses_after_change"]
            .as_array()
            .unwrap()
            .contains(&Value::from("198.18.0.3")),
        "a new address was not announced: {text}"
    );
    assert_eq!(v["exit_code"], 0, "{text}");
}
