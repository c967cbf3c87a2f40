//! Composition root: starts the daemon in named stages and stops it in order.
//!
//! 1. [`open`]: the state on disk (database, keys, tariff seed, setup code);
//! 2. [`acquire`]: the store writer, the registry, the poller, discovery, retention;
//! 3. [`work`]: the export engine and the scheduler;
//! 4. [`faces`]: MQTT, the admin socket and the HTTP API.
//!
//! Shutdown order: stop accepting HTTP and cancel every task → wait for them (bounded) →
//! drop the last writer handle so the writer makes its final durable commit → close the
//! store. Everything finishes within [`SHUTDOWN_GRACE`].

mod acquire;
mod faces;
mod open;
mod work;

pub use acquire::{load_registry, restore_static};
pub use open::{ensure_admin, load_keys, metrics_token, open_staging, open_store};

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::store::Store;
use anyhow::Context;
use std::net::SocketAddr;
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

/// Options for [`start_with`].
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Create user `admin` with this password if it does not exist (the demo).
    pub admin_password: Option<String>,
}

/// The background tasks of one daemon and what stops them.
struct Tasks {
    stop: CancellationToken,
    tracker: TaskTracker,
}

/// Starts the daemon on `listener`.
pub async fn start(
    settings: Settings,
    listener: TcpListener,
    clock: SharedClock,
) -> anyhow::Result<Running> {
    start_with(settings, listener, clock, StartOptions::default()).await
}

/// Starts the daemon on `listener` with options, stage by stage.
pub async fn start_with(
    settings: Settings,
    listener: TcpListener,
    clock: SharedClock,
    opts: StartOptions,
) -> anyhow::Result<Running> {
    let base = open::open(&settings, &clock, &opts).await?;
    let tasks = Tasks {
        stop: CancellationToken::new(),
        tracker: TaskTracker::new(),
    };
    let store = base.store.clone();
    let (acq, writer_task) = acquire::start(&settings, &base, &clock, &tasks).await?;
    let cycles = acq.status.cycle_seq.subscribe();
    let work = work::start(&settings, &base, &clock, &acq.registry, cycles, &tasks).await?;
    let (addr, server) = faces::start(&settings, base, &clock, acq, work, &tasks, listener).await?;
    let shutdown = tasks.stop.clone();
    let done = tokio::spawn(stop(tasks, server, writer_task, store));
    Ok(Running {
        addr,
        shutdown,
        done,
    })
}

/// The ordered stop, once `tasks.stop` is cancelled: the tasks (bounded), the HTTP server
/// (the rest of the grace), the writer's final durable commit, then the store's last handle.
async fn stop(
    tasks: Tasks,
    server: tokio::task::JoinHandle<()>,
    writer_task: tokio::task::JoinHandle<()>,
    store: Store,
) -> anyhow::Result<()> {
    tasks.stop.cancelled().await;
    tasks.tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.tracker.wait())
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
