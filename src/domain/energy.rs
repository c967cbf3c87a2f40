//! Energy accounting from the device's own cumulative counter.
//!
//! Rules (architecture.md §3): the energy of an interval is the counter difference; a counter
//! that went down to at most half its value was reset (reboot, erase, firmware) and the energy
//! since the reset is the new counter value; a small step back is a glitch (a float counter
//! rounding down, two answers crossing) that counts nothing and is measured on from the higher
//! value; a larger one counts nothing and is measured on from the new value — never negative,
//! never counted twice; energy across a gap is spread over the whole time the gap spans, in
//! proportion to time — or, when the device's own day totals are known, over its local days
//! in proportion to them and evenly within each day — with integer arithmetic that keeps sums
//! exact.

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
            // Saturating: counters read back from damaged bytes can be anything.
            (_, Some(b)) if cur >= b => (cur.saturating_sub(b), cur),
            // Reset: the device counted `cur` since it restarted from zero, all in this interval.
            (Self::AnyDecreaseResets, Some(_)) => (cur.max(0), cur),
            (Self::HalfDropResets, Some(b)) if cur <= b / 2 => (cur.max(0), cur),
            // Glitch: nothing was used, and the next sample is measured from the higher value.
            (Self::HalfDropResets, Some(b)) if b.saturating_sub(cur) <= GLITCH_WH => (0, b),
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

/// Length of a device-local day: a device's UTC offset is taken as fixed across a gap.
pub const DAY_MS: i64 = 86_400_000;

/// More than any plug or strip can draw (16 A at 240 V): a day total or a stand-in above
/// what it allows is a device's glitch and is capped.
pub const MAX_POWER_W: i64 = 4_000;

/// The most energy [`MAX_POWER_W`] gives over `ms`, mWh.
pub fn max_energy_mwh(ms: i64) -> i64 {
    i64::try_from(i128::from(MAX_POWER_W) * i128::from(ms.max(0)) / 3_600).unwrap_or(i64::MAX)
}

/// The part of each device-local day that the gap `(t0, t1]` spans, with the energy the
/// device counted there by its own day totals: `(lo, hi, mWh)`, oldest first. `days` are
/// [`DailyEnergy::days`](super::DailyEnergy); `recorded_first_mwh` is what our readings
/// counted in the first day up to `t0`, taken off that day's total — or `None` when our
/// readings do not reach back to that day's start (then the gap's part of the day is
/// taken in proportion to time). `None` when the days do not cover the gap.
pub fn gap_days(
    days: &[(i64, i64)],
    t0: i64,
    t1: i64,
    recorded_first_mwh: Option<i64>,
) -> Option<Vec<(i64, i64, i64)>> {
    let end = days.last()?.0 + DAY_MS;
    if t0 < days.first()?.0 || t1 > end || t1 <= t0 {
        return None;
    }
    let mut out: Vec<(i64, i64, i64)> = Vec::new();
    for (i, &(start, wh)) in days.iter().enumerate() {
        let stop = days.get(i + 1).map_or(end, |d| d.0);
        let (lo, hi) = (t0.max(start), t1.min(stop));
        if hi > lo {
            let mwh = (wh.max(0).saturating_mul(1000)).min(max_energy_mwh(stop - start));
            let part = match (out.is_empty(), recorded_first_mwh) {
                (false, _) => mwh,
                (true, Some(r)) => (mwh - r).max(0),
                (true, None) => {
                    let p = i128::from(mwh) * i128::from(hi - lo) / i128::from(stop - start);
                    i64::try_from(p).unwrap_or(mwh)
                }
            };
            out.push((lo, hi, part));
        }
    }
    Some(out)
}

/// Splits `amount` over the gap's days in proportion to their energy ([`gap_days`]), and each
/// day's share evenly over its part of the gap into 15-minute buckets; the parts sum to
/// exactly `amount`. `None` when the days hold no energy to shape by.
pub fn spread_by_days(amount: i64, days: &[(i64, i64, i64)]) -> Option<Vec<(i64, i64)>> {
    let total: i128 = days.iter().map(|d| i128::from(d.2)).sum();
    if total <= 0 {
        return None;
    }
    let (mut upto, mut given) = (0i128, 0i64);
    let mut parts = Vec::new();
    for &(lo, hi, w) in days {
        upto += i128::from(w);
        let cum = i64::try_from(i128::from(amount) * upto / total).unwrap_or(amount);
        if cum != given {
            parts.extend(spread(lo, hi, cum - given));
        }
        given = cum;
    }
    Some(parts)
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

    #[test]
    fn a_gap_follows_the_device_days_and_is_even_within_each_day() {
        // Device-local days start at 18:15 UTC (+05:45). The gap runs from 20:15 on day 0
        // to 00:15 on day 2: 22 h of day 0, all of day 1, 6 h of day 2.
        let d0 = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS - 20_700_000;
        let days = [(d0, 30), (d0 + DAY_MS, 0), (d0 + 2 * DAY_MS, 12)];
        let (t0, t1) = (d0 + 2 * 3_600_000, d0 + 2 * DAY_MS + 6 * 3_600_000);
        // Day 0 counted 30 Wh, 8 of them before the gap (recorded by our readings).
        let gap = gap_days(&days, t0, t1, Some(8_000)).unwrap();
        assert_eq!(
            gap,
            vec![
                (t0, d0 + DAY_MS, 22_000),
                (d0 + DAY_MS, d0 + 2 * DAY_MS, 0),
                (d0 + 2 * DAY_MS, t1, 12_000)
            ]
        );
        // The counter says 68 Wh over the gap: 44 go to day 0's 22 h, none to day 1 (the
        // device counted nothing then), 24 to day 2's 6 h; each day's share is even.
        let parts = spread_by_days(68_000, &gap).unwrap();
        assert_eq!(parts.iter().map(|p| p.1).sum::<i64>(), 68_000);
        let day = |a: i64, b: i64| -> Vec<i64> {
            parts
                .iter()
                .filter(|p| p.0 >= a && p.0 < b)
                .map(|p| p.1)
                .collect()
        };
        let first = day(t0, d0 + DAY_MS);
        assert_eq!((first.len(), first.iter().sum::<i64>()), (88, 44_000));
        assert!(first.iter().all(|&e| e == 500));
        assert!(day(d0 + DAY_MS, d0 + 2 * DAY_MS).is_empty());
        let last = day(d0 + 2 * DAY_MS, t1);
        assert_eq!((last.len(), last.iter().sum::<i64>()), (24, 24_000));
        // Days that do not reach back to the gap's start, or a device that counted nothing,
        // shape nothing.
        assert_eq!(gap_days(&days[1..], t0, t1, Some(0)), None);
        assert_eq!(gap_days(&days, t0, t1 + DAY_MS, Some(0)), None);
        // Without our own record of day 0's start, its gap part is 22 h of 24.
        assert_eq!(
            gap_days(&days, t0, t1, None).unwrap()[0],
            (t0, d0 + DAY_MS, 27_500)
        );
        // A day total beyond what a plug can draw (a firmware glitch, a hostile answer) is
        // capped at 4 kW for the day; nothing overflows.
        let wild = [(d0, i64::MAX), (d0 + DAY_MS, -5), (d0 + 2 * DAY_MS, 12)];
        let gap = gap_days(&wild, t0, t1, None).unwrap();
        assert_eq!(gap[0].2, 96_000_000 * 22 / 24);
        assert_eq!(gap[1].2, 0);
        let parts = spread_by_days(i64::MAX / 4, &gap).unwrap();
        assert_eq!(parts.iter().map(|p| p.1).sum::<i64>(), i64::MAX / 4);
        assert_eq!(spread_by_days(5, &[(t0, t1, 0)]), None);
    }

    proptest! {
        #[test]
        fn shaped_parts_sum_exactly_and_follow_the_days(
            start in 0i64..1_000_000, len in 1i64..(5 * DAY_MS), recorded in 0i64..50_000,
            whs in proptest::collection::vec(0i64..20_000, 6), amount in 0i64..100_000_000
        ) {
            let d0 = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS;
            let days: Vec<(i64, i64)> =
                whs.iter().enumerate().map(|(i, &w)| (d0 + i as i64 * DAY_MS, w)).collect();
            let t0 = d0 + start * 60;
            let t1 = t0 + len;
            let known = recorded % 3 != 0;
            let gap = gap_days(&days, t0, t1, known.then_some(recorded)).unwrap();
            prop_assert_eq!(gap.first().unwrap().0, t0);
            prop_assert_eq!(gap.last().unwrap().1, t1);
            if let Some(parts) = spread_by_days(amount, &gap) {
                prop_assert_eq!(parts.iter().map(|p| p.1).sum::<i64>(), amount);
                prop_assert!(parts.iter().all(|p| p.1 >= 0 && p.0 >= bucket_start(t0) && p.0 < t1));
                // A day the device counted nothing in gets nothing.
                for &(lo, hi, w) in &gap {
                    if w == 0 {
                        prop_assert!(parts.iter().all(|p| p.0 < bucket_start(lo) || p.0 >= hi));
                    }
                }
            }
        }

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
