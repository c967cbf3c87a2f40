//! The HTTP API against the real daemon and simulated devices.

use crate::helpers::{TestApp, fleet, of_type, start_sims};
use kasad::sim::Fault;
use serde_json::Value;

fn points(d: &[Value]) -> u64 {
    d.iter().map(|x| x["data_points"].as_u64().unwrap()).sum()
}

#[tokio::test]
async fn devices_are_discovered_polled_and_listed_by_id() {
    let app = TestApp::spawn(fleet(8)).await;
    let d = app
        .wait_devices("8 devices online with readings", |d| {
            d.iter()
                .filter(|x| x["online"] == true && x["data_points"].as_u64() > Some(0))
                .count()
                >= 8 + 6
        })
        .await;
    assert_eq!(of_type(&d, "plug").len(), 7);
    let strip = of_type(&d, "strip");
    assert_eq!(strip.len(), 1);
    let outlets = of_type(&d, "strip_outlet");
    assert_eq!(outlets.len(), 6);
    for o in &outlets {
        assert_eq!(o["parent_id"], strip[0]["device_id"]);
        assert_eq!(o["device_ip"], strip[0]["device_ip"]);
        assert!(
            o["device_id"]
                .as_str()
                .unwrap()
                .starts_with(strip[0]["device_id"].as_str().unwrap())
        );
    }
    let strip_points: u64 = outlets
        .iter()
        .map(|o| o["data_points"].as_u64().unwrap())
        .sum();
    assert_eq!(strip[0]["data_points"].as_u64().unwrap(), strip_points);
    let hs100 = d.iter().find(|x| x["model"] == "HS100(US)").unwrap();
    assert_eq!(hs100["has_emeter"], false);
    for x in &d {
        assert_eq!(x["transport"], "xor");
        assert_eq!(x["status"], "online");
        assert!(x["device_ip"].as_str().unwrap().starts_with("127.0.0."));
        assert_eq!(x["latitude"], 52.52);
    }
    let (s, h) = app.get("/api/health").await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["status"], "ok");
    app.stop().await;
}

#[tokio::test]
async fn readings_come_raw_and_rolled_up_with_clear_errors() {
    let app = TestApp::spawn(fleet(3)).await;
    let d = app
        .wait_devices("a metered plug with 3 readings", |d| {
            d.iter()
                .any(|x| x["model"] == "KP115(US)" && x["data_points"].as_u64() >= Some(3))
        })
        .await;
    let id = d.iter().find(|x| x["model"] == "KP115(US)").unwrap()["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, raw) = app
        .get(&format!("/api/devices/{id}/readings?resolution=raw"))
        .await;
    assert_eq!(s, 200, "{raw}");
    assert_eq!(raw["device_id"], id.as_str());
    let rows = raw["readings"].as_array().unwrap();
    assert!(rows.len() >= 3);
    for r in rows {
        assert!(r["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(r["voltage"].as_f64().unwrap() > 100.0);
        assert!(r["total_kwh"].is_number());
        assert!(r["energy_kwh"].as_f64().unwrap() >= 0.0);
        assert!(r["is_on"].is_boolean());
    }
    let (s, q) = app
        .get(&format!("/api/devices/{id}/readings?resolution=15m"))
        .await;
    assert_eq!(s, 200);
    let buckets = q["readings"].as_array().unwrap();
    assert!(!buckets.is_empty() && buckets.len() <= 2);
    let samples: u64 = buckets.iter().map(|b| b["samples"].as_u64().unwrap()).sum();
    let raw_now = app
        .get(&format!("/api/devices/{id}/readings?resolution=raw"))
        .await
        .1;
    assert!(samples as usize <= raw_now["readings"].as_array().unwrap().len());
    let (s, day) = app
        .get(&format!(
            "/api/devices/{id}/readings?resolution=day&timezone=Asia/Kathmandu"
        ))
        .await;
    assert_eq!(s, 200);
    assert_eq!(day["timezone"], "Asia/Kathmandu");

    for (path, status, code) in [
        (
            format!("/api/devices/{id}/readings?resolution=weekly"),
            400,
            "INVALID_RESOLUTION",
        ),
        (
            format!("/api/devices/{id}/readings?start=2026-11-25&end=2026-11-24"),
            400,
            "INVALID_DATE_RANGE",
        ),
        (
            format!("/api/devices/{id}/readings?start=yesterday"),
            400,
            "INVALID_DATE",
        ),
        (
            format!("/api/devices/{id}/readings?timezone=Mars/Base"),
            400,
            "INVALID_TIMEZONE",
        ),
        (
            "/api/devices/NOPE/readings".to_owned(),
            404,
            "DEVICE_NOT_FOUND",
        ),
        (
            "/api/devices/..%2F..%2Fetc/readings".to_owned(),
            404,
            "DEVICE_NOT_FOUND",
        ),
        ("/api/nothing-here".to_owned(), 404, "NOT_FOUND"),
    ] {
        let (s, v) = app.get(&path).await;
        assert_eq!(s, status, "{path}: {v}");
        assert_eq!(v["error_code"], code, "{path}: {v}");
        assert!(v["detail"].is_string() && v["message"].is_string(), "{v}");
    }
    app.stop().await;
}

#[tokio::test]
async fn discovery_on_demand_finds_a_device_that_was_silent() {
    let sims = start_sims(fleet(3)).await;
    // The third device ignores probes until we clear its fault, so the start-up round misses it.
    sims[2].set_fault(Some(Fault::Hang));
    let silent_ip = sims[2].addr.ip().to_string();
    let app = TestApp::with_sims(sims, |_| {}).await;
    let (s, v) = app.post("/api/devices/discover").await;
    assert_eq!((s, v["found"].as_u64()), (200, Some(2)), "{v}");
    let before = app.devices().await;
    assert!(before.iter().all(|d| d["device_ip"] != silent_ip.as_str()));
    app.sims[2].set_fault(None);
    let (s, v) = app.post("/api/devices/discover").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["found"], 3);
    // The record reaches the list once the store writer has committed it.
    app.wait_devices("the formerly silent device listed", |d| {
        d.iter().any(|x| x["device_ip"] == silent_ip.as_str())
    })
    .await;
    let (s, _) = app.get("/api/devices/discover").await;
    assert_eq!(s, 405);
    app.stop().await;
}

#[tokio::test]
async fn data_points_keep_growing_and_survive_a_restart() {
    let app = TestApp::spawn(fleet(2)).await;
    let d = app.wait_devices("readings", |d| points(d) >= 4).await;
    let first = points(&d);
    app.wait_devices("more readings", |d| points(d) > first)
        .await;
    let dir = app.dir.path().to_path_buf();
    let sims: Vec<_> = app.sims.iter().map(|s| s.addr).collect();
    let seen = points(&app.devices().await);
    // Stop (final durable commit), then start a new daemon on the same data directory.
    let TestApp {
        running,
        dir: tmp,
        sims: handles,
        ..
    } = app;
    running.shutdown.cancel();
    running.done.await.unwrap().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let again = kasad::app::start(
        crate::helpers::settings(&dir, &sims),
        listener,
        kasad::clock::system(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", again.addr);
    let token = crate::helpers::login(
        &crate::helpers::client(),
        &base,
        "admin",
        crate::helpers::ADMIN_PASSWORD,
    )
    .await;
    let body = crate::helpers::get_json(&base, &token, "/api/devices").await;
    assert!(
        points(body["devices"].as_array().unwrap()) >= seen,
        "nothing lost across a clean restart"
    );
    again.shutdown.cancel();
    again.done.await.unwrap().unwrap();
    for h in handles {
        h.stop();
    }
    drop(tmp);
}

#[tokio::test]
async fn static_devices_are_polled_without_discovery() {
    let sims = start_sims(fleet(2)).await;
    let hosts: Vec<String> = sims.iter().map(|s| s.addr.to_string()).collect();
    let app = TestApp::with_sims(sims, |s| {
        s.discovery.enabled = false;
        s.devices = hosts
            .iter()
            .map(|h| kasad::config::StaticDevice { host: h.clone() })
            .collect();
    })
    .await;
    app.wait_devices("both static devices polled", |d| {
        d.len() == 2
            && d.iter()
                .all(|x| x["online"] == true && x["data_points"].as_u64() >= Some(1))
    })
    .await;
    let (s, v) = app.post("/api/devices/discover").await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (503, Some("DISCOVERY_UNAVAILABLE")),
        "{v}"
    );
    app.stop().await;
}

/// The page shell and every asset it loads, following the module imports: all embedded in the
/// binary, with the right types, and none pointing at another host.
#[tokio::test]
async fn the_web_pages_are_served_from_the_binary() {
    let app = TestApp::spawn(vec![]).await;
    let get = |path: String| {
        let c = app.client.clone();
        let url = format!("{}{path}", app.base);
        async move {
            let r = c.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
            (status, ct, r.text().await.unwrap())
        }
    };
    let (status, ct, html) = get("/".into()).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/html"), "{ct}");
    let no_external = |name: &str, text: &str| {
        // The SVG namespace name is an identifier, never fetched.
        let t = text.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !t.contains("http://") && !t.contains("https://") && !t.contains("//cdn"),
            "{name} refers to another host"
        );
    };
    no_external("index.html", &html);
    let mut todo: Vec<String> = ["style.css", "app.js", "icon.svg"]
        .iter()
        .map(|f| {
            assert!(
                html.contains(&format!("/static/{f}")),
                "index.html loads {f}"
            );
            (*f).to_owned()
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(f) = todo.pop() {
        if !seen.insert(f.clone()) {
            continue;
        }
        let (status, ct, body) = get(format!("/static/{f}")).await;
        assert_eq!(status, 200, "/static/{f}");
        let want = match f.rsplit('.').next() {
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            _ => "image/svg+xml",
        };
        assert!(ct.starts_with(want), "{f}: {ct}");
        no_external(&f, &body);
        for part in body.split("from './").skip(1) {
            todo.push(part.split('\'').next().unwrap().to_owned());
        }
    }
    for f in [
        "api.js",
        "devices.js",
        "export.js",
        "history.js",
        "schedules.js",
        "admin.js",
        "chart.js",
    ] {
        assert!(seen.contains(f), "{f} is reached from app.js: {seen:?}");
    }
    let (status, _, body) = get("/static/nope.js".into()).await;
    assert_eq!(status, 404, "{body}");
    app.stop().await;
}
