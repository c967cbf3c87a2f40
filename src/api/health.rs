//! `GET /api/health`: the store answers and the poller's heartbeat is fresh. Anyone may ask
//! for the status; the detail (counters, poller, disk) is for admins (SYSTEM_CONFIG) and for
//! monitoring with the scrape token of `[metrics] token_file` (unless metrics are off).

use super::AppState;
use super::guard::{authenticate, bearer, client_of};
use crate::auth::Permission;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

/// Health report; 200 when healthy, 503 otherwise. A bearer token that does not verify is
/// refused (401) rather than silently answered without detail.
pub async fn health(State(st): State<AppState>, req: Request) -> Response {
    let detail = match bearer(req.headers()) {
        None => false,
        Some(t) if st.site.metrics.access != "off" && st.site.metrics.is_scrape_token(Some(t)) => {
            true
        }
        Some(t) => match authenticate(&st, Some(t.to_owned()), client_of(&req)).await {
            Ok(cu) => cu.user.has(Permission::SystemConfig),
            Err(e) => return e.into_response(),
        },
    };
    let now = st.clock.now_ms();
    let store = st.store.clone();
    let db = st.site.metrics.db_path.clone();
    // The store's answer, and (for the detail) the database's size and the free space beside it.
    let (store_ok, disk) = tokio::task::spawn_blocking(move || {
        let disk = detail.then(|| {
            (
                std::fs::metadata(&db).ok().map(|m| m.len()),
                db.parent().and_then(crate::store::free_bytes),
            )
        });
        (store.ping().ok(), disk)
    })
    .await
    .unwrap_or((None, None));
    let last = st.devices.poller.last_cycle_ms.load(Ordering::Relaxed);
    // Fresh: a cycle finished within three intervals, or the daemon is still starting.
    let limit = 3 * i64::try_from(st.devices.poll_interval.as_millis()).unwrap_or(i64::MAX / 4);
    let poller_fresh = if last == 0 {
        now - st.site.started_ms < limit
    } else {
        now - last < limit
    };
    let write_error = st.devices.writer.failing();
    let healthy = store_ok.is_some() && poller_fresh && write_error.is_none();
    let status = if healthy { "ok" } else { "degraded" };
    let body = if let Some(disk) = disk {
        detail_body(&st, status, now, store_ok, disk, poller_fresh, last)
    } else {
        json!({"status": status})
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

fn detail_body(
    st: &AppState,
    status: &str,
    now: i64,
    store_ok: Option<u64>,
    (database_bytes, free_bytes): (Option<u64>, Option<u64>),
    poller_fresh: bool,
    last: i64,
) -> Value {
    let w = &st.devices.writer;
    json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": (now - st.site.started_ms) / 1000,
        "store": {"ok": store_ok.is_some(), "schema_version": store_ok,
            "readings_stored": w.stored.load(Ordering::Relaxed),
            "durable_commits": w.durable_commits.load(Ordering::Relaxed),
            "checkpoints": w.checkpoints.load(Ordering::Relaxed),
            "write_failures": w.failures.load(Ordering::Relaxed),
            "write_error": w.failing(),
            "database_bytes": database_bytes,
            "free_bytes": free_bytes},
        "poller": {"fresh": poller_fresh,
            "last_cycle": (last > 0).then(|| crate::clock::rfc3339(last)),
            "last_cycle_duration_ms": st.devices.poller.last_cycle_duration_ms.load(Ordering::Relaxed),
            "last_cycle_ok": st.devices.poller.last_cycle_ok.load(Ordering::Relaxed),
            "last_cycle_failed": st.devices.poller.last_cycle_failed.load(Ordering::Relaxed),
            "cycles": st.devices.poller.cycles.load(Ordering::Relaxed),
            "skipped_cycles": st.devices.poller.skipped_cycles.load(Ordering::Relaxed)},
        "alerts": {"evaluations": st.work.alerts.evaluations()},
        "push": st.work.push.stats().iter().map(|p| json!({"target": p.name,
            "lag_seconds": p.lag_seconds, "samples_sent": p.samples_sent,
            "readings_sent": p.readings_sent, "skipped": p.skipped, "errors": p.errors,
            "last_error": p.last_error})).collect::<Vec<_>>(),
        "throttle": st.auth.throttle.counts(now),
        "password_checks_waiting": st.auth.gate.waiting(),
    })
}
