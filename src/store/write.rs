//! Applying a batch of device upserts and readings in one write transaction: raw rows, interval
//! energy from the counter, rollup buckets and per-device state all change together.

use super::block;
use super::codec::{self, DeviceState};
use super::schema::{BLOCKS, DEVICE_STATE, DEVICES, META, READINGS, ROLLUPS};
use super::{DeviceRecord, Error, Result, Store};
use crate::domain::energy::{RULE, bucket_start, gap_days, max_energy_mwh, spread, spread_by_days};
use crate::domain::provenance::Source;
use crate::domain::{Bucket, DailyEnergy, DeviceId, DeviceInfo, Reading};
use redb::{Durability, ReadableTable, Table, WriteTransaction};
use std::collections::HashMap;

/// Longest interval over which relay on-time is attributed; beyond it the state in between is
/// unknown (the energy of a gap is still attributed, from the counter).
const MAX_ON_TIME_GAP_MS: i64 = 3_600_000;

/// Work for one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// Devices seen (inserted or updated), with the time they were seen.
    pub devices: Vec<(DeviceInfo, i64)>,
    /// Readings in arrival order.
    pub readings: Vec<Reading>,
    /// Device day totals read after a gap, applied to each device's first reading here.
    pub days: Vec<DailyEnergy>,
}

impl Batch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.readings.is_empty() && self.days.is_empty()
    }

    /// Appends `later` (its readings after these).
    pub fn extend(&mut self, later: Batch) {
        self.devices.extend(later.devices);
        self.readings.extend(later.readings);
        self.days.extend(later.days);
    }
}

/// What a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Readings stored.
    pub stored: usize,
    /// Readings refused because they were not newer than the device's newest reading (clock
    /// went backwards, duplicates).
    pub refused_old: usize,
    /// Readings of a device that has no record.
    pub unknown_device: usize,
    /// Readings of a forgotten device (still in flight when it was forgotten).
    pub forgotten: usize,
}

/// Writes `batch` in one transaction; `durable` makes the commit (and all earlier
/// non-durable ones) survive a power cut.
pub fn apply(store: &Store, batch: &Batch, durable: bool) -> Result<Applied> {
    let mut txn = store.begin_bulk_write()?;
    if !durable {
        txn.set_durability(Durability::None)?;
    }
    let mut keys = HashMap::new();
    let applied = apply_in(store, &txn, batch, &mut keys, false)?;
    txn.commit()?;
    // Only committed keys are cached: an aborted transaction's new key could be reused.
    store.cache_keys(keys);
    Ok(applied)
}

/// Stores new and changed device records (never over a forgotten one's tombstone) and
/// notes every device's key in `keys`.
fn record_devices(
    store: &Store,
    txn: &WriteTransaction,
    devices: &mut Table<&str, &[u8]>,
    seen: &[(DeviceInfo, i64)],
    keys: &mut HashMap<String, u32>,
) -> Result<()> {
    let mut meta = txn.open_table(META)?;
    for (info, seen) in seen {
        let id = info.device_id.as_str();
        let rec = match load_record(devices, id)? {
            // A forgotten device keeps its tombstone as it is.
            Some(r) if r.forgotten_ms.is_some() => continue,
            Some(r) if r.info == *info => {
                keys.insert(id.to_owned(), r.key);
                continue;
            }
            Some(mut r) => {
                r.info = info.clone();
                r
            }
            None => DeviceRecord {
                info: info.clone(),
                key: next_key(&mut meta)?,
                first_seen_ms: *seen,
                labels: Default::default(),
                forgotten_ms: None,
            },
        };
        keys.insert(id.to_owned(), rec.key);
        store.records_changing();
        let json = serde_json::to_vec(&rec).map_err(|e| Error::Corrupt(e.to_string()))?;
        devices.insert(id, json.as_slice())?;
    }
    Ok(())
}

/// Writes `batch` in `txn`; `imported`: its readings come from another tool's history (their
/// energy is `imported`, not measured).
pub(super) fn apply_in(
    store: &Store,
    txn: &WriteTransaction,
    batch: &Batch,
    keys: &mut HashMap<String, u32>,
    imported: bool,
) -> Result<Applied> {
    let mut devices = txn.open_table(DEVICES)?;
    record_devices(store, txn, &mut devices, &batch.devices, keys)?;
    let mut applied = Applied::default();

    let mut readings = txn.open_table(READINGS)?;
    let mut rollups = txn.open_table(ROLLUPS)?;
    let mut states = txn.open_table(DEVICE_STATE)?;
    let mut cache: HashMap<u32, DeviceState> = HashMap::new();
    // By device and the reading they came with (a batch held over a full disk can carry a
    // device's day totals from two returns).
    let days: HashMap<(&str, i64), &DailyEnergy> = batch
        .days
        .iter()
        .map(|d| ((d.device_id.as_str(), d.at_ms), d))
        .collect();
    for r in &batch.readings {
        let id = r.device_id.as_str();
        let key = match keys.get(id).copied().or_else(|| store.cached_key(id)) {
            Some(k) => k,
            None => match load_record(&devices, id)? {
                Some(rec) if rec.forgotten_ms.is_some() => {
                    applied.forgotten += 1;
                    continue;
                }
                Some(rec) => {
                    keys.insert(id.to_owned(), rec.key);
                    rec.key
                }
                // Readings only arrive after their device record; one that does not is
                // dropped alone rather than failing the whole batch.
                None => {
                    applied.unknown_device += 1;
                    continue;
                }
            },
        };
        let st = match cache.get(&key) {
            Some(s) => *s,
            None => states
                .get(key)?
                .map(|v| codec::decode_state(v.value()))
                .unwrap_or_default(),
        };
        if st.count > 0 && r.ts_ms <= st.last_ts {
            applied.refused_old += 1;
            continue;
        }
        // (energy, the counter baseline: after a glitch, the higher value) for a metered reading.
        let step = r.counter_wh.map(|c| RULE.step(st.last_counter_wh, c));
        let mut energy_wh = step.map_or(0, |s| s.0);
        let mut shaped = None;
        let daily = days.get(&(id, r.ts_ms));
        if let (Some(daily), Some((_, base)), Some(c), true) =
            (daily, step, r.counter_wh, st.count > 0)
        {
            let (t0, t1) = (st.last_ts, r.ts_ms);
            let first_day = daily.day_start(t0).unwrap_or(t0);
            let recorded = recorded_mwh(&rollups, key, first_day, t0)?;
            if let Some(gap) = gap_days(&daily.days, t0, t1, recorded) {
                // A counter that fell and was measured on from its new value (a reset, or a
                // drop too large for a glitch) lost the gap's energy before the drop: the
                // device's day totals stand in for it — never added to the counter's. A
                // first day we have no record of since its start is left out (its share is a
                // guess), and no stand-in exceeds what a plug can draw over the gap.
                if st.last_counter_wh.is_some_and(|b| c < b) && base == c {
                    let known = gap.iter().skip(usize::from(recorded.is_none()));
                    let counted = known.fold(0i64, |a, g| a.saturating_add(g.2));
                    energy_wh = energy_wh.max(counted.min(max_energy_mwh(t1 - t0)) / 1000);
                }
                shaped = spread_by_days(energy_wh * 1000, &gap);
            }
        }
        readings.insert(
            (key, r.ts_ms),
            codec::encode_reading(r, energy_wh, imported).as_slice(),
        )?;
        update_rollups(&mut rollups, key, &st, r, energy_wh, shaped, imported)?;
        cache.insert(
            key,
            DeviceState {
                count: st.count + 1,
                last_ts: r.ts_ms,
                last_counter_wh: step.map(|s| s.1).or(st.last_counter_wh),
                last_relay_on: r.relay_on,
            },
        );
        applied.stored += 1;
    }
    let mut blocks = txn.open_table(BLOCKS)?;
    for (key, st) in cache {
        states.insert(key, codec::encode_state(&st).as_slice())?;
        seal(
            &mut readings,
            &mut blocks,
            key,
            block::window_start(st.last_ts),
        )?;
    }
    Ok(applied)
}

/// Moves the head rows of `key` older than `before` (whole hours) into sealed blocks. Hours
/// are appended to the device's newest block while it stays within [`block::TARGET_BYTES`],
/// so blocks fill redb's pages instead of leaving most of each page empty.
fn seal(
    head: &mut Table<(u32, i64), &[u8]>,
    blocks: &mut Table<(u32, i64), &[u8]>,
    key: u32,
    before: i64,
) -> Result<()> {
    let placeholder = DeviceId::parse("sealing").expect("valid id");
    let mut rows: Vec<codec::RawRow> = Vec::new();
    for e in head.range((key, i64::MIN)..(key, before))? {
        let (k, v) = e?;
        rows.push(codec::decode_reading(
            placeholder.clone(),
            k.value().1,
            v.value(),
        ));
    }
    if rows.is_empty() {
        return Ok(());
    }
    let open = match blocks.range((key, i64::MIN)..=(key, i64::MAX))?.next_back() {
        Some(e) => {
            let (k, v) = e?;
            (v.value().len() < block::TARGET_BYTES).then(|| (k.value().1, v.value().to_vec()))
        }
        None => None,
    };
    let (start, group) = match open {
        Some((first, bytes)) => (
            first,
            block::decode(&placeholder, &bytes)
                .ok_or_else(|| Error::Corrupt(format!("block ({key}, {first}) does not decode")))?,
        ),
        None => (rows[0].reading.ts_ms, Vec::new()),
    };
    pack(blocks, key, start, group, &rows)?;
    head.retain_in((key, i64::MIN)..(key, before), |_, _| false)?;
    Ok(())
}

/// Writes `rows` (time-ordered) as blocks of `key` after the open block `group` (starting at
/// `start`, empty for none): whole hours are added while a block stays within
/// [`block::TARGET_BYTES`], so blocks fill redb's pages instead of leaving most of each empty.
pub(super) fn pack(
    blocks: &mut Table<(u32, i64), &[u8]>,
    key: u32,
    mut start: i64,
    mut group: Vec<codec::RawRow>,
    rows: &[codec::RawRow],
) -> Result<()> {
    // Size estimate: the open block plus each hour encoded on its own (chunked bit widths make
    // the parts add up closely); the block is encoded once per call, not once per hour.
    let mut size = block::encode(&group).len();
    let mut i = 0;
    while i < rows.len() {
        let w = block::window_start(rows[i].reading.ts_ms);
        let j = rows[i..]
            .iter()
            .position(|r| block::window_start(r.reading.ts_ms) != w)
            .map_or(rows.len(), |p| i + p);
        let hour = block::encode(&rows[i..j]).len();
        if size + hour > block::TARGET_BYTES && !group.is_empty() {
            blocks.insert((key, start), block::encode(&group).as_slice())?;
            group.clear();
            start = rows[i].reading.ts_ms;
            size = 0;
        }
        group.extend_from_slice(&rows[i..j]);
        size += hour;
        i = j;
    }
    if !group.is_empty() {
        blocks.insert((key, start), block::encode(&group).as_slice())?;
    }
    Ok(())
}

pub(super) fn load_record(t: &Table<&str, &[u8]>, id: &str) -> Result<Option<DeviceRecord>> {
    t.get(id)?
        .map(|v| serde_json::from_slice(v.value()).map_err(|e| Error::Corrupt(e.to_string())))
        .transpose()
}

fn next_key(meta: &mut Table<&str, u64>) -> Result<u32> {
    let k = meta.get("next_device_key")?.map_or(1, |v| v.value());
    meta.insert("next_device_key", k + 1)?;
    u32::try_from(k).map_err(|_| Error::Corrupt("device key space exhausted".into()))
}

fn modify_bucket(
    t: &mut Table<(u32, i64), &[u8]>,
    key: u32,
    start: i64,
    f: impl FnOnce(&mut Bucket),
) -> Result<()> {
    let mut b = t.get((key, start))?.map_or_else(
        || Bucket::empty(start),
        |v| codec::decode_bucket(start, v.value()),
    );
    f(&mut b);
    t.insert((key, start), codec::encode_bucket(&b).as_slice())?;
    Ok(())
}

/// Energy already in the rollups of `key` from `from` up to the bucket holding `upto`;
/// `None` when the rollups do not reach back before `from` (what the device used that day
/// before we first read it is unknown).
fn recorded_mwh(
    t: &Table<(u32, i64), &[u8]>,
    key: u32,
    from: i64,
    upto: i64,
) -> Result<Option<i64>> {
    if t.range((key, i64::MIN)..(key, from))?.next_back().is_none() {
        return Ok(None);
    }
    let mut sum = 0;
    for e in t.range((key, from)..=(key, bucket_start(upto)))? {
        let (k, v) = e?;
        sum += codec::decode_bucket(k.value().1, v.value()).energy_mwh;
    }
    Ok(Some(sum))
}

/// Adds a reading to the rollups: its sample to its bucket, and the energy (and relay
/// on-time) of the interval since the previous reading spread over the buckets it spans —
/// in proportion to time, or by `shaped` parts (a gap shaped by the device's day totals).
/// The energy keeps its [`Source`] in each bucket it goes to.
pub(super) fn update_rollups(
    t: &mut Table<(u32, i64), &[u8]>,
    key: u32,
    prev: &DeviceState,
    r: &Reading,
    energy_wh: i64,
    shaped: Option<Vec<(i64, i64)>>,
    imported: bool,
) -> Result<()> {
    if prev.count > 0 {
        let (t0, t1) = (prev.last_ts, r.ts_ms);
        let source = Source::of_interval(imported, t1 - t0, shaped.is_some());
        let parts = shaped.unwrap_or_else(|| spread(t0, t1, energy_wh * 1000));
        for (start, mwh) in parts {
            // Only buckets that get energy: a long gap with none writes nothing.
            if mwh != 0 {
                modify_bucket(t, key, start, |b| b.add_energy(source, mwh))?;
            }
        }
        let on_ms = match (prev.last_relay_on, r.relay_on) {
            (true, true) => t1 - t0,
            (true, false) | (false, true) => (t1 - t0) / 2,
            (false, false) => 0,
        };
        if on_ms > 0 && t1 - t0 <= MAX_ON_TIME_GAP_MS {
            for (start, ms) in spread(t0, t1, on_ms) {
                modify_bucket(t, key, start, |b| b.on_ms += ms)?;
            }
        }
    }
    modify_bucket(t, key, bucket_start(r.ts_ms), |b| {
        b.samples += 1;
        if let (Some(p), Some(v), Some(c)) = (r.power_mw, r.voltage_mv, r.current_ma) {
            b.add_sample(p, v, c);
        } else if let Some(p) = r.power_mw {
            b.add_sample(p, 0, 0);
        }
        if let Some(c) = r.counter_wh {
            b.counter_last_wh = c;
        }
    })
}
