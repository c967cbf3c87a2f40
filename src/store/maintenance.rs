//! Maintenance: raw-data retention, compaction and a full verification of blocks and rollups.

use super::codec::{self, DeviceState};
use super::schema::{BLOCKS, DEVICE_STATE, READINGS, ROLLUPS};
use super::{Error, Result, Store, block};
use crate::domain::DeviceId;
use crate::domain::energy::bucket_start;
use redb::{ReadableDatabase, ReadableTable};
use std::collections::BTreeMap;

/// What [`Store::verify_data`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataReport {
    /// Devices checked.
    pub devices: u64,
    /// Raw readings decoded (blocks and head).
    pub readings: u64,
    /// Problems, one line each (empty when all is well).
    pub problems: Vec<String>,
}

fn block_len(bytes: &[u8]) -> u64 {
    let mut v = 0u64;
    for (i, b) in bytes.iter().take(10).enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    v
}

impl Store {
    /// Removes raw readings older than `before_ms`, block by block (a block that also holds
    /// newer readings is kept whole); rollups are kept forever. Returns the number removed.
    pub fn retain_raw(&self, before_ms: i64) -> Result<u64> {
        let cut = block::window_start(before_ms);
        let txn = self.begin_write()?;
        let mut total = 0;
        {
            let mut states = txn.open_table(DEVICE_STATE)?;
            let keys: Vec<u32> = states
                .range::<u32>(..)?
                .map(|e| e.map(|(k, _)| k.value()))
                .collect::<std::result::Result<_, _>>()?;
            let mut blocks = txn.open_table(BLOCKS)?;
            let mut head = txn.open_table(READINGS)?;
            for key in keys {
                let st: DeviceState = states
                    .get(key)?
                    .map(|v| codec::decode_state(v.value()))
                    .unwrap_or_default();
                // A block may go when everything after it starts at or before the cut.
                // Only blocks starting before the cut, plus the first one after it, are read:
                // a daily sweep must not page the whole history through the cache.
                let mut firsts: Vec<(i64, u64)> = Vec::new();
                for e in blocks.range((key, i64::MIN)..(key, cut))? {
                    let (k, v) = e?;
                    firsts.push((k.value().1, block_len(v.value())));
                }
                if let Some(e) = blocks.range((key, cut)..=(key, i64::MAX))?.next() {
                    firsts.push((e?.0.value().1, 0));
                }
                let head_first = head
                    .range((key, i64::MIN)..=(key, i64::MAX))?
                    .next()
                    .transpose()?
                    .map(|(k, _)| k.value().1);
                let mut removed = 0;
                for (idx, (first, n)) in firsts.iter().enumerate() {
                    let next = firsts
                        .get(idx + 1)
                        .map(|x| x.0)
                        .or(head_first)
                        .unwrap_or(st.last_ts + 1);
                    if next > cut {
                        break;
                    }
                    blocks.remove((key, *first))?;
                    removed += n;
                }
                head.retain_in((key, i64::MIN)..(key, cut), |_, _| {
                    removed += 1;
                    false
                })?;
                if removed > 0 {
                    let mut st: DeviceState = states
                        .get(key)?
                        .map(|v| codec::decode_state(v.value()))
                        .unwrap_or_default();
                    st.count = st.count.saturating_sub(removed);
                    states.insert(key, codec::encode_state(&st).as_slice())?;
                    total += removed;
                }
            }
        }
        txn.commit()?;
        Ok(total)
    }

    /// Payload bytes of the sealed blocks and of the rollups (for benchmarks).
    pub fn payload_bytes(&self) -> Result<(u64, u64)> {
        let txn = self.db().begin_read()?;
        let mut blocks = 0;
        for e in txn.open_table(BLOCKS)?.range::<(u32, i64)>(..)? {
            blocks += e?.1.value().len() as u64;
        }
        let mut rollups = 0;
        for e in txn.open_table(ROLLUPS)?.range::<(u32, i64)>(..)? {
            rollups += e?.1.value().len() as u64 + 12;
        }
        Ok((blocks, rollups))
    }

    /// Reads a counter from the meta table.
    pub fn meta(&self, name: &str) -> Result<u64> {
        let txn = self.db().begin_read()?;
        Ok(txn
            .open_table(super::schema::META)?
            .get(name)?
            .map_or(0, |v| v.value()))
    }

    /// Sets a counter in the meta table.
    pub fn set_meta(&self, name: &str, v: u64) -> Result<()> {
        let txn = self.begin_write()?;
        txn.open_table(super::schema::META)?.insert(name, v)?;
        txn.commit()?;
        Ok(())
    }

    /// Rewrites the file so freed space is returned; needs the only handle to the database
    /// (call it before the daemon shares the store, or with the daemon stopped).
    pub fn compact(self) -> Result<Store> {
        let mut db = std::sync::Arc::try_unwrap(self.db).map_err(|_| {
            Error::Corrupt("the store is in use; compaction needs exclusive access".into())
        })?;
        while db.compact().map_err(|e| Error::Db(e.into()))? {}
        Ok(Store {
            db: std::sync::Arc::new(db),
            path: self.path,
            keys: self.keys,
            reserve: self.reserve,
            records: self.records,
            audit_queue: self.audit_queue,
            writes: self.writes,
        })
    }

    /// Decodes every block and checks each 15-minute bucket's sample count against the raw
    /// readings it summarises (for the time raw data is still kept), and each device's count.
    pub fn verify_data(&self) -> Result<DataReport> {
        let mut rep = DataReport::default();
        for d in self.devices()? {
            rep.devices += 1;
            let id: DeviceId = d.record.info.device_id.clone();
            let mut per_bucket: BTreeMap<i64, u32> = BTreeMap::new();
            let mut n = 0u64;
            for r in self.scan_raw(&id, i64::MIN, i64::MAX)? {
                match r {
                    Ok(r) => {
                        *per_bucket.entry(bucket_start(r.reading.ts_ms)).or_default() += 1;
                        n += 1;
                    }
                    Err(e) => {
                        rep.problems.push(format!("{id}: {e}"));
                        break;
                    }
                }
            }
            rep.readings += n;
            if n != d.data_points {
                rep.problems.push(format!(
                    "{id}: {n} readings stored but the count says {}",
                    d.data_points
                ));
            }
            let first_raw = per_bucket.keys().next().copied().unwrap_or(i64::MAX);
            let txn = self.db().begin_read()?;
            let rollups = txn.open_table(ROLLUPS)?;
            for e in rollups.range((d.record.key, first_raw)..(d.record.key, i64::MAX))? {
                let (k, v) = e?;
                let b = codec::decode_bucket(k.value().1, v.value());
                let raw = per_bucket.get(&b.start_ms).copied().unwrap_or(0);
                if b.start_ms > first_raw && raw != b.samples {
                    rep.problems.push(format!(
                        "{id}: bucket {} has {} samples, raw data {raw}",
                        crate::clock::rfc3339(b.start_ms),
                        b.samples
                    ));
                }
            }
        }
        Ok(rep)
    }
}
