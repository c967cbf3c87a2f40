//! mDNS: finding the daemon on the LAN by name. Announces the web pages as `_http._tcp`
//! and the API as `_kasad._tcp` (TXT `path=/api`) under one instance name, with the
//! built-in responder (mdns-sd) or, where avahi-daemon already runs, through Avahi's
//! service file, so a Pi never runs two responders.

use crate::config::Mdns;
use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceInfo};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Present while avahi-daemon runs.
pub const AVAHI_SOCKET: &str = "/run/avahi-daemon/socket";
/// Where Avahi reads static services from (`kasad avahi-service` writes its text).
pub const AVAHI_SERVICE_FILE: &str = "/etc/avahi/services/kasad.service";

/// The two services: type, TXT records.
fn services() -> [(&'static str, Vec<(&'static str, &'static str)>); 2] {
    let v = env!("CARGO_PKG_VERSION");
    [
        ("_http._tcp", vec![("path", "/")]),
        ("_kasad._tcp", vec![("path", "/api"), ("version", v)]),
    ]
}

/// This machine's host name without a domain (`raspberrypi`), or `kasad` if it has none.
/// From uname(2): the unit's `ProcSubset=pid` hides /proc/sys.
pub fn host_name() -> String {
    let raw = rustix::system::uname();
    let raw = raw.nodename().to_string_lossy();
    let short = raw.trim().split('.').next().unwrap_or("").to_owned();
    if short.is_empty() {
        "kasad".into()
    } else {
        short
    }
}

/// The instance name: `%h` in the pattern becomes `host` (as Avahi does).
pub fn instance_name(pattern: &str, host: &str) -> String {
    pattern.replace("%h", host)
}

/// What the daemon does about mDNS.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing, for this reason.
    Off(String),
    /// Avahi publishes; the daemon only checks that the service file is there.
    Avahi,
    /// The built-in responder announces on every non-loopback interface.
    Builtin,
}

/// Avahi publishes kasad: avahi-daemon runs, or its service file for kasad is installed.
pub fn avahi_present() -> bool {
    Path::new(AVAHI_SOCKET).exists() || Path::new(AVAHI_SERVICE_FILE).exists()
}

/// Decides from the configuration, the listen address and whether Avahi is present.
pub fn plan(cfg: &Mdns, listen: SocketAddr, avahi_running: bool) -> Plan {
    if !cfg.enabled {
        return Plan::Off("[mdns] enabled = false".into());
    }
    if listen.ip().is_loopback() {
        return Plan::Off(format!(
            "[http] listen = {listen} is a loopback address, which nothing on the LAN can reach"
        ));
    }
    match (cfg.responder.as_str(), avahi_running) {
        ("avahi", _) | ("auto", true) => Plan::Avahi,
        _ => Plan::Builtin,
    }
}

/// The built-in responder while it announces; [`Announcer::stop`] says goodbye.
pub struct Announcer {
    daemon: ServiceDaemon,
    fullnames: Vec<String>,
}

/// Errors of the built-in responder (never fatal: the daemon runs on without mDNS).
#[derive(Debug, thiserror::Error)]
#[error("mDNS: {0}")]
pub struct MdnsError(#[from] mdns_sd::Error);

/// Starts announcing as planned; logs what it does. `None` when nothing runs in-process.
pub fn start(cfg: &Mdns, listen: SocketAddr) -> Option<Announcer> {
    let host = host_name();
    let instance = instance_name(&cfg.instance, &host);
    match plan(cfg, listen, avahi_present()) {
        Plan::Off(why) => {
            tracing::debug!(%why, "mDNS announcements off");
            if Path::new(AVAHI_SERVICE_FILE).exists() {
                tracing::warn!(
                    "mDNS is off here, but Avahi still announces kasad from {AVAHI_SERVICE_FILE}; \
                     delete that file to stop it"
                );
            }
            None
        }
        Plan::Avahi => {
            if Path::new(AVAHI_SERVICE_FILE).exists() {
                tracing::info!(
                    file = AVAHI_SERVICE_FILE,
                    "mDNS: avahi-daemon publishes kasad"
                );
            } else {
                tracing::warn!(
                    "mDNS: avahi-daemon runs but {AVAHI_SERVICE_FILE} is missing, so kasad is not \
                     announced; create it with `sudo kasad avahi-service --out {AVAHI_SERVICE_FILE}`"
                );
            }
            None
        }
        Plan::Builtin => match announce(&instance, &host, listen) {
            Ok(a) => {
                tracing::info!(%instance, port = listen.port(), "mDNS: announcing kasad");
                Some(a)
            }
            Err(e) => {
                tracing::warn!(error = %e, "mDNS announcements failed; kasad runs without them");
                None
            }
        },
    }
}

/// Registers both services for `host.local.` on the listen address (all addresses of the
/// host, followed as they change, when it listens on a wildcard).
pub fn announce(instance: &str, host: &str, listen: SocketAddr) -> Result<Announcer, MdnsError> {
    let daemon = ServiceDaemon::new()?;
    daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
    if listen.is_ipv4() {
        // 0.0.0.0 serves no IPv6 client; an IPv6 wildcard usually serves both.
        daemon.disable_interface(IfKind::IPv6)?;
    }
    let events = daemon.monitor()?;
    std::thread::Builder::new()
        .name("mdns-log".into())
        .spawn(move || {
            for ev in events {
                match ev {
                    DaemonEvent::Error(e) => tracing::warn!(error = %e, "mDNS"),
                    DaemonEvent::NameChange(c) => {
                        tracing::warn!(from = %c.original, to = %c.new_name, "mDNS name conflict")
                    }
                    DaemonEvent::IpAdd(ip) | DaemonEvent::IpDel(ip) => {
                        tracing::debug!(%ip, "mDNS: host addresses changed")
                    }
                    _ => {}
                }
            }
        })
        .map_err(|e| mdns_sd::Error::Msg(e.to_string()))?;
    let host_fqdn = format!("{host}.local.");
    let mut fullnames = Vec::new();
    for (ty, txt) in services() {
        let ty = format!("{ty}.local.");
        let info = if listen.ip().is_unspecified() {
            ServiceInfo::new(&ty, instance, &host_fqdn, "", listen.port(), &txt[..])?
                .enable_addr_auto()
        } else {
            ServiceInfo::new(
                &ty,
                instance,
                &host_fqdn,
                listen.ip(),
                listen.port(),
                &txt[..],
            )?
        };
        fullnames.push(info.get_fullname().to_owned());
        daemon.register(info)?;
    }
    Ok(Announcer { daemon, fullnames })
}

impl Announcer {
    /// Sends goodbye packets for both services and stops the responder.
    pub fn stop(self) {
        let wait = Duration::from_secs(2);
        for name in &self.fullnames {
            if let Ok(rx) = self.daemon.unregister(name) {
                let _ = rx.recv_timeout(wait);
            }
        }
        // The responder repeats each goodbye after about 120 ms; let it before it stops.
        std::thread::sleep(Duration::from_millis(250));
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = rx.recv_timeout(wait);
        }
        tracing::info!("mDNS: goodbye sent");
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Why Avahi should not publish kasad for this configuration, if it should not: the same
/// cases in which kasad announces nothing itself.
pub fn avahi_refusal(cfg: &Mdns, listen: SocketAddr) -> Option<String> {
    match plan(cfg, listen, true) {
        Plan::Off(why) => Some(why),
        _ if cfg.responder == "builtin" => {
            Some("[mdns] responder = \"builtin\": kasad announces itself".into())
        }
        _ => None,
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so Avahi never reads a
/// partial file.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("service.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Avahi's static service file for both services (`%h` is left for Avahi to fill in).
pub fn avahi_service(instance_pattern: &str, port: u16) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" standalone='no'?>\n\
         <!DOCTYPE service-group SYSTEM \"avahi-service.dtd\">\n\
         <!-- kasad: written by `kasad avahi-service`; run it again after changing [http] listen or [mdns] instance. -->\n\
         <service-group>\n",
    );
    out += &format!(
        "  <name replace-wildcards=\"yes\">{}</name>\n",
        xml_escape(instance_pattern)
    );
    for (ty, txt) in services() {
        out += &format!("  <service>\n    <type>{ty}</type>\n    <port>{port}</port>\n");
        for (k, v) in txt {
            out += &format!("    <txt-record>{}={}</txt-record>\n", k, xml_escape(v));
        }
        out += "  </service>\n";
    }
    out + "</service-group>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(enabled: bool, responder: &str) -> Mdns {
        Mdns {
            enabled,
            responder: responder.into(),
            ..Mdns::default()
        }
    }

    #[test]
    fn the_plan_follows_config_listen_address_and_avahi() {
        let lan: SocketAddr = "0.0.0.0:5272".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:5272".parse().unwrap();
        assert!(matches!(
            plan(&cfg(false, "auto"), lan, false),
            Plan::Off(_)
        ));
        assert!(
            matches!(plan(&cfg(true, "builtin"), lo, false), Plan::Off(w) if w.contains("loopback"))
        );
        assert_eq!(plan(&cfg(true, "auto"), lan, false), Plan::Builtin);
        assert_eq!(plan(&cfg(true, "auto"), lan, true), Plan::Avahi);
        assert_eq!(plan(&cfg(true, "builtin"), lan, true), Plan::Builtin);
        assert_eq!(plan(&cfg(true, "avahi"), lan, false), Plan::Avahi);
        assert_eq!(avahi_refusal(&cfg(true, "auto"), lan), None);
        assert!(avahi_refusal(&cfg(true, "builtin"), lan).is_some());
        assert!(avahi_refusal(&cfg(true, "auto"), lo).is_some());
        assert!(avahi_refusal(&cfg(false, "auto"), lan).is_some());
    }

    #[test]
    fn instance_names_take_the_host_name_like_avahi() {
        assert_eq!(instance_name("kasad on %h", "pi"), "kasad on pi");
        assert_eq!(instance_name("Garage", "pi"), "Garage");
        let h = host_name();
        assert!(!h.is_empty() && !h.contains('.'), "{h}");
    }

    #[test]
    fn the_avahi_file_names_both_services_and_escapes_the_name() {
        let x = avahi_service("Tom & Jerry's <kasad> on %h", 8080);
        assert!(x.contains(
            "<name replace-wildcards=\"yes\">Tom &amp; Jerry&apos;s &lt;kasad&gt; on %h</name>"
        ));
        assert_eq!(x.matches("<port>8080</port>").count(), 2);
        assert!(x.contains("<type>_http._tcp</type>"));
        assert!(x.contains("<type>_kasad._tcp</type>"));
        assert!(x.contains("<txt-record>path=/api</txt-record>"));
        assert!(x.ends_with("</service-group>\n"));
    }
}
