//! The hidden benchmark commands `scripts/bench` runs: `bench-store`, `bench-export`,
//! `bench-report`, `bench-insights`, `bench-alerts`, `bench-whatif`, `bench-wear` (on generated data, see [`super::benchmarks`]) and
//! `bench-load` (API load against a running daemon, see [`super::loadgen`]). Each prints one
//! JSON object.

use std::path::PathBuf;

/// Storage benchmark on a generated data set.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Scratch directory.
    #[arg(long)]
    dir: PathBuf,
    /// Devices.
    #[arg(long, default_value_t = 10)]
    devices: u32,
    /// Days of 10-second readings.
    #[arg(long, default_value_t = 30)]
    days: i64,
}

/// Export benchmark: device_data CSV and JSON of N raw rows.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Scratch directory.
    #[arg(long)]
    dir: PathBuf,
    /// Rows (10 devices, one reading per minute each).
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Runs per format (median time, largest RSS).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Formats to export, comma-separated.
    #[arg(long, default_value = "csv,json,excel", value_delimiter = ',')]
    formats: Vec<String>,
}

/// API load against a running daemon: concurrent clients while exports run.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The daemon, e.g. http://127.0.0.1:5272.
    #[arg(long)]
    base: String,
    /// The `admin` user's password.
    #[arg(long)]
    password: String,
    /// Concurrent API clients.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Export jobs kept running.
    #[arg(long, default_value_t = 3)]
    exports: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

/// The system report benchmark (PDF of 10 devices × 1 year).
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Scratch directory (the PDF is left there as report.pdf).
    #[arg(long)]
    dir: PathBuf,
    /// Runs (median time).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// The insights benchmark (50 devices × 1 year of 15-minute rollups).
#[derive(Debug, clap::Args)]
pub struct InsightsArgs {
    /// Scratch directory.
    #[arg(long)]
    pub dir: std::path::PathBuf,
    /// Devices.
    #[arg(long, default_value_t = 50)]
    pub devices: u32,
    /// Days of 15-minute readings.
    #[arg(long, default_value_t = 365)]
    pub days: i64,
    /// Runs from a cold cache (median time).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// The alerts benchmark (200 devices, 50 rules).
#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    /// Scratch directory.
    #[arg(long)]
    pub dir: std::path::PathBuf,
    /// Devices.
    #[arg(long, default_value_t = 200)]
    pub devices: u32,
    /// Rules.
    #[arg(long, default_value_t = 50)]
    pub rules: usize,
    /// Poll cycles (median time).
    #[arg(long, default_value_t = 30)]
    pub cycles: usize,
}

/// The what-if benchmark (3 tariffs over 20 devices × 1 year).
#[derive(Debug, clap::Args)]
pub struct WhatifArgs {
    /// Scratch directory.
    #[arg(long)]
    pub dir: std::path::PathBuf,
    /// Runs (median time).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// Push throughput to a running victoria-metrics.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Scratch directory.
    #[arg(long)]
    pub dir: std::path::PathBuf,
    /// The victoria-metrics to push to (`http://127.0.0.1:PORT`).
    #[arg(long)]
    pub url: String,
    /// Devices.
    #[arg(long, default_value_t = 10)]
    pub devices: u32,
    /// Days of 10-second readings.
    #[arg(long, default_value_t = 7)]
    pub days: i64,
}

/// A signed statement: one device × one year, PDF.
#[derive(Debug, clap::Args)]
pub struct StatementArgs {
    /// Scratch directory.
    #[arg(long)]
    pub dir: std::path::PathBuf,
    /// Runs (median time).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// Storage wear: bytes written per day for 10 devices polled every 10 s.
#[derive(Debug, clap::Args)]
pub struct WearArgs {
    /// Scratch directory.
    #[arg(long)]
    dir: PathBuf,
    /// Simulated hours.
    #[arg(long, default_value_t = 2)]
    hours: i64,
    /// Durable checkpoint every this many simulated seconds (30 or less: no staging log).
    #[arg(long, default_value_t = 21_600)]
    checkpoint_s: i64,
    /// Database page cache, MiB (the daemon's default is 16).
    #[arg(long, default_value_t = 16)]
    cache_mb: usize,
}

/// Runs `f` on a blocking thread and prints its JSON.
async fn print_blocking(
    f: impl FnOnce() -> anyhow::Result<serde_json::Value> + Send + 'static,
) -> anyhow::Result<()> {
    let v = tokio::task::spawn_blocking(f).await??;
    println!("{v}");
    Ok(())
}

/// `kasad bench-store`.
pub async fn store(a: StoreArgs) -> anyhow::Result<()> {
    print_blocking(move || super::benchmarks::run(&a.dir, a.devices, a.days)).await
}

/// `kasad bench-export`.
pub async fn export(a: ExportArgs) -> anyhow::Result<()> {
    print_blocking(move || super::benchmarks::run_export(&a.dir, a.rows, a.runs, &a.formats)).await
}

/// `kasad bench-report`.
pub async fn report(a: ReportArgs) -> anyhow::Result<()> {
    print_blocking(move || super::benchmarks::run_report(&a.dir, a.runs)).await
}

/// `kasad bench-insights`.
pub async fn insights(a: InsightsArgs) -> anyhow::Result<()> {
    print_blocking(move || super::benchmarks::run_insights(&a.dir, a.devices, a.days, a.runs)).await
}

/// `kasad bench-alerts`.
pub async fn alerts(a: AlertsArgs) -> anyhow::Result<()> {
    print_blocking(move || super::benchmarks::run_alerts(&a.dir, a.devices, a.rules, a.cycles))
        .await
}

/// `kasad bench-whatif`.
pub async fn whatif(a: WhatifArgs) -> anyhow::Result<()> {
    print_blocking(move || super::benchmarks::run_whatif(&a.dir, a.runs)).await
}

/// `kasad bench-push`.
pub async fn push(a: PushArgs) -> anyhow::Result<()> {
    let v = super::benchmarks::run_push(&a.dir, &a.url, a.devices, a.days).await?;
    println!("{v}");
    Ok(())
}

/// `kasad bench-statement`.
pub async fn statement(a: StatementArgs) -> anyhow::Result<()> {
    print_blocking(move || super::benchmarks::run_statement(&a.dir, a.runs)).await
}

/// `kasad bench-wear`.
pub async fn wear(a: WearArgs) -> anyhow::Result<()> {
    print_blocking(move || super::benchmarks::run_wear(&a.dir, a.hours, a.checkpoint_s, a.cache_mb))
        .await
}

/// `kasad bench-load`.
pub async fn load(a: LoadArgs) -> anyhow::Result<()> {
    let v = super::loadgen::run(super::loadgen::LoadOptions {
        base: a.base,
        password: a.password,
        clients: a.clients,
        exports: a.exports,
        duration: std::time::Duration::from_secs(a.seconds),
    })
    .await?;
    println!("{v}");
    Ok(())
}
