//! Household load profiles: deterministic functions from time to power.
//!
//! Power is constant within each whole second, so the energy counter (the sum of per-second
//! power) is exactly consistent with what the device reports.

/// What is plugged into a simulated outlet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Compressor cycling: ~110 W for 15 minutes in every 45, with a start-up spike.
    Fridge,
    /// 60 W from 17:00 to 23:30 UTC.
    Lamp,
    /// ~95 W in the evening, 0.5 W standby otherwise.
    Tv,
    /// 1.5 kW thermostat cycling in the morning and evening.
    Heater,
    /// 60–160 W during working hours, 2 W asleep.
    Computer,
    /// A fixed power in mW.
    Constant(i64),
    /// A fridge whose compressor runs 24 minutes in every 45 (instead of 15) from Unix second
    /// `from_s` on: a failing door seal.
    FridgeDrift {
        /// When the drift starts, Unix seconds.
        from_s: i64,
    },
    /// A washing machine with one programme a day from 09:00 UTC, two pauses inside:
    /// see [`WASHER_PROGRAMME`]; 1 W standby otherwise.
    Washer,
}

/// The washer's programme: (seconds from its start, mW, noise in mW) for each phase, ending at
/// the last phase's end: heating, a soak pause, washing, a drain pause, spinning.
pub const WASHER_PROGRAMME: [(i64, i64, i64); 5] = [
    (20 * 60, 2_000_000, 20_000),
    (26 * 60, 3_000, 0),
    (56 * 60, 200_000, 15_000),
    (65 * 60, 3_000, 0),
    (75 * 60, 500_000, 10_000),
];
/// Start of the washer's programme, seconds after UTC midnight.
pub const WASHER_START_S: i64 = 9 * 3_600;

/// A compressor on for `on_s` seconds in every 2,700 with a start-up spike, 1.2 W resting.
fn fridge(seed: u64, s: i64, on_s: i64) -> i64 {
    let phase = (s + (seed % 2_700) as i64).rem_euclid(2_700);
    if phase < 5 {
        450_000 + noise(seed, s, 20_000)
    } else if phase < on_s {
        110_000 + noise(seed, s, 3_000)
    } else {
        1_200 + noise(seed, s, 100)
    }
}

/// splitmix64: a small, good, deterministic hash for per-second noise.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Noise in [-spread, +spread] for second `s` of series `seed`.
pub fn noise(seed: u64, s: i64, spread: i64) -> i64 {
    if spread == 0 {
        return 0;
    }
    (mix(seed ^ (s as u64)) % (2 * spread as u64 + 1)) as i64 - spread
}

impl Load {
    /// Power in mW during second `s` (Unix seconds) for an outlet seeded with `seed`.
    pub fn power_mw(self, seed: u64, s: i64) -> i64 {
        let day_s = s.rem_euclid(86_400);
        let hour = day_s / 3_600;
        match self {
            Load::Fridge => fridge(seed, s, 900),
            Load::FridgeDrift { from_s } => fridge(seed, s, if s < from_s { 900 } else { 1_440 }),
            Load::Washer => {
                let t = day_s - WASHER_START_S;
                match WASHER_PROGRAMME
                    .iter()
                    .find(|(end, _, _)| (0..*end).contains(&t))
                {
                    Some((_, mw, spread)) => mw + noise(seed, s, *spread),
                    None => 1_000,
                }
            }
            Load::Lamp => {
                if (61_200..84_600).contains(&day_s) {
                    60_000 + noise(seed, s, 300)
                } else {
                    0
                }
            }
            Load::Tv => {
                if (19..23).contains(&hour) {
                    95_000 + noise(seed, s, 8_000)
                } else {
                    500
                }
            }
            Load::Heater => {
                let active = (6..9).contains(&hour) || (17..22).contains(&hour);
                let phase = (s + (seed % 1_800) as i64).rem_euclid(1_800);
                if active && phase < 600 {
                    1_500_000 + noise(seed, s, 15_000)
                } else {
                    0
                }
            }
            Load::Computer => {
                if (8..18).contains(&hour) {
                    110_000 + noise(seed, s / 60, 50_000) + noise(seed, s, 2_000)
                } else {
                    2_000
                }
            }
            Load::Constant(mw) => mw,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_are_deterministic_and_non_negative() {
        for load in [
            Load::Fridge,
            Load::Lamp,
            Load::Tv,
            Load::Heater,
            Load::Computer,
            Load::FridgeDrift {
                from_s: 1_700_040_000,
            },
            Load::Washer,
        ] {
            for s in (1_700_000_000..1_700_086_400).step_by(97) {
                let p = load.power_mw(7, s);
                assert!(p >= 0, "{load:?} at {s}: {p}");
                assert_eq!(p, load.power_mw(7, s));
            }
        }
    }

    #[test]
    fn the_fridge_cycles() {
        let on = (0..2_700)
            .filter(|s| Load::Fridge.power_mw(1, *s) > 50_000)
            .count();
        assert!((800..1000).contains(&on), "{on}");
    }

    #[test]
    fn the_drifting_fridge_runs_longer_from_its_day_and_the_washer_pauses() {
        let drift = Load::FridgeDrift { from_s: 2_700 * 10 };
        let on = |from: i64| {
            (from..from + 2_700)
                .filter(|s| drift.power_mw(1, *s) > 50_000)
                .count()
        };
        assert!((850..950).contains(&on(0)), "{}", on(0));
        assert!(
            (1_400..1_480).contains(&on(2_700 * 20)),
            "{}",
            on(2_700 * 20)
        );
        let day = 19_700 * 86_400;
        let w = |m: i64| Load::Washer.power_mw(1, day + WASHER_START_S + m * 60);
        assert_eq!(w(-1), 1_000);
        assert!(w(10) > 1_900_000);
        assert_eq!((w(22), w(60)), (3_000, 3_000));
        assert!(w(30) > 150_000 && w(70) > 450_000);
        assert_eq!(w(75), 1_000);
    }
}
