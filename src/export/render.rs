//! Rendering a plan into a file: the [`Sink`] interface every format implements (CSV and JSON
//! here; Excel and PDF join it), fast number formatting, compression, the size limit, and the
//! write-to-temp → fsync → hash sequence. Runs on a blocking thread, never on the runtime.

use super::formula::{Aggregator, RowCtx};
use super::localtime::TzCache;
use super::request::{Agg, Field, IS_ON, Plan, VALUE_FIELDS};
use super::rows::{Row, Rows, formula_values};
use super::{Compression, Format};
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
    /// A timestamp, UTC ms (rendered in the plan's zone).
    Time(i64),
    /// A number rendered with at most this many decimals (trailing zeros dropped).
    Num(f64, u8),
    /// A boolean.
    Bool(bool),
}

/// A format writer. Rows arrive in order; `finish` is called once after the last row.
pub trait Sink {
    /// Writes the header (CSV header row, JSON metadata).
    fn begin(&mut self, columns: &[String], metadata: &Value) -> io::Result<()>;
    /// Writes one row.
    fn row(&mut self, cells: &[Cell<'_>]) -> io::Result<()>;
    /// Writes the trailer (JSON record count and summary).
    fn finish(&mut self, record_count: u64, summary: &Value) -> io::Result<()>;
}

/// Appends `x` with at most `decimals` decimals (rounded half away from zero, trailing zeros
/// and a bare point dropped). Non-finite values append nothing.
pub fn push_num(out: &mut Vec<u8>, x: f64, decimals: u8) {
    match decimals {
        0 => fixed::<0>(out, x),
        1 => fixed::<1>(out, x),
        2 => fixed::<2>(out, x),
        3 => fixed::<3>(out, x),
        4 => fixed::<4>(out, x),
        5 => fixed::<5>(out, x),
        6 => fixed::<6>(out, x),
        7 => fixed::<7>(out, x),
        8 => fixed::<8>(out, x),
        _ => fixed::<9>(out, x),
    }
}

/// [`push_num`] with the decimals known at compile time (divisions become multiplications).
#[inline]
fn fixed<const D: usize>(out: &mut Vec<u8>, x: f64) {
    if !x.is_finite() {
        return;
    }
    let pow = 10u64.pow(D as u32);
    let scaled = (x * pow as f64).round();
    if scaled.abs() >= 9.0e15 {
        out.extend_from_slice(format!("{x:.D$}").as_bytes());
        return;
    }
    if scaled < 0.0 {
        out.push(b'-');
    }
    let n = scaled.abs() as u64;
    let (int, mut frac) = (n / pow, n % pow);
    out.extend_from_slice(itoa::Buffer::new().format(int).as_bytes());
    if frac == 0 {
        return;
    }
    let mut digits = [b'0'; 9];
    for i in (0..D).rev() {
        digits[i] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    let mut len = D;
    while len > 0 && digits[len - 1] == b'0' {
        len -= 1;
    }
    out.push(b'.');
    out.extend_from_slice(&digits[..len]);
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

/// RFC 4180 CSV with CRLF line ends. Text cells that a spreadsheet would run as a formula
/// (starting with `=`, `+`, `-`, `@`, tab or CR) get a leading `'`.
pub struct CsvSink<W: Write> {
    out: W,
    buf: Vec<u8>,
    delimiter: u8,
    headers: bool,
    tzc: TzCache,
    millis: bool,
}

impl<W: Write> CsvSink<W> {
    /// A CSV writer.
    pub fn new(out: W, delimiter: u8, headers: bool, tzc: TzCache, millis: bool) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(256),
            delimiter,
            headers,
            tzc,
            millis,
        }
    }

    fn push_text(&mut self, s: &str) {
        let risky = s
            .as_bytes()
            .first()
            .is_some_and(|c| matches!(c, b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r'));
        let d = self.delimiter;
        let quote = risky
            || s.bytes()
                .any(|c| c == d || c == b'"' || c == b'\n' || c == b'\r');
        if !quote {
            self.buf.extend_from_slice(s.as_bytes());
            return;
        }
        self.buf.push(b'"');
        if risky {
            self.buf.push(b'\'');
        }
        for c in s.bytes() {
            if c == b'"' {
                self.buf.push(b'"');
            }
            self.buf.push(c);
        }
        self.buf.push(b'"');
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
                self.buf.push(self.delimiter);
            }
            self.push_text(c);
        }
        self.buf.extend_from_slice(b"\r\n");
        self.out.write_all(&self.buf)
    }

    fn row(&mut self, cells: &[Cell<'_>]) -> io::Result<()> {
        self.buf.clear();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                self.buf.push(self.delimiter);
            }
            match *c {
                Cell::Null => {}
                Cell::Text(s) => self.push_text(s),
                Cell::Time(t) => self.tzc.push_rfc3339(&mut self.buf, t, self.millis),
                Cell::Num(x, d) => push_num(&mut self.buf, x, d),
                Cell::Bool(b) => self
                    .buf
                    .extend_from_slice(if b { b"true" } else { b"false" }),
            }
        }
        self.buf.extend_from_slice(b"\r\n");
        self.out.write_all(&self.buf)
    }

    fn finish(&mut self, _record_count: u64, _summary: &Value) -> io::Result<()> {
        self.out.flush()
    }
}

/// `{"metadata":{…},"data":[{…},…],"record_count":N,"summary":{…}}`, streamed.
pub struct JsonSink<W: Write> {
    out: W,
    buf: Vec<u8>,
    keys: Vec<Vec<u8>>,
    first: bool,
    tzc: TzCache,
    millis: bool,
}

impl<W: Write> JsonSink<W> {
    /// A JSON writer.
    pub fn new(out: W, tzc: TzCache, millis: bool) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(256),
            keys: Vec::new(),
            first: true,
            tzc,
            millis,
        }
    }

    /// The writer inside.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn begin(&mut self, columns: &[String], metadata: &Value) -> io::Result<()> {
        self.keys = columns
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
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.extend_from_slice(b"\n{");
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            self.buf.extend_from_slice(&self.keys[i]);
            match *c {
                Cell::Null => self.buf.extend_from_slice(b"null"),
                Cell::Text(s) => push_json_str(&mut self.buf, s),
                Cell::Time(t) => {
                    self.buf.push(b'"');
                    self.tzc.push_rfc3339(&mut self.buf, t, self.millis);
                    self.buf.push(b'"');
                }
                Cell::Num(x, d) if x.is_finite() => push_num(&mut self.buf, x, d),
                Cell::Num(..) => self.buf.extend_from_slice(b"null"),
                Cell::Bool(b) => self
                    .buf
                    .extend_from_slice(if b { b"true" } else { b"false" }),
            }
        }
        self.buf.push(b'}');
        self.out.write_all(&self.buf)
    }

    fn finish(&mut self, record_count: u64, summary: &Value) -> io::Result<()> {
        write!(self.out, "\n],\"record_count\":{record_count},\"summary\":")?;
        serde_json::to_writer(&mut self.out, summary)?;
        self.out.write_all(b"}\n")?;
        self.out.flush()
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

type FileOut = Counting<BufWriter<std::fs::File>>;

/// The file being written, optionally compressed.
enum Output {
    Plain(FileOut),
    Gzip(flate2::write::GzEncoder<FileOut>),
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
            inner: BufWriter::with_capacity(BUF, std::fs::File::create(path)?),
            count: count.clone(),
            hash: Sha256::new(),
        };
        let out = match compression {
            Compression::None => Output::Plain(file),
            Compression::Gzip => Output::Gzip(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::default(),
            )),
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
        f.sync_all()?;
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
    let (out, count) = Output::create(path, plan.compression, inner_name)?;
    let millis = plan.aggregation.is_none();
    let tzc = TzCache::new(plan.tz);
    // Reading is the heaviest stage: two readers take every other device.
    let parts = plan.devices.len().clamp(1, 2);
    let readers = (0..parts)
        .map(|k| Rows::open_part(store, plan, &ctl.cancel, k, parts))
        .collect::<store::Result<Vec<_>>>()?;
    // Stages on their own threads, joined by short bounded queues: reading and merging rows;
    // formatting them (this thread); compressing, hashing and writing the file.
    let (n, summary, sha256) = std::thread::scope(|scope| {
        let mut inputs = Vec::new();
        for rows in readers {
            let (tx, rx) = std::sync::mpsc::sync_channel::<store::Result<Vec<Row>>>(4);
            scope.spawn(move || produce(rows, &tx));
            inputs.push(
                Batches {
                    rx,
                    current: Vec::new().into_iter(),
                }
                .peekable(),
            );
        }
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
        let mut rows = MergeParts { inputs };
        let formatted = match plan.format {
            Format::Csv => {
                let mut sink =
                    CsvSink::new(chunks, plan.delimiter, plan.include_headers, tzc, millis);
                drive(&mut sink, &mut rows, plan, metadata, limits, ctl, &count)
                    .map(|(n, s)| (n, s, sink.into_inner()))
            }
            Format::Json => {
                let mut sink = JsonSink::new(chunks, tzc, millis);
                drive(&mut sink, &mut rows, plan, metadata, limits, ctl, &count)
                    .map(|(n, s)| (n, s, sink.into_inner()))
            }
        };
        let written = formatted
            .and_then(|(n, s, mut chunks)| chunks.flush().map(|()| (n, s)).map_err(Into::into));
        // Every sender is gone now: the writer finishes (or has stopped on an error).
        let sha = writer
            .join()
            .map_err(|_| io::Error::other("the file writer panicked"))?;
        match (written, sha) {
            (Ok((n, s)), Ok(sha)) => Ok((n, s, sha)),
            // A failed write (disk full) is the real cause of "the file writer stopped".
            (_, Err(e)) => Err(RenderError::Io(e)),
            (Err(e), Ok(_)) => Err(e),
        }
    })?;
    let file_size = std::fs::metadata(path)?.len();
    if file_size > limits.max_bytes {
        return Err(RenderError::TooLarge(limits.max_bytes / (1024 * 1024)));
    }
    Ok(Rendered {
        record_count: n,
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
    /// Bytes of the uncompressed CSV (of the rows counted).
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

/// Keeps the first `limit` rows as a complete JSON document and sizes every row as CSV.
struct PreviewSink {
    json: JsonSink<Vec<u8>>,
    csv: CsvSink<ByteCount>,
    limit: usize,
    n: usize,
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
        self.csv.row(cells)
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
    cap: u64,
    ctl: &Control,
) -> Result<Preview, RenderError> {
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
    };
    let mut rows = Rows::open(store, plan, &ctl.cancel)?;
    let limits = Limits {
        max_records: cap,
        max_bytes: u64::MAX,
    };
    let counted = drive(
        &mut sink,
        &mut rows,
        plan,
        &Value::Null,
        limits,
        ctl,
        &AtomicU64::new(0),
    );
    let (total, capped, summary) = match counted {
        Ok((n, s)) => (n, false, s),
        Err(RenderError::TooManyRecords(_)) => (cap, true, Value::Null),
        Err(e) => return Err(e),
    };
    let doc: Value = serde_json::from_slice(&sink.json.into_inner()).map_err(io::Error::other)?;
    let rows = match doc.get("data") {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    Ok(Preview {
        rows,
        total,
        capped,
        csv_bytes: sink.csv.into_inner().0,
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

/// Sends the rows in batches until they end, an error occurs or the receiver is gone.
fn produce(rows: Rows<'_>, tx: &std::sync::mpsc::SyncSender<store::Result<Vec<Row>>>) {
    let mut batch = Vec::with_capacity(BATCH);
    for r in rows {
        match r {
            Ok(r) => {
                batch.push(r);
                if batch.len() == BATCH
                    && tx
                        .send(Ok(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))))
                        .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch));
    }
}

/// The receiving end of [`produce`] as a row iterator.
struct Batches {
    rx: std::sync::mpsc::Receiver<store::Result<Vec<Row>>>,
    current: std::vec::IntoIter<Row>,
}

impl Iterator for Batches {
    type Item = store::Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.current.next() {
                return Some(Ok(r));
            }
            match self.rx.recv().ok()? {
                Ok(b) => self.current = b.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Merges the readers' streams by (time, device index).
struct MergeParts {
    inputs: Vec<std::iter::Peekable<Batches>>,
}

impl Iterator for MergeParts {
    type Item = store::Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, (i64, usize))> = None;
        for (i, s) in self.inputs.iter_mut().enumerate() {
            match s.peek() {
                Some(Ok(r)) if best.is_none_or(|(_, k)| (r.ts_ms, r.dev) < k) => {
                    best = Some((i, (r.ts_ms, r.dev)));
                }
                Some(Ok(_)) | None => {}
                Some(Err(_)) => return s.next(),
            }
        }
        self.inputs[best?.0].next()
    }
}

fn drive(
    sink: &mut dyn Sink,
    rows: &mut dyn Iterator<Item = store::Result<Row>>,
    plan: &Plan,
    metadata: &Value,
    limits: Limits,
    ctl: &Control,
    written: &AtomicU64,
) -> Result<(u64, Value), RenderError> {
    sink.begin(&columns(plan), metadata)?;
    let dp = plan.decimal_places;
    let on_bool = on_is_bool(plan);
    let mut aggs: Vec<Aggregator> = plan
        .aggregate_fields
        .iter()
        .map(|c| c.formula.aggregator())
        .collect();
    let need_local = !plan.row_fields.is_empty() || !aggs.is_empty();
    let mut tzc = TzCache::new(plan.tz);
    let span = (plan.end_ms - plan.start_ms).max(1) as f64;
    let mut cells: Vec<Cell<'_>> = Vec::with_capacity(plan.fields.len() + plan.row_fields.len());
    let mut n: u64 = 0;
    for row in rows {
        let row = row?;
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
        let dev = &plan.devices[row.dev];
        cells.clear();
        for f in &plan.fields {
            cells.push(match *f {
                Field::Timestamp => Cell::Time(row.ts_ms),
                Field::DeviceIp => Cell::Text(&dev.ip),
                Field::DeviceId => Cell::Text(&dev.shown_id),
                Field::DeviceName => Cell::Text(&dev.name),
                Field::Value(i) => match row.get(i) {
                    None => Cell::Null,
                    Some(v) if i == IS_ON && on_bool => Cell::Bool(v > 0.0),
                    Some(v) => Cell::Num(
                        v,
                        dp.unwrap_or(VALUE_FIELDS[i].4.max(if i == IS_ON { 4 } else { 0 })),
                    ),
                },
            });
        }
        if need_local {
            let values = formula_values(&row, plan);
            let l = tzc.local(row.ts_ms);
            let ctx = RowCtx {
                values: &values,
                day: l.day,
                hour: l.hour,
                weekday: l.weekday,
                month: l.month,
            };
            for c in &plan.row_fields {
                cells.push(match c.formula.eval_row(&ctx) {
                    Some(v) => Cell::Num(v, dp.unwrap_or(6)),
                    None => Cell::Null,
                });
            }
            for a in &mut aggs {
                a.add(&ctx)
                    .map_err(|e| RenderError::Formula(e.to_string()))?;
            }
        }
        sink.row(&cells)?;
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
        let text = String::from_utf8(s.into_inner()).unwrap();
        assert_eq!(
            text,
            "a,b\r\n\"'=SUM(A1)\",\"x,\"\"y\"\"\"\r\n\"'-2\",-2\r\n"
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
