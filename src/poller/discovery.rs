//! Discovery rounds: probe the configured targets, register what answers, persist new or
//! changed devices. Runs at start, every `interval`, and on demand through [`DiscoveryHandle`].

use super::registry::{Registry, infos_from_sysinfo};
use crate::clock::SharedClock;
use crate::protocol::discovery;
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
    /// Listening window per round.
    pub window: Duration,
    /// Where devices are registered.
    pub registry: Arc<Registry>,
    /// Where device records are persisted.
    pub writer: WriterHandle,
    /// Wall clock.
    pub clock: SharedClock,
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
        let answers = discovery::probe(&self.targets, self.window, 3).await?;
        let now_ms = self.clock.now_ms();
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
        tracing::info!(found = answers.len(), "discovery round finished");
        Ok(answers.len())
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
