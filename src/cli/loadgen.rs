//! The API load generator behind `kasad bench-load` (hidden; `scripts/bench --load`): N
//! concurrent clients against a running daemon — health, export status and history, readings,
//! export previews and downloads, round robin — while M export jobs run back to back. Prints
//! one JSON object: latency percentiles per request kind, errors, exports finished, and the
//! poller's cycles and skipped cycles over the run (from the health detail).

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The admin's password (user `admin`).
    pub password: String,
    /// Concurrent API clients.
    pub clients: usize,
    /// Export jobs kept running at once.
    pub exports: usize,
    /// Length of the run.
    pub duration: Duration,
}

/// Request kinds, as reported.
const KINDS: [&str; 6] = [
    "health",
    "export_status",
    "export_history",
    "readings",
    "preview",
    "download",
];

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(String);

fn fail(what: &str, e: impl std::fmt::Display) -> LoadError {
    LoadError(format!("{what}: {e}"))
}

async fn json_of(r: reqwest::RequestBuilder, what: &str) -> Result<Value, LoadError> {
    let r = r.send().await.map_err(|e| fail(what, e))?;
    let status = r.status();
    let v: Value = r.json().await.map_err(|e| fail(what, e))?;
    if !status.is_success() {
        return Err(fail(what, format!("{status} {v}")));
    }
    Ok(v)
}

/// Creates an export of `body` and waits until it is finished; returns its id.
async fn export(
    c: &reqwest::Client,
    base: &str,
    token: &str,
    body: &Value,
) -> Result<String, LoadError> {
    let v = json_of(
        c.post(format!("{base}/api/exports/create"))
            .bearer_auth(token)
            .json(body),
        "create export",
    )
    .await?;
    let id = v["export_id"]
        .as_str()
        .ok_or_else(|| fail("create export", &v))?
        .to_owned();
    loop {
        let v = json_of(
            c.get(format!("{base}/api/exports/{id}")).bearer_auth(token),
            "export status",
        )
        .await?;
        match v["status"].as_str() {
            Some("completed") => return Ok(id),
            Some("failed") => return Err(fail("export", v)),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn poller(c: &reqwest::Client, base: &str, token: &str) -> Result<Value, LoadError> {
    let v = json_of(
        c.get(format!("{base}/api/health")).bearer_auth(token),
        "health",
    )
    .await?;
    Ok(v["poller"].clone())
}

/// Signs in as `admin`; returns the token and the device ids.
async fn sign_in(
    c: &reqwest::Client,
    base: &str,
    password: &str,
) -> Result<(String, Vec<String>), LoadError> {
    let login = json_of(
        c.post(format!("{base}/api/auth/login"))
            .json(&json!({"username": "admin", "password": password})),
        "login",
    )
    .await?;
    let token = login["access_token"]
        .as_str()
        .ok_or_else(|| fail("login", &login))?
        .to_owned();
    let devices = json_of(
        c.get(format!("{base}/api/devices")).bearer_auth(&token),
        "devices",
    )
    .await?;
    let ids: Vec<String> = devices["devices"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["device_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        return Err(fail("devices", "the daemon has no devices yet"));
    }
    Ok((token, ids))
}

/// One client's requests, round robin over [`KINDS`] and the devices, until `end`: the
/// latencies by kind and the errors.
async fn one_client(
    n: usize,
    c: &reqwest::Client,
    base: &str,
    token: &str,
    ids: &[String],
    download: &str,
    end: Instant,
) -> (Vec<Vec<f64>>, Vec<String>) {
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); KINDS.len()];
    let mut errors: Vec<String> = Vec::new();
    let mut i = n;
    while Instant::now() < end {
        let kind = i % KINDS.len();
        let id = &ids[(i / KINDS.len()) % ids.len()];
        let url = match KINDS[kind] {
            "health" => format!("{base}/api/health"),
            "export_status" => format!("{base}/api/exports/{download}"),
            "export_history" => format!("{base}/api/exports/history?limit=20"),
            "readings" => format!("{base}/api/devices/{id}/readings?resolution=hour"),
            "preview" => {
                format!("{base}/api/exports/preview?export_type=device_data&devices={id}&limit=10")
            }
            _ => format!("{base}/api/exports/download/{download}"),
        };
        let t = Instant::now();
        let ok = match c.get(&url).bearer_auth(token).send().await {
            Ok(r) => {
                let status = r.status();
                match r.bytes().await {
                    Ok(_) if status.is_success() => Ok(()),
                    Ok(_) => Err(format!("{} {status}", KINDS[kind])),
                    Err(e) => Err(format!("{} {e}", KINDS[kind])),
                }
            }
            Err(e) => Err(format!("{} {e}", KINDS[kind])),
        };
        lat[kind].push(t.elapsed().as_secs_f64() * 1000.0);
        if let Err(e) = ok {
            errors.push(e);
        }
        i += 1;
    }
    (lat, errors)
}

/// Runs the load; returns the report.
pub async fn run(o: LoadOptions) -> Result<Value, LoadError> {
    crate::tls::install_tls();
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(o.clients + o.exports)
        .build()
        .map_err(|e| fail("client", e))?;
    let base = o.base.trim_end_matches('/').to_owned();
    let (token, ids) = sign_in(&c, &base, &o.password).await?;
    let day = |d: i64| {
        (chrono::Utc::now() + chrono::Duration::days(d))
            .format("%Y-%m-%d")
            .to_string()
    };
    // A small export for the download requests: one device, today; the big ones: every
    // device, the last seven days.
    let small = json!({"export_type": "device_data", "format": "csv", "devices": [ids[0]],
        "date_range": {"start": day(0), "end": day(1)}});
    let download = export(&c, &base, &token, &small).await?;
    let big = json!({"export_type": "device_data", "format": "csv", "devices": "all",
        "date_range": {"start": day(-7), "end": day(1)}});
    let before = poller(&c, &base, &token).await?;
    let started = Instant::now();
    let end = started + o.duration;
    let token = Arc::new(token);
    let mut exporters = Vec::new();
    for _ in 0..o.exports {
        let (c, base, token, big) = (c.clone(), base.clone(), token.clone(), big.clone());
        exporters.push(tokio::spawn(async move {
            let (mut done, mut failed) = (0u64, Vec::new());
            while Instant::now() < end {
                match export(&c, &base, &token, &big).await {
                    Ok(_) => done += 1,
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (done, failed)
        }));
    }
    let mut clients = Vec::new();
    for n in 0..o.clients {
        let (c, base, token) = (c.clone(), base.clone(), token.clone());
        let (ids, download) = (ids.clone(), download.clone());
        clients.push(tokio::spawn(async move {
            one_client(n, &c, &base, &token, &ids, &download, end).await
        }));
    }
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); KINDS.len()];
    let mut errors = Vec::new();
    for h in clients {
        let (l, e) = h.await.map_err(|e| fail("client task", e))?;
        for (all, mine) in lat.iter_mut().zip(l) {
            all.extend(mine);
        }
        errors.extend(e);
    }
    let seconds = started.elapsed().as_secs_f64();
    let (mut exports_done, mut export_errors) = (0, Vec::new());
    for h in exporters {
        let (done, failed) = h.await.map_err(|e| fail("export task", e))?;
        exports_done += done;
        export_errors.extend(failed);
    }
    let after = poller(&c, &base, &token).await?;
    let count = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let mut kinds = serde_json::Map::new();
    let mut small_all = Vec::new();
    for (k, mut l) in KINDS.iter().zip(lat) {
        l.sort_by(f64::total_cmp);
        kinds.insert(
            (*k).into(),
            json!({"requests": l.len(), "p50_ms": percentile(&l, 0.5), "p99_ms": percentile(&l, 0.99),
                "max_ms": l.last().copied().unwrap_or(0.0)}),
        );
        small_all.extend(l);
    }
    small_all.sort_by(f64::total_cmp);
    errors.truncate(20);
    Ok(json!({
        "seconds": seconds,
        "clients": o.clients,
        "requests": small_all.len(),
        "requests_per_s": small_all.len() as f64 / seconds,
        "p50_ms": percentile(&small_all, 0.5),
        "p99_ms": percentile(&small_all, 0.99),
        "max_ms": small_all.last().copied().unwrap_or(0.0),
        "kinds": kinds,
        "errors": errors,
        "exports_finished": exports_done,
        "export_errors": export_errors,
        "poll_cycles": count(&after, "cycles").saturating_sub(count(&before, "cycles")),
        "skipped_cycles": count(&after, "skipped_cycles").saturating_sub(count(&before, "skipped_cycles")),
        "last_cycle_duration_ms": after["last_cycle_duration_ms"],
        "last_cycle_failed": after["last_cycle_failed"],
    }))
}
