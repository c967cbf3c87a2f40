//! Push: the readings leave the Pi for Prometheus-compatible stores (remote write) and
//! InfluxDB-compatible ones (line protocol), from the store itself as the queue.
//!
//! Owns: one task per `[[push]]` target ([`Push::run`]) that sends the readings after each
//! device's cursor in batches, in time order, and advances the cursors only when the target
//! accepted a batch; retries with back-off up to `retry_max`; skips (and counts) what is older
//! than `max_age`; sends nothing while the clock cannot be trusted ([`crate::clock::trustworthy`]).
//! The cursors live in memory and are stored every [`SAVE_EVERY`] without a sync of their own
//! (the writer's next checkpoint makes them durable), and durably at shutdown — nothing is
//! written per reading. A backfill ([`Push::request_backfill`]) sends history before the
//! target's start once; `kasad push status|backfill` reach it through the admin socket.

pub mod influx;
pub mod remote_write;
pub mod samples;
pub mod state;
pub mod target;

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::DeviceId;
use crate::store::{self, Store};
use serde_json::{Value, json};
use state::{Backfill, State};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use target::Target;
use tokio_util::sync::CancellationToken;

/// How often a target's cursors are stored while it pushes.
pub const SAVE_EVERY: Duration = Duration::from_secs(60);

/// Why pushing cannot start or a request is refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// A target's configuration.
    #[error(transparent)]
    Target(#[from] target::TargetError),
    /// The store.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// No target of that name.
    #[error("no push target named {0:?} (see [[push]] in the configuration)")]
    Unknown(String),
    /// Its stored state does not read.
    #[error("the stored state of push target {0} does not read: {1}")]
    State(String, serde_json::Error),
}

/// One target with its state.
#[derive(Debug)]
struct Runner {
    target: Target,
    /// The config file's tariff and zone (the seed of the tariff versions, for the cost).
    tariff: (crate::domain::tariff::Tariff, chrono_tz::Tz),
    state: Mutex<State>,
    /// Age of the oldest reading not yet pushed, ms (0 when caught up).
    lag_ms: AtomicI64,
}

impl Runner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, store: &Store, durable: bool) -> store::Result<()> {
        let bytes = serde_json::to_vec(&*self.state()).expect("push state serialises");
        store.push_state_put(&self.target.name, &bytes, durable)
    }
}

/// The push targets of a daemon (or of `kasad push backfill` with the daemon stopped).
#[derive(Debug)]
pub struct Push {
    runners: Vec<Arc<Runner>>,
}

/// A target's counters, for `/metrics` and the health detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Target name.
    pub name: String,
    /// Samples acknowledged.
    pub samples_sent: u64,
    /// Readings acknowledged.
    pub readings_sent: u64,
    /// Readings skipped (older than `max_age`).
    pub skipped: u64,
    /// Failed requests.
    pub errors: u64,
    /// Age of the oldest reading not yet pushed, seconds.
    pub lag_seconds: f64,
    /// The last failure.
    pub last_error: Option<String>,
}

fn load_state(store: &Store, name: &str, now_ms: i64) -> Result<Option<State>, PushError> {
    store
        .push_state(name)?
        .map(|b| serde_json::from_slice(&b).map_err(|e| PushError::State(name.into(), e)))
        .transpose()
        .map(|s| s.or_else(|| (now_ms > 0).then(|| State::new(now_ms))))
}

impl Push {
    /// The targets of `settings` with their stored state; a new target starts live at
    /// `now_ms`. Refuses a target whose URL is not allowed or whose secrets do not read.
    pub fn new(store: &Store, settings: &Settings, now_ms: i64) -> Result<Self, PushError> {
        let mut runners = Vec::with_capacity(settings.push.len());
        for i in 0..settings.push.len() {
            let target = Target::new(i, settings)?;
            let stored = store.push_state(&target.name)?.is_some();
            let state = load_state(store, &target.name, now_ms)?.unwrap_or_default();
            let r = Runner {
                target,
                tariff: (settings.tariff.clone(), settings.tz()),
                state: Mutex::new(state),
                lag_ms: AtomicI64::new(0),
            };
            if !stored {
                // Where live pushing starts is fixed once: a restart does not move it.
                r.save(store, true)?;
            }
            runners.push(Arc::new(r));
        }
        Ok(Self { runners })
    }

    /// Whether any target is configured.
    pub fn is_empty(&self) -> bool {
        self.runners.is_empty()
    }

    fn runner(&self, name: &str) -> Result<&Arc<Runner>, PushError> {
        self.runners
            .iter()
            .find(|r| r.target.name == name)
            .ok_or_else(|| PushError::Unknown(name.into()))
    }

    /// Pushes until `stop`, one task per target, looking for new readings every `idle`; the
    /// cursors are stored durably before it returns.
    pub async fn run(
        self: Arc<Self>,
        store: Store,
        clock: SharedClock,
        idle: Duration,
        stop: CancellationToken,
    ) {
        let tasks: Vec<_> = self
            .runners
            .iter()
            .map(|r| {
                let (r, store, clock, stop) =
                    (r.clone(), store.clone(), clock.clone(), stop.clone());
                tokio::spawn(
                    async move { run_target(&r, &store, &clock, idle, &stop, false).await },
                )
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Asks target `name` to send history from `since_ms` up to where its live pushing began,
    /// once: a second request covered by a finished one sends nothing unless `force`.
    pub fn request_backfill(
        &self,
        store: &Store,
        name: &str,
        since_ms: i64,
        force: bool,
    ) -> Result<Value, PushError> {
        let r = self.runner(name)?;
        let answer = {
            let mut s = r.state();
            let to_ms = s.started_ms - 1;
            if since_ms > to_ms {
                return Ok(json!({"target": name, "queued": false,
                    "reason": "live pushing already covers that date"}));
            }
            if !force && s.covered_from_ms.is_some_and(|c| c <= since_ms) {
                return Ok(json!({"target": name, "queued": false,
                    "reason": format!("already sent from {} (use --force to send again)",
                        crate::clock::rfc3339(s.covered_from_ms.unwrap_or_default()))}));
            }
            if !force && s.backfill.is_some() {
                return Ok(json!({"target": name, "queued": false,
                    "reason": "a backfill is already running (use --force to restart it)"}));
            }
            s.backfill = Some(Backfill {
                from_ms: since_ms,
                to_ms,
                ..Backfill::default()
            });
            json!({"target": name, "queued": true, "from": crate::clock::rfc3339(since_ms),
                "to": crate::clock::rfc3339(to_ms)})
        };
        r.save(store, true)?;
        Ok(answer)
    }

    /// Runs target `name`'s backfill to its end (the daemon stopped: `kasad push backfill`).
    pub async fn drain_backfill(
        &self,
        store: &Store,
        clock: &SharedClock,
        name: &str,
    ) -> Result<Value, PushError> {
        let r = self.runner(name)?;
        let stop = CancellationToken::new();
        run_target(r, store, clock, Duration::from_millis(200), &stop, true).await;
        Ok(self
            .status(clock.now_ms())?
            .into_iter()
            .find(|v| v["target"] == name)
            .unwrap_or_default())
    }

    /// Per target: cursor, lag, counters, last error, backfill.
    pub fn status(&self, now_ms: i64) -> Result<Vec<Value>, PushError> {
        Ok(self
            .runners
            .iter()
            .map(|r| {
                status_of(
                    &r.target.name,
                    &r.state(),
                    r.lag_ms.load(Ordering::Relaxed),
                    now_ms,
                )
            })
            .collect())
    }

    /// The counters of every target.
    pub fn stats(&self) -> Vec<Stats> {
        self.runners
            .iter()
            .map(|r| {
                let s = r.state();
                Stats {
                    name: r.target.name.clone(),
                    samples_sent: s.samples_sent,
                    readings_sent: s.sent,
                    skipped: s.skipped,
                    errors: s.errors,
                    lag_seconds: r.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0,
                    last_error: s.last_error.clone(),
                }
            })
            .collect()
    }
}

/// A target's status as `kasad push status` prints it.
fn status_of(name: &str, s: &State, lag_ms: i64, now_ms: i64) -> Value {
    let newest = s.cursors.values().max().copied();
    json!({
        "target": name,
        "started": crate::clock::rfc3339(s.started_ms),
        "cursor": newest.map(crate::clock::rfc3339),
        "devices": s.cursors.len(),
        "lag_seconds": lag_ms as f64 / 1000.0,
        "sent": s.sent,
        "samples_sent": s.samples_sent,
        "skipped": s.skipped,
        "errors": s.errors,
        "last_error": s.last_error,
        "last_success_seconds_ago": s.last_success_ms.map(|t| (now_ms - t) as f64 / 1000.0),
        "backfill": s.backfill.as_ref().map(|b| json!({"from": crate::clock::rfc3339(b.from_ms),
            "to": crate::clock::rfc3339(b.to_ms), "sent": b.sent})),
        "covered_from": s.covered_from_ms.map(crate::clock::rfc3339),
    })
}

/// The stored status of every target (the daemon stopped).
pub fn stored_status(
    store: &Store,
    settings: &Settings,
    now_ms: i64,
) -> Result<Vec<Value>, PushError> {
    settings
        .push
        .iter()
        .map(|p| {
            let s = load_state(store, &p.name, 0)?;
            Ok(match s {
                Some(s) => status_of(&p.name, &s, 0, now_ms),
                None => json!({"target": p.name, "started": null, "note": "never run"}),
            })
        })
        .collect()
}

/// What one step did.
enum Step {
    /// Readings acknowledged.
    Sent,
    /// Nothing to send now.
    Idle,
    /// The backfill finished (or there was none) and `drain` asked to stop then.
    Drained,
}

async fn run_target(
    r: &Arc<Runner>,
    store: &Store,
    clock: &SharedClock,
    idle: Duration,
    stop: &CancellationToken,
    drain: bool,
) {
    let max_backoff = r.target.cfg.retry_max.0;
    let mut backoff = Duration::from_millis(200);
    let mut saved = Instant::now();
    let mut dirty = false;
    while !stop.is_cancelled() {
        let wait = match step(r, store, clock, drain).await {
            Ok(Step::Sent) => {
                dirty = true;
                backoff = Duration::from_millis(200);
                Duration::ZERO
            }
            Ok(Step::Idle) => idle,
            Ok(Step::Drained) => break,
            Err(e) => {
                tracing::warn!(target = %r.target.name, error = %e, "push failed; retrying");
                {
                    let mut s = r.state();
                    s.errors += 1;
                    s.last_error = Some(e);
                }
                dirty = true;
                let w = backoff;
                backoff = (backoff * 2).min(max_backoff);
                w
            }
        };
        if dirty && saved.elapsed() >= SAVE_EVERY {
            if let Err(e) = r.save(store, false) {
                tracing::warn!(target = %r.target.name, error = %e, "could not store the push cursors");
            }
            (saved, dirty) = (Instant::now(), false);
        }
        if !wait.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => {}
            }
        }
    }
    if let Err(e) = r.save(store, true) {
        tracing::error!(target = %r.target.name, error = %e, "could not store the push cursors");
    }
}

/// Gathers the next batch (live first, then a backfill's) and sends it.
async fn step(
    r: &Arc<Runner>,
    store: &Store,
    clock: &SharedClock,
    drain: bool,
) -> Result<Step, String> {
    let now = clock.now_ms();
    let (st, rr) = (store.clone(), r.clone());
    let gathered = tokio::task::spawn_blocking(move || gather(&rr, &st, now))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("reading the store: {e}"))?;
    let Some((batch, backfill)) = gathered else {
        return Ok(if drain && r.state().backfill.is_none() {
            Step::Drained
        } else {
            Step::Idle
        });
    };
    r.target.send(&batch.series).await?;
    let mut s = r.state();
    let cursors = match (&mut s.backfill, backfill) {
        (Some(b), true) => {
            b.sent += batch.readings;
            &mut b.cursors
        }
        _ => &mut s.cursors,
    };
    for (id, t) in batch.ends {
        cursors.insert(id, t);
    }
    s.sent += batch.readings;
    s.samples_sent += batch
        .series
        .iter()
        .map(|x| x.samples.len() as u64)
        .sum::<u64>();
    s.last_success_ms = Some(clock.now_ms());
    s.last_error = None;
    Ok(Step::Sent)
}

/// The next batch and whether it is the backfill's; `None` when there is nothing to send
/// (a finished backfill is recorded here). Live readings older than `max_age` are skipped and
/// counted; nothing is read while the clock cannot be trusted.
fn gather(r: &Runner, store: &Store, now: i64) -> store::Result<Option<(samples::Batch, bool)>> {
    let devices: Vec<(DeviceId, i64)> = store
        .devices()?
        .into_iter()
        .filter_map(|d| Some((d.record.info.device_id.clone(), d.last_reading_ms?)))
        .collect();
    let newest = devices.iter().map(|d| d.1).max();
    if !crate::clock::trustworthy(now, newest) {
        r.lag_ms.store(0, Ordering::Relaxed);
        return Ok(None);
    }
    let cfg = &r.target.cfg;
    let tariffs = crate::tariff::Versions::load(store, &r.tariff.0, r.tariff.1)
        .map_err(|e| store::Error::Corrupt(e.to_string()))?;
    skip_old(r, store, &devices, now - cfg.max_age.0.as_millis() as i64)?;
    let state = r.state().clone();
    let live = |id: &str| state.cursor(id);
    let w = samples::Window {
        devices: &devices,
        cursor: &live,
        to_ms: now + 1,
        max: cfg.batch,
        rollups: cfg.series == "rollups",
        site: &cfg.site,
    };
    let batch = samples::gather(store, &w, &tariffs)?;
    if batch.readings > 0 {
        r.lag_ms
            .store(now - batch.oldest_ms.unwrap_or(now), Ordering::Relaxed);
        return Ok(Some((batch, false)));
    }
    r.lag_ms.store(0, Ordering::Relaxed);
    let Some(b) = &state.backfill else {
        return Ok(None);
    };
    let from = b.from_ms - 1;
    let back = |id: &str| b.cursors.get(id).copied().unwrap_or(from);
    let w = samples::Window {
        cursor: &back,
        to_ms: b.to_ms + 1,
        ..w
    };
    let batch = samples::gather(store, &w, &tariffs)?;
    if batch.readings > 0 {
        return Ok(Some((batch, true)));
    }
    let mut s = r.state();
    if let Some(b) = s.backfill.take() {
        s.covered_from_ms = Some(s.covered_from_ms.map_or(b.from_ms, |c| c.min(b.from_ms)));
        drop(s);
        r.save(store, true)?;
    }
    Ok(None)
}

/// Moves the live cursors of devices behind `floor` up to it, counting what is skipped.
fn skip_old(
    r: &Runner,
    store: &Store,
    devices: &[(DeviceId, i64)],
    floor: i64,
) -> store::Result<()> {
    let behind: Vec<(&DeviceId, i64)> = {
        let s = r.state();
        devices
            .iter()
            .map(|(id, _)| (id, s.cursor(id.as_str())))
            .filter(|(_, c)| *c < floor - 1)
            .collect()
    };
    for (id, cursor) in behind {
        let skipped = store.scan_raw(id, cursor + 1, floor)?.count() as u64;
        let mut s = r.state();
        s.skipped += skipped;
        s.cursors.insert(id.as_str().to_owned(), floor - 1);
    }
    Ok(())
}
