//! Utility bills as data: what a person copies from the bill (period, kWh, total, standing
//! charge, meter readings), checked field by field.

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Longest bill period, days.
pub const MAX_DAYS: i64 = 400;
/// Longest note, characters.
pub const MAX_NOTE: usize = 1_000;

/// A bill as the API takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillBody {
    /// First day (inclusive, the tariff's zone) or an RFC 3339 time.
    pub start: String,
    /// Last day (inclusive) or an RFC 3339 time (exclusive).
    pub end: String,
    /// Energy billed, kWh.
    pub kwh: f64,
    /// The bill's total, taxes and standing charge included.
    pub total: f64,
    /// Standing charge for the whole period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standing_charge: Option<f64>,
    /// Meter reading at the start, kWh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_start: Option<f64>,
    /// Meter reading at the end, kWh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_end: Option<f64>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Why a bill is refused: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BillError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> BillError {
    BillError {
        field,
        message: message.into(),
    }
}

/// A date (its local midnight, or the next one for an inclusive `end`) or an RFC 3339 time;
/// how [`period`] reads its two ends.
fn instant(field: &'static str, s: &str, tz: Tz, end: bool) -> Result<i64, BillError> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let d = if end { d.succ_opt().unwrap_or(d) } else { d };
        return Ok(crate::domain::rollup::local_midnight(d, tz));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| err(field, "a date YYYY-MM-DD or an RFC 3339 time"))
}

/// A period `[start, end)` from a start and an inclusive end (dates or RFC 3339 times, dates
/// read in `tz`), at most `max_days` long (an hour more across a DST change); `fields` name
/// the two in errors. How bills, tariff comparisons and price listings read their periods.
pub fn period(
    fields: (&'static str, &'static str),
    start: &str,
    end: &str,
    tz: Tz,
    max_days: i64,
) -> Result<(i64, i64), BillError> {
    let a = instant(fields.0, start, tz, false)?;
    let b = instant(fields.1, end, tz, true)?;
    if b <= a {
        return Err(err(fields.1, "after start"));
    }
    if b - a > max_days * 86_400_000 + 3_600_000 {
        return Err(err(
            fields.1,
            format!("at most {max_days} days after start"),
        ));
    }
    Ok((a, b))
}

fn amount(field: &'static str, v: f64, zero: bool) -> Result<(), BillError> {
    if v.is_finite() && (v > 0.0 || (zero && v == 0.0)) && v < 1e12 {
        Ok(())
    } else {
        Err(err(field, if zero { "0 or more" } else { "more than 0" }))
    }
}

impl BillBody {
    /// Checks every field; the period `[start, end)` in UTC ms, dates read in `tz`.
    pub fn check(&self, tz: Tz) -> Result<(i64, i64), BillError> {
        let (start, end) = period(("start", "end"), &self.start, &self.end, tz, MAX_DAYS)?;
        amount("kwh", self.kwh, false)?;
        amount("total", self.total, true)?;
        if let Some(s) = self.standing_charge {
            amount("standing_charge", s, true)?;
            if s > self.total {
                return Err(err("standing_charge", "at most the total"));
            }
        }
        for (f, v) in [
            ("meter_start", self.meter_start),
            ("meter_end", self.meter_end),
        ] {
            if let Some(v) = v {
                amount(f, v, true)?;
            }
        }
        if let (Some(a), Some(b)) = (self.meter_start, self.meter_end)
            && b < a
        {
            return Err(err("meter_end", "not below meter_start"));
        }
        if self
            .note
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_NOTE)
        {
            return Err(err("note", format!("at most {MAX_NOTE} characters")));
        }
        Ok((start, end))
    }

    /// The energy charge: the total less the standing charge.
    pub fn energy_charge(&self) -> f64 {
        self.total - self.standing_charge.unwrap_or(0.0)
    }
}

/// A stored bill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bill {
    /// Its id.
    pub bill_id: String,
    /// What was entered.
    #[serde(flatten)]
    pub body: BillBody,
    /// The period's start, UTC ms.
    pub start_ms: i64,
    /// The period's end (exclusive), UTC ms.
    pub end_ms: i64,
    /// Recorded, UTC ms.
    pub created_ms: i64,
    /// Last changed, UTC ms.
    pub updated_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: serde_json::Value) -> BillBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_bill_is_checked_and_its_dates_are_inclusive() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let b = body(
            json!({"start": "2024-03-01", "end": "2024-03-31", "kwh": 250, "total": 90.5,
            "standing_charge": 12}),
        );
        let (s, e) = b.check(tz).unwrap();
        // March 2024 in Berlin: 31 days less the hour of the DST change.
        assert_eq!(e - s, 31 * 86_400_000 - 3_600_000);
        assert_eq!(b.energy_charge(), 78.5);
        let field = |v: serde_json::Value| body(v).check(tz).unwrap_err().field;
        assert_eq!(
            field(json!({"start": "2024-03-31", "end": "2024-03-01", "kwh": 1, "total": 1})),
            "end"
        );
        assert_eq!(
            field(json!({"start": "2024-03-01", "end": "2024-03-31", "kwh": 0, "total": 1})),
            "kwh"
        );
        assert_eq!(
            field(json!({"start": "x", "end": "2024-03-31", "kwh": 1, "total": 1})),
            "start"
        );
        assert_eq!(
            field(
                json!({"start": "2024-03-01", "end": "2024-03-31", "kwh": 1, "total": 1, "standing_charge": 2})
            ),
            "standing_charge"
        );
        assert_eq!(
            field(json!({"start": "2020-01-01", "end": "2024-03-31", "kwh": 1, "total": 1})),
            "end"
        );
        assert!(
            serde_json::from_value::<BillBody>(json!({"start": "2024-03-01", "end": "2024-03-02",
            "kwh": 1, "total": 1, "surprise": 1}))
            .is_err()
        );
    }
}
