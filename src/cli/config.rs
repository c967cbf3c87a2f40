//! `kasad check-config`, `kasad print-config` and `kasad avahi-service`: the configuration
//! file checked, the commented example printed, Avahi's service file written.

use crate::config::{EXAMPLE, Settings};
use anyhow::Context;
use std::path::PathBuf;

/// Arguments of `kasad check-config`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Configuration file (TOML).
    path: PathBuf,
}

/// Arguments of `kasad avahi-service`.
#[derive(Debug, clap::Args)]
pub struct AvahiArgs {
    /// Configuration file (TOML), for the port and the instance name.
    #[arg(long, default_value = super::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Write the file here (atomically) instead of printing it.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Validates a file; says its warnings on stderr.
pub fn check(a: CheckArgs) -> anyhow::Result<()> {
    let path = a.path;
    let s =
        Settings::load(Some(&path)).with_context(|| format!("{} is not valid", path.display()))?;
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

/// Prints the commented example configuration.
pub fn print() -> anyhow::Result<()> {
    print!("{EXAMPLE}");
    Ok(())
}

/// Prints or writes Avahi's service file for the configuration.
pub fn avahi(a: AvahiArgs) -> anyhow::Result<()> {
    let (config, out) = (a.config, a.out);
    let s = Settings::load(Some(&config))?;
    if let Some(why) = crate::mdns::avahi_refusal(&s.mdns, s.http.listen) {
        anyhow::bail!(
            "{why} (in {}): nothing for Avahi to announce",
            config.display()
        );
    }
    let text = crate::mdns::avahi_service(&s.mdns.instance, s.http.listen.port());
    match out {
        Some(path) => crate::mdns::write_atomically(&path, &text)
            .with_context(|| format!("while writing {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}
