//! A custom-field formula: parsed, and when it parses, evaluated on rows with hostile values
//! (NaN, infinities, zero, huge) and aggregated over them.
#![no_main]
use kasad::export::formula::{Formula, RowCtx};
use libfuzzer_sys::fuzz_target;

const FIELDS: [&str; 5] = ["power_w", "energy_kwh", "voltage", "current", "cost"];

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let resolve = |name: &str| FIELDS.iter().position(|f| *f == name);
    let Ok(f) = Formula::parse(src, &resolve) else {
        return;
    };
    let rows: [[Option<f64>; 5]; 4] = [
        [Some(0.0), Some(-0.0), None, Some(1e-320), Some(-1.0)],
        [Some(f64::MAX), Some(f64::MIN), Some(f64::INFINITY), Some(f64::NAN), Some(1.0)],
        [Some(230.0), Some(0.5), Some(120.0), Some(0.25), Some(0.1)],
        [None, None, None, None, None],
    ];
    let mut agg = f.aggregator();
    for (i, values) in rows.iter().enumerate() {
        let row = RowCtx {
            values,
            day: i as i64 * 20_000 - 30_000,
            hour: (i as u32 * 7) % 24,
            weekday: 1 + i as u32 % 7,
            month: 1 + i as u32 % 12,
        };
        let _ = f.eval_row(&row);
        let _ = agg.add(&row);
    }
    let _ = agg.finish();
});
