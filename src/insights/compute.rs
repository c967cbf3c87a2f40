//! Gathers what the statistics need from the store and the tariff, and puts the report
//! together: buckets of the last 71 local days per device (always-on, unusual days), a week of
//! raw readings (the kind, runs, today's cycles), past days' duty (cached), and the household's
//! priced energy (this billing period and the trailing 14 days).

use super::always_on::{self, AlwaysOn};
use super::cycles::{self, Duty, Levels};
use super::forecast::{self, Ahead, DayCost};
use super::runs::{self, RunRule};
use super::unusual::{self, Day};
use super::{
    CycleInsight, DayCache, DeviceInsight, Forecast, Params, Point, PricedRun, Report, RunInsight,
    classify,
};
use crate::domain::labels::LoadKind;
use crate::domain::rollup::{BUCKET_MS, Period, period_start};
use crate::domain::{Bucket, DeviceId, DeviceType};
use crate::store::{self, DeviceRecord, Store};
use crate::tariff::Versions;
use crate::tariff::engine::{self, Prices};
use chrono::NaiveDate;
use chrono_tz::Tz;

const DAY_MS: i64 = 86_400_000;
const WEEK_MS: i64 = 7 * DAY_MS;
/// Local days of buckets read: 8 reference weeks before the 14 days checked, and today.
const DAYS_BACK: usize = 8 * 7 + 14;
/// Days of duty the drift's baseline takes.
const BASELINE_DAYS: usize = 28;
/// Unusual days are looked for among this many complete days.
const CHECK_DAYS: usize = 14;

/// One local day: date, start and end (UTC ms).
#[derive(Debug, Clone, Copy)]
struct LocalDay {
    date: NaiveDate,
    start: i64,
    end: i64,
}

/// Today and the `n` local days before it, oldest first.
fn local_days(now: i64, tz: Tz, n: usize) -> Vec<LocalDay> {
    let mut start = period_start(now, Period::Day, tz);
    let mut out = vec![day_at(start, tz)];
    for _ in 0..n {
        start = period_start(start - 1, Period::Day, tz);
        out.push(day_at(start, tz));
    }
    out.reverse();
    out
}

fn day_at(start: i64, tz: Tz) -> LocalDay {
    use chrono::TimeZone;
    LocalDay {
        date: tz.timestamp_millis_opt(start).unwrap().date_naive(),
        start,
        end: period_start(start + 26 * 3_600_000, Period::Day, tz),
    }
}

fn money(p: engine::Pico) -> f64 {
    p as f64 / 1e12
}

/// The raw readings of `id` in `[start, end)` that carry power.
fn points(store: &Store, id: &DeviceId, start: i64, end: i64) -> store::Result<Vec<Point>> {
    let mut out = Vec::new();
    for s in store.scan_samples(id, start, end)? {
        let s = s?;
        if let Some(p) = s.power_mw {
            out.push(Point {
                ts_ms: s.ts_ms,
                power_w: p as f64 / 1_000.0,
                energy_wh: s.energy_wh,
            });
        }
    }
    Ok(out)
}

/// The household's priced energy: per device this billing period, per local day all devices.
struct Priced {
    period_mwh: Vec<i64>,
    period_cost: Vec<f64>,
    day_cost: Vec<f64>,
    /// Cost per kWh of everything priced (a fallback price for tiered tariffs).
    mean_price: Option<f64>,
}

fn priced(
    store: &Store,
    v: &Versions,
    ids: &[DeviceId],
    days: &[LocalDay],
    period_start_ms: i64,
    now: i64,
) -> store::Result<Priced> {
    let from = period_start_ms.min(days[days.len() - 1 - forecast::TRAILING_DAYS as usize].start);
    let mut p = Priced {
        period_mwh: vec![0; ids.len()],
        period_cost: vec![0.0; ids.len()],
        day_cost: vec![0.0; days.len()],
        mean_price: None,
    };
    let (mut all_mwh, mut all_cost) = (0i64, 0i128);
    engine::price(store, v, ids, from, now + 1, |piece| {
        let cost = piece.cost + piece.tax;
        all_mwh += piece.mwh;
        all_cost += cost;
        if piece.t >= period_start_ms {
            p.period_mwh[piece.dev] += piece.mwh;
            p.period_cost[piece.dev] += money(cost);
        }
        let k = days.partition_point(|d| d.start <= piece.t);
        if k > 0 {
            p.day_cost[k - 1] += money(cost);
        }
    })?;
    p.mean_price = (all_mwh > 0).then(|| money(all_cost) / (all_mwh as f64 / 1e6));
    Ok(p)
}

/// Complete local days of a device's buckets with their energy: days with at least 90 % of their
/// buckets stored.
fn day_energies(buckets: &[Bucket], days: &[LocalDay]) -> Vec<Day> {
    let mut out = Vec::new();
    let mut i = 0;
    for d in &days[..days.len() - 1] {
        let (mut mwh, mut n) = (0i64, 0i64);
        while i < buckets.len() && buckets[i].start_ms < d.end {
            if buckets[i].start_ms >= d.start {
                mwh += buckets[i].energy_mwh;
                n += 1;
            }
            i += 1;
        }
        let want = (d.end - d.start) / BUCKET_MS;
        if n * 10 >= want * 9 {
            out.push(Day {
                date: d.date,
                kwh: mwh as f64 / 1e6,
                hours: (d.end - d.start) as f64 / 3_600_000.0,
            });
        }
    }
    out
}

/// The duty of each of the `BASELINE_DAYS` complete days before today, from the cache or the
/// raw readings.
fn past_duty(
    store: &Store,
    id: &DeviceId,
    levels: &Levels,
    days: &[LocalDay],
    cache: &mut DayCache,
) -> store::Result<Vec<Duty>> {
    let mut out = Vec::new();
    let past = &days[days.len() - 1 - BASELINE_DAYS..days.len() - 1];
    let key = |d: &LocalDay| {
        (
            id.clone(),
            d.start,
            levels.rise_w().round() as i64,
            levels.fall_w().round() as i64,
        )
    };
    for d in past {
        let duty = match cache.get(&key(d)) {
            Some(x) => *x,
            None => {
                let x = cycles::duty(&points(store, id, d.start, d.end)?, levels);
                cache.insert(key(d), x);
                x
            }
        };
        out.push(duty);
    }
    Ok(out)
}

fn cycle_insight(
    store: &Store,
    id: &DeviceId,
    week: &[Point],
    days: &[LocalDay],
    cache: &mut DayCache,
) -> store::Result<Option<CycleInsight>> {
    let Some(levels) = Levels::learn(week) else {
        return Ok(None);
    };
    let today0 = days[days.len() - 1].start;
    let from = week.partition_point(|p| p.ts_ms < today0);
    let today = cycles::duty(&week[from..], &levels);
    let past = past_duty(store, id, &levels, days, cache)?;
    let recent: Vec<f64> = past[past.len() - 7..]
        .iter()
        .filter(|d| d.observed_ms >= 20 * 3_600_000)
        .map(|d| f64::from(d.cycles))
        .collect();
    Ok(Some(CycleInsight {
        today,
        per_day: super::stats::mean(&recent),
        drift: cycles::drift(&today, &past),
    }))
}

fn run_insight(
    week: &[Point],
    threshold: Option<f64>,
    params: &Params,
    prices: &Prices,
) -> Option<RunInsight> {
    let threshold_w = threshold.or_else(|| runs::learn_threshold(week))?;
    let rule = RunRule {
        threshold_w,
        end_after_ms: params.run_end_ms,
        min_duration_ms: runs::MIN_DURATION_MS,
    };
    let found = runs::runs(week, &rule);
    let span_days = week
        .last()
        .zip(week.first())
        .map_or(0.0, |(l, f)| (l.ts_ms - f.ts_ms) as f64 / DAY_MS as f64);
    let per_week = found.len() as f64 * 7.0 / span_days.clamp(1.0, 7.0);
    let runs = found
        .into_iter()
        .map(|run| {
            let a = week.partition_point(|p| p.ts_ms < run.start_ms);
            let b = week.partition_point(|p| p.ts_ms <= run.end_ms);
            let tail = (b + 1).min(week.len());
            let cost = week[a..tail]
                .iter()
                .map(|p| p.energy_wh as f64 / 1_000.0 * prices.at(p.ts_ms))
                .sum();
            PricedRun { run, cost }
        })
        .collect();
    Some(RunInsight {
        runs,
        per_week,
        threshold_w,
    })
}

/// Everything but the cost of one plug or outlet.
#[allow(clippy::too_many_arguments)]
fn device(
    store: &Store,
    r: &DeviceRecord,
    all: &[DeviceRecord],
    params: &Params,
    days: &[LocalDay],
    now: i64,
    prices: &Prices,
    cache: &mut DayCache,
) -> store::Result<(DeviceInsight, Vec<Day>)> {
    let id = &r.info.device_id;
    let buckets = store.buckets(id, days[0].start, now + 1)?;
    let from = buckets.partition_point(|b| b.start_ms < now - WEEK_MS);
    let always_on = always_on::of(&buckets[from..]);
    let energies = day_energies(&buckets, days);
    let week = points(store, id, now - WEEK_MS, now + 1)?;
    let kind = r
        .labels
        .load_kind
        .unwrap_or_else(|| classify(&week, params.run_end_ms));
    let cycles = match kind {
        LoadKind::Cycling => cycle_insight(store, id, &week, days, cache)?,
        _ => None,
    };
    let runs = match kind {
        LoadKind::Programme => run_insight(&week, r.labels.run_threshold_w, params, prices),
        _ => None,
    };
    let insight = DeviceInsight {
        id: id.clone(),
        name: r.name().to_owned(),
        room: r.room(all).map(str::to_owned),
        device_type: r.info.device_type,
        always_on,
        always_on_cost_per_year: 0.0,
        load_kind: kind,
        kind_set: r.labels.load_kind.is_some(),
        cycles,
        runs,
        unusual: Vec::new(),
        period_kwh: 0.0,
        period_cost: 0.0,
    };
    Ok((insight, energies))
}

/// A strip: the sum of its outlets.
fn strip(
    r: &DeviceRecord,
    all: &[DeviceRecord],
    outlets: &[(DeviceInsight, Vec<Day>)],
) -> (DeviceInsight, Vec<Day>) {
    let mut energies: Vec<Day> = Vec::new();
    let mut a = AlwaysOn {
        watts: 0.0,
        basis_hours: f64::MAX,
    };
    for (o, days) in outlets {
        a.watts += o.always_on.watts;
        a.basis_hours = a.basis_hours.min(o.always_on.basis_hours);
        for d in days {
            match energies.iter_mut().find(|e| e.date == d.date) {
                Some(e) => e.kwh += d.kwh,
                None => energies.push(*d),
            }
        }
    }
    if outlets.is_empty() {
        a.basis_hours = 0.0;
    }
    energies.sort_by_key(|d| d.date);
    let insight = DeviceInsight {
        id: r.info.device_id.clone(),
        name: r.name().to_owned(),
        room: r.room(all).map(str::to_owned),
        device_type: DeviceType::Strip,
        always_on: a,
        always_on_cost_per_year: 0.0,
        load_kind: LoadKind::Steady,
        kind_set: false,
        cycles: None,
        runs: None,
        unusual: Vec::new(),
        period_kwh: outlets.iter().map(|o| o.0.period_kwh).sum(),
        period_cost: outlets.iter().map(|o| o.0.period_cost).sum(),
    };
    (insight, energies)
}

/// The household's insights as of `now` in zone `tz`.
pub fn compute(
    store: &Store,
    v: &Versions,
    params: &Params,
    now: i64,
    tz: Tz,
    cache: &mut DayCache,
) -> store::Result<Report> {
    let all = store.device_records()?;
    let metered: Vec<&DeviceRecord> = all.iter().filter(|r| r.info.has_emeter).collect();
    let leaves: Vec<&DeviceRecord> = metered
        .iter()
        .copied()
        .filter(|r| r.info.device_type != DeviceType::Strip)
        .collect();
    let ids: Vec<DeviceId> = leaves.iter().map(|r| r.info.device_id.clone()).collect();
    let days = local_days(now, tz, DAYS_BACK);
    let tariff = v.at(now);
    let (p_start, p_end) = {
        let s = tariff.billing_start(now);
        (s, tariff.billing_end(s))
    };
    let money_of = priced(store, v, &ids, &days, p_start, now)?;
    let price = engine::constant_load_price(v, now, now + WEEK_MS)
        .or(money_of.mean_price)
        .unwrap_or(0.0);
    let prices = engine::prices(store, v, &ids, now - WEEK_MS, now + 1)?;
    let mut done: Vec<(DeviceInsight, Vec<Day>)> = Vec::new();
    for (k, r) in leaves.iter().enumerate() {
        let (mut d, e) = device(store, r, &all, params, &days, now, &prices, cache)?;
        d.period_kwh = money_of.period_mwh[k] as f64 / 1e6;
        d.period_cost = money_of.period_cost[k];
        done.push((d, e));
    }
    let check: Vec<NaiveDate> = days[days.len() - 1 - CHECK_DAYS..days.len() - 1]
        .iter()
        .map(|d| d.date)
        .collect();
    let mut devices = Vec::with_capacity(metered.len());
    for r in &metered {
        let (mut d, energies) = if r.info.device_type == DeviceType::Strip {
            let outlets: Vec<(DeviceInsight, Vec<Day>)> = done
                .iter()
                .filter(|(o, _)| {
                    leaves.iter().any(|l| {
                        l.info.device_id == o.id
                            && l.info.parent_id.as_ref() == Some(&r.info.device_id)
                    })
                })
                .cloned()
                .collect();
            strip(r, &all, &outlets)
        } else {
            done.iter()
                .find(|(o, _)| o.id == r.info.device_id)
                .cloned()
                .expect("every leaf is computed")
        };
        d.always_on_cost_per_year = d.always_on.kwh_per_year() * price;
        d.unusual = unusual::unusual(&energies, &check, &params.unusual);
        devices.push(d);
    }
    let always_on_total_w: f64 = done.iter().map(|(d, _)| d.always_on.watts).sum();
    let today = &days[days.len() - 1];
    let trailing = &days[days.len() - 1 - forecast::TRAILING_DAYS as usize..days.len() - 1];
    let past: Vec<DayCost> = trailing
        .iter()
        .zip(&money_of.day_cost[days.len() - 1 - trailing.len()..days.len() - 1])
        .map(|(d, c)| DayCost {
            date: d.date,
            cost: *c,
        })
        .collect();
    let cost_so_far: f64 = money_of.period_cost.iter().sum();
    let mut ahead = Ahead {
        today: (today.date, forecast::day_left(now, tz)),
        days: Vec::new(),
    };
    let mut next = today.end;
    while next < p_end {
        let d = day_at(next, tz);
        ahead.days.push(d.date);
        next = d.end;
    }
    let period_days: Vec<DayCost> = days
        .iter()
        .zip(&money_of.day_cost)
        .filter(|(d, _)| d.end > p_start)
        .map(|(d, c)| DayCost {
            date: d.date,
            cost: *c,
        })
        .collect();
    Ok(Report {
        computed_ms: now,
        currency: tariff.source.currency.clone(),
        devices,
        always_on_total_w,
        always_on_total_cost_per_year: always_on_total_w * always_on::HOURS_PER_YEAR / 1_000.0
            * price,
        forecast: Forecast {
            period_start_ms: p_start,
            period_end_ms: p_end,
            cost_so_far,
            projection: forecast::project(cost_so_far, &past, &ahead),
            budget: params.budget,
            days: period_days,
        },
    })
}
