//! SIGKILL at random moments during an export and during retention (the ingest loop is in
//! `binary.rs`), against the real binary. After every kill: the database verifies, nothing
//! committed is missing, and no partial export is ever served — an interrupted export runs
//! again and its file matches its checksum and record count.
//!
//! `KASAD_CRASH_ROUNDS` sets the rounds of each loop (here 4, ingest 20); `scripts/crash-loop` runs 100.

use crate::binary::{Daemon, demo_args, get, signal, wait_for};
use crate::helpers::{ADMIN_PASSWORD, client, day};
use serde_json::{Value, json};
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_kasad");

/// `KASAD_CRASH_ROUNDS`, else `default`.
pub(crate) fn rounds(default: u32) -> u32 {
    std::env::var("KASAD_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A xorshift step: the kill moments, reproducible from the seed printed on failure.
fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

/// `kasad store verify` on the data dir of `cfg` passes.
pub(crate) fn verify(cfg: &Path, what: &str) {
    let out = Command::new(BIN)
        .args(["store", "verify", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn start(data: &Path, args: &[&str], env: &[(&str, &str)]) -> (Daemon, (String, String)) {
    let d = demo_args(args, data, env, Stdio::null()).await;
    let base = (d.base.clone(), d.token.clone());
    (d, base)
}

/// Starts `kasad demo` and kills it after `after` whatever it is doing by then.
fn start_and_kill(data: &Path, args: &[&str], env: &[(&str, &str)], after: Duration) {
    let mut child = Command::new(BIN)
        .arg("demo")
        .args(args)
        .args(["--admin-password", ADMIN_PASSWORD, "--data-dir"])
        .arg(data)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let _ = child.kill();
    let _ = child.wait();
}

async fn exports(base: &(String, String)) -> Vec<Value> {
    let (_, v) = get(base, "/api/exports/history?limit=100").await.unwrap();
    v["exports"].as_array().unwrap().clone()
}

/// Every export is finished; a completed one downloads whole (checksum, size and records as
/// stated), any other is refused; no temp file is left.
async fn check_exports(base: &(String, String), data: &Path, what: &str) -> usize {
    let all = wait_for("every export finished", async || {
        let all = exports(base).await;
        all.iter()
            .all(|e| e["status"] == "completed" || e["status"] == "failed")
            .then_some(all)
    })
    .await;
    let mut completed = 0;
    let mut verified = Vec::new();
    for e in &all {
        let id = e["export_id"].as_str().unwrap();
        let (_, e) = get(base, &format!("/api/exports/{id}")).await.unwrap();
        let r = client()
            .get(format!("{}/api/exports/download/{id}", base.0))
            .bearer_auth(&base.1)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        if e["status"] != "completed" {
            assert!(
                (400..500).contains(&status),
                "{what}: unfinished {e} served ({status})"
            );
            continue;
        }
        completed += 1;
        assert_eq!(status, 200, "{what}: {e}");
        let sha: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            Some(sha.as_str()),
            e["checksum_sha256"].as_str(),
            "{what}: {e}"
        );
        assert_eq!(
            Some(bytes.len() as u64),
            e["file_size"].as_u64(),
            "{what}: {e}"
        );
        let lines = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64;
        assert_eq!(Some(lines - 1), e["record_count"].as_u64(), "{what}: {e}");
        verified.push(id.to_owned());
    }
    // The newest completed export stays, to be checked again after the next kill; the
    // older ones are deleted (a long loop would otherwise fill the export storage quota).
    for id in verified.iter().skip(1) {
        let r = client()
            .delete(format!("{}/api/exports/{id}", base.0))
            .bearer_auth(&base.1)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{what}: delete {id}");
    }
    let temps: Vec<_> = std::fs::read_dir(data.join("exports"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "{what}: temp files left: {temps:?}");
    completed
}

#[tokio::test]
async fn sigkill_during_exports_never_serves_a_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("kasad.toml");
    std::fs::write(&cfg, format!("data_dir = {data:?}\n")).unwrap();
    let env = [("KASAD_EXPORTS__RATE_LIMIT_PER_HOUR", "100000")];
    let listen = ["--listen", "127.0.0.1:0"];
    // Ten days of one-minute history: about 190,000 raw rows to export.
    let first = [
        &listen[..],
        &["--history-days", "10", "--history-step", "1m"],
    ]
    .concat();
    let (d, _) = start(&data, &first, &env).await;
    signal(&d, "-TERM");
    drop(d);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let later = [&listen[..], &["--history-days", "0"]].concat();
    let (mut served, mut interrupted) = (0, 0);
    for round in 0..rounds(4) {
        let (d, base) = start(&data, &later, &env).await;
        let body = json!({"export_type": "device_data", "format": "csv", "devices": "all",
            "date_range": {"start": day(-11), "end": day(1)}});
        let r = client()
            .post(format!("{}/api/exports/create", base.0))
            .bearer_auth(&base.1)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "round {round}: {}",
            r.text().await.unwrap()
        );
        // A random moment of the render (a few seconds in this build).
        tokio::time::sleep(Duration::from_millis(next(&mut rng) % 1500)).await;
        signal(&d, "-KILL");
        drop(d);
        let what = format!("export round {round} (seed {rng:#x})");
        verify(&cfg, &what);
        let (d, base) = start(&data, &later, &env).await;
        // Whether the kill caught the export unfinished (it then runs again at this start).
        let unfinished = exports(&base)
            .await
            .iter()
            .filter(|e| e["status"] != "completed" && e["status"] != "failed")
            .count();
        interrupted += usize::from(unfinished > 0);
        served += check_exports(&base, &data, &what).await;
        eprintln!("crash loop: {what} passed (export unfinished at the kill: {unfinished})");
        signal(&d, "-TERM");
        drop(d);
    }
    assert!(served > 0, "no export ever completed");
    eprintln!("crash loop: {interrupted} kills caught an export unfinished");
}

/// Raw readings stored, over all devices.
async fn points(base: &(String, String)) -> u64 {
    let (_, v) = get(base, "/api/devices").await.unwrap();
    crate::binary::total_points(&v)
}

/// Daily energy per device and day, and the raw timestamps per device.
async fn state(
    base: &(String, String),
) -> (BTreeMap<String, Value>, BTreeMap<String, Vec<String>>) {
    let (_, v) = get(base, "/api/devices").await.unwrap();
    let (mut days, mut raw) = (BTreeMap::new(), BTreeMap::new());
    // Devices without stored history (the demo's KLAP and AES devices have live readings only,
    // and a device is listed unidentified until its first poll) are no part of the comparison.
    for d in v["devices"].as_array().unwrap() {
        let id = d["device_id"].as_str().unwrap();
        if d["data_points"].as_u64() == Some(0) {
            continue;
        }
        let (s, r) = get(
            base,
            &format!(
                "/api/devices/{id}/readings?resolution=day&start={}&end={}&timezone=UTC",
                day(-13),
                day(-2)
            ),
        )
        .await
        .unwrap();
        assert_eq!(s, 200, "{r}");
        let energy: Vec<Value> = r["readings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| json!([p["timestamp"], p["energy_kwh"], p["samples"]]))
            .collect();
        if energy.is_empty() {
            continue;
        }
        days.insert(id.to_owned(), json!(energy));
        let mut ts = vec![];
        for (from, to) in [(-13, -9), (-9, -5), (-5, -1)] {
            let (s, r) = get(
                base,
                &format!(
                    "/api/devices/{id}/readings?start={}&end={}",
                    day(from),
                    day(to)
                ),
            )
            .await
            .unwrap();
            assert_eq!(s, 200, "{r}");
            ts.extend(
                r["readings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["timestamp"].as_str().unwrap().to_owned()),
            );
        }
        raw.insert(id.to_owned(), ts);
    }
    (days, raw)
}

#[tokio::test]
async fn sigkill_during_retention_keeps_rollups_and_recent_readings() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let listen = ["--listen", "127.0.0.1:0"];
    for round in 0..rounds(4) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let cfg = dir.path().join("kasad.toml");
        std::fs::write(&cfg, format!("data_dir = {data:?}\n")).unwrap();
        // Twelve days of one-minute history (a sealed block spans about a day and a half of
        // it), kept whole at first.
        let first = [
            &listen[..],
            &["--history-days", "12", "--history-step", "1m"],
        ]
        .concat();
        let (d, base) = start(&data, &first, &[]).await;
        let (days, raw) = state(&base).await;
        let total_before = points(&base).await;
        signal(&d, "-TERM");
        drop(d);
        // Raw data older than five days goes; each start runs the sweep, and the start after
        // one that removed anything compacts the file. Two starts killed at random moments.
        let env = [("KASAD_STORAGE__RAW_RETENTION", "5d")];
        let later = [&listen[..], &["--history-days", "0"]].concat();
        for _ in 0..2 {
            start_and_kill(
                &data,
                &later,
                &env,
                Duration::from_millis(next(&mut rng) % 1200),
            );
        }
        let what = format!("retention round {round} (seed {rng:#x})");
        verify(&cfg, &what);
        let (d, base) = start(&data, &later, &env).await;
        // One transaction removes the old blocks of every device: once the count is down, the
        // sweep is done (in a killed start or in this one).
        wait_for("the sweep done", async || {
            (points(&base).await < total_before).then_some(())
        })
        .await;
        let (days_after, raw_after) = state(&base).await;
        // Whole blocks go (a sparse series' block can span days), so most, not all, of what
        // is older than the cut is gone.
        let old = |raw: &BTreeMap<String, Vec<String>>| {
            let cut = day(-7);
            raw.values().flatten().filter(|t| t[..10] < cut[..]).count()
        };
        assert!(
            old(&raw_after) * 2 < old(&raw),
            "{what}: the sweep removed too little"
        );
        assert_eq!(days, days_after, "{what}: daily rollups changed");
        let keep = day(-4);
        for (id, ts) in &raw {
            let recent: Vec<&String> = ts.iter().filter(|t| t[..10] >= keep[..]).collect();
            let after: Vec<&String> = raw_after[id]
                .iter()
                .filter(|t| t[..10] >= keep[..])
                .collect();
            assert!(!recent.is_empty());
            assert_eq!(recent, after, "{what}: {id} lost recent readings");
        }
        signal(&d, "-TERM");
        drop(d);
        eprintln!("crash loop: {what} passed");
    }
}
