//! A full disk: the data dir on a small tmpfs that this test mounts (root is needed, and the
//! test fails loudly without it), filled up while the daemon polls. Exports fail with a clear
//! error, ingest keeps the database consistent, and everything resumes once space returns;
//! no reading taken while the disk was full is lost.

use crate::exports::{download, finished};
use crate::helpers::{ATTEMPTS, STEP, TestApp, day, fleet};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("the mount command is needed");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    for size in [1 << 20, 4096, 1] {
        let chunk = vec![0xa5u8; size];
        while f.write_all(&chunk).is_ok() {}
    }
    let _ = f.sync_all();
}

async fn health(app: &TestApp) -> Value {
    let r = app
        .req(Method::GET, "/api/health?detail=true")
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

async fn points(app: &TestApp) -> u64 {
    app.devices()
        .await
        .iter()
        .map(|d| d["data_points"].as_u64().unwrap())
        .sum()
}

fn export_body() -> Value {
    json!({"export_type": "device_data", "format": "csv", "devices": "all",
        "date_range": {"start": day(-1), "end": day(1)}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_exports_clearly_and_ingest_resumes_when_space_returns() {
    let mnt = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(mnt.path(), "24m");
    let data = mnt.path().join("data");
    let d2 = data.clone();
    let app = TestApp::spawn_with(fleet(3), move |s| {
        s.data_dir = d2;
        s.exports.rate_limit_per_hour = 1000;
        s.storage.reserve_mb = 4;
        s.exports.min_free_disk_mb = 6;
        // Database checkpoints every second, so that the full disk meets them too.
        s.storage.checkpoint_interval = kasad::config::Dur(std::time::Duration::from_secs(1));
    })
    .await;
    app.wait_devices("every plug read", |d| {
        d.len() == 9 && d.iter().all(|x| x["data_points"].as_u64() > Some(2))
    })
    .await;

    // The disk fills up.
    let filler = mnt.path().join("filler");
    fill(&filler);
    let before = points(&app).await;
    let failures = |h: &Value| h["store"]["write_failures"].as_u64().unwrap();
    let mut h = health(&app).await;
    // Full for a while: a write fails at every poll (200 ms), so 25 of them are some seconds
    // of readings that must all be kept.
    for _ in 0..ATTEMPTS {
        if failures(&h) >= 25 {
            break;
        }
        tokio::time::sleep(STEP).await;
        h = health(&app).await;
    }
    assert!(
        failures(&h) >= 25,
        "writes did not fail on a full disk: {h}"
    );
    assert_eq!(h["status"], "degraded", "{h}");
    let why = h["store"]["write_error"].as_str().unwrap_or_default();
    assert!(why.contains("disk is full"), "{h}");
    // A write through the API is refused with a clear error.
    let r = app
        .req(Method::POST, "/api/users")
        .json(&json!({"username": "late", "password": "late-password-1", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    let (status, v) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_eq!(
        (status, v["error_code"].as_str()),
        (507, Some("INSUFFICIENT_STORAGE")),
        "{v}"
    );

    // An export fails with a clear error and leaves no partial file to download.
    let mut body = export_body();
    body["performance_options"] = json!({"background_processing": false});
    let r = app
        .req(Method::POST, "/api/exports/create")
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, v) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    let text = v.to_string().to_lowercase();
    assert!(
        text.contains("space") || text.contains("full"),
        "no clear error for a full disk: {status} {v}"
    );
    if let Some(id) = v["export_id"].as_str() {
        assert_eq!(v["status"], "failed", "{v}");
        let (s, _, _) = download(&app, id).await;
        assert!(
            (400..500).contains(&s),
            "a failed export is not served ({s})"
        );
    } else {
        assert!(
            (400..600).contains(&status) && v["error_code"].is_string(),
            "{status} {v}"
        );
    }
    // The API still answers while the disk is full.
    assert_eq!(app.get("/api/devices").await.0, 200);

    // Space returns: readings are stored again, exports work.
    std::fs::remove_file(&filler).unwrap();
    let mut now = points(&app).await;
    for _ in 0..ATTEMPTS {
        if now > before + 20 {
            break;
        }
        tokio::time::sleep(STEP).await;
        now = points(&app).await;
    }
    assert!(
        now > before + 20,
        "ingest did not resume: {before} -> {now}; {}",
        health(&app).await
    );
    let h = health(&app).await;
    assert_eq!(h["status"], "ok", "{h}");
    let done = finished(&app, export_body()).await;
    let (s, csv, _) = download(&app, done["export_id"].as_str().unwrap()).await;
    assert_eq!(s, 200);
    assert!(csv.split(|b| *b == b'\n').count() > 20);

    // Nothing polled while the disk was full is missing: every device's readings follow each
    // other at the poll interval, without a gap across the full period.
    let devices = app.devices().await;
    for d in &devices {
        let id = d["device_id"].as_str().unwrap();
        let (s, v) = app
            .get(&format!("/api/devices/{id}/readings?resolution=raw"))
            .await;
        assert_eq!(s, 200, "{v}");
        let ts: Vec<i64> = v["readings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                chrono::DateTime::parse_from_rfc3339(r["timestamp"].as_str().unwrap())
                    .unwrap()
                    .timestamp_millis()
            })
            .collect();
        let gap = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(gap < 1_500, "{id}: a gap of {gap} ms in its readings");
    }

    // A clean stop, then the store verifies.
    app.stop_and_verify(&data).await;
    drop(fs);
}
