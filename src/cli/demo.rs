//! `kasad demo`: simulated devices on loopback, the real daemon and API, in one command.
//!
//! Starts N simulated legacy devices on 127.0.0.2, 127.0.0.3, … (port 9999 where free) and
//! four newer ones on the next addresses (an HS100 UK over KLAP v1, a KP125M plug and a P316M
//! strip speaking SMART over KLAP v2, an EP25 over AES; all answer the 20002 probe), points
//! discovery at exactly
//! those addresses (loopback only, enforced), optionally backfills D days of clearly labelled
//! simulated history of the legacy devices from the same load model, and serves the API.

use crate::app;
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::poller::registry::infos_from_sysinfo;
use crate::protocol::messages::{SysInfo, sysinfo_request};
use crate::sim::{self, SimDevice, SimHandle};
use crate::store::{self, WriteOp};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Prints a line for the person running the demo; a closed stdout is not an error.
fn say(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{args}");
}

/// Options of `kasad demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// HTTP bind address.
    pub listen: SocketAddr,
    /// Number of simulated devices.
    pub devices: u32,
    /// Data directory (a fresh temporary one when `None`).
    pub data_dir: Option<PathBuf>,
    /// Days of simulated history to backfill into an empty database.
    pub history_days: u32,
    /// Time between backfilled readings (the poll interval when `None`).
    pub history_step: Option<std::time::Duration>,
    /// Password of the `admin` user created on first start (random and printed when `None`).
    pub admin_password: Option<String>,
}

/// Simulated devices for a demo or bench whose state starts at `start_ms`.
pub fn fleet(n: u32, start_ms: i64) -> Vec<SimDevice> {
    (0..n)
        .map(|i| SimDevice::new(sim::fleet_spec(i), start_ms))
        .collect()
}

/// The demo's own fleet: [`fleet`] with a washer (a programme a day from 09:00 UTC, pausing
/// twice) in place of every eighth device's constant load, and a first fridge whose compressor
/// runs longer from today (UTC) on, so that the insights have runs and a drift to show.
pub fn demo_fleet(n: u32, start_ms: i64, now_ms: i64) -> Vec<SimDevice> {
    use sim::Load;
    let today_s = (now_ms - now_ms.rem_euclid(86_400_000)) / 1_000;
    (0..n)
        .map(|i| {
            let mut spec = sim::fleet_spec(i);
            if i % 8 == 7 {
                spec.loads = vec![Load::Washer];
            } else if i == 0 {
                spec.loads = vec![Load::FridgeDrift { from_s: today_s }];
            }
            SimDevice::new(spec, start_ms)
        })
        .collect()
}

/// Starts the demo's newer devices on the loopback addresses after `n` legacy ones: an HS100
/// UK over KLAP v1 never bound to an account (blank credentials), a KP125M and a P316M strip
/// over KLAP v2 bound to the Kasa default account, and an EP25 hw 2.6 over AES
/// securePassthrough (blank credentials). All answer the 20002 probe on one port (20002 where
/// free).
pub async fn start_newer(n: u32, clock: SharedClock) -> anyhow::Result<Vec<sim::KlapHandle>> {
    use crate::domain::Family;
    use crate::protocol::klap::{Credentials, Version};
    use sim::{KlapSpec, Load, Model, SimSpec};
    let now = clock.now_ms();
    let devices = [
        (
            Model::Hs100Uk,
            Version::V1,
            Family::Iot,
            Credentials::blank(),
            vec![Load::Lamp],
        ),
        (
            Model::Kp125m,
            Version::V2,
            Family::Smart,
            Credentials::kasa_default(),
            vec![Load::Fridge],
        ),
        (
            Model::Ep25,
            Version::V2,
            Family::Smart,
            Credentials::blank(),
            vec![Load::Computer],
        ),
        (
            Model::P316m,
            Version::V2,
            Family::Smart,
            Credentials::kasa_default(),
            vec![
                Load::Tv,
                Load::Computer,
                Load::Lamp,
                Load::Constant(3_000),
                Load::Heater,
                Load::Constant(0),
            ],
        ),
    ];
    let mut out: Vec<sim::KlapHandle> = Vec::new();
    for (k, (model, version, family, account, loads)) in devices.into_iter().enumerate() {
        let aes = model == Model::Ep25;
        let i = n + k as u32;
        let spec = KlapSpec {
            version,
            family,
            account,
            session_timeout: std::time::Duration::from_secs(86_400),
            aes,
        };
        let dev = SimDevice::new(SimSpec::numbered(i, model, loads), now);
        let ip = sim::fleet_ip(i);
        let port = out
            .first()
            .map_or(crate::protocol::port20002::DEFAULT_PORT, |h| {
                h.discovery_addr.port()
            });
        let h = match sim::start_klap(dev.clone(), spec.clone(), ip, port, clock.clone()).await {
            Ok(h) => h,
            // Another demo holds 20002: the first device takes a free port, the rest follow it.
            Err(_) if out.is_empty() => sim::start_klap(dev, spec, ip, 0, clock.clone()).await?,
            Err(e) => return Err(e.into()),
        };
        out.push(h);
    }
    Ok(out)
}

/// Writes history for the running simulated devices `sims` from `from_ms` to `now_ms` (advancing
/// their state), one reading per `step_ms`, through the store writer, recording each device at
/// the address it really listens on. Returns the number of readings written.
pub async fn backfill(
    settings: &Settings,
    sims: &[SimHandle],
    from_ms: i64,
    now_ms: i64,
    step_ms: i64,
) -> anyhow::Result<u64> {
    let st = app::open_store(settings).await?;
    if st.newest_reading_ms()?.is_some() {
        tracing::info!("database already holds readings; no simulated history added");
        return Ok(0);
    }
    let (writer, task) = store::writer::spawn(st, settings.storage.commit_interval.0, None);
    for sim in sims {
        let s =
            SysInfo::from_response(&sim.with_device(|d| d.handle(&sysinfo_request(), from_ms)))?;
        for info in infos_from_sysinfo(sim.addr, &s)? {
            writer
                .send(WriteOp::Device(Box::new(info), from_ms))
                .await?;
        }
    }
    let mut n = 0u64;
    let mut t = from_ms;
    while t <= now_ms {
        let mut batch = Vec::new();
        for sim in sims {
            batch.extend(sim.with_device(|d| d.readings_at(t)));
        }
        n += batch.len() as u64;
        writer.send(WriteOp::Readings(batch, vec![])).await?;
        t += step_ms;
    }
    writer.flush().await?;
    drop(writer);
    task.await?;
    Ok(n)
}

/// Runs the demo until `shutdown` resolves.
pub async fn run(
    opts: DemoOptions,
    clock: SharedClock,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut settings = Settings::load(None)?;
    // The demo never announces itself on a LAN (and runs on loopback anyway).
    settings.mdns.enabled = false;
    let tmp = match &opts.data_dir {
        Some(d) => {
            settings.data_dir = d.clone();
            None
        }
        None => {
            let t = tempfile::Builder::new().prefix("kasad-demo-").tempdir()?;
            settings.data_dir = t.path().to_path_buf();
            Some(t)
        }
    };
    let now = clock.now_ms();
    let step = i64::try_from(
        opts.history_step
            .unwrap_or(settings.poll.interval.0)
            .as_millis(),
    )?;
    let from = now - i64::from(opts.history_days) * 86_400_000;
    // Started first, so that the history records where each one really listens (port 9999,
    // or an ephemeral one when another demo holds it).
    let handles: Vec<SimHandle> =
        sim::start_fleet(demo_fleet(opts.devices, from, now), 9999, clock.clone())
            .await
            .context("while starting simulated devices on 127.0.0.x")?;
    if opts.history_days > 0 {
        say(format_args!(
            "backfilling {} days of SIMULATED history (generated from the simulator's load model, not measured)…",
            opts.history_days
        ));
        let n = backfill(&settings, &handles, from, now, step).await?;
        tracing::info!(
            readings = n,
            days = opts.history_days,
            "simulated history written"
        );
    }
    settings.discovery.enabled = true;
    settings.discovery.loopback_only = true;
    let newer = start_newer(opts.devices, clock.clone())
        .await
        .context("while starting simulated KLAP devices on 127.0.0.x")?;
    settings.discovery.targets = handles.iter().map(|h| h.addr.to_string()).collect();
    settings.discovery.targets.extend(
        newer
            .iter()
            .map(|k| SocketAddr::new(k.sim.addr.ip(), 9999).to_string()),
    );
    settings.discovery.port_20002 = newer.first().map_or(0, |k| k.discovery_addr.port());
    settings.discovery.window = crate::config::Dur(std::time::Duration::from_millis(500));
    settings.devices.clear();
    settings.http.listen = opts.listen;
    settings.validate()?;

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("while binding {}", opts.listen))?;
    let (password, shown) = match &opts.admin_password {
        Some(p) => (p.clone(), "as given by --admin-password".to_owned()),
        None => {
            let p = crate::random::random_token::<12>();
            (p.clone(), p)
        }
    };
    let start = app::StartOptions {
        admin_password: Some(password),
    };
    let running = app::start_with(settings.clone(), listener, clock, start).await?;
    say(format_args!(
        "kasad demo: log in as admin, password {shown} (only if the data dir had no admin yet)"
    ));
    say(format_args!(
        "kasad demo: {} simulated devices on {}…{} (data in {})",
        handles.len(),
        handles
            .first()
            .map(|h| h.addr.to_string())
            .unwrap_or_default(),
        handles
            .last()
            .map(|h| h.addr.to_string())
            .unwrap_or_default(),
        settings.data_dir.display()
    ));
    for k in &newer {
        let model = k.sim.with_device(|d| d.spec().model.name());
        say(format_args!(
            "kasad demo: {model} over KLAP at http://{} (20002 probe at {})",
            k.sim.addr, k.discovery_addr
        ));
    }
    say(format_args!(
        "kasad demo: listening on http://{}/",
        running.addr
    ));
    say(format_args!(
        "kasad demo: open http://{}/ in a browser and log in, or see the README for curl (Ctrl-C to stop)",
        running.addr
    ));
    shutdown.await;
    running.shutdown.cancel();
    let res = running.done.await?;
    for h in &handles {
        h.stop();
    }
    for k in &newer {
        k.sim.stop();
    }
    drop(tmp);
    res
}

/// Arguments of `kasad demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// HTTP address.
    #[arg(long, default_value = "127.0.0.1:5272")]
    listen: std::net::SocketAddr,
    /// Number of simulated devices (one HS300 strip and one HS100 in every eight).
    #[arg(long, default_value_t = 8)]
    devices: u32,
    /// Data directory (default: a fresh temporary directory).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Days of simulated history to backfill into an empty database.
    #[arg(long, default_value_t = 1)]
    history_days: u32,
    /// Time between backfilled readings, e.g. `5m` (default: the poll interval).
    #[arg(long, value_parser = super::parse_dur)]
    history_step: Option<crate::config::Dur>,
    /// Password for the `admin` user created on first start (default: random, printed).
    #[arg(long)]
    admin_password: Option<String>,
}

/// Runs the demo until SIGTERM or Ctrl-C.
pub async fn main(a: Args) -> anyhow::Result<()> {
    let opts = DemoOptions {
        listen: a.listen,
        devices: a.devices,
        data_dir: a.data_dir,
        history_days: a.history_days,
        history_step: a.history_step.map(|d| d.0),
        admin_password: a.admin_password,
    };
    run(opts, crate::clock::system(), super::shutdown::signal()).await
}
