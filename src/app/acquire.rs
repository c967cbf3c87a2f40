//! Stage 2: acquisition. The store writer (with the staging log), the registry of known
//! devices (forgotten ones ignored, static ones restored), the connection pool, the poller,
//! discovery and the retention sweeps.

use super::Tasks;
use super::open::Base;
use crate::audit::{Event, EventType, Severity};
use crate::auth::keys::SecretKey;
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::poller::conns::ConnPool;
use crate::poller::discovery::{Discoverer, DiscoveryHandle};
use crate::poller::registry::Registry;
use crate::poller::{PollConfig, Poller, PollerStatus};
use crate::store::audit::Pending;
use crate::store::writer::{WeakWriter, WriterStats};
use crate::store::{self, Store};
use std::net::SocketAddr;
use std::sync::Arc;

/// What acquisition hands the faces: the devices and the writer's side doors.
pub(super) struct Acquired {
    pub registry: Arc<Registry>,
    pub conns: Arc<ConnPool>,
    pub status: Arc<PollerStatus>,
    pub discovery: DiscoveryHandle,
    pub writer_stats: Arc<WriterStats>,
    /// Asks the writer for a durable commit (it does not keep the writer running).
    pub flusher: WeakWriter,
}

/// Starts the writer, the poller, discovery and retention; the writer's task ends after its
/// final durable commit, once every handle is gone.
pub(super) async fn start(
    settings: &Settings,
    base: &Base,
    clock: &SharedClock,
    tasks: &Tasks,
) -> anyhow::Result<(Acquired, tokio::task::JoinHandle<()>)> {
    let store = &base.store;
    let staging = super::open::open_staging(settings)
        .await
        .map(|l| (l, settings.storage.checkpoint_interval.0));
    let (writer, writer_task) =
        store::writer::spawn(store.clone(), settings.storage.commit_interval.0, staging);
    let registry = Arc::new(Registry::default());
    {
        let (s, k, hosts, now) = (
            store.clone(),
            base.audit_key.clone(),
            settings.static_hosts()?,
            clock.now_ms(),
        );
        tokio::task::spawn_blocking(move || restore_static(&s, &k, &hosts, now)).await??;
    }
    load_registry(store, &registry)?;
    let account = settings
        .kasa
        .account()?
        .map(|a| crate::protocol::klap::Credentials::new(&a.username, &a.password));
    let conns = Arc::new(
        ConnPool::new(settings.poll.keep_connections)
            .with_account(account)
            .with_clock(clock.clone()),
    );
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
        .spawn(
            settings.discovery.interval.0,
            tasks.stop.clone(),
            &tasks.tracker,
        )
    } else {
        DiscoveryHandle::disabled()
    };
    tasks.tracker.spawn(poller.run(tasks.stop.clone()));
    tasks.tracker.spawn(crate::retention::run(
        store.clone(),
        base.audit_key.clone(),
        settings.audit.retention_days,
        settings.storage.raw_retention.0,
        clock.clone(),
        tasks.stop.clone(),
    ));
    let acquired = Acquired {
        registry,
        conns,
        status,
        discovery,
        writer_stats: writer.stats.clone(),
        flusher: writer.downgrade(),
    };
    Ok((acquired, writer_task))
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
