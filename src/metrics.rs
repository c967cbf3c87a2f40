//! Prometheus text exposition (format 0.0.4) of kasad's state for `GET /metrics`.
//!
//! Owns: the metric names, their help and types, label escaping, and reading the process's
//! own figures from `/proc/self`. What is measured comes in as [`Inputs`].

use crate::export::ExportRecord;
use crate::live::Live;
use std::fmt::Write;

/// One device's reachability and poll counts since the daemon started.
#[derive(Debug, Clone, Default)]
pub struct PollCounts {
    /// Answering now.
    pub online: bool,
    /// Successful polls.
    pub ok: u64,
    /// Failed polls.
    pub failed: u64,
}

/// Everything `/metrics` reports.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Devices now (strips included, as the sum of their outlets).
    pub live: Vec<Live>,
    /// Poll counts by device id (plugs and strips; outlets share their strip's).
    pub polls: std::collections::HashMap<String, PollCounts>,
    /// Last poll cycle: end time (UTC ms, 0 = none yet), duration ms, devices ok, failed.
    pub cycle: (i64, i64, i64, i64),
    /// Readings stored, staging syncs and durable commits, checkpoints, failed writes.
    pub writer: (u64, u64, u64, u64),
    /// Write transactions begun since start (every kind: readings, logins, audit …).
    pub write_transactions: u64,
    /// Every export job.
    pub exports: Vec<ExportRecord>,
    /// Size of the database file, bytes.
    pub db_bytes: u64,
    /// Daemon start, UTC ms.
    pub started_ms: i64,
    /// MQTT when on: connected, messages published, dropped (full outbox), commands.
    pub mqtt: Option<(bool, u64, u64, u64)>,
    /// Push targets' counters.
    pub push: Vec<crate::push::Stats>,
}

/// Writes families and samples.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// A counter without labels.
    fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], v as f64);
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(val));
            }
            self.0.push('}');
        }
        let _ = if v.is_nan() {
            writeln!(self.0, " NaN")
        } else if v.is_infinite() {
            writeln!(self.0, " {}Inf", if v > 0.0 { "+" } else { "-" })
        } else {
            writeln!(self.0, " {v}")
        };
    }
}

/// How a value is named in the API (its serde name: `strip_outlet`, `completed`, `csv`).
fn wire_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text.
pub fn render(i: &Inputs) -> String {
    let mut o = Out(String::with_capacity(4096 + 600 * i.live.len()));
    o.family("kasad_build_info", "gauge", "The running version.");
    o.sample(
        "kasad_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );

    devices(&mut o, i);
    polls(&mut o, i);
    store(&mut o, i);
    exports(&mut o, i);
    process(&mut o, i);
    o.0
}

/// Per device: the info series and the newest values.
fn devices(o: &mut Out, i: &Inputs) {
    type Pick = fn(&Live) -> Option<f64>;
    let per_device: [(&str, &str, Pick); 5] = [
        (
            "kasad_device_power_watts",
            "Power of the newest reading (strips: the sum of their outlets).",
            |l| l.power_mw.map(|v| v as f64 / 1e3),
        ),
        (
            "kasad_device_voltage_volts",
            "Mains voltage of the newest reading.",
            |l| l.voltage_mv.map(|v| v as f64 / 1e3),
        ),
        (
            "kasad_device_current_amperes",
            "Current of the newest reading.",
            |l| l.current_ma.map(|v| v as f64 / 1e3),
        ),
        (
            "kasad_device_relay_on",
            "1 when the relay is closed (strips: any outlet).",
            |l| l.is_on.map(|b| f64::from(u8::from(b))),
        ),
        (
            "kasad_device_energy_today_watt_hours",
            "Energy since local midnight in the daemon's zone, from the device's counter.",
            |l| Some(l.today_mwh as f64 / 1e3),
        ),
    ];
    let id = |l: &Live| l.id.as_ref().map(ToString::to_string).unwrap_or_default();
    // Names and models in one info series, so a rename does not start new value series.
    o.family(
        "kasad_device_info",
        "gauge",
        "1 for every device, with its name, model and type (join on device_id).",
    );
    for l in &i.live {
        let kind = l.device_type.as_ref().map(wire_name).unwrap_or_default();
        o.sample(
            "kasad_device_info",
            &[
                ("device_id", &id(l)),
                ("name", &l.name),
                ("model", &l.model),
                ("type", &kind),
            ],
            1.0,
        );
    }
    for (name, help, pick) in per_device {
        o.family(name, "gauge", help);
        for l in &i.live {
            if let Some(v) = pick(l) {
                o.sample(name, &[("device_id", &id(l))], v);
            }
        }
    }
    o.family(
        "kasad_device_energy_counter_watt_hours_total",
        "counter",
        "The device's own cumulative energy counter (it may restart from zero when the device resets).",
    );
    for l in &i.live {
        if let Some(c) = l.counter_wh {
            o.sample(
                "kasad_device_energy_counter_watt_hours_total",
                &[("device_id", &id(l))],
                c as f64,
            );
        }
    }
}

/// Reachability, poll counts and the last poll cycle.
fn polls(o: &mut Out, i: &Inputs) {
    o.family(
        "kasad_device_online",
        "gauge",
        "1 when the device answered its last poll.",
    );
    let mut ids: Vec<&String> = i.polls.keys().collect();
    ids.sort();
    for id in &ids {
        let p = &i.polls[*id];
        o.sample(
            "kasad_device_online",
            &[("device_id", id)],
            f64::from(u8::from(p.online)),
        );
    }
    o.family(
        "kasad_polls_total",
        "counter",
        "Polls since the daemon started, by device and result.",
    );
    for id in &ids {
        let p = &i.polls[*id];
        o.sample(
            "kasad_polls_total",
            &[("device_id", id), ("result", "ok")],
            p.ok as f64,
        );
        o.sample(
            "kasad_polls_total",
            &[("device_id", id), ("result", "failed")],
            p.failed as f64,
        );
    }
    let (end, dur, ok, failed) = i.cycle;
    o.family(
        "kasad_poll_cycle_duration_seconds",
        "gauge",
        "How long the last poll cycle took.",
    );
    o.sample("kasad_poll_cycle_duration_seconds", &[], dur as f64 / 1e3);
    o.family(
        "kasad_poll_cycle_end_timestamp_seconds",
        "gauge",
        "When the last poll cycle ended (0: none yet).",
    );
    o.sample(
        "kasad_poll_cycle_end_timestamp_seconds",
        &[],
        end as f64 / 1e3,
    );
    o.family(
        "kasad_poll_cycle_devices",
        "gauge",
        "Devices in the last poll cycle, by result.",
    );
    o.sample("kasad_poll_cycle_devices", &[("result", "ok")], ok as f64);
    o.sample(
        "kasad_poll_cycle_devices",
        &[("result", "failed")],
        failed as f64,
    );
}

/// The store writer, MQTT and the database file.
fn store(o: &mut Out, i: &Inputs) {
    let (stored, durable, checkpoints, write_failures) = i.writer;
    for (name, help, v) in [
        (
            "kasad_readings_stored_total",
            "Readings stored since the daemon started.",
            stored,
        ),
        (
            "kasad_durable_commits_total",
            "Staging-log syncs and durable database commits since start.",
            durable,
        ),
        (
            "kasad_checkpoints_total",
            "Durable database commits (checkpoints) since start.",
            checkpoints,
        ),
        (
            "kasad_write_failures_total",
            "Failed store transactions since start.",
            write_failures,
        ),
        (
            "kasad_store_write_transactions_total",
            "Database write transactions begun since start.",
            i.write_transactions,
        ),
    ] {
        o.counter(name, help, v);
    }
    if let Some((connected, published, dropped, commands)) = i.mqtt {
        o.family(
            "kasad_mqtt_connected",
            "gauge",
            "1 while connected to the MQTT broker.",
        );
        o.sample("kasad_mqtt_connected", &[], f64::from(u8::from(connected)));
        for (name, help, v) in [
            (
                "kasad_mqtt_messages_published_total",
                "MQTT messages handed to the broker connection since start.",
                published,
            ),
            (
                "kasad_mqtt_messages_dropped_total",
                "MQTT messages dropped, oldest first, from a full outbox since start.",
                dropped,
            ),
            (
                "kasad_mqtt_commands_total",
                "Relay commands received over MQTT since start (obeyed or not).",
                commands,
            ),
        ] {
            o.counter(name, help, v);
        }
    }
    push(o, i);
    o.family(
        "kasad_database_size_bytes",
        "gauge",
        "Size of the database file.",
    );
    o.sample("kasad_database_size_bytes", &[], i.db_bytes as f64);
}

/// Push targets: samples sent, readings skipped, failed requests, lag.
fn push(o: &mut Out, i: &Inputs) {
    if i.push.is_empty() {
        return;
    }
    type Pick = fn(&crate::push::Stats) -> f64;
    let families: [(&str, &str, &str, Pick); 4] = [
        (
            "kasad_push_samples_sent_total",
            "counter",
            "Samples the target acknowledged (a reading is up to seven: values, energy, cost).",
            |s| s.samples_sent as f64,
        ),
        (
            "kasad_push_skipped_samples_total",
            "counter",
            "Readings never pushed: older than max_age when the target came back.",
            |s| s.skipped as f64,
        ),
        (
            "kasad_push_errors_total",
            "counter",
            "Push requests that failed (they are retried).",
            |s| s.errors as f64,
        ),
        (
            "kasad_push_lag_seconds",
            "gauge",
            "Age of the oldest reading not yet pushed (0 when caught up).",
            |s| s.lag_seconds,
        ),
    ];
    for (name, kind, help, pick) in families {
        o.family(name, kind, help);
        for s in &i.push {
            o.sample(name, &[("target", &s.name)], pick(s));
        }
    }
}

/// Export jobs: by type, format and status; durations of the finished ones.
fn exports(o: &mut Out, i: &Inputs) {
    let mut jobs: std::collections::BTreeMap<(String, String, String), u64> = Default::default();
    let mut took: std::collections::BTreeMap<(String, String), (f64, u64)> = Default::default();
    for r in &i.exports {
        let (status, format) = (wire_name(&r.status), wire_name(&r.format));
        *jobs
            .entry((r.export_type.name().to_owned(), format.clone(), status))
            .or_default() += 1;
        if let (Some(s), Some(e)) = (r.started_ms, r.completed_ms) {
            let t = took
                .entry((r.export_type.name().to_owned(), format))
                .or_default();
            t.0 += (e - s).max(0) as f64 / 1e3;
            t.1 += 1;
        }
    }
    o.family(
        "kasad_export_jobs",
        "gauge",
        "Export jobs on record, by type, format and status.",
    );
    for ((t, f, s), n) in &jobs {
        o.sample(
            "kasad_export_jobs",
            &[("export_type", t), ("format", f), ("status", s)],
            *n as f64,
        );
    }
    // Gauges, not a summary: retention removes records, so these may go down.
    for (name, help, sum) in [
        (
            "kasad_export_recorded_duration_seconds",
            "Total time from start to end of the finished export jobs on record.",
            true,
        ),
        (
            "kasad_export_recorded_finished",
            "Finished export jobs on record (with a start and an end).",
            false,
        ),
    ] {
        o.family(name, "gauge", help);
        for ((t, f), (secs, n)) in &took {
            let ls = [("export_type", t.as_str()), ("format", f.as_str())];
            o.sample(name, &ls, if sum { *secs } else { *n as f64 });
        }
    }
}

/// The process's own figures (the names Prometheus client libraries use).
fn process(o: &mut Out, i: &Inputs) {
    let p = Process::read();
    o.family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch.",
    );
    o.sample("process_start_time_seconds", &[], i.started_ms as f64 / 1e3);
    if let Some(v) = p.cpu_seconds {
        o.family(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent.",
        );
        o.sample("process_cpu_seconds_total", &[], v);
    }
    if let Some(v) = p.rss_bytes {
        o.family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size.",
        );
        o.sample("process_resident_memory_bytes", &[], v as f64);
    }
    if let Some(v) = p.open_fds {
        o.family("process_open_fds", "gauge", "Open file descriptors.");
        o.sample("process_open_fds", &[], v as f64);
    }
    if let Some(v) = p.threads {
        o.family("process_threads", "gauge", "Threads of the process.");
        o.sample("process_threads", &[], v as f64);
    }
}

/// The process's own figures from `/proc/self` (Linux); absent elsewhere.
#[derive(Debug, Default)]
struct Process {
    cpu_seconds: Option<f64>,
    rss_bytes: Option<u64>,
    open_fds: Option<u64>,
    threads: Option<u64>,
}

impl Process {
    fn read() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
        };
        // utime and stime are fields 14 and 15, in clock ticks (USER_HZ: 100 on Linux); the
        // command name before them may hold spaces, so count from its closing parenthesis.
        let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                let rest = &s[s.rfind(')')? + 2..];
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
                Some(ticks as f64 / 100.0)
            });
        Self {
            cpu_seconds,
            rss_bytes: field("VmRSS:").map(|kb| kb * 1024),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            threads: field("Threads:"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_samples_follow_their_family() {
        let live = Live {
            id: Some(crate::domain::DeviceId::parse("ABC1").unwrap()),
            name: "Kitchen \"kettle\"\\2\nnew".into(),
            power_mw: Some(1_500_250),
            counter_wh: Some(42),
            ..Live::default()
        };
        let text = render(&Inputs {
            live: vec![live],
            ..Inputs::default()
        });
        assert!(
            text.contains(r#"kasad_device_info{device_id="ABC1",name="Kitchen \"kettle\"\\2\nnew",model="",type=""} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kasad_device_power_watts{device_id="ABC1"} 1500.25"#),
            "{text}"
        );
        assert!(text.contains("kasad_device_energy_counter_watt_hours_total{device_id=\"ABC1\""));
        // Every sample's family was declared before it.
        let mut declared = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(r) = l.strip_prefix("# TYPE ") {
                declared.insert(r.split(' ').next().unwrap().to_owned());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                let base = name.trim_end_matches("_sum").trim_end_matches("_count");
                assert!(declared.contains(name) || declared.contains(base), "{l}");
            }
        }
    }
}
