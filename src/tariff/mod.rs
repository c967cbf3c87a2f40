//! Electricity tariffs over time: the version history (each version applies from its
//! `effective_from` until the next one) and the cost engine. The model people write and its
//! validation into a [`Compiled`] form are `crate::domain::tariff`'s.
//!
//! A tariff prices energy with `rates` (flat, time-of-use or tiered; default: flat at
//! `price_per_kwh`), optionally replaced in date ranges by `seasons`; adds `fixed_charges`
//! (per day or per billing month, once per household) and `taxes` (percent of energy cost and
//! fixed charges). Rules are evaluated in the tariff's `timezone`. Prices keep up to 6
//! decimals; money is computed exactly ([`engine`]) and rounded to `decimals` at the end.
//!
//! - [`engine`]: cost per device per 15-minute bucket, tiers over the billing month, fixed
//!   charges, exact apportioning.

pub mod compare;
pub mod engine;
pub mod prices;

use chrono_tz::Tz;

use crate::domain::tariff::err;
pub use crate::domain::tariff::{
    Band, Compiled, FixedCharge, Micro, Model, Per, Rates, Season, Tariff, TariffError, Tax, Tier,
    TouPeriod, micro_text, parse_start,
};

/// Why the versions in force cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// A stored version does not compile.
    #[error("stored tariff: {0}")]
    Tariff(#[from] TariffError),
}

/// Tariff versions in force over time, oldest first; each applies until the next begins.
#[derive(Debug, Clone, PartialEq)]
pub struct Versions(pub Vec<Compiled>);

impl Versions {
    /// Compiles versions, oldest first. The first must be valid; a later version that does
    /// not compile or does not start after the one before is refused with `strict`, and
    /// otherwise skipped with a warning (stored history must never stop every export).
    pub fn compile_with(
        list: &[Tariff],
        default_tz: Tz,
        strict: bool,
    ) -> Result<Self, TariffError> {
        let mut out: Vec<Compiled> = Vec::new();
        for (i, t) in list.iter().enumerate() {
            let c = Compiled::new(t, default_tz)
                .map_err(|e| err(format!("versions[{i}].{}", e.field), e.message))
                .and_then(|c| {
                    if out.last().is_some_and(|p| p.from_ms >= c.from_ms) {
                        Err(err(
                            format!("versions[{i}].effective_from"),
                            "must be later than the previous version's",
                        ))
                    } else {
                        Ok(c)
                    }
                });
            match c {
                Ok(c) => out.push(c),
                Err(e) if strict || out.is_empty() => return Err(e),
                Err(e) => tracing::warn!(error = %e, "stored tariff version skipped"),
            }
        }
        if out.is_empty() {
            return Err(err("versions", "no tariff"));
        }
        Ok(Self(out))
    }

    /// [`Self::compile_with`], skipping bad later versions.
    pub fn compile(list: &[Tariff], default_tz: Tz) -> Result<Self, TariffError> {
        Self::compile_with(list, default_tz, false)
    }

    /// Index of the version in force at `ts_ms` (the first one before any begins).
    pub fn index_at(&self, ts_ms: i64) -> usize {
        self.0
            .partition_point(|c| c.from_ms <= ts_ms)
            .saturating_sub(1)
    }

    /// The version in force at `ts_ms` (the first one before any begins).
    pub fn at(&self, ts_ms: i64) -> &Compiled {
        &self.0[self.index_at(ts_ms)]
    }

    /// Versions in force somewhere in `[start, end)`, with the part of the range each holds.
    pub fn spans(&self, start: i64, end: i64) -> Vec<(&Compiled, i64, i64)> {
        let mut out = Vec::new();
        for (i, c) in self.0.iter().enumerate() {
            let from = if i == 0 { i64::MIN } else { c.from_ms };
            let to = self.0.get(i + 1).map_or(i64::MAX, |n| n.from_ms);
            let (a, b) = (from.max(start), to.min(end));
            if a < b {
                out.push((c, a, b));
            }
        }
        out
    }

    /// The versions in force: the stored ones, or `seed` (the config file's tariff) before any
    /// was stored.
    pub fn load(store: &crate::store::Store, seed: &Tariff, tz: Tz) -> Result<Self, LoadError> {
        let mut list = store.tariffs()?;
        if list.is_empty() {
            list.push(seed.clone());
        }
        Ok(Self::compile(&list, tz)?)
    }

    /// The newest version.
    pub fn current(&self) -> &Compiled {
        self.0.last().expect("at least one version")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tou() -> Tariff {
        serde_json::from_value(serde_json::json!({
            "currency": "USD",
            "rates": {"type": "time_of_use", "default_price_per_kwh": 0.1,
                "periods": [{"name": "night", "start": "22:00", "end": "06:00", "price_per_kwh": 0.05, "days": [5]}]}
        }))
        .unwrap()
    }

    #[test]
    fn periods_past_midnight_belong_to_the_day_they_start() {
        let c = Compiled::new(&tou(), Tz::UTC).unwrap();
        let Model::Tou(b, _, _) = &c.base else {
            panic!()
        };
        // Friday 23:00 and Saturday 05:45 are in; Saturday 23:00 and Friday 05:00 are out.
        assert!(b[0].holds(5, 4, 23 * 60));
        assert!(b[0].holds(6, 5, 5 * 60 + 45));
        assert!(!b[0].holds(6, 5, 23 * 60));
        assert!(!b[0].holds(5, 4, 5 * 60));
        // A holiday Friday counts as a Sunday: its night is out, and so is its morning after.
        assert!(!b[0].holds(7, 4, 23 * 60));
        assert!(!b[0].holds(6, 7, 5 * 60));
    }

    #[test]
    fn invalid_tariffs_name_the_field() {
        let mut t = tou();
        t.billing_day = 31;
        assert_eq!(Compiled::new(&t, Tz::UTC).unwrap_err().field, "billing_day");
        let t: Tariff = serde_json::from_value(serde_json::json!({"rates": {"type": "tiered",
            "tiers": [{"up_to_kwh": 100, "price_per_kwh": 0.1}, {"up_to_kwh": 50, "price_per_kwh": 0.2}]}}))
        .unwrap();
        assert_eq!(
            Compiled::new(&t, Tz::UTC).unwrap_err().field,
            "rates.tiers[1].up_to_kwh"
        );
        let t: Tariff = serde_json::from_value(serde_json::json!({"rates": {"type": "time_of_use",
            "default_price_per_kwh": 0.1, "periods": [{"name": "p", "start": "16:10", "end": "18:00", "price_per_kwh": 0.2}]}}))
        .unwrap();
        assert!(
            Compiled::new(&t, Tz::UTC)
                .unwrap_err()
                .message
                .contains("quarter hour")
        );
    }

    #[test]
    fn billing_periods_start_on_the_billing_day() {
        let mut t = Tariff {
            billing_day: 15,
            ..Tariff::default()
        };
        t.timezone = Some("America/New_York".into());
        let c = Compiled::new(&t, Tz::UTC).unwrap();
        let tz: Tz = "America/New_York".parse().unwrap();
        let d = |y, m, day| {
            crate::domain::rollup::local_midnight(
                chrono::NaiveDate::from_ymd_opt(y, m, day).unwrap(),
                tz,
            )
        };
        assert_eq!(c.billing_start(d(2024, 3, 10) + 3_600_000), d(2024, 2, 15));
        assert_eq!(c.billing_start(d(2024, 3, 15)), d(2024, 3, 15));
        assert_eq!(c.billing_end(d(2024, 2, 15)), d(2024, 3, 15));
    }
}
