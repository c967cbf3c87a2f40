//! Tariffs and cost: hand-computed bills through the cost_analysis export (time-of-use across
//! the spring DST change in America/New_York, tiers crossed mid-month by two devices, a season
//! starting mid-month with taxes and a fixed charge, a new tariff version mid-range), device
//! rows summing to the totals, `cost` in device_data from the same engine, cost_analysis in
//! all four formats (Excel read back by openpyxl, PDF by poppler), and `GET/PUT /api/tariffs`.

use crate::exports::{add_user, export_as};
use crate::helpers::TestApp;
use crate::pdf::poppler;
use chrono::TimeZone;
use kasad::clock::{ManualClock, SharedClock};
use kasad::domain::{DeviceId, Reading};
use kasad::store::Store;
use kasad::store::write::{Batch, apply};
use kasad::tariff::Tariff;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

const QUARTER: i64 = 900_000;

/// Devices drawing constant power (watts, a multiple of 4), read exactly every 15 minutes
/// from `from` to `to` (UTC ms): every bucket holds watts / 4 Wh.
fn seed(dir: &Path, devices: &[(&str, i64)], from: i64, to: i64, tariffs: &[Tariff]) {
    let store = Store::open(&dir.join("kasad.redb"), 8).unwrap();
    let infos = devices
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let mut d = crate::helpers::plug_info(&format!("DEV{i}"));
            d.name = (*name).into();
            d.address = format!("127.0.0.{}:1", 30 + i);
            (d, from)
        })
        .collect();
    let mut readings = Vec::new();
    let mut k = 0;
    let mut t = from;
    while t <= to {
        for (i, (_, watts)) in devices.iter().enumerate() {
            readings.push(Reading {
                device_id: DeviceId::parse(&format!("DEV{i}")).unwrap(),
                ts_ms: t,
                power_mw: Some(watts * 1000),
                voltage_mv: Some(230_000),
                current_ma: Some(watts * 1000 / 230),
                counter_wh: Some(k * watts / 4),
                relay_on: true,
                rssi: Some(-50),
            });
        }
        k += 1;
        t += QUARTER;
    }
    apply(
        &store,
        &Batch {
            devices: infos,
            readings,
            days: vec![],
        },
        true,
    )
    .unwrap();
    if let Some((first, rest)) = tariffs.split_first() {
        store.tariffs_seed(first).unwrap();
        for t in rest {
            store
                .tariff_append(t, |_| Ok::<(), String>(()), None)
                .unwrap()
                .unwrap();
        }
    }
}

fn tariff(v: Value) -> Tariff {
    serde_json::from_value(v).unwrap()
}

fn utc(y: i32, m: u32, d: u32) -> i64 {
    chrono::Utc
        .with_ymd_and_hms(y, m, d, 0, 0, 0)
        .unwrap()
        .timestamp_millis()
}

async fn app(dir: &Path, zone: &str, now: i64) -> TestApp {
    let clock: SharedClock = Arc::new(ManualClock::new(now));
    let zone = zone.to_owned();
    TestApp::on_data(dir, clock, move |s| {
        s.exports.rate_limit_per_hour = 1000;
        s.timezone = zone.parse().unwrap();
    })
    .await
}

/// The cost_analysis of `range` as JSON.
async fn analysis(app: &TestApp, range: (&str, &str), extra: Value) -> Value {
    let mut body = json!({"export_type": "cost_analysis", "grouping": "monthly",
        "breakdown_by": ["device", "time_of_use", "rate_tier"],
        "date_range": {"start": range.0, "end": range.1}});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    serde_json::from_slice(&export_as(app, &body, "json").await).unwrap()
}

fn table<'a>(j: &'a Value, part: &str, t: &str) -> &'a Vec<Value> {
    j["report"][part]["tables"][t]["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no {part}.{t} in {j}"))
}

fn totals(j: &Value) -> &Value {
    &table(j, "summary", "totals")[0]
}

fn find<'a>(rows: &'a [Value], key: &str, value: &str) -> &'a Value {
    rows.iter()
        .find(|r| r[key] == value)
        .unwrap_or_else(|| panic!("no {key}={value} in {rows:?}"))
}

/// Money columns of `rows` add up to the total's.
fn rows_sum_to(rows: &[Value], column: &str, total: f64) {
    let sum: f64 = rows.iter().map(|r| r[column].as_f64().unwrap()).sum();
    assert!(
        (sum - total).abs() < 1e-9,
        "{column}: rows {sum} ≠ total {total}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_of_use_across_the_spring_dst_change_is_billed_by_local_clock() {
    let data = tempfile::tempdir().unwrap();
    // 1 kW from 28 Feb to 2 Apr; peak 16:00–21:00 on weekdays at 0.30, else 0.10.
    let t = tariff(json!({"currency": "USD", "rates": {"type": "time_of_use",
        "default_price_per_kwh": 0.10,
        "periods": [{"name": "peak", "days": [1, 2, 3, 4, 5], "start": "16:00", "end": "21:00",
                     "price_per_kwh": 0.30}]}}));
    seed(
        data.path(),
        &[("Freezer", 1000)],
        utc(2024, 2, 28),
        utc(2024, 4, 2),
        &[t],
    );
    let app = app(data.path(), "America/New_York", utc(2024, 5, 1)).await;
    let j = analysis(&app, ("2024-03-01", "2024-03-31"), json!({})).await;
    // March 2024 in New York has 743 hours (10 March has 23); 21 weekdays × 5 peak hours.
    let tot = totals(&j);
    assert_eq!(tot["energy"], 743.0);
    assert_eq!(tot["energy_cost"], 95.3, "105 kWh × 0.30 + 638 kWh × 0.10");
    assert_eq!(tot["total"], 95.3);
    let bands = table(&j, "time_of_use", "by_band");
    assert_eq!(find(bands, "band", "peak")["energy"], 105.0);
    assert_eq!(find(bands, "band", "peak")["cost"], 31.5);
    assert_eq!(find(bands, "band", "off_peak")["energy"], 638.0);
    assert_eq!(find(bands, "band", "off_peak")["cost"], 63.8);
    // device_data's cost comes from the same engine: 10 March (Sunday, 23 h) is all off-peak,
    // 11 March (Monday) has 5 peak hours.
    let daily = export_as(
        &app,
        &json!({"export_type": "device_data", "aggregation": "daily", "fields": ["timestamp", "energy_kwh", "cost"],
                "date_range": {"start": "2024-03-10", "end": "2024-03-11"}}),
        "csv",
    )
    .await;
    let text = String::from_utf8(daily).unwrap();
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(lines[0], "2024-03-10T00:00:00-05:00,23,2.3", "{text}");
    assert_eq!(lines[1], "2024-03-11T00:00:00-04:00,24,3.4", "{text}");
    // Raw readings too, each at the price of the quarter hour its energy was used in: the
    // 21:00 reading closes a peak quarter hour, the 21:15 one an off-peak one.
    let raw = export_as(
        &app,
        &json!({"export_type": "device_data", "fields": ["timestamp", "energy_kwh", "cost"],
                "date_range": {"start": "2024-03-11T21:00:00-04:00", "end": "2024-03-11T21:15:00-04:00"}}),
        "csv",
    )
    .await;
    let text = String::from_utf8(raw).unwrap();
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "2024-03-11T21:00:00.000-04:00,0.25,0.075",
            "2024-03-11T21:15:00.000-04:00,0.25,0.025"
        ],
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_crossed_mid_month_are_shared_by_the_devices_energy_in_every_format() {
    let data = tempfile::tempdir().unwrap();
    let t = tariff(
        json!({"currency": "EUR", "symbol": "€", "timezone": "UTC", "rates": {"type": "tiered",
        "tiers": [{"up_to_kwh": 100, "price_per_kwh": 0.10}, {"price_per_kwh": 0.20}]}}),
    );
    seed(
        data.path(),
        &[("Heat pump", 2000), ("Boiler", 1000)],
        utc(2024, 5, 31) - 3_600_000,
        utc(2024, 7, 1) + 3_600_000,
        &[t],
    );
    let app = app(data.path(), "UTC", utc(2024, 8, 1)).await;
    let j = analysis(&app, ("2024-06-01", "2024-06-30"), json!({})).await;
    // 3 kW × 720 h = 2160 kWh: 100 kWh × 0.10 + 2060 kWh × 0.20.
    let tot = totals(&j);
    assert_eq!(tot["energy"], 2160.0);
    assert_eq!(tot["energy_cost"], 422.0);
    let tiers = table(&j, "rate_tier", "by_tier");
    assert_eq!(tiers[0]["energy"], 100.0, "{tiers:?}");
    assert_eq!(tiers[0]["cost"], 10.0);
    assert_eq!(tiers[1]["energy"], 2060.0);
    assert_eq!(tiers[1]["cost"], 412.0);
    // Shared by energy: the heat pump draws two thirds.
    let devices = table(&j, "cost_by_period", "by_device");
    assert_eq!(find(devices, "device", "Heat pump")["cost"], 281.33);
    assert_eq!(find(devices, "device", "Boiler")["cost"], 140.67);
    rows_sum_to(devices, "cost", 422.0);
    rows_sum_to(table(&j, "cost_by_period", "by_period"), "cost", 422.0);
    // A range starting mid-month still knows the tier reached before it: from 10 June on,
    // everything is in tier 2.
    let late = analysis(&app, ("2024-06-10", "2024-06-30"), json!({})).await;
    assert_eq!(
        totals(&late)["energy_cost"],
        302.4,
        "21 days × 72 kWh × 0.20"
    );

    // The same analysis in CSV, Excel and PDF.
    let body = json!({"export_type": "cost_analysis", "grouping": "monthly",
        "breakdown_by": ["device", "rate_tier"], "include_charts": true,
        "date_range": {"start": "2024-06-01", "end": "2024-06-30"}});
    let csv = String::from_utf8(export_as(&app, &body, "csv").await).unwrap();
    assert!(csv.contains("summary,totals,,,total,422,EUR\r\n"), "{csv}");
    assert!(csv.contains("cost_by_period,by_device,Heat pump,,cost,281.33,EUR\r\n"));
    let book = crate::excel::dump(&export_as(&app, &body, "excel").await);
    let sheet = &book["cells"]["Cost per device"];
    assert_eq!(sheet[0][4]["s"], "cost (EUR)");
    let pump = sheet
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0]["s"] == "Heat pump")
        .unwrap();
    assert_eq!(pump[4]["n"], 281.33);
    let charts = book["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 1, "{charts:?}");
    assert_eq!(charts[0]["series"].as_array().unwrap().len(), 2);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.pdf");
    std::fs::write(&file, export_as(&app, &body, "pdf").await).unwrap();
    let text = poppler("pdftotext", &["-layout"], &file);
    for t in [
        "Cost analysis",
        "Totals",
        "422",
        "281.33",
        "140.67",
        "tier 2",
        "(EUR €)",
    ] {
        assert!(text.contains(t), "{t:?} not in the PDF: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seasons_taxes_fixed_charges_and_a_new_version_mid_range() {
    let data = tempfile::tempdir().unwrap();
    // Summer from 15 June at 0.25 instead of 0.10; 10 % tax; 10.00 a billing month.
    let summer = tariff(
        json!({"currency": "USD", "timezone": "UTC", "price_per_kwh": 0.10,
        "seasons": [{"name": "summer", "start": "06-15", "end": "09-14",
                     "rates": {"type": "flat", "price_per_kwh": 0.25}}],
        "taxes": [{"name": "VAT", "percent": 10}],
        "fixed_charges": [{"name": "service", "amount": 10, "per": "month"}]}),
    );
    seed(
        data.path(),
        &[("Pool pump", 1000)],
        utc(2024, 5, 31),
        utc(2024, 7, 1) + 3_600_000,
        &[summer],
    );
    let app1 = app(data.path(), "UTC", utc(2024, 8, 1)).await;
    let j = analysis(&app1, ("2024-06-01", "2024-06-30"), json!({})).await;
    let tot = totals(&j);
    // 14 days × 24 kWh × 0.10 + 16 days × 24 kWh × 0.25 = 129.60; tax 12.96 + 1.00.
    assert_eq!(tot["energy_cost"], 129.6);
    assert_eq!(tot["fixed_charges"], 10.0);
    assert_eq!(tot["taxes"], 13.96);
    assert_eq!(tot["total"], 153.56);
    let bands = table(&j, "time_of_use", "by_band");
    assert_eq!(find(bands, "band", "summer")["energy_cost"], 96.0);
    drop(app1);

    // A second tariff from 16 July: 0.10 + 0.50 a day, then 0.20 + 10.00 a month.
    let data = tempfile::tempdir().unwrap();
    let v1 = tariff(
        json!({"currency": "USD", "timezone": "UTC", "price_per_kwh": 0.10,
        "fixed_charges": [{"name": "daily", "amount": 0.5, "per": "day"}]}),
    );
    let v2 = tariff(
        json!({"currency": "USD", "timezone": "UTC", "price_per_kwh": 0.20,
        "effective_from": "2024-07-16",
        "fixed_charges": [{"name": "monthly", "amount": 10, "per": "month"}]}),
    );
    seed(
        data.path(),
        &[("Fridge", 1000)],
        utc(2024, 6, 30),
        utc(2024, 8, 1) + 3_600_000,
        &[v1, v2],
    );
    let app2 = app(data.path(), "UTC", utc(2024, 9, 1)).await;
    let j = analysis(&app2, ("2024-07-01", "2024-07-31"), json!({})).await;
    let tot = totals(&j);
    // 15 days at 0.10, 16 at 0.20; 15 × 0.50 + 16/31 × 10.00 = 12.66.
    assert_eq!(tot["energy_cost"], 112.8);
    assert_eq!(tot["fixed_charges"], 12.66);
    assert_eq!(tot["total"], 125.46);
    let fixed = table(&j, "summary", "fixed_charges");
    assert_eq!(find(fixed, "charge", "daily")["amount"], 7.5);
    assert_eq!(find(fixed, "charge", "monthly")["amount"], 5.16);
    assert_eq!(table(&j, "summary", "tariffs").len(), 2);
    let daily = export_as(
        &app2,
        &json!({"export_type": "device_data", "aggregation": "daily", "fields": ["timestamp", "cost"],
                "date_range": {"start": "2024-07-15", "end": "2024-07-16"}}),
        "csv",
    )
    .await;
    let text = String::from_utf8(daily).unwrap();
    assert!(
        text.contains("2024-07-15T00:00:00Z,2.4\r\n")
            && text.contains("2024-07-16T00:00:00Z,4.8\r\n"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tariffs_are_versioned_through_the_api_and_audited() {
    let data = tempfile::tempdir().unwrap();
    seed(
        data.path(),
        &[("Lamp", 100)],
        utc(2024, 6, 1),
        utc(2024, 6, 2),
        &[],
    );
    let app = app(data.path(), "UTC", utc(2024, 6, 10)).await;
    let (s, v) = app.get("/api/tariffs").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["versions"].as_array().unwrap().len(),
        1,
        "seeded from the config"
    );
    assert_eq!(v["versions"][0]["tariff"]["price_per_kwh"], 0.15);
    let put = |body: Value| app.req(Method::PUT, "/api/tariffs").json(&body).send();
    // Past prices never change; invalid tariffs name the field.
    for (body, needle) in [
        (
            json!({"price_per_kwh": 0.2, "currency": "USD", "effective_from": "2024-06-01"}),
            "must not be in the past",
        ),
        (
            json!({"price_per_kwh": 0.2, "currency": "EUR", "effective_from": "2024-07-01"}),
            "currency: stays USD",
        ),
        (
            json!({"price_per_kwh": 0.2, "currency": "USD"}),
            "effective_from",
        ),
        (
            json!({"price_per_kwh": 0.2, "currency": "USD", "effective_from": "2024-07-01", "billing_day": 31}),
            "billing_day",
        ),
        (
            json!({"price_per_kwh": -1, "currency": "USD", "effective_from": "2024-07-01"}),
            "price_per_kwh",
        ),
        (
            json!({"currency": "USD", "effective_from": "2024-07-01", "rates": {"type": "time_of_use",
            "default_price_per_kwh": 0.1, "periods": [{"name": "x", "start": "25:00", "end": "02:00", "price_per_kwh": 1}]}}),
            "rates.periods[0].start",
        ),
    ] {
        let r = put(body.clone()).await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["message"].as_str().unwrap().contains(needle), "{v}");
    }
    let r = put(json!({"price_per_kwh": 0.3, "currency": "USD", "effective_from": "2024-07-01"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["versions"].as_array().unwrap().len(), 2);
    assert_eq!(
        v["versions"][1]["effective_from"],
        "2024-07-01T00:00:00.000Z"
    );
    assert_eq!(v["in_force"], 1, "the new prices start in July");
    // Stored with its zone written out: a later change of the daemon's zone cannot move it.
    assert_eq!(v["versions"][1]["tariff"]["timezone"], "UTC");
    let (_, audit) = app.get("/api/audit?event_types=TARIFF_CHANGED").await;
    let text = audit.to_string();
    assert!(
        text.contains("TARIFF_CHANGED") && text.contains("2024-07-01"),
        "{audit}"
    );
    // Without SYSTEM_CONFIG: 403.
    let token = add_user(&app, "viewer1", "viewer").await;
    let r = app
        .req_as(Method::GET, "/api/tariffs", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

/// `GET /api/devices/live` (the device cards): newest power and today's energy and cost in the
/// daemon's zone, taxes included, from the same engine as the exports.
#[tokio::test]
async fn the_device_cards_show_todays_energy_and_cost_in_the_daemons_zone() {
    let data = tempfile::tempdir().unwrap();
    let vat = tariff(
        json!({"currency": "EUR", "timezone": "Europe/Berlin", "price_per_kwh": 0.30,
        "taxes": [{"name": "VAT", "percent": 10}]}),
    );
    // 10:00 in Berlin: today began at 23:00 UTC yesterday, ten hours ago.
    let now = utc(2024, 3, 10) + 9 * 3_600_000;
    seed(
        data.path(),
        &[("Heater", 1000), ("Lamp", 40)],
        utc(2024, 3, 9),
        now,
        &[vat],
    );
    let app = app(data.path(), "Europe/Berlin", now).await;
    let (s, v) = app.get("/api/devices/live").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["timezone"], "Europe/Berlin");
    assert_eq!(v["day_start"], "2024-03-09T23:00:00.000Z");
    assert_eq!(v["currency"], "EUR");
    let dev = |id: &str| {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["device_id"] == id)
            .unwrap_or_else(|| panic!("{id} in {v}"))
            .clone()
    };
    let heater = dev("DEV0");
    assert_eq!(heater["power_w"], 1000.0);
    assert_eq!(heater["is_on"], true);
    assert_eq!(heater["reading_at"], "2024-03-10T09:00:00.000Z");
    // 10 h × 1 kW at 0.30 + 10 % VAT; 10 h × 40 W = 0.4 kWh → 0.132 → 0.13.
    assert_eq!(heater["today_energy_kwh"], 10.0);
    assert_eq!(heater["today_cost"], 3.3);
    let lamp = dev("DEV1");
    assert_eq!(lamp["today_energy_kwh"], 0.4);
    assert_eq!(lamp["today_cost"], 0.13);
    app.stop().await;
}
