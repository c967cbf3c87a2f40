//! Rendering a plan into a file, on a blocking thread (never on the runtime): reader threads
//! take every other device and format rows, this thread merges them by time into the format's
//! [`Sink`], and a writer thread compresses, hashes and writes the file ([`super::output`]).
//! The limits (records, bytes), cancellation and progress are checked on the way.

use super::Format;
use super::format::preview::PreviewSink;
use super::format::{CsvSink, JsonSink, RowFormat, Sink, excel, pdf};
use super::formula::{Aggregator, DistinctBudget};
use super::kind::device_data::{self, CellMaker, Row, Rows, Run, formula_values, row_ctx};
use super::kind::{self, Inputs, KindPlan, audit_logs, configuration};
use super::output::{CHUNK, Chunks, Output};
use super::plan::Plan;
use crate::localtime::TzCache;
use crate::numfmt::push_num;
use crate::store::{self, Store};
use serde_json::{Map, Value, json};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

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
    /// A stored tariff version no longer compiles.
    #[error("stored tariff: {0}")]
    Tariff(crate::tariff::TariffError),
    /// The job's stored plan cannot be read.
    #[error("the stored export job cannot be read: {0}")]
    Record(serde_json::Error),
    /// Writing the file failed.
    #[error("writing the file failed: {0}")]
    Io(#[from] io::Error),
    /// The statement signing key cannot be used.
    #[error("{0}")]
    Key(String),
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

/// Renders `plan` with its `inputs` into `path` (overwritten), fsyncs it and returns its size
/// and SHA-256. Progress is reported through `ctl` as the share of the range already written.
#[allow(clippy::too_many_arguments)]
pub fn render(
    store: &Store,
    plan: &Plan,
    inputs: &Inputs,
    metadata: &Value,
    path: &Path,
    inner_name: &str,
    limits: Limits,
    ctl: &Control,
) -> Result<Rendered, RenderError> {
    if let Some(whole) = render_whole(store, plan, inputs, metadata, path, inner_name, limits, ctl)?
    {
        return Ok(whole);
    }
    let run = match (&plan.kind, inputs) {
        (KindPlan::DeviceData(data), Inputs::Rows(prices)) => Some(Run { plan, data, prices }),
        _ => None,
    };
    let chart = match (plan.format, run) {
        (Format::Excel | Format::Pdf, Some(run)) if plan.include_charts => {
            Some(device_data::daily_energy(store, run, &ctl.cancel)?)
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
    // Reading and formatting rows are the heaviest stages: two readers take every other device.
    let parts = run.map_or(0, |r| r.plan.devices.len().clamp(1, 2));
    let readers = match run {
        Some(run) => (0..parts)
            .map(|k| Rows::open_part(store, run, &ctl.cancel, k, parts))
            .collect::<store::Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let millis = run.is_none_or(|r| r.data.aggregation.is_none());
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
        let mut sink = sink_of(plan, chunks, path, metadata, millis, chart)?;
        let formatted = sink
            .begin(&kind::columns(plan), metadata)
            .map_err(RenderError::from)
            .and_then(|()| match (&plan.kind, inputs, run) {
                (KindPlan::AuditLogs(f), Inputs::AuditLog(key), _) => {
                    audit_logs::write(store, f, key, &mut *sink, limits, ctl, &count)
                }
                (KindPlan::Configuration(_), Inputs::Configuration(rows), _) => {
                    configuration::write(rows, &mut *sink, limits, ctl)
                }
                (_, _, Some(run)) => {
                    let mut inputs = Vec::new();
                    for rows in readers {
                        let (tx, rx) = std::sync::mpsc::sync_channel::<store::Result<Batch>>(4);
                        let fmt = sink.row_format();
                        scope.spawn(move || produce(rows, run, fmt, &tx));
                        inputs.push(Cursor {
                            rx,
                            batch: Batch::default(),
                            next: 0,
                        });
                    }
                    let mut merged = MergeParts { inputs };
                    drive(&mut *sink, &mut merged, run, limits, ctl, &count)
                }
                _ => Err(RenderError::Invalid(
                    "the export's inputs do not match its kind".into(),
                )),
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

/// The files written whole rather than streamed as rows: ha_statistics, a statement, and a
/// document (cost_analysis, system_report); `None` for the rest.
#[allow(clippy::too_many_arguments)]
fn render_whole(
    store: &Store,
    plan: &Plan,
    inputs: &Inputs,
    metadata: &Value,
    path: &Path,
    inner_name: &str,
    limits: Limits,
    ctl: &Control,
) -> Result<Option<Rendered>, RenderError> {
    if let (Format::HaStatistics, KindPlan::DeviceData(data)) = (plan.format, &plan.kind) {
        let (mut out, _) = Output::create(path, plan.compression, inner_name)?;
        let prefix = data
            .ha_prefix
            .as_deref()
            .unwrap_or(super::format::ha_statistics::DEFAULT_PREFIX);
        let n =
            super::format::ha_statistics::write(store, plan, data, prefix, &mut out, &ctl.cancel)?;
        let sha256 = out.close()?;
        return checked(path, limits, n, sha256, json!({})).map(Some);
    }
    if let Inputs::Statement(built) = inputs {
        let (bytes, summary) = kind::statement::write(built, plan, metadata)?;
        let (mut out, _) = Output::create(path, super::Compression::None, inner_name)?;
        out.write_all(&bytes)?;
        let sha256 = out.close()?;
        let records = summary["records"].as_u64().unwrap_or(0);
        return checked(path, limits, records, sha256, summary).map(Some);
    }
    if let Inputs::Document(report) = inputs {
        let (mut out, _) = Output::create(path, plan.compression, inner_name)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let n = super::report::write(report, plan, metadata, &mut out, dir, limits)?;
        let sha256 = out.close()?;
        return checked(path, limits, n, sha256, json!({})).map(Some);
    }
    Ok(None)
}

/// The sink of the plan's format, writing into `chunks`.
fn sink_of<'a>(
    plan: &'a Plan,
    chunks: Chunks,
    path: &Path,
    metadata: &Value,
    millis: bool,
    chart: Option<super::report::Chart>,
) -> io::Result<Box<dyn Sink + 'a>> {
    let tzc = TzCache::new(plan.tz);
    Ok(match plan.format {
        Format::Csv => Box::new(CsvSink::new(
            chunks,
            plan.delimiter,
            plan.include_headers,
            tzc,
            millis,
        )),
        Format::Json => Box::new(JsonSink::new(chunks, tzc, millis)),
        Format::HaStatistics => {
            return Err(io::Error::other("ha_statistics is written on its own"));
        }
        Format::Excel => {
            let dir = path.parent().unwrap_or(Path::new("."));
            Box::new(excel::ExcelSink::new(
                chunks,
                dir,
                tzc,
                millis,
                chart,
                excel::ROWS_PER_SHEET,
            )?)
        }
        Format::Pdf => {
            let title = match plan.kind {
                KindPlan::DeviceData(_) => "Device data export",
                KindPlan::AuditLogs(_) => "Audit log export",
                _ => "Configuration export",
            };
            let generated = metadata["created_at"].as_str().unwrap_or_default();
            Box::new(pdf::PdfSink::new(
                chunks, &plan.pdf, title, generated, tzc, millis, chart,
            ))
        }
    })
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

const BATCH: usize = 2048;

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
    run: Run<'_>,
    mut fmt: Option<RowFormat>,
    tx: &std::sync::mpsc::SyncSender<store::Result<Batch>>,
) {
    let mut cells = CellMaker::new(run);
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

/// Writes the rows of `rows` to `sink` (after its `begin`), checking the limits and the
/// cancel flag and reporting progress; folds the aggregate custom fields; finishes the sink.
fn drive(
    sink: &mut dyn Sink,
    rows: &mut dyn Source,
    run: Run<'_>,
    limits: Limits,
    ctl: &Control,
    written: &AtomicU64,
) -> Result<(u64, Value), RenderError> {
    let dp = run.plan.decimal_places;
    let budget = DistinctBudget::new(limits.distinct_budget);
    let mut aggs: Vec<Aggregator> = run
        .data
        .aggregate_fields
        .iter()
        .map(|c| c.formula.aggregator_within(&budget))
        .collect();
    let mut cells = CellMaker::new(run);
    let mut tzc = TzCache::new(run.plan.tz);
    let span = (run.plan.end_ms - run.plan.start_ms).max(1) as f64;
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
            let pct = ((row.ts_ms - run.plan.start_ms) as f64 / span * 100.0).clamp(0.0, 99.0);
            ctl.progress.store(pct as u8, Ordering::Relaxed);
        }
        if !aggs.is_empty() {
            let values = formula_values(row, run);
            let ctx = row_ctx(&values, &mut tzc, row.ts_ms);
            for (a, c) in aggs.iter_mut().zip(&run.data.aggregate_fields) {
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
    for (c, a) in run.data.aggregate_fields.iter().zip(&aggs) {
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

/// The first `limit` rows of `plan`, the number of rows (counting stops after `cap`) and the
/// CSV size; stops early when `ctl.cancel` is set.
pub fn preview(
    store: &Store,
    run: Run<'_>,
    limit: usize,
    limits: Limits,
    ctl: &Control,
) -> Result<Preview, RenderError> {
    let cap = limits.max_records;
    let (plan, millis) = (run.plan, run.data.aggregation.is_none());
    let mut sink = PreviewSink::new(plan.tz, millis, plan.delimiter, plan.include_headers, limit);
    let mut rows = Plain {
        rows: Rows::open(store, run, &ctl.cancel)?,
        current: None,
    };
    sink.begin(&kind::columns(plan), &Value::Null)?;
    let counted = drive(&mut sink, &mut rows, run, limits, ctl, &AtomicU64::new(0));
    let (total, capped, summary) = match counted {
        Ok((n, s)) => (n, false, s),
        Err(RenderError::TooManyRecords(_)) => (cap, true, Value::Null),
        Err(e) => return Err(e),
    };
    let csv_bytes = sink.csv_bytes();
    let rows = sink.into_rows()?;
    Ok(Preview {
        rows,
        total,
        capped,
        csv_bytes,
        summary,
    })
}
