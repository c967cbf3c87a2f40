//! Read queries: device records with statistics, raw readings and rollup buckets by time range.
//!
//! Each query runs in its own short read transaction (long ones pin pages and grow the file).

use super::block;
use super::codec::{self, RawRow, Sample};
use super::schema::{BLOCKS, DEVICE_STATE, DEVICES, READINGS, ROLLUPS};
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

/// Every device record but the forgotten ones, decoded from the table, ordered by id.
pub(super) fn device_records(store: &Store) -> Result<Vec<DeviceRecord>> {
    let txn = store.db().begin_read()?;
    let t = txn.open_table(DEVICES)?;
    let mut out = Vec::new();
    for entry in t.range::<&str>(..)? {
        let (_, v) = entry?;
        let r: DeviceRecord =
            serde_json::from_slice(v.value()).map_err(|e| Error::Corrupt(e.to_string()))?;
        if r.forgotten_ms.is_none() {
            out.push(r);
        }
    }
    Ok(out)
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
        let records = self.device_records()?;
        let txn = self.db().begin_read()?;
        let states = txn.open_table(DEVICE_STATE)?;
        let mut out = Vec::with_capacity(records.len());
        for record in records.iter() {
            let st = states
                .get(record.key)?
                .map(|s| codec::decode_state(s.value()))
                .unwrap_or_default();
            out.push(DeviceSummary {
                record: record.clone(),
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
        self.scan_raw(id, start, end)?.take(limit).collect()
    }

    /// Streams the raw readings of `id` with `start <= ts < end`, oldest first: sealed blocks
    /// one at a time, then the head. Memory stays at one block whatever the range.
    pub fn scan_raw(&self, id: &DeviceId, start: i64, end: i64) -> Result<RawScan> {
        self.scan_as(id, start, end)
    }

    /// [`Self::scan_raw`] yielding [`Sample`]s (no device id per reading).
    pub fn scan_samples(&self, id: &DeviceId, start: i64, end: i64) -> Result<RawScan<Sample>> {
        self.scan_as(id, start, end)
    }

    fn scan_as<T>(&self, id: &DeviceId, start: i64, end: i64) -> Result<RawScan<T>> {
        let key = self.key_of(id)?;
        let txn = self.db().begin_read()?;
        let table = txn.open_table(BLOCKS)?;
        // The block holding `start` begins at or before it.
        let from = match table.range((key, i64::MIN)..=(key, start))?.next_back() {
            Some(e) => e?.0.value().1,
            None => start,
        };
        let blocks = table.range((key, from)..(key, end))?;
        let head = txn.open_table(READINGS)?.range((key, start)..(key, end))?;
        Ok(RawScan {
            id: id.clone(),
            start,
            end,
            blocks,
            current: block::Columns::default(),
            next_idx: 0,
            head,
            _txn: txn,
            _item: std::marker::PhantomData,
        })
    }

    /// 15-minute buckets of `id` whose start lies in `[start, end)`, oldest first.
    pub fn buckets(&self, id: &DeviceId, start: i64, end: i64) -> Result<Vec<Bucket>> {
        self.scan_buckets(id, start, end)?.collect()
    }

    /// Streams the 15-minute buckets of `id` whose start lies in `[start, end)`.
    pub fn scan_buckets(&self, id: &DeviceId, start: i64, end: i64) -> Result<BucketScan> {
        let key = self.key_of(id)?;
        let txn = self.db().begin_read()?;
        let range = txn.open_table(ROLLUPS)?.range((key, start)..(key, end))?;
        Ok(BucketScan { range, _txn: txn })
    }

    /// The energy of `id`'s buckets from `start` to `end` (mWh) and the part of it that was
    /// not measured, by source.
    pub fn provenance(
        &self,
        id: &DeviceId,
        start: i64,
        end: i64,
    ) -> Result<(i64, crate::domain::provenance::Unmeasured)> {
        let mut out = (0, crate::domain::provenance::Unmeasured::default());
        for b in self.scan_buckets(id, start, end)? {
            let b = b?;
            out.0 += b.energy_mwh;
            out.1.merge(&b.unmeasured);
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

/// What a raw scan yields per reading.
pub trait ScanItem: Sized {
    /// Reading `i` of a decoded block.
    fn at(c: &block::Columns, id: &DeviceId, i: usize) -> Self;
    /// A reading from the head.
    fn from_row(r: RawRow) -> Self;
}

impl ScanItem for RawRow {
    fn at(c: &block::Columns, id: &DeviceId, i: usize) -> Self {
        c.row(id, i)
    }
    fn from_row(r: RawRow) -> Self {
        r
    }
}

impl ScanItem for Sample {
    fn at(c: &block::Columns, _id: &DeviceId, i: usize) -> Self {
        c.sample(i)
    }
    fn from_row(r: RawRow) -> Self {
        Sample::from(&r)
    }
}

/// A streaming scan over one device's raw readings (see [`Store::scan_raw`]).
pub struct RawScan<T = RawRow> {
    id: DeviceId,
    start: i64,
    end: i64,
    blocks: redb::Range<'static, (u32, i64), &'static [u8]>,
    current: block::Columns,
    next_idx: usize,
    head: redb::Range<'static, (u32, i64), &'static [u8]>,
    _txn: redb::ReadTransaction,
    _item: std::marker::PhantomData<T>,
}

impl<T: ScanItem> Iterator for RawScan<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            while self.next_idx < self.current.len() {
                let i = self.next_idx;
                self.next_idx += 1;
                let ts = self.current.ts(i);
                if ts >= self.start && ts < self.end {
                    return Some(Ok(T::at(&self.current, &self.id, i)));
                }
            }
            match self.blocks.next() {
                Some(Ok((k, v))) => match block::decode_columns(v.value()) {
                    Some(cols) => {
                        self.current = cols;
                        self.next_idx = 0;
                    }
                    None => {
                        return Some(Err(Error::Corrupt(format!(
                            "block at {} does not decode",
                            k.value().1
                        ))));
                    }
                },
                Some(Err(e)) => return Some(Err(e.into())),
                None => break,
            }
        }
        match self.head.next()? {
            Ok((k, v)) => Some(Ok(T::from_row(codec::decode_reading(
                self.id.clone(),
                k.value().1,
                v.value(),
            )))),
            Err(e) => Some(Err(e.into())),
        }
    }
}

/// A streaming scan over one device's rollup buckets (see [`Store::scan_buckets`]).
pub struct BucketScan {
    range: redb::Range<'static, (u32, i64), &'static [u8]>,
    _txn: redb::ReadTransaction,
}

impl Iterator for BucketScan {
    type Item = Result<Bucket>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.range.next()? {
            Ok((k, v)) => Ok(codec::decode_bucket(k.value().1, v.value())),
            Err(e) => Err(e.into()),
        })
    }
}

/// Raw readings of several devices merged into one time-ordered stream (ties by device
/// order), one block per device in memory at a time.
pub struct MergedScan {
    scans: Vec<std::iter::Peekable<RawScan>>,
}

impl Store {
    /// Streams the raw readings of `ids` with `start <= ts < end`, oldest first.
    pub fn scan_raw_many(&self, ids: &[DeviceId], start: i64, end: i64) -> Result<MergedScan> {
        let scans = ids
            .iter()
            .map(|id| Ok(self.scan_raw(id, start, end)?.peekable()))
            .collect::<Result<_>>()?;
        Ok(MergedScan { scans })
    }
}

impl Iterator for MergedScan {
    type Item = Result<RawRow>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, i64)> = None;
        for (i, s) in self.scans.iter_mut().enumerate() {
            match s.peek() {
                Some(Ok(r)) if best.is_none_or(|(_, t)| r.reading.ts_ms < t) => {
                    best = Some((i, r.reading.ts_ms));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) => return s.next(),
                None => {}
            }
        }
        self.scans[best?.0].next()
    }
}
