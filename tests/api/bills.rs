//! Utility bills against the fixed data set of the export tests (a lamp and a heater over
//! 2024-03-09..11 UTC): the reconciliation's figures exact against the daily export, a bill
//! below the measurement flagged, edits and deletes audited, bad bodies refused.

use crate::exports::{env, export_as};
use crate::helpers::login;
use reqwest::Method;
use serde_json::{Value, json};

fn round(x: f64, d: i32) -> f64 {
    let m = 10f64.powi(d);
    (x * m).round() / m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bill_is_reconciled_with_what_the_plugs_measured() {
    let e = env().await;
    let app = &e.app;
    // What the plugs measured over the three days, from the daily export.
    let daily = export_as(
        app,
        &json!({"export_type": "device_data", "date_range": {"start": "2024-03-09", "end": "2024-03-11"},
            "devices": "all", "aggregation": "daily", "fields": ["timestamp", "device_name", "energy_kwh"]}),
        "csv",
    )
    .await;
    let measured: f64 = String::from_utf8(daily)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(measured > 50.0, "{measured}");
    let post = |body: Value| async move {
        let r = app
            .req(Method::POST, "/api/bills")
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (s, b) = post(
        json!({"start": "2024-03-09", "end": "2024-03-11", "kwh": 100, "total": 30,
        "standing_charge": 6, "note": "March, part"}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert!(
        (b["measured_kwh"].as_f64().unwrap() - measured).abs() < 0.002,
        "{b}"
    );
    let m = b["measured_kwh"].as_f64().unwrap();
    assert_eq!(b["coverage"].as_f64().unwrap(), round(m / 100.0, 4));
    assert_eq!(b["untracked_kwh"].as_f64().unwrap(), round(100.0 - m, 3));
    assert_eq!(b["untracked_negative"], false);
    assert_eq!(b["effective_price"], 0.24);
    // The configured flat price is 0.15 without taxes.
    assert_eq!(
        b["priced_energy_cost"].as_f64().unwrap(),
        round(m * 0.15, 2)
    );
    assert_eq!(
        b["difference"].as_f64().unwrap(),
        round(m * 0.15 - m * 0.24, 2)
    );
    assert_eq!(
        (&b["period_start"], &b["period_end"]),
        (
            &json!("2024-03-09T00:00:00.000Z"),
            &json!("2024-03-12T00:00:00.000Z")
        )
    );
    let id = b["bill_id"].as_str().unwrap().to_owned();
    // A bill below what the plugs measured: the negative remainder is shown and flagged.
    let r = app
        .req(Method::PUT, &format!("/api/bills/{id}"))
        .json(&json!({"start": "2024-03-09", "end": "2024-03-11", "kwh": 50, "total": 20}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["untracked_negative"], true, "{b}");
    assert_eq!(b["untracked_kwh"].as_f64().unwrap(), round(50.0 - m, 3));
    assert_eq!(b["effective_price"], 0.4);
    let (s, list) = app.get("/api/bills").await;
    assert_eq!((s, list["bills"].as_array().unwrap().len()), (200, 1));
    assert_eq!(
        app.req(Method::DELETE, &format!("/api/bills/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(app.get(&format!("/api/bills/{id}")).await.0, 404);
    let (_, audit) = app.get("/api/audit?event_types=BILL_CHANGED").await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{audit:#}");
    assert!(
        entries
            .iter()
            .any(|x| x["details"]["old"]["kwh"] == 100.0 && x["details"]["new"]["kwh"] == 50.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bills_and_strangers_are_refused() {
    let e = env().await;
    let app = &e.app;
    let post = |body: String| async move {
        let r = app
            .req(Method::POST, "/api/bills")
            .header("content-type", "application/json")
            .header("connection", "close")
            .body(body)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let ok = json!({"start": "2024-03-01", "end": "2024-03-31", "kwh": 10, "total": 5});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b.to_string()
    };
    for (what, body, status) in [
        (
            "over the body limit",
            with("note", json!("n".repeat(100_000))),
            413,
        ),
        ("malformed", "{\"start\":".to_owned(), 400),
        ("reversed range", with("end", json!("2024-02-01")), 400),
        ("no energy", with("kwh", json!(0)), 400),
        ("negative total", with("total", json!(-1)), 400),
        (
            "standing over total",
            with("standing_charge", json!(9)),
            400,
        ),
        ("unknown key", with("vat", json!(1)), 400),
        ("too long", with("start", json!("2019-01-01")), 400),
    ] {
        let (s, v) = post(body).await;
        assert_eq!(s, status, "{what}: {v}");
    }
    let r = app
        .req(Method::POST, "/api/users")
        .json(&json!({"username": "otto", "password": "operator-password-1", "role": "operator"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let token = login(&app.client, &app.base, "otto", "operator-password-1").await;
    assert_eq!(app.status_as(Method::GET, "/api/bills", &token).await, 403);
}
