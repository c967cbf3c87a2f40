//! `kasad store verify|compact`: database maintenance, with the daemon stopped.

use crate::config::Settings;
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;

/// Arguments of `kasad store`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: StoreCmd,
    /// Configuration file (TOML), for the data directory.
    #[arg(long, global = true, default_value = super::DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum StoreCmd {
    /// Decode every block and check rollups and counts against the raw data.
    Verify,
    /// Rewrite the file to return free space.
    Compact,
}

/// Verifies or compacts the database.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let (cmd, config) = (a.cmd, a.config);
    let settings = Settings::load(Some(&config))?;
    let store = crate::store::Store::open(&settings.db_path(), settings.storage.cache_mb)
        .context("stop the daemon first: store maintenance needs the database to itself")?;
    match cmd {
        StoreCmd::Verify => {
            let rep = store.verify_data()?;
            for p in &rep.problems {
                eprintln!("problem: {p}");
            }
            anyhow::ensure!(
                rep.problems.is_empty(),
                "store verification FAILED ({} problems)",
                rep.problems.len()
            );
            println!(
                "store OK: {} devices, {} readings verified",
                rep.devices, rep.readings
            );
        }
        StoreCmd::Compact => {
            let before = std::fs::metadata(settings.db_path())?.len();
            drop(store.compact()?);
            let after = std::fs::metadata(settings.db_path())?.len();
            println!("compacted: {before} -> {after} bytes");
        }
    }
    Ok(())
}
