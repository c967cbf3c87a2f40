//! The row filters of a device_data export: power range, relay state, outliers, local time of
//! day and weekdays — parsed from the request and applied to rows.

use super::request::{FiltersBody, RequestError, bad};

/// Validated filters.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Filters {
    /// W.
    pub min_power: Option<f64>,
    /// W.
    pub max_power: Option<f64>,
    /// Keep rows whose relay is on.
    pub keep_on: bool,
    /// Keep rows whose relay is off.
    pub keep_off: bool,
    /// 3-sigma outlier removal on power, per device.
    pub exclude_outliers: bool,
    /// Local minutes of day `[start, end)`; wraps when end ≤ start.
    pub time_of_day: Option<(u32, u32)>,
    /// Bit `d` set = ISO weekday `d` kept.
    pub days_mask: u8,
}

impl Filters {
    /// Whether a row with this local minute-of-day and weekday passes the time filters.
    pub fn time_ok(&self, minute: u32, weekday: u32) -> bool {
        if self.days_mask & (1 << weekday) == 0 {
            return false;
        }
        match self.time_of_day {
            None => true,
            Some((s, e)) if s < e => minute >= s && minute < e,
            Some((s, e)) => minute >= s || minute < e,
        }
    }

    /// Whether a row with this power and relay state passes the value filters.
    pub fn value_ok(&self, power_w: Option<f64>, on: bool) -> bool {
        if (on && !self.keep_on) || (!on && !self.keep_off) {
            return false;
        }
        match power_w {
            Some(p) => {
                self.min_power.is_none_or(|m| p >= m) && self.max_power.is_none_or(|m| p <= m)
            }
            None => self.min_power.is_none() && self.max_power.is_none(),
        }
    }

    /// Whether every row passes (no filter set).
    pub fn passes_all(&self) -> bool {
        self.min_power.is_none()
            && self.max_power.is_none()
            && self.keep_on
            && self.keep_off
            && !self.has_time()
    }

    /// Whether any time filter is set.
    pub fn has_time(&self) -> bool {
        self.time_of_day.is_some() || self.days_mask != 0b1111_1110
    }
}

pub(super) fn parse_filters(f: Option<&FiltersBody>) -> Result<Filters, RequestError> {
    let mut out = Filters {
        keep_on: true,
        keep_off: true,
        days_mask: 0b1111_1110,
        ..Filters::default()
    };
    let Some(f) = f else { return Ok(out) };
    for (k, v) in [("min_power", f.min_power), ("max_power", f.max_power)] {
        if v.is_some_and(|x| !x.is_finite()) {
            return Err(bad(format!("filters.{k} must be a number")));
        }
    }
    if let (Some(a), Some(b)) = (f.min_power, f.max_power)
        && a > b
    {
        return Err(bad("filters.min_power must not exceed filters.max_power"));
    }
    out.min_power = f.min_power;
    out.max_power = f.max_power;
    if let Some(states) = &f.device_states {
        out.keep_on = false;
        out.keep_off = false;
        for s in states {
            match s.to_ascii_lowercase().as_str() {
                "on" => out.keep_on = true,
                "off" => out.keep_off = true,
                _ => {
                    return Err(bad(format!(
                        "filters.device_states: use \"on\" and/or \"off\", got {s:?}"
                    )));
                }
            }
        }
    }
    out.exclude_outliers = f.exclude_outliers.unwrap_or(false);
    if let Some(t) = &f.time_of_day {
        let s = parse_hhmm("filters.time_of_day.start", &t.start)?;
        let e = parse_hhmm("filters.time_of_day.end", &t.end)?;
        if s == e {
            return Err(bad(
                "filters.time_of_day: start and end are equal; omit the filter to keep the whole day",
            ));
        }
        out.time_of_day = Some((s, e));
    }
    if let Some(days) = &f.days_of_week {
        if days.is_empty() {
            return Err(bad(
                "filters.days_of_week: list at least one day (1 = Monday … 7 = Sunday)",
            ));
        }
        out.days_mask = 0;
        for d in days {
            if !(1..=7).contains(d) {
                return Err(bad(format!(
                    "filters.days_of_week: {d} is not an ISO weekday (1 = Monday … 7 = Sunday)"
                )));
            }
            out.days_mask |= 1 << d;
        }
    }
    Ok(out)
}

fn parse_hhmm(field: &str, s: &str) -> Result<u32, RequestError> {
    let err = || bad(format!("{field} must be HH:MM (00:00–24:00), got {s:?}"));
    let (h, m) = s.split_once(':').ok_or_else(err)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| err())?, m.parse().map_err(|_| err())?);
    if m > 59 || h > 24 || (h == 24 && m > 0) {
        return Err(err());
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_of_day_windows_wrap_midnight() {
        let mut f = parse_filters(None).unwrap();
        f.time_of_day = Some((22 * 60, 6 * 60));
        assert!(f.time_ok(23 * 60, 1));
        assert!(f.time_ok(60, 1));
        assert!(!f.time_ok(12 * 60, 1));
        f.time_of_day = Some((6 * 60, 22 * 60));
        assert!(f.time_ok(6 * 60, 3) && !f.time_ok(22 * 60, 3));
    }

    #[test]
    fn days_of_week_are_iso() {
        let body = FiltersBody {
            days_of_week: Some(vec![1, 2, 3, 4, 5]),
            ..Default::default()
        };
        let f = parse_filters(Some(&body)).unwrap();
        assert!(f.time_ok(0, 1) && f.time_ok(0, 5));
        assert!(!f.time_ok(0, 6) && !f.time_ok(0, 7));
        let bad = FiltersBody {
            days_of_week: Some(vec![0]),
            ..Default::default()
        };
        assert!(
            parse_filters(Some(&bad))
                .unwrap_err()
                .message
                .contains("ISO weekday")
        );
    }
}
