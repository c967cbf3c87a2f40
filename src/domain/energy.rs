//! Energy accounting from the device's own cumulative counter.
//!
//! Rules (architecture.md §3): the energy of an interval is the counter difference; a counter
//! that went down to at most half its value was reset (reboot, erase, firmware) and the energy
//! since the reset is the new counter value; a small step back is a glitch (a float counter
//! rounding down, two answers crossing) that counts nothing and is measured on from the higher
//! value; a larger one counts nothing and is measured on from the new value — never negative,
//! never counted twice; energy across a gap is spread over the whole
//! time the gap spans, in proportion to time, with integer arithmetic that keeps sums exact.

use super::rollup::BUCKET_MS;

/// How interval energy follows from counter samples. Sealed blocks record which rule their
/// energies follow, so data written under the first rule decodes as it was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterRule {
    /// Schema 7 and before: every decrease is a reset. A counter stepping back by a few Wh
    /// counted its whole value again (a spike of kWh in one interval).
    AnyDecreaseResets,
    /// Since schema 8: a drop to at most half is a reset; a drop of at most [`GLITCH_WH`] is a
    /// glitch (nothing counted, the higher value stays the baseline); a larger drop that is
    /// not a reset counts nothing and measures on from the new value.
    HalfDropResets,
}

/// The largest step back of a counter taken for a glitch (a float rounding down, a stale
/// answer). Beyond it, a counter that did not fall to half is measured on from its new value,
/// so no later energy is lost waiting for it to climb back.
pub const GLITCH_WH: i64 = 1_000;

/// The rule the writer applies now.
pub const RULE: CounterRule = CounterRule::HalfDropResets;

impl CounterRule {
    /// Energy in Wh from the baseline `base` (the counter the previous sample left, `None`
    /// for a device's first sample) to the sample `cur`, and the baseline for the next sample.
    pub fn step(self, base: Option<i64>, cur: i64) -> (i64, i64) {
        match (self, base) {
            (_, None) => (0, cur),
            (_, Some(b)) if cur >= b => (cur - b, cur),
            // Reset: the device counted `cur` since it restarted from zero, all in this interval.
            (Self::AnyDecreaseResets, Some(_)) => (cur.max(0), cur),
            (Self::HalfDropResets, Some(b)) if cur <= b / 2 => (cur.max(0), cur),
            // Glitch: nothing was used, and the next sample is measured from the higher value.
            (Self::HalfDropResets, Some(b)) if b - cur <= GLITCH_WH => (0, b),
            // Neither: unknown energy in this interval, none invented; measured on from here.
            (Self::HalfDropResets, Some(_)) => (0, cur),
        }
    }
}

/// Energy in Wh between two counter samples by the current [`RULE`] (see
/// [`CounterRule::step`]; this drops the new baseline).
pub fn interval_energy_wh(base: Option<i64>, cur: i64) -> i64 {
    RULE.step(base, cur).0
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
    fn a_small_step_back_is_a_glitch_measured_on_from_the_higher_value() {
        // 4.008 kWh, then 4.000 (two answers crossing, a float rounding down), then 4.009.
        let (e, base) = RULE.step(Some(4_008), 4_000);
        assert_eq!((e, base), (0, 4_008));
        assert_eq!(RULE.step(Some(base), 4_009), (1, 4_009));
        // Just above half is still a glitch; half or below is a reset.
        assert_eq!(RULE.step(Some(1_000), 501), (0, 1_000));
        assert_eq!(RULE.step(Some(1_000), 500), (500, 500));
        // A larger step back that is no reset: nothing counted, measured on from the new value.
        assert_eq!(RULE.step(Some(10_000), 9_000), (0, 10_000));
        assert_eq!(RULE.step(Some(10_000), 8_999), (0, 8_999));
        assert_eq!(RULE.step(Some(8_999), 9_010), (11, 9_010));
        // The first rule, kept for old blocks, counted the whole counter again.
        assert_eq!(
            CounterRule::AnyDecreaseResets.step(Some(4_008), 4_000),
            (4_000, 4_000)
        );
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
        fn glitches_never_count_energy_twice(
            steps in proptest::collection::vec((0i64..500, 0i64..20), 1..300)
        ) {
            // A true counter that only grows, reported up to 19 Wh low at random.
            let (mut truth, mut base, mut total) = (10_000i64, None, 0);
            let (mut first, mut high) = (None, i64::MIN);
            for (used, low) in steps {
                truth += used;
                let seen = truth - low;
                let (e, b) = RULE.step(base, seen);
                prop_assert!(e >= 0);
                total += e;
                base = Some(b);
                first.get_or_insert(seen);
                high = high.max(seen);
            }
            // Counted: exactly the highest report above the first, never more than was used.
            prop_assert_eq!(total, high - first.unwrap());
            prop_assert_eq!(base, Some(high));
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
