//! The HTTP API (axum) — the only module that imports axum.
//!
//! Owns: the router, shared state and request logging. Handlers are thin: they parse, call
//! the store / registry / discovery, and map results; every error is an [`error::ApiError`].

pub mod devices;
pub mod error;
pub mod health;
pub mod pages;

use crate::clock::SharedClock;
use crate::poller::PollerStatus;
use crate::poller::discovery::DiscoveryHandle;
use crate::poller::registry::Registry;
use crate::store::Store;
use crate::store::writer::WriterStats;
use axum::Router;
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::Duration;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Known devices and their reachability.
    pub registry: Arc<Registry>,
    /// On-demand discovery.
    pub discovery: DiscoveryHandle,
    /// Poller heartbeat.
    pub poller: Arc<PollerStatus>,
    /// Writer counters.
    pub writer: Arc<WriterStats>,
    /// Wall clock.
    pub clock: SharedClock,
    /// Poll interval (health freshness).
    pub poll_interval: Duration,
    /// Default zone for day resolution.
    pub timezone: chrono_tz::Tz,
    /// Start time, UTC ms.
    pub started_ms: i64,
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(health::health))
        .route("/devices", get(devices::list))
        .route("/devices/discover", post(devices::discover))
        .route("/devices/{device_id}/readings", get(devices::readings))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed);
    Router::new()
        .route("/", get(pages::index))
        .nest("/api", api)
        .fallback(error::not_found)
        .with_state(state)
}
