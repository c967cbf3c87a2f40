//! JSON: `{"metadata":{…},"data":[{…},…],"record_count":N,"summary":{…}}`, streamed row by row.

use super::{Cell, Labels, RowFormat, Sink};
use crate::localtime::TzCache;
use crate::numfmt::push_num;
use serde_json::Value;
use std::io::{self, Write};
use std::sync::Arc;

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
    pub(super) fn row(&mut self, cells: &[Cell<'_>], out: &mut Vec<u8>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
