//! `GET /api/health`: the store answers and the poller's heartbeat is fresh.

use super::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

/// Health report; 200 when healthy, 503 otherwise.
pub async fn health(State(st): State<AppState>) -> (StatusCode, Json<Value>) {
    let now = st.clock.now_ms();
    let store = st.store.clone();
    let store_ok = tokio::task::spawn_blocking(move || store.ping())
        .await
        .ok()
        .and_then(Result::ok);
    let last = st.poller.last_cycle_ms.load(Ordering::Relaxed);
    // Fresh: a cycle finished within three intervals, or the daemon is still starting.
    let limit = 3 * i64::try_from(st.poll_interval.as_millis()).unwrap_or(i64::MAX / 4);
    let poller_fresh = if last == 0 {
        now - st.started_ms < limit
    } else {
        now - last < limit
    };
    let healthy = store_ok.is_some() && poller_fresh;
    let w = &st.writer;
    let body = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": (now - st.started_ms) / 1000,
        "store": {"ok": store_ok.is_some(), "schema_version": store_ok,
            "readings_stored": w.stored.load(Ordering::Relaxed),
            "durable_commits": w.durable_commits.load(Ordering::Relaxed),
            "checkpoints": w.checkpoints.load(Ordering::Relaxed),
            "write_failures": w.failures.load(Ordering::Relaxed)},
        "poller": {"fresh": poller_fresh,
            "last_cycle": (last > 0).then(|| crate::clock::rfc3339(last)),
            "last_cycle_duration_ms": st.poller.last_cycle_duration_ms.load(Ordering::Relaxed),
            "last_cycle_ok": st.poller.last_cycle_ok.load(Ordering::Relaxed),
            "last_cycle_failed": st.poller.last_cycle_failed.load(Ordering::Relaxed)},
    });
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
