//! Insights: what the readings say about where the money goes, computed on the Pi from the
//! 15-minute rollups and, where a statistic needs them, the raw readings.
//!
//! Per metered device: its always-on (standby) power and what that costs a year
//! ([`always_on`]), the duty cycles of a cycling load and their drift ([`cycles`]), the runs of a
//! programme load ([`runs`]), and its unusual days ([`unusual`]); for the household: the
//! always-on total and this billing period's cost forecast ([`forecast`]). Which statistic
//! applies is the device's [`LoadKind`], learned ([`classify`]) unless set.
//!
//! Owns: the [`Insights`] service, which caches a report for a poll cycle and each past day's
//! duty for good; [`compute`] reads the store and the tariff.

pub mod always_on;
pub mod compute;
pub mod cycles;
pub mod forecast;
pub mod runs;
pub mod stats;
pub mod unusual;

use crate::domain::labels::LoadKind;
use crate::domain::{DeviceId, DeviceType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One reading as the statistics see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// When, UTC ms.
    pub ts_ms: i64,
    /// Power, W.
    pub power_w: f64,
    /// Energy of the interval ending at it, Wh.
    pub energy_wh: i64,
}

/// Cycles a day from which a load is taken as cycling.
pub const CYCLING_PER_DAY: f64 = 6.0;
/// Power variation within runs (coefficient of variation) from which a load is a programme.
pub const PROGRAMME_CV: f64 = 0.4;
/// Hours of readings below which the kind is not learned yet (taken as steady).
pub const KIND_MIN_HOURS: f64 = 6.0;

/// The kind of load `points` (oldest first, about a week) show: cycling when it switches
/// on and off at least [`CYCLING_PER_DAY`] times a day; a programme when it has runs that
/// pause inside or vary strongly in power; steady otherwise (and with too little history).
pub fn classify(points: &[Point], run_end_ms: i64) -> LoadKind {
    let span = points.last().map_or(0, |l| l.ts_ms) - points.first().map_or(0, |f| f.ts_ms);
    if (span as f64) < KIND_MIN_HOURS * 3_600_000.0 {
        return LoadKind::Steady;
    }
    if let Some(levels) = cycles::Levels::learn(points) {
        let d = cycles::duty(points, &levels);
        let days = d.observed_ms as f64 / 86_400_000.0;
        if days > 0.0 && f64::from(d.cycles) / days >= CYCLING_PER_DAY {
            return LoadKind::Cycling;
        }
    }
    if let Some(threshold_w) = runs::learn_threshold(points) {
        let rule = runs::RunRule {
            threshold_w,
            end_after_ms: run_end_ms,
            min_duration_ms: runs::MIN_DURATION_MS,
        };
        let found = runs::runs(points, &rule);
        if found
            .iter()
            .any(|r| r.paused_readings > 0 || r.power_cv >= PROGRAMME_CV)
        {
            return LoadKind::Programme;
        }
    }
    LoadKind::Steady
}

/// What a cycling load did.
#[derive(Debug, Clone, PartialEq)]
pub struct CycleInsight {
    /// Today so far.
    pub today: cycles::Duty,
    /// Mean cycles per complete day over the last 7.
    pub per_day: Option<f64>,
    /// Today's duty against the trailing 28 days.
    pub drift: Option<cycles::Drift>,
}

/// A run with its cost.
#[derive(Debug, Clone, PartialEq)]
pub struct PricedRun {
    /// The run.
    pub run: runs::Run,
    /// Its energy's cost, taxes included.
    pub cost: f64,
}

/// What a programme load did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInsight {
    /// Runs of the last 7 days, oldest first.
    pub runs: Vec<PricedRun>,
    /// Runs per week.
    pub per_week: f64,
    /// The threshold used, W.
    pub threshold_w: f64,
}

/// Everything about one metered device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInsight {
    /// The device.
    pub id: DeviceId,
    /// Its name.
    pub name: String,
    /// Its room.
    pub room: Option<String>,
    /// Plug, strip or outlet.
    pub device_type: DeviceType,
    /// Always-on power.
    pub always_on: always_on::AlwaysOn,
    /// Its cost per year.
    pub always_on_cost_per_year: f64,
    /// The kind of load (learned unless set).
    pub load_kind: LoadKind,
    /// Set on the device rather than learned.
    pub kind_set: bool,
    /// Cycles (cycling loads).
    pub cycles: Option<CycleInsight>,
    /// Runs (programme loads).
    pub runs: Option<RunInsight>,
    /// Unusual days among the last 14.
    pub unusual: Vec<unusual::Unusual>,
    /// This billing period's energy so far, kWh.
    pub period_kwh: f64,
    /// Its cost, taxes included.
    pub period_cost: f64,
}

impl DeviceInsight {
    /// The line shown on the device's card.
    pub fn summary(&self) -> String {
        if self.always_on.learning() {
            return format!(
                "learning ({:.0} h of readings so far)",
                self.always_on.basis_hours
            );
        }
        if let Some(c) = &self.cycles {
            let state = match &c.drift {
                Some(d) if d.drifting() => format!("duty {:+.0} % against its usual", d.pct),
                Some(_) => "normal".into(),
                None => "baseline still learning".into(),
            };
            return format!("{} cycles today, {state}", c.today.cycles);
        }
        if let Some(r) = &self.runs {
            return match r.runs.last() {
                Some(last) if last.run.running => "running now".into(),
                Some(last) => format!(
                    "{} runs this week, last {:.2} kWh",
                    r.runs.len(),
                    last.run.energy_wh as f64 / 1_000.0
                ),
                None => "no runs this week".into(),
            };
        }
        format!("always on {:.1} W", self.always_on.watts)
    }
}

/// The billing period's cost and where it is heading.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// Period start, UTC ms.
    pub period_start_ms: i64,
    /// Period end (exclusive), UTC ms.
    pub period_end_ms: i64,
    /// Cost so far, taxes included.
    pub cost_so_far: f64,
    /// The projection (none without a past day).
    pub projection: Option<forecast::Projection>,
    /// The budget of a period, if set.
    pub budget: Option<f64>,
    /// Each day of the period so far with its cost.
    pub days: Vec<forecast::DayCost>,
}

/// The insights of the household.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// When computed, UTC ms.
    pub computed_ms: i64,
    /// The tariff's currency.
    pub currency: String,
    /// Every metered device, in the order of the device list.
    pub devices: Vec<DeviceInsight>,
    /// Always-on power of the household, W (plugs and outlets; strips are their sums).
    pub always_on_total_w: f64,
    /// Its cost per year.
    pub always_on_total_cost_per_year: f64,
    /// The forecast.
    pub forecast: Forecast,
}

/// What the statistics are tuned by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Time below the threshold that ends a run, ms.
    pub run_end_ms: i64,
    /// When a day is unusual.
    pub unusual: unusual::Rule,
    /// Budget of a billing period.
    pub budget: Option<f64>,
}

impl Params {
    /// The parameters in force: `config`'s, with a budget set through the API over it.
    pub fn in_force(
        config: &crate::config::Insights,
        store: &crate::store::Store,
    ) -> crate::store::Result<Self> {
        let stored: Option<Stored> = store.setting(SETTING)?;
        Ok(Self::of(config, stored.map(|s| s.monthly_budget)))
    }

    /// From the `[insights]` settings and a budget set through the API (which wins).
    pub fn of(s: &crate::config::Insights, stored_budget: Option<Option<f64>>) -> Self {
        Self {
            run_end_ms: i64::from(s.run_end_minutes) * 60_000,
            unusual: unusual::Rule {
                min_kwh: s.unusual_min_kwh,
                ..unusual::Rule::default()
            },
            budget: stored_budget.unwrap_or(s.monthly_budget),
        }
    }
}

/// Past days' duty by device, day start and thresholds: they never change once the day is over.
pub type DayCache = HashMap<(DeviceId, i64, i64, i64), cycles::Duty>;

/// What `PUT /api/insights/settings` stores (setting `"insights"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stored {
    /// Budget of a billing period (`null`: none, whatever the config file says).
    pub monthly_budget: Option<f64>,
}

/// The name of the stored setting.
pub const SETTING: &str = "insights";

/// The service: one report per poll cycle, past days' duty kept.
#[derive(Debug, Default)]
pub struct Insights {
    config: crate::config::Insights,
    report: Mutex<Option<Arc<Report>>>,
    days: Mutex<DayCache>,
}

impl Insights {
    /// A service tuned by the `[insights]` settings.
    pub fn new(config: crate::config::Insights) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// The parameters in force (see [`Params::in_force`]).
    pub fn params(&self, store: &crate::store::Store) -> crate::store::Result<Params> {
        Params::in_force(&self.config, store)
    }

    /// The report as of `now_ms`: the cached one when younger than `max_age_ms` and not from
    /// the future (a clock set back), else a new one.
    pub fn report(
        &self,
        store: &crate::store::Store,
        tariffs: &crate::tariff::Versions,
        now_ms: i64,
        tz: chrono_tz::Tz,
        max_age_ms: i64,
    ) -> crate::store::Result<Arc<Report>> {
        if let Some(r) = self.report.lock().expect("insights lock").as_ref()
            && (0..max_age_ms).contains(&(now_ms - r.computed_ms))
        {
            return Ok(r.clone());
        }
        let params = self.params(store)?;
        let mut days = std::mem::take(&mut *self.days.lock().expect("insights lock"));
        let r = compute::compute(store, tariffs, &params, now_ms, tz, &mut days);
        *self.days.lock().expect("insights lock") = days;
        let r = Arc::new(r?);
        *self.report.lock().expect("insights lock") = Some(r.clone());
        Ok(r)
    }

    /// Forgets the cached report (after a setting or a device's labels changed).
    pub fn invalidate(&self) {
        *self.report.lock().expect("insights lock") = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(from_s: i64, hours: i64, step_s: i64, w: impl Fn(i64) -> f64) -> Vec<Point> {
        (0..hours * 3_600 / step_s)
            .map(|i| {
                let s = from_s + i * step_s;
                Point {
                    ts_ms: s * 1_000,
                    power_w: w(s),
                    energy_wh: 0,
                }
            })
            .collect()
    }

    #[test]
    fn loads_are_classified_by_what_they_do() {
        let run_end = runs::END_AFTER_MS;
        let fridge = series(0, 48, 30, |s| if s % 2_700 < 900 { 110.0 } else { 1.2 });
        assert_eq!(classify(&fridge, run_end), LoadKind::Cycling);
        // A TV: 95 W ±8 for four hours each evening, 0.5 W otherwise.
        let tv = series(0, 48, 30, |s| {
            let h = s % 86_400 / 3_600;
            if (19..23).contains(&h) {
                95.0 + (s % 17 - 8) as f64
            } else {
                0.5
            }
        });
        assert_eq!(classify(&tv, run_end), LoadKind::Steady);
        // A washer each morning: heating, a pause, washing, spinning.
        let washer = series(0, 48, 30, |s| match s % 86_400 {
            28_800..30_000 => 2_000.0,
            30_000..30_400 => 3.0,
            30_400..32_200 => 200.0,
            32_200..32_800 => 500.0,
            _ => 1.0,
        });
        assert_eq!(classify(&washer, run_end), LoadKind::Programme);
        // Two hours of anything: too little to tell.
        assert_eq!(classify(&fridge[..240], run_end), LoadKind::Steady);
    }
}
