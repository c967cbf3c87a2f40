//! The cost forecast: this billing period's cost so far, projected to the period's end from the
//! trailing 14 days by weekday, with a low/high interval.
//!
//! Each day still to come is expected to cost what the same weekday cost on average over the
//! last two weeks (what is left of today in proportion to the part of the day left, in real
//! hours, so a DST day is 23 or 25 hours long). The interval is ±1.96 standard deviations of
//! the days' differences from their weekday's mean, scaled by the square root of the days left
//! (days taken as independent); it never goes below what is already spent.

use super::unusual::weekday;
use chrono::NaiveDate;
use chrono_tz::Tz;

/// Days of history the forecast learns from.
pub const TRAILING_DAYS: i64 = 14;

/// A past local day's cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DayCost {
    /// The local date.
    pub date: NaiveDate,
    /// Its cost.
    pub cost: f64,
}

/// A projection to the end of the period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Projection {
    /// Expected cost of the whole period.
    pub projected: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
}

/// What is left to come: the rest of today (weekday, share of the day left) and the whole days
/// after it up to the period's end.
#[derive(Debug, Clone, PartialEq)]
pub struct Ahead {
    /// Today and the share of it still to come (0–1).
    pub today: (NaiveDate, f64),
    /// Whole days after today in the period.
    pub days: Vec<NaiveDate>,
}

/// Projects `so_far` over `ahead` from `past` days; `None` without any past day.
pub fn project(so_far: f64, past: &[DayCost], ahead: &Ahead) -> Option<Projection> {
    if past.is_empty() {
        return None;
    }
    let mut sum = [0.0f64; 7];
    let mut n = [0u32; 7];
    for d in past {
        let w = weekday(d.date) as usize;
        sum[w] += d.cost;
        n[w] += 1;
    }
    let overall = past.iter().map(|d| d.cost).sum::<f64>() / past.len() as f64;
    let expect = |d: NaiveDate| {
        let w = weekday(d) as usize;
        if n[w] > 0 {
            sum[w] / f64::from(n[w])
        } else {
            overall
        }
    };
    // Degrees of freedom: one mean per weekday seen.
    let groups = n.iter().filter(|k| **k > 0).count();
    let (ss, dof) = if past.len() > groups {
        let ss: f64 = past.iter().map(|d| (d.cost - expect(d.date)).powi(2)).sum();
        (ss, past.len() - groups)
    } else {
        let ss: f64 = past.iter().map(|d| (d.cost - overall).powi(2)).sum();
        (ss, past.len().saturating_sub(1).max(1))
    };
    let sigma = (ss / dof as f64).sqrt();
    let (today, left) = ahead.today;
    let rest: f64 = expect(today) * left + ahead.days.iter().map(|d| expect(*d)).sum::<f64>();
    let days_left = left + ahead.days.len() as f64;
    let projected = so_far + rest;
    let delta = 1.96 * sigma * days_left.sqrt();
    Some(Projection {
        projected,
        low: (projected - delta).max(so_far),
        high: projected + delta,
    })
}

/// The share of the local day holding `now_ms` still to come, in real time (a DST day has 23
/// or 25 hours).
pub fn day_left(now_ms: i64, tz: Tz) -> f64 {
    use crate::domain::rollup::{Period, period_start};
    let start = period_start(now_ms, Period::Day, tz);
    let end = period_start(start + 26 * 3_600_000, Period::Day, tz);
    (end - now_ms) as f64 / (end - start) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(n: u64) -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Days::new(n) // a Monday
    }

    fn weekly(noise: f64) -> Vec<DayCost> {
        (0..14)
            .map(|n| DayCost {
                date: date(n),
                cost: if n % 7 >= 5 { 3.0 } else { 1.0 } + if n < 7 { noise } else { -noise },
            })
            .collect()
    }

    #[test]
    fn a_weekly_pattern_is_projected_by_weekday() {
        // Monday 15th at noon, the period ends with Sunday 21st: half a Monday, then Tuesday to
        // Friday at 1.0 and the weekend at 3.0.
        let ahead = Ahead {
            today: (date(14), 0.5),
            days: (15..21).map(date).collect(),
        };
        let p = project(20.0, &weekly(0.0), &ahead).unwrap();
        assert_eq!(p.projected, 20.0 + 0.5 + 4.0 + 6.0);
        assert_eq!((p.low, p.high), (p.projected, p.projected));
        // Noise widens the interval around the same centre, never below what is spent.
        let p = project(20.0, &weekly(0.2), &ahead).unwrap();
        assert!((p.projected - 30.5).abs() < 1e-9);
        assert!(
            p.low < p.projected && p.high > p.projected && p.low >= 20.0,
            "{p:?}"
        );
        // sigma: residuals ±0.2 with 14 days and 7 weekday means: sqrt(14 × 0.04 / 7).
        let want = 1.96 * (14.0 * 0.04 / 7.0f64).sqrt() * 6.5f64.sqrt();
        assert!((p.high - p.projected - want).abs() < 1e-9);
        assert_eq!(project(1.0, &[], &ahead), None);
    }

    #[test]
    fn what_is_left_of_a_dst_day_counts_its_real_hours() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // 2024-03-31, 23 hours long: at 12:00 local (10:00 UTC) 11 hours have passed.
        let noon = 1_711_879_200_000;
        assert!((day_left(noon, tz) - 12.0 / 23.0).abs() < 1e-12);
        // 2024-10-27, 25 hours long: at 12:00 local (11:00 UTC) 13 hours have passed.
        let noon = 1_730_026_800_000;
        assert!((day_left(noon, tz) - 12.0 / 25.0).abs() < 1e-12);
        assert!((day_left(1_704_110_400_000, Tz::UTC) - 0.5).abs() < 1e-12); // 2024-01-01 12:00
    }
}
