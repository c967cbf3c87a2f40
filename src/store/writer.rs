//! The single writer task: owns every write transaction, batches what arrives and commits it
//! non-durably at once (readers see it). With the staging log (the daemon), each batch is
//! appended to the log first, the log is synced every `commit_interval`, and the database
//! commits durably every `checkpoint_interval` (and on flush and shutdown), after which the
//! log is emptied; without it, the database commits durably every `commit_interval`.
//!
//! Crash-loss bound: readings handed to the writer more than `commit_interval` before a crash
//! (plus the time one batch takes to write) are on disk — in the database or in the log,
//! which is replayed when the daemon starts.

use super::staging::Staging;
use super::write::{Applied, Batch, apply};
use super::{Error, Result, Store};
use crate::domain::{DailyEnergy, DeviceInfo, Reading};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Most readings folded into one transaction.
const MAX_BATCH: usize = 20_000;

/// A request to the writer.
#[derive(Debug)]
pub enum WriteOp {
    /// Insert or update a device record, seen at the given UTC ms.
    Device(Box<DeviceInfo>, i64),
    /// Store readings, with the day totals of devices that come back after a gap.
    Readings(Vec<Reading>, Vec<DailyEnergy>),
    /// Commit durably now and report back.
    Flush(oneshot::Sender<Result<()>>),
}

/// Counters the writer keeps for health and metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Readings stored.
    pub stored: AtomicU64,
    /// Readings refused as not newer than the newest stored one.
    pub refused_old: AtomicU64,
    /// Durable points: staging-log syncs and durable commits.
    pub durable_commits: AtomicU64,
    /// Durable commits of the database (checkpoints).
    pub checkpoints: AtomicU64,
    /// Failed transactions.
    pub failures: AtomicU64,
    /// Why the newest write failed, while writes keep failing (cleared by a success).
    pub failing: std::sync::Mutex<Option<String>>,
}

impl WriterStats {
    /// Why writes are failing now, if they are.
    pub fn failing(&self) -> Option<String> {
        self.failing.lock().expect("writer stats").clone()
    }
}

/// Sending side of the writer; cheap to clone. The writer stops (after a final durable commit)
/// when every handle is dropped.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<WriteOp>,
    /// Shared counters.
    pub stats: Arc<WriterStats>,
}

impl WriterHandle {
    /// Queues an operation (waits when the queue is full: back-pressure, never loss).
    pub async fn send(&self, op: WriteOp) -> Result<()> {
        self.tx.send(op).await.map_err(|_| Error::WriterGone)
    }

    /// Waits until everything sent before is durably committed.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Flush(tx)).await?;
        rx.await.map_err(|_| Error::WriterGone)?
    }

    /// A handle that can ask for a flush but does not keep the writer running.
    pub fn downgrade(&self) -> WeakWriter {
        WeakWriter(self.tx.downgrade())
    }
}

/// See [`WriterHandle::downgrade`].
#[derive(Debug, Clone)]
pub struct WeakWriter(mpsc::WeakSender<WriteOp>);

impl WeakWriter {
    /// [`WriterHandle::flush`], or [`Error::WriterGone`] once the writer has stopped.
    pub async fn flush(&self) -> Result<()> {
        let tx = self.0.upgrade().ok_or(Error::WriterGone)?;
        let (done, rx) = oneshot::channel();
        tx.send(WriteOp::Flush(done))
            .await
            .map_err(|_| Error::WriterGone)?;
        drop(tx);
        rx.await.map_err(|_| Error::WriterGone)?
    }
}

/// Starts the writer task. With a staging log, readings are durable once the log is synced
/// (every `commit_interval`) and the database commits durably every `checkpoint_interval`;
/// without one, the database commits durably every `commit_interval`.
pub fn spawn(
    store: Store,
    commit_interval: Duration,
    staging: Option<(Staging, Duration)>,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1024);
    let stats = Arc::new(WriterStats::default());
    let task = tokio::spawn(run(store, rx, commit_interval, staging, stats.clone()));
    (WriterHandle { tx, stats }, task)
}

/// What a write step ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A non-durable commit.
    Nothing,
    /// The log synced (without a log: a durable commit).
    Sync,
    /// A durable commit of the database, then the log emptied.
    Checkpoint,
}

type Log = Arc<std::sync::Mutex<Staging>>;

/// Writes `batch` (and `held`, what earlier transient failures kept back: already in the log)
/// and ends as `end` asks. After a transient failure (a full disk, an I/O error) everything
/// not in the database is left in `held` to be tried again; after any other, it is dropped
/// with an error in the log, as a batch the store refuses.
async fn commit(
    store: &Store,
    log: Option<&Log>,
    held: &mut Batch,
    batch: Batch,
    end: End,
    stats: &WriterStats,
) -> Result<()> {
    let (s, log) = (store.clone(), log.cloned());
    let mut pending = std::mem::take(held);
    let (res, back) = tokio::task::spawn_blocking(move || {
        let io = |e: std::io::Error| Error::WriteFailed(format!("staging log: {e}"));
        let mut log = log.as_ref().map(|l| l.lock().expect("staging log lock"));
        // Write-ahead: durable in the log (when due) before the database is asked, so that a
        // database failure loses nothing the log could keep.
        let appended = match log.as_mut() {
            Some(l) if !batch.is_empty() => l.append(&batch).map_err(io),
            _ => Ok(()),
        };
        pending.extend(batch);
        // An error, and whether what is pending stays held for another try.
        let res = appended.map_err(|e| (e, true)).and_then(|()| {
            if let Some(l) = log.as_mut()
                && end != End::Nothing
            {
                l.sync().map_err(|e| (io(e), true))?;
            }
            let durable = end == End::Checkpoint || (log.is_none() && end == End::Sync);
            let applied = apply_chunks(&s, &mut pending, durable).map_err(|e| {
                let keep = e.is_transient();
                (e, keep)
            })?;
            if let (Some(l), End::Checkpoint) = (log.as_mut(), end) {
                l.clear().map_err(|e| (io(e), false))?;
            }
            Ok(applied)
        });
        match res {
            Ok(a) => (Ok(a), Batch::default()),
            Err((e, true)) => (Err(e), pending),
            Err((e, false)) => (Err(e), Batch::default()),
        }
    })
    .await
    .map_err(|_| Error::WriterGone)?;
    *held = back;
    if held.readings.len() > MAX_HELD {
        let drop = held.readings.len() - MAX_HELD;
        held.readings.drain(..drop);
        tracing::error!(
            dropped = drop,
            "readings held over a full disk dropped from memory (the staging log keeps them until the next checkpoint)"
        );
    }
    match res {
        Ok(a) => {
            *stats.failing.lock().expect("writer stats") = None;
            stats.stored.fetch_add(a.stored as u64, Ordering::Relaxed);
            stats
                .refused_old
                .fetch_add(a.refused_old as u64, Ordering::Relaxed);
            if a.unknown_device > 0 {
                tracing::error!(
                    dropped = a.unknown_device,
                    "readings of unregistered devices dropped"
                );
            }
            if a.refused_old > 0 {
                tracing::warn!(
                    refused = a.refused_old,
                    "readings not newer than stored ones were refused (clock went back?)"
                );
            }
            if end != End::Nothing {
                stats.durable_commits.fetch_add(1, Ordering::Relaxed);
            }
            if end == End::Checkpoint {
                stats.checkpoints.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
        Err(e) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            *stats.failing.lock().expect("writer stats") = Some(e.to_string());
            tracing::error!(error = %e, kept = held.readings.len(), "store write failed");
            Err(e)
        }
    }
}

/// Most readings held back over a full disk; beyond it the oldest are dropped from memory
/// (they stay in the staging log until the next checkpoint).
const MAX_HELD: usize = 25 * MAX_BATCH;

/// Applies `pending` in transactions of at most [`MAX_BATCH`] readings (what was held over a
/// long outage must not become one huge transaction), taking each committed one out of it; the
/// last is durable when asked. On an error, `pending` holds what was not committed.
fn apply_chunks(s: &Store, pending: &mut Batch, durable: bool) -> Result<Applied> {
    let mut total = Applied::default();
    let mut add = |a: Applied| {
        total.stored += a.stored;
        total.refused_old += a.refused_old;
        total.unknown_device += a.unknown_device;
    };
    while pending.readings.len() > MAX_BATCH {
        let rest = pending.readings.split_off(MAX_BATCH);
        let chunk = Batch {
            devices: pending.devices.clone(),
            readings: std::mem::replace(&mut pending.readings, rest),
            days: pending.days.clone(),
        };
        match apply(s, &chunk, false) {
            Ok(a) => add(a),
            Err(e) => {
                let mut back = chunk.readings;
                back.append(&mut pending.readings);
                pending.readings = back;
                return Err(e);
            }
        }
    }
    add(apply(s, pending, durable)?);
    Ok(total)
}

/// When the writer last made its data durable and when it must next: written but not yet
/// durable (`unsynced`), durable in the staging log but not yet checkpointed (`unchecked`).
struct Cadence {
    every: Duration,
    checkpoint_every: Duration,
    last_sync: Instant,
    last_checkpoint: Instant,
    unsynced: bool,
    unchecked: bool,
}

impl Cadence {
    /// When the next sync or checkpoint is due; `None` while everything is durable.
    fn deadline(&self) -> Option<Instant> {
        let (sync, checkpoint) = (
            self.last_sync + self.every,
            self.last_checkpoint + self.checkpoint_every,
        );
        match (self.unsynced, self.unchecked) {
            (false, false) => None,
            (true, _) => Some(sync.min(checkpoint)),
            (false, true) => Some(checkpoint),
        }
    }

    /// What a commit now should end with, `unchecked` meaning something awaits a checkpoint.
    fn due(&self, unchecked: bool) -> End {
        if unchecked && self.last_checkpoint.elapsed() >= self.checkpoint_every {
            End::Checkpoint
        } else if self.last_sync.elapsed() >= self.every {
            End::Sync
        } else {
            End::Nothing
        }
    }

    /// After a failure: the next sync after `every`, and the next checkpoint too.
    fn retry(&mut self) {
        let now = Instant::now();
        self.last_sync = now;
        self.last_checkpoint = now
            .checked_sub(self.checkpoint_every - self.every)
            .unwrap_or(now);
    }

    /// Notes how a commit that ended with `end` went (`logged`: a staging log is kept).
    fn committed(&mut self, ok: bool, end: End, logged: bool) {
        match (ok, end) {
            // Only a failed sync or checkpoint pushes the deadlines back: a failed batch alone
            // must not postpone the log's sync (it keeps what the database cannot take).
            (false, End::Nothing) => (self.unsynced, self.unchecked) = (true, true),
            (false, _) => {
                (self.unsynced, self.unchecked) = (true, true);
                self.retry();
            }
            (true, End::Nothing) => (self.unsynced, self.unchecked) = (true, true),
            (true, End::Sync) if logged => {
                (self.unsynced, self.unchecked) = (false, true);
                self.last_sync = Instant::now();
            }
            (true, _) => {
                (self.unsynced, self.unchecked) = (false, false);
                (self.last_sync, self.last_checkpoint) = (Instant::now(), Instant::now());
            }
        }
    }

    /// Notes a commit made because the deadline passed with nothing new.
    fn timed_out(&mut self, ok: bool, end: End, logged: bool) {
        if !ok {
            self.retry();
            return;
        }
        (self.unsynced, self.last_sync) = (false, Instant::now());
        if end == End::Checkpoint || !logged {
            (self.unchecked, self.last_checkpoint) = (false, Instant::now());
        }
    }
}

/// `first` and whatever else is queued, up to [`MAX_BATCH`] readings: one batch, and the
/// flushes waiting for it.
fn gather(
    first: WriteOp,
    rx: &mut mpsc::Receiver<WriteOp>,
) -> (Batch, Vec<oneshot::Sender<Result<()>>>) {
    let mut batch = Batch::default();
    let mut waiters = Vec::new();
    let mut op = Some(first);
    while let Some(o) = op.take() {
        match o {
            WriteOp::Device(info, seen) => batch.devices.push((*info, seen)),
            WriteOp::Readings(r, d) => {
                batch.readings.extend(r);
                batch.days.extend(d);
            }
            WriteOp::Flush(w) => waiters.push(w),
        }
        if batch.readings.len() < MAX_BATCH {
            op = rx.try_recv().ok();
        }
    }
    (batch, waiters)
}

async fn run(
    store: Store,
    mut rx: mpsc::Receiver<WriteOp>,
    every: Duration,
    staging: Option<(Staging, Duration)>,
    stats: Arc<WriterStats>,
) {
    let (log, checkpoint_every) = match staging {
        Some((l, c)) => (Some(Arc::new(std::sync::Mutex::new(l))), c.max(every)),
        None => (None, every),
    };
    let log = log.as_ref();
    let mut held = Batch::default();
    let mut c = Cadence {
        every,
        checkpoint_every,
        last_sync: Instant::now(),
        last_checkpoint: Instant::now(),
        unsynced: false,
        unchecked: false,
    };
    loop {
        let first = match c.deadline() {
            Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                Ok(op) => op,
                Err(_) => {
                    let end = match c.due(c.unchecked) {
                        End::Nothing => End::Sync,
                        end => end,
                    };
                    let res = commit(&store, log, &mut held, Batch::default(), end, &stats).await;
                    c.timed_out(res.is_ok(), end, log.is_some());
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(first) = first else { break };
        let (batch, waiters) = gather(first, &mut rx);
        let end = if !waiters.is_empty() {
            End::Checkpoint
        } else {
            c.due(c.unchecked || !batch.is_empty())
        };
        if batch.is_empty() && end == End::Nothing {
            continue;
        }
        let res = commit(&store, log, &mut held, batch, end, &stats).await;
        c.committed(res.is_ok(), end, log.is_some());
        for w in waiters {
            let _ = w.send(match &res {
                Ok(()) => Ok(()),
                Err(e) => Err(Error::WriteFailed(e.to_string())),
            });
        }
    }
    if (c.unsynced || c.unchecked)
        && let Err(e) = commit(
            &store,
            log,
            &mut held,
            Batch::default(),
            End::Checkpoint,
            &stats,
        )
        .await
    {
        tracing::error!(error = %e, "the final checkpoint failed; the staging log keeps the data");
    }
    tracing::debug!("store writer stopped after a final durable commit");
}

/// Applies what a staging log holds after a crash, commits durably and empties the log.
/// A batch the store refuses is skipped with an error in the log (a start must not fail on
/// it). Returns the number of batches replayed.
pub fn replay(store: &Store, log: &mut Staging, batches: Vec<Batch>) -> Result<usize> {
    let n = batches.len();
    for (i, b) in batches.into_iter().enumerate() {
        match apply(store, &b, false) {
            // A full disk or an I/O error: the start fails and the log stays for the next.
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                tracing::error!(batch = i, readings = b.readings.len(), error = %e,
                "staging log: a batch could not be replayed and is skipped");
            }
            Ok(_) => {}
        }
    }
    apply(store, &Batch::default(), true)?;
    log.clear()
        .map_err(|e| Error::WriteFailed(format!("staging log: {e}")))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DeviceId;

    fn plug() -> DeviceInfo {
        DeviceInfo::plug(DeviceId::parse("PLUG01").unwrap())
            .at("127.0.0.9:9999")
            .named("Plug")
            .made("KP115(US)", "1.0", "1")
    }

    fn readings(n: i64) -> Vec<Reading> {
        (0..n)
            .map(|i| Reading {
                device_id: DeviceId::parse("PLUG01").unwrap(),
                ts_ms: 1_700_000_000_000 + i * 10_000,
                power_mw: Some(45_200),
                voltage_mv: Some(120_000),
                current_ma: None,
                counter_wh: Some(i / 10),
                relay_on: true,
                rssi: None,
            })
            .collect()
    }

    #[test]
    fn held_readings_survive_a_full_disk_and_go_in_bounded_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let open = Store::open(&dir.path().join("k.redb"), 8).unwrap();
        // No file system has u64::MAX bytes free: every bulk write meets a full disk.
        let full = open.clone().with_reserve(u64::MAX);
        let n = 2 * MAX_BATCH as i64 + 123;
        let mut pending = Batch {
            devices: vec![(plug(), 1_700_000_000_000)],
            readings: readings(n),
            days: vec![],
        };
        let e = apply_chunks(&full, &mut pending, true).unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert_eq!(pending.readings.len() as i64, n, "nothing taken out");
        // Space returns: all of it goes in, in transactions of at most MAX_BATCH readings.
        let a = apply_chunks(&open, &mut pending, true).unwrap();
        assert_eq!(a.stored as i64, n);
        assert_eq!(pending.readings.len(), 123, "the last transaction's part");
        assert_eq!(open.devices().unwrap()[0].data_points as i64, n);
    }
}
