//! `kasad backup` and `kasad restore`: a consistent copy of the state (database, staging
//! log, keys) with the daemon running or stopped; a restore into an empty data directory,
//! verified.

use crate::admin::Request;
use crate::config::Settings;
use anyhow::Context;
use std::path::PathBuf;

/// Arguments of `kasad backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The backup file to write (a zip).
    #[arg(long)]
    out: PathBuf,
    /// Configuration file (TOML), for the data directory.
    #[arg(long, default_value = super::DEFAULT_CONFIG)]
    config: PathBuf,
}

/// Arguments of `kasad restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup file.
    file: PathBuf,
    /// Configuration file (TOML), for the data directory.
    #[arg(long, default_value = super::DEFAULT_CONFIG)]
    config: PathBuf,
}

/// Writes a backup (through the daemon when it runs).
pub async fn backup(a: BackupArgs) -> anyhow::Result<()> {
    let (out, config) = (a.out, a.config);
    let settings = Settings::load(Some(&config))?;
    // Written inside the data directory (the daemon may write only there), then moved.
    let tmp = settings
        .data_dir
        .join(format!(".cli-backup-{}.zip", std::process::id()));
    let v = match super::admin(&config, Request::Backup { out: tmp.clone() }).await {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if std::fs::rename(&tmp, &out).is_err() {
        let copied = std::fs::copy(&tmp, &out);
        let _ = std::fs::remove_file(&tmp);
        copied.with_context(|| format!("while writing {}", out.display()))?;
    }
    let files = v["files"].as_array().map_or(0, Vec::len);
    println!("backup written to {} ({files} files)", out.display());
    Ok(())
}

/// Restores a backup into an empty data directory and verifies it.
pub async fn restore(a: RestoreArgs) -> anyhow::Result<()> {
    let (file, config) = (a.file, a.config);
    let settings = Settings::load(Some(&config))?;
    let dir = settings.data_dir.clone();
    let m = tokio::task::spawn_blocking(move || crate::backup::restore(&file, &dir)).await??;
    // Opening replays the staging log; then every block and rollup is checked.
    let store = crate::app::open_store(&settings).await?;
    let rep = tokio::task::spawn_blocking(move || store.verify_data()).await??;
    crate::backup::give_to_owner(&settings.data_dir)?;
    anyhow::ensure!(
        rep.problems.is_empty(),
        "the restored database has problems: {:?}",
        rep.problems
    );
    println!(
        "restored {} files into {} (backup of {} by kasad {}): {} devices, {} readings verified",
        m.files.len(),
        settings.data_dir.display(),
        crate::clock::rfc3339(m.created_ms),
        m.kasad_version,
        rep.devices,
        rep.readings
    );
    Ok(())
}
