//! A preview: the first rows of an export as JSON objects, how many rows it holds (counting
//! stops at the cap), and the size its CSV would have — without writing a file.

use super::{Cell, CsvSink, JsonSink, Sink};
use crate::localtime::TzCache;
use chrono_tz::Tz;
use serde_json::Value;
use std::io::{self, Write};

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
pub struct PreviewSink {
    json: JsonSink<Vec<u8>>,
    csv: CsvSink<ByteCount>,
    limit: usize,
    n: usize,
    /// Bytes and number of the rows sized after the first [`SIZED_EXACTLY`].
    sampled: (u64, u64),
}

impl PreviewSink {
    /// A preview of the first `limit` rows, sized as a CSV with `delimiter` and `headers`.
    pub fn new(tz: Tz, millis: bool, delimiter: u8, headers: bool, limit: usize) -> Self {
        Self {
            json: JsonSink::new(Vec::new(), TzCache::new(tz), millis),
            csv: CsvSink::new(ByteCount(0), delimiter, headers, TzCache::new(tz), millis),
            limit,
            n: 0,
            sampled: (0, 0),
        }
    }

    /// The kept rows as JSON objects.
    pub fn into_rows(self) -> io::Result<Vec<Value>> {
        let doc: Value =
            serde_json::from_slice(&self.json.into_inner()).map_err(io::Error::other)?;
        Ok(match doc.get("data") {
            Some(Value::Array(a)) => a.clone(),
            _ => Vec::new(),
        })
    }

    /// The CSV's size: exact up to [`SIZED_EXACTLY`] rows, estimated past them.
    pub fn csv_bytes(&self) -> u64 {
        let (bytes, rows) = self.sampled;
        let exact = self.csv.get_ref().0 - bytes;
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
            let before = self.csv.get_ref().0;
            self.csv.row(cells)?;
            self.sampled.0 += self.csv.get_ref().0 - before;
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
