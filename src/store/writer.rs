//! The single writer task: owns every write transaction, batches what arrives, commits
//! non-durably in between and durably every `commit_interval` (and on flush and shutdown).
//!
//! Crash-loss bound: readings handed to the writer more than `commit_interval` before a crash
//! (plus the time one batch takes to write) are on disk.

use super::write::{Batch, apply};
use super::{Error, Result, Store};
use crate::domain::{DeviceInfo, Reading};
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
    /// Store readings.
    Readings(Vec<Reading>),
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
    /// Durable commits made.
    pub durable_commits: AtomicU64,
    /// Failed transactions.
    pub failures: AtomicU64,
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
}

/// Starts the writer task.
pub fn spawn(
    store: Store,
    commit_interval: Duration,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1024);
    let stats = Arc::new(WriterStats::default());
    let task = tokio::spawn(run(store, rx, commit_interval, stats.clone()));
    (WriterHandle { tx, stats }, task)
}

async fn commit(store: &Store, batch: Batch, durable: bool, stats: &WriterStats) -> Result<()> {
    let s = store.clone();
    let res = tokio::task::spawn_blocking(move || apply(&s, &batch, durable))
        .await
        .map_err(|_| Error::WriterGone)?;
    match res {
        Ok(a) => {
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
            if durable {
                stats.durable_commits.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
        Err(e) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "store write failed");
            Err(e)
        }
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::Receiver<WriteOp>,
    every: Duration,
    stats: Arc<WriterStats>,
) {
    let mut last_durable = Instant::now();
    let mut dirty = false;
    loop {
        let first = if dirty {
            match tokio::time::timeout_at(last_durable + every, rx.recv()).await {
                Ok(op) => op,
                Err(_) => {
                    if commit(&store, Batch::default(), true, &stats).await.is_ok() {
                        dirty = false;
                    }
                    last_durable = Instant::now();
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        let Some(first) = first else { break };
        let mut batch = Batch::default();
        let mut waiters = Vec::new();
        let mut op = Some(first);
        while let Some(o) = op.take() {
            match o {
                WriteOp::Device(info, seen) => batch.devices.push((*info, seen)),
                WriteOp::Readings(r) => batch.readings.extend(r),
                WriteOp::Flush(w) => waiters.push(w),
            }
            if batch.readings.len() < MAX_BATCH {
                op = rx.try_recv().ok();
            }
        }
        let durable = !waiters.is_empty() || last_durable.elapsed() >= every;
        if batch.is_empty() && !durable {
            continue;
        }
        let res = commit(&store, batch, durable, &stats).await;
        if durable {
            last_durable = Instant::now();
            dirty = res.is_err();
        } else {
            dirty = true;
        }
        for w in waiters {
            let _ = w.send(match &res {
                Ok(()) => Ok(()),
                Err(e) => Err(Error::WriteFailed(e.to_string())),
            });
        }
    }
    if dirty {
        let _ = commit(&store, Batch::default(), true, &stats).await;
    }
    tracing::debug!("store writer stopped after a final durable commit");
}
