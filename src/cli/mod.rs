//! The `kasad` command line: one file per subcommand, each with its arguments and what it
//! does. `main.rs` builds the runtime and calls [`main`].

pub mod audit;
pub mod backup;
pub mod bench;
pub mod benchmarks;
pub mod config;
pub mod demo;
pub mod healthcheck;
pub mod import;
pub mod loadgen;
pub mod push;
pub mod run;
pub mod setup_code;
pub mod shutdown;
pub mod sim;
pub mod statement;
pub mod store;
pub mod user;

use crate::admin::Request;
use crate::config::Settings;
use anyhow::Context;
use clap::{Parser, Subcommand};

/// `kasad`: its arguments.
#[derive(Debug, Parser)]
#[command(
    name = "kasad",
    version,
    about = "Local energy-data appliance for TP-Link Kasa plugs"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the daemon with a configuration file.
    Run(run::Args),
    /// Simulated plugs on loopback + the real daemon, API and pages.
    Demo(demo::Args),
    /// Manage users (works with the daemon running or stopped).
    User(user::Args),
    /// Database maintenance (with the daemon stopped).
    Store(store::Args),
    /// Audit log tools.
    Audit(audit::Args),
    /// Signed statements: `kasad statement verify FILE` (needs no configuration or daemon).
    Statement(statement::Args),
    /// Push targets: `kasad push status`, `kasad push backfill NAME --since DATE`.
    Push(push::Args),
    /// Print the first-run setup code (while no user exists), making one if it was lost.
    SetupCode(setup_code::Args),
    /// Validate a configuration file and exit.
    CheckConfig(config::CheckArgs),
    /// Write a consistent backup (database, staging log, keys) to a file, with the daemon
    /// running or stopped.
    Backup(backup::BackupArgs),
    /// Import history from another tool (with the daemon stopped).
    Import(import::Args),
    /// Restore a backup into an empty data directory (the daemon stopped), then verify it.
    Restore(backup::RestoreArgs),
    /// Ask the running daemon whether it is healthy (exit 0) or not (exit 1).
    Healthcheck(healthcheck::Args),
    /// Print the commented example configuration.
    PrintConfig,
    /// Print Avahi's service file for this configuration (for /etc/avahi/services/kasad.service).
    AvahiService(config::AvahiArgs),
    /// Storage benchmark on a generated data set (for scripts/bench).
    #[command(hide = true)]
    BenchStore(bench::StoreArgs),
    /// Export benchmark: device_data CSV and JSON of N raw rows (for scripts/bench).
    #[command(hide = true)]
    BenchExport(bench::ExportArgs),
    /// API load against a running daemon (for scripts/bench --load): concurrent clients
    /// while exports run; prints latency percentiles and the poller's skipped cycles.
    #[command(hide = true)]
    BenchLoad(bench::LoadArgs),
    /// Benchmark the system report (PDF of 10 devices × 1 year).
    #[command(hide = true)]
    BenchReport(bench::ReportArgs),
    /// Benchmark the insights (50 devices × 1 year of 15-minute rollups).
    #[command(hide = true)]
    BenchInsights(bench::InsightsArgs),
    /// Benchmark the alert rules' evaluation (200 devices, 50 rules).
    #[command(hide = true)]
    BenchAlerts(bench::AlertsArgs),
    /// Benchmark the what-if comparison (3 tariffs over 20 devices × 1 year).
    #[command(hide = true)]
    BenchWhatif(bench::WhatifArgs),
    /// Benchmark push throughput to a running victoria-metrics (both protocols).
    #[command(hide = true)]
    BenchPush(bench::PushArgs),
    /// Benchmark a signed statement (PDF, 1 device × 1 year).
    #[command(hide = true)]
    BenchStatement(bench::StatementArgs),
    /// Benchmark storage wear: bytes written per day for 10 devices polled every 10 s.
    #[command(hide = true)]
    BenchWear(bench::WearArgs),
    /// Serve N simulated devices on loopback until stopped (for benchmarks).
    #[command(hide = true)]
    Sim(sim::Args),
}

/// Where the configuration file is unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/kasad/kasad.toml";

/// `--config FILE`, for the subcommands that need nothing else.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Configuration file (TOML).
    #[arg(long, default_value = DEFAULT_CONFIG)]
    pub config: std::path::PathBuf,
}

/// Parses the arguments, sets up logging and runs the subcommand.
pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    crate::telemetry::init();
    match cli.cmd {
        Cmd::Run(a) => run::run(a).await,
        Cmd::Demo(a) => demo::main(a).await,
        Cmd::User(a) => user::run(a).await,
        Cmd::Store(a) => store::run(a).await,
        Cmd::Audit(a) => audit::run(a).await,
        Cmd::Statement(a) => statement::run(a),
        Cmd::Push(a) => push::run(a).await,
        Cmd::SetupCode(a) => setup_code::run(a).await,
        Cmd::CheckConfig(a) => config::check(a),
        Cmd::Backup(a) => backup::backup(a).await,
        Cmd::Import(a) => import::run(a).await,
        Cmd::Restore(a) => backup::restore(a).await,
        Cmd::Healthcheck(a) => healthcheck::run(a).await,
        Cmd::PrintConfig => config::print(),
        Cmd::AvahiService(a) => config::avahi(a),
        Cmd::BenchStore(a) => bench::store(a).await,
        Cmd::BenchExport(a) => bench::export(a).await,
        Cmd::BenchLoad(a) => bench::load(a).await,
        Cmd::BenchReport(a) => bench::report(a).await,
        Cmd::BenchInsights(a) => bench::insights(a).await,
        Cmd::BenchAlerts(a) => bench::alerts(a).await,
        Cmd::BenchWhatif(a) => bench::whatif(a).await,
        Cmd::BenchWear(a) => bench::wear(a).await,
        Cmd::BenchStatement(a) => bench::statement(a).await,
        Cmd::BenchPush(a) => bench::push(a).await,
        Cmd::Sim(a) => sim::run(a).await,
    }
}

/// Runs an admin request: directly when no daemon holds the database, else over its socket.
async fn admin(config: &std::path::Path, req: Request) -> anyhow::Result<serde_json::Value> {
    let settings = Settings::load(Some(config))?;
    match crate::store::Store::open(&settings.db_path(), settings.storage.cache_mb) {
        Ok(store) => {
            let (_, key) = crate::app::load_keys(&settings)?;
            let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
            Ok(crate::admin::execute(
                &store,
                &key,
                None,
                req,
                "cli (direct)",
                now,
            )?)
        }
        Err(crate::store::Error::AlreadyOpen(_)) => {
            Ok(crate::admin::call(&settings.data_dir, &req).await?)
        }
        Err(e) => Err(e).context("while opening the database"),
    }
}

/// Parses a duration argument (`500ms`, `10s`, `5m`, `2h`, `1d`).
fn parse_dur(s: &str) -> Result<crate::config::Dur, String> {
    crate::config::Dur::parse(s)
        .filter(|d| !d.0.is_zero())
        .ok_or_else(|| format!("{s:?} is not a duration like 10s, 5m or 1h"))
}
