//! Read queries: device records with statistics, raw readings and rollup buckets by time range.
//!
//! Each query runs in its own short read transaction (long ones pin pages and grow the file).

use super::codec::{self, RawRow};
use super::schema::{DEVICE_STATE, DEVICES, READINGS, ROLLUPS};
use super::{DeviceRecord, DeviceSummary, Error, Result, Store};
use crate::domain::{Bucket, DeviceId};
use redb::ReadableDatabase;

/// One device record.
pub fn device(store: &Store, id: &DeviceId) -> Result<Option<DeviceRecord>> {
    let txn = store.db().begin_read()?;
    let t = txn.open_table(DEVICES)?;
    t.get(id.as_str())?
        .map(|v| serde_json::from_slice(v.value()).map_err(|e| Error::Corrupt(e.to_string())))
        .transpose()
}

impl Store {
    /// A cheap liveness check: a read transaction that reads the schema version.
    pub fn ping(&self) -> Result<u64> {
        let txn = self.db().begin_read()?;
        let meta = txn.open_table(super::schema::META)?;
        Ok(meta.get("schema_version")?.map_or(0, |v| v.value()))
    }

    /// Every device with its reading count and newest reading time, ordered by id.
    pub fn devices(&self) -> Result<Vec<DeviceSummary>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(DEVICES)?;
        let states = txn.open_table(DEVICE_STATE)?;
        let mut out = Vec::new();
        for entry in t.range::<&str>(..)? {
            let (_, v) = entry?;
            let record: DeviceRecord =
                serde_json::from_slice(v.value()).map_err(|e| Error::Corrupt(e.to_string()))?;
            let st = states
                .get(record.key)?
                .map(|s| codec::decode_state(s.value()))
                .unwrap_or_default();
            out.push(DeviceSummary {
                record,
                data_points: st.count,
                last_reading_ms: (st.count > 0).then_some(st.last_ts),
            });
        }
        Ok(out)
    }

    fn key_of(&self, id: &DeviceId) -> Result<u32> {
        Ok(self
            .device(id)?
            .ok_or_else(|| Error::UnknownDevice(id.to_string()))?
            .key)
    }

    /// Raw readings of `id` with `start <= ts < end`, oldest first, at most `limit`.
    pub fn readings(
        &self,
        id: &DeviceId,
        start: i64,
        end: i64,
        limit: usize,
    ) -> Result<Vec<RawRow>> {
        let key = self.key_of(id)?;
        let txn = self.db().begin_read()?;
        let t = txn.open_table(READINGS)?;
        let mut out = Vec::new();
        for entry in t.range((key, start)..(key, end))?.take(limit) {
            let (k, v) = entry?;
            out.push(codec::decode_reading(id.clone(), k.value().1, v.value()));
        }
        Ok(out)
    }

    /// 15-minute buckets of `id` whose start lies in `[start, end)`, oldest first.
    pub fn buckets(&self, id: &DeviceId, start: i64, end: i64) -> Result<Vec<Bucket>> {
        let key = self.key_of(id)?;
        let txn = self.db().begin_read()?;
        let t = txn.open_table(ROLLUPS)?;
        let mut out = Vec::new();
        for entry in t.range((key, start)..(key, end))? {
            let (k, v) = entry?;
            out.push(codec::decode_bucket(k.value().1, v.value()));
        }
        Ok(out)
    }

    /// Newest reading time over all devices.
    pub fn newest_reading_ms(&self) -> Result<Option<i64>> {
        Ok(self
            .devices()?
            .iter()
            .filter_map(|d| d.last_reading_ms)
            .max())
    }
}
