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
    /// Held from the snapshot of the state to its commit: saves land in the order taken.
    saving: Mutex<()>,
}

impl Runner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores the state (blocking: call off the async threads, [`Runner::save_async`]).
    fn save(&self, store: &Store, durable: bool) -> store::Result<()> {
        let _order = self
            .saving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes = serde_json::to_vec(&*self.state()).expect("push state serialises");
        store.push_state_put(&self.target.name, &bytes, durable)
    }

    async fn save_async(self: &Arc<Self>, store: &Store, durable: bool) {
        let (r, st) = (self.clone(), store.clone());
        let saved = tokio::task::spawn_blocking(move || r.save(&st, durable)).await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::warn!(target = %self.target.name, ?saved, "could not store the push cursors");
        }
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
            // A new target starts live now — or, when the clock cannot be trusted yet (a Pi
            // before NTP), after the newest stored reading.
            let newest = store.newest_reading_ms()?;
            let start = if crate::clock::trustworthy(now_ms, newest) {
                now_ms
            } else {
                newest.map_or(now_ms, |n| n + 1)
            };
            let state = load_state(store, &target.name, start)?.unwrap_or_default();
            let r = Runner {
                target,
                tariff: (settings.tariff.clone(), settings.tz()),
                state: Mutex::new(state),
                lag_ms: AtomicI64::new(0),
                saving: Mutex::new(()),
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
            // Without --force, what finished backfills covered is not sent again.
            let covered = if force { None } else { s.covered_from_ms };
            let to_ms = covered.map_or(s.started_ms, |c| c.min(s.started_ms)) - 1;
            if !force && s.covered_from_ms.is_some_and(|c| c <= since_ms) {
                return Ok(json!({"target": name, "queued": false,
                    "reason": format!("already sent from {} (use --force to send again)",
                        crate::clock::rfc3339(s.covered_from_ms.unwrap_or_default()))}));
            }
            if since_ms > to_ms {
                return Ok(json!({"target": name, "queued": false,
                    "reason": "live pushing already covers that date"}));
            }
            if !force && s.backfill.is_some() {
                return Ok(json!({"target": name, "queued": false,
                    "reason": "a backfill is already running (use --force to restart it)"}));
            }
            let id = s.backfill.as_ref().map_or(0, |b| b.id) + 1;
            s.backfill = Some(Backfill {
                id,
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
        // Ctrl-C stops it with the cursors stored: the next run goes on from there.
        let on_interrupt = stop.clone();
        let interrupt = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_interrupt.cancel();
            }
        });
        run_target(r, store, clock, Duration::from_millis(200), &stop, true).await;
        interrupt.abort();
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
    /// Readings acknowledged (or refused as data, and counted).
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
        // A stop never waits for a request in flight: its batch is not acknowledged, so the
        // cursors stored on the way out are exact.
        let stepped = tokio::select! {
            s = step(r, store, clock, drain) => s,
            () = stop.cancelled() => break,
        };
        let wait = match stepped {
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
            r.save_async(store, false).await;
            (saved, dirty) = (Instant::now(), false);
        }
        if !wait.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => {}
            }
        }
    }
    r.save_async(store, true).await;
}

/// Gathers the next batch (live first, then a backfill's) and sends it. A batch the target
/// refuses as data (400, 422) is counted as skipped and passed, never sent again and again.
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
        let drained = drain && r.state().backfill.is_none();
        return Ok(if drained { Step::Drained } else { Step::Idle });
    };
    let refused = match r.target.send(&batch.series).await {
        Ok(()) => None,
        Err(target::SendError::Retry(e)) => return Err(e),
        Err(target::SendError::Rejected(e)) => Some(e),
    };
    let mut s = r.state();
    let cursors = match (&mut s.backfill, backfill) {
        (Some(b), Some(id)) if b.id == id => {
            b.sent += batch.readings;
            &mut b.cursors
        }
        // A forced backfill replaced the one this batch was read for: it starts afresh.
        (_, Some(_)) => return Ok(Step::Sent),
        _ => &mut s.cursors,
    };
    for (id, t) in batch.ends {
        cursors.insert(id, t);
    }
    match refused {
        Some(e) => {
            tracing::warn!(target = %r.target.name, error = %e, readings = batch.readings,
                "the target refused a batch as data; it is skipped");
            s.skipped += batch.readings;
            s.errors += 1;
            s.last_error = Some(e);
        }
        None => {
            s.sent += batch.readings;
            s.samples_sent += batch
                .series
                .iter()
                .map(|x| x.samples.len() as u64)
                .sum::<u64>();
            s.last_success_ms = Some(clock.now_ms());
            s.last_error = None;
        }
    }
    Ok(Step::Sent)
}

/// The next batch and, for a backfill's, its id; `None` when there is nothing to send (a
/// finished backfill is recorded here). Live readings older than `max_age` are skipped and
/// counted; nothing is read while the clock cannot be trusted.
fn gather(
    r: &Runner,
    store: &Store,
    now: i64,
) -> store::Result<Option<(samples::Batch, Option<u64>)>> {
    let summaries = store.devices()?;
    let devices: Vec<(DeviceId, i64)> = summaries
        .iter()
        .filter_map(|d| Some((d.record.info.device_id.clone(), d.last_reading_ms?)))
        .collect();
    let newest = devices.iter().map(|d| d.1).max();
    if !crate::clock::trustworthy(now, newest) {
        r.lag_ms.store(0, Ordering::Relaxed);
        return Ok(None);
    }
    let cfg = &r.target.cfg;
    skip_old(r, store, &devices, now - cfg.max_age.0.as_millis() as i64)?;
    let state = r.state().clone();
    let behind = |c: &dyn Fn(&str) -> i64| devices.iter().any(|(id, n)| *n > c(id.as_str()));
    let live = |id: &str| state.cursor(id);
    if !behind(&live) && state.backfill.is_none() {
        r.lag_ms.store(0, Ordering::Relaxed);
        return Ok(None);
    }
    // Only now that there is something to send: the info labels and the tariffs.
    let records: Vec<_> = summaries.into_iter().map(|d| d.record).collect();
    let info: std::collections::BTreeMap<String, Vec<(&'static str, String)>> = records
        .iter()
        .map(|r| {
            let kind = serde_json::to_value(r.info.device_type)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let labels = vec![
                ("name", r.name().to_owned()),
                ("model", r.info.model.clone()),
                ("type", kind),
                ("room", r.room(&records).unwrap_or_default().to_owned()),
            ];
            (r.info.device_id.as_str().to_owned(), labels)
        })
        .collect();
    let tariffs = crate::tariff::Versions::load(store, &r.tariff.0, r.tariff.1)
        .map_err(|e| store::Error::Corrupt(e.to_string()))?;
    let w = samples::Window {
        devices: &devices,
        cursor: &live,
        to_ms: now + 1,
        max: cfg.batch,
        rollups: cfg.series == "rollups",
        site: &cfg.site,
        info: &info,
    };
    let batch = samples::gather(store, &w, &tariffs)?;
    if batch.readings > 0 {
        r.lag_ms
            .store(now - batch.oldest_ms.unwrap_or(now), Ordering::Relaxed);
        return Ok(Some((batch, None)));
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
        return Ok(Some((batch, Some(b.id))));
    }
    let mut s = r.state();
    // Only the backfill this read was for (a forced one may have replaced it meanwhile).
    if s.backfill.as_ref().is_some_and(|x| x.id == b.id) {
        let done = s.backfill.take().expect("checked");
        s.covered_from_ms = Some(
            s.covered_from_ms
                .map_or(done.from_ms, |c| c.min(done.from_ms)),
        );
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
