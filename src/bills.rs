//! Bills reconciled with what the plugs measured: coverage, the untracked remainder (negative
//! when the plugs measured more than the bill: flagged, never hidden), the effective price, and
//! kasad's priced energy cost against the bill's energy charge (a check on the tariff).

use crate::domain::DeviceType;
use crate::domain::bill::Bill;
use crate::store::{self, Store};
use crate::tariff::Versions;
use crate::tariff::engine;

/// A bill next to the measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reconciled {
    /// Energy of every plug and outlet in the period, kWh.
    pub measured_kwh: f64,
    /// Measured ÷ billed.
    pub coverage: f64,
    /// Billed − measured, kWh (negative: the plugs measured more than the bill).
    pub untracked_kwh: f64,
    /// (total − standing charge) ÷ kWh.
    pub effective_price: f64,
    /// kasad's cost of the measured energy under the tariff, taxes included.
    pub priced_energy_cost: f64,
    /// Priced cost − the bill's energy charge scaled to the measured share.
    pub difference: f64,
}

/// Reconciles `bill` with the store's energy of every metered plug and outlet.
pub fn reconcile(store: &Store, tariffs: &Versions, bill: &Bill) -> store::Result<Reconciled> {
    let ids: Vec<_> = store
        .device_records()?
        .iter()
        .filter(|r| r.info.has_emeter && r.info.device_type != DeviceType::Strip)
        .map(|r| r.info.device_id.clone())
        .collect();
    let (mut mwh, mut cost) = (0i64, 0i128);
    engine::price(store, tariffs, &ids, bill.start_ms, bill.end_ms, |p| {
        mwh += p.mwh;
        cost += p.cost + p.tax;
    })?;
    let measured_kwh = mwh as f64 / 1e6;
    let b = &bill.body;
    let effective_price = b.energy_charge() / b.kwh;
    let priced_energy_cost = cost as f64 / 1e12;
    Ok(Reconciled {
        measured_kwh,
        coverage: measured_kwh / b.kwh,
        untracked_kwh: b.kwh - measured_kwh,
        effective_price,
        priced_energy_cost,
        // The bill's price applied to the same energy: what the plugs' share of the energy
        // charge is; the difference says how far the configured tariff is from the bill.
        difference: priced_energy_cost - measured_kwh * effective_price,
    })
}
