//! Persistence in one redb file — the only module that imports `redb`.
//!
//! Owns: opening and migrating the file, device records, raw readings with the interval energy
//! derived from the device counter, 15-minute rollups written in the same transaction, and the
//! read queries the API and exports use. Writes go through one writer task ([`writer`]) that
//! batches them and spaces durable commits `commit_interval` apart: a crash loses at most the
//! readings of the last `commit_interval` (plus the batch in flight), never consistency.
//!
//! The layout here is deliberately simple (one row per reading); callers use only the
//! functions of [`Store`] and [`writer::WriterHandle`], so the storage-engine work can replace
//! it without touching them.

pub mod alerts;
pub mod audit;
pub mod bills;
pub mod block;
pub mod codec;
pub mod devices;
pub mod exports;
pub mod history;
pub mod maintenance;
pub mod prices;
pub mod push;
pub mod query;
mod records;
pub mod schedules;
pub mod schema;
pub mod select;
pub mod settings;
pub mod staging;
pub mod tariffs;
pub mod users;
pub mod write;
pub mod writer;

use crate::domain::{DeviceId, DeviceInfo};
use redb::Database;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use codec::RawRow;
pub use writer::{WriteOp, WriterHandle};

/// Store failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process (or store handle) has the file open.
    #[error("the database {0} is already in use by another kasad process")]
    AlreadyOpen(String),
    /// The file's schema cannot be used.
    #[error(transparent)]
    Schema(#[from] schema::SchemaError),
    /// A stored record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The source of an import failed (nothing of it was written).
    #[error("{0}")]
    Import(String),
    /// No such device.
    #[error("unknown device {0}")]
    UnknownDevice(String),
    /// No such record.
    #[error("not found: {0}")]
    NotFound(String),
    /// A unique name is taken.
    #[error("{0}")]
    Conflict(String),
    /// The change is not allowed to the one asking (privilege rules); nothing was written.
    #[error("{0}")]
    Refused(String),
    /// A value of the change is invalid (field and reason); nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// Audit retention is blocked by a compliance hold.
    #[error("a compliance hold is active; audit entries cannot be removed")]
    ComplianceHold,
    /// Anything redb reports.
    #[error("database error: {0}")]
    Db(#[from] redb::Error),
    /// A write transaction failed (reported to flush callers).
    #[error("write failed: {0}")]
    WriteFailed(String),
    /// The file system is (nearly) full: the database takes no writes below the reserve.
    #[error(
        "the disk is full: {free_mb} MiB free where kasad keeps {reserve_mb} MiB ([storage] reserve_mb); free some space"
    )]
    DiskFull {
        /// Free MiB.
        free_mb: u64,
        /// The reserve, MiB.
        reserve_mb: u64,
    },
    /// The writer task has stopped.
    #[error("the store writer has stopped")]
    WriterGone,
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl Error {
    /// A failure that passes: the disk below the reserve (nothing was written). What failed
    /// is kept and tried again rather than dropped. (An I/O error inside redb is not: redb then
    /// refuses every write until the file is reopened; what the writer held stays in the
    /// staging log, which is replayed at the next start.)
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::DiskFull { .. })
    }
}

/// Store result.
pub type Result<T> = std::result::Result<T, Error>;

/// What the store keeps about a device besides readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Descriptive data from the device.
    pub info: DeviceInfo,
    /// Compact key used in reading and rollup tables.
    pub key: u32,
    /// First time the device was seen, UTC ms.
    pub first_seen_ms: i64,
    /// What a person says about it (name, room, rated power, notes).
    #[serde(default, skip_serializing_if = "is_default")]
    pub labels: crate::domain::DeviceLabels,
    /// When it was forgotten (`DELETE /api/devices/{id}`): not listed, polled or rediscovered
    /// until restored; its readings stay unless purged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgotten_ms: Option<i64>,
}

fn is_default(l: &crate::domain::DeviceLabels) -> bool {
    *l == crate::domain::DeviceLabels::default()
}

impl DeviceRecord {
    /// The name shown everywhere: kasad's name when one is set, else the device's alias.
    pub fn name(&self) -> &str {
        self.labels.name.as_deref().unwrap_or(&self.info.name)
    }

    /// Its room: its own, else (an outlet) its strip's in `all`.
    pub fn room<'a>(&'a self, all: &'a [DeviceRecord]) -> Option<&'a str> {
        self.labels.room.as_deref().or_else(|| {
            let p = self.info.parent_id.as_ref()?;
            all.iter()
                .find(|d| &d.info.device_id == p)?
                .labels
                .room
                .as_deref()
        })
    }
}

/// A device record with its reading statistics, as listed by the API.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSummary {
    /// The record.
    pub record: DeviceRecord,
    /// Number of stored readings.
    pub data_points: u64,
    /// Newest reading, UTC ms.
    pub last_reading_ms: Option<i64>,
}

/// Free space for unprivileged writers on the file system holding `path`, in bytes.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Handle to the open database; cheap to clone, safe to share.
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Database>,
    /// The database file.
    path: Arc<std::path::PathBuf>,
    /// device id → key, for committed devices only (keys never change once committed).
    keys: Arc<std::sync::RwLock<std::collections::HashMap<String, u32>>>,
    /// Free bytes kept on the file system: no write transaction begins below them.
    reserve: u64,
    /// The device records as last committed (see [`Store::device_records`]).
    records: Arc<RecordCache>,
    /// Audit events waiting to be appended together.
    audit_queue: Arc<audit::AuditQueue>,
    /// Write transactions begun since the store was opened (`/metrics`).
    writes: Arc<std::sync::atomic::AtomicU64>,
}

/// The device table, decoded once: every export plan and preview needs all records, and they
/// change only when a device is first seen or its info changes. A write that changes a record
/// marks the cache dirty; the commit then drops it and bumps the generation, so a reader that
/// read the table before the commit cannot fill the cache with what it saw.
#[derive(Debug, Default)]
struct RecordCache {
    dirty: std::sync::atomic::AtomicBool,
    slot: std::sync::RwLock<(u64, Option<Arc<Vec<DeviceRecord>>>)>,
}

impl Store {
    /// Opens (or creates) the database at `path` with a page cache of `cache_mb` MiB and
    /// migrates it to the current schema.
    pub fn open(path: &Path, cache_mb: usize) -> Result<Self> {
        let db = Database::builder()
            .set_cache_size(cache_mb.max(1) * 1024 * 1024)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    Error::AlreadyOpen(path.display().to_string())
                }
                other => Error::Db(other.into()),
            })?;
        let txn = db.begin_write()?;
        schema::migrate(&txn)?;
        txn.commit()?;
        Ok(Self {
            db: Arc::new(db),
            path: Arc::new(path.to_path_buf()),
            keys: Arc::default(),
            reserve: 0,
            records: Arc::default(),
            audit_queue: Arc::default(),
            writes: Arc::default(),
        })
    }

    /// This store, keeping `bytes` free on its file system (see [`Error::DiskFull`]).
    pub fn with_reserve(mut self, bytes: u64) -> Self {
        self.reserve = bytes;
        self
    }

    /// A small write transaction (users, audit, export records…), unless the file system is
    /// below a quarter of the reserve: redb fails for good (until reopened) after a write that
    /// runs out of space, so none is begun that could.
    pub(crate) fn begin_write(&self) -> Result<redb::WriteTransaction> {
        self.check_space(self.reserve / 4)?;
        self.count_write();
        Ok(self.db.begin_write()?)
    }

    fn count_write(&self) {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Write transactions begun since the store was opened.
    pub fn write_transactions(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A bulk write transaction (readings, imports): refused below the whole reserve, so that
    /// logins, audit entries and export records still fit while readings wait.
    pub(crate) fn begin_bulk_write(&self) -> Result<redb::WriteTransaction> {
        self.check_space(self.reserve)?;
        self.count_write();
        Ok(self.db.begin_write()?)
    }

    /// [`Error::DiskFull`] when the file system has less than `reserve` bytes free.
    pub fn check_space(&self, reserve: u64) -> Result<()> {
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        match free_bytes(dir.unwrap_or(Path::new("."))) {
            Some(free) if reserve > 0 && free < reserve => Err(Error::DiskFull {
                free_mb: free >> 20,
                reserve_mb: reserve >> 20,
            }),
            _ => Ok(()),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` while no transaction can write: a write transaction is held open meanwhile
    /// (and dropped unused), so the file on disk stays as the last commit left it.
    pub fn with_writes_held<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let txn = self.db.begin_write()?;
        let out = f();
        txn.abort()?;
        Ok(out)
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// How many handles share this database (this one included); the file closes when the
    /// last one is dropped.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.db)
    }

    pub(crate) fn cached_key(&self, id: &str) -> Option<u32> {
        self.keys.read().expect("key cache").get(id).copied()
    }

    /// After a commit: caches the committed device keys, and drops the cached records when
    /// the transaction changed one.
    pub(crate) fn cache_keys(&self, keys: impl IntoIterator<Item = (String, u32)>) {
        self.keys.write().expect("key cache").extend(keys);
        if self.records.dirty.swap(false, Ordering::AcqRel) {
            let mut slot = self.records.slot.write().expect("record cache");
            *slot = (slot.0 + 1, None);
        }
    }

    /// Drops device ids from the key cache (before the commit that forgets them: a later
    /// write then reads their record, and finds them forgotten).
    pub(crate) fn uncache_keys<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut keys = self.keys.write().expect("key cache");
        for id in ids {
            keys.remove(id);
        }
    }

    /// After a commit that changed device records outside the writer: drops the cached
    /// records.
    pub(crate) fn records_changed(&self) {
        self.cache_keys(std::iter::empty());
    }

    /// Called by a write transaction that changes a device record (before its commit).
    pub(crate) fn records_changing(&self) {
        self.records.dirty.store(true, Ordering::Release);
    }

    /// Every device record, ordered by id, as of the last commit: decoded once and shared
    /// until a record changes.
    pub fn device_records(&self) -> Result<Arc<Vec<DeviceRecord>>> {
        let generation = {
            let slot = self.records.slot.read().expect("record cache");
            if let Some(r) = &slot.1 {
                return Ok(r.clone());
            }
            slot.0
        };
        let dirty = self.records.dirty.load(Ordering::Acquire);
        let records = Arc::new(query::device_records(self)?);
        let mut slot = self.records.slot.write().expect("record cache");
        // Not when a commit changed records meanwhile, nor while a change is being written.
        if slot.0 == generation && !dirty && !self.records.dirty.load(Ordering::Acquire) {
            slot.1 = Some(records.clone());
        }
        Ok(records)
    }

    /// Looks up a device record by id.
    pub fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>> {
        query::device(self, id)
    }
}
