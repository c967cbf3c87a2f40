//! The cost_analysis export (and the system report's cost section): the tariff engine's
//! priced pieces summed per device, per period (`grouping`: daily, weekly, monthly, yearly in
//! the export's zone), per time-of-use band and per rate tier, with the household's fixed
//! charges and taxes, as a [`Report`] that every format renders.
//!
//! Money is summed exactly and rounded once: each table's money columns are rounded so that
//! its rows add up to the rounded total (largest remainder), the bill's lines are energy,
//! fixed charges and taxes, and its total is their sum.

use crate::domain::rollup::{Period, local_midnight, period_end, period_start};
use crate::export::pipeline::{Control, RenderError};
use crate::export::plan::Plan;
use crate::export::report::{Chart, ChartKind, Column, Part, Report, Table, V};
use crate::export::request::{CreateRequest, RequestError, refuse_row_options};
use crate::store::Store;
use crate::tariff::Per;
use crate::tariff::engine::{self, FixedLine, Labels, Pico, minor_value, round_parts, to_minor};
use chrono::{Datelike, NaiveDate, TimeZone};
use chrono_tz::Tz;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// Periods of a cost_analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Grouping {
    /// Local days.
    Day,
    /// Local ISO weeks.
    Week,
    /// Local months.
    Month,
    /// Local years.
    Year,
}

/// Why a cost analysis option is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// An unknown `grouping`.
    #[error("grouping must be daily, weekly, monthly or yearly; got {0:?}")]
    Grouping(String),
    /// `breakdown_by` is not a list.
    #[error("breakdown_by must be a list of device, room, time_of_use, rate_tier")]
    NotAList,
    /// An unknown `breakdown_by` entry (as JSON).
    #[error("breakdown_by: unknown {0}; use device, room, time_of_use and/or rate_tier")]
    Breakdown(String),
}

/// What a cost analysis asks: its periods, breakdowns and a bill to share out.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Options {
    /// Periods.
    pub grouping: Grouping,
    /// Breakdowns.
    pub breakdown: Breakdown,
    /// A bill shared out to the devices (stored plans before it have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<super::cost_allocation::Allocation>,
    /// Other tariffs priced on the same history.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compare_tariffs: Vec<super::cost_compare::Named>,
}

/// The options of a cost_analysis body (it takes devices but no row options).
pub fn options_of(req: &CreateRequest) -> Result<Options, RequestError> {
    refuse_row_options(
        req,
        "use devices, grouping, breakdown_by and include_charts",
    )?;
    Ok(Options {
        grouping: Grouping::parse(req.grouping.as_ref().and_then(|v| v.as_str()))?,
        breakdown: Breakdown::parse(req.breakdown_by.as_ref())?,
        allocation: super::cost_allocation::parse(req.allocation.as_ref())?,
        compare_tariffs: super::cost_compare::parse(req.compare_tariffs.as_ref())?,
    })
}

/// The cost_analysis part of the metadata: its periods and breakdowns.
pub fn metadata(o: &Options) -> serde_json::Value {
    let b = [
        ("device", o.breakdown.device),
        ("time_of_use", o.breakdown.time_of_use),
        ("rate_tier", o.breakdown.rate_tier),
    ];
    let mut m = serde_json::json!({
        "grouping": o.grouping.name(),
        "breakdown_by": b.iter().filter(|x| x.1).map(|x| x.0).collect::<Vec<_>>(),
    });
    if let Some(a) = &o.allocation {
        m["allocation"] = serde_json::json!(a);
    }
    if !o.compare_tariffs.is_empty() {
        m["compare_tariffs"] = o.compare_tariffs.iter().map(|n| n.name.clone()).collect();
    }
    m
}

impl Grouping {
    /// Parses `grouping` (default monthly).
    pub fn parse(s: Option<&str>) -> Result<Self, OptionError> {
        Ok(match s.unwrap_or("monthly") {
            "daily" => Grouping::Day,
            "weekly" => Grouping::Week,
            "monthly" => Grouping::Month,
            "yearly" => Grouping::Year,
            other => return Err(OptionError::Grouping(other.to_owned())),
        })
    }

    /// Name in requests and column headers.
    pub fn name(self) -> &'static str {
        match self {
            Grouping::Day => "date",
            Grouping::Week => "week",
            Grouping::Month => "month",
            Grouping::Year => "year",
        }
    }

    /// Start of the period holding `t`.
    pub fn start(self, t: i64, tz: Tz) -> i64 {
        match self {
            Grouping::Day => period_start(t, Period::Day, tz),
            Grouping::Week => period_start(t, Period::Week, tz),
            Grouping::Month => period_start(t, Period::Month, tz),
            Grouping::Year => {
                let y = tz.timestamp_millis_opt(t).unwrap().year();
                local_midnight(NaiveDate::from_ymd_opt(y, 1, 1).expect("1 January"), tz)
            }
        }
    }

    /// Start of the period after the one starting at `s`.
    pub fn end(self, s: i64, tz: Tz) -> i64 {
        match self {
            Grouping::Day => period_end(s, Period::Day, tz),
            Grouping::Week => period_end(s, Period::Week, tz),
            Grouping::Month => period_end(s, Period::Month, tz),
            Grouping::Year => {
                let y = tz.timestamp_millis_opt(s).unwrap().year();
                local_midnight(NaiveDate::from_ymd_opt(y + 1, 1, 1).expect("1 January"), tz)
            }
        }
    }

    /// Every period start of `[start, end)`, in order.
    pub fn starts(self, start: i64, end: i64, tz: Tz) -> Vec<i64> {
        let mut out = Vec::new();
        let mut s = self.start(start, tz);
        while s < end {
            out.push(s);
            s = self.end(s, tz);
        }
        out
    }

    /// Key of a table by this period (`by_day`, `by_month` …).
    pub fn table_key(self) -> &'static str {
        match self {
            Grouping::Day => "by_day",
            Grouping::Week => "by_week",
            Grouping::Month => "by_month",
            Grouping::Year => "by_year",
        }
    }

    /// Display label of the period starting at `s`.
    pub fn label(self, s: i64, tz: Tz) -> String {
        let d = tz.timestamp_millis_opt(s).unwrap().date_naive();
        match self {
            Grouping::Day => d.format("%Y-%m-%d").to_string(),
            Grouping::Week => {
                let w = d.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Grouping::Month => d.format("%Y-%m").to_string(),
            Grouping::Year => d.format("%Y").to_string(),
        }
    }
}

/// What to break the cost down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Breakdown {
    /// Per device.
    pub device: bool,
    /// Per time-of-use band.
    pub time_of_use: bool,
    /// Per rate tier.
    pub rate_tier: bool,
    /// Per room (devices without one together).
    pub room: bool,
}

impl Breakdown {
    /// Parses `breakdown_by` (default: by device).
    pub fn parse(v: Option<&serde_json::Value>) -> Result<Self, OptionError> {
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return Ok(Self {
                device: true,
                ..Self::default()
            });
        };
        let list = v.as_array().ok_or(OptionError::NotAList)?;
        let mut b = Self::default();
        for x in list {
            match x.as_str() {
                Some("device") => b.device = true,
                Some("time_of_use") => b.time_of_use = true,
                Some("rate_tier") => b.rate_tier = true,
                Some("room") => b.room = true,
                _ => return Err(OptionError::Breakdown(x.to_string())),
            }
        }
        Ok(b)
    }
}

/// Energy and money.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Acc {
    /// Energy, mWh.
    pub mwh: i64,
    /// Energy cost before taxes.
    pub cost: Pico,
    /// Taxes on it.
    pub tax: Pico,
}

impl Acc {
    fn add(&mut self, mwh: i64, cost: Pico, tax: Pico) {
        self.mwh += mwh;
        self.cost += cost;
        self.tax += tax;
    }
}

/// The priced energy of a plan's devices over its range.
#[derive(Debug, Clone, PartialEq)]
pub struct Costs {
    /// Decimals of the currency.
    pub decimals: u8,
    /// Currency code.
    pub currency: String,
    /// Period starts in the range, in order.
    pub periods: Vec<i64>,
    /// Per plan device.
    pub by_device: Vec<Acc>,
    /// (period index, device) → sums.
    pub by_period_device: BTreeMap<(usize, usize), Acc>,
    /// (band, period index) → sums.
    pub by_band: BTreeMap<(usize, usize), Acc>,
    /// Tier → sums.
    pub by_tier: BTreeMap<usize, Acc>,
    /// Band and tier names.
    pub labels: Labels,
    /// The household's fixed charges.
    pub fixed: Vec<FixedLine>,
}

impl Costs {
    /// The selected devices' sum.
    pub fn total(&self) -> Acc {
        let mut t = Acc::default();
        for a in &self.by_device {
            t.add(a.mwh, a.cost, a.tax);
        }
        t
    }

    /// The selected devices' sum in period `k`.
    pub fn period_total(&self, k: usize) -> Acc {
        let mut t = Acc::default();
        for dev in 0..self.by_device.len() {
            if let Some(x) = self.by_period_device.get(&(k, dev)) {
                t.add(x.mwh, x.cost, x.tax);
            }
        }
        t
    }

    /// The "Cost per device" table, rows labelled by `names`.
    pub fn device_table(&self, names: &[String]) -> Table {
        let rows: Vec<_> = names
            .iter()
            .zip(&self.by_device)
            .map(|(n, a)| (n.clone(), String::new(), *a))
            .collect();
        money_table(
            "by_device",
            "Cost per device",
            Some("device"),
            None,
            &rows,
            self,
        )
    }
}

/// Prices the plan's devices (tiers count the whole household) and sums by `grouping`.
pub fn compute(
    store: &Store,
    plan: &Plan,
    grouping: Grouping,
    ctl: &Control,
) -> Result<Costs, RenderError> {
    let all = store.devices()?;
    let ids: Vec<_> = all
        .iter()
        .map(|d| d.record.info.device_id.clone())
        .collect();
    // Household index → plan index.
    let to_plan: Vec<Option<usize>> = ids
        .iter()
        .map(|id| plan.devices.iter().position(|d| &d.id == id))
        .collect();
    let periods = grouping.starts(plan.start_ms, plan.end_ms, plan.tz);
    let n = plan.devices.len();
    let mut by_device = vec![Acc::default(); n];
    let mut by_period_device: BTreeMap<(usize, usize), Acc> = BTreeMap::new();
    let mut by_band: BTreeMap<(usize, usize), Acc> = BTreeMap::new();
    let mut by_tier: BTreeMap<usize, Acc> = BTreeMap::new();
    let mut k = 0;
    let labels = engine::price(
        store,
        &plan.tariffs,
        &ids,
        plan.start_ms,
        plan.end_ms,
        |p| {
            let Some(dev) = to_plan[p.dev] else { return };
            while k + 1 < periods.len() && periods[k + 1] <= p.t {
                k += 1;
            }
            by_device[dev].add(p.mwh, p.cost, p.tax);
            by_period_device
                .entry((k, dev))
                .or_default()
                .add(p.mwh, p.cost, p.tax);
            by_band
                .entry((p.band, k))
                .or_default()
                .add(p.mwh, p.cost, p.tax);
            by_tier.entry(p.tier).or_default().add(p.mwh, p.cost, p.tax);
        },
    )?;
    if ctl.cancel.load(Ordering::Relaxed) {
        return Err(RenderError::Cancelled);
    }
    let c = plan.tariffs.at(plan.end_ms - 1);
    Ok(Costs {
        decimals: c.decimals,
        currency: c.source.currency.clone(),
        periods,
        by_device,
        by_period_device,
        by_band,
        by_tier,
        labels,
        fixed: engine::fixed(&plan.tariffs, plan.start_ms, plan.end_ms),
    })
}

fn col(name: &'static str, unit: &str) -> Column {
    Column {
        name,
        unit: unit.to_owned(),
    }
}

/// A table of (item, period, sums) rows with energy, energy_cost, tax and cost columns; each
/// money column rounded so that the rows add up to its rounded total.
pub fn money_table(
    key: &'static str,
    title: &str,
    item: Option<&'static str>,
    period: Option<&'static str>,
    rows: &[(String, String, Acc)],
    costs: &Costs,
) -> Table {
    let cur = costs.currency.as_str();
    let mut t = Table {
        key,
        title: title.to_owned(),
        item,
        period,
        columns: vec![
            col("energy", "kWh"),
            col("energy_cost", cur),
            col("tax", cur),
            col("cost", cur),
        ],
        rows: Vec::new(),
        vertical: false,
    };
    let d = costs.decimals;
    let energy_cost = round_parts(&rows.iter().map(|r| r.2.cost).collect::<Vec<_>>(), d);
    let tax = round_parts(&rows.iter().map(|r| r.2.tax).collect::<Vec<_>>(), d);
    for (i, (it, p, a)) in rows.iter().enumerate() {
        let money = |m: i64| V::Num(minor_value(m, d), d);
        t.rows.push(crate::export::report::Line {
            item: it.clone(),
            period: p.clone(),
            values: vec![
                V::Num(a.mwh as f64 / 1e6, 3),
                money(energy_cost[i]),
                money(tax[i]),
                money(energy_cost[i] + tax[i]),
            ],
        });
    }
    t
}

/// What devices without a room are listed under.
pub const NO_ROOM: &str = "(no room)";

/// The rooms of a plan's devices, sorted (devices without one last, as [`NO_ROOM`]), and for
/// each plan device the index of its room.
pub fn rooms(plan: &Plan) -> (Vec<String>, Vec<usize>) {
    let mut names: Vec<String> = plan.devices.iter().filter_map(|d| d.room.clone()).collect();
    names.sort_by_key(|r| r.to_lowercase());
    names.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    if plan.devices.iter().any(|d| d.room.is_none()) {
        names.push(NO_ROOM.into());
    }
    let of = plan
        .devices
        .iter()
        .map(|d| {
            let r = d.room.as_deref().unwrap_or(NO_ROOM);
            names
                .iter()
                .position(|n| n.eq_ignore_ascii_case(r))
                .unwrap_or(0)
        })
        .collect();
    (names, of)
}

/// Device labels of a plan: names, with the id added where two devices share a name.
pub fn device_labels(plan: &Plan) -> Vec<String> {
    plan.devices
        .iter()
        .map(|d| {
            if plan.devices.iter().filter(|o| o.name == d.name).count() > 1 {
                format!("{} ({})", d.name, d.shown_id)
            } else {
                d.name.clone()
            }
        })
        .collect()
}

/// The bill: energy, fixed charges, taxes and total; the fixed charges; the tariff versions.
fn summary(costs: &Costs, plan: &Plan) -> Part {
    let d = costs.decimals;
    let cur = costs.currency.as_str();
    let total = costs.total();
    let energy_cost = to_minor(total.cost, d);
    let fixed_cost = to_minor(costs.fixed.iter().map(|f| f.cost).sum(), d);
    // Taxes are one line, rounded once.
    let taxes = to_minor(
        total.tax + costs.fixed.iter().map(|f| f.tax).sum::<Pico>(),
        d,
    );
    let money = |m: i64| V::Num(minor_value(m, d), d);
    let mut bill = Table {
        key: "totals",
        title: "Totals".into(),
        item: None,
        period: None,
        columns: vec![
            col("energy", "kWh"),
            col("energy_cost", cur),
            col("fixed_charges", cur),
            col("taxes", cur),
            col("total", cur),
        ],
        rows: Vec::new(),
        vertical: true,
    };
    bill.rows.push(crate::export::report::Line {
        item: String::new(),
        period: String::new(),
        values: vec![
            V::Num(total.mwh as f64 / 1e6, 3),
            money(energy_cost),
            money(fixed_cost),
            money(taxes),
            money(energy_cost + fixed_cost + taxes),
        ],
    });
    let mut fixed = Table {
        key: "fixed_charges",
        title: "Fixed charges (household)".into(),
        item: Some("charge"),
        period: None,
        columns: vec![
            col("per", ""),
            col("quantity", ""),
            col("amount", cur),
            col("tax", cur),
        ],
        rows: Vec::new(),
        vertical: false,
    };
    let amounts = round_parts(&costs.fixed.iter().map(|f| f.cost).collect::<Vec<_>>(), d);
    let taxes = round_parts(&costs.fixed.iter().map(|f| f.tax).collect::<Vec<_>>(), d);
    for (i, f) in costs.fixed.iter().enumerate() {
        fixed.rows.push(crate::export::report::Line {
            item: f.name.clone(),
            period: String::new(),
            values: vec![
                V::Text(match f.per {
                    Per::Day => "day".into(),
                    Per::Month => "billing month".into(),
                }),
                V::Num(f.quantity, 3),
                money(amounts[i]),
                money(taxes[i]),
            ],
        });
    }
    let mut versions = Table {
        key: "tariffs",
        title: "Tariffs in force".into(),
        item: Some("effective_from"),
        period: None,
        columns: vec![col("rates", ""), col("timezone", ""), col("taxes", "%")],
        rows: Vec::new(),
        vertical: false,
    };
    for (c, a, _) in plan.tariffs.spans(plan.start_ms, plan.end_ms) {
        let from = if c.from_ms == i64::MIN {
            "(first tariff)".to_owned()
        } else {
            Grouping::Day.label(c.from_ms.max(a), c.tz)
        };
        versions.rows.push(crate::export::report::Line {
            item: from,
            period: String::new(),
            values: vec![
                V::Text(c.describe()),
                V::Text(c.tz.name().into()),
                V::Num(c.tax_ppm as f64 / 1e4, 4),
            ],
        });
    }
    Part::new(
        "summary",
        "Summary",
        vec![bill, fixed, versions],
        Vec::new(),
    )
}

/// A stacked bar chart of cost per period, one series per `names` entry.
fn cost_chart(
    title: &str,
    costs: &Costs,
    labels: Vec<V>,
    names: &[String],
    value: impl Fn(usize, usize) -> Acc,
) -> Chart {
    let d = costs.decimals;
    Chart {
        title: format!("{title} ({})", costs.currency),
        unit: "",
        kind: ChartKind::StackedBars,
        label_name: "period",
        labels,
        series: names
            .iter()
            .enumerate()
            .map(|(s, name)| {
                let values = (0..costs.periods.len())
                    .map(|k| {
                        let a = value(k, s);
                        minor_value(to_minor(a.cost + a.tax, d), d)
                    })
                    .collect();
                (name.clone(), values)
            })
            .collect(),
    }
}

/// Cost per room, and per room and period, with a chart.
fn room_part(
    plan: &Plan,
    costs: &Costs,
    plabel: &[String],
    gname: &'static str,
    labels: Vec<V>,
) -> Part {
    let (rooms, of) = rooms(plan);
    let at = |k: usize, r: usize| {
        let mut a = Acc::default();
        for (dev, _) in of.iter().enumerate().filter(|(_, x)| **x == r) {
            if let Some(x) = costs.by_period_device.get(&(k, dev)) {
                a.add(x.mwh, x.cost, x.tax);
            }
        }
        a
    };
    let mut totals = Vec::new();
    let mut per = Vec::new();
    for (r, name) in rooms.iter().enumerate() {
        let mut sum = Acc::default();
        for (dev, _) in of.iter().enumerate().filter(|(_, x)| **x == r) {
            let a = costs.by_device[dev];
            sum.add(a.mwh, a.cost, a.tax);
        }
        totals.push((name.clone(), String::new(), sum));
        for (k, l) in plabel.iter().enumerate() {
            per.push((name.clone(), l.clone(), at(k, r)));
        }
    }
    let chart = cost_chart(
        &format!("Cost per {gname} by room"),
        costs,
        labels,
        &rooms,
        at,
    );
    Part::new(
        "cost_by_room",
        "Cost by room",
        vec![
            money_table(
                "by_room",
                "Cost per room",
                Some("room"),
                None,
                &totals,
                costs,
            ),
            money_table(
                "by_room_period",
                &format!("Cost per room and {gname}"),
                Some("room"),
                Some(gname),
                &per,
                costs,
            ),
        ],
        vec![chart],
    )
}

/// Cost per period: per device and period when `by_device`, else of the selected devices.
fn period_part(
    costs: &Costs,
    names: &[String],
    plabel: &[String],
    gname: &'static str,
    by_device: bool,
    labels: Vec<V>,
) -> Part {
    // Per period: by device when asked, else the household of the selected devices.
    let mut rows = Vec::new();
    if by_device {
        for (dev, name) in names.iter().enumerate() {
            for (k, l) in plabel.iter().enumerate() {
                let a = costs
                    .by_period_device
                    .get(&(k, dev))
                    .copied()
                    .unwrap_or_default();
                rows.push((name.clone(), l.clone(), a));
            }
        }
    } else {
        for (k, l) in plabel.iter().enumerate() {
            rows.push((String::new(), l.clone(), costs.period_total(k)));
        }
    }
    let per_period = money_table(
        "by_period",
        &format!("Cost per {gname}"),
        by_device.then_some("device"),
        Some(gname),
        &rows,
        costs,
    );
    let series: Vec<String> = if by_device {
        names.to_vec()
    } else {
        vec!["selected devices".into()]
    };
    let chart = cost_chart(
        &format!("Cost per {gname}"),
        costs,
        labels,
        &series,
        |k, s| {
            if by_device {
                costs
                    .by_period_device
                    .get(&(k, s))
                    .copied()
                    .unwrap_or_default()
            } else {
                costs.period_total(k)
            }
        },
    );
    let mut tables = vec![per_period];
    if by_device {
        tables.insert(0, costs.device_table(names));
    }
    Part::new(
        "cost_by_period",
        if by_device {
            "Cost by device and period"
        } else {
            "Cost by period"
        },
        tables,
        vec![chart],
    )
}

/// Cost per time-of-use band: in all, and per period.
fn tou_part(costs: &Costs, plabel: &[String], gname: &'static str, labels: Vec<V>) -> Part {
    let bands = &costs.labels.bands;
    let mut totals = Vec::new();
    let mut per = Vec::new();
    for (b, name) in bands.iter().enumerate() {
        let mut sum = Acc::default();
        for (k, l) in plabel.iter().enumerate() {
            let a = costs.by_band.get(&(b, k)).copied().unwrap_or_default();
            sum.add(a.mwh, a.cost, a.tax);
            per.push((name.clone(), l.clone(), a));
        }
        totals.push((name.clone(), String::new(), sum));
    }
    let chart = cost_chart(
        &format!("Cost per {gname} by time of use"),
        costs,
        labels,
        bands,
        |k, b| costs.by_band.get(&(b, k)).copied().unwrap_or_default(),
    );
    Part::new(
        "time_of_use",
        "Cost by time of use",
        vec![
            money_table(
                "by_band",
                "Per time-of-use period",
                Some("band"),
                None,
                &totals,
                costs,
            ),
            money_table(
                "by_band_period",
                &format!("Per time-of-use period and {gname}"),
                Some("band"),
                Some(gname),
                &per,
                costs,
            ),
        ],
        vec![chart],
    )
}

/// Cost per rate tier.
fn tier_part(costs: &Costs) -> Part {
    let rows: Vec<_> = costs
        .by_tier
        .iter()
        .map(|(t, a)| (costs.labels.tiers[*t].clone(), String::new(), *a))
        .collect();
    Part::new(
        "rate_tier",
        "Cost by rate tier",
        vec![money_table(
            "by_tier",
            "Per rate tier",
            Some("tier"),
            None,
            &rows,
            costs,
        )],
        Vec::new(),
    )
}

/// The cost_analysis report.
pub fn report(
    store: &Store,
    plan: &Plan,
    grouping: Grouping,
    breakdown: Breakdown,
    ctl: &Control,
) -> Result<Report, RenderError> {
    let costs = compute(store, plan, grouping, ctl)?;
    let tz = plan.tz;
    let plabel: Vec<String> = costs
        .periods
        .iter()
        .map(|p| grouping.label(*p, tz))
        .collect();
    let chart_labels = |()| -> Vec<V> {
        costs
            .periods
            .iter()
            .zip(&plabel)
            .map(|(p, l)| match grouping {
                Grouping::Day => V::Time(*p),
                _ => V::Text(l.clone()),
            })
            .collect()
    };
    let names = device_labels(plan);
    let gname = grouping.name();
    let mut totals = summary(&costs, plan);
    // Which of the energy priced here was not measured (a gap, an import).
    let provenance = super::provenance::of_plan(store, plan)?;
    totals
        .tables
        .insert(1, super::provenance::table(&names, &provenance));
    let mut parts = vec![
        totals,
        period_part(
            &costs,
            &names,
            &plabel,
            gname,
            breakdown.device,
            chart_labels(()),
        ),
    ];
    if breakdown.room {
        parts.push(room_part(plan, &costs, &plabel, gname, chart_labels(())));
    }
    if breakdown.time_of_use {
        parts.push(tou_part(&costs, &plabel, gname, chart_labels(())));
    }
    if breakdown.rate_tier {
        parts.push(tier_part(&costs));
    }
    if !plan.include_charts {
        parts.iter_mut().for_each(|p| p.charts.clear());
    }
    Ok(Report {
        title: "Cost analysis".into(),
        parts,
    })
}
