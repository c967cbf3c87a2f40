//! The HTTP API (axum) — the only module that imports axum.
//!
//! Owns: the route table (each route with its access rule and summary — the router and the
//! OpenAPI document are both built from it, so neither can miss a route), shared state,
//! request ids, security headers and the body limit. Handlers are thin: they parse, call the
//! store / registry / discovery, and map results; every error is an [`error::ApiError`].

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod bills;
pub mod device_edit;
pub mod devices;
pub mod error;
pub mod exports;
pub mod guard;
pub mod health;
pub mod insights;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod prices;
pub mod schedules;
pub mod server;
pub mod setup;
pub mod statements;
pub mod tariffs;
pub mod users;

use crate::audit::Event;
use crate::auth::Permission;
use crate::auth::gate::HashGate;
use crate::auth::keys::SecretKey;
use crate::auth::throttle::Throttle;
use crate::clock::SharedClock;
use crate::poller::PollerStatus;
use crate::poller::discovery::DiscoveryHandle;
use crate::poller::registry::Registry;
use crate::store::Store;
use crate::store::writer::WriterStats;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use guard::Access;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Keys and limits of the auth layer.
#[derive(Debug)]
pub struct AuthState {
    /// Signs access tokens.
    pub jwt_key: SecretKey,
    /// Chains audit entries.
    pub audit_key: SecretKey,
    /// Login throttling.
    pub throttle: Arc<Throttle>,
    /// Bounds concurrent and queued Argon2 work.
    pub gate: HashGate,
    /// Previews per user per minute.
    pub previews: crate::auth::rate::Rolling,
    /// The first-run setup code, while no user exists.
    pub setup: Arc<crate::auth::setup::SetupState>,
}

/// What handlers share: the store and the clock, and four groups.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Wall clock.
    pub clock: SharedClock,
    /// The devices: registry, discovery, poller, writer, connections.
    pub devices: Arc<DeviceState>,
    /// The export service and the scheduler.
    pub work: Arc<WorkState>,
    /// Keys, throttling, the setup code.
    pub auth: Arc<AuthState>,
    /// The daemon as a site: zone, start, links, proxies, metrics, MQTT.
    pub site: Arc<SiteState>,
}

/// The devices and what acquires their readings.
#[derive(Debug)]
pub struct DeviceState {
    /// Known devices and their reachability.
    pub registry: Arc<Registry>,
    /// On-demand discovery.
    pub discovery: DiscoveryHandle,
    /// Poller heartbeat.
    pub poller: Arc<PollerStatus>,
    /// Writer counters.
    pub writer: Arc<WriterStats>,
    /// Asks the writer for a durable commit (before a backup, after a purge).
    pub flusher: crate::store::writer::WeakWriter,
    /// Device connections (relay commands reuse a KLAP device's session).
    pub conns: Arc<crate::poller::conns::ConnPool>,
    /// Poll interval (health freshness).
    pub poll_interval: Duration,
    /// Per-device timeout (relay control).
    pub poll_timeout: Duration,
    /// Addresses of the static `[[devices]]` entries (such devices cannot be forgotten).
    pub static_hosts: Vec<std::net::SocketAddr>,
}

/// Exports, schedules, insights and alerts.
#[derive(Debug)]
pub struct WorkState {
    /// The export service.
    pub exporter: Arc<crate::export::jobs::Exporter>,
    /// The scheduler of scheduled exports.
    pub scheduler: Arc<crate::schedule::runner::Scheduler>,
    /// The insights, cached for a poll cycle.
    pub insights: Arc<crate::insights::Insights>,
    /// Alert rules and alerts.
    pub alerts: Arc<crate::alerts::Alerts>,
    /// The push targets.
    pub push: Arc<crate::push::Push>,
}

/// What is said about the daemon as a whole.
#[derive(Debug)]
pub struct SiteState {
    /// Default zone for day resolution.
    pub timezone: chrono_tz::Tz,
    /// Start time, UTC ms.
    pub started_ms: i64,
    /// `[http] public_url`: base of absolute links.
    pub public_url: Option<String>,
    /// `[http] trusted_proxies`.
    pub trusted_proxies: Vec<crate::config::Net>,
    /// `GET /metrics` access.
    pub metrics: metrics::MetricsGate,
    /// MQTT counters (`None` when MQTT is off).
    pub mqtt: Option<Arc<crate::mqtt::MqttStats>>,
}

impl AppState {
    /// Appends an audit event; a failure is logged, never shown to the client.
    pub async fn audit(&self, ev: Event) {
        self.store
            .audit_logged(&self.auth.audit_key, ev, self.clock.now_ms())
            .await;
    }
}

/// One route: method, path under `/api`, who may call it, and what it does.
#[derive(Debug, Clone)]
pub struct RouteDoc {
    /// HTTP method.
    pub method: Method,
    /// Path relative to `/api`, axum/OpenAPI syntax (`/devices/{device_id}`).
    pub path: &'static str,
    /// Access rule.
    pub access: Access,
    /// One-line description.
    pub summary: &'static str,
}

const fn doc(
    method: Method,
    path: &'static str,
    access: Access,
    summary: &'static str,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        access,
        summary,
    }
}

use Access::{Authenticated, Open, Requires, Ticket};
use Permission::*;

/// Every API route with its handler, by area.
pub fn routes() -> Vec<Route> {
    [
        session_routes(),
        device_routes(),
        user_routes(),
        export_routes(),
        schedule_routes(),
        alert_routes(),
        bill_routes(),
        statement_routes(),
        admin_routes(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// One route: what the API description says of it, and its handler.
type Route = (RouteDoc, MethodRouter<AppState>);

fn route(
    method: Method,
    path: &'static str,
    access: Access,
    summary: &'static str,
    handler: MethodRouter<AppState>,
) -> Route {
    (doc(method, path, access, summary), handler)
}

/// Health, sign-in, first run and this API's description.
fn session_routes() -> Vec<Route> {
    vec![
        route(
            Method::GET,
            "/health",
            Open,
            "Store and poller health",
            get(health::health),
        ),
        route(
            Method::POST,
            "/auth/login",
            Open,
            "Log in: access and refresh token",
            post(auth::login),
        ),
        route(
            Method::GET,
            "/setup",
            Open,
            "Whether the first administrator is still to be created",
            get(setup::status),
        ),
        route(
            Method::POST,
            "/setup",
            Open,
            "Create the first administrator with the setup code (only while no user exists)",
            post(setup::create),
        ),
        route(
            Method::POST,
            "/auth/refresh",
            Open,
            "Trade a refresh token for a new pair",
            post(auth::refresh),
        ),
        route(
            Method::POST,
            "/auth/logout",
            Authenticated,
            "Revoke the current tokens",
            post(auth::logout),
        ),
        route(
            Method::GET,
            "/auth/me",
            Authenticated,
            "The signed-in user and permissions",
            get(auth::me),
        ),
        route(
            Method::GET,
            "/openapi.json",
            Authenticated,
            "This API description",
            get(openapi::document),
        ),
    ]
}

/// Devices: list, live values, readings, labels, forgetting, switching.
fn device_routes() -> Vec<Route> {
    vec![
        route(
            Method::GET,
            "/devices",
            Requires(DeviceRead),
            "Devices with status and reading counts",
            get(devices::list),
        ),
        route(
            Method::GET,
            "/devices/live",
            Requires(DeviceRead),
            "Newest power and today's energy and cost per device",
            get(devices::live),
        ),
        route(
            Method::POST,
            "/devices/discover",
            Requires(DeviceControl),
            "Run a discovery round now",
            post(devices::discover),
        ),
        route(
            Method::GET,
            "/devices/{device_id}/readings",
            Requires(DeviceRead),
            "Raw or rolled-up readings",
            get(devices::readings),
        ),
        route(
            Method::GET,
            "/insights",
            Requires(DeviceRead),
            "Always-on power, cycles, runs, unusual days per device; the cost forecast",
            get(insights::list),
        ),
        route(
            Method::GET,
            "/insights/devices/{device_id}",
            Requires(DeviceRead),
            "One device's insights",
            get(insights::one),
        ),
        route(
            Method::GET,
            "/insights/settings",
            Requires(SystemConfig),
            "The budget of a billing period and where it comes from",
            get(insights::settings),
        ),
        route(
            Method::PUT,
            "/insights/settings",
            Requires(SystemConfig),
            "Set the budget of a billing period (null: none)",
            put(insights::put_settings),
        ),
        route(
            Method::PATCH,
            "/devices/{device_id}",
            Requires(SystemConfig),
            "Set a device's name, room, rated power, notes, load kind or run threshold (null clears)",
            patch(device_edit::update),
        ),
        route(
            Method::DELETE,
            "/devices/{device_id}",
            Requires(SystemConfig),
            "Forget a device (a strip with its outlets); ?purge=true deletes its readings",
            delete(device_edit::forget),
        ),
        route(
            Method::POST,
            "/devices/{device_id}/restore",
            Requires(SystemConfig),
            "Restore a forgotten device with the history it kept",
            post(device_edit::restore),
        ),
        route(
            Method::POST,
            "/devices/{device_id}/relay",
            Requires(DeviceControl),
            "Switch a plug or outlet on or off",
            post(devices::relay),
        ),
    ]
}

/// Users and their permissions.
fn user_routes() -> Vec<Route> {
    vec![
        route(
            Method::GET,
            "/users",
            Requires(UserManage),
            "List users",
            get(users::list),
        ),
        route(
            Method::POST,
            "/users",
            Requires(UserManage),
            "Create a user",
            post(users::create),
        ),
        route(
            Method::PATCH,
            "/users/{user_id}",
            Requires(UserManage),
            "Change role, permissions, password or disabled",
            patch(users::update),
        ),
        route(
            Method::DELETE,
            "/users/{user_id}",
            Requires(UserManage),
            "Delete a user",
            delete(users::remove),
        ),
    ]
}

/// Exports: what can be exported, jobs, previews, downloads.
fn export_routes() -> Vec<Route> {
    vec![
        route(
            Method::GET,
            "/exports/formats",
            Requires(DataExport),
            "Export formats with MIME types and extensions",
            get(exports::formats),
        ),
        route(
            Method::GET,
            "/exports/devices",
            Requires(DataExport),
            "Devices that can be exported",
            get(exports::devices),
        ),
        route(
            Method::GET,
            "/exports/metrics",
            Requires(DataExport),
            "Exportable fields with units",
            get(exports::metrics),
        ),
        route(
            Method::POST,
            "/exports/create",
            Requires(DataExport),
            "Create an export job",
            post(exports::create),
        ),
        route(
            Method::GET,
            "/exports/history",
            Requires(DataExport),
            "Your exports (admins: all), newest first",
            get(exports::history),
        ),
        route(
            Method::GET,
            "/exports/stats",
            Requires(DataExport),
            "Export statistics",
            get(exports::stats),
        ),
        route(
            Method::GET,
            "/exports/preview",
            Requires(DataExport),
            "First rows, total and size of an export (query parameters)",
            get(exports::preview_get),
        ),
        route(
            Method::POST,
            "/exports/preview",
            Requires(DataExport),
            "First rows, total and size of an export (create body)",
            post(exports::preview_post),
        ),
        route(
            Method::GET,
            "/exports/download/{export_id}",
            Ticket(DataExport),
            "Download a finished export (Range supported)",
            get(exports::download),
        ),
        route(
            Method::GET,
            "/exports/{export_id}",
            Requires(DataExport),
            "Status of an export",
            get(exports::status),
        ),
        route(
            Method::DELETE,
            "/exports/{export_id}",
            Requires(DataExport),
            "Delete an export (cancels it when running)",
            delete(exports::remove),
        ),
    ]
}

/// Scheduled exports.
fn schedule_routes() -> Vec<Route> {
    vec![
        route(
            Method::POST,
            "/exports/schedule",
            Requires(DataExport),
            "Create a scheduled export (cron, export_config, delivery)",
            post(schedules::create),
        ),
        route(
            Method::GET,
            "/exports/schedules",
            Requires(DataExport),
            "Scheduled exports (own; all for admins)",
            get(schedules::list),
        ),
        route(
            Method::GET,
            "/exports/schedules/{schedule_id}",
            Requires(DataExport),
            "One scheduled export with next_run and last_run",
            get(schedules::get),
        ),
        route(
            Method::PUT,
            "/exports/schedules/{schedule_id}",
            Requires(DataExport),
            "Change a scheduled export (the fields given)",
            put(schedules::update),
        ),
        route(
            Method::DELETE,
            "/exports/schedules/{schedule_id}",
            Requires(DataExport),
            "Delete a scheduled export",
            delete(schedules::remove),
        ),
        route(
            Method::POST,
            "/exports/schedules/{schedule_id}/run",
            Requires(DataExport),
            "Run a scheduled export now",
            post(schedules::run_now),
        ),
    ]
}

/// Signed statements: the signing key and the check (issuing is an export).
fn statement_routes() -> Vec<Route> {
    vec![
        route(
            Method::GET,
            "/statements/public-key",
            Authenticated,
            "The Ed25519 key that signs statements, with its fingerprint",
            get(statements::public_key),
        ),
        route(
            Method::POST,
            "/statements/verify",
            Authenticated,
            "Check an uploaded statement (PDF, JSON or CSV) and name its signer",
            post(statements::verify).layer(DefaultBodyLimit::max(statements::MAX_UPLOAD)),
        ),
    ]
}

/// Utility bills, reconciled with what the plugs measured.
fn bill_routes() -> Vec<Route> {
    vec![
        route(
            Method::GET,
            "/bills",
            Requires(SystemConfig),
            "Bills with their reconciliation",
            get(bills::list),
        ),
        route(
            Method::POST,
            "/bills",
            Requires(SystemConfig),
            "Record a bill",
            post(bills::create),
        ),
        route(
            Method::GET,
            "/bills/{bill_id}",
            Requires(SystemConfig),
            "One bill with its reconciliation",
            get(bills::get),
        ),
        route(
            Method::PUT,
            "/bills/{bill_id}",
            Requires(SystemConfig),
            "Replace a bill",
            put(bills::put),
        ),
        route(
            Method::DELETE,
            "/bills/{bill_id}",
            Requires(SystemConfig),
            "Delete a bill",
            delete(bills::delete),
        ),
    ]
}

/// Alert rules and alerts.
fn alert_routes() -> Vec<Route> {
    vec![
        route(
            Method::GET,
            "/alerts/rules",
            Requires(DeviceRead),
            "Alert rules",
            get(alerts::list_rules),
        ),
        route(
            Method::POST,
            "/alerts/rules",
            Requires(SystemConfig),
            "Create an alert rule",
            post(alerts::create_rule),
        ),
        route(
            Method::GET,
            "/alerts/rules/{rule_id}",
            Requires(DeviceRead),
            "One alert rule",
            get(alerts::get_rule),
        ),
        route(
            Method::PUT,
            "/alerts/rules/{rule_id}",
            Requires(SystemConfig),
            "Replace an alert rule",
            put(alerts::put_rule),
        ),
        route(
            Method::DELETE,
            "/alerts/rules/{rule_id}",
            Requires(SystemConfig),
            "Delete an alert rule (its open alerts resolve)",
            delete(alerts::delete_rule),
        ),
        route(
            Method::POST,
            "/alerts/rules/{rule_id}/test",
            Requires(SystemConfig),
            "Send a test notice on every channel of a rule",
            post(alerts::test_rule),
        ),
        route(
            Method::GET,
            "/alerts",
            Requires(DeviceRead),
            "Alerts, newest first, by state",
            get(alerts::list),
        ),
        route(
            Method::POST,
            "/alerts/{alert_id}/acknowledge",
            Requires(DeviceControl),
            "Acknowledge an alert",
            post(alerts::acknowledge),
        ),
        route(
            Method::POST,
            "/alerts/{alert_id}/snooze",
            Requires(DeviceControl),
            "Snooze an alert's notices for some minutes",
            post(alerts::snooze),
        ),
    ]
}

/// Administration: backups, the retention sweep, tariffs and the audit log.
fn admin_routes() -> Vec<Route> {
    vec![
        route(
            Method::POST,
            "/admin/backup",
            Requires(SystemConfig),
            "Download a backup (database, staging log, keys) taken now (admins only)",
            post(backup::create),
        ),
        route(
            Method::POST,
            "/exports/cleanup",
            Requires(SystemConfig),
            "Run the export retention sweep now",
            post(exports::cleanup),
        ),
        route(
            Method::GET,
            "/tariffs",
            Requires(SystemConfig),
            "Tariff versions and the one in force",
            get(tariffs::get),
        ),
        route(
            Method::PUT,
            "/tariffs",
            Requires(SystemConfig),
            "Add a tariff version from its effective_from",
            put(tariffs::put),
        ),
        route(
            Method::POST,
            "/tariffs/compare",
            Requires(SystemConfig),
            "Price a period's history under several tariffs (what-if)",
            post(tariffs::compare),
        ),
        route(
            Method::PUT,
            "/tariffs/prices/{series}",
            Requires(SystemConfig),
            "Store a price series for dynamic tariffs (?layout=csv, json, awattar, octopus)",
            put(prices::upload),
        ),
        route(
            Method::GET,
            "/tariffs/prices/{series}",
            Requires(SystemConfig),
            "A price series over a range, with its gaps",
            get(prices::list),
        ),
        route(
            Method::POST,
            "/tariffs/prices/{series}/fetch",
            Requires(SystemConfig),
            "Fetch a price series from an allowed URL now",
            post(prices::fetch_now),
        ),
        route(
            Method::GET,
            "/audit",
            Requires(AuditRead),
            "Query the audit log",
            get(audit::list),
        ),
        route(
            Method::GET,
            "/audit/verify",
            Requires(AuditRead),
            "Verify the audit hash chain",
            get(audit::verify),
        ),
    ]
}

async fn headers_and_request_id(req: Request, next: Next) -> Response {
    let id = crate::random::random_token::<9>();
    let path = req.uri().path().to_owned();
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(request_id = %id, %path, "request failed with an internal error");
        resp = (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({
                "detail": "Internal error", "error_code": "INTERNAL_ERROR",
                "message": "The server could not complete the request; the cause has been logged",
                "request_id": id,
            })),
        )
            .into_response();
    }
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("x-request-id", v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    if path.starts_with("/api/") {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let mut api = Router::new();
    for (d, handler) in routes() {
        let layer = middleware::from_fn_with_state((state.clone(), d.access), guard::guard);
        api = api.route(d.path, handler.route_layer(layer));
    }
    let api = api
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed);
    Router::new()
        .route("/", get(pages::index))
        .route("/static/{file}", get(pages::asset))
        .route("/metrics", get(metrics::scrape))
        .nest("/api", api)
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(headers_and_request_id))
        .layer(middleware::from_fn_with_state(
            state.site.clone(),
            guard::real_client,
        ))
        .with_state(state)
}
