//! Alerts end to end with simulated devices and a manual clock: a washer programme is one
//! `appliance_finished` (by e-mail through a real SMTP server and by webhook), `power_above`
//! waits its minutes, the cool-down and quiet hours hold notices, `device_offline` raises and
//! resolves, a restart keeps open alerts open without a second notice, and rule bodies are
//! checked (a viewer gets 403; hostile bodies are refused with clear errors).

use crate::helpers::{ATTEMPTS, STEP, TestApp, login, start_sims_with};
use crate::schedules::{mails, smtp_server};
use kasad::clock::{ManualClock, SharedClock};
use kasad::sim::load::WASHER_START_S;
use kasad::sim::{Fault, Load, Model, SimDevice, SimSpec};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const MIN: i64 = 60_000;
/// 2024-05-06T00:00:00Z.
const DAY0: i64 = 1_714_953_600_000;

/// Webhook bodies received.
type Hooks = Arc<Mutex<Vec<Value>>>;

/// A webhook receiver on loopback that answers 204 and keeps every body.
async fn receiver() -> (String, Hooks) {
    let hooks: Hooks = Arc::default();
    let h = hooks.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let h = h.clone();
            async move {
                h.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hooks)
}

struct Env {
    app: TestApp,
    clock: Arc<ManualClock>,
    sims: Vec<kasad::sim::SimHandle>,
    /// No device answers: no new readings to wait for.
    away: bool,
    /// The data directory (outlives a daemon, for a restart).
    data: std::path::PathBuf,
    _data: Arc<tempfile::TempDir>,
}

fn plug(i: u32, load: Load) -> SimDevice {
    SimDevice::new(SimSpec::numbered(i, Model::Hs110V4, vec![load]), DAY0)
}

/// Starts `devices` and a daemon, both on a manual clock at `at`, allowing webhooks to `hook`
/// and e-mail to example.com through `smtp_port`.
async fn env(at: i64, devices: Vec<SimDevice>, hook: &str, smtp_port: u16) -> Env {
    let clock = Arc::new(ManualClock::new(at));
    let shared: SharedClock = clock.clone();
    let sims = start_sims_with(devices, shared.clone()).await;
    let hook = hook.to_owned();
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let data = dir.path().to_path_buf();
    let d = data.clone();
    let hook_port = reqwest::Url::parse(&hook).unwrap().port().unwrap();
    let root = d.clone();
    let app = TestApp::with_sims_and_clock(sims.clone(), shared, move |s| {
        crate::schedules::hooks(s, &root, smtp_port, hook_port);
        s.data_dir = d;
    })
    .await;
    let n = sims.len();
    let e = Env {
        app,
        clock,
        sims,
        away: false,
        data,
        _data: dir,
    };
    e.app
        .wait_devices("the devices polled", |d| {
            d.len() == n && d.iter().all(|x| x["data_points"].as_u64() > Some(0))
        })
        .await;
    e
}

impl Env {
    /// Moves the clock on by `ms` and waits for two alert evaluations after it (the second one
    /// surely saw a poll cycle at the new time); logs in again when tokens would have expired.
    async fn advance(&mut self, ms: i64) {
        let points =
            async |app: &TestApp| crate::binary::total_points(&app.get("/api/devices").await.1);
        let before = points(&self.app).await;
        self.clock.advance(ms);
        let app = &mut self.app;
        app.token = login(
            &app.client,
            &app.base,
            "admin",
            crate::helpers::ADMIN_PASSWORD,
        )
        .await;
        // A reading at the new time is in the database (unless every device is away)…
        for _ in 0..ATTEMPTS {
            if self.away || points(app).await > before {
                break;
            }
            tokio::time::sleep(STEP).await;
        }
        // …and two evaluations ran after it.
        app.two_evaluations().await;
    }

    fn fault(&mut self, f: Option<Fault>) {
        self.away = f.is_some();
        self.sims[0].set_fault(f);
    }
}

fn raised(hooks: &Hooks, rule: &str, event: &str) -> usize {
    hooks
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h["rule_id"] == rule && h["event"] == event)
        .count()
}

/// Waits (bounded) for `n` webhook calls of `event` for `rule`: deliveries run in the background.
async fn hooks_reach(hooks: &Hooks, rule: &str, event: &str, n: usize) {
    for _ in 0..ATTEMPTS {
        if raised(hooks, rule, event) >= n {
            return;
        }
        tokio::time::sleep(STEP).await;
    }
    panic!(
        "{event} for {rule}: {} calls, wanted {n}",
        raised(hooks, rule, event)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_washer_programme_is_one_appliance_finished_by_mail_and_webhook() {
    let smtp = smtp_server().await;
    let (hook, hooks) = receiver().await;
    let start = DAY0 + WASHER_START_S * 1_000 - 4 * MIN;
    let mut e = env(start, vec![plug(60, Load::Washer)], &hook, smtp.port).await;
    let rule = e
        .app
        .alert_rule(
            json!({"name": "Washer done", "kind": "appliance_finished", "devices": "all",
            "channels": ["page", {"method": "email", "recipients": ["me@example.com"]},
                {"method": "webhook", "url": hook}]}),
        )
        .await;
    // Two simulated minutes per step through the programme (75 minutes, two pauses) and the
    // 15 quiet minutes after it.
    for _ in 0..50 {
        e.advance(2 * MIN).await;
    }
    let list = e.app.alerts_of(&rule).await;
    assert_eq!(
        list.len(),
        1,
        "one alert for one programme, not one per pause: {list:#?}"
    );
    let a = &list[0];
    assert_eq!(
        (&a["kind"], &a["state"]),
        (&json!("appliance_finished"), &json!("open"))
    );
    assert!(a["message"].as_str().unwrap().contains("finished"), "{a}");
    let kwh = a["value"].as_f64().unwrap();
    assert!(
        (0.8..0.9).contains(&kwh),
        "the programme's energy: {kwh} kWh"
    );
    hooks_reach(&hooks, &rule, "alert.raised", 1).await;
    for _ in 0..ATTEMPTS {
        if !mails(&smtp).as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(STEP).await;
    }
    let m = mails(&smtp);
    assert_eq!(m.as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m[0]["subject"], "kasad alert: Washer done");
    assert!(m[0]["text"].as_str().unwrap().contains("finished"), "{m}");
    // Nothing more while the washer rests.
    e.advance(30 * MIN).await;
    assert_eq!(e.app.alerts_of(&rule).await.len(), 1);
    assert_eq!(raised(&hooks, &rule, "alert.raised"), 1);
    // Acknowledged by someone: audited.
    let id = a["alert_id"].as_str().unwrap();
    let (s, v) = e.app.post(&format!("/api/alerts/{id}/acknowledge")).await;
    assert_eq!((s, &v["state"]), (200, &json!("acknowledged")), "{v}");
    let (_, audit) = e
        .app
        .get("/api/audit?event_types=ALERT_RAISED,ALERT_ACKNOWLEDGED")
        .await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2, "{audit:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_above_waits_its_minutes_and_cool_down_and_quiet_hours_hold_notices() {
    let (hook, hooks) = receiver().await;
    // 06:00 UTC; the daemon's zone is UTC.
    let mut e = env(
        DAY0 + 6 * 60 * MIN,
        vec![plug(61, Load::Constant(100_000))],
        &hook,
        25,
    )
    .await;
    let web = json!({"method": "webhook", "url": hook});
    let slow = e
        .app
        .alert_rule(
            json!({"name": "Heater on", "kind": "power_above", "threshold_w": 50, "for_minutes": 10,
            "cooldown_minutes": 30, "channels": [web]}),
        )
        .await;
    let quiet = e
        .app
        .alert_rule(
            json!({"name": "At night", "kind": "power_above", "threshold_w": 50,
            "quiet_hours": {"start": "22:00", "end": "06:30"}, "channels": [web]}),
        )
        .await;
    // The rule shows its webhook's origin only (a webhook's path is often its token).
    let (_, shown) = e.app.get(&format!("/api/alerts/rules/{slow}")).await;
    let origin = hook.trim_end_matches("/hook");
    assert_eq!(shown["channels"][0]["url"], origin, "{shown}");
    // "Send test": a test notice on every channel now.
    let (s, v) = e.app.post(&format!("/api/alerts/rules/{slow}/test")).await;
    assert_eq!((s, &v["results"][0]["ok"]), (200, &json!(true)), "{v}");
    hooks_reach(&hooks, &slow, "alert.test", 1).await;
    e.advance(MIN).await;
    // Quiet hours until 06:30: raised and listed, not sent.
    assert_eq!(e.app.alerts_of(&quiet).await.len(), 1);
    assert_eq!(raised(&hooks, &quiet, "alert.raised"), 0);
    e.advance(4 * MIN).await;
    assert_eq!(
        e.app.alerts_of(&slow).await.len(),
        0,
        "not before 10 minutes"
    );
    e.advance(6 * MIN).await;
    assert_eq!(
        e.app.alerts_of(&slow).await.len(),
        1,
        "raised after 10 minutes"
    );
    hooks_reach(&hooks, &slow, "alert.raised", 1).await;
    // The cool-down: nothing again before 30 minutes, once after.
    e.advance(20 * MIN).await;
    assert_eq!(raised(&hooks, &slow, "alert.raised"), 1);
    // Now 06:31: the quiet rule's notice goes out.
    hooks_reach(&hooks, &quiet, "alert.raised", 1).await;
    e.advance(12 * MIN).await;
    hooks_reach(&hooks, &slow, "alert.raised", 2).await;
    assert_eq!(
        e.app.alerts_of(&slow).await.len(),
        1,
        "still one alert, told again"
    );
    // Snoozed: no notice after the next cool-down.
    let id = e.app.alerts_of(&slow).await[0]["alert_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = e
        .app
        .req(Method::POST, &format!("/api/alerts/{id}/snooze"))
        .json(&json!({"minutes": 120}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    e.advance(40 * MIN).await;
    assert_eq!(raised(&hooks, &slow, "alert.raised"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_offline_raises_and_resolves_and_a_restart_notifies_nothing_again() {
    let (hook, hooks) = receiver().await;
    let mut e = env(
        DAY0 + 12 * 60 * MIN,
        vec![plug(62, Load::Constant(20_000))],
        &hook,
        25,
    )
    .await;
    let rule = e
        .app
        .alert_rule(
            json!({"name": "Freezer gone", "kind": "device_offline", "for_minutes": 5,
            "channels": ["page", {"method": "webhook", "url": hook}]}),
        )
        .await;
    e.advance(MIN).await;
    assert!(e.app.alerts_of(&rule).await.is_empty());
    e.fault(Some(Fault::Garbage));
    e.advance(6 * MIN).await;
    let list = e.app.alerts_of(&rule).await;
    assert_eq!(
        (list.len(), &list[0]["state"]),
        (1, &json!("open")),
        "{list:#?}"
    );
    hooks_reach(&hooks, &rule, "alert.raised", 1).await;
    e.fault(None);
    // Back within the poller's longest back-off (5 minutes): its readings clear the alert.
    e.advance(6 * MIN).await;
    assert_eq!(e.app.alerts_of(&rule).await[0]["state"], "resolved");
    hooks_reach(&hooks, &rule, "alert.resolved", 1).await;
    // Away again; then the daemon restarts while the alert is open.
    e.fault(Some(Fault::Garbage));
    e.advance(6 * MIN).await;
    hooks_reach(&hooks, &rule, "alert.raised", 2).await;
    let open: Vec<Value> = e
        .app
        .alerts_of(&rule)
        .await
        .into_iter()
        .filter(|a| a["state"] == "open")
        .collect();
    assert_eq!(open.len(), 1);
    let Env {
        app,
        clock,
        sims,
        data,
        _data,
        ..
    } = e;
    app.stop().await;
    let shared: SharedClock = clock.clone();
    let app = TestApp::on_data(&data, shared, |s| {
        s.delivery.webhook_allow = vec![hook.clone()];
    })
    .await;
    let mut e = Env {
        app,
        clock,
        sims,
        away: true,
        data,
        _data,
    };
    e.advance(MIN).await;
    e.advance(MIN).await;
    let after: Vec<Value> = e
        .app
        .alerts_of(&rule)
        .await
        .into_iter()
        .filter(|a| a["state"] == "open")
        .collect();
    assert_eq!(after.len(), 1, "{after:#?}");
    assert_eq!(after[0]["alert_id"], open[0]["alert_id"]);
    assert_eq!(
        raised(&hooks, &rule, "alert.raised"),
        2,
        "no second notice after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_cannot_make_rules_and_hostile_bodies_are_refused() {
    let e = env(
        DAY0,
        vec![plug(63, Load::Constant(5_000))],
        "http://127.0.0.1:9/hook",
        25,
    )
    .await;
    let app = &e.app;
    let r = app
        .req(Method::POST, "/api/users")
        .json(&json!({"username": "vera", "password": "viewer-password-1", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let viewer = login(&app.client, &app.base, "vera", "viewer-password-1").await;
    let ok = json!({"name": "x", "kind": "power_above", "threshold_w": 5, "channels": ["page"]});
    let as_viewer = app
        .req_as(Method::POST, "/api/alerts/rules", &viewer)
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(as_viewer.status(), 403);
    assert_eq!(
        app.status_as(Method::GET, "/api/alerts/rules", &viewer)
            .await,
        200
    );
    let post = |body: String| app.post_raw("/api/alerts/rules", body);
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b.to_string()
    };
    let cases = [
        (
            "over the body limit",
            with("name", json!("n".repeat(100_000))),
            413,
        ),
        ("malformed", "{\"name\": ".into(), 400),
        ("unknown kind", with("kind", json!("fire")), 400),
        ("unknown key", with("surprise", json!(true)), 400),
        ("long name", with("name", json!("n".repeat(101))), 400),
        ("negative threshold", with("threshold_w", json!(-5)), 400),
        ("no channel", with("channels", json!([])), 400),
        ("sms", with("channels", json!(["sms"])), 400),
        (
            "webhook elsewhere",
            with(
                "channels",
                json!([{"method": "webhook", "url": "http://evil.test/hook"}]),
            ),
            400,
        ),
        (
            "mail elsewhere",
            with(
                "channels",
                json!([{"method": "email", "recipients": ["a@evil.test"]}]),
            ),
            400,
        ),
        ("unknown device", with("devices", json!(["NOPE"])), 400),
        (
            "quiet hours",
            with("quiet_hours", json!({"start": "7", "end": "x"})),
            400,
        ),
    ];
    for (what, body, status) in cases {
        let (s, v) = post(body).await;
        assert_eq!(s, status, "{what}: {v}");
        if s == 400 {
            assert!(
                v["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{what}: {v}"
            );
        }
    }
    let (s, v) = post(with(
        "channels",
        json!([{"method": "webhook", "url": "http://127.0.0.1:9/hook"}]),
    ))
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(
        app.get("/api/alerts/rules").await.1["rules"]
            .as_array()
            .unwrap()
            .len()
            == 1
    );
}
