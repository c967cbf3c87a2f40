//! `kasad import kasa-monitor PATH`: history from another tool, with the daemon stopped.

use crate::config::Settings;
use clap::Subcommand;
use std::path::PathBuf;

/// Arguments of `kasad import`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    source: ImportCmd,
    /// Configuration file (TOML), for the data directory.
    #[arg(long, global = true, default_value = super::DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum ImportCmd {
    /// A kasa-monitor SQLite database (its device_readings table, e.g. kasa_monitor.db).
    KasaMonitor {
        /// The database file.
        path: PathBuf,
    },
    /// Home Assistant long-term statistics (the Import Statistics integration's CSV, or
    /// kasad's `ha_statistics` export): energy statistics with `sum`.
    HomeAssistant {
        /// The CSV (or TSV) file.
        path: PathBuf,
        /// Zone of `start` (default UTC, as kasad writes it).
        #[arg(long, default_value = "UTC")]
        timezone: chrono_tz::Tz,
    },
    /// An Emoncms kWh accumulator feed (feed/csvexport.json: `time,value` lines).
    Emoncms {
        /// The CSV file.
        path: PathBuf,
        /// The device it is (matched by id or name, else created); default: the file's name.
        #[arg(long)]
        device: Option<String>,
        /// Zone of local times (default: the configured one).
        #[arg(long)]
        timezone: Option<chrono_tz::Tz>,
    },
    /// IoTaWatt's query API CSV with a header and Wh per group (`…&format=csv&header=yes`).
    Iotawatt {
        /// The CSV file.
        path: PathBuf,
        /// Zone of local times (default: the configured one).
        #[arg(long)]
        timezone: Option<chrono_tz::Tz>,
    },
}

/// Imports, audits the import and prints what each device got.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let (source, config) = (a.source, a.config);
    let settings = Settings::load(Some(&config))?;
    use crate::import::files::Tool;
    let (tool, path, device, tz) = match source {
        ImportCmd::KasaMonitor { path } => (None, path, None, settings.tz()),
        ImportCmd::HomeAssistant { path, timezone } => {
            (Some(Tool::HomeAssistant), path, None, timezone)
        }
        ImportCmd::Emoncms {
            path,
            device,
            timezone,
        } => (
            Some(Tool::Emoncms),
            path,
            device,
            timezone.unwrap_or(settings.tz()),
        ),
        ImportCmd::Iotawatt { path, timezone } => (
            Some(Tool::Iotawatt),
            path,
            None,
            timezone.unwrap_or(settings.tz()),
        ),
    };
    let source_name = match tool {
        None => "kasa-monitor",
        Some(Tool::HomeAssistant) => "home-assistant",
        Some(Tool::Emoncms) => "emoncms",
        Some(Tool::Iotawatt) => "iotawatt",
    };
    let store = match crate::app::open_store(&settings).await {
        Ok(s) => s,
        Err(e) => {
            let busy = e
                .downcast_ref::<crate::store::Error>()
                .is_some_and(|e| matches!(e, crate::store::Error::AlreadyOpen(_)));
            crate::backup::give_to_owner(&settings.data_dir)?;
            return Err(if busy {
                e.context("stop the daemon first: an import needs the database to itself")
            } else {
                e
            });
        }
    };
    let keys = crate::app::load_keys(&settings);
    // Files a root import created belong to the daemon's user, whatever happens next.
    crate::backup::give_to_owner(&settings.data_dir)?;
    let (_, key) = keys?;
    let imports = tokio::task::spawn_blocking(move || {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut bar = |done: u64, total: u64| {
            if tty {
                let pct = done * 100 / total.max(1);
                eprint!("\rimporting: {done} of {total} readings read ({pct}%)");
            }
        };
        let r = match tool {
            None => crate::import::kasa_monitor(&store, &path, &mut bar),
            Some(t) => {
                let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
                crate::import::files::import(&store, t, &path, device.as_deref(), tz, now)
            }
        };
        if tty {
            eprintln!();
        }
        let r = r?;
        let severity = match r.error {
            Some(_) => crate::audit::Severity::Error,
            None => crate::audit::Severity::Info,
        };
        let mut ev = crate::audit::Event::new(crate::audit::EventType::DataImported, severity);
        ev.username = Some("cli".into());
        ev.resource = Some(format!("{source_name}:{}", path.display()));
        ev.details = serde_json::to_value(&r)?;
        let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
        store.audit_append(&key, ev, now)?;
        anyhow::Ok(r)
    })
    .await??;
    let mut total = 0;
    for r in &imports.devices {
        let added = r.before + r.after;
        total += added;
        println!(
            "{} -> {}{}: {added} readings imported, {} already stored or out of order{}",
            r.ip,
            r.device_id,
            if r.created { " (new)" } else { "" },
            r.skipped,
            if r.bad_time > 0 {
                format!(", {} skipped (time not readable)", r.bad_time)
            } else {
                String::new()
            }
        );
    }
    println!(
        "{total} readings of {} devices imported",
        imports.devices.len()
    );
    if imports.left_out > 0 {
        println!(
            "{} rows of other statistics left out (power, or sums of something other than kWh or Wh)",
            imports.left_out
        );
    }
    if let Some(e) = imports.error {
        anyhow::bail!("the import stopped at {e}; the devices listed above are imported");
    }
    Ok(())
}
