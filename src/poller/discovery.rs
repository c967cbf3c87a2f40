//! Discovery rounds: probe the configured targets (the legacy probe on their port, the newer
//! devices' probe on 20002), register what answers, persist new or changed devices. A newer
//! device is registered from its 20002 answer with the transport it asks for, provisionally
//! (that answer carries a hash of its id); its first poll says who it is and stores it. One
//! whose transport the daemon does not speak is listed as unsupported and never polled. Runs at start, every `interval`, and on demand through
//! [`DiscoveryHandle`].

use super::registry::{Registry, infos_from_sysinfo};
use crate::clock::SharedClock;
use crate::domain::{DeviceId, DeviceInfo, DeviceType, Transport};
use crate::protocol::{discovery, port20002};
use crate::store::{WriteOp, WriterHandle};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A discovery round could not run.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Socket trouble.
    #[error("discovery failed: {0}")]
    Protocol(#[from] crate::protocol::Error),
    /// Discovery is not running (disabled, or shutting down).
    #[error("discovery is not running")]
    NotRunning,
}

/// Runs discovery rounds.
#[derive(Debug, Clone)]
pub struct Discoverer {
    /// Probe destinations.
    pub targets: Vec<SocketAddr>,
    /// Destinations of the 20002 probe (each target's host on `[discovery] port_20002`).
    pub targets_20002: Vec<SocketAddr>,
    /// Listening window per round.
    pub window: Duration,
    /// Where devices are registered.
    pub registry: Arc<Registry>,
    /// Where device records are persisted.
    pub writer: WriterHandle,
    /// Wall clock.
    pub clock: SharedClock,
    /// `[kasa] allow_login_v1`: AES devices kasad has not polled before may get the
    /// reversible login-version-1 password.
    pub allow_login_v1: bool,
}

type Request = oneshot::Sender<Result<usize, DiscoveryError>>;

/// Asks the running discovery loop for an immediate round.
#[derive(Debug, Clone)]
pub struct DiscoveryHandle {
    tx: Option<mpsc::Sender<Request>>,
}

impl DiscoveryHandle {
    /// A handle for a daemon with discovery disabled.
    pub fn disabled() -> Self {
        Self { tx: None }
    }

    /// Runs a round now and returns how many devices answered.
    pub async fn discover_now(&self) -> Result<usize, DiscoveryError> {
        let tx = self.tx.as_ref().ok_or(DiscoveryError::NotRunning)?;
        let (reply, rx) = oneshot::channel();
        tx.send(reply)
            .await
            .map_err(|_| DiscoveryError::NotRunning)?;
        rx.await.map_err(|_| DiscoveryError::NotRunning)?
    }
}

impl Discoverer {
    /// One round: probe, register, persist. Returns the number of devices that answered.
    pub async fn discover_once(&self) -> Result<usize, DiscoveryError> {
        let (answers, announced) =
            tokio::join!(discovery::probe(&self.targets, self.window, 3), async {
                if self.targets_20002.is_empty() {
                    return Ok(Vec::new());
                }
                discovery::probe_20002(&self.targets_20002, self.window, 3).await
            });
        let (answers, announced) = (answers?, announced?);
        let now_ms = self.clock.now_ms();
        for (from, a) in &announced {
            self.register_announced(*from, a);
        }
        for a in &answers {
            match infos_from_sysinfo(a.addr, &a.sysinfo) {
                Ok(infos) => {
                    for info in self.registry.upsert(infos, Instant::now()) {
                        self.writer
                            .send(WriteOp::Device(Box::new(info), now_ms))
                            .await
                            .map_err(|_| DiscoveryError::NotRunning)?;
                    }
                }
                Err(e) => {
                    tracing::warn!(addr = %a.addr, error = %e, "ignoring device with an invalid id")
                }
            }
        }
        let found = answers.len() + announced.len();
        tracing::info!(found, "discovery round finished");
        Ok(found)
    }

    /// Registers a device that answered the 20002 probe from `from`. A known device (found by
    /// its MAC: the answer's `device_id` is a hash of the real one) moves and takes the
    /// transport it announces now; a new one is registered provisionally, unstored, until its
    /// first poll says who it is.
    fn register_announced(&self, from: SocketAddr, a: &port20002::Announce) {
        let Ok(id) = DeviceId::parse(&a.device_id) else {
            tracing::warn!(%from, "ignoring device with an invalid id");
            return;
        };
        let addr = SocketAddr::new(from.ip(), a.http_port);
        let now = Instant::now();
        let trusted = self.allow_login_v1 || self.registry.known_mac(&a.mac);
        if a.lv == Some(1) && !trusted {
            tracing::warn!(%from, model = %a.model,
                "the device asks for login version 1 (the password, reversibly encoded); kasad sends it only to devices it has polled before or with [kasa] allow_login_v1, and uses version 2");
        }
        let lv = Some(a.aes_login_version(trusted));
        let (order, unsupported) = match a.transports() {
            Ok(list) => {
                let spoken: Vec<Transport> = list.iter().copied().filter(|&t| spoken(t)).collect();
                match spoken.is_empty() {
                    false => (spoken, None),
                    true => {
                        let why = format!("the {} transport is not supported", list[0].name());
                        (list, Some(why))
                    }
                }
            }
            Err(why) => (vec![Transport::Unknown], Some(why)),
        };
        let (transport, fallback) = (order[0], order[1..].to_vec());
        let family = a.family().unwrap_or_default();
        let known = self
            .registry
            .find_by_mac(&a.mac)
            .unwrap_or_else(|| id.clone());
        if self.registry.relocate(&known, addr, now) {
            self.registry
                .update_transport(&known, transport, family, lv, now);
            if let Some(why) = unsupported {
                self.registry.mark_unsupported(&known, why);
            }
            return;
        }
        let info = DeviceInfo {
            device_id: id.clone(),
            parent_id: None,
            outlet_index: None,
            address: addr.to_string(),
            name: a.model.clone(),
            device_type: DeviceType::Plug,
            model: a.model.clone(),
            hw_ver: String::new(),
            sw_ver: String::new(),
            transport,
            family,
            has_emeter: false,
            mac: a.mac.clone(),
            latitude: None,
            longitude: None,
        };
        self.registry.add_provisional(info, lv, fallback, now);
        if let Some(why) = unsupported {
            tracing::warn!(device = %id, model = %a.model, %why, "device not supported");
            self.registry.mark_unsupported(&id, why);
        }
    }

    /// Starts the loop; returns the handle for on-demand rounds.
    pub fn spawn(
        self,
        interval: Duration,
        cancel: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> DiscoveryHandle {
        let (tx, mut rx) = mpsc::channel::<Request>(8);
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let reply = tokio::select! {
                    () = cancel.cancelled() => break,
                    _ = tick.tick() => None,
                    r = rx.recv() => r,
                };
                let res = tokio::select! {
                    () = cancel.cancelled() => break,
                    r = self.discover_once() => r,
                };
                if let Err(e) = &res {
                    tracing::warn!(error = %e, "discovery round failed");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(res);
                }
            }
        });
        DiscoveryHandle { tx: Some(tx) }
    }
}

/// True for the transports the daemon speaks.
pub fn spoken(t: Transport) -> bool {
    t != Transport::Unknown
}
