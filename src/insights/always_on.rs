//! Always-on (standby) power: what a device draws when nobody uses it.
//!
//! The basis is each 15-minute bucket's lowest reading (the relay off counts as 0 W), which
//! strips a cycling or programme load down to what it draws between uses. Of those minima over
//! the last 7 days we take the 5th percentile, not the smallest: a reboot or a single dropped
//! reading cannot set the figure, while a device really off for more than about 8 hours a week
//! (5 % of 168 h) is rightly not "always on".

use super::stats::percentile;
use crate::domain::Bucket;

/// Percentile of the bucket minima taken as the always-on power.
pub const PERCENTILE: f64 = 5.0;
/// Hours of history below which a device's figures are marked `learning`.
pub const LEARNING_HOURS: f64 = 24.0;
/// Hours in an average year (365.25 days).
pub const HOURS_PER_YEAR: f64 = 8_766.0;

/// The always-on power of one device.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AlwaysOn {
    /// Watts (0 without any metered bucket).
    pub watts: f64,
    /// Hours of metered buckets it rests on.
    pub basis_hours: f64,
}

impl AlwaysOn {
    /// Under a day of history: shown, but still learning.
    pub fn learning(&self) -> bool {
        self.basis_hours < LEARNING_HOURS
    }

    /// Its energy over a year, kWh.
    pub fn kwh_per_year(&self) -> f64 {
        self.watts * HOURS_PER_YEAR / 1_000.0
    }
}

/// What one bucket says about the standby floor, W: its lowest reading, 0 while the relay
/// was off all bucket long; `None` without a metered reading.
fn floor_w(b: &Bucket) -> Option<f64> {
    if b.meter_samples == 0 {
        None
    } else if b.on_ms == 0 && b.samples > 0 && b.power.max == 0 {
        Some(0.0)
    } else {
        Some(b.power.min.max(0) as f64 / 1_000.0)
    }
}

/// The always-on power from the buckets of the last 7 days (any order).
pub fn of(buckets: &[Bucket]) -> AlwaysOn {
    let floors: Vec<f64> = buckets.iter().filter_map(floor_w).collect();
    AlwaysOn {
        watts: percentile(&floors, PERCENTILE).unwrap_or(0.0),
        basis_hours: floors.len() as f64 / 4.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rollup::Stat;

    fn bucket(i: i64, min_mw: i64, max_mw: i64) -> Bucket {
        Bucket {
            start_ms: i * 900_000,
            samples: 15,
            meter_samples: 15,
            power: Stat {
                min: min_mw,
                max: max_mw,
                sum: 15 * max_mw,
            },
            on_ms: 900_000,
            ..Bucket::empty(0)
        }
    }

    #[test]
    fn the_floor_is_a_low_percentile_of_bucket_minima() {
        // A TV: 0.5 W in standby, 95 W for 4 hours each evening, over 7 days.
        let mut b: Vec<Bucket> = (0..672)
            .map(|i| {
                if i % 96 >= 76 && i % 96 < 92 {
                    bucket(i, 90_000, 100_000)
                } else {
                    bucket(i, 500, 600)
                }
            })
            .collect();
        // Three rebooting buckets read 0 W: a floor of the smallest would say 0.
        for i in [5, 200, 400] {
            b[i].power.min = 0;
        }
        let a = of(&b);
        assert_eq!(a.watts, 0.5);
        assert_eq!(a.basis_hours, 168.0);
        assert!(!a.learning());
        assert!((a.kwh_per_year() - 4.383).abs() < 1e-9);
    }

    #[test]
    fn a_relay_off_counts_as_nothing_and_little_history_is_learning() {
        // Off at the relay every night for 10 of 24 hours: not always on.
        let b: Vec<Bucket> = (0..672)
            .map(|i| {
                if i % 96 < 40 {
                    Bucket {
                        on_ms: 0,
                        ..bucket(i, 0, 0)
                    }
                } else {
                    bucket(i, 3_000, 3_000)
                }
            })
            .collect();
        assert_eq!(of(&b).watts, 0.0);
        // Two hours of a 2 W load: a number, marked learning.
        let a = of(&(0..8).map(|i| bucket(i, 2_000, 9_000)).collect::<Vec<_>>());
        assert_eq!((a.watts, a.basis_hours, a.learning()), (2.0, 2.0, true));
        // No metered bucket at all: 0 W on no basis.
        let a = of(&[Bucket::empty(0)]);
        assert_eq!((a.watts, a.basis_hours), (0.0, 0.0));
    }
}
