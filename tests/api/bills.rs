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
    let post = |body: String| app.post_raw("/api/bills", body);
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

/// The allocation lines of a cost_analysis with `allocation` of `bill` by `method`.
async fn allocation(app: &crate::helpers::TestApp, bill: &str, method: Value) -> Vec<Value> {
    let body = json!({"export_type": "cost_analysis", "date_range": {"start": "2024-03-09", "end": "2024-03-11"},
        "allocation": {"bill_id": bill, "method": method}});
    let j: Value = serde_json::from_slice(&export_as(app, &body, "json").await).unwrap();
    j["report"]["allocation"]["tables"]["allocation"]["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no allocation in {j}"))
        .clone()
}

fn line<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["line"] == name)
        .unwrap_or_else(|| panic!("no {name} in {rows:?}"))
}

fn cents(v: &Value) -> i64 {
    (v.as_f64().unwrap() * 100.0).round() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bill_shared_out_adds_up_to_its_total_under_every_method() {
    let e = env().await;
    let app = &e.app;
    let post = |body: Value| async move {
        let r = app
            .req(Method::POST, "/api/bills")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()
    };
    let b = post(json!({"start": "2024-03-09", "end": "2024-03-11", "kwh": 100, "total": 30, "standing_charge": 6})).await;
    let id = b["bill_id"].as_str().unwrap();
    let measured = b["measured_kwh"].as_f64().unwrap();
    let weights = json!({"weights": {"HEATER01": 3, "LAMP01": 1}});
    for method in [json!("by_energy"), json!("equal"), weights.clone()] {
        let rows = allocation(app, id, method.clone()).await;
        let lines: i64 = rows
            .iter()
            .filter(|r| r["line"] != "bill total")
            .map(|r| cents(&r["total"]))
            .sum();
        assert_eq!(
            lines, 3_000,
            "{method}: the lines add up to the bill: {rows:#?}"
        );
        assert_eq!(cents(&line(&rows, "bill total")["total"]), 3_000);
        let standing: i64 = rows
            .iter()
            .filter(|r| r["line"] != "bill total")
            .map(|r| cents(&r["standing_charge"]))
            .sum();
        assert_eq!(standing, 600, "{method}");
        let u = line(&rows, "untracked");
        assert!(
            (u["energy"].as_f64().unwrap() - (100.0 - measured)).abs() < 0.002,
            "{u}"
        );
        // Energy at the bill's effective price, 0.24.
        assert!(
            (u["energy_cost"].as_f64().unwrap() - (100.0 - measured) * 0.24).abs() <= 0.01,
            "{u}"
        );
        let (heater, lamp) = (
            line(&rows, "Garage Heater"),
            line(&rows, "Living Room Lamp"),
        );
        match method.as_str() {
            Some("by_energy") => {
                let share = heater["standing_charge"].as_f64().unwrap() / 6.0;
                assert!(
                    (share - heater["energy"].as_f64().unwrap() / 100.0).abs() < 0.002,
                    "{rows:#?}"
                );
            }
            Some("equal") => {
                assert_eq!(
                    (
                        cents(&heater["standing_charge"]),
                        cents(&lamp["standing_charge"])
                    ),
                    (300, 300)
                );
                assert_eq!(cents(&u["standing_charge"]), 0);
            }
            _ => assert_eq!(
                (
                    cents(&heater["standing_charge"]),
                    cents(&lamp["standing_charge"])
                ),
                (450, 150)
            ),
        }
    }
    // Billed less than the plugs measured: the negative remainder is shown, at no cost, and the
    // lines still add up.
    let low = post(json!({"start": "2024-03-09", "end": "2024-03-11", "kwh": 50, "total": 20, "standing_charge": 2})).await;
    let rows = allocation(app, low["bill_id"].as_str().unwrap(), json!("by_energy")).await;
    let u = line(&rows, "untracked");
    assert!(
        u["energy"].as_f64().unwrap() < 0.0 && cents(&u["total"]) == 0,
        "{u}"
    );
    let lines: i64 = rows
        .iter()
        .filter(|r| r["line"] != "bill total")
        .map(|r| cents(&r["total"]))
        .sum();
    assert_eq!(lines, 2_000);
    // A bill that does not exist, or a malformed allocation, is refused.
    let bad = json!({"export_type": "cost_analysis", "format": "json", "allocation": {"bill_id": id, "method": "by_magic"}});
    let (s, v) = app.post_raw("/api/exports/create", bad.to_string()).await;
    assert_eq!(s, 400, "{v}");
    let huge = json!({"export_type": "cost_analysis", "format": "json", "allocation": {"bill_id": id, "method": {"weights": {"HEATER01": 1e20}}}});
    let (s, v) = app.post_raw("/api/exports/create", huge.to_string()).await;
    assert_eq!(s, 400, "a weight that would overflow is refused: {v}");
    let other = json!({"export_type": "device_data", "format": "csv", "allocation": {"bill_id": id, "method": "equal"}});
    let (s, v) = app.post_raw("/api/exports/create", other.to_string()).await;
    assert_eq!(s, 400, "{v}");
}
