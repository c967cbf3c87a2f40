//! The "Provenance" table that cost analyses, system reports and statements carry: per device
//! and in all, the energy of the range by how it was obtained and the share not measured.

use crate::domain::provenance::{Source, Unmeasured};
use crate::export::plan::Plan;
use crate::export::report::{Column, Line, Table, V, col};
use crate::store::{self, Store};

/// Energy (mWh) and its unmeasured part of each plan device over the plan's range.
pub fn of_plan(store: &Store, plan: &Plan) -> store::Result<Vec<(i64, Unmeasured)>> {
    plan.devices
        .iter()
        .map(|d| store.provenance(&d.id, plan.start_ms, plan.end_ms))
        .collect()
}

/// The share (0–1) of `energy_mwh` that was not measured.
pub fn not_measured_share(energy_mwh: i64, u: &Unmeasured) -> f64 {
    1.0 - u.measured_share(energy_mwh)
}

/// The table: one row per device (labelled by `names`) and a total row.
pub fn table(names: &[String], parts: &[(i64, Unmeasured)]) -> Table {
    let mut columns: Vec<Column> = vec![col("energy", "kWh")];
    columns.extend(Source::ALL.iter().map(|s| col(s.name(), "kWh")));
    columns.push(col("not_measured", "%"));
    let line = |item: String, e: i64, u: &Unmeasured| {
        let mut values = vec![V::Num(e as f64 / 1e6, 3)];
        values.extend(
            Source::ALL
                .iter()
                .map(|s| V::Num(u.of(*s, e) as f64 / 1e6, 3)),
        );
        values.push(V::Num(100.0 * not_measured_share(e, u), 2));
        Line {
            item,
            period: String::new(),
            values,
        }
    };
    let mut rows: Vec<Line> = names
        .iter()
        .zip(parts)
        .map(|(n, (e, u))| line(n.clone(), *e, u))
        .collect();
    let mut all = (0i64, Unmeasured::default());
    for (e, u) in parts {
        all.0 += e;
        all.1.merge(u);
    }
    rows.push(line("All devices".into(), all.0, &all.1));
    Table {
        key: "provenance",
        title: "Provenance of the energy".into(),
        item: Some("device"),
        period: None,
        columns,
        rows,
        vertical: false,
    }
}
