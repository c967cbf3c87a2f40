//! The create body of `POST /api/exports/create` (and of `POST /api/exports/preview`) with
//! every option the spec names, and the checks every kind shares (type, format, zone, range);
//! [`super::plan`] turns a body into a plan. Every mistake becomes a [`RequestError`] naming
//! the field.

use super::{Compression, Format};
use crate::config::Exports;
use crate::domain::rollup::local_midnight;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A request the API refuses, with its error code (`VALIDATION_ERROR`, `INVALID_DATE_RANGE`,
/// `UNSUPPORTED_FORMAT`, …).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// Machine-readable code.
    pub code: &'static str,
    /// What is wrong, naming the field.
    pub message: String,
}

pub(super) fn bad(message: impl Into<String>) -> RequestError {
    RequestError {
        code: "VALIDATION_ERROR",
        message: message.into(),
    }
}

impl From<super::kind::cost_analysis::OptionError> for RequestError {
    fn from(e: super::kind::cost_analysis::OptionError) -> Self {
        bad(e.to_string())
    }
}

impl From<super::kind::system_report::SectionsError> for RequestError {
    fn from(e: super::kind::system_report::SectionsError) -> Self {
        bad(e.to_string())
    }
}

fn bad_range(message: impl Into<String>) -> RequestError {
    RequestError {
        code: "INVALID_DATE_RANGE",
        message: message.into(),
    }
}

/// `date_range`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateRange {
    /// RFC 3339 time or `YYYY-MM-DD` (local midnight).
    pub start: Option<String>,
    /// RFC 3339 time (inclusive) or `YYYY-MM-DD` (inclusive of that whole local day).
    pub end: Option<String>,
}

/// `devices`: `"all"` or a list of ids / IPs (a list may hold `"all"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Devices {
    /// `"all"`.
    One(String),
    /// Ids or IPs.
    List(Vec<String>),
}

/// `time_of_day` window, `HH:MM`; `end` before `start` wraps midnight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeOfDay {
    /// Window start (inclusive).
    pub start: String,
    /// Window end (exclusive).
    pub end: String,
}

/// `filters`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiltersBody {
    /// Keep rows with power ≥ this, W.
    pub min_power: Option<f64>,
    /// Keep rows with power ≤ this, W.
    pub max_power: Option<f64>,
    /// `on` and/or `off`.
    pub device_states: Option<Vec<String>>,
    /// Drop rows whose power is more than 3 standard deviations from the device's mean.
    pub exclude_outliers: Option<bool>,
    /// Local time-of-day window.
    pub time_of_day: Option<TimeOfDay>,
    /// ISO weekdays 1 (Monday) – 7 (Sunday).
    pub days_of_week: Option<Vec<u8>>,
}

/// `options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionsBody {
    /// Header row in CSV (default true).
    pub include_headers: Option<bool>,
    /// IANA zone of timestamps and local days (default: the daemon's).
    pub timezone: Option<String>,
    /// Round numbers to this many decimals when rendering (0–9).
    pub decimal_places: Option<u8>,
    /// CSV delimiter, one character (default `,`).
    pub delimiter: Option<String>,
    /// `gzip`, `zip` or `none`.
    pub compression: Option<String>,
    /// `ha_statistics`: the statistic ids' prefix (`<prefix>:<device>_energy`; default
    /// `kasad`).
    pub ha_statistic_prefix: Option<String>,
}

/// One `custom_fields` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomFieldBody {
    /// Column or summary name.
    pub name: String,
    /// Formula (see `export::formula`).
    pub formula: String,
    /// Unit shown in metadata.
    pub unit: Option<String>,
}

/// `privacy_options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyBody {
    /// Zero the host part of device IPs (IPv4 last octet).
    pub anonymize_ip_addresses: Option<bool>,
    /// Replace device ids and names with keyed hashes (stable per install).
    pub hash_device_identifiers: Option<bool>,
    /// Leave user names and ids out of the file's metadata.
    pub exclude_user_data: Option<bool>,
    /// Leave device coordinates out of the file.
    pub remove_location_data: Option<bool>,
}

/// `performance_options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerformanceBody {
    /// Accepted for compatibility; kasad always streams.
    pub chunk_size: Option<u64>,
    /// `true` → gzip.
    pub compression: Option<bool>,
    /// `false` → create waits and returns the finished job.
    pub background_processing: Option<bool>,
    /// Accepted for compatibility; finished files are kept until they expire.
    pub cache_results: Option<bool>,
}

/// The body of `POST /api/exports/create`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// `device_data`, `cost_analysis`, `system_report`, `audit_logs`, `configuration`.
    pub export_type: String,
    /// `csv`, `json`, ….
    pub format: String,
    /// Time range (default: the last 7 days).
    pub date_range: Option<DateRange>,
    /// Devices (default: all).
    pub devices: Option<Devices>,
    /// Columns (default: all fields).
    pub fields: Option<Vec<String>>,
    /// `raw`, `hourly`, `daily`, `weekly`, `monthly`.
    pub aggregation: Option<String>,
    /// Field → `average`, `sum`, `min`, `max`, `first`, `last`, `count`.
    pub aggregation_functions: Option<BTreeMap<String, String>>,
    /// Row filters.
    pub filters: Option<FiltersBody>,
    /// Rendering options.
    pub options: Option<OptionsBody>,
    /// Formulas.
    pub custom_fields: Option<Vec<CustomFieldBody>>,
    /// Privacy transforms.
    pub privacy_options: Option<PrivacyBody>,
    /// Compression and background processing.
    pub performance_options: Option<PerformanceBody>,
    /// cost_analysis (tariff issue).
    pub grouping: Option<serde_json::Value>,
    /// cost_analysis / Excel (formats issue).
    pub include_charts: Option<serde_json::Value>,
    /// cost_analysis (tariff issue).
    pub breakdown_by: Option<serde_json::Value>,
    /// cost_analysis: a bill shared out to the devices (bills issue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<serde_json::Value>,
    /// cost_analysis: other tariffs priced on the same history (bills issue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare_tariffs: Option<serde_json::Value>,
    /// system_report (formats issue).
    pub report_sections: Option<serde_json::Value>,
    /// audit_logs (formats issue).
    pub event_types: Option<serde_json::Value>,
    /// audit_logs (formats issue).
    pub severity_levels: Option<serde_json::Value>,
    /// audit_logs (formats issue).
    pub users: Option<serde_json::Value>,
}

/// Refuses options that only apply to device_data in a request of another type.
pub fn refuse_device_options(req: &CreateRequest, hint: &str) -> Result<(), RequestError> {
    if req.devices.is_some() {
        return Err(bad(format!(
            "devices applies to device_data and system_report exports, not to {} ({hint})",
            req.export_type
        )));
    }
    refuse_row_options(req, hint)
}

/// Refuses the row options of device_data (fields, aggregation, filters, custom fields).
pub fn refuse_row_options(req: &CreateRequest, hint: &str) -> Result<(), RequestError> {
    let device_only = [
        ("fields", req.fields.is_some()),
        ("aggregation", req.aggregation.is_some()),
        ("aggregation_functions", req.aggregation_functions.is_some()),
        ("filters", req.filters.is_some()),
        ("custom_fields", req.custom_fields.is_some()),
    ];
    match device_only.iter().find(|(_, set)| *set) {
        Some((name, _)) => Err(bad(format!(
            "{name} applies to device_data exports, not to {} ({hint})",
            req.export_type
        ))),
        None => Ok(()),
    }
}

/// Parses RFC 3339, or a date (local midnight in `tz`, or the next midnight when `end_of_day`).
pub fn parse_time(field: &str, s: &str, tz: Tz, end_of_day: bool) -> Result<i64, RequestError> {
    // Years 1970–9999: far enough for any data, and range arithmetic cannot overflow.
    const MAX_MS: i64 = 253_402_300_800_000;
    let t = parse_any(field, s, tz, end_of_day)?;
    if !(0..=MAX_MS).contains(&t) {
        return Err(RequestError {
            code: "INVALID_DATE",
            message: format!("{field}: {s:?} is outside the years 1970 to 9999"),
        });
    }
    Ok(t)
}

fn parse_any(field: &str, s: &str, tz: Tz, end_of_day: bool) -> Result<i64, RequestError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis() + i64::from(end_of_day));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let d = if end_of_day {
            d.succ_opt()
                .ok_or_else(|| bad(format!("{field}: date out of range")))?
        } else {
            d
        };
        return Ok(local_midnight(d, tz));
    }
    Err(RequestError {
        code: "INVALID_DATE",
        message: format!(
            "{field} must be an RFC 3339 time (2026-11-25T10:00:00Z) or a date (2026-11-25), got {s:?}"
        ),
    })
}

pub fn tz_of(req: &CreateRequest, default: Tz) -> Result<Tz, RequestError> {
    match req.options.as_ref().and_then(|o| o.timezone.as_deref()) {
        Some(t) => t.parse().map_err(|_| RequestError {
            code: "INVALID_TIMEZONE",
            message: format!("options.timezone: unknown IANA time zone {t:?}"),
        }),
        None => Ok(default),
    }
}

/// The absolute range of a request: `[start, end)` in UTC ms.
pub fn resolve_range(
    req: &CreateRequest,
    tz: Tz,
    limits: &Exports,
    now_ms: i64,
) -> Result<(i64, i64), RequestError> {
    let dr = req.date_range.clone().unwrap_or_default();
    let end = match &dr.end {
        Some(s) => parse_time("date_range.end", s, tz, true)?,
        None => now_ms + 1,
    };
    let start = match &dr.start {
        Some(s) => parse_time("date_range.start", s, tz, false)?,
        None => end - 7 * 86_400_000,
    };
    if start >= end {
        return Err(bad_range("Start date must be before end date"));
    }
    let days = (end - start) as f64 / 86_400_000.0;
    let max = f64::from(limits.max_date_range_days);
    // A local range of N whole days can be up to an hour longer across a DST change.
    if days > max + 1.0 / 24.0 {
        return Err(bad_range(format!(
            "The date range spans {:.1} days; at most {} days are allowed",
            days, limits.max_date_range_days
        )));
    }
    Ok((start, end))
}

/// Format and compression of a request (all export types).
pub fn format_of(req: &CreateRequest) -> Result<(Format, Compression), RequestError> {
    let format = Format::parse(&req.format).ok_or_else(|| RequestError {
        code: "UNSUPPORTED_FORMAT",
        message: format!(
            "format must be one of csv, json, excel, pdf, ha_statistics; got {:?}",
            req.format
        ),
    })?;
    let explicit = req.options.as_ref().and_then(|o| o.compression.as_deref());
    let compression = match explicit {
        Some("gzip") => Compression::Gzip,
        Some("zip") => Compression::Zip,
        Some("none") => Compression::None,
        Some(other) => {
            return Err(bad(format!(
                "options.compression must be gzip, zip or none, got {other:?}"
            )));
        }
        None if req
            .performance_options
            .as_ref()
            .and_then(|p| p.compression)
            .unwrap_or(false) =>
        {
            Compression::Gzip
        }
        None => Compression::None,
    };
    Ok((format, compression))
}

/// Checks the export type.
pub fn check_type(req: &CreateRequest) -> Result<super::ExportType, RequestError> {
    super::ExportType::parse(&req.export_type).ok_or_else(|| {
        bad(format!(
            "export_type must be one of {}; got {:?}",
            super::ExportType::ALL
                .map(super::ExportType::name)
                .join(", "),
            req.export_type
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_only_end_includes_the_whole_local_day() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let s = parse_time("s", "2024-03-10", ny, false).unwrap();
        let e = parse_time("e", "2024-03-10", ny, true).unwrap();
        assert_eq!(e - s, 23 * 3_600_000, "spring-forward day has 23 hours");
        let t = parse_time("e", "2024-01-31T23:59:59Z", Tz::UTC, true).unwrap();
        assert_eq!(t % 1000, 1, "an RFC 3339 end is inclusive");
    }
}
