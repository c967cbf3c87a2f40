//! Logging, filtered by `RUST_LOG` (default `info`): under systemd (stderr connected to the
//! journal, `JOURNAL_STREAM`) native journald entries with structured fields (each tracing
//! field becomes a journal field, e.g. `DEVICE_ID=`), otherwise human-readable lines on stderr.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber (once; later calls are ignored).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journal) = tracing_journald::layer()
    {
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(journal.with_syslog_identifier("kasad".into()))
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
