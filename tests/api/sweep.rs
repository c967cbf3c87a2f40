//! The bad-input sweep: every route of the OpenAPI document (so a new route is swept without
//! being added here) gets malformed and oversized bodies, every field of a valid sample body
//! replaced by wrong types, huge numbers, long, unicode and control-character strings and path
//! traversal, hostile query values, and hostile path ids. Every answer is a success or a clear
//! 4xx with a JSON error body — never a 5xx; nothing is written outside the data dir; the daemon
//! stays healthy and the store verifies. Device names that look like spreadsheet formulas are
//! exported to CSV (prefixed with `'`) and Excel (text cells, never formulas).

use crate::helpers::{TestApp, day, free_port};
use kasad::sim::{Model, SimDevice, SimSpec, fleet_spec};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;

/// Part of every traversal attempt: no file or directory may ever carry it.
const MARK: &str = "kasad-sweep-pwned";

/// Device names a spreadsheet would run as formulas.
const FORMULA_NAMES: [&str; 2] = [
    "=HYPERLINK(\"http://evil.test\",\"x\")",
    "@SUM(1+1)*cmd|' /C calc'!A0",
];

/// Path segments, already percent-encoded.
fn hostile_ids() -> Vec<String> {
    vec![
        format!("..%2F..%2F{MARK}"),
        format!("%2e%2e%2f%2e%2e%2f{MARK}"),
        format!("..%5C..%5C{MARK}"),
        "..".into(),
        "%00".into(),
        "%0A%0D%07%1B".into(),
        "%E2%80%AE%F0%9F%94%A5".into(),
        "%FF%FE".into(),
        "A".repeat(4096),
        "-1".into(),
        "99999999999999999999999".into(),
        "1%27%20OR%20%271%27%3D%271".into(),
    ]
}

/// Query values, already percent-encoded.
fn hostile_query_values() -> Vec<String> {
    let mut v = hostile_ids();
    v.extend(
        [
            "",
            "1e400",
            "-9223372036854775809",
            "2025-13-45T99%3A99%3A99Z",
            "Mars%2FOlympus_Mons",
            "%2Fetc%2Fpasswd",
        ]
        .map(String::from),
    );
    v
}

/// JSON values put in place of every field of a sample body.
fn hostile_values() -> Vec<Value> {
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!([deep]);
    }
    vec![
        Value::Null,
        json!(true),
        json!(-1),
        json!(0),
        json!(-1.5),
        json!(1e308),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("x".repeat(20_000)),
        json!(format!("../../{MARK}")),
        json!(format!("/tmp/{MARK}")),
        json!("\u{0}\u{7}\u{1b}[31m\u{202e}\u{feff}"),
        json!("🔥".repeat(500)),
        json!(FORMULA_NAMES[0]),
        json!([]),
        json!({}),
        deep,
    ]
}

/// Bodies that are not (acceptable) JSON at all.
fn raw_bodies() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "",
        "{",
        "[1,2",
        "null",
        "[]",
        "\"x\"",
        "{\"a\":}",
        "1e400",
        "{\"a\":18446744073709551616}",
        "{\"a\":1,\"a\":2}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    v.push(b"{\"username\":\"\xff\xfe\",\"password\":\"\xc3\"}".to_vec());
    v.push("[".repeat(60_000).into_bytes()); // deep nesting under the body limit
    v.push(format!("{{\"a\":\"{}\"}}", "x".repeat(70 * 1024)).into_bytes()); // over it
    v
}

/// Every leaf and container path of `v` (object keys and array indexes).
fn paths(v: &Value, at: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    let children: Vec<(PathStep, &Value)> = match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, c)| (PathStep::Key(k.clone()), c))
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, c)| (PathStep::Index(i), c))
            .collect(),
        _ => return,
    };
    for (step, child) in children {
        at.push(step);
        out.push(at.clone());
        paths(child, at, out);
        at.pop();
    }
}

#[derive(Debug, Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn at_mut<'a>(v: &'a mut Value, path: &[PathStep]) -> &'a mut Value {
    path.iter().fold(v, |v, step| match step {
        PathStep::Key(k) => &mut v[k.as_str()],
        PathStep::Index(i) => &mut v[*i],
    })
}

/// The sample with each field in turn replaced by each hostile value, or removed.
fn mutations(sample: &Value) -> Vec<Value> {
    let mut ps = Vec::new();
    paths(sample, &mut Vec::new(), &mut ps);
    let mut out = Vec::new();
    for p in &ps {
        for h in hostile_values() {
            let mut b = sample.clone();
            *at_mut(&mut b, p) = h;
            out.push(b);
        }
        let (parent, last) = p.split_at(p.len() - 1);
        let mut b = sample.clone();
        match (&last[0], at_mut(&mut b, parent)) {
            (PathStep::Key(k), Value::Object(m)) => {
                m.remove(k);
            }
            (PathStep::Index(i), Value::Array(a)) => {
                a.remove(*i);
            }
            _ => unreachable!(),
        }
        out.push(b);
    }
    let mut b = sample.clone();
    b["__proto__"] = json!({"admin": true});
    out.push(b);
    out
}

/// Yesterday to tomorrow (UTC), as an export's date range.
fn recent() -> Value {
    json!({"start": day(-1), "end": day(1)})
}

/// Valid bodies, by "METHOD /api/path" of the route table.
fn sample_bodies(device: &str, user: &str, outbox: &str) -> Vec<(&'static str, String, Value)> {
    let export = json!({"export_type": "device_data", "format": "csv",
        "date_range": recent(), "devices": [device],
        "fields": ["timestamp", "device_name", "power_w", "energy_kwh", "cost"],
        "aggregation": "hourly", "aggregation_functions": {"power_w": "max"},
        "filters": {"min_power": 0, "max_power": 5000, "device_states": ["on"], "exclude_outliers": true,
            "time_of_day": {"start": "06:00", "end": "22:00"}, "days_of_week": [1, 2, 3]},
        "options": {"include_headers": true, "timezone": "Europe/Berlin", "decimal_places": 3,
            "delimiter": ";", "compression": "gzip"},
        "custom_fields": [{"name": "watts_x2", "formula": "power_w * 2", "unit": "W"}],
        "privacy_options": {"anonymize_ip_addresses": true, "hash_device_identifiers": false},
        "performance_options": {"chunk_size": 1000, "background_processing": true}});
    let schedule = json!({"name": "Sweep", "schedule": "0 9 1 * *",
        "export_config": {"export_type": "device_data", "format": "excel", "date_range": "last_month",
            "devices": "all", "fields": ["timestamp", "device_name", "energy_kwh"]},
        "delivery": {"method": "directory", "path": format!("{outbox}/reports")}});
    vec![
        (
            "POST",
            "/api/auth/login".into(),
            json!({"username": "sweeper", "password": "wrong-password"}),
        ),
        (
            "POST",
            "/api/auth/refresh".into(),
            json!({"refresh_token": "not-a-token"}),
        ),
        (
            "POST",
            format!("/api/devices/{device}/relay"),
            json!({"on": true}),
        ),
        (
            "POST",
            "/api/users".into(),
            json!({"username": "sweep-new", "password": "a-long-password-1", "role": "viewer", "permissions": ["DATA_EXPORT"]}),
        ),
        (
            "PATCH",
            format!("/api/users/{user}"),
            json!({"role": "operator", "permissions": ["DATA_EXPORT"], "disabled": false, "password": "another-password-2"}),
        ),
        ("POST", "/api/exports/create".into(), export.clone()),
        ("POST", "/api/exports/preview".into(), export),
        (
            "PUT",
            "/api/tariffs".into(),
            json!({"currency": "USD", "effective_from": "2031-01-01",
            "rates": {"type": "time_of_use", "default_price_per_kwh": 0.1,
                "periods": [{"name": "peak", "days": [1, 2, 3, 4, 5], "start": "16:00", "end": "21:00", "price_per_kwh": 0.3}]}}),
        ),
        ("POST", "/api/exports/schedule".into(), schedule.clone()),
        ("PUT", "/api/exports/schedules/{schedule}".into(), schedule),
    ]
}

/// Valid query strings, by route path.
fn sample_queries() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    let range = [
        ("start", "2026-01-01T00:00:00Z"),
        ("end", "2026-12-01T00:00:00Z"),
    ];
    vec![
        (
            "/api/devices/{device_id}/readings",
            [&range[..], &[("resolution", "hour"), ("timezone", "UTC")]].concat(),
        ),
        (
            "/api/exports/history",
            vec![("limit", "10"), ("offset", "0")],
        ),
        (
            "/api/exports/preview",
            [
                &range[..],
                &[
                    ("export_type", "device_data"),
                    ("devices", "all"),
                    ("fields", "timestamp,power_w"),
                    ("aggregation", "hourly"),
                    ("timezone", "UTC"),
                    ("limit", "5"),
                ],
            ]
            .concat(),
        ),
        (
            "/api/audit",
            [
                &range[..],
                &[
                    ("event_types", "USER_LOGIN"),
                    ("severity_levels", "info"),
                    ("users", "admin"),
                    ("limit", "10"),
                    ("offset", "0"),
                ],
            ]
            .concat(),
        ),
        ("/api/exports/download/{export_id}", vec![("ticket", "abc")]),
    ]
}

/// A sweep's findings: requests answered with a 5xx or a non-JSON error.
#[derive(Default)]
struct Findings {
    sent: usize,
    bad: Vec<String>,
}

impl Findings {
    async fn send(
        &mut self,
        app: &TestApp,
        method: &Method,
        url: &str,
        body: Option<(Vec<u8>, &str)>,
    ) {
        let mut r = app
            .req(method.clone(), url)
            .header("x-forwarded-for", client_of(self.sent));
        // A body over the limit is answered 413 before it is read; the server may close the
        // connection while the client still writes it, which is an answer too.
        let oversized = body
            .as_ref()
            .is_some_and(|(b, _)| b.len() > kasad::api::BODY_LIMIT);
        if let Some((b, ctype)) = body {
            r = r.header("content-type", ctype).body(b);
        }
        if oversized {
            // Its connection is not reused: the server may close it before reading all of the
            // body, and the next request on it would then fail ("connection closed before
            // message completed") through no fault of the route it asked.
            r = r.header("connection", "close");
        }
        self.sent += 1;
        let shown = || format!("{method} {}", url.chars().take(160).collect::<String>());
        let resp = match r.send().await {
            Ok(r) => r,
            Err(_) if oversized => return,
            Err(e) => {
                // The whole cause chain: "error sending request" alone does not say whether
                // the daemon closed, reset or never accepted the connection.
                let mut why = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(c) = src {
                    why.push_str(&format!(": {c}"));
                    src = c.source();
                }
                return self.bad.push(format!("{}: no answer: {why}", shown()));
            }
        };
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        let clear = || {
            serde_json::from_slice::<Value>(&bytes)
                .is_ok_and(|v| v["error_code"].is_string() && v["message"].is_string())
        };
        if status >= 500 || (status >= 400 && !clear()) {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            self.bad.push(format!("{}: {status} {text}", shown()));
        }
    }
}

fn with_query(path: &str, q: &[(&str, String)]) -> String {
    let q: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{path}?{}", q.join("&"))
}

fn device(i: u32, alias: &str) -> SimDevice {
    let spec = SimSpec {
        alias: alias.into(),
        ..fleet_spec(i)
    };
    assert_eq!(
        spec.model,
        if i == 0 { Model::Hs110V1 } else { Model::Kp115 }
    );
    SimDevice::new(
        spec,
        kasad::clock::Clock::now_ms(&kasad::clock::SystemClock),
    )
}

/// Names anywhere under `dir` (not following links) that carry [`MARK`].
fn marked(dir: &Path, depth: usize) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out = vec![];
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(MARK) {
            out.push(e.path().display().to_string());
        }
        if depth > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(marked(&e.path(), depth - 1));
        }
    }
    out
}

/// An address of its own (the RFC 2544 benchmark range, as data only) for request `n`.
fn client_of(n: usize) -> String {
    format!("198.18.{}.{}", (n / 250) % 250, n % 250 + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_bad_input_with_a_clear_4xx_and_writes_nothing_outside() {
    let devices = vec![device(0, FORMULA_NAMES[0]), device(1, FORMULA_NAMES[1])];
    let app = TestApp::spawn_with(devices, |s| {
        s.data_dir = s.data_dir.join("data");
        let outbox = s.data_dir.with_file_name("outbox");
        std::fs::create_dir_all(&outbox).unwrap();
        s.delivery.directory_roots = vec![outbox];
        s.delivery.webhook_allow = vec![format!("http://127.0.0.1:{}/hook", free_port())];
        s.exports.rate_limit_per_hour = 1_000_000;
        s.exports.preview_rate_per_minute = 1_000_000;
        // Every request names its own client (below): bad input counts against its address's
        // login throttle (tested in `auth`), which must not mask a route's own answer here.
        s.http.trusted_proxies = vec![kasad::config::Net::parse("127.0.0.0/8").unwrap()];
    })
    .await;
    let ds = app
        .wait_devices("both plugs read", |d| {
            d.len() == 2 && d.iter().all(|x| x["data_points"].as_u64() > Some(1))
        })
        .await;
    let outbox = app.dir.path().join("outbox").display().to_string();
    let dev = ds[0]["device_id"].as_str().unwrap().to_owned();
    let r = app
        .req(Method::POST, "/api/users")
        .json(&json!({"username": "victim", "password": "victim-password-1", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let user = r.json::<Value>().await.unwrap()["user_id"]
        .to_string()
        .trim_matches('"')
        .to_owned();
    let r = app
        .req(Method::POST, "/api/exports/schedule")
        .json(&sample_bodies(&dev, &user, &outbox).last().unwrap().2)
        .send()
        .await
        .unwrap();
    let (status, v) = (r.status(), r.json::<Value>().await.unwrap());
    assert_eq!(status, 201, "{v}");
    let schedule = v["schedule_id"].as_str().unwrap().to_owned();

    let (s, doc) = app.get("/api/openapi.json").await;
    assert_eq!(s, 200);
    let mut routes: Vec<(Method, String)> = vec![];
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys() {
            routes.push((m.to_uppercase().parse().unwrap(), path.clone()));
        }
    }
    assert!(routes.len() >= 38, "{routes:?}");
    let samples = sample_bodies(&dev, &user, &outbox);
    let queries = sample_queries();
    let mut f = Findings::default();
    for (method, path) in &routes {
        if path == "/api/auth/logout" {
            continue; // would end the sweep's own session; swept at the end
        }
        // Hostile ids in every path parameter.
        if path.contains('{') {
            for id in hostile_ids() {
                let url = path
                    .split('/')
                    .map(|seg| {
                        if seg.starts_with('{') {
                            id.as_str()
                        } else {
                            seg
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                f.send(&app, method, &url, None).await;
            }
        }
        // The real ids, for the body and query sweeps.
        let real = path
            .replace("{device_id}", &dev)
            .replace("{user_id}", &user)
            .replace("{schedule_id}", &schedule)
            .replace("{export_id}", "0123456789abcdef");
        if *method == Method::DELETE {
            continue;
        }
        if [Method::POST, Method::PUT, Method::PATCH].contains(method) {
            for b in raw_bodies() {
                f.send(&app, method, &real, Some((b, "application/json")))
                    .await;
            }
            f.send(&app, method, &real, Some((b"{}".to_vec(), "text/plain")))
                .await;
            let key = path.replace("{schedule_id}", "{schedule}");
            let sample = samples.iter().find(|(m, p, _)| {
                *m == method.as_str() && {
                    let templ = p.replace(&dev, "{device_id}").replace(&user, "{user_id}");
                    templ == key || *p == key
                }
            });
            if let Some((_, _, sample)) = sample {
                // The sample itself is valid (but for the credentials), so that its mutations
                // reach every check behind the parsing.
                let r = app
                    .req(method.clone(), &real)
                    .header("x-forwarded-for", client_of(f.sent + 1_000_000))
                    .json(sample)
                    .send()
                    .await
                    .unwrap();
                let (status, v) = (r.status().as_u16(), r.text().await.unwrap());
                let want = if path.starts_with("/api/auth/") {
                    401
                } else {
                    299
                };
                assert!(
                    status <= want && status >= 200,
                    "{method} {path}: {status} {v}"
                );
                for b in mutations(sample) {
                    f.send(
                        &app,
                        method,
                        &real,
                        Some((serde_json::to_vec(&b).unwrap(), "application/json")),
                    )
                    .await;
                }
            }
        }
        if *method == Method::GET {
            let generic: Vec<(&str, String)> =
                ["limit", "offset", "start", "end", "timezone", "devices"]
                    .iter()
                    .zip(hostile_query_values())
                    .map(|(k, v)| (*k, v))
                    .collect();
            f.send(&app, method, &with_query(&real, &generic), None)
                .await;
            if let Some((_, q)) = queries.iter().find(|(p, _)| p == path) {
                for i in 0..q.len() {
                    for v in hostile_query_values() {
                        let mut q: Vec<(&str, String)> =
                            q.iter().map(|(k, v)| (*k, v.to_string())).collect();
                        q[i].1 = v;
                        f.send(&app, method, &with_query(&real, &q), None).await;
                    }
                }
                let mut twice: Vec<(&str, String)> =
                    q.iter().map(|(k, v)| (*k, v.to_string())).collect();
                twice.extend(twice.clone());
                f.send(&app, method, &with_query(&real, &twice), None).await;
            }
        }
    }
    // Static files and pages with traversal in the file name.
    for id in hostile_ids() {
        f.send(&app, &Method::GET, &format!("/static/{id}"), None)
            .await;
    }
    f.send(&app, &Method::GET, "/static/..%2F..%2FCargo.toml", None)
        .await;
    assert!(
        f.bad.is_empty(),
        "{} of {} requests went wrong:\n{}",
        f.bad.len(),
        f.sent,
        f.bad.join("\n")
    );
    assert!(f.sent > 3000, "only {} requests", f.sent);

    // The daemon is fine, and nothing landed outside its directories.
    let (s, h) = app.get("/api/health").await;
    assert_eq!(s, 200, "{h}");
    let base = app.dir.path();
    let mut names: Vec<String> = std::fs::read_dir(base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["data", "outbox"]);
    let mut found = marked(base, 8);
    for dir in [
        std::env::temp_dir(),
        std::env::current_dir().unwrap(),
        "/".into(),
        "/etc".into(),
    ] {
        found.extend(marked(&dir, 0));
    }
    assert!(found.is_empty(), "{found:?}");

    // Formula-like names: CSV cells start with ', Excel holds them as text.
    let body = json!({"export_type": "device_data", "devices": "all", "fields": ["timestamp", "device_name", "power_w"],
        "date_range": recent()});
    let csv = String::from_utf8(crate::exports::export_as(&app, &body, "csv").await).unwrap();
    for name in FORMULA_NAMES {
        let quoted = format!("'{}", name.replace('"', "\"\""));
        assert!(csv.contains(&quoted), "{name} not defused in {csv:.400}");
    }
    let xlsx = crate::exports::export_as(&app, &body, "excel").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.xlsx");
    std::fs::write(&file, xlsx).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
            xml = ''.join(z.read(n).decode() for n in z.namelist() if n.startswith('xl/worksheets/')); \
            print('<f>' in xml or '<f ' in xml, xml.count('HYPERLINK'))"])
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let said: Vec<&str> = said.split_whitespace().collect();
    assert_eq!(said[0], "False", "a formula cell in the workbook");
    assert!(
        said[1].parse::<u32>().unwrap() > 0,
        "the name is in the sheet as text"
    );

    // Logout with a malformed body is refused clearly (the session stays); a plain one ends it.
    f.send(
        &app,
        &Method::POST,
        "/api/auth/logout",
        Some((b"{".to_vec(), "application/json")),
    )
    .await;
    assert!(f.bad.is_empty(), "{:?}", f.bad);
    assert_eq!(app.get("/api/auth/me").await.0, 200, "still logged in");
    assert_eq!(app.post("/api/auth/logout").await.0, 200);
    assert_eq!(app.get("/api/auth/me").await.0, 401, "logged out");

    // The store verifies after a clean stop (the daemon's directory outlives it).
    let data = app.dir.path().join("data");
    app.stop_and_verify(&data).await;
}
