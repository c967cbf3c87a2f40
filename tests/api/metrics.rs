//! `GET /metrics`: parsed by prometheus_client's own parser (tests/tools/prom_parse.py), the
//! figures agree with the devices and the API, and `[metrics] access` is enforced.

use crate::helpers::{TestApp, fleet};
use serde_json::Value;

/// The samples of `text` as prometheus_client parses them.
fn parse(text: &str) -> Vec<Value> {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/prom_parse.py"
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refuses the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn scrape(app: &TestApp, token: Option<&str>) -> (u16, String, String) {
    let mut r = app.client.get(format!("{}/metrics", app.base));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status().as_u16(), ct, r.text().await.unwrap())
}

fn values<'a>(samples: &'a [Value], name: &str) -> Vec<&'a Value> {
    samples.iter().filter(|s| s["name"] == name).collect()
}

#[tokio::test]
async fn metrics_parse_and_agree_with_the_devices() {
    let app = TestApp::spawn(fleet(3)).await;
    let devices = app
        .wait_devices("three devices with readings", |d| {
            d.iter().filter(|x| x["parent_id"].is_null()).count() == 3
                && d.iter().all(|x| x["data_points"].as_u64() >= Some(2))
        })
        .await;
    let (s, ct, _) = scrape(&app, None).await;
    assert_eq!(s, 401, "a token is required by default");
    assert!(ct.starts_with("application/json"), "{ct}");
    let (s, ct, text) = scrape(&app, Some(&app.token)).await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    let samples = parse(&text);

    // Every plug, strip and outlet with a power reading; a strip is the sum of its outlets.
    let power = values(&samples, "kasad_device_power_watts");
    let of = |id: &str| {
        power
            .iter()
            .find(|s| s["labels"]["device_id"] == id)
            .map(|s| s["value"].as_f64().unwrap())
    };
    let metered: Vec<&Value> = devices.iter().filter(|d| d["has_emeter"] == true).collect();
    assert!(metered.len() >= 3, "{devices:?}");
    for d in &metered {
        assert!(
            of(d["device_id"].as_str().unwrap()).is_some(),
            "power of {d}"
        );
    }
    let strip = devices
        .iter()
        .find(|d| d["device_type"] == "strip")
        .unwrap();
    let outlets: f64 = devices
        .iter()
        .filter(|d| d["parent_id"] == strip["device_id"])
        .map(|d| of(d["device_id"].as_str().unwrap()).unwrap())
        .sum();
    let info = values(&samples, "kasad_device_info");
    let typed = |t: &str| info.iter().filter(|s| s["labels"]["type"] == t).count();
    assert_eq!((typed("strip"), typed("strip_outlet")), (1, 6), "{power:?}");
    let total = of(strip["device_id"].as_str().unwrap()).unwrap();
    assert!((total - outlets).abs() < 1e-6, "{total} vs {outlets}");

    let ok: f64 = values(&samples, "kasad_polls_total")
        .iter()
        .filter(|s| s["labels"]["result"] == "ok")
        .map(|s| s["value"].as_f64().unwrap())
        .sum();
    assert!(ok >= 3.0, "polls counted: {ok}");
    let one = |name: &str| {
        let v = values(&samples, name);
        assert_eq!(v.len(), 1, "{name}: {v:?}");
        v[0]["value"].as_f64().unwrap()
    };
    assert!(one("kasad_database_size_bytes") > 0.0);
    assert!(one("process_resident_memory_bytes") > 1e6);
    assert!(one("kasad_readings_stored_total") >= 2.0);
    assert_eq!(
        values(&samples, "kasad_device_online")
            .iter()
            .filter(|s| s["value"] == 1.0)
            .count(),
        3,
        "the three plugs and strips are online"
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_access_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics.token");
    std::fs::write(&token_file, "scrape-token-0123456789\n").unwrap();
    let tf = token_file.clone();
    let app = TestApp::spawn_with(vec![], move |s| s.metrics.token_file = Some(tf)).await;
    assert_eq!(scrape(&app, Some("scrape-token-0123456789")).await.0, 200);
    assert_eq!(scrape(&app, Some("scrape-token-wrong")).await.0, 401);
    // The scrape token also opens the health detail, for monitoring.
    let health = |tok: &'static str| app.req_as(reqwest::Method::GET, "/api/health", tok).send();
    let r = health("scrape-token-0123456789").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["store"]["readings_stored"].is_u64(), "{v}");
    assert_eq!(health("scrape-token-wrong").await.unwrap().status(), 401);
    app.stop().await;

    let open = TestApp::spawn_with(vec![], |s| s.metrics.access = "open".into()).await;
    let (s, _, text) = scrape(&open, None).await;
    assert_eq!(s, 200);
    assert!(!parse(&text).is_empty());
    open.stop().await;

    let tf = token_file.clone();
    let off = TestApp::spawn_with(vec![], move |s| {
        s.metrics.access = "off".into();
        s.metrics.token_file = Some(tf);
    })
    .await;
    assert_eq!(scrape(&off, Some(&off.token)).await.0, 404);
    // Metrics off: the scrape token is no key to anything.
    let r = off
        .req_as(
            reqwest::Method::GET,
            "/api/health",
            "scrape-token-0123456789",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    off.stop().await;
}
