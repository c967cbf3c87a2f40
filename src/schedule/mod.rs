//! Scheduled exports: the stored schedule, its request bodies and validation, and the
//! relative date ranges (`last_month`, …) resolved in the schedule's time zone at run time.
//! [`runner`] fires schedules and records their runs; [`delivery`] hands the files over.

pub mod delivery;
pub mod limits;
pub mod runner;

use crate::domain::rollup::{Period, local_midnight, period_end, period_start};
use crate::export::request::{CreateRequest, DateRange};
use chrono::{Datelike, TimeZone};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::Value;

pub use crate::domain::schedule::{Delivery, LastRun, RunStatus, ScheduleRecord};

/// Relative ranges accepted as `export_config.date_range`.
pub const RELATIVE_RANGES: [&str; 9] = [
    "today",
    "yesterday",
    "last_24_hours",
    "last_7_days",
    "last_week",
    "this_month",
    "last_month",
    "this_year",
    "last_year",
];

/// `POST /api/exports/schedule` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// Display name.
    pub name: String,
    /// 5-field cron expression.
    pub schedule: String,
    /// IANA zone (default: the daemon's).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The export request.
    pub export_config: Value,
    /// Default `{"method": "none"}`.
    #[serde(default)]
    pub delivery: Option<Delivery>,
}

/// `PUT /api/exports/schedules/{id}` body: the fields to change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    /// New name.
    pub name: Option<String>,
    /// New expression.
    pub schedule: Option<String>,
    /// New zone.
    pub timezone: Option<String>,
    /// Pause or resume.
    pub enabled: Option<bool>,
    /// New export request.
    pub export_config: Option<Value>,
    /// New delivery.
    pub delivery: Option<Delivery>,
}

/// A schedule the user got wrong: code and message for a 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// `INVALID_SCHEDULE`, `INVALID_DELIVERY` or an export request code.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Invalid {
    /// An `INVALID_SCHEDULE`.
    pub fn schedule(message: impl Into<String>) -> Self {
        Self {
            code: "INVALID_SCHEDULE",
            message: message.into(),
        }
    }
}

/// Checks name, expression and zone; returns the parsed expression and zone.
pub fn check_timing(
    name: &str,
    schedule: &str,
    timezone: &str,
) -> Result<(crate::cron::Schedule, Tz), Invalid> {
    if name.trim().is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Invalid::schedule(
            "name must have 1 to 100 characters and no control characters",
        ));
    }
    let cron = crate::cron::Schedule::parse(schedule)
        .map_err(|m| Invalid::schedule(format!("schedule: {m}")))?;
    let tz: Tz = timezone.parse().map_err(|_| {
        Invalid::schedule(format!(
            "timezone: unknown IANA time zone {timezone:?} (e.g. \"Europe/Berlin\")"
        ))
    })?;
    Ok((cron, tz))
}

/// Refuses an expression that never fires (e.g. `0 0 31 2 *`).
pub fn check_fires(cron: &crate::cron::Schedule, tz: Tz, now_ms: i64) -> Result<(), Invalid> {
    match cron.next_after(now_ms, tz) {
        Some(_) => Ok(()),
        None => Err(Invalid::schedule(format!(
            "schedule: {:?} never fires",
            cron.text()
        ))),
    }
}

/// `[start, end)` UTC ms of relative range `name` at `now_ms` in `tz`: whole local days,
/// weeks (Monday to Sunday), months and years; `today`, `this_month`, `this_year` and
/// `last_24_hours` end now; `last_7_days` is the 7 whole days before today.
pub fn resolve_range(name: &str, now_ms: i64, tz: Tz) -> Option<(i64, i64)> {
    let today = period_start(now_ms, Period::Day, tz);
    let year_start = |ms: i64| {
        let d = tz.timestamp_millis_opt(ms).single()?.date_naive();
        Some(local_midnight(d.with_ordinal(1)?, tz))
    };
    let before = |ms: i64| ms - 1;
    Some(match name {
        "today" => (today, now_ms + 1),
        "yesterday" => (period_start(before(today), Period::Day, tz), today),
        "last_24_hours" => (now_ms - 86_400_000, now_ms + 1),
        "last_7_days" => {
            let d = tz.timestamp_millis_opt(today).single()?.date_naive();
            (local_midnight(d - chrono::Days::new(7), tz), today)
        }
        "last_week" => {
            let this = period_start(now_ms, Period::Week, tz);
            (period_start(before(this), Period::Week, tz), this)
        }
        "this_month" => (period_start(now_ms, Period::Month, tz), now_ms + 1),
        "last_month" => {
            let this = period_start(now_ms, Period::Month, tz);
            let last = period_start(before(this), Period::Month, tz);
            (last, period_end(last, Period::Month, tz))
        }
        "this_year" => (year_start(now_ms)?, now_ms + 1),
        "last_year" => {
            let this = year_start(now_ms)?;
            (year_start(before(this))?, this)
        }
        _ => return None,
    })
}

/// The export request of `config` for a run at `now_ms`: a relative `date_range` becomes an
/// explicit one, and `options.timezone` defaults to the schedule's zone.
pub fn request_at(config: &Value, now_ms: i64, tz: Tz) -> Result<CreateRequest, Invalid> {
    let mut v = config.clone();
    let obj = v.as_object_mut().ok_or_else(|| Invalid {
        code: "VALIDATION_ERROR",
        message: "export_config must be an object".into(),
    })?;
    if let Some(Value::String(name)) = obj.get("date_range") {
        let (start, end) = resolve_range(name, now_ms, tz).ok_or_else(|| Invalid {
            code: "INVALID_DATE_RANGE",
            message: format!(
                "date_range {name:?} is not one of {} (or an object with start and end)",
                RELATIVE_RANGES.join(", ")
            ),
        })?;
        let explicit = DateRange {
            start: Some(crate::clock::rfc3339(start)),
            end: Some(crate::clock::rfc3339(end - 1)),
        };
        obj.insert("date_range".into(), serde_json::json!(explicit));
    }
    let options = obj
        .entry("options")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(o) = options.as_object_mut() {
        o.entry("timezone")
            .or_insert_with(|| Value::String(tz.name().to_owned()));
    }
    serde_json::from_value(v).map_err(|e| Invalid {
        code: "VALIDATION_ERROR",
        message: format!("export_config: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::clock::utc;

    fn range(name: &str, now: &str, tz: &str) -> (String, String) {
        let tz: Tz = tz.parse().unwrap();
        let (a, b) = resolve_range(name, utc(now), tz).unwrap();
        let f = |ms: i64| tz.timestamp_millis_opt(ms).unwrap().to_rfc3339();
        (f(a), f(b))
    }

    #[test]
    fn relative_ranges_in_the_schedules_zone() {
        let ny = "America/New_York";
        let now = "2026-03-09T13:30:00Z"; // Monday 09:30 EDT, the day after spring-forward
        let r = |n| range(n, now, ny);
        assert_eq!(
            r("yesterday"),
            (
                "2026-03-08T00:00:00-05:00".into(),
                "2026-03-09T00:00:00-04:00".into()
            ),
            "a 23-hour day"
        );
        assert_eq!(r("today").0, "2026-03-09T00:00:00-04:00");
        assert_eq!(
            r("last_week"),
            (
                "2026-03-02T00:00:00-05:00".into(),
                "2026-03-09T00:00:00-04:00".into()
            )
        );
        assert_eq!(
            r("last_7_days"),
            (
                "2026-03-02T00:00:00-05:00".into(),
                "2026-03-09T00:00:00-04:00".into()
            )
        );
        assert_eq!(
            r("last_month"),
            (
                "2026-02-01T00:00:00-05:00".into(),
                "2026-03-01T00:00:00-05:00".into()
            )
        );
        assert_eq!(r("this_month").0, "2026-03-01T00:00:00-05:00");
        assert_eq!(
            r("last_year"),
            (
                "2025-01-01T00:00:00-05:00".into(),
                "2026-01-01T00:00:00-05:00".into()
            )
        );
        assert_eq!(r("this_year").0, "2026-01-01T00:00:00-05:00");
        let k = range("yesterday", "2026-11-25T20:00:00Z", "Asia/Kathmandu");
        assert_eq!(
            k,
            (
                "2026-11-25T00:00:00+05:45".into(),
                "2026-11-26T00:00:00+05:45".into()
            ),
            "20:00Z is already the 26th in Kathmandu"
        );
        assert!(resolve_range("last_fortnight", 0, Tz::UTC).is_none());
    }

    #[test]
    fn requests_get_explicit_ranges_and_the_zone() {
        let cfg = serde_json::json!({"export_type": "device_data", "format": "csv",
            "date_range": "last_month", "devices": "all"});
        let r = request_at(&cfg, utc("2026-11-25T10:00:00Z"), Tz::UTC).unwrap();
        let dr = r.date_range.unwrap();
        assert_eq!(dr.start.as_deref(), Some("2026-10-01T00:00:00.000Z"));
        assert_eq!(dr.end.as_deref(), Some("2026-10-31T23:59:59.999Z"));
        let bad = serde_json::json!({"export_type": "device_data", "format": "csv", "date_range": "soon"});
        let e = request_at(&bad, 0, Tz::UTC).unwrap_err();
        assert_eq!(e.code, "INVALID_DATE_RANGE");
        assert!(e.message.contains("last_month"), "{}", e.message);
    }

    #[test]
    fn timing_is_checked() {
        assert!(check_timing("m", "0 9 1 * *", "Europe/Berlin").is_ok());
        let e = check_timing("m", "0 9 1 *", "UTC").unwrap_err();
        assert!(e.message.contains("5 fields"), "{}", e.message);
        let e = check_timing("m", "0 9 1 * *", "Mars/Olympus").unwrap_err();
        assert!(e.message.contains("Mars/Olympus"), "{}", e.message);
        assert!(check_timing(" ", "0 9 1 * *", "UTC").is_err());
    }
}
