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
    let port = free_port();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        "global:\n  scrape_interval: 1h\nstorage:\n  tsdb:\n    out_of_order_time_window: 30d\n",
    )
    .unwrap();
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
