//! Dynamic prices: a constant 1 kW load over the two DST days of 2024 in Europe/Berlin (23 and
//! 25 hours), priced from hourly series uploaded as CSV (one hour missing, priced at the
//! fallback and reported) and as an aWATTar answer; an Octopus Agile answer fetched from a
//! loopback server on the allow-list, and a URL outside it refused.

use crate::helpers::TestApp;
use kasad::clock::{ManualClock, SharedClock};
use kasad::domain::{DeviceId, Reading};
use kasad::store::Store;
use kasad::store::write::{Batch, apply};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;

const HOUR: i64 = 3_600_000;
/// 2024-03-31T00:00:00+01:00 (Berlin midnight of the 23-hour day).
const SPRING: i64 = 1_711_839_600_000;
/// 2024-10-27T00:00:00+02:00 (Berlin midnight of the 25-hour day).
const AUTUMN: i64 = 1_729_980_000_000;

/// A 1 kW load read every minute over `[from, to)`.
fn load(store: &Store, from: i64, to: i64, first: bool) {
    let id = DeviceId::parse("BOILER01").unwrap();
    let mut readings = Vec::new();
    let mut n = 0i64;
    let mut t = from;
    while t <= to {
        readings.push(Reading {
            device_id: id.clone(),
            ts_ms: t,
            power_mw: Some(1_000_000),
            voltage_mv: Some(230_000),
            current_ma: Some(4_348),
            // 1 kW for n minutes: n × 1000/60 Wh, whole Wh.
            counter_wh: Some(n * 1_000 / 60),
            relay_on: true,
            rssi: None,
        });
        n += 1;
        t += 60_000;
    }
    let devices = if first {
        vec![(crate::helpers::plug_info("BOILER01"), from)]
    } else {
        vec![]
    };
    apply(
        store,
        &Batch {
            devices,
            readings,
            days: vec![],
        },
        true,
    )
    .unwrap();
}

async fn app(hook: &str) -> (TestApp, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    {
        let store = Store::open(&data.path().join("kasad.redb"), 16).unwrap();
        load(&store, SPRING, SPRING + 23 * HOUR, true);
        load(&store, AUTUMN, AUTUMN + 25 * HOUR, false);
    }
    let clock: SharedClock = Arc::new(ManualClock::new(AUTUMN + 40 * 86_400_000));
    let hook = hook.to_owned();
    let app = TestApp::on_data(data.path(), clock, move |s| {
        s.timezone = kasad::config::Zone("Europe/Berlin".parse().unwrap());
        s.delivery.webhook_allow = vec![hook];
    })
    .await;
    (app, data)
}

async fn send(app: &TestApp, m: Method, path: &str, body: String) -> (u16, Value) {
    let r = app
        .req(m, path)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn dynamic() -> Value {
    json!({"currency": "EUR", "timezone": "Europe/Berlin", "rates": {"type": "dynamic", "series": "epex",
        "markup_per_kwh": 0.02, "fallback_price_per_kwh": 0.5}})
}

async fn compare(app: &TestApp, day: &str) -> Value {
    let r = app
        .req(Method::POST, "/api/tariffs/compare")
        .json(&json!({"date_range": {"start": day, "end": day}, "tariffs": [dynamic()]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["results"][0].clone()
}

fn cents(v: &Value) -> i64 {
    (v.as_f64().unwrap() * 100.0).round() as i64
}

fn band<'a>(r: &'a Value, name: &str) -> Option<&'a Value> {
    r["by_band"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["band"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_prices_price_dst_days_and_a_missing_hour_is_reported() {
    let (server, url) = feed().await;
    let (app, _data) = app(&url).await;
    // The spring day: 23 hourly prices, 0.10, 0.11, … as CSV with Berlin offsets; hour 5 missing.
    let mut csv = String::from("start,price_per_kwh\n");
    for k in 0..23 {
        if k == 5 {
            continue;
        }
        let t = chrono::DateTime::from_timestamp_millis(SPRING + k * HOUR).unwrap();
        csv.push_str(&format!(
            "{},{:.2}\n",
            t.to_rfc3339(),
            0.10 + 0.01 * k as f64
        ));
    }
    let (s, v) = send(
        &app,
        Method::PUT,
        "/api/tariffs/prices/epex?layout=csv",
        csv,
    )
    .await;
    assert_eq!((s, &v["stored"]), (200, &json!(22)), "{v}");
    let (s, list) = app
        .get("/api/tariffs/prices/epex?start=2024-03-31&end=2024-03-31")
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["prices"].as_array().unwrap().len(), 22);
    // The 23-hour day has one gap: its sixth hour (06:00+02:00 = 04:00Z; 02:00 local never was).
    assert_eq!(
        list["gaps"],
        json!([{"start": "2024-03-31T04:00:00.000Z", "end": "2024-03-31T05:00:00.000Z"}]),
        "{list}"
    );
    let r = compare(&app, "2024-03-31").await;
    // By hand: 22 hours at their price + 0.02, and the missing hour at the 0.50 fallback.
    let prices: Vec<f64> = (0..23)
        .filter(|k| *k != 5)
        .map(|k| 0.10 + 0.01 * k as f64)
        .collect();
    let want: f64 = prices.iter().map(|p| p + 0.02).sum::<f64>() + 0.5;
    assert_eq!(cents(&r["total"]), (want * 100.0).round() as i64, "{r:#}");
    assert_eq!(
        band(&r, "fallback price").unwrap()["kwh"],
        1.0,
        "the missing hour is reported"
    );
    assert_eq!(band(&r, "dynamic").unwrap()["kwh"], 22.0);
    // The autumn day: 25 hourly prices from an aWATTar answer (EUR/MWh), and no 13:00 price.
    let data: Vec<Value> = (0..25)
        .filter(|k| *k != 13)
        .map(|k| {
            json!({"start_timestamp": AUTUMN + k * HOUR, "end_timestamp": AUTUMN + (k + 1) * HOUR,
            "marketprice": 80.0 + k as f64, "unit": "Eur/MWh"})
        })
        .collect();
    let (s, v) = send(
        &app,
        Method::PUT,
        "/api/tariffs/prices/epex?layout=awattar",
        json!({"object": "list", "data": data}).to_string(),
    )
    .await;
    assert_eq!((s, &v["stored"]), (200, &json!(24)), "{v}");
    let r = compare(&app, "2024-10-27").await;
    let mut want: f64 = (0..25)
        .filter(|k| *k != 13)
        .map(|k| (80.0 + k as f64) / 1_000.0 + 0.02)
        .sum();
    want += 0.5; // the missing hour at the fallback
    assert_eq!(cents(&r["total"]), (want * 100.0).round() as i64, "{r:#}");
    assert_eq!(band(&r, "dynamic").unwrap()["kwh"], 24.0);
    assert_eq!(
        band(&r, "fallback price").unwrap()["kwh"],
        1.0,
        "the missing hour is reported"
    );
    // Without a fallback the missing hour is priced 0 and named so.
    let mut bare = dynamic();
    bare["rates"]
        .as_object_mut()
        .unwrap()
        .remove("fallback_price_per_kwh");
    let r = app
        .req(Method::POST, "/api/tariffs/compare")
        .json(
            &json!({"date_range": {"start": "2024-10-27", "end": "2024-10-27"}, "tariffs": [bare]}),
        )
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        band(&r["results"][0], "missing price").unwrap()["kwh"],
        1.0,
        "{r}"
    );
    drop(server);
}

/// A loopback server that answers the Octopus sample at `/prices`.
async fn feed() -> (tokio::task::JoinHandle<()>, String) {
    let body = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/prices/octopus.json"
    ))
    .unwrap();
    let app = axum::Router::new().route("/prices", axum::routing::get(move || async move { body }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/prices", listener.local_addr().unwrap());
    (
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }),
        url,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_is_fetched_from_an_allowed_url_and_refused_elsewhere() {
    let (server, url) = feed().await;
    let (app, _data) = app(&url).await;
    let app = &app;
    let post = |body: Value| async move {
        let r = app
            .req(Method::POST, "/api/tariffs/prices/agile/fetch")
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (s, v) = post(json!({"url": url, "layout": "octopus"})).await;
    assert_eq!((s, &v["stored"]), (200, &json!(3)), "{v}");
    let (_, list) = app
        .get("/api/tariffs/prices/agile?start=2024-03-31T00:00:00Z&end=2024-03-31T02:00:00Z")
        .await;
    assert_eq!(list["prices"][0]["price_per_kwh"], 0.18522, "{list}");
    let (s, v) = post(json!({"url": "http://127.0.0.1:9/elsewhere", "layout": "octopus"})).await;
    assert_eq!(
        (s, &v["error_code"]),
        (400, &json!("INVALID_DELIVERY")),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains("webhook_allow"),
        "{v}"
    );
    // A coarser upload replaces what was stored for its span: four quarter-hours, then the hour.
    let quarters = "start,price_per_kwh\n2024-06-01T00:00:00Z,0.1\n2024-06-01T00:15:00Z,0.2\n2024-06-01T00:30:00Z,0.3\n2024-06-01T00:45:00Z,0.4\n";
    let (s, _) = send(
        app,
        Method::PUT,
        "/api/tariffs/prices/fix?layout=csv",
        quarters.into(),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = send(
        app,
        Method::PUT,
        "/api/tariffs/prices/fix?layout=csv",
        "start,price_per_kwh\n2024-06-01T00:00:00Z,0.5\n".into(),
    )
    .await;
    assert_eq!(s, 200);
    let (_, list) = app
        .get("/api/tariffs/prices/fix?start=2024-06-01T00:00:00Z&end=2024-06-01T01:00:00Z")
        .await;
    assert_eq!(list["prices"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["prices"][0]["price_per_kwh"], 0.5);
    // Bad uploads are refused.
    for (layout, body) in [
        ("csv", "start,price_per_kwh\nnot a time,1"),
        ("awattar", "{}"),
        ("sms", "x"),
    ] {
        let (s, _) = send(
            app,
            Method::PUT,
            &format!("/api/tariffs/prices/epex?layout={layout}"),
            body.into(),
        )
        .await;
        assert_eq!(s, 400, "{layout}");
    }
    let (s, _) = send(
        app,
        Method::PUT,
        "/api/tariffs/prices/bad%20name?layout=csv",
        "start,price_per_kwh\n".into(),
    )
    .await;
    assert_eq!(s, 400);
    drop(server);
}
