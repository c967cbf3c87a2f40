//! `kasad run`: the daemon with a configuration file, until SIGTERM or Ctrl-C.

use crate::config::Settings;

/// Arguments of `kasad run`: the configuration file.
pub type Args = super::ConfigArgs;

/// Loads the configuration (saying its warnings) and runs the daemon.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let config = a.config;
    let settings = Settings::load(Some(&config))?;
    for w in settings.warnings() {
        tracing::warn!("{}: {w}", config.display());
    }
    crate::app::run(settings, crate::clock::system(), super::shutdown::signal()).await
}
