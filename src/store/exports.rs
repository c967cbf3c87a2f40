//! Export job records: create (with the storage quota and the rolling rate limit checked in the
//! same transaction), read, update in place, list.

use super::schema::EXPORTS;
use super::{Error, Result, Store};
use crate::domain::export::{ExportRecord, Status};

/// Why [`Store::export_create`] did not store an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The export files use the whole quota.
    Quota,
    /// The owner's files use their share of it (scheduled runs of non-admins).
    UserQuota,
    /// The owner's rolling-hour limit is reached.
    RateLimited {
        /// When the oldest create leaves the window, UTC ms.
        retry_at_ms: i64,
        /// Creates in the window.
        count: u32,
    },
}
use redb::{ReadableDatabase, ReadableTable};

fn decode(b: &[u8]) -> Result<ExportRecord> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt(e.to_string()))
}

fn encode(r: &ExportRecord) -> Result<Vec<u8>> {
    serde_json::to_vec(r).map_err(|e| Error::Corrupt(e.to_string()))
}

impl Store {
    /// Stores a new export unless the finished files already fill `quota_bytes`, or its owner
    /// already created `limit` (> 0; 0 = no limit) non-scheduled exports after
    /// `created_ms - window_ms` (tombstones count). Both are checked in the insert's
    /// transaction, in one pass over the records.
    pub fn export_create(
        &self,
        rec: &ExportRecord,
        quota_bytes: u64,
        limit: u32,
        window_ms: i64,
        user_quota: Option<u64>,
    ) -> Result<std::result::Result<(), Refusal>> {
        let txn = self.begin_write()?;
        {
            let mut t = txn.open_table(EXPORTS)?;
            let since = rec.created_ms - window_ms;
            let (mut live, mut own, mut recent) = (0u64, 0u64, Vec::new());
            for e in t.iter()? {
                let r = decode(e?.1.value())?;
                if r.deleted_ms.is_none() && r.status == Status::Completed {
                    live += r.file_size.unwrap_or(0);
                    if r.user_id == rec.user_id {
                        own += r.file_size.unwrap_or(0);
                    }
                }
                if r.user_id == rec.user_id && !r.scheduled && r.created_ms > since {
                    recent.push(r.created_ms);
                }
            }
            if live >= quota_bytes {
                return Ok(Err(Refusal::Quota));
            }
            if user_quota.is_some_and(|q| own >= q) {
                return Ok(Err(Refusal::UserQuota));
            }
            let limit_n = limit as usize;
            if !rec.scheduled && limit > 0 && recent.len() >= limit_n {
                recent.sort_unstable();
                return Ok(Err(Refusal::RateLimited {
                    retry_at_ms: recent[recent.len() - limit_n] + window_ms,
                    count: recent.len() as u32,
                }));
            }
            t.insert(rec.id.as_str(), encode(rec)?.as_slice())?;
        }
        txn.commit()?;
        Ok(Ok(()))
    }

    /// One export by id.
    pub fn export(&self, id: &str) -> Result<Option<ExportRecord>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(EXPORTS)?;
        t.get(id)?.map(|v| decode(v.value())).transpose()
    }

    /// Every export, oldest first.
    pub fn exports(&self) -> Result<Vec<ExportRecord>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(EXPORTS)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            out.push(decode(e?.1.value())?);
        }
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(out)
    }

    /// Changes an export in one transaction; `f` returns false to leave it unchanged.
    /// Returns the record as stored afterwards (None when missing).
    pub fn export_update(
        &self,
        id: &str,
        f: impl FnOnce(&mut ExportRecord) -> bool,
    ) -> Result<Option<ExportRecord>> {
        let txn = self.begin_write()?;
        let out = {
            let mut t = txn.open_table(EXPORTS)?;
            let current = t.get(id)?.map(|v| decode(v.value())).transpose()?;
            match current {
                None => None,
                Some(mut r) => {
                    if f(&mut r) {
                        t.insert(id, encode(&r)?.as_slice())?;
                    }
                    Some(r)
                }
            }
        };
        txn.commit()?;
        Ok(out)
    }
}
