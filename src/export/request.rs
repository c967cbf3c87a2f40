//! The create body of `POST /api/exports/create` (and of `POST /api/exports/preview`), with
//! every option the spec names, validated into a [`Plan`] the renderer can run without further
//! checks. Every mistake becomes a [`RequestError`] naming the field.

use super::devices::{
    DeviceMeta, anonymize_ip, hashed_name, pseudonym, rated_power, select_devices,
};
use super::fields::{Agg, Custom, Field, VALUE_FIELDS, all_field_names, parse_customs};
use super::filters::{Filters, parse_filters};
use super::{Compression, Format};
use crate::config::Exports;
use crate::domain::rollup::{Period, local_midnight};
use crate::store::DeviceRecord;
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
    /// system_report (formats issue).
    pub report_sections: Option<serde_json::Value>,
    /// audit_logs (formats issue).
    pub event_types: Option<serde_json::Value>,
    /// audit_logs (formats issue).
    pub severity_levels: Option<serde_json::Value>,
    /// audit_logs (formats issue).
    pub users: Option<serde_json::Value>,
}

/// A validated device_data export.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Output format.
    pub format: Format,
    /// Compression.
    pub compression: Compression,
    /// Devices in output order.
    pub devices: Vec<DeviceMeta>,
    /// Range start, UTC ms (inclusive).
    pub start_ms: i64,
    /// Range end, UTC ms (exclusive).
    pub end_ms: i64,
    /// Zone of timestamps and local periods.
    pub tz: Tz,
    /// Columns.
    pub fields: Vec<Field>,
    /// `None` = raw readings.
    pub aggregation: Option<Period>,
    /// Name as requested (`raw`, `hourly`, …).
    pub aggregation_name: String,
    /// Function per value field.
    pub functions: [Agg; 7],
    /// Filters.
    pub filters: Filters,
    /// CSV header row.
    pub include_headers: bool,
    /// Rounding at render time.
    pub decimal_places: Option<u8>,
    /// CSV delimiter byte.
    pub delimiter: u8,
    /// Row formulas (extra columns).
    pub row_fields: Vec<Custom>,
    /// Aggregate formulas (summary).
    pub aggregate_fields: Vec<Custom>,
    /// Leave user data out of metadata.
    pub exclude_user_data: bool,
    /// Price of a kWh with taxes when one flat tariff covers the range (NaN otherwise).
    pub price_per_kwh: f64,
    /// Currency code.
    pub currency: String,
    /// Tariff versions.
    pub tariffs: std::sync::Arc<crate::tariff::Versions>,
    /// Price of a kWh per bucket, for `cost`.
    pub prices: std::sync::Arc<crate::tariff::engine::Prices>,
    /// Wait for the result in the create call.
    pub background: bool,
    /// Native charts (Excel) from the rollups.
    pub include_charts: bool,
    /// What the rows are.
    pub kind: Kind,
    /// PDF page size and fonts.
    pub pdf: super::format::pdf::Style,
    /// The audit key, for the chain column of audit_logs exports (set by the job runner).
    pub audit_key: Option<crate::auth::keys::SecretKey>,
}

/// What an export's rows are.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Readings or their aggregates, per device.
    DeviceData,
    /// Audit log entries matching a filter.
    AuditLogs(crate::store::audit::AuditFilter),
    /// The system report; `report` is computed by the job runner, which knows the daemon.
    SystemReport {
        /// Sections, in report order.
        sections: Vec<super::kind::system_report::Section>,
        /// The computed report.
        report: Option<super::report::Report>,
    },
    /// The cost analysis; `report` is computed by the job runner.
    CostAnalysis {
        /// Periods.
        grouping: super::kind::cost_analysis::Grouping,
        /// Breakdowns.
        breakdown: super::kind::cost_analysis::Breakdown,
        /// The computed report.
        report: Option<super::report::Report>,
    },
    /// The configuration; `rows` are filled in by the job runner, which has the settings.
    Configuration {
        /// The privacy options.
        privacy: super::kind::configuration::Privacy,
        /// The rows.
        rows: Vec<super::kind::configuration::Row>,
    },
}

impl Kind {
    /// For the types rendered as a document (system_report, cost_analysis): the report, once
    /// computed.
    pub fn document(&self) -> Option<Option<&super::report::Report>> {
        match self {
            Kind::SystemReport { report, .. } | Kind::CostAnalysis { report, .. } => {
                Some(report.as_ref())
            }
            _ => None,
        }
    }
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
fn refuse_row_options(req: &CreateRequest, hint: &str) -> Result<(), RequestError> {
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

/// What planning needs besides the body.
#[derive(Debug)]
pub struct PlanCtx<'a> {
    /// Stored devices.
    pub devices: &'a [DeviceRecord],
    /// Daemon time zone.
    pub default_tz: Tz,
    /// Limits.
    pub limits: &'a Exports,
    /// Tariff versions.
    pub tariffs: &'a crate::tariff::Versions,
    /// Key for hashed identifiers.
    pub privacy_key: &'a [u8],
    /// Now, UTC ms.
    pub now_ms: i64,
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

fn tz_of(req: &CreateRequest, default: Tz) -> Result<Tz, RequestError> {
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
            "format must be one of csv, json, excel, pdf; got {:?}",
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

/// Checks the export type; only [`super::RENDERED_TYPES`] are produced by this build.
pub fn check_type(req: &CreateRequest) -> Result<super::ExportType, RequestError> {
    let Some(t) = super::ExportType::parse(&req.export_type) else {
        return Err(bad(format!(
            "export_type must be one of {}; got {:?}",
            super::EXPORT_TYPES.join(", "),
            req.export_type
        )));
    };
    if !super::RENDERED_TYPES.contains(&req.export_type.as_str()) {
        return Err(RequestError {
            code: "UNSUPPORTED_EXPORT_TYPE",
            message: format!(
                "export_type {:?} is not available in this version; use device_data",
                req.export_type
            ),
        });
    }
    Ok(t)
}

/// Validates a device_data request. `resolved` carries the device ids and range fixed at
/// creation, so a job rendered after a restart exports exactly what was asked.
pub fn plan(
    req: &CreateRequest,
    ctx: &PlanCtx<'_>,
    resolved: Option<&Resolved>,
) -> Result<Plan, RequestError> {
    check_type(req)?;
    let (format, compression) = format_of(req)?;
    let tz = tz_of(req, ctx.default_tz)?;
    let (start_ms, end_ms) = match resolved {
        Some(r) => (r.start_ms, r.end_ms),
        None => resolve_range(req, tz, ctx.limits, ctx.now_ms)?,
    };
    let kind = match req.export_type.as_str() {
        "audit_logs" => Kind::AuditLogs(super::kind::audit_logs::filter_of(req, start_ms, end_ms)?),
        "configuration" => {
            refuse_device_options(req, "use privacy_options")?;
            let p = req.privacy_options.clone().unwrap_or_default();
            Kind::Configuration {
                privacy: super::kind::configuration::Privacy {
                    no_location: p.remove_location_data.unwrap_or(false),
                    no_users: p.exclude_user_data.unwrap_or(false),
                    anonymize_ip: p.anonymize_ip_addresses.unwrap_or(false),
                    hash_ids: p.hash_device_identifiers.unwrap_or(false),
                },
                rows: Vec::new(),
            }
        }
        "system_report" => {
            refuse_row_options(req, "use devices, report_sections and privacy_options")?;
            Kind::SystemReport {
                sections: super::kind::system_report::sections_of(req.report_sections.as_ref())?,
                report: None,
            }
        }
        "cost_analysis" => {
            refuse_row_options(
                req,
                "use devices, grouping, breakdown_by and include_charts",
            )?;
            Kind::CostAnalysis {
                grouping: super::kind::cost_analysis::Grouping::parse(
                    req.grouping.as_ref().and_then(|v| v.as_str()),
                )?,
                breakdown: super::kind::cost_analysis::Breakdown::parse(req.breakdown_by.as_ref())?,
                report: None,
            }
        }
        _ => Kind::DeviceData,
    };
    if req
        .grouping
        .as_ref()
        .is_some_and(|g| !g.is_string() && !g.is_null())
    {
        return Err(bad("grouping must be daily, weekly, monthly or yearly"));
    }
    if !matches!(kind, Kind::CostAnalysis { .. })
        && (req.grouping.is_some() || req.breakdown_by.is_some())
    {
        return Err(bad(format!(
            "grouping and breakdown_by apply to cost_analysis exports, not to {}",
            req.export_type
        )));
    }
    if !matches!(kind, Kind::AuditLogs(_)) {
        let audit_only = [
            ("event_types", req.event_types.is_some()),
            ("severity_levels", req.severity_levels.is_some()),
            ("users", req.users.is_some()),
        ];
        if let Some((name, _)) = audit_only.iter().find(|(_, set)| *set) {
            return Err(bad(format!(
                "{name} applies to audit_logs exports, not to {}",
                req.export_type
            )));
        }
    }
    if !matches!(kind, Kind::SystemReport { .. }) && req.report_sections.is_some() {
        return Err(bad(format!(
            "report_sections applies to system_report exports, not to {}",
            req.export_type
        )));
    }
    let other_type = kind != Kind::DeviceData;
    let with_devices = !other_type || kind.document().is_some();
    let selected: Vec<&DeviceRecord> = match resolved {
        _ if !with_devices => Vec::new(),
        Some(r) => r
            .device_ids
            .iter()
            .filter_map(|id| ctx.devices.iter().find(|d| d.info.device_id.as_str() == id))
            .collect(),
        // A report or cost analysis of a daemon with no devices yet is still a document.
        None if kind.document().is_some() && req.devices.is_none() && ctx.devices.is_empty() => {
            Vec::new()
        }
        None => select_devices(req.devices.as_ref(), ctx.devices)?,
    };
    let fields: Vec<Field> = match &req.fields {
        _ if other_type => Vec::new(),
        None => all_field_names()
            .iter()
            .filter_map(|f| Field::parse(f))
            .collect(),
        Some(list) if list.is_empty() => return Err(bad("fields: list at least one field")),
        Some(list) => list
            .iter()
            .map(|f| {
                Field::parse(f).ok_or_else(|| {
                    bad(format!(
                        "fields: unknown field {f:?}; known fields: {}",
                        all_field_names().join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let agg_name = req.aggregation.clone().unwrap_or_else(|| "raw".into());
    let aggregation = match agg_name.as_str() {
        "raw" => None,
        "15m" | "quarter_hourly" => Some(Period::Quarter),
        "hourly" => Some(Period::Hour),
        "daily" => Some(Period::Day),
        "weekly" => Some(Period::Week),
        "monthly" => Some(Period::Month),
        other => {
            return Err(bad(format!(
                "aggregation must be raw, 15m, hourly, daily, weekly or monthly; got {other:?}"
            )));
        }
    };
    let mut functions = VALUE_FIELDS.map(|f| f.default_agg);
    for (field, func) in req.aggregation_functions.iter().flatten() {
        let i = VALUE_FIELDS
            .iter()
            .position(|f| f.name == field)
            .ok_or_else(|| {
                bad(format!(
                    "aggregation_functions: {field:?} is not a numeric field ({})",
                    VALUE_FIELDS.map(|f| f.name).join(", ")
                ))
            })?;
        functions[i] = Agg::parse(func).ok_or_else(|| {
            bad(format!(
                "aggregation_functions.{field}: use average, sum, min, max, first, last or count; got {func:?}"
            ))
        })?;
    }
    let filters = parse_filters(req.filters.as_ref())?;
    let opts = req.options.clone().unwrap_or_default();
    if opts.decimal_places.is_some_and(|d| d > 9) {
        return Err(bad("options.decimal_places must be between 0 and 9"));
    }
    let delimiter = match opts.delimiter.as_deref() {
        None | Some(",") => b',',
        Some(";") => b';',
        Some("|") => b'|',
        Some("\t" | "\\t") => b'\t',
        Some(d) => {
            return Err(bad(format!(
                "options.delimiter must be one of \",\", \";\", \"|\" or a tab (\"\\t\"), got {d:?}"
            )));
        }
    };
    let taken: Vec<&str> = all_field_names();
    let (row_fields, aggregate_fields) = parse_customs(
        req.custom_fields.as_ref(),
        &taken,
        ctx.limits.max_custom_fields,
    )?;
    let privacy = req.privacy_options.clone().unwrap_or_default();
    let (anon, hash, no_loc) = (
        privacy.anonymize_ip_addresses.unwrap_or(false),
        privacy.hash_device_identifiers.unwrap_or(false),
        privacy.remove_location_data.unwrap_or(false),
    );
    let devices = selected
        .iter()
        .map(|d| {
            let i = &d.info;
            let rated = rated_power(ctx.limits, d);
            DeviceMeta {
                id: i.device_id.clone(),
                shown_id: if hash {
                    pseudonym(ctx.privacy_key, "id", i.device_id.as_str())
                } else {
                    i.device_id.to_string()
                },
                ip: if anon {
                    anonymize_ip(i.ip())
                } else {
                    i.ip().to_owned()
                },
                name: if hash {
                    hashed_name(ctx.privacy_key, d.name())
                } else {
                    d.name().to_owned()
                },
                room: d.room(ctx.devices).map(str::to_owned),
                rated_power: rated,
                model: i.model.clone(),
                location: if no_loc {
                    None
                } else {
                    i.latitude.zip(i.longitude)
                },
            }
        })
        .collect();
    let include_charts = match &req.include_charts {
        // A report is a document: charts unless asked not to.
        None | Some(serde_json::Value::Null) => kind.document().is_some(),
        Some(serde_json::Value::Bool(b)) => *b,
        Some(other) => {
            return Err(bad(format!(
                "include_charts must be true or false, got {other}"
            )));
        }
    };
    let constant = crate::tariff::engine::constant(ctx.tariffs, start_ms, end_ms);
    Ok(Plan {
        format,
        compression,
        devices,
        start_ms,
        end_ms,
        tz,
        fields,
        aggregation,
        aggregation_name: agg_name,
        functions,
        filters,
        include_headers: opts.include_headers.unwrap_or(true),
        decimal_places: opts.decimal_places,
        delimiter,
        row_fields,
        aggregate_fields,
        exclude_user_data: privacy.exclude_user_data.unwrap_or(false),
        price_per_kwh: constant.unwrap_or(f64::NAN),
        currency: ctx.tariffs.at(end_ms - 1).source.currency.clone(),
        tariffs: std::sync::Arc::new(ctx.tariffs.clone()),
        // Per bucket when the price varies: filled in from the store by the export service.
        prices: std::sync::Arc::new(crate::tariff::engine::Prices::Const(
            constant.unwrap_or(f64::NAN),
        )),
        background: req
            .performance_options
            .as_ref()
            .and_then(|p| p.background_processing)
            .unwrap_or(true),
        include_charts,
        kind,
        pdf: super::format::pdf::Style {
            letter: ctx.limits.pdf_page_size == "Letter",
            fonts: ctx.limits.pdf_fonts.clone(),
        },
        audit_key: None,
    })
}

/// What creation fixed: device ids and the absolute range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// Device ids in output order.
    pub device_ids: Vec<String>,
    /// Range start, UTC ms.
    pub start_ms: i64,
    /// Range end (exclusive), UTC ms.
    pub end_ms: i64,
}

/// What a job stores: the body as sent and what creation resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRequest {
    /// The create body.
    pub body: CreateRequest,
    /// Fixed at creation.
    pub resolved: Resolved,
}

impl Plan {
    /// The resolution to store with the job.
    pub fn resolved(&self) -> Resolved {
        Resolved {
            device_ids: self.devices.iter().map(|d| d.id.to_string()).collect(),
            start_ms: self.start_ms,
            end_ms: self.end_ms,
        }
    }
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
