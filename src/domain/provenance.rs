//! Provenance: how each kWh was obtained.
//!
//! - [`Source::Measured`]: counter differences between readings no more than [`GAP_MS`] apart.
//! - [`Source::Backfilled`]: a longer gap, its energy shaped by the device's own day totals.
//! - [`Source::Spread`]: a longer gap spread in proportion to time (no day totals).
//! - [`Source::Imported`]: from another tool's history.
//!
//! A raw reading is measured unless it came from an import. A bucket (and any period made of
//! buckets) keeps the energy that was not measured, by source ([`Unmeasured`]), so its
//! quality is `measured` when all of it was and `mixed` otherwise, with the measured share.

/// Readings further apart than this leave a gap: its energy is not measured per bucket.
pub const GAP_MS: i64 = 15 * 60 * 1000;

/// How energy was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Counter differences between close readings.
    Measured,
    /// A gap shaped by the device's day totals.
    Backfilled,
    /// A gap spread in proportion to time.
    Spread,
    /// Another tool's history.
    Imported,
}

impl Source {
    /// Every source, in report order.
    pub const ALL: [Source; 4] = [
        Source::Measured,
        Source::Backfilled,
        Source::Spread,
        Source::Imported,
    ];

    /// Its name in exports and the API.
    pub fn name(self) -> &'static str {
        match self {
            Source::Measured => "measured",
            Source::Backfilled => "backfilled",
            Source::Spread => "spread",
            Source::Imported => "imported",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Source::Measured => 0,
            Source::Backfilled => 1,
            Source::Spread => 2,
            Source::Imported => 4,
        }
    }

    /// The source of one interval's energy: imported, else by the gap it spans.
    pub fn of_interval(imported: bool, len_ms: i64, shaped: bool) -> Source {
        match (imported, len_ms > GAP_MS, shaped) {
            (true, _, _) => Source::Imported,
            (false, false, _) => Source::Measured,
            (false, true, true) => Source::Backfilled,
            (false, true, false) => Source::Spread,
        }
    }
}

/// The energy of a period that was not measured, by source (mWh), and which sources touched
/// it at all: a gap that brought no energy still makes its buckets `mixed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unmeasured {
    /// Energy shaped by day totals, mWh.
    pub backfilled_mwh: i64,
    /// Energy spread over a gap, mWh.
    pub spread_mwh: i64,
    /// Imported energy, mWh.
    pub imported_mwh: i64,
    /// Bits of the sources other than measured that contributed.
    pub marks: u8,
}

impl Unmeasured {
    /// Notes `mwh` from `source`.
    pub fn add(&mut self, source: Source, mwh: i64) {
        match source {
            Source::Measured => return,
            Source::Backfilled => self.backfilled_mwh += mwh,
            Source::Spread => self.spread_mwh += mwh,
            Source::Imported => self.imported_mwh += mwh,
        }
        self.marks |= source.bit();
    }

    /// Folds `o` in.
    pub fn merge(&mut self, o: &Unmeasured) {
        self.backfilled_mwh += o.backfilled_mwh;
        self.spread_mwh += o.spread_mwh;
        self.imported_mwh += o.imported_mwh;
        self.marks |= o.marks;
    }

    /// True when everything was measured.
    pub fn is_measured(&self) -> bool {
        self.marks == 0
    }

    /// Energy not measured, mWh.
    pub fn total_mwh(&self) -> i64 {
        self.backfilled_mwh + self.spread_mwh + self.imported_mwh
    }

    /// The energy of `source` among `energy_mwh` in all.
    pub fn of(&self, source: Source, energy_mwh: i64) -> i64 {
        match source {
            Source::Measured => energy_mwh - self.total_mwh(),
            Source::Backfilled => self.backfilled_mwh,
            Source::Spread => self.spread_mwh,
            Source::Imported => self.imported_mwh,
        }
    }

    /// The share (0–1) of `energy_mwh` that was measured. A period without energy is wholly
    /// measured or wholly not, by whether anything else touched it.
    pub fn measured_share(&self, energy_mwh: i64) -> f64 {
        if self.is_measured() {
            return 1.0;
        }
        if energy_mwh <= 0 {
            return 0.0;
        }
        ((energy_mwh - self.total_mwh()) as f64 / energy_mwh as f64).clamp(0.0, 1.0)
    }

    /// The quality of an aggregated row: `measured` when all of it was, else `mixed`.
    pub fn quality(&self) -> &'static str {
        if self.is_measured() {
            "measured"
        } else {
            "mixed"
        }
    }

    /// The source of a stored interval or an imported reading: one source, if only one
    /// touched it (`None` when several did).
    pub fn single(&self) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.bit() == self.marks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_interval_has_one_source() {
        assert_eq!(Source::of_interval(false, 10_000, false), Source::Measured);
        assert_eq!(Source::of_interval(false, GAP_MS, false), Source::Measured);
        assert_eq!(
            Source::of_interval(false, GAP_MS + 1, false),
            Source::Spread
        );
        assert_eq!(
            Source::of_interval(false, 3_600_000, true),
            Source::Backfilled
        );
        assert_eq!(Source::of_interval(true, 10_000, false), Source::Imported);
        assert_eq!(Source::of_interval(true, 3_600_000, true), Source::Imported);
    }

    #[test]
    fn shares_and_qualities_follow_the_sources() {
        let mut u = Unmeasured::default();
        u.add(Source::Measured, 500);
        assert_eq!((u.quality(), u.measured_share(1000)), ("measured", 1.0));
        assert_eq!(u.single(), Some(Source::Measured));
        u.add(Source::Spread, 250);
        assert_eq!((u.quality(), u.measured_share(1000)), ("mixed", 0.75));
        assert_eq!(u.single(), Some(Source::Spread));
        let mut v = Unmeasured::default();
        v.add(Source::Backfilled, 250);
        v.add(Source::Imported, 0);
        u.merge(&v);
        assert_eq!(u.measured_share(1000), 0.5);
        assert_eq!(u.single(), None);
        assert_eq!(u.of(Source::Measured, 1000), 500);
        assert_eq!(u.of(Source::Imported, 1000), 0);
        // A gap that brought nothing still marks its period.
        let mut g = Unmeasured::default();
        g.add(Source::Spread, 0);
        assert_eq!((g.quality(), g.measured_share(0)), ("mixed", 0.0));
    }
}
