//! Managing devices through the API: a kasad name, a room, rated power and notes (used in
//! the device list, every export format, `/metrics`), refused bad values, forgetting (not
//! rediscovered, restored with its history), purging (readings and rollups gone, the rest
//! untouched, the store verifies), the `room:` selector and cost by room, and the audit trail.

use crate::exports::{env, export_as};
use crate::helpers::{TestApp, fleet, login};
use reqwest::Method;
use serde_json::{Value, json};

async fn patch(app: &TestApp, token: &str, id: &str, body: Value) -> (u16, Value) {
    let r = app
        .req_as(Method::PATCH, &format!("/api/devices/{id}"), token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn row<'a>(devices: &'a [Value], id: &str) -> &'a Value {
    devices
        .iter()
        .find(|d| d["device_id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {devices:#?}"))
}

const FORMULA: &str = "=HYPERLINK(\"http://evil.test\",\"x\")";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kasad_name_and_room_are_used_everywhere() {
    let e = env().await;
    let app = &e.app;
    let t = app.token.clone();
    let (s, v) = patch(
        app,
        &t,
        "LAMP01",
        json!({"name": "Kühlschrank", "room": "Kitchen", "rated_power_w": 150.0, "notes": "left of the sink"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            &v["device_name"],
            &v["device_alias"],
            &v["room"],
            &v["rated_power_w"]
        ),
        (
            &json!("Kühlschrank"),
            &json!("Living Room Lamp"),
            &json!("Kitchen"),
            &json!(150.0)
        )
    );
    let (s, _) = patch(
        app,
        &t,
        "HEATER01",
        json!({"name": FORMULA, "room": "Garage"}),
    )
    .await;
    assert_eq!(s, 200);
    let list = app.devices().await;
    assert_eq!(row(&list, "LAMP01")["device_name"], "Kühlschrank");
    // A missing key leaves a value, null clears it (the name falls back to the alias).
    let (_, v) = patch(app, &t, "LAMP01", json!({"notes": null})).await;
    assert_eq!((&v["notes"], &v["room"]), (&Value::Null, &json!("Kitchen")));

    // Every format of device_data shows the kasad name; a formula-looking one is defused.
    let body = json!({"export_type": "device_data", "devices": "all",
        "fields": ["timestamp", "device_name", "power_w"],
        "date_range": {"start": "2024-03-09", "end": "2024-03-09"}});
    let csv = String::from_utf8(export_as(app, &body, "csv").await).unwrap();
    assert!(csv.contains(",Kühlschrank,"), "{csv:.300}");
    assert!(
        csv.contains(&format!("'{}", FORMULA.replace('"', "\"\""))),
        "{csv:.600}"
    );
    assert!(!csv.contains("Living Room Lamp"));
    let xlsx = crate::excel::dump(&export_as(app, &body, "excel").await);
    let text = xlsx.to_string();
    assert!(text.contains("Kühlschrank") && !text.contains("Living Room Lamp"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.xlsx");
    std::fs::write(&file, export_as(app, &body, "excel").await).unwrap();
    let zipped = std::process::Command::new("python3")
        .args(["-c", "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
            print(any(b'<f>' in z.read(n) or b'<f ' in z.read(n) for n in z.namelist() if n.startswith('xl/worksheets/')))"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&zipped.stdout).trim(),
        "False",
        "a formula cell"
    );
    let pdf = dir.path().join("x.pdf");
    std::fs::write(&pdf, export_as(app, &body, "pdf").await).unwrap();
    let text = crate::pdf::poppler("pdftotext", &["-layout"], &pdf);
    assert!(text.contains("Kühlschrank"), "{text:.500}");
    // The configuration export and /metrics.
    let conf = json!({"export_type": "configuration", "format": "json"});
    let conf = String::from_utf8(export_as(app, &conf, "json").await).unwrap();
    assert!(
        conf.contains("Kühlschrank") && conf.contains("Kitchen"),
        "{conf:.800}"
    );
    let metrics = app
        .req(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("device_id=\"LAMP01\",name=\"Kühlschrank\""),
        "{metrics:.2000}"
    );

    // The stored rated power is what formulas see (over [exports.rated_power]).
    let (s, v) = {
        let r = app
            .req(Method::POST, "/api/exports/preview")
            .json(
                &json!({"export_type": "device_data", "format": "csv", "devices": ["LAMP01"], "fields": ["power_w"],
                "date_range": {"start": "2024-03-09T12:00:00Z", "end": "2024-03-09T12:10:00Z"},
                "custom_fields": [{"name": "load", "formula": "power_w / rated_power * 100"}]}),
            )
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(s, 200, "{v}");
    let load = v["preview"][0]["load"].as_f64().unwrap();
    assert!((load - 45.2 / 150.0 * 100.0).abs() < 0.01, "{v}");

    // room: selects by room; cost_analysis breaks down by room.
    let by_room = json!({"export_type": "device_data", "devices": ["room:kitchen"], "fields": ["device_id"],
        "date_range": {"start": "2024-03-09", "end": "2024-03-09"}});
    let csv = String::from_utf8(export_as(app, &by_room, "csv").await).unwrap();
    assert!(
        csv.contains("LAMP01") && !csv.contains("HEATER01"),
        "{csv:.300}"
    );
    let r = app
        .req(Method::POST, "/api/exports/create")
        .json(
            &json!({"export_type": "device_data", "format": "csv", "devices": ["room:Attic"],
            "date_range": {"start": "2024-03-09", "end": "2024-03-09"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let cost = json!({"export_type": "cost_analysis", "breakdown_by": ["room"], "grouping": "daily",
        "date_range": {"start": "2024-03-09", "end": "2024-03-10"}});
    let doc: Value = serde_json::from_slice(&export_as(app, &cost, "json").await).unwrap();
    let text = doc.to_string();
    assert!(
        text.contains("cost_by_room") && text.contains("Kitchen") && text.contains("Garage"),
        "{text:.1500}"
    );
    let report = json!({"export_type": "system_report",
        "date_range": {"start": "2024-03-09", "end": "2024-03-10"}});
    let doc = String::from_utf8(export_as(app, &report, "json").await).unwrap();
    assert!(doc.contains("Energy per room"), "{doc:.1500}");

    // Bad values, and a viewer, are refused.
    for bad in [
        json!({"name": "x".repeat(65)}),
        json!({"name": "bell\u{7}"}),
        json!({"room": ""}),
        json!({"rated_power_w": 0}),
        json!({"notes": "n".repeat(1001)}),
        json!({"colour": "red"}),
    ] {
        let (s, v) = patch(app, &t, "LAMP01", bad.clone()).await;
        assert_eq!(
            (s, v["error_code"].as_str()),
            (400, Some("VALIDATION_ERROR")),
            "{bad}: {v}"
        );
    }
    crate::exports::add_user(app, "vera", "viewer").await;
    let vera = login(&app.client, &app.base, "vera", "a-long-password-1").await;
    assert_eq!(
        patch(app, &vera, "LAMP01", json!({"name": "Mine"})).await.0,
        403
    );
    assert_eq!(patch(app, &t, "NOPE01", json!({"name": "x"})).await.0, 404);

    // Each change is audited with the old and new values.
    let (_, audit) = app
        .get("/api/audit?event_types=DEVICE_UPDATED&limit=100")
        .await;
    let entries = audit["entries"].as_array().unwrap();
    let first = entries
        .iter()
        .find(|e| {
            e["details"]["old"]["name"].is_null() && e["details"]["new"]["name"] == "Kühlschrank"
        })
        .unwrap_or_else(|| panic!("{audit:#}"));
    assert_eq!(first["details"]["new"]["room"], "Kitchen");
    assert_eq!(first["details"]["old"]["device_alias"], "Living Room Lamp");
    let cleared = entries.iter().find(|e| {
        e["details"]["new"]["notes"].is_null() && e["details"]["old"]["notes"] == "left of the sink"
    });
    assert!(cleared.is_some(), "{audit:#}");
    e.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_deletes_one_devices_history_and_nothing_else() {
    let e = env().await;
    let app = &e.app;
    let before = app.devices().await;
    let lamp_points = row(&before, "LAMP01")["data_points"].clone();
    assert!(row(&before, "HEATER01")["data_points"].as_u64().unwrap() > 0);
    let r = app
        .req(Method::DELETE, "/api/devices/HEATER01?purge=true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (&v["purged"], &v["forgotten"]),
        (&json!(true), &json!(["HEATER01"]))
    );
    let after = app.devices().await;
    assert!(after.iter().all(|d| d["device_id"] != "HEATER01"));
    assert_eq!(row(&after, "LAMP01")["data_points"], lamp_points);
    let (_, forgotten) = app.get("/api/devices?forgotten=true").await;
    assert_eq!(forgotten["devices"][0]["device_id"], "HEATER01");
    // Restored: back, without history.
    let r = app.post("/api/devices/HEATER01/restore").await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["data_points"], 0);
    let (_, rows) = app
        .get("/api/devices/HEATER01/readings?start=2024-03-09&end=2024-03-12&resolution=15m")
        .await;
    assert_eq!(
        rows["readings"].as_array().map_or(0, Vec::len),
        0,
        "{rows:.300}"
    );
    let (_, audit) = app
        .get("/api/audit?event_types=DEVICE_DELETED,DEVICE_RESTORED")
        .await;
    assert_eq!(audit["total"], 2, "{audit}");
    assert_eq!(audit["entries"][1]["details"]["purged"], true);
    let data = e.data.path().to_path_buf();
    e.app.stop_and_verify(&data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_device_is_not_rediscovered_and_comes_back_with_its_history() {
    let app = TestApp::spawn(fleet(1)).await;
    let d = app
        .wait_devices("the plug read", |d| {
            d.iter().any(|x| x["data_points"].as_u64() > Some(2))
        })
        .await;
    let id = d[0]["device_id"].as_str().unwrap().to_owned();
    let r = app
        .req(Method::DELETE, &format!("/api/devices/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, _) = app.post("/api/devices/discover").await;
    assert_eq!(s, 200);
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(app.devices().await.is_empty(), "rediscovered");
    let (s, v) = app.post(&format!("/api/devices/{id}/restore")).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["data_points"].as_u64() > Some(2), "history kept: {v}");
    app.wait_devices("polled again", |d| d.iter().any(|x| x["online"] == true))
        .await;
    // Restoring what is not forgotten, and forgetting twice, are clear errors.
    assert_eq!(app.post(&format!("/api/devices/{id}/restore")).await.0, 409);
    app.stop().await;
}

#[tokio::test]
async fn a_device_named_by_a_static_entry_cannot_be_forgotten() {
    let sims = crate::helpers::start_sims(fleet(1)).await;
    let host = sims[0].addr.to_string();
    let app = TestApp::with_sims(sims, move |s| {
        s.discovery.enabled = false;
        s.devices = vec![kasad::config::StaticDevice { host }];
    })
    .await;
    let d = app
        .wait_devices("the static plug polled", |d| !d.is_empty())
        .await;
    let id = d[0]["device_id"].as_str().unwrap().to_owned();
    let r = app
        .req(Method::DELETE, &format!("/api/devices/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("config"), "{v}");
    app.stop().await;
}
