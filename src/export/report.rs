//! The document model of the system_report and cost_analysis exports: sections ([`Part`]) of
//! tables and charts, with no format in them, so that the CSV, JSON, Excel and PDF writers all
//! render the same numbers. CSV gets one fact per line (`section,table,item,period,metric,
//! value,unit`), JSON one object per section, Excel one sheet per table, PDF one page group
//! per section.

use super::format::{Cell, CsvSink, Sink};
use super::pipeline::{Limits, RenderError};
use super::plan::Plan;
use crate::localtime::TzCache;
use crate::numfmt::{push_num, round_to};
use serde_json::{Map, Value, json};
use std::io::{self, Write};
use std::path::Path;

/// One value of a report table.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    /// No value (unknown or not applicable).
    Null,
    /// Text.
    Text(String),
    /// A number shown with at most this many decimals.
    Num(f64, u8),
    /// A time, UTC ms (shown in the export's zone).
    Time(i64),
}

impl V {
    /// The value as a render cell.
    pub fn cell(&self) -> Cell<'_> {
        match self {
            V::Null => Cell::Null,
            V::Text(s) => Cell::Text(s),
            V::Num(x, d) => Cell::Num(*x, *d),
            V::Time(t) => Cell::Time(*t),
        }
    }

    /// The value as JSON (times as RFC 3339 in the zone of `tzc`).
    pub fn json(&self, tzc: &mut TzCache) -> Value {
        match self {
            V::Null => Value::Null,
            V::Text(s) => json!(s),
            // Counts and ranks are integers in JSON too.
            V::Num(x, 0) if x.abs() < 9e15 => json!(x.round() as i64),
            V::Num(x, d) if x.is_finite() => json!(round_to(*x, *d)),
            V::Num(..) => Value::Null,
            V::Time(t) => json!(text(&V::Time(*t), tzc)),
        }
    }
}

/// A value as display text (times in the zone of `tzc`, without milliseconds).
pub fn text(v: &V, tzc: &mut TzCache) -> String {
    let mut b = Vec::new();
    match v {
        V::Null => {}
        V::Text(s) => return s.clone(),
        V::Num(x, d) => push_num(&mut b, *x, *d),
        V::Time(t) => tzc.push_rfc3339(&mut b, *t, false),
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// A metric column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Name (snake_case).
    pub name: &'static str,
    /// Unit, or "".
    pub unit: String,
}

pub fn col(name: &'static str, unit: &str) -> Column {
    Column {
        name,
        unit: unit.to_owned(),
    }
}

/// A table row: what it is about (`item`: a device, an export type …; `period`: a month, an
/// hour …; either may be empty) and one value per column.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Subject.
    pub item: String,
    /// Time label.
    pub period: String,
    /// Values, one per column.
    pub values: Vec<V>,
}

/// A table of a section.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Name in files (`by_device`, …).
    pub key: &'static str,
    /// Heading in documents.
    pub title: String,
    /// Header of the item column, when rows have items.
    pub item: Option<&'static str>,
    /// Header of the period column, when rows have periods.
    pub period: Option<&'static str>,
    /// Metric columns.
    pub columns: Vec<Column>,
    /// Rows.
    pub rows: Vec<Line>,
    /// One row shown as metric / value pairs (documents only).
    pub vertical: bool,
}

impl Table {
    pub fn new(key: &'static str, title: &str, columns: &[Column]) -> Self {
        Self {
            key,
            title: title.to_owned(),
            item: None,
            period: None,
            columns: columns.to_vec(),
            rows: Vec::new(),
            vertical: false,
        }
    }

    pub fn items(mut self, header: &'static str) -> Self {
        self.item = Some(header);
        self
    }

    pub fn periods(mut self, header: &'static str) -> Self {
        self.period = Some(header);
        self
    }

    pub fn push(&mut self, item: &str, period: &str, values: Vec<V>) {
        debug_assert_eq!(values.len(), self.columns.len());
        self.rows.push(Line {
            item: item.to_owned(),
            period: period.to_owned(),
            values,
        });
    }

    /// Header of column `c`, with its unit.
    pub fn header(&self, c: usize) -> String {
        let Column { name, unit } = &self.columns[c];
        if unit.is_empty() {
            (*name).to_owned()
        } else {
            format!("{name} ({unit})")
        }
    }
}

/// How a chart draws its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartKind {
    /// Columns, series stacked.
    StackedBars,
    /// One line per series.
    Lines,
}

/// A chart: one value per label per series.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Title (with the unit).
    pub title: String,
    /// Axis unit.
    pub unit: &'static str,
    /// Drawing.
    pub kind: ChartKind,
    /// Name of the label column (`date`, `month`, `hour`).
    pub label_name: &'static str,
    /// Category labels (times are local day starts).
    pub labels: Vec<V>,
    /// (name, one value per label).
    pub series: Vec<(String, Vec<f64>)>,
}

/// A section with its tables and charts.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// Name in files (`energy_consumption`, …).
    pub name: &'static str,
    /// Heading in documents.
    pub title: String,
    /// Tables, in order.
    pub tables: Vec<Table>,
    /// Charts, in order.
    pub charts: Vec<Chart>,
}

/// A whole report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Title of documents ("System report").
    pub title: String,
    /// Sections, in report order.
    pub parts: Vec<Part>,
}

impl Part {
    /// A part with its tables and charts.
    pub fn new(name: &'static str, title: &str, tables: Vec<Table>, charts: Vec<Chart>) -> Self {
        Self {
            name,
            title: title.to_owned(),
            tables,
            charts,
        }
    }
}

impl Report {
    /// Rows of all tables.
    pub fn rows(&self) -> u64 {
        self.parts
            .iter()
            .flat_map(|p| &p.tables)
            .map(|t| t.rows.len() as u64)
            .sum()
    }
}

/// The CSV columns: one fact per line.
pub const CSV_COLUMNS: [&str; 7] = [
    "section", "table", "item", "period", "metric", "value", "unit",
];

/// Writes `report` as CSV facts to `sink` (begun with [`CSV_COLUMNS`]).
fn write_facts(report: &Report, sink: &mut dyn Sink, limits: Limits) -> Result<u64, RenderError> {
    let mut n = 0u64;
    for p in &report.parts {
        for t in &p.tables {
            for r in &t.rows {
                for (c, v) in t.columns.iter().zip(&r.values) {
                    n += 1;
                    if n > limits.max_records {
                        return Err(RenderError::TooManyRecords(limits.max_records));
                    }
                    sink.row(&[
                        Cell::Text(p.name),
                        Cell::Text(t.key),
                        Cell::Text(&r.item),
                        Cell::Text(&r.period),
                        Cell::Text(c.name),
                        v.cell(),
                        Cell::Text(&c.unit),
                    ])?;
                }
            }
        }
    }
    Ok(n)
}

/// The report as one JSON document: `{"metadata":…,"report":{section:{"title",
/// "tables":{key:{"title","columns":[{name,unit}],"rows":[{item?,period?,column:value}]}},
/// "charts":[…]}},"record_count":N}`.
pub fn to_json(report: &Report, metadata: &Value, tzc: &mut TzCache) -> Value {
    let mut sections = Map::new();
    for p in &report.parts {
        let mut tables = Map::new();
        for t in &p.tables {
            let rows: Vec<Value> = t
                .rows
                .iter()
                .map(|r| {
                    let mut o = Map::new();
                    if let Some(h) = t.item {
                        o.insert(h.into(), json!(r.item));
                    }
                    if let Some(h) = t.period {
                        o.insert(h.into(), json!(r.period));
                    }
                    for (c, v) in t.columns.iter().zip(&r.values) {
                        o.insert(c.name.into(), v.json(tzc));
                    }
                    Value::Object(o)
                })
                .collect();
            let columns: Vec<Value> = t
                .columns
                .iter()
                .map(|c| json!({"name": c.name, "unit": (!c.unit.is_empty()).then_some(&c.unit)}))
                .collect();
            tables.insert(
                t.key.into(),
                json!({"title": t.title, "columns": columns, "rows": rows}),
            );
        }
        let charts: Vec<Value> = p
            .charts
            .iter()
            .map(|c| {
                json!({
                    "title": c.title,
                    "labels": c.labels.iter().map(|l| l.json(tzc)).collect::<Vec<_>>(),
                    "series": c.series.iter().map(|(n, v)| json!({"name": n, "values": v})).collect::<Vec<_>>(),
                })
            })
            .collect();
        sections.insert(
            p.name.into(),
            json!({"title": p.title, "tables": tables, "charts": charts}),
        );
    }
    json!({"metadata": metadata, "report": sections, "record_count": report.rows()})
}

/// Renders `report` in the plan's format to `out`; returns the record count (table rows; for
/// CSV, facts).
pub fn write<W: Write + Send>(
    report: &Report,
    plan: &Plan,
    metadata: &Value,
    out: W,
    temp_dir: &Path,
    limits: Limits,
) -> Result<u64, RenderError> {
    let rows = report.rows();
    // A PDF is built in memory: it holds at most pdf::MAX_ROWS rows, as for device_data.
    let max = match plan.format {
        super::Format::Pdf => limits.max_records.min(super::format::pdf::MAX_ROWS),
        _ => limits.max_records,
    };
    if rows > max {
        return Err(RenderError::TooManyRecords(max));
    }
    let mut tzc = TzCache::new(plan.tz);
    match plan.format {
        super::Format::Csv => {
            let mut sink = CsvSink::new(out, plan.delimiter, plan.include_headers, tzc, false);
            let columns = CSV_COLUMNS.map(str::to_owned);
            sink.begin(&columns, metadata)?;
            let n = write_facts(report, &mut sink, limits)?;
            sink.finish(n, &Value::Null)?;
            Ok(n)
        }
        super::Format::Json => {
            let mut out = io::BufWriter::new(out);
            serde_json::to_writer(&mut out, &to_json(report, metadata, &mut tzc))
                .map_err(io::Error::from)?;
            out.flush()?;
            Ok(rows)
        }
        super::Format::Excel => {
            super::format::excel::write_report(out, temp_dir, tzc, metadata, report)?;
            Ok(rows)
        }
        super::Format::HaStatistics => Err(RenderError::Invalid(
            "format ha_statistics is for device_data exports".into(),
        )),
        super::Format::Pdf => {
            let generated = metadata["created_at"].as_str().unwrap_or_default();
            super::format::pdf::write_report(out, &plan.pdf, generated, tzc, metadata, report)?;
            Ok(rows)
        }
    }
}
