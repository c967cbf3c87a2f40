//! The Excel (.xlsx) writer: rows go to constant-memory worksheets (rust_xlsxwriter flushes
//! each finished row to a temp file in the export directory, so memory stays flat whatever the
//! row count); typed cells (numbers, booleans, date-times in the export's zone); a frozen,
//! filterable header row; past [`ROWS_PER_SHEET`] data rows the data continues on "Data 2",
//! "Data 3", …; then a "Summary" sheet (range, zone, record count, totals, custom aggregate
//! fields), a "Devices" sheet, and with `include_charts` a "Charts" sheet holding daily energy
//! per device (from the rollups, not from the raw rows) and a native column chart over it.
//! A system report ([`write_report`]) is a small workbook: a sheet per table and per chart.

use super::{Cell, Sink, Totals};
use crate::export::report::{self, Chart, ChartKind, Report, V};
use crate::localtime::TzCache;
use crate::numfmt::round_to;
use rust_xlsxwriter::{ChartType, Format, Workbook, Worksheet, XlsxError};
use serde_json::Value;
use std::io::{self, Write};
use std::path::Path;

/// Data rows per worksheet: Excel's 1,048,576 rows less the header.
pub const ROWS_PER_SHEET: u32 = 1_048_575;

/// Days from Excel's epoch (1899-12-30) to 1970-01-01.
const EXCEL_EPOCH_DAYS: f64 = 25_569.0;

fn xlsx(e: XlsxError) -> io::Error {
    io::Error::other(format!("Excel writer: {e}"))
}

/// Writes a workbook to `out` when finished.
pub struct ExcelSink<W: Write + Send> {
    out: Option<W>,
    book: Workbook,
    /// Index of the data sheet being written, and how many there are.
    sheet: usize,
    sheets: usize,
    /// Next row on the current sheet (1 = first data row).
    row: u32,
    rows_per_sheet: u32,
    columns: Vec<String>,
    totals: Totals,
    metadata: Value,
    header: Format,
    date: Format,
    tzc: TzCache,
    chart: Option<Chart>,
}

impl<W: Write + Send> ExcelSink<W> {
    /// A workbook whose worksheets keep their rows in temp files under `temp_dir`, written to
    /// `out` at the end; `rows_per_sheet` is [`ROWS_PER_SHEET`] but for tests.
    pub fn new(
        out: W,
        temp_dir: &Path,
        tzc: TzCache,
        millis: bool,
        chart: Option<Chart>,
        rows_per_sheet: u32,
    ) -> io::Result<Self> {
        let mut book = Workbook::new();
        book.set_tempdir(temp_dir).map_err(xlsx)?;
        // Level 1: the data compresses almost as well and the file is written far faster.
        book.set_zip_compression_level(1);
        let date = if millis {
            "yyyy-mm-dd hh:mm:ss.000"
        } else {
            "yyyy-mm-dd hh:mm"
        };
        Ok(Self {
            out: Some(out),
            book,
            sheet: 0,
            sheets: 0,
            row: 1,
            rows_per_sheet: rows_per_sheet.max(1),
            columns: Vec::new(),
            totals: Totals::default(),
            metadata: Value::Null,
            header: Format::new().set_bold(),
            date: Format::new().set_num_format(date),
            tzc,
            chart,
        })
    }

    /// The current data sheet.
    fn data(&mut self) -> io::Result<&mut Worksheet> {
        self.book.worksheet_from_index(self.sheet).map_err(xlsx)
    }

    /// Starts data sheet number `self.sheets + 1` with its header row.
    fn new_data_sheet(&mut self) -> io::Result<()> {
        let name = match self.sheets {
            0 => "Data".to_owned(),
            n => format!("Data {}", n + 1),
        };
        let ws = self
            .book
            .add_worksheet_with_constant_memory()
            .map_err(xlsx)?;
        ws.set_name(&name).map_err(xlsx)?;
        for (c, title) in self.columns.iter().enumerate() {
            let c = c as u16;
            ws.write_string_with_format(0, c, title, &self.header)
                .map_err(xlsx)?;
            let width = if title == "timestamp" { 20 } else { 14 };
            ws.set_column_width(c, width.max(title.len() + 2) as f64)
                .map_err(xlsx)?;
        }
        ws.set_freeze_panes(1, 0).map_err(xlsx)?;
        self.sheet = self.book.worksheets().len() - 1;
        self.sheets += 1;
        self.row = 1;
        Ok(())
    }

    /// Adds the autofilter over the finished data sheet.
    fn close_data_sheet(&mut self) -> io::Result<()> {
        let (last_row, last_col) = (self.row - 1, self.columns.len().max(1) as u16 - 1);
        self.data()?
            .autofilter(0, 0, last_row, last_col)
            .map_err(xlsx)?;
        Ok(())
    }

    fn summary_sheet(&mut self, record_count: u64, summary: &Value) -> io::Result<()> {
        let m = &self.metadata;
        let mut lines: Vec<(String, Value)> = vec![
            ("Export".into(), m["export_id"].clone()),
            ("Created".into(), m["created_at"].clone()),
            ("From".into(), m["date_range"]["start"].clone()),
            ("To".into(), m["date_range"]["end"].clone()),
            ("Time zone".into(), m["timezone"].clone()),
            ("Aggregation".into(), m["aggregation"].clone()),
            ("Records".into(), Value::from(record_count)),
            (
                "Devices".into(),
                Value::from(m["devices"].as_array().map_or(0, Vec::len)),
            ),
            ("Data sheets".into(), Value::from(self.sheets)),
        ];
        for &(c, sum) in self.totals.sums() {
            lines.push((
                format!("Total {}", self.columns[c]),
                round_to(sum, 6).into(),
            ));
        }
        if let Value::Object(fields) = summary {
            for (name, v) in fields {
                lines.push((name.clone(), v["value"].clone()));
            }
        }
        let bold = self.header.clone();
        let ws = self.book.add_worksheet();
        ws.set_name("Summary").map_err(xlsx)?;
        ws.set_column_width(0, 22).map_err(xlsx)?;
        ws.set_column_width(1, 28).map_err(xlsx)?;
        for (r, (k, v)) in lines.iter().enumerate() {
            let r = r as u32;
            ws.write_string_with_format(r, 0, k, &bold).map_err(xlsx)?;
            match v {
                Value::Number(n) => ws.write_number(r, 1, n.as_f64().unwrap_or(f64::NAN)),
                Value::Null => continue,
                v => ws.write_string(r, 1, text_of(v)),
            }
            .map_err(xlsx)?;
        }
        Ok(())
    }

    fn devices_sheet(&mut self) -> io::Result<()> {
        let devices = self.metadata["devices"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let keys = [
            "device_id",
            "device_ip",
            "device_name",
            "model",
            "rated_power",
        ];
        let bold = self.header.clone();
        let ws = self.book.add_worksheet();
        ws.set_name("Devices").map_err(xlsx)?;
        for (c, k) in keys.iter().enumerate() {
            ws.write_string_with_format(0, c as u16, *k, &bold)
                .map_err(xlsx)?;
            ws.set_column_width(c as u16, 18).map_err(xlsx)?;
        }
        for (r, d) in devices.iter().enumerate() {
            for (c, k) in keys.iter().enumerate() {
                let (r, c) = (r as u32 + 1, c as u16);
                match &d[*k] {
                    Value::Number(n) => ws.write_number(r, c, n.as_f64().unwrap_or(f64::NAN)),
                    Value::String(s) => ws.write_string(r, c, s),
                    _ => continue,
                }
                .map_err(xlsx)?;
            }
        }
        Ok(())
    }
}

/// Adds sheet `name` holding the chart's data (labels in column A, one series per column)
/// and a native chart over those cells.
fn chart_sheet(
    book: &mut Workbook,
    name: &str,
    c: &Chart,
    tzc: &mut TzCache,
    bold: &Format,
) -> io::Result<()> {
    let day = Format::new().set_num_format("yyyy-mm-dd");
    let ws = book.add_worksheet();
    ws.set_name(name).map_err(xlsx)?;
    ws.write_string_with_format(0, 0, c.label_name, bold)
        .map_err(xlsx)?;
    ws.set_column_width(0, 12).map_err(xlsx)?;
    for (i, l) in c.labels.iter().enumerate() {
        let r = i as u32 + 1;
        match l {
            V::Time(t) => ws.write_number_with_format(r, 0, excel_time(tzc, *t), &day),
            l => ws.write_string(r, 0, report::text(l, tzc)),
        }
        .map_err(xlsx)?;
    }
    for (d, (series, values)) in c.series.iter().enumerate() {
        let col = d as u16 + 1;
        ws.write_string_with_format(0, col, series, bold)
            .map_err(xlsx)?;
        // No value (NaN): an empty cell, a gap in the chart.
        for (i, v) in values.iter().enumerate().filter(|(_, v)| v.is_finite()) {
            ws.write_number(i as u32 + 1, col, *v).map_err(xlsx)?;
        }
    }
    if c.series.is_empty() {
        return Ok(());
    }
    let mut chart = rust_xlsxwriter::Chart::new(match c.kind {
        ChartKind::StackedBars => ChartType::ColumnStacked,
        ChartKind::Lines => ChartType::Line,
    });
    chart.title().set_name(&c.title);
    chart.y_axis().set_name(c.unit);
    let last = c.labels.len().max(1) as u32;
    for d in 0..c.series.len() {
        let col = d as u16 + 1;
        chart
            .add_series()
            .set_name((name, 0, col))
            .set_categories((name, 1, 0, last, 0))
            .set_values((name, 1, col, last, col));
    }
    chart.set_width(900).set_height(480);
    ws.insert_chart(1, c.series.len() as u16 + 2, &chart)
        .map_err(xlsx)?;
    Ok(())
}

/// Writes a system report workbook: a "Report" sheet (range, zone, sections, price), one
/// sheet per table (typed cells, units in the headers, frozen and filterable header row),
/// and one sheet per chart with its data and a native chart.
pub fn write_report<W: Write + Send>(
    mut out: W,
    temp_dir: &Path,
    mut tzc: TzCache,
    metadata: &Value,
    report: &Report,
) -> io::Result<()> {
    let mut book = Workbook::new();
    book.set_tempdir(temp_dir).map_err(xlsx)?;
    let bold = Format::new().set_bold();
    let time = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    let m = metadata;
    let sections: Vec<&str> = report.parts.iter().map(|p| p.name).collect();
    let info = [
        ("Report", report.title.clone()),
        ("Export", text_of(&m["export_id"])),
        ("Created", text_of(&m["created_at"])),
        ("From", text_of(&m["date_range"]["start"])),
        ("To", text_of(&m["date_range"]["end"])),
        ("Time zone", text_of(&m["timezone"])),
        ("Sections", sections.join(", ")),
        ("Currency", text_of(&m["currency"])),
        ("Price per kWh", text_of(&m["price_per_kwh"])),
        ("Tariff", text_of(&m["tariff"])),
    ];
    let ws = book.add_worksheet();
    ws.set_name("Report").map_err(xlsx)?;
    ws.set_column_width(0, 18).map_err(xlsx)?;
    ws.set_column_width(1, 40).map_err(xlsx)?;
    for (r, (k, v)) in info.iter().enumerate() {
        ws.write_string_with_format(r as u32, 0, *k, &bold)
            .map_err(xlsx)?;
        ws.write_string(r as u32, 1, v).map_err(xlsx)?;
    }
    let mut names: Vec<String> = Vec::new();
    let mut unique = |title: &str| {
        // Sheet names: at most 31 characters, none of []:*?/\, unique.
        let base: String = title
            .chars()
            .filter(|c| !"[]:*?/\\".contains(*c))
            .take(28)
            .collect();
        let mut name = base.clone();
        let mut k = 2;
        while names.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
            name = format!("{base} {k}");
            k += 1;
        }
        names.push(name.clone());
        name
    };
    for part in &report.parts {
        for t in &part.tables {
            let ws = book.add_worksheet();
            ws.set_name(unique(&t.title)).map_err(xlsx)?;
            let mut header: Vec<String> = [t.item, t.period]
                .into_iter()
                .flatten()
                .map(str::to_owned)
                .collect();
            let keys = header.len() as u16;
            header.extend((0..t.columns.len()).map(|c| t.header(c)));
            for (c, h) in header.iter().enumerate() {
                ws.write_string_with_format(0, c as u16, h, &bold)
                    .map_err(xlsx)?;
                ws.set_column_width(c as u16, (h.len() + 2).max(12) as f64)
                    .map_err(xlsx)?;
            }
            for (r, line) in t.rows.iter().enumerate() {
                let r = r as u32 + 1;
                let mut c = 0;
                for (shown, s) in [(t.item, &line.item), (t.period, &line.period)] {
                    if shown.is_some() {
                        ws.write_string(r, c, cell_text(s)).map_err(xlsx)?;
                        c += 1;
                    }
                }
                for (k, v) in line.values.iter().enumerate() {
                    let c = keys + k as u16;
                    match v {
                        V::Null => continue,
                        V::Text(s) => ws.write_string(r, c, cell_text(s)),
                        V::Num(x, _) if !x.is_finite() => continue,
                        V::Num(x, d) => ws.write_number(r, c, round_to(*x, *d)),
                        V::Time(t) => {
                            ws.write_number_with_format(r, c, excel_time(&mut tzc, *t), &time)
                        }
                    }
                    .map_err(xlsx)?;
                }
            }
            ws.set_freeze_panes(1, 0).map_err(xlsx)?;
            let last = (header.len().max(1) - 1) as u16;
            ws.autofilter(0, 0, t.rows.len() as u32, last)
                .map_err(xlsx)?;
        }
        for c in &part.charts {
            let name = unique(&format!(
                "Chart {}",
                c.title.split(" (").next().unwrap_or("")
            ));
            chart_sheet(&mut book, &name, c, &mut tzc, &bold)?;
        }
    }
    book.worksheet_from_index(0).map_err(xlsx)?.set_active(true);
    book.save_to_writer(&mut out).map_err(xlsx)?;
    out.flush()
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// Excel holds at most 32,767 characters (UTF-16 units) in a cell; longer text is cut there
/// with a visible marker instead of failing the export.
fn cell_text(s: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 32_767;
    // UTF-8 is never shorter than UTF-16 in units: short text needs no count.
    if s.len() <= MAX || s.encode_utf16().count() <= MAX {
        return s.into();
    }
    let marker = "… [cut: Excel cells hold 32,767 characters]";
    let mut n = 0;
    let keep: String = s
        .chars()
        .take_while(|c| {
            n += c.len_utf16();
            n <= MAX - marker.encode_utf16().count()
        })
        .collect();
    (keep + marker).into()
}

/// `ts_ms` as an Excel serial date-time in local time.
fn excel_time(tzc: &mut TzCache, ts_ms: i64) -> f64 {
    (ts_ms + tzc.offset(ts_ms)) as f64 / 86_400_000.0 + EXCEL_EPOCH_DAYS
}

impl<W: Write + Send> Sink for ExcelSink<W> {
    fn begin(&mut self, columns: &[String], metadata: &Value) -> io::Result<()> {
        self.columns = columns.to_vec();
        self.metadata = metadata.clone();
        self.totals = Totals::of(columns);
        self.new_data_sheet()
    }

    fn row(&mut self, cells: &[Cell<'_>]) -> io::Result<()> {
        if self.row > self.rows_per_sheet {
            self.close_data_sheet()?;
            self.new_data_sheet()?;
        }
        let r = self.row;
        self.totals.add(cells);
        let ws = self.book.worksheet_from_index(self.sheet).map_err(xlsx)?;
        for (c, cell) in cells.iter().enumerate() {
            let c = c as u16;
            match *cell {
                Cell::Null => continue,
                Cell::Text(s) | Cell::Label(s, _) => ws.write_string(r, c, cell_text(s)),
                Cell::Time(t) => {
                    ws.write_number_with_format(r, c, excel_time(&mut self.tzc, t), &self.date)
                }
                Cell::Num(x, _) if !x.is_finite() => continue,
                Cell::Num(x, d) => ws.write_number(r, c, round_to(x, d)),
                Cell::Bool(b) => ws.write_boolean(r, c, b),
            }
            .map_err(xlsx)?;
        }
        self.row += 1;
        Ok(())
    }

    fn finish(&mut self, record_count: u64, summary: &Value) -> io::Result<()> {
        self.close_data_sheet()?;
        self.summary_sheet(record_count, summary)?;
        self.devices_sheet()?;
        if let Some(c) = self.chart.take() {
            let bold = self.header.clone();
            chart_sheet(&mut self.book, "Charts", &c, &mut self.tzc, &bold)?;
        }
        self.book
            .worksheet_from_index(0)
            .map_err(xlsx)?
            .set_active(true);
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("the workbook was already written"))?;
        self.book.save_to_writer(&mut out).map_err(xlsx)?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_longer_than_a_cell_holds_is_cut_with_a_marker() {
        let long = "é".repeat(40_000);
        let cut = super::cell_text(&long);
        assert_eq!(cut.encode_utf16().count(), 32_767);
        assert!(cut.ends_with("[cut: Excel cells hold 32,767 characters]"));
        assert_eq!(super::cell_text("short"), "short");
    }
}
