//! The export API end to end against a fixed data set: golden files (CSV and JSON, raw and
//! every aggregation, UTC and America/New_York across the 2024-03-10 DST change), every
//! endpoint and error body, ownership, the rolling rate limit across a restart, a restart
//! during a running export, downloads with ranges, digests and tickets, and retention.

use crate::helpers::{TestApp, login};
use kasad::clock::{ManualClock, SharedClock};
use kasad::domain::{DeviceId, DeviceInfo, Reading};
use kasad::store::Store;
use kasad::store::write::{Batch, apply};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

const T0: i64 = 1_709_942_400_000; // 2024-03-09T00:00:00Z
const STEP: i64 = 600_000; // one reading per device every 10 minutes
const N: i64 = 432; // three days

fn device(id: &str, name: &str, addr: &str) -> DeviceInfo {
    crate::helpers::plug_info(id).named(name).at(addr)
}

/// Two plugs over 2024-03-09..11 UTC: a lamp (45.2 W from 06:00 to 22:00 UTC, off otherwise,
/// with a one-hour gap in its readings) and a heater (1500 W / 200 W thermostat cycle, counter
/// reset by a reboot on the second day). Counters are the exact integral of power.
pub fn fixture(dir: &Path) {
    let store = Store::open(&dir.join("kasad.redb"), 8).unwrap();
    let lamp = device("LAMP01", "Living Room Lamp", "127.0.0.9:1");
    let heater = device("HEATER01", "Garage Heater", "127.0.0.10:1");
    let mut readings = Vec::new();
    let (mut lamp_mwh, mut heater_mwh) = (0_i64, 0_i64);
    for i in 0..N {
        let ts = T0 + i * STEP + 1_234;
        let hour = (i * 10 / 60) % 24;
        let on = (6..22).contains(&hour);
        let p = if on { 45_200 } else { 0 };
        lamp_mwh += p / 6;
        let v = 120_000 + (i % 7) * 100;
        if !(100..106).contains(&i) {
            readings.push(Reading {
                device_id: DeviceId::parse("LAMP01").unwrap(),
                ts_ms: ts,
                power_mw: Some(p),
                voltage_mv: Some(v),
                current_ma: Some(p * 1000 / v),
                counter_wh: Some(lamp_mwh / 1000),
                relay_on: on,
                rssi: Some(-50),
            });
        }
        let hp = if i % 3 == 0 { 200_000 } else { 1_500_000 };
        if i == 200 {
            heater_mwh = 0; // reboot: the counter starts again
        }
        heater_mwh += hp / 6;
        readings.push(Reading {
            device_id: DeviceId::parse("HEATER01").unwrap(),
            ts_ms: ts + 500,
            power_mw: Some(hp),
            voltage_mv: Some(v - 300),
            current_ma: Some(hp * 1000 / (v - 300)),
            counter_wh: Some(heater_mwh / 1000),
            relay_on: true,
            rssi: Some(-60),
        });
    }
    let batch = Batch {
        devices: vec![(lamp, T0), (heater, T0)],
        readings,
        days: vec![],
    };
    apply(&store, &batch, true).unwrap();
}

/// 2024-03-13T00:00:00Z, after the data.
const NOW: i64 = T0 + 4 * 86_400_000;

pub struct Env {
    pub app: TestApp,
    pub clock: Arc<ManualClock>,
    pub data: tempfile::TempDir,
}

impl Env {
    /// Moves the clock on and logs the admin in again (access tokens last 15 minutes).
    pub async fn advance(&mut self, ms: i64) {
        self.clock.advance(ms);
        let app = &self.app;
        self.app.token = login(
            &app.client,
            &app.base,
            "admin",
            crate::helpers::ADMIN_PASSWORD,
        )
        .await;
    }
}

pub async fn env_with(tweak: impl FnOnce(&mut kasad::config::Settings)) -> Env {
    let data = tempfile::tempdir().unwrap();
    fixture(data.path());
    let clock = Arc::new(ManualClock::new(NOW));
    let shared: SharedClock = clock.clone();
    let app = TestApp::on_data(data.path(), shared, tweak).await;
    Env { app, clock, data }
}

/// An environment where the rate limit does not get in the way of the test.
pub async fn env() -> Env {
    env_with(|s| s.exports.rate_limit_per_hour = 1000).await
}

async fn create(
    app: &TestApp,
    token: &str,
    body: Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = app
        .req_as(Method::POST, "/api/exports/create", token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, r.json().await.unwrap_or(Value::Null), h)
}

/// Creates with `background_processing: false` and returns the finished status.
pub async fn finished(app: &TestApp, mut body: Value) -> Value {
    if body.get("performance_options").is_none() {
        body["performance_options"] = json!({});
    }
    body["performance_options"]["background_processing"] = json!(false);
    let (s, v, _) = create(app, &app.token, body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "completed", "{v}");
    v
}

pub async fn download(app: &TestApp, id: &str) -> (u16, Vec<u8>, reqwest::header::HeaderMap) {
    let r = app
        .req(Method::GET, &format!("/api/exports/download/{id}"))
        .send()
        .await
        .unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, r.bytes().await.unwrap().to_vec(), h)
}

/// Creates `body` with the keys of `extra` set, expects 400 and returns the error body.
pub async fn refused(app: &TestApp, body: &Value, extra: &Value) -> Value {
    let mut b = body.clone();
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    let r = app
        .req(Method::POST, "/api/exports/create")
        .json(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "{b}");
    r.json().await.unwrap()
}

/// Runs `body` in `format` to completion and downloads the file.
pub async fn export_as(app: &TestApp, body: &Value, format: &str) -> Vec<u8> {
    let mut body = body.clone();
    body["format"] = json!(format);
    let v = finished(app, body).await;
    let (s, bytes, _) = download(app, v["export_id"].as_str().unwrap()).await;
    assert_eq!(s, 200);
    bytes
}

fn golden_path(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_files_match_byte_for_byte() {
    let e = env().await;
    let raw_range = json!({"start": "2024-03-10T05:00:00Z", "end": "2024-03-10T09:00:00Z"});
    let all = json!({"start": "2024-03-09", "end": "2024-03-11"});
    let fields = json!([
        "timestamp",
        "device_id",
        "device_ip",
        "device_name",
        "power_w",
        "energy_kwh",
        "voltage",
        "current",
        "cost",
        "is_on",
        "total_kwh"
    ]);
    let cases = [
        (
            "raw_utc.csv",
            json!({"format": "csv", "date_range": raw_range, "options": {"timezone": "UTC"}}),
        ),
        (
            "raw_new_york.csv",
            json!({"format": "csv", "date_range": raw_range, "options": {"timezone": "America/New_York"}}),
        ),
        (
            "raw_utc.json",
            json!({"format": "json", "date_range": raw_range, "options": {"timezone": "UTC"}}),
        ),
        (
            "hourly_utc.csv",
            json!({"format": "csv", "date_range": all, "aggregation": "hourly", "options": {"timezone": "UTC"}}),
        ),
        (
            "hourly_new_york.csv",
            json!({"format": "csv", "date_range": all, "aggregation": "hourly", "options": {"timezone": "America/New_York"}}),
        ),
        (
            "daily_utc.csv",
            json!({"format": "csv", "date_range": all, "aggregation": "daily", "options": {"timezone": "UTC"}}),
        ),
        (
            "daily_new_york.csv",
            json!({"format": "csv", "date_range": all, "aggregation": "daily", "options": {"timezone": "America/New_York"}}),
        ),
        (
            "daily_new_york.json",
            json!({"format": "json", "date_range": all, "aggregation": "daily", "options": {"timezone": "America/New_York"},
            "custom_fields": [{"name": "load_pct", "formula": "power_w / 1500 * 100", "unit": "%"},
                              {"name": "daily_average", "formula": "SUM(energy_kwh) / COUNT(DISTINCT DATE(timestamp))", "unit": "kWh/day"}]}),
        ),
        (
            "weekly_new_york.csv",
            json!({"format": "csv", "date_range": all, "aggregation": "weekly", "options": {"timezone": "America/New_York"}}),
        ),
        (
            "monthly_utc.json",
            json!({"format": "json", "date_range": all, "aggregation": "monthly", "options": {"timezone": "UTC"}}),
        ),
    ];
    let update = std::env::var_os("KASAD_UPDATE_GOLDEN").is_some();
    for (name, mut body) in cases {
        body["export_type"] = json!("device_data");
        body["devices"] = json!("all");
        body["fields"] = fields.clone();
        let st = finished(&e.app, body).await;
        let id = st["export_id"].as_str().unwrap();
        let (s, bytes, _) = download(&e.app, id).await;
        assert_eq!(s, 200);
        let text = String::from_utf8(bytes).unwrap().replace(id, "EXPORT_ID");
        let path = golden_path(name);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|err| {
            panic!(
                "{}: {err} (set KASAD_UPDATE_GOLDEN=1 to write it)",
                path.display()
            )
        });
        assert!(text == want, "{name} differs from its golden file:\n{text}");
    }
    e.app.stop().await;
}

/// The element of array `list` whose `key` is `value`.
fn entry(list: &Value, key: &str, value: &str) -> Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|x| x[key] == value)
        .unwrap_or_else(|| panic!("no {key} = {value} in {list}"))
        .clone()
}

/// File names in a directory.
fn file_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn rows(v: &Value) -> &Vec<Value> {
    v["data"].as_array().unwrap()
}

async fn json_export(app: &TestApp, body: Value) -> Value {
    let mut body = body;
    body["export_type"] = json!("device_data");
    body["format"] = json!("json");
    let st = finished(app, body).await;
    let (_, bytes, _) = download(app, st["export_id"].as_str().unwrap()).await;
    serde_json::from_slice(&bytes).unwrap()
}

fn sum(rows: &[Value], field: &str) -> f64 {
    rows.iter().filter_map(|r| r[field].as_f64()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregation_filters_formulas_and_privacy_are_exact() {
    let e = env_with(|s| {
        s.exports.rate_limit_per_hour = 1000;
        s.exports.rated_power.insert("Garage Heater".into(), 2000.0);
    })
    .await;
    let range = json!({"start": "2024-03-09", "end": "2024-03-11"});
    // Energy is conserved from raw readings to every aggregation, in every zone.
    let raw = json_export(
        &e.app,
        json!({"date_range": {"start": "2024-03-08", "end": "2024-03-12"}, "devices": ["LAMP01"]}),
    )
    .await;
    let raw_total = sum(rows(&raw), "energy_kwh");
    let counter_span = rows(&raw).last().unwrap()["total_kwh"].as_f64().unwrap();
    assert!(
        (raw_total - counter_span).abs() < 1e-9,
        "raw energy {raw_total} = counter {counter_span}"
    );
    for (agg, tz) in [
        ("hourly", "UTC"),
        ("daily", "America/New_York"),
        ("weekly", "Asia/Kathmandu"),
        ("monthly", "UTC"),
    ] {
        let v = json_export(&e.app, json!({"date_range": {"start": "2024-03-08", "end": "2024-03-12"}, "devices": ["LAMP01"], "aggregation": agg, "options": {"timezone": tz}})).await;
        let total = sum(rows(&v), "energy_kwh");
        assert!(
            (total - raw_total).abs() < 1e-9,
            "{agg} in {tz}: {total} vs {raw_total}"
        );
    }
    // The New York DST day has 23 hours of rows.
    let hourly = json_export(&e.app, json!({"date_range": {"start": "2024-03-10", "end": "2024-03-10"}, "devices": ["HEATER01"], "aggregation": "hourly", "options": {"timezone": "America/New_York"}})).await;
    assert_eq!(rows(&hourly).len(), 23);
    assert_eq!(rows(&hourly)[2]["timestamp"], "2024-03-10T03:00:00-04:00");
    // Aggregation functions: max power per day, count of readings, first/last.
    let daily = json_export(&e.app, json!({"date_range": range, "devices": ["HEATER01"], "aggregation": "daily",
        "options": {"timezone": "UTC"},
        "aggregation_functions": {"power_w": "max", "voltage": "min", "current": "count", "total_kwh": "first"}})).await;
    let d0 = &rows(&daily)[0];
    assert_eq!(d0["power_w"], 1500.0);
    assert_eq!(d0["voltage"], 119.7);
    assert_eq!(d0["current"], 144.0, "144 readings a day");
    assert_eq!(daily["metadata"]["aggregation_functions"]["power_w"], "max");
    // Filters: min_power, device state, weekdays, a time window that wraps midnight.
    let on = json_export(&e.app, json!({"date_range": range, "devices": ["LAMP01"], "filters": {"device_states": ["on"], "min_power": 10}})).await;
    assert!(
        rows(&on)
            .iter()
            .all(|r| r["is_on"] == true && r["power_w"].as_f64().unwrap() >= 10.0)
    );
    let night = json_export(
        &e.app,
        json!({"date_range": range, "devices": ["LAMP01"], "options": {"timezone": "UTC"},
        "filters": {"time_of_day": {"start": "22:00", "end": "06:00"}}}),
    )
    .await;
    assert!(!rows(&night).is_empty());
    assert!(
        rows(&night).iter().all(|r| r["is_on"] == false),
        "the lamp is off at night"
    );
    let weekend = json_export(
        &e.app,
        json!({"date_range": range, "devices": ["LAMP01"], "options": {"timezone": "UTC"},
        "filters": {"days_of_week": [6]}}),
    )
    .await;
    assert!(
        rows(&weekend)
            .iter()
            .all(|r| r["timestamp"].as_str().unwrap().starts_with("2024-03-09")),
        "only Saturday"
    );
    // Outliers: the heater's 200 W phases are within 3 sigma; a 0 W lamp night is not removed
    // either, but the count never grows.
    let out = json_export(&e.app, json!({"date_range": range, "devices": ["HEATER01"], "filters": {"exclude_outliers": true}})).await;
    let all = json_export(
        &e.app,
        json!({"date_range": range, "devices": ["HEATER01"]}),
    )
    .await;
    assert!(rows(&out).len() <= rows(&all).len());
    // Formulas: a row formula with a configured rated power, an aggregate in the summary.
    let f = json_export(&e.app, json!({"date_range": range, "devices": ["HEATER01"], "aggregation": "daily", "options": {"timezone": "UTC"},
        "custom_fields": [{"name": "efficiency", "formula": "power_w / rated_power * 100", "unit": "%"},
                          {"name": "daily_average", "formula": "SUM(energy_kwh) / COUNT(DISTINCT DATE(timestamp))", "unit": "kWh/day"}]})).await;
    let r0 = &rows(&f)[0];
    let want = r0["power_w"].as_f64().unwrap() / 2000.0 * 100.0;
    assert!(
        (r0["efficiency"].as_f64().unwrap() - want).abs() < 1e-3,
        "{r0}"
    );
    let days = rows(&f).len() as f64;
    let avg = f["summary"]["daily_average"]["value"].as_f64().unwrap();
    assert!(
        (avg - sum(rows(&f), "energy_kwh") / days).abs() < 1e-5,
        "{avg}"
    );
    // decimal_places rounds at render time only.
    let r = json_export(&e.app, json!({"date_range": range, "devices": ["HEATER01"], "aggregation": "daily", "options": {"decimal_places": 1}})).await;
    assert!(rows(&r).iter().all(|x| {
        let v = x["energy_kwh"].as_f64().unwrap();
        (v * 10.0 - (v * 10.0).round()).abs() < 1e-9
    }));
    // Privacy: anonymised IPs, hashed ids and names, no user in metadata.
    let p = json_export(&e.app, json!({"date_range": range, "devices": ["LAMP01"], "privacy_options":
        {"anonymize_ip_addresses": true, "hash_device_identifiers": true, "exclude_user_data": true, "remove_location_data": true}})).await;
    let r0 = &rows(&p)[0];
    assert_eq!(r0["device_ip"], "127.0.0.0");
    assert_ne!(r0["device_id"], "LAMP01");
    assert!(r0["device_name"].as_str().unwrap().starts_with("Device "));
    assert!(p["metadata"].get("created_by").is_none());
    assert!(!serde_json::to_string(&p).unwrap().contains("LAMP01"));
    // By IP, and the same device twice, is one device.
    let by_ip = json_export(
        &e.app,
        json!({"date_range": range, "devices": ["127.0.0.9", "LAMP01"]}),
    )
    .await;
    assert_eq!(by_ip["metadata"]["devices"].as_array().unwrap().len(), 1);
    e.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_gzip_and_zip_hold_the_same_csv() {
    use std::io::Read;
    let e = env().await;
    let base = json!({"export_type": "device_data", "format": "csv", "date_range": {"start": "2024-03-09", "end": "2024-03-09"}});
    let plain = finished(&e.app, base.clone()).await;
    let (_, plain_bytes, _) = download(&e.app, plain["export_id"].as_str().unwrap()).await;
    let mut gz = base.clone();
    gz["performance_options"] = json!({"compression": true});
    let g = finished(&e.app, gz).await;
    assert!(g["file_name"].as_str().unwrap().ends_with(".csv.gz"), "{g}");
    let (_, gz_bytes, h) = download(&e.app, g["export_id"].as_str().unwrap()).await;
    assert_eq!(h["content-type"], "application/gzip");
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gz_bytes[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain_bytes);
    let mut z = base.clone();
    z["options"] = json!({"compression": "zip"});
    let zs = finished(&e.app, z).await;
    let (_, zip_bytes, _) = download(&e.app, zs["export_id"].as_str().unwrap()).await;
    assert_eq!(&zip_bytes[..2], b"PK");
    // No header row, a semicolon delimiter.
    let mut semi = base.clone();
    semi["options"] = json!({"include_headers": false, "delimiter": ";", "timezone": "UTC"});
    semi["fields"] = json!(["timestamp", "device_name", "power_w"]);
    let sc = finished(&e.app, semi).await;
    let (_, text, _) = download(&e.app, sc["export_id"].as_str().unwrap()).await;
    let text = String::from_utf8(text).unwrap();
    let first = text.lines().next().unwrap();
    assert_eq!(first, "2024-03-09T00:00:01.234Z;Living Room Lamp;0");
    assert_eq!(
        text.lines().count() as u64,
        sc["record_count"].as_u64().unwrap()
    );
    assert!(gz_bytes.len() < plain_bytes.len() && zip_bytes.len() < plain_bytes.len());
    e.app.stop().await;
}

pub async fn add_user(app: &TestApp, name: &str, role: &str) -> String {
    let (s, v) = {
        let r = app
            .req(Method::POST, "/api/users")
            .json(&json!({"username": name, "password": "a-long-password-1", "role": role}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(s, 201, "{v}");
    login(&app.client, &app.base, name, "a-long-password-1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_with_spec_fields_and_errors() {
    let e = env().await;
    let app = &e.app;
    let (s, v) = app.get("/api/exports/formats").await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = v["formats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["csv", "json", "excel", "pdf", "ha_statistics"]);
    assert_eq!(v["formats"][0]["mime_type"], "text/csv");
    assert_eq!(v["formats"][1]["extension"], ".json");
    assert_eq!(
        v["formats"][2]["mime_type"],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    assert_eq!(v["formats"][2]["extension"], ".xlsx");
    let (s, v) = app.get("/api/exports/devices").await;
    assert_eq!(s, 200);
    let lamp = entry(&v["devices"], "device_id", "LAMP01");
    assert_eq!(lamp["device_ip"], "127.0.0.9");
    assert_eq!(lamp["device_name"], "Living Room Lamp");
    assert_eq!(lamp["data_points"], 426);
    assert!(
        lamp["last_seen"]
            .as_str()
            .unwrap()
            .starts_with("2024-03-11")
    );
    let (s, v) = app.get("/api/exports/metrics").await;
    assert_eq!(s, 200);
    let energy = entry(&v["metrics"], "field", "energy_kwh");
    assert_eq!(energy["unit"], "kWh");
    assert!(
        energy["description"]
            .as_str()
            .unwrap()
            .contains("not cumulative")
    );
    // Static routes win over {export_id}.
    let (s, v) = app.get("/api/exports/preview?export_type=device_data&devices=127.0.0.9&start=2024-03-10&end=2024-03-10&limit=5").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["preview"].as_array().unwrap().len(), 5);
    assert_eq!(v["total_records"], 144);
    assert_eq!(v["preview_note"], "Showing first 5 records");
    assert!(v["estimated_file_size"].as_str().unwrap().ends_with("KB"));
    let r = app.req(Method::POST, "/api/exports/preview?limit=2").json(&json!({"export_type": "device_data", "format": "csv",
        "devices": ["HEATER01"], "date_range": {"start": "2024-03-10", "end": "2024-03-10"}, "aggregation": "hourly"})).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["total_records"], 24);
    assert_eq!(v["preview"].as_array().unwrap().len(), 2);
    let (s, v) = app.get("/api/exports/stats").await;
    assert_eq!((s, v["total_exports"].as_u64()), (200, Some(0)));
    let (s, v) = app.get("/api/exports/history").await;
    assert_eq!(
        (
            s,
            v["total"].as_u64(),
            v["page"].as_u64(),
            v["per_page"].as_u64()
        ),
        (200, Some(0), Some(1), Some(10))
    );
    // Create → status → history → stats → delete.
    let (s, c, _) = create(
        app,
        &app.token,
        json!({"export_type": "device_data", "format": "csv",
        "date_range": {"start": "2024-01-01", "end": "2024-01-31"}, "devices": ["127.0.0.9"],
        "fields": ["timestamp", "power_w", "energy_kwh", "cost"]}),
    )
    .await;
    assert_eq!(s, 200, "{c}");
    for k in [
        "export_id",
        "status",
        "created_at",
        "estimated_completion",
        "download_url",
    ] {
        assert!(!c[k].is_null(), "create answer has {k}: {c}");
    }
    let id = c["export_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("exp_") && id.len() >= 28, "opaque id {id}");
    assert_eq!(c["download_url"], format!("/api/exports/download/{id}"));
    let mut st = Value::Null;
    for _ in 0..100 {
        st = app.get(&format!("/api/exports/{id}")).await.1;
        if st["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(st["status"], "completed", "{st}");
    assert_eq!(st["progress"], 100);
    assert_eq!(st["record_count"], 0, "no data in January");
    assert_eq!(
        st["expires_at"], "2024-03-20T00:00:00.000Z",
        "device_data: 7 days after completion"
    );
    assert_eq!(st["checksum_sha256"].as_str().unwrap().len(), 64);
    let (_, h) = app.get("/api/exports/history?limit=1&offset=0").await;
    assert_eq!(h["total"], 1);
    assert_eq!(h["exports"][0]["export_id"], id.as_str());
    assert_eq!(h["exports"][0]["username"], "admin");
    assert_eq!(h["exports"][0]["retention_days"], 7);
    let (_, stats) = app.get("/api/exports/stats").await;
    assert_eq!(stats["total_exports"], 1);
    assert_eq!(stats["most_popular_format"], "csv");
    assert_eq!(stats["export_types"]["device_data"], 1);
    assert_eq!(stats["formats"]["csv"], 1);
    let r = app
        .req(Method::DELETE, &format!("/api/exports/{id}"))
        .send()
        .await
        .unwrap();
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["message"], "Export deleted successfully");
    assert_eq!(d["export_id"], id.as_str());
    let (s, v) = app.get(&format!("/api/exports/{id}")).await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (404, Some("EXPORT_NOT_FOUND"))
    );
    assert_eq!(
        v["message"],
        format!("Export with ID '{id}' does not exist or you don't have access")
    );
    let (s, _, _) = download(app, &id).await;
    assert_eq!(s, 404);
    // Validation errors.
    let bad = [
        (
            json!({"export_type": "device_data", "format": "csv", "date_range": {"start": "2024-02-01", "end": "2024-01-01"}}),
            400,
            "INVALID_DATE_RANGE",
        ),
        (
            json!({"export_type": "device_data", "format": "csv", "date_range": {"start": "2022-01-01", "end": "2024-01-01"}}),
            400,
            "INVALID_DATE_RANGE",
        ),
        (
            json!({"export_type": "device_data", "format": "xml"}),
            400,
            "UNSUPPORTED_FORMAT",
        ),
        (
            json!({"export_type": "device_data", "format": "csv", "fields": ["power_w", "nope"]}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            json!({"export_type": "device_data", "format": "csv", "devices": ["127.0.0.99"]}),
            404,
            "DEVICE_NOT_FOUND",
        ),
        (
            json!({"export_type": "device_data", "format": "csv", "aggregation": "yearly"}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            json!({"export_type": "device_data", "format": "csv", "options": {"timezone": "Mars/Base"}}),
            400,
            "INVALID_TIMEZONE",
        ),
        (
            json!({"export_type": "device_data", "format": "csv", "date_range": {"start": "yesterday"}}),
            400,
            "INVALID_DATE",
        ),
        (
            json!({"export_type": "device_data", "format": "csv", "custom_fields": [{"name": "x", "formula": "power_w +"}]}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            json!({"export_type": "device_data", "format": "csv", "filters": {"days_of_week": [8]}}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            json!({"export_type": "device_data", "format": "csv", "colour": "blue"}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            json!({"export_type": "nonsense", "format": "csv"}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            json!({"export_type": "device_data", "format": "csv", "options": {"delimiter": "."}}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            json!({"export_type": "device_data", "format": "csv",
                "date_range": {"start": "-200000-01-01", "end": "+200000-01-01"}}),
            400,
            "INVALID_DATE",
        ),
    ];
    for (body, status, code) in bad {
        let (s, v, _) = create(app, &app.token, body.clone()).await;
        assert_eq!(
            (s, v["error_code"].as_str()),
            (status, Some(code)),
            "{body} → {v}"
        );
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
    let (_, v, _) = create(app, &app.token, json!({"export_type": "device_data", "format": "csv", "date_range": {"start": "2024-02-01", "end": "2024-01-01"}})).await;
    assert_eq!(v["detail"], "Invalid date range");
    assert_eq!(v["message"], "Start date must be before end date");
    // No DATA_EXPORT permission: 403 with the spec body, audited.
    let viewer = add_user(app, "viewer1", "viewer").await;
    let r = app
        .req_as(Method::GET, "/api/exports/formats", &viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error_code"], "PERMISSION_DENIED");
    assert_eq!(v["required_permission"], "DATA_EXPORT");
    let (_, audit) = app.get("/api/audit?event_types=PERMISSION_DENIED").await;
    assert!(audit.to_string().contains("viewer1"), "{audit}");
    let (s, _) = app.get("/api/exports/history?limit=0").await;
    assert_eq!(s, 400);
    e.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_estimates_the_csv_size() {
    let env = env().await;
    let app = &env.app;
    // The preview's estimate is the CSV's size: exact for a few hundred rows, within 2 % past them
    // (sized from a sample of the rows).
    for (devices, days, exact) in [
        ("HEATER01", ("2024-03-10", "2024-03-10"), true),
        ("all", ("2024-03-09", "2024-03-12"), false),
    ] {
        let (s, p) = app.get(&format!("/api/exports/preview?export_type=device_data&devices={devices}&start={}&end={}&limit=1", days.0, days.1)).await;
        assert_eq!(s, 200, "{p}");
        let done = finished(
            app,
            json!({"export_type": "device_data", "format": "csv",
            "devices": [devices], "date_range": {"start": days.0, "end": days.1}}),
        )
        .await;
        assert_eq!(p["total_records"], done["record_count"]);
        let (estimate, size) = (
            p["estimated_file_size_bytes"].as_f64().unwrap(),
            done["file_size"].as_f64().unwrap(),
        );
        if exact {
            assert_eq!(estimate, size, "{p} {done}");
        } else {
            assert!(p["total_records"].as_u64().unwrap() > 600, "{p}");
            assert!((estimate / size - 1.0).abs() < 0.02, "{estimate} vs {size}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_or_fail_with_clear_errors() {
    let e = env_with(|s| s.exports.max_records_per_export = 10).await;
    let body = json!({"export_type": "device_data", "format": "csv",
        "date_range": {"start": "2024-03-09", "end": "2024-03-09"}, "performance_options": {"background_processing": false}});
    let (s, v, _) = create(&e.app, &e.app.token, body.clone()).await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "failed", "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("more than 10 records"),
        "{v}"
    );
    let (s, _, _) = download(&e.app, v["export_id"].as_str().unwrap()).await;
    assert_eq!(s, 409, "a failed export has no file");
    let (s, p) = e
        .app
        .get("/api/exports/preview?devices=LAMP01&start=2024-03-09&end=2024-03-11&limit=3")
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        (
            p["total_records"].as_u64(),
            p["total_records_capped"].as_bool()
        ),
        (Some(10), Some(true)),
        "a preview stops counting at the limit"
    );
    assert_eq!(p["preview"].as_array().unwrap().len(), 3);
    e.app.stop().await;
    let e = env_with(|s| s.exports.rate_limit_per_hour = 0).await;
    for _ in 0..12 {
        let (s, v, _) = create(&e.app, &e.app.token, body.clone()).await;
        assert_eq!(s, 200, "rate_limit_per_hour = 0 means no limit: {v}");
    }
    e.app.stop().await;
    let e = env_with(|s| s.exports.storage_quota_mb = 0).await;
    let (s, v, _) = create(&e.app, &e.app.token, body.clone()).await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (507, Some("EXPORT_QUOTA_EXCEEDED")),
        "{v}"
    );
    e.app.stop().await;
    let e = env_with(|s| s.exports.min_free_disk_mb = u64::MAX / (1 << 21)).await;
    let (s, v, _) = create(&e.app, &e.app.token, body).await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (507, Some("INSUFFICIENT_STORAGE")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("MB free"));
    e.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_only_their_exports_and_admins_see_all() {
    let e = env().await;
    let app = &e.app;
    let alice = add_user(app, "alice", "operator").await;
    let bob = add_user(app, "bob", "operator").await;
    let body = json!({"export_type": "device_data", "format": "json", "date_range": {"start": "2024-03-09", "end": "2024-03-09"},
        "performance_options": {"background_processing": false}});
    let (s, a, _) = create(app, &alice, body.clone()).await;
    assert_eq!(s, 200, "{a}");
    let id = a["export_id"].as_str().unwrap();
    for (m, path) in [
        (Method::GET, format!("/api/exports/{id}")),
        (Method::GET, format!("/api/exports/download/{id}")),
        (Method::DELETE, format!("/api/exports/{id}")),
    ] {
        let r = app.req_as(m.clone(), &path, &bob).send().await.unwrap();
        assert_eq!(r.status(), 403, "{m} {path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error_code"], "ACCESS_DENIED");
        assert_eq!(v["export_owner"], "alice");
        assert_eq!(v["detail"], "Access denied");
    }
    let hist = |t: String| {
        let app = &e.app;
        async move {
            let r = app
                .req_as(Method::GET, "/api/exports/history", &t)
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(hist(bob.clone()).await["total"], 0);
    assert_eq!(hist(alice.clone()).await["total"], 1);
    let (_, b, _) = create(app, &bob, body).await;
    assert_eq!(
        hist(app.token.clone()).await["total"],
        2,
        "the admin sees all"
    );
    let r = app
        .req_as(Method::GET, "/api/exports/stats", &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["total_exports"], 1);
    let (s, bytes, _) = download(app, id).await;
    assert_eq!(s, 200, "the admin downloads alice's export");
    assert!(!bytes.is_empty());
    let r = app
        .req(
            Method::DELETE,
            &format!("/api/exports/{}", b["export_id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the admin deletes bob's export");
    let (_, audit) = app.get("/api/audit?event_types=DATA_EXPORTED").await;
    assert!(audit.to_string().contains(id));
    let (_, audit) = app.get("/api/audit?event_types=DATA_EXPORT").await;
    assert!(audit.to_string().contains("alice"));
    e.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_rolls_over_the_hour_and_survives_a_restart() {
    let data = tempfile::tempdir().unwrap();
    fixture(data.path());
    let clock = Arc::new(ManualClock::new(NOW));
    let app = TestApp::on_data(data.path(), clock.clone(), |_| {}).await;
    let user = add_user(&app, "carol", "operator").await;
    let body = json!({"export_type": "device_data", "format": "csv", "date_range": {"start": "2024-03-09", "end": "2024-03-09"}, "devices": ["LAMP01"]});
    for i in 0..10 {
        let (s, v, _) = create(&app, &user, body.clone()).await;
        assert_eq!(s, 200, "create {i}: {v}");
        if i == 0 {
            // Deleting does not give the slot back.
            let id = v["export_id"].as_str().unwrap();
            let r = app
                .req_as(Method::DELETE, &format!("/api/exports/{id}"), &user)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        clock.advance(60_000);
    }
    let (s, v, h) = create(&app, &user, body.clone()).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error_code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(v["limit"], "10 per hour");
    assert_eq!(
        v["message"],
        "Export rate limit exceeded. Please try again later."
    );
    // The first create was at NOW; it leaves the window at NOW + 1 h; it is now NOW + 10 min.
    assert_eq!(v["retry_after"], kasad::clock::rfc3339(NOW + 3_600_000));
    assert_eq!(h["retry-after"], "3000");
    let (_, audit) = app.get("/api/audit?event_types=RATE_LIMIT_EXCEEDED").await;
    assert!(audit.to_string().contains("carol"));
    // Other users are not affected.
    let (s, _, _) = create(&app, &app.token, body.clone()).await;
    assert_eq!(s, 200);
    // A restart keeps the window.
    app.stop().await;
    let app = TestApp::on_data(data.path(), clock.clone(), |_| {}).await;
    let user = login(&app.client, &app.base, "carol", "a-long-password-1").await;
    let (s, _, _) = create(&app, &user, body.clone()).await;
    assert_eq!(s, 429, "still limited after a restart");
    clock.set(NOW + 3_600_000 + 1);
    let user = login(&app.client, &app.base, "carol", "a-long-password-1").await;
    let (s, v, _) = create(&app, &user, body.clone()).await;
    assert_eq!(s, 200, "the oldest create left the window: {v}");
    let (s, _, _) = create(&app, &user, body).await;
    assert_eq!(s, 429, "only one slot was freed");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_have_ranges_digests_etags_and_tickets() {
    let e = env().await;
    let app = &e.app;
    let st = finished(app, json!({"export_type": "device_data", "format": "csv", "date_range": {"start": "2024-03-09", "end": "2024-03-10"}})).await;
    let id = st["export_id"].as_str().unwrap();
    let (s, full, h) = download(app, id).await;
    assert_eq!(s, 200);
    assert_eq!(h["content-length"], full.len().to_string().as_str());
    assert_eq!(st["file_size"], full.len());
    let name = st["file_name"].as_str().unwrap();
    assert!(
        name.starts_with("kasad_device_data_20240309-20240310_") && name.ends_with(".csv"),
        "{name}"
    );
    assert_eq!(
        h["content-disposition"],
        format!("attachment; filename=\"{name}\"").as_str()
    );
    use sha2::Digest;
    let sha = sha2::Sha256::digest(&full);
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(st["checksum_sha256"], hex.as_str());
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(sha);
    assert_eq!(h["repr-digest"], format!("sha-256=:{b64}:").as_str());
    let etag = h["etag"].to_str().unwrap().to_owned();
    // Resume from byte 100.
    let r = app
        .req(Method::GET, &format!("/api/exports/download/{id}"))
        .header("range", "bytes=100-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 100-{}/{}", full.len() - 1, full.len()).as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), full[100..]);
    let r = app
        .req(Method::GET, &format!("/api/exports/download/{id}"))
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), full[full.len() - 10..]);
    let r = app
        .req(Method::GET, &format!("/api/exports/download/{id}"))
        .header("range", format!("bytes={}-", full.len() + 5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    let r = app
        .req(Method::GET, &format!("/api/exports/download/{id}"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // A ticket link works without a header, only for its export, and not after it expires.
    let link = st["download_link"].as_str().unwrap();
    assert!(link.contains("?ticket="));
    let r = app
        .client
        .get(format!("{}{link}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), full);
    let other = finished(app, json!({"export_type": "device_data", "format": "json", "date_range": {"start": "2024-03-09", "end": "2024-03-09"}})).await;
    let ticket = link.split("ticket=").nth(1).unwrap();
    let r = app
        .client
        .get(format!(
            "{}/api/exports/download/{}?ticket={ticket}",
            app.base,
            other["export_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a ticket is bound to its export");
    let r = app
        .client
        .get(format!("{}/api/exports/download/{id}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A password change voids the user's open tickets.
    let dave = add_user(app, "dave", "operator").await;
    let (_, d, _) = create(app, &dave, json!({"export_type": "device_data", "format": "csv",
        "date_range": {"start": "2024-03-09", "end": "2024-03-09"}, "performance_options": {"background_processing": false}})).await;
    let dave_link = d["download_link"].as_str().unwrap().to_owned();
    let get_link = |l: String| {
        let c = app.client.clone();
        let url = format!("{}{l}", app.base);
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get_link(dave_link.clone()).await, 200);
    let (_, users) = app.get("/api/users").await;
    let uid = entry(&users["users"], "username", "dave")["user_id"].clone();
    let r = app
        .req(Method::PATCH, &format!("/api/users/{uid}"))
        .json(&json!({"password": "another-long-password-2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        get_link(dave_link).await,
        401,
        "a password change voids open tickets"
    );
    // Logging out voids the tickets issued in that session.
    let erin = add_user(app, "erin", "operator").await;
    let (_, d, _) = create(app, &erin, json!({"export_type": "device_data", "format": "csv",
        "date_range": {"start": "2024-03-09", "end": "2024-03-09"}, "performance_options": {"background_processing": false}})).await;
    let erin_link = d["download_link"].as_str().unwrap().to_owned();
    assert_eq!(get_link(erin_link.clone()).await, 200);
    assert_eq!(
        app.status_as(Method::POST, "/api/auth/logout", &erin).await,
        200
    );
    assert_eq!(
        get_link(erin_link).await,
        401,
        "logout voids the session's tickets"
    );
    e.clock.advance(16 * 60_000);
    let r = app
        .client
        .get(format!("{}{link}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "tickets expire");
    e.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_expires_files_notifies_first_and_audits() {
    let mut e = env().await;
    let st = finished(&e.app, json!({"export_type": "device_data", "format": "csv", "date_range": {"start": "2024-03-09", "end": "2024-03-09"}})).await;
    let id = st["export_id"].as_str().unwrap();
    let path = e.data.path().join("exports").join(format!("{id}.csv"));
    assert!(path.exists());
    // 6 days 1 hour later: within 24 h of expiry → a notice, file kept.
    e.advance(6 * 86_400_000 + 3_600_000).await;
    let app = &e.app;
    let (s, v) = app.post("/api/exports/cleanup").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["expired"].as_u64(), v["notified"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(path.exists());
    let (s, v) = app.post("/api/exports/cleanup").await;
    assert_eq!(
        (s, v["notified"].as_u64()),
        (200, Some(0)),
        "one notice per export"
    );
    // Past expiry: download says 410 even before the sweep; the sweep deletes and audits.
    e.advance(86_400_000).await;
    let app = &e.app;
    let (s, body, _) = download(app, id).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(s, 410);
    assert_eq!(v["error_code"], "EXPORT_EXPIRED");
    assert_eq!(
        v["message"],
        "Export file has expired and is no longer available"
    );
    assert_eq!(v["expired_at"], st["expires_at"]);
    let (_, v) = app.post("/api/exports/cleanup").await;
    assert_eq!(v["expired"], 1);
    assert!(!path.exists());
    let (_, status) = app.get(&format!("/api/exports/{id}")).await;
    assert_eq!(status["status"], "expired");
    let (_, audit) = app.get("/api/audit?event_types=DATA_DELETED").await;
    assert!(audit.to_string().contains("retention"), "{audit}");
    let (_, audit) = app.get("/api/audit?event_types=EXPORT_EXPIRING").await;
    assert!(audit.to_string().contains(id));
    e.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_an_export_finishes_it_and_never_serves_a_partial_file() {
    // Enough rows that the render is still running when the daemon stops.
    let data = tempfile::tempdir().unwrap();
    {
        let store = Store::open(&data.path().join("kasad.redb"), 8).unwrap();
        let devices: Vec<(DeviceInfo, i64)> = (0..10)
            .map(|d| {
                (
                    device(
                        &format!("BIG{d}"),
                        &format!("Plug {d}"),
                        &format!("127.0.0.{}:1", 20 + d),
                    ),
                    T0,
                )
            })
            .collect();
        for chunk in 0..6 {
            let mut readings = Vec::new();
            for i in 0..20_000_i64 {
                let n = chunk * 20_000 + i;
                for d in 0..10 {
                    readings.push(Reading {
                        device_id: DeviceId::parse(&format!("BIG{d}")).unwrap(),
                        ts_ms: T0 + n * 5_000 + d,
                        power_mw: Some(1_000 + (n * 37 + d) % 900_000),
                        voltage_mv: Some(120_000),
                        current_ma: Some(100),
                        counter_wh: Some(n / 10),
                        relay_on: true,
                        rssi: None,
                    });
                }
            }
            let devs = if chunk == 0 { devices.clone() } else { vec![] };
            apply(
                &store,
                &Batch {
                    devices: devs,
                    readings,
                    days: vec![],
                },
                true,
            )
            .unwrap();
        }
    }
    let clock = Arc::new(ManualClock::new(T0 + 8 * 86_400_000));
    let tweak = |s: &mut kasad::config::Settings| {
        s.exports.max_records_per_export = 2_000_000;
        s.exports.max_concurrent_exports = 1;
    };
    let app = TestApp::on_data(data.path(), clock.clone(), tweak).await;
    let (s, c, _) = create(&app, &app.token, json!({"export_type": "device_data", "format": "json",
        "date_range": {"start": "2024-03-09", "end": "2024-03-16"}, "options": {"compression": "zip"}})).await;
    assert_eq!(s, 200, "{c}");
    let id = c["export_id"].as_str().unwrap().to_owned();
    let (_, c2, _) = create(
        &app,
        &app.token,
        json!({"export_type": "device_data", "format": "csv",
        "date_range": {"start": "2024-03-09", "end": "2024-03-09"}, "devices": ["BIG0"]}),
    )
    .await;
    let second = c2["export_id"].as_str().unwrap().to_owned();
    let mut saw_processing = false;
    for _ in 0..400 {
        let (_, st) = app.get(&format!("/api/exports/{id}")).await;
        if st["status"] == "processing" {
            saw_processing = true;
            let (_, st2) = app.get(&format!("/api/exports/{second}")).await;
            assert_eq!(
                st2["status"], "queued",
                "max_concurrent_exports = 1: the second waits"
            );
            let (s, body, _) = download(&app, &id).await;
            assert_eq!(s, 409, "no partial file while processing");
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error_code"], "EXPORT_NOT_READY");
            break;
        }
        assert_ne!(
            st["status"], "completed",
            "the export finished before the restart; make the data set larger"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(saw_processing);
    app.stop().await;
    let exports_dir = data.path().join("exports");
    let leftover: Vec<String> = file_names(&exports_dir);
    assert!(
        leftover.iter().all(|n| n.ends_with(".tmp")),
        "only a temp file may remain: {leftover:?}"
    );
    let app = TestApp::on_data(data.path(), clock.clone(), tweak).await;
    let mut st = Value::Null;
    for _ in 0..1200 {
        st = app.get(&format!("/api/exports/{id}")).await.1;
        if st["status"] == "completed" || st["status"] == "failed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(st["status"], "completed", "{st}");
    assert_eq!(st["record_count"], 1_200_000);
    for _ in 0..200 {
        if app.get(&format!("/api/exports/{second}")).await.1["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.get(&format!("/api/exports/{second}")).await.1["status"],
        "completed",
        "the queued job ran after the restart too"
    );
    let (s, bytes, _) = download(&app, &id).await;
    assert_eq!(s, 200);
    use sha2::Digest;
    let hex: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(st["checksum_sha256"], hex.as_str());
    let names: Vec<String> = file_names(&exports_dir);
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    // DELETE of a running export cancels it: no file, no record, the slot is free again.
    let (_, c3, _) = create(
        &app,
        &app.token,
        json!({"export_type": "device_data", "format": "json",
        "date_range": {"start": "2024-03-09", "end": "2024-03-16"}}),
    )
    .await;
    let third = c3["export_id"].as_str().unwrap().to_owned();
    for _ in 0..400 {
        if app.get(&format!("/api/exports/{third}")).await.1["status"] == "processing" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let r = app
        .req(Method::DELETE, &format!("/api/exports/{third}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, _) = app.get(&format!("/api/exports/{third}")).await;
    assert_eq!(s, 404);
    let (_, c4, _) = create(
        &app,
        &app.token,
        json!({"export_type": "device_data", "format": "csv",
        "date_range": {"start": "2024-03-09", "end": "2024-03-09"}, "devices": ["BIG1"],
        "performance_options": {"background_processing": false}}),
    )
    .await;
    assert_eq!(
        c4["status"], "completed",
        "the cancelled job freed its slot: {c4}"
    );
    let names: Vec<String> = file_names(&exports_dir);
    assert!(
        !names.iter().any(|n| n.contains(third.as_str())),
        "{names:?}"
    );
    app.stop().await;
}
