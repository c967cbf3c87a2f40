//! KLAP and UDP 20002 over real loopback sockets: our client against the simulated devices
//! (handshake with each candidate credential, wrong credentials, a dropped session, renewal
//! before a session lapses) and the 20002 probe and answer.

use kasad::clock::{self, SharedClock};
use kasad::domain::{Family, Transport};
use kasad::protocol::klap::{Credentials, Version, candidates};
use kasad::protocol::klap_client::{KlapClient, http_client};
use kasad::protocol::messages::SysInfo;
use kasad::protocol::{Error, port20002};
use kasad::sim::{KlapHandle, KlapSpec, Load, Model, SimDevice, SimSpec, start_klap};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn me() -> Credentials {
    Credentials::new("owner@example.com", "correct horse")
}

/// A KLAP device on 127.0.3.`host` (each test its own addresses).
pub async fn klap_device(
    host: u8,
    model: Model,
    version: Version,
    family: Family,
    account: Credentials,
    timeout: Duration,
    clock: SharedClock,
) -> KlapHandle {
    let spec = SimSpec::numbered(
        u32::from(host) + 300,
        model,
        vec![Load::Constant(60_000); 6],
    );
    let d = SimDevice::new(spec, clock.now_ms());
    let k = KlapSpec {
        version,
        family,
        account,
        session_timeout: timeout,
    };
    start_klap(d, k, IpAddr::V4(Ipv4Addr::new(127, 0, 3, host)), 0, clock)
        .await
        .unwrap()
}

fn client(h: &KlapHandle, v: Version) -> KlapClient {
    let http = http_client(Duration::from_secs(5)).unwrap();
    KlapClient::new(http, h.sim.addr, v, Arc::new(candidates(Some(&me()))))
}

async fn sysinfo(c: &mut KlapClient) -> Result<SysInfo, Error> {
    let raw = c
        .request(
            json!({"system": {"get_sysinfo": {}}})
                .to_string()
                .as_bytes(),
        )
        .await?;
    SysInfo::from_response(&serde_json::from_slice(&raw).unwrap())
}

#[tokio::test]
async fn both_klap_versions_accept_each_candidate_credential() {
    let mut host = 10;
    for v in [Version::V1, Version::V2] {
        for account in [me(), Credentials::kasa_default(), Credentials::blank()] {
            host += 1;
            let h = klap_device(
                host,
                Model::Hs100Uk,
                v,
                Family::Iot,
                account.clone(),
                Duration::from_secs(86_400),
                clock::system(),
            )
            .await;
            let mut c = client(&h, v);
            for _ in 0..3 {
                let s = sysinfo(&mut c).await.unwrap();
                assert_eq!(s.model, "HS100(UK)");
                assert_eq!(s.hw_ver, "4.1");
            }
            assert_eq!(
                h.stats.handshakes.load(Ordering::Relaxed),
                1,
                "{v:?} {account:?}: one session serves every request"
            );
            assert_eq!(h.stats.answered.load(Ordering::Relaxed), 3);
            h.sim.stop();
        }
    }
}

#[tokio::test]
async fn a_device_bound_to_another_account_is_an_authentication_error() {
    let other = Credentials::new("someone@example.com", "secret");
    let h = klap_device(
        21,
        Model::Hs100Uk,
        Version::V2,
        Family::Iot,
        other,
        Duration::from_secs(86_400),
        clock::system(),
    )
    .await;
    let err = sysinfo(&mut client(&h, Version::V2)).await.unwrap_err();
    assert!(matches!(err, Error::Auth(_)), "{err}");
    assert!(!err.to_string().contains("correct horse"), "{err}");
    assert_eq!(h.stats.handshakes.load(Ordering::Relaxed), 0);
    // The wrong generation's hashes match no candidate either.
    h.set_account(me());
    let err = sysinfo(&mut client(&h, Version::V1)).await.unwrap_err();
    assert!(matches!(err, Error::Auth(_)), "{err}");
    assert!(sysinfo(&mut client(&h, Version::V2)).await.is_ok());
}

#[tokio::test]
async fn a_403_mid_session_handshakes_again_and_the_request_succeeds() {
    let h = klap_device(
        22,
        Model::Hs100Uk,
        Version::V1,
        Family::Iot,
        me(),
        Duration::from_secs(86_400),
        clock::system(),
    )
    .await;
    let mut c = client(&h, Version::V1);
    sysinfo(&mut c).await.unwrap();
    h.drop_sessions();
    let s = sysinfo(&mut c).await.unwrap();
    assert_eq!(
        s.model, "HS100(UK)",
        "the request after the 403 is answered"
    );
    assert_eq!(h.stats.refused.load(Ordering::Relaxed), 1);
    assert_eq!(h.stats.handshakes.load(Ordering::Relaxed), 2);
    assert_eq!(h.stats.answered.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_session_is_renewed_before_it_lapses() {
    // TIMEOUT=2 s: the client renews once half of it has passed, before the device would
    // refuse the session.
    let h = klap_device(
        23,
        Model::Hs100Uk,
        Version::V2,
        Family::Iot,
        me(),
        Duration::from_secs(2),
        clock::system(),
    )
    .await;
    let mut c = client(&h, Version::V2);
    sysinfo(&mut c).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    sysinfo(&mut c).await.unwrap();
    assert_eq!(h.stats.handshakes.load(Ordering::Relaxed), 2, "renewed");
    assert_eq!(
        h.stats.refused.load(Ordering::Relaxed),
        0,
        "the device never had to refuse a lapsed session"
    );
}

#[tokio::test]
async fn the_20002_probe_gets_the_device_and_its_transport() {
    let h = klap_device(
        24,
        Model::Kp125m,
        Version::V2,
        Family::Smart,
        me(),
        Duration::from_secs(86_400),
        clock::system(),
    )
    .await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // A probe with a broken CRC is ignored, as devices do.
    let mut bad = port20002::probe(7);
    bad[12] ^= 0xff;
    sock.send_to(&bad, h.discovery_addr).await.unwrap();
    sock.send_to(&port20002::probe(8), h.discovery_addr)
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let a = port20002::parse_answer(&buf[..n]).unwrap();
    assert_eq!(a.model, "KP125M(US)");
    assert_eq!(a.family(), Some(Family::Smart));
    assert_eq!(a.http_port, h.sim.addr.port());
    assert_eq!(a.transports().unwrap(), vec![Transport::KlapV2]);
    let none = tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await;
    assert!(none.is_err(), "only the valid probe was answered");
}
