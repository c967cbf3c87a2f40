//! Appliance runs followed live, one reading per poll cycle: the rule of
//! [`crate::insights::runs`] (a run ends after a quiet time measured from its first quiet
//! reading, or a gap in the readings that long) kept as a little state per device, so a poll
//! cycle costs a few comparisons whatever the history.

/// A run that just finished.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finished {
    /// First reading above the threshold, UTC ms.
    pub start_ms: i64,
    /// Last reading above the threshold, UTC ms.
    pub end_ms: i64,
    /// Energy from power × time over the run, Wh.
    pub energy_wh: f64,
}

impl Finished {
    /// Its length, minutes.
    pub fn minutes(&self) -> f64 {
        (self.end_ms - self.start_ms) as f64 / 60_000.0
    }
}

/// What one device is doing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracker {
    /// The previous reading (time, W).
    last: Option<(i64, f64)>,
    /// The run being followed: start, last above, quiet since, energy so far (Wh).
    run: Option<(i64, i64, Option<i64>, f64)>,
}

/// The shortest run (shorter ones are blips).
pub const MIN_RUN_MS: i64 = crate::insights::runs::MIN_DURATION_MS;

impl Tracker {
    /// Whether a run is under way.
    pub fn running(&self) -> bool {
        self.run.is_some()
    }

    /// Feeds one reading (in time order; the same time twice is ignored); a run that ended
    /// before it comes back.
    pub fn feed(
        &mut self,
        ts_ms: i64,
        power_w: f64,
        threshold_w: f64,
        end_after_ms: i64,
    ) -> Option<Finished> {
        let prev = self.last;
        if prev.is_some_and(|(t, _)| ts_ms <= t) {
            return None;
        }
        self.last = Some((ts_ms, power_w));
        let mut done = None;
        if let Some((start, last_above, quiet, energy)) = self.run {
            let gap = prev.is_some_and(|(t, _)| ts_ms - t >= end_after_ms);
            let quiet_long = quiet.is_some_and(|q| ts_ms - q >= end_after_ms);
            if gap || quiet_long {
                self.run = None;
                if last_above - start >= MIN_RUN_MS {
                    done = Some(Finished {
                        start_ms: start,
                        end_ms: last_above,
                        energy_wh: energy,
                    });
                }
            } else if let Some((t, w)) = prev {
                // The power of the previous reading held until this one.
                self.run = Some((
                    start,
                    last_above,
                    quiet,
                    energy + w * (ts_ms - t) as f64 / 3_600_000.0,
                ));
            }
        }
        if power_w > threshold_w {
            self.run = Some(match self.run {
                Some((start, _, _, e)) => (start, ts_ms, None, e),
                None => (ts_ms, ts_ms, None, 0.0),
            });
        } else if let Some(r) = self.run.as_mut()
            && r.2.is_none()
        {
            r.2 = Some(ts_ms);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The washer of the insights' tests, read once a minute: 20 min at 2 kW, a 6-minute pause,
    /// 30 min at 200 W, a 9-minute pause, 10 min at 500 W; 1.5 W around it.
    fn washer() -> Vec<(i64, f64)> {
        let phases = [
            (40, 1.5),
            (20, 2_000.0),
            (6, 3.0),
            (30, 200.0),
            (9, 3.0),
            (10, 500.0),
            (40, 1.5),
        ];
        let mut out = Vec::new();
        let mut t = 0;
        for (n, w) in phases {
            for _ in 0..n {
                out.push((t, w));
                t += 60_000;
            }
        }
        out
    }

    #[test]
    fn a_programme_with_pauses_finishes_once_after_the_quiet_time() {
        let mut tr = Tracker::default();
        let mut done = Vec::new();
        for (t, w) in washer() {
            if let Some(f) = tr.feed(t, w, 11.5, 15 * 60_000) {
                done.push((t, f));
            }
            // The same reading again (a cycle without a new one) changes nothing.
            assert_eq!(tr.feed(t, w, 11.5, 15 * 60_000), None);
        }
        assert_eq!(done.len(), 1, "{done:?}");
        let (at, f) = done[0];
        assert_eq!(f.start_ms, 40 * 60_000);
        assert_eq!(f.end_ms, (40 + 75 - 1) * 60_000);
        // Said 15 minutes after the first quiet reading.
        assert_eq!(at, (40 + 75 + 15) * 60_000);
        let want =
            2_000.0 * 20.0 / 60.0 + 3.0 * 15.0 / 60.0 + 200.0 * 30.0 / 60.0 + 500.0 * 10.0 / 60.0;
        assert!(
            (f.energy_wh - want).abs() < 1.0,
            "{} vs {want}",
            f.energy_wh
        );
        assert!(!tr.running());
    }

    #[test]
    fn a_blip_is_no_run_and_a_silent_device_ends_its_run() {
        let mut tr = Tracker::default();
        assert_eq!(tr.feed(0, 50.0, 10.0, 600_000), None);
        assert_eq!(tr.feed(60_000, 1.0, 10.0, 600_000), None);
        assert_eq!(tr.feed(700_000, 1.0, 10.0, 600_000), None);
        let mut tr = Tracker::default();
        for i in 0..10 {
            tr.feed(i * 60_000, 300.0, 10.0, 600_000);
        }
        // No reading for 20 minutes (offline), then one: the run ended.
        let f = tr.feed(29 * 60_000, 1.0, 10.0, 600_000).unwrap();
        assert_eq!((f.start_ms, f.end_ms), (0, 9 * 60_000));
    }
}
