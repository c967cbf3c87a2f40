//! `kasad sim` (hidden): N simulated devices on loopback until stopped (for benchmarks).

/// Arguments of `kasad sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of devices.
    #[arg(long, default_value_t = 8)]
    devices: u32,
}

/// Serves the devices; prints their addresses, then `ready`.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let (devices, clock) = (a.devices, crate::clock::system());
    let now = crate::clock::Clock::now_ms(clock.as_ref());
    let handles = crate::sim::start_fleet(super::demo::fleet(devices, now), 0, clock).await?;
    for h in &handles {
        println!("{}", h.addr);
    }
    println!("ready");
    super::shutdown::signal().await;
    Ok(())
}
