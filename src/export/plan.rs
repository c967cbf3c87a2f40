//! Planning: a create body becomes a [`Plan`] — what every kind shares (format, devices,
//! range, zone, rendering options, tariffs) and what its kind asks ([`KindPlan`]). A plan is
//! made once, when the job is created, and is complete: what a render reads from the store
//! and the daemon besides it is gathered when the job starts ([`super::kind::Inputs`]).

use super::devices::{
    DeviceMeta, anonymize_ip, hashed_name, pseudonym, rated_power, select_devices,
};
use super::format::pdf::Style;
use super::kind::{self, KindPlan};
use super::request::{
    CreateRequest, RequestError, bad, check_type, format_of, resolve_range, tz_of,
};
use super::{Compression, Format};
use crate::config::{Exports, Zone};
use crate::store::DeviceRecord;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A validated export: what every kind shares, and its kind's own part.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Output format.
    pub format: Format,
    /// Compression.
    pub compression: Compression,
    /// Devices in output order (none for audit_logs and configuration).
    pub devices: Vec<DeviceMeta>,
    /// Range start, UTC ms (inclusive).
    pub start_ms: i64,
    /// Range end, UTC ms (exclusive).
    pub end_ms: i64,
    /// Zone of timestamps and local periods.
    pub tz: Tz,
    /// CSV header row.
    pub include_headers: bool,
    /// Rounding at render time.
    pub decimal_places: Option<u8>,
    /// CSV delimiter byte.
    pub delimiter: u8,
    /// Leave user data out of metadata.
    pub exclude_user_data: bool,
    /// Price of a kWh with taxes when one flat tariff covers the range (NaN otherwise).
    pub price_per_kwh: f64,
    /// Currency code.
    pub currency: String,
    /// Tariff versions.
    pub tariffs: Arc<crate::tariff::Versions>,
    /// Wait for the result in the create call.
    pub background: bool,
    /// Native charts (Excel, PDF).
    pub include_charts: bool,
    /// PDF page size and fonts.
    pub pdf: Style,
    /// What the kind asks.
    pub kind: KindPlan,
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

/// Validates a create body. `resolved` carries the device ids and range fixed at creation, so
/// a job planned again after a restart exports exactly what was asked.
pub fn plan(
    req: &CreateRequest,
    ctx: &PlanCtx<'_>,
    resolved: Option<&Resolved>,
) -> Result<Plan, RequestError> {
    let export_type = check_type(req)?;
    let (format, compression) = format_of(req)?;
    let tz = tz_of(req, ctx.default_tz)?;
    let (start_ms, end_ms) = match resolved {
        Some(r) => (r.start_ms, r.end_ms),
        None => resolve_range(req, tz, ctx.limits, ctx.now_ms)?,
    };
    let kind = kind::plan(export_type, req, ctx.limits, start_ms, end_ms)?;
    let devices = devices_of(req, ctx, resolved, &kind)?;
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
    let include_charts = match &req.include_charts {
        // A report is a document: charts unless asked not to.
        None | Some(serde_json::Value::Null) => kind.is_document(),
        Some(serde_json::Value::Bool(b)) => *b,
        Some(other) => {
            return Err(bad(format!(
                "include_charts must be true or false, got {other}"
            )));
        }
    };
    let constant = crate::tariff::engine::constant(ctx.tariffs, start_ms, end_ms);
    let privacy = req.privacy_options.clone().unwrap_or_default();
    Ok(Plan {
        format,
        compression,
        devices,
        start_ms,
        end_ms,
        tz,
        include_headers: opts.include_headers.unwrap_or(true),
        decimal_places: opts.decimal_places,
        delimiter,
        exclude_user_data: privacy.exclude_user_data.unwrap_or(false),
        price_per_kwh: constant.unwrap_or(f64::NAN),
        currency: ctx.tariffs.at(end_ms - 1).source.currency.clone(),
        tariffs: Arc::new(ctx.tariffs.clone()),
        background: req
            .performance_options
            .as_ref()
            .and_then(|p| p.background_processing)
            .unwrap_or(true),
        include_charts,
        pdf: Style::of(ctx.limits),
        kind,
    })
}

/// The devices of the export as it shows them (privacy options applied): those fixed at
/// creation, else the `devices` selector; none for the kinds without devices.
fn devices_of(
    req: &CreateRequest,
    ctx: &PlanCtx<'_>,
    resolved: Option<&Resolved>,
    kind: &KindPlan,
) -> Result<Vec<DeviceMeta>, RequestError> {
    let selected: Vec<&DeviceRecord> = match resolved {
        _ if !kind.has_devices() => Vec::new(),
        Some(r) => r
            .device_ids
            .iter()
            .filter_map(|id| ctx.devices.iter().find(|d| d.info.device_id.as_str() == id))
            .collect(),
        // A report or cost analysis of a daemon with no devices yet is still a document.
        None if kind.is_document() && req.devices.is_none() && ctx.devices.is_empty() => Vec::new(),
        None => select_devices(req.devices.as_ref(), ctx.devices)?,
    };
    let privacy = req.privacy_options.clone().unwrap_or_default();
    let (anon, hash, no_loc) = (
        privacy.anonymize_ip_addresses.unwrap_or(false),
        privacy.hash_device_identifiers.unwrap_or(false),
        privacy.remove_location_data.unwrap_or(false),
    );
    Ok(selected
        .iter()
        .map(|d| {
            let i = &d.info;
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
                rated_power: rated_power(ctx.limits, d),
                model: i.model.clone(),
                location: if no_loc {
                    None
                } else {
                    i.latitude.zip(i.longitude)
                },
            }
        })
        .collect())
}

/// What a job stores of its plan, written once when the job is created and read back when it
/// renders — never planned again: everything but what the render takes from the
/// configuration and the stored tariffs (the tariff versions with the price and currency they
/// give, the PDF style).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredPlan {
    format: Format,
    compression: Compression,
    devices: Vec<DeviceMeta>,
    start_ms: i64,
    end_ms: i64,
    tz: Zone,
    include_headers: bool,
    decimal_places: Option<u8>,
    delimiter: u8,
    exclude_user_data: bool,
    background: bool,
    include_charts: bool,
    kind: KindPlan,
}

/// The `request` of a job record: its stored plan; or, for a job created before plans were
/// stored, the body and what creation resolved (planned again when it renders).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoredJob {
    /// Since plans are stored.
    Planned {
        /// The plan.
        plan: Box<StoredPlan>,
    },
    /// Before.
    Requested(Box<StoredRequest>),
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
    /// What the job stores of it.
    pub fn stored(&self) -> StoredPlan {
        StoredPlan {
            format: self.format,
            compression: self.compression,
            devices: self.devices.clone(),
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            tz: Zone(self.tz),
            include_headers: self.include_headers,
            decimal_places: self.decimal_places,
            delimiter: self.delimiter,
            exclude_user_data: self.exclude_user_data,
            background: self.background,
            include_charts: self.include_charts,
            kind: self.kind.clone(),
        }
    }

    /// The plan a job stored, with the tariff versions and the PDF style of now.
    pub fn restore(s: StoredPlan, tariffs: &crate::tariff::Versions, limits: &Exports) -> Plan {
        let constant = crate::tariff::engine::constant(tariffs, s.start_ms, s.end_ms);
        Plan {
            format: s.format,
            compression: s.compression,
            devices: s.devices,
            start_ms: s.start_ms,
            end_ms: s.end_ms,
            tz: s.tz.0,
            include_headers: s.include_headers,
            decimal_places: s.decimal_places,
            delimiter: s.delimiter,
            exclude_user_data: s.exclude_user_data,
            price_per_kwh: constant.unwrap_or(f64::NAN),
            currency: tariffs.at(s.end_ms - 1).source.currency.clone(),
            tariffs: Arc::new(tariffs.clone()),
            background: s.background,
            include_charts: s.include_charts,
            pdf: Style::of(limits),
            kind: s.kind,
        }
    }

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
    use crate::domain::{DeviceId, DeviceInfo};

    #[test]
    fn a_stored_plan_reads_back_as_planned_and_an_old_record_as_its_body() {
        let info = DeviceInfo::plug(DeviceId::parse("P1").unwrap())
            .at("127.0.0.9:9999")
            .named("Lamp");
        let devices = vec![DeviceRecord {
            info,
            key: 0,
            first_seen_ms: 0,
            labels: Default::default(),
            forgotten_ms: None,
        }];
        let limits = Exports::default();
        let tariffs =
            crate::tariff::Versions::compile(&[crate::config::Tariff::default()], Tz::UTC).unwrap();
        let ctx = PlanCtx {
            devices: &devices,
            default_tz: Tz::UTC,
            limits: &limits,
            tariffs: &tariffs,
            privacy_key: &[1; 32],
            now_ms: 1_735_689_600_000,
        };
        let range = serde_json::json!({"start": "2024-12-01", "end": "2024-12-31"});
        let bodies = [
            serde_json::json!({"export_type": "device_data", "format": "csv", "date_range": range,
                "aggregation": "daily", "aggregation_functions": {"power_w": "max"},
                "filters": {"min_power": 5, "days_of_week": [1, 2]},
                "custom_fields": [{"name": "load", "formula": "power_w / 100", "unit": "%"},
                                  {"name": "peak", "formula": "MAX(power_w)"}],
                "options": {"timezone": "Europe/Berlin", "delimiter": ";"},
                "privacy_options": {"hash_device_identifiers": true}}),
            serde_json::json!({"export_type": "cost_analysis", "format": "json", "date_range": range,
                "grouping": "weekly", "breakdown_by": ["device", "room"]}),
            serde_json::json!({"export_type": "system_report", "format": "pdf", "date_range": range,
                "report_sections": ["usage_patterns"]}),
            serde_json::json!({"export_type": "audit_logs", "format": "csv", "date_range": range,
                "event_types": ["LOGIN_FAILURE"], "users": ["ann"]}),
            serde_json::json!({"export_type": "configuration", "format": "json",
                "privacy_options": {"anonymize_ip_addresses": true}}),
        ];
        for body in bodies {
            let req: CreateRequest = serde_json::from_value(body.clone()).unwrap();
            let planned = plan(&req, &ctx, None).unwrap();
            let job = StoredJob::Planned {
                plan: Box::new(planned.stored()),
            };
            let text = serde_json::to_value(&job).unwrap();
            assert!(text.get("body").is_none(), "the body is not stored: {text}");
            let StoredJob::Planned { plan: stored } = serde_json::from_value(text).unwrap() else {
                panic!("{body}: not read back as a plan");
            };
            let back = Plan::restore(*stored, &tariffs, &limits);
            assert_eq!(format!("{back:?}"), format!("{planned:?}"), "{body}");
        }
        // A record written before plans were stored: the body and what creation resolved.
        let old = serde_json::json!({"body": {"export_type": "device_data", "format": "csv"},
            "resolved": {"device_ids": ["P1"], "start_ms": 0, "end_ms": 86_400_000}});
        let StoredJob::Requested(r) = serde_json::from_value(old).unwrap() else {
            panic!("an old record reads as its body");
        };
        assert_eq!(r.resolved.device_ids, ["P1"]);
    }
}
