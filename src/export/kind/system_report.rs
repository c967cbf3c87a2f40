//! The system_report export: what the report holds and how it is computed, in one format-free
//! model ([`Report`]: sections of tables and charts) that the CSV, JSON, Excel and PDF writers
//! all render, so every format carries the same numbers.
//!
//! Sections (`report_sections`, default all, always in this order):
//! - `device_summary`: each device's id, address, model, rated power, first seen, newest
//!   reading, readings stored and status.
//! - `energy_consumption`: energy, share, average and peak power, on-time per device; energy
//!   per device per day (ranges up to 62 days) or per month; a stacked bar chart of it.
//! - `cost_breakdown`: cost per device and per period from the tariff engine (energy cost,
//!   taxes, cost; fixed charges are in the cost_analysis export).
//! - `system_health`: daemon uptime, database size, free disk, readings, poll interval; per
//!   device poll success rate since the daemon started, availability in the range (readings
//!   stored ÷ readings the poll interval allows), last seen and last error; export counts.
//! - `usage_patterns`: average load by local hour of day on weekdays and weekends (a line
//!   chart), each device's weekday and weekend load and daily energy, and top consumers.
//!
//! Everything comes from the 15-minute rollups (exact energy, never the raw rows), in the
//! export's time zone; CSV gets one fact per line (`section,table,item,period,metric,value,
//! unit`), JSON one object per section, Excel one sheet per table, PDF one page group per
//! section.

use super::cost_analysis::Grouping;
use crate::domain::DeviceStatus;
use crate::export::pipeline::{Control, RenderError};
use crate::export::plan::Plan;
use crate::export::report::{Chart, ChartKind, Part, Report, Table, V, col};
use crate::export::request::{CreateRequest, RequestError, refuse_row_options};
use crate::localtime::TzCache;
use crate::numfmt::round_to;
use crate::poller::registry::Registry;
use crate::store::Store;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A report section.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Section {
    /// Devices and their records.
    DeviceSummary,
    /// Energy per device and period.
    EnergyConsumption,
    /// Cost at the configured price.
    CostBreakdown,
    /// Daemon, polling and export health.
    SystemHealth,
    /// Load by hour of day, weekday vs weekend, top consumers.
    UsagePatterns,
    /// Always-on power, cycles, runs, unusual days and the forecast (`report_insights`).
    Insights,
}

/// Every section, in report order.
pub const SECTIONS: [Section; 6] = [
    Section::DeviceSummary,
    Section::EnergyConsumption,
    Section::CostBreakdown,
    Section::SystemHealth,
    Section::UsagePatterns,
    Section::Insights,
];

impl Section {
    /// Name in requests and files.
    pub fn name(self) -> &'static str {
        match self {
            Section::DeviceSummary => "device_summary",
            Section::EnergyConsumption => "energy_consumption",
            Section::CostBreakdown => "cost_breakdown",
            Section::SystemHealth => "system_health",
            Section::UsagePatterns => "usage_patterns",
            Section::Insights => super::report_insights::NAME,
        }
    }

    /// Heading in documents.
    pub fn title(self) -> &'static str {
        match self {
            Section::DeviceSummary => "Device summary",
            Section::EnergyConsumption => "Energy consumption",
            Section::CostBreakdown => "Cost breakdown",
            Section::SystemHealth => "System health",
            Section::UsagePatterns => "Usage patterns",
            Section::Insights => super::report_insights::TITLE,
        }
    }

    /// The section called `s`.
    pub fn parse(s: &str) -> Option<Self> {
        SECTIONS.into_iter().find(|x| x.name() == s)
    }
}

/// The names of the sections, for messages.
fn section_names() -> String {
    SECTIONS.map(Section::name).join(", ")
}

/// Why `report_sections` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SectionsError {
    /// Not a non-empty list (the known names).
    #[error("report_sections must be a non-empty list of: {0}")]
    NotAList(String),
    /// An unknown entry (as JSON), and the known names.
    #[error("report_sections: unknown section {0}; known: {1}")]
    Unknown(String, String),
}

/// The sections a system_report body asks for (it takes devices but no row options).
pub fn sections_of_request(req: &CreateRequest) -> Result<Vec<Section>, RequestError> {
    refuse_row_options(req, "use devices, report_sections and privacy_options")?;
    Ok(sections_of(req.report_sections.as_ref())?)
}

/// Parses `report_sections`: absent means all; otherwise a non-empty list of known names
/// (duplicates ignored), rendered in report order.
pub fn sections_of(v: Option<&Value>) -> Result<Vec<Section>, SectionsError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(SECTIONS.to_vec()),
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(_) => return Err(SectionsError::NotAList(section_names())),
    };
    let mut out = Vec::new();
    for s in list {
        let sec = s
            .as_str()
            .and_then(Section::parse)
            .ok_or_else(|| SectionsError::Unknown(s.to_string(), section_names()))?;
        out.push(sec);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// What the running daemon knows beyond the store (absent outside a daemon).
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Daemon start, UTC ms.
    pub started_ms: i64,
    /// Devices as the poller sees them.
    pub registry: Arc<Registry>,
    /// Poll interval, ms.
    pub poll_interval_ms: i64,
    /// The database file.
    pub db_path: PathBuf,
    /// `[insights]`.
    pub insights: crate::config::Insights,
}

/// What the rollups say about one device over the range.
#[derive(Debug, Clone, Default)]
struct Acc {
    energy_mwh: i64,
    samples: u64,
    peak_mw: Option<i64>,
    on_ms: i64,
    /// Buckets holding readings or energy.
    covered: u64,
    /// Energy per period start.
    by_period: BTreeMap<i64, i64>,
    /// [weekday, weekend][local hour] → (energy mWh, covered buckets).
    hours: [[(i64, u32); 24]; 2],
    /// [weekday, weekend] → distinct local days with data.
    days: [u32; 2],
    last_day: Option<i64>,
}

/// Share `part / whole` in percent, or null.
fn pct(part: f64, whole: f64) -> V {
    if whole > 0.0 {
        V::Num(100.0 * part / whole, 1)
    } else {
        V::Null
    }
}

fn kwh(mwh: i64) -> f64 {
    mwh as f64 / 1e6
}

/// Average load, W, of `mwh` spread over `buckets` quarter hours.
fn load_w(mwh: i64, buckets: u64) -> V {
    if buckets == 0 {
        V::Null
    } else {
        V::Num(mwh as f64 / (buckets as f64 * 250.0), 1)
    }
}

fn opt_time(t: Option<i64>) -> V {
    t.map_or(V::Null, V::Time)
}

/// Computes the report of `plan` (its devices, range, zone and price) for `sections`.
pub fn build(
    store: &Store,
    plan: &Plan,
    sections: &[Section],
    runtime: Option<&Runtime>,
    now_ms: i64,
    owner: Option<u32>,
    ctl: &Control,
) -> Result<Report, RenderError> {
    // Up to 62 local days by day (a DST change can add an hour), longer ranges by month.
    let by_month = plan.end_ms - plan.start_ms > 62 * 86_400_000 + 3_600_000;
    let grouping = if by_month {
        Grouping::Month
    } else {
        Grouping::Day
    };
    let mut tzc = TzCache::new(plan.tz);
    let mut accs = Vec::with_capacity(plan.devices.len());
    for (k, d) in plan.devices.iter().enumerate() {
        let mut a = Acc::default();
        let mut cur = (i64::MIN, i64::MIN); // current period (start, end)
        for b in store.scan_buckets(&d.id, plan.start_ms, plan.end_ms)? {
            let b = b?;
            if b.samples == 0 && b.energy_mwh == 0 && b.on_ms == 0 {
                continue;
            }
            if b.start_ms >= cur.1 {
                let s = grouping.start(b.start_ms, plan.tz);
                cur = (s, grouping.end(s, plan.tz));
            }
            *a.by_period.entry(cur.0).or_default() += b.energy_mwh;
            a.energy_mwh += b.energy_mwh;
            a.samples += u64::from(b.samples);
            a.on_ms += b.on_ms;
            a.covered += 1;
            if b.meter_samples > 0 {
                a.peak_mw = Some(a.peak_mw.map_or(b.power.max, |p| p.max(b.power.max)));
            }
            let l = tzc.local(b.start_ms);
            let class = usize::from(l.weekday >= 6);
            let h = &mut a.hours[class][l.hour as usize];
            h.0 += b.energy_mwh;
            h.1 += 1;
            if a.last_day != Some(l.day) {
                a.last_day = Some(l.day);
                a.days[class] += 1;
            }
        }
        accs.push(a);
        if ctl.cancel.load(Ordering::Relaxed) {
            return Err(RenderError::Cancelled);
        }
        let share = 90 * (k + 1) / plan.devices.len().max(1);
        ctl.progress.store(share as u8, Ordering::Relaxed);
    }
    let stored = store
        .devices()?
        .into_iter()
        .map(|d| (d.record.info.device_id.clone(), d))
        .collect();
    let ctx = Ctx {
        store,
        plan,
        accs: &accs,
        grouping,
        runtime,
        now_ms,
        owner,
        stored,
        names: super::cost_analysis::device_labels(plan),
    };
    let mut parts = Vec::new();
    for &s in sections {
        parts.push(match s {
            Section::DeviceSummary => ctx.device_summary()?,
            Section::EnergyConsumption => {
                let mut part = ctx.energy();
                let provenance = super::provenance::of_plan(store, plan)?;
                (part.tables).push(super::provenance::table(&ctx.names, &provenance));
                part
            }
            Section::CostBreakdown => ctx.cost(ctl)?,
            Section::SystemHealth => ctx.health()?,
            Section::UsagePatterns => ctx.usage(),
            Section::Insights => {
                super::report_insights::part(store, plan, &ctx.names, runtime, now_ms)?
            }
        });
    }
    if !plan.include_charts {
        parts.iter_mut().for_each(|p| p.charts.clear());
    }
    Ok(Report {
        title: "System report".into(),
        parts,
    })
}

struct Ctx<'a> {
    store: &'a Store,
    plan: &'a Plan,
    accs: &'a [Acc],
    /// Days, or months for ranges over 62 days.
    grouping: Grouping,
    runtime: Option<&'a Runtime>,
    now_ms: i64,
    /// Only this user's exports count (None: everyone's, for administrators).
    owner: Option<u32>,
    /// Stored devices by id.
    stored: HashMap<crate::domain::DeviceId, crate::store::DeviceSummary>,
    /// Row labels of the plan's devices (names, with the id where names repeat).
    names: Vec<String>,
}

impl Ctx<'_> {
    fn total_mwh(&self) -> i64 {
        self.accs.iter().map(|a| a.energy_mwh).sum()
    }

    /// Days of the range that have passed (a range ending in the future is not yet over).
    fn days(&self) -> f64 {
        let end = self.plan.end_ms.min(self.now_ms.max(self.plan.start_ms));
        (end - self.plan.start_ms) as f64 / 86_400_000.0
    }

    /// Whether privacy options changed the device's id or address (then its poll errors,
    /// which name them, are withheld).
    fn private(&self, d: &crate::export::devices::DeviceMeta) -> bool {
        let ip = self
            .stored
            .get(&d.id)
            .map(|s| s.record.info.ip().to_owned());
        d.shown_id != d.id.as_str() || ip.is_some_and(|ip| ip != d.ip)
    }

    /// Every period start of the range.
    fn periods(&self) -> Vec<i64> {
        self.grouping
            .starts(self.plan.start_ms, self.plan.end_ms, self.plan.tz)
    }

    fn period_label(&self, start: i64) -> String {
        self.grouping.label(start, self.plan.tz)
    }

    fn device_summary(&self) -> Result<Part, RenderError> {
        let stored = &self.stored;
        let mut t = Table::new(
            "devices",
            "Devices",
            &[
                col("device_id", ""),
                col("device_ip", ""),
                col("model", ""),
                col("type", ""),
                col("rated_power", "W"),
                col("first_seen", ""),
                col("last_reading", ""),
                col("readings_stored", ""),
                col("status", ""),
            ],
        )
        .items("device");
        for (d, name) in self.plan.devices.iter().zip(&self.names) {
            let s = stored.get(&d.id);
            let kind = s.map_or(V::Null, |s| V::Text(serde_name(s.record.info.device_type)));
            t.push(
                name,
                "",
                vec![
                    V::Text(d.shown_id.clone()),
                    V::Text(d.ip.clone()),
                    V::Text(d.model.clone()),
                    kind,
                    d.rated_power.map_or(V::Null, |p| V::Num(p, 1)),
                    opt_time(s.map(|s| s.record.first_seen_ms)),
                    opt_time(s.and_then(|s| s.last_reading_ms)),
                    s.map_or(V::Null, |s| V::Num(s.data_points as f64, 0)),
                    self.status(d)
                        .map_or(V::Null, |e| V::Text(serde_name(e.status))),
                ],
            );
        }
        Ok(Part {
            tables: vec![t],
            charts: Vec::new(),
            ..part_of(Section::DeviceSummary)
        })
    }

    fn status(
        &self,
        d: &crate::export::devices::DeviceMeta,
    ) -> Option<crate::poller::registry::Entry> {
        self.runtime?.registry.find(&d.id)
    }

    /// Reachability as `/api/devices` shows it (offline when the poller does not know it).
    fn status_of(&self, d: &crate::export::devices::DeviceMeta) -> DeviceStatus {
        self.status(d).map_or(DeviceStatus::Offline, |e| e.status)
    }

    fn energy(&self) -> Part {
        let total = self.total_mwh();
        let days = self.days();
        let hours = days * 24.0;
        let avg_w = |mwh: i64| {
            if hours > 0.0 {
                V::Num(mwh as f64 / 1000.0 / hours, 1)
            } else {
                V::Null
            }
        };
        let mut by_device = Table::new(
            "by_device",
            "Energy per device",
            &[
                col("energy", "kWh"),
                col("share", "%"),
                col("average_power", "W"),
                col("peak_power", "W"),
                col("on_time", "h"),
                col("daily_energy", "kWh"),
            ],
        )
        .items("device");
        for (name, a) in self.names.iter().zip(self.accs) {
            by_device.push(
                name,
                "",
                vec![
                    V::Num(kwh(a.energy_mwh), 3),
                    pct(a.energy_mwh as f64, total as f64),
                    avg_w(a.energy_mwh),
                    a.peak_mw.map_or(V::Null, |p| V::Num(p as f64 / 1000.0, 1)),
                    V::Num(a.on_ms as f64 / 3_600_000.0, 2),
                    if days > 0.0 {
                        V::Num(kwh(a.energy_mwh) / days, 3)
                    } else {
                        V::Null
                    },
                ],
            );
        }
        let periods = self.periods();
        let pname = self.grouping.name();
        let mut by_period = Table::new(
            self.grouping.table_key(),
            if self.grouping == Grouping::Month {
                "Energy per device per month"
            } else {
                "Energy per device per day"
            },
            &[col("energy", "kWh")],
        )
        .items("device")
        .periods(pname);
        let mut series = Vec::new();
        for (name, a) in self.names.iter().zip(self.accs) {
            let values: Vec<f64> = periods
                .iter()
                .map(|p| kwh(a.by_period.get(p).copied().unwrap_or(0)))
                .collect();
            for (p, v) in periods.iter().zip(&values) {
                by_period.push(name, &self.period_label(*p), vec![V::Num(*v, 3)]);
            }
            series.push((name.clone(), values));
        }
        let mut totals = Table::new(
            "totals",
            "Totals",
            &[
                col("devices", ""),
                col("energy", "kWh"),
                col("average_power", "W"),
                col("days", ""),
            ],
        );
        totals.vertical = true;
        totals.push(
            "",
            "",
            vec![
                V::Num(self.plan.devices.len() as f64, 0),
                V::Num(kwh(total), 3),
                avg_w(total),
                V::Num(days, 2),
            ],
        );
        let chart = Chart {
            title: if self.grouping == Grouping::Month {
                "Energy per month per device (kWh)".into()
            } else {
                "Energy per day per device (kWh)".into()
            },
            unit: "kWh",
            kind: ChartKind::StackedBars,
            label_name: pname,
            // Days as times: charts shorten them, Excel shows dates.
            labels: periods
                .iter()
                .map(|p| match self.grouping {
                    Grouping::Month => V::Text(self.period_label(*p)),
                    _ => V::Time(*p),
                })
                .collect(),
            series,
        };
        let mut tables = vec![totals, by_device];
        if self.plan.devices.iter().any(|d| d.room.is_some()) {
            tables.push(self.by_room(total));
        }
        tables.push(by_period);
        Part {
            tables,
            charts: vec![chart],
            ..part_of(Section::EnergyConsumption)
        }
    }

    /// Energy per room (devices without one together), when any device has a room.
    fn by_room(&self, total: i64) -> Table {
        let (rooms, of) = super::cost_analysis::rooms(self.plan);
        let mut t = Table::new(
            "by_room",
            "Energy per room",
            &[col("energy", "kWh"), col("share", "%"), col("devices", "")],
        )
        .items("room");
        for (r, name) in rooms.iter().enumerate() {
            let mine = || of.iter().zip(self.accs).filter(move |(x, _)| **x == r);
            let mwh: i64 = mine().map(|(_, a)| a.energy_mwh).sum();
            t.push(
                name,
                "",
                vec![
                    V::Num(kwh(mwh), 3),
                    pct(mwh as f64, total as f64),
                    V::Num(mine().count() as f64, 0),
                ],
            );
        }
        t
    }

    fn cost(&self, ctl: &Control) -> Result<Part, RenderError> {
        use super::cost_analysis as cost;
        let grouping = self.grouping;
        let costs = cost::compute(self.store, self.plan, grouping, ctl)?;
        let by_device = costs.device_table(&self.names);
        let rows: Vec<_> = costs
            .periods
            .iter()
            .enumerate()
            .map(|(k, p)| {
                (
                    String::new(),
                    grouping.label(*p, self.plan.tz),
                    costs.period_total(k),
                )
            })
            .collect();
        let by_period = cost::money_table(
            grouping.table_key(),
            &format!("Cost per {} (selected devices)", grouping.name()),
            None,
            Some(grouping.name()),
            &rows,
            &costs,
        );
        Ok(Part {
            tables: vec![by_device, by_period],
            charts: Vec::new(),
            ..part_of(Section::CostBreakdown)
        })
    }

    fn health(&self) -> Result<Part, RenderError> {
        // The requester's exports (all of them for an administrator), not deleted ones.
        let exports: Vec<_> = self
            .store
            .exports()?
            .into_iter()
            .filter(|e| e.deleted_ms.is_none() && self.owner.is_none_or(|o| e.user_id == o))
            .collect();
        Ok(Part {
            tables: vec![
                self.daemon_table(&exports),
                self.polling_table(),
                export_counts(&exports),
            ],
            charts: Vec::new(),
            ..part_of(Section::SystemHealth)
        })
    }

    /// The daemon: version, uptime, devices, readings, database and disk.
    fn daemon_table(&self, exports: &[crate::export::ExportRecord]) -> Table {
        let rt = self.runtime;
        let stored: Vec<&crate::store::DeviceSummary> = self.stored.values().collect();
        let mut daemon = Table::new(
            "daemon",
            "Daemon",
            &[
                col("version", ""),
                col("started", ""),
                col("uptime", "h"),
                col("poll_interval", "s"),
                col("devices_known", ""),
                col("devices_online", ""),
                col("readings_stored", ""),
                col("database_size", "MB"),
                col("disk_free", "MB"),
                col("exports_kept", ""),
            ],
        );
        daemon.vertical = true;
        // Records on both sides: a strip's outlets are online when the strip answers.
        let online = stored
            .iter()
            .filter(|d| {
                rt.and_then(|r| r.registry.find(&d.record.info.device_id))
                    .is_some_and(|e| e.status == DeviceStatus::Online)
            })
            .count();
        daemon.push(
            "",
            "",
            vec![
                V::Text(env!("CARGO_PKG_VERSION").into()),
                opt_time(rt.map(|r| r.started_ms)),
                rt.map_or(V::Null, |r| {
                    V::Num((self.now_ms - r.started_ms) as f64 / 3_600_000.0, 2)
                }),
                rt.map_or(V::Null, |r| V::Num(r.poll_interval_ms as f64 / 1000.0, 1)),
                V::Num(stored.len() as f64, 0),
                rt.map_or(V::Null, |_| V::Num(online as f64, 0)),
                V::Num(stored.iter().map(|d| d.data_points).sum::<u64>() as f64, 0),
                rt.and_then(|r| std::fs::metadata(&r.db_path).ok())
                    .map_or(V::Null, |m| mb(m.len())),
                rt.and_then(|r| crate::store::free_bytes(r.db_path.parent()?))
                    .map_or(V::Null, mb),
                V::Num(
                    exports
                        .iter()
                        .filter(|e| e.status == crate::export::Status::Completed)
                        .count() as f64,
                    0,
                ),
            ],
        );
        daemon
    }

    /// Per device: status, poll success and availability in the range.
    fn polling_table(&self) -> Table {
        let rt = self.runtime;
        let mut devices = Table::new(
            "devices",
            "Polling and availability",
            &[
                col("status", ""),
                col("last_seen", ""),
                col("poll_success_rate", "%"),
                col("polls_ok", ""),
                col("polls_failed", ""),
                col("availability", "%"),
                col("readings_in_range", ""),
                col("last_error", ""),
            ],
        )
        .items("device");
        for ((d, a), name) in self.plan.devices.iter().zip(self.accs).zip(&self.names) {
            let e = self.status(d);
            let first = self
                .stored
                .get(&d.id)
                .map_or(self.plan.start_ms, |s| s.record.first_seen_ms);
            let availability = rt.map_or(V::Null, |r| {
                let from = self.plan.start_ms.max(first);
                let to = self.plan.end_ms.min(self.now_ms);
                let expected = (to - from) as f64 / r.poll_interval_ms.max(1) as f64;
                if expected >= 1.0 {
                    V::Num((100.0 * a.samples as f64 / expected).min(100.0), 1)
                } else {
                    V::Null
                }
            });
            let (ok, failed) = e.as_ref().map_or((0, 0), |e| (e.polls_ok, e.polls_failed));
            // Poll errors name addresses and devices: withheld when privacy options apply.
            let error = e.as_ref().and_then(|e| e.last_error.clone()).map(|s| {
                if self.private(d) {
                    "(withheld: privacy options)".to_owned()
                } else {
                    s
                }
            });
            devices.push(
                name,
                "",
                vec![
                    rt.map_or(V::Null, |_| V::Text(serde_name(self.status_of(d)))),
                    opt_time(e.as_ref().and_then(|e| e.last_seen_ms)),
                    pct(ok as f64, (ok + failed) as f64),
                    e.as_ref().map_or(V::Null, |_| V::Num(ok as f64, 0)),
                    e.as_ref().map_or(V::Null, |_| V::Num(failed as f64, 0)),
                    availability,
                    V::Num(a.samples as f64, 0),
                    error.map_or(V::Null, V::Text),
                ],
            );
        }
        devices
    }
}

/// Exports by type: completed, failed, other, and the size of the completed ones.
fn export_counts(exports: &[crate::export::ExportRecord]) -> Table {
    let mut counts = Table::new(
        "exports",
        "Exports",
        &[
            col("completed", ""),
            col("failed", ""),
            col("other", ""),
            col("size", "MB"),
        ],
    )
    .items("export_type");
    let mut by_type: BTreeMap<&str, (u64, u64, u64, u64)> = BTreeMap::new();
    for e in exports {
        let c = by_type.entry(e.export_type.name()).or_default();
        match e.status {
            crate::export::Status::Completed => {
                c.0 += 1;
                c.3 += e.file_size.unwrap_or(0);
            }
            crate::export::Status::Failed => c.1 += 1,
            _ => c.2 += 1,
        }
    }
    for (t, (done, failed, other, size)) in by_type {
        let n = |x: u64| V::Num(x as f64, 0);
        counts.push(t, "", vec![n(done), n(failed), n(other), mb(size)]);
    }
    counts
}

/// Bytes as MB with one decimal.
fn mb(b: u64) -> V {
    V::Num(b as f64 / (1024.0 * 1024.0), 1)
}

impl Ctx<'_> {
    fn usage(&self) -> Part {
        let mut by_hour = Table::new(
            "by_hour",
            "Average load by hour of day (all devices)",
            &[
                col("weekday_load", "W"),
                col("weekend_load", "W"),
                col("all_days_load", "W"),
            ],
        )
        .periods("hour");
        let mut series = [Vec::new(), Vec::new(), Vec::new()];
        let mut labels = Vec::new();
        for h in 0..24 {
            // Each device's average at this hour, summed: a device without data then adds
            // nothing instead of dragging the average down.
            let mut w = [0.0; 3];
            let mut any = [false; 3];
            for a in self.accs {
                let (e0, n0) = a.hours[0][h];
                let (e1, n1) = a.hours[1][h];
                for (k, (e, n)) in [(e0, n0), (e1, n1), (e0 + e1, n0 + n1)].iter().enumerate() {
                    if let V::Num(x, _) = load_w(*e, u64::from(*n)) {
                        w[k] += x;
                        any[k] = true;
                    }
                }
            }
            let v = |k: usize| {
                if any[k] { V::Num(w[k], 1) } else { V::Null }
            };
            let label = format!("{h:02}:00");
            by_hour.push("", &label, vec![v(0), v(1), v(2)]);
            for (k, s) in series.iter_mut().enumerate() {
                // No data at this hour: a gap in the chart, as in the table.
                s.push(if any[k] { round_to(w[k], 1) } else { f64::NAN });
            }
            labels.push(V::Text(label));
        }
        let mut week = Table::new(
            "weekday_weekend",
            "Weekdays and weekends per device",
            &[
                col("weekday_load", "W"),
                col("weekend_load", "W"),
                col("weekday_daily_energy", "kWh"),
                col("weekend_daily_energy", "kWh"),
            ],
        )
        .items("device");
        for (name, a) in self.names.iter().zip(self.accs) {
            let class = |c: usize| {
                let (e, n) = a.hours[c]
                    .iter()
                    .fold((0, 0u64), |(e, n), h| (e + h.0, n + u64::from(h.1)));
                let daily = if a.days[c] > 0 {
                    V::Num(kwh(e) / f64::from(a.days[c]), 3)
                } else {
                    V::Null
                };
                (load_w(e, n), daily)
            };
            let ((l0, d0), (l1, d1)) = (class(0), class(1));
            week.push(name, "", vec![l0, l1, d0, d1]);
        }
        let total = self.total_mwh();
        let mut top = Table::new(
            "top_consumers",
            "Top consumers",
            &[col("rank", ""), col("energy", "kWh"), col("share", "%")],
        )
        .items("device");
        let mut order: Vec<usize> = (0..self.accs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.accs[i].energy_mwh));
        for (rank, i) in order.into_iter().enumerate() {
            let e = self.accs[i].energy_mwh;
            top.push(
                &self.names[i],
                "",
                vec![
                    V::Num(rank as f64 + 1.0, 0),
                    V::Num(kwh(e), 3),
                    pct(e as f64, total as f64),
                ],
            );
        }
        let [wd, we, _] = series;
        let chart = Chart {
            title: "Average load by hour of day (W)".into(),
            unit: "W",
            kind: ChartKind::Lines,
            label_name: "hour",
            labels,
            series: vec![("Weekdays".into(), wd), ("Weekends".into(), we)],
        };
        Part {
            tables: vec![by_hour, week, top],
            charts: vec![chart],
            ..part_of(Section::UsagePatterns)
        }
    }
}

/// The name serde gives a unit variant (`online`, `plug` …).
fn serde_name(v: impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// An empty part for `section`.
fn part_of(section: Section) -> Part {
    Part::new(section.name(), section.title(), Vec::new(), Vec::new())
}
