//! Importing another tool's history of one device, in one transaction: readings older than
//! the device's first stored reading are put before it (blocks and rollups written directly,
//! energy from the imported counters), readings newer than its newest go through the normal
//! write path, and readings in between are skipped — kasad's own readings win. Importing the
//! same history again adds nothing.

use super::codec::{self, DeviceState, RawRow};
use super::schema::{BLOCKS, DEVICE_STATE, DEVICES, READINGS, ROLLUPS};
use super::write::{Batch, apply_in, load_record, pack, update_rollups};
use super::{Error, Result, Store};

/// A reading of the history, or why the source could not give it (the import then stops
/// and writes nothing).
pub type Source = std::result::Result<Reading, Box<dyn std::error::Error + Send + Sync>>;
use crate::domain::energy::{RULE, bucket_start};
use crate::domain::{DeviceInfo, Reading};
use redb::{Durability, ReadableTable};
use std::collections::HashMap;

/// Readings held before they are written (bounds memory whatever the history's length).
const CHUNK: usize = 20_000;

/// What an import of one device did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// Readings put before the device's first stored reading.
    pub before: u64,
    /// Readings added after its newest.
    pub after: u64,
    /// Readings skipped: within the stored range, or not newer than the previous one.
    pub skipped: u64,
}

impl Store {
    /// Imports `readings` (in time order) of `info`'s device. A device without a record gets
    /// one (first seen at its first reading); an existing record is left as it is. Durable
    /// when it returns; a failure (of the store or of `readings`) leaves the store as it was.
    pub fn import_history(
        &self,
        info: &DeviceInfo,
        readings: impl IntoIterator<Item = Source>,
    ) -> Result<Imported> {
        let mut txn = self.begin_bulk_write()?;
        txn.set_durability(Durability::Immediate)?;
        let id = info.device_id.as_str();
        let mut readings = readings.into_iter().peekable();
        let mut keys = HashMap::new();
        let existing = load_record(&txn.open_table(DEVICES)?, id)?;
        let key = match existing {
            Some(r) => r.key,
            None => {
                let first = match readings.peek() {
                    None => return Ok(Imported::default()),
                    Some(Err(e)) => return Err(Error::Import(e.to_string())),
                    Some(Ok(r)) => r.ts_ms,
                };
                let batch = Batch {
                    devices: vec![(info.clone(), first)],
                    ..Batch::default()
                };
                apply_in(self, &txn, &batch, &mut keys, true)?;
                keys[id]
            }
        };
        let st = match txn.open_table(DEVICE_STATE)?.get(key)? {
            Some(v) => codec::decode_state(v.value()),
            None => DeviceState::default(),
        };
        let mut done = Imported::default();
        if st.count > 0 {
            let first = first_stored(&txn, key)?;
            // The bucket shared with the first stored reading keeps that reading's counter.
            let shared = bucket_start(first);
            let kept = txn
                .open_table(ROLLUPS)?
                .get((key, shared))?
                .map(|v| v.value().to_vec());
            let older = std::iter::from_fn(|| {
                match readings.next_if(|r| r.as_ref().is_ok_and(|r| r.ts_ms < first)) {
                    Some(Ok(r)) => Some(r),
                    _ => None,
                }
            });
            (done.before, done.skipped) = prepend(&txn, key, &st, older)?;
            if let Some(kept) = kept {
                let old = codec::decode_bucket(shared, &kept);
                let mut rollups = txn.open_table(ROLLUPS)?;
                let now = rollups.get((key, shared))?.map(|v| v.value().to_vec());
                if let Some(now) = now {
                    let mut b = codec::decode_bucket(shared, &now);
                    b.counter_last_wh = old.counter_last_wh;
                    rollups.insert((key, shared), codec::encode_bucket(&b).as_slice())?;
                }
            }
        }
        let mut batch = Batch::default();
        let mut prev = i64::MIN;
        for r in readings {
            let r = r.map_err(|e| Error::Import(e.to_string()))?;
            if r.ts_ms <= prev {
                done.skipped += 1;
                continue;
            }
            prev = r.ts_ms;
            batch.readings.push(r);
            if batch.readings.len() == CHUNK {
                let a = apply_in(self, &txn, &batch, &mut keys, true)?;
                (done.after, done.skipped) = (
                    done.after + a.stored as u64,
                    done.skipped + a.refused_old as u64,
                );
                batch.readings.clear();
            }
        }
        let a = apply_in(self, &txn, &batch, &mut keys, true)?;
        done.after += a.stored as u64;
        done.skipped += a.refused_old as u64;
        txn.commit()?;
        self.cache_keys(keys);
        Ok(done)
    }
}

/// Time of the device's first stored reading (its first block, or its first head row).
fn first_stored(txn: &redb::WriteTransaction, key: u32) -> Result<i64> {
    let blocks = txn.open_table(BLOCKS)?;
    let head = txn.open_table(READINGS)?;
    let first_block = blocks.range((key, i64::MIN)..=(key, i64::MAX))?.next();
    let first_head = head.range((key, i64::MIN)..=(key, i64::MAX))?.next();
    let mut first = i64::MAX;
    for e in [first_block, first_head].into_iter().flatten() {
        first = first.min(e?.0.value().1);
    }
    Ok(first)
}

/// Writes `readings` (time-ordered, all before the device's first stored reading) as blocks
/// and rollups of `key`, and adds them to the device's count; returns (written, skipped as
/// not newer than the one before). The interval from the last of them to the first stored
/// reading is not counted: that reading's stored energy is its own.
fn prepend(
    txn: &redb::WriteTransaction,
    key: u32,
    st: &DeviceState,
    readings: impl Iterator<Item = Reading>,
) -> Result<(u64, u64)> {
    let mut blocks = txn.open_table(BLOCKS)?;
    let mut rollups = txn.open_table(ROLLUPS)?;
    let mut prev = DeviceState::default();
    let mut rows: Vec<RawRow> = Vec::new();
    let (mut n, mut skipped) = (0u64, 0u64);
    for r in readings {
        if prev.count > 0 && r.ts_ms <= prev.last_ts {
            skipped += 1;
            continue;
        }
        let step = r.counter_wh.map(|c| RULE.step(prev.last_counter_wh, c));
        let energy_wh = step.map_or(0, |s| s.0);
        update_rollups(&mut rollups, key, &prev, &r, energy_wh, None, true)?;
        prev = DeviceState {
            count: prev.count + 1,
            last_ts: r.ts_ms,
            last_counter_wh: step.map(|s| s.1).or(prev.last_counter_wh),
            last_relay_on: r.relay_on,
        };
        rows.push(RawRow {
            reading: r,
            energy_wh,
            imported: true,
        });
        n += 1;
        // Whole hours go out as blocks; the hour in progress stays for the next ones.
        if rows.len() >= CHUNK {
            let w = super::block::window_start(rows[rows.len() - 1].reading.ts_ms);
            let cut = rows.partition_point(|r| super::block::window_start(r.reading.ts_ms) < w);
            if cut > 0 {
                let rest = rows.split_off(cut);
                pack(&mut blocks, key, rows[0].reading.ts_ms, Vec::new(), &rows)?;
                rows = rest;
            }
        }
    }
    if let Some(first) = rows.first() {
        pack(&mut blocks, key, first.reading.ts_ms, Vec::new(), &rows)?;
    }
    if n > 0 {
        let state = DeviceState {
            count: st.count + n,
            ..*st
        };
        let mut states = txn.open_table(DEVICE_STATE)?;
        states.insert(key, codec::encode_state(&state).as_slice())?;
    }
    Ok((n, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DeviceId;

    const T0: i64 = 1_764_028_800_000; // 2025-11-25T00:00:00Z

    fn info() -> DeviceInfo {
        DeviceInfo::plug(DeviceId::parse("P1").unwrap())
            .at("192.168.1.100")
            .named("Lamp")
            .made("HS110(EU)", "", "")
    }

    /// A 360 W load read every minute: its counter gains 6 Wh a minute.
    fn minutes(from: i64, n: i64) -> Vec<Reading> {
        (from..from + n)
            .map(|m| Reading {
                device_id: DeviceId::parse("P1").unwrap(),
                ts_ms: T0 + m * 60_000,
                power_mw: Some(360_000),
                voltage_mv: Some(230_000),
                current_ma: Some(1_565),
                counter_wh: Some(1_000 + 6 * m),
                relay_on: true,
                rssi: None,
            })
            .collect()
    }

    fn energy(store: &Store) -> (u64, i64, i64) {
        let id = DeviceId::parse("P1").unwrap();
        let rows = store.readings(&id, 0, i64::MAX, 1_000_000).unwrap();
        let raw: i64 = rows.iter().map(|r| r.energy_wh).sum();
        let rolled: i64 = store
            .buckets(&id, 0, i64::MAX)
            .unwrap()
            .iter()
            .map(|b| b.energy_mwh)
            .sum();
        (rows.len() as u64, raw, rolled)
    }

    #[test]
    fn history_before_and_after_the_stored_readings_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("k.redb"), 8).unwrap();
        // kasad has read the device from minute 3005 to 3064 (the first in the middle of a
        // 15-minute bucket the history shares).
        let batch = Batch {
            devices: vec![(info(), T0)],
            readings: minutes(3_005, 60),
            days: vec![],
        };
        super::super::write::apply(&store, &batch, true).unwrap();
        // The other tool's history: minutes 0..4000 (more than a chunk before, the overlap,
        // and some after).
        let done = store
            .import_history(&info(), minutes(0, 4_000).into_iter().map(Ok))
            .unwrap();
        assert_eq!(
            done,
            Imported {
                before: 3_005,
                after: 935,
                skipped: 60
            }
        );
        // Every interval is counted once, except the one joining the history to kasad's
        // first reading (6 Wh), which that reading does not hold.
        let (n, raw, rolled) = energy(&store);
        assert_eq!(n, 4_000);
        assert_eq!(raw, 6 * 3_999 - 6);
        assert_eq!(rolled, raw * 1_000);
        // The shared bucket still ends with kasad's counter, not the history's older one.
        let id = DeviceId::parse("P1").unwrap();
        let shared = T0 + 3_000 * 60_000;
        let b = store.buckets(&id, shared, shared + 1).unwrap();
        assert_eq!(
            (b[0].samples, b[0].counter_last_wh),
            (15, 1_000 + 6 * 3_014)
        );
        let report = store.verify_data().unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        // A second import changes nothing.
        let again = store
            .import_history(&info(), minutes(0, 4_000).into_iter().map(Ok))
            .unwrap();
        assert_eq!(again.before + again.after, 0);
        assert_eq!(energy(&store), (n, raw, rolled));
    }

    #[test]
    fn a_new_device_gets_a_record_and_all_of_its_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("k.redb"), 8).unwrap();
        // A source that fails half way writes nothing.
        let failing = minutes(0, 100)
            .into_iter()
            .map(Ok)
            .chain([Err("disk I/O error".into())]);
        let e = store.import_history(&info(), failing).unwrap_err();
        assert_eq!(e.to_string(), "disk I/O error");
        assert!(store.devices().unwrap().is_empty());
        let done = store
            .import_history(&info(), minutes(0, 100).into_iter().map(Ok))
            .unwrap();
        assert_eq!(done.after, 100);
        let rec = store
            .device(&DeviceId::parse("P1").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!((rec.first_seen_ms, rec.info.name.as_str()), (T0, "Lamp"));
        assert_eq!(energy(&store), (100, 6 * 99, 6 * 99 * 1_000));
    }
}
