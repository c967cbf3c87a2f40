//! `ha_statistics`: device_data as the long-term statistics the Home Assistant "Import
//! Statistics" custom integration (`import_statistics.import_from_file`) loads — per device an
//! energy statistic (`<prefix>:<device>_energy`, kWh, `state` and `sum`) and a power statistic
//! (`<prefix>:<device>_power`, W, `mean`, `min`, `max`), one row per whole UTC hour.
//!
//! - `start` is the hour's start as `%d.%m.%Y %H:%M` in UTC (the integration's default
//!   format; set its `timezone_identifier` to `UTC`): never ambiguous across DST.
//! - `sum` is the device's energy since its first reading at the end of each hour, from the
//!   rollups, so it never decreases, counter resets included, and the next export goes on
//!   from where this one ended; a first row for the hour before the range holds the `sum` at
//!   the range's start, so that the first hour's energy is a difference too (Home Assistant and
//!   `kasad import home-assistant` take each hour's energy as the change of `sum`); `state` is
//!   the device's own counter at the end of the hour (kWh; the `sum` until a counter is seen).
//! - One kind of statistic per file (the integration refuses `sum` beside `mean`): energy by
//!   default or with `fields: ["energy_kwh"]`, power with `fields: ["power_w"]`.
//! - Statistic ids are external (`domain:name`: lower-case letters, digits and `_`), so the
//!   integration needs no entity of that name.

use super::super::fields::{ENERGY, Field, POWER};
use super::super::kind::device_data::DataPlan;
use super::super::pipeline::RenderError;
use super::super::plan::Plan;
use crate::domain::rollup::{Period, aggregate};
use crate::numfmt::push_num;
use crate::store::Store;
use std::io::Write;
use std::sync::atomic::Ordering;

/// The statistic id prefix unless the request names one.
pub const DEFAULT_PREFIX: &str = "kasad";

/// A name as Home Assistant's statistic ids take it: lower-case letters, digits and single
/// `_` between them.
pub fn slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_owned()
}

/// Whether `p` can lead a statistic id (`<p>:…`).
pub fn prefix_ok(p: &str) -> bool {
    !p.is_empty() && p.len() <= 64 && slug(p) == p
}

fn fmt_start(out: &mut Vec<u8>, ms: i64) {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let _ = write!(out, "{}", t.format("%d.%m.%Y %H:%M"));
}

/// Writes the statistics of `plan`'s devices; returns the rows written.
pub fn write<W: Write>(
    store: &Store,
    plan: &Plan,
    data: &DataPlan,
    prefix: &str,
    out: &mut W,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<u64, RenderError> {
    let want = |i| data.fields.contains(&Field::Value(i));
    // One kind per file: the integration refuses `sum` beside `mean` (checked when planned).
    let power = want(POWER) && !want(ENERGY);
    let energy = !power;
    let mut cols = vec!["statistic_id", "unit", "start"];
    if power {
        cols.extend(["min", "max", "mean"]);
    }
    if energy {
        cols.extend(["state", "sum"]);
    }
    let mut line = Vec::with_capacity(256);
    line.extend_from_slice(cols.join(",").as_bytes());
    line.extend_from_slice(b"\r\n");
    out.write_all(&line)?;
    let mut n = 0u64;
    for dev in &plan.devices {
        if cancel.load(Ordering::Relaxed) {
            return Err(RenderError::Cancelled);
        }
        let buckets: Vec<_> = store
            .scan_buckets(&dev.id, plan.start_ms, plan.end_ms)?
            .collect::<Result<_, _>>()?;
        let hours = aggregate(buckets, Period::Hour, chrono_tz::UTC);
        let id = slug(dev.id.as_str());
        // `sum` counts from the device's first bucket, so that later exports go on from it.
        let prior = store.provenance(&dev.id, i64::MIN, plan.start_ms)?.0.max(0);
        let (mut sum_mwh, mut state_wh) = (prior, None::<i64>);
        if let (true, Some(first)) = (energy, hours.first()) {
            line.clear();
            let _ = write!(line, "{prefix}:{id}_energy,kWh,");
            fmt_start(&mut line, first.start_ms - 3_600_000);
            if power {
                line.extend_from_slice(b",,,");
            }
            line.push(b',');
            push_num(&mut line, prior as f64 / 1e6, 6);
            line.push(b',');
            push_num(&mut line, prior as f64 / 1e6, 6);
            line.extend_from_slice(b"\r\n");
            out.write_all(&line)?;
            n += 1;
        }
        for h in &hours {
            if power && h.meter_samples > 0 {
                line.clear();
                let _ = write!(line, "{prefix}:{id}_power,W,");
                fmt_start(&mut line, h.start_ms);
                for v in [h.power.min as f64, h.power.max as f64] {
                    line.push(b',');
                    push_num(&mut line, v / 1000.0, 3);
                }
                line.push(b',');
                push_num(&mut line, h.mean(&h.power).unwrap_or(0.0) / 1000.0, 3);
                if energy {
                    line.extend_from_slice(b",,");
                }
                line.extend_from_slice(b"\r\n");
                out.write_all(&line)?;
                n += 1;
            }
            if energy {
                sum_mwh += h.energy_mwh.max(0);
                if h.counter_last_wh >= 0 {
                    state_wh = Some(h.counter_last_wh);
                }
                line.clear();
                let _ = write!(line, "{prefix}:{id}_energy,kWh,");
                fmt_start(&mut line, h.start_ms);
                if power {
                    line.extend_from_slice(b",,,");
                }
                line.push(b',');
                match state_wh {
                    Some(c) => push_num(&mut line, c as f64 / 1000.0, 3),
                    None => push_num(&mut line, sum_mwh as f64 / 1e6, 6),
                }
                line.push(b',');
                push_num(&mut line, sum_mwh as f64 / 1e6, 6);
                line.extend_from_slice(b"\r\n");
                out.write_all(&line)?;
                n += 1;
            }
        }
    }
    out.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_what_home_assistant_takes() {
        assert_eq!(slug("8006ABCD_01"), "8006abcd_01");
        assert_eq!(slug("km-192.168.1.50"), "km_192_168_1_50");
        assert_eq!(slug("__A--B__"), "a_b");
        assert!(prefix_ok("kasad") && prefix_ok("flat_2"));
        assert!(!prefix_ok("Kasad") && !prefix_ok("a__b") && !prefix_ok("_a") && !prefix_ok(""));
    }
}
