//! `kasad push status` and `kasad push backfill NAME --since DATE [--force]`: through the
//! admin socket when the daemon runs (redb allows one process), directly when it is stopped.

use crate::admin::Request;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Settings;
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::sync::Arc;

/// Arguments of `kasad push`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: PushCmd,
    /// Configuration file (TOML).
    #[arg(long, global = true, default_value = super::DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum PushCmd {
    /// Per target: cursor, lag, sent, skipped, errors, the last error, a backfill.
    Status,
    /// Send history from DATE up to where the target's live pushing began, once (a second
    /// run sends nothing unless --force).
    Backfill {
        /// The target's name in [[push]].
        name: String,
        /// From (a date in the configured time zone, or RFC 3339).
        #[arg(long)]
        since: String,
        /// Send again what an earlier backfill covered.
        #[arg(long)]
        force: bool,
    },
}

fn parse_since(s: &str, tz: chrono_tz::Tz) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("--since {s:?}: a date (2025-01-31) or RFC 3339 time"))?;
    Ok(crate::domain::rollup::local_midnight(d, tz))
}

/// Runs `kasad push …`.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let settings = Settings::load(Some(&a.config))?;
    let clock: SharedClock = Arc::new(SystemClock);
    let opened = crate::store::Store::open(&settings.db_path(), settings.storage.cache_mb);
    let store = match opened {
        Ok(s) => Some(s),
        Err(crate::store::Error::AlreadyOpen(_)) => None,
        Err(e) => return Err(e).context("while opening the database"),
    };
    match a.cmd {
        PushCmd::Status => {
            let v = match &store {
                Some(s) => {
                    serde_json::json!(crate::push::stored_status(s, &settings, clock.now_ms())?)
                }
                None => crate::admin::call(&settings.data_dir, &Request::PushStatus).await?,
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        PushCmd::Backfill { name, since, force } => {
            let since_ms = parse_since(&since, settings.tz())?;
            let Some(store) = store else {
                let req = Request::PushBackfill {
                    name: name.clone(),
                    since_ms,
                    force,
                };
                let v = crate::admin::call(&settings.data_dir, &req).await?;
                println!("{}", serde_json::to_string_pretty(&v)?);
                return wait_for_daemon(&settings, &name, v["queued"] == true).await;
            };
            let push = crate::push::Push::new(&store, &settings, clock.now_ms())
                .context("while reading [[push]]")?;
            let v = push.request_backfill(&store, &name, since_ms, force)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            if v["queued"] == true {
                let done = push.drain_backfill(&store, &clock, &name).await?;
                println!("{}", serde_json::to_string_pretty(&done)?);
            }
            Ok(())
        }
    }
}

/// Waits while the running daemon sends a queued backfill, saying how far it got.
async fn wait_for_daemon(settings: &Settings, name: &str, queued: bool) -> anyhow::Result<()> {
    if !queued {
        return Ok(());
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let v = crate::admin::call(&settings.data_dir, &Request::PushStatus).await?;
        let Some(t) = v
            .as_array()
            .and_then(|a| a.iter().find(|t| t["target"] == name))
        else {
            anyhow::bail!("the daemon has no push target {name:?}");
        };
        if t["backfill"].is_null() {
            println!("{}", serde_json::to_string_pretty(t)?);
            return Ok(());
        }
        eprintln!("backfill: {} readings sent", t["backfill"]["sent"]);
    }
}
