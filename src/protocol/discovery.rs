//! UDP discovery: the XOR `get_sysinfo` probe, sent without a length prefix to each target
//! (a broadcast address in production, unicast loopback addresses in tests and the demo);
//! devices answer from their protocol port with their full sysinfo.

use super::messages::{SysInfo, sysinfo_request};
use super::{Result, cipher, frame};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;

/// One device that answered a probe.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Where it answered from (its TCP address too).
    pub addr: SocketAddr,
    /// What it said about itself.
    pub sysinfo: SysInfo,
}

/// True when every target is a loopback address (no broadcast, no LAN traffic).
pub fn all_loopback(targets: &[SocketAddr]) -> bool {
    targets.iter().all(|t| t.ip().is_loopback())
}

/// Probes `targets` in `rounds` rounds spread over `window` and returns the devices that
/// answered, one per device id (the latest answer wins). Undecodable datagrams are ignored.
pub async fn probe(targets: &[SocketAddr], window: Duration, rounds: u32) -> Result<Vec<Answer>> {
    let bind: SocketAddr = if all_loopback(targets) {
        (Ipv4Addr::LOCALHOST, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.set_broadcast(!all_loopback(targets))?;
    let payload = frame::encode_udp(&serde_json::to_vec(&sysinfo_request()).unwrap_or_default());
    let rounds = rounds.max(1);
    let gap = window / rounds;
    let deadline = tokio::time::Instant::now() + window;
    let mut found: HashMap<String, Answer> = HashMap::new();
    let mut answered: HashSet<SocketAddr> = HashSet::new();
    let mut buf = vec![0u8; super::MAX_FRAME];
    for round in 0..rounds {
        // Later rounds only repeat probes that got no answer (a broadcast target never counts
        // as answered). Answers are drained while sending, so a large target list does not
        // overflow the socket's receive buffer.
        for (i, t) in targets.iter().enumerate() {
            if answered.contains(t) {
                continue;
            }
            if let Err(e) = sock.send_to(&payload, t).await {
                tracing::debug!(target = %t, error = %e, "discovery probe not sent");
            }
            if i % 32 == 31 {
                while let Ok((n, from)) = sock.try_recv_from(&mut buf) {
                    accept(&buf[..n], from, &mut found, &mut answered);
                }
            }
        }
        let round_end = if round + 1 == rounds {
            deadline
        } else {
            tokio::time::Instant::now() + gap
        };
        while let Ok(Ok((n, from))) =
            tokio::time::timeout_at(round_end, sock.recv_from(&mut buf)).await
        {
            accept(&buf[..n], from, &mut found, &mut answered);
        }
    }
    Ok(found.into_values().collect())
}

fn accept(
    datagram: &[u8],
    from: SocketAddr,
    found: &mut HashMap<String, Answer>,
    answered: &mut HashSet<SocketAddr>,
) {
    let plain = cipher::decrypt(datagram);
    let parsed = serde_json::from_slice(&plain)
        .map_err(|e| super::Error::Decode(e.to_string()))
        .and_then(|v| SysInfo::from_response(&v));
    match parsed {
        Ok(sysinfo) => {
            answered.insert(from);
            found.insert(
                sysinfo.device_id.clone(),
                Answer {
                    addr: from,
                    sysinfo,
                },
            );
        }
        Err(e) => tracing::debug!(%from, error = %e, "ignoring discovery answer"),
    }
}
