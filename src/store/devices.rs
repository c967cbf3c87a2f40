//! Device records as people change them: labels (name, room, rated power, notes), forgetting
//! a device (with or without its readings) and restoring it. Each change is one transaction
//! with its audit entry. A strip is forgotten and restored with its outlets.
//!
//! A forgotten record stays as a tombstone: the writer drops whatever still arrives for it
//! (records, readings, a replayed staging log), discovery and polling leave it alone, and
//! `device_records` no longer lists it.

use super::audit::Pending;
use super::schema::{BLOCKS, DEVICE_STATE, DEVICES, READINGS, ROLLUPS};
use super::{DeviceRecord, Error, Result, Store};
use crate::domain::{DeviceId, DeviceLabels};
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

fn decode(b: &[u8]) -> Result<DeviceRecord> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt(e.to_string()))
}

fn put(txn: &WriteTransaction, r: &DeviceRecord) -> Result<()> {
    let json = serde_json::to_vec(r).map_err(|e| Error::Corrupt(e.to_string()))?;
    txn.open_table(DEVICES)?
        .insert(r.info.device_id.as_str(), json.as_slice())?;
    Ok(())
}

/// The record `id` and, for a strip, its outlets (outlets after their strip).
fn family(txn: &WriteTransaction, id: &DeviceId) -> Result<Vec<DeviceRecord>> {
    let t = txn.open_table(DEVICES)?;
    let main = t
        .get(id.as_str())?
        .map(|v| decode(v.value()))
        .transpose()?
        .ok_or_else(|| Error::UnknownDevice(id.to_string()))?;
    let mut out = vec![main];
    for e in t.range::<&str>(..)? {
        let r = decode(e?.1.value())?;
        if r.info.parent_id.as_ref() == Some(id) {
            out.push(r);
        }
    }
    Ok(out)
}

/// Deletes every reading, block, rollup and the running state of device `key`.
fn purge(txn: &WriteTransaction, key: u32) -> Result<()> {
    let range = (key, i64::MIN)..=(key, i64::MAX);
    txn.open_table(READINGS)?
        .retain_in(range.clone(), |_, _| false)?;
    txn.open_table(BLOCKS)?
        .retain_in(range.clone(), |_, _| false)?;
    txn.open_table(ROLLUPS)?.retain_in(range, |_, _| false)?;
    txn.open_table(DEVICE_STATE)?.remove(key)?;
    Ok(())
}

impl Store {
    /// Every forgotten device record, ordered by id.
    pub fn forgotten_devices(&self) -> Result<Vec<DeviceRecord>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(DEVICES)?;
        let mut out = Vec::new();
        for e in t.range::<&str>(..)? {
            let r = decode(e?.1.value())?;
            if r.forgotten_ms.is_some() {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Changes the labels of device `id` (not a forgotten one) with `f`; `audit` gets the
    /// record before and after. Returns the record after.
    pub fn device_relabel<'a>(
        &self,
        id: &DeviceId,
        f: impl FnOnce(&mut DeviceLabels) -> Result<()>,
        audit: impl FnOnce(&DeviceRecord, &DeviceRecord) -> Option<Pending<'a>>,
    ) -> Result<DeviceRecord> {
        let txn = self.begin_write()?;
        let before = family(&txn, id)?.remove(0);
        if before.forgotten_ms.is_some() {
            return Err(Error::UnknownDevice(id.to_string()));
        }
        let mut after = before.clone();
        f(&mut after.labels)?;
        self.records_changing();
        put(&txn, &after)?;
        if let Some(a) = audit(&before, &after) {
            a.append_in(&txn)?;
        }
        txn.commit()?;
        self.records_changed();
        Ok(after)
    }

    /// Forgets device `id` (a strip with its outlets) at `now_ms`; with `purge`, its readings,
    /// blocks, rollups and state go in the same transaction. `audit` gets the records.
    /// Returns the forgotten records.
    pub fn device_forget<'a>(
        &self,
        id: &DeviceId,
        now_ms: i64,
        purge_data: bool,
        audit: impl FnOnce(&[DeviceRecord]) -> Option<Pending<'a>>,
    ) -> Result<Vec<DeviceRecord>> {
        let txn = self.begin_write()?;
        let mut recs = family(&txn, id)?;
        if recs[0].forgotten_ms.is_some() && !purge_data {
            return Err(Error::UnknownDevice(id.to_string()));
        }
        self.records_changing();
        self.uncache_keys(recs.iter().map(|r| r.info.device_id.as_str()));
        for r in &mut recs {
            r.forgotten_ms.get_or_insert(now_ms);
            put(&txn, r)?;
            if purge_data {
                purge(&txn, r.key)?;
            }
        }
        if let Some(a) = audit(&recs) {
            a.append_in(&txn)?;
        }
        txn.commit()?;
        self.records_changed();
        Ok(recs)
    }

    /// Restores forgotten device `id` (a strip with its outlets) with whatever history it
    /// kept. Returns the restored records.
    pub fn device_restore<'a>(
        &self,
        id: &DeviceId,
        audit: impl FnOnce(&[DeviceRecord]) -> Option<Pending<'a>>,
    ) -> Result<Vec<DeviceRecord>> {
        let txn = self.begin_write()?;
        let mut recs = family(&txn, id)?;
        if recs[0].forgotten_ms.is_none() {
            return Err(Error::Conflict(format!("device {id} is not forgotten")));
        }
        self.records_changing();
        for r in &mut recs {
            r.forgotten_ms = None;
            put(&txn, r)?;
        }
        if let Some(a) = audit(&recs) {
            a.append_in(&txn)?;
        }
        txn.commit()?;
        self.records_changed();
        Ok(recs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeviceInfo, DeviceType, Reading};

    fn info(id: &str, parent: Option<&str>) -> DeviceInfo {
        let plug = DeviceInfo::plug(DeviceId::parse(id).unwrap())
            .at("127.0.0.9:9999")
            .named(id)
            .made("HS300(US)", "1.0", "1");
        match parent {
            Some(p) => plug.outlet_of(DeviceId::parse(p).unwrap(), 0),
            None => plug,
        }
    }

    fn reading(id: &str, ts: i64, wh: i64) -> Reading {
        Reading {
            device_id: DeviceId::parse(id).unwrap(),
            ts_ms: ts,
            power_mw: Some(60_000),
            voltage_mv: Some(230_000),
            current_ma: Some(260),
            counter_wh: Some(wh),
            relay_on: true,
            rssi: None,
        }
    }

    fn batch(devices: &[DeviceInfo], from: i64, n: i64) -> super::super::write::Batch {
        let mut b = super::super::write::Batch::default();
        for d in devices {
            b.devices.push((d.clone(), 0));
            for i in 0..n {
                b.readings.push(reading(
                    d.device_id.as_str(),
                    from + i * 60_000,
                    from / 60_000 + i,
                ));
            }
        }
        b
    }

    #[test]
    fn forget_restore_and_purge_a_strip_with_its_outlets() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("k.redb"), 8).unwrap();
        let mut strip = info("STRIP", None);
        strip.device_type = DeviceType::Strip;
        let (o1, other) = (info("STRIP00", Some("STRIP")), info("PLUG", None));
        super::super::write::apply(
            &s,
            &batch(&[strip.clone(), o1.clone(), other.clone()], 0, 30),
            true,
        )
        .unwrap();
        let sid = strip.device_id.clone();
        let gone = s.device_forget(&sid, 5, false, |_| None).unwrap();
        assert_eq!(gone.len(), 2, "the strip and its outlet");
        assert_eq!(
            s.device_records().unwrap().len(),
            1,
            "only the other plug is listed"
        );
        assert_eq!(s.forgotten_devices().unwrap().len(), 2);
        // What still arrives for it is dropped; the plug's readings are stored.
        let a = super::super::write::apply(
            &s,
            &batch(&[o1.clone(), other.clone()], 30 * 60_000, 5),
            true,
        )
        .unwrap();
        assert_eq!(a.stored, 5);
        // Restored with its history.
        s.device_restore(&sid, |_| None).unwrap();
        let o1_id = o1.device_id.clone();
        assert_eq!(s.readings(&o1_id, 0, i64::MAX, 1000).unwrap().len(), 30);
        // Purged: readings, rollups and state of the strip's family gone, the plug untouched.
        s.device_forget(&sid, 6, true, |_| None).unwrap();
        assert!(s.readings(&o1_id, 0, i64::MAX, 1000).unwrap().is_empty());
        assert!(s.buckets(&o1_id, 0, i64::MAX).unwrap().is_empty());
        let pid = other.device_id.clone();
        assert_eq!(s.readings(&pid, 0, i64::MAX, 1000).unwrap().len(), 35);
        let rep = s.verify_data().unwrap();
        assert!(rep.problems.is_empty(), "store verify: {:?}", rep.problems);
        assert!(matches!(
            s.device_relabel(&sid, |_| Ok(()), |_, _| None),
            Err(Error::UnknownDevice(_))
        ));
    }

    #[test]
    fn labels_change_the_name_and_keep_through_device_updates() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("k.redb"), 8).unwrap();
        let p = info("PLUG", None);
        super::super::write::apply(&s, &batch(std::slice::from_ref(&p), 0, 1), true).unwrap();
        let r = s
            .device_relabel(
                &p.device_id,
                |l| {
                    l.name = Some("Fridge".into());
                    l.room = Some("Kitchen".into());
                    Ok(())
                },
                |_, _| None,
            )
            .unwrap();
        assert_eq!(r.name(), "Fridge");
        // The device renames itself: its alias changes, kasad's name stays.
        let mut renamed = p.clone();
        renamed.name = "HS110(EU)".into();
        super::super::write::apply(&s, &batch(&[renamed], 60_000, 1), true).unwrap();
        let r = s.device(&p.device_id).unwrap().unwrap();
        assert_eq!((r.name(), r.info.name.as_str()), ("Fridge", "HS110(EU)"));
        assert_eq!(r.room(&[]), Some("Kitchen"));
    }
}
