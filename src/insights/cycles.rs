//! Duty cycles of cycling loads (a fridge, a freezer, a thermostat heater): on/off cycles
//! found in the raw readings with hysteresis, per day, and the drift of a day's duty against
//! the device's own trailing 28-day baseline.
//!
//! Levels are learned from the readings: "off" is the 5th percentile of power, "on" the median
//! of the readings clearly above it. A cycle starts when power rises past halfway between them
//! and ends when it falls below 30 % of the way: noise around either level (or a compressor's
//! start-up spike) never starts or ends one. A gap in the readings longer than [`MAX_GAP_MS`]
//! ends the observation: time inside a gap counts neither as on nor as off.

use super::Point;
use super::stats::{median, percentile};

/// The longest gap between two readings still taken as observed time.
pub const MAX_GAP_MS: i64 = 10 * 60_000;
/// Days of baseline the drift needs before it is stated.
pub const MIN_BASELINE_DAYS: usize = 7;
/// A duty this far (percent) from the baseline is a drift.
pub const DRIFT_PCT: f64 = 25.0;

/// The power levels of a two-level load and the hysteresis thresholds between them, W.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Levels {
    /// Typical power while off (the compressor resting), W.
    pub off_w: f64,
    /// Typical power while on, W.
    pub on_w: f64,
}

impl Levels {
    /// Learns the levels from readings; `None` when there are not two distinct levels
    /// (less than 2 % of readings clearly above the floor, or a step under 5 W).
    pub fn learn(points: &[Point]) -> Option<Levels> {
        let w: Vec<f64> = points.iter().map(|p| p.power_w).collect();
        let off = percentile(&w, 5.0)?;
        let margin = (0.5 * off).max(5.0);
        let above: Vec<f64> = w.iter().copied().filter(|x| *x > off + margin).collect();
        if (above.len() as f64) < 0.02 * w.len() as f64 {
            return None;
        }
        let on = median(&above)?;
        Some(Levels {
            off_w: off,
            on_w: on,
        })
    }

    /// Power at or above which an off load turns on.
    pub fn rise_w(&self) -> f64 {
        self.off_w + 0.5 * (self.on_w - self.off_w)
    }

    /// Power below which an on load turns off.
    pub fn fall_w(&self) -> f64 {
        self.off_w + 0.3 * (self.on_w - self.off_w)
    }
}

/// What one stretch of readings (usually a local day) says.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Duty {
    /// On-phases that started in the stretch.
    pub cycles: u32,
    /// On-phases seen from start to end.
    pub complete: u32,
    /// Summed length of the complete on-phases, ms.
    pub complete_on_ms: i64,
    /// Summed mean power of the complete on-phases, W.
    pub complete_mean_w: f64,
    /// Time on (within observed time), ms.
    pub on_ms: i64,
    /// Time observed, ms.
    pub observed_ms: i64,
}

impl Duty {
    /// Share of the observed time the load was on, 0–1.
    pub fn ratio(&self) -> Option<f64> {
        (self.observed_ms > 0).then(|| self.on_ms as f64 / self.observed_ms as f64)
    }

    /// Mean length of a complete on-phase, minutes.
    pub fn mean_on_minutes(&self) -> Option<f64> {
        (self.complete > 0)
            .then(|| self.complete_on_ms as f64 / f64::from(self.complete) / 60_000.0)
    }

    /// Mean power while on, W.
    pub fn mean_on_w(&self) -> Option<f64> {
        (self.complete > 0).then(|| self.complete_mean_w / f64::from(self.complete))
    }

    /// Adds another stretch.
    pub fn add(&mut self, o: &Duty) {
        self.cycles += o.cycles;
        self.complete += o.complete;
        self.complete_on_ms += o.complete_on_ms;
        self.complete_mean_w += o.complete_mean_w;
        self.on_ms += o.on_ms;
        self.observed_ms += o.observed_ms;
    }
}

/// The duty of `points` (oldest first) under `levels`: phases that start inside, time on and
/// observed. The state before the first reading is taken from it.
pub fn duty(points: &[Point], levels: &Levels) -> Duty {
    let (rise, fall) = (levels.rise_w(), levels.fall_w());
    let mut d = Duty::default();
    let Some(first) = points.first() else {
        return d;
    };
    let mut on = first.power_w >= rise;
    // The phase being watched: start, summed power, readings; only a phase seen to start is
    // complete when it ends.
    let mut phase: Option<(i64, f64, u32)> = None;
    for pair in points.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let dt = b.ts_ms - a.ts_ms;
        if dt > MAX_GAP_MS {
            phase = None;
        } else {
            d.observed_ms += dt;
            if on {
                d.on_ms += dt;
            }
        }
        if let Some(p) = phase.as_mut()
            && on
        {
            p.1 += a.power_w;
            p.2 += 1;
        }
        if !on && b.power_w >= rise {
            on = true;
            d.cycles += 1;
            phase = (dt <= MAX_GAP_MS).then_some((b.ts_ms, 0.0, 0));
        } else if on && b.power_w < fall {
            on = false;
            if let Some((start, sum, n)) = phase.take()
                && n > 0
            {
                d.complete += 1;
                d.complete_on_ms += b.ts_ms - start;
                d.complete_mean_w += sum / f64::from(n);
            }
        }
    }
    d
}

/// A day's duty against the baseline of earlier days.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drift {
    /// Median duty of the baseline days, 0–1.
    pub baseline_ratio: f64,
    /// Days in the baseline.
    pub baseline_days: usize,
    /// Percent above (+) or below (−) the baseline.
    pub pct: f64,
}

impl Drift {
    /// Far enough from the baseline to say so.
    pub fn drifting(&self) -> bool {
        self.pct.abs() >= DRIFT_PCT
    }
}

/// The drift of `today` against `baseline` days (each mostly observed: at least 20 hours),
/// `None` with fewer than [`MIN_BASELINE_DAYS`] such days or no on-time in them.
pub fn drift(today: &Duty, baseline: &[Duty]) -> Option<Drift> {
    let ratios: Vec<f64> = baseline
        .iter()
        .filter(|d| d.observed_ms >= 20 * 3_600_000)
        .filter_map(Duty::ratio)
        .collect();
    if ratios.len() < MIN_BASELINE_DAYS {
        return None;
    }
    let base = median(&ratios)?;
    let now = today.ratio()?;
    (base > 0.0).then(|| Drift {
        baseline_ratio: base,
        baseline_days: ratios.len(),
        pct: (now - base) / base * 100.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fridge read every 30 s: `on_s` seconds at 110 W (a 450 W spike first) in every 2,700,
    /// 1.2 W otherwise, with ±3 W of noise either way.
    fn fridge(from_s: i64, hours: i64, on_s: i64) -> Vec<Point> {
        (0..hours * 120)
            .map(|i| {
                let s = from_s + i * 30;
                let phase = s.rem_euclid(2_700);
                let noise = ((i * 7_919) % 7 - 3) as f64;
                let w = if phase < 30 {
                    450.0
                } else if phase < on_s {
                    110.0 + noise
                } else {
                    (1.2 + noise / 10.0).max(0.0)
                };
                Point {
                    ts_ms: s * 1_000,
                    power_w: w,
                    energy_wh: 0,
                }
            })
            .collect()
    }

    #[test]
    fn cycles_are_counted_with_hysteresis_through_noise() {
        let p = fridge(1_000, 24, 900);
        let l = Levels::learn(&p).unwrap();
        assert!((l.off_w - 1.0).abs() < 1.0, "{l:?}");
        assert!((l.on_w - 110.0).abs() < 2.0, "{l:?}");
        let d = duty(&p, &l);
        // 86,400 / 2,700 = 32 cycles a day, each 15 minutes at about 110 W (the spike is in).
        assert_eq!(d.cycles, 32);
        assert_eq!(d.complete, 32);
        assert!((d.mean_on_minutes().unwrap() - 15.0).abs() < 0.01);
        assert!(
            (d.mean_on_w().unwrap() - 121.3).abs() < 1.0,
            "{:?}",
            d.mean_on_w()
        );
        assert!((d.ratio().unwrap() - 1.0 / 3.0).abs() < 0.01);
        // Noise straddling one threshold alone never toggles: a flat 40 W load (between the
        // fall and rise thresholds) that wobbles by ±20 W is never "on".
        let flat: Vec<Point> = (0..2_000)
            .map(|i| Point {
                ts_ms: i * 30_000,
                power_w: 40.0 + if i % 2 == 0 { 14.0 } else { -14.0 },
                energy_wh: 0,
            })
            .collect();
        assert_eq!(duty(&flat, &l).cycles, 0);
    }

    #[test]
    fn a_gap_is_neither_on_nor_off_and_a_single_level_has_no_cycles() {
        let mut p = fridge(1_000, 24, 900);
        p.retain(|x| !(20_000_000..40_000_000).contains(&x.ts_ms));
        let l = Levels::learn(&p).unwrap();
        let d = duty(&p, &l);
        assert!(d.observed_ms <= 86_400_000 - 20_000_000 + 30_000, "{d:?}");
        assert!((d.ratio().unwrap() - 1.0 / 3.0).abs() < 0.02);
        let flat: Vec<Point> = (0..500)
            .map(|i| Point {
                ts_ms: i * 30_000,
                power_w: 60.0 + (i % 3) as f64,
                energy_wh: 0,
            })
            .collect();
        assert_eq!(Levels::learn(&flat), None);
    }

    #[test]
    fn drift_is_measured_against_the_median_of_earlier_days() {
        let l = Levels {
            off_w: 1.0,
            on_w: 110.0,
        };
        let day = |on_s| duty(&fridge(0, 24, on_s), &l);
        let normal = day(900);
        let mut baseline = vec![normal; 10];
        baseline[3] = day(1_500); // one warm day in the baseline moves nothing
        assert!(drift(&normal, &baseline).unwrap().pct.abs() < 1.0);
        let d = drift(&day(1_440), &baseline).unwrap();
        assert!(d.drifting() && (d.pct - 60.0).abs() < 3.0, "{d:?}");
        assert_eq!(d.baseline_days, 10);
        // Too little baseline: nothing said.
        assert_eq!(drift(&day(1_440), &baseline[..6]), None);
    }
}
