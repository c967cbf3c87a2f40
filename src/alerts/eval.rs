//! What each rule says about each of its devices now: a condition that holds (with the
//! message and value to show), one that cleared, an event (a run finished), or nothing new.
//! Pure: the caller gathers the devices' state ([`DeviceNow`]) and the daily insights.

use super::tracker::Finished;
use crate::domain::alert::{Kind, Rule};
use crate::insights::{DeviceInsight, Report};

/// One device as a poll cycle leaves it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceNow {
    /// Device id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Newest reading, UTC ms.
    pub last_reading_ms: Option<i64>,
    /// Power of the newest fresh reading, W.
    pub power_w: Option<f64>,
    /// Energy today, kWh.
    pub today_kwh: f64,
}

/// What a rule says about one device (or the household).
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// The condition holds.
    Holds {
        /// In words.
        message: String,
        /// The value.
        value: Option<f64>,
    },
    /// It does not hold (an open alert resolves).
    Clear,
    /// Something happened (a run finished): raise, or raise again.
    Event {
        /// In words.
        message: String,
        /// The value.
        value: Option<f64>,
    },
    /// Nothing new (a daily kind between its checks; a programme load mid-run).
    Keep,
}

fn holds(message: String, value: f64) -> Cond {
    Cond::Holds {
        message,
        value: Some(value),
    }
}

fn round(x: f64, d: i32) -> f64 {
    let m = 10f64.powi(d);
    (x * m).round() / m
}

/// A live kind's condition for device `d` at `now_ms`; `finished` is the run that ended in this
/// cycle, `running` whether one is under way.
pub fn live(
    rule: &Rule,
    d: &DeviceNow,
    now_ms: i64,
    finished: Option<&Finished>,
    running: bool,
) -> Cond {
    let b = &rule.body;
    let threshold = b.threshold_w.unwrap_or(0.0);
    match b.kind {
        Kind::DeviceOffline => {
            let quiet = d.last_reading_ms.map_or(i64::MAX, |t| now_ms - t);
            if quiet >= b.for_ms() {
                let minutes = if quiet == i64::MAX { 0 } else { quiet / 60_000 };
                holds(
                    format!("{} has sent no reading for {minutes} minutes", d.name),
                    minutes as f64,
                )
            } else {
                Cond::Clear
            }
        }
        Kind::PowerAbove | Kind::PowerBelow => match d.power_w {
            Some(p) if (b.kind == Kind::PowerAbove) == (p > threshold) => {
                let word = if b.kind == Kind::PowerAbove {
                    "above"
                } else {
                    "below"
                };
                holds(
                    format!("{} draws {:.1} W, {word} {threshold} W", d.name, p),
                    round(p, 1),
                )
            }
            Some(_) => Cond::Clear,
            // No fresh reading: nothing is known about its power.
            None => Cond::Keep,
        },
        Kind::ApplianceFinished => match finished {
            Some(f) => Cond::Event {
                message: format!(
                    "{} finished: {:.0} minutes, {:.2} kWh",
                    d.name,
                    f.minutes(),
                    f.energy_wh / 1_000.0
                ),
                value: Some(round(f.energy_wh / 1_000.0, 3)),
            },
            None if running => Cond::Clear,
            None => Cond::Keep,
        },
        Kind::DailyEnergyAbove => {
            let kwh = b.kwh.unwrap_or(f64::MAX);
            if d.today_kwh > kwh {
                holds(
                    format!(
                        "{} used {:.2} kWh today, above {kwh} kWh",
                        d.name, d.today_kwh
                    ),
                    round(d.today_kwh, 3),
                )
            } else {
                Cond::Clear
            }
        }
        _ => Cond::Keep,
    }
}

/// A daily kind's condition for device insight `i` (yesterday being `yesterday`).
pub fn daily(rule: &Rule, i: &DeviceInsight, yesterday: chrono::NaiveDate) -> Cond {
    let b = &rule.body;
    match b.kind {
        Kind::StandbyAbove => {
            let w = i.always_on.watts;
            let limit = b.threshold_w.unwrap_or(f64::MAX);
            if !i.always_on.learning() && w > limit {
                holds(
                    format!(
                        "{} is always on at {w:.1} W, above {limit} W ({:.0} kWh a year)",
                        i.name,
                        i.always_on.kwh_per_year()
                    ),
                    round(w, 1),
                )
            } else {
                Cond::Clear
            }
        }
        Kind::UnusualDay => match i.unusual.iter().find(|u| u.date == yesterday) {
            Some(u) => holds(
                format!(
                    "{} used {:.2} kWh on {}; {:.2} kWh is usual for that weekday",
                    i.name, u.kwh, u.date, u.typical_kwh
                ),
                round(u.kwh, 3),
            ),
            None => Cond::Clear,
        },
        Kind::CycleDrift => {
            let limit = b.percent.unwrap_or(crate::insights::cycles::DRIFT_PCT);
            match i.cycles.as_ref().and_then(|c| c.drift) {
                Some(d) if d.pct.abs() >= limit => holds(
                    format!(
                        "{}'s duty is {:+.0} % against its usual {:.0} %",
                        i.name,
                        d.pct,
                        d.baseline_ratio * 100.0
                    ),
                    round(d.pct, 1),
                ),
                _ => Cond::Clear,
            }
        }
        _ => Cond::Keep,
    }
}

/// `budget_forecast`: the household's forecast against its budget.
pub fn budget(report: &Report) -> Cond {
    let f = &report.forecast;
    match (f.projection, f.budget) {
        (Some(p), Some(b)) if p.projected > b => holds(
            format!(
                "this billing period is heading for {:.2} {} (budget {b:.2})",
                p.projected, report.currency
            ),
            round(p.projected, 2),
        ),
        _ => Cond::Clear,
    }
}
