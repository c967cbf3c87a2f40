//! Backups: `kasad backup` while the daemon ingests, restored by `kasad restore` into an empty
//! data directory, holds the readings up to the backup time; `POST /api/admin/backup` streams
//! one (SYSTEM_CONFIG only, audited) that restores and opens.

use crate::binary::{demo_args, total_points};
use crate::helpers::{TestApp, get_json, kasad_cli, login};
use reqwest::Method;
use std::ffi::OsStr;
use std::process::Stdio;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_ingest_restores_with_the_readings_up_to_then() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("kasad.toml");
    std::fs::write(&cfg, format!("data_dir = {data:?}\n")).unwrap();
    let d = demo_args(
        &[
            "--listen",
            "127.0.0.1:0",
            "--history-days",
            "0",
            "--devices",
            "3",
        ],
        &data,
        &[],
        Stdio::null(),
    )
    .await;
    let points = async || total_points(&get_json(&d.base, &d.token, "/api/devices").await);
    while points().await < 20 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let out = dir.path().join("backup.zip");
    let before = points().await;
    let (ok, text) = kasad_cli(&[
        OsStr::new("backup"),
        OsStr::new("--out"),
        out.as_os_str(),
        OsStr::new("--config"),
        cfg.as_os_str(),
    ]);
    // Readings the backup took from the staging log may not be in the database's count yet,
    // so the upper bound is time: nothing restored was read after the backup finished.
    let finished_ms = kasad::clock::Clock::now_ms(&kasad::clock::SystemClock);
    assert!(ok && text.contains("backup written to"), "{text}");
    drop(d);

    let data2 = dir.path().join("restored");
    let cfg2 = dir.path().join("restored.toml");
    std::fs::write(&cfg2, format!("data_dir = {data2:?}\n")).unwrap();
    let restore = |cfg: &std::path::Path| {
        kasad_cli(&[
            OsStr::new("restore"),
            out.as_os_str(),
            OsStr::new("--config"),
            cfg.as_os_str(),
        ])
    };
    let (ok, text) = restore(&cfg2);
    assert!(ok, "{text}");
    let n: u64 = text
        .split(" readings verified")
        .next()
        .and_then(|t| t.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        before <= n,
        "restored {n} readings; {before} were stored before the backup"
    );
    let newest = kasad::store::Store::open(&data2.join("kasad.redb"), 8)
        .unwrap()
        .newest_reading_ms()
        .unwrap()
        .unwrap();
    assert!(
        newest <= finished_ms,
        "a reading of {newest} ms restored from a backup finished at {finished_ms} ms"
    );
    // A used data directory is refused, and nothing in it changes.
    let (ok, text) = restore(&cfg2);
    assert!(
        !ok && text.contains("restore only into an empty data directory"),
        "{text}"
    );
}

#[tokio::test]
async fn the_api_streams_a_backup_to_admins_only() {
    let app = TestApp::spawn(vec![]).await;
    let r = app
        .req(Method::POST, "/api/users")
        .json(&serde_json::json!({"username": "ops", "password": "ops-password-1", "role": "operator"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let ops = login(&app.client, &app.base, "ops", "ops-password-1").await;
    assert_eq!(
        app.status_as(Method::POST, "/api/admin/backup", &ops).await,
        403
    );
    // SYSTEM_CONFIG alone is not enough: a backup holds the signing keys.
    let r = app
        .req(Method::POST, "/api/users")
        .json(
            &serde_json::json!({"username": "cfg", "password": "cfg-password-1",
            "role": "viewer", "permissions": ["SYSTEM_CONFIG"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let cfg = login(&app.client, &app.base, "cfg", "cfg-password-1").await;
    assert_eq!(app.status_as(Method::GET, "/api/tariffs", &cfg).await, 200);
    assert_eq!(
        app.status_as(Method::POST, "/api/admin/backup", &cfg).await,
        403
    );
    let r = app
        .req(Method::POST, "/api/admin/backup")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/zip");
    let cd = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cd.starts_with("attachment; filename=\"kasad-backup-"),
        "{cd}"
    );
    let bytes = r.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.zip");
    std::fs::write(&file, &bytes).unwrap();
    let m = kasad::backup::restore(&file, &dir.path().join("data")).unwrap();
    let names: Vec<&str> = m.files.iter().map(|e| e.name.as_str()).collect();
    for f in ["kasad.redb", "jwt.key", "audit.key"] {
        assert!(names.contains(&f), "{f} in {names:?}");
    }
    kasad::store::Store::open(&dir.path().join("data/kasad.redb"), 4).unwrap();
    // No temporary file stays in the data directory.
    let left: Vec<_> = std::fs::read_dir(app.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("backup"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let (_, v) = app.get("/api/audit?event_types=BACKUP_CREATED").await;
    assert_eq!(v["total"], 1, "{v}");
    app.stop().await;
}
