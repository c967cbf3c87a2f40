//! `statement`: a signed statement of one device's, a room's or a set of devices' energy and
//! cost over a date range, for someone else to pay (a tenant, a flat-mate, a client).
//!
//! It holds: the issuer and the signer's key, the opening and closing counter readings, the
//! energy per local day with the share measured, the tariff versions and the prices applied
//! per band, the standing-charge share of a bill (`allocation` as in cost_analysis; without
//! one, `by_energy` of a recorded bill whose period covers the statement's, if any), the
//! total, and the provenance of the energy. It is rendered as PDF, JSON or CSV and signed
//! ([`crate::export::signed`]); never compressed (the signed bytes are the file).

use super::cost_allocation::{self, Allocation, Method};
use super::cost_analysis::{self, Grouping};
use crate::auth::signing::StatementKey;
use crate::domain::provenance::Unmeasured;
use crate::domain::rollup::{Period, aggregate};
use crate::export::pipeline::{Control, RenderError};
use crate::export::plan::Plan;
use crate::export::report::{Part, Report, Table, V, col};
use crate::export::request::{CreateRequest, RequestError, bad, format_of};
use crate::export::{Compression, Format, signed};
use crate::localtime::TzCache;
use crate::store::Store;
use crate::tariff::engine::{Pico, minor_value, to_minor};
use serde_json::{Value, json};
use std::sync::Arc;

/// What a statement request asks besides devices and range.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Options {
    /// The bill whose standing charge is shared, and how.
    pub allocation: Option<Allocation>,
}

/// Validates a statement body: PDF, JSON or CSV, uncompressed.
pub fn options_of(req: &CreateRequest) -> Result<Options, RequestError> {
    let (format, compression) = format_of(req)?;
    if !matches!(format, Format::Pdf | Format::Json | Format::Csv) {
        return Err(bad("a statement is issued as pdf, json or csv"));
    }
    if compression != Compression::None {
        return Err(bad(
            "a statement is not compressed: its signature covers the file's own bytes",
        ));
    }
    Ok(Options {
        allocation: cost_allocation::parse(req.allocation.as_ref())?,
    })
}

/// A statement computed, waiting for its id and signature.
#[derive(Debug, Clone)]
pub struct Built {
    /// Its parts after the header.
    pub report: Report,
    /// The header's facts: (name, value, unit).
    pub facts: Vec<(&'static str, V, String)>,
    /// Who issues it.
    pub issuer: String,
    /// The signing key.
    pub key: Arc<StatementKey>,
}

/// Computes the statement of `plan`.
pub fn build(
    store: &Store,
    plan: &Plan,
    o: &Options,
    issuer: String,
    key: Arc<StatementKey>,
    ctl: &Control,
) -> Result<Built, RenderError> {
    let names = cost_analysis::device_labels(plan);
    let costs = cost_analysis::compute(store, plan, Grouping::Day, ctl)?;
    let (d, cur) = (costs.decimals, costs.currency.clone());
    let money = |m: i64| V::Num(minor_value(m, d), d);
    let mut counters = Table::new(
        "counters",
        "Counter readings",
        &[
            col("opening_time", ""),
            col("opening_counter", "kWh"),
            col("closing_time", ""),
            col("closing_counter", "kWh"),
            col("energy", "kWh"),
        ],
    )
    .items("device");
    let mut days = Table::new(
        "energy_per_day",
        "Energy per day",
        &[
            col("energy", "kWh"),
            col("measured", "%"),
            col("cost", &cur),
        ],
    )
    .items("device")
    .periods("day");
    let mut provenance = Vec::with_capacity(plan.devices.len());
    for (k, name) in names.iter().enumerate() {
        let t = (&mut counters, &mut days);
        provenance.push(device_rows(store, plan, &costs, k, name, t)?);
    }
    let prices = prices_table(plan, &costs);
    let total = costs.total();
    let energy_cost = to_minor(total.cost + total.tax, d);
    let allocation = match &o.allocation {
        Some(a) => Some(a.clone()),
        None => covering_bill(store, plan)?,
    };
    let mut parts = vec![Part::new(
        "energy",
        "Energy",
        vec![counters, days],
        Vec::new(),
    )];
    parts.push(Part::new("prices", "Prices applied", prices, Vec::new()));
    let (standing, part) = standing_share(store, plan, &names, allocation.as_ref(), d, &cur)?;
    parts.extend(part);
    parts.push(Part::new(
        "provenance",
        "Provenance",
        vec![super::provenance::table(&names, &provenance)],
        Vec::new(),
    ));
    let mut all = (0i64, Unmeasured::default());
    for (e, u) in &provenance {
        all.0 += e;
        all.1.merge(u);
    }
    let facts = vec![
        (
            "energy",
            V::Num(total.mwh as f64 / 1e6, 3),
            "kWh".to_owned(),
        ),
        ("energy_cost", money(energy_cost), cur.clone()),
        ("standing_charge_share", money(standing), cur.clone()),
        ("total", money(energy_cost + standing), cur.clone()),
        (
            "measured",
            V::Num(100.0 * all.1.measured_share(all.0), 2),
            "%".into(),
        ),
        (
            "bill",
            allocation.map_or(V::Text("none recorded for the period".into()), |a| {
                V::Text(a.bill_id)
            }),
            String::new(),
        ),
    ];
    Ok(Built {
        report: Report {
            title: "Energy statement".into(),
            parts,
        },
        facts,
        issuer,
        key,
    })
}

/// One device's counter readings and days; its energy over the range and the part of it not
/// measured.
fn device_rows(
    store: &Store,
    plan: &Plan,
    costs: &cost_analysis::Costs,
    k: usize,
    name: &str,
    (counters, days): (&mut Table, &mut Table),
) -> Result<(i64, Unmeasured), RenderError> {
    let dev = &plan.devices[k];
    let (d, money) = (costs.decimals, |m: i64| {
        V::Num(minor_value(m, costs.decimals), costs.decimals)
    });
    let buckets: Vec<_> = store
        .scan_buckets(&dev.id, plan.start_ms, plan.end_ms)?
        .collect::<Result<_, _>>()?;
    let last_counted = buckets.iter().rev().find(|b| b.counter_last_wh >= 0);
    let opening = store
        .scan_raw(&dev.id, plan.start_ms, plan.end_ms)?
        .take(1_000)
        .find_map(|r| r.ok().filter(|r| r.reading.counter_wh.is_some()));
    let closing = match last_counted {
        Some(b) => store
            .scan_raw(&dev.id, b.start_ms, plan.end_ms)?
            .filter_map(Result::ok)
            .filter(|r| r.reading.counter_wh.is_some())
            .last(),
        None => None,
    };
    let (mut energy, mut u) = (0i64, Unmeasured::default());
    let day_rows = aggregate(buckets, Period::Day, plan.tz);
    for (p, day) in costs.periods.iter().enumerate() {
        let Some(b) = day_rows.iter().find(|b| b.start_ms == *day) else {
            continue;
        };
        energy += b.energy_mwh;
        u.merge(&b.unmeasured);
        let acc = costs
            .by_period_device
            .get(&(p, k))
            .copied()
            .unwrap_or_default();
        days.push(
            name,
            &Grouping::Day.label(*day, plan.tz),
            vec![
                V::Num(b.energy_mwh as f64 / 1e6, 3),
                V::Num(100.0 * b.unmeasured.measured_share(b.energy_mwh), 2),
                money(to_minor(acc.cost + acc.tax, d)),
            ],
        );
    }
    let kwh = |r: &Option<crate::store::RawRow>| {
        r.as_ref()
            .and_then(|r| r.reading.counter_wh)
            .map_or(V::Null, |c| V::Num(c as f64 / 1000.0, 3))
    };
    let time =
        |r: &Option<crate::store::RawRow>| r.as_ref().map_or(V::Null, |r| V::Time(r.reading.ts_ms));
    counters.push(
        name,
        "",
        vec![
            time(&opening),
            kwh(&opening),
            time(&closing),
            kwh(&closing),
            V::Num(energy as f64 / 1e6, 3),
        ],
    );
    Ok((energy, u))
}

/// The allocation part of `a` and the plan devices' share of the standing charge (minor
/// units) for the part of the bill's period the statement covers: a monthly statement within
/// a quarterly bill carries a third of the devices' share, never all of it.
fn standing_share(
    store: &Store,
    plan: &Plan,
    names: &[String],
    a: Option<&Allocation>,
    d: u8,
    cur: &str,
) -> Result<(i64, Option<Part>), RenderError> {
    let Some(a) = a else {
        return Ok((0, None));
    };
    let part = cost_allocation::part(store, plan, names, a, d, cur)?;
    let bill = store.bill(&a.bill_id)?.ok_or_else(|| {
        RenderError::Invalid(format!("allocation.bill_id: no bill {:?}", a.bill_id))
    })?;
    let overlap = (plan.end_ms.min(bill.end_ms) - plan.start_ms.max(bill.start_ms)).max(0);
    let covered = overlap as f64 / (bill.end_ms - bill.start_ms).max(1) as f64;
    // The devices' lines (the untracked line and the bill total follow them).
    let whole: i64 = part.tables[0]
        .rows
        .iter()
        .take(plan.devices.len())
        .map(|r| match r.values[2] {
            V::Num(x, _) => (x * 10f64.powi(i32::from(d))).round() as i64,
            _ => 0,
        })
        .sum();
    Ok(((whole as f64 * covered).round() as i64, Some(part)))
}

/// The tariff versions in force and the energy, cost and average price per band.
fn prices_table(plan: &Plan, costs: &cost_analysis::Costs) -> Vec<Table> {
    let d = costs.decimals;
    let mut versions = Table::new(
        "tariffs",
        "Tariffs in force",
        &[
            col("from", ""),
            col("to", ""),
            col("rates", ""),
            col("taxes", "%"),
        ],
    );
    for (c, a, b) in plan.tariffs.spans(plan.start_ms, plan.end_ms) {
        versions.push(
            "",
            "",
            vec![
                V::Time(a),
                V::Time(b),
                V::Text(c.describe()),
                V::Num(c.tax_ppm as f64 / 1e4, 4),
            ],
        );
    }
    let mut bands = Table::new(
        "bands",
        "Energy and price per band",
        &[
            col("energy", "kWh"),
            col("cost", &costs.currency),
            col("average_price", &format!("{} per kWh", costs.currency)),
        ],
    )
    .items("band");
    let mut per_band: std::collections::BTreeMap<usize, (i64, Pico)> = Default::default();
    for ((band, _), acc) in &costs.by_band {
        let e = per_band.entry(*band).or_default();
        e.0 += acc.mwh;
        e.1 += acc.cost + acc.tax;
    }
    for (band, (mwh, cost)) in per_band {
        let minor = to_minor(cost, d);
        let avg = if mwh > 0 {
            V::Num(minor_value(minor, d) / (mwh as f64 / 1e6), 4)
        } else {
            V::Null
        };
        let name = costs.labels.bands.get(band).cloned().unwrap_or_default();
        bands.push(
            &name,
            "",
            vec![
                V::Num(mwh as f64 / 1e6, 3),
                V::Num(minor_value(minor, d), d),
                avg,
            ],
        );
    }
    vec![versions, bands]
}

/// `by_energy` of the shortest recorded bill whose period covers the plan's range.
fn covering_bill(store: &Store, plan: &Plan) -> Result<Option<Allocation>, RenderError> {
    Ok(store
        .bills()?
        .into_iter()
        .filter(|b| b.start_ms <= plan.start_ms && b.end_ms >= plan.end_ms)
        .min_by_key(|b| b.end_ms - b.start_ms)
        .map(|b| Allocation {
            bill_id: b.bill_id,
            method: Method::ByEnergy,
        }))
}

/// The issued file: the header part put first (issuer, id, period, totals, signer), the
/// statement in the plan's format, signed. Also what the job records of it.
pub fn write(
    built: &Built,
    plan: &Plan,
    metadata: &Value,
) -> Result<(Vec<u8>, Value), RenderError> {
    let key = &built.key;
    use base64::Engine;
    let pk = base64::engine::general_purpose::STANDARD.encode(key.public_key());
    let mut header = Table::new(
        "statement",
        "Statement",
        &[col("value", ""), col("unit", "")],
    )
    .items("fact");
    let text = |s: &str| V::Text(s.to_owned());
    let devices: Vec<String> = plan
        .devices
        .iter()
        .map(|d| format!("{} ({})", d.name, d.shown_id))
        .collect();
    for (name, value) in [
        ("issuer", text(&built.issuer)),
        (
            "statement_id",
            text(metadata["export_id"].as_str().unwrap_or_default()),
        ),
        (
            "issued_at",
            text(metadata["created_at"].as_str().unwrap_or_default()),
        ),
        ("period_start", V::Time(plan.start_ms)),
        ("period_end", V::Time(plan.end_ms)),
        ("timezone", text(plan.tz.name())),
        ("devices", text(&devices.join("; "))),
    ] {
        header.push(name, "", vec![value, text("")]);
    }
    for (name, value, unit) in &built.facts {
        header.push(name, "", vec![value.clone(), text(unit)]);
    }
    header.push("public_key", "", vec![text(&pk), text("Ed25519")]);
    header.push("fingerprint", "", vec![text(&key.fingerprint()), text("")]);
    let mut report = built.report.clone();
    report.parts.insert(
        0,
        Part::new("statement", "Statement", vec![header], Vec::new()),
    );
    let mut meta = metadata.clone();
    meta["issuer"] = json!(built.issuer);
    let statement = crate::export::report::to_json(&report, &meta, &mut TzCache::new(plan.tz));
    let json = signed::sign_json(statement, key);
    let bytes = match plan.format {
        Format::Json => json,
        Format::Csv => {
            let mut rows = Vec::new();
            let limits = crate::export::pipeline::Limits {
                max_records: u64::MAX,
                max_bytes: u64::MAX,
                distinct_budget: 0,
            };
            let csv = Plan {
                delimiter: b',',
                include_headers: true,
                ..plan.clone()
            };
            crate::export::report::write(
                &report,
                &csv,
                &meta,
                &mut rows,
                std::path::Path::new("."),
                limits,
            )?;
            signed::sign_csv(rows, key)
        }
        _ => {
            let mut pdf = Vec::new();
            let generated = metadata["created_at"].as_str().unwrap_or_default();
            crate::export::format::pdf::write_report_noted(
                &mut pdf,
                &plan.pdf,
                generated,
                TzCache::new(plan.tz),
                &meta,
                &report,
                &format!(" · signed by {}", key.fingerprint()),
            )?;
            signed::sign_pdf(&pdf, &json, key)
                .map_err(|e| RenderError::Invalid(format!("signing the PDF: {e}")))?
        }
    };
    let summary = json!({"fingerprint": key.fingerprint(), "records": report.rows()});
    Ok((bytes, summary))
}
