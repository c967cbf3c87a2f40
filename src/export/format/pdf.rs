//! The PDF writer (printpdf's op API, no HTML layout): landscape A4 or Letter pages with a
//! title block (title, range, time zone, devices, generated-at), a table that breaks across
//! pages with its header repeated, numbers right-aligned, a summary (record count, totals,
//! custom aggregates), with `include_charts` a vector bar chart of daily energy per device
//! (from the rollups), and "page N of M" with the generation time in every footer. A system
//! report ([`write_report`]) is laid out on the same pages: sections of tables sized to their
//! text, and stacked bar or line charts.
//!
//! Text: the configured TrueType fonts are embedded (subset) and tried in order for each
//! character; a character none of them has uses the built-in Helvetica when WinAnsi can encode
//! it, and otherwise appears as `<U+XXXX>` — never dropped silently. A PDF is built in memory,
//! so PDF exports hold at most [`MAX_ROWS`] rows (about 450 pages): reports, not dumps.

use super::{Cell, Sink, Totals};
use crate::export::report::{self, Chart, ChartKind, Report, Table, V};
use crate::localtime::TzCache;
use crate::numfmt::push_num;
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

impl Style {
    /// The style `[exports]` sets.
    pub fn of(limits: &crate::config::Exports) -> Self {
        Self {
            letter: limits.pdf_page_size == "Letter",
            fonts: limits.pdf_fonts.clone(),
        }
    }
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

/// The smallest of 1, 2, 2.5 or 5 times a power of ten that is at least `x` (> 0).
fn nice_step(x: f64) -> f64 {
    if !(x > 0.0 && x.is_finite()) {
        return 1.0;
    }
    let mag = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|v| *v >= x * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag)
}

/// Series colours for charts (ten, so ten devices never share one).
const PALETTE: [(f32, f32, f32); 10] = [
    (0.12, 0.47, 0.71),
    (1.0, 0.5, 0.05),
    (0.17, 0.63, 0.17),
    (0.84, 0.15, 0.16),
    (0.58, 0.4, 0.74),
    (0.55, 0.34, 0.29),
    (0.89, 0.47, 0.76),
    (0.5, 0.5, 0.5),
    (0.74, 0.74, 0.13),
    (0.09, 0.75, 0.81),
];

/// A document being laid out: finished pages of drawing operations, the page being drawn,
/// and the cursor `y` (top of the free space on it).
struct Doc {
    doc: PdfDocument,
    fonts: Fonts,
    width: f32,
    height: f32,
    title: String,
    generated: String,
    /// Said after the page number in every footer (a statement's signer).
    note: String,
    pages: Vec<Vec<Op>>,
    ops: Vec<Op>,
    y: f32,
}

impl Doc {
    fn new(style: &Style, title: &str, generated: &str) -> Self {
        let mut doc = PdfDocument::new(title);
        let fonts = Fonts::load(&style.fonts, &mut doc);
        // Landscape: tables are wide.
        let (width, height) = if style.letter {
            (792.0, 612.0)
        } else {
            (841.89, 595.28)
        };
        Self {
            doc,
            fonts,
            width,
            height,
            title: title.to_owned(),
            generated: generated.to_owned(),
            note: String::new(),
            pages: Vec::new(),
            ops: Vec::new(),
            y: height - MARGIN,
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

    /// Whether `h` more points fit on this page.
    fn fits(&self, h: f32) -> bool {
        self.y - h >= self.bottom()
    }

    fn say(&mut self, text: &str, size: f32) {
        if !self.fits(size * 1.5) {
            self.new_page();
        }
        self.y -= size * 1.4;
        self.fonts.text(&mut self.ops, text, MARGIN, self.y, size);
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

    /// Draws `chart` in the `height` points below the cursor and moves the cursor past it.
    fn chart(&mut self, c: &Chart, tzc: &mut TzCache, height: f32) {
        let area_bottom = self.y - height;
        self.say(&c.title, 12.0);
        // Legend entries, in rows that fit the width.
        let mut legend: Vec<Vec<(usize, f32)>> = vec![Vec::new()];
        let mut lx = MARGIN + 40.0;
        for (d, (name, _)) in c.series.iter().enumerate() {
            let w = 20.0 + self.fonts.width(name, 8.0);
            if lx + w > self.width - MARGIN && !legend[legend.len() - 1].is_empty() {
                // At most three rows: the plot keeps its room however many series there are.
                if legend.len() == 3 {
                    break;
                }
                legend.push(Vec::new());
                lx = MARGIN + 40.0;
            }
            let last = legend.len() - 1;
            legend[last].push((d, lx));
            lx += w;
        }
        let (x0, y0) = (
            MARGIN + 40.0,
            area_bottom + 38.0 + 12.0 * legend.len() as f32,
        );
        let (w, h) = (self.width - 2.0 * MARGIN - 60.0, self.y - y0 - 14.0);
        let n = c.labels.len().max(1);
        let top = match c.kind {
            ChartKind::StackedBars => (0..c.labels.len())
                .map(|i| c.series.iter().map(|(_, v)| v[i].max(0.0)).sum::<f64>())
                .fold(0.0, f64::max),
            ChartKind::Lines => c
                .series
                .iter()
                .flat_map(|(_, v)| v.iter().copied())
                .fold(0.0, f64::max),
        };
        // Five gridlines at a round step above the largest value.
        let step = nice_step(top / 5.0);
        let top = step * 5.0;
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
        let slot = w / n as f32;
        let colour = |d: usize| {
            let (r, g, b) = PALETTE[d % PALETTE.len()];
            Color::Rgb(Rgb::new(r, g, b, None))
        };
        let height_of = |v: f64| (v.max(0.0) / top) as f32 * h;
        match c.kind {
            ChartKind::StackedBars => {
                let bar = slot * 0.7;
                for i in 0..c.labels.len() {
                    let x = x0 + slot * i as f32 + (slot - bar) / 2.0;
                    let mut base = 0.0;
                    for (d, (_, values)) in c.series.iter().enumerate() {
                        let bh = height_of(values[i]);
                        rect(&mut self.ops, x, y0 + base, bar, bh, colour(d));
                        base += bh;
                    }
                }
            }
            ChartKind::Lines => {
                for (d, (_, values)) in c.series.iter().enumerate() {
                    self.ops.push(Op::SetOutlineColor { col: colour(d) });
                    // A missing value (NaN) breaks the line.
                    let mut points: Vec<(f32, f32)> = Vec::new();
                    for (i, v) in values.iter().enumerate() {
                        if v.is_finite() {
                            points.push((x0 + slot * (i as f32 + 0.5), y0 + height_of(*v)));
                        } else if !points.is_empty() {
                            line(&mut self.ops, &std::mem::take(&mut points), 1.5);
                        }
                    }
                    if !points.is_empty() {
                        line(&mut self.ops, &points, 1.5);
                    }
                }
                self.ops.push(Op::SetOutlineColor { col: gray(0.0) });
            }
        }
        let label_every = (n / 16).max(1);
        for (i, l) in c.labels.iter().enumerate().step_by(label_every) {
            let label = match l {
                // Days: month and day are enough under a chart.
                V::Time(_) => {
                    let t = report::text(l, tzc);
                    t.get(5..10).unwrap_or_default().to_owned()
                }
                l => report::text(l, tzc),
            };
            let x = x0 + slot * i as f32 + slot / 2.0 - self.fonts.width(&label, TEXT) / 2.0;
            self.fonts.text(&mut self.ops, &label, x, y0 - 10.0, TEXT);
        }
        for (k, row) in legend.iter().enumerate() {
            let y = y0 - 30.0 - 12.0 * k as f32;
            for &(d, lx) in row {
                rect(&mut self.ops, lx, y, 8.0, 8.0, colour(d));
                let name = &c.series[d].0;
                self.fonts
                    .text(&mut self.ops, name, lx + 11.0, y + 1.0, 8.0);
            }
        }
        self.y = area_bottom;
    }

    /// Puts "title · generated … · page N of M" on every page and writes the file to `out`.
    fn save<W: Write>(mut self, mut out: W) -> io::Result<()> {
        self.new_page();
        let n = self.pages.len();
        let mut pages = Vec::with_capacity(n);
        for (i, mut ops) in std::mem::take(&mut self.pages).into_iter().enumerate() {
            let foot = format!(
                "{} · generated {} · page {} of {n}{}",
                self.title,
                self.generated,
                i + 1,
                self.note
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
        out.write_all(&bytes)?;
        out.flush()
    }
}

/// Column layout of a table: left edge and width of each column, header texts and which
/// columns are right-aligned; the header repeats at the top of every page the table spans.
struct Grid {
    cols: Vec<(f32, f32)>,
    header: Vec<String>,
    right: Vec<bool>,
}

impl Grid {
    /// Columns of the `want`ed widths, scaled to the page width (by at most `grow`).
    fn new(doc: &Doc, header: Vec<String>, want: &[f32], right: Vec<bool>, grow: f32) -> Self {
        let usable = doc.width - 2.0 * MARGIN;
        let scale = (usable / want.iter().sum::<f32>()).min(grow);
        let mut x = MARGIN;
        let cols = want
            .iter()
            .map(|w| {
                let c = (x, w * scale);
                x += w * scale;
                c
            })
            .collect();
        Self {
            cols,
            header,
            right,
        }
    }

    fn draw_header(&self, doc: &mut Doc) {
        let w = self.cols.last().map_or(0.0, |(x, w)| x + w) - MARGIN;
        rect(&mut doc.ops, MARGIN, doc.y - ROW_H, w, ROW_H, gray(0.85));
        doc.y -= ROW_H;
        let texts: Vec<&str> = self.header.iter().map(String::as_str).collect();
        self.cells(doc, &texts, &self.right);
    }

    /// One table line at the cursor; `right[i]` right-aligns cell `i`; texts wider than
    /// their column are cut.
    fn cells(&self, doc: &mut Doc, texts: &[&str], right: &[bool]) {
        for (i, t) in texts.iter().enumerate() {
            let (x, w) = self.cols[i];
            let (t, tw) = doc.fit(t, w - 4.0);
            let left = if right[i] { x + w - 3.0 - tw } else { x + 2.0 };
            doc.fonts.text(&mut doc.ops, &t, left, doc.y + 3.0, TEXT);
        }
    }

    /// A row, on a new page (under the header again) when this one is full.
    fn row(&self, doc: &mut Doc, texts: &[&str], right: &[bool]) {
        if !doc.fits(ROW_H) {
            doc.new_page();
            self.draw_header(doc);
        }
        doc.y -= ROW_H;
        self.cells(doc, texts, right);
    }
}

/// Writes a PDF document to `out` when finished.
pub struct PdfSink<W: Write> {
    out: Option<W>,
    doc: Option<Doc>,
    grid: Option<Grid>,
    columns: Vec<String>,
    metadata: Value,
    tzc: TzCache,
    millis: bool,
    totals: Totals,
    chart: Option<Chart>,
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
        chart: Option<Chart>,
    ) -> Self {
        Self {
            out: Some(out),
            doc: Some(Doc::new(style, title, generated)),
            grid: None,
            columns: Vec::new(),
            metadata: Value::Null,
            tzc,
            millis,
            totals: Totals::default(),
            chart,
            buf: Vec::new(),
        }
    }

    fn parts(&mut self) -> io::Result<(&mut Doc, &Grid)> {
        match (self.doc.as_mut(), self.grid.as_ref()) {
            (Some(d), Some(g)) => Ok((d, g)),
            _ => Err(io::Error::other("the PDF was already written")),
        }
    }

    fn summary(&mut self, record_count: u64, summary: &Value) -> io::Result<()> {
        let sums = self.totals.sums().to_vec();
        let columns = self.columns.clone();
        let (doc, _) = self.parts()?;
        if !doc.fits(40.0) {
            doc.new_page();
        }
        doc.y -= 10.0;
        doc.say("Summary", 12.0);
        doc.say(&format!("Records: {record_count}"), 9.0);
        for (c, sum) in sums {
            let mut b = Vec::new();
            push_num(&mut b, sum, 6);
            let name = &columns[c];
            doc.say(
                &format!("Total {name}: {}", String::from_utf8_lossy(&b)),
                9.0,
            );
        }
        if let Value::Object(fields) = summary {
            for (name, v) in fields {
                let unit = v["unit"].as_str().unwrap_or_default();
                doc.say(&format!("{name}: {} {unit}", v["value"]), 9.0);
            }
        }
        Ok(())
    }
}

/// Title, range, zone and generation time at the top of the first page (and more `lines`).
fn title_block(doc: &mut Doc, m: &Value, lines: Vec<String>) {
    let title = doc.title.clone();
    doc.say(&title, 16.0);
    let mut all = vec![format!(
        "From {} to {} ({})",
        m["date_range"]["start"].as_str().unwrap_or_default(),
        m["date_range"]["end"].as_str().unwrap_or_default(),
        m["timezone"].as_str().unwrap_or_default()
    )];
    all.extend(lines);
    let names: Vec<&str> = m["devices"]
        .as_array()
        .map(|d| d.iter().filter_map(|x| x["device_name"].as_str()).collect())
        .unwrap_or_default();
    match names.len() {
        0 => {}
        1..=8 => all.push(format!("Devices: {}", names.join(", "))),
        n => all.push(format!("Devices: {n} ({} …)", names[..3].join(", "))),
    }
    all.push(format!("Generated {}", doc.generated));
    for l in all {
        doc.say(&l, 9.0);
    }
    doc.y -= 8.0;
}

impl<W: Write> Sink for PdfSink<W> {
    fn begin(&mut self, columns: &[String], metadata: &Value) -> io::Result<()> {
        self.columns = columns.to_vec();
        self.metadata = metadata.clone();
        // Header alignment: over the numbers (rows align by cell type).
        let numeric = columns
            .iter()
            .map(|c| {
                crate::export::fields::VALUE_FIELDS
                    .iter()
                    .any(|f| f.name == c && c != "is_on")
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
        let doc = self
            .doc
            .as_mut()
            .ok_or_else(|| io::Error::other("the PDF was already written"))?;
        let grid = Grid::new(doc, columns.to_vec(), &want, numeric, 1.6);
        let aggregation = format!(
            "Aggregation: {}",
            metadata["aggregation"].as_str().unwrap_or("raw")
        );
        title_block(doc, metadata, vec![aggregation]);
        if !doc.fits(ROW_H * 3.0) {
            doc.new_page();
        }
        grid.draw_header(doc);
        self.grid = Some(grid);
        Ok(())
    }

    fn row(&mut self, cells: &[Cell<'_>]) -> io::Result<()> {
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
        let (doc, grid) = self.parts()?;
        grid.row(
            doc,
            &texts.iter().map(String::as_str).collect::<Vec<_>>(),
            &right,
        );
        Ok(())
    }

    fn finish(&mut self, record_count: u64, summary: &Value) -> io::Result<()> {
        self.summary(record_count, summary)?;
        let mut doc = self
            .doc
            .take()
            .ok_or_else(|| io::Error::other("the PDF was already written"))?;
        if let Some(c) = self.chart.take() {
            doc.new_page();
            let h = doc.y - doc.bottom();
            doc.chart(&c, &mut self.tzc, h);
        }
        let out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("the PDF was already written"))?;
        doc.save(out)
    }
}

/// Writes a system report: the title block, then each section (the first under the title,
/// the others from a new page) with its tables and charts.
pub fn write_report<W: Write>(
    out: W,
    style: &Style,
    generated: &str,
    tzc: TzCache,
    metadata: &Value,
    report: &Report,
) -> io::Result<()> {
    write_report_noted(out, style, generated, tzc, metadata, report, "")
}

/// [`write_report`] with `note` after the page number in every footer.
pub fn write_report_noted<W: Write>(
    out: W,
    style: &Style,
    generated: &str,
    mut tzc: TzCache,
    metadata: &Value,
    report: &Report,
    note: &str,
) -> io::Result<()> {
    let mut doc = Doc::new(style, &report.title, generated);
    doc.note = note.to_owned();
    let sections: Vec<&str> = report.parts.iter().map(|p| p.title.as_str()).collect();
    let cur = match metadata["currency_symbol"].as_str() {
        Some(sym) => format!(
            "{} {sym}",
            metadata["currency"].as_str().unwrap_or_default()
        ),
        None => metadata["currency"].as_str().unwrap_or_default().to_owned(),
    };
    let price = match metadata["price_per_kwh"].as_f64() {
        Some(p) => format!("Price: {p} {cur} per kWh (taxes included)"),
        None => format!(
            "Tariff: {} ({cur})",
            metadata["tariff"].as_str().unwrap_or_default()
        ),
    };
    title_block(
        &mut doc,
        metadata,
        vec![format!("Sections: {}", sections.join(", ")), price],
    );
    for (i, part) in report.parts.iter().enumerate() {
        if i > 0 {
            doc.new_page();
        }
        doc.say(&part.title, 14.0);
        for t in &part.tables {
            if !doc.fits(30.0 + 3.0 * ROW_H) {
                doc.new_page();
            }
            doc.y -= 6.0;
            doc.say(&t.title, 10.0);
            report_table(&mut doc, t, &mut tzc);
        }
        for c in &part.charts {
            if !doc.fits(260.0) {
                doc.new_page();
            }
            let h = (doc.y - doc.bottom()).min(330.0);
            doc.chart(c, &mut tzc, h);
        }
    }
    doc.save(out)
}

/// A report table: columns as wide as their widest text (within limits), numbers
/// right-aligned; a vertical table as metric / value lines.
fn report_table(doc: &mut Doc, t: &Table, tzc: &mut TzCache) {
    let mut header: Vec<String> = Vec::new();
    let mut lines: Vec<(Vec<String>, Vec<bool>)> = Vec::new();
    if t.vertical {
        header = vec!["metric".into(), "value".into()];
        for r in &t.rows {
            for (c, v) in r.values.iter().enumerate() {
                let numeric = matches!(v, V::Num(..));
                lines.push((
                    vec![t.header(c), report::text(v, tzc)],
                    vec![false, numeric],
                ));
            }
        }
    } else {
        header.extend(t.item.iter().chain(&t.period).map(|h| (*h).to_owned()));
        header.extend((0..t.columns.len()).map(|c| t.header(c)));
        for r in &t.rows {
            let mut texts: Vec<String> = Vec::with_capacity(header.len());
            if t.item.is_some() {
                texts.push(r.item.clone());
            }
            if t.period.is_some() {
                texts.push(r.period.clone());
            }
            let mut right = vec![false; texts.len()];
            for v in &r.values {
                texts.push(report::text(v, tzc));
                right.push(matches!(v, V::Num(..)));
            }
            lines.push((texts, right));
        }
    }
    let mut want: Vec<f32> = header
        .iter()
        .map(|h| doc.fonts.width(h, TEXT) + 8.0)
        .collect();
    for (texts, _) in &lines {
        for (w, text) in want.iter_mut().zip(texts) {
            *w = w.max(doc.fonts.width(text, TEXT) + 8.0);
        }
    }
    for w in &mut want {
        *w = w.clamp(40.0, 220.0);
    }
    // A column is right-aligned (header too) when it holds numbers.
    let right: Vec<bool> = (0..header.len())
        .map(|c| lines.iter().any(|(_, r)| r[c]))
        .collect();
    let grid = Grid::new(doc, header, &want, right, 1.0);
    grid.draw_header(doc);
    for (texts, right) in &lines {
        grid.row(
            doc,
            &texts.iter().map(String::as_str).collect::<Vec<_>>(),
            right,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_steps_are_round() {
        assert_eq!(nice_step(230.27), 250.0);
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.0), 1.0);
        assert_eq!(nice_step(13.0), 20.0);
        assert_eq!(nice_step(0.0), 1.0);
    }

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
