//! What-if: the stored history of a period priced under other tariffs, each as if it had been
//! in force all along (its `effective_from` ignored): energy cost, fixed charges and taxes, per
//! device and per month. Parts are rounded so that they add up to the rounded totals.

use super::engine::{self, Pico};
use super::{Compiled, Versions};
use crate::domain::DeviceId;
use crate::domain::rollup::{Period, period_start};
use crate::store::{self, Store};
use chrono_tz::Tz;

/// Most tariffs one comparison takes.
pub const MAX_TARIFFS: usize = 10;

/// A tariff to compare, with its name.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Named {
    /// Its name (`tariff N` when none was given).
    pub name: String,
    /// The tariff.
    pub tariff: super::Tariff,
}

/// Reads the tariffs of a comparison (`field` names them in errors): 1 to [`MAX_TARIFFS`],
/// each a tariff body or `{"name", "tariff"}`, checked as `PUT /api/tariffs` checks a version
/// (in `tz`; the `effective_from` aside).
pub fn named(list: &[serde_json::Value], field: &str, tz: Tz) -> Result<Vec<Named>, String> {
    if list.is_empty() || list.len() > MAX_TARIFFS {
        return Err(format!("{field}: a list of 1 to {MAX_TARIFFS} tariffs"));
    }
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let (name, body) = match t.get("tariff") {
                Some(b) => (
                    t.get("name").and_then(|n| n.as_str()).map(str::to_owned),
                    b.clone(),
                ),
                None => (None, t.clone()),
            };
            let tariff: super::Tariff =
                serde_json::from_value(body).map_err(|e| format!("{field}[{i}]: {e}"))?;
            Compiled::new(&tariff, tz).map_err(|e| format!("{field}[{i}].{e}"))?;
            let name = name
                .filter(|n| !n.trim().is_empty() && n.chars().count() <= 100)
                .unwrap_or_else(|| format!("tariff {}", i + 1));
            Ok(Named { name, tariff })
        })
        .collect()
}

/// One tariff's price of the history.
#[derive(Debug, Clone, PartialEq)]
pub struct Priced {
    /// Everything, minor units.
    pub total: i64,
    /// Energy before taxes.
    pub energy_cost: i64,
    /// Fixed charges before taxes.
    pub fixed_charges: i64,
    /// Taxes on both.
    pub taxes: i64,
    /// Per device (energy with its taxes), then one part for the fixed charges with theirs.
    pub per_device: Vec<i64>,
    /// Per local month (start, UTC ms): energy and fixed charges with taxes.
    pub per_month: Vec<(i64, i64)>,
    /// Decimals of the minor unit.
    pub decimals: u8,
    /// Energy (mWh) and its cost with taxes (minor units) per band: time-of-use periods, and
    /// for dynamic rates `dynamic`, `fallback price` and `missing price` buckets.
    pub by_band: Vec<(String, i64, i64)>,
}

/// The local months (in `tz`) that `[start, end)` touches, as (start, end) within it.
pub fn months(start: i64, end: i64, tz: Tz) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut a = start;
    while a < end {
        let m = period_start(a, Period::Month, tz);
        let next = crate::domain::rollup::period_end(m, Period::Month, tz);
        let b = next.min(end);
        out.push((a, b));
        a = b;
    }
    out
}

/// Prices `devices`' energy in `[start, end)` under `c` alone; months in `tz`.
pub fn price_under(
    store: &Store,
    c: &Compiled,
    devices: &[DeviceId],
    start: i64,
    end: i64,
    tz: Tz,
) -> store::Result<Priced> {
    let v = Versions(vec![Compiled {
        from_ms: i64::MIN,
        ..c.clone()
    }]);
    let spans = months(start, end, tz);
    let (mut energy, mut energy_tax) = (0 as Pico, 0 as Pico);
    let mut per_device: Vec<Pico> = vec![0; devices.len() + 1];
    let mut per_month: Vec<Pico> = vec![0; spans.len()];
    let mut bands: Vec<(i64, Pico)> = Vec::new();
    let labels = engine::price(store, &v, devices, start, end, |p| {
        energy += p.cost;
        energy_tax += p.tax;
        per_device[p.dev] += p.cost + p.tax;
        let k = spans.partition_point(|s| s.0 <= p.t).saturating_sub(1);
        per_month[k] += p.cost + p.tax;
        if bands.len() <= p.band {
            bands.resize(p.band + 1, (0, 0));
        }
        bands[p.band].0 += p.mwh;
        bands[p.band].1 += p.cost + p.tax;
    })?;
    let (mut fixed, mut fixed_tax) = (0 as Pico, 0 as Pico);
    for (k, (a, b)) in spans.iter().enumerate() {
        for l in engine::fixed(&v, *a, *b) {
            fixed += l.cost;
            fixed_tax += l.tax;
            per_month[k] += l.cost + l.tax;
        }
    }
    per_device[devices.len()] = fixed + fixed_tax;
    let d = c.decimals;
    let total = engine::to_minor(energy + energy_tax + fixed + fixed_tax, d);
    let heads = engine::round_parts(&[energy, fixed, energy_tax + fixed_tax], d);
    Ok(Priced {
        total,
        energy_cost: heads[0],
        fixed_charges: heads[1],
        taxes: heads[2],
        per_device: engine::round_parts(&per_device, d),
        per_month: spans
            .iter()
            .map(|s| s.0)
            .zip(engine::round_parts(&per_month, d))
            .collect(),
        decimals: d,
        by_band: labels
            .bands
            .iter()
            .zip(&bands)
            .zip(engine::round_parts(
                &bands.iter().map(|b| b.1).collect::<Vec<_>>(),
                d,
            ))
            .map(|((name, b), m)| (name.clone(), b.0, m))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_split_a_range_at_local_month_starts() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let d = |y, m, day| {
            crate::domain::rollup::local_midnight(
                chrono::NaiveDate::from_ymd_opt(y, m, day).unwrap(),
                tz,
            )
        };
        let m = months(d(2024, 3, 16), d(2024, 5, 2), tz);
        assert_eq!(
            m,
            vec![
                (d(2024, 3, 16), d(2024, 4, 1)),
                (d(2024, 4, 1), d(2024, 5, 1)),
                (d(2024, 5, 1), d(2024, 5, 2))
            ]
        );
    }
}
