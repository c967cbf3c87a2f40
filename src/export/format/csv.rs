//! CSV (RFC 4180) with CRLF line ends and an optional header row. Text a spreadsheet would run
//! as a formula gets a leading `'`.

use super::{Cell, Labels, RowFormat, Sink};
use crate::localtime::TzCache;
use crate::numfmt::push_num;
use serde_json::Value;
use std::io::{self, Write};

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

    pub(super) fn row(&mut self, cells: &[Cell<'_>], out: &mut Vec<u8>) {
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

    /// The writer inside, by reference.
    pub fn get_ref(&self) -> &W {
        &self.out
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
