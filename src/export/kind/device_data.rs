//! device_data rows from the store, streamed: per device, raw readings (or, for aggregated
//! exports, the stored 15-minute buckets) become sub-rows; filters drop sub-rows; aggregation
//! folds them into local hours, days, weeks or months; the devices' streams are merged by
//! time. Memory is O(devices), whatever the range.
//!
//! Rules (documented in the README):
//! - Raw exports have one row per reading; `energy_kwh` and `cost` are the energy of the
//!   interval since the previous reading, from the device's counter.
//! - Aggregated exports are built from the 15-minute buckets, so energy across gaps is spread
//!   exactly as the rollups spread it. Filters then apply per bucket (its mean power, whether
//!   the relay was on in it, its local start time); `first`/`last` take the first/last bucket.
//! - `exclude_outliers` drops rows whose power lies more than 3 standard deviations from
//!   that device's mean power over the rows the other filters kept (z-score, two passes).

use crate::config::Exports;
use crate::domain::Bucket;
use crate::domain::provenance::{Source, Unmeasured};
use crate::domain::rollup::Period;
use crate::domain::rollup::period_start;
use crate::export::fields::{Agg, ENERGY, IS_ON, POWER};
use crate::export::fields::{
    Custom, Field, VALUE_FIELDS, default_field_names, known_field_names, parse_customs,
};
use crate::export::filters::{Filters, parse_filters};
use crate::export::format::Cell;
use crate::export::formula::RowCtx;
use crate::export::plan::Plan;
use crate::export::report::{Chart, ChartKind, V};
use crate::export::request::{CreateRequest, RequestError, bad};
use crate::localtime::TzCache;
use crate::numfmt::round_to;
use crate::store::codec::Sample;
use crate::store::{self, Store};
use crate::tariff::engine::Prices;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a device_data export asks: its columns, aggregation, filters and custom fields.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DataPlan {
    /// Columns.
    pub fields: Vec<Field>,
    /// `None` = raw readings.
    pub aggregation: Option<Period>,
    /// Name as requested (`raw`, `hourly`, …).
    pub aggregation_name: String,
    /// Function per value field.
    pub functions: [Agg; NV],
    /// Filters.
    pub filters: Filters,
    /// Row formulas (extra columns).
    pub row_fields: Vec<Custom>,
    /// Aggregate formulas (summary).
    pub aggregate_fields: Vec<Custom>,
    /// `ha_statistics`: the statistic ids' prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_prefix: Option<String>,
}

/// Validates the device_data part of a body.
pub fn plan(req: &CreateRequest, limits: &Exports) -> Result<DataPlan, RequestError> {
    let fields: Vec<Field> = match &req.fields {
        None => default_field_names()
            .iter()
            .filter_map(|f| Field::parse(f))
            .collect(),
        Some(list) if list.is_empty() => return Err(bad("fields: list at least one field")),
        Some(list) => list
            .iter()
            .map(|f| {
                Field::parse(f).ok_or_else(|| {
                    bad(format!(
                        "fields: unknown field {f:?}; known fields: {}",
                        known_field_names().join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let agg_name = req.aggregation.clone().unwrap_or_else(|| "raw".into());
    let aggregation = match agg_name.as_str() {
        "raw" => None,
        "15m" | "quarter_hourly" => Some(Period::Quarter),
        "hourly" => Some(Period::Hour),
        "daily" => Some(Period::Day),
        "weekly" => Some(Period::Week),
        "monthly" => Some(Period::Month),
        other => {
            return Err(bad(format!(
                "aggregation must be raw, 15m, hourly, daily, weekly or monthly; got {other:?}"
            )));
        }
    };
    if aggregation.is_none() && fields.contains(&Field::MeasuredShare) {
        return Err(bad(
            "fields: measured_share applies to aggregated rows; choose an aggregation or use quality",
        ));
    }
    let mut functions = VALUE_FIELDS.map(|f| f.default_agg);
    for (field, func) in req.aggregation_functions.iter().flatten() {
        let i = VALUE_FIELDS
            .iter()
            .position(|f| f.name == field)
            .ok_or_else(|| {
                bad(format!(
                    "aggregation_functions: {field:?} is not a numeric field ({})",
                    VALUE_FIELDS.map(|f| f.name).join(", ")
                ))
            })?;
        functions[i] = Agg::parse(func).ok_or_else(|| {
            bad(format!(
                "aggregation_functions.{field}: use average, sum, min, max, first, last or count; got {func:?}"
            ))
        })?;
    }
    let filters = parse_filters(req.filters.as_ref())?;
    let (row_fields, aggregate_fields) = parse_customs(
        req.custom_fields.as_ref(),
        &known_field_names(),
        limits.max_custom_fields,
    )?;
    let ha_prefix = req
        .options
        .as_ref()
        .and_then(|o| o.ha_statistic_prefix.clone());
    if ha_prefix
        .as_deref()
        .is_some_and(|p| !crate::export::format::ha_statistics::prefix_ok(p))
    {
        return Err(bad(
            "options.ha_statistic_prefix: 1 to 64 lower-case letters, digits and single '_' between them",
        ));
    }
    let wants = |name: &str| fields.iter().any(|f| f.name() == name);
    if req.format == "ha_statistics"
        && req.fields.is_some()
        && wants("energy_kwh")
        && wants("power_w")
    {
        return Err(bad(
            "format ha_statistics holds one kind of statistic (Home Assistant refuses sum beside mean): fields [\"energy_kwh\"] or [\"power_w\"], one export each",
        ));
    }
    if req.format == "ha_statistics" && !matches!(aggregation, None | Some(Period::Hour)) {
        return Err(bad(
            "format ha_statistics is hourly: leave aggregation out or say hourly",
        ));
    }
    Ok(DataPlan {
        ha_prefix,
        fields,
        aggregation,
        aggregation_name: agg_name,
        functions,
        filters,
        row_fields,
        aggregate_fields,
    })
}

/// The price of a kWh per bucket over the plan's range: one constant when one flat price
/// covers it, else read from the tariff versions bucket by bucket.
pub fn prices(store: &Store, plan: &Plan) -> store::Result<std::sync::Arc<Prices>> {
    if !plan.price_per_kwh.is_nan() || !matches!(plan.kind, super::KindPlan::DeviceData(_)) {
        return Ok(std::sync::Arc::new(Prices::Const(plan.price_per_kwh)));
    }
    let ids: Vec<_> = store
        .device_records()?
        .iter()
        .map(|d| d.info.device_id.clone())
        .collect();
    let prices =
        crate::tariff::engine::prices(store, &plan.tariffs, &ids, plan.start_ms, plan.end_ms)?;
    Ok(std::sync::Arc::new(prices))
}

/// The column names: the fields, then the per-row custom fields.
pub fn columns(data: &DataPlan) -> Vec<String> {
    data.fields
        .iter()
        .map(|f| f.name().to_owned())
        .chain(data.row_fields.iter().map(|c| c.name.clone()))
        .collect()
}

/// The device_data part of the metadata: aggregation, columns with units and functions,
/// custom fields.
pub fn metadata(data: &DataPlan) -> Value {
    let mut units = Map::new();
    let mut functions = Map::new();
    for f in &data.fields {
        if let Field::Value(i) = f {
            units.insert(VALUE_FIELDS[*i].name.into(), json!(VALUE_FIELDS[*i].unit));
            if data.aggregation.is_some() {
                functions.insert(
                    VALUE_FIELDS[*i].name.into(),
                    json!(data.functions[*i].name()),
                );
            }
        }
    }
    let custom: Vec<Value> = data
        .row_fields
        .iter()
        .chain(&data.aggregate_fields)
        .map(|c| json!({"name": c.name, "formula": c.text, "unit": c.unit, "aggregate": c.formula.is_aggregate()}))
        .collect();
    let mut m = json!({
        "aggregation": data.aggregation_name,
        "fields": columns(data),
        "units": units,
        "custom_fields": custom,
    });
    if data.aggregation.is_some() {
        m["aggregation_functions"] = Value::Object(functions);
    }
    m
}

/// A device_data export being rendered: its plan, its kind's part, and the prices read for it.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// Its device_data part.
    pub data: &'a DataPlan,
    /// The price of a kWh per bucket.
    pub prices: &'a Prices,
}

/// Number of numeric fields ([`crate::export::fields::VALUE_FIELDS`]).
pub const NV: usize = 7;
const COST: usize = 4;
const VOLTAGE: usize = 2;
const CURRENT: usize = 3;
const TOTAL: usize = 5;

/// One field of a sub-row: its value (mean) and what aggregation needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Val {
    /// Value (mean over the samples of a bucket).
    pub mean: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Sum of samples.
    pub sum: f64,
    /// Number of samples.
    pub n: f64,
}

impl Val {
    fn one(v: f64) -> Self {
        Self {
            mean: v,
            min: v,
            max: v,
            sum: v,
            n: 1.0,
        }
    }
}

/// One 15-minute bucket of one device, as aggregation consumes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sub {
    /// Bucket start, UTC ms.
    pub ts_ms: i64,
    /// Device index in the plan.
    pub dev: usize,
    /// Fields by [`crate::export::fields::VALUE_FIELDS`] index.
    pub vals: [Option<Val>; NV],
    /// Energy of the bucket, mWh, and the part of it not measured.
    pub provenance: (i64, Unmeasured),
}

/// An output row in display units, unrounded. Missing values are NaN inside (half the size of
/// `Option<f64>`: rows are moved between threads a million times per export).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Reading time or period start, UTC ms.
    pub ts_ms: i64,
    /// Device index in the plan.
    pub dev: usize,
    vals: [f64; NV],
    quality: Quality,
}

/// A row's provenance, small (rows are moved a million times): its quality and, for
/// aggregated rows, the measured share of its energy.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Quality {
    name: &'static str,
    share: f32,
}

impl Row {
    /// A row from optional values by [`crate::export::fields::VALUE_FIELDS`] index.
    pub fn new(ts_ms: i64, dev: usize, vals: [Option<f64>; NV]) -> Self {
        Self {
            ts_ms,
            dev,
            vals: vals.map(|v| v.filter(|x| !x.is_nan()).unwrap_or(f64::NAN)),
            quality: Quality {
                name: Source::Measured.name(),
                share: f32::NAN,
            },
        }
    }

    /// The row with the provenance of its energy: a reading's source, or an aggregated
    /// row's quality and measured share.
    fn with_quality(mut self, energy_mwh: i64, u: &Unmeasured, aggregated: bool) -> Self {
        self.quality = match (aggregated, u.single()) {
            (false, Some(s)) => Quality {
                name: s.name(),
                share: f32::NAN,
            },
            _ => Quality {
                name: u.quality(),
                share: u.measured_share(energy_mwh) as f32,
            },
        };
        self
    }

    /// Field `i` ([`crate::export::fields::VALUE_FIELDS`] index), if present.
    pub fn get(&self, i: usize) -> Option<f64> {
        let v = self.vals[i];
        (!v.is_nan()).then_some(v)
    }
}

fn raw_row(g: &Sample, dev: usize, price: f64) -> Row {
    let metered = g.power_mw.is_some() || g.counter_wh.is_some();
    let milli = |v: Option<i64>| v.map(|x| x as f64 / 1000.0);
    let energy = metered.then(|| g.energy_wh as f64 / 1000.0);
    let row = Row::new(
        g.ts_ms,
        dev,
        [
            milli(g.power_mw),
            energy,
            milli(g.voltage_mv),
            milli(g.current_ma),
            energy.map(|e| e * price),
            milli(g.counter_wh),
            Some(if g.relay_on { 1.0 } else { 0.0 }),
        ],
    );
    if !g.imported {
        return row;
    }
    let mut u = Unmeasured::default();
    u.add(Source::Imported, g.energy_wh * 1000);
    row.with_quality(g.energy_wh * 1000, &u, false)
}

fn bucket_sub(b: &Bucket, dev: usize, price: f64) -> Sub {
    let n = f64::from(b.meter_samples);
    let stat = |s: &crate::domain::rollup::Stat| {
        (b.meter_samples > 0).then(|| Val {
            mean: s.sum as f64 / n / 1000.0,
            min: s.min as f64 / 1000.0,
            max: s.max as f64 / 1000.0,
            sum: s.sum as f64 / 1000.0,
            n,
        })
    };
    let metered = b.meter_samples > 0 || b.energy_mwh != 0 || b.counter_last_wh >= 0;
    let energy = metered.then(|| b.energy_mwh as f64 / 1_000_000.0);
    Sub {
        ts_ms: b.start_ms,
        dev,
        vals: [
            stat(&b.power),
            energy.map(Val::one),
            stat(&b.voltage),
            stat(&b.current),
            energy.map(|e| Val::one(e * price)),
            (b.counter_last_wh >= 0).then(|| Val::one(b.counter_last_wh as f64 / 1000.0)),
            Some(Val::one(if b.on_ms > 0 { 1.0 } else { 0.0 })),
        ],
        provenance: (b.energy_mwh, b.unmeasured),
    }
}

/// The plan's filters as one predicate over (time, power, relay state).
fn keeper(run: Run<'_>) -> impl FnMut(i64, Option<f64>, bool) -> bool + Send + '_ {
    let f = &run.data.filters;
    let mut tzc = f.has_time().then(|| TzCache::new(run.plan.tz));
    move |ts, power, on| {
        f.value_ok(power, on)
            && tzc.as_mut().is_none_or(|c| {
                let l = c.local(ts);
                f.time_ok(l.minute, l.weekday)
            })
    }
}

type Stream<'a, T> = Box<dyn Iterator<Item = store::Result<T>> + Send + 'a>;

/// Ends a store scan once `cancel` is set (checked every 1024 items, filtered or not), so a
/// deleted export or a stopping daemon never waits for a long scan.
struct Cancellable<'a, I> {
    inner: I,
    cancel: &'a AtomicBool,
    n: u32,
}

impl<'a, I> Cancellable<'a, I> {
    fn new(inner: I, cancel: &'a AtomicBool) -> Self {
        Self {
            inner,
            cancel,
            n: 0,
        }
    }
}

impl<I: Iterator> Iterator for Cancellable<'_, I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        self.n = self.n.wrapping_add(1);
        if self.n.is_multiple_of(1024) && self.cancel.load(Ordering::Relaxed) {
            return None;
        }
        self.inner.next()
    }
}

/// `items` that pass the plan's filters; `key` gives an item's (time, power, relay on).
fn filtered<'a, T: 'a>(
    items: impl Iterator<Item = store::Result<T>> + Send + 'a,
    run: Run<'a>,
    key: impl Fn(&T) -> (i64, Option<f64>, bool) + Send + 'a,
) -> Stream<'a, T> {
    if run.data.filters.passes_all() {
        return Box::new(items);
    }
    let mut keep = keeper(run);
    Box::new(items.filter(move |x| match x {
        Ok(x) => {
            let (ts, power, on) = key(x);
            keep(ts, power, on)
        }
        Err(_) => true,
    }))
}

/// Raw rows of device `dev` that pass the filters (outliers not yet removed).
fn raw_rows<'a>(
    store: &Store,
    run: Run<'a>,
    dev: usize,
    cancel: &'a AtomicBool,
) -> store::Result<Stream<'a, Row>> {
    let prices = run.prices;
    let scan = store.scan_samples(
        &run.plan.devices[dev].id,
        run.plan.start_ms,
        run.plan.end_ms,
    )?;
    let rows = Cancellable::new(scan, cancel)
        // A reading's energy is that of the interval ending at it: the bucket before its time.
        .map(move |r| r.map(|r| raw_row(&r, dev, prices.at(r.ts_ms - 1))));
    Ok(filtered(rows, run, |r: &Row| {
        (r.ts_ms, r.get(POWER), r.get(IS_ON).is_some_and(|v| v > 0.0))
    }))
}

/// 15-minute buckets of device `dev` that pass the filters (by mean power, relay on in the
/// bucket, local start time).
fn bucket_subs<'a>(
    store: &Store,
    run: Run<'a>,
    dev: usize,
    cancel: &'a AtomicBool,
) -> store::Result<Stream<'a, Sub>> {
    let prices = run.prices;
    let scan = store.scan_buckets(
        &run.plan.devices[dev].id,
        run.plan.start_ms,
        run.plan.end_ms,
    )?;
    let subs = Cancellable::new(scan, cancel)
        .map(move |b| b.map(|b| bucket_sub(&b, dev, prices.at(b.start_ms))));
    Ok(filtered(subs, run, |s: &Sub| {
        let power = s.vals[POWER].map(|v| v.mean);
        (s.ts_ms, power, s.vals[IS_ON].is_some_and(|v| v.mean > 0.0))
    }))
}

/// Mean and population standard deviation of the power values (Welford).
fn power_stats(
    values: impl Iterator<Item = store::Result<Option<f64>>>,
) -> store::Result<(f64, f64)> {
    let (mut n, mut mean, mut m2) = (0.0_f64, 0.0_f64, 0.0_f64);
    for p in values {
        if let Some(p) = p? {
            n += 1.0;
            let d = p - mean;
            mean += d / n;
            m2 += d * (p - mean);
        }
    }
    Ok((mean, if n > 0.0 { (m2 / n).sqrt() } else { 0.0 }))
}

/// Drops items whose power is more than 3 standard deviations from `stats`' mean.
fn without_outliers<'a, T: 'a>(
    items: Stream<'a, T>,
    (mean, sd): (f64, f64),
    power: impl Fn(&T) -> Option<f64> + Send + 'a,
) -> Stream<'a, T> {
    Box::new(items.filter(move |x| match x {
        Ok(x) => power(x).is_none_or(|p| sd == 0.0 || (p - mean).abs() <= 3.0 * sd),
        Err(_) => true,
    }))
}

#[derive(Debug, Clone, Copy)]
struct Acc {
    sum: f64,
    n: f64,
    min: f64,
    max: f64,
    first: Option<f64>,
    last: f64,
}

impl Acc {
    const EMPTY: Acc = Acc {
        sum: 0.0,
        n: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        first: None,
        last: 0.0,
    };

    fn add(&mut self, v: &Val) {
        self.sum += v.sum;
        self.n += v.n;
        self.min = self.min.min(v.min);
        self.max = self.max.max(v.max);
        self.first.get_or_insert(v.mean);
        self.last = v.mean;
    }

    fn finish(&self, f: Agg) -> Option<f64> {
        let first = self.first?;
        Some(match f {
            Agg::Average => self.sum / self.n,
            Agg::Sum => self.sum,
            Agg::Min => self.min,
            Agg::Max => self.max,
            Agg::First => first,
            Agg::Last => self.last,
            Agg::Count => self.n,
        })
    }
}

/// Folds consecutive sub-rows of one device into periods of the plan's aggregation.
struct Aggregate<'a, I: Iterator> {
    subs: std::iter::Peekable<I>,
    run: Run<'a>,
}

impl<I: Iterator<Item = store::Result<Sub>>> Iterator for Aggregate<'_, I> {
    type Item = store::Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        let p = self.run.data.aggregation?;
        let first = match self.subs.next()? {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        let start = period_start(first.ts_ms, p, self.run.plan.tz);
        let end = crate::domain::rollup::period_end(start, p, self.run.plan.tz);
        let mut acc = [Acc::EMPTY; NV];
        let (mut energy_mwh, mut unmeasured) = (0i64, Unmeasured::default());
        let mut add = |s: &Sub| {
            for (a, v) in acc.iter_mut().zip(&s.vals) {
                if let Some(v) = v {
                    a.add(v);
                }
            }
            energy_mwh += s.provenance.0;
            unmeasured.merge(&s.provenance.1);
        };
        add(&first);
        while let Some(Ok(s)) = self.subs.peek() {
            if s.ts_ms >= end {
                break;
            }
            add(s);
            self.subs.next();
        }
        let mut vals = [None; NV];
        for (i, v) in vals.iter_mut().enumerate() {
            *v = acc[i].finish(self.run.data.functions[i]);
        }
        Some(Ok(Row::new(start, first.dev, vals).with_quality(
            energy_mwh,
            &unmeasured,
            true,
        )))
    }
}

/// The rows of one device, in time order.
fn device_rows<'a>(
    store: &Store,
    run: Run<'a>,
    dev: usize,
    cancel: &'a AtomicBool,
) -> store::Result<Stream<'a, Row>> {
    let outliers = run.data.filters.exclude_outliers;
    Ok(match run.data.aggregation {
        None => {
            let rows = raw_rows(store, run, dev, cancel)?;
            if !outliers {
                return Ok(rows);
            }
            let stats = power_stats(rows.map(|r| r.map(|r| r.get(POWER))))?;
            without_outliers(raw_rows(store, run, dev, cancel)?, stats, |r: &Row| {
                r.get(POWER)
            })
        }
        Some(_) => {
            let mut subs = bucket_subs(store, run, dev, cancel)?;
            if outliers {
                let power = |s: &Sub| s.vals[POWER].map(|v| v.mean);
                let stats = power_stats(subs.map(|s| s.map(|s| power(&s))))?;
                subs = without_outliers(bucket_subs(store, run, dev, cancel)?, stats, power);
            }
            Box::new(Aggregate {
                subs: subs.peekable(),
                run,
            })
        }
    })
}

/// All rows of a plan, ordered by time, then by the plan's device order.
pub struct Rows<'a> {
    streams: Vec<std::iter::Peekable<Stream<'a, Row>>>,
}

impl<'a> Rows<'a> {
    /// Opens one stream per device (read transactions are snapshots: rows written while the
    /// export runs are not included).
    /// Scans stop early once `cancel` is set (the caller then reports the cancellation).
    pub fn open(store: &Store, run: Run<'a>, cancel: &'a AtomicBool) -> store::Result<Self> {
        Self::open_part(store, run, cancel, 0, 1)
    }

    /// Like [`Self::open`] for the devices whose index `% parts == part` only. Each part is
    /// ordered by (time, device index), so merging parts by that key gives the order of
    /// [`Self::open`].
    pub fn open_part(
        store: &Store,
        run: Run<'a>,
        cancel: &'a AtomicBool,
        part: usize,
        parts: usize,
    ) -> store::Result<Self> {
        let streams = (0..run.plan.devices.len())
            .filter(|d| d % parts.max(1) == part)
            .map(|d| device_rows(store, run, d, cancel).map(Iterator::peekable))
            .collect::<store::Result<_>>()?;
        Ok(Self { streams })
    }
}

impl Iterator for Rows<'_> {
    type Item = store::Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, i64)> = None;
        for (i, s) in self.streams.iter_mut().enumerate() {
            match s.peek() {
                Some(Ok(r)) if best.is_none_or(|(_, t)| r.ts_ms < t) => best = Some((i, r.ts_ms)),
                Some(Ok(_)) | None => {}
                Some(Err(_)) => return s.next(),
            }
        }
        self.streams[best?.0].next()
    }
}

/// The formula variables of a row, in [`crate::export::fields::FORMULA_VARS`] order.
pub fn formula_values(row: &Row, run: Run<'_>) -> [Option<f64>; 10] {
    let d = &run.plan.devices[row.dev];
    let v = |i| row.get(i);
    [
        v(POWER),
        v(ENERGY),
        v(VOLTAGE),
        v(CURRENT),
        v(COST),
        v(TOTAL),
        v(IS_ON),
        d.rated_power,
        // The price the row's cost was computed with (its average when it varies).
        match (run.prices, v(COST), v(ENERGY)) {
            (crate::tariff::engine::Prices::Const(p), _, _) => Some(*p),
            (_, Some(c), Some(e)) if e > 0.0 => Some(c / e),
            (p, _, _) => Some(p.at(row.ts_ms)),
        },
        Some(row.dev as f64),
    ]
}

/// Daily energy of the plan's devices over its range, from the rollups (the plan's filters
/// apply, as they do to the rows).
pub fn daily_energy(store: &Store, run: Run<'_>, cancel: &AtomicBool) -> store::Result<Chart> {
    let mut functions = run.data.functions;
    functions[ENERGY] = Agg::Sum;
    let daily = DataPlan {
        fields: vec![Field::Timestamp, Field::Value(ENERGY)],
        aggregation: Some(Period::Day),
        aggregation_name: "daily".into(),
        functions,
        row_fields: Vec::new(),
        aggregate_fields: Vec::new(),
        ha_prefix: None,
        ..run.data.clone()
    };
    let mut by_day: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    let n = run.plan.devices.len();
    for row in Rows::open(
        store,
        Run {
            data: &daily,
            ..run
        },
        cancel,
    )? {
        let row = row?;
        by_day.entry(row.ts_ms).or_insert_with(|| vec![0.0; n])[row.dev] +=
            row.get(ENERGY).unwrap_or(0.0);
    }
    let mut kwh = vec![Vec::with_capacity(by_day.len()); n];
    for values in by_day.values() {
        for (d, v) in values.iter().enumerate() {
            kwh[d].push(round_to(*v, 6));
        }
    }
    Ok(Chart {
        title: "Daily energy per device (kWh)".into(),
        unit: "kWh",
        kind: ChartKind::StackedBars,
        label_name: "date",
        labels: by_day.into_keys().map(V::Time).collect(),
        series: run
            .plan
            .devices
            .iter()
            .map(|d| d.name.clone())
            .zip(kwh)
            .collect(),
    })
}

/// Builds the cells of rows: the plan's fields, then its per-row custom fields.
pub struct CellMaker<'p> {
    run: Run<'p>,
    on_bool: bool,
    tzc: TzCache,
    cells: Vec<Cell<'p>>,
}

impl<'p> CellMaker<'p> {
    /// A cell maker for `run`'s rows.
    pub fn new(run: Run<'p>) -> Self {
        Self {
            run,
            on_bool: on_is_bool(run.data),
            tzc: TzCache::new(run.plan.tz),
            cells: Vec::with_capacity(run.data.fields.len() + run.data.row_fields.len()),
        }
    }

    /// The cells of `row`.
    pub fn of(&mut self, row: &Row) -> &[Cell<'p>] {
        let run = self.run;
        let dp = run.plan.decimal_places;
        let dev = &run.plan.devices[row.dev];
        self.cells.clear();
        for f in &run.data.fields {
            self.cells.push(match *f {
                Field::Timestamp => Cell::Time(row.ts_ms),
                Field::DeviceIp => Cell::Label(&dev.ip, 3 * row.dev),
                Field::DeviceId => Cell::Label(&dev.shown_id, 3 * row.dev + 1),
                Field::DeviceName => Cell::Label(&dev.name, 3 * row.dev + 2),
                Field::Value(i) => match row.get(i) {
                    None => Cell::Null,
                    Some(v) if i == IS_ON && self.on_bool => Cell::Bool(v > 0.0),
                    Some(v) => Cell::Num(
                        v,
                        dp.unwrap_or(VALUE_FIELDS[i].decimals.max(if i == IS_ON { 4 } else { 0 })),
                    ),
                },
                Field::Quality => Cell::Text(row.quality.name),
                Field::MeasuredShare if row.quality.share.is_nan() => Cell::Null,
                Field::MeasuredShare => Cell::Num(f64::from(row.quality.share), dp.unwrap_or(4)),
            });
        }
        if !run.data.row_fields.is_empty() {
            let values = formula_values(row, run);
            let ctx = row_ctx(&values, &mut self.tzc, row.ts_ms);
            for c in &run.data.row_fields {
                self.cells.push(match c.formula.eval_row(&ctx) {
                    Some(v) => Cell::Num(v, dp.unwrap_or(6)),
                    None => Cell::Null,
                });
            }
        }
        &self.cells
    }
}

/// The formula context of a row at `ts_ms`.
pub fn row_ctx<'v>(values: &'v [Option<f64>], tzc: &mut TzCache, ts_ms: i64) -> RowCtx<'v> {
    let l = tzc.local(ts_ms);
    RowCtx {
        values,
        day: l.day,
        hour: l.hour,
        weekday: l.weekday,
        month: l.month,
    }
}

/// Whether `is_on` renders as a boolean (its function keeps 0/1 values).
fn on_is_bool(data: &DataPlan) -> bool {
    data.aggregation.is_none()
        || matches!(
            data.functions[IS_ON],
            Agg::Min | Agg::Max | Agg::First | Agg::Last
        )
}
