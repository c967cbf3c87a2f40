//! Fixed-width little-endian encodings of raw readings, rollup buckets and per-device state.
//!
//! Values are plain byte strings so the layout is explicit and versioned with the schema.

use crate::domain::rollup::Stat;
use crate::domain::{Bucket, DeviceId, Reading};

struct W(Vec<u8>);

impl W {
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
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

/// A stored raw reading with the interval energy the store derived for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    /// The reading (device id filled in by the reader).
    pub reading: Reading,
    /// Energy of the interval ending at this reading, Wh (0 for the first reading).
    pub energy_wh: i64,
}

/// Encodes a reading and its interval energy.
pub fn encode_reading(r: &Reading, energy_wh: i64) -> Vec<u8> {
    let mut flags = 0;
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
    }
}

fn put_stat(w: &mut W, s: &Stat) {
    w.i64(s.min).i64(s.max).i64(s.sum);
}

fn get_stat(r: &mut R) -> Stat {
    Stat {
        min: r.i64(),
        max: r.i64(),
        sum: r.i64(),
    }
}

/// Encodes a 15-minute bucket (its start is in the key).
pub fn encode_bucket(b: &Bucket) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(104));
    w.i64(b.energy_mwh).u32(b.samples).u32(b.meter_samples);
    put_stat(&mut w, &b.power);
    put_stat(&mut w, &b.voltage);
    put_stat(&mut w, &b.current);
    w.i64(b.on_ms).i64(b.counter_last_wh);
    w.0
}

/// Decodes a bucket stored under `start_ms`.
pub fn decode_bucket(start_ms: i64, b: &[u8]) -> Bucket {
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
            let back = decode_reading(id.clone(), 5, &encode_reading(&r, 7));
            assert_eq!(back.reading, r);
            assert_eq!(back.energy_wh, 7);
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
