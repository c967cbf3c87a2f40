//! Stage 3: the export engine, the scheduler and the alerts. Exports interrupted by the last
//! stop are queued again; the expired-export cleanup runs on its cron expression; alerts are
//! evaluated after each poll cycle.

use super::open::Base;
use super::{SHUTDOWN_GRACE, Tasks};
use crate::auth::keys;
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::export::jobs::Exporter;
use crate::poller::registry::Registry;
use crate::schedule::runner::Scheduler;
use anyhow::Context;
use std::sync::Arc;

/// The export service, the scheduler and the alerts.
pub(super) struct Work {
    pub exporter: Arc<Exporter>,
    pub scheduler: Arc<Scheduler>,
    pub alerts: Arc<crate::alerts::Alerts>,
    pub push: Arc<crate::push::Push>,
}

/// Starts the exporter (re-queueing interrupted jobs), the scheduler and the cleanup.
pub(super) async fn start(
    settings: &Settings,
    base: &Base,
    clock: &SharedClock,
    registry: &Arc<Registry>,
    cycles: tokio::sync::watch::Receiver<u64>,
    tasks: &Tasks,
) -> anyhow::Result<Work> {
    let store = &base.store;
    let privacy_key = keys::load_or_create(&settings.data_dir.join("export.key"))
        .context("while loading export.key")?;
    let exporter = Exporter::new(
        store.clone(),
        clock.clone(),
        &settings.data_dir,
        crate::export::jobs::ExportConfig {
            settings: settings.clone(),
            tz: settings.tz(),
            runtime: Some(crate::export::kind::system_report::Runtime {
                started_ms: clock.now_ms(),
                registry: registry.clone(),
                poll_interval_ms: i64::try_from(settings.poll.interval.0.as_millis())
                    .unwrap_or(i64::MAX),
                db_path: settings.db_path(),
                insights: settings.insights.clone(),
            }),
        },
        privacy_key,
        base.audit_key.clone(),
    )
    .context("while creating the exports directory")?;
    {
        let ex = exporter.clone();
        let n = tokio::task::spawn_blocking(move || ex.recover()).await??;
        if n > 0 {
            tracing::info!(jobs = n, "re-queued exports interrupted by the last stop");
        }
    }
    let scheduler = Scheduler::new(
        store.clone(),
        exporter.clone(),
        clock.clone(),
        settings.clone(),
        base.audit_key.clone(),
        base.jwt_key.clone(),
        tasks.stop.clone(),
    );
    tasks.tracker.spawn(scheduler.clone().run());
    let (ex, sch) = (exporter.clone(), scheduler.clone());
    tasks.tracker.spawn(crate::cron::run(
        settings.exports.cleanup_schedule.clone(),
        settings.tz(),
        clock.clone(),
        tasks.stop.clone(),
        move || {
            let (ex, sch) = (ex.clone(), sch.clone());
            async move {
                match tokio::task::spawn_blocking(move || ex.cleanup()).await {
                    Ok(Ok((expired, notices))) => {
                        tracing::info!(expired, notices = notices.len(), "export cleanup done");
                        sch.notify_expiring(notices).await;
                    }
                    other => tracing::error!(?other, "export cleanup failed"),
                }
            }
        },
    ));
    let (ex, stop) = (exporter.clone(), tasks.stop.clone());
    tasks.tracker.spawn(async move {
        stop.cancelled().await;
        ex.shutdown(SHUTDOWN_GRACE / 2).await;
    });
    let push = push(settings, store, clock, tasks).await?;
    for (i, feed) in settings.price_feeds.iter().enumerate() {
        crate::notify::check_webhook(&feed.url, None, settings)
            .map_err(|m| anyhow::anyhow!("price_feeds[{i}].url: {m}"))?;
        let (store, key, clock2, s) = (
            store.clone(),
            base.audit_key.clone(),
            clock.clone(),
            Arc::new(settings.clone()),
        );
        let feed2 = feed.clone();
        tasks.tracker.spawn(crate::cron::run(
            feed.schedule.clone(),
            settings.tz(),
            clock.clone(),
            tasks.stop.clone(),
            move || {
                let (store, key, clock, s, f) = (
                    store.clone(),
                    key.clone(),
                    clock2.clone(),
                    s.clone(),
                    feed2.clone(),
                );
                async move { fetch_feed(&store, &key, clock.now_ms(), &s, &f).await }
            },
        ));
    }
    let alerts = Arc::new(crate::alerts::Alerts::new(
        store.clone(),
        clock.clone(),
        Arc::new(settings.clone()),
        base.audit_key.clone(),
    ));
    tasks
        .tracker
        .spawn(alerts.clone().run(cycles, tasks.stop.clone()));
    Ok(Work {
        exporter,
        scheduler,
        alerts,
        push,
    })
}

/// One scheduled fetch of a `[[price_feeds]]` entry, stored and audited; failures are logged.
async fn fetch_feed(
    store: &crate::store::Store,
    key: &crate::auth::keys::SecretKey,
    now: i64,
    s: &Settings,
    f: &crate::config::PriceFeed,
) {
    use crate::audit::{Event, EventType, Severity};
    let Some(layout) = crate::tariff::prices::Layout::parse(&f.layout) else {
        return;
    };
    match crate::tariff::prices::fetch(&f.url, layout, s).await {
        Ok(points) => {
            let mut ev = Event::new(EventType::TariffChanged, Severity::Info);
            ev.username = Some("kasad (price feed)".into());
            ev.resource = Some(format!("prices:{}", f.series));
            ev.details = serde_json::json!({"series": f.series, "intervals": points.len(),
                "source": crate::notify::origin(&f.url)});
            let (store, key, series) = (store.clone(), key.clone(), f.series.clone());
            let r = tokio::task::spawn_blocking(move || {
                store.prices_put(
                    &series,
                    &points,
                    crate::store::audit::Pending::new(&key, ev, now),
                )
            })
            .await;
            if !matches!(r, Ok(Ok(()))) {
                tracing::warn!(series = %f.series, "price feed: storing failed");
            }
        }
        Err(e) => tracing::warn!(series = %f.series, error = %e, "price feed: fetch failed"),
    }
}

/// The push targets, each pushing in a task of its own; refused at start when a target's URL
/// or secrets are wrong.
async fn push(
    settings: &Settings,
    store: &crate::store::Store,
    clock: &SharedClock,
    tasks: &Tasks,
) -> anyhow::Result<Arc<crate::push::Push>> {
    let (s, st, now) = (settings.clone(), store.clone(), clock.now_ms());
    let push = tokio::task::spawn_blocking(move || crate::push::Push::new(&st, &s, now))
        .await?
        .context("while starting [[push]]")?;
    let push = Arc::new(push);
    if !push.is_empty() {
        tasks.tracker.spawn(push.clone().run(
            store.clone(),
            clock.clone(),
            settings.poll.interval.0,
            tasks.stop.clone(),
        ));
    }
    Ok(push)
}
