//! `kasad import home-assistant|emoncms|iotawatt PATH`: energy series from other tools' CSV
//! files, with the rules of the kasa-monitor import (devices matched by id or name, or
//! created; idempotent; one transaction per device; `imported` provenance).
//!
//! - `home-assistant`: long-term statistics as the "Import Statistics" integration reads them
//!   (and `format: "ha_statistics"` writes them): `statistic_id`, `unit`, `start`
//!   (`%d.%m.%Y %H:%M` in `--timezone`), `sum` for energy (`kWh` or `Wh`). Each hour's energy
//!   is the change of `sum`: a reading at the hour's end carries `sum` as its counter, so the
//!   first row is the baseline. Statistics without `sum` (power's mean/min/max) are counted and
//!   left out. The integration's own export (a BOM, CRLF, a `delta` column) reads as well.
//! - `emoncms`: a feed's `feed/csvexport.json` download of a kWh accumulator feed: `time,value`
//!   lines, no header; times as Unix seconds, `d/m/Y H:i:s` (in `--timezone`) or RFC 3339;
//!   `null` values left out. The values are the feed's running total: each is a counter.
//! - `iotawatt`: its query API's CSV (`/query?select=[time.iso,Name.wh,…]&group=h&format=csv
//!   &header=yes`): `Time, Name, …` and the energy of each group in Wh; times ISO without
//!   offset (in `--timezone`) or Unix seconds. Each column is a device; a group's energy ends at
//!   the next group's start.
//!
//! The whole file is read and checked before anything is written: a line over 64 KiB, a number
//! that does not read, a missing or unknown column, a time out of order, a path that is not a
//! file — each refused with its line, nothing half-written.

use super::{DeviceReport, ImportError, Imports};
use crate::domain::{DeviceId, DeviceInfo, Reading};
use crate::store::Store;
use chrono_tz::Tz;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

/// Longest line read.
pub const MAX_LINE: usize = 64 * 1024;
/// Most rows of one file.
pub const MAX_ROWS: usize = 20_000_000;

/// The tool a file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// Home Assistant statistics (Import Statistics' CSV).
    HomeAssistant,
    /// An Emoncms kWh feed.
    Emoncms,
    /// IoTaWatt's query CSV.
    Iotawatt,
}

impl Tool {
    fn prefix(self) -> &'static str {
        match self {
            Tool::HomeAssistant => "ha",
            Tool::Emoncms => "emon",
            Tool::Iotawatt => "iota",
        }
    }
}

/// One device's series read from a file: its key in the file, and (time, counter Wh).
#[derive(Debug, Default)]
struct Series {
    key: String,
    points: Vec<(i64, i64)>,
}

fn bad(path: &Path, line: usize, msg: impl std::fmt::Display) -> ImportError {
    ImportError::File(format!("{}:{line}: {msg}", path.display()))
}

/// The file's lines, each at most [`MAX_LINE`] bytes, as text.
fn lines(path: &Path) -> Result<Vec<String>, ImportError> {
    let meta = std::fs::metadata(path).map_err(|e| bad(path, 0, e))?;
    if !meta.is_file() {
        return Err(bad(path, 0, "not a file"));
    }
    let f = std::fs::File::open(path).map_err(|e| bad(path, 0, e))?;
    let mut r = std::io::BufReader::new(f);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = std::io::Read::take(&mut r, MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| bad(path, out.len() + 1, e))?;
        if n == 0 {
            break;
        }
        if buf.len() > MAX_LINE {
            return Err(bad(
                path,
                out.len() + 1,
                format!("longer than {MAX_LINE} bytes"),
            ));
        }
        if out.len() >= MAX_ROWS {
            return Err(bad(
                path,
                out.len() + 1,
                format!("more than {MAX_ROWS} lines"),
            ));
        }
        let text = String::from_utf8(buf.clone())
            .map_err(|_| bad(path, out.len() + 1, "not UTF-8 text"))?;
        out.push(
            text.trim_end_matches(['\r', '\n'])
                .trim_start_matches('\u{feff}')
                .to_owned(),
        );
    }
    Ok(out)
}

fn number(path: &Path, line: usize, v: &str) -> Result<Option<f64>, ImportError> {
    let v = v.trim().trim_matches('"');
    if v.is_empty() || v == "null" {
        return Ok(None);
    }
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x.abs() < 1e15 => Ok(Some(x)),
        _ => Err(bad(path, line, format!("{v:?} is not a number"))),
    }
}

fn local(tz: Tz, t: chrono::NaiveDateTime, prev: Option<i64>) -> Option<i64> {
    // On the night clocks go back: the earlier of the two, unless it is not after the time
    // before it in the series (then the later); a time that does not exist is refused.
    use chrono::TimeZone;
    use chrono::offset::LocalResult;
    match tz.from_local_datetime(&t) {
        LocalResult::Single(d) => Some(d.timestamp_millis()),
        LocalResult::Ambiguous(a, b) => {
            let a = a.timestamp_millis();
            Some(if prev.is_none_or(|p| a > p) {
                a
            } else {
                b.timestamp_millis()
            })
        }
        LocalResult::None => None,
    }
}

/// A time as Unix seconds, RFC 3339, `%Y-%m-%dT%H:%M:%S` or `%d/%m/%Y %H:%M:%S` (local).
fn time(v: &str, tz: Tz, prev: Option<i64>) -> Option<i64> {
    let v = v.trim().trim_matches('"');
    if let Ok(s) = v.parse::<i64>() {
        return s.checked_mul(1000);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Some(t.timestamp_millis());
    }
    [
        "%Y-%m-%dT%H:%M:%S",
        "%d/%m/%Y %H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ]
    .iter()
    .find_map(|f| chrono::NaiveDateTime::parse_from_str(v, f).ok())
    .and_then(|t| local(tz, t, prev))
}

/// A meter that only rises: each series' readings as a counter from 0 adding the rises of
/// the tool's value (a fall — a restarted `sum`, a corrected feed — adds nothing), so the
/// store's reset rule never misreads another tool's numbers.
fn as_counter(points: &[(i64, f64)]) -> Vec<(i64, i64)> {
    let mut c = 0.0;
    let mut prev: Option<f64> = None;
    points
        .iter()
        .map(|&(t, v)| {
            if let Some(p) = prev {
                c += (v - p).max(0.0);
            }
            prev = Some(v);
            (t, c.round() as i64)
        })
        .collect()
}

fn home_assistant(path: &Path, tz: Tz) -> Result<(Vec<Series>, u64), ImportError> {
    let lines = lines(path)?;
    let Some(head) = lines.first() else {
        return Err(bad(path, 1, "empty file"));
    };
    let delim = if head.contains('\t') { '\t' } else { ',' };
    let cols: Vec<&str> = head.split(delim).map(str::trim).collect();
    let known = [
        "statistic_id",
        "unit",
        "start",
        "min",
        "max",
        "mean",
        "state",
        "sum",
        // What the integration's own export adds beside `sum`: read past.
        "delta",
    ];
    if let Some(c) = cols.iter().find(|c| !known.contains(c)) {
        return Err(bad(
            path,
            1,
            format!("unknown column {c:?} (expected {})", known.join(", ")),
        ));
    }
    let at = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(id), Some(unit), Some(start)) = (at("statistic_id"), at("unit"), at("start")) else {
        return Err(bad(
            path,
            1,
            "the columns statistic_id, unit and start are required",
        ));
    };
    let sum = at("sum");
    let mut by_id: BTreeMap<String, (String, Vec<(i64, f64)>)> = BTreeMap::new();
    let mut last_start: BTreeMap<String, i64> = BTreeMap::new();
    let mut left_out = 0u64;
    for (i, l) in lines.iter().enumerate().skip(1) {
        let n = i + 1;
        if l.trim().is_empty() {
            continue;
        }
        let row: Vec<&str> = l.split(delim).collect();
        if row.len() != cols.len() {
            return Err(bad(
                path,
                n,
                format!("{} fields, the header has {}", row.len(), cols.len()),
            ));
        }
        let sid = row[id].trim();
        let t = chrono::NaiveDateTime::parse_from_str(row[start].trim(), "%d.%m.%Y %H:%M")
            .ok()
            .and_then(|t| local(tz, t, last_start.get(row[id].trim()).copied()))
            .ok_or_else(|| {
                bad(
                    path,
                    n,
                    format!("start {:?} is not dd.mm.yyyy HH:MM", row[start]),
                )
            })?;
        if t.rem_euclid(3_600_000) != 0 {
            return Err(bad(path, n, "start is not a full hour"));
        }
        let Some(s) = sum.map(|c| number(path, n, row[c])).transpose()?.flatten() else {
            left_out += 1;
            continue;
        };
        let factor = match row[unit].trim() {
            "kWh" => 1000.0,
            "Wh" => 1.0,
            // A sum of something else (money, gas, MWh …) is not a plug's energy.
            _ => {
                left_out += 1;
                continue;
            }
        };
        // `sensor:house_energy` or `sensor.house_energy` → `house`.
        let key = sid.rsplit([':', '.']).next().unwrap_or(sid);
        let key = key.strip_suffix("_energy").unwrap_or(key).to_owned();
        let e = by_id
            .entry(sid.to_owned())
            .or_insert_with(|| (key, Vec::new()));
        let end = t + 3_600_000;
        if e.1.last().is_some_and(|p| p.0 >= end) {
            return Err(bad(
                path,
                n,
                format!("{sid}: start not after the row before"),
            ));
        }
        last_start.insert(sid.to_owned(), t);
        e.1.push((end, s * factor));
    }
    let series = by_id
        .into_values()
        .map(|(key, p)| Series {
            key,
            points: as_counter(&p),
        })
        .collect();
    Ok((series, left_out))
}

fn emoncms(path: &Path, tz: Tz, device: &str) -> Result<Vec<Series>, ImportError> {
    let mut points: Vec<(i64, f64)> = Vec::new();
    for (i, l) in lines(path)?.iter().enumerate() {
        let n = i + 1;
        if l.trim().is_empty() {
            continue;
        }
        let (t, v) = l
            .split_once(',')
            .ok_or_else(|| bad(path, n, "expected time,value"))?;
        let prev = points.last().map(|p| p.0);
        let t =
            time(t, tz, prev).ok_or_else(|| bad(path, n, format!("time {t:?} does not read")))?;
        let Some(kwh) = number(path, n, v)? else {
            continue;
        };
        if prev.is_some_and(|p| p >= t) {
            return Err(bad(path, n, "time not after the line before"));
        }
        points.push((t, kwh * 1000.0));
    }
    Ok(vec![Series {
        key: device.to_owned(),
        points: as_counter(&points),
    }])
}

fn iotawatt(path: &Path, tz: Tz) -> Result<Vec<Series>, ImportError> {
    let lines = lines(path)?;
    let Some(head) = lines.first() else {
        return Err(bad(path, 1, "empty file"));
    };
    let cols: Vec<&str> = head.split(',').map(str::trim).collect();
    if cols.first() != Some(&"Time") || cols.len() < 2 {
        return Err(bad(
            path,
            1,
            "expected a header `Time, Name, …` (header=yes)",
        ));
    }
    let mut rows: Vec<(i64, Vec<Option<f64>>)> = Vec::new();
    for (i, l) in lines.iter().enumerate().skip(1) {
        let n = i + 1;
        if l.trim().is_empty() {
            continue;
        }
        if l.starts_with("Limit exceeded") {
            return Err(bad(
                path,
                n,
                "IoTaWatt stopped at its row limit: query with limit=none",
            ));
        }
        let f: Vec<&str> = l.split(',').collect();
        if f.len() != cols.len() {
            return Err(bad(
                path,
                n,
                format!("{} fields, the header has {}", f.len(), cols.len()),
            ));
        }
        let t = time(f[0], tz, rows.last().map(|r| r.0))
            .ok_or_else(|| bad(path, n, format!("time {:?} does not read", f[0])))?;
        if rows.last().is_some_and(|r| r.0 >= t) {
            return Err(bad(path, n, "time not after the line before"));
        }
        let vals = f[1..]
            .iter()
            .map(|v| number(path, n, v))
            .collect::<Result<_, _>>()?;
        rows.push((t, vals));
    }
    let mut out: Vec<Series> = cols[1..]
        .iter()
        .map(|c| Series {
            key: (*c).to_owned(),
            points: Vec::new(),
        })
        .collect();
    for (k, s) in out.iter_mut().enumerate() {
        let mut counter = 0.0_f64;
        for (i, (t, vals)) in rows.iter().enumerate() {
            // A group's energy ends where the next group starts (the last: one step on).
            let step = match (rows.get(i + 1), i.checked_sub(1).and_then(|p| rows.get(p))) {
                (Some(next), _) => next.0 - t,
                (None, Some(prev)) => t - prev.0,
                (None, None) => 3_600_000,
            };
            if let Some(wh) = vals[k] {
                // The group's start carries the counter on (after nulls: no energy there).
                if s.points.last().is_none_or(|p| p.0 < *t) {
                    s.points.push((*t, counter.round() as i64));
                }
                counter += wh.max(0.0);
                s.points.push((t + step, counter.round() as i64));
            }
        }
    }
    Ok(out)
}

/// The device `key` goes to: ours by id (as Home Assistant ids make it) or name, else a new
/// imported one (`<tool>-<key>`, never polled).
fn device_for(ours: &[crate::store::DeviceSummary], tool: Tool, key: &str) -> (DeviceInfo, bool) {
    let slug = crate::export::format::ha_statistics::slug;
    let k = slug(key);
    if let Some(d) = ours.iter().find(|d| {
        let r = &d.record;
        slug(r.info.device_id.as_str()) == k || r.name().eq_ignore_ascii_case(key.trim())
    }) {
        return (d.record.info.clone(), false);
    }
    let id = DeviceId::parse(&format!("{}-{}", tool.prefix(), k.replace('_', "-")))
        .unwrap_or_else(|_| DeviceId::parse(tool.prefix()).expect("a valid id"));
    let info = DeviceInfo {
        name: key.trim().to_owned(),
        model: "imported".into(),
        ..DeviceInfo::plug(id)
    };
    (info, true)
}

/// Imports `path` from `tool` into `store`: the whole file is checked first (times from 2000
/// to a day after `now_ms`; no two series going to one new device), then each device is
/// imported in one transaction. A device kasad already has only gets history before its first
/// stored reading (its own counter and the file's never meet). `device` names an Emoncms
/// feed's device (default: the file's name); `tz` reads local times.
pub fn import(
    store: &Store,
    tool: Tool,
    path: &Path,
    device: Option<&str>,
    tz: Tz,
    now_ms: i64,
) -> Result<Imports, ImportError> {
    let (series, left_out) = match tool {
        Tool::HomeAssistant => home_assistant(path, tz)?,
        Tool::Emoncms => {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            let name = device
                .map(str::to_owned)
                .or(stem)
                .unwrap_or_else(|| "emoncms".into());
            (emoncms(path, tz, &name)?, 0)
        }
        Tool::Iotawatt => (iotawatt(path, tz)?, 0),
    };
    const FROM: i64 = 946_684_800_000; // 2000-01-01T00:00:00Z
    let ours = store.devices()?;
    let mut plan: Vec<(Series, DeviceInfo, bool)> = Vec::new();
    for s in series.into_iter().filter(|s| !s.points.is_empty()) {
        if let Some(t) = s
            .points
            .iter()
            .map(|p| p.0)
            .find(|t| *t < FROM || *t > now_ms + 86_400_000)
        {
            return Err(bad(
                path,
                0,
                format!(
                    "{}: time {} is before 2000 or in the future (milliseconds read as seconds?)",
                    s.key,
                    crate::clock::rfc3339(t)
                ),
            ));
        }
        let (info, created) = device_for(&ours, tool, &s.key);
        if let Some(other) = plan.iter().find(|p| p.1.device_id == info.device_id) {
            return Err(bad(
                path,
                0,
                format!(
                    "{:?} and {:?} would both go to device {}: rename one",
                    other.0.key, s.key, info.device_id
                ),
            ));
        }
        plan.push((s, info, created));
    }
    let mut out = Imports {
        left_out,
        ..Imports::default()
    };
    for (mut s, info, created) in plan {
        let mut kept_out = 0;
        if !created {
            let first = store.readings(&info.device_id, i64::MIN, i64::MAX, 1)?;
            if let Some(first) = first.first() {
                let before = s.points.len();
                s.points.retain(|p| p.0 < first.reading.ts_ms);
                kept_out = (before - s.points.len()) as u64;
            }
        }
        let readings = s.points.iter().map(|&(t, wh)| {
            Ok(Reading {
                device_id: info.device_id.clone(),
                ts_ms: t,
                power_mw: None,
                voltage_mv: None,
                current_ma: None,
                counter_wh: Some(wh),
                relay_on: true,
                rssi: None,
            })
        });
        match store.import_history(&info, readings) {
            Ok(d) => out.devices.push(DeviceReport {
                ip: s.key.clone(),
                device_id: info.device_id.as_str().to_owned(),
                created,
                before: d.before,
                after: d.after,
                skipped: d.skipped + kept_out,
                bad_time: 0,
            }),
            Err(e) => {
                out.error = Some(format!("{}: {e}", s.key));
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_integrations_own_export_reads() {
        // As `import_statistics.export_statistics` writes it: a BOM, CRLF, every column.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("export.csv");
        std::fs::write(
            &p,
            "\u{feff}statistic_id,unit,start,min,max,mean,sum,state,delta\r\n\
             sensor:house_energy,kWh,09.03.2024 00:00,,,,10,6912.5,\r\n\
             sensor:house_energy,kWh,09.03.2024 01:00,,,,10.5,6913,0.5\r\n\
             sensor:house_power,W,09.03.2024 00:00,100,300,200,,,\r\n",
        )
        .unwrap();
        let (series, left_out) = home_assistant(&p, chrono_tz::UTC).unwrap();
        assert_eq!(left_out, 1);
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].key, "house");
        let t = 1_709_942_400_000 + 3_600_000;
        // As a meter from 0: the rises of `sum`.
        assert_eq!(series[0].points, [(t, 0), (t + 3_600_000, 500)]);
    }
}
