//! The `kasad` command line: parses arguments, sets up logging and calls into the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use kasad::admin::Request;
use kasad::auth::{Permission, Role};
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
        /// Time between backfilled readings, e.g. `5m` (default: the poll interval).
        #[arg(long, value_parser = parse_dur)]
        history_step: Option<kasad::config::Dur>,
        /// Password for the `admin` user created on first start (default: random, printed).
        #[arg(long)]
        admin_password: Option<String>,
    },
    /// Manage users (works with the daemon running or stopped).
    User {
        #[command(subcommand)]
        cmd: UserCmd,
        /// Configuration file (TOML), for the data directory.
        #[arg(long, global = true, default_value = "/etc/kasad/kasad.toml")]
        config: PathBuf,
    },
    /// Database maintenance (with the daemon stopped).
    Store {
        #[command(subcommand)]
        cmd: StoreCmd,
        /// Configuration file (TOML), for the data directory.
        #[arg(long, global = true, default_value = "/etc/kasad/kasad.toml")]
        config: PathBuf,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
        /// Configuration file (TOML), for the data directory.
        #[arg(long, global = true, default_value = "/etc/kasad/kasad.toml")]
        config: PathBuf,
    },
    /// Print the first-run setup code (while no user exists), making one if it was lost.
    SetupCode {
        /// Configuration file (TOML).
        #[arg(long, default_value = "/etc/kasad/kasad.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and exit.
    CheckConfig {
        /// Configuration file (TOML).
        path: PathBuf,
    },
    /// Write a consistent backup (database, staging log, keys) to a file, with the daemon
    /// running or stopped.
    Backup {
        /// The backup file to write (a zip).
        #[arg(long)]
        out: PathBuf,
        /// Configuration file (TOML), for the data directory.
        #[arg(long, default_value = "/etc/kasad/kasad.toml")]
        config: PathBuf,
    },
    /// Import history from another tool (with the daemon stopped).
    Import {
        #[command(subcommand)]
        source: ImportCmd,
        /// Configuration file (TOML), for the data directory.
        #[arg(long, global = true, default_value = "/etc/kasad/kasad.toml")]
        config: PathBuf,
    },
    /// Restore a backup into an empty data directory (the daemon stopped), then verify it.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Configuration file (TOML), for the data directory.
        #[arg(long, default_value = "/etc/kasad/kasad.toml")]
        config: PathBuf,
    },
    /// Ask the running daemon whether it is healthy (exit 0) or not (exit 1).
    Healthcheck {
        /// Configuration file (TOML), for the listen address.
        #[arg(long, default_value = "/etc/kasad/kasad.toml")]
        config: PathBuf,
        /// Ask this address instead (e.g. 127.0.0.1:5272).
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Print the commented example configuration.
    PrintConfig,
    /// Print Avahi's service file for this configuration (for /etc/avahi/services/kasad.service).
    AvahiService {
        /// Configuration file (TOML), for the port and the instance name.
        #[arg(long, default_value = "/etc/kasad/kasad.toml")]
        config: PathBuf,
        /// Write the file here (atomically) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Storage benchmark on a generated data set (for scripts/bench).
    #[command(hide = true)]
    BenchStore {
        /// Scratch directory.
        #[arg(long)]
        dir: PathBuf,
        /// Devices.
        #[arg(long, default_value_t = 10)]
        devices: u32,
        /// Days of 10-second readings.
        #[arg(long, default_value_t = 30)]
        days: i64,
    },
    /// Export benchmark: device_data CSV and JSON of N raw rows (for scripts/bench).
    #[command(hide = true)]
    BenchExport {
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
    },
    /// API load against a running daemon (for scripts/bench --load): concurrent clients
    /// while exports run; prints latency percentiles and the poller's skipped cycles.
    #[command(hide = true)]
    BenchLoad {
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
    },
    /// Benchmark the system report (PDF of 10 devices × 1 year).
    #[command(hide = true)]
    BenchReport {
        /// Scratch directory (the PDF is left there as report.pdf).
        #[arg(long)]
        dir: PathBuf,
        /// Runs (median time).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Benchmark storage wear: bytes written per day for 10 devices polled every 10 s.
    #[command(hide = true)]
    BenchWear {
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
    },
    /// Serve N simulated devices on loopback until stopped (for benchmarks).
    #[command(hide = true)]
    Sim {
        /// Number of devices.
        #[arg(long, default_value_t = 8)]
        devices: u32,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create a user (the password is read from stdin with --password-stdin, else generated
    /// and printed).
    Add {
        /// Login name.
        name: String,
        /// admin, operator or viewer.
        #[arg(long)]
        role: String,
        /// Extra permission (repeatable), e.g. AUDIT_READ.
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Set a user's password.
    Passwd {
        /// Login name.
        name: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user; their tokens stop working at once.
    Disable {
        /// Login name.
        name: String,
    },
    /// Delete a user.
    Delete {
        /// Login name.
        name: String,
    },
    /// Clear a username's login throttle in the running daemon (after a stranger's failed
    /// logins).
    Unlock {
        /// Login name.
        name: String,
    },
}

fn password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        Ok((line.trim_end_matches(['\r', '\n']).to_owned(), false))
    } else {
        Ok((kasad::auth::random_token::<12>(), true))
    }
}

fn user_request(cmd: UserCmd) -> anyhow::Result<(Request, Option<String>)> {
    Ok(match cmd {
        UserCmd::Add {
            name,
            role,
            permissions,
            password_stdin,
        } => {
            let role = Role::parse(&role)
                .ok_or_else(|| anyhow::anyhow!("--role must be admin, operator or viewer"))?;
            let permissions = permissions
                .iter()
                .map(|p| {
                    Permission::parse(p).ok_or_else(|| anyhow::anyhow!("unknown permission {p:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (pw, generated) = password(password_stdin)?;
            let show = generated.then(|| pw.clone());
            (
                Request::UserAdd {
                    username: name,
                    role,
                    permissions,
                    password: pw,
                },
                show,
            )
        }
        UserCmd::List => (Request::UserList, None),
        UserCmd::Passwd {
            name,
            password_stdin,
        } => {
            let (pw, generated) = password(password_stdin)?;
            let show = generated.then(|| pw.clone());
            (
                Request::UserPasswd {
                    username: name,
                    password: pw,
                },
                show,
            )
        }
        UserCmd::Disable { name } => (Request::UserDisable { username: name }, None),
        UserCmd::Delete { name } => (Request::UserDelete { username: name }, None),
        UserCmd::Unlock { name } => (Request::UserUnlock { username: name }, None),
    })
}

/// Runs an admin request: directly when no daemon holds the database, else over its socket.
async fn admin(config: &std::path::Path, req: Request) -> anyhow::Result<serde_json::Value> {
    let settings = Settings::load(Some(config))?;
    match kasad::store::Store::open(&settings.db_path(), settings.storage.cache_mb) {
        Ok(store) => {
            let (_, key) = kasad::app::load_keys(&settings)?;
            let now = kasad::clock::Clock::now_ms(&kasad::clock::SystemClock);
            kasad::admin::execute(&store, &key, None, req, "cli (direct)", now)
                .map_err(anyhow::Error::msg)
        }
        Err(kasad::store::Error::AlreadyOpen(_)) => kasad::admin::call(&settings.data_dir, &req)
            .await
            .map_err(anyhow::Error::msg),
        Err(e) => Err(e).context("while opening the database"),
    }
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Decode every block and check rollups and counts against the raw data.
    Verify,
    /// Rewrite the file to return free space.
    Compact,
}

#[derive(Subcommand)]
enum ImportCmd {
    /// A kasa-monitor SQLite database (its device_readings table, e.g. kasa_monitor.db).
    KasaMonitor {
        /// The database file.
        path: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Verify the hash chain; exits non-zero naming the first bad sequence number.
    Verify,
    /// Verify an audit_logs export (CSV or JSON, uncompressed) with this appliance's audit
    /// key; exits non-zero naming the first entry that fails.
    VerifyExport {
        /// The exported file.
        file: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    // A bounded blocking pool: under load, hundreds of short blocking tasks would otherwise
    // each get a thread (and glibc a malloc arena), which costs memory a Pi does not have.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(32)
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    kasad::telemetry::init();
    let clock = kasad::clock::system();
    match cli.cmd {
        Cmd::Run { config } => {
            let settings = Settings::load(Some(&config))?;
            for w in settings.warnings() {
                tracing::warn!("{}: {w}", config.display());
            }
            kasad::app::run(settings, clock, kasad::shutdown::signal()).await
        }
        Cmd::Demo {
            listen,
            devices,
            data_dir,
            history_days,
            history_step,
            admin_password,
        } => {
            let opts = kasad::demo::DemoOptions {
                listen,
                devices,
                data_dir,
                history_days,
                history_step: history_step.map(|d| d.0),
                admin_password,
            };
            kasad::demo::run(opts, clock, kasad::shutdown::signal()).await
        }
        Cmd::Healthcheck {
            config,
            addr,
            timeout,
        } => {
            // With --addr the configuration is optional; it only lends the scrape token.
            let (addr, settings) = match addr {
                Some(a) => (a, Settings::load(Some(&config)).ok()),
                None => {
                    let s = Settings::load(Some(&config))?;
                    (kasad::healthcheck::target(s.http.listen), Some(s))
                }
            };
            // The scrape token (if readable) brings the detail: version and uptime.
            let token = settings
                .filter(|s| s.metrics.access != "off")
                .and_then(|s| kasad::app::metrics_token(&s).ok().flatten());
            let report = kasad::healthcheck::check(
                addr,
                std::time::Duration::from_secs(timeout),
                token.as_deref(),
            )
            .await?;
            match report["version"].as_str() {
                Some(v) => println!(
                    "kasad on {addr}: ok (version {v}, up {} s)",
                    report["uptime_s"]
                ),
                None => println!("kasad on {addr}: ok"),
            }
            Ok(())
        }
        Cmd::Backup { out, config } => {
            let settings = Settings::load(Some(&config))?;
            // Written inside the data directory (the daemon may write only there), then moved.
            let tmp = settings
                .data_dir
                .join(format!(".cli-backup-{}.zip", std::process::id()));
            let v = match admin(&config, Request::Backup { out: tmp.clone() }).await {
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
        Cmd::Import { source, config } => {
            let ImportCmd::KasaMonitor { path } = source;
            let settings = Settings::load(Some(&config))?;
            let store = match kasad::app::open_store(&settings).await {
                Ok(s) => s,
                Err(e) => {
                    let busy = e
                        .downcast_ref::<kasad::store::Error>()
                        .is_some_and(|e| matches!(e, kasad::store::Error::AlreadyOpen(_)));
                    kasad::backup::give_to_owner(&settings.data_dir)?;
                    return Err(if busy {
                        e.context("stop the daemon first: an import needs the database to itself")
                    } else {
                        e
                    });
                }
            };
            let keys = kasad::app::load_keys(&settings);
            // Files a root import created belong to the daemon's user, whatever happens next.
            kasad::backup::give_to_owner(&settings.data_dir)?;
            let (_, key) = keys?;
            let imports = tokio::task::spawn_blocking(move || {
                let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
                let mut bar = |done: u64, total: u64| {
                    if tty {
                        let pct = done * 100 / total.max(1);
                        eprint!("\rimporting: {done} of {total} readings read ({pct}%)");
                    }
                };
                let r = kasad::import::kasa_monitor(&store, &path, &mut bar);
                if tty {
                    eprintln!();
                }
                let r = r?;
                let severity = match r.error {
                    Some(_) => kasad::audit::Severity::Error,
                    None => kasad::audit::Severity::Info,
                };
                let mut ev =
                    kasad::audit::Event::new(kasad::audit::EventType::DataImported, severity);
                ev.username = Some("cli".into());
                ev.resource = Some(format!("kasa-monitor:{}", path.display()));
                ev.details = serde_json::to_value(&r)?;
                let now = kasad::clock::Clock::now_ms(&kasad::clock::SystemClock);
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
            if let Some(e) = imports.error {
                anyhow::bail!("the import stopped at {e}; the devices listed above are imported");
            }
            Ok(())
        }
        Cmd::Restore { file, config } => {
            let settings = Settings::load(Some(&config))?;
            let dir = settings.data_dir.clone();
            let m =
                tokio::task::spawn_blocking(move || kasad::backup::restore(&file, &dir)).await??;
            // Opening replays the staging log; then every block and rollup is checked.
            let store = kasad::app::open_store(&settings).await?;
            let rep = tokio::task::spawn_blocking(move || store.verify_data()).await??;
            kasad::backup::give_to_owner(&settings.data_dir)?;
            anyhow::ensure!(
                rep.problems.is_empty(),
                "the restored database has problems: {:?}",
                rep.problems
            );
            println!(
                "restored {} files into {} (backup of {} by kasad {}): {} devices, {} readings verified",
                m.files.len(),
                settings.data_dir.display(),
                kasad::clock::rfc3339(m.created_ms),
                m.kasad_version,
                rep.devices,
                rep.readings
            );
            Ok(())
        }
        Cmd::SetupCode { config } => {
            let v = admin(&config, Request::SetupCode).await?;
            match v["setup_code"].as_str() {
                Some(code) => println!(
                    "{code}\nOpen kasad's web pages and create the first administrator with this code."
                ),
                None => {
                    println!("kasad is set up: a user exists. Log in, or use `kasad user add`.")
                }
            }
            Ok(())
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
            for w in s.warnings() {
                eprintln!("warning: {w}");
            }
            Ok(())
        }
        Cmd::Audit {
            cmd: AuditCmd::VerifyExport { file },
            config,
        } => {
            let settings = Settings::load(Some(&config))?;
            let key = kasad::auth::keys::load(&settings.data_dir.join("audit.key"))
                .context("while reading the audit key (run as the kasad user or root)")?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let entries = kasad::export::audit_log::parse_export(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            match kasad::export::audit_log::verify(&key, &entries) {
                Ok(n) => {
                    println!("audit export OK: {n} entries verified");
                    Ok(())
                }
                Err(e) => anyhow::bail!("audit export FAILED: {e}"),
            }
        }
        Cmd::Audit {
            cmd: AuditCmd::Verify,
            config,
        } => {
            let v = admin(&config, Request::AuditVerify).await?;
            if v["ok"] == true {
                println!("audit log OK: {} entries verified", v["checked"]);
                Ok(())
            } else {
                anyhow::bail!(
                    "audit log FAILED at sequence {}: {}",
                    v["first_bad_seq"],
                    v["reason"].as_str().unwrap_or_default()
                )
            }
        }
        Cmd::Store { cmd, config } => {
            let settings = Settings::load(Some(&config))?;
            let store = kasad::store::Store::open(&settings.db_path(), settings.storage.cache_mb)
                .context(
                "stop the daemon first: store maintenance needs the database to itself",
            )?;
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
        Cmd::User { cmd, config } => {
            let (req, generated) = user_request(cmd)?;
            let v = admin(&config, req).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            if let Some(pw) = generated {
                println!("generated password: {pw}");
            }
            Ok(())
        }
        Cmd::BenchStore { dir, devices, days } => {
            let v = tokio::task::spawn_blocking(move || kasad::bench::run(&dir, devices, days))
                .await??;
            println!("{v}");
            Ok(())
        }
        Cmd::BenchExport {
            dir,
            rows,
            runs,
            formats,
        } => {
            let v = tokio::task::spawn_blocking(move || {
                kasad::bench::run_export(&dir, rows, runs, &formats)
            })
            .await??;
            println!("{v}");
            Ok(())
        }
        Cmd::BenchLoad {
            base,
            password,
            clients,
            exports,
            seconds,
        } => {
            let v = kasad::loadgen::run(kasad::loadgen::LoadOptions {
                base,
                password,
                clients,
                exports,
                duration: std::time::Duration::from_secs(seconds),
            })
            .await?;
            println!("{v}");
            Ok(())
        }
        Cmd::BenchReport { dir, runs } => {
            let v =
                tokio::task::spawn_blocking(move || kasad::bench::run_report(&dir, runs)).await??;
            println!("{v}");
            Ok(())
        }
        Cmd::BenchWear {
            dir,
            hours,
            checkpoint_s,
            cache_mb,
        } => {
            let v = tokio::task::spawn_blocking(move || {
                kasad::bench::run_wear(&dir, hours, checkpoint_s, cache_mb)
            })
            .await??;
            println!("{v}");
            Ok(())
        }
        Cmd::PrintConfig => {
            print!("{EXAMPLE}");
            Ok(())
        }
        Cmd::AvahiService { config, out } => {
            let s = Settings::load(Some(&config))?;
            if let Some(why) = kasad::mdns::avahi_refusal(&s.mdns, s.http.listen) {
                anyhow::bail!(
                    "{why} (in {}): nothing for Avahi to announce",
                    config.display()
                );
            }
            let text = kasad::mdns::avahi_service(&s.mdns.instance, s.http.listen.port());
            match out {
                Some(path) => kasad::mdns::write_atomically(&path, &text)
                    .with_context(|| format!("while writing {}", path.display()))?,
                None => print!("{text}"),
            }
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

/// Parses a duration argument (`500ms`, `10s`, `5m`, `2h`, `1d`).
fn parse_dur(s: &str) -> Result<kasad::config::Dur, String> {
    kasad::config::Dur::parse(s)
        .filter(|d| !d.0.is_zero())
        .ok_or_else(|| format!("{s:?} is not a duration like 10s, 5m or 1h"))
}
