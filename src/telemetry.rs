//! Logging, filtered by `RUST_LOG` (default `info`): under systemd (stderr is the journal
//! stream `JOURNAL_STREAM` names) native journald entries with structured fields (each tracing
//! field becomes a journal field, e.g. `DEVICE_ID=`), otherwise human-readable lines on stderr.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber (once; later calls are ignored).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if stderr_is_journal()
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

/// Whether stderr is the journal stream systemd connected (`JOURNAL_STREAM` names its device
/// and inode; the variable alone may be inherited by a shell started from a service).
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    v.to_str() == Some(format!("{}:{}", st.st_dev, st.st_ino).as_str())
}
