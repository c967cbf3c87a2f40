//! The storage engine: hourly sealed blocks read back exactly, raw retention keeps rollups and
//! counts right, compaction returns space, and verification finds a damaged block.

use kasad::domain::energy::RULE;
use kasad::domain::{DeviceId, DeviceInfo, Reading};
use kasad::store::write::{Batch, apply};
use kasad::store::{RawRow, Store};
use redb::{Database, TableDefinition};

const T0: i64 = 1_764_028_800_000; // 2025-11-25T00:00:00Z
const BLOCKS: TableDefinition<(u32, i64), &[u8]> = TableDefinition::new("blocks");

fn info(id: &str) -> DeviceInfo {
    crate::helpers::plug_info(id)
}

/// Hours of 10-second readings with jitter, noise, relay flips, glitches and one counter reset,
/// written in batches the way the writer receives them; returns what the store must hold.
fn fill(store: &Store, id: &str, hours: i64) -> Vec<RawRow> {
    apply(
        store,
        &Batch {
            devices: vec![(info(id), T0)],
            readings: vec![],
            days: vec![],
        },
        true,
    )
    .unwrap();
    let mut expected = Vec::new();
    let (mut counter, mut base) = (1_000i64, None);
    let mut batch = Vec::new();
    for i in 0..hours * 360 {
        let h = kasad::sim::load::mix(i as u64);
        let ts = T0 + i * 10_000 + (h % 601) as i64 - 300;
        if i == 1000 {
            counter = 0;
        }
        counter += (h >> 20) as i64 % 2;
        // Now and then the counter is reported a few Wh low: a glitch, not a reset.
        let seen = if i % 700 == 350 { counter - 4 } else { counter };
        let r = Reading {
            device_id: DeviceId::parse(id).unwrap(),
            ts_ms: ts,
            power_mw: Some(60_000 + (h >> 8) as i64 % 2_000),
            voltage_mv: Some(230_000 + (h >> 16) as i64 % 1_500),
            current_ma: Some(260 + (h >> 24) as i64 % 9),
            counter_wh: Some(seen),
            relay_on: (i / 500) % 2 == 0,
            rssi: Some(-50 - (h >> 32) as i32 % 5),
        };
        expected.push(RawRow {
            reading: r.clone(),
            energy_wh: RULE.step(base, seen).0,
            imported: false,
        });
        base = Some(RULE.step(base, seen).1);
        // At most 1 Wh a step, 2 right after a glitch (which counted nothing): no spike.
        assert!(expected.last().unwrap().energy_wh <= 2, "spike at {i}");
        batch.push(r);
        if batch.len() == 7 {
            apply(
                store,
                &Batch {
                    devices: vec![],
                    readings: std::mem::take(&mut batch),
                    days: vec![],
                },
                false,
            )
            .unwrap();
        }
    }
    apply(
        store,
        &Batch {
            devices: vec![],
            readings: batch,
            days: vec![],
        },
        true,
    )
    .unwrap();
    expected
}

/// Energy in all of `id`'s 15-minute rollups, mWh.
fn rolled_energy_mwh(store: &Store, id: &DeviceId) -> i64 {
    store
        .buckets(id, i64::MIN, i64::MAX)
        .unwrap()
        .iter()
        .map(|b| b.energy_mwh)
        .sum()
}

#[test]
fn sealed_blocks_read_back_exactly_and_stream_any_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("k.redb"), 8).unwrap();
    let expected = fill(&store, "P1", 6);
    let id = DeviceId::parse("P1").unwrap();
    let all: Vec<RawRow> = store
        .scan_raw(&id, i64::MIN, i64::MAX)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(all, expected);
    // A range that starts and ends inside sealed hours.
    let (a, b) = (T0 + 5_400_000, T0 + 9_000_123);
    let part: Vec<RawRow> = store
        .scan_raw(&id, a, b)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let want: Vec<RawRow> = expected
        .iter()
        .filter(|r| r.reading.ts_ms >= a && r.reading.ts_ms < b)
        .cloned()
        .collect();
    assert_eq!(part, want);
    assert_eq!(
        store.readings(&id, i64::MIN, i64::MAX, 10).unwrap(),
        expected[..10]
    );
    let rep = store.verify_data().unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert_eq!(rep.readings, expected.len() as u64);
    // The 15-minute rollups hold exactly the raw energy, across the glitches and the reset.
    let raw: i64 = expected.iter().map(|r| r.energy_wh).sum();
    let rolled: i64 = rolled_energy_mwh(&store, &id);
    assert_eq!(rolled, raw * 1000);
}

#[test]
fn raw_retention_keeps_rollups_and_counts_and_compaction_shrinks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.redb");
    let store = Store::open(&path, 8).unwrap();
    let expected = fill(&store, "P1", 30);
    let id = DeviceId::parse("P1").unwrap();
    let energy_before: i64 = rolled_energy_mwh(&store, &id);
    let cut = T0 + 20 * 3_600_000;
    let removed = store.retain_raw(cut).unwrap();
    let left: Vec<RawRow> = store
        .scan_raw(&id, i64::MIN, i64::MAX)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // Whole blocks go: something old was removed, nothing at or after the cut was, and what
    // is left is exactly the newest part of what was written.
    assert!(removed > 0);
    assert_eq!(removed as usize + left.len(), expected.len());
    assert!(left[0].reading.ts_ms < cut);
    assert_eq!(left[..], expected[removed as usize..]);
    assert_eq!(store.devices().unwrap()[0].data_points as usize, left.len());
    let energy_after: i64 = rolled_energy_mwh(&store, &id);
    assert_eq!(energy_after, energy_before, "rollups are kept forever");
    let rep = store.verify_data().unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    let before = std::fs::metadata(&path).unwrap().len();
    let store = store.compact().unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() <= before);
    assert_eq!(
        store
            .readings(&id, i64::MIN, i64::MAX, usize::MAX)
            .unwrap()
            .len(),
        left.len()
    );
}

#[test]
fn verification_reports_a_damaged_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.redb");
    {
        let store = Store::open(&path, 8).unwrap();
        fill(&store, "P1", 6);
    }
    {
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(BLOCKS).unwrap();
            t.insert((1, T0), [0xffu8, 0xff, 0xff].as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open(&path, 8).unwrap();
    let rep = store.verify_data().unwrap();
    assert!(!rep.problems.is_empty());
    assert!(
        rep.problems[0].contains("does not decode"),
        "{:?}",
        rep.problems
    );
}

#[test]
fn several_devices_stream_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("k.redb"), 8).unwrap();
    let mut all = fill(&store, "P1", 3);
    all.extend(fill(&store, "P2", 3));
    let ids = [
        DeviceId::parse("P1").unwrap(),
        DeviceId::parse("P2").unwrap(),
    ];
    let (a, b) = (T0 + 1_000_000, T0 + 9_000_000);
    let merged: Vec<RawRow> = store
        .scan_raw_many(&ids, a, b)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut want: Vec<RawRow> = all
        .into_iter()
        .filter(|r| r.reading.ts_ms >= a && r.reading.ts_ms < b)
        .collect();
    want.sort_by_key(|r| (r.reading.ts_ms, r.reading.device_id.clone()));
    assert_eq!(merged.len(), want.len());
    assert!(
        merged
            .windows(2)
            .all(|w| w[0].reading.ts_ms <= w[1].reading.ts_ms)
    );
    let key = |r: &RawRow| (r.reading.ts_ms, r.reading.device_id.clone(), r.energy_wh);
    let mut m: Vec<_> = merged.iter().map(key).collect();
    m.sort();
    assert_eq!(m, want.iter().map(key).collect::<Vec<_>>());
}

/// A database written by kasad at schema version 4 (before export jobs), kept as a fixture:
/// opening it migrates to the current schema without touching the readings.
#[test]
fn a_version_4_database_opens_migrates_and_keeps_its_readings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kasad.redb");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kasad-v4.redb"),
        &path,
    )
    .unwrap();
    let store = kasad::store::Store::open(&path, 8).unwrap();
    assert_eq!(store.ping().unwrap(), kasad::store::schema::SCHEMA_VERSION);
    let devices = store.devices().unwrap();
    assert_eq!(devices.len(), 2, "{devices:?}");
    let total: u64 = devices.iter().map(|d| d.data_points).sum();
    assert!(total > 10_000, "a day of simulated history: {total}");
    let mut scanned = 0;
    for d in &devices {
        for r in store
            .scan_raw(&d.record.info.device_id, i64::MIN, i64::MAX)
            .unwrap()
        {
            r.unwrap();
            scanned += 1;
        }
    }
    assert_eq!(scanned, total);
    let report = store.verify_data().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(
        store.exports().unwrap().is_empty(),
        "the new exports table exists"
    );
}

/// The decoded device records are shared between reads and follow every committed change: a
/// new device, a renamed one and one added by a history import.
#[test]
fn device_records_follow_every_committed_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("k.redb"), 8).unwrap();
    let names = |s: &Store| -> Vec<(String, String)> {
        let records = s.device_records().unwrap();
        let summaries: Vec<_> = s.devices().unwrap().into_iter().map(|d| d.record).collect();
        assert_eq!(*records, summaries, "devices() lists the same records");
        records
            .iter()
            .map(|r| (r.info.device_id.to_string(), r.info.name.clone()))
            .collect()
    };
    let batch = |devices: Vec<DeviceInfo>| Batch {
        devices: devices.into_iter().map(|i| (i, T0)).collect(),
        readings: vec![],
        days: vec![],
    };
    assert!(names(&store).is_empty());
    apply(&store, &batch(vec![info("P1")]), true).unwrap();
    let first = store.device_records().unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&first, &store.device_records().unwrap()),
        "unchanged records are decoded once"
    );
    // A clone of the handle (as the API holds) sees what the writer's handle committed.
    let reader = store.clone();
    apply(&store, &batch(vec![info("P2")]), true).unwrap();
    assert_eq!(names(&reader).len(), 2);
    let mut renamed = info("P1");
    renamed.name = "Kettle".into();
    apply(&store, &batch(vec![renamed]), true).unwrap();
    assert_eq!(names(&reader)[0], ("P1".into(), "Kettle".into()));
    // An unchanged device in a batch of readings keeps the shared records.
    let kept = reader.device_records().unwrap();
    apply(&store, &batch(vec![info("P2")]), true).unwrap();
    assert!(std::sync::Arc::ptr_eq(
        &kept,
        &reader.device_records().unwrap()
    ));
    // A history import of a new device.
    let p3 = info("P3");
    let readings = (0..3).map(|m| {
        Ok(Reading {
            device_id: p3.device_id.clone(),
            ts_ms: T0 + m * 60_000,
            power_mw: Some(60_000),
            voltage_mv: None,
            current_ma: None,
            counter_wh: Some(1_000 + m),
            relay_on: true,
            rssi: None,
        })
    });
    store.import_history(&p3, readings).unwrap();
    assert_eq!(names(&reader).len(), 3);
}
