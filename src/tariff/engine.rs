//! The cost engine: every device's energy in every 15-minute bucket, priced by the tariff
//! version in force at the bucket's start, in the tariff's zone.
//!
//! - Flat and time-of-use rates price each bucket on its own (holidays count as Sundays).
//! - Tiered rates price the household: the buckets of all devices are summed, the billing
//!   month's running total decides the tier (a bucket that crosses a bound is split), and
//!   each part is shared back to the devices in proportion to their energy in that bucket.
//! - Money is exact: energy in mWh times price in micro-units per kWh gives pico-units
//!   ([`Pico`], `i128`); shares are apportioned by largest remainder so parts always sum to
//!   their whole, and rounding to the currency's decimals happens once, at the end
//!   ([`round_parts`] keeps rounded rows summing to the rounded total).
//! - Fixed charges are per household, prorated by the share of each day or billing period
//!   inside the range, reported apart from the devices; taxes apply to both.

use super::{Compiled, Micro, Model, Per, Versions};
use crate::domain::DeviceId;
use crate::localtime::TzCache;
use crate::store::{self, Store};
use chrono::NaiveDate;
use std::collections::HashMap;

/// Money in 10⁻¹² currency units.
pub type Pico = i128;

const BUCKET_MS: i64 = 900_000;

/// A device's energy in one bucket (or the part of it in one tier), priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Bucket start, UTC ms.
    pub t: i64,
    /// Device index (in the list given to [`price`]).
    pub dev: usize,
    /// Time-of-use band ([`Labels::bands`] index).
    pub band: usize,
    /// Tier ([`Labels::tiers`] index; 0 = not tiered).
    pub tier: usize,
    /// Energy, mWh.
    pub mwh: i64,
    /// Energy cost before taxes.
    pub cost: Pico,
    /// Taxes on it.
    pub tax: Pico,
}

/// Names of the bands and tiers pieces refer to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Labels {
    /// Band names (`flat`, `peak`, a season's name …).
    pub bands: Vec<String>,
    /// Tier names; index 0 is "not tiered".
    pub tiers: Vec<String>,
}

impl Labels {
    fn band(&mut self, name: &str) -> usize {
        match self.bands.iter().position(|b| b == name) {
            Some(i) => i,
            None => {
                self.bands.push(name.to_owned());
                self.bands.len() - 1
            }
        }
    }

    fn tier(&mut self, k: usize, bounds: &[(Option<i64>, Micro)]) -> usize {
        let kwh = |mwh: i64| super::micro_text(mwh);
        let name = match (k.checked_sub(1).map(|p| bounds[p].0), bounds[k].0) {
            (None, Some(b)) => format!("tier 1 (up to {} kWh)", kwh(b)),
            (Some(Some(a)), Some(b)) => format!("tier {} ({}–{} kWh)", k + 1, kwh(a), kwh(b)),
            (Some(Some(a)), None) => format!("tier {} (above {} kWh)", k + 1, kwh(a)),
            _ => format!("tier {}", k + 1),
        };
        if self.tiers.is_empty() {
            self.tiers.push("not tiered".into());
        }
        match self.tiers.iter().position(|b| *b == name) {
            Some(i) => i,
            None => {
                self.tiers.push(name);
                self.tiers.len() - 1
            }
        }
    }
}

/// `total` shared in proportion to `weights` (non-negative), exactly: floors first, then the
/// remainder one unit at a time to the largest fractional parts.
pub fn apportion(total: i128, weights: &[i128]) -> Vec<i128> {
    let sum: i128 = weights.iter().sum();
    if sum <= 0 {
        let mut out = vec![0; weights.len()];
        if let Some(first) = out.first_mut() {
            *first = total;
        }
        return out;
    }
    let mut out: Vec<i128> = weights.iter().map(|w| total * w / sum).collect();
    let mut left = total - out.iter().sum::<i128>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse((total * weights[i]).rem_euclid(sum)));
    for i in order {
        if left == 0 {
            break;
        }
        out[i] += left.signum();
        left -= left.signum();
    }
    out
}

/// Pico-units per minor unit of a currency with `decimals`.
fn unit(decimals: u8) -> i128 {
    10i128.pow(12 - u32::from(decimals))
}

/// `p` rounded to minor units (half away from zero).
pub fn to_minor(p: Pico, decimals: u8) -> i64 {
    let u = unit(decimals);
    let r = (p.abs() + u / 2) / u;
    (if p < 0 { -r } else { r }) as i64
}

/// Rounds `parts` to minor units so that they sum to their rounded total.
pub fn round_parts(parts: &[Pico], decimals: u8) -> Vec<i64> {
    let total = to_minor(parts.iter().sum(), decimals);
    let u = unit(decimals);
    let floors: Vec<i128> = parts.iter().map(|p| p.div_euclid(u)).collect();
    let mut left = i128::from(total) - floors.iter().sum::<i128>();
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(parts[i].rem_euclid(u)));
    let mut out = floors;
    for i in order {
        if left <= 0 {
            break;
        }
        out[i] += 1;
        left -= 1;
    }
    out.into_iter().map(|x| x as i64).collect()
}

/// Minor units as a number for display.
pub fn minor_value(m: i64, decimals: u8) -> f64 {
    m as f64 / 10f64.powi(i32::from(decimals))
}

fn tax_of(cost: Pico, ppm: i64) -> Pico {
    (cost * i128::from(ppm) + 500_000) / 1_000_000
}

/// Local date of a [`TzCache`] day number.
fn date_of(day: i64) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(day as i32 + 719_163).unwrap_or_default()
}

/// What the rates say about the bucket at `t`.
enum Rate<'a> {
    /// A band (name) and its price.
    Price(&'a str, Micro),
    /// Tiers (band name, tiers).
    Tiers(&'a str, &'a [(Option<i64>, Micro)]),
}

/// Price series by name, for dynamic rates: the intervals of the range being priced.
pub type Series = HashMap<String, Vec<crate::store::prices::PricePoint>>;

/// Band name of a dynamic bucket priced from its series.
pub const DYNAMIC: &str = "dynamic";
/// Band name of a dynamic bucket its series has no price for, priced at the fallback.
pub const FALLBACK: &str = "fallback price";
/// Band name of a dynamic bucket without a price and without a fallback (priced 0).
pub const MISSING: &str = "missing price";

/// The series the versions in force in `[start, end)` read, loaded from the store.
pub fn series_of(store: &Store, v: &Versions, start: i64, end: i64) -> store::Result<Series> {
    let mut out = Series::new();
    for (c, a, b) in v.spans(start, end) {
        for name in c.series() {
            let pts = store.price_points(name, a, b)?;
            out.entry(name.to_owned()).or_default().extend(pts);
        }
    }
    for pts in out.values_mut() {
        pts.sort_by_key(|p| p.start_ms);
        pts.dedup_by_key(|p| p.start_ms);
    }
    Ok(out)
}

/// The price of series `name` for the bucket starting at `t`.
fn series_price(series: &Series, name: &str, t: i64) -> Option<Micro> {
    let pts = series.get(name)?;
    let i = pts.partition_point(|p| p.start_ms <= t).checked_sub(1)?;
    (pts[i].end_ms > t).then_some(pts[i].micro)
}

/// The rate of version `c` for the bucket starting at `t`.
fn rate_at<'a>(c: &'a Compiled, tzc: &mut TzCache, t: i64, series: &Series) -> Rate<'a> {
    let l = tzc.local(t);
    let date = date_of(l.day);
    let (model, season) = c.model_on(date);
    match model {
        Model::Flat(p) => Rate::Price(season.unwrap_or("flat"), *p),
        Model::Tou(bands, dname, dp) => {
            let today = c.weekday(date);
            let yesterday = date.pred_opt().map_or(today, |d| c.weekday(d));
            match bands.iter().find(|b| b.holds(today, yesterday, l.minute)) {
                Some(b) => Rate::Price(&b.name, b.price),
                None => Rate::Price(dname, *dp),
            }
        }
        Model::Tiered(tiers) => Rate::Tiers(season.unwrap_or("tiered"), tiers),
        Model::Dynamic(name, markup, fallback) => match (series_price(series, name, t), fallback) {
            (Some(p), _) => Rate::Price(DYNAMIC, p + markup),
            (None, Some(f)) => Rate::Price(FALLBACK, *f),
            (None, None) => Rate::Price(MISSING, 0),
        },
    }
}

/// Prices the energy of `devices` (every device of the household: tiers count them all) in
/// `[start, end)`, calling `emit` for each piece in time order.
pub fn price(
    store: &Store,
    v: &Versions,
    devices: &[DeviceId],
    start: i64,
    end: i64,
    mut emit: impl FnMut(&Piece),
) -> store::Result<Labels> {
    let tiered = v.spans(start, end).iter().any(|(c, _, _)| c.has_tiers());
    // Tiers need the billing month's energy before the range too.
    let from = if tiered {
        v.at(start).billing_start(start).min(start)
    } else {
        start
    };
    let series = series_of(store, v, from, end)?;
    let mut all: Vec<(i64, usize, i64)> = Vec::new();
    for (k, id) in devices.iter().enumerate() {
        for b in store.scan_buckets(id, from, end)? {
            let b = b?;
            if b.energy_mwh != 0 {
                all.push((b.start_ms, k, b.energy_mwh));
            }
        }
    }
    all.sort_unstable();
    let mut labels = Labels::default();
    let mut caches: HashMap<usize, TzCache> = HashMap::new();
    let mut month = (i64::MIN, 0i64); // billing period start, household mWh so far
    let mut i = 0;
    while i < all.len() {
        let t = all[i].0;
        let j = i + all[i..].iter().take_while(|x| x.0 == t).count();
        let group = &all[i..j];
        i = j;
        let vi = v.index_at(t);
        let c = &v.0[vi];
        let tzc = caches.entry(vi).or_insert_with(|| TzCache::new(c.tz));
        match rate_at(c, tzc, t, &series) {
            Rate::Price(band_name, p) => {
                let band = labels.band(band_name);
                if t < start {
                    continue;
                }
                for &(_, dev, mwh) in group {
                    let cost = i128::from(mwh) * i128::from(p);
                    emit(&Piece {
                        t,
                        dev,
                        band,
                        tier: 0,
                        mwh,
                        cost,
                        tax: tax_of(cost, c.tax_ppm),
                    });
                }
            }
            Rate::Tiers(band_name, tiers) => {
                let band = labels.band(band_name);
                let key = c.billing_start(t);
                if key != month.0 {
                    month = (key, 0);
                }
                let weights: Vec<i128> = group.iter().map(|g| i128::from(g.2)).collect();
                let mut left: i64 = group.iter().map(|g| g.2).sum();
                // Parts are shared by their running sum, so that each device's parts add up
                // to exactly its own energy in the bucket.
                let (mut taken, mut before) = (0i128, vec![0i128; group.len()]);
                let mut k = tiers
                    .iter()
                    .position(|(b, _)| b.is_none_or(|b| month.1 < b))
                    .unwrap_or(tiers.len() - 1);
                while left > 0 {
                    let (bound, p) = tiers[k];
                    let take = bound.map_or(left, |b| left.min(b - month.1).max(0));
                    if take > 0 {
                        taken += i128::from(take);
                        let upto = apportion(taken, &weights);
                        let shares: Vec<i128> =
                            upto.iter().zip(&before).map(|(u, b)| u - b).collect();
                        before = upto;
                        let tier = labels.tier(k, tiers);
                        for (g, share) in group.iter().zip(shares) {
                            if t < start {
                                break;
                            }
                            let cost = share * i128::from(p);
                            emit(&Piece {
                                t,
                                dev: g.1,
                                band,
                                tier,
                                mwh: share as i64,
                                cost,
                                tax: tax_of(cost, c.tax_ppm),
                            });
                        }
                    }
                    month.1 += take;
                    left -= take;
                    if left > 0 {
                        k = (k + 1).min(tiers.len() - 1);
                    }
                }
            }
        }
    }
    if labels.tiers.is_empty() {
        labels.tiers.push("not tiered".into());
    }
    Ok(labels)
}

/// A fixed charge over a range.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedLine {
    /// Name.
    pub name: String,
    /// Per day or per billing period.
    pub per: Per,
    /// Days or billing periods covered (fractions for partial ones).
    pub quantity: f64,
    /// Amount before taxes.
    pub cost: Pico,
    /// Taxes on it.
    pub tax: Pico,
}

/// The fixed charges of `[start, end)`: each day or billing period counts in proportion to
/// the share of it inside the range, at the version in force then.
pub fn fixed(v: &Versions, start: i64, end: i64) -> Vec<FixedLine> {
    let mut out: Vec<FixedLine> = Vec::new();
    for (c, a, b) in v.spans(start, end) {
        for (name, per, amount) in &c.fixed {
            let mut p0 = match per {
                Per::Day => {
                    crate::domain::rollup::period_start(a, crate::domain::rollup::Period::Day, c.tz)
                }
                Per::Month => c.billing_start(a),
            };
            let (mut cost, mut quantity) = (0i128, 0.0);
            while p0 < b {
                let p1 = match per {
                    Per::Day => crate::domain::rollup::period_end(
                        p0,
                        crate::domain::rollup::Period::Day,
                        c.tz,
                    ),
                    Per::Month => c.billing_end(p0),
                };
                let inside = i128::from(b.min(p1) - a.max(p0));
                let len = i128::from(p1 - p0);
                // micro → pico is × 10⁶.
                cost += (i128::from(*amount) * 1_000_000 * inside + len / 2) / len;
                quantity += inside as f64 / len as f64;
                p0 = p1;
            }
            let tax = tax_of(cost, c.tax_ppm);
            match out.iter_mut().find(|l| l.name == *name && l.per == *per) {
                Some(l) => {
                    l.cost += cost;
                    l.tax += tax;
                    l.quantity += quantity;
                }
                None => out.push(FixedLine {
                    name: name.clone(),
                    per: *per,
                    quantity,
                    cost,
                    tax,
                }),
            }
        }
    }
    out
}

/// The price of a kWh with taxes, per bucket, for device_data `cost`.
#[derive(Debug, Clone, PartialEq)]
pub enum Prices {
    /// One price over the whole range.
    Const(f64),
    /// The price of every bucket from the one starting at `t0`.
    Table {
        /// First bucket start, UTC ms.
        t0: i64,
        /// One price per bucket.
        prices: Vec<f64>,
    },
}

impl Prices {
    /// The price of the bucket holding `ts_ms`.
    pub fn at(&self, ts_ms: i64) -> f64 {
        match self {
            Prices::Const(p) => *p,
            Prices::Table { t0, prices } => usize::try_from((ts_ms - t0).div_euclid(BUCKET_MS))
                .ok()
                .and_then(|i| prices.get(i))
                .copied()
                .unwrap_or(0.0),
        }
    }
}

fn with_tax(p: Micro, ppm: i64) -> f64 {
    p as f64 / 1e6 * (1.0 + ppm as f64 / 1e6)
}

/// The price of a kWh with taxes when one flat version covers `[start, end)`.
pub fn constant(v: &Versions, start: i64, end: i64) -> Option<f64> {
    match v.spans(start, end)[..] {
        [(c, _, _)] => match (&c.base, c.seasons.is_empty()) {
            (Model::Flat(p), true) => Some(with_tax(*p, c.tax_ppm)),
            _ => None,
        },
        _ => None,
    }
}

/// The mean price of a kWh with taxes that a constant load pays over `[start, end)`, bucket by
/// bucket (time-of-use bands weighted by their hours); `None` where tiers price a bucket, as
/// their price depends on the whole household's month.
pub fn constant_load_price(v: &Versions, start: i64, end: i64) -> Option<f64> {
    if v.spans(start, end)
        .iter()
        .any(|(c, _, _)| !c.series().is_empty())
    {
        return None;
    }
    let no_series = Series::new();
    let mut caches: HashMap<usize, TzCache> = HashMap::new();
    let (mut sum, mut n) = (0.0f64, 0u32);
    let mut t = start - start.rem_euclid(BUCKET_MS);
    while t < end {
        let vi = v.index_at(t);
        let c = &v.0[vi];
        let tzc = caches.entry(vi).or_insert_with(|| TzCache::new(c.tz));
        match rate_at(c, tzc, t, &no_series) {
            Rate::Price(_, p) => sum += with_tax(p, c.tax_ppm),
            Rate::Tiers(..) => return None,
        }
        n += 1;
        t += BUCKET_MS;
    }
    (n > 0).then(|| sum / f64::from(n))
}

/// Prices of `[start, end)`: constant for one flat version; otherwise per bucket (tiered
/// buckets at the household's effective price of that bucket).
pub fn prices(
    store: &Store,
    v: &Versions,
    devices: &[DeviceId],
    start: i64,
    end: i64,
) -> store::Result<Prices> {
    if let Some(p) = constant(v, start, end) {
        return Ok(Prices::Const(p));
    }
    let spans = v.spans(start, end);
    // From the bucket before the range: a reading at its start used energy in that one.
    let t0 = start - start.rem_euclid(BUCKET_MS) - BUCKET_MS;
    let series = series_of(store, v, t0, end)?;
    let mut table = Vec::new();
    let mut caches: HashMap<usize, TzCache> = HashMap::new();
    let mut t = t0;
    while t < end {
        let vi = v.index_at(t);
        let c = &v.0[vi];
        let tzc = caches.entry(vi).or_insert_with(|| TzCache::new(c.tz));
        table.push(match rate_at(c, tzc, t, &series) {
            Rate::Price(_, p) => with_tax(p, c.tax_ppm),
            // Replaced below where the household used energy.
            Rate::Tiers(_, tiers) => with_tax(tiers[0].1, c.tax_ppm),
        });
        t += BUCKET_MS;
    }
    if spans.iter().any(|(c, _, _)| c.has_tiers()) {
        let mut sums: HashMap<i64, (Pico, i64)> = HashMap::new();
        price(store, v, devices, t0, end, |p| {
            if p.tier > 0 {
                let s = sums.entry(p.t).or_default();
                s.0 += p.cost + p.tax;
                s.1 += p.mwh;
            }
        })?;
        for (t, (cost, mwh)) in sums {
            let i = usize::try_from((t - t0) / BUCKET_MS).unwrap_or(usize::MAX);
            if let (true, Some(slot)) = (mwh > 0, table.get_mut(i)) {
                // pico per mWh = 10⁻¹² / 10⁻⁶ kWh: × 10⁻⁶ per kWh.
                *slot = cost as f64 / mwh as f64 / 1e6;
            }
        }
    }
    Ok(Prices::Table { t0, prices: table })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apportioned_shares_sum_to_the_whole() {
        let s = apportion(100, &[1, 1, 1]);
        assert_eq!(s.iter().sum::<i128>(), 100);
        assert_eq!(s, vec![34, 33, 33]);
        assert_eq!(apportion(7, &[0, 0]), vec![7, 0]);
        assert_eq!(apportion(10, &[2, 1]), vec![7, 3]);
    }

    #[test]
    fn rounded_parts_sum_to_the_rounded_total() {
        let third = 1_000_000_000_000i128 / 3; // 0.333… units
        let parts = [third, third, third];
        let r = round_parts(&parts, 2);
        assert_eq!(r.iter().sum::<i64>(), to_minor(parts.iter().sum(), 2));
        assert_eq!(r.iter().sum::<i64>(), 100);
        assert_eq!(to_minor(5_000_000_000, 2), 1); // 0.005 rounds up
        assert_eq!(to_minor(-5_000_000_000, 2), -1);
    }

    #[test]
    fn a_constant_load_pays_the_hour_weighted_price() {
        let t = |v: serde_json::Value| -> Versions {
            Versions::compile(&[serde_json::from_value(v).unwrap()], chrono_tz::Tz::UTC).unwrap()
        };
        let tou = t(serde_json::json!({"rates": {"type": "time_of_use",
            "default_price_per_kwh": 0.1, "periods": [{"name": "night", "start": "22:00",
            "end": "06:00", "price_per_kwh": 0.05}]}, "taxes": [{"name": "vat", "percent": 10}]}));
        let week = 7 * 86_400_000;
        let p = constant_load_price(&tou, 1_704_067_200_000, 1_704_067_200_000 + week).unwrap();
        assert!(
            (p - (16.0 * 0.1 + 8.0 * 0.05) / 24.0 * 1.1).abs() < 1e-12,
            "{p}"
        );
        let tiers = t(serde_json::json!({"rates": {"type": "tiered",
            "tiers": [{"up_to_kwh": 100, "price_per_kwh": 0.1}, {"price_per_kwh": 0.2}]}}));
        assert_eq!(constant_load_price(&tiers, 0, week), None);
    }
}
