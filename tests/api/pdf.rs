//! PDF exports checked with poppler (an independent parser): page count and size, the table's
//! numbers (equal to the CSV of the same request) and its header repeated on every page, the
//! title, summary and page numbers; the chart page rendered to pixels is not blank; a device
//! name outside WinAnsi ("Küche – 客厅") comes out whole.

use crate::exports::{export_as, fixture};
use crate::helpers::{TestApp, plug_info};
use kasad::clock::{ManualClock, SharedClock};
use kasad::domain::{DeviceId, Reading};
use kasad::store::Store;
use kasad::store::write::{Batch, apply};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

const T0: i64 = 1_709_942_400_000; // 2024-03-09T00:00:00Z
const NOW: i64 = T0 + 4 * 86_400_000;

pub fn poppler(tool: &str, args: &[&str], file: &Path) -> String {
    let out = Command::new(tool)
        .args(args)
        .arg(file)
        .args(if tool == "pdftotext" {
            &["-"][..]
        } else {
            &[][..]
        })
        .output()
        .unwrap_or_else(|e| panic!("{tool} (Debian package poppler-utils) is needed: {e}"));
    assert!(
        out.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The fixture plus a third plug named outside WinAnsi, with one day of readings.
async fn app(tweak: impl FnOnce(&mut kasad::config::Settings)) -> (TestApp, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    fixture(data.path());
    {
        let store = Store::open(&data.path().join("kasad.redb"), 8).unwrap();
        let mut d = plug_info("KUECHE01");
        d.name = "Küche – 客厅".into();
        d.address = "127.0.0.11:1".into();
        let readings = (0..144)
            .map(|i| Reading {
                device_id: DeviceId::parse("KUECHE01").unwrap(),
                ts_ms: T0 + i * 600_000 + 2_000,
                power_mw: Some(800_000),
                voltage_mv: Some(230_000),
                current_ma: Some(3_478),
                counter_wh: Some(i * 133),
                relay_on: true,
                rssi: Some(-40),
            })
            .collect();
        apply(
            &store,
            &Batch {
                devices: vec![(d, T0)],
                readings,
                days: vec![],
            },
            true,
        )
        .unwrap();
    }
    let clock: SharedClock = Arc::new(ManualClock::new(NOW));
    let app = TestApp::on_data(data.path(), clock, |s| {
        s.exports.rate_limit_per_hour = 1000;
        tweak(s);
    })
    .await;
    (app, data)
}

pub fn info(file: &Path) -> (usize, String) {
    let text = poppler("pdfinfo", &[], file);
    let pages = text
        .lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let size = text
        .lines()
        .find_map(|l| l.strip_prefix("Page size:"))
        .unwrap()
        .trim()
        .to_owned();
    (pages, size)
}

/// "841.891 x 595.28 pts (A4)": wider than high.
fn landscape(size: &str) -> bool {
    let n: Vec<f64> = size
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    n.len() == 2 && n[0] > n[1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdf_tables_match_the_csv_and_break_across_pages() {
    let (app, data) = app(|_| {}).await;
    let body = json!({
        "export_type": "device_data",
        "date_range": {"start": "2024-03-09", "end": "2024-03-09"},
        "devices": "all",
        "fields": ["timestamp", "device_name", "power_w", "energy_kwh", "voltage", "cost", "is_on"],
        "options": {"timezone": "UTC"},
    });
    let csv = String::from_utf8(export_as(&app, &body, "csv").await).unwrap();
    let pdf = export_as(&app, &body, "pdf").await;
    assert!(pdf.starts_with(b"%PDF-"));
    let file = data.path().join("t.pdf");
    std::fs::write(&file, &pdf).unwrap();
    let (pages, size) = info(&file);
    let rows = csv.lines().count() - 1;
    assert!(rows > 400, "{rows}");
    assert!(pages >= rows / 60, "{pages} pages for {rows} rows");
    assert!(
        size.ends_with("pts (A4)") && landscape(&size),
        "A4 landscape: {size}"
    );
    let text = poppler("pdftotext", &["-layout"], &file);
    let page_texts: Vec<&str> = text
        .split('\u{c}')
        .filter(|p| !p.trim().is_empty())
        .collect();
    assert_eq!(page_texts.len(), pages);
    assert!(page_texts[0].contains("Device data export"));
    assert!(page_texts[0].contains("From 2024-03-09T00:00:00.000Z"));
    for (i, p) in page_texts.iter().enumerate() {
        assert!(
            p.contains(&format!("page {} of {pages}", i + 1)),
            "page {i}: {p}"
        );
        if i + 1 < pages {
            assert!(
                p.contains("power_w") && p.contains("energy_kwh"),
                "header on page {i}"
            );
        }
    }
    // Every CSV row's values appear, in order, in the extracted text.
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut at = 0;
    for line in csv.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        let want = format!(
            "{} {} {} {} {} {} {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            if cells[6] == "true" { "on" } else { "off" }
        )
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
        let found = flat[at..]
            .find(&want)
            .unwrap_or_else(|| panic!("row {want:?} not found after {at}"));
        at += found + want.len();
    }
    assert!(flat.contains(&format!("Records: {rows}")));
    // The name outside WinAnsi is whole (embedded fonts), not dropped or replaced.
    assert!(
        Path::new("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc").exists(),
        "the CJK font of this test is missing: apt-get install fonts-wqy-microhei"
    );
    assert!(text.contains("Küche – 客厅"), "{}", &text[..2000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdf_charts_are_drawn_and_letter_pages_are_configurable() {
    let (app, data) = app(|s| s.exports.pdf_page_size = "Letter".into()).await;
    let body = json!({
        "export_type": "device_data",
        "date_range": {"start": "2024-03-09", "end": "2024-03-11"},
        "devices": "all", "aggregation": "daily", "include_charts": true,
        "fields": ["timestamp", "device_name", "energy_kwh"],
    });
    let file = data.path().join("c.pdf");
    std::fs::write(&file, export_as(&app, &body, "pdf").await).unwrap();
    let (pages, size) = info(&file);
    assert!(
        size.ends_with("pts (letter)") && landscape(&size),
        "Letter landscape: {size}"
    );
    let text = poppler("pdftotext", &["-f", &pages.to_string()], &file);
    assert!(text.contains("Daily energy per device (kWh)"), "{text}");
    assert!(text.contains("Garage Heater") && text.contains("Living Room Lamp"));
    // Render the chart page and look at its plot area: bars make it far from blank.
    let (dark, area) = drawn(&file, pages, data.path());
    assert!(dark * 10 > area, "only {dark} of {area} pixels are drawn");
}

/// Renders `page` of `file` to a gray image in `dir` (pdftoppm) and counts the drawn (dark)
/// pixels in the middle of the page: (dark, all) in the central 3/5 × 1/2 of it.
pub fn drawn(file: &Path, page: usize, dir: &Path) -> (usize, usize) {
    let prefix = dir.join(format!("page{page}"));
    let p = page.to_string();
    let out = Command::new("pdftoppm")
        .args(["-gray", "-r", "40", "-f", &p, "-l", &p])
        .arg(file)
        .arg(&prefix)
        .output()
        .expect("pdftoppm (poppler-utils) is needed");
    assert!(out.status.success());
    let pgm = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| {
            f.extension().is_some_and(|e| e == "pgm")
                && f.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("page{page}-")))
        })
        .unwrap();
    let img = std::fs::read(pgm).unwrap();
    // P5 header: "P5\nW H\n255\n".
    let head: Vec<&[u8]> = img.splitn(4, |b| b.is_ascii_whitespace()).collect();
    let (w, h): (usize, usize) = (
        std::str::from_utf8(head[1]).unwrap().parse().unwrap(),
        std::str::from_utf8(head[2]).unwrap().parse().unwrap(),
    );
    let pixels = &img[img.len() - w * h..];
    let (x0, x1, y0, y1) = (w / 5, w * 4 / 5, h / 4, h * 3 / 4);
    let dark = (y0..y1)
        .flat_map(|y| (x0..x1).map(move |x| (x, y)))
        .filter(|&(x, y)| pixels[y * w + x] < 200)
        .count();
    (dark, (x1 - x0) * (y1 - y0))
}
