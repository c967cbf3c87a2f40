//! cost_analysis's `compare_tariffs`: the selected devices' history of the range priced under
//! each tariff as if in force all along (as `POST /api/tariffs/compare` does), a table of the
//! totals with the savings against the first, and a chart of each tariff's cost per month.

use crate::export::pipeline::RenderError;
use crate::export::plan::Plan;
use crate::export::report::{Chart, ChartKind, Line, Part, Table, V, col};
use crate::export::request::{RequestError, bad};
use crate::store::Store;
use crate::tariff::Compiled;
use crate::tariff::compare::price_under;
use crate::tariff::engine::minor_value;

pub use crate::tariff::compare::Named;

/// Parses `compare_tariffs` ([`crate::tariff::compare::named`]; absent: none).
pub fn parse(v: Option<&serde_json::Value>) -> Result<Vec<Named>, RequestError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let list = v.as_array().map(Vec::as_slice).unwrap_or(&[]);
    crate::tariff::compare::named(list, "compare_tariffs", chrono_tz::Tz::UTC).map_err(bad)
}

/// The "What if" part.
pub fn part(store: &Store, plan: &Plan, list: &[Named]) -> Result<Part, RenderError> {
    let ids: Vec<_> = plan.devices.iter().map(|d| d.id.clone()).collect();
    let mut priced = Vec::new();
    for n in list {
        let c =
            Compiled::new(&n.tariff, plan.tz).map_err(|e| RenderError::Invalid(e.to_string()))?;
        priced.push((
            n,
            c.source.currency.clone(),
            price_under(store, &c, &ids, plan.start_ms, plan.end_ms, plan.tz)?,
        ));
    }
    let first = priced.first().map_or(0, |p| p.2.total);
    let cur = priced.first().map_or(String::new(), |p| p.1.clone());
    let mut t = Table::new(
        "what_if",
        "The same energy under other tariffs",
        &[
            col("energy_cost", &cur),
            col("fixed_charges", &cur),
            col("taxes", &cur),
            col("total", &cur),
            col("savings", &cur),
        ],
    )
    .items("tariff");
    for (n, _, p) in &priced {
        let money = |m: i64| V::Num(minor_value(m, p.decimals), p.decimals);
        t.rows.push(Line {
            item: n.name.clone(),
            period: String::new(),
            values: vec![
                money(p.energy_cost),
                money(p.fixed_charges),
                money(p.taxes),
                money(p.total),
                money(first - p.total),
            ],
        });
    }
    let labels: Vec<V> = priced.first().map_or(Vec::new(), |p| {
        p.2.per_month
            .iter()
            .map(|(m, _)| {
                use chrono::TimeZone;
                V::Text(
                    plan.tz
                        .timestamp_millis_opt(*m)
                        .unwrap()
                        .format("%Y-%m")
                        .to_string(),
                )
            })
            .collect()
    });
    let chart = Chart {
        title: format!("Cost per month under each tariff ({cur})"),
        unit: "",
        kind: ChartKind::Lines,
        label_name: "month",
        labels,
        series: priced
            .iter()
            .map(|(n, _, p)| {
                (
                    n.name.clone(),
                    p.per_month
                        .iter()
                        .map(|(_, m)| minor_value(*m, p.decimals))
                        .collect(),
                )
            })
            .collect(),
    };
    Ok(Part::new("what_if", "What if", vec![t], vec![chart]))
}
