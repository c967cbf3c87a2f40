//! InfluxDB line protocol at millisecond precision: one `kasad_device` line per reading with
//! the `/metrics` names as fields (`power_watts` …), so stores that name series
//! `measurement_field` (VictoriaMetrics) get `kasad_device_power_watts`; the cost goes on a
//! line of its own with the currency as a tag.

use super::samples::Series;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The measurement every line has.
pub const MEASUREMENT: &str = "kasad_device";

/// Escapes a tag value (commas, spaces, equals signs and backslashes).
fn tag(out: &mut String, v: &str) {
    for c in v.chars() {
        if matches!(c, ',' | ' ' | '=' | '\\') {
            out.push('\\');
        }
        // A line ends at a newline: none may appear inside one.
        out.push(if c == '\n' || c == '\r' { ' ' } else { c });
    }
}

/// A series' labels.
type Tags<'a> = &'a [(&'static str, String)];

/// The body: lines grouped by (tags, time), fields named after the series without the
/// measurement's prefix.
pub fn body(series: &[Series]) -> Vec<u8> {
    // (tags, ts) → fields, in time order per tag set.
    let mut lines: BTreeMap<(Tags<'_>, i64), Vec<(&str, f64)>> = BTreeMap::new();
    for s in series {
        let field = s
            .name
            .strip_prefix(MEASUREMENT)
            .and_then(|f| f.strip_prefix('_'))
            .unwrap_or(s.name);
        for &(t, v) in &s.samples {
            lines.entry((&s.labels, t)).or_default().push((field, v));
        }
    }
    let mut out = String::with_capacity(lines.len() * 160);
    for ((tags, t), fields) in lines {
        out.push_str(MEASUREMENT);
        let mut tags: Vec<&(&str, String)> = tags.iter().filter(|(_, v)| !v.is_empty()).collect();
        tags.sort_unstable_by_key(|(k, _)| *k);
        for (k, v) in tags {
            out.push(',');
            out.push_str(k);
            out.push('=');
            tag(&mut out, v);
        }
        for (i, (f, v)) in fields.iter().enumerate() {
            out.push(if i == 0 { ' ' } else { ',' });
            let _ = write!(out, "{f}={v:?}");
        }
        let _ = writeln!(out, " {t}");
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_become_lines_with_the_metrics_names_as_fields() {
        let labels = vec![("device_id", "D 1,x".to_owned()), ("site", String::new())];
        let s = [
            Series {
                name: "kasad_device_power_watts",
                labels: labels.clone(),
                samples: vec![(1_000, 1.5), (2_000, 2.0)],
            },
            Series {
                name: "kasad_device_relay_on",
                labels,
                samples: vec![(1_000, 1.0)],
            },
        ];
        let text = String::from_utf8(body(&s)).unwrap();
        assert_eq!(
            text,
            "kasad_device,device_id=D\\ 1\\,x power_watts=1.5,relay_on=1.0 1000\n\
             kasad_device,device_id=D\\ 1\\,x power_watts=2.0 2000\n"
        );
    }
}
