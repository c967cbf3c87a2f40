//! The audit_logs export: rows carry sequence numbers and MACs, filters select a slice that
//! still verifies on its own (`kasad audit verify-export`, with the appliance's audit key),
//! tampering with one row makes verification fail, and the export needs AUDIT_READ.

use crate::exports::{add_user, download, env, finished, refused};
use kasad::export::kind::audit_logs::{parse_export, verify};
use reqwest::Method;
use serde_json::{Value, json};

fn verify_cli(data: &std::path::Path, file: &std::path::Path) -> (bool, String) {
    let cfg = data.join("verify.toml");
    std::fs::write(&cfg, format!("data_dir = {data:?}\n")).unwrap();
    crate::helpers::kasad_cli(&[
        "audit".as_ref(),
        "verify-export".as_ref(),
        "--config".as_ref(),
        cfg.as_ref(),
        file.as_ref(),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_exports_verify_and_tampering_is_found() {
    let env = env().await;
    let app = &env.app;
    // Some events: a user created (INFO), a failed login (WARNING), logins.
    add_user(app, "olga", "operator").await;
    let r = app
        .client
        .post(format!("{}/api/auth/login", app.base))
        .json(&json!({"username": "olga", "password": "wrong-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let range = json!({"start": "2024-03-01", "end": "2024-03-31"});
    let key = kasad::auth::keys::load(&env.data.path().join("audit.key")).unwrap();

    // Everything, as CSV: every row verifies and consecutive rows link.
    let all = finished(
        app,
        json!({"export_type": "audit_logs", "format": "csv", "date_range": range}),
    )
    .await;
    let (s, csv, _) = download(app, all["export_id"].as_str().unwrap()).await;
    assert_eq!(s, 200);
    let text = String::from_utf8(csv.clone()).unwrap();
    assert!(text.starts_with("seq,timestamp,ts_ms,event_type,severity,user_id,username,client,resource,details,prev,mac,chain\r\n"), "{text}");
    let rows = parse_export(&csv).unwrap();
    let entries: Vec<_> = rows.iter().map(|r| r.entry.clone()).collect();
    assert!(entries.len() >= 4, "{text}");
    assert_eq!(verify(&key, &rows), Ok(entries.len()));
    for w in entries.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
        assert_eq!(w[1].prev, w[0].mac);
    }
    let (s, v) = app.get("/api/audit/verify").await;
    assert_eq!((s, v["ok"].as_bool()), (200, Some(true)), "{v}");

    // A filtered slice (warnings only, JSON) still verifies on its own, by the command too.
    let warn = finished(
        app,
        json!({"export_type": "audit_logs", "format": "json", "date_range": range,
               "severity_levels": ["warning"]}),
    )
    .await;
    let (_, json_bytes, _) = download(app, warn["export_id"].as_str().unwrap()).await;
    let doc: Value = serde_json::from_slice(&json_bytes).unwrap();
    assert_eq!(doc["metadata"]["export_type"], "audit_logs");
    let slice = parse_export(&json_bytes).unwrap();
    assert!(!slice.is_empty());
    assert!(
        slice
            .iter()
            .all(|e| e.entry.event.severity == kasad::audit::Severity::Warning)
    );
    assert!(slice.len() < entries.len());
    assert_eq!(verify(&key, &slice), Ok(slice.len()));
    let file = env.data.path().join("warnings.json");
    std::fs::write(&file, &json_bytes).unwrap();
    let (ok, out) = verify_cli(env.data.path(), &file);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("OK: {} entries", slice.len())),
        "{out}"
    );

    // One changed field in one row: the command names that entry and fails.
    let victim = entries
        .iter()
        .find(|e| e.event.username.as_deref() == Some("olga"))
        .unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{},", victim.seq)))
        .unwrap();
    let tampered = text.replacen(line, &line.replacen("olga", "oleg", 1), 1);
    assert_ne!(tampered, text);
    let file = env.data.path().join("tampered.csv");
    std::fs::write(&file, &tampered).unwrap();
    let (ok, out) = verify_cli(env.data.path(), &file);
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("entry {}", victim.seq)), "{out}");
    // The readable time is not under the MAC, but it must agree with ts_ms.
    let ts_text = line.split(',').nth(1).unwrap();
    let moved = text.replacen(
        line,
        &line.replacen(ts_text, &ts_text.replacen("2024", "2023", 1), 1),
        1,
    );
    std::fs::write(&file, &moved).unwrap();
    let (ok, out) = verify_cli(env.data.path(), &file);
    assert!(!ok && out.contains("timestamp does not match"), "{out}");
    // As a PDF the log is readable (cut to its columns), titled, with its event names.
    let pdf = crate::exports::export_as(
        app,
        &json!({"export_type": "audit_logs", "date_range": range}),
        "pdf",
    )
    .await;
    let file = env.data.path().join("audit.pdf");
    std::fs::write(&file, &pdf).unwrap();
    let shown = crate::pdf::poppler("pdftotext", &["-layout"], &file);
    assert!(
        shown.contains("Audit log export") && shown.contains("USER_CREATED"),
        "{shown}"
    );
    // A row removed from the file breaks the file's chain at the next row.
    let second = text.lines().nth(2).unwrap();
    let removed = text.replacen(&format!("{second}\r\n"), "", 1);
    std::fs::write(&file, &removed).unwrap();
    let (ok, out) = verify_cli(env.data.path(), &file);
    assert!(
        !ok && out.contains("were removed, added or reordered"),
        "{out}"
    );
    // A row whose seq was renumbered to close the gap fails its MAC.
    let mut renumbered = rows.clone();
    let gap = renumbered.remove(1);
    renumbered[1].entry.seq = gap.entry.seq;
    assert!(verify(&key, &renumbered).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_exports_need_audit_read_and_refuse_device_options() {
    let env = env().await;
    let app = &env.app;
    let operator = add_user(app, "otto", "operator").await;
    let body = json!({"export_type": "audit_logs", "format": "csv"});
    let r = app
        .req_as(Method::POST, "/api/exports/create", &operator)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["required_permission"], "AUDIT_READ", "{v}");
    for (extra, field) in [
        (json!({"fields": ["power_w"]}), "fields"),
        (json!({"aggregation": "daily"}), "aggregation"),
        (json!({"severity_levels": ["loud"]}), "severity_levels"),
        (json!({"event_types": ["NOPE"]}), "event_types"),
        (
            json!({"privacy_options": {"anonymize_ip_addresses": true}}),
            "anonymize_ip_addresses",
        ),
    ] {
        let v = refused(app, &body, &extra).await;
        assert!(v["message"].as_str().unwrap().contains(field), "{v}");
    }
}
