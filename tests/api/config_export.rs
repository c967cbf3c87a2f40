//! The configuration export: devices, users with their permissions, retention, tariffs and
//! settings as rows; never a password hash, key or token; privacy options drop coordinates or
//! users; it needs SYSTEM_CONFIG.

use crate::exports::{add_user, download, env, finished};
use reqwest::Method;
use serde_json::{Value, json};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn config_rows(app: &crate::helpers::TestApp, extra: Value) -> (Vec<u8>, Vec<Value>) {
    let mut body = json!({"export_type": "configuration", "format": "json"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let st = finished(app, body).await;
    let (s, bytes, _) = download(app, st["export_id"].as_str().unwrap()).await;
    assert_eq!(s, 200);
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["metadata"]["export_type"], "configuration");
    (bytes, doc["data"].as_array().unwrap().clone())
}

fn value<'a>(rows: &'a [Value], section: &str, item: &str, key: &str) -> Option<&'a Value> {
    rows.iter()
        .find(|r| r["section"] == section && r["item"] == item && r["key"] == key)
        .map(|r| &r["value"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_exports_hold_the_setup_and_no_secrets() {
    let env = env().await;
    let app = &env.app;
    add_user(app, "olga", "operator").await;
    let r = app
        .req(reqwest::Method::POST, "/api/exports/schedule")
        .json(&json!({"name": "Nightly USB", "schedule": "0 3 * * *",
            "export_config": {"export_type": "device_data", "format": "csv", "date_range": "yesterday"},
            "delivery": {"method": "directory", "path": "/media/usb/kasad"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let (bytes, rows) = config_rows(app, json!({})).await;
    assert_eq!(
        value(&rows, "schedules", "Nightly USB", "delivery.path"),
        Some(&json!("/media/usb/kasad"))
    );
    assert_eq!(
        value(&rows, "schedules", "Nightly USB", "owner"),
        Some(&json!("admin"))
    );
    assert_eq!(
        value(&rows, "devices", "LAMP01", "name"),
        Some(&json!("Living Room Lamp"))
    );
    assert!(value(&rows, "devices", "HEATER01", "firmware_version").is_some());
    assert!(value(&rows, "devices", "LAMP01", "latitude").is_some());
    assert_eq!(
        value(&rows, "users", "olga", "role"),
        Some(&json!("operator"))
    );
    let perms = value(&rows, "users", "admin", "permissions").unwrap();
    assert!(perms.as_str().unwrap().contains("SYSTEM_CONFIG"), "{perms}");
    assert_eq!(
        value(&rows, "retention", "audit_logs", "compliance_hold"),
        Some(&json!(true))
    );
    assert!(value(&rows, "tariffs", "version 1", "price_per_kwh").is_some());
    assert!(value(&rows, "settings", "", "exports.max_records_per_export").is_some());
    assert!(value(&rows, "settings", "", "timezone").is_some());

    // No secret of any kind: hashes, key files (as hex or base64), tokens.
    let text = String::from_utf8(bytes).unwrap();
    for needle in ["$argon2", "password", "hash", "token"] {
        assert!(!text.to_lowercase().contains(needle), "{needle} in {text}");
    }
    for key in ["jwt.key", "audit.key", "export.key"] {
        let b = std::fs::read(env.data.path().join(key)).unwrap();
        use base64::Engine;
        for enc in [
            hex(&b),
            base64::engine::general_purpose::STANDARD.encode(&b),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&b),
        ] {
            assert!(!text.contains(&enc), "{key} leaked");
        }
    }
    assert!(!text.contains(&app.token), "the caller's token leaked");

    // Privacy options.
    let (_, rows) = config_rows(
        app,
        json!({"privacy_options": {"remove_location_data": true, "exclude_user_data": true}}),
    )
    .await;
    assert!(rows.iter().all(|r| r["section"] != "users"));
    assert!(value(&rows, "schedules", "Nightly USB", "owner").is_none());
    assert!(
        rows.iter()
            .all(|r| !r["key"].as_str().unwrap().contains("itude"))
    );
    assert!(value(&rows, "devices", "LAMP01", "name").is_some());
    let (bytes, rows) = config_rows(
        app,
        json!({"privacy_options": {"anonymize_ip_addresses": true, "hash_device_identifiers": true}}),
    )
    .await;
    let text = String::from_utf8(bytes).unwrap();
    for clear in ["LAMP01", "Living Room Lamp", "127.0.0.9"] {
        assert!(!text.contains(clear), "{clear} in {text}");
    }
    let addresses: Vec<&Value> = rows
        .iter()
        .filter(|r| r["key"] == "address")
        .map(|r| &r["value"])
        .collect();
    assert!(addresses.contains(&&json!("127.0.0.0")), "{addresses:?}");
    assert!(rows.iter().all(|r| r["key"] != "mac"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_exports_need_system_config() {
    let env = env().await;
    let app = &env.app;
    let operator = add_user(app, "otto", "operator").await;
    let r = app
        .req_as(Method::POST, "/api/exports/create", &operator)
        .json(&json!({"export_type": "configuration", "format": "csv"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["required_permission"], "SYSTEM_CONFIG", "{v}");
    let r = app
        .req(Method::POST, "/api/exports/create")
        .json(&json!({"export_type": "configuration", "format": "csv", "fields": ["x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Losing SYSTEM_CONFIG also closes the configuration exports one already has.
    let admin2 = add_user(app, "ada", "admin").await;
    let st = {
        let r = app
            .req_as(Method::POST, "/api/exports/create", &admin2)
            .json(&json!({"export_type": "configuration", "format": "csv",
                          "performance_options": {"background_processing": false}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()
    };
    let users = app.get("/api/users").await.1;
    let ada = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "ada")
        .unwrap()["user_id"]
        .clone();
    let r = app
        .req(Method::PATCH, &format!("/api/users/{ada}"))
        .json(&json!({"role": "operator"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .req_as(
            Method::GET,
            &format!(
                "/api/exports/download/{}",
                st["export_id"].as_str().unwrap()
            ),
            &admin2,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}
