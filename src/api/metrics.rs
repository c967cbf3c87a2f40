//! `GET /metrics`: the Prometheus exposition, behind `[metrics] access`.

use super::AppState;
use super::devices::blocking;
use super::error::ApiError;
use crate::auth::Permission;
use crate::domain::DeviceStatus;
use crate::metrics::{Inputs, PollCounts};
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;

/// Who may scrape, and what the exposition needs besides the shared state.
#[derive(Debug, Clone)]
pub struct MetricsGate {
    /// `auth`, `open` or `off`.
    pub access: String,
    /// The scrape token (`[metrics] token_file`).
    pub token: Option<String>,
    /// The database file (its size is reported).
    pub db_path: std::path::PathBuf,
}

impl MetricsGate {
    /// `token` is the configured scrape token.
    pub fn is_scrape_token(&self, token: Option<&str>) -> bool {
        matches!((token, &self.token), (Some(t), Some(want)) if same(t.as_bytes(), want.as_bytes()))
    }
}

/// Equal without an early exit on the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /metrics`.
pub async fn scrape(State(st): State<AppState>, req: Request) -> Response {
    let gate = st.site.metrics.clone();
    match gate.access.as_str() {
        "open" => {}
        "auth" => {
            let token = super::guard::bearer(req.headers()).map(str::to_owned);
            if !gate.is_scrape_token(token.as_deref()) {
                match super::guard::authenticate(&st, token, super::guard::client_of(&req)).await {
                    Ok(cu) if cu.user.has(Permission::DeviceRead) => {}
                    Ok(_) => {
                        return ApiError::permission_denied(Permission::DeviceRead).into_response();
                    }
                    Err(e) => return e.into_response(),
                }
            }
        }
        _ => return super::error::not_found().await.into_response(),
    }
    match gather(&st, &gate).await {
        Ok(i) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            crate::metrics::render(&i),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn gather(st: &AppState, gate: &MetricsGate) -> Result<Inputs, ApiError> {
    let (load, store, db) = (
        super::devices::live_now(st),
        st.store.clone(),
        gate.db_path.clone(),
    );
    let (live, exports, db_bytes) = blocking(move || -> Result<_, ApiError> {
        let live = load()?.rows;
        let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
        Ok((live, store.exports()?, size))
    })
    .await??;
    let polls = st
        .devices
        .registry
        .snapshot()
        .into_iter()
        .map(|e| {
            let c = PollCounts {
                online: e.status == DeviceStatus::Online,
                ok: e.polls_ok,
                failed: e.polls_failed,
            };
            (e.info.device_id.to_string(), c)
        })
        .collect();
    let (p, w) = (&st.devices.poller, &st.devices.writer);
    Ok(Inputs {
        live,
        polls,
        cycle: (
            p.last_cycle_ms.load(Ordering::Relaxed),
            p.last_cycle_duration_ms.load(Ordering::Relaxed),
            p.last_cycle_ok.load(Ordering::Relaxed),
            p.last_cycle_failed.load(Ordering::Relaxed),
        ),
        writer: (
            w.stored.load(Ordering::Relaxed),
            w.durable_commits.load(Ordering::Relaxed),
            w.checkpoints.load(Ordering::Relaxed),
            w.failures.load(Ordering::Relaxed),
        ),
        write_transactions: st.store.write_transactions(),
        exports,
        db_bytes,
        started_ms: st.site.started_ms,
        mqtt: st.site.mqtt.as_ref().map(|m| {
            (
                m.connected.load(Ordering::Relaxed),
                m.published.load(Ordering::Relaxed),
                m.dropped.load(Ordering::Relaxed),
                m.commands.load(Ordering::Relaxed),
            )
        }),
        push: st.work.push.stats(),
    })
}
