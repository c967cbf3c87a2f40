//! Composition root: opens the store, starts the writer, poller, discovery and HTTP server,
//! and shuts them down in order.
//!
//! Shutdown order: stop accepting HTTP and cancel poller and discovery → wait for their tasks
//! (bounded) → drop the last writer handle so the writer makes its final durable commit →
//! close the store. Everything finishes within [`SHUTDOWN_GRACE`].

use crate::api::{self, AppState};
use crate::audit::{Event, EventType, Severity};
use crate::auth::Role;
use crate::auth::keys::{self, SecretKey};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::poller::discovery::{Discoverer, DiscoveryHandle};
use crate::poller::registry::Registry;
use crate::poller::{PollConfig, Poller, PollerStatus};
use crate::store::audit::Pending;
use crate::store::users::User;
use crate::store::{self, Store};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest a clean shutdown may take.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// A started daemon.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTP server listens.
    pub addr: SocketAddr,
    /// Cancel this to stop the daemon.
    pub shutdown: CancellationToken,
    /// Finishes when the daemon has stopped and the store is closed.
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The scrape token of `/metrics` (first line of `[metrics] token_file`), if configured.
pub fn metrics_token(settings: &Settings) -> anyhow::Result<Option<String>> {
    let Some(path) = &settings.metrics.token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("while reading [metrics] token_file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    anyhow::ensure!(
        token.len() >= 16,
        "[metrics] token_file {}: the token must be at least 16 characters",
        path.display()
    );
    Ok(Some(token))
}

/// Opens (creating if needed) the data directory and the store.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("while creating data_dir {}", settings.data_dir.display()))?;
    let path = settings.db_path();
    let cache = settings.storage.cache_mb;
    let reserve = settings.storage.reserve_mb;
    let p = path.clone();
    let staging = settings.staging_path();
    tokio::task::spawn_blocking(move || {
        let store = Store::open(&p, cache)?.with_reserve(reserve << 20);
        // What the staging log made durable after the last checkpoint, before anything else
        // writes.
        match crate::store::staging::Staging::open(&staging) {
            Ok((mut log, batches)) if !batches.is_empty() => {
                let n = store::writer::replay(&store, &mut log, batches)?;
                tracing::info!(batches = n, "staging log replayed into the database");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, path = %staging.display(),
                "the staging log cannot be read; its readings are not replayed"),
        }
        if store.meta(crate::retention::COMPACT_PENDING)? == 0 {
            return Ok(store);
        }
        if let Err(e) = store.check_space(reserve << 20) {
            tracing::warn!(error = %e, "compaction after retention waits for a start with space");
            return Ok(store);
        }
        // A maintenance window: nothing else holds the store yet.
        tracing::info!("compacting the database after retention");
        let store = store.compact()?;
        store.set_meta(crate::retention::COMPACT_PENDING, 0)?;
        Ok::<_, crate::store::Error>(store)
    })
    .await?
    .with_context(|| format!("while opening {}", path.display()))
}

/// Opens the staging log (already replayed by [`open_store`]); without one (a file system
/// that refuses it), the database commits durably every `commit_interval` instead.
pub async fn open_staging(settings: &Settings) -> Option<crate::store::staging::Staging> {
    let path = settings.staging_path();
    let res =
        tokio::task::spawn_blocking(move || crate::store::staging::Staging::open(&path)).await;
    match res {
        Ok(Ok((log, _))) => Some(log),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "no staging log: the database commits durably every commit_interval");
            None
        }
        Err(_) => None,
    }
}

/// Puts every stored device into the registry so it is polled before discovery finds it;
/// forgotten ones are ignored by discovery and polling.
pub fn load_registry(store: &Store, registry: &Registry) -> anyhow::Result<()> {
    let forgotten: Vec<_> = store
        .forgotten_devices()?
        .into_iter()
        .map(|r| r.info)
        .collect();
    registry.ignore(&forgotten);
    let devices = store.devices()?;
    let now = tokio::time::Instant::now();
    for parent in devices.iter().filter(|d| d.record.info.parent_id.is_none()) {
        let kids: Vec<_> = devices
            .iter()
            .filter(|d| d.record.info.parent_id.as_ref() == Some(&parent.record.info.device_id))
            .collect();
        // A strip's newest reading is its outlets' (an outlet gone from the strip keeps an
        // old one, which must not stretch the gap).
        let last = std::iter::once(parent)
            .chain(kids.iter().copied())
            .filter_map(|d| d.last_reading_ms)
            .max();
        let mut outlets: Vec<_> = kids.iter().map(|d| d.record.info.clone()).collect();
        outlets.sort_by_key(|o| o.outlet_index);
        let mut infos = vec![parent.record.info.clone()];
        infos.extend(outlets);
        registry.upsert(infos, now);
        if let Some(ts) = last {
            registry.set_stored_until(&parent.record.info.device_id, ts);
        }
    }
    Ok(())
}

/// Restores forgotten devices that a static `[[devices]]` entry names again (audited as the
/// configuration's doing); returns how many.
pub fn restore_static(
    store: &Store,
    audit_key: &SecretKey,
    hosts: &[SocketAddr],
    now_ms: i64,
) -> anyhow::Result<usize> {
    let mut n = 0;
    for r in store.forgotten_devices()? {
        let named = r.info.parent_id.is_none()
            && r.info
                .address
                .parse::<SocketAddr>()
                .is_ok_and(|a| hosts.contains(&a));
        if !named {
            continue;
        }
        let mut ev = Event::new(EventType::DeviceRestored, Severity::Info);
        ev.username = Some("kasad (a static [[devices]] entry)".into());
        ev.resource = Some(format!("device:{}", r.info.device_id));
        store.device_restore(&r.info.device_id, |_| {
            Some(Pending::new(audit_key, ev, now_ms))
        })?;
        tracing::info!(device = %r.info.device_id, "a static [[devices]] entry restores a forgotten device");
        n += 1;
    }
    Ok(n)
}

/// Loads (or creates, mode 0600) the token-signing and audit keys in the data directory.
pub fn load_keys(settings: &Settings) -> anyhow::Result<(SecretKey, SecretKey)> {
    let jwt = keys::load_or_create(&settings.data_dir.join("jwt.key"))
        .context("while loading jwt.key")?;
    let audit = keys::load_or_create(&settings.data_dir.join("audit.key"))
        .context("while loading audit.key")?;
    Ok((jwt, audit))
}

/// Creates user `admin` with `password` unless a user of that name exists; returns whether
/// it was created.
pub fn ensure_admin(
    store: &Store,
    audit_key: &SecretKey,
    password: &str,
    now_ms: i64,
) -> anyhow::Result<bool> {
    if store.user_by_name("admin")?.is_some() {
        return Ok(false);
    }
    let user = User {
        id: 0,
        username: "admin".into(),
        password_hash: crate::auth::password::hash(password)?,
        role: Role::Admin,
        permissions: vec![],
        disabled: false,
        created_ms: now_ms,
        updated_ms: now_ms,
        token_version: 0,
    };
    let mut ev = Event::new(EventType::UserCreated, Severity::Info);
    ev.username = Some("kasad".into());
    ev.resource = Some("user:admin".into());
    store.create_user(user, Some(Pending::new(audit_key, ev, now_ms)))?;
    Ok(true)
}

/// The first-run setup code, while no user exists: made (or read) and said in the log.
async fn first_run(
    store: &Store,
    settings: &Settings,
) -> anyhow::Result<crate::auth::setup::SetupState> {
    let s = store.clone();
    if !tokio::task::spawn_blocking(move || s.no_users()).await?? {
        crate::auth::setup::remove(&settings.data_dir);
        return Ok(crate::auth::setup::SetupState::new(
            None,
            &settings.data_dir,
        ));
    }
    let code = crate::auth::setup::load_or_create(&settings.data_dir)
        .context("while writing the setup code")?;
    let file = crate::auth::setup::path(&settings.data_dir);
    tracing::warn!(
        setup_code = %code,
        file = %file.display(),
        "no user exists yet: open the web pages and create the first administrator with this setup code"
    );
    Ok(crate::auth::setup::SetupState::new(
        Some(code),
        &settings.data_dir,
    ))
}

/// Options for [`start_with`].
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Create user `admin` with this password if it does not exist (the demo).
    pub admin_password: Option<String>,
}

/// Starts the daemon on `listener`.
pub async fn start(
    settings: Settings,
    listener: TcpListener,
    clock: SharedClock,
) -> anyhow::Result<Running> {
    start_with(settings, listener, clock, StartOptions::default()).await
}

/// Starts the daemon on `listener` with options.
pub async fn start_with(
    settings: Settings,
    listener: TcpListener,
    clock: SharedClock,
    opts: StartOptions,
) -> anyhow::Result<Running> {
    let store = open_store(&settings).await?;
    let (jwt_key, audit_key) = load_keys(&settings)?;
    {
        let (s, hold) = (store.clone(), settings.audit.compliance_hold);
        tokio::task::spawn_blocking(move || s.audit_set_hold(hold)).await??;
    }
    if let Some(pw) = &opts.admin_password {
        let (s, k, pw, now) = (store.clone(), audit_key.clone(), pw.clone(), clock.now_ms());
        tokio::task::spawn_blocking(move || ensure_admin(&s, &k, &pw, now)).await??;
    }
    {
        // Stored with its zone written out, so a later change of `timezone` cannot move it.
        let seed = crate::tariff::Compiled::new(&settings.tariff, settings.tz()?)
            .map_err(|e| anyhow::anyhow!("[tariff] {e}"))?
            .pinned();
        let (s, first) = (store.clone(), seed.clone());
        let stored = tokio::task::spawn_blocking(move || s.tariffs_seed(&first)).await??;
        if stored.first() != Some(&seed) {
            tracing::info!(
                "[tariff] in the config differs from the stored first version; prices change through PUT /api/tariffs"
            );
        }
    }
    let staging = open_staging(&settings)
        .await
        .map(|l| (l, settings.storage.checkpoint_interval.0));
    let (writer, writer_task) =
        store::writer::spawn(store.clone(), settings.storage.commit_interval.0, staging);
    let registry = Arc::new(Registry::default());
    {
        let (s, k, hosts, now) = (
            store.clone(),
            audit_key.clone(),
            settings.static_hosts()?,
            clock.now_ms(),
        );
        tokio::task::spawn_blocking(move || restore_static(&s, &k, &hosts, now)).await??;
    }
    load_registry(&store, &registry)?;
    let conns = Arc::new(
        crate::poller::conns::ConnPool::new(settings.poll.keep_connections)
            .with_account(settings.kasa.account()?)
            .with_clock(clock.clone()),
    );
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let status = Arc::new(PollerStatus::default());
    let poller = Poller {
        cfg: PollConfig {
            interval: settings.poll.interval.0,
            timeout: settings.poll.timeout.0,
            concurrency: settings.poll.concurrency,
            max_backoff: settings.poll.max_backoff.0,
            static_hosts: settings.static_hosts()?,
        },
        registry: registry.clone(),
        writer: writer.clone(),
        clock: clock.clone(),
        status: status.clone(),
        conns: conns.clone(),
        sent: Default::default(),
    };
    let discovery = if settings.discovery.enabled {
        Discoverer {
            targets: settings.discovery_targets()?,
            targets_20002: settings.discovery_targets_20002()?,
            window: settings.discovery.window.0,
            registry: registry.clone(),
            writer: writer.clone(),
            clock: clock.clone(),
            allow_login_v1: settings.kasa.allow_login_v1,
        }
        .spawn(settings.discovery.interval.0, shutdown.clone(), &tracker)
    } else {
        DiscoveryHandle::disabled()
    };
    tracker.spawn(poller.run(shutdown.clone()));
    tracker.spawn(crate::retention::run(
        store.clone(),
        audit_key.clone(),
        settings.audit.retention_days,
        settings.storage.raw_retention.0,
        clock.clone(),
        shutdown.clone(),
    ));
    let throttle = Arc::new(crate::auth::throttle::Throttle::default());
    let setup = Arc::new(first_run(&store, &settings).await?);
    tracker.spawn(api::auth::audit_sweep(
        throttle.clone(),
        store.clone(),
        audit_key.clone(),
        clock.clone(),
        shutdown.clone(),
    ));
    {
        let (dir, st, key, c, w, stop) = (
            settings.data_dir.clone(),
            store.clone(),
            audit_key.clone(),
            clock.clone(),
            writer.downgrade(),
            shutdown.clone(),
        );
        let (t, su) = (throttle.clone(), setup.clone());
        tracker.spawn(async move {
            if let Err(e) = crate::admin::serve(&dir, st, key, (t, su), c, w, stop).await {
                tracing::warn!(error = %e, "admin socket unavailable; `kasad user` needs the daemon stopped");
            }
        });
    }
    let writer_stats = writer.stats.clone();
    let flusher = writer.downgrade();
    drop(writer);
    let privacy_key = keys::load_or_create(&settings.data_dir.join("export.key"))
        .context("while loading export.key")?;
    let exporter = crate::export::jobs::Exporter::new(
        store.clone(),
        clock.clone(),
        &settings.data_dir,
        crate::export::jobs::ExportConfig {
            settings: settings.clone(),
            tz: settings.tz()?,
            runtime: Some(crate::export::report::Runtime {
                started_ms: clock.now_ms(),
                registry: registry.clone(),
                poll_interval_ms: i64::try_from(settings.poll.interval.0.as_millis())
                    .unwrap_or(i64::MAX),
                db_path: settings.db_path(),
            }),
        },
        privacy_key,
        audit_key.clone(),
    )
    .context("while creating the exports directory")?;
    {
        let ex = exporter.clone();
        let n = tokio::task::spawn_blocking(move || ex.recover()).await??;
        if n > 0 {
            tracing::info!(jobs = n, "re-queued exports interrupted by the last stop");
        }
    }
    let scheduler = crate::schedule::runner::Scheduler::new(
        store.clone(),
        exporter.clone(),
        clock.clone(),
        settings.clone(),
        audit_key.clone(),
        jwt_key.clone(),
        shutdown.clone(),
    );
    tracker.spawn(scheduler.clone().run());
    {
        let schedule = crate::cron::Schedule::parse(&settings.exports.cleanup_schedule)
            .map_err(anyhow::Error::msg)?;
        let (ex, sch) = (exporter.clone(), scheduler.clone());
        tracker.spawn(crate::cron::run(
            schedule,
            settings.tz()?,
            clock.clone(),
            shutdown.clone(),
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
    }
    {
        let (ex, stop) = (exporter.clone(), shutdown.clone());
        tracker.spawn(async move {
            stop.cancelled().await;
            ex.shutdown(SHUTDOWN_GRACE / 2).await;
        });
    }

    let mqtt = if settings.mqtt.enabled {
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
            store: store.clone(),
            registry: registry.clone(),
            tz: settings.tz()?,
            exporter: exporter.clone(),
            cycles: status.clone(),
            poll_interval: settings.poll.interval.0,
            poll_timeout: settings.poll.timeout.0,
            conns: conns.clone(),
            clock: clock.clone(),
            audit_key: audit_key.clone(),
            stats: stats.clone(),
        };
        tracker.spawn(m.run(shutdown.clone()));
        Some(stats)
    } else {
        None
    };
    let state = AppState {
        static_hosts: Arc::new(settings.static_hosts()?),
        mqtt,
        store: store.clone(),
        registry,
        discovery,
        poller: status,
        writer: writer_stats,
        flusher,
        trusted_proxies: Arc::new(
            settings
                .http
                .trusted_proxies
                .iter()
                .filter_map(|p| crate::config::Net::parse(p))
                .collect(),
        ),
        clock: clock.clone(),
        poll_interval: settings.poll.interval.0,
        poll_timeout: settings.poll.timeout.0,
        conns,
        timezone: settings.tz()?,
        started_ms: clock.now_ms(),
        exporter,
        public_url: settings.http.public_url.clone(),
        scheduler,
        auth: Arc::new(api::AuthState {
            jwt_key,
            audit_key,
            throttle,
            gate: crate::auth::gate::HashGate::new(
                settings.auth.argon2_concurrency,
                settings.auth.login_queue,
            ),
            previews: Default::default(),
            setup,
        }),
        metrics: Arc::new(api::metrics::MetricsGate {
            access: settings.metrics.access.clone(),
            token: metrics_token(&settings)?,
            db_path: settings.db_path(),
        }),
    };
    let addr = listener.local_addr()?;
    let app = api::router(state);
    let stop = shutdown.clone();
    let limits = api::server::Limits {
        header_timeout: settings.http.header_timeout.0,
        idle_timeout: settings.http.idle_timeout.0,
        body_timeout: settings.http.body_timeout.0,
        max_connections: settings.http.max_connections,
    };
    let server = tokio::spawn(api::server::serve(
        listener,
        app,
        limits,
        stop,
        Duration::from_millis(900),
    ));
    tracing::info!(%addr, "kasad listening");

    let stop = shutdown.clone();
    let done = tokio::spawn(async move {
        stop.cancelled().await;
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop in time");
        }
        // Open HTTP connections get the rest of the grace period.
        let abort = server.abort_handle();
        if tokio::time::timeout(Duration::from_secs(1), server)
            .await
            .is_err()
        {
            abort.abort();
        }
        // All writer handles are gone now: the writer commits durably and ends.
        writer_task.await.context("store writer panicked")?;
        // HTTP connection tasks end a moment after the server does, each holding the routes'
        // state (and so the store): wait for them, so `done` means the file is closed.
        for _ in 0..250 {
            if store.handles() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if store.handles() > 1 {
            tracing::warn!(
                handles = store.handles(),
                "the database is still in use at stop"
            );
        }
        drop(store);
        tracing::info!("kasad stopped");
        Ok(())
    });
    Ok(Running {
        addr,
        shutdown,
        done,
    })
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    clock: SharedClock,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(settings.http.listen)
        .await
        .with_context(|| format!("while binding {}", settings.http.listen))?;
    let mdns_cfg = settings.mdns.clone();
    let running = start(settings, listener, clock).await?;
    // Under systemd (Type=notify): ready once serving, then the watchdog, then stopping.
    let sd = crate::sdnotify::Notifier::from_env();
    sd.say(&format!("READY=1\nSTATUS=serving on {}", running.addr));
    tokio::spawn(sd.clone().watchdog(running.shutdown.clone()));
    let addr = running.addr;
    // mDNS is never fatal: a failure there is logged, and the daemon serves and stops as usual.
    let mdns = tokio::task::spawn_blocking(move || crate::mdns::start(&mdns_cfg, addr))
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "mDNS did not start");
            None
        });
    shutdown.await;
    sd.say("STOPPING=1");
    if let Some(m) = mdns
        && let Err(e) = tokio::task::spawn_blocking(move || m.stop()).await
    {
        tracing::warn!(error = %e, "mDNS goodbye failed");
    }
    running.shutdown.cancel();
    running.done.await?
}
