//! `kasad healthcheck`: asks the running daemon's `/api/health` and answers with an exit code
//! (0 healthy; 1 degraded, unreachable or not answering in time), for scripts and monitors.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why the daemon is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    /// No connection or no answer.
    #[error("kasad does not answer on {0}: {1}")]
    Unreachable(SocketAddr, String),
    /// It answered, but not with a healthy report.
    #[error("kasad on {addr} is {status} (HTTP {code}): {body}")]
    Degraded {
        /// Where it was asked.
        addr: SocketAddr,
        /// HTTP status.
        code: u16,
        /// The report's `status`.
        status: String,
        /// The report.
        body: String,
    },
}

/// Where to reach a daemon listening on `listen`: a wildcard address is asked on loopback.
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Asks `addr` for its health report (with `token`, the scrape token, for the detail);
/// returns the report when healthy.
pub async fn check(
    addr: SocketAddr,
    timeout: Duration,
    token: Option<&str>,
) -> Result<serde_json::Value, Unhealthy> {
    let unreachable = |e: String| Unhealthy::Unreachable(addr, e);
    let raw = tokio::time::timeout(timeout, async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let req =
            format!("GET /api/health HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.take(1 << 20).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    })
    .await
    .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
    .map_err(|e| unreachable(e.to_string()))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| unreachable(format!("not an HTTP answer: {head:?}")))?;
    let report: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    let status = report["status"].as_str().unwrap_or("unknown").to_owned();
    if code == 200 && status == "ok" {
        Ok(report)
    } else {
        Err(Unhealthy::Degraded {
            addr,
            code,
            status,
            body: body.trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_address_is_asked_on_loopback() {
        let t = target("0.0.0.0:5272".parse().unwrap());
        assert_eq!(t, "127.0.0.1:5272".parse().unwrap());
        assert_eq!(
            target("[::]:80".parse().unwrap()),
            "[::1]:80".parse().unwrap()
        );
        assert_eq!(
            target("127.0.0.9:1".parse().unwrap()),
            "127.0.0.9:1".parse().unwrap()
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let e = check(addr, Duration::from_secs(5), None).await.unwrap_err();
        assert!(matches!(e, Unhealthy::Unreachable(..)), "{e}");
    }
}

/// Arguments of `kasad healthcheck`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (TOML), for the listen address.
    #[arg(long, default_value = super::DEFAULT_CONFIG)]
    config: std::path::PathBuf,
    /// Ask this address instead (e.g. 127.0.0.1:5272).
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

/// Asks the daemon; exit 0 when healthy.
pub async fn run(a: Args) -> anyhow::Result<()> {
    use crate::config::Settings;
    let (config, addr, timeout) = (a.config, a.addr, a.timeout);
    // With --addr the configuration is optional; it only lends the scrape token.
    let (addr, settings) = match addr {
        Some(a) => (a, Settings::load(Some(&config)).ok()),
        None => {
            let s = Settings::load(Some(&config))?;
            (target(s.http.listen), Some(s))
        }
    };
    // The scrape token (if readable) brings the detail: version and uptime.
    let token = settings
        .filter(|s| s.metrics.access != "off")
        .and_then(|s| crate::app::metrics_token(&s).ok().flatten());
    let report = check(
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
