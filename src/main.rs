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
        } => {
            let opts = kasad::demo::DemoOptions {
                listen,
                devices,
                data_dir,
                history_days,
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
