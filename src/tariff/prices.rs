//! Price series for dynamic tariffs, read from what people upload or fetch: CSV
//! (`start,price_per_kwh`, one row per interval, each ending where the next begins), JSON
//! (`{"prices": [{"start", "end"?, "price_per_kwh"}]}`), and two public day-ahead feeds:
//! aWATTar (`data[]` of `start_timestamp`/`end_timestamp` in ms and `marketprice` in
//! currency per MWh) and Octopus Energy Agile (`results[]` of `valid_from`/`valid_to` and
//! `value_inc_vat` in pence per kWh, newest first). Prices become micro-units per kWh.

use crate::store::prices::PricePoint;
use serde_json::Value;

/// Most intervals one upload may hold.
pub const MAX_POINTS: usize = 10_000;
/// Largest price magnitude per kWh (day-ahead prices may be negative).
pub const MAX_PRICE: f64 = 1_000.0;

/// The layouts a price series is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `start,price_per_kwh` rows.
    Csv,
    /// `{"prices": [{"start", "end"?, "price_per_kwh"}]}`.
    Json,
    /// aWATTar's market data.
    Awattar,
    /// Octopus Energy's Agile unit rates.
    Octopus,
}

impl Layout {
    /// From its name.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_owned())).ok()
    }
}

fn time(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("{s:?} is not an RFC 3339 time"))
}

fn micro(p: f64) -> Result<i64, String> {
    if p.is_finite() && p.abs() <= MAX_PRICE {
        Ok((p * 1e6).round() as i64)
    } else {
        Err(format!("price {p} is out of range (±{MAX_PRICE} per kWh)"))
    }
}

/// Intervals of (start, price) rows, each as long as the series' step (the shortest distance
/// between two starts; an hour for a single row): a row missing from the series stays a gap, to
/// be priced at the fallback and reported, never covered by its neighbour.
fn chained(mut rows: Vec<(i64, i64)>) -> Vec<PricePoint> {
    rows.sort_by_key(|r| r.0);
    let step = rows
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .filter(|d| *d > 0)
        .min()
        .unwrap_or(3_600_000);
    rows.iter()
        .map(|(start, m)| PricePoint {
            start_ms: *start,
            end_ms: start + step,
            micro: *m,
        })
        .collect()
}

/// Reads `body` in `layout`; the intervals in order, checked (no overlap, each ends after it
/// starts, at most [`MAX_POINTS`]).
pub fn parse(layout: Layout, body: &str) -> Result<Vec<PricePoint>, String> {
    let mut pts = match layout {
        Layout::Csv => {
            let mut rows = Vec::new();
            for (n, line) in body.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || (n == 0 && line.starts_with("start")) {
                    continue;
                }
                let (s, p) = line
                    .split_once(',')
                    .ok_or_else(|| format!("line {}: start,price_per_kwh", n + 1))?;
                let p: f64 = p
                    .trim()
                    .parse()
                    .map_err(|_| format!("line {}: {p:?} is not a number", n + 1))?;
                rows.push((
                    time(s).map_err(|e| format!("line {}: {e}", n + 1))?,
                    micro(p)?,
                ));
            }
            chained(rows)
        }
        Layout::Json | Layout::Awattar | Layout::Octopus => {
            let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
            let (list, what) = match layout {
                Layout::Json => (&v["prices"], "prices"),
                Layout::Awattar => (&v["data"], "data"),
                _ => (&v["results"], "results"),
            };
            let list = list.as_array().ok_or_else(|| format!("no {what} list"))?;
            let mut rows = Vec::new();
            let mut ends = Vec::new();
            for (i, x) in list.iter().enumerate() {
                let bad = || format!("{what}[{i}]: missing or wrong fields");
                let (start, end, price) = match layout {
                    Layout::Json => (
                        time(x["start"].as_str().ok_or_else(bad)?)?,
                        x["end"].as_str().map(time).transpose()?,
                        x["price_per_kwh"].as_f64().ok_or_else(bad)?,
                    ),
                    Layout::Awattar => {
                        let unit = x["unit"].as_str().unwrap_or("Eur/MWh").to_ascii_lowercase();
                        let per = if unit.ends_with("/mwh") {
                            1_000.0
                        } else if unit.ends_with("/kwh") {
                            1.0
                        } else {
                            return Err(format!("{what}[{i}]: unknown unit {unit:?}"));
                        };
                        (
                            x["start_timestamp"].as_i64().ok_or_else(bad)?,
                            x["end_timestamp"].as_i64(),
                            x["marketprice"].as_f64().ok_or_else(bad)? / per,
                        )
                    }
                    _ => (
                        time(x["valid_from"].as_str().ok_or_else(bad)?)?,
                        x["valid_to"].as_str().map(time).transpose()?,
                        // Pence per kWh, VAT included.
                        x["value_inc_vat"].as_f64().ok_or_else(bad)? / 100.0,
                    ),
                };
                rows.push((start, micro(price)?));
                ends.push((start, end));
            }
            let mut pts = chained(rows);
            for p in &mut pts {
                if let Some((_, Some(e))) = ends.iter().find(|(s, _)| *s == p.start_ms) {
                    p.end_ms = *e;
                }
            }
            pts
        }
    };
    if pts.is_empty() || pts.len() > MAX_POINTS {
        return Err(format!("1 to {MAX_POINTS} prices"));
    }
    pts.sort_by_key(|p| p.start_ms);
    for w in pts.windows(2) {
        if w[1].start_ms < w[0].end_ms {
            return Err(format!(
                "intervals overlap at {}",
                crate::clock::rfc3339(w[1].start_ms)
            ));
        }
    }
    if pts.iter().any(|p| p.end_ms <= p.start_ms) {
        return Err("an interval ends before it starts".into());
    }
    Ok(pts)
}

/// Largest answer a price feed may send, bytes.
pub const MAX_FEED_BYTES: usize = 2 * 1024 * 1024;

/// Fetches `url` (which must lie under an entry of `[delivery] webhook_allow`) and reads it in
/// `layout`. Errors name only the origin of the URL.
pub async fn fetch(
    url: &str,
    layout: Layout,
    s: &crate::config::Settings,
) -> Result<Vec<PricePoint>, String> {
    crate::notify::check_webhook(url, None, s)?;
    let origin = crate::notify::origin(url);
    crate::tls::install_tls();
    let client = reqwest::Client::builder()
        .timeout(s.delivery.timeout.0)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let mut resp = client
        .get(url)
        .header(reqwest::header::USER_AGENT, "kasad")
        .send()
        .await
        .map_err(|e| format!("{origin}: {}", e.without_url()))?;
    if !resp.status().is_success() {
        return Err(format!("{origin} answered {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("{origin}: {}", e.without_url()))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_FEED_BYTES {
            return Err(format!(
                "{origin}: the answer is larger than {MAX_FEED_BYTES} bytes"
            ));
        }
    }
    parse(layout, &String::from_utf8_lossy(&body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/prices/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn awattar_market_data_in_euro_per_mwh() {
        let p = parse(Layout::Awattar, &fixture("awattar.json")).unwrap();
        assert_eq!(p.len(), 3);
        // 62.61 €/MWh is 0.06261 €/kWh; negative prices stay negative.
        assert_eq!(
            (p[0].start_ms, p[0].end_ms, p[0].micro),
            (1_711_843_200_000, 1_711_846_800_000, 62_610)
        );
        assert_eq!(p[2].micro, -4_950);
    }

    #[test]
    fn octopus_agile_rates_in_pence_newest_first() {
        let p = parse(Layout::Octopus, &fixture("octopus.json")).unwrap();
        assert_eq!(p.len(), 3);
        // Sorted oldest first; half-hours; 18.522 p/kWh is 0.18522 £/kWh.
        assert_eq!(p[0].micro, 185_220);
        assert_eq!(p[0].end_ms - p[0].start_ms, 1_800_000);
        assert_eq!(p[2].micro, 205_065);
    }

    #[test]
    fn csv_rows_last_one_step_across_a_dst_change_and_a_missing_row_is_a_gap() {
        let p = parse(Layout::Csv, &fixture("prices.csv")).unwrap();
        // 01:00+01:00 is followed by 03:00+02:00: one real hour (the local hour 02:00 does not
        // exist that day), so the step is an hour.
        assert_eq!(p[1].end_ms - p[1].start_ms, 3_600_000);
        assert_eq!(p[2].end_ms - p[2].start_ms, 3_600_000);
        assert_eq!(p[0].micro, 251_200);
        let gap = parse(Layout::Csv, "start,price_per_kwh\n2024-01-01T00:00:00Z,0.1\n2024-01-01T01:00:00Z,0.1\n2024-01-01T03:00:00Z,0.1").unwrap();
        assert_eq!(
            gap[1].end_ms,
            gap[2].start_ms - 3_600_000,
            "02:00 stays a gap"
        );
        assert!(parse(Layout::Csv, "start,price_per_kwh\nyesterday,1").is_err());
        assert!(
            parse(
                Layout::Csv,
                "start,price_per_kwh\n2024-01-01T00:00:00Z,5000"
            )
            .is_err()
        );
        assert!(parse(Layout::Json, r#"{"prices": [{"start": "2024-01-01T00:00:00Z", "end": "2024-01-01T02:00:00Z", "price_per_kwh": 0.1},
            {"start": "2024-01-01T01:00:00Z", "price_per_kwh": 0.1}]}"#).unwrap_err().contains("overlap"));
        assert_eq!(Layout::parse("octopus"), Some(Layout::Octopus));
    }
}
