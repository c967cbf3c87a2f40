//! system_report exports: the same numbers in JSON, CSV, Excel (openpyxl) and PDF (poppler),
//! equal to the device_data export of the same range; health from the running daemon;
//! section selection, device selection, privacy and refused options; and a 10-device,
//! 1-year report that renders to a multi-page PDF with drawn charts.

use crate::exports::{env, export_as, refused};
use crate::pdf::{drawn, info, poppler};
use kasad::clock::{ManualClock, SharedClock};
use kasad::store::Store;
use kasad::store::write::{Batch, apply};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

const RANGE: (&str, &str) = ("2024-03-09", "2024-03-11");

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The rows of table `table` in section `section` of a JSON report.
fn rows<'a>(report: &'a Value, section: &str, table: &str) -> &'a Vec<Value> {
    report["report"][section]["tables"][table]["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no {section}.{table} in {report}"))
}

fn row<'a>(rows: &'a [Value], key: &str, value: &str) -> &'a Value {
    rows.iter()
        .find(|r| r[key] == value)
        .unwrap_or_else(|| panic!("no row {key}={value} in {rows:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_carries_the_numbers_of_the_device_data_export() {
    let env = env().await;
    let app = &env.app;
    let range = json!({"start": RANGE.0, "end": RANGE.1});
    // The daily device_data export of the same range is the reference.
    let daily = export_as(
        app,
        &json!({"export_type": "device_data", "date_range": range, "devices": "all",
                "aggregation": "daily", "fields": ["timestamp", "device_name", "energy_kwh"]}),
        "csv",
    )
    .await;
    let mut by_device: BTreeMap<String, f64> = BTreeMap::new();
    let mut by_day: BTreeMap<(String, String), f64> = BTreeMap::new();
    for line in String::from_utf8(daily).unwrap().lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let kwh: f64 = f[2].parse().unwrap();
        *by_device.entry(f[1].to_owned()).or_default() += kwh;
        by_day.insert((f[1].to_owned(), f[0][..10].to_owned()), kwh);
    }
    assert_eq!(by_device.len(), 2);

    let body = json!({"export_type": "system_report", "date_range": range});
    let j: Value = serde_json::from_slice(&export_as(app, &body, "json").await).unwrap();
    assert_eq!(
        j["metadata"]["sections"],
        json!([
            "device_summary",
            "energy_consumption",
            "cost_breakdown",
            "system_health",
            "usage_patterns",
            "insights"
        ])
    );
    // Insights as of the range's end: the heater never drops below its 200 W state, the lamp
    // is off every night.
    let ins = rows(&j, "insights", "always_on");
    assert_eq!(ins.len(), 2, "{ins:?}");
    assert_eq!(
        row(ins, "device", "Garage Heater")["always_on"],
        200.0,
        "{ins:?}"
    );
    assert_eq!(
        row(ins, "device", "Living Room Lamp")["always_on"],
        0.0,
        "{ins:?}"
    );
    let household = rows(&j, "insights", "household");
    assert_eq!(
        row(household, "what", "always-on power")["value"],
        200.0,
        "{household:?}"
    );
    let energy = rows(&j, "energy_consumption", "by_device");
    let price = j["metadata"]["price_per_kwh"].as_f64().unwrap();
    for (name, kwh) in &by_device {
        let r = row(energy, "device", name);
        assert_eq!(r["energy"].as_f64().unwrap(), round3(*kwh), "{name}");
        let cost = row(rows(&j, "cost_breakdown", "by_device"), "device", name);
        assert_eq!(
            cost["cost"].as_f64().unwrap(),
            (kwh * price * 100.0).round() / 100.0
        );
    }
    let days = rows(&j, "energy_consumption", "by_day");
    assert_eq!(days.len(), 2 * 3, "two devices × three days");
    for ((name, day), kwh) in &by_day {
        let r = days
            .iter()
            .find(|r| r["device"] == name.as_str() && r["date"] == day.as_str())
            .unwrap();
        assert_eq!(r["energy"].as_f64().unwrap(), round3(*kwh), "{name} {day}");
    }
    // The lamp burns 45.2 W from 06:00 to 22:00 UTC: on Monday 11 March (the only weekday)
    // that averages 45.2 × 16 / 24 W, and nothing at 03:00.
    let week = row(
        rows(&j, "usage_patterns", "weekday_weekend"),
        "device",
        "Living Room Lamp",
    );
    let w = week["weekday_load"].as_f64().unwrap();
    assert!((w - 45.2 * 16.0 / 24.0).abs() < 0.2, "weekday load {w}");
    let hours = rows(&j, "usage_patterns", "by_hour");
    assert_eq!(hours.len(), 24);
    let top = rows(&j, "usage_patterns", "top_consumers");
    assert_eq!(top[0]["device"], "Garage Heater");
    assert_eq!(top[0]["rank"], 1);
    // Health, from the running daemon: the device_data export above is counted.
    let daemon = &rows(&j, "system_health", "daemon")[0];
    assert!(daemon["database_size"].as_f64().unwrap() > 0.0, "{daemon}");
    assert!(daemon["disk_free"].as_f64().unwrap() > 0.0);
    assert!(daemon["uptime"].is_number() && daemon["started"].is_string());
    let exports = rows(&j, "system_health", "exports");
    assert!(row(exports, "export_type", "device_data")["completed"].as_f64() >= Some(1.0));
    let health = rows(&j, "system_health", "devices");
    assert_eq!(health.len(), 2);
    for h in health {
        let a = &h["availability"];
        assert!(
            a.is_null() || (0.0..=100.0).contains(&a.as_f64().unwrap()),
            "{h}"
        );
    }

    // CSV: one fact per line, the same values.
    let csv = String::from_utf8(export_as(app, &body, "csv").await).unwrap();
    assert!(csv.starts_with("section,table,item,period,metric,value,unit\r\n"));
    let lamp = round3(by_device["Living Room Lamp"]);
    let fact = format!("energy_consumption,by_device,Living Room Lamp,,energy,{lamp},kWh\r\n");
    assert!(csv.contains(&fact), "{fact} not in {csv}");

    // Excel: a sheet per table with typed numbers; native charts over cells holding the values.
    let book = crate::excel::dump(&export_as(app, &body, "excel").await);
    let names: Vec<&String> = book["cells"].as_object().unwrap().keys().collect();
    assert!(
        names.iter().any(|n| n.starts_with("Always-on power")),
        "no insights sheet in {names:?}"
    );
    let sheet = &book["cells"]["Energy per device"];
    assert_eq!(sheet[0][0]["s"], "device");
    assert_eq!(sheet[0][1]["s"], "energy (kWh)");
    let lamp_row = sheet
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0]["s"] == "Living Room Lamp")
        .unwrap();
    assert_eq!(lamp_row[1]["n"].as_f64().unwrap(), lamp);
    assert_eq!(book["freeze"]["Energy per device"], "A2");
    let charts = book["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 2, "{charts:?}");
    let load = charts
        .iter()
        .find(|c| c["title"] == "Average load by hour of day (W)")
        .unwrap();
    let val = load["series"][0]["val"].as_str().unwrap();
    let sheet_name = val.split('!').next().unwrap().trim_matches('\'');
    assert_eq!(val, format!("'{sheet_name}'!$B$2:$B$25"));
    let chart_json = &j["report"]["usage_patterns"]["charts"][0]["series"][0]["values"];
    let cells = &book["cells"][sheet_name];
    for h in 0..24 {
        assert_eq!(
            cells[h + 1][1]["n"].as_f64(),
            chart_json[h].as_f64(),
            "hour {h}"
        );
    }

    // PDF: section titles and the numbers in the text; the charts are drawn.
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("r.pdf");
    std::fs::write(&file, export_as(app, &body, "pdf").await).unwrap();
    let (pages, _) = info(&file);
    let text = poppler("pdftotext", &["-layout"], &file);
    for t in [
        "System report",
        "Device summary",
        "Energy consumption",
        "Cost breakdown",
        "System health",
        "Usage patterns",
        "Insights",
        "Always-on power and what each device does",
        &format!("page {pages} of {pages}"),
    ] {
        assert!(text.contains(t), "{t:?} not in the PDF text");
    }
    assert!(text.contains(&lamp.to_string()), "{lamp} not in {text}");
    let (dark, area) = drawn(&file, pages, data.path());
    assert!(
        dark * 50 > area,
        "the load chart is blank: {dark} of {area}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sections_devices_and_privacy_are_honoured_and_row_options_refused() {
    let env = env().await;
    let app = &env.app;
    let body = json!({
        "export_type": "system_report",
        "date_range": {"start": RANGE.0, "end": RANGE.1},
        "report_sections": ["usage_patterns", "device_summary", "usage_patterns"],
        "devices": ["LAMP01"],
        "privacy_options": {"anonymize_ip_addresses": true},
    });
    let j: Value = serde_json::from_slice(&export_as(app, &body, "json").await).unwrap();
    assert_eq!(
        j["metadata"]["sections"],
        json!(["device_summary", "usage_patterns"])
    );
    let sections: Vec<&String> = j["report"].as_object().unwrap().keys().collect();
    assert_eq!(sections.len(), 2);
    let devices = rows(&j, "device_summary", "devices");
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["device"], "Living Room Lamp");
    assert_eq!(devices[0]["device_ip"], "127.0.0.0");

    for (tweak, code, needle) in [
        (
            json!({"report_sections": ["energy", "bogus"]}),
            "VALIDATION_ERROR",
            "unknown section",
        ),
        (
            json!({"report_sections": []}),
            "VALIDATION_ERROR",
            "non-empty",
        ),
        (
            json!({"fields": ["power_w"]}),
            "VALIDATION_ERROR",
            "fields applies to device_data",
        ),
        (
            json!({"aggregation": "daily"}),
            "VALIDATION_ERROR",
            "aggregation applies",
        ),
        (
            json!({"event_types": ["LOGIN_SUCCESS"]}),
            "VALIDATION_ERROR",
            "event_types applies to audit_logs",
        ),
        (
            json!({"grouping": "monthly"}),
            "VALIDATION_ERROR",
            "grouping and breakdown_by apply to cost_analysis",
        ),
    ] {
        let body = json!({"export_type": "system_report", "format": "json"});
        let v = refused(app, &body, &tweak).await;
        let text = v.to_string();
        assert!(text.contains(code) && text.contains(needle), "{tweak}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_device_year_report_renders() {
    let data = tempfile::tempdir().unwrap();
    let start = 1_735_689_600_000; // 2025-01-01T00:00:00Z
    {
        let store = Store::open(&data.path().join("kasad.redb"), 8).unwrap();
        let devices = (0..10)
            .map(|i| {
                let mut d = crate::helpers::plug_info(&format!("BENCH{i:04}"));
                d.name = format!("Bench plug {i}");
                d.address = format!("127.0.0.{}:1", 20 + i);
                (d, start)
            })
            .collect();
        apply(
            &store,
            &Batch {
                devices,
                readings: vec![],
                days: vec![],
            },
            true,
        )
        .unwrap();
        // One reading an hour: the report reads the rollups, whose shape this gives.
        kasad::cli::benchmarks::generate(10, 365, 3_600_000, start, |readings| {
            apply(
                &store,
                &Batch {
                    devices: vec![],
                    readings,
                    days: vec![],
                },
                false,
            )
            .unwrap();
        });
        apply(&store, &Batch::default(), true).unwrap();
    }
    let clock: SharedClock = Arc::new(ManualClock::new(start + 366 * 86_400_000));
    let app = crate::helpers::TestApp::on_data(data.path(), clock, |s| {
        s.exports.rate_limit_per_hour = 1000;
    })
    .await;
    let body = json!({"export_type": "system_report",
                      "date_range": {"start": "2025-01-01", "end": "2025-12-31"}});
    let file = data.path().join("year.pdf");
    std::fs::write(&file, export_as(&app, &body, "pdf").await).unwrap();
    let (pages, _) = info(&file);
    assert!(pages >= 8, "{pages} pages");
    let text = poppler("pdftotext", &["-layout"], &file);
    for t in [
        "Bench plug 9",
        "2025-12",
        "Energy per device per month",
        "Cost per month (selected devices)",
        "Average load by hour of day",
    ] {
        assert!(text.contains(t), "{t:?} not in the PDF");
    }
    // 10 devices × 12 months of energy, each with its row in the table.
    let j: Value = serde_json::from_slice(&export_as(&app, &body, "json").await).unwrap();
    assert_eq!(rows(&j, "energy_consumption", "by_month").len(), 120);
    let total: f64 = rows(&j, "energy_consumption", "by_device")
        .iter()
        .map(|r| r["energy"].as_f64().unwrap())
        .sum();
    let totals = &rows(&j, "energy_consumption", "totals")[0];
    assert!((totals["energy"].as_f64().unwrap() - total).abs() < 0.01);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_without_devices_still_reports() {
    let data = tempfile::tempdir().unwrap();
    let clock: SharedClock = Arc::new(ManualClock::new(1_735_689_600_000));
    let app = crate::helpers::TestApp::on_data(data.path(), clock, |s| {
        s.exports.rate_limit_per_hour = 1000;
    })
    .await;
    let body = json!({"export_type": "system_report"});
    let j: Value = serde_json::from_slice(&export_as(&app, &body, "json").await).unwrap();
    assert!(rows(&j, "device_summary", "devices").is_empty());
    assert_eq!(rows(&j, "system_health", "daemon").len(), 1);
    for format in ["excel", "pdf", "csv"] {
        assert!(!export_as(&app, &body, format).await.is_empty(), "{format}");
    }
    let cost = json!({"export_type": "cost_analysis"});
    let j: Value = serde_json::from_slice(&export_as(&app, &cost, "json").await).unwrap();
    assert_eq!(
        j["report"]["summary"]["tables"]["totals"]["rows"][0]["total"],
        0.0
    );
}
