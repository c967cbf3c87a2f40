//! Scheduled exports end to end, with the scheduler driven by a manual clock: the API
//! (validation, allow-lists, ownership, audit), delivery every minute into a directory (a
//! concurrent reader never sees a partial file), to a real SMTP server (aiosmtpd on loopback,
//! read back by Python's e-mail parser), to a webhook receiver on loopback (retried, signature
//! checked with an independent HMAC), an unmounted target, and a restart that keeps the
//! schedules and catches up a missed run once.

use crate::exports::{Env, add_user, env_with};
use crate::helpers::{ATTEMPTS, STEP, TestApp, free_port};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const MIN: i64 = 60_000;

/// Delivery settings of the tests: `root` allowed for directories, webhooks under
/// `http://127.0.0.1:<hook_port>/hook`, example.com recipients, an SMTP server at `smtp_port`,
/// quick retries.
fn delivery(s: &mut kasad::config::Settings, root: &Path, smtp_port: u16) {
    hooks(s, root, smtp_port, 9);
}

pub(crate) fn hooks(s: &mut kasad::config::Settings, root: &Path, smtp_port: u16, hook_port: u16) {
    s.exports.rate_limit_per_hour = 1000;
    s.delivery.directory_roots = vec![root.to_path_buf()];
    s.delivery.webhook_allow = vec![format!("http://127.0.0.1:{hook_port}/hook")];
    s.delivery.email_allow_domains = vec!["example.com".into()];
    s.delivery.retries = 2;
    s.delivery.retry_backoff = kasad::config::Dur(std::time::Duration::from_millis(50));
    s.smtp.host = "127.0.0.1".into();
    s.smtp.port = smtp_port;
    s.smtp.tls = "none".into();
    s.smtp.from = "kasad <kasad@example.com>".into();
    s.http.public_url = Some("http://kasa.test".into());
}

fn config() -> Value {
    json!({"export_type": "device_data", "format": "csv", "date_range": "last_7_days", "devices": "all"})
}

async fn create(app: &TestApp, token: &str, body: &Value) -> (u16, Value) {
    let r = app
        .req_as(Method::POST, "/api/exports/schedule", token)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Polls the schedule until its last run satisfies `done`.
async fn last_run(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..ATTEMPTS {
        let (s, v) = app.get(&format!("/api/exports/schedules/{id}")).await;
        assert_eq!(s, 200, "{v}");
        if done(&v["last_run"]) {
            return v["last_run"].clone();
        }
        tokio::time::sleep(STEP).await;
    }
    let (_, v) = app.get(&format!("/api/exports/schedules/{id}")).await;
    panic!("the run never got there: {v:#}");
}

fn finished(r: &Value) -> bool {
    r["status"].as_str().is_some_and(|s| s != "running")
}

async fn export(app: &TestApp, id: &str) -> Value {
    let (s, v) = app.get(&format!("/api/exports/{id}")).await;
    assert_eq!(s, 200, "{v}");
    v
}

fn sha256(b: &[u8]) -> String {
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_validated_owned_and_audited() {
    let root = tempfile::tempdir().unwrap();
    let e = env_with(|s| delivery(s, root.path(), 25)).await;
    let app = &e.app;
    let good = json!({"name": "Monthly Device Report", "schedule": "0 9 1 * *",
        "export_config": {"export_type": "device_data", "format": "excel", "date_range": "last_month",
            "devices": "all", "fields": ["timestamp", "device_name", "energy_kwh", "cost"]},
        "delivery": {"method": "email", "recipients": ["ops@example.com"], "subject": "Monthly Energy Report - {{date}}"}});
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    let dir = |p: &str| json!({"method": "directory", "path": p});
    for (body, code, says) in [
        (
            with("schedule", json!("0 9 1 *")),
            "INVALID_SCHEDULE",
            "5 fields",
        ),
        (
            with("schedule", json!("0 25 * * *")),
            "INVALID_SCHEDULE",
            "0 25",
        ),
        (
            with("timezone", json!("Mars/Olympus")),
            "INVALID_SCHEDULE",
            "Mars/Olympus",
        ),
        (
            with(
                "export_config",
                json!({"export_type": "device_data", "format": "csv", "date_range": "soon"}),
            ),
            "INVALID_DATE_RANGE",
            "last_month",
        ),
        (
            with(
                "export_config",
                json!({"export_type": "device_data", "format": "docx"}),
            ),
            "UNSUPPORTED_FORMAT",
            "docx",
        ),
        (
            with("delivery", dir("/etc")),
            "INVALID_DELIVERY",
            "directory_roots",
        ),
        (
            with("delivery", dir(&format!("{}/../x", root.path().display()))),
            "INVALID_DELIVERY",
            "..",
        ),
        (
            with(
                "delivery",
                json!({"method": "webhook", "url": "https://evil.example/hook"}),
            ),
            "INVALID_DELIVERY",
            "webhook_allow",
        ),
        (
            with(
                "delivery",
                json!({"method": "email", "recipients": ["eve@evil.example"]}),
            ),
            "INVALID_DELIVERY",
            "evil.example",
        ),
        (
            with("delivery", json!({"method": "ftp"})),
            "VALIDATION_ERROR",
            "ftp",
        ),
    ] {
        let (s, v) = create(app, &app.token, &body).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["error_code"], code, "{v}");
        assert!(v["message"].as_str().unwrap().contains(says), "{v}");
    }
    let (s, v) = app.get("/api/exports/schedules").await;
    assert_eq!(
        (s, v["total"].clone()),
        (200, json!(0)),
        "nothing invalid was stored"
    );

    // The spec's example: first day of the month at 09:00 in the daemon's zone (UTC).
    let (s, v) = create(app, &app.token, &good).await;
    assert_eq!(s, 201, "{v}");
    let id = v["schedule_id"].as_str().unwrap().to_owned();
    assert_eq!(v["next_run"], "2024-04-01T09:00:00.000Z", "{v}");
    assert_eq!(v["timezone"], "UTC");
    assert_eq!(v["enabled"], true);
    assert_eq!(v["last_run"], Value::Null);
    assert_eq!(v["delivery"]["subject"], "Monthly Energy Report - {{date}}");
    // In the schedule's own zone: 09:00 in New York is 13:00Z in April (EDT).
    let (s, v) = create(
        app,
        &app.token,
        &with("timezone", json!("America/New_York")),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["next_run"], "2024-04-01T13:00:00.000Z", "{v}");
    let ny = v["schedule_id"].as_str().unwrap().to_owned();

    // Owners: an operator sees only their own; others' schedules are "not found".
    let alice = add_user(app, "alice", "operator").await;
    let path = format!("/api/exports/schedules/{id}");
    assert_eq!(app.status_as(Method::GET, &path, &alice).await, 404);
    assert_eq!(app.status_as(Method::DELETE, &path, &alice).await, 404);
    assert_eq!(
        app.status_as(Method::POST, &format!("{path}/run"), &alice)
            .await,
        404
    );
    let (s, v) = create(app, &alice, &with("name", json!("alice's"))).await;
    assert_eq!(s, 201, "{v}");
    let r = app
        .req_as(Method::GET, "/api/exports/schedules", &alice)
        .send()
        .await
        .unwrap();
    let mine: Value = r.json().await.unwrap();
    assert_eq!(mine["total"], 1, "{mine}");
    assert_eq!(mine["schedules"][0]["username"], "alice");
    let (_, all) = app.get("/api/exports/schedules").await;
    assert_eq!(all["total"], 3, "an admin sees every schedule");
    // An audit_logs schedule needs AUDIT_READ, which an operator lacks.
    let audit_cfg = with(
        "export_config",
        json!({"export_type": "audit_logs", "format": "csv"}),
    );
    assert_eq!(create(app, &alice, &audit_cfg).await.0, 403);

    // Changes: pause (no next run), new time, a bad change leaves it as it was.
    let put = |body: Value| {
        let path = path.clone();
        async move {
            let r = app
                .req(Method::PUT, &path)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = put(json!({"enabled": false})).await;
    assert_eq!((s, v["next_run"].clone()), (200, Value::Null), "{v}");
    let (s, v) = put(json!({"enabled": true, "schedule": "30 6 * * 1"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["next_run"], "2024-03-18T06:30:00.000Z",
        "next Monday 06:30"
    );
    let (s, v) = put(json!({"schedule": "every day"})).await;
    assert_eq!(
        (s, v["error_code"].clone()),
        (400, json!("INVALID_SCHEDULE")),
        "{v}"
    );
    let (_, v) = app.get(&path).await;
    assert_eq!(v["schedule"], "30 6 * * 1");

    let r = app.req(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(app.get(&path).await.0, 404);
    let r = app
        .req(Method::DELETE, &format!("/api/exports/schedules/{ny}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let (_, audit) = app
        .get("/api/audit?event_types=SCHEDULE_CHANGED&limit=100")
        .await;
    let text = audit.to_string();
    for action in ["created", "updated", "deleted"] {
        assert!(
            text.contains(&format!("\"action\":\"{action}\"")),
            "{action}: {text}"
        );
    }
}

/// Every non-hidden file seen in `dir` until `stop`, with the SHA-256 of what was read.
fn watch(
    dir: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<(String, String)>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                if let Ok(bytes) = std::fs::read(entry.path()) {
                    seen.push((name, sha256(&bytes)));
                }
            }
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_minute_into_a_directory_never_shows_a_partial_file() {
    let root = tempfile::tempdir().unwrap();
    let target = root.path().join("usb").join("kasad");
    // One manual export per hour: scheduled runs must not count against it.
    let mut e: Env = env_with(|s| {
        delivery(s, root.path(), 25);
        s.exports.rate_limit_per_hour = 1;
    })
    .await;
    let body = json!({"name": "Minutely", "schedule": "* * * * *", "export_config": config(),
        "delivery": {"method": "directory", "path": target, "require_mount": false,
                     "filename": "{{name}}_{{export_type}}_{{date}}_{{format}}.csv"}});
    let (s, v) = create(&e.app, &e.app.token, &body).await;
    assert_eq!(s, 201, "{v}");
    let id = v["schedule_id"].as_str().unwrap().to_owned();
    let manual = e
        .app
        .req(Method::POST, "/api/exports/create")
        .json(&json!({"export_type": "device_data", "format": "csv",
            "date_range": {"start": "2024-03-09", "end": "2024-03-11"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        manual.status().as_u16(),
        200,
        "the one manual export of the hour"
    );

    std::fs::create_dir_all(&target).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = watch(target.clone(), stop.clone());
    let mut exports = Vec::new();
    for _ in 0..2 {
        e.advance(MIN).await;
        let before = exports.last().cloned();
        let run = last_run(&e.app, &id, |r| {
            finished(r) && r["export_id"].as_str() != before.as_deref()
        })
        .await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["trigger"], "schedule");
        exports.push(run["export_id"].as_str().unwrap().to_owned());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.join().unwrap();

    // Nothing is overwritten: the second run's file takes the next free name.
    let names = [
        "Minutely_device_data_2024-03-13_csv.csv",
        "Minutely_device_data_2024-03-13_csv-1.csv",
    ];
    let mut complete = Vec::new();
    for (name, id) in names.iter().zip(&exports) {
        let file = std::fs::read(target.join(name)).unwrap();
        let rec = export(&e.app, id).await;
        assert_eq!(
            sha256(&file),
            rec["checksum_sha256"],
            "{name} is its run's file"
        );
        assert!(String::from_utf8_lossy(&file).starts_with("timestamp,"));
        complete.push(rec["checksum_sha256"].clone());
    }
    assert_ne!(exports[0], exports[1], "two runs, two exports");
    assert!(!seen.is_empty(), "the reader saw the file");
    for (n, h) in &seen {
        assert!(names.contains(&n.as_str()), "{n}");
        assert!(
            complete.contains(&json!(h)),
            "a reader saw a partial file ({h})"
        );
    }
    let left: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .flatten()
        .map(|d| d.file_name())
        .collect();
    assert_eq!(left.len(), 2, "no temp files are left: {left:?}");
    // The scheduled runs are DATA_EXPORT entries of the owner marked as scheduled.
    let (_, audit) = e
        .app
        .get("/api/audit?event_types=DATA_EXPORT&limit=100")
        .await;
    assert!(
        audit
            .to_string()
            .contains(&format!("\"schedule_id\":\"{id}\"")),
        "{audit}"
    );
    let (_, audit) = e
        .app
        .get("/api/audit?event_types=EXPORT_DELIVERED&limit=100")
        .await;
    assert_eq!(audit["total"], 2, "{audit}");
    // "Run now" is a create by hand: it counts against the rate limit.
    let (s, v) = e
        .app
        .post(&format!("/api/exports/schedules/{id}/run"))
        .await;
    assert_eq!(
        (s, v["error_code"].clone()),
        (429, json!("RATE_LIMIT_EXCEEDED")),
        "{v}"
    );
}

/// aiosmtpd on loopback, storing messages in a Maildir; killed on drop.
pub(crate) struct Smtp {
    child: std::process::Child,
    pub(crate) port: u16,
    maildir: tempfile::TempDir,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn smtp_server() -> Smtp {
    let maildir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = std::process::Command::new("python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(maildir.path().join("mail"))
        .spawn()
        .expect("python3 runs");
    let mut smtp = Smtp {
        child,
        port,
        maildir,
    };
    for _ in 0..ATTEMPTS {
        if let Some(status) = smtp.child.try_wait().unwrap() {
            panic!(
                "aiosmtpd exited ({status}); install it: pip install -r tests/examples/requirements.txt"
            );
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return smtp;
        }
        tokio::time::sleep(STEP).await;
    }
    smtp.child.kill().unwrap();
    panic!("aiosmtpd never listened on {port}");
}

pub(crate) fn mails(smtp: &Smtp) -> Value {
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/mail_dump.py"
        ))
        .arg(smtp.maildir.path().join("mail"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_to_a_real_smtp_server_has_the_attachment_and_subject() {
    let smtp = smtp_server().await;
    let root = tempfile::tempdir().unwrap();
    let e = env_with(|s| delivery(s, root.path(), smtp.port)).await;
    let app = &e.app;
    let body = json!({"name": "Monthly", "schedule": "0 9 1 * *", "export_config": config(),
        "delivery": {"method": "email", "recipients": ["ops@example.com", "Ann <ann@example.com>"],
                     "subject": "Energy {{name}} - {{date}}"}});
    let (s, v) = create(app, &app.token, &body).await;
    assert_eq!(s, 201, "{v}");
    let id = v["schedule_id"].as_str().unwrap().to_owned();
    // Run now.
    let (s, v) = app.post(&format!("/api/exports/schedules/{id}/run")).await;
    assert_eq!(s, 202, "{v}");
    let export_id = v["export_id"].as_str().unwrap().to_owned();
    let run = last_run(app, &id, finished).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["export_id"], export_id.as_str());
    let ex = export(app, &export_id).await;
    let m = mails(&smtp);
    assert_eq!(m.as_array().unwrap().len(), 1, "{m}");
    let m = &m[0];
    assert_eq!(m["subject"], "Energy Monthly - 2024-03-13");
    let to = m["to"].as_str().unwrap();
    assert!(
        to.contains("ops@example.com") && to.contains("ann@example.com"),
        "{to}"
    );
    assert!(m["from"].as_str().unwrap().contains("kasad@example.com"));
    let att = &m["attachments"][0];
    assert_eq!(att["filename"], ex["file_name"], "{m}");
    assert_eq!(att["content_type"], "text/csv");
    assert_eq!(
        att["sha256"], ex["checksum_sha256"],
        "the attached file is the export"
    );
    assert!(
        m["text"]
            .as_str()
            .unwrap()
            .contains(ex["checksum_sha256"].as_str().unwrap())
    );
}

/// What the webhook receiver got: (signature header, body).
type Hits = Arc<Mutex<Vec<(Option<String>, Vec<u8>)>>>;

/// A webhook receiver on loopback that fails its first request with 500.
async fn receiver() -> (String, Hits) {
    use axum::http::{HeaderMap, StatusCode};
    let hits: Hits = Arc::default();
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let h = h.clone();
            async move {
                let sig = headers
                    .get("x-kasad-signature")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let mut list = h.lock().unwrap();
                list.push((sig, body.to_vec()));
                if list.len() == 1 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_retried_and_signed() {
    let root = tempfile::tempdir().unwrap();
    let (url, hits) = receiver().await;
    let port = reqwest::Url::parse(&url).unwrap().port().unwrap();
    let mut e = env_with(|s| hooks(s, root.path(), 25, port)).await;
    let secret = "a-webhook-secret-of-some-length";
    let body = json!({"name": "Hook", "schedule": "*/5 * * * *", "export_config": config(),
        "delivery": {"method": "webhook", "url": url, "secret": secret}});
    let (s, v) = create(&e.app, &e.app.token, &body).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["delivery"]["secret"],
        Value::Null,
        "the secret is not shown: {v}"
    );
    assert_eq!(v["delivery"]["signed"], true);
    let id = v["schedule_id"].as_str().unwrap().to_owned();
    e.advance(4 * MIN).await;
    tokio::time::sleep(STEP * 3).await;
    assert!(hits.lock().unwrap().is_empty(), "not due before 00:05");
    e.advance(MIN).await;
    let run = last_run(&e.app, &id, finished).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["delivered"], "webhook answered 204");
    let got = hits.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "one failure, one retry");
    let hits_after = |_: &Env, n: usize| {
        let hits = hits.clone();
        async move {
            for _ in 0..ATTEMPTS {
                if hits.lock().unwrap().len() >= n {
                    break;
                }
                tokio::time::sleep(STEP).await;
            }
            hits.lock().unwrap().clone()
        }
    };
    let hits = got;
    assert_eq!(hits[0].1, hits[1].1, "the retry sends the same notice");
    let (sig, raw) = &hits[1];
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(raw);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sig.as_deref(), Some(format!("sha256={want}").as_str()));
    let notice: Value = serde_json::from_slice(raw).unwrap();
    let ex = export(&e.app, notice["export_id"].as_str().unwrap()).await;
    assert_eq!(notice["event"], "export.completed");
    assert_eq!(notice["schedule_id"], id.as_str());
    assert_eq!(notice["status"], "completed");
    assert_eq!(notice["checksum_sha256"], ex["checksum_sha256"]);
    // The signed link downloads the file without a login.
    let link = notice["download_link"].as_str().unwrap();
    let local = link.replace("http://kasa.test", &e.app.base);
    let r = e.app.client.get(&local).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(sha256(&r.bytes().await.unwrap()), ex["checksum_sha256"]);

    // Pause it, then 6.5 days on the export (kept 7 days) is within the 24-hour notice: the
    // retention notice goes to the same webhook.
    let r = e
        .app
        .req(Method::PUT, &format!("/api/exports/schedules/{id}"))
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    e.advance(6 * 24 * 60 * MIN + 12 * 60 * MIN).await;
    let (s, v) = e.app.post("/api/exports/cleanup").await;
    assert_eq!((s, v["notified"].clone()), (200, json!(1)), "{v}");
    let all = hits_after(&e, 3).await;
    let notice: Value = serde_json::from_slice(&all[2].1).unwrap();
    assert_eq!(notice["event"], "export.expiring");
    assert_eq!(notice["export_id"], ex["export_id"]);
    assert!(
        notice["expires_at"]
            .as_str()
            .unwrap()
            .starts_with("2024-03-20"),
        "{notice}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmounted_target_fails_clearly_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let usb = root.path().join("usb");
    std::fs::create_dir(&usb).unwrap(); // the bare mount point, nothing mounted on it
    let e = env_with(|s| delivery(s, root.path(), 25)).await;
    let app = &e.app;
    for path in [usb.clone(), usb.join("reports")] {
        let body = json!({"name": "USB", "schedule": "0 9 * * *", "export_config": config(),
            "delivery": {"method": "directory", "path": path}});
        let (s, v) = create(app, &app.token, &body).await;
        assert_eq!(s, 201, "{v}");
        let id = v["schedule_id"].as_str().unwrap().to_owned();
        let (s, v) = app.post(&format!("/api/exports/schedules/{id}/run")).await;
        assert_eq!(s, 202, "{v}");
        let run = last_run(app, &id, finished).await;
        assert_eq!(run["status"], "delivery_failed", "{run}");
        let err = run["error"].as_str().unwrap();
        assert!(err.contains("not on a mounted file system"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        // The export itself is fine and stays downloadable.
        let ex = export(app, run["export_id"].as_str().unwrap()).await;
        assert_eq!(ex["status"], "completed");
    }
    assert_eq!(
        std::fs::read_dir(&usb).unwrap().count(),
        0,
        "nothing written on the SD card"
    );
    let (_, audit) = app
        .get("/api/audit?event_types=DELIVERY_FAILED&limit=100")
        .await;
    assert_eq!(audit["total"], 2, "{audit}");
    assert!(audit.to_string().contains("mounted"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_schedules_and_runs_a_missed_run_once() {
    let root = tempfile::tempdir().unwrap();
    let target = root.path().join("out");
    let e = env_with(|s| delivery(s, root.path(), 25)).await;
    let body = json!({"name": "Hourly", "schedule": "0 * * * *", "export_config": config(),
        "delivery": {"method": "directory", "path": target, "require_mount": false}});
    let (s, v) = create(&e.app, &e.app.token, &body).await;
    assert_eq!(s, 201, "{v}");
    let id = v["schedule_id"].as_str().unwrap().to_owned();
    assert_eq!(v["next_run"], "2024-03-13T01:00:00.000Z");

    // Down from 00:00 to 01:30: the 01:00 run is missed.
    let Env { app, clock, data } = e;
    app.stop().await;
    clock.advance(90 * MIN);
    let app = TestApp::on_data(data.path(), clock.clone(), |s| delivery(s, root.path(), 25)).await;
    let run = last_run(&app, &id, finished).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["trigger"], "missed", "{run}");
    let (_, v) = app.get(&format!("/api/exports/schedules/{id}")).await;
    assert_eq!(v["next_run"], "2024-03-13T02:00:00.000Z");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 1);

    // Once: another start within the hour does not run it again.
    app.stop().await;
    clock.advance(10 * MIN);
    let app = TestApp::on_data(data.path(), clock.clone(), |s| delivery(s, root.path(), 25)).await;
    let (_, v) = app.get("/api/exports/schedules").await;
    assert_eq!(v["total"], 1, "the schedule survived two restarts");
    tokio::time::sleep(STEP * 5).await;
    let (_, v) = app.get(&format!("/api/exports/schedules/{id}")).await;
    assert_eq!(
        v["last_run"]["export_id"], run["export_id"],
        "no second run: {v}"
    );
    let (_, audit) = app
        .get("/api/audit?event_types=EXPORT_DELIVERED&limit=100")
        .await;
    assert_eq!(audit["total"], 1, "{audit}");
    app.stop().await;
}
