//! Unusual days: a day's energy against the same weekday over the trailing 4–8 weeks.
//!
//! The typical value is the median of those weekdays and the spread their median absolute
//! deviation (scaled to a standard deviation), so one odd week in the reference moves neither.
//! A day is unusual when it differs from the median by more than [`Rule::sigmas`] spreads,
//! more than [`Rule::min_share`] of the median and more than [`Rule::min_kwh`]: the last two
//! keep a very regular load from standing out for a trifle, and a tiny load from standing out
//! at all. Days are compared per 24 hours, so a 23- or 25-hour day of a DST change is not
//! unusual for its length.

use super::stats::{MAD_TO_SIGMA, mad, median};
use chrono::{Datelike, NaiveDate};

/// When a day is unusual.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// Spreads (MAD × 1.4826) the day must differ by.
    pub sigmas: f64,
    /// Share of the typical value it must differ by (0–1).
    pub min_share: f64,
    /// kWh it must differ by.
    pub min_kwh: f64,
}

impl Default for Rule {
    fn default() -> Self {
        Self {
            sigmas: 3.0,
            min_share: 0.25,
            min_kwh: 0.1,
        }
    }
}

/// Fewest same weekdays a day is compared with.
pub const MIN_WEEKS: usize = 4;
/// Most same weekdays a day is compared with.
pub const MAX_WEEKS: usize = 8;

/// One local day's energy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Day {
    /// The local date.
    pub date: NaiveDate,
    /// Energy, kWh.
    pub kwh: f64,
    /// Length of the day, hours (23, 24 or 25).
    pub hours: f64,
}

impl Day {
    /// Energy per 24 hours.
    fn per_24h(&self) -> f64 {
        self.kwh * 24.0 / self.hours
    }
}

/// An unusual day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unusual {
    /// The day.
    pub date: NaiveDate,
    /// Its energy, kWh.
    pub kwh: f64,
    /// The typical energy of its weekday (per 24 h, scaled to its length), kWh.
    pub typical_kwh: f64,
    /// How many same weekdays it was compared with.
    pub weeks: usize,
}

/// The unusual days among `check` when compared with `days` (complete days, any order; the
/// days to check may be among them).
pub fn unusual(days: &[Day], check: &[NaiveDate], rule: &Rule) -> Vec<Unusual> {
    let mut out = Vec::new();
    for d in check {
        let Some(day) = days.iter().find(|x| x.date == *d) else {
            continue;
        };
        let refs: Vec<f64> = (1..=MAX_WEEKS as u64)
            .filter_map(|w| d.checked_sub_days(chrono::Days::new(7 * w)))
            .filter_map(|r| days.iter().find(|x| x.date == r))
            .map(Day::per_24h)
            .collect();
        if refs.len() < MIN_WEEKS {
            continue;
        }
        let (Some(m), Some(spread)) = (median(&refs), mad(&refs)) else {
            continue;
        };
        let diff = (day.per_24h() - m).abs();
        let bar = (rule.sigmas * spread * MAD_TO_SIGMA)
            .max(rule.min_share * m)
            .max(rule.min_kwh);
        if diff > bar {
            out.push(Unusual {
                date: *d,
                kwh: day.kwh,
                typical_kwh: m * day.hours / 24.0,
                weeks: refs.len(),
            });
        }
    }
    out
}

/// The weekday of a date, Monday = 0.
pub fn weekday(d: NaiveDate) -> u32 {
    d.weekday().num_days_from_monday()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(n: u64) -> NaiveDate {
        // 2024-01-01 was a Monday.
        NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Days::new(n)
    }

    /// Eight weeks of a load that uses 2 kWh on weekdays and 5 kWh at weekends, ±3 %.
    fn weekly() -> Vec<Day> {
        (0..56)
            .map(|n| {
                let base = if n % 7 >= 5 { 5.0 } else { 2.0 };
                let wobble = 1.0 + ((n * 37 % 7) as f64 - 3.0) / 100.0;
                Day {
                    date: date(n),
                    kwh: base * wobble,
                    hours: 24.0,
                }
            })
            .collect()
    }

    #[test]
    fn a_normal_weekend_is_not_unusual_and_a_doubled_tuesday_is() {
        let mut days = weekly();
        let last_week: Vec<NaiveDate> = (49..56).map(date).collect();
        assert_eq!(unusual(&days, &last_week, &Rule::default()), vec![]);
        // Day 50 is a Tuesday: double it.
        assert_eq!(weekday(date(50)), 1);
        days[50].kwh *= 2.0;
        let u = unusual(&days, &last_week, &Rule::default());
        assert_eq!(u.len(), 1, "{u:?}");
        assert_eq!((u[0].date, u[0].weeks), (date(50), 7));
        assert!((u[0].typical_kwh - 2.0).abs() < 0.07, "{u:?}");
        // Compared with every day (not the same weekday), a normal weekend would stand out:
        // 5 kWh against a median of 2. The weekday rule is what keeps it quiet.
    }

    #[test]
    fn one_odd_week_in_the_reference_moves_nothing_and_tiny_loads_never_stand_out() {
        let mut days = weekly();
        days[43].kwh = 40.0; // a Tuesday five weeks ago
        assert_eq!(unusual(&days, &[date(50)], &Rule::default()), vec![]);
        // A 2 W charger (0.048 kWh a day) that doubles: under the 0.1 kWh floor.
        let tiny: Vec<Day> = (0..56)
            .map(|n| Day {
                date: date(n),
                kwh: if n == 50 { 0.096 } else { 0.048 },
                hours: 24.0,
            })
            .collect();
        assert_eq!(unusual(&tiny, &[date(50)], &Rule::default()), vec![]);
        // Fewer than four same weekdays before it: nothing is said.
        assert_eq!(unusual(&days[28..], &[date(50)], &Rule::default()), vec![]);
    }

    #[test]
    fn dst_days_are_compared_per_24_hours() {
        // A steady 1 kW load: 24 kWh a day, 23 on the spring-forward Sunday, 25 in autumn.
        let mut days: Vec<Day> = (0..56)
            .map(|n| Day {
                date: date(n),
                kwh: 24.0,
                hours: 24.0,
            })
            .collect();
        days[55].kwh = 23.0;
        days[55].hours = 23.0;
        // Without the share floor a 1 kWh shortfall would be far beyond a zero spread.
        let strict = Rule {
            min_share: 0.0,
            ..Rule::default()
        };
        assert_eq!(unusual(&days, &[date(55)], &strict), vec![]);
        days[55].kwh = 21.0; // really 2 kWh less over its 23 hours
        let u = unusual(&days, &[date(55)], &strict);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].typical_kwh, 23.0);
    }
}
