//! Stage 4: the faces. MQTT, the admin socket, the throttle's audit sweep, and the HTTP API
//! with the state its handlers share.

use super::Tasks;
use super::acquire::Acquired;
use super::open::Base;
use super::work::Work;
use crate::api::{self, AppState};
use crate::auth::throttle::Throttle;
use crate::clock::SharedClock;
use crate::config::Settings;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Starts MQTT (when configured), the admin socket and the HTTP server on `listener`;
/// returns the address it serves and the server's task.
pub(super) async fn start(
    settings: &Settings,
    base: Base,
    clock: &SharedClock,
    acq: Acquired,
    work: Work,
    tasks: &Tasks,
    listener: TcpListener,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let mqtt = mqtt(settings, &base, clock, &acq, &work, tasks)?;
    let throttle = Arc::new(Throttle::default());
    let setup = Arc::new(base.setup);
    tasks.tracker.spawn(api::auth::audit_sweep(
        throttle.clone(),
        base.store.clone(),
        base.audit_key.clone(),
        clock.clone(),
        tasks.stop.clone(),
    ));
    admin_socket(
        settings,
        &base.store,
        &base.audit_key,
        clock,
        &acq,
        (throttle.clone(), setup.clone(), work.push.clone()),
        tasks,
    );
    let state = AppState {
        store: base.store.clone(),
        clock: clock.clone(),
        devices: Arc::new(api::DeviceState {
            registry: acq.registry,
            discovery: acq.discovery,
            poller: acq.status,
            writer: acq.writer_stats,
            flusher: acq.flusher,
            conns: acq.conns,
            poll_interval: settings.poll.interval.0,
            poll_timeout: settings.poll.timeout.0,
            static_hosts: settings.static_hosts()?,
        }),
        work: Arc::new(api::WorkState {
            exporter: work.exporter,
            scheduler: work.scheduler,
            insights: Arc::new(crate::insights::Insights::new(settings.insights.clone())),
            alerts: work.alerts.clone(),
            push: work.push.clone(),
        }),
        auth: Arc::new(api::AuthState {
            jwt_key: base.jwt_key,
            audit_key: base.audit_key,
            throttle,
            gate: crate::auth::gate::HashGate::new(
                settings.auth.argon2_concurrency,
                settings.auth.login_queue,
            ),
            previews: Default::default(),
            setup,
        }),
        site: Arc::new(api::SiteState {
            timezone: settings.tz(),
            started_ms: clock.now_ms(),
            public_url: settings.http.public_url.clone(),
            trusted_proxies: settings.http.trusted_proxies.clone(),
            metrics: api::metrics::MetricsGate {
                access: settings.metrics.access.clone(),
                token: super::open::metrics_token(settings)?,
                db_path: settings.db_path(),
            },
            mqtt,
        }),
    };
    let addr = listener.local_addr()?;
    let limits = api::server::Limits {
        header_timeout: settings.http.header_timeout.0,
        idle_timeout: settings.http.idle_timeout.0,
        body_timeout: settings.http.body_timeout.0,
        max_connections: settings.http.max_connections,
    };
    let server = tokio::spawn(api::server::serve(
        listener,
        api::router(state),
        limits,
        tasks.stop.clone(),
        Duration::from_millis(900),
    ));
    tracing::info!(%addr, "kasad listening");
    Ok((addr, server))
}

/// The admin socket (`kasad user …` while the daemon runs).
fn admin_socket(
    settings: &Settings,
    store: &crate::store::Store,
    key: &crate::auth::keys::SecretKey,
    clock: &SharedClock,
    acq: &Acquired,
    live: crate::admin::Live,
    tasks: &Tasks,
) {
    let (dir, st, key, c, w, stop) = (
        settings.data_dir.clone(),
        store.clone(),
        key.clone(),
        clock.clone(),
        acq.flusher.clone(),
        tasks.stop.clone(),
    );
    tasks.tracker.spawn(async move {
        if let Err(e) = crate::admin::serve(&dir, st, key, live, c, w, stop).await {
            tracing::warn!(error = %e, "admin socket unavailable; `kasad user` needs the daemon stopped");
        }
    });
}

/// MQTT when `[mqtt] enabled`: its counters for `/metrics`.
fn mqtt(
    settings: &Settings,
    base: &Base,
    clock: &SharedClock,
    acq: &Acquired,
    work: &Work,
    tasks: &Tasks,
) -> anyhow::Result<Option<Arc<crate::mqtt::MqttStats>>> {
    if !settings.mqtt.enabled {
        return Ok(None);
    }
    let stats = Arc::new(crate::mqtt::MqttStats::default());
    let password = match &settings.mqtt.password_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("while reading [mqtt] password_file {}", p.display()))?
                .trim_end()
                .to_owned(),
        ),
        None => None,
    };
    let m = crate::mqtt::Mqtt {
        cfg: settings.mqtt.clone(),
        password,
        store: base.store.clone(),
        registry: acq.registry.clone(),
        tz: settings.tz(),
        exporter: work.exporter.clone(),
        cycles: acq.status.clone(),
        poll_interval: settings.poll.interval.0,
        poll_timeout: settings.poll.timeout.0,
        conns: acq.conns.clone(),
        clock: clock.clone(),
        audit_key: base.audit_key.clone(),
        stats: stats.clone(),
        alerts: work.alerts.mqtt.clone(),
    };
    tasks.tracker.spawn(m.run(tasks.stop.clone()));
    Ok(Some(stats))
}
