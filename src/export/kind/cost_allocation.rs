//! cost_analysis's `allocation`: a recorded bill shared out to the selected devices, with an
//! "untracked" line, so that the lines add up to the bill's total to the cent.
//!
//! Over the bill's period, each device's energy is priced at the bill's effective price
//! ((total − standing charge) ÷ kWh) and the energy the devices did not measure is the
//! untracked line at the same price. When they measured more than the bill (the remainder is
//! negative), the energy charge is shared by their energy alone and the untracked line shows
//! the negative kWh at no cost. The standing charge is shared `by_energy` (the untracked energy
//! taking its share), `equal`ly per device, or by `weights` per device or `room:` (a room's
//! weight split equally among its devices). Parts are apportioned exactly and rounded so that
//! the lines add up to the total (largest remainder).

use crate::domain::bill::Bill;
use crate::export::pipeline::RenderError;
use crate::export::plan::Plan;
use crate::export::report::{Line, Part, Table, V, col};
use crate::export::request::{RequestError, bad};
use crate::store::Store;
use crate::tariff::engine::{Pico, apportion, minor_value, round_parts};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How the standing charge is shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// In proportion to energy (the untracked energy included).
    ByEnergy,
    /// The same for every device.
    Equal,
    /// By weight per device id, name or `room:` name.
    Weights(BTreeMap<String, f64>),
}

/// `allocation` of a cost_analysis body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    /// The bill.
    pub bill_id: String,
    /// `"by_energy"`, `"equal"` or `{"weights": {…}}`.
    pub method: Method,
}

/// Parses `allocation` of a body.
pub fn parse(v: Option<&serde_json::Value>) -> Result<Option<Allocation>, RequestError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let a: Allocation = serde_json::from_value(v.clone()).map_err(|e| {
        bad(format!(
            "allocation must be {{\"bill_id\", \"method\": \"by_energy\" | \"equal\" | {{\"weights\": {{device or room: weight}}}}}} ({e})"
        ))
    })?;
    if let Method::Weights(w) = &a.method
        && (w.is_empty()
            || w.len() > 200
            || w.values()
                .any(|x| !(x.is_finite() && (0.0..=1e6).contains(x))))
    {
        return Err(bad(
            "allocation.method.weights: 1 to 200 weights from 0 to 1000000",
        ));
    }
    Ok(Some(a))
}

fn pico(x: f64) -> Pico {
    (x * 1e12).round() as Pico
}

/// The standing-charge weights of the plan's devices (and last, the untracked line).
fn weights(method: &Method, plan: &Plan, energy: &[i64], untracked: i64) -> Vec<i128> {
    let n = plan.devices.len();
    let mut w: Vec<i128> = match method {
        Method::ByEnergy => energy.iter().map(|e| i128::from(*e)).collect(),
        Method::Equal => vec![1; n],
        Method::Weights(map) => {
            let (rooms, of) = super::cost_analysis::rooms(plan);
            let mut w = vec![0i128; n];
            for (key, weight) in map {
                let milli = (weight * 1_000.0).round() as i128;
                if let Some(room) = key.strip_prefix("room:") {
                    let members: Vec<usize> = (0..n)
                        .filter(|&k| rooms[of[k]].eq_ignore_ascii_case(room.trim()))
                        .collect();
                    for &k in &members {
                        // Shared equally: each gets weight ÷ members, kept exact by scaling.
                        w[k] += milli * 1_000_000 / members.len() as i128;
                    }
                } else if let Some(k) = plan
                    .devices
                    .iter()
                    .position(|d| d.id.as_str() == key || d.name == *key)
                {
                    w[k] += milli * 1_000_000;
                }
            }
            w
        }
    };
    w.push(match method {
        Method::ByEnergy => i128::from(untracked.max(0)),
        _ => 0,
    });
    w
}

/// The allocation part for `bill`, over the plan's devices labelled `names`.
pub fn part(
    store: &Store,
    plan: &Plan,
    names: &[String],
    a: &Allocation,
    decimals: u8,
    currency: &str,
) -> Result<Part, RenderError> {
    let bill: Bill = store.bill(&a.bill_id)?.ok_or_else(|| {
        RenderError::Invalid(format!("allocation.bill_id: no bill {:?}", a.bill_id))
    })?;
    let mut energy = Vec::with_capacity(plan.devices.len());
    for d in &plan.devices {
        let mut mwh = 0i64;
        for b in store.scan_buckets(&d.id, bill.start_ms, bill.end_ms)? {
            mwh += b?.energy_mwh;
        }
        energy.push(mwh);
    }
    let billed = (bill.body.kwh * 1e6).round() as i64;
    let untracked = billed - energy.iter().sum::<i64>();
    let mut by_energy: Vec<i128> = energy.iter().map(|e| i128::from(*e)).collect();
    by_energy.push(i128::from(untracked.max(0)));
    let charge = apportion(pico(bill.body.energy_charge()), &by_energy);
    let sw = weights(&a.method, plan, &energy, untracked);
    if sw.iter().all(|x| *x == 0) && bill.body.standing_charge.unwrap_or(0.0) > 0.0 {
        return Err(RenderError::Invalid(
            "allocation.method: every weight is 0".into(),
        ));
    }
    let standing = apportion(pico(bill.body.standing_charge.unwrap_or(0.0)), &sw);
    let totals: Vec<Pico> = charge.iter().zip(&standing).map(|(c, s)| c + s).collect();
    let total_minor = round_parts(&totals, decimals);
    let energy_minor = round_parts(&charge, decimals);
    let mut t = Table::new(
        "allocation",
        &format!(
            "The bill of {} to {} shared out",
            bill.body.start, bill.body.end
        ),
        &[
            col("energy", "kWh"),
            col("energy_cost", currency),
            col("standing_charge", currency),
            col("total", currency),
        ],
    )
    .items("line");
    let money = |m: i64| V::Num(minor_value(m, decimals), decimals);
    let labels = names
        .iter()
        .map(String::as_str)
        .chain(std::iter::once("untracked"));
    let kwh = energy.iter().copied().chain(std::iter::once(untracked));
    for (k, (label, mwh)) in labels.zip(kwh).enumerate() {
        t.rows.push(Line {
            item: label.to_owned(),
            period: String::new(),
            values: vec![
                V::Num(mwh as f64 / 1e6, 3),
                money(energy_minor[k]),
                money(total_minor[k] - energy_minor[k]),
                money(total_minor[k]),
            ],
        });
    }
    let sum: i64 = total_minor.iter().sum();
    t.rows.push(Line {
        item: "bill total".into(),
        period: String::new(),
        values: vec![
            V::Num(bill.body.kwh, 3),
            money(energy_minor.iter().sum()),
            money(sum - energy_minor.iter().sum::<i64>()),
            money(sum),
        ],
    });
    Ok(Part::new(
        "allocation",
        "The bill shared out",
        vec![t],
        Vec::new(),
    ))
}
