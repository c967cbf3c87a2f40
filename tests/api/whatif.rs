//! What-if: a month of two loads (a night storage heater, 1 kW from 00:00 to 06:00 UTC, and a
//! steady 100 W) priced under a flat and a time-of-use tariff, against totals worked out by
//! hand; per-device and per-month parts add up; the request's order is kept; bad bodies refused.

use crate::helpers::TestApp;
use kasad::clock::{ManualClock, SharedClock};
use kasad::domain::{DeviceId, Reading};
use kasad::store::Store;
use kasad::store::write::{Batch, apply};
use serde_json::{Value, json};
use std::sync::Arc;

/// 2024-03-16T00:00:00Z.
const T0: i64 = 1_710_547_200_000;
const DAYS: i64 = 30;

fn history(dir: &std::path::Path) {
    let store = Store::open(&dir.join("kasad.redb"), 16).unwrap();
    let ids = ["NIGHT01", "STEADY01"];
    let infos = ids
        .iter()
        .map(|id| (crate::helpers::plug_info(id), T0))
        .collect::<Vec<_>>();
    // Energy so far in mW × minutes, exact; the counter is its whole Wh.
    let mut acc = [0i64; 2];
    for day in 0..DAYS {
        let mut readings = Vec::new();
        for minute in 0..1_440 {
            let ts = T0 + (day * 1_440 + minute) * 60_000;
            for (k, id) in ids.iter().enumerate() {
                // The power of the minute that ends at this reading.
                let m = (minute + 1_439) % 1_440;
                let p = match k {
                    0 if m < 360 => 1_000_000,
                    0 => 0,
                    _ => 100_000,
                };
                if ts > T0 {
                    acc[k] += p;
                }
                readings.push(Reading {
                    device_id: DeviceId::parse(id).unwrap(),
                    ts_ms: ts,
                    power_mw: Some(p),
                    voltage_mv: Some(230_000),
                    current_ma: Some(p / 230),
                    counter_wh: Some(acc[k] / 60_000),
                    relay_on: true,
                    rssi: None,
                });
            }
        }
        let batch = Batch {
            devices: if day == 0 { infos.clone() } else { vec![] },
            readings,
            days: vec![],
        };
        apply(&store, &batch, true).unwrap();
    }
}

async fn app() -> (TestApp, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    history(data.path());
    let clock: SharedClock = Arc::new(ManualClock::new(T0 + 40 * 86_400_000));
    (TestApp::on_data(data.path(), clock, |_| {}).await, data)
}

async fn compare(app: &TestApp, body: String) -> (u16, Value) {
    app.post_raw("/api/tariffs/compare", body).await
}

fn cents(v: &Value) -> i64 {
    (v.as_f64().unwrap() * 100.0).round() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_and_a_time_of_use_tariff_price_a_night_heavy_month_as_worked_out_by_hand() {
    let (app, _data) = app().await;
    let tou = json!({"currency": "USD", "rates": {"type": "time_of_use", "default_price_per_kwh": 0.30,
        "periods": [{"name": "night", "start": "22:00", "end": "06:00", "price_per_kwh": 0.10}]},
        "fixed_charges": [{"name": "standing", "amount": 0.5, "per": "day"}],
        "effective_from": "2030-01-01"});
    let body = json!({"date_range": {"start": "2024-03-16", "end": "2024-04-14"},
        "tariffs": [{"name": "Flat", "tariff": {"currency": "USD", "price_per_kwh": 0.20}}, {"name": "Night saver", "tariff": tou}]});
    let (s, v) = compare(&app, body.to_string()).await;
    assert_eq!(s, 200, "{v}");
    let r = v["results"].as_array().unwrap();
    // By hand: the heater uses 6 kWh a night (180 kWh), the steady load 2.4 kWh a day (72 kWh).
    // Flat: 252 kWh × 0.20 = 50.40.
    // Night saver: 180 × 0.10 + 30 × (0.8 × 0.10 + 1.6 × 0.30) = 18.00 + 16.80, plus 30 days of
    // 0.50 standing charge = 49.80.
    assert_eq!(
        (&r[0]["name"], cents(&r[0]["total"])),
        (&json!("Flat"), 5_040)
    );
    assert_eq!(
        (&r[1]["name"], cents(&r[1]["total"])),
        (&json!("Night saver"), 4_980)
    );
    assert_eq!(
        (
            cents(&r[1]["energy_cost"]),
            cents(&r[1]["fixed_charges"]),
            cents(&r[1]["taxes"])
        ),
        (3_480, 1_500, 0)
    );
    assert_eq!(v["cheapest"], json!({"index": 1, "name": "Night saver"}));
    assert_eq!((cents(&r[0]["savings"]), cents(&r[1]["savings"])), (0, 60));
    for t in r {
        let devices: i64 = t["per_device"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| cents(&d["cost"]))
            .sum();
        let months: i64 = t["per_month"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| cents(&m["cost"]))
            .sum();
        assert_eq!(
            (devices, months),
            (cents(&t["total"]), cents(&t["total"])),
            "{t:#}"
        );
    }
    // March has 16 of the 30 days.
    let months = r[0]["per_month"].as_array().unwrap();
    assert_eq!(
        (&months[0]["month"], cents(&months[0]["cost"])),
        (&json!("2024-03"), 2_688)
    );
    assert_eq!(
        (&months[1]["month"], cents(&months[1]["cost"])),
        (&json!("2024-04"), 2_352)
    );
    let heater = r[1]["per_device"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == "NIGHT01")
        .cloned()
        .unwrap();
    assert_eq!(cents(&heater["cost"]), 1_800);
    // The order of the request is the order of the answer.
    let body = json!({"date_range": {"start": "2024-03-16", "end": "2024-04-14"},
        "tariffs": [tou, {"currency": "USD", "price_per_kwh": 0.20}], "devices": ["STEADY01"]});
    let (s, v) = compare(&app, body.to_string()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["name"], "tariff 1");
    // The steady load alone: 16.80 + 15.00 against 72 × 0.20 = 14.40.
    assert_eq!(
        (
            cents(&v["results"][0]["total"]),
            cents(&v["results"][1]["total"])
        ),
        (3_180, 1_440)
    );
    assert_eq!(v["cheapest"]["index"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_comparisons_are_refused() {
    let (app, _data) = app().await;
    let flat = json!({"price_per_kwh": 0.2});
    let range = json!({"start": "2024-03-16", "end": "2024-04-14"});
    let many =
        |n: usize| json!({"date_range": range, "tariffs": vec![flat.clone(); n]}).to_string();
    for (what, body, status) in [
        ("10,000 tariffs", many(10_000), 413),
        ("11 tariffs", many(11), 400),
        ("none", many(0), 400),
        ("malformed", "{\"tariffs\": [".to_owned(), 400),
        ("reversed", json!({"date_range": {"start": "2024-04-14", "end": "2024-03-16"}, "tariffs": [flat]}).to_string(), 400),
        ("bad tariff", json!({"date_range": range, "tariffs": [{"rates": {"type": "tiered", "tiers": []}}]}).to_string(), 400),
        ("two currencies", json!({"date_range": range, "tariffs": [flat, {"currency": "EUR", "price_per_kwh": 0.2}]}).to_string(), 400),
        ("unknown device", json!({"date_range": range, "tariffs": [flat], "devices": ["NOPE"]}).to_string(), 400),
        ("five years", json!({"date_range": {"start": "2019-01-01", "end": "2024-01-01"}, "tariffs": [flat]}).to_string(), 400),
    ] {
        let (s, v) = compare(&app, body).await;
        assert_eq!(s, status, "{what}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cost_analysis_compares_tariffs_in_a_table_and_a_chart() {
    let (app, _data) = app().await;
    let tou = json!({"rates": {"type": "time_of_use", "default_price_per_kwh": 0.30,
        "periods": [{"name": "night", "start": "22:00", "end": "06:00", "price_per_kwh": 0.10}]},
        "fixed_charges": [{"name": "standing", "amount": 0.5, "per": "day"}]});
    let body = json!({"export_type": "cost_analysis", "grouping": "monthly",
        "date_range": {"start": "2024-03-16", "end": "2024-04-14"},
        "compare_tariffs": [{"name": "Flat", "tariff": {"price_per_kwh": 0.20}}, {"name": "Night saver", "tariff": tou}]});
    let j: Value =
        serde_json::from_slice(&crate::exports::export_as(&app, &body, "json").await).unwrap();
    let part = &j["report"]["what_if"];
    let rows = part["tables"]["what_if"]["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("{j}"));
    assert_eq!(
        (
            &rows[0]["tariff"],
            cents(&rows[0]["total"]),
            cents(&rows[0]["savings"])
        ),
        (&json!("Flat"), 5_040, 0)
    );
    assert_eq!(
        (
            &rows[1]["tariff"],
            cents(&rows[1]["total"]),
            cents(&rows[1]["savings"])
        ),
        (&json!("Night saver"), 4_980, 60)
    );
    assert_eq!(
        part["charts"][0]["series"].as_array().unwrap().len(),
        2,
        "{part}"
    );
    assert_eq!(
        j["metadata"]["compare_tariffs"],
        json!(["Flat", "Night saver"])
    );
    // The same part renders in a PDF.
    let pdf = crate::exports::export_as(&app, &body, "pdf").await;
    assert!(pdf.starts_with(b"%PDF"));
    // Bad lists are refused when the export is created.
    let bad = json!({"export_type": "cost_analysis", "format": "json", "compare_tariffs": []});
    let (s, v) = app.post_raw("/api/exports/create", bad.to_string()).await;
    assert_eq!(s, 400, "{v}");
}
