//! `kasad import home-assistant|emoncms|iotawatt`: sample files written after each tool's
//! documentation (tests/fixtures/import/) imported by the real binary with the daemon stopped;
//! the daily energy a CSV export then shows equals the sample's; a second import adds nothing;
//! hostile files are refused with nothing written; and an `ha_statistics` export imported
//! into a fresh data directory gives back the same hourly energy.

use crate::exports::{env, export_as};
use crate::helpers::TestApp;
use kasad::clock::{ManualClock, SharedClock};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const NOW: i64 = 1_710_201_600_000; // 2024-03-12T00:00:00Z

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
}

/// A data directory and its configuration file.
fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kasad.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\ntimezone = \"UTC\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    (dir, cfg)
}

fn import(cfg: &Path, args: &[&str]) -> (bool, String) {
    let mut all: Vec<&std::ffi::OsStr> = vec!["import".as_ref()];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    all.extend(["--config".as_ref(), cfg.as_os_str()]);
    crate::helpers::kasad_cli(&all)
}

/// (device id, UTC day) → kWh of a daily CSV export of the data directory; and the resources
/// of its `DATA_IMPORTED` audit entries.
async fn daily(dir: &Path) -> (BTreeMap<(String, String), f64>, Vec<String>) {
    let clock: SharedClock = Arc::new(ManualClock::new(NOW));
    let app = TestApp::on_data(&dir.join("data"), clock, |s| {
        s.exports.rate_limit_per_hour = 1000
    })
    .await;
    let body = json!({"export_type": "device_data", "devices": "all", "aggregation": "daily",
        "fields": ["timestamp", "device_id", "energy_kwh"],
        "date_range": {"start": "2024-03-08", "end": "2024-03-11"}, "options": {"timezone": "UTC"}});
    let csv = String::from_utf8(export_as(&app, &body, "csv").await).unwrap();
    let (_, audit) = app.get("/api/audit?event_types=DATA_IMPORTED").await;
    app.stop().await;
    let imported = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].as_str().unwrap_or_default().to_owned())
        .collect();
    let days = csv
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let kwh: f64 = f[2].parse().ok()?;
            (kwh != 0.0).then(|| ((f[1].to_owned(), f[0][..10].to_owned()), kwh))
        })
        .collect();
    (days, imported)
}

fn close(a: &BTreeMap<(String, String), f64>, b: &BTreeMap<(String, String), f64>) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{a:?} vs {b:?}"
    );
    for (k, v) in a {
        assert!((v - b[k]).abs() < 0.0015, "{k:?}: {v} vs {}", b[k]);
    }
}

fn expected(cases: &[(&str, &str, f64)]) -> BTreeMap<(String, String), f64> {
    cases
        .iter()
        .map(|(d, day, v)| ((d.to_string(), day.to_string()), *v))
        .collect()
}

#[tokio::test]
async fn each_tools_sample_imports_once_with_its_daily_totals() {
    // Home Assistant: each hour's energy is the change of `sum`.
    let sums: Vec<f64> = std::fs::read_to_string(fixture("home_assistant.csv"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("sensor:house_energy"))
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    let ha = expected(&[
        ("ha-house", "2024-03-09", sums[23] - sums[0]),
        ("ha-house", "2024-03-10", sums[47] - sums[23]),
    ]);
    // Emoncms: the feed's running total, hourly from 2024-03-09 00:00 (one null).
    let v: Vec<Option<f64>> = std::fs::read_to_string(fixture("emoncms_kwh.csv"))
        .unwrap()
        .lines()
        .map(|l| l.split(',').nth(1).unwrap().parse().ok())
        .collect();
    let em = expected(&[
        (
            "emon-heat-pump",
            "2024-03-09",
            v[24].unwrap() - v[0].unwrap(),
        ),
        (
            "emon-heat-pump",
            "2024-03-10",
            v[48].unwrap() - v[24].unwrap(),
        ),
    ]);
    // IoTaWatt: Wh per hour and column.
    let text = std::fs::read_to_string(fixture("iotawatt.csv")).unwrap();
    let mut iota: BTreeMap<(String, String), f64> = BTreeMap::new();
    for l in text.split("\r\n").skip(1) {
        let f: Vec<&str> = l.split(", ").collect();
        for (k, name) in [(1, "iota-mains"), (2, "iota-solar")] {
            if let Ok(wh) = f[k].parse::<f64>() {
                *iota.entry((name.into(), f[0][..10].into())).or_default() += wh / 1000.0;
            }
        }
    }
    iota.retain(|_, v| *v != 0.0);
    for (args, want) in [
        (
            vec![
                "home-assistant".to_owned(),
                fixture("home_assistant.csv").to_str().unwrap().to_owned(),
            ],
            ha,
        ),
        (
            vec![
                "emoncms".into(),
                fixture("emoncms_kwh.csv").to_str().unwrap().to_owned(),
                "--device".into(),
                "Heat pump".into(),
            ],
            em,
        ),
        (
            vec![
                "iotawatt".into(),
                fixture("iotawatt.csv").to_str().unwrap().to_owned(),
            ],
            iota,
        ),
    ] {
        let (dir, cfg) = data_dir();
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, text) = import(&cfg, &a);
        assert!(ok, "{a:?}: {text}");
        let (got, audit) = daily(dir.path()).await;
        close(&got, &want);
        assert_eq!(audit.len(), 1, "{audit:?}");
        assert!(audit[0].starts_with(&format!("{}:", a[0])), "{audit:?}");
        // Again: nothing added (and audited again).
        let (ok, again) = import(&cfg, &a);
        assert!(ok && again.contains("\n0 readings of"), "{a:?}: {again}");
        let (got, audit) = daily(dir.path()).await;
        close(&got, &want);
        assert_eq!(audit.len(), 2, "{audit:?}");
    }
}

#[tokio::test]
async fn hostile_files_are_refused_with_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, body: Vec<u8>| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let mut huge = b"statistic_id,unit,start,state,sum\n".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 200_000));
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        ("home-assistant", file("huge.csv", huge), "longer than"),
        (
            "home-assistant",
            file(
                "bad.csv",
                b"statistic_id,unit,start,state,sum\nsensor:a,kWh,09.03.2024 00:00,1,abc\n"
                    .to_vec(),
            ),
            "not a number",
        ),
        (
            "home-assistant",
            file(
                "cols.csv",
                b"statistic_id,unit,start,sum,extra\nsensor:a,kWh,09.03.2024 00:00,1,2\n".to_vec(),
            ),
            "unknown column",
        ),
        (
            "home-assistant",
            file(
                "half.csv",
                b"statistic_id,unit,start,state,sum\nsensor:a,kWh,09.03.2024 00:30,1,1\n".to_vec(),
            ),
            "full hour",
        ),
        (
            "emoncms",
            file("emon.csv", b"1709942400,1.5\n1709946000,1e400\n".to_vec()),
            "not a number",
        ),
        (
            "emoncms",
            file("order.csv", b"1709946000,1.5\n1709942400,2\n".to_vec()),
            "not after",
        ),
        (
            "iotawatt",
            file("iota.csv", b"Mains, Solar\r\n1, 2".to_vec()),
            "Time",
        ),
        (
            "iotawatt",
            file(
                "limit.csv",
                b"Time, Mains\r\n2024-03-09T00:00:00, 5\r\nLimit exceeded at 1709946000".to_vec(),
            ),
            "limit",
        ),
        ("home-assistant", dir.path().to_path_buf(), "not a file"),
        (
            "emoncms",
            file("ms.csv", b"1709942400000,1.5\n1709946000000,2\n".to_vec()),
            "before 2000 or in the future",
        ),
    ];
    for (tool, path, want) in cases {
        let (data, cfg) = data_dir();
        let (ok, text) = import(&cfg, &[tool, path.to_str().unwrap()]);
        assert!(
            !ok && text.contains(want),
            "{tool} {}: {text}",
            path.display()
        );
        let store = kasad::store::Store::open(&data.path().join("data/kasad.redb"), 8).unwrap();
        assert!(
            store.devices().unwrap().is_empty(),
            "{tool}: nothing half-written"
        );
    }
}

#[tokio::test]
async fn an_ha_statistics_export_imports_back_with_the_same_hourly_energy() {
    let e = env().await;
    let body = json!({"export_type": "device_data", "devices": ["HEATER01"], "fields": ["energy_kwh"],
        "date_range": {"start": "2024-03-09", "end": "2024-03-10"}, "options": {"timezone": "UTC"}});
    let file = export_as(&e.app, &body, "ha_statistics").await;
    let mut hourly = body.clone();
    hourly["aggregation"] = json!("hourly");
    hourly["fields"] = json!(["timestamp", "energy_kwh"]);
    let original = String::from_utf8(export_as(&e.app, &hourly, "csv").await).unwrap();
    e.app.stop().await;
    let (dir, cfg) = data_dir();
    let path = dir.path().join("heater.csv");
    std::fs::write(&path, &file).unwrap();
    let (ok, text) = import(&cfg, &["home-assistant", path.to_str().unwrap()]);
    assert!(ok, "{text}");
    let clock: SharedClock = Arc::new(ManualClock::new(NOW));
    let app = TestApp::on_data(&dir.path().join("data"), clock, |s| {
        s.exports.rate_limit_per_hour = 1000
    })
    .await;
    let mut back = hourly.clone();
    back["devices"] = json!(["ha-heater01"]);
    let again = String::from_utf8(export_as(&app, &back, "csv").await).unwrap();
    app.stop().await;
    let rows = |t: &str| -> Vec<(String, f64)> {
        t.lines()
            .skip(1)
            .map(|l| {
                let (ts, kwh) = l.split_once(',').unwrap();
                (ts.to_owned(), kwh.parse().unwrap())
            })
            .collect()
    };
    let (a, b) = (rows(&original), rows(&again));
    assert_eq!(a.len(), 48, "{original}");
    assert_eq!(
        a.iter().map(|r| &r.0).collect::<Vec<_>>(),
        b.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    for (x, y) in a.iter().zip(&b) {
        // Whole Wh on the way back (a counter): within a Wh an hour.
        assert!((x.1 - y.1).abs() <= 0.0011, "{}: {} vs {}", x.0, x.1, y.1);
    }
}

#[tokio::test]
async fn the_hour_repeated_when_clocks_go_back_is_read_in_order() {
    // Europe/Berlin, 27 October 2024: 02:00–03:00 local happens twice.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("feed.csv");
    std::fs::write(
        &f,
        "27/10/2024 01:00:00,10.0\n27/10/2024 02:00:00,10.5\n27/10/2024 02:00:00,11.0\n27/10/2024 03:00:00,11.5\n",
    )
    .unwrap();
    let (_data, cfg) = data_dir();
    let (ok, text) = import(
        &cfg,
        &[
            "emoncms",
            f.to_str().unwrap(),
            "--device",
            "dst",
            "--timezone",
            "Europe/Berlin",
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("4 readings of 1 devices imported"), "{text}");
}
