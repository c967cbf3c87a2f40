//! `format: "ha_statistics"`: device_data as Home Assistant long-term statistics, checked by a
//! reader that applies the "Import Statistics" integration's rules (its columns, full-hour
//! starts in `%d.%m.%Y %H:%M`, `domain:name` ids, one kind of statistic per id, one unit per
//! id, a `sum` that never decreases), and against the energy of a daily CSV export.

use crate::exports::{env, export_as};
use crate::helpers::TestApp;
use kasad::clock::{ManualClock, SharedClock};
use kasad::domain::{DeviceId, Reading};
use kasad::store::Store;
use kasad::store::write::{Batch, apply};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One statistic as the integration would import it.
#[derive(Debug, Default)]
struct Statistic {
    unit: String,
    counter: bool,
    /// (start, UTC ms) → (state, sum) or (min, max, mean).
    rows: Vec<(i64, Vec<f64>)>,
}

/// Reads an ha_statistics file, panicking at the first rule it breaks.
fn read(bytes: &[u8]) -> BTreeMap<String, Statistic> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let known = [
        "statistic_id",
        "unit",
        "start",
        "min",
        "max",
        "mean",
        "state",
        "sum",
    ];
    assert!(
        header.iter().all(|c| known.contains(c)),
        "unknown columns: {header:?}"
    );
    for c in ["statistic_id", "unit", "start"] {
        assert!(header.contains(&c), "{c} missing: {header:?}");
    }
    let col = |row: &[&str], name: &str| -> Option<f64> {
        let i = header.iter().position(|c| *c == name)?;
        let v = row[i];
        (!v.is_empty()).then(|| v.parse::<f64>().unwrap_or_else(|_| panic!("{name} {v:?}")))
    };
    let id_ok = regex_like_ha;
    let mut out: BTreeMap<String, Statistic> = BTreeMap::new();
    for line in lines {
        let row: Vec<&str> = line.split(',').collect();
        assert_eq!(row.len(), header.len(), "{line}");
        let id = row[0];
        assert!(id_ok(id), "statistic_id {id:?}");
        let start = chrono::NaiveDateTime::parse_from_str(row[2], "%d.%m.%Y %H:%M")
            .unwrap_or_else(|e| panic!("start {:?}: {e}", row[2]));
        assert_eq!(
            start.format("%M:%S").to_string(),
            "00:00",
            "a full hour: {line}"
        );
        let start = start.and_utc().timestamp_millis();
        let measured = ["min", "max", "mean"].map(|c| col(&row, c));
        let counted = ["state", "sum"].map(|c| col(&row, c));
        let (counter, values) = match (measured, counted) {
            ([Some(mi), Some(ma), Some(me)], [None, None]) => {
                assert!(
                    mi <= me + 1e-9 && me <= ma + 1e-9,
                    "min <= mean <= max: {line}"
                );
                (false, vec![mi, ma, me])
            }
            ([None, None, None], [state, Some(sum)]) => (true, vec![state.unwrap_or(sum), sum]),
            _ => panic!("neither a measurement nor a counter: {line}"),
        };
        let s = out.entry(id.to_owned()).or_insert_with(|| Statistic {
            unit: row[1].to_owned(),
            counter,
            rows: Vec::new(),
        });
        assert_eq!(s.counter, counter, "{id} is one kind of statistic");
        assert_eq!(s.unit, row[1], "{id} has one unit");
        if let Some((prev, v)) = s.rows.last() {
            assert!(start > *prev, "{id}: starts in order");
            assert_eq!((start - prev) % 3_600_000, 0, "{id}: hourly starts");
            if counter {
                assert!(values[1] >= v[1], "{id}: sum never decreases: {line}");
            }
        }
        s.rows.push((start, values));
    }
    out
}

/// Home Assistant's external statistic id rule: `[\da-z_]+:[\da-z_]+`, no `__`, no `_` at
/// either end of either part.
fn regex_like_ha(id: &str) -> bool {
    let Some((d, n)) = id.split_once(':') else {
        return false;
    };
    [d, n].iter().all(|p| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !p.contains("__")
            && !p.starts_with('_')
            && !p.ends_with('_')
    })
}

#[tokio::test]
async fn statistics_follow_the_integrations_rules_and_hold_the_energy() {
    let e = env().await;
    let app = &e.app;
    let body = json!({"export_type": "device_data", "devices": "all",
        "date_range": {"start": "2024-03-09", "end": "2024-03-11"}, "options": {"timezone": "UTC"}});
    let stats = read(&export_as(app, &body, "ha_statistics").await);
    let mut power_only = body.clone();
    power_only["fields"] = json!(["power_w"]);
    let powers = read(&export_as(app, &power_only, "ha_statistics").await);
    for d in ["lamp01", "heater01"] {
        let energy = &stats[&format!("kasad:{d}_energy")];
        assert!(energy.counter && energy.unit == "kWh", "{energy:?}");
        assert!(
            !stats.contains_key(&format!("kasad:{d}_power")),
            "one kind per file"
        );
        let power = &powers[&format!("kasad:{d}_power")];
        assert!(!power.counter && power.unit == "W", "{power:?}");
        assert!(energy.rows.len() >= 48, "{}", energy.rows.len());
    }
    // The last sum of each device is its energy over the range (a daily CSV says how much).
    let mut daily = body.clone();
    daily["aggregation"] = json!("daily");
    daily["fields"] = json!(["device_id", "energy_kwh"]);
    let csv = String::from_utf8(export_as(app, &daily, "csv").await).unwrap();
    let mut totals: BTreeMap<String, f64> = BTreeMap::new();
    for l in csv.lines().skip(1) {
        let (id, kwh) = l.split_once(',').unwrap();
        *totals.entry(id.to_lowercase()).or_default() += kwh.parse::<f64>().unwrap();
    }
    for (id, kwh) in &totals {
        let rows = &stats[&format!("kasad:{id}_energy")].rows;
        let (first, last) = (rows[0].1[1], rows.last().unwrap().1[1]);
        assert!(
            (last - first - kwh).abs() < 0.002,
            "{id}: sum {first}..{last} vs {kwh} kWh"
        );
    }
    // One kind per file when asked, a prefix of one's own; and what cannot be refused.
    let mut only = body.clone();
    only["fields"] = json!(["energy_kwh"]);
    only["options"]["ha_statistic_prefix"] = json!("flat_2");
    let file = export_as(app, &only, "ha_statistics").await;
    let text = String::from_utf8_lossy(&file);
    assert!(
        text.starts_with("statistic_id,unit,start,state,sum\r\n"),
        "{text}"
    );
    assert!(
        read(&file)
            .keys()
            .all(|k| k.starts_with("flat_2:") && k.ends_with("_energy"))
    );
    for (patch, what) in [
        (json!({"export_type": "cost_analysis"}), "device_data"),
        (json!({"aggregation": "daily"}), "hourly"),
        (json!({"fields": ["energy_kwh", "power_w"]}), "one kind"),
        (
            json!({"options": {"ha_statistic_prefix": "Flat 2"}}),
            "ha_statistic_prefix",
        ),
    ] {
        let mut b = body.clone();
        b["format"] = json!("ha_statistics");
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        let (s, v) = app.post_raw("/api/exports/create", b.to_string()).await;
        assert_eq!(s, 400, "{v}");
        assert!(v.to_string().contains(what), "{what}: {v}");
    }
}

#[tokio::test]
async fn the_sum_goes_on_rising_across_a_counter_reset() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_710_028_800_000i64; // 2024-03-10T00:00:00Z
    {
        let store = Store::open(&dir.path().join("kasad.redb"), 8).unwrap();
        // 3 hours a reading a minute, 1 Wh each; the plug reboots at 01:30 (counter back to 0).
        let readings = (0..180)
            .map(|m| Reading {
                device_id: DeviceId::parse("P1").unwrap(),
                ts_ms: t0 + m * 60_000,
                power_mw: Some(60_000),
                voltage_mv: Some(230_000),
                current_ma: Some(260),
                counter_wh: Some(if m < 90 { 500 + m } else { m - 90 }),
                relay_on: true,
                rssi: None,
            })
            .collect();
        let b = Batch {
            devices: vec![(crate::helpers::plug_info("P1"), t0)],
            readings,
            days: vec![],
        };
        apply(&store, &b, true).unwrap();
    }
    let clock: SharedClock = Arc::new(ManualClock::new(t0 + 86_400_000));
    let app = TestApp::on_data(dir.path(), clock, |s| s.exports.rate_limit_per_hour = 1000).await;
    let body = json!({"export_type": "device_data", "devices": ["P1"], "fields": ["energy_kwh"],
        "date_range": {"start": "2024-03-10T00:00:00Z", "end": "2024-03-10T03:00:00Z"}});
    let stats = read(&export_as(&app, &body, "ha_statistics").await);
    let rows = &stats["kasad:p1_energy"].rows;
    assert_eq!(
        rows.len(),
        4,
        "the hour before, at 0, and 3 hours: {rows:?}"
    );
    let states: Vec<f64> = rows.iter().map(|r| r.1[0]).collect();
    let sums: Vec<f64> = rows.iter().map(|r| r.1[1]).collect();
    assert!(
        states[2] < states[1],
        "the device's counter fell: {states:?}"
    );
    // 179 one-minute intervals of 1 Wh: the one ending at 01:00 is the first hour's, the one
    // across the reboot counts nothing (the counter started again at 0).
    assert_eq!(sums, [0.0, 0.06, 0.119, 0.178], "{sums:?}");
    app.stop().await;
}
