//! Fixed-width little-endian encodings of raw readings, rollup buckets and per-device state.
//!
//! Values are plain byte strings so the layout is explicit and versioned with the schema.

use crate::domain::provenance::Unmeasured;
use crate::domain::rollup::Stat;
use crate::domain::{Bucket, DeviceId, Reading};

struct W(Vec<u8>);

impl W {
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
}

struct R<'a>(&'a [u8]);

impl R<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let n = N.min(self.0.len());
        a[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        a
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
}

const METER: u8 = 1;
const RELAY: u8 = 2;
const RSSI: u8 = 4;
const COUNTER: u8 = 8;
const IMPORTED: u8 = 16;

/// A stored raw reading with the interval energy the store derived for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    /// The reading (device id filled in by the reader).
    pub reading: Reading,
    /// Energy of the interval ending at this reading, Wh (0 for the first reading).
    pub energy_wh: i64,
    /// Came from another tool's history (else measured).
    pub imported: bool,
}

/// A reading's values and interval energy without the device id: what bulk readers (exports)
/// take a million of at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When it was taken, UTC Unix ms.
    pub ts_ms: i64,
    /// Power, milliwatts.
    pub power_mw: Option<i64>,
    /// Voltage, millivolts.
    pub voltage_mv: Option<i64>,
    /// Current, milliamps.
    pub current_ma: Option<i64>,
    /// The device's energy counter, watt-hours.
    pub counter_wh: Option<i64>,
    /// Relay closed.
    pub relay_on: bool,
    /// Energy of the interval ending at this reading, Wh.
    pub energy_wh: i64,
    /// Came from another tool's history.
    pub imported: bool,
}

impl From<&RawRow> for Sample {
    fn from(r: &RawRow) -> Self {
        let g = &r.reading;
        Self {
            ts_ms: g.ts_ms,
            power_mw: g.power_mw,
            voltage_mv: g.voltage_mv,
            current_ma: g.current_ma,
            counter_wh: g.counter_wh,
            relay_on: g.relay_on,
            energy_wh: r.energy_wh,
            imported: r.imported,
        }
    }
}

/// Encodes a reading, its interval energy and whether it was imported.
pub fn encode_reading(r: &Reading, energy_wh: i64, imported: bool) -> Vec<u8> {
    let mut flags = if imported { IMPORTED } else { 0 };
    if r.power_mw.is_some() {
        flags |= METER;
    }
    if r.relay_on {
        flags |= RELAY;
    }
    if r.rssi.is_some() {
        flags |= RSSI;
    }
    if r.counter_wh.is_some() {
        flags |= COUNTER;
    }
    let mut w = W(Vec::with_capacity(41));
    w.u8(flags)
        .i64(r.power_mw.unwrap_or(0))
        .i64(r.voltage_mv.unwrap_or(0))
        .i64(r.current_ma.unwrap_or(0))
        .i64(r.counter_wh.unwrap_or(0))
        .i64(energy_wh)
        .u8(r.rssi.unwrap_or(0) as i8 as u8);
    w.0
}

/// Decodes a stored reading.
pub fn decode_reading(device_id: DeviceId, ts_ms: i64, b: &[u8]) -> RawRow {
    let mut r = R(b);
    let flags = r.u8();
    let (p, v, c, t, e) = (r.i64(), r.i64(), r.i64(), r.i64(), r.i64());
    let rssi = r.u8() as i8;
    let meter = flags & METER != 0;
    RawRow {
        reading: Reading {
            device_id,
            ts_ms,
            power_mw: meter.then_some(p),
            voltage_mv: meter.then_some(v),
            current_ma: meter.then_some(c),
            counter_wh: (flags & COUNTER != 0).then_some(t),
            relay_on: flags & RELAY != 0,
            rssi: (flags & RSSI != 0).then_some(i32::from(rssi)),
        },
        energy_wh: e,
        imported: flags & IMPORTED != 0,
    }
}

fn get_stat(r: &mut R) -> Stat {
    Stat {
        min: r.i64(),
        max: r.i64(),
        sum: r.i64(),
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn zz(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzz(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

struct V<'a>(&'a [u8]);

impl V<'_> {
    fn u(&mut self) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some((&b, rest)) = self.0.split_first() else {
                return v;
            };
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        v
    }
    fn i(&mut self) -> i64 {
        unzz(self.u())
    }
}

/// Encodes a 15-minute bucket (its start is in the key) as varints: about 35 bytes instead of
/// 104. Min and max are stored as distances from the mean, which are small.
pub fn encode_bucket(b: &Bucket) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    varint(&mut out, zz(b.energy_mwh));
    varint(&mut out, u64::from(b.samples));
    varint(&mut out, u64::from(b.meter_samples));
    varint(&mut out, zz(b.on_ms));
    varint(&mut out, zz(b.counter_last_wh));
    if b.meter_samples > 0 {
        for s in [&b.power, &b.voltage, &b.current] {
            let mean = s.sum.div_euclid(i64::from(b.meter_samples));
            varint(&mut out, zz(s.sum));
            varint(&mut out, zz(mean - s.min));
            varint(&mut out, zz(s.max - mean));
        }
    }
    // Provenance: nothing more for a wholly measured bucket.
    let u = &b.unmeasured;
    if !u.is_measured() {
        varint(&mut out, u64::from(u.marks));
        varint(&mut out, zz(u.backfilled_mwh));
        varint(&mut out, zz(u.spread_mwh));
        varint(&mut out, zz(u.imported_mwh));
    }
    out
}

/// Decodes a bucket stored under `start_ms`.
pub fn decode_bucket(start_ms: i64, b: &[u8]) -> Bucket {
    let mut r = V(b);
    let mut out = Bucket {
        start_ms,
        energy_mwh: r.i(),
        samples: r.u() as u32,
        meter_samples: r.u() as u32,
        on_ms: r.i(),
        counter_last_wh: r.i(),
        ..Bucket::default()
    };
    if out.meter_samples > 0 {
        for s in [&mut out.power, &mut out.voltage, &mut out.current] {
            s.sum = r.i();
            let mean = s.sum.div_euclid(i64::from(out.meter_samples));
            s.min = mean - r.i();
            s.max = mean + r.i();
        }
    }
    // Buckets written before schema 14 end here: wholly measured (see the migration).
    let marks = r.u() as u8;
    if marks != 0 {
        out.unmeasured = Unmeasured {
            backfilled_mwh: r.i(),
            spread_mwh: r.i(),
            imported_mwh: r.i(),
            marks,
        };
    }
    out
}

/// Decodes the fixed-width bucket layout of schema version 3 (for the migration to 4).
pub fn decode_bucket_v3(start_ms: i64, b: &[u8]) -> Bucket {
    let mut r = R(b);
    Bucket {
        start_ms,
        energy_mwh: r.i64(),
        samples: r.u32(),
        meter_samples: r.u32(),
        power: get_stat(&mut r),
        voltage: get_stat(&mut r),
        current: get_stat(&mut r),
        on_ms: r.i64(),
        counter_last_wh: r.i64(),
        unmeasured: Unmeasured::default(),
    }
}

/// Running state of one device, kept so energy can be derived without reading back raw rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceState {
    /// Readings stored.
    pub count: u64,
    /// Timestamp of the newest reading (0 when none).
    pub last_ts: i64,
    /// Counter at the newest reading, if it had one.
    pub last_counter_wh: Option<i64>,
    /// Relay state at the newest reading.
    pub last_relay_on: bool,
}

/// Encodes device state.
pub fn encode_state(s: &DeviceState) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(26));
    w.i64(s.count as i64)
        .i64(s.last_ts)
        .i64(s.last_counter_wh.unwrap_or(-1))
        .u8(u8::from(s.last_relay_on));
    w.0
}

/// Decodes device state.
pub fn decode_state(b: &[u8]) -> DeviceState {
    let mut r = R(b);
    DeviceState {
        count: r.i64() as u64,
        last_ts: r.i64(),
        last_counter_wh: Some(r.i64()).filter(|c| *c >= 0),
        last_relay_on: r.u8() != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_round_trip_with_and_without_meter() {
        let id = DeviceId::parse("D1").unwrap();
        for r in [
            Reading {
                device_id: id.clone(),
                ts_ms: 5,
                power_mw: Some(61_753),
                voltage_mv: Some(230_837),
                current_ma: Some(451),
                counter_wh: Some(16_323),
                relay_on: true,
                rssi: Some(-61),
            },
            Reading {
                device_id: id.clone(),
                ts_ms: 5,
                power_mw: None,
                voltage_mv: None,
                current_ma: None,
                counter_wh: None,
                relay_on: false,
                rssi: None,
            },
        ] {
            let back = decode_reading(id.clone(), 5, &encode_reading(&r, 7, false));
            assert_eq!(back.reading, r);
            assert_eq!(back.energy_wh, 7);
        }
    }

    proptest::proptest! {
        #[test]
        fn compact_buckets_round_trip(
            e in -1_000_000_000i64..1_000_000_000, n in 1u32..10_000, on in 0i64..900_000, c in -1i64..10_000_000,
            vals in proptest::collection::vec((-3_000_000i64..3_000_000, 0i64..300_000, -20_000i64..20_000), 1..50)
        ) {
            let mut b = Bucket::empty(0);
            for (p, v, i) in &vals {
                b.add_sample(*p, *v, *i);
            }
            b.energy_mwh = e;
            b.samples = n;
            b.on_ms = on;
            b.counter_last_wh = c;
            proptest::prop_assert_eq!(decode_bucket(0, &encode_bucket(&b)), b);
            // With provenance, and without meter samples (the marks follow the counter).
            b.unmeasured.add(crate::domain::provenance::Source::Spread, e / 3);
            b.unmeasured.add(crate::domain::provenance::Source::Imported, 7);
            proptest::prop_assert_eq!(decode_bucket(0, &encode_bucket(&b)), b);
            let bare = Bucket { meter_samples: 0, power: Default::default(), voltage: Default::default(), current: Default::default(), ..b };
            proptest::prop_assert_eq!(decode_bucket(0, &encode_bucket(&bare)), bare);
            proptest::prop_assert!(encode_bucket(&b).len() < 80);
        }
    }

    #[test]
    fn buckets_and_state_round_trip() {
        let mut b = Bucket::empty(900_000);
        b.add_sample(1, 2, 3);
        b.energy_mwh = 42;
        b.on_ms = 10;
        b.counter_last_wh = 99;
        assert_eq!(decode_bucket(900_000, &encode_bucket(&b)), b);
        let s = DeviceState {
            count: 3,
            last_ts: 77,
            last_counter_wh: None,
            last_relay_on: true,
        };
        assert_eq!(decode_state(&encode_state(&s)), s);
    }
}
