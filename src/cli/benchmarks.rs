//! Storage benchmark (`kasad bench-store`, hidden): a fixed, realistic data set — timestamp
//! jitter of ±300 ms, noise in mW/mV/mA, relay flips, a counter reset per device per week —
//! ingested in batches, then measured: ingest rate, bytes per reading after compaction, raw
//! scan rate, and rollup query times. Prints one JSON object. Used by `scripts/bench`.
//!
//! Export benchmark (`kasad bench-export`, hidden): the same generator at one reading per
//! device per minute (the shape of `../shared/bench/python_baselines.py`), then device_data
//! raw exports of N rows as CSV, JSON and Excel through the export renderer, timed, with the process's
//! RSS sampled while each runs (peak minus the RSS just before).

use crate::domain::rollup::Period;
use crate::domain::{DeviceId, DeviceInfo, Reading};
use crate::export::kind::Inputs;
use crate::series::{self, Resolution};
use crate::sim::load::{Load, mix, noise};
use crate::store::Store;
use crate::store::write::{Batch, apply};
use crate::tariff::engine::Prices;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn info(i: u32) -> DeviceInfo {
    DeviceInfo::plug(DeviceId::parse(&format!("BENCH{i:04}")).expect("valid"))
        .at(format!("127.0.0.{}:9999", 2 + i))
        .named(format!("Bench plug {i}"))
        .made("KP115(US)", "1.0", "bench")
}

/// Generates `days` of readings every `step_ms` for `devices` devices, in time order
/// (all devices per step, as polling produces them), handing them out in batches.
pub fn generate(
    devices: u32,
    days: i64,
    step_ms: i64,
    start_ms: i64,
    mut sink: impl FnMut(Vec<Reading>),
) -> u64 {
    let loads = [
        Load::Fridge,
        Load::Tv,
        Load::Heater,
        Load::Computer,
        Load::Lamp,
    ];
    let mut energy_mws = vec![0i64; devices as usize];
    let mut last_t = vec![start_ms; devices as usize];
    let steps = days * 86_400_000 / step_ms;
    let mut batch = Vec::with_capacity(10_000);
    let mut n = 0;
    for k in 0..steps {
        for d in 0..devices {
            let seed = mix(u64::from(d) + 99);
            let t = start_ms + k * step_ms + noise(seed, k, 300);
            let s = t.div_euclid(1000);
            let on = (s / 3_600 + i64::from(d)) % 11 != 0; // a relay flip now and then
            let p = if on {
                loads[d as usize % loads.len()].power_mw(seed, s) + noise(seed ^ 1, s, 400).abs()
            } else {
                0
            };
            let i = d as usize;
            energy_mws[i] += p * (t - last_t[i]) / 1000;
            last_t[i] = t;
            if k > 0 && (k * step_ms) % (7 * 86_400_000) < step_ms && d == (k as u32 / 7) % devices
            {
                energy_mws[i] = 0; // a weekly counter reset, staggered
            }
            let v = 120_000 + noise(seed ^ 2, s, 1_500);
            batch.push(Reading {
                device_id: info(d).device_id,
                ts_ms: t,
                power_mw: Some(p),
                voltage_mv: Some(v),
                current_ma: Some(p * 1000 / v + noise(seed ^ 3, s, 2).max(0)),
                counter_wh: Some(energy_mws[i] / 3_600_000),
                relay_on: on,
                rssi: Some(-55 + noise(seed ^ 4, s / 60, 6) as i32),
            });
            n += 1;
            if batch.len() == 10_000 {
                sink(std::mem::take(&mut batch));
            }
        }
    }
    if !batch.is_empty() {
        sink(batch);
    }
    n
}

fn ingest(
    path: &Path,
    devices: u32,
    days: i64,
    step_ms: i64,
    start_ms: i64,
) -> anyhow::Result<(u64, f64)> {
    let store = Store::open(path, 32)?;
    apply(
        &store,
        &Batch {
            devices: (0..devices).map(|i| (info(i), start_ms)).collect(),
            readings: vec![],
            days: vec![],
        },
        true,
    )?;
    let t = Instant::now();
    let mut err = None;
    let n = generate(devices, days, step_ms, start_ms, |readings| {
        if err.is_none() {
            let batch = Batch {
                devices: vec![],
                readings,
                days: vec![],
            };
            err = apply(&store, &batch, false).err();
        }
    });
    if let Some(e) = err {
        return Err(e.into());
    }
    apply(&store, &Batch::default(), true)?;
    Ok((n, t.elapsed().as_secs_f64()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the storage benchmark in `dir`.
pub fn run(dir: &Path, devices: u32, days: i64) -> anyhow::Result<Value> {
    let start = 1_735_689_600_000; // 2025-01-01T00:00:00Z
    let raw_path = dir.join("raw.redb");
    let (n, secs) = ingest(&raw_path, devices, days, 10_000, start)?;
    let before = std::fs::metadata(&raw_path)?.len();
    let store = Store::open(&raw_path, 32)?.compact()?;
    let size = std::fs::metadata(&raw_path)?.len();
    let (block_bytes, rollup_bytes) = store.payload_bytes()?;
    let ids: Vec<DeviceId> = (0..devices).map(|i| info(i).device_id).collect();
    let mut scan = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let mut rows = 0u64;
        for id in &ids {
            for r in store.scan_raw(id, i64::MIN, i64::MAX)? {
                r?;
                rows += 1;
            }
        }
        anyhow::ensure!(rows == n, "scan returned {rows} of {n} readings");
        scan.push(rows as f64 / t.elapsed().as_secs_f64());
    }
    drop(store);

    // A year of 15-minute readings for rollup queries.
    let year_path = dir.join("year.redb");
    ingest(&year_path, devices, 365, 900_000, start)?;
    let ys = Store::open(&year_path, 32)?;
    let tz: chrono_tz::Tz = "America/New_York".parse().expect("zone");
    let end = start + 365 * 86_400_000;
    let mut daily = Vec::new();
    let mut hourly = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let d = series::series(
            &ys,
            &ids[0],
            start,
            end,
            Resolution::Rollup(Period::Day),
            tz,
        )?;
        daily.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(d.len() >= 365, "daily rollups: {}", d.len());
        let t = Instant::now();
        let mut rows = 0;
        for id in &ids {
            rows +=
                series::series(&ys, id, start, end, Resolution::Rollup(Period::Hour), tz)?.len();
        }
        hourly.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(rows >= 365 * 24 * ids.len(), "hourly rollups: {rows}");
    }
    Ok(json!({
        "readings": n,
        "ingest_per_s": n as f64 / secs,
        "file_bytes_before_compaction": before,
        "file_bytes": size,
        "bytes_per_reading": size as f64 / n as f64,
        "block_payload_bytes_per_reading": block_bytes as f64 / n as f64,
        "rollup_payload_bytes_per_reading": rollup_bytes as f64 / n as f64,
        "scan_per_s": median(scan),
        "daily_one_device_year_ms": median(daily),
        "hourly_ten_device_years_ms": median(hourly),
    }))
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time of this process so far (user + system, all threads), seconds; Linux ticks of 10 ms.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| {
            // Fields after the command name (which may hold spaces) start at field 3.
            let rest = &t[t.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .map_or(0.0, |ticks| ticks / 100.0)
}

/// Plans `body` against the stored devices at `now_ms` (UTC default zone, default limits).
fn bench_plan(
    records: &[crate::store::DeviceRecord],
    tariffs: &crate::tariff::Versions,
    limits: &crate::config::Exports,
    body: Value,
    now_ms: i64,
) -> anyhow::Result<crate::export::plan::Plan> {
    use crate::export::plan::{self, PlanCtx};
    use crate::export::request::CreateRequest;
    let body: CreateRequest = serde_json::from_value(body)?;
    let ctx = PlanCtx {
        devices: records,
        default_tz: chrono_tz::Tz::UTC,
        limits,
        tariffs,
        privacy_key: &[0; 32],
        now_ms,
    };
    plan::plan(&body, &ctx, None).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The default (flat) tariff.
fn flat_tariff() -> anyhow::Result<crate::tariff::Versions> {
    crate::tariff::Versions::compile(&[crate::config::Tariff::default()], chrono_tz::Tz::UTC)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs the export benchmark in `dir` with `rows` readings (10 devices), `runs` times.
pub fn run_export(dir: &Path, rows: u64, runs: usize, formats: &[String]) -> anyhow::Result<Value> {
    use crate::export::pipeline::{self as render, Control, Limits};
    let start = 1_735_689_600_000; // 2025-01-01T00:00:00Z
    let devices = 10;
    let minutes = rows.div_ceil(u64::from(devices)) as i64;
    let days = (minutes + 1439) / 1440;
    let path = dir.join("export.redb");
    let (n, _) = ingest(&path, devices, days, 60_000, start)?;
    let store = Store::open(&path, 16)?;
    let end = start + minutes * 60_000 - 1_000;
    let records = store.device_records()?;
    let limits_cfg = crate::config::Exports {
        max_records_per_export: u64::MAX,
        ..Default::default()
    };
    let tariff = flat_tariff()?;
    let mut out = serde_json::Map::new();
    out.insert("readings_stored".into(), json!(n));
    for format in formats {
        let body = json!({
            "export_type": "device_data", "format": format, "devices": "all",
            "date_range": {"start": crate::clock::rfc3339(start - 1_000), "end": crate::clock::rfc3339(end)},
            "fields": ["timestamp", "device_ip", "device_name", "power_w", "energy_kwh", "voltage", "current", "cost", "is_on"],
            "options": {"timezone": "UTC"},
        });
        let plan = bench_plan(&records, &tariff, &limits_cfg, body, end)?;
        let meta = crate::export::kind::metadata(&plan, "bench", "bench", None);
        let inputs = Inputs::Rows(std::sync::Arc::new(Prices::Const(plan.price_per_kwh)));
        let (mut times, mut cpu, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
        let mut last = None;
        for _ in 0..runs {
            let file = dir.join(format!("out.{format}"));
            let idle = rss_kb();
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let sampler = {
                let done = done.clone();
                std::thread::spawn(move || {
                    let mut peak = 0;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        peak = peak.max(rss_kb());
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    peak
                })
            };
            let (t, c) = (Instant::now(), cpu_seconds());
            let r = render::render(
                &store,
                &plan,
                &inputs,
                &meta,
                &file,
                "out",
                Limits {
                    max_records: u64::MAX,
                    max_bytes: u64::MAX,
                    distinct_budget: usize::MAX,
                },
                &Control::default(),
            )?;
            times.push(t.elapsed().as_secs_f64());
            cpu.push(cpu_seconds() - c);
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let peak = sampler.join().unwrap_or(0).max(rss_kb());
            peaks.push(peak.saturating_sub(idle) as f64 / 1024.0);
            last = Some(r);
        }
        let r = last.ok_or_else(|| anyhow::anyhow!("no run"))?;
        out.insert(
            format.into(),
            json!({"rows": r.record_count, "bytes": r.file_size, "seconds": median(times), "cpu_seconds": median(cpu),
                   "rss_above_idle_mb": peaks.iter().copied().fold(0.0, f64::max)}),
        );
    }
    Ok(Value::Object(out))
}

/// Runs the report benchmark in `dir`: a year of 15-minute readings of 10 devices, then a
/// system_report PDF of that year (every section, charts), `runs` times (the last file is
/// kept as `dir/report.pdf`), and a monthly cost_analysis (JSON) of the year by device and
/// time-of-use period under a tariff with two periods, a fixed charge and a tax.
pub fn run_report(dir: &Path, runs: usize) -> anyhow::Result<Value> {
    use crate::export::kind::KindPlan;
    use crate::export::pipeline::{self as render, Control, Limits};
    let start = 1_735_689_600_000; // 2025-01-01T00:00:00Z
    let now = start + 366 * 86_400_000;
    let path = dir.join("report.redb");
    let (n, _) = ingest(&path, 10, 365, 900_000, start)?;
    let store = Store::open(&path, 16)?;
    let records = store.device_records()?;
    let limits_cfg = crate::config::Exports::default();
    let body = json!({
        "export_type": "system_report", "format": "pdf",
        "date_range": {"start": "2025-01-01", "end": "2025-12-31"},
        "options": {"timezone": "America/New_York"},
    });
    let plan = bench_plan(&records, &flat_tariff()?, &limits_cfg, body, now)?;
    let KindPlan::SystemReport(sections) = &plan.kind else {
        anyhow::bail!("not a report plan");
    };
    let meta = crate::export::kind::metadata(&plan, "bench", "bench", None);
    let file = dir.join("report.pdf");
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let ctl = Control::default();
        let report = crate::export::kind::system_report::build(
            &store, &plan, sections, None, now, None, &ctl,
        )?;
        let inputs = Inputs::Document(report);
        let limits = Limits {
            max_records: u64::MAX,
            max_bytes: u64::MAX,
            distinct_budget: usize::MAX,
        };
        let r = render::render(
            &store,
            &plan,
            &inputs,
            &meta,
            &file,
            "report.pdf",
            limits,
            &ctl,
        )?;
        times.push(t.elapsed().as_secs_f64());
        last = Some(r);
    }
    let r = last.ok_or_else(|| anyhow::anyhow!("no run"))?;
    let bytes = std::fs::read(&file)?;
    // Page objects: "/Type/Page" not followed by "s".
    let pages = bytes
        .windows(10)
        .enumerate()
        .filter(|(i, w)| *w == b"/Type/Page" && bytes.get(i + 10).is_some_and(|b| *b != b's'))
        .count();
    // A monthly cost_analysis of the same year, by device and time-of-use period.
    let tou: crate::tariff::Tariff = serde_json::from_value(json!({
        "currency": "USD", "rates": {"type": "time_of_use", "default_price_per_kwh": 0.12,
        "periods": [{"name": "peak", "days": [1, 2, 3, 4, 5], "start": "16:00", "end": "21:00", "price_per_kwh": 0.32},
                    {"name": "night", "start": "23:00", "end": "06:00", "price_per_kwh": 0.08}]},
        "fixed_charges": [{"name": "service", "amount": 12.5, "per": "month"}],
        "taxes": [{"name": "VAT", "percent": 5}]}))?;
    let tariffs = crate::tariff::Versions::compile(&[tou], chrono_tz::Tz::UTC)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let body = json!({
        "export_type": "cost_analysis", "format": "json", "grouping": "monthly",
        "breakdown_by": ["device", "time_of_use"],
        "date_range": {"start": "2025-01-01", "end": "2025-12-31"},
        "options": {"timezone": "America/New_York"},
    });
    let cplan = bench_plan(&records, &tariffs, &limits_cfg, body, now)?;
    let KindPlan::CostAnalysis(options) = &cplan.kind else {
        anyhow::bail!("not a cost plan");
    };
    let (grouping, breakdown) = (options.grouping, options.breakdown);
    let cmeta = crate::export::kind::metadata(&cplan, "bench", "bench", None);
    let mut cost_times = Vec::new();
    let mut cost_rows = 0;
    for _ in 0..runs.max(3) {
        let t = Instant::now();
        let ctl = Control::default();
        let report =
            crate::export::kind::cost_analysis::report(&store, &cplan, grouping, breakdown, &ctl)?;
        let inputs = Inputs::Document(report);
        let limits = Limits {
            max_records: u64::MAX,
            max_bytes: u64::MAX,
            distinct_budget: usize::MAX,
        };
        let file = dir.join("cost.json");
        let r = render::render(
            &store,
            &cplan,
            &inputs,
            &cmeta,
            &file,
            "cost.json",
            limits,
            &ctl,
        )?;
        cost_times.push(t.elapsed().as_secs_f64());
        cost_rows = r.record_count;
    }
    Ok(
        json!({"readings_stored": n, "pdf": {"rows": r.record_count, "bytes": r.file_size,
        "pages": pages, "seconds": median(times)},
        "cost_analysis": {"rows": cost_rows, "seconds": median(cost_times)}}),
    )
}

/// Runs the insights benchmark in `dir`: `devices` devices × `days` of readings — one per
/// 15-minute bucket, and for the last 28 days one every 10 s as the daemon polls by default
/// (cycles and runs need them) — then the household's insights as of the last day's noon,
/// `runs` times from a cold cache (median) and once more with the past days' duty cached, as
/// the daemon answers every request after its first.
pub fn run_insights(dir: &Path, devices: u32, days: i64, runs: usize) -> anyhow::Result<Value> {
    use crate::insights::{DayCache, Params, compute::compute};
    const RAW_DAYS: i64 = 28;
    let start = 1_735_689_600_000; // 2025-01-01T00:00:00Z
    let now = start + (days - 1) * 86_400_000 + 12 * 3_600_000;
    let path = dir.join("insights.redb");
    let old = (days - RAW_DAYS).max(0);
    let (n, _) = ingest(&path, devices, old, 900_000, start)?;
    let (m, _) = ingest(&path, devices, days - old, 10_000, start + old * 86_400_000)?;
    let n = n + m;
    let store = Store::open(&path, 16)?;
    let tariffs = flat_tariff()?;
    let params = Params::of(&crate::config::Insights::default(), None);
    let tz = chrono_tz::America::New_York;
    let mut times = Vec::new();
    let mut cache = DayCache::new();
    let mut report = None;
    for _ in 0..runs.max(1) {
        cache = DayCache::new();
        let t = Instant::now();
        report = Some(compute(&store, &tariffs, &params, now, tz, &mut cache)?);
        times.push(t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    compute(&store, &tariffs, &params, now, tz, &mut cache)?;
    let warm = t.elapsed().as_secs_f64();
    let report = report.ok_or_else(|| anyhow::anyhow!("no run"))?;
    let kinds = |k| report.devices.iter().filter(|d| d.load_kind == k).count();
    use crate::domain::labels::LoadKind::{Cycling, Programme, Steady};
    Ok(
        json!({"readings_stored": n, "devices": report.devices.len(),
        "cycling": kinds(Cycling), "programme": kinds(Programme), "steady": kinds(Steady),
        "cold_seconds": median(times), "warm_seconds": warm}),
    )
}

/// Runs the alerts benchmark in `dir`: `devices` devices with an hour of 10-second readings and
/// `rules` rules over all of them (power above and below, offline, energy today, appliance
/// runs), then `cycles` poll cycles: the evaluation alone (median ms, from the devices' state as
/// a cycle leaves it), and the whole evaluation as the daemon runs it after a cycle (reading
/// that state from the store, storing what changed).
pub fn run_alerts(dir: &Path, devices: u32, rules: usize, cycles: usize) -> anyhow::Result<Value> {
    use crate::alerts::{Alerts, eval::DeviceNow};
    use crate::domain::alert::{Rule, RuleBody};
    let start = 1_735_689_600_000; // 2025-01-01T00:00:00Z
    let path = dir.join("alerts.redb");
    let (n, _) = ingest(&path, devices, 1, 10_000, start)?;
    let store = Store::open(&path, 16)?;
    let now = start + 86_400_000 - 10_000;
    let kinds = [
        json!({"kind": "power_above", "threshold_w": 1_000, "for_minutes": 5}),
        json!({"kind": "power_below", "threshold_w": 1, "for_minutes": 30}),
        json!({"kind": "device_offline", "for_minutes": 10}),
        json!({"kind": "daily_energy_above", "kwh": 5}),
        json!({"kind": "appliance_finished"}),
    ];
    for i in 0..rules {
        let mut b = kinds[i % kinds.len()].clone();
        b["name"] = json!(format!("rule {i}"));
        b["channels"] = json!(["page"]);
        let body: RuleBody = serde_json::from_value(b)?;
        let rule = Rule {
            rule_id: format!("ar_bench{i:03}"),
            body,
            created_ms: now,
            updated_ms: now,
        };
        store.alert_rule_put(&rule, None)?;
    }
    let clock = Arc::new(crate::clock::ManualClock::new(now));
    let shared: crate::clock::SharedClock = clock.clone();
    let key = crate::auth::keys::SecretKey::from_bytes([7; 32]);
    let alerts = Alerts::new(
        store.clone(),
        shared,
        Arc::new(crate::config::Settings::default()),
        key,
    );
    let list = store.alert_rules()?;
    let records = store.device_records()?;
    let mut eval_ms = Vec::new();
    let mut whole_ms = Vec::new();
    let mut raised = 0;
    for c in 0..cycles {
        let t = now + c as i64 * 10_000;
        clock.set(t);
        let devices: std::collections::HashMap<String, DeviceNow> = records
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let id = r.info.device_id.to_string();
                let p = crate::sim::load::noise(k as u64, t / 1_000, 1_500).abs() as f64;
                let d = DeviceNow {
                    id: id.clone(),
                    name: r.name().to_owned(),
                    last_reading_ms: Some(t),
                    power_w: Some(p),
                    today_kwh: 3.0 + k as f64 / 50.0,
                };
                (id, d)
            })
            .collect();
        let s = Instant::now();
        raised += alerts.evaluate_live(&list, &records, &devices, t)?;
        eval_ms.push(s.elapsed().as_secs_f64() * 1_000.0);
        let s = Instant::now();
        alerts.cycle()?;
        whole_ms.push(s.elapsed().as_secs_f64() * 1_000.0);
    }
    Ok(
        json!({"readings_stored": n, "devices": devices, "rules": rules, "cycles": cycles,
        "changes": raised, "evaluate_ms": median(eval_ms), "cycle_ms": median(whole_ms)}),
    )
}

/// Runs the what-if benchmark in `dir`: 20 devices × a year of 15-minute readings priced under
/// three tariffs (flat; time-of-use with a standing charge and a tax; tiered), `runs` times
/// (median of the three together).
pub fn run_whatif(dir: &Path, runs: usize) -> anyhow::Result<Value> {
    let start = 1_735_689_600_000; // 2025-01-01T00:00:00Z
    let end = start + 365 * 86_400_000;
    let path = dir.join("whatif.redb");
    let (n, _) = ingest(&path, 20, 365, 900_000, start)?;
    let store = Store::open(&path, 16)?;
    let tz = chrono_tz::Tz::UTC;
    let tariffs: Vec<crate::tariff::Tariff> = vec![
        serde_json::from_value(json!({"price_per_kwh": 0.2}))?,
        serde_json::from_value(
            json!({"rates": {"type": "time_of_use", "default_price_per_kwh": 0.3,
            "periods": [{"name": "night", "start": "22:00", "end": "06:00", "price_per_kwh": 0.1}]},
            "fixed_charges": [{"name": "standing", "amount": 0.5, "per": "day"}],
            "taxes": [{"name": "VAT", "percent": 5}]}),
        )?,
        serde_json::from_value(json!({"rates": {"type": "tiered", "tiers": [
            {"up_to_kwh": 300, "price_per_kwh": 0.15}, {"price_per_kwh": 0.25}]}}))?,
    ];
    let compiled: Vec<crate::tariff::Compiled> = tariffs
        .iter()
        .map(|t| crate::tariff::Compiled::new(t, tz))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ids: Vec<DeviceId> = (0..20).map(|i| info(i).device_id).collect();
    let mut times = Vec::new();
    let mut totals = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        totals = compiled
            .iter()
            .map(|c| {
                crate::tariff::compare::price_under(&store, c, &ids, start, end, tz)
                    .map(|p| p.total)
            })
            .collect::<Result<Vec<_>, _>>()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(
        json!({"readings_stored": n, "devices": 20, "tariffs": compiled.len(), "totals_minor": totals,
        "seconds": median(times)}),
    )
}

/// Statement benchmark (`kasad bench-statement`, hidden): a signed PDF statement of one
/// device over one year of minute readings, computed, rendered, signed and written; then
/// checked as `kasad statement verify` does.
pub fn run_statement(dir: &Path, runs: usize) -> anyhow::Result<Value> {
    use crate::export::kind::{Inputs, KindPlan, statement};
    use crate::export::pipeline::{self as render, Control, Limits};
    let start = 1_735_689_600_000; // 2025-01-01T00:00:00Z
    let now = start + 366 * 86_400_000;
    let path = dir.join("statement.redb");
    let (n, _) = ingest(&path, 1, 365, 60_000, start)?;
    let store = Store::open(&path, 16)?;
    let records = store.device_records()?;
    let body = json!({
        "export_type": "statement", "format": "pdf", "devices": "all",
        "date_range": {"start": "2025-01-01", "end": "2025-12-31"},
        "options": {"timezone": "Europe/Berlin"},
    });
    let plan = bench_plan(&records, &flat_tariff()?, &Default::default(), body, now)?;
    let KindPlan::Statement(o) = &plan.kind else {
        anyhow::bail!("not a statement plan");
    };
    let meta = crate::export::kind::metadata(&plan, "bench", "bench", None);
    let key = std::sync::Arc::new(crate::auth::signing::StatementKey::load_or_create(dir)?);
    let file = dir.join("statement.pdf");
    let (mut times, mut checks) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let ctl = Control::default();
        let built = statement::build(&store, &plan, o, "bench".into(), key.clone(), &ctl)?;
        let limits = Limits {
            max_records: u64::MAX,
            max_bytes: u64::MAX,
            distinct_budget: usize::MAX,
        };
        let inputs = Inputs::Statement(Box::new(built));
        render::render(
            &store,
            &plan,
            &inputs,
            &meta,
            &file,
            "statement.pdf",
            limits,
            &ctl,
        )?;
        times.push(t.elapsed().as_secs_f64());
        let bytes = std::fs::read(&file)?;
        let t = Instant::now();
        crate::export::signed::verify(&bytes, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        checks.push(t.elapsed().as_secs_f64());
    }
    Ok(
        json!({"readings_stored": n, "bytes": std::fs::metadata(&file)?.len(),
        "seconds": median(times), "verify_seconds": median(checks)}),
    )
}

/// Push benchmark (`kasad bench-push`, hidden): `devices` × `days` of 10-second readings
/// pushed by a backfill to the target at `url` (a victoria-metrics the caller started), once
/// by remote write and once by line protocol; readings per second, and the bytes written to
/// the data disk per pushed reading (the cursors only: the store is the queue).
pub async fn run_push(dir: &Path, url: &str, devices: u32, days: i64) -> anyhow::Result<Value> {
    let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
    let start = now - days * 86_400_000 - 3_600_000;
    let path = dir.join("kasad.redb");
    ingest(&path, devices, days, 10_000, start)?;
    let store = Store::open(&path, 64)?;
    // What the store kept (a generated reading not newer than the one before is refused).
    let n: u64 = store.devices()?.iter().map(|d| d.data_points).sum();
    let clock: crate::clock::SharedClock = Arc::new(crate::clock::SystemClock);
    let mut out = json!({"readings": n, "devices": devices});
    for kind in ["remote_write", "influx"] {
        let mut settings = crate::config::Settings {
            data_dir: dir.to_path_buf(),
            ..Default::default()
        };
        settings.delivery.webhook_allow = vec![url.to_owned()];
        settings.push = vec![crate::config::PushTarget {
            name: kind.replace('_', "-"),
            kind: kind.into(),
            url: if kind == "influx" {
                url.to_owned()
            } else {
                format!("{url}/api/v1/write")
            },
            site: kind.into(),
            bearer_token_file: None,
            username: None,
            password_file: None,
            ca_file: None,
            org: None,
            bucket: None,
            database: (kind == "influx").then(|| "bench".into()),
            series: "raw".into(),
            batch: 10_000,
            retry_max: crate::config::Dur(std::time::Duration::from_secs(10)),
            max_age: crate::config::Dur(std::time::Duration::from_secs(30 * 86_400)),
        }];
        let push = crate::push::Push::new(&store, &settings, clock.now_ms())?;
        let name = &settings.push[0].name;
        push.request_backfill(&store, name, start - 3_600_000, false)?;
        let data = std::fs::File::open(dir)?;
        rustix::fs::syncfs(&data)?;
        let (_, w0) = io_counters();
        let t = Instant::now();
        let status = push.drain_backfill(&store, &clock, name).await?;
        let secs = t.elapsed().as_secs_f64();
        rustix::fs::syncfs(&data)?;
        let (_, w1) = io_counters();
        let sent = status["sent"].as_u64().unwrap_or(0);
        anyhow::ensure!(sent == n, "{kind}: {sent} of {n} readings sent: {status}");
        out[kind] = json!({"seconds": secs, "readings_per_s": n as f64 / secs,
            "disk_bytes": w1 - w0, "disk_bytes_per_reading": (w1 - w0) as f64 / n as f64});
    }
    Ok(out)
}

/// `/proc/self/io` counters: (wchar, write_bytes).
fn io_counters() -> (u64, u64) {
    let t = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let get = |k: &str| {
        t.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
            .unwrap_or(0)
    };
    (get("wchar:"), get("write_bytes:"))
}

/// Storage wear benchmark (`kasad bench-wear`, hidden): `hours` of 10 devices polled every
/// 10 s, replayed quickly through the store as the writer does it — a non-durable commit per
/// poll cycle, the batch appended to the staging log first, the log synced every 30 simulated
/// seconds and a durable checkpoint every `checkpoint_s` (30 or less: no log, a durable
/// commit every 30 s, as before the log) — with the kernel's writeback emulated every 30
/// simulated seconds (syncfs), so that a page written again later counts again as it would on
/// a real day. Reports bytes handed to write(2) and bytes written to storage per simulated
/// day, and the peak RSS.
pub fn run_wear(
    dir: &Path,
    hours: i64,
    checkpoint_s: i64,
    cache_mb: usize,
) -> anyhow::Result<Value> {
    use crate::store::staging::Staging;
    let start = 1_735_689_600_000; // 2025-01-01T00:00:00Z
    let path = dir.join("wear.redb");
    // A week of history first, so that the trees have their real depth.
    ingest(&path, 10, 7, 10_000, start)?;
    let store = Store::open(&path, cache_mb)?;
    let fd = std::fs::File::open(dir)?;
    let mut log = (checkpoint_s > 30)
        .then(|| Staging::open(&dir.join("staging.log")).map(|(l, _)| l))
        .transpose()?;
    let begin = start + 7 * 86_400_000;
    let mut cycles: Vec<Vec<Reading>> = Vec::new();
    generate(10, (hours + 23) / 24, 10_000, begin, |batch| {
        cycles.extend(batch.chunks(10).map(<[Reading]>::to_vec));
    });
    cycles.truncate((hours * 360) as usize);
    rustix::fs::syncfs(&fd)?;
    let (w0, b0) = io_counters();
    let mut peak = 0;
    for (k, readings) in cycles.into_iter().enumerate() {
        let elapsed_s = (k as i64 + 1) * 10;
        let batch = Batch {
            devices: vec![],
            readings,
            days: vec![],
        };
        let checkpoint = elapsed_s % checkpoint_s.max(30) == 0;
        match log.as_mut() {
            Some(l) => {
                l.append(&batch)?;
                apply(&store, &batch, checkpoint)?;
                if checkpoint {
                    l.clear()?;
                } else if elapsed_s % 30 == 0 {
                    l.sync()?;
                }
            }
            None => {
                apply(&store, &batch, checkpoint)?;
            }
        }
        if elapsed_s % 30 == 0 {
            rustix::fs::syncfs(&fd)?;
            peak = peak.max(rss_kb());
        }
    }
    apply(&store, &Batch::default(), true)?;
    rustix::fs::syncfs(&fd)?;
    let (w1, b1) = io_counters();
    let per_day = |x: u64| x as f64 * 24.0 / hours as f64 / 1e6;
    Ok(
        json!({"hours": hours, "checkpoint_every_s": checkpoint_s, "cache_mb": cache_mb,
        "wchar_mb_per_day": per_day(w1 - w0), "write_bytes_mb_per_day": per_day(b1 - b0),
        "peak_rss_mb": peak as f64 / 1024.0}),
    )
}
