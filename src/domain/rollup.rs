//! 15-minute rollup buckets and their aggregation into hours, days, weeks and months in any
//! IANA time zone.
//!
//! 15 minutes divides every UTC offset in use (including +05:45 and +12:45), so every local
//! hour and day is an exact union of buckets, including 23- and 25-hour DST days.

use super::provenance::{Source, Unmeasured};
use chrono::{Datelike, NaiveDate, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;

/// Length of one rollup bucket.
pub const BUCKET_MS: i64 = 15 * 60 * 1000;

/// Min / sum / max of one measured quantity over the samples of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stat {
    /// Smallest sample.
    pub min: i64,
    /// Largest sample.
    pub max: i64,
    /// Sum of samples (divide by the bucket's `meter_samples` for the mean).
    pub sum: i64,
}

impl Stat {
    fn add(&mut self, v: i64, first: bool) {
        if first {
            *self = Stat {
                min: v,
                max: v,
                sum: v,
            };
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
            self.sum += v;
        }
    }

    fn merge(&mut self, o: &Stat, first: bool) {
        if first {
            *self = *o;
        } else {
            self.min = self.min.min(o.min);
            self.max = self.max.max(o.max);
            self.sum += o.sum;
        }
    }
}

/// Aggregate of one device over one period (15 minutes when stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    /// Period start, UTC ms.
    pub start_ms: i64,
    /// Energy attributed to the period, milliwatt-hours.
    pub energy_mwh: i64,
    /// Readings that fell in the period.
    pub samples: u32,
    /// Readings that carried meter values.
    pub meter_samples: u32,
    /// Power, mW.
    pub power: Stat,
    /// Voltage, mV.
    pub voltage: Stat,
    /// Current, mA.
    pub current: Stat,
    /// Time the relay was on, ms.
    pub on_ms: i64,
    /// Device counter at the last reading in the period, Wh (-1 when unknown).
    pub counter_last_wh: i64,
    /// The part of the energy that was not measured, by source.
    pub unmeasured: Unmeasured,
}

impl Bucket {
    /// An empty bucket starting at `start_ms`.
    pub fn empty(start_ms: i64) -> Self {
        Self {
            start_ms,
            counter_last_wh: -1,
            ..Self::default()
        }
    }

    /// Adds one reading's measured values.
    pub fn add_sample(&mut self, power_mw: i64, voltage_mv: i64, current_ma: i64) {
        let first = self.meter_samples == 0;
        self.power.add(power_mw, first);
        self.voltage.add(voltage_mv, first);
        self.current.add(current_ma, first);
        self.meter_samples += 1;
    }

    /// Folds `o` (a later or equal period) into `self`.
    pub fn merge(&mut self, o: &Bucket) {
        let first = self.meter_samples == 0;
        if o.meter_samples > 0 {
            self.power.merge(&o.power, first);
            self.voltage.merge(&o.voltage, first);
            self.current.merge(&o.current, first);
        }
        self.meter_samples += o.meter_samples;
        self.samples += o.samples;
        self.energy_mwh += o.energy_mwh;
        self.unmeasured.merge(&o.unmeasured);
        self.on_ms += o.on_ms;
        if o.counter_last_wh >= 0 {
            self.counter_last_wh = o.counter_last_wh;
        }
    }

    /// Adds `mwh` of energy obtained from `source`.
    pub fn add_energy(&mut self, source: Source, mwh: i64) {
        self.energy_mwh += mwh;
        self.unmeasured.add(source, mwh);
    }

    /// Mean of a stat over the meter samples, if any.
    pub fn mean(&self, s: &Stat) -> Option<f64> {
        (self.meter_samples > 0).then(|| s.sum as f64 / f64::from(self.meter_samples))
    }
}

/// Period sizes the API offers on top of the stored buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Period {
    /// The stored 15-minute buckets.
    Quarter,
    /// Local clock hours.
    Hour,
    /// Local calendar days (23, 24 or 25 hours long).
    Day,
    /// Local ISO weeks starting Monday.
    Week,
    /// Local calendar months.
    Month,
}

/// Start (UTC ms) of the period of kind `p` in zone `tz` that holds `ts_ms`.
pub fn period_start(ts_ms: i64, p: Period, tz: Tz) -> i64 {
    let local = tz.timestamp_millis_opt(ts_ms).unwrap();
    match p {
        Period::Quarter => ts_ms - ts_ms.rem_euclid(BUCKET_MS),
        // Offsets change on hour boundaries (or 15-minute ones), so stripping the local minutes
        // and seconds lands on the start of the local hour in the same offset.
        Period::Hour => {
            ts_ms
                - i64::from(local.minute()) * 60_000
                - i64::from(local.second()) * 1_000
                - ts_ms.rem_euclid(1_000)
        }
        Period::Day => local_midnight(local.date_naive(), tz),
        Period::Week => {
            let d = local.date_naive();
            let monday = d - chrono::Days::new(u64::from(d.weekday().num_days_from_monday()));
            local_midnight(monday, tz)
        }
        Period::Month => local_midnight(local.date_naive().with_day(1).unwrap(), tz),
    }
}

/// UTC ms of the first instant of local date `d` in `tz` (midnight, or the first valid time
/// after it where a DST change skips midnight).
pub fn local_midnight(d: NaiveDate, tz: Tz) -> i64 {
    let mut t = d.and_time(NaiveTime::MIN);
    for _ in 0..4 {
        if let Some(dt) = tz.from_local_datetime(&t).earliest() {
            return dt.timestamp_millis();
        }
        t += chrono::Duration::minutes(15);
    }
    tz.from_utc_datetime(&t).timestamp_millis()
}

/// Start (UTC ms) of the period after the one starting at `start_ms`.
pub fn period_end(start_ms: i64, p: Period, tz: Tz) -> i64 {
    let date = || tz.timestamp_millis_opt(start_ms).unwrap().date_naive();
    match p {
        Period::Quarter => start_ms + BUCKET_MS,
        Period::Hour => start_ms + 3_600_000,
        Period::Day => local_midnight(date() + chrono::Days::new(1), tz),
        Period::Week => local_midnight(date() + chrono::Days::new(7), tz),
        Period::Month => local_midnight(date() + chrono::Months::new(1), tz),
    }
}

/// Groups time-ordered buckets into periods of kind `p` in `tz`. Zone arithmetic happens once
/// per period, not once per bucket.
pub fn aggregate(buckets: impl IntoIterator<Item = Bucket>, p: Period, tz: Tz) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    let mut end = i64::MIN;
    for b in buckets {
        match out.last_mut() {
            Some(last) if b.start_ms >= last.start_ms && b.start_ms < end => last.merge(&b),
            _ => {
                // Periods are contiguous: a bucket starting exactly at the previous period's
                // end starts the next period without any zone arithmetic.
                let start = if b.start_ms == end {
                    end
                } else {
                    period_start(b.start_ms, p, tz)
                };
                end = period_end(start, p, tz);
                let mut n = Bucket::empty(start);
                n.merge(&b);
                out.push(n);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    fn day_of_buckets(tz: Tz, date: NaiveDate) -> Vec<Bucket> {
        let start = local_midnight(date, tz);
        let end = local_midnight(date.succ_opt().unwrap(), tz);
        (0..)
            .map(|i| start + i * BUCKET_MS)
            .take_while(|&t| t < end)
            .map(|t| Bucket {
                energy_mwh: 1_000,
                samples: 1,
                ..Bucket::empty(t)
            })
            .collect()
    }

    #[test]
    fn new_york_dst_days_have_23_and_25_hours() {
        let tz: Tz = "America/New_York".parse().unwrap();
        for (date, hours) in [((2026, 3, 8), 23), ((2026, 11, 1), 25), ((2026, 6, 1), 24)] {
            let d = NaiveDate::from_ymd_opt(date.0, date.1, date.2).unwrap();
            let b = day_of_buckets(tz, d);
            assert_eq!(b.len(), hours * 4);
            let days = aggregate(b.clone(), Period::Day, tz);
            assert_eq!(days.len(), 1, "{d}");
            assert_eq!(days[0].energy_mwh, hours as i64 * 4_000);
            let h = aggregate(b, Period::Hour, tz);
            assert_eq!(h.len(), hours);
        }
    }

    #[test]
    fn kathmandu_hours_start_at_quarter_past() {
        let tz: Tz = "Asia/Kathmandu".parse().unwrap();
        let t = ms("2026-01-10T06:20:00Z"); // 12:05 local
        assert_eq!(
            period_start(t, Period::Hour, tz),
            ms("2026-01-10T06:15:00Z")
        );
        assert_eq!(period_start(t, Period::Day, tz), ms("2026-01-09T18:15:00Z"));
    }

    #[test]
    fn fall_back_hour_is_counted_twice_not_merged() {
        let tz: Tz = "America/New_York".parse().unwrap();
        // 01:30 EDT and 01:30 EST are different local hours.
        let a = period_start(ms("2026-11-01T05:30:00Z"), Period::Hour, tz);
        let b = period_start(ms("2026-11-01T06:30:00Z"), Period::Hour, tz);
        assert_eq!(a, ms("2026-11-01T05:00:00Z"));
        assert_eq!(b, ms("2026-11-01T06:00:00Z"));
    }

    #[test]
    fn weeks_start_monday_and_months_on_the_first() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let t = ms("2026-11-25T12:00:00Z"); // a Wednesday
        assert_eq!(
            period_start(t, Period::Week, tz),
            ms("2026-11-22T23:00:00Z")
        );
        assert_eq!(
            period_start(t, Period::Month, tz),
            ms("2026-10-31T23:00:00Z")
        );
    }

    #[test]
    fn period_ends_are_the_next_period_starts() {
        for zone in [
            "America/New_York",
            "Asia/Kathmandu",
            "Australia/Lord_Howe",
            "UTC",
        ] {
            let tz: Tz = zone.parse().unwrap();
            for p in [Period::Hour, Period::Day, Period::Week, Period::Month] {
                let mut t = ms("2026-01-01T00:00:00Z");
                for _ in 0..400 {
                    let s = period_start(t, p, tz);
                    let e = period_end(s, p, tz);
                    if !(zone == "Australia/Lord_Howe" && p == Period::Hour) {
                        assert_eq!(period_start(e, p, tz), e, "{zone} {p:?} {s}");
                        assert_eq!(period_start(e - 1, p, tz), s, "{zone} {p:?} {s}");
                    }
                    t += 86_400_000;
                }
            }
        }
    }

    #[test]
    fn merge_keeps_min_max_and_means() {
        let mut a = Bucket::empty(0);
        a.add_sample(100, 230_000, 1);
        a.add_sample(300, 231_000, 2);
        let mut b = Bucket::empty(BUCKET_MS);
        b.add_sample(50, 229_000, 1);
        let mut all = Bucket::empty(0);
        all.merge(&a);
        all.merge(&b);
        assert_eq!((all.power.min, all.power.max), (50, 300));
        assert_eq!(all.mean(&all.power), Some(150.0));
        assert_eq!(Bucket::empty(0).mean(&a.power), None);
    }
}
