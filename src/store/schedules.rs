//! Scheduled exports: one JSON record per schedule, changed together with its audit entry.

use super::audit::Pending;
use super::schema::SCHEDULES;
use super::{Error, Result, Store};
use crate::domain::schedule::ScheduleRecord;
use redb::{ReadableDatabase, ReadableTable};

fn decode(b: &[u8]) -> Result<ScheduleRecord> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt(format!("schedule: {e}")))
}

impl Store {
    /// Every schedule, by id.
    pub fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(SCHEDULES)?;
        t.iter()?.map(|e| decode(e?.1.value())).collect()
    }

    /// One schedule.
    pub fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(SCHEDULES)?;
        t.get(id)?.map(|v| decode(v.value())).transpose()
    }

    /// Stores `rec` (new or replaced), with `audit` in the same transaction.
    pub fn schedule_put(&self, rec: &ScheduleRecord, audit: Option<Pending<'_>>) -> Result<()> {
        let b = serde_json::to_vec(rec).map_err(|e| Error::Corrupt(e.to_string()))?;
        let txn = self.begin_write()?;
        txn.open_table(SCHEDULES)?
            .insert(rec.id.as_str(), b.as_slice())?;
        if let Some(a) = audit {
            a.append_in(&txn)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Changes schedule `id` with `f` (which returns false to leave it as it is) and appends
    /// the audit entry `audit` makes of the changed record, in one transaction; returns the
    /// record after the change, or None when it does not exist.
    pub fn schedule_update<'k>(
        &self,
        id: &str,
        f: impl FnOnce(&mut ScheduleRecord) -> bool,
        audit: impl FnOnce(&ScheduleRecord) -> Option<Pending<'k>>,
    ) -> Result<Option<ScheduleRecord>> {
        let txn = self.begin_write()?;
        let rec = {
            let mut t = txn.open_table(SCHEDULES)?;
            let Some(mut rec) = t.get(id)?.map(|v| decode(v.value())).transpose()? else {
                return Ok(None);
            };
            if !f(&mut rec) {
                return Ok(Some(rec));
            }
            let b = serde_json::to_vec(&rec).map_err(|e| Error::Corrupt(e.to_string()))?;
            t.insert(id, b.as_slice())?;
            rec
        };
        if let Some(a) = audit(&rec) {
            a.append_in(&txn)?;
        }
        txn.commit()?;
        Ok(Some(rec))
    }

    /// Removes schedule `id`, with `audit`; returns it, or None when it did not exist.
    pub fn schedule_delete(
        &self,
        id: &str,
        audit: Option<Pending<'_>>,
    ) -> Result<Option<ScheduleRecord>> {
        let txn = self.begin_write()?;
        let old = txn
            .open_table(SCHEDULES)?
            .remove(id)?
            .map(|v| decode(v.value()))
            .transpose()?;
        if old.is_none() {
            return Ok(None);
        }
        if let Some(a) = audit {
            a.append_in(&txn)?;
        }
        txn.commit()?;
        Ok(old)
    }
}
