//! Energy accounting from the device's own cumulative counter.
//!
//! Rules (architecture.md §3): the energy of an interval is the counter difference; a counter
//! that went down was reset (reboot, erase, firmware) and the energy since the reset is the new
//! counter value — never negative, never counted twice; energy across a gap is spread over the
//! whole time the gap spans, in proportion to time, with integer arithmetic that keeps sums exact.

use super::rollup::BUCKET_MS;

/// Energy in Wh between two counter samples, handling resets.
///
/// `prev` is the counter at the previous sample (if any). The first sample of a device has no
/// interval and yields 0.
pub fn interval_energy_wh(prev: Option<i64>, cur: i64) -> i64 {
    match prev {
        None => 0,
        Some(p) if cur >= p => cur - p,
        // Reset: the device counted `cur` since it restarted from zero, all within this interval.
        Some(_) => cur.max(0),
    }
}

/// Splits `amount` over the 15-minute buckets that the interval `(t0, t1]` overlaps, in
/// proportion to the overlap, so that the parts sum to exactly `amount`.
///
/// Returns `(bucket_start_ms, part)` in time order. A zero-length or inverted interval puts
/// everything in the bucket holding `t1`.
pub fn spread(t0: i64, t1: i64, amount: i64) -> Vec<(i64, i64)> {
    let last = bucket_start(t1 - 1);
    if t1 <= t0 || bucket_start(t0) == last {
        return vec![(bucket_start(t1.max(t0 + 1) - 1), amount)];
    }
    let span = i128::from(t1 - t0);
    let mut parts = Vec::new();
    let mut given = 0i64;
    let mut b = bucket_start(t0);
    while b <= last {
        let lo = b.max(t0);
        let hi = (b + BUCKET_MS).min(t1);
        let upto = i128::from(hi - t0);
        // Cumulative rounding: part = floor(amount*upto/span) - what was given so far.
        let cum = i64::try_from(i128::from(amount) * upto / span).unwrap_or(amount);
        if hi > lo {
            parts.push((b, cum - given));
        }
        given = cum;
        b += BUCKET_MS;
    }
    parts
}

/// Start of the 15-minute bucket holding `ts_ms`.
pub fn bucket_start(ts_ms: i64) -> i64 {
    ts_ms - ts_ms.rem_euclid(BUCKET_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn counter_difference_is_the_interval_energy() {
        assert_eq!(interval_energy_wh(None, 500), 0);
        assert_eq!(interval_energy_wh(Some(500), 512), 12);
        assert_eq!(interval_energy_wh(Some(500), 500), 0);
    }

    #[test]
    fn a_reset_counts_only_energy_since_the_reset() {
        // Counter was 16323 Wh, device rebooted and has counted 7 Wh since.
        assert_eq!(interval_energy_wh(Some(16_323), 7), 7);
        assert_eq!(interval_energy_wh(Some(16_323), 0), 0);
    }

    #[test]
    fn a_gap_is_spread_over_the_time_it_spans() {
        // 3 hours gap with 12 Wh = 12000 mWh: 12 buckets of 1000 mWh each.
        let t0 = 1_700_000_100_000 - 1_700_000_100_000 % BUCKET_MS;
        let parts = spread(t0, t0 + 3 * 3_600_000, 12_000);
        assert_eq!(parts.len(), 12);
        assert!(parts.iter().all(|&(_, e)| e == 1_000));
        assert_eq!(parts[0].0, t0);
    }

    #[test]
    fn an_interval_inside_one_bucket_stays_there() {
        let t0 = 900_000 * 10 + 1_000;
        assert_eq!(spread(t0, t0 + 10_000, 5), vec![(900_000 * 10, 5)]);
        // Ending exactly on a boundary belongs to the earlier bucket: the interval is (t0, t1].
        assert_eq!(
            spread(900_000 * 10 - 10_000, 900_000 * 10, 5),
            vec![(900_000 * 9, 5)]
        );
    }

    proptest! {
        #[test]
        fn spread_parts_sum_exactly(t0 in 0i64..10_000_000_000, len in 0i64..200_000_000, amount in 0i64..10_000_000) {
            let parts = spread(t0, t0 + len, amount);
            prop_assert_eq!(parts.iter().map(|p| p.1).sum::<i64>(), amount);
            prop_assert!(parts.iter().all(|p| p.1 >= 0));
            prop_assert!(parts.windows(2).all(|w| w[0].0 + BUCKET_MS == w[1].0));
        }

        #[test]
        fn without_resets_interval_energy_sums_to_the_counter_difference(
            start in 0i64..1_000_000, steps in proptest::collection::vec(0i64..5_000, 1..200)
        ) {
            let mut counter = start;
            let mut prev = None;
            let mut total = 0;
            for s in steps {
                total += interval_energy_wh(prev, counter);
                prev = Some(counter);
                counter += s;
            }
            prop_assert_eq!(total, prev.unwrap() - start);
        }
    }
}
