//! The web pages in a real browser: `tests/browser/e2e.mjs` drives Debian's headless Chromium
//! (playwright-core) against `kasad demo` — log in, live device cards, charts, the export
//! modal from preview to download, history, the rate limit, a viewer's and an admin's view —
//! and fails on any request to a host other than the daemon. Screenshots of every page at
//! desktop and phone width are kept in `target/screenshots/`.

use crate::binary::demo_args;
use crate::helpers::{ADMIN_PASSWORD, client};
use std::process::{Command, Stdio};

const OPERATOR: &str = "olga:operator-password-1";
const VIEWER: &str = "victor:viewer-password-1";

async fn add_user(base: &str, token: &str, spec: &str, role: &str) {
    let (username, password) = spec.split_once(':').unwrap();
    let r = client()
        .post(format!("{base}/api/users"))
        .bearer_auth(token)
        .json(&serde_json::json!({"username": username, "password": password, "role": role}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "create {username}: {}",
        r.text().await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_in_chromium() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/browser/e2e.mjs");
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (scripts/test does)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: install Debian's chromium (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let shots = root.join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let log = std::fs::File::create(shots.join("daemon.log")).unwrap();
    // Three days of history every 5 minutes for the charts and previews; live polls every
    // second for the cards.
    let d = demo_args(
        &[
            "--listen",
            "127.0.0.1:0",
            "--history-days",
            "3",
            "--history-step",
            "5m",
        ],
        dir.path(),
        &[("KASAD_POLL__INTERVAL", "1s")],
        Stdio::from(log),
    )
    .await;
    add_user(&d.base, &d.token, OPERATOR, "operator").await;
    add_user(&d.base, &d.token, VIEWER, "viewer").await;
    // A second daemon without users: the first-run setup through the page.
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = crate::first_run::fresh(fresh_dir.path()).await;
    let code = std::fs::read_to_string(fresh.data.join("setup-code")).unwrap();
    // `timeout`: a hung browser fails the test instead of hanging the suite.
    let out = Command::new("timeout")
        .args(["300", "node"])
        .arg(&script)
        .env("KASAD_BASE", &d.base)
        .env("KASAD_SHOTS", &shots)
        .env("KASAD_OPERATOR", OPERATOR)
        .env("KASAD_VIEWER", VIEWER)
        .env("KASAD_ADMIN", format!("admin:{ADMIN_PASSWORD}"))
        .env("KASAD_SETUP_BASE", &fresh.base)
        .env("KASAD_SETUP_CODE", code.trim())
        .output()
        .expect("node runs (install Node.js)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed ({}; the daemon's log is target/screenshots/daemon.log):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    drop(fresh);
    for page in [
        "setup",
        "login",
        "devices",
        "insights",
        "alerts",
        "device-detail",
        "export-modal",
        "history",
        "schedules",
        "admin",
        "admin-audit",
        "admin-health",
        "device-settings",
        "devices-rooms",
    ] {
        for width in ["desktop", "phone"] {
            let f = shots.join(format!("{page}-{width}.png"));
            assert!(
                f.metadata().is_ok_and(|m| m.len() > 1000),
                "screenshot {f:?}"
            );
        }
    }
}
