//! systemd's service notification protocol (`sd_notify`), without libsystemd.
//!
//! Owns: telling systemd that the daemon is ready (`READY=1`, for `Type=notify`), alive
//! (`WATCHDOG=1`, every half `WatchdogSec`) and stopping (`STOPPING=1`). Outside systemd
//! (`NOTIFY_SOCKET` unset) every call does nothing.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where notifications go.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// A socket path, or an abstract name (Linux; `@` in `NOTIFY_SOCKET`).
    target: Option<Target>,
    /// How often to ping the watchdog.
    watchdog: Option<Duration>,
}

#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From the environment systemd sets: `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok();
        Self::from_vars(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    /// From the variables' values (`pid`: this process).
    pub fn from_vars(
        socket: Option<&str>,
        usec: Option<&str>,
        wd_pid: Option<&str>,
        pid: u32,
    ) -> Self {
        let target = match socket {
            Some(s) if s.starts_with('@') => Some(Target::Abstract(s.as_bytes()[1..].to_vec())),
            Some(s) if s.starts_with('/') => Some(Target::Path(PathBuf::from(s))),
            _ => None,
        };
        let ours = wd_pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(pid));
        let watchdog = usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && ours)
            .map(|u| Duration::from_micros(u / 2));
        Self { target, watchdog }
    }

    /// Sends `state` (e.g. `READY=1`); a daemon outside systemd sends nothing.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let sock = UnixDatagram::unbound()?;
        match target {
            Target::Path(p) => sock.send_to(state.as_bytes(), p)?,
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)?
            }
        };
        Ok(())
    }

    /// Like [`Self::notify`], logging a failure instead of returning it.
    pub fn say(&self, state: &str) {
        if let Err(e) = self.notify(state) {
            tracing::warn!(error = %e, state, "cannot notify systemd");
        }
    }

    /// Every half watchdog period until `stop` fires: `WATCHDOG=1` (while the runtime is alive
    /// enough to run this task). Returns at once without a watchdog.
    pub async fn watchdog(self, stop: tokio_util::sync::CancellationToken) {
        let Some(every) = self.watchdog else { return };
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => self.say("WATCHDOG=1"),
                () = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_a_path_socket_and_the_watchdog_period_is_half() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_vars(path.to_str(), Some("10000000"), Some("42"), 42);
        assert_eq!(n.watchdog, Some(Duration::from_secs(5)));
        n.notify("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
    }

    #[test]
    fn abstract_sockets_work_too() {
        let name = format!("kasad-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::from_vars(Some(&format!("@{name}")), None, None, 1)
            .notify("STOPPING=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
    }

    #[test]
    fn outside_systemd_nothing_is_sent_and_a_watchdog_for_another_pid_is_ignored() {
        let n = Notifier::from_vars(None, Some("1000"), None, 1);
        assert!(n.notify("READY=1").is_ok());
        let other = Notifier::from_vars(Some("/run/x"), Some("1000000"), Some("7"), 8);
        assert_eq!(other.watchdog, None);
        assert!(
            Notifier::from_vars(Some("relative"), None, None, 1)
                .target
                .is_none()
        );
    }
}
