//! Caps on what one user's requests may take from everyone's daemon: the distinct-value
//! budget and custom-field count of exports, the preview rate, and the schedule caps
//! (`[schedules]`: count, interval, runs per hour, share of the export quota). Each fails on
//! kasad before these limits.

use crate::exports::{Env, add_user, env_with};
use crate::helpers::{ATTEMPTS, STEP, TestApp};
use reqwest::Method;
use serde_json::{Value, json};

fn range() -> Value {
    json!({"start": "2024-03-09", "end": "2024-03-11"})
}

async fn post(app: &TestApp, token: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = app
        .req_as(Method::POST, path, token)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Finding 7: `COUNT(DISTINCT …)` was bounded per set, so many fields with many sets could
/// hold gigabytes. One budget now covers the whole request.
#[tokio::test]
async fn distinct_values_share_one_budget_per_request() {
    let e = env_with(|s| {
        s.exports.rate_limit_per_hour = 1000;
        s.exports.distinct_budget = 1000;
    })
    .await;
    let app = &e.app;
    let field = |name: &str| json!({"name": name, "formula": "COUNT(DISTINCT total_kwh)"});
    let body = |fields: Vec<Value>| {
        json!({"export_type": "device_data", "format": "csv", "date_range": range(),
            "custom_fields": fields})
    };
    let (s, v) = post(
        app,
        &app.token,
        "/api/exports/preview",
        &body(vec![field("a")]),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let one = v["summary"]["a"]["value"].as_f64().unwrap();
    assert!(one > 500.0 && one <= 1000.0, "one set holds {one}");
    // Two such sets need more than the budget together: refused, naming the field.
    let (s, v) = post(
        app,
        &app.token,
        "/api/exports/preview",
        &body(vec![field("a"), field("b")]),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let m = v["message"].as_str().unwrap();
    // The field whose set found the budget used up is named.
    assert!(
        m.contains("custom_fields \"") && m.contains("distinct_budget"),
        "{m}"
    );
    // An export job fails the same way.
    let mut job = body(vec![field("a"), field("b")]);
    job["performance_options"] = json!({"background_processing": false});
    let (s, v) = post(app, &app.token, "/api/exports/create", &job).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "failed", "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("distinct_budget"),
        "{v}"
    );
    // At most [exports] max_custom_fields (10) fields.
    let many: Vec<Value> = (0..11)
        .map(|i| json!({"name": format!("f{i}"), "formula": "power_w * 2"}))
        .collect();
    let (s, v) = post(app, &app.token, "/api/exports/preview", &body(many)).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("at most 10"), "{v}");
    e.app.stop().await;
}

/// Previews were not rate-limited; now `[exports] preview_rate_per_minute` per user.
#[tokio::test]
async fn previews_are_limited_per_user_and_minute() {
    let e = env_with(|s| s.exports.preview_rate_per_minute = 3).await;
    let app = &e.app;
    let url = "/api/exports/preview?export_type=device_data&start=2024-03-09&end=2024-03-09";
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = app.req(Method::GET, url).send().await.unwrap();
        if r.status() == 429 {
            let wait: i64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&wait), "Retry-After {wait}");
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
    // Another user has a budget of their own.
    let olga = add_user(app, "olga", "operator").await;
    assert_eq!(app.status_as(Method::GET, url, &olga).await, 200);
    let (_, audit) = app
        .get("/api/audit?event_types=RATE_LIMIT_EXCEEDED&users=admin")
        .await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1, "{audit}");
    e.clock.advance(61_000);
    let r = app.req(Method::GET, url).send().await.unwrap();
    assert_eq!(r.status(), 200, "the minute has passed");
    e.app.stop().await;
}

fn schedule(name: &str, cron: &str) -> Value {
    json!({"name": name, "schedule": cron, "export_config": {"export_type": "device_data",
        "format": "csv", "date_range": "last_7_days", "devices": "all"}})
}

async fn schedules_of(app: &TestApp, token: &str) -> Vec<Value> {
    let r = app
        .req_as(Method::GET, "/api/exports/schedules", token)
        .send()
        .await
        .unwrap();
    r.json::<Value>().await.unwrap()["schedules"]
        .as_array()
        .unwrap()
        .clone()
}

/// Finding 8: any operator could create any number of every-minute schedules. Now count and
/// interval are capped for non-admins; schedules saved before stay and are flagged.
#[tokio::test]
async fn schedule_count_and_interval_are_capped_and_old_ones_flagged() {
    let loose = env_with(|s| s.exports.rate_limit_per_hour = 1000).await;
    add_user(&loose.app, "olga", "operator").await;
    // Before the caps (here: a daemon whose caps allow it), three schedules, one every minute.
    let data = loose.data;
    let app = loose.app;
    let dir = data.path().to_path_buf();
    app.stop().await;
    let clock = std::sync::Arc::new(kasad::clock::ManualClock::new(kasad::clock::Clock::now_ms(
        &kasad::clock::SystemClock,
    )));
    let start = |caps: (usize, u64)| {
        let (dir, clock) = (dir.clone(), clock.clone());
        async move {
            TestApp::on_data(&dir, clock, move |s| {
                s.schedules.max_per_user = caps.0;
                s.schedules.min_interval =
                    kasad::config::Dur(std::time::Duration::from_secs(caps.1));
            })
            .await
        }
    };
    let app = start((100, 60)).await;
    let olga = crate::helpers::login(&app.client, &app.base, "olga", "a-long-password-1").await;
    for (n, cron) in [("a", "* * * * *"), ("b", "0 * * * *"), ("c", "0 3 * * *")] {
        let (s, v) = post(&app, &olga, "/api/exports/schedule", &schedule(n, cron)).await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["over_limit"], false, "{v}");
        clock.advance(1_000);
    }
    app.stop().await;
    let _ = olga;

    // Now the defaults' kind of caps: 2 schedules, 15 minutes apart at least.
    let app = start((2, 15 * 60)).await;
    let olga = crate::helpers::login(&app.client, &app.base, "olga", "a-long-password-1").await;
    let list = schedules_of(&app, &olga).await;
    let flag = |name: &str| {
        let s = list.iter().find(|s| s["name"] == name).unwrap();
        (s["over_limit"].clone(), s["over_limit_reason"].clone())
    };
    let (a, why) = flag("a");
    assert_eq!(a, true);
    assert!(why.as_str().unwrap().contains("min_interval"), "{why}");
    assert_eq!(flag("b").0, false);
    let (c, why) = flag("c");
    assert_eq!(c, true, "the third of a user allowed two");
    assert!(why.as_str().unwrap().contains("max_per_user"), "{why}");
    // A fourth is refused; so is an edit that keeps a schedule too frequent.
    let (s, v) = post(
        &app,
        &olga,
        "/api/exports/schedule",
        &schedule("d", "0 4 * * *"),
    )
    .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (400, Some("SCHEDULE_LIMIT_EXCEEDED")),
        "{v}"
    );
    let id_a = list.iter().find(|s| s["name"] == "a").unwrap()["schedule_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let put = |body: Value| {
        app.req_as(
            Method::PUT,
            &format!("/api/exports/schedules/{id_a}"),
            &olga,
        )
        .json(&body)
        .send()
    };
    let r = put(json!({"schedule": "*/5 * * * *"})).await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["message"].as_str().unwrap().contains("every 5 min"),
        "{v}"
    );
    // Edited into the caps, the flag goes.
    let r = put(json!({"schedule": "*/30 * * * *"})).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["over_limit"], false);
    // Admins are exempt.
    for (n, cron) in [("x", "* * * * *"), ("y", "* * * * *"), ("z", "* * * * *")] {
        let (s, v) = post(
            &app,
            &app.token,
            "/api/exports/schedule",
            &schedule(n, cron),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["over_limit"], false);
    }
    app.stop().await;
    drop(data);
}

async fn run_now(app: &TestApp, token: &str, id: &str) -> (u16, Value) {
    post(
        app,
        token,
        &format!("/api/exports/schedules/{id}/run"),
        &Value::Null,
    )
    .await
}

async fn wait_run(app: &TestApp, token: &str, id: &str) -> Value {
    for _ in 0..ATTEMPTS {
        let r = app
            .req_as(Method::GET, &format!("/api/exports/schedules/{id}"), token)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        if v["last_run"]["status"]
            .as_str()
            .is_some_and(|s| s != "running")
        {
            return v["last_run"].clone();
        }
        tokio::time::sleep(STEP).await;
    }
    panic!("the run of {id} never finished");
}

/// Runs per hour and the share of the export quota hold for a user's schedules (not for an
/// admin's), and `require_mount: false` needs SYSTEM_CONFIG.
#[tokio::test]
async fn schedule_runs_per_hour_and_quota_share_are_capped() {
    let root = tempfile::tempdir().unwrap();
    let e: Env = env_with(|s| {
        s.exports.rate_limit_per_hour = 1000;
        s.schedules.max_runs_per_hour = 2;
        // 1 MiB quota, 5 % of it (52 KB) per user: one export of the fixture is larger.
        s.exports.storage_quota_mb = 1;
        s.schedules.quota_share_percent = 5;
        s.delivery.directory_roots = vec![root.path().to_path_buf()];
    })
    .await;
    let app = &e.app;
    let olga = add_user(app, "olga", "operator").await;
    let mut ids = Vec::new();
    for n in ["a", "b", "c"] {
        let mut body = schedule(n, "0 3 * * *");
        body["export_config"]["format"] = json!("json");
        let (s, v) = post(app, &olga, "/api/exports/schedule", &body).await;
        assert_eq!(s, 201, "{v}");
        ids.push(v["schedule_id"].as_str().unwrap().to_owned());
    }
    let (s, v) = run_now(app, &olga, &ids[0]).await;
    assert_eq!(s, 202, "{v}");
    let first = wait_run(app, &olga, &ids[0]).await;
    assert_eq!(first["status"], "completed", "{first}");
    // The share is used up by the first export: the second run is refused, clearly.
    let (s, v) = run_now(app, &olga, &ids[1]).await;
    assert_eq!(s, 507, "{v}");
    assert!(v["message"].as_str().unwrap().contains("share"), "{v}");
    // Two runs in the hour were started; the third is held back.
    let (s, v) = run_now(app, &olga, &ids[2]).await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (429, Some("RATE_LIMIT_EXCEEDED")),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains("max_runs_per_hour"),
        "{v}"
    );
    // An admin's schedule is exempt from both.
    let (s, v) = post(
        app,
        &app.token,
        "/api/exports/schedule",
        &schedule("adm", "0 3 * * *"),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let adm = v["schedule_id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        let (s, v) = run_now(app, &app.token, &adm).await;
        assert_eq!(s, 202, "{v}");
        wait_run(app, &app.token, &adm).await;
    }
    // Writing to an unmounted directory is the admin's call.
    let mut body = schedule("usb", "0 3 * * *");
    body["delivery"] =
        json!({"method": "directory", "path": root.path().join("x"), "require_mount": false});
    let (s, v) = post(app, &olga, "/api/exports/schedule", &body).await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (403, Some("PERMISSION_DENIED")),
        "{v}"
    );
    let (s, v) = post(app, &app.token, "/api/exports/schedule", &body).await;
    assert_eq!(s, 201, "{v}");
    e.app.stop().await;
}
