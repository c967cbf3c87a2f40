//! The export kinds, one file each: what a kind's request may hold, what it reads from the
//! store, and the rows or document it produces. This file is where they are registered: a
//! new kind is a new file here, a variant of [`KindPlan`] (and of [`Inputs`] if it reads
//! something new), and its arms in the matches below and in the pipeline.
//!
//! - [`device_data`]: readings or their aggregates per device, filtered, with custom fields.
//! - [`cost_analysis`]: priced energy per device, period, band and tier.
//! - [`system_report`]: the report of devices, energy, cost, health and usage patterns.
//! - [`audit_logs`]: audit entries with their hash chain, and the check of an exported file.
//! - [`configuration`]: devices, users and settings (never secrets).
//! - [`statement`]: a signed statement of some devices' energy and cost.

pub mod audit_logs;
pub mod configuration;
pub mod cost_allocation;
pub mod cost_analysis;
pub mod cost_compare;
pub mod device_data;
pub mod provenance;
pub mod report_insights;
pub mod statement;
pub mod system_report;

use super::ExportType;
use super::plan::Plan;
use super::report::Report;
use super::request::{CreateRequest, RequestError, bad};
use crate::config::Exports;
use crate::store::audit::AuditFilter;
use crate::tariff::engine::Prices;
use serde_json::{Value, json};
use std::sync::Arc;

/// What an export's kind asks, validated (stored with the job as it is).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "export_type", content = "plan", rename_all = "snake_case")]
pub enum KindPlan {
    /// Readings or their aggregates, per device.
    DeviceData(device_data::DataPlan),
    /// Priced energy.
    CostAnalysis(cost_analysis::Options),
    /// The report's sections, in report order.
    SystemReport(Vec<system_report::Section>),
    /// Audit log entries matching a filter.
    AuditLogs(AuditFilter),
    /// The configuration, with its privacy options.
    Configuration(configuration::Privacy),
    /// A signed statement.
    Statement(statement::Options),
}

/// What a render reads besides its plan, gathered when the job starts.
#[derive(Debug, Clone)]
pub enum Inputs {
    /// device_data: the price of a kWh per bucket (for `cost`).
    Rows(Arc<Prices>),
    /// system_report, cost_analysis: the computed document.
    Document(Report),
    /// audit_logs: the key that chains the rows.
    AuditLog(crate::auth::keys::SecretKey),
    /// configuration: its rows.
    Configuration(Vec<configuration::Row>),
    /// statement: the statement computed, with its signing key.
    Statement(Box<statement::Built>),
}

impl KindPlan {
    /// Its export type.
    pub fn export_type(&self) -> ExportType {
        match self {
            KindPlan::DeviceData(_) => ExportType::DeviceData,
            KindPlan::CostAnalysis(_) => ExportType::CostAnalysis,
            KindPlan::SystemReport(_) => ExportType::SystemReport,
            KindPlan::AuditLogs(_) => ExportType::AuditLogs,
            KindPlan::Configuration(_) => ExportType::Configuration,
            KindPlan::Statement(_) => ExportType::Statement,
        }
    }

    /// Whether it is rendered as a document ([`Report`]) rather than rows.
    pub fn is_document(&self) -> bool {
        matches!(self, KindPlan::SystemReport(_) | KindPlan::CostAnalysis(_))
    }

    /// Whether it covers devices.
    pub fn has_devices(&self) -> bool {
        matches!(self, KindPlan::DeviceData(_) | KindPlan::Statement(_)) || self.is_document()
    }
}

/// What gathering a render's inputs needs from the daemon.
#[derive(Debug)]
pub struct Daemon<'a> {
    /// The store.
    pub store: &'a crate::store::Store,
    /// The settings.
    pub settings: &'a crate::config::Settings,
    /// The key of hashed identifiers.
    pub privacy_key: &'a [u8],
    /// The audit key.
    pub audit_key: &'a crate::auth::keys::SecretKey,
    /// The running daemon (None in tools).
    pub runtime: Option<&'a system_report::Runtime>,
    /// Now, UTC ms.
    pub now_ms: i64,
    /// Who asked for the export.
    pub requester: u32,
    /// The data directory (the statement key).
    pub data_dir: &'a std::path::Path,
}

/// What the render of `plan` reads besides it: the prices, the computed document, the audit
/// key or the configuration's rows.
pub fn inputs(
    plan: &Plan,
    d: &Daemon<'_>,
    ctl: &super::pipeline::Control,
) -> Result<Inputs, super::pipeline::RenderError> {
    Ok(match &plan.kind {
        KindPlan::DeviceData(_) => Inputs::Rows(device_data::prices(d.store, plan)?),
        KindPlan::AuditLogs(_) => Inputs::AuditLog(d.audit_key.clone()),
        KindPlan::Configuration(privacy) => Inputs::Configuration(configuration::rows(
            d.store,
            d.settings,
            privacy,
            d.privacy_key,
        )?),
        KindPlan::SystemReport(sections) => {
            // The health section counts the requester's exports (everyone's for admins).
            let admin =
                (d.store.user(d.requester)?).is_some_and(|u| u.role == crate::auth::Role::Admin);
            let owner = (!admin).then_some(d.requester);
            Inputs::Document(system_report::build(
                d.store, plan, sections, d.runtime, d.now_ms, owner, ctl,
            )?)
        }
        KindPlan::Statement(o) => {
            let key = crate::auth::signing::StatementKey::load_or_create(d.data_dir)
                .map_err(|e| super::pipeline::RenderError::Key(e.to_string()))?;
            let issuer = match d.settings.exports.statement_issuer.trim() {
                "" => rustix::system::uname()
                    .nodename()
                    .to_string_lossy()
                    .into_owned(),
                s => s.to_owned(),
            };
            Inputs::Statement(Box::new(statement::build(
                d.store,
                plan,
                o,
                issuer,
                Arc::new(key),
                ctl,
            )?))
        }
        KindPlan::CostAnalysis(o) => {
            let mut r = cost_analysis::report(d.store, plan, o.grouping, o.breakdown, ctl)?;
            if let Some(a) = &o.allocation {
                let names = cost_analysis::device_labels(plan);
                let c = plan.tariffs.at(plan.start_ms);
                r.parts.push(cost_allocation::part(
                    d.store,
                    plan,
                    &names,
                    a,
                    c.decimals,
                    &c.source.currency,
                )?);
            }
            if !o.compare_tariffs.is_empty() {
                r.parts
                    .push(cost_compare::part(d.store, plan, &o.compare_tariffs)?);
            }
            Inputs::Document(r)
        }
    })
}

/// The permission an export type needs beyond DATA_EXPORT: audit_logs exports need
/// AUDIT_READ, configuration exports (users, settings) SYSTEM_CONFIG.
pub fn extra_permission(t: ExportType) -> Option<crate::auth::Permission> {
    match t {
        ExportType::AuditLogs => Some(crate::auth::Permission::AuditRead),
        ExportType::Configuration => Some(crate::auth::Permission::SystemConfig),
        ExportType::DeviceData
        | ExportType::CostAnalysis
        | ExportType::SystemReport
        | ExportType::Statement => None,
    }
}

/// Validates what the body asks of its kind, and refuses the options of other kinds.
pub fn plan(
    t: ExportType,
    req: &CreateRequest,
    limits: &Exports,
    start_ms: i64,
    end_ms: i64,
) -> Result<KindPlan, RequestError> {
    let planned = match t {
        ExportType::AuditLogs => Some(KindPlan::AuditLogs(audit_logs::filter_of(
            req, start_ms, end_ms,
        )?)),
        ExportType::Configuration => Some(KindPlan::Configuration(configuration::privacy_of(req)?)),
        ExportType::SystemReport => Some(KindPlan::SystemReport(
            system_report::sections_of_request(req)?,
        )),
        ExportType::CostAnalysis => Some(KindPlan::CostAnalysis(cost_analysis::options_of(req)?)),
        ExportType::Statement => Some(KindPlan::Statement(statement::options_of(req)?)),
        ExportType::DeviceData => None,
    };
    refuse_other_kinds(req, t)?;
    if req.format == "ha_statistics" && t != ExportType::DeviceData {
        return Err(bad(format!(
            "format ha_statistics is for device_data exports, not {}",
            req.export_type
        )));
    }
    match planned {
        Some(k) => Ok(k),
        None => Ok(KindPlan::DeviceData(device_data::plan(req, limits)?)),
    }
}

/// Refuses options that belong to another kind than `kind`.
fn refuse_other_kinds(req: &CreateRequest, t: ExportType) -> Result<(), RequestError> {
    if req
        .grouping
        .as_ref()
        .is_some_and(|g| !g.is_string() && !g.is_null())
    {
        return Err(bad("grouping must be daily, weekly, monthly or yearly"));
    }
    if !matches!(t, ExportType::CostAnalysis | ExportType::Statement) && req.allocation.is_some() {
        return Err(bad(format!(
            "allocation applies to cost_analysis and statement exports, not to {}",
            req.export_type
        )));
    }
    if t != ExportType::CostAnalysis && req.compare_tariffs.is_some() {
        return Err(bad(format!(
            "compare_tariffs applies to cost_analysis exports, not to {}",
            req.export_type
        )));
    }
    if t != ExportType::CostAnalysis && (req.grouping.is_some() || req.breakdown_by.is_some()) {
        return Err(bad(format!(
            "grouping and breakdown_by apply to cost_analysis exports, not to {}",
            req.export_type
        )));
    }
    if t != ExportType::AuditLogs {
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
    if t != ExportType::SystemReport && req.report_sections.is_some() {
        return Err(bad(format!(
            "report_sections applies to system_report exports, not to {}",
            req.export_type
        )));
    }
    Ok(())
}

/// The column names of a plan's rows.
pub fn columns(plan: &Plan) -> Vec<String> {
    let fixed: &[&str] = match &plan.kind {
        KindPlan::DeviceData(d) => return device_data::columns(d),
        KindPlan::SystemReport(_) | KindPlan::CostAnalysis(_) | KindPlan::Statement(_) => {
            &super::report::CSV_COLUMNS
        }
        KindPlan::AuditLogs(_) => &audit_logs::COLUMNS,
        KindPlan::Configuration(_) => &configuration::COLUMNS,
    };
    fixed.iter().map(|c| (*c).to_owned()).collect()
}

/// The metadata of an export (the JSON document's `metadata`, the Excel and PDF title
/// blocks): what every export says of itself, and its kind's part.
pub fn metadata(plan: &Plan, export_id: &str, created: &str, user: Option<&str>) -> Value {
    let range = json!({"start": crate::clock::rfc3339(plan.start_ms), "end": crate::clock::rfc3339(plan.end_ms)});
    let mut m = match &plan.kind {
        KindPlan::DeviceData(d) => device_data::metadata(d),
        KindPlan::SystemReport(sections) => json!({
            "sections": sections.iter().map(|s| s.name()).collect::<Vec<_>>(),
        }),
        KindPlan::CostAnalysis(o) => cost_analysis::metadata(o),
        KindPlan::AuditLogs(f) => audit_logs::metadata(f),
        KindPlan::Configuration(_) => json!({}),
        KindPlan::Statement(o) => json!({"allocation": o.allocation}),
    };
    m["export_id"] = json!(export_id);
    m["export_type"] = json!(plan.kind.export_type().name());
    m["created_at"] = json!(created);
    m["timezone"] = json!(plan.tz.name());
    match &plan.kind {
        KindPlan::Configuration(_) => m["fields"] = json!(columns(plan)),
        KindPlan::AuditLogs(_) => {
            m["fields"] = json!(columns(plan));
            m["date_range"] = range;
        }
        _ => {
            m["date_range"] = range;
            m["currency"] = json!(plan.currency);
            m["price_per_kwh"] = json!(plan.price_per_kwh);
            m["devices"] = json!(devices(plan));
        }
    }
    if plan.kind.is_document() {
        let tariff = plan.tariffs.at(plan.end_ms - 1);
        m["tariff"] = json!(tariff.describe());
        m["currency_symbol"] = json!(tariff.source.symbol);
    }
    if let (Some(u), false) = (user, plan.exclude_user_data) {
        m["created_by"] = json!(u);
    }
    m
}

/// The plan's devices as metadata lists them.
fn devices(plan: &Plan) -> Vec<Value> {
    plan.devices
        .iter()
        .map(|d| {
            let mut v = json!({"device_id": d.shown_id, "device_ip": d.ip, "device_name": d.name, "model": d.model});
            if let Some(p) = d.rated_power {
                v["rated_power"] = json!(p);
            }
            if let Some((lat, lon)) = d.location {
                v["latitude"] = json!(lat);
                v["longitude"] = json!(lon);
            }
            v
        })
        .collect()
}
