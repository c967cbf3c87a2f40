//! Export job records: create (with the rolling rate limit checked in the same transaction),
//! read, update in place, list.

use super::schema::EXPORTS;
use super::{Error, Result, Store};
use crate::export::ExportRecord;
use redb::{ReadableDatabase, ReadableTable};

fn decode(b: &[u8]) -> Result<ExportRecord> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt(e.to_string()))
}

fn encode(r: &ExportRecord) -> Result<Vec<u8>> {
    serde_json::to_vec(r).map_err(|e| Error::Corrupt(e.to_string()))
}

impl Store {
    /// Stores a new export unless its owner already created `limit` (> 0) non-scheduled
    /// exports after `now_ms - window_ms` (tombstones count). On refusal returns the time the oldest
    /// of those leaves the window and the count.
    pub fn export_create(
        &self,
        rec: &ExportRecord,
        limit: u32,
        window_ms: i64,
    ) -> Result<std::result::Result<(), (i64, u32)>> {
        let txn = self.db().begin_write()?;
        {
            let mut t = txn.open_table(EXPORTS)?;
            // A limit of 0 means no limit.
            if !rec.scheduled && limit > 0 {
                let since = rec.created_ms - window_ms;
                let mut recent: Vec<i64> = Vec::new();
                for e in t.iter()? {
                    let (_, v) = e?;
                    let r = decode(v.value())?;
                    if r.user_id == rec.user_id && !r.scheduled && r.created_ms > since {
                        recent.push(r.created_ms);
                    }
                }
                if recent.len() >= limit as usize {
                    recent.sort_unstable();
                    let idx = recent.len() - limit as usize;
                    return Ok(Err((recent[idx] + window_ms, recent.len() as u32)));
                }
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
        let txn = self.db().begin_write()?;
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
