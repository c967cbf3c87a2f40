//! `kasad import kasa-monitor`: a kasa-monitor-shaped SQLite file (built by Python, the way
//! kasa-monitor writes it) imported by the real binary into a data directory where kasad
//! already reads one of its plugs, then the day's energy exported through the API.

use crate::exports::{download, finished};
use crate::helpers::{TestApp, get_json, kasad_cli, plug_info};
use kasad::clock::{ManualClock, SharedClock};
use kasad::domain::{DeviceId, Reading};
use kasad::store::Store;
use kasad::store::write::{Batch, apply};
use serde_json::json;
use std::ffi::OsStr;
use std::sync::Arc;

const T26: i64 = 1_764_115_200_000; // 2025-11-26T00:00:00Z

/// kasad has read the plug at 192.168.1.100 since the 26th 00:00:30 (its counter at 12 kWh).
fn kasad_already_reads_the_desk_plug(data: &std::path::Path) {
    let store = Store::open(&data.join("kasad.redb"), 8).unwrap();
    let mut plug = plug_info("PLUG01");
    plug.address = "192.168.1.100:9999".into();
    plug.name = "Desk".into();
    let readings = (0..10)
        .map(|i| Reading {
            device_id: DeviceId::parse("PLUG01").unwrap(),
            ts_ms: T26 + 30_000 + i * 60_000,
            power_mw: Some(120_000),
            voltage_mv: Some(230_000),
            current_ma: Some(521),
            counter_wh: Some(12_881 + 2 * i),
            relay_on: true,
            rssi: Some(-50),
        })
        .collect();
    let batch = Batch {
        devices: vec![(plug, T26)],
        readings,
        days: vec![],
    };
    apply(&store, &batch, true).unwrap();
}

fn import(db: &std::path::Path, cfg: &std::path::Path) -> String {
    let (ok, out) = kasad_cli(&[
        OsStr::new("import"),
        OsStr::new("kasa-monitor"),
        db.as_os_str(),
        OsStr::new("--config"),
        cfg.as_os_str(),
    ]);
    assert!(ok, "{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kasa_monitor_history_is_imported_once_and_exports_its_days() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    kasad_already_reads_the_desk_plug(data.path());
    let db = work.path().join("kasa_monitor.db");
    let st = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/kasa_monitor_db.py"
        ))
        .arg(&db)
        .status()
        .expect("python3 is needed to build the kasa-monitor database");
    assert!(st.success());
    let cfg = work.path().join("kasad.toml");
    std::fs::write(&cfg, format!("data_dir = {:?}\n", data.path())).unwrap();

    // Every minute from the 24th 12:00:00.25 to the 26th 00:00:00.25: 2161 readings a device,
    // all before kasad's first reading of the desk plug, which keeps its id and name.
    let out = import(&db, &cfg);
    assert!(
        out.contains(
            "192.168.1.100 -> PLUG01: 2161 readings imported, 0 already stored or out of order\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "192.168.1.101 -> km-192-168-1-101 (new): 2161 readings imported, 0 already \
             stored or out of order, 1 skipped (time not readable)\n"
        ),
        "{out}"
    );
    // kasad finds the real plug at 192.168.1.101 since; importing again adds nothing (the
    // history stays with the imported device, not duplicated into the real one).
    {
        let store = Store::open(&data.path().join("kasad.redb"), 8).unwrap();
        let mut real = plug_info("REAL101");
        real.address = "192.168.1.101:9999".into();
        let readings = (0..5)
            .map(|i| Reading {
                device_id: DeviceId::parse("REAL101").unwrap(),
                ts_ms: T26 + 60_000 * i,
                power_mw: Some(60_000),
                voltage_mv: None,
                current_ma: None,
                counter_wh: Some(5_000 + i),
                relay_on: true,
                rssi: None,
            })
            .collect();
        let batch = Batch {
            devices: vec![(real, T26)],
            readings,
            days: vec![],
        };
        apply(&store, &batch, true).unwrap();
    }
    let out = import(&db, &cfg);
    assert!(
        out.contains("192.168.1.101 -> km-192-168-1-101: 0 readings imported"),
        "{out}"
    );
    assert!(out.contains(
        "192.168.1.100 -> PLUG01: 0 readings imported, 2161 already stored or out of order"
    ));
    assert!(out.contains("0 readings of 2 devices imported"), "{out}");
    let (ok, out) = kasad_cli(&[
        OsStr::new("store"),
        OsStr::new("verify"),
        OsStr::new("--config"),
        cfg.as_os_str(),
    ]);
    assert!(ok && out.contains("4337 readings verified"), "{out}");

    // The 25th as kasa-monitor's counters had it: 120 W and 60 W for 24 hours.
    let clock: SharedClock = Arc::new(ManualClock::new(T26 + 3_600_000));
    let app = TestApp::on_data(data.path(), clock, |_| {}).await;
    let st = finished(
        &app,
        json!({"export_type": "device_data", "format": "csv", "devices": ["PLUG01", "km-192-168-1-101"],
            "date_range": {"start": "2025-11-25", "end": "2025-11-25"}, "aggregation": "daily",
            "fields": ["device_id", "device_name", "energy_kwh"],
            "options": {"timezone": "UTC", "decimal_places": 3}}),
    )
    .await;
    let (s, body, _) = download(&app, st["export_id"].as_str().unwrap()).await;
    assert_eq!(s, 200);
    let text = String::from_utf8(body).unwrap();
    let mut rows: Vec<&str> = text.lines().skip(1).collect();
    rows.sort_unstable();
    assert_eq!(
        rows,
        vec!["PLUG01,Desk,2.88", "km-192-168-1-101,Fridge kasa,1.44"],
        "{text}"
    );
    let audit = get_json(
        &app.base,
        &app.token,
        "/api/audit?event_types=DATA_IMPORTED",
    )
    .await;
    assert_eq!(audit["total"], 2, "{audit}");
    app.stop().await;
}
