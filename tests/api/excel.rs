//! Excel exports read back by an independent reader (openpyxl, through
//! tests/tools/xlsx_dump.py): typed cells equal to the CSV export of the same request, a
//! frozen and filterable header, the Summary and Devices sheets, data continuing on further
//! sheets past the per-sheet row limit, and a chart whose series point at cells holding the
//! daily energy of the rollups (equal to the daily CSV export's energy).

use crate::exports::{env, export_as};
use kasad::export::format::excel::ExcelSink;
use kasad::export::format::{Cell, Sink};
use kasad::localtime::TzCache;
use serde_json::{Value, json};
use std::path::Path;

/// The workbook as openpyxl sees it.
pub fn dump(bytes: &[u8]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.xlsx");
    std::fs::write(&file, bytes).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/xlsx_dump.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&file)
        .output()
        .expect("python3 with openpyxl is needed to read the Excel files back");
    assert!(
        out.status.success(),
        "xlsx_dump.py failed (pip install -r tests/examples/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn csv_rows(bytes: &[u8]) -> Vec<Vec<String>> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

fn row_of<'a>(sheet: &'a Value, key: &str) -> &'a Value {
    sheet
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0]["s"] == key)
        .unwrap_or_else(|| panic!("no row {key:?} in {sheet}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excel_cells_are_typed_and_equal_the_csv_of_the_same_request() {
    let env = env().await;
    let app = &env.app;
    let body = json!({
        "export_type": "device_data",
        "date_range": {"start": "2024-03-09", "end": "2024-03-11"},
        "devices": "all",
        "fields": ["timestamp", "device_id", "device_name", "power_w", "energy_kwh", "voltage", "current", "cost", "is_on"],
        "options": {"timezone": "America/New_York"},
    });
    let csv = csv_rows(&export_as(app, &body, "csv").await);
    let book = dump(&export_as(app, &body, "excel").await);
    assert_eq!(book["sheets"], json!(["Data", "Summary", "Devices"]));
    let data = book["cells"]["Data"].as_array().unwrap();
    assert_eq!(
        data.len(),
        csv.len(),
        "same number of rows, header included"
    );
    assert!(csv.len() > 700);
    for (c, h) in csv[0].iter().enumerate() {
        assert_eq!(data[0][c]["s"], h.as_str());
    }
    for (r, (x, want)) in data.iter().zip(&csv).enumerate().skip(1) {
        for (c, text) in want.iter().enumerate() {
            let got = &x[c];
            match csv[0][c].as_str() {
                // "2024-03-08T19:00:01.234-05:00" in the CSV; the same local time in Excel.
                "timestamp" => assert_eq!(got["t"], &text[..23], "row {r}"),
                "device_id" | "device_name" => assert_eq!(got["s"], text.as_str(), "row {r}"),
                "is_on" => assert_eq!(got["b"], text == "true", "row {r}"),
                _ if text.is_empty() => assert!(got.is_null(), "row {r} col {c}: {got}"),
                _ => assert_eq!(
                    got["n"].as_f64(),
                    Some(text.parse::<f64>().unwrap()),
                    "row {r} col {c}"
                ),
            }
        }
    }
    assert_eq!(book["freeze"]["Data"], "A2");
    assert_eq!(book["filter"]["Data"], format!("A1:I{}", csv.len()));
    let summary = &book["cells"]["Summary"];
    assert_eq!(row_of(summary, "Records")[1]["n"], (csv.len() - 1) as f64);
    assert_eq!(row_of(summary, "Time zone")[1]["s"], "America/New_York");
    let energy: f64 = csv[1..]
        .iter()
        .filter_map(|r| r[4].parse::<f64>().ok())
        .sum();
    let total = row_of(summary, "Total energy_kwh")[1]["n"]
        .as_f64()
        .unwrap();
    assert!((total - energy).abs() < 1e-6, "{total} vs {energy}");
    assert!(total > 10.0);
    let devices = book["cells"]["Devices"].as_array().unwrap();
    assert_eq!(devices.len(), 3);
    assert_eq!(devices[0][0]["s"], "device_id");
    let ids: Vec<&Value> = devices[1..].iter().map(|d| &d[0]["s"]).collect();
    assert!(ids.contains(&&json!("LAMP01")) && ids.contains(&&json!("HEATER01")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excel_charts_point_at_the_daily_energy_of_the_rollups() {
    let env = env().await;
    let app = &env.app;
    let range = json!({"start": "2024-03-09", "end": "2024-03-11"});
    let opts = json!({"timezone": "America/New_York"});
    let book = dump(
        &export_as(
            app,
            &json!({"export_type": "device_data", "date_range": range, "options": opts,
                    "devices": "all", "include_charts": true}),
            "excel",
        )
        .await,
    );
    assert_eq!(
        book["sheets"],
        json!(["Data", "Summary", "Devices", "Charts"])
    );
    let daily = csv_rows(
        &export_as(
            app,
            &json!({"export_type": "device_data", "date_range": range, "options": opts,
                    "devices": "all", "aggregation": "daily",
                    "fields": ["timestamp", "device_name", "energy_kwh"]}),
            "csv",
        )
        .await,
    );
    let sheet = book["cells"]["Charts"].as_array().unwrap();
    let charts = book["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 1);
    assert!(
        charts[0]["title"]
            .as_str()
            .unwrap()
            .contains("Daily energy")
    );
    let series = charts[0]["series"].as_array().unwrap();
    assert_eq!(series.len(), 2);
    let days = sheet.len() - 1;
    assert_eq!(days, 3, "local days 2024-03-09 to 2024-03-11: {sheet:?}");
    let mut checked = 0;
    for (k, s) in series.iter().enumerate() {
        let col = (b'B' + k as u8) as char;
        assert_eq!(s["cat"], format!("Charts!$A$2:$A${}", days + 1));
        assert_eq!(s["val"], format!("Charts!${col}$2:${col}${}", days + 1));
        assert_eq!(s["name"], format!("Charts!${col}$1"));
        let device = sheet[0][k + 1]["s"].as_str().unwrap();
        // Each cell in the series' range holds that device's energy of that local day.
        for (d, row) in sheet[1..].iter().enumerate() {
            let day = &row[0]["t"].as_str().unwrap()[..10];
            let want = daily[1..]
                .iter()
                .find(|r| r[0].starts_with(day) && r[1] == device)
                .map_or(0.0, |r| r[2].parse::<f64>().unwrap());
            assert_eq!(
                row[k + 1]["n"].as_f64(),
                Some(want),
                "{device} {day} (row {d})"
            );
            checked += usize::from(want > 0.0);
        }
    }
    assert!(checked >= 6, "most device-days have energy");
}

#[test]
fn rows_past_the_sheet_limit_continue_on_further_sheets() {
    let temp = tempfile::tempdir().unwrap();
    let mut file = Vec::new();
    let mut sink = ExcelSink::new(
        &mut file,
        temp.path(),
        TzCache::new(chrono_tz::Tz::UTC),
        false,
        None,
        2,
    )
    .unwrap();
    let meta = json!({"export_id": "x", "timezone": "UTC", "devices": []});
    sink.begin(&["timestamp".into(), "power_w".into()], &meta)
        .unwrap();
    for i in 0..5 {
        let t = 1_709_942_400_000 + i * 60_000;
        sink.row(&[Cell::Time(t), Cell::Num(i as f64 + 0.5, 3)])
            .unwrap();
    }
    sink.finish(5, &json!({})).unwrap();
    drop(sink);
    let book = dump(&file);
    assert_eq!(
        book["sheets"],
        json!(["Data", "Data 2", "Data 3", "Summary", "Devices"])
    );
    let values: Vec<f64> = ["Data", "Data 2", "Data 3"]
        .iter()
        .flat_map(|s| {
            let rows = book["cells"][s].as_array().unwrap().clone();
            assert_eq!(
                rows[0][0]["s"], "timestamp",
                "every data sheet has the header"
            );
            rows[1..]
                .iter()
                .map(|r| r[1]["n"].as_f64().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(values, [0.5, 1.5, 2.5, 3.5, 4.5]);
    assert_eq!(
        book["cells"]["Data 3"][1][0]["t"],
        "2024-03-09T00:04:00.000"
    );
    assert_eq!(
        row_of(&book["cells"]["Summary"], "Data sheets")[1]["n"],
        3.0
    );
    assert!(
        std::fs::read_dir(temp.path()).unwrap().next().is_none(),
        "no temp files left behind"
    );
}
