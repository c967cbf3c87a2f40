//! UDP discovery: the XOR `get_sysinfo` probe, sent without a length prefix to each target
//! (a broadcast address in production, unicast loopback addresses in tests and the demo);
//! devices answer from their protocol port with their full sysinfo. Newer devices answer the
//! 20002 probe ([`port20002`]) instead, with what they are and which transport they want.

use super::messages::{SysInfo, sysinfo_request};
use super::{Result, cipher, frame, port20002};
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
    let payload = frame::encode_udp(&serde_json::to_vec(&sysinfo_request()).unwrap_or_default());
    let found = probe_with(targets, window, rounds, &payload, |d| {
        let v = serde_json::from_slice(&cipher::decrypt(d))
            .map_err(|e| super::Error::Decode(e.to_string()))?;
        let s = SysInfo::from_response(&v)?;
        Ok((s.device_id.clone(), s))
    })
    .await?;
    Ok(found
        .into_iter()
        .map(|(addr, sysinfo)| Answer { addr, sysinfo })
        .collect())
}

/// Probes `targets` (hosts on the 20002 port) for KLAP and AES devices; one answer per device
/// id, with the address it came from.
pub async fn probe_20002(
    targets: &[SocketAddr],
    window: Duration,
    rounds: u32,
) -> Result<Vec<(SocketAddr, port20002::Announce)>> {
    let serial = crate::random::random_bytes::<4>();
    let payload = port20002::probe(u32::from_be_bytes(serial));
    probe_with(targets, window, rounds, &payload, |d| {
        let a = port20002::parse_answer(d)?;
        Ok((a.device_id.clone(), a))
    })
    .await
}

/// Sends `payload` to every target in `rounds` rounds spread over `window`; `parse` turns an
/// answer into (device id, value). Later rounds only repeat probes that got no answer (a
/// broadcast target never counts as answered); answers are drained while sending, so a large
/// target list does not overflow the socket's receive buffer.
async fn probe_with<T>(
    targets: &[SocketAddr],
    window: Duration,
    rounds: u32,
    payload: &[u8],
    parse: impl Fn(&[u8]) -> Result<(String, T)>,
) -> Result<Vec<(SocketAddr, T)>> {
    let bind: SocketAddr = if all_loopback(targets) {
        (Ipv4Addr::LOCALHOST, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.set_broadcast(!all_loopback(targets))?;
    let rounds = rounds.max(1);
    let gap = window / rounds;
    let deadline = tokio::time::Instant::now() + window;
    let mut found: HashMap<String, (SocketAddr, T)> = HashMap::new();
    let mut answered: HashSet<SocketAddr> = HashSet::new();
    let mut buf = vec![0u8; super::MAX_FRAME];
    let accept = |d: &[u8],
                  from: SocketAddr,
                  found: &mut HashMap<String, (SocketAddr, T)>,
                  answered: &mut HashSet<SocketAddr>| match parse(d) {
        Ok((id, v)) => {
            answered.insert(from);
            found.insert(id, (from, v));
        }
        Err(e) => tracing::debug!(%from, error = %e, "ignoring discovery answer"),
    };
    for round in 0..rounds {
        for (i, t) in targets.iter().enumerate() {
            if answered.contains(t) {
                continue;
            }
            if let Err(e) = sock.send_to(payload, t).await {
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
