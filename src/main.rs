//! The `kasad` command line: parses arguments, sets up logging and calls into the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use kasad::config::{EXAMPLE, Settings};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "kasad",
    version,
    about = "Local energy-data appliance for TP-Link Kasa plugs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon with a configuration file.
    Run {
        /// Configuration file (TOML).
        #[arg(long, default_value = "/etc/kasad/kasad.toml")]
        config: PathBuf,
    },
    /// Simulated plugs on loopback + the real daemon, API and pages.
    Demo {
        /// HTTP address.
        #[arg(long, default_value = "127.0.0.1:5272")]
        listen: SocketAddr,
        /// Number of simulated devices (one HS300 strip and one HS100 in every eight).
        #[arg(long, default_value_t = 8)]
        devices: u32,
        /// Data directory (default: a fresh temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Days of simulated history to backfill into an empty database.
        #[arg(long, default_value_t = 1)]
        history_days: u32,
        /// Password for the `admin` user created on first start (default: random, printed).
        #[arg(long)]
        admin_password: Option<String>,
    },
    /// Audit log tools (with the daemon stopped).
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
        /// Configuration file (TOML), for the data directory.
        #[arg(long, global = true, default_value = "/etc/kasad/kasad.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and exit.
    CheckConfig {
        /// Configuration file (TOML).
        path: PathBuf,
    },
    /// Print the commented example configuration.
    PrintConfig,
    /// Serve N simulated devices on loopback until stopped (for benchmarks).
    #[command(hide = true)]
    Sim {
        /// Number of devices.
        #[arg(long, default_value_t = 8)]
        devices: u32,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Verify the hash chain; exits non-zero naming the first bad sequence number.
    Verify,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    kasad::telemetry::init();
    let clock = kasad::clock::system();
    match cli.cmd {
        Cmd::Run { config } => {
            let settings = Settings::load(Some(&config))?;
            kasad::app::run(settings, clock, kasad::shutdown::signal()).await
        }
        Cmd::Demo {
            listen,
            devices,
            data_dir,
            history_days,
            admin_password,
        } => {
            let opts = kasad::demo::DemoOptions {
                listen,
                devices,
                data_dir,
                history_days,
                admin_password,
            };
            kasad::demo::run(opts, clock, kasad::shutdown::signal()).await
        }
        Cmd::CheckConfig { path } => {
            let s = Settings::load(Some(&path))
                .with_context(|| format!("{} is not valid", path.display()))?;
            println!(
                "{}: OK ({} discovery targets, {} static devices, poll every {})",
                path.display(),
                s.discovery.targets.len(),
                s.devices.len(),
                s.poll.interval
            );
            Ok(())
        }
        Cmd::Audit {
            cmd: AuditCmd::Verify,
            config,
        } => {
            let settings = Settings::load(Some(&config))?;
            let store = kasad::store::Store::open(&settings.db_path(), settings.storage.cache_mb)
                .context("the daemon must be stopped to verify the audit log from the command line; use GET /api/audit/verify while it runs")?;
            let (_, audit_key) = kasad::app::load_keys(&settings)?;
            let v = store.audit_verify(&audit_key)?;
            if v.ok {
                println!("audit log OK: {} entries verified", v.checked);
                Ok(())
            } else {
                anyhow::bail!(
                    "audit log FAILED at sequence {}: {}",
                    v.first_bad_seq.unwrap_or(0),
                    v.reason.unwrap_or_default()
                )
            }
        }
        Cmd::PrintConfig => {
            print!("{EXAMPLE}");
            Ok(())
        }
        Cmd::Sim { devices } => {
            let now = kasad::clock::Clock::now_ms(clock.as_ref());
            let handles =
                kasad::sim::start_fleet(kasad::demo::fleet(devices, now), 0, clock).await?;
            for h in &handles {
                println!("{}", h.addr);
            }
            println!("ready");
            kasad::shutdown::signal().await;
            Ok(())
        }
    }
}
