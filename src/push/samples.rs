//! What a batch pushes: readings (or 15-minute rollups) after each device's cursor, as series
//! named and labelled as `/metrics` has them (`device_id`, plus `site`), with the interval
//! energy and its cost. Sample times are the readings' own milliseconds (rollups: the
//! bucket's start).

use crate::domain::rollup::BUCKET_MS;
use crate::domain::{Bucket, DeviceId};
use crate::store::{self, RawRow, Store};
use crate::tariff::Versions;
use std::collections::BTreeMap;

/// One series of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Metric name.
    pub name: &'static str,
    /// Labels besides the name (empty values are left out by the encoders).
    pub labels: Vec<(&'static str, String)>,
    /// (ms, value), in time order.
    pub samples: Vec<(i64, f64)>,
}

/// The value series of a device, in this order.
const NAMES: [&str; 6] = [
    "kasad_device_power_watts",
    "kasad_device_voltage_volts",
    "kasad_device_current_amperes",
    "kasad_device_energy_counter_watt_hours_total",
    "kasad_device_relay_on",
    "kasad_device_energy_watt_hours",
];

/// Interval cost, with the currency as a label.
pub const COST: &str = "kasad_device_cost";

/// 1 per device with its name, model, type and room (join on `device_id`), as `/metrics` has
/// it: sent with each batch at the device's newest time in it.
pub const INFO: &str = "kasad_device_info";

/// A batch: its series, how many readings, and each device's newest time in it.
#[derive(Debug, Default)]
pub struct Batch {
    /// The series.
    pub series: Vec<Series>,
    /// Readings (or buckets) in it.
    pub readings: u64,
    /// Per device id: the newest time it holds (the cursor once acknowledged).
    pub ends: Vec<(String, i64)>,
    /// Its oldest reading time.
    pub oldest_ms: Option<i64>,
}

/// Where a batch reads from: devices with their cursors, up to `to_ms` (exclusive).
pub struct Window<'a> {
    /// Devices with readings, and the newest one of each.
    pub devices: &'a [(DeviceId, i64)],
    /// A device's cursor (the newest time already acknowledged).
    pub cursor: &'a dyn Fn(&str) -> i64,
    /// Up to (exclusive).
    pub to_ms: i64,
    /// At most this many readings.
    pub max: usize,
    /// 15-minute rollups instead of readings.
    pub rollups: bool,
    /// The `site` label.
    pub site: &'a str,
    /// Per device id: the labels of its `kasad_device_info` series (name, model, type, room).
    pub info: &'a BTreeMap<String, Vec<(&'static str, String)>>,
}

/// One reading's (or bucket's) values by [`NAMES`], and its energy in kWh for the cost.
type Values = ([Option<f64>; 6], f64);

fn raw_values(r: &RawRow) -> Values {
    let g = &r.reading;
    let milli = |v: Option<i64>| v.map(|x| x as f64 / 1000.0);
    let metered = g.power_mw.is_some() || g.counter_wh.is_some();
    let energy = metered.then_some(r.energy_wh as f64);
    (
        [
            milli(g.power_mw),
            milli(g.voltage_mv),
            milli(g.current_ma),
            g.counter_wh.map(|c| c as f64),
            Some(f64::from(u8::from(g.relay_on))),
            energy,
        ],
        energy.unwrap_or(0.0) / 1000.0,
    )
}

fn bucket_values(b: &Bucket) -> Values {
    let mean = |s| b.mean(s).map(|v| v / 1000.0);
    let energy = b.energy_mwh as f64 / 1000.0;
    (
        [
            mean(&b.power),
            mean(&b.voltage),
            mean(&b.current),
            (b.counter_last_wh >= 0).then_some(b.counter_last_wh as f64),
            Some(f64::from(u8::from(b.on_ms > 0))),
            Some(energy),
        ],
        energy / 1000.0,
    )
}

/// A device's rows after its cursor, oldest first.
type Rows<'a> = std::iter::Peekable<Box<dyn Iterator<Item = store::Result<(i64, Values)>> + 'a>>;

/// Each device's rows after its cursor (devices with none are left out).
fn open_scans<'a>(store: &Store, w: &Window<'a>) -> store::Result<Vec<(&'a DeviceId, Rows<'a>)>> {
    let mut scans: Vec<(&'a DeviceId, Rows<'a>)> = Vec::new();
    for (id, newest) in w.devices {
        let from = (w.cursor)(id.as_str()).saturating_add(1);
        let rows: Box<dyn Iterator<Item = store::Result<(i64, Values)>>> = if w.rollups {
            // Only whole buckets: the one holding the newest reading is still filling.
            let end = (newest - newest.rem_euclid(BUCKET_MS)).min(w.to_ms);
            if from >= end {
                continue;
            }
            Box::new(
                store
                    .scan_buckets(id, from, end)?
                    .map(|b| b.map(|b| (b.start_ms, bucket_values(&b)))),
            )
        } else {
            if from >= w.to_ms {
                continue;
            }
            Box::new(
                store
                    .scan_raw(id, from, w.to_ms)?
                    .map(|r| r.map(|r| (r.reading.ts_ms, raw_values(&r)))),
            )
        };
        scans.push((id, rows.peekable()));
    }
    Ok(scans)
}

/// Reads the next batch of `w`, priced by `tariffs`: the oldest `max` rows of all devices
/// together, in time order (a store that refuses samples far behind its newest — Prometheus —
/// never sees one device's backlog pushed ahead of another's).
pub fn gather(store: &Store, w: &Window<'_>, tariffs: &Versions) -> store::Result<Batch> {
    let mut scans = open_scans(store, w)?;
    let mut taken: Vec<Vec<(i64, Values)>> = vec![Vec::new(); scans.len()];
    for _ in 0..w.max {
        let mut best: Option<(usize, i64)> = None;
        for (k, (_, s)) in scans.iter_mut().enumerate() {
            match s.peek() {
                Some(Ok((t, _))) if best.is_none_or(|(_, b)| *t < b) => best = Some((k, *t)),
                Some(Err(_)) => {
                    return Err(s.next().and_then(Result::err).expect("an error was peeked"));
                }
                _ => {}
            }
        }
        let Some((k, _)) = best else { break };
        if let Some(Ok(row)) = scans[k].1.next() {
            taken[k].push(row);
        }
    }
    let per_device: Vec<(&DeviceId, Vec<(i64, Values)>)> = scans
        .into_iter()
        .map(|(id, _)| id)
        .zip(taken)
        .filter(|(_, rows)| !rows.is_empty())
        .collect();
    let mut batch = Batch::default();
    let (Some(lo), Some(hi)) = (
        per_device
            .iter()
            .filter_map(|(_, r)| r.first())
            .map(|r| r.0)
            .min(),
        per_device
            .iter()
            .filter_map(|(_, r)| r.last())
            .map(|r| r.0)
            .max(),
    ) else {
        return Ok(batch);
    };
    let ids: Vec<DeviceId> = per_device.iter().map(|(id, _)| (*id).clone()).collect();
    let prices = crate::tariff::engine::prices(store, tariffs, &ids, lo - BUCKET_MS, hi + 1)?;
    batch.oldest_ms = Some(lo);
    for (id, rows) in per_device {
        let mut labels = vec![("device_id", id.as_str().to_owned())];
        if !w.site.is_empty() {
            labels.push(("site", w.site.to_owned()));
        }
        let mut series: Vec<Series> = NAMES
            .iter()
            .map(|n| Series {
                name: n,
                labels: labels.clone(),
                samples: Vec::with_capacity(rows.len()),
            })
            .collect();
        // One cost series per currency (a tariff version may change it).
        let mut costs: Vec<Series> = Vec::new();
        for (t, (vals, kwh)) in &rows {
            for (s, v) in series.iter_mut().zip(vals) {
                if let Some(v) = v {
                    s.samples.push((*t, *v));
                }
            }
            if vals[5].is_some() {
                // A reading's energy is its interval's, priced at the bucket before it.
                let at = if w.rollups { *t } else { t - 1 };
                let currency = &tariffs.at(at).source.currency;
                let cost = kwh * prices.at(at);
                match costs
                    .iter_mut()
                    .find(|c| c.labels.last().is_some_and(|l| &l.1 == currency))
                {
                    Some(c) => c.samples.push((*t, cost)),
                    None => {
                        let mut l = labels.clone();
                        l.push(("currency", currency.clone()));
                        costs.push(Series {
                            name: COST,
                            labels: l,
                            samples: vec![(*t, cost)],
                        });
                    }
                }
            }
        }
        if let (Some(extra), Some(last)) = (w.info.get(id.as_str()), rows.last()) {
            let mut l = labels.clone();
            l.extend(extra.iter().cloned());
            costs.push(Series {
                name: INFO,
                labels: l,
                samples: vec![(last.0, 1.0)],
            });
        }
        batch.readings += rows.len() as u64;
        batch
            .ends
            .push((id.as_str().to_owned(), rows.last().map_or(0, |r| r.0)));
        batch.series.extend(
            series
                .into_iter()
                .chain(costs)
                .filter(|s| !s.samples.is_empty()),
        );
    }
    Ok(batch)
}
