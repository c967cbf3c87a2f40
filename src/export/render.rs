//! Rendering a plan into a file: the [`Sink`] interface every format implements (CSV and JSON
//! here; Excel and PDF join it), fast number formatting, compression, the size limit, and the
//! write-to-temp → fsync → hash sequence. Runs on a blocking thread, never on the runtime.

use super::formula::{Aggregator, DistinctBudget, RowCtx};
use super::request::{Agg, Field, IS_ON, Kind, Plan, VALUE_FIELDS};
use super::rows::{Row, Rows, formula_values};
use super::{Compression, Format, audit_log, configuration, excel, pdf};
use crate::localtime::TzCache;
pub use crate::numfmt::{push_num, round_to};
use crate::store::{self, Store};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

/// One cell of a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    /// No value.
    Null,
    /// Text.
    Text(&'a str),
    /// Text that repeats on many rows (a device's IP, id or name); the number identifies it,
    /// so that a format can encode it once and reuse the bytes.
    Label(&'a str, usize),
    /// A timestamp, UTC ms (rendered in the plan's zone).
    Time(i64),
    /// A number rendered with at most this many decimals (trailing zeros dropped).
    Num(f64, u8),
    /// A boolean.
    Bool(bool),
}

/// A format writer. `begin` comes first, then rows in order; `finish` is called once after
/// the last row.
pub trait Sink {
    /// Writes the header (CSV header row, JSON metadata).
    fn begin(&mut self, columns: &[String], metadata: &Value) -> io::Result<()>;
    /// Writes one row.
    fn row(&mut self, cells: &[Cell<'_>]) -> io::Result<()>;
    /// Writes the trailer (JSON record count and summary).
    fn finish(&mut self, record_count: u64, summary: &Value) -> io::Result<()>;
    /// For formats whose rows are text on their own: the formatter, so that reader threads can
    /// format rows in parallel and hand over the text (valid after `begin`).
    fn row_format(&self) -> Option<RowFormat> {
        None
    }
    /// Writes a row formatted by [`Self::row_format`].
    fn formatted_row(&mut self, _text: &[u8]) -> io::Result<()> {
        Err(io::Error::other("this format has no row text"))
    }
}

/// Formats one row of a text format on its own (see [`Sink::row_format`]).
#[derive(Debug, Clone)]
pub enum RowFormat {
    /// A CSV line with its CRLF.
    Csv(CsvRow),
    /// A JSON object, after a newline (the separating comma is the sink's).
    Json(JsonRow),
}

impl RowFormat {
    /// Appends row `cells` to `out`.
    pub fn row(&mut self, cells: &[Cell<'_>], out: &mut Vec<u8>) {
        match self {
            RowFormat::Csv(f) => f.row(cells, out),
            RowFormat::Json(f) => f.row(cells, out),
        }
    }
}

/// Running sums of a table's `energy_kwh` and `cost` columns (of the values as shown), for
/// the summaries of the Excel and PDF writers.
#[derive(Debug, Clone, Default)]
pub struct Totals(Vec<(usize, f64)>);

impl Totals {
    /// Zero sums for the summed columns among `columns`.
    pub fn of(columns: &[String]) -> Self {
        Self(
            columns
                .iter()
                .enumerate()
                .filter(|(_, c)| matches!(c.as_str(), "energy_kwh" | "cost"))
                .map(|(i, _)| (i, 0.0))
                .collect(),
        )
    }

    /// Adds a row.
    pub fn add(&mut self, cells: &[Cell<'_>]) {
        for (c, sum) in &mut self.0 {
            if let Some(Cell::Num(x, d)) = cells.get(*c)
                && x.is_finite()
            {
                *sum += round_to(*x, *d);
            }
        }
    }

    /// (column index, sum) of each summed column.
    pub fn sums(&self) -> &[(usize, f64)] {
        &self.0
    }
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Encoded [`Cell::Label`]s by their number.
#[derive(Debug, Clone, Default)]
struct Labels {
    spans: Vec<Option<(usize, usize)>>,
    bytes: Vec<u8>,
}

impl Labels {
    /// Appends label `id`, encoding it with `encode` the first time.
    fn put(&mut self, id: usize, out: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>)) {
        if id >= self.spans.len() {
            self.spans.resize(id + 1, None);
        }
        let (a, b) = *self.spans[id].get_or_insert_with(|| {
            let a = self.bytes.len();
            encode(&mut self.bytes);
            (a, self.bytes.len())
        });
        out.extend_from_slice(&self.bytes[a..b]);
    }
}

/// RFC 4180 CSV rows with CRLF line ends. Text cells that a spreadsheet would run as a
/// formula (starting with `=`, `+`, `-`, `@`, tab or CR) get a leading `'`.
#[derive(Debug, Clone)]
pub struct CsvRow {
    delimiter: u8,
    /// Bit `c` set: ASCII byte `c` makes a text cell need quotes (the delimiter, `"`, CR, LF).
    quoted: u128,
    labels: Labels,
    tzc: TzCache,
    millis: bool,
}

impl CsvRow {
    fn new(delimiter: u8, tzc: TzCache, millis: bool) -> Self {
        let quoted = [delimiter, b'"', b'\n', b'\r']
            .iter()
            .fold(0u128, |m, &c| m | 1 << (c & 127));
        Self {
            delimiter,
            quoted,
            labels: Labels::default(),
            tzc,
            millis,
        }
    }

    fn row(&mut self, cells: &[Cell<'_>], out: &mut Vec<u8>) {
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                out.push(self.delimiter);
            }
            match *c {
                Cell::Null => {}
                Cell::Text(s) => csv_text(s, self.quoted, out),
                Cell::Label(s, id) => {
                    let q = self.quoted;
                    self.labels.put(id, out, |b| csv_text(s, q, b));
                }
                Cell::Time(t) => self.tzc.push_rfc3339(out, t, self.millis),
                Cell::Num(x, d) => push_num(out, x, d),
                Cell::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends CSV text cell `s`: quoted when it holds a byte of `quoted` (bit mask of ASCII), with
/// a leading `'` when a spreadsheet would run it as a formula.
fn csv_text(s: &str, quoted: u128, out: &mut Vec<u8>) {
    let risky = s
        .as_bytes()
        .first()
        .is_some_and(|c| matches!(c, b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r'));
    let quote = risky || s.bytes().any(|c| c < 128 && quoted >> c & 1 != 0);
    if !quote {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    out.push(b'"');
    if risky {
        out.push(b'\'');
    }
    for c in s.bytes() {
        if c == b'"' {
            out.push(b'"');
        }
        out.push(c);
    }
    out.push(b'"');
}

/// A CSV document: an optional header row, then [`CsvRow`]s.
pub struct CsvSink<W: Write> {
    out: W,
    buf: Vec<u8>,
    headers: bool,
    fmt: CsvRow,
}

impl<W: Write> CsvSink<W> {
    /// A CSV writer.
    pub fn new(out: W, delimiter: u8, headers: bool, tzc: TzCache, millis: bool) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(256),
            headers,
            fmt: CsvRow::new(delimiter, tzc, millis),
        }
    }

    /// The writer inside.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Sink for CsvSink<W> {
    fn begin(&mut self, columns: &[String], _metadata: &Value) -> io::Result<()> {
        if !self.headers {
            return Ok(());
        }
        self.buf.clear();
        for (i, c) in columns.iter().enumerate() {
            if i > 0 {
                self.buf.push(self.fmt.delimiter);
            }
            csv_text(c, self.fmt.quoted, &mut self.buf);
        }
        self.buf.extend_from_slice(b"\r\n");
        self.out.write_all(&self.buf)
    }

    fn row(&mut self, cells: &[Cell<'_>]) -> io::Result<()> {
        self.buf.clear();
        self.fmt.row(cells, &mut self.buf);
        self.out.write_all(&self.buf)
    }

    fn finish(&mut self, _record_count: u64, _summary: &Value) -> io::Result<()> {
        self.out.flush()
    }

    fn row_format(&self) -> Option<RowFormat> {
        Some(RowFormat::Csv(self.fmt.clone()))
    }

    fn formatted_row(&mut self, text: &[u8]) -> io::Result<()> {
        self.out.write_all(text)
    }
}

/// JSON rows: `\n{"column":value,…}`.
#[derive(Debug, Clone)]
pub struct JsonRow {
    /// `"column":` of each column.
    keys: Arc<[Vec<u8>]>,
    labels: Labels,
    tzc: TzCache,
    millis: bool,
}

impl JsonRow {
    fn row(&mut self, cells: &[Cell<'_>], out: &mut Vec<u8>) {
        out.extend_from_slice(b"\n{");
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&self.keys[i]);
            match *c {
                Cell::Null => out.extend_from_slice(b"null"),
                Cell::Text(s) => push_json_str(out, s),
                Cell::Label(s, id) => self.labels.put(id, out, |b| push_json_str(b, s)),
                Cell::Time(t) => {
                    out.push(b'"');
                    self.tzc.push_rfc3339(out, t, self.millis);
                    out.push(b'"');
                }
                Cell::Num(x, d) if x.is_finite() => push_num(out, x, d),
                Cell::Num(..) => out.extend_from_slice(b"null"),
                Cell::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
            }
        }
        out.push(b'}');
    }
}

/// `{"metadata":{…},"data":[{…},…],"record_count":N,"summary":{…}}`, streamed.
pub struct JsonSink<W: Write> {
    out: W,
    buf: Vec<u8>,
    first: bool,
    fmt: JsonRow,
}

impl<W: Write> JsonSink<W> {
    /// A JSON writer.
    pub fn new(out: W, tzc: TzCache, millis: bool) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(256),
            first: true,
            fmt: JsonRow {
                keys: Arc::new([]),
                labels: Labels::default(),
                tzc,
                millis,
            },
        }
    }

    /// The writer inside.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn begin(&mut self, columns: &[String], metadata: &Value) -> io::Result<()> {
        self.fmt.keys = columns
            .iter()
            .map(|c| {
                let mut k = Vec::new();
                push_json_str(&mut k, c);
                k.push(b':');
                k
            })
            .collect();
        self.out.write_all(b"{\"metadata\":")?;
        serde_json::to_writer(&mut self.out, metadata)?;
        self.out.write_all(b",\"data\":[")
    }

    fn row(&mut self, cells: &[Cell<'_>]) -> io::Result<()> {
        self.buf.clear();
        self.fmt.row(cells, &mut self.buf);
        let text = std::mem::take(&mut self.buf);
        let r = self.formatted_row(&text);
        self.buf = text;
        r
    }

    fn finish(&mut self, record_count: u64, summary: &Value) -> io::Result<()> {
        write!(self.out, "\n],\"record_count\":{record_count},\"summary\":")?;
        serde_json::to_writer(&mut self.out, summary)?;
        self.out.write_all(b"}\n")?;
        self.out.flush()
    }

    fn row_format(&self) -> Option<RowFormat> {
        Some(RowFormat::Json(self.fmt.clone()))
    }

    fn formatted_row(&mut self, text: &[u8]) -> io::Result<()> {
        if !self.first {
            self.out.write_all(b",")?;
        }
        self.first = false;
        self.out.write_all(text)
    }
}

/// Counts (for the size limit) and hashes the bytes reaching the file.
struct Counting<W> {
    inner: W,
    count: Arc<AtomicU64>,
    hash: Sha256,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The export file. Every [`WRITE_BEHIND`] bytes it asks the kernel to start writing the
/// pages out, so the closing fsync has little left to wait for and an SD card gets an even
/// stream of writes instead of one burst.
struct WriteBehind {
    file: std::fs::File,
    written: u64,
    pending: u64,
}

const WRITE_BEHIND: u64 = 8 * 1024 * 1024;

impl Write for WriteBehind {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        self.pending += n as u64;
        if self.pending >= WRITE_BEHIND {
            // POSIX_FADV_DONTNEED starts writeback of the dirty range (and lets the page cache
            // drop it once written). Only a hint: its failure changes nothing.
            let start = self.written - self.pending;
            let _ = rustix::fs::fadvise(
                &self.file,
                start,
                std::num::NonZeroU64::new(self.pending),
                rustix::fs::Advice::DontNeed,
            );
            self.pending = 0;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

type FileOut = Counting<BufWriter<WriteBehind>>;

/// The file being written, optionally compressed.
enum Output {
    Plain(FileOut),
    Gzip(Box<flate2::write::GzEncoder<FileOut>>),
    Zip(Box<zip::ZipWriter<zip::write::StreamWriter<FileOut>>>),
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Plain(w) => w.write(buf),
            Output::Gzip(w) => w.write(buf),
            Output::Zip(w) => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Output::Plain(w) => w.write_all(buf),
            Output::Gzip(w) => w.write_all(buf),
            Output::Zip(w) => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Plain(w) => w.flush(),
            Output::Gzip(w) => w.flush(),
            Output::Zip(w) => w.flush(),
        }
    }
}

const BUF: usize = 256 * 1024;

impl Output {
    fn create(
        path: &Path,
        compression: Compression,
        inner_name: &str,
    ) -> io::Result<(Self, Arc<AtomicU64>)> {
        let count = Arc::new(AtomicU64::new(0));
        let file = Counting {
            inner: BufWriter::with_capacity(
                BUF,
                WriteBehind {
                    file: std::fs::File::create(path)?,
                    written: 0,
                    pending: 0,
                },
            ),
            count: count.clone(),
            hash: Sha256::new(),
        };
        let out = match compression {
            Compression::None => Output::Plain(file),
            Compression::Gzip => Output::Gzip(Box::new(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::default(),
            ))),
            Compression::Zip => {
                let mut z = zip::ZipWriter::new_stream(file);
                let opts = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated);
                z.start_file(inner_name, opts).map_err(io::Error::other)?;
                Output::Zip(Box::new(z))
            }
        };
        Ok((out, count))
    }

    /// Flushes every layer, fsyncs the file and returns its SHA-256 (hex).
    fn close(self) -> io::Result<String> {
        let file = match self {
            Output::Plain(w) => w,
            Output::Gzip(w) => w.finish()?,
            Output::Zip(w) => w.finish().map_err(io::Error::other)?.into_inner(),
        };
        let f = file.inner.into_inner().map_err(|e| e.into_error())?;
        f.file.sync_all()?;
        Ok(file
            .hash
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }
}

/// Why rendering stopped.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Deleted while running.
    #[error("cancelled")]
    Cancelled,
    /// Over `max_records_per_export`.
    #[error(
        "the export holds more than {0} records; choose a shorter date range, fewer devices or an aggregation"
    )]
    TooManyRecords(u64),
    /// Over `max_file_size_mb`.
    #[error(
        "the export file exceeds {0} MB; choose a shorter date range, fewer fields, an aggregation or compression"
    )]
    TooLarge(u64),
    /// A custom field failed.
    #[error("custom field: {0}")]
    Formula(String),
    /// The stored request no longer validates (e.g. its devices are gone).
    #[error("the export request is no longer valid: {0}")]
    Invalid(String),
    /// Reading the store failed.
    #[error("reading the data failed: {0}")]
    Store(#[from] store::Error),
    /// Writing the file failed.
    #[error("writing the file failed: {0}")]
    Io(#[from] io::Error),
}

/// Shared progress and cancellation of a running render.
#[derive(Debug, Default)]
pub struct Control {
    /// 0–99 while running.
    pub progress: AtomicU8,
    /// Set to stop.
    pub cancel: AtomicBool,
}

/// Limits checked while rendering.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most data rows.
    pub max_records: u64,
    /// Largest file, bytes.
    pub max_bytes: u64,
    /// Distinct values the request's `COUNT(DISTINCT …)` sets may hold together.
    pub distinct_budget: usize,
}

/// What a finished render produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// Data rows.
    pub record_count: u64,
    /// File size.
    pub file_size: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// Aggregate custom fields.
    pub summary: Value,
}

/// Column names of a plan.
pub fn columns(plan: &Plan) -> Vec<String> {
    match plan.kind {
        Kind::DeviceData => {}
        Kind::SystemReport { .. } | Kind::CostAnalysis { .. } => {
            return super::report::CSV_COLUMNS.map(str::to_owned).to_vec();
        }
        Kind::AuditLogs(_) => return audit_log::COLUMNS.map(str::to_owned).to_vec(),
        Kind::Configuration { .. } => {
            return configuration::COLUMNS.map(str::to_owned).to_vec();
        }
    }
    plan.fields
        .iter()
        .map(|f| f.name().to_owned())
        .chain(plan.row_fields.iter().map(|c| c.name.clone()))
        .collect()
}

/// Whether `is_on` renders as a boolean (its function keeps 0/1 values).
fn on_is_bool(plan: &Plan) -> bool {
    plan.aggregation.is_none()
        || matches!(
            plan.functions[IS_ON],
            Agg::Min | Agg::Max | Agg::First | Agg::Last
        )
}

/// Units and functions of the columns, for metadata.
pub fn metadata(plan: &Plan, export_id: &str, created: &str, user: Option<&str>) -> Value {
    if plan.kind != Kind::DeviceData && plan.kind.document().is_none() {
        let mut m = json!({
            "export_id": export_id,
            "created_at": created,
            "timezone": plan.tz.name(),
            "fields": columns(plan),
        });
        match &plan.kind {
            Kind::AuditLogs(f) => {
                m["export_type"] = json!("audit_logs");
                m["date_range"] = json!({"start": crate::clock::rfc3339(plan.start_ms), "end": crate::clock::rfc3339(plan.end_ms)});
                m["filters"] = json!({
                    "event_types": f.event_types.iter().map(|t| t.name()).collect::<Vec<_>>(),
                    "severity_levels": f.severities,
                    "users": f.users,
                });
                m["verification"] = json!(
                    "each row carries its sequence number, exact time (ts_ms), the previous entry's MAC (prev) and its own (mac); check a file with `kasad audit verify-export FILE` on the appliance"
                );
            }
            _ => m["export_type"] = json!("configuration"),
        }
        if let (Some(u), false) = (user, plan.exclude_user_data) {
            m["created_by"] = json!(u);
        }
        return m;
    }
    let devices: Vec<Value> = plan
        .devices
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
        .collect();
    let mut units = Map::new();
    let mut functions = Map::new();
    for f in &plan.fields {
        if let Field::Value(i) = f {
            units.insert(VALUE_FIELDS[*i].0.into(), json!(VALUE_FIELDS[*i].3));
            if plan.aggregation.is_some() {
                functions.insert(VALUE_FIELDS[*i].0.into(), json!(plan.functions[*i].name()));
            }
        }
    }
    let custom: Vec<Value> = plan
        .row_fields
        .iter()
        .chain(&plan.aggregate_fields)
        .map(|c| json!({"name": c.name, "formula": c.text, "unit": c.unit, "aggregate": c.formula.is_aggregate()}))
        .collect();
    if plan.kind.document().is_some() {
        let mut m = json!({
            "export_id": export_id,
            "created_at": created,
            "timezone": plan.tz.name(),
            "date_range": {"start": crate::clock::rfc3339(plan.start_ms), "end": crate::clock::rfc3339(plan.end_ms)},
            "currency": plan.currency,
            "price_per_kwh": plan.price_per_kwh,
            "tariff": plan.tariffs.at(plan.end_ms - 1).describe(),
            "currency_symbol": plan.tariffs.at(plan.end_ms - 1).source.symbol,
            "devices": devices,
        });
        match &plan.kind {
            Kind::SystemReport { sections, .. } => {
                m["export_type"] = json!("system_report");
                m["sections"] = json!(sections.iter().map(|s| s.name()).collect::<Vec<_>>());
            }
            Kind::CostAnalysis {
                grouping,
                breakdown,
                ..
            } => {
                m["export_type"] = json!("cost_analysis");
                m["grouping"] = json!(grouping.name());
                let b = [
                    ("device", breakdown.device),
                    ("time_of_use", breakdown.time_of_use),
                    ("rate_tier", breakdown.rate_tier),
                ];
                m["breakdown_by"] =
                    json!(b.iter().filter(|x| x.1).map(|x| x.0).collect::<Vec<_>>());
            }
            _ => {}
        }
        if let (Some(u), false) = (user, plan.exclude_user_data) {
            m["created_by"] = json!(u);
        }
        return m;
    }
    let mut m = json!({
        "export_id": export_id,
        "export_type": "device_data",
        "created_at": created,
        "timezone": plan.tz.name(),
        "date_range": {"start": crate::clock::rfc3339(plan.start_ms), "end": crate::clock::rfc3339(plan.end_ms)},
        "aggregation": plan.aggregation_name,
        "fields": columns(plan),
        "units": units,
        "currency": plan.currency,
        "price_per_kwh": plan.price_per_kwh,
        "devices": devices,
        "custom_fields": custom,
    });
    if plan.aggregation.is_some() {
        m["aggregation_functions"] = Value::Object(functions);
    }
    if let (Some(u), false) = (user, plan.exclude_user_data) {
        m["created_by"] = json!(u);
    }
    m
}

/// Renders `plan` into `path` (overwritten), fsyncs it and returns its size and SHA-256.
/// `progress(ts)` is reported through `ctl` as the share of the range already written.
pub fn render(
    store: &Store,
    plan: &Plan,
    metadata: &Value,
    path: &Path,
    inner_name: &str,
    limits: Limits,
    ctl: &Control,
) -> Result<Rendered, RenderError> {
    if let Some(report) = plan.kind.document() {
        let report =
            report.ok_or_else(|| RenderError::Invalid("the report was not computed".into()))?;
        let (mut out, _) = Output::create(path, plan.compression, inner_name)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let n = super::report::write(report, plan, metadata, &mut out, dir, limits)?;
        let sha256 = out.close()?;
        return checked(path, limits, n, sha256, json!({}));
    }
    let chart = match plan.format {
        Format::Excel | Format::Pdf if plan.include_charts && plan.kind == Kind::DeviceData => {
            Some(excel::daily_energy(store, plan, &ctl.cancel)?)
        }
        _ => None,
    };
    let limits = match plan.format {
        Format::Pdf => Limits {
            max_records: limits.max_records.min(pdf::MAX_ROWS),
            ..limits
        },
        _ => limits,
    };
    let (out, count) = Output::create(path, plan.compression, inner_name)?;
    let millis = plan.aggregation.is_none();
    let tzc = TzCache::new(plan.tz);
    // Reading and formatting rows are the heaviest stages: two readers take every other device.
    let parts = match plan.kind {
        Kind::DeviceData => plan.devices.len().clamp(1, 2),
        _ => 0,
    };
    let readers = (0..parts)
        .map(|k| Rows::open_part(store, plan, &ctl.cancel, k, parts))
        .collect::<store::Result<Vec<_>>>()?;
    // Stages on their own threads, joined by short bounded queues: reading, merging and
    // (for text formats) formatting rows; putting the document together (this thread);
    // compressing, hashing and writing the file.
    let (n, summary, sha256) = std::thread::scope(|scope| {
        let (chunk_tx, chunk_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let writer = scope.spawn(move || -> io::Result<String> {
            let mut out = out;
            for chunk in chunk_rx {
                out.write_all(&chunk)?;
            }
            out.close()
        });
        let chunks = Chunks {
            tx: chunk_tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let sink: io::Result<Box<dyn Sink + '_>> = match plan.format {
            Format::Csv => Ok(Box::new(CsvSink::new(
                chunks,
                plan.delimiter,
                plan.include_headers,
                tzc,
                millis,
            ))),
            Format::Json => Ok(Box::new(JsonSink::new(chunks, tzc, millis))),
            Format::Excel => {
                let dir = path.parent().unwrap_or(Path::new("."));
                excel::ExcelSink::new(chunks, dir, tzc, millis, chart, excel::ROWS_PER_SHEET)
                    .map(|s| Box::new(s) as Box<dyn Sink>)
            }
            Format::Pdf => {
                let title = match plan.kind {
                    Kind::DeviceData => "Device data export",
                    Kind::AuditLogs(_) => "Audit log export",
                    _ => "Configuration export",
                };
                let generated = metadata["created_at"].as_str().unwrap_or_default();
                Ok(Box::new(pdf::PdfSink::new(
                    chunks, &plan.pdf, title, generated, tzc, millis, chart,
                )))
            }
        };
        let mut sink = sink?;
        let formatted = sink
            .begin(&columns(plan), metadata)
            .map_err(RenderError::from)
            .and_then(|()| {
                match &plan.kind {
                    Kind::DeviceData => {}
                    Kind::AuditLogs(f) => {
                        let key = plan.audit_key.as_ref().ok_or_else(|| {
                            RenderError::Invalid("no audit key to chain the rows with".into())
                        })?;
                        return audit_log::write(store, f, key, &mut *sink, limits, ctl, &count);
                    }
                    Kind::Configuration { rows, .. } => {
                        return configuration::write(rows, &mut *sink, limits, ctl);
                    }
                    // Rendered as documents before this pipeline starts.
                    Kind::SystemReport { .. } | Kind::CostAnalysis { .. } => {
                        return Err(RenderError::Invalid("not a row export".into()));
                    }
                }
                let mut inputs = Vec::new();
                for rows in readers {
                    let (tx, rx) = std::sync::mpsc::sync_channel::<store::Result<Batch>>(4);
                    let fmt = sink.row_format();
                    scope.spawn(move || produce(rows, plan, fmt, &tx));
                    inputs.push(Cursor {
                        rx,
                        batch: Batch::default(),
                        next: 0,
                    });
                }
                drive(
                    &mut *sink,
                    &mut MergeParts { inputs },
                    plan,
                    limits,
                    ctl,
                    &count,
                )
            });
        // Every sender is gone now: the writer finishes (or has stopped on an error).
        drop(sink);
        let sha = writer
            .join()
            .map_err(|_| io::Error::other("the file writer panicked"))?;
        match (formatted, sha) {
            (Ok((n, s)), Ok(sha)) => Ok((n, s, sha)),
            // A failed write (disk full) is the real cause of "the file writer stopped".
            (_, Err(e)) => Err(RenderError::Io(e)),
            (Err(e), Ok(_)) => Err(e),
        }
    })?;
    checked(path, limits, n, sha256, summary)
}

/// The result of a render whose file is at `path`, unless the file is over the size limit.
fn checked(
    path: &Path,
    limits: Limits,
    record_count: u64,
    sha256: String,
    summary: Value,
) -> Result<Rendered, RenderError> {
    let file_size = std::fs::metadata(path)?.len();
    if file_size > limits.max_bytes {
        return Err(RenderError::TooLarge(limits.max_bytes / (1024 * 1024)));
    }
    Ok(Rendered {
        record_count,
        file_size,
        sha256,
        summary,
    })
}

/// A preview: the first rows as JSON objects, the total count, and the size the CSV would have.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    /// First rows.
    pub rows: Vec<Value>,
    /// Rows of the request (at most the cap).
    pub total: u64,
    /// The count stopped at the cap: the export holds more rows than that.
    pub capped: bool,
    /// Bytes of the uncompressed CSV (of the rows counted): exact for a few hundred rows,
    /// estimated from a sample of the rows past them.
    pub csv_bytes: u64,
    /// Aggregate custom fields over all rows (null when capped).
    pub summary: Value,
}

struct ByteCount(u64);

impl Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Rows of a preview sized exactly as CSV; after them every [`SIZE_STEP`]th row is sized and
/// the rest estimated from those. Rows of one request differ little in length, so the estimate
/// is close at a fraction of the formatting (which was most of a preview's work).
const SIZED_EXACTLY: usize = 256;
const SIZE_STEP: usize = 16;

/// Keeps the first `limit` rows as a complete JSON document and sizes the rows as CSV.
struct PreviewSink {
    json: JsonSink<Vec<u8>>,
    csv: CsvSink<ByteCount>,
    limit: usize,
    n: usize,
    /// Bytes and number of the rows sized after the first [`SIZED_EXACTLY`].
    sampled: (u64, u64),
}

impl PreviewSink {
    /// The CSV's size: exact up to [`SIZED_EXACTLY`] rows, estimated past them.
    fn csv_bytes(&self) -> u64 {
        let (bytes, rows) = self.sampled;
        let exact = self.csv.out.0 - bytes;
        let rest = self.n.saturating_sub(SIZED_EXACTLY) as u64;
        match rows {
            0 => exact,
            _ => exact + (rest * bytes).div_ceil(rows),
        }
    }
}

impl Sink for PreviewSink {
    fn begin(&mut self, columns: &[String], metadata: &Value) -> io::Result<()> {
        self.json.begin(columns, metadata)?;
        self.csv.begin(columns, metadata)
    }
    fn row(&mut self, cells: &[Cell<'_>]) -> io::Result<()> {
        if self.n < self.limit {
            self.json.row(cells)?;
            if self.n + 1 == self.limit {
                self.json.finish(0, &Value::Null)?;
            }
        }
        self.n += 1;
        if self.n <= SIZED_EXACTLY {
            return self.csv.row(cells);
        }
        // The first row past the exact ones is always sized, so an estimate has a sample.
        if (self.n - SIZED_EXACTLY) % SIZE_STEP == 1 {
            let before = self.csv.out.0;
            self.csv.row(cells)?;
            self.sampled.0 += self.csv.out.0 - before;
            self.sampled.1 += 1;
        }
        Ok(())
    }
    fn finish(&mut self, _record_count: u64, _summary: &Value) -> io::Result<()> {
        if self.n < self.limit {
            self.json.finish(0, &Value::Null)?;
        }
        Ok(())
    }
}

/// The first `limit` rows of `plan`, the number of rows (counting stops after `cap`) and the
/// CSV size; stops early when `ctl.cancel` is set.
pub fn preview(
    store: &Store,
    plan: &Plan,
    limit: usize,
    limits: Limits,
    ctl: &Control,
) -> Result<Preview, RenderError> {
    let cap = limits.max_records;
    let millis = plan.aggregation.is_none();
    let mut sink = PreviewSink {
        json: JsonSink::new(Vec::new(), TzCache::new(plan.tz), millis),
        csv: CsvSink::new(
            ByteCount(0),
            plan.delimiter,
            plan.include_headers,
            TzCache::new(plan.tz),
            millis,
        ),
        limit,
        n: 0,
        sampled: (0, 0),
    };
    let mut rows = Plain {
        rows: Rows::open(store, plan, &ctl.cancel)?,
        current: None,
    };
    sink.begin(&columns(plan), &Value::Null)?;
    let counted = drive(&mut sink, &mut rows, plan, limits, ctl, &AtomicU64::new(0));
    let (total, capped, summary) = match counted {
        Ok((n, s)) => (n, false, s),
        Err(RenderError::TooManyRecords(_)) => (cap, true, Value::Null),
        Err(e) => return Err(e),
    };
    let csv_bytes = sink.csv_bytes();
    let doc: Value = serde_json::from_slice(&sink.json.into_inner()).map_err(io::Error::other)?;
    let rows = match doc.get("data") {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    Ok(Preview {
        rows,
        total,
        capped,
        csv_bytes,
        summary,
    })
}

const BATCH: usize = 2048;
const CHUNK: usize = 256 * 1024;

/// The formatter's output: bytes gathered into chunks for the writer thread.
struct Chunks {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Chunks {
    fn send(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(full)
            .map_err(|_| io::Error::other("the file writer stopped"))
    }
}

impl Write for Chunks {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

/// Rows of one reader, with their text when the format has a [`RowFormat`] (`ends[i]` is where
/// row `i`'s text ends).
#[derive(Default)]
struct Batch {
    rows: Vec<Row>,
    text: Vec<u8>,
    ends: Vec<usize>,
}

/// Sends the rows (formatted by `fmt` if given) in batches until they end, an error occurs or
/// the receiver is gone.
fn produce(
    rows: Rows<'_>,
    plan: &Plan,
    mut fmt: Option<RowFormat>,
    tx: &std::sync::mpsc::SyncSender<store::Result<Batch>>,
) {
    let mut cells = CellMaker::new(plan);
    // Text buffers start at the size the previous batch needed, so they rarely grow (a
    // growing buffer copies its text again).
    let ends = if fmt.is_some() { BATCH } else { 0 };
    let new_batch = |text: usize| Batch {
        rows: Vec::with_capacity(BATCH),
        text: Vec::with_capacity(text),
        ends: Vec::with_capacity(ends),
    };
    let mut batch = new_batch(0);
    for r in rows {
        match r {
            Ok(r) => {
                if let Some(f) = &mut fmt {
                    f.row(cells.of(&r), &mut batch.text);
                    batch.ends.push(batch.text.len());
                }
                batch.rows.push(r);
                if batch.rows.len() == BATCH {
                    let next = new_batch(batch.text.len() + batch.text.len() / 8);
                    if tx.send(Ok(std::mem::replace(&mut batch, next))).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
    if !batch.rows.is_empty() {
        let _ = tx.send(Ok(batch));
    }
}

/// Rows in output order, each with its text if a reader formatted it.
trait Source {
    fn next_row(&mut self) -> Option<SourceRow<'_>>;
}

type SourceRow<'a> = store::Result<(&'a Row, Option<&'a [u8]>)>;

/// Rows straight from a scan, unformatted.
struct Plain<I> {
    rows: I,
    current: Option<Row>,
}

impl<I: Iterator<Item = store::Result<Row>>> Source for Plain<I> {
    fn next_row(&mut self) -> Option<SourceRow<'_>> {
        match self.rows.next()? {
            Ok(r) => Some(Ok((self.current.insert(r), None))),
            Err(e) => Some(Err(e)),
        }
    }
}

/// The receiving end of one [`produce`].
struct Cursor {
    rx: std::sync::mpsc::Receiver<store::Result<Batch>>,
    batch: Batch,
    next: usize,
}

impl Cursor {
    /// The (time, device index) of the next row; `None` at the end.
    fn peek(&mut self) -> Option<store::Result<(i64, usize)>> {
        while self.next == self.batch.rows.len() {
            match self.rx.recv().ok()? {
                Ok(b) => (self.batch, self.next) = (b, 0),
                Err(e) => return Some(Err(e)),
            }
        }
        let r = &self.batch.rows[self.next];
        Some(Ok((r.ts_ms, r.dev)))
    }
}

/// Merges the readers' batches by (time, device index).
struct MergeParts {
    inputs: Vec<Cursor>,
}

impl Source for MergeParts {
    fn next_row(&mut self) -> Option<SourceRow<'_>> {
        let mut best: Option<(usize, (i64, usize))> = None;
        for (i, c) in self.inputs.iter_mut().enumerate() {
            match c.peek() {
                Some(Ok(k)) if best.is_none_or(|(_, b)| k < b) => best = Some((i, k)),
                Some(Ok(_)) | None => {}
                Some(Err(e)) => return Some(Err(e)),
            }
        }
        let c = &mut self.inputs[best?.0];
        let (b, i) = (&c.batch, c.next);
        c.next += 1;
        let text = (!b.ends.is_empty())
            .then(|| &b.text[i.checked_sub(1).map_or(0, |j| b.ends[j])..b.ends[i]]);
        Some(Ok((&b.rows[i], text)))
    }
}

/// Builds the cells of rows: the plan's fields, then its per-row custom fields.
struct CellMaker<'p> {
    plan: &'p Plan,
    on_bool: bool,
    tzc: TzCache,
    cells: Vec<Cell<'p>>,
}

impl<'p> CellMaker<'p> {
    fn new(plan: &'p Plan) -> Self {
        Self {
            plan,
            on_bool: on_is_bool(plan),
            tzc: TzCache::new(plan.tz),
            cells: Vec::with_capacity(plan.fields.len() + plan.row_fields.len()),
        }
    }

    fn of(&mut self, row: &Row) -> &[Cell<'p>] {
        let plan = self.plan;
        let dp = plan.decimal_places;
        let dev = &plan.devices[row.dev];
        self.cells.clear();
        for f in &plan.fields {
            self.cells.push(match *f {
                Field::Timestamp => Cell::Time(row.ts_ms),
                Field::DeviceIp => Cell::Label(&dev.ip, 3 * row.dev),
                Field::DeviceId => Cell::Label(&dev.shown_id, 3 * row.dev + 1),
                Field::DeviceName => Cell::Label(&dev.name, 3 * row.dev + 2),
                Field::Value(i) => match row.get(i) {
                    None => Cell::Null,
                    Some(v) if i == IS_ON && self.on_bool => Cell::Bool(v > 0.0),
                    Some(v) => Cell::Num(
                        v,
                        dp.unwrap_or(VALUE_FIELDS[i].4.max(if i == IS_ON { 4 } else { 0 })),
                    ),
                },
            });
        }
        if !plan.row_fields.is_empty() {
            let values = formula_values(row, plan);
            let ctx = row_ctx(&values, &mut self.tzc, row.ts_ms);
            for c in &plan.row_fields {
                self.cells.push(match c.formula.eval_row(&ctx) {
                    Some(v) => Cell::Num(v, dp.unwrap_or(6)),
                    None => Cell::Null,
                });
            }
        }
        &self.cells
    }
}

/// The formula context of a row at `ts_ms`.
fn row_ctx<'v>(values: &'v [Option<f64>], tzc: &mut TzCache, ts_ms: i64) -> RowCtx<'v> {
    let l = tzc.local(ts_ms);
    RowCtx {
        values,
        day: l.day,
        hour: l.hour,
        weekday: l.weekday,
        month: l.month,
    }
}

/// Writes the rows of `rows` to `sink` (after its `begin`), checking the limits and the
/// cancel flag and reporting progress; folds the aggregate custom fields; finishes the sink.
fn drive(
    sink: &mut dyn Sink,
    rows: &mut dyn Source,
    plan: &Plan,
    limits: Limits,
    ctl: &Control,
    written: &AtomicU64,
) -> Result<(u64, Value), RenderError> {
    let dp = plan.decimal_places;
    let budget = DistinctBudget::new(limits.distinct_budget);
    let mut aggs: Vec<Aggregator> = plan
        .aggregate_fields
        .iter()
        .map(|c| c.formula.aggregator_within(&budget))
        .collect();
    let mut cells = CellMaker::new(plan);
    let mut tzc = TzCache::new(plan.tz);
    let span = (plan.end_ms - plan.start_ms).max(1) as f64;
    let mut n: u64 = 0;
    while let Some(item) = rows.next_row() {
        let (row, text) = item?;
        n += 1;
        if n > limits.max_records {
            return Err(RenderError::TooManyRecords(limits.max_records));
        }
        if n.is_multiple_of(4096) {
            if ctl.cancel.load(Ordering::Relaxed) {
                return Err(RenderError::Cancelled);
            }
            if written.load(Ordering::Relaxed) > limits.max_bytes {
                return Err(RenderError::TooLarge(limits.max_bytes / (1024 * 1024)));
            }
            let pct = ((row.ts_ms - plan.start_ms) as f64 / span * 100.0).clamp(0.0, 99.0);
            ctl.progress.store(pct as u8, Ordering::Relaxed);
        }
        if !aggs.is_empty() {
            let values = formula_values(row, plan);
            let ctx = row_ctx(&values, &mut tzc, row.ts_ms);
            for (a, c) in aggs.iter_mut().zip(&plan.aggregate_fields) {
                a.add(&ctx).map_err(|e| {
                    RenderError::Formula(format!("custom_fields {:?}: {e}", c.name))
                })?;
            }
        }
        match text {
            Some(t) => sink.formatted_row(t)?,
            None => sink.row(cells.of(row))?,
        }
    }
    if ctl.cancel.load(Ordering::Relaxed) {
        // The scans may have stopped early: what was written is not the whole export.
        return Err(RenderError::Cancelled);
    }
    let mut summary = Map::new();
    for (c, a) in plan.aggregate_fields.iter().zip(&aggs) {
        let v = a.finish().map(|x| {
            let mut b = Vec::new();
            push_num(&mut b, x, dp.unwrap_or(6));
            serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null)
        });
        summary.insert(
            c.name.clone(),
            json!({"value": v, "unit": c.unit, "formula": c.text}),
        );
    }
    let summary = Value::Object(summary);
    sink.finish(n, &summary)?;
    Ok((n, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(x: f64, d: u8) -> String {
        let mut v = Vec::new();
        push_num(&mut v, x, d);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn numbers_render_exactly_and_trim() {
        assert_eq!(num(45.2, 3), "45.2");
        assert_eq!(num(45.0, 3), "45");
        assert_eq!(num(0.045, 6), "0.045");
        assert_eq!(num(-1.5, 0), "-2");
        assert_eq!(num(1.005, 2), "1"); // 1.005 is 1.00499999… in binary
        assert_eq!(num(0.000001, 6), "0.000001");
        assert_eq!(num(123.456789, 2), "123.46");
        assert_eq!(num(-0.0004, 3), "0");
        assert_eq!(num(1e300, 2).len(), 304);
        assert_eq!(num(f64::NAN, 2), "");
        assert_eq!(num(2.5, 0), "3");
        assert_eq!(num(-2.5, 0), "-3");
        assert_eq!(num(0.0005, 3), "0.001");
        assert_eq!(num(12.000_25, 4), "12.0003"); // 120002.5 after scaling: away from zero
        assert_eq!(num(7.0, 9), "7");
    }

    #[test]
    fn numbers_match_rounding_by_the_float_library() {
        // The integer rounding in `fixed` against f64::round on the same scaled value.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x % 4_000_000_000) as f64 / 997.0 - 2_000_000.0;
            for d in [0u8, 1, 2, 3, 4, 6, 9] {
                let scaled = (v * 10f64.powi(i32::from(d))).round();
                let want = if scaled == 0.0 {
                    "0".to_string()
                } else {
                    let s = format!("{:.*}", usize::from(d), scaled / 10f64.powi(i32::from(d)));
                    if s.contains('.') {
                        s.trim_end_matches('0').trim_end_matches('.').to_string()
                    } else {
                        s
                    }
                };
                assert_eq!(num(v, d), want, "{v} with {d} decimals");
            }
        }
    }

    #[test]
    fn csv_quotes_and_neutralises_formulas() {
        let mut s = CsvSink::new(
            Vec::new(),
            b',',
            true,
            TzCache::new(chrono_tz::Tz::UTC),
            false,
        );
        s.begin(&["a".into(), "b".into()], &Value::Null).unwrap();
        s.row(&[Cell::Text("=SUM(A1)"), Cell::Text("x,\"y\"")])
            .unwrap();
        s.row(&[Cell::Text("-2"), Cell::Num(-2.0, 3)]).unwrap();
        // Labels encode like text, every time (the second use comes from the memo).
        for _ in 0..2 {
            s.row(&[Cell::Label("=x", 1), Cell::Label("a,b", 0)])
                .unwrap();
        }
        let text = String::from_utf8(s.into_inner()).unwrap();
        assert_eq!(
            text,
            "a,b\r\n\"'=SUM(A1)\",\"x,\"\"y\"\"\"\r\n\"'-2\",-2\r\n\"'=x\",\"a,b\"\r\n\"'=x\",\"a,b\"\r\n"
        );
    }

    #[test]
    fn json_is_valid_and_escaped() {
        let mut s = JsonSink::new(Vec::new(), TzCache::new(chrono_tz::Tz::UTC), true);
        s.begin(&["t".into(), "n\"ame".into(), "v".into()], &json!({"k": 1}))
            .unwrap();
        s.row(&[
            Cell::Time(1_000),
            Cell::Text("a\"b\n"),
            Cell::Num(f64::INFINITY, 2),
        ])
        .unwrap();
        s.row(&[Cell::Null, Cell::Bool(true), Cell::Num(1.25, 1)])
            .unwrap();
        s.finish(2, &json!({})).unwrap();
        let v: Value = serde_json::from_slice(&s.into_inner()).unwrap();
        assert_eq!(v["data"][0]["t"], "1970-01-01T00:00:01.000Z");
        assert_eq!(v["data"][0]["n\"ame"], "a\"b\n");
        assert_eq!(v["data"][0]["v"], Value::Null);
        assert_eq!(v["data"][1]["v"], 1.3);
        assert_eq!(v["record_count"], 2);
    }
}
