//! Insights end to end: five weeks of history from the simulator's loads (a TV with standby
//! draw, a fridge whose duty drifts from a given day, a washer whose programme pauses twice)
//! and a weekly-patterned load with one doubled Tuesday, written into a data directory; the
//! daemon on it with a manual clock answers `/api/insights`.

use crate::helpers::{TestApp, plug_info};
use kasad::clock::{ManualClock, SharedClock};
use kasad::domain::{DeviceId, Reading};
use kasad::sim::load::{WASHER_PROGRAMME, WASHER_START_S};
use kasad::sim::{Load, Model, SimDevice, SimSpec};
use kasad::store::Store;
use kasad::store::write::{Batch, apply};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;

const DAY: i64 = 86_400_000;
/// 2024-04-01T00:00:00Z, a Monday.
const T0: i64 = 1_711_929_600_000;
/// 2024-05-06T00:00:00Z, a Monday: the fridge's drift starts.
const DRIFT_DAY: i64 = T0 + 35 * DAY;
/// One reading a minute.
const STEP: i64 = 60_000;

/// The four devices: (id, name, simulated load or `None` for the weekly load).
fn devices() -> Vec<(String, &'static str, Option<Load>)> {
    let spec = |i, load| SimSpec::numbered(i, Model::Hs110V4, vec![load]);
    vec![
        (spec(40, Load::Tv).device_id, "TV", Some(Load::Tv)),
        (
            spec(41, Load::Washer).device_id,
            "Washer",
            Some(Load::Washer),
        ),
        (
            spec(42, Load::Fridge).device_id,
            "Fridge",
            Some(Load::FridgeDrift {
                from_s: DRIFT_DAY / 1_000,
            }),
        ),
        ("WEEKLY01".into(), "Workshop", None),
    ]
}

/// The weekly load: 100 W on weekdays, 250 W at weekends; Tuesday 2024-04-30 at 200 W.
fn weekly_mw(ts: i64) -> i64 {
    let day = (ts - T0).div_euclid(DAY);
    match (day % 7, day) {
        (_, 29) => 200_000,
        (5 | 6, _) => 250_000,
        _ => 100_000,
    }
}

/// Writes the history from `T0` to `until` into `dir`.
fn history(dir: &std::path::Path, until: i64) {
    let store = Store::open(&dir.join("kasad.redb"), 16).unwrap();
    let list = devices();
    let mut sims: Vec<Option<SimDevice>> = list
        .iter()
        .enumerate()
        .map(|(k, (_, _, load))| {
            load.map(|l| {
                SimDevice::new(
                    SimSpec::numbered(40 + k as u32, Model::Hs110V4, vec![l]),
                    T0,
                )
            })
        })
        .collect();
    let infos = list
        .iter()
        .map(|(id, name, _)| (plug_info(id).named(*name), T0))
        .collect::<Vec<_>>();
    let mut weekly_mwh = 0i64;
    let mut t = T0;
    let mut first = true;
    while t <= until {
        let mut readings = Vec::new();
        let end = (t + DAY).min(until + 1);
        while t < end {
            for sim in sims.iter_mut().flatten() {
                readings.extend(sim.readings_at(t));
            }
            let p = weekly_mw(t);
            weekly_mwh += p * STEP / 3_600_000;
            readings.push(Reading {
                device_id: DeviceId::parse("WEEKLY01").unwrap(),
                ts_ms: t,
                power_mw: Some(p),
                voltage_mv: Some(230_000),
                current_ma: Some(p / 230),
                counter_wh: Some(weekly_mwh / 1_000),
                relay_on: true,
                rssi: Some(-50),
            });
            t += STEP;
        }
        let batch = Batch {
            devices: if first { infos.clone() } else { vec![] },
            readings,
            days: vec![],
        };
        first = false;
        apply(&store, &batch, true).unwrap();
    }
}

struct Env {
    app: TestApp,
    clock: Arc<ManualClock>,
    _data: tempfile::TempDir,
}

async fn env(now: i64, until: i64) -> Env {
    let data = tempfile::tempdir().unwrap();
    history(data.path(), until);
    let clock = Arc::new(ManualClock::new(now));
    let shared: SharedClock = clock.clone();
    let app = TestApp::on_data(data.path(), shared, |_| {}).await;
    Env {
        app,
        clock,
        _data: data,
    }
}

fn by_name<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_name"] == name)
        .unwrap_or_else(|| panic!("{name} missing: {v:#}"))
}

/// The exact energy of one washer programme, Wh: the simulator's counter is the integral of the
/// power it reports each second.
fn programme_wh(day_start_ms: i64) -> f64 {
    let s0 = day_start_ms / 1_000 + WASHER_START_S;
    let end = WASHER_PROGRAMME[WASHER_PROGRAMME.len() - 1].0;
    (0..end)
        .map(|t| Load::Washer.power_mw(spec_seed(41), s0 + t) as f64)
        .sum::<f64>()
        / 3_600_000.0
}

fn spec_seed(i: u32) -> u64 {
    SimSpec::numbered(i, Model::Hs110V4, vec![Load::Washer]).seed ^ 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_household_gets_its_insights() {
    // Sunday 2024-05-05 at noon: the day before the fridge drifts.
    let before = DRIFT_DAY - 12 * 3_600_000;
    let mut e = env(before, DRIFT_DAY + 12 * 3_600_000).await;
    let (s, v) = e.app.get("/api/insights").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["devices"].as_array().unwrap().len(), 4, "{v:#}");

    // The TV's always-on within 0.5 W of its simulated 0.5 W standby; a steady load.
    let tv = by_name(&v, "TV");
    let w = tv["always_on_w"].as_f64().unwrap();
    assert!((w - 0.5).abs() <= 0.5, "{tv:#}");
    assert_eq!(
        (tv["load_kind"].as_str(), tv["learning"].as_bool()),
        (Some("steady"), Some(false))
    );
    // A week of buckets (and the one that starts with the reading at this very minute).
    assert!(
        (168.0..=168.25).contains(&tv["basis_hours"].as_f64().unwrap()),
        "{tv:#}"
    );
    let per_year = tv["always_on_kwh_per_year"].as_f64().unwrap();
    assert!((per_year - w * 8.766).abs() < 0.01, "{tv:#}");

    // The fridge cycles normally before its drift day.
    let fridge = by_name(&v, "Fridge");
    assert_eq!(fridge["load_kind"], "cycling", "{fridge:#}");
    let c = &fridge["cycles"];
    assert_eq!(c["drifting"], false, "{fridge:#}");
    assert!(c["drift_pct"].as_f64().unwrap().abs() < 10.0, "{fridge:#}");
    assert!(
        (c["cycles_per_day"].as_f64().unwrap() - 32.0).abs() <= 1.0,
        "{fridge:#}"
    );
    assert!(
        (c["baseline_duty_pct"].as_f64().unwrap() - 33.3).abs() < 2.0,
        "{fridge:#}"
    );
    assert!(
        fridge["summary"].as_str().unwrap().ends_with("normal"),
        "{fridge:#}"
    );

    // Each washer programme (two pauses inside) is one run with the programme's energy.
    let washer = by_name(&v, "Washer");
    assert_eq!(washer["load_kind"], "programme", "{washer:#}");
    let runs = washer["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 7, "{washer:#}");
    assert_eq!(washer["runs_per_week"], 7.0);
    let last = &runs[6];
    assert!(
        last["start"]
            .as_str()
            .unwrap()
            .starts_with("2024-05-05T09:0"),
        "{last}"
    );
    assert_eq!(last["running"], false);
    let want = programme_wh(DRIFT_DAY - DAY);
    let got = last["energy_kwh"].as_f64().unwrap() * 1_000.0;
    assert!(
        (got - want).abs() <= 3.0,
        "run {got} Wh, programme {want} Wh"
    );
    assert!(
        (last["duration_minutes"].as_f64().unwrap() - 74.0).abs() <= 1.0,
        "{last}"
    );

    // The weekly load: its weekends are normal, the doubled Tuesday is not.
    let weekly = by_name(&v, "Workshop");
    let unusual = weekly["unusual_days"].as_array().unwrap();
    assert_eq!(unusual.len(), 1, "{weekly:#}");
    assert_eq!(unusual[0]["date"], "2024-04-30");
    assert_eq!(unusual[0]["direction"], "high");
    assert!((unusual[0]["typical_kwh"].as_f64().unwrap() - 2.4).abs() < 0.01);
    assert!((unusual[0]["energy_kwh"].as_f64().unwrap() - 4.8).abs() < 0.01);
    for d in ["TV", "Washer", "Fridge"] {
        assert_eq!(by_name(&v, d)["unusual_days"], json!([]), "{d}");
    }

    // The household: always-on total and the forecast of May so far.
    let total: f64 = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["always_on_w"].as_f64().unwrap())
        .sum();
    assert!(
        (v["always_on_total_w"].as_f64().unwrap() - total).abs() < 0.05,
        "{v:#}"
    );
    let f = &v["forecast"];
    assert_eq!(
        (f["period_start"].as_str(), f["period_end"].as_str()),
        (Some("2024-05-01"), Some("2024-05-31"))
    );
    let (so_far, p, low, high) = (
        f["cost_so_far"].as_f64().unwrap(),
        f["projected_cost"].as_f64().unwrap(),
        f["low"].as_f64().unwrap(),
        f["high"].as_f64().unwrap(),
    );
    assert!(
        so_far > 0.0 && low >= so_far && low <= p && p <= high && p > so_far * 4.0,
        "{f:#}"
    );
    assert_eq!(f["budget"], Value::Null);

    // One device alone; an unknown one is 404.
    let (s, one) = e
        .app
        .get(&format!(
            "/api/insights/devices/{}",
            tv["device_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!((s, &one["device_name"]), (200, &json!("TV")));
    assert_eq!(e.app.get("/api/insights/devices/NOPE").await.0, 404);

    // The drift day: the fridge's duty is up by 60 % against its 28-day baseline (a day later
    // the admin logs in again: access tokens last 15 minutes).
    e.clock.advance(DAY);
    let app = &mut e.app;
    app.token = crate::helpers::login(
        &app.client,
        &app.base,
        "admin",
        crate::helpers::ADMIN_PASSWORD,
    )
    .await;
    let (s, v) = app.get("/api/insights").await;
    assert_eq!(s, 200, "{v}");
    let fridge = by_name(&v, "Fridge");
    let c = &fridge["cycles"];
    assert_eq!(c["drifting"], true, "{fridge:#}");
    assert!(
        (c["drift_pct"].as_f64().unwrap() - 60.0).abs() < 10.0,
        "{fridge:#}"
    );
    assert_eq!(c["baseline_days"], 28);
    assert!(
        fridge["summary"]
            .as_str()
            .unwrap()
            .contains("against its usual"),
        "{fridge:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kind_and_the_budget_can_be_set_and_are_audited() {
    let now = T0 + 8 * DAY + 12 * 3_600_000;
    let e = env(now, now).await;
    let app = &e.app;
    let tv = devices()[0].0.clone();
    let patch = |body: Value| {
        let tv = tv.clone();
        async move {
            let r = app
                .req(Method::PATCH, &format!("/api/devices/{tv}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = patch(json!({"load_kind": "fridge"})).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = patch(json!({"run_threshold_w": -3})).await;
    assert_eq!(s, 400, "{v}");
    // Say the TV is a programme load that runs above 20 W: its evenings become runs.
    let (s, v) = patch(json!({"load_kind": "programme", "run_threshold_w": 20})).await;
    assert_eq!(
        (s, &v["load_kind"], &v["run_threshold_w"]),
        (200, &json!("programme"), &json!(20.0)),
        "{v}"
    );
    let (_, one) = app.get(&format!("/api/insights/devices/{tv}")).await;
    assert_eq!(
        (&one["load_kind"], &one["load_kind_source"]),
        (&json!("programme"), &json!("set"))
    );
    assert_eq!(one["run_threshold_w"], 20.0);
    assert_eq!(one["runs"].as_array().unwrap().len(), 7, "{one:#}");
    // Back to learning.
    let (s, v) = patch(json!({"load_kind": "auto", "run_threshold_w": null})).await;
    assert_eq!((s, &v["load_kind"]), (200, &json!("auto")));
    let (_, one) = app.get(&format!("/api/insights/devices/{tv}")).await;
    assert_eq!(
        (&one["load_kind"], &one["load_kind_source"]),
        (&json!("steady"), &json!("learned"))
    );

    // The budget: none, then 25, then refused nonsense.
    let (s, v) = app.get("/api/insights/settings").await;
    assert_eq!(
        (s, &v["monthly_budget"], &v["source"]),
        (200, &Value::Null, &json!("none"))
    );
    let put = |body: Value| async move {
        let r = app
            .req(Method::PUT, "/api/insights/settings")
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (s, v) = put(json!({"monthly_budget": 25.0})).await;
    assert_eq!(
        (s, &v["monthly_budget"], &v["source"]),
        (200, &json!(25.0), &json!("api")),
        "{v}"
    );
    for bad in [
        json!({"monthly_budget": -1}),
        json!({"monthly_budget": "lots"}),
        json!({"budget": 3}),
    ] {
        let (s, v) = put(bad.clone()).await;
        assert_eq!(s, 400, "{bad} → {v}");
    }
    let (_, v) = app.get("/api/insights").await;
    assert_eq!(v["forecast"]["budget"], 25.0);
    assert!(v["forecast"]["over_budget"].is_boolean());
    let (_, a) = app.get("/api/audit?event_types=SETTINGS_CHANGED").await;
    let entries = a["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{a:#}");
    assert_eq!(
        entries[0]["details"]["new"]["monthly_budget"], 25.0,
        "{a:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_alert_kinds_are_checked_once_a_day_from_the_insights() {
    let before = DRIFT_DAY - 12 * 3_600_000;
    let mut e = env(before, DRIFT_DAY + 12 * 3_600_000).await;
    let tv = devices()[0].0.clone();
    let fridge = devices()[2].0.clone();
    let r = e
        .app
        .req(Method::PUT, "/api/insights/settings")
        .json(&json!({"monthly_budget": 0.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rule = async |body: Value| e.app.alert_rule(body).await;
    let standby = rule(
        json!({"name": "TV standby", "kind": "standby_above", "threshold_w": 0.3,
        "devices": [tv], "channels": ["page"]}),
    )
    .await;
    let quiet_tv = rule(
        json!({"name": "TV standby high", "kind": "standby_above", "threshold_w": 5,
        "devices": [tv], "channels": ["page"]}),
    )
    .await;
    let drift = rule(
        json!({"name": "Fridge drift", "kind": "cycle_drift", "percent": 25,
        "devices": [fridge], "channels": ["page"]}),
    )
    .await;
    let budget =
        rule(json!({"name": "Budget", "kind": "budget_forecast", "channels": ["page"]})).await;
    let unusual =
        rule(json!({"name": "Odd day", "kind": "unusual_day", "channels": ["page"]})).await;
    e.app.two_evaluations().await;
    assert_eq!(
        e.app.alerts_of(&standby).await.len(),
        1,
        "0.5 W standby is above 0.3 W"
    );
    assert!(e.app.alerts_of(&quiet_tv).await.is_empty());
    assert!(
        e.app.alerts_of(&drift).await.is_empty(),
        "no drift before its day"
    );
    let b = e.app.alerts_of(&budget).await;
    assert_eq!(
        (b.len(), &b[0]["device_id"]),
        (1, &Value::Null),
        "the household is over 0.50: {b:?}"
    );
    assert!(
        e.app.alerts_of(&unusual).await.is_empty(),
        "yesterday (a Saturday) was usual"
    );
    // The drift day: the next daily check raises the drift.
    e.clock.advance(DAY);
    e.app.token = crate::helpers::login(
        &e.app.client,
        &e.app.base,
        "admin",
        crate::helpers::ADMIN_PASSWORD,
    )
    .await;
    e.app.two_evaluations().await;
    let d = e.app.alerts_of(&drift).await;
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0]["value"].as_f64().unwrap() > 25.0, "{d:?}");
}
