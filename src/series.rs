//! Reading series for the API and exports: raw rows or rollups at 15 minutes, hours or local
//! days, for a plug, an outlet, or a whole strip (the sum of its outlets).

use crate::domain::provenance::{Source, Unmeasured};
use crate::domain::rollup::{Period, aggregate, period_start};
use crate::domain::{Bucket, DeviceId, DeviceType};
use crate::store::{self, RawRow, Store};
use chrono_tz::Tz;
use std::collections::BTreeMap;

/// Most raw rows one request may return.
pub const MAX_RAW_ROWS: usize = 100_000;

/// Requested resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Every stored reading.
    Raw,
    /// Rollups of the given period.
    Rollup(Period),
}

impl Resolution {
    /// Parses `raw`, `15m`, `hour`, `day`, `week`, `month`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "raw" => Resolution::Raw,
            "15m" => Resolution::Rollup(Period::Quarter),
            "hour" => Resolution::Rollup(Period::Hour),
            "day" => Resolution::Rollup(Period::Day),
            "week" => Resolution::Rollup(Period::Week),
            "month" => Resolution::Rollup(Period::Month),
            _ => return None,
        })
    }
}

/// Why a series cannot be produced.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    /// More raw rows than [`MAX_RAW_ROWS`].
    #[error(
        "the range holds more than {MAX_RAW_ROWS} raw readings; use a shorter range or resolution=15m, hour or day"
    )]
    TooManyRows,
    /// Store failure (including unknown device).
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// One row of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Start of the period (raw: the reading time), UTC ms.
    pub ts_ms: i64,
    /// Power (raw) or mean power (rollups), mW.
    pub power_mw: Option<f64>,
    /// Lowest power in the period, mW (rollups).
    pub power_min_mw: Option<i64>,
    /// Highest power in the period, mW (rollups).
    pub power_max_mw: Option<i64>,
    /// Voltage or mean voltage, mV.
    pub voltage_mv: Option<f64>,
    /// Current or mean current, mA.
    pub current_ma: Option<f64>,
    /// Energy in the interval/period, mWh.
    pub energy_mwh: i64,
    /// Device counter at the end, Wh.
    pub counter_wh: Option<i64>,
    /// Relay on (raw) / on at any time in the period (rollups).
    pub is_on: bool,
    /// Relay on-time in the period, ms (rollups).
    pub on_ms: Option<i64>,
    /// Readings in the period.
    pub samples: u32,
    /// The energy that was not measured (raw: all of an imported reading's).
    pub unmeasured: Unmeasured,
    /// A strip's outlets had different sources (raw).
    pub sources_differ: bool,
}

impl Point {
    /// A raw reading's source (`measured` or `imported`); a period's quality (`measured` or
    /// `mixed`).
    pub fn quality(&self, raw: bool) -> &'static str {
        match (raw, self.unmeasured.single()) {
            (true, Some(s)) if !self.sources_differ => s.name(),
            _ => self.unmeasured.quality(),
        }
    }

    /// The share of the period's energy that was measured (0–1).
    pub fn measured_share(&self) -> f64 {
        self.unmeasured.measured_share(self.energy_mwh)
    }
}

fn from_raw(r: &RawRow) -> Point {
    let f = |v: Option<i64>| v.map(|x| x as f64);
    Point {
        ts_ms: r.reading.ts_ms,
        power_mw: f(r.reading.power_mw),
        power_min_mw: None,
        power_max_mw: None,
        voltage_mv: f(r.reading.voltage_mv),
        current_ma: f(r.reading.current_ma),
        energy_mwh: r.energy_wh * 1000,
        counter_wh: r.reading.counter_wh,
        is_on: r.reading.relay_on,
        on_ms: None,
        samples: 1,
        unmeasured: raw_source(r),
        sources_differ: false,
    }
}

fn from_bucket(b: &Bucket) -> Point {
    let metered = b.meter_samples > 0;
    Point {
        ts_ms: b.start_ms,
        power_mw: b.mean(&b.power),
        power_min_mw: metered.then_some(b.power.min),
        power_max_mw: metered.then_some(b.power.max),
        voltage_mv: b.mean(&b.voltage),
        current_ma: b.mean(&b.current),
        energy_mwh: b.energy_mwh,
        counter_wh: (b.counter_last_wh >= 0).then_some(b.counter_last_wh),
        is_on: b.on_ms > 0,
        on_ms: Some(b.on_ms),
        samples: b.samples,
        unmeasured: b.unmeasured,
        sources_differ: false,
    }
}

/// What a raw row says of its energy's source.
pub fn raw_source(r: &RawRow) -> Unmeasured {
    let mut u = Unmeasured::default();
    if r.imported {
        u.add(Source::Imported, r.energy_wh * 1000);
    }
    u
}

/// Sums strip outlets that share timestamps: power, current and energy add; voltage is the
/// mean; the strip is on when any outlet is; there is no strip counter.
fn sum_points(parts: Vec<Vec<Point>>) -> Vec<Point> {
    let mut by_ts: BTreeMap<i64, (Point, u32)> = BTreeMap::new();
    let add = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(x), Some(y)) => Some(x + y),
        (x, y) => x.or(y),
    };
    for p in parts.into_iter().flatten() {
        match by_ts.get_mut(&p.ts_ms) {
            None => {
                by_ts.insert(
                    p.ts_ms,
                    (
                        Point {
                            counter_wh: None,
                            ..p
                        },
                        1,
                    ),
                );
            }
            Some((acc, n)) => {
                acc.power_mw = add(acc.power_mw, p.power_mw);
                acc.power_min_mw = acc.power_min_mw.zip(p.power_min_mw).map(|(a, b)| a + b);
                acc.power_max_mw = acc.power_max_mw.zip(p.power_max_mw).map(|(a, b)| a + b);
                acc.current_ma = add(acc.current_ma, p.current_ma);
                acc.voltage_mv = add(acc.voltage_mv, p.voltage_mv);
                acc.energy_mwh += p.energy_mwh;
                acc.sources_differ |= acc.unmeasured.marks != p.unmeasured.marks;
                acc.unmeasured.merge(&p.unmeasured);
                acc.is_on |= p.is_on;
                acc.on_ms = acc.on_ms.max(p.on_ms);
                acc.samples = acc.samples.max(p.samples);
                *n += 1;
            }
        }
    }
    by_ts
        .into_values()
        .map(|(mut p, n)| {
            p.voltage_mv = p.voltage_mv.map(|v| v / f64::from(n));
            p
        })
        .collect()
}

fn one_device(
    store: &Store,
    id: &DeviceId,
    start: i64,
    end: i64,
    res: Resolution,
    tz: Tz,
) -> Result<Vec<Point>, SeriesError> {
    Ok(match res {
        Resolution::Raw => {
            let rows = store.readings(id, start, end, MAX_RAW_ROWS + 1)?;
            if rows.len() > MAX_RAW_ROWS {
                return Err(SeriesError::TooManyRows);
            }
            rows.iter().map(from_raw).collect()
        }
        Resolution::Rollup(p) => {
            let from = period_start(start, p, tz);
            let mut failed = None;
            let buckets = store
                .scan_buckets(id, from, end)?
                .map_while(|b| b.map_err(|e| failed = Some(e)).ok());
            let out = aggregate(buckets, p, tz).iter().map(from_bucket).collect();
            if let Some(e) = failed {
                return Err(e.into());
            }
            out
        }
    })
}

/// The series of device `id` for `[start, end)`.
pub fn series(
    store: &Store,
    id: &DeviceId,
    start: i64,
    end: i64,
    res: Resolution,
    tz: Tz,
) -> Result<Vec<Point>, SeriesError> {
    let rec = store
        .device(id)?
        .ok_or_else(|| store::Error::UnknownDevice(id.to_string()))?;
    if rec.info.device_type != DeviceType::Strip {
        return one_device(store, id, start, end, res, tz);
    }
    let outlets: Vec<DeviceId> = store
        .devices()?
        .into_iter()
        .filter(|d| d.record.info.parent_id.as_ref() == Some(id))
        .map(|d| d.record.info.device_id)
        .collect();
    let mut parts = Vec::new();
    let mut total = 0;
    for o in &outlets {
        let p = one_device(store, o, start, end, res, tz)?;
        total += p.len();
        if res == Resolution::Raw && total > MAX_RAW_ROWS {
            return Err(SeriesError::TooManyRows);
        }
        parts.push(p);
    }
    Ok(sum_points(parts))
}
