//! Provenance of every kWh: measured, backfilled, spread and imported energy in the store, the
//! migration of a database written before provenance, the readings API and exports.

use crate::exports::export_as;
use crate::helpers::TestApp;
use kasad::clock::{ManualClock, SharedClock};
use kasad::domain::provenance::Source;
use kasad::domain::{DailyEnergy, DeviceId, Reading};
use kasad::store::Store;
use kasad::store::write::{Batch, apply};
use serde_json::{Value, json};
use std::sync::Arc;

const T0: i64 = 1_764_028_800_000; // 2025-11-25T00:00:00Z
const MIN: i64 = 60_000;
const H: i64 = 3_600_000;

fn id(s: &str) -> DeviceId {
    DeviceId::parse(s).unwrap()
}

fn reading(d: &str, ts_ms: i64, counter_wh: i64) -> Reading {
    Reading {
        device_id: id(d),
        ts_ms,
        power_mw: Some(60_000),
        voltage_mv: Some(230_000),
        current_ma: Some(260),
        counter_wh: Some(counter_wh),
        relay_on: true,
        rssi: None,
    }
}

fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("k.redb"), 8).unwrap();
    (store, dir)
}

fn batch(readings: Vec<Reading>, days: Vec<DailyEnergy>) -> Batch {
    Batch {
        devices: vec![(crate::helpers::plug_info("P1"), T0 - 2 * H)],
        readings,
        days,
    }
}

#[test]
fn readings_a_minute_apart_are_measured() {
    let (store, _d) = store();
    let rs = (0..=60)
        .map(|m| reading("P1", T0 + m * MIN, 100 + m))
        .collect();
    apply(&store, &batch(rs, vec![]), true).unwrap();
    let buckets = store.buckets(&id("P1"), 0, i64::MAX).unwrap();
    assert_eq!(buckets.iter().map(|b| b.energy_mwh).sum::<i64>(), 60_000);
    assert!(buckets.iter().all(|b| b.unmeasured.is_measured()));
    assert!(
        store
            .readings(&id("P1"), 0, i64::MAX, 100)
            .unwrap()
            .iter()
            .all(|r| !r.imported)
    );
}

#[test]
fn a_gap_without_day_totals_is_spread_and_with_them_backfilled() {
    let (store, _d) = store();
    // 10 minutes measured, 3 hours away (12 Wh), 10 minutes measured.
    let mut rs: Vec<Reading> = (0..=10).map(|m| reading("P1", T0 + m * MIN, m)).collect();
    rs.extend((0..=10).map(|m| reading("P1", T0 + 190 * MIN + m * MIN, 22 + m)));
    apply(&store, &batch(rs, vec![]), true).unwrap();
    let buckets = store.buckets(&id("P1"), 0, i64::MAX).unwrap();
    let spread: Vec<_> = buckets
        .iter()
        .filter(|b| !b.unmeasured.is_measured())
        .collect();
    // (00:10, 03:10] spans the buckets from 00:00 to 03:00.
    assert_eq!(spread.len(), 13, "{}", buckets.len());
    assert!(
        spread
            .iter()
            .all(|b| b.unmeasured.single() == Some(Source::Spread))
    );
    assert_eq!(
        spread.iter().map(|b| b.unmeasured.spread_mwh).sum::<i64>(),
        12_000
    );
    // The first bucket holds 10 measured Wh and a third of an hour-bucket of the gap.
    let first = &buckets[0];
    assert_eq!(first.energy_mwh, 10_000 + first.unmeasured.spread_mwh);
    assert!(first.unmeasured.measured_share(first.energy_mwh) > 0.9);
    // Wholly inside the gap: nothing measured.
    assert_eq!(
        buckets[4].unmeasured.measured_share(buckets[4].energy_mwh),
        0.0
    );

    // Back after a day away, with the device's day totals: the gap is backfilled.
    let (store, _d) = self::store();
    apply(
        &store,
        &batch(
            vec![
                reading("P1", T0 - H, 9_000),
                reading("P1", T0 - H + MIN, 9_001),
            ],
            vec![],
        ),
        true,
    )
    .unwrap();
    let at = T0 + 30 * H;
    let back = Batch {
        devices: vec![],
        readings: vec![reading("P1", at, 10_801)],
        days: vec![DailyEnergy {
            device_id: id("P1"),
            at_ms: at,
            days: vec![(T0 - 24 * H, 60), (T0, 1_500), (T0 + 24 * H, 300)],
        }],
    };
    apply(&store, &back, true).unwrap();
    let buckets = store.buckets(&id("P1"), T0 - H, i64::MAX).unwrap();
    let backfilled: i64 = buckets.iter().map(|b| b.unmeasured.backfilled_mwh).sum();
    let energy: i64 = buckets.iter().map(|b| b.energy_mwh).sum();
    assert_eq!(backfilled, 1_800_000);
    assert_eq!(energy, 1_801_000, "and the one measured Wh");
    assert!(
        buckets
            .iter()
            .filter(|b| b.start_ms >= T0 && b.start_ms < at)
            .all(|b| b.unmeasured.single() == Some(Source::Backfilled))
    );
    // Shaped by the day totals, not in proportion to time: even within a day, not across.
    let q = |t: i64| buckets.iter().find(|b| b.start_ms == t).unwrap().energy_mwh;
    assert!((q(T0 + 12 * H) - q(T0 + 2 * H)).abs() <= 1);
    assert!(q(T0 + 12 * H) > q(T0 + 25 * H) + 1_000);
}

#[test]
fn imported_history_is_imported_before_and_after_what_kasad_measured() {
    let (store, _d) = store();
    let rs = (0..=20)
        .map(|m| reading("P1", T0 + 60 * MIN + m * MIN, 500 + m))
        .collect();
    apply(&store, &batch(rs, vec![]), true).unwrap();
    // Another tool's history: an hour before and an hour after.
    let history: Vec<_> = (0..60)
        .map(|m| reading("P1", T0 + m * MIN, 440 + m))
        .chain((0..60).map(|m| reading("P1", T0 + 81 * MIN + m * MIN, 521 + m)))
        .map(Ok)
        .collect();
    let info = crate::helpers::plug_info("P1");
    let done = store.import_history(&info, history).unwrap();
    assert_eq!((done.before, done.after), (60, 60));
    let rows = store.readings(&id("P1"), 0, i64::MAX, 1000).unwrap();
    let imported: Vec<bool> = rows.iter().map(|r| r.imported).collect();
    assert_eq!(imported.iter().filter(|i| **i).count(), 120);
    assert!(
        rows[60..81].iter().all(|r| !r.imported),
        "kasad's own stay measured"
    );
    let buckets = store.buckets(&id("P1"), 0, i64::MAX).unwrap();
    let early = &buckets[0];
    assert_eq!(early.unmeasured.single(), Some(Source::Imported));
    assert_eq!(early.unmeasured.imported_mwh, early.energy_mwh);
    let mid = buckets
        .iter()
        .find(|b| b.start_ms == T0 + 60 * MIN)
        .unwrap();
    assert!(mid.unmeasured.is_measured(), "{mid:?}");
    // Where kasad's readings end and the import's begin, the bucket is mixed.
    let edge = buckets
        .iter()
        .find(|b| b.start_ms == T0 + 75 * MIN)
        .unwrap();
    let share = edge.unmeasured.measured_share(edge.energy_mwh);
    assert!(share > 0.0 && share < 1.0, "{edge:?}");
    let late = buckets
        .iter()
        .find(|b| b.start_ms == T0 + 120 * MIN)
        .unwrap();
    assert_eq!(late.unmeasured.single(), Some(Source::Imported));
}

/// 2024-03-10T00:00:00Z, the day of the schema 13 fixture.
const F0: i64 = 1_710_028_800_000;

fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kasad-v13.redb"),
        dir.path().join("kasad.redb"),
    )
    .unwrap();
    dir
}

#[test]
fn a_schema_13_database_migrates_to_what_the_store_can_tell() {
    let dir = fixture_copy();
    let store = Store::open(&dir.path().join("kasad.redb"), 8).unwrap();
    assert_eq!(store.ping().unwrap(), kasad::store::schema::SCHEMA_VERSION);
    // The lamp: no readings after 02:00 until 04:00. The buckets from 02:15 lie wholly in
    // the gap: spread. The 02:00 bucket holds the reading at 02:00 and the gap's first quarter
    // hour: a bucket at a gap's edge cannot be told from a measured one afterwards.
    let lamp = store.buckets(&id("LAMP01"), 0, i64::MAX).unwrap();
    assert_eq!(lamp.iter().map(|b| b.energy_mwh).sum::<i64>(), 360_000);
    let gap: Vec<_> = lamp
        .iter()
        .filter(|b| b.start_ms > F0 + 2 * H && b.start_ms < F0 + 4 * H)
        .collect();
    assert_eq!(gap.len(), 7);
    for b in &gap {
        assert_eq!(b.unmeasured.single(), Some(Source::Spread), "{b:?}");
        assert_eq!(b.unmeasured.spread_mwh, b.energy_mwh);
        assert_eq!(b.energy_mwh, 15_000);
    }
    assert!(
        lamp.iter()
            .filter(|b| b.start_ms <= F0 + 2 * H || b.start_ms >= F0 + 4 * H)
            .all(|b| b.unmeasured.is_measured())
    );
    // The heater came back with its day totals; which way its gap was filled cannot be told
    // afterwards: its buckets in the gap are marked spread too.
    let heater = store
        .buckets(&id("HEATER01"), F0 + 2 * H + 1, F0 + 4 * H)
        .unwrap();
    assert!(
        heater
            .iter()
            .all(|b| b.unmeasured.single() == Some(Source::Spread))
    );
    // The device a kasa-monitor import created: all of it imported, raw rows included.
    let km = id("km-192-168-1-50");
    let kb = store.buckets(&km, 0, i64::MAX).unwrap();
    assert!(!kb.is_empty());
    assert!(
        kb.iter()
            .all(|b| b.unmeasured.single() == Some(Source::Imported))
    );
    let rows = store.readings(&km, 0, i64::MAX, 1000).unwrap();
    assert_eq!(rows.len(), 120);
    assert!(rows.iter().all(|r| r.imported));
    // Nothing lost: every reading is still there.
    let lamp_rows = store.readings(&id("LAMP01"), 0, i64::MAX, 1000).unwrap();
    assert_eq!(lamp_rows.len(), 361 - 119);
    assert!(lamp_rows.iter().all(|r| !r.imported));
    let report = store.verify_data().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

async fn fixture_app() -> (TestApp, tempfile::TempDir) {
    let dir = fixture_copy();
    let clock: SharedClock = Arc::new(ManualClock::new(F0 + 24 * H));
    let app = TestApp::on_data(dir.path(), clock, |s| {
        s.exports.rate_limit_per_hour = 1000;
    })
    .await;
    (app, dir)
}

#[tokio::test]
async fn the_readings_api_says_how_each_reading_and_bucket_was_obtained() {
    let (app, _d) = fixture_app().await;
    let (s, v) = app
        .get("/api/devices/LAMP01/readings?start=2024-03-10T00:00:00Z&end=2024-03-10T06:00:00Z&resolution=hour")
        .await;
    assert_eq!(s, 200, "{v}");
    let q: Vec<(String, f64)> = v["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["quality"].as_str().unwrap().to_owned(),
                r["measured_share"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(q[0], ("measured".into(), 1.0));
    assert_eq!(q[2], ("mixed".into(), 0.25));
    assert_eq!(q[3], ("mixed".into(), 0.0));
    assert_eq!(q[4], ("measured".into(), 1.0));
    let (s, v) = app
        .get("/api/devices/km-192-168-1-50/readings?start=2024-03-10T00:00:00Z&end=2024-03-10T01:00:00Z")
        .await;
    assert_eq!(s, 200, "{v}");
    let raw = v["readings"].as_array().unwrap();
    assert_eq!(raw.len(), 60);
    assert!(raw.iter().all(|r| r["quality"] == "imported"), "{}", raw[0]);
    assert!(raw[0].get("measured_share").is_none(), "rollups only");
    let (_, v) = app
        .get("/api/devices/LAMP01/readings?start=2024-03-10T00:00:00Z&end=2024-03-10T00:05:00Z")
        .await;
    assert_eq!(v["readings"][1]["quality"], "measured");
    app.stop().await;
}

fn csv_rows(bytes: &[u8]) -> Vec<Vec<String>> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

#[tokio::test]
async fn exports_carry_quality_and_the_measured_share() {
    let (app, _d) = fixture_app().await;
    let body = json!({
        "export_type": "device_data",
        "devices": ["LAMP01"],
        "date_range": {"start": "2024-03-10T00:00:00Z", "end": "2024-03-10T06:00:00Z"},
        "aggregation": "hourly",
        "fields": ["timestamp", "energy_kwh", "quality", "measured_share"],
        "options": {"timezone": "UTC"},
    });
    let rows = csv_rows(&export_as(&app, &body, "csv").await);
    assert_eq!(
        rows[0],
        ["timestamp", "energy_kwh", "quality", "measured_share"]
    );
    assert_eq!(rows[1][2..], ["measured", "1"]);
    assert_eq!(rows[3][1..], ["0.06", "mixed", "0.25"]);
    assert_eq!(rows[4][1..], ["0.06", "mixed", "0"]);
    assert_eq!(rows[5][2..], ["measured", "1"]);
    // Daily: 105 of the lamp's 360 Wh lay in the buckets wholly in the gap.
    let mut daily = body.clone();
    daily["aggregation"] = json!("daily");
    let json = export_as(&app, &daily, "json").await;
    let v: Value = serde_json::from_slice(&json).unwrap();
    let row = &v["data"][0];
    assert_eq!(row["quality"], "mixed", "{v}");
    assert!(
        (row["measured_share"].as_f64().unwrap() - 255.0 / 360.0).abs() < 1e-4,
        "{row}"
    );
    // Raw rows: their source; the share is refused for them.
    let raw = json!({
        "export_type": "device_data",
        "devices": ["km-192-168-1-50", "LAMP01"],
        "date_range": {"start": "2024-03-10T00:00:00Z", "end": "2024-03-10T00:03:00Z"},
        "fields": ["device_id", "quality"],
        "options": {"timezone": "UTC"},
    });
    let rows = csv_rows(&export_as(&app, &raw, "csv").await);
    let of = |d: &str| -> Vec<&str> {
        rows.iter()
            .filter(|r| r[0] == d)
            .map(|r| r[1].as_str())
            .collect()
    };
    assert_eq!(of("km-192-168-1-50"), ["imported"; 4]);
    assert_eq!(of("LAMP01"), ["measured"; 4]);
    let mut bad = raw.clone();
    bad["fields"] = json!(["timestamp", "measured_share"]);
    bad["format"] = json!("csv");
    let (s, v) = app.post_raw("/api/exports/create", bad.to_string()).await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("measured_share"), "{v}");
    // Not among the default columns (files made before stay the same).
    let (_, m) = app.get("/api/exports/metrics").await;
    let q = m["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "quality")
        .unwrap();
    assert_eq!(q["default"], false);
    app.stop().await;
}

#[tokio::test]
async fn cost_analyses_and_reports_state_the_energy_not_measured() {
    let (app, _d) = fixture_app().await;
    for (kind, extra) in [
        ("cost_analysis", json!({})),
        (
            "system_report",
            json!({"report_sections": ["energy_consumption"]}),
        ),
    ] {
        let mut body = json!({
            "export_type": kind,
            "devices": ["LAMP01"],
            "date_range": {"start": "2024-03-10T00:00:00Z", "end": "2024-03-11T00:00:00Z"},
            "options": {"timezone": "UTC"},
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let v: Value = serde_json::from_slice(&export_as(&app, &body, "json").await).unwrap();
        let text = v.to_string();
        let table = find_table(&v, "provenance").unwrap_or_else(|| panic!("{kind}: {text}"));
        let all = table["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["device"] == "All devices")
            .unwrap_or_else(|| panic!("{table}"));
        assert_eq!(all["energy"], 0.36, "{all}");
        assert_eq!(all["measured"], 0.255, "{all}");
        assert_eq!(all["spread"], 0.105, "{all}");
        assert_eq!(all["not_measured"], 29.17, "{all}");
    }
    app.stop().await;
}

/// The first table keyed `key` anywhere in a report JSON.
fn find_table<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m
            .get(key)
            .filter(|t| t.get("rows").is_some())
            .or_else(|| m.values().find_map(|x| find_table(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find_table(x, key)),
        _ => None,
    }
}
