//! Push: readings pushed to Debian's victoria-metrics (remote write and line protocol) and
//! prometheus (remote write, out-of-order window), started by the test on loopback and
//! queried back through their own HTTP APIs; an outage with a restart in between; a backfill
//! by `kasad push backfill`; hostile configuration refused at start.

use crate::helpers::{TestApp, fleet, free_port};
use kasad::config::{Dur, PushTarget};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn http() -> reqwest::Client {
    kasad::tls::install_tls();
    reqwest::Client::new()
}

/// A server the test started; killed on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    /// Stops it as its service manager would (SIGTERM: it writes out what it accepted).
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn ready(base: &str, path: &str, child: &mut Child, what: &str) {
    let c = http();
    for _ in 0..300 {
        if let Ok(r) = c.get(format!("{base}{path}")).send().await
            && r.status().is_success()
        {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{what} exited at start: {st}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not become ready at {base}");
}

/// Debian's victoria-metrics on 127.0.0.1:`port`, its data in `dir`.
async fn victoria(dir: &Path, port: u16) -> Server {
    let child = Command::new("victoria-metrics")
        .args([
            &format!("-httpListenAddr=127.0.0.1:{port}"),
            &format!("-storageDataPath={}", dir.display()),
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-loggerLevel=ERROR",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("victoria-metrics (Debian package victoria-metrics) must be installed");
    let mut s = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    ready(&s.base.clone(), "/health", &mut s.child, "victoria-metrics").await;
    s
}

/// Debian's prometheus with the remote-write receiver and a 30-day out-of-order window.
async fn prometheus(dir: &Path) -> Server {
    prometheus_with(
        dir,
        "storage:\n  tsdb:\n    out_of_order_time_window: 30d\n",
    )
    .await
}

/// The same with `extra` configuration.
async fn prometheus_with(dir: &Path, extra: &str) -> Server {
    let port = free_port();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, format!("global:\n  scrape_interval: 1h\n{extra}")).unwrap();
    let child = Command::new("prometheus")
        .args([
            &format!("--config.file={}", cfg.display()),
            &format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-remote-write-receiver",
            "--log.level=error",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package prometheus) must be installed");
    let mut s = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    ready(&s.base.clone(), "/-/ready", &mut s.child, "prometheus").await;
    s
}

fn target(name: &str, kind: &str, url: &str, site: &str) -> PushTarget {
    PushTarget {
        name: name.into(),
        kind: kind.into(),
        url: url.into(),
        site: site.into(),
        bearer_token_file: None,
        username: None,
        password_file: None,
        ca_file: None,
        org: None,
        bucket: None,
        database: (kind == "influx").then(|| "kasad".into()),
        series: "raw".into(),
        batch: 5_000,
        retry_max: Dur(Duration::from_millis(500)),
        max_age: Dur(Duration::from_secs(7 * 86_400)),
    }
}

/// (device_id → (ms → value)) of `metric` with `site` in victoria-metrics.
async fn vm_series(base: &str, metric: &str, site: &str) -> BTreeMap<String, BTreeMap<i64, f64>> {
    let c = http();
    c.get(format!("{base}/internal/force_flush"))
        .send()
        .await
        .unwrap();
    let text = c
        .get(
            reqwest::Url::parse_with_params(
                &format!("{base}/api/v1/export"),
                &[("match[]", format!("{metric}{{site=\"{site}\"}}"))],
            )
            .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut out: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        let id = v["metric"]["device_id"].as_str().unwrap().to_owned();
        let e = out.entry(id).or_default();
        let ts = v["timestamps"].as_array().unwrap();
        let vals = v["values"].as_array().unwrap();
        assert_eq!(ts.len(), vals.len());
        for (t, x) in ts.iter().zip(vals) {
            let t = t.as_i64().unwrap();
            assert!(
                e.insert(t, x.as_f64().unwrap()).is_none(),
                "a sample at {t} twice"
            );
        }
    }
    out
}

/// The same from prometheus's query API (a range selector over the last day).
async fn prom_series(base: &str, metric: &str, site: &str) -> BTreeMap<String, BTreeMap<i64, f64>> {
    let v: Value = http()
        .get(
            reqwest::Url::parse_with_params(
                &format!("{base}/api/v1/query"),
                &[("query", format!("{metric}{{site=\"{site}\"}}[1d]"))],
            )
            .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for r in v["data"]["result"].as_array().unwrap_or(&Vec::new()) {
        let e = out
            .entry(r["metric"]["device_id"].as_str().unwrap().to_owned())
            .or_default();
        for p in r["values"].as_array().unwrap() {
            let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
            e.insert(t, p[1].as_str().unwrap().parse().unwrap());
        }
    }
    out
}

/// kasad's raw readings of every device with readings: (device_id → (ms → power W)).
async fn kasad_power(app: &TestApp) -> BTreeMap<String, BTreeMap<i64, f64>> {
    let (_, devices) = app.get("/api/devices").await;
    let mut out = BTreeMap::new();
    for d in devices["devices"].as_array().unwrap() {
        let id = d["device_id"].as_str().unwrap();
        if d["device_type"] == "strip" {
            continue;
        }
        let (s, v) = app
            .get(&format!(
                "/api/devices/{id}/readings?start=2000-01-01T00:00:00Z&end=2100-01-01T00:00:00Z"
            ))
            .await;
        assert_eq!(s, 200, "{v}");
        let m: BTreeMap<i64, f64> = v["readings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| {
                let t = chrono::DateTime::parse_from_rfc3339(r["timestamp"].as_str()?).ok()?;
                Some((t.timestamp_millis(), r["power_w"].as_f64()?))
            })
            .collect();
        if !m.is_empty() {
            out.insert(id.to_owned(), m);
        }
    }
    out
}

/// The push part of the health detail, by target.
async fn push_health(app: &TestApp) -> BTreeMap<String, Value> {
    let (_, h) = app.get("/api/health").await;
    h["push"]
        .as_array()
        .unwrap_or_else(|| panic!("{h}"))
        .iter()
        .map(|t| (t["target"].as_str().unwrap().to_owned(), t.clone()))
        .collect()
}

/// Waits until every target has pushed what it has (lag 0) and the readings stopped.
async fn settle(app: &TestApp) {
    for _ in 0..100 {
        let h = push_health(app).await;
        if h.values().all(|t| t["lag_seconds"] == 0.0) {
            tokio::time::sleep(Duration::from_millis(800)).await;
            if push_health(app).await == h {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "the push targets did not catch up: {:?}",
        push_health(app).await
    );
}

fn same_readings(
    what: &str,
    kasad: &BTreeMap<String, BTreeMap<i64, f64>>,
    target: &BTreeMap<String, BTreeMap<i64, f64>>,
) {
    assert!(!kasad.is_empty());
    assert_eq!(
        kasad.keys().collect::<Vec<_>>(),
        target.keys().collect::<Vec<_>>(),
        "{what}: devices"
    );
    for (id, k) in kasad {
        let t = &target[id];
        assert_eq!(
            k.keys().collect::<Vec<_>>(),
            t.keys().collect::<Vec<_>>(),
            "{what}: {id}'s timestamps"
        );
        for (ts, v) in k {
            assert!(
                (t[ts] - v).abs() < 1e-9,
                "{what}: {id} at {ts}: {} != {v}",
                t[ts]
            );
        }
    }
}

#[tokio::test]
async fn pushed_readings_equal_kasads_in_victoria_metrics_and_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let vm = victoria(&dir.path().join("vm"), free_port()).await;
    let prom = prometheus(dir.path()).await;
    let (vmb, pb) = (vm.base.clone(), prom.base.clone());
    let app = TestApp::spawn_with(fleet(2), |s| {
        s.delivery.webhook_allow = vec![vmb.clone(), pb.clone()];
        s.push = vec![
            target(
                "vm-rw",
                "remote_write",
                &format!("{vmb}/api/v1/write"),
                "rw",
            ),
            target("vm-influx", "influx", &vmb, "influx"),
            target(
                "prom",
                "remote_write",
                &format!("{pb}/api/v1/write"),
                "prom",
            ),
        ];
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for s in &app.sims {
        s.stop();
    }
    settle(&app).await;
    let kasad = kasad_power(&app).await;
    assert!(kasad.values().all(|m| m.len() >= 5), "{kasad:?}");
    for (what, got) in [
        (
            "remote write to victoria-metrics",
            vm_series(&vm.base, "kasad_device_power_watts", "rw").await,
        ),
        (
            "line protocol to victoria-metrics",
            vm_series(&vm.base, "kasad_device_power_watts", "influx").await,
        ),
        (
            "remote write to prometheus",
            prom_series(&prom.base, "kasad_device_power_watts", "prom").await,
        ),
    ] {
        same_readings(what, &kasad, &got);
    }
    // The other series, with the /metrics names, the interval energy and its cost.
    for m in [
        "kasad_device_voltage_volts",
        "kasad_device_current_amperes",
        "kasad_device_energy_counter_watt_hours_total",
        "kasad_device_relay_on",
        "kasad_device_energy_watt_hours",
        "kasad_device_cost",
    ] {
        for site in ["rw", "influx"] {
            let got = vm_series(&vm.base, m, site).await;
            assert_eq!(got.len(), kasad.len(), "{m} ({site})");
        }
    }
    dashboard_queries_return_data(&vm.base, &["rw", "influx"]).await;
    let h = push_health(&app).await;
    for t in ["vm-rw", "vm-influx", "prom"] {
        assert_eq!(h[t]["errors"], 0, "{t}: {}", h[t]);
        let n: usize = kasad.values().map(BTreeMap::len).sum();
        assert_eq!(h[t]["readings_sent"], n as u64, "{t}: every reading once");
    }
    let metrics = app
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kasad_push_samples_sent_total{target=\"vm-rw\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kasad_push_lag_seconds{target=\"prom\"} 0"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_outage_with_a_restart_in_between_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (port, vm_dir) = (free_port(), dir.path().join("vm"));
    let mut vm = Some(victoria(&vm_dir, port).await);
    let base = format!("http://127.0.0.1:{port}");
    let cfg = {
        let base = base.clone();
        move |s: &mut kasad::config::Settings| {
            s.delivery.webhook_allow = vec![base.clone()];
            s.push = vec![target(
                "vm",
                "remote_write",
                &format!("{base}/api/v1/write"),
                "a",
            )];
        }
    };
    let mut app = TestApp::spawn_with(fleet(2), cfg.clone()).await;
    for _ in 0..100 {
        let got = vm_series(&base, "kasad_device_power_watts", "a").await;
        if got.len() >= 2 && got.values().all(|m| m.len() >= 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The target goes away for a stretch of polls…
    vm.take().unwrap().stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let h = push_health(&app).await;
    assert!(h["vm"]["errors"].as_u64() > Some(0), "{}", h["vm"]);
    assert!(h["vm"]["lag_seconds"].as_f64() > Some(0.5), "{}", h["vm"]);
    // …kasad is restarted once meanwhile (SIGTERM's path: the cursors stored on the way out)…
    let kept = std::mem::replace(&mut app.dir, tempfile::tempdir().unwrap());
    let sims = std::mem::take(&mut app.sims);
    app.stop().await;
    let data = kept.path().to_path_buf();
    let app = TestApp::with_sims(sims, move |s| {
        s.data_dir = data;
        cfg(s);
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // …and comes back: it holds every reading of the stretch, once.
    let vm = victoria(&vm_dir, port).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for s in &app.sims {
        s.stop();
    }
    settle(&app).await;
    let kasad = kasad_power(&app).await;
    let got = vm_series(&vm.base, "kasad_device_power_watts", "a").await;
    same_readings("after the outage", &kasad, &got);
    let h = push_health(&app).await;
    let n: usize = kasad.values().map(BTreeMap::len).sum();
    assert_eq!(
        h["vm"]["readings_sent"], n as u64,
        "nothing sent twice: {}",
        h["vm"]
    );
    assert_eq!(h["vm"]["lag_seconds"], 0.0);
    assert_eq!(h["vm"]["skipped"], 0);
    // With the daemon running, `kasad push` goes through its admin socket.
    let cfg_file = dir.path().join("kasad.toml");
    std::fs::write(&cfg_file, format!("data_dir = {:?}\n", kept.path())).unwrap();
    // (Off this test's runtime thread: the daemon answers on it.)
    let cli = |args: &'static [&'static str]| {
        let cfg = cfg_file.clone();
        tokio::task::spawn_blocking(move || {
            let out = Command::new(env!("CARGO_BIN_EXE_kasad"))
                .args(args)
                .args(["--config", cfg.to_str().unwrap()])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "{text}{err}");
            text
        })
    };
    let status: Value = serde_json::from_str(&cli(&["push", "status"]).await.unwrap()).unwrap();
    assert_eq!(status[0]["target"], "vm", "{status}");
    assert_eq!(status[0]["sent"], n as u64, "{status}");
    let out = cli(&["push", "backfill", "vm", "--since", "2020-01-01"])
        .await
        .unwrap();
    assert!(out.contains("\"queued\": true"), "{out}");
    let out = cli(&["push", "backfill", "vm", "--since", "2020-01-01"])
        .await
        .unwrap();
    assert!(out.contains("\"queued\": false"), "{out}");
    app.stop().await;
    drop(kept);
}

#[tokio::test]
async fn hostile_push_settings_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token-value\n").unwrap();
    let allowed = "http://127.0.0.1:9";
    let cases: Vec<(PushTarget, &str)> = vec![
        (
            target("t", "remote_write", "http://127.0.0.2:9/api/v1/write", ""),
            "webhook_allow",
        ),
        (
            target(
                "t",
                "remote_write",
                "http://127.0.0.1:9.evil/api/v1/write",
                "",
            ),
            "url",
        ),
        (
            target(
                "t",
                "remote_write",
                "http://u:p@127.0.0.1:9/api/v1/write",
                "",
            ),
            "webhook_allow",
        ),
        (
            target("t", "remote_write", "file:///etc/passwd", ""),
            "http",
        ),
        (
            PushTarget {
                bearer_token_file: Some(dir.path().join("missing")),
                ..target("t", "remote_write", "http://127.0.0.1:9/w", "")
            },
            "bearer_token_file",
        ),
        (
            PushTarget {
                username: Some("u".into()),
                password_file: Some(dir.path().to_path_buf()),
                ..target("t", "influx", "http://127.0.0.1:9", "")
            },
            "password_file",
        ),
        (
            PushTarget {
                ca_file: Some(token.clone()),
                ..target("t", "remote_write", "https://127.0.0.1:9/w", "")
            },
            "ca_file",
        ),
    ];
    for (t, expect) in cases {
        // A data directory each: a refused start leaves its database to the process's end.
        let data = tempfile::tempdir().unwrap();
        let mut s = crate::helpers::settings(data.path(), &[]);
        s.delivery.webhook_allow = vec![allowed.into(), "https://127.0.0.1:9".into()];
        s.push = vec![t.clone()];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let opts = kasad::app::StartOptions {
            admin_password: Some("admin-password-1".into()),
        };
        let e = match kasad::app::start_with(s, listener, kasad::clock::system(), opts).await {
            Ok(r) => {
                r.shutdown.cancel();
                panic!("{t:?} was accepted");
            }
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains("push") && e.contains(expect), "{t:?}: {e}");
        assert!(
            !e.contains("s3cret") && !e.contains(":p@"),
            "no secret in {e}"
        );
    }
    // What types and ranges alone tell is refused by the configuration's own check.
    for bad in [
        target("t", "graphite", allowed, ""),
        PushTarget {
            series: "hourly".into(),
            ..target("t", "influx", allowed, "")
        },
        PushTarget {
            database: None,
            ..target("t", "influx", allowed, "")
        },
        PushTarget {
            batch: 0,
            ..target("t", "remote_write", allowed, "")
        },
    ] {
        let mut s = crate::helpers::settings(dir.path(), &[]);
        s.push = vec![bad.clone()];
        assert!(s.validate().is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn a_backfill_fills_a_fresh_target_once() {
    use kasad::domain::{DeviceId, Reading};
    use kasad::store::Store;
    use kasad::store::write::{Batch, apply};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // A week of history, every 10 minutes, of two plugs, ending an hour ago.
    let now = kasad::clock::Clock::now_ms(&kasad::clock::SystemClock);
    let step = 600_000;
    let from = now - 3_600_000 - 7 * 86_400_000;
    {
        let store = Store::open(&data.join("kasad.redb"), 8).unwrap();
        let mut b = Batch {
            devices: ["P1", "P2"]
                .iter()
                .map(|id| (crate::helpers::plug_info(id), from))
                .collect(),
            ..Batch::default()
        };
        for k in 0..=7 * 144 {
            for (i, id) in ["P1", "P2"].iter().enumerate() {
                b.readings.push(Reading {
                    device_id: DeviceId::parse(id).unwrap(),
                    ts_ms: from + k * step + i as i64,
                    power_mw: Some(10_000 + 7 * k + i as i64),
                    voltage_mv: Some(230_000),
                    current_ma: Some(50),
                    counter_wh: Some(k * 2),
                    relay_on: true,
                    rssi: None,
                });
            }
        }
        apply(&store, &b, true).unwrap();
    }
    let vm = victoria(&dir.path().join("vm"), free_port()).await;
    let cfg = dir.path().join("kasad.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {data:?}\n[delivery]\nwebhook_allow = [{b:?}]\n\n[[push]]\nname = \"vm\"\nkind = \"remote_write\"\nurl = \"{b}/api/v1/write\"\nsite = \"home\"\n",
            b = vm.base
        ),
    )
    .unwrap();
    let since = chrono::DateTime::from_timestamp_millis(from - 86_400_000)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "push",
            "backfill",
            "vm",
            "--since",
            &since,
            "--config",
            cfg.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = Command::new(env!("CARGO_BIN_EXE_kasad"))
            .args(&args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        text
    };
    let first = run(&[]);
    assert!(first.contains("\"queued\": true"), "{first}");
    let got = vm_series(&vm.base, "kasad_device_power_watts", "home").await;
    assert_eq!(got.len(), 2, "{first}");
    for (i, id) in ["P1", "P2"].iter().enumerate() {
        let want: Vec<i64> = (0..=7 * 144).map(|k| from + k * step + i as i64).collect();
        assert_eq!(got[*id].keys().copied().collect::<Vec<_>>(), want, "{id}");
        assert_eq!(got[*id][&want[3]], (10_000 + 21 + i as i64) as f64 / 1000.0);
    }
    let second = run(&[]);
    assert!(
        second.contains("\"queued\": false") && second.contains("--force"),
        "{second}"
    );
    let again = vm_series(&vm.base, "kasad_device_power_watts", "home").await;
    assert_eq!(again, got, "a second run adds nothing");
    let out = Command::new(env!("CARGO_BIN_EXE_kasad"))
        .args(["push", "status", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["sent"], 2 * (7 * 144 + 1), "{status}");
    assert!(status[0]["covered_from"].is_string(), "{status}");
}

#[tokio::test]
async fn a_batch_the_target_refuses_as_data_is_counted_not_retried_forever() {
    use kasad::domain::{DeviceId, Reading};
    use kasad::store::Store;
    use kasad::store::write::{Batch, apply};
    // Prometheus without an out-of-order window refuses samples far behind its newest (400).
    let dir = tempfile::tempdir().unwrap();
    let prom = prometheus_with(dir.path(), "").await;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let store = Store::open(&data.join("kasad.redb"), 8).unwrap();
    let clock = kasad::clock::system();
    let now = clock.now_ms();
    let reading = |ts: i64| Reading {
        device_id: DeviceId::parse("P1").unwrap(),
        ts_ms: ts,
        power_mw: Some(5_000),
        voltage_mv: Some(230_000),
        current_ma: Some(20),
        counter_wh: Some(1),
        relay_on: true,
        rssi: None,
    };
    // Two days ago: history for a backfill.
    let old: Vec<Reading> = (0..100)
        .map(|k| reading(now - 2 * 86_400_000 + k * 60_000))
        .collect();
    apply(
        &store,
        &Batch {
            devices: vec![(crate::helpers::plug_info("P1"), now - 3 * 86_400_000)],
            readings: old,
            days: vec![],
        },
        true,
    )
    .unwrap();
    let mut s = kasad::config::Settings {
        data_dir: data.clone(),
        ..Default::default()
    };
    s.delivery.webhook_allow = vec![prom.base.clone()];
    s.push = vec![PushTarget {
        batch: 30,
        ..target(
            "p",
            "remote_write",
            &format!("{}/api/v1/write", prom.base),
            "x",
        )
    }];
    // The target started 10 s ago; readings since are live, the history before a backfill's.
    let push = kasad::push::Push::new(&store, &s, now - 10_000).unwrap();
    let recent: Vec<Reading> = (1..=20).map(|k| reading(now - 9_000 + k * 100)).collect();
    apply(
        &store,
        &Batch {
            readings: recent,
            ..Batch::default()
        },
        true,
    )
    .unwrap();
    let q = push
        .request_backfill(&store, "p", now - 3 * 86_400_000, false)
        .unwrap();
    assert_eq!(q["queued"], true, "{q}");
    let status = tokio::time::timeout(
        Duration::from_secs(60),
        push.drain_backfill(&store, &clock, "p"),
    )
    .await
    .expect("a refused batch does not block the target")
    .unwrap();
    assert_eq!(status["sent"], 20, "{status}");
    assert_eq!(status["skipped"], 100, "{status}");
    assert!(status["errors"].as_u64() >= Some(4), "{status}");
    assert!(status["backfill"].is_null(), "{status}");
    let got = prom_series(&prom.base, "kasad_device_power_watts", "x").await;
    assert_eq!(got["P1"].len(), 20);
}

#[tokio::test]
async fn https_with_a_private_ca_and_basic_auth_from_a_secret_file() {
    use kasad::domain::{DeviceId, Reading};
    use kasad::store::Store;
    use kasad::store::write::{Batch, apply};
    let dir = tempfile::tempdir().unwrap();
    crate::mqtt::certificates(dir.path());
    let port = free_port();
    let p = |f: &str| dir.path().join(f).display().to_string();
    let child = Command::new("victoria-metrics")
        .args([
            &format!("-httpListenAddr=127.0.0.1:{port}"),
            &format!("-storageDataPath={}", p("vm")),
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-loggerLevel=ERROR",
            "-tls",
            &format!("-tlsCertFile={}", p("server.pem")),
            &format!("-tlsKeyFile={}", p("server.key")),
            "-httpAuth.username=kasad",
            "-httpAuth.password=vm-pass-123",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("victoria-metrics (Debian package victoria-metrics) must be installed");
    let base = format!("https://127.0.0.1:{port}");
    let _vm = Server {
        child,
        base: base.clone(),
    };
    // A client trusting the test CA, with the server's credentials, to read back.
    kasad::tls::install_tls();
    let tls = kasad::tls::client_config(Some(&dir.path().join("ca.pem")), "test").unwrap();
    let reader = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap();
    for _ in 0..300 {
        if reader
            .get(format!("{base}/health"))
            .basic_auth("kasad", Some("vm-pass-123"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(dir.path().join("good"), "vm-pass-123\n").unwrap();
    std::fs::write(dir.path().join("bad"), "not-the-password\n").unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let store = Store::open(&data.join("kasad.redb"), 8).unwrap();
    let clock = kasad::clock::system();
    let now = clock.now_ms();
    let mut s = kasad::config::Settings {
        data_dir: data.clone(),
        ..Default::default()
    };
    s.delivery.webhook_allow = vec![base.clone()];
    let with = |name: &str, file: &str| PushTarget {
        username: Some("kasad".into()),
        password_file: Some(dir.path().join(file)),
        ca_file: Some(dir.path().join("ca.pem")),
        ..target(name, "remote_write", &format!("{base}/api/v1/write"), name)
    };
    s.push = vec![with("good", "good"), with("bad", "bad")];
    let push = kasad::push::Push::new(&store, &s, now - 10_000).unwrap();
    let readings: Vec<Reading> = (1..=10)
        .map(|k| Reading {
            device_id: DeviceId::parse("P1").unwrap(),
            ts_ms: now - 9_000 + k * 100,
            power_mw: Some(1_000 * k),
            voltage_mv: Some(230_000),
            current_ma: Some(5),
            counter_wh: Some(k),
            relay_on: true,
            rssi: None,
        })
        .collect();
    apply(
        &store,
        &Batch {
            devices: vec![(crate::helpers::plug_info("P1"), now - 10_000)],
            readings,
            days: vec![],
        },
        true,
    )
    .unwrap();
    let good = push.drain_backfill(&store, &clock, "good").await.unwrap();
    assert_eq!(good["sent"], 10, "{good}");
    // The wrong password is retried (the target may be fixed), counted, and never shown.
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(std::sync::Arc::new(push).run(
        store.clone(),
        clock.clone(),
        Duration::from_millis(100),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    run.await.unwrap();
    let st = kasad::push::stored_status(&store, &s, clock.now_ms()).unwrap();
    let bad = st.iter().find(|t| t["target"] == "bad").unwrap();
    assert_eq!(bad["sent"], 0, "{bad}");
    assert!(bad["errors"].as_u64() >= Some(2), "{bad}");
    let err = bad["last_error"].as_str().unwrap();
    assert!(err.contains("401"), "{err}");
    assert!(
        !err.contains("not-the-password") && !err.contains("vm-pass"),
        "{err}"
    );
    // What the good target sent is there, read back over TLS with the credentials.
    reader
        .get(format!("{base}/internal/force_flush"))
        .basic_auth("kasad", Some("vm-pass-123"))
        .send()
        .await
        .unwrap();
    let text = reader
        .get(
            reqwest::Url::parse_with_params(
                &format!("{base}/api/v1/export"),
                &[("match[]", "kasad_device_power_watts{site=\"good\"}")],
            )
            .unwrap(),
        )
        .basic_auth("kasad", Some("vm-pass-123"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(text.lines().next().unwrap_or("null")).unwrap();
    assert_eq!(v["values"].as_array().map(Vec::len), Some(10), "{text}");
}

#[tokio::test]
async fn rollups_are_pushed_as_whole_15_minute_buckets() {
    use kasad::domain::{DeviceId, Reading};
    use kasad::store::Store;
    use kasad::store::write::{Batch, apply};
    let dir = tempfile::tempdir().unwrap();
    let vm = victoria(&dir.path().join("vm"), free_port()).await;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let store = Store::open(&data.join("kasad.redb"), 8).unwrap();
    let clock = kasad::clock::system();
    let now = clock.now_ms();
    let q = 900_000;
    // Two hours of readings a minute, up to a minute ago, sent by a backfill.
    let from = (now - 2 * 3_600_000) / q * q;
    let readings: Vec<Reading> = (0..)
        .map(|k| from + k * 60_000)
        .take_while(|t| *t < now - 60_000)
        .enumerate()
        .map(|(k, ts)| Reading {
            device_id: DeviceId::parse("P1").unwrap(),
            ts_ms: ts,
            power_mw: Some(60_000 + (k as i64 % 7) * 1_000),
            voltage_mv: Some(230_000),
            current_ma: Some(260),
            counter_wh: Some(k as i64),
            relay_on: true,
            rssi: None,
        })
        .collect();
    let newest = readings.last().unwrap().ts_ms;
    apply(
        &store,
        &Batch {
            devices: vec![(crate::helpers::plug_info("P1"), from)],
            readings,
            days: vec![],
        },
        true,
    )
    .unwrap();
    let mut s = kasad::config::Settings {
        data_dir: data.clone(),
        ..Default::default()
    };
    s.delivery.webhook_allow = vec![vm.base.clone()];
    s.push = vec![PushTarget {
        series: "rollups".into(),
        ..target("r", "influx", &vm.base, "r")
    }];
    let push = kasad::push::Push::new(&store, &s, now).unwrap();
    let q0 = push.request_backfill(&store, "r", from - 1, false).unwrap();
    assert_eq!(q0["queued"], true, "{q0}");
    let st = push.drain_backfill(&store, &clock, "r").await.unwrap();
    // Every whole bucket, none of the one still filling.
    let buckets = store
        .buckets(&DeviceId::parse("P1").unwrap(), from, newest - newest % q)
        .unwrap();
    assert!(buckets.len() >= 7, "{}", buckets.len());
    assert_eq!(st["sent"], buckets.len() as u64, "{st}");
    let power = vm_series(&vm.base, "kasad_device_power_watts", "r").await;
    let energy = vm_series(&vm.base, "kasad_device_energy_watt_hours", "r").await;
    let want: Vec<i64> = buckets.iter().map(|b| b.start_ms).collect();
    assert_eq!(power["P1"].keys().copied().collect::<Vec<_>>(), want);
    for b in &buckets {
        let mean = b.power.sum as f64 / f64::from(b.meter_samples) / 1000.0;
        assert!((power["P1"][&b.start_ms] - mean).abs() < 1e-9);
        assert!((energy["P1"][&b.start_ms] - b.energy_mwh as f64 / 1000.0).abs() < 1e-9);
    }
}

/// Every query of the Grafana dashboard in docs/grafana uses only series kasad pushes, and each
/// returns data from `base` for each of `sites`.
async fn dashboard_queries_return_data(base: &str, sites: &[&str]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/kasad-sites.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let pushed = [
        "kasad_device_power_watts",
        "kasad_device_voltage_volts",
        "kasad_device_current_amperes",
        "kasad_device_energy_counter_watt_hours_total",
        "kasad_device_relay_on",
        "kasad_device_energy_watt_hours",
        "kasad_device_cost",
        "kasad_device_info",
    ];
    let mut exprs: Vec<String> = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 5, "{exprs:?}");
    let var = dash["templating"]["list"][0]["definition"]
        .as_str()
        .unwrap()
        .to_owned();
    for e in exprs.iter().chain(std::iter::once(&var)) {
        for part in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if part.starts_with("kasad_") {
                assert!(
                    pushed.contains(&part),
                    "{part} in {e:?} is not a series kasad pushes"
                );
            }
        }
    }
    let c = http();
    c.get(format!("{base}/internal/force_flush"))
        .send()
        .await
        .unwrap();
    let v: Value = c
        .get(format!(
            "{base}/api/v1/label/site/values?match[]=kasad_device_info"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for site in sites {
        assert!(
            v["data"].as_array().unwrap().iter().any(|s| s == site),
            "{var}: {v}"
        );
        for e in &exprs {
            let q = e.replace("$site", site);
            let url = reqwest::Url::parse_with_params(
                &format!("{base}/api/v1/query"),
                &[("query", q.as_str())],
            )
            .unwrap();
            let r: Value = c.get(url).send().await.unwrap().json().await.unwrap();
            assert_eq!(r["status"], "success", "{q}: {r}");
            let n = r["data"]["result"].as_array().map_or(0, Vec::len);
            assert!(n > 0, "{q} returned no data: {r}");
        }
    }
}
