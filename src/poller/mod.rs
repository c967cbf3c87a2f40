//! Acquisition: discovery rounds and poll cycles feeding the store writer.
//!
//! Owns: the cadence (poll interval with missed ticks skipped, discovery interval and
//! on-demand rounds), bounded concurrency, per-device timeouts and backoff. Each loop is a
//! `*_once` function (tested directly) plus a thin loop that stops on cancellation.
//! A slow, hung or garbage-sending device only ever costs its own timeout: results are handed
//! to the writer as each device finishes, not at the end of the cycle.

pub mod conns;
pub mod device;
pub mod discovery;
pub mod registry;
pub mod smart;

use crate::clock::SharedClock;
use crate::domain::DeviceId;
use crate::store::{WriteOp, WriterHandle};
use futures_util::StreamExt;
use registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// A device unseen for this long (and for three poll intervals) is asked for its day totals
/// when it answers again.
pub const GAP_MS: i64 = 15 * 60 * 1000;

/// Poller settings.
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// Time between cycles.
    pub interval: Duration,
    /// Per-device timeout (whole poll).
    pub timeout: Duration,
    /// Devices polled at once.
    pub concurrency: usize,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Static device addresses.
    pub static_hosts: Vec<SocketAddr>,
}

/// Heartbeat for `/api/health`.
#[derive(Debug, Default)]
pub struct PollerStatus {
    /// Wall time the last cycle finished, UTC ms (0 = never).
    pub last_cycle_ms: AtomicI64,
    /// How long the last cycle took, ms.
    pub last_cycle_duration_ms: AtomicI64,
    /// Devices polled successfully in the last cycle.
    pub last_cycle_ok: AtomicI64,
    /// Devices that failed in the last cycle.
    pub last_cycle_failed: AtomicI64,
    /// Cycles run since the start.
    pub cycles: std::sync::atomic::AtomicU64,
    /// Cycles that did not run on time because the one before was still running (the next
    /// one then starts at the following interval).
    pub skipped_cycles: std::sync::atomic::AtomicU64,
    /// Notified at the end of every cycle (MQTT publishes then).
    pub cycle_done: tokio::sync::Notify,
    /// The number of finished cycles, for every other listener (alerts evaluate then).
    pub cycle_seq: tokio::sync::watch::Sender<u64>,
}

/// Outcome of one device in a cycle, in completion order.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Polled; readings were handed to the writer.
    Ok(DeviceId),
    /// Failed with this error.
    Failed(DeviceId, String),
    /// A static address that did not answer.
    StaticFailed(SocketAddr, String),
}

/// Everything a poll cycle needs.
#[derive(Debug, Clone)]
pub struct Poller {
    /// Settings.
    pub cfg: PollConfig,
    /// Known devices.
    pub registry: Arc<Registry>,
    /// Where readings go.
    pub writer: WriterHandle,
    /// Wall clock.
    pub clock: SharedClock,
    /// Heartbeat.
    pub status: Arc<PollerStatus>,
    /// Open connections kept between polls.
    pub conns: Arc<conns::ConnPool>,
    /// Device records as last handed to the writer (only changes are sent again).
    pub sent: Arc<std::sync::Mutex<std::collections::HashMap<DeviceId, crate::domain::DeviceInfo>>>,
}

enum Target {
    Known(Box<registry::Entry>),
    Static(SocketAddr),
}

impl Poller {
    /// Polls every due device once, concurrently; returns outcomes in completion order.
    pub async fn poll_once(&self) -> Vec<Outcome> {
        let now = Instant::now();
        let mut targets: Vec<Target> = self
            .registry
            .due(now)
            .into_iter()
            .map(|e| Target::Known(Box::new(e)))
            .collect();
        for &a in &self.cfg.static_hosts {
            if !self.registry.knows_addr(a) {
                targets.push(Target::Static(a));
            }
        }
        let started = self.clock.now_ms();
        let outcomes: Vec<Outcome> = futures_util::stream::iter(targets)
            .map(|t| self.poll_target(t))
            .buffer_unordered(self.cfg.concurrency.max(1))
            .collect()
            .await;
        let ok = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Ok(_)))
            .count();
        let s = &self.status;
        s.last_cycle_ok.store(ok as i64, Ordering::Relaxed);
        s.last_cycle_failed
            .store((outcomes.len() - ok) as i64, Ordering::Relaxed);
        let end = self.clock.now_ms();
        s.last_cycle_duration_ms
            .store(end - started, Ordering::Relaxed);
        s.last_cycle_ms.store(end, Ordering::Relaxed);
        s.cycle_done.notify_one();
        s.cycle_seq.send_modify(|n| *n += 1);
        outcomes
    }

    async fn poll_target(&self, t: Target) -> Outcome {
        let (how, last_seen) = match &t {
            Target::Known(e) => (e.target(), e.last_seen_ms.or(e.stored_until_ms)),
            Target::Static(a) => (conns::Target::xor(*a, false), None),
        };
        let (addr, meter) = (how.addr, how.meter);
        // Back after a gap (longer than a few missed polls): the device's day totals shape
        // the gap's energy.
        let gap = GAP_MS.max(3 * self.cfg.interval.as_millis() as i64);
        let gap_from = last_seen.filter(|&t| meter && self.clock.now_ms() - t >= gap);
        let res = tokio::time::timeout(
            self.cfg.timeout,
            self.conns.poll(
                &how,
                (gap_from, last_seen),
                self.cfg.timeout,
                self.clock.as_ref(),
            ),
        )
        .await
        .unwrap_or(Err(crate::protocol::Error::Timeout(self.cfg.timeout)));
        // A device known only from its 20002 answer has said who it is: its real records
        // replace the provisional entry.
        if let (Ok(p), Target::Known(entry)) = (&res, &t)
            && entry.provisional
            && p.infos[0].device_id != entry.info.device_id
        {
            tracing::info!(announced = %entry.info.device_id, device = %p.infos[0].device_id,
                "new device identified");
            self.registry.remove(&entry.info.device_id);
            self.registry.upsert(p.infos.clone(), Instant::now());
            self.registry
                .set_login_version(&p.infos[0].device_id, entry.login_version);
        }
        match (res, t) {
            // Another device now answers at this entry's address (DHCP gave the address away):
            // record who answered, but this entry's device is not reachable there.
            (Ok(p), Target::Known(entry))
                if p.infos[0].device_id != entry.info.device_id && !entry.provisional =>
            {
                let id = entry.info.device_id;
                let other = p.infos[0].device_id.clone();
                self.registry.upsert(p.infos, Instant::now());
                let c = &self.cfg;
                let msg = format!("device {other} now answers at {addr}");
                self.registry.mark_failed(
                    &id,
                    msg.clone(),
                    Instant::now(),
                    c.interval,
                    c.max_backoff,
                );
                Outcome::Failed(id, msg)
            }
            (Ok(p), _) => self.record(p).await,
            (Err(e @ crate::protocol::Error::Auth(_)), Target::Known(entry)) => {
                let id = entry.info.device_id;
                let c = &self.cfg;
                let now = Instant::now();
                let (iv, max) = (c.interval, c.max_backoff);
                self.registry
                    .mark_auth_required(&id, e.to_string(), now, iv, max);
                Outcome::Failed(id, e.to_string())
            }
            // A device whose 20002 answer named no transport, failing on the one tried: the
            // next of its fallback order is tried at once.
            (Err(e), Target::Known(entry))
                if self
                    .registry
                    .next_transport(&entry.info.device_id, Instant::now()) =>
            {
                Outcome::Failed(entry.info.device_id, e.to_string())
            }
            (Err(e), Target::Known(entry)) => {
                let id = entry.info.device_id;
                let c = &self.cfg;
                self.registry.mark_failed(
                    &id,
                    e.to_string(),
                    Instant::now(),
                    c.interval,
                    c.max_backoff,
                );
                Outcome::Failed(id, e.to_string())
            }
            (Err(e), Target::Static(a)) => {
                tracing::debug!(addr = %a, error = %e, "static device did not answer");
                Outcome::StaticFailed(a, e.to_string())
            }
        }
    }

    /// A good poll: the registry marks the device seen, and the writer gets its new or
    /// changed records, then its readings.
    async fn record(&self, p: device::Polled) -> Outcome {
        let id = p.infos[0].device_id.clone();
        self.registry.upsert(p.infos.clone(), Instant::now());
        let seen = p
            .readings
            .first()
            .map_or_else(|| self.clock.now_ms(), |r| r.ts_ms);
        self.registry.mark_ok(&id, seen);
        // A new or changed record is sent by the same task right before the readings,
        // so readings never reach the writer ahead of their device record.
        let changed: Vec<_> = {
            let mut sent = self.sent.lock().expect("sent lock");
            let mut changed = Vec::new();
            for i in p.infos {
                if sent.get(&i.device_id) != Some(&i) {
                    sent.insert(i.device_id.clone(), i.clone());
                    changed.push(i);
                }
            }
            changed
        };
        for info in changed {
            if self
                .writer
                .send(WriteOp::Device(Box::new(info), seen))
                .await
                .is_err()
            {
                return Outcome::Failed(id, "store writer stopped".into());
            }
        }
        if self
            .writer
            .send(WriteOp::Readings(p.readings, p.days))
            .await
            .is_err()
        {
            return Outcome::Failed(id, "store writer stopped".into());
        }
        Outcome::Ok(id)
    }

    /// Runs poll cycles every `interval` until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut prev: Option<Instant> = None;
        loop {
            let at = tokio::select! {
                () = cancel.cancelled() => break,
                at = tick.tick() => at,
            };
            if let Some(p) = prev.replace(at) {
                let intervals = (at - p).as_nanos() / self.cfg.interval.as_nanos().max(1);
                let skipped = u64::try_from(intervals.saturating_sub(1)).unwrap_or(u64::MAX);
                if skipped > 0 {
                    self.status
                        .skipped_cycles
                        .fetch_add(skipped, Ordering::Relaxed);
                    tracing::warn!(
                        skipped,
                        "poll cycles skipped: the last one outran the interval"
                    );
                }
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                outcomes = self.poll_once() => {
                    self.status.cycles.fetch_add(1, Ordering::Relaxed);
                    for o in outcomes {
                        if let Outcome::Failed(id, e) = o {
                            tracing::warn!(device = %id, error = %e, "device poll failed");
                        }
                    }
                }
            }
        }
        tracing::debug!("poller stopped");
    }
}
