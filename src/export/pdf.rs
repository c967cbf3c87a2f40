//! The PDF writer (printpdf's op API, no HTML layout): landscape A4 or Letter pages with a
//! title block (title, range, time zone, devices, generated-at), a table that breaks across
//! pages with its header repeated, numbers right-aligned, a summary (record count, totals,
//! custom aggregates), with `include_charts` a vector bar chart of daily energy per device
//! (from the rollups), and "page N of M" with the generation time in every footer.
//!
//! Text: the configured TrueType fonts are embedded (subset) and tried in order for each
//! character; a character none of them has uses the built-in Helvetica when WinAnsi can encode
//! it, and otherwise appears as `<U+XXXX>` — never dropped silently. A PDF is built in memory,
//! so PDF exports hold at most [`MAX_ROWS`] rows (about 450 pages): reports, not dumps.

use super::excel::DailyEnergy;
use super::localtime::TzCache;
use super::render::{Cell, Sink, Totals, push_num};
use printpdf::{
    BuiltinFont, Color, Line, LinePoint, Op, PaintMode, ParsedFont, PdfDocument, PdfFontHandle,
    PdfPage, PdfSaveOptions, Point, Pt, Rect, Rgb, TextItem,
};
use serde_json::Value;
use std::io::{self, Write};
use std::path::PathBuf;

/// Most rows of a PDF export.
pub const MAX_ROWS: u64 = 20_000;

const MARGIN: f32 = 36.0;
const ROW_H: f32 = 11.0;
const TEXT: f32 = 7.5;
const FOOTER: f32 = 24.0;

/// Page size and fonts (from `[exports]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Style {
    /// Letter instead of A4.
    pub letter: bool,
    /// TrueType fonts to embed, tried in order.
    pub fonts: Vec<PathBuf>,
}

struct Font {
    handle: PdfFontHandle,
    parsed: Option<ParsedFont>,
    builtin: bool,
}

/// The font chain: embedded fonts, then the built-in Helvetica.
struct Fonts {
    list: Vec<Font>,
}

/// Whether WinAnsi (the built-in fonts' encoding) has `c`.
fn winansi(c: char) -> bool {
    matches!(c, ' '..='~' | '\u{a0}'..='\u{ff}') || "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ".contains(c)
}

impl Fonts {
    fn load(paths: &[PathBuf], doc: &mut PdfDocument) -> Self {
        let mut list = Vec::new();
        for p in paths {
            let Ok(bytes) = std::fs::read(p) else {
                continue;
            };
            let Some(parsed) = ParsedFont::from_bytes(&bytes, 0, &mut Vec::new()) else {
                tracing::warn!(font = %p.display(), "not a usable TrueType font; skipped");
                continue;
            };
            let id = doc.add_font(&parsed);
            list.push(Font {
                handle: PdfFontHandle::External(id),
                parsed: Some(parsed),
                builtin: false,
            });
        }
        list.push(Font {
            handle: PdfFontHandle::Builtin(BuiltinFont::Helvetica),
            parsed: BuiltinFont::Helvetica.get_parsed_font(),
            builtin: true,
        });
        Self { list }
    }

    /// The font that shows `c`, if any.
    fn font_of(&self, c: char) -> Option<usize> {
        self.list.iter().position(|f| {
            if f.builtin {
                winansi(c)
            } else {
                f.parsed
                    .as_ref()
                    .is_some_and(|p| p.lookup_glyph_index(c as u32).is_some())
            }
        })
    }

    /// `text` as runs of one font each; characters no font has become `<U+XXXX>`.
    fn runs(&self, text: &str) -> Vec<(usize, String)> {
        let last = self.list.len() - 1;
        let mut runs: Vec<(usize, String)> = Vec::new();
        for c in text.chars() {
            let (f, piece) = match self.font_of(c) {
                Some(f) => (f, c.to_string()),
                None => (last, format!("<U+{:04X}>", c as u32)),
            };
            match runs.last_mut() {
                Some((g, s)) if *g == f => s.push_str(&piece),
                _ => runs.push((f, piece)),
            }
        }
        runs
    }

    fn run_width(&self, f: usize, s: &str, size: f32) -> f32 {
        let Some(p) = &self.list[f].parsed else {
            return s.chars().count() as f32 * size * 0.55;
        };
        let em = f32::from(p.units_per_em.max(1));
        s.chars()
            .map(|c| {
                p.lookup_glyph_index(c as u32)
                    .and_then(|g| p.get_glyph_width(g))
                    .map_or(size * 0.55, |w| f32::from(w) / em * size)
            })
            .sum()
    }

    /// Width of `text` at `size`, pt.
    fn width(&self, text: &str, size: f32) -> f32 {
        self.runs(text)
            .iter()
            .map(|(f, s)| self.run_width(*f, s, size))
            .sum()
    }

    /// Ops that show `text` with its left end at (x, y).
    fn text(&self, ops: &mut Vec<Op>, text: &str, x: f32, y: f32, size: f32) {
        ops.push(Op::StartTextSection);
        ops.push(Op::SetTextCursor {
            pos: Point { x: Pt(x), y: Pt(y) },
        });
        for (f, s) in self.runs(text) {
            ops.push(Op::SetFont {
                font: self.list[f].handle.clone(),
                size: Pt(size),
            });
            ops.push(Op::ShowText {
                items: vec![TextItem::Text(s)],
            });
        }
        ops.push(Op::EndTextSection);
    }
}

fn gray(v: f32) -> Color {
    Color::Rgb(Rgb::new(v, v, v, None))
}

fn rect(ops: &mut Vec<Op>, x: f32, y: f32, w: f32, h: f32, col: Color) {
    ops.push(Op::SetFillColor { col });
    ops.push(Op::DrawRectangle {
        rectangle: Rect {
            x: Pt(x),
            y: Pt(y),
            width: Pt(w),
            height: Pt(h),
            mode: Some(PaintMode::Fill),
            winding_order: None,
        },
    });
    ops.push(Op::SetFillColor { col: gray(0.0) });
}

fn line(ops: &mut Vec<Op>, points: &[(f32, f32)], width: f32) {
    ops.push(Op::SetOutlineThickness { pt: Pt(width) });
    ops.push(Op::DrawLine {
        line: Line {
            points: points
                .iter()
                .map(|&(x, y)| LinePoint {
                    p: Point { x: Pt(x), y: Pt(y) },
                    bezier: false,
                })
                .collect(),
            is_closed: false,
        },
    });
}

/// Device colours for charts.
const PALETTE: [(f32, f32, f32); 8] = [
    (0.12, 0.47, 0.71),
    (1.0, 0.5, 0.05),
    (0.17, 0.63, 0.17),
    (0.84, 0.15, 0.16),
    (0.58, 0.4, 0.74),
    (0.55, 0.34, 0.29),
    (0.89, 0.47, 0.76),
    (0.5, 0.5, 0.5),
];

/// Writes a PDF document to `out` when finished.
pub struct PdfSink<W: Write> {
    out: Option<W>,
    doc: PdfDocument,
    fonts: Fonts,
    width: f32,
    height: f32,
    title: String,
    generated: String,
    columns: Vec<String>,
    /// Left edge and width of each column.
    cols: Vec<(f32, f32)>,
    numeric: Vec<bool>,
    metadata: Value,
    pages: Vec<Vec<Op>>,
    ops: Vec<Op>,
    y: f32,
    tzc: TzCache,
    millis: bool,
    totals: Totals,
    chart: Option<DailyEnergy>,
    buf: Vec<u8>,
}

impl<W: Write> PdfSink<W> {
    /// A PDF titled `title`, generated at `generated` (text for the footers).
    pub fn new(
        out: W,
        style: &Style,
        title: &str,
        generated: &str,
        tzc: TzCache,
        millis: bool,
        chart: Option<DailyEnergy>,
    ) -> Self {
        let mut doc = PdfDocument::new(title);
        let fonts = Fonts::load(&style.fonts, &mut doc);
        // Landscape: tables are wide.
        let (width, height) = if style.letter {
            (792.0, 612.0)
        } else {
            (841.89, 595.28)
        };
        Self {
            out: Some(out),
            doc,
            fonts,
            width,
            height,
            title: title.to_owned(),
            generated: generated.to_owned(),
            columns: Vec::new(),
            cols: Vec::new(),
            numeric: Vec::new(),
            metadata: Value::Null,
            pages: Vec::new(),
            ops: Vec::new(),
            y: 0.0,
            tzc,
            millis,
            totals: Totals::default(),
            chart,
            buf: Vec::new(),
        }
    }

    fn new_page(&mut self) {
        if !self.ops.is_empty() {
            self.pages.push(std::mem::take(&mut self.ops));
        }
        self.y = self.height - MARGIN;
    }

    fn bottom(&self) -> f32 {
        MARGIN + FOOTER
    }

    /// Room for `h` more points on this page, else a new page (with the table header when
    /// `header`).
    fn room(&mut self, h: f32, header: bool) {
        if self.y - h < self.bottom() {
            self.new_page();
            if header {
                self.table_header();
            }
        }
    }

    fn say(&mut self, text: &str, size: f32) {
        self.room(size * 1.5, false);
        self.y -= size * 1.4;
        self.fonts.text(&mut self.ops, text, MARGIN, self.y, size);
    }

    fn table_header(&mut self) {
        let w = self.width - 2.0 * MARGIN;
        rect(&mut self.ops, MARGIN, self.y - ROW_H, w, ROW_H, gray(0.85));
        let cells: Vec<String> = self.columns.clone();
        let right = self.numeric.clone();
        self.y -= ROW_H;
        self.cells(
            &cells.iter().map(String::as_str).collect::<Vec<_>>(),
            &right,
        );
    }

    /// `text`, cut to fit `width` (with "…") when it is wider, and its width.
    fn fit(&self, text: &str, width: f32) -> (String, f32) {
        let full = self.fonts.width(text, TEXT);
        if full <= width {
            return (text.to_owned(), full);
        }
        let ellipsis = self.fonts.width("…", TEXT);
        let mut used = 0.0;
        let mut cut = String::new();
        for c in text.chars() {
            let mut b = [0; 4];
            let w = self.fonts.width(c.encode_utf8(&mut b), TEXT);
            if used + w > width - ellipsis {
                break;
            }
            used += w;
            cut.push(c);
        }
        (cut + "…", used + ellipsis)
    }

    /// One table line of texts at the current `y` (baseline a little above it); `right[i]`
    /// right-aligns cell `i`. Texts wider than their column are cut.
    fn cells(&mut self, texts: &[&str], right: &[bool]) {
        for (i, t) in texts.iter().enumerate() {
            let (x, w) = self.cols[i];
            let (t, tw) = self.fit(t, w - 4.0);
            let left = if right[i] { x + w - 3.0 - tw } else { x + 2.0 };
            self.fonts.text(&mut self.ops, &t, left, self.y + 3.0, TEXT);
        }
    }

    fn summary(&mut self, record_count: u64, summary: &Value) {
        self.room(40.0, false);
        self.y -= 10.0;
        self.say("Summary", 12.0);
        self.say(&format!("Records: {record_count}"), 9.0);
        for (c, sum) in self.totals.sums().to_vec() {
            let mut b = Vec::new();
            push_num(&mut b, sum, 6);
            let name = self.columns[c].clone();
            self.say(
                &format!("Total {name}: {}", String::from_utf8_lossy(&b)),
                9.0,
            );
        }
        if let Value::Object(fields) = summary {
            for (name, v) in fields {
                let unit = v["unit"].as_str().unwrap_or_default();
                self.say(&format!("{name}: {} {unit}", v["value"]), 9.0);
            }
        }
    }

    fn chart_page(&mut self, e: &DailyEnergy) {
        self.new_page();
        self.say("Daily energy per device (kWh)", 14.0);
        let (x0, y0) = (MARGIN + 40.0, self.bottom() + 60.0);
        let (w, h) = (self.width - 2.0 * MARGIN - 60.0, self.y - y0 - 20.0);
        let days = e.days.len().max(1);
        let totals: Vec<f64> = (0..e.days.len())
            .map(|i| e.kwh.iter().map(|d| d[i].max(0.0)).sum())
            .collect();
        let top = totals.iter().copied().fold(0.0, f64::max).max(1e-9) * 1.1;
        // Axes and five gridlines with their values.
        self.ops.push(Op::SetOutlineColor { col: gray(0.6) });
        for k in 0..=5 {
            let v = top * f64::from(k) / 5.0;
            let y = y0 + h * k as f32 / 5.0;
            line(&mut self.ops, &[(x0, y), (x0 + w, y)], 0.3);
            let mut b = Vec::new();
            push_num(&mut b, v, 2);
            let t = String::from_utf8_lossy(&b).into_owned();
            let tw = self.fonts.width(&t, TEXT);
            self.fonts
                .text(&mut self.ops, &t, x0 - 4.0 - tw, y - 2.5, TEXT);
        }
        self.ops.push(Op::SetOutlineColor { col: gray(0.0) });
        line(&mut self.ops, &[(x0, y0 + h), (x0, y0), (x0 + w, y0)], 0.8);
        let slot = w / days as f32;
        let bar = slot * 0.7;
        let mut tzc = self.tzc.clone();
        let label_every = (days / 16).max(1);
        for (i, &t) in e.days.iter().enumerate() {
            let x = x0 + slot * i as f32 + (slot - bar) / 2.0;
            let mut base = 0.0;
            for (d, series) in e.kwh.iter().enumerate() {
                let v = series[i].max(0.0);
                let bh = (v / top) as f32 * h;
                let (r, g, b) = PALETTE[d % PALETTE.len()];
                rect(
                    &mut self.ops,
                    x,
                    y0 + base,
                    bar,
                    bh,
                    Color::Rgb(Rgb::new(r, g, b, None)),
                );
                base += bh;
            }
            if i % label_every == 0 {
                self.buf.clear();
                tzc.push_rfc3339(&mut self.buf, t, false);
                let day = String::from_utf8_lossy(&self.buf[..10.min(self.buf.len())]).into_owned();
                let label = day.get(5..).unwrap_or_default();
                self.fonts.text(&mut self.ops, label, x, y0 - 10.0, TEXT);
            }
        }
        // Legend.
        let mut lx = x0;
        for (d, name) in e.devices.iter().enumerate() {
            let (r, g, b) = PALETTE[d % PALETTE.len()];
            rect(
                &mut self.ops,
                lx,
                y0 - 30.0,
                8.0,
                8.0,
                Color::Rgb(Rgb::new(r, g, b, None)),
            );
            self.fonts
                .text(&mut self.ops, name, lx + 11.0, y0 - 29.0, 8.0);
            lx += 20.0 + self.fonts.width(name, 8.0);
        }
    }
}

impl<W: Write> Sink for PdfSink<W> {
    fn begin(&mut self, columns: &[String], metadata: &Value) -> io::Result<()> {
        self.columns = columns.to_vec();
        self.metadata = metadata.clone();
        // Header alignment: over the numbers (rows align by cell type).
        self.numeric = columns
            .iter()
            .map(|c| {
                super::request::VALUE_FIELDS
                    .iter()
                    .any(|f| f.0 == c && c != "is_on")
                    || matches!(c.as_str(), "seq" | "ts_ms" | "user_id")
            })
            .collect();
        self.totals = Totals::of(columns);
        // Column widths by kind, scaled to the page.
        let want: Vec<f32> = columns
            .iter()
            .map(|c| match c.as_str() {
                "timestamp" => 120.0,
                "device_name" | "item" => 110.0,
                "event_type" => 100.0,
                "resource" => 90.0,
                "device_id" | "device_ip" => 80.0,
                "username" | "client" => 60.0,
                "details" => 120.0,
                "value" => 170.0,
                "key" => 150.0,
                "severity" => 50.0,
                "prev" | "mac" | "chain" | "is_on" | "user_id" => 38.0,
                "seq" => 30.0,
                _ => 58.0,
            })
            .collect();
        let usable = self.width - 2.0 * MARGIN;
        let scale = (usable / want.iter().sum::<f32>()).min(1.6);
        let mut x = MARGIN;
        self.cols = want
            .iter()
            .map(|w| {
                let c = (x, w * scale);
                x += w * scale;
                c
            })
            .collect();
        self.new_page();
        let title = self.title.clone();
        self.say(&title, 16.0);
        let m = &self.metadata;
        let mut lines = vec![
            format!(
                "From {} to {} ({})",
                m["date_range"]["start"].as_str().unwrap_or_default(),
                m["date_range"]["end"].as_str().unwrap_or_default(),
                m["timezone"].as_str().unwrap_or_default()
            ),
            format!(
                "Aggregation: {}",
                m["aggregation"].as_str().unwrap_or("raw")
            ),
        ];
        let names: Vec<&str> = m["devices"]
            .as_array()
            .map(|d| d.iter().filter_map(|x| x["device_name"].as_str()).collect())
            .unwrap_or_default();
        if !names.is_empty() {
            lines.push(format!("Devices: {}", names.join(", ")));
        }
        lines.push(format!("Generated {}", self.generated));
        for l in lines {
            self.say(&l, 9.0);
        }
        self.y -= 8.0;
        self.room(ROW_H * 3.0, false);
        self.table_header();
        Ok(())
    }

    fn row(&mut self, cells: &[Cell<'_>]) -> io::Result<()> {
        self.room(ROW_H, true);
        self.y -= ROW_H;
        self.totals.add(cells);
        let mut texts = Vec::with_capacity(cells.len());
        for c in cells {
            self.buf.clear();
            match *c {
                Cell::Null => {}
                Cell::Text(s) | Cell::Label(s, _) => self.buf.extend_from_slice(s.as_bytes()),
                Cell::Time(t) => self.tzc.push_rfc3339(&mut self.buf, t, self.millis),
                Cell::Num(x, d) => push_num(&mut self.buf, x, d),
                Cell::Bool(b) => self.buf.extend_from_slice(if b { b"on" } else { b"off" }),
            }
            texts.push(String::from_utf8_lossy(&self.buf).into_owned());
        }
        let right: Vec<bool> = cells.iter().map(|c| matches!(c, Cell::Num(..))).collect();
        self.cells(
            &texts.iter().map(String::as_str).collect::<Vec<_>>(),
            &right,
        );
        Ok(())
    }

    fn finish(&mut self, record_count: u64, summary: &Value) -> io::Result<()> {
        self.summary(record_count, summary);
        if let Some(e) = self.chart.take() {
            self.chart_page(&e);
        }
        self.new_page();
        let n = self.pages.len();
        let mut pages = Vec::with_capacity(n);
        for (i, mut ops) in std::mem::take(&mut self.pages).into_iter().enumerate() {
            let foot = format!(
                "{} · generated {} · page {} of {n}",
                self.title,
                self.generated,
                i + 1
            );
            let tw = self.fonts.width(&foot, 7.0);
            self.fonts
                .text(&mut ops, &foot, self.width - MARGIN - tw, MARGIN, 7.0);
            pages.push(PdfPage::new(
                printpdf::Mm::from(Pt(self.width)),
                printpdf::Mm::from(Pt(self.height)),
                ops,
            ));
        }
        let bytes = self
            .doc
            .with_pages(pages)
            .save(&PdfSaveOptions::default(), &mut Vec::new());
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("the PDF was already written"))?;
        out.write_all(&bytes)?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_no_font_has_are_shown_as_code_points() {
        let mut doc = PdfDocument::new("t");
        let fonts = Fonts::load(&[PathBuf::from("/nonexistent.ttf")], &mut doc);
        let runs = fonts.runs("Küche – 客厅");
        let text: String = runs.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(text, "Küche – <U+5BA2><U+5385>");
        assert!(fonts.width("Küche", 10.0) > 20.0);
    }
}
