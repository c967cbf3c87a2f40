//! Energy accounting through the store: counter resets, long gaps, strips, and the property
//! that interval energy over any range sums to the counter difference.

use kasad::domain::{DeviceId, DeviceInfo, DeviceType, Reading};
use kasad::series::{self, Resolution};
use kasad::store::Store;
use kasad::store::write::{Batch, apply};
use proptest::prelude::*;

const T0: i64 = 1_764_028_800_000; // 2025-11-25T00:00:00Z, a bucket boundary
const MIN: i64 = 60_000;

fn info(id: &str, parent: Option<&str>) -> DeviceInfo {
    let plug = crate::helpers::plug_info(id);
    match parent {
        Some(p) => plug.outlet_of(DeviceId::parse(p).unwrap(), 0),
        None => plug,
    }
}

fn reading(id: &str, ts_ms: i64, counter_wh: i64, power_mw: i64) -> Reading {
    Reading {
        device_id: DeviceId::parse(id).unwrap(),
        ts_ms,
        power_mw: Some(power_mw),
        voltage_mv: Some(230_000),
        current_ma: Some(power_mw / 230),
        counter_wh: Some(counter_wh),
        relay_on: true,
        rssi: None,
    }
}

fn store_with(devices: Vec<DeviceInfo>, readings: Vec<Reading>) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("k.redb"), 8).unwrap();
    let batch = Batch {
        devices: devices.into_iter().map(|d| (d, T0)).collect(),
        readings,
        days: vec![],
    };
    apply(&store, &batch, true).unwrap();
    (store, dir)
}

fn id(s: &str) -> DeviceId {
    DeviceId::parse(s).unwrap()
}

#[test]
fn counter_resets_never_give_negative_or_doubled_energy() {
    let counters = [100, 105, 3, 8, 8, 0, 2];
    let readings = counters
        .iter()
        .enumerate()
        .map(|(i, &c)| reading("P1", T0 + i as i64 * MIN, c, 1))
        .collect();
    let (store, _d) = store_with(vec![info("P1", None)], readings);
    let rows = store.readings(&id("P1"), 0, i64::MAX, 100).unwrap();
    let e: Vec<i64> = rows.iter().map(|r| r.energy_wh).collect();
    assert_eq!(e, vec![0, 5, 3, 5, 0, 0, 2]);
    let b = store.buckets(&id("P1"), 0, i64::MAX).unwrap();
    assert_eq!(b.iter().map(|b| b.energy_mwh).sum::<i64>(), 15_000);
}

#[test]
fn a_long_gap_is_spread_over_the_time_it_spans() {
    // Daemon down for 3 hours; the device counted 12 Wh meanwhile.
    let readings = vec![
        reading("P1", T0, 100, 4_000),
        reading("P1", T0 + 180 * MIN, 112, 4_000),
    ];
    let (store, _d) = store_with(vec![info("P1", None)], readings);
    let b = store.buckets(&id("P1"), 0, i64::MAX).unwrap();
    let with_energy: Vec<_> = b.iter().filter(|b| b.energy_mwh > 0).collect();
    assert_eq!(with_energy.len(), 12);
    assert!(with_energy.iter().all(|b| b.energy_mwh == 1_000));
    let hours = series::series(
        &store,
        &id("P1"),
        T0,
        T0 + 181 * MIN,
        Resolution::Rollup(kasad::domain::rollup::Period::Hour),
        chrono_tz::UTC,
    )
    .unwrap();
    let per_hour: Vec<i64> = hours.iter().map(|h| h.energy_mwh).collect();
    assert_eq!(per_hour, vec![4_000, 4_000, 4_000, 0]);
    // On-time is not invented for a gap longer than an hour.
    assert_eq!(b.iter().map(|b| b.on_ms).sum::<i64>(), 0);
}

#[test]
fn readings_older_than_the_newest_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("k.redb"), 8).unwrap();
    let first = Batch {
        devices: vec![(info("P1", None), T0)],
        readings: vec![reading("P1", T0 + MIN, 10, 1)],
        days: vec![],
    };
    apply(&store, &first, true).unwrap();
    // A clock that jumped back (no RTC before NTP sync) must not rewrite history.
    let back = Batch {
        devices: vec![],
        readings: vec![reading("P1", T0, 5, 1), reading("P1", T0 + MIN, 11, 1)],
        days: vec![],
    };
    let a = apply(&store, &back, true).unwrap();
    assert_eq!((a.stored, a.refused_old), (0, 2));
    assert_eq!(
        store.readings(&id("P1"), 0, i64::MAX, 10).unwrap()[0]
            .reading
            .counter_wh,
        Some(10)
    );
}

#[test]
fn a_strip_is_the_sum_of_its_outlets() {
    let mut readings = Vec::new();
    for i in 0..4 {
        readings.push(reading("S100", T0 + i * MIN, 10 * i, 1_000));
        readings.push(reading("S101", T0 + i * MIN, 20 * i, 3_000));
    }
    let mut strip = info("S1", None);
    strip.device_type = DeviceType::Strip;
    let (store, _d) = store_with(
        vec![strip, info("S100", Some("S1")), info("S101", Some("S1"))],
        readings,
    );
    let raw = series::series(
        &store,
        &id("S1"),
        0,
        i64::MAX,
        Resolution::Raw,
        chrono_tz::UTC,
    )
    .unwrap();
    assert_eq!(raw.len(), 4);
    assert_eq!(raw[1].power_mw, Some(4_000.0));
    assert_eq!(raw[1].energy_mwh, 30_000);
    let q = series::series(
        &store,
        &id("S1"),
        0,
        i64::MAX,
        Resolution::Rollup(kasad::domain::rollup::Period::Quarter),
        chrono_tz::UTC,
    )
    .unwrap();
    assert_eq!(q.iter().map(|p| p.energy_mwh).sum::<i64>(), 90_000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn interval_energy_sums_to_the_counter_difference(
        steps in proptest::collection::vec((1i64..7_200_000, 0i64..500), 1..120),
        start in 0i64..1_000_000,
        cut in 0usize..120,
    ) {
        let mut t = T0;
        let mut c = start;
        let mut readings = vec![reading("P1", t, c, 1)];
        for (dt, dc) in &steps {
            t += dt;
            c += dc;
            readings.push(reading("P1", t, c, 1));
        }
        let (store, _d) = store_with(vec![info("P1", None)], readings.clone());
        let rows = store.readings(&id("P1"), 0, i64::MAX, 1_000).unwrap();
        prop_assert_eq!(rows.iter().map(|r| r.energy_wh).sum::<i64>(), c - start);
        // Any sub-range (first..=k): the energies of readings after the first sum to the
        // counter difference across the range.
        let k = cut.min(rows.len() - 1);
        let part: i64 = rows[1..=k].iter().map(|r| r.energy_wh).sum();
        prop_assert_eq!(part, readings[k].counter_wh.unwrap() - start);
        let buckets = store.buckets(&id("P1"), 0, i64::MAX).unwrap();
        prop_assert_eq!(buckets.iter().map(|b| b.energy_mwh).sum::<i64>(), (c - start) * 1000);
        prop_assert_eq!(buckets.iter().map(|b| u64::from(b.samples)).sum::<u64>(), rows.len() as u64);
    }
}

/// Applies `readings` with the device's day totals `days` (start, Wh) attached to `at_ms`.
fn apply_with_days(store: &Store, readings: Vec<Reading>, at_ms: i64, days: Vec<(i64, i64)>) {
    let batch = Batch {
        devices: vec![],
        readings,
        days: vec![kasad::domain::DailyEnergy {
            device_id: id("P1"),
            at_ms,
            days,
        }],
    };
    apply(store, &batch, true).unwrap();
}

fn stored_energy(store: &Store) -> (Vec<i64>, i64) {
    let rows = store.readings(&id("P1"), 0, i64::MAX, 100).unwrap();
    let buckets = store.buckets(&id("P1"), 0, i64::MAX).unwrap();
    (
        rows.iter().map(|r| r.energy_wh).collect(),
        buckets.iter().map(|b| b.energy_mwh).sum(),
    )
}

#[test]
fn day_totals_never_stand_in_for_energy_already_recorded() {
    const H: i64 = 3_600_000;
    // First read at 08:00 (UTC device); 4 kWh recorded by 12:00; the plug goes away,
    // reboots at 13:00 and uses nothing more. Its day total is the same 4 kWh.
    let (store, _d) = store_with(
        vec![info("P1", None)],
        vec![
            reading("P1", T0 + 8 * H, 10_000, 1_000_000),
            reading("P1", T0 + 12 * H, 14_000, 1_000_000),
        ],
    );
    apply_with_days(
        &store,
        vec![reading("P1", T0 + 20 * H, 0, 0)],
        T0 + 20 * H,
        vec![(T0, 4_000)],
    );
    // We never saw the day start, so its total cannot say what the gap used: no stand-in
    // (a share in proportion to time would have counted 2.7 kWh a second time).
    assert_eq!(stored_energy(&store), (vec![0, 4_000, 0], 4_000_000));
}

#[test]
fn day_totals_apply_only_to_the_reading_they_came_with() {
    const H: i64 = 3_600_000;
    let (store, _d) = store_with(
        vec![info("P1", None)],
        vec![
            reading("P1", T0 - H, 9_000, 0),
            reading("P1", T0 + H, 10_000, 0),
        ],
    );
    // The day totals came with a later poll than the first reading here: that reading
    // is spread in proportion to time, the later one is shaped and stood in for.
    apply_with_days(
        &store,
        vec![
            reading("P1", T0 + 2 * H, 10_200, 0),
            reading("P1", T0 + 30 * H, 20, 0),
        ],
        T0 + 30 * H,
        vec![(T0, 1_500), (T0 + 24 * H, 20)],
    );
    let (rows, total) = stored_energy(&store);
    // The device rebooted in the gap (20 Wh since). Its day 0 says 1.5 kWh, of which 0.7 kWh
    // were recorded by 02:00 (half of the 1 kWh from 23:00 to 01:00, then 200 Wh): 800 Wh of
    // the gap were on day 0, 20 Wh on day 1. They stand in for the counter's 20 Wh.
    assert_eq!(rows, vec![0, 1_000, 200, 820]);
    assert_eq!(total, 2_020_000);
    let day0: i64 = store
        .buckets(&id("P1"), T0, T0 + 24 * H)
        .unwrap()
        .iter()
        .filter(|b| b.start_ms < T0 + 24 * H)
        .map(|b| b.energy_mwh)
        .sum();
    assert_eq!(
        day0, 1_500_000,
        "day 0 holds what the device counted that day"
    );
}
