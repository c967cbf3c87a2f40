//! Appliance runs of programme loads (a washer, a dishwasher, a dryer, a printer): a run
//! starts when power rises above a threshold and ends once power has stayed below it for
//! [`RunRule::end_after_ms`], so the pauses inside a programme (soaking, draining) stay part of
//! it. The threshold is learned from the device's readings (at least twice its standby and
//! 10 W above it) unless set per device.
//!
//! A run's energy is the sum of the counter differences of the readings from its start to the
//! first reading after it ends, pauses included.

use super::Point;
use super::stats::percentile;

/// How runs are told apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunRule {
    /// Power above which a load is running, W.
    pub threshold_w: f64,
    /// Time below the threshold that ends a run, ms.
    pub end_after_ms: i64,
    /// Runs shorter than this are blips, not runs, ms.
    pub min_duration_ms: i64,
}

/// The default time below the threshold that ends a run.
pub const END_AFTER_MS: i64 = 15 * 60_000;
/// The default shortest run.
pub const MIN_DURATION_MS: i64 = 2 * 60_000;

/// The threshold learned from readings: the standby (5th percentile) doubled and at least
/// 10 W above it; `None` without readings.
pub fn learn_threshold(points: &[Point]) -> Option<f64> {
    let w: Vec<f64> = points.iter().map(|p| p.power_w).collect();
    let standby = percentile(&w, 5.0)?;
    Some(standby + standby.max(10.0))
}

/// One run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// First reading above the threshold, UTC ms.
    pub start_ms: i64,
    /// Last reading above the threshold, UTC ms.
    pub end_ms: i64,
    /// Energy, Wh (counter differences, pauses included).
    pub energy_wh: i64,
    /// Highest power, W.
    pub peak_w: f64,
    /// Readings inside the run at or below the threshold (its pauses).
    pub paused_readings: u32,
    /// Coefficient of variation of power over its readings above the threshold.
    pub power_cv: f64,
    /// Still running at the newest reading.
    pub running: bool,
}

impl Run {
    /// Length, ms.
    pub fn duration_ms(&self) -> i64 {
        self.end_ms - self.start_ms
    }
}

/// Builds a run from `points[a..=b]` (first and last above the threshold) and the reading
/// after it, if any.
fn run_of(points: &[Point], a: usize, b: usize, threshold: f64, running: bool) -> Run {
    let above: Vec<f64> = points[a..=b]
        .iter()
        .map(|p| p.power_w)
        .filter(|w| *w > threshold)
        .collect();
    let mean = above.iter().sum::<f64>() / above.len().max(1) as f64;
    let var = above.iter().map(|w| (w - mean).powi(2)).sum::<f64>() / above.len().max(1) as f64;
    let tail = (b + 1).min(points.len() - 1);
    Run {
        start_ms: points[a].ts_ms,
        end_ms: points[b].ts_ms,
        energy_wh: points[a..=tail].iter().map(|p| p.energy_wh).sum(),
        peak_w: above.iter().copied().fold(0.0, f64::max),
        paused_readings: (b + 1 - a - above.len()) as u32,
        power_cv: if mean > 0.0 { var.sqrt() / mean } else { 0.0 },
        running,
    }
}

/// The runs in `points` (oldest first). A run ends once the readings have stayed at or below
/// the threshold for `end_after_ms` from the first such reading (or the readings stop for that
/// long): how long a pause was is known only to the sampling interval, and measuring from the
/// first quiet reading never makes a pause look longer than it was.
pub fn runs(points: &[Point], rule: &RunRule) -> Vec<Run> {
    let mut out = Vec::new();
    // (first above, last above) of the run being followed, and its first quiet reading since.
    let mut cur: Option<(usize, usize)> = None;
    let mut quiet_since: Option<i64> = None;
    for (i, p) in points.iter().enumerate() {
        if let Some((a, b)) = cur {
            let gap = p.ts_ms - points[i - 1].ts_ms >= rule.end_after_ms;
            let quiet = quiet_since.is_some_and(|t| p.ts_ms - t >= rule.end_after_ms);
            if gap || quiet {
                let r = run_of(points, a, b, rule.threshold_w, false);
                if r.duration_ms() >= rule.min_duration_ms {
                    out.push(r);
                }
                cur = None;
                quiet_since = None;
            }
        }
        if p.power_w > rule.threshold_w {
            cur = Some(cur.map_or((i, i), |(a, _)| (a, i)));
            quiet_since = None;
        } else if cur.is_some() && quiet_since.is_none() {
            quiet_since = Some(p.ts_ms);
        }
    }
    if let Some((a, b)) = cur {
        let r = run_of(points, a, b, rule.threshold_w, true);
        if r.duration_ms() >= rule.min_duration_ms || r.running {
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A washer read every 20 s from 08:00: 20 min heating at 2,000 W, a 6-minute soak pause at
    /// 3 W, 30 min washing at 200 W, a 9-minute pause, 10 min spinning at 500 W; 1.5 W standby
    /// around it. Each reading carries the energy of the 20 s before it, Wh (×1000 kept exact).
    fn washer() -> (Vec<Point>, f64) {
        let phases = [
            (120, 1.5),
            (60, 2_000.0),
            (18, 3.0),
            (90, 200.0),
            (27, 3.0),
            (30, 500.0),
            (120, 1.5),
        ];
        let mut out = Vec::new();
        let mut t = 8 * 3_600_000;
        let mut programme_wh = 0.0;
        for (k, (n, w)) in phases.iter().enumerate() {
            for _ in 0..*n {
                t += 20_000;
                let wh = w * 20.0 / 3_600.0;
                if (1..6).contains(&k) {
                    programme_wh += wh;
                }
                out.push(Point {
                    ts_ms: t,
                    power_w: *w,
                    energy_wh: (wh * 1_000.0).round() as i64,
                });
            }
        }
        (out, programme_wh * 1_000.0)
    }

    #[test]
    fn pauses_inside_a_programme_do_not_end_the_run() {
        let (p, programme) = washer();
        let threshold = learn_threshold(&p).unwrap();
        assert_eq!(threshold, 11.5);
        let rule = RunRule {
            threshold_w: threshold,
            end_after_ms: END_AFTER_MS,
            min_duration_ms: MIN_DURATION_MS,
        };
        let r = runs(&p, &rule);
        assert_eq!(r.len(), 1, "{r:#?}");
        let run = &r[0];
        // 20 + 6 + 30 + 9 + 10 minutes, less the one reading interval at the start.
        assert_eq!(run.duration_ms(), (75 * 60 - 20) * 1_000);
        assert_eq!(run.paused_readings, 45);
        assert_eq!(run.peak_w, 2_000.0);
        assert!(!run.running && run.power_cv > 0.4);
        // The programme's energy plus the standby interval after it (mWh here, each reading
        // rounded).
        let expected = programme + 1.5 * 20.0 / 3.6;
        assert!(
            (run.energy_wh as f64 - expected).abs() < 20.0,
            "{} vs {expected}",
            run.energy_wh
        );
        // A pause longer than the end time splits it.
        let short = RunRule {
            end_after_ms: 5 * 60_000,
            ..rule
        };
        assert_eq!(runs(&p, &short).len(), 3);
    }

    #[test]
    fn a_pause_read_every_five_minutes_does_not_look_longer_than_it_was() {
        // The same programme read every 5 minutes at every offset: the 9-minute pause may fall
        // between readings 15 minutes apart, yet never ends the run.
        let (p, _) = washer();
        let rule = RunRule {
            threshold_w: 11.5,
            end_after_ms: END_AFTER_MS,
            min_duration_ms: MIN_DURATION_MS,
        };
        for offset in 0..15 {
            let sampled: Vec<Point> = p.iter().skip(offset).step_by(15).copied().collect();
            assert_eq!(runs(&sampled, &rule).len(), 1, "offset {offset}");
        }
    }

    #[test]
    fn blips_are_not_runs_and_a_run_at_the_end_is_running() {
        let (mut p, _) = washer();
        p.truncate(200); // cut during the washing phase
        let rule = RunRule {
            threshold_w: 11.5,
            end_after_ms: END_AFTER_MS,
            min_duration_ms: MIN_DURATION_MS,
        };
        let r = runs(&p, &rule);
        assert_eq!(r.len(), 1);
        assert!(r[0].running);
        // One reading at 50 W in standby is a blip.
        let mut q = vec![
            Point {
                ts_ms: 0,
                power_w: 1.0,
                energy_wh: 0
            };
            100
        ];
        for (i, x) in q.iter_mut().enumerate() {
            x.ts_ms = i as i64 * 20_000;
        }
        q[40].power_w = 50.0;
        assert!(runs(&q, &rule).is_empty());
    }
}
