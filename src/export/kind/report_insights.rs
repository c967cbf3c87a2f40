//! The system_report's `insights` section: the household's always-on power and this billing
//! period's forecast, then per device its always-on power and yearly cost, its kind and what it
//! did (cycles or runs), and its unusual days — as `GET /api/insights` says them as of the
//! report's end (or now, for a range that ends later).

use super::system_report::Runtime;
use crate::export::pipeline::RenderError;
use crate::export::plan::Plan;
use crate::export::report::{Part, Table, V, col};
use crate::insights::{DayCache, Params, compute::compute};
use crate::store::Store;

/// Name and title of the section.
pub const NAME: &str = "insights";
/// Heading in documents.
pub const TITLE: &str = "Insights";

fn text(s: impl Into<String>) -> V {
    V::Text(s.into())
}

/// The section for the plan's devices.
pub fn part(
    store: &Store,
    plan: &Plan,
    names: &[String],
    runtime: Option<&Runtime>,
    now_ms: i64,
) -> Result<Part, RenderError> {
    let config = runtime.map(|r| r.insights.clone()).unwrap_or_default();
    let params = Params::in_force(&config, store)?;
    let at = now_ms.min(plan.end_ms - 1);
    let rep = compute(
        store,
        &plan.tariffs,
        &params,
        at,
        plan.tz,
        &mut DayCache::new(),
    )?;
    let cur = rep.currency.clone();
    let f = &rep.forecast;
    let mut household = Table::new(
        "household",
        "The household",
        &[col("value", ""), col("unit", "")],
    )
    .items("what");
    let money = |x: f64| V::Num(x, 2);
    let p = f.projection;
    for (what, v, unit) in [
        ("always-on power", V::Num(rep.always_on_total_w, 1), "W"),
        (
            "its cost per year",
            money(rep.always_on_total_cost_per_year),
            cur.as_str(),
        ),
        ("billing period from", V::Time(f.period_start_ms), ""),
        ("billing period to", V::Time(f.period_end_ms), ""),
        ("cost so far", money(f.cost_so_far), cur.as_str()),
        (
            "projected cost",
            p.map_or(V::Null, |x| money(x.projected)),
            cur.as_str(),
        ),
        (
            "projected low",
            p.map_or(V::Null, |x| money(x.low)),
            cur.as_str(),
        ),
        (
            "projected high",
            p.map_or(V::Null, |x| money(x.high)),
            cur.as_str(),
        ),
        ("budget", f.budget.map_or(V::Null, money), cur.as_str()),
    ] {
        household.push(what, "", vec![v, text(unit)]);
    }
    let mut devices = Table::new(
        "always_on",
        "Always-on power and what each device does",
        &[
            col("always_on", "W"),
            col("per_year", "kWh"),
            col("cost_per_year", &cur),
            col("basis", "h"),
            col("kind", ""),
            col("summary", ""),
        ],
    )
    .items("device");
    let mut unusual = Table::new(
        "unusual_days",
        "Unusual days (against the same weekday of the weeks before)",
        &[col("energy", "kWh"), col("typical", "kWh")],
    )
    .items("device")
    .periods("date");
    for (k, d) in plan.devices.iter().enumerate() {
        let Some(i) = rep.devices.iter().find(|x| x.id == d.id) else {
            continue;
        };
        let name = &names[k];
        devices.push(
            name,
            "",
            vec![
                V::Num(i.always_on.watts, 1),
                V::Num(i.always_on.kwh_per_year(), 1),
                money(i.always_on_cost_per_year),
                V::Num(i.always_on.basis_hours, 0),
                text(i.load_kind.name()),
                text(i.summary()),
            ],
        );
        for u in &i.unusual {
            unusual.push(
                name,
                &u.date.to_string(),
                vec![V::Num(u.kwh, 3), V::Num(u.typical_kwh, 3)],
            );
        }
    }
    Ok(Part::new(
        NAME,
        TITLE,
        vec![household, devices, unusual],
        Vec::new(),
    ))
}
