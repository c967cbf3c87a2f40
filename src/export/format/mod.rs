//! The output formats. Every format is a [`Sink`]: `begin` with the columns and metadata,
//! then rows of [`Cell`]s, then `finish`. CSV and JSON can also format rows on the reader
//! threads ([`RowFormat`]); Excel and PDF sum the energy and cost columns ([`Totals`]).
//!
//! - [`csv`], [`json`]: the text formats.
//! - [`excel`]: .xlsx in constant memory; [`pdf`]: title block, paged table, summary, charts.
//! - [`preview`]: the first rows as JSON and the CSV's size, without a file.

use crate::numfmt::round_to;
use serde_json::Value;
use std::io;

pub mod csv;
pub mod excel;
pub mod ha_statistics;
pub mod json;
pub mod pdf;
pub mod preview;

pub use csv::{CsvRow, CsvSink};
pub use json::{JsonRow, JsonSink};

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
