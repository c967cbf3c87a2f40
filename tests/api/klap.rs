//! KLAP and UDP 20002 over real loopback sockets: our client against the simulated devices
//! (handshake with each candidate credential, wrong credentials, a dropped session, renewal
//! before a session lapses) and the 20002 probe and answer.

use crate::exports::{download, finished};
use crate::helpers::{TestApp, aes_sim, klap_sim, of_type};
use kasad::clock::{self, SharedClock};
use kasad::domain::{Family, Transport};
use kasad::protocol::klap::{Credentials, Version, aes_candidates, candidates};
use kasad::protocol::klap_client::{KlapClient, http_client};
use kasad::protocol::messages::SysInfo;
use kasad::protocol::passthrough::AesClient;
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
            let h = klap_sim(host, Model::Hs100Uk, v)
                .account(account.clone())
                .start()
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
    let h = klap_sim(21, Model::Hs100Uk, Version::V2)
        .account(other)
        .start()
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
    let h = klap_sim(22, Model::Hs100Uk, Version::V1).start().await;
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
    let h = klap_sim(23, Model::Hs100Uk, Version::V2)
        .session(Duration::from_secs(2))
        .start()
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
    let h = klap_sim(24, Model::Kp125m, Version::V2)
        .smart()
        .start()
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

/// Answers every 20002 probe on `ip:port` as a device wanting TPAP (a transport the daemon
/// does not speak).
async fn tpap_announcer(ip: Ipv4Addr, port: u16) {
    let sock = tokio::net::UdpSocket::bind((ip, port)).await.unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((_, from)) = sock.recv_from(&mut buf).await {
            let body = json!({"error_code": 0, "result": {"device_id": "TPAP0001",
                "device_type": "SMART.TAPOPLUG", "device_model": "P125(US)", "mac": "AA-BB-CC-00-00-01",
                "mgt_encrypt_schm": {"encrypt_type": "TPAP", "http_port": 443, "is_support_https": false}}});
            let d = port20002::datagram(1, 0, 0, body.to_string().as_bytes());
            let _ = sock.send_to(&d, from).await;
        }
    });
}

fn by_model<'a>(d: &'a [serde_json::Value], model: &str) -> Vec<&'a serde_json::Value> {
    d.iter().filter(|x| x["model"] == model).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_finds_polls_and_exports_klap_devices_and_flags_the_ones_it_cannot_use() {
    let c = clock::system();
    // Our account on a KP125M; an HS100 UK never bound (blank); a P316M strip on the Kasa
    // default; another KP125M bound to someone else's account; and a TPAP device.
    let kp = klap_sim(31, Model::Kp125m, Version::V2)
        .smart()
        .clock(c.clone())
        .start()
        .await;
    let port = kp.discovery_addr.port();
    let hs = klap_sim(32, Model::Hs100Uk, Version::V1)
        .probe_port(port)
        .account(Credentials::blank())
        .clock(c.clone())
        .start()
        .await;
    let strip = klap_sim(33, Model::P316m, Version::V2)
        .smart()
        .probe_port(port)
        .account(Credentials::kasa_default())
        .clock(c.clone())
        .start()
        .await;
    let other = Credentials::new("neighbour@example.com", "theirs");
    let locked = klap_sim(34, Model::Kp125m, Version::V2)
        .smart()
        .probe_port(port)
        .account(other)
        .clock(c.clone())
        .start()
        .await;
    tpap_announcer(Ipv4Addr::new(127, 0, 3, 35), port).await;
    let ep25 = aes_sim(36)
        .probe_port(port)
        .account(Credentials::blank())
        .clock(c.clone())
        .start()
        .await;
    // A legacy plug among them: one round probes 9999 and 20002.
    let legacy_dev = SimDevice::new(
        SimSpec::numbered(337, Model::Hs110V4, vec![Load::Constant(60_000)]),
        c.now_ms(),
    );
    let legacy = kasad::sim::start(
        legacy_dev,
        IpAddr::V4(Ipv4Addr::new(127, 0, 3, 37)),
        0,
        c.clone(),
    )
    .await
    .unwrap();

    let pw_dir = tempfile::tempdir().unwrap();
    let pw = pw_dir.path().join("kasa-password");
    std::fs::write(&pw, "correct horse\n").unwrap();
    let app = TestApp::with_sims(vec![], |s| {
        s.discovery.targets = (31..=36).map(|h| format!("127.0.3.{h}:9999")).collect();
        s.discovery.targets.push(legacy.addr.to_string());
        s.discovery.port_20002 = port;
        s.kasa.username = "owner@example.com".into();
        s.kasa.password_file = Some(pw.clone());
    })
    .await;
    let devices = app
        .wait_devices(
            "every KLAP device online, the locked one auth_required, TPAP unsupported",
            |d| {
                let online = |m: &str| by_model(d, m).iter().any(|x| x["status"] == "online");
                by_model(d, "KP125M").len() == 1
                    && online("KP125M")
                    && online("HS100(UK)")
                    && of_type(d, "strip_outlet").len() == 6
                    && of_type(d, "strip_outlet")
                        .iter()
                        .all(|x| x["status"] == "online")
                    && d.iter().any(|x| x["status"] == "auth_required")
                    && d.iter().any(|x| x["status"] == "unsupported")
                    && online("EP25")
                    && online("HS110(EU)")
            },
        )
        .await;
    let kp125m = by_model(&devices, "KP125M")[0];
    assert_eq!(kp125m["transport"], "klap_v2");
    assert_eq!(kp125m["has_emeter"], true);
    assert_eq!(by_model(&devices, "HS100(UK)")[0]["transport"], "klap");
    assert_eq!(by_model(&devices, "HS100(UK)")[0]["has_emeter"], false);
    let outlets = of_type(&devices, "strip_outlet");
    assert!(
        outlets
            .iter()
            .all(|o| o["transport"] == "klap_v2" && o["has_emeter"] == true)
    );
    let locked_row = devices
        .iter()
        .find(|x| x["status"] == "auth_required")
        .unwrap();
    assert_eq!(
        locked_row["model"], "KP125M(US)",
        "listed from its 20002 answer"
    );
    assert_eq!(locked_row["online"], false);
    assert!(
        locked_row["last_error"]
            .as_str()
            .unwrap()
            .contains("authentication required")
    );
    let tpap = devices
        .iter()
        .find(|x| x["status"] == "unsupported")
        .unwrap();
    assert_eq!(tpap["model"], "P125(US)");
    assert!(
        tpap["last_error"].as_str().unwrap().contains("TPAP"),
        "{tpap}"
    );
    assert_eq!(locked.stats.answered.load(Ordering::Relaxed), 0);
    assert_eq!(by_model(&devices, "HS110(EU)")[0]["transport"], "xor");
    let ep25_row = by_model(&devices, "EP25")[0];
    assert_eq!(ep25_row["transport"], "aes");
    assert_eq!(ep25_row["has_emeter"], true);
    assert!(ep25.stats.answered.load(Ordering::Relaxed) > 0);

    // Values are the simulator's, in the right units (60 W constant loads).
    let (s, live) = app.get("/api/devices/live").await;
    assert_eq!(s, 200);
    let kp_live = live["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["device_id"] == kp125m["device_id"])
        .unwrap();
    assert_eq!(kp_live["power_w"], 60.0, "{kp_live}");

    // A dropped session costs no reading: the poller handshakes again within the same poll.
    kp.drop_sessions();
    let before = kp.stats.refused.load(Ordering::Relaxed);
    app.wait_devices("a poll after the dropped session", |_| {
        kp.stats.refused.load(Ordering::Relaxed) > before
            && kp.stats.handshakes.load(Ordering::Relaxed) >= 2
    })
    .await;
    let row = app
        .wait_devices("KP125M still online", |d| {
            by_model(d, "KP125M")[0]["status"] == "online"
        })
        .await;
    assert!(by_model(&row, "KP125M")[0]["last_error"].is_null());
    let (s, metrics) = {
        let r = app
            .req(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(s, 200);
    let failed = format!(
        "kasad_polls_total{{device_id=\"{}\",result=\"failed\"}} 0",
        kp125m["device_id"].as_str().unwrap()
    );
    assert!(
        metrics.lines().any(|l| l == failed),
        "the poll that met the 403 handshook again and succeeded: no failed poll ({failed})"
    );

    // Switching a SMART plug goes through its session.
    let id = kp125m["device_id"].as_str().unwrap();
    let (s, v) = {
        let r = app
            .req(reqwest::Method::POST, &format!("/api/devices/{id}/relay"))
            .json(&json!({"on": false}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(s, 200, "{v}");
    assert!(!kp.sim.with_device(|d| d.relay_on(0)));
    let hs_id = by_model(&devices, "HS100(UK)")[0]["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .req(
            reqwest::Method::POST,
            &format!("/api/devices/{hs_id}/relay"),
        )
        .json(&json!({"on": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(!hs.sim.with_device(|d| d.relay_on(0)));

    // Exports include their readings.
    let today = chrono::Utc::now().date_naive();
    let body = json!({"export_type": "device_data", "format": "csv", "devices": "all",
        "date_range": {"start": today.pred_opt().unwrap().to_string(), "end": today.succ_opt().unwrap().to_string()}});
    app.wait_devices("stored readings of the KLAP devices", |d| {
        ["KP125M", "HS100(UK)"]
            .iter()
            .all(|m| by_model(d, m)[0]["data_points"].as_u64() > Some(0))
            && of_type(d, "strip_outlet")
                .iter()
                .all(|o| o["data_points"].as_u64() > Some(0))
    })
    .await;
    let v = finished(&app, body).await;
    let (s, csv, _) = download(&app, v["export_id"].as_str().unwrap()).await;
    assert_eq!(s, 200);
    let csv = String::from_utf8(csv).unwrap();
    for d in [kp125m, by_model(&devices, "HS100(UK)")[0], outlets[0]] {
        let id = d["device_id"].as_str().unwrap();
        assert!(
            csv.lines().any(|l| l.contains(id)),
            "{id} missing from the export"
        );
    }
    drop(strip);
    app.stop().await;
}

/// python-kasa's reading of one device (tests/tools/pykasa_check.py).
fn python_kasa(h: &KlapHandle, family: &str, encryption: &str, lv: u8) -> serde_json::Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(root.join("tests/tools/pykasa_check.py"))
        .args([
            h.sim.addr.ip().to_string(),
            h.sim.addr.port().to_string(),
            family.to_owned(),
            encryption.to_owned(),
            lv.to_string(),
            me().username,
            me().password,
        ])
        .output()
        .expect("python3 runs (scripts/test installs python-kasa 0.12.0)");
    assert!(
        out.status.success(),
        "python-kasa failed on {family} (is python-kasa 0.12.0 installed? scripts/test does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_kasa_reads_the_klap_simulators() {
    let c = clock::system();
    let hs = klap_sim(41, Model::Hs100Uk, Version::V1)
        .clock(c.clone())
        .start()
        .await;
    let kp = klap_sim(42, Model::Kp125m, Version::V2)
        .smart()
        .clock(c.clone())
        .start()
        .await;
    let strip = klap_sim(43, Model::P316m, Version::V2)
        .smart()
        .clock(c.clone())
        .start()
        .await;
    let ep25 = aes_sim(44).clock(c.clone()).start().await;
    let (hs_v, kp_v, strip_v, ep25_v) = tokio::task::spawn_blocking({
        let (hs, kp, strip, ep25) = (hs.clone(), kp.clone(), strip.clone(), ep25.clone());
        move || {
            (
                python_kasa(&hs, "IOT.SMARTPLUGSWITCH", "KLAP", 1),
                python_kasa(&kp, "SMART.KASAPLUG", "KLAP", 2),
                python_kasa(&strip, "SMART.KASAPLUG", "KLAP", 2),
                python_kasa(&ep25, "SMART.KASAPLUG", "AES", 2),
            )
        }
    })
    .await
    .unwrap();

    let alias = |h: &KlapHandle| h.sim.with_device(|d| d.spec().alias.clone());
    assert_eq!(
        hs_v["model"], "HS100",
        "python-kasa drops the region: {hs_v}"
    );
    assert_eq!(hs_v["alias"], alias(&hs).as_str());
    assert_eq!(hs_v["is_on"], true);
    assert!(
        hs_v.get("power_w").is_none(),
        "no meter on the HS100: {hs_v}"
    );

    assert_eq!(kp_v["model"], "KP125M", "{kp_v}");
    assert_eq!(kp_v["alias"], alias(&kp).as_str(), "the base64 nickname");
    assert_eq!(kp_v["is_on"], true);
    assert_eq!(kp_v["power_w"], 60.0, "{kp_v}");
    let volts = kp_v["voltage"].as_f64().unwrap();
    assert!(
        (119.0..=122.0).contains(&volts),
        "120.5 V ± 1.5 V, mV read as V: {kp_v}"
    );

    let kids = strip_v["children"].as_array().unwrap();
    assert_eq!(kids.len(), 6, "{strip_v}");
    for (i, k) in kids.iter().enumerate() {
        let id = strip.sim.with_device(|d| d.child_id(i));
        let k = kids
            .iter()
            .find(|k| k["device_id"] == id.as_str())
            .unwrap_or(k);
        assert_eq!(k["device_id"], id.as_str(), "{strip_v}");
        assert_eq!(k["power_w"], 60.0, "{k}");
        assert_eq!(k["is_on"], true);
    }
    assert_eq!(ep25_v["model"], "EP25", "{ep25_v}");
    assert_eq!(ep25_v["alias"], alias(&ep25).as_str());
    assert_eq!(ep25_v["power_w"], 60.0, "over AES: {ep25_v}");
    // Our client reads the same devices the same way (the daemon test above).
    assert!(hs.stats.handshakes.load(Ordering::Relaxed) >= 1);
    assert!(kp.stats.answered.load(Ordering::Relaxed) >= 1);
}

fn aes_client(h: &KlapHandle) -> AesClient {
    let http = http_client(Duration::from_secs(5)).unwrap();
    AesClient::new(
        http,
        h.sim.addr,
        Some(2),
        Arc::new(aes_candidates(Some(&me()))),
        clock::system(),
    )
}

async fn smart_info(c: &mut AesClient) -> Result<serde_json::Value, Error> {
    let raw = c.request(br#"{"method":"get_device_info"}"#).await?;
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    Ok(kasad::protocol::smart::result(&v, "get_device_info")?.clone())
}

#[tokio::test]
async fn the_aes_transport_logs_in_and_round_trips_smart_requests() {
    for (host, account) in [
        (51, me()),
        (52, Credentials::kasa_default()),
        (53, Credentials::blank()),
    ] {
        let h = aes_sim(host).account(account.clone()).start().await;
        let mut c = aes_client(&h);
        for _ in 0..3 {
            let info = smart_info(&mut c).await.unwrap();
            assert_eq!(info["model"], "EP25", "{account:?}");
            assert_eq!(info["hw_ver"], "2.6");
        }
        assert_eq!(h.stats.answered.load(Ordering::Relaxed), 3);
        // One handshake per candidate tried: ours, the Kasa default, the Tapo default, blank.
        let tried = match host {
            51 => 1,
            52 => 2,
            _ => 4,
        };
        assert_eq!(
            h.stats.handshakes.load(Ordering::Relaxed),
            tried,
            "{account:?}"
        );
    }
    // Someone else's device: every candidate fails.
    let other = aes_sim(54)
        .account(Credentials::new("x@example.com", "y"))
        .start()
        .await;
    let err = smart_info(&mut aes_client(&other)).await.unwrap_err();
    assert!(matches!(err, Error::Auth(_)), "{err}");
    assert_eq!(other.stats.answered.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn an_aes_session_lost_mid_way_logs_in_again_and_one_about_to_lapse_is_renewed() {
    let h = aes_sim(55).start().await;
    let mut c = aes_client(&h);
    smart_info(&mut c).await.unwrap();
    h.drop_sessions();
    assert_eq!(smart_info(&mut c).await.unwrap()["model"], "EP25");
    assert_eq!(
        h.stats.refused.load(Ordering::Relaxed),
        1,
        "the device answered 9999 once"
    );
    assert_eq!(h.stats.handshakes.load(Ordering::Relaxed), 2);

    let short = aes_sim(56).session(Duration::from_secs(2)).start().await;
    let mut c = aes_client(&short);
    smart_info(&mut c).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    smart_info(&mut c).await.unwrap();
    assert_eq!(short.stats.handshakes.load(Ordering::Relaxed), 2, "renewed");
    assert_eq!(
        short.stats.refused.load(Ordering::Relaxed),
        0,
        "before it lapsed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smart_counter_restarting_with_the_device_month_loses_and_doubles_nothing() {
    use kasad::clock::ManualClock;
    use kasad::poller::discovery::Discoverer;
    use kasad::poller::registry::Registry;
    use kasad::poller::{PollConfig, Poller};
    use kasad::store::{Store, writer};
    // 2025-11-29T22:53:00Z. The plug's clock is UTC+1, so its days start at 23:00 UTC and its
    // month ends at 2025-11-30T23:00:00Z. 360 W: 42 Wh every 7 minutes.
    const START: i64 = 1_764_456_780_000;
    const STEP: i64 = 7 * 60_000;
    let clock = Arc::new(ManualClock::new(START));
    let shared: SharedClock = clock.clone();
    let mut dev = SimDevice::new(
        SimSpec::numbered(360, Model::Kp125m, vec![Load::Constant(360_000)]),
        START,
    );
    dev.set_utc_offset_minutes(60);
    let spec = KlapSpec {
        version: Version::V2,
        family: Family::Smart,
        account: me(),
        session_timeout: Duration::from_secs(86_400 * 7),
        aes: false,
    };
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 3, 60));
    let h = start_klap(dev, spec, ip, 0, shared.clone()).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("k.redb"), 8).unwrap();
    let (w, _task) = writer::spawn(store.clone(), Duration::from_secs(3600), None);
    let registry = Arc::new(Registry::default());
    let poller = Poller {
        cfg: PollConfig {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            concurrency: 4,
            max_backoff: Duration::from_secs(60),
            static_hosts: vec![],
        },
        registry: registry.clone(),
        writer: w.clone(),
        clock: shared.clone(),
        status: Default::default(),
        conns: Arc::new(
            kasad::poller::conns::ConnPool::new(4)
                .with_account(Some(me()))
                .with_clock(shared.clone()),
        ),
        sent: Default::default(),
    };
    let discoverer = Discoverer {
        targets: vec![],
        targets_20002: vec![h.discovery_addr],
        window: Duration::from_millis(300),
        registry,
        writer: w.clone(),
        clock: shared.clone(),
        allow_login_v1: false,
    };
    assert_eq!(discoverer.discover_once().await.unwrap(), 1);
    let polls = 212; // until 2025-11-30T23:30Z, across the plug's month end
    for _ in 0..polls {
        let out = poller.poll_once().await;
        assert!(
            matches!(out[..], [kasad::poller::Outcome::Ok(_)]),
            "{out:?}"
        );
        clock.advance(STEP);
    }
    w.flush().await.unwrap();
    let id =
        kasad::domain::DeviceId::parse(&h.sim.with_device(|d| d.spec().device_id.clone())).unwrap();
    let rows = store.readings(&id, 0, i64::MAX, 1000).unwrap();
    assert_eq!(rows.len(), polls);
    let counters: Vec<i64> = rows.iter().map(|r| r.reading.counter_wh.unwrap()).collect();
    // The counter is the month's energy: it runs through the plug's day change at 23:00 UTC
    // on the 29th and starts again with December.
    let restart = counters.windows(2).position(|w| w[1] < w[0]).unwrap() + 1;
    assert_eq!(
        counters.windows(2).filter(|w| w[1] < w[0]).count(),
        1,
        "{counters:?}"
    );
    assert_eq!(rows[restart].reading.ts_ms, START + 207 * STEP);
    assert_eq!(counters[restart], 12, "2 minutes of December");
    // Every 7-minute interval is 42 Wh: the restart lost nothing (30 Wh of November were
    // still to be counted) and counted nothing twice.
    let energy: Vec<i64> = rows.iter().map(|r| r.energy_wh).collect();
    assert_eq!(energy[0], 0);
    assert!(energy[1..].iter().all(|&e| e == 42), "{energy:?}");
    let buckets = store.buckets(&id, 0, i64::MAX).unwrap();
    let total: i64 = buckets.iter().map(|b| b.energy_mwh).sum();
    assert_eq!(total, (polls as i64 - 1) * 42_000);
    // November's last local day holds all of its 24 hours: 8,640 Wh.
    let day_start = START + 7 * 60_000; // 2025-11-29T23:00Z: the plug's November 30th
    let nov30: i64 = buckets
        .iter()
        .filter(|b| b.start_ms >= day_start && b.start_ms < day_start + 86_400_000)
        .map(|b| b.energy_mwh)
        .sum();
    assert_eq!(nov30, 8_640_000);
}

#[tokio::test]
async fn a_smart_device_refusing_batches_is_read_with_single_calls() {
    use kasad::poller::conns::{ConnPool, Target};
    let c = clock::system();
    let plug = klap_sim(61, Model::Kp125m, Version::V2)
        .smart()
        .clock(c.clone())
        .start()
        .await;
    let strip = klap_sim(62, Model::P316m, Version::V2)
        .smart()
        .clock(c.clone())
        .start()
        .await;
    let pool = ConnPool::new(4).with_account(Some(me()));
    for h in [&plug, &strip] {
        h.sim.set_fault(Some(kasad::sim::Fault::RefuseBatch));
        let t = Target {
            addr: h.sim.addr,
            transport: Transport::KlapV2,
            family: Family::Smart,
            meter: true,
            login_version: None,
        };
        let p = pool
            .poll(&t, (None, None), Duration::from_secs(5), c.as_ref())
            .await
            .unwrap();
        let outlets = if std::ptr::eq(h, &strip) { 6 } else { 1 };
        assert_eq!(
            p.readings.len(),
            outlets,
            "every outlet read with single calls"
        );
        for r in &p.readings {
            assert_eq!(r.power_mw, Some(60_000), "{r:?}");
            assert!(r.voltage_mv.is_some() && r.current_ma.is_some());
            assert!(r.relay_on);
        }
        // Every batch was refused and every method asked on its own.
        let n = h.stats.answered.load(Ordering::Relaxed);
        assert!(n >= 5, "{n} answers");
    }
    assert_eq!(
        strip_readings(&pool, &strip, c.clone()).await,
        6,
        "each child of the strip through control_child"
    );
}

async fn strip_readings(
    pool: &kasad::poller::conns::ConnPool,
    h: &KlapHandle,
    c: SharedClock,
) -> usize {
    h.sim.set_fault(None);
    let t = kasad::poller::conns::Target {
        addr: h.sim.addr,
        transport: Transport::KlapV2,
        family: Family::Smart,
        meter: true,
        login_version: None,
    };
    let p = pool
        .poll(&t, (None, None), Duration::from_secs(5), c.as_ref())
        .await
        .unwrap();
    assert_eq!(p.infos.len(), 7, "the strip and its outlets");
    p.readings.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_naming_no_transport_is_tried_in_the_fallback_order() {
    // A SMART device whose 20002 answer leaves out encrypt_type: KLAP v2 first, then AES.
    let ep25 = aes_sim(70).account(Credentials::blank()).start().await;
    ep25.hide_scheme(true);
    let port = ep25.discovery_addr.port();
    let app = TestApp::with_sims(vec![], |s| {
        s.discovery.targets = vec!["127.0.3.70:9999".into()];
        s.discovery.port_20002 = port;
    })
    .await;
    let d = app
        .wait_devices("the EP25 online over AES after KLAP v2 failed", |d| {
            by_model(d, "EP25")
                .first()
                .is_some_and(|x| x["status"] == "online" && x["transport"] == "aes")
        })
        .await;
    assert_eq!(
        d.len(),
        1,
        "one device, not a provisional one left behind: {d:?}"
    );
    assert!(ep25.stats.answered.load(Ordering::Relaxed) > 0);
    app.stop().await;
}

/// Finding 11: an AES device that answered the probe without `lv` was sent the account's
/// password in reversible base64 (login version 1). Now it gets version 2; a device asking
/// for 1 gets it only when kasad polled it before or `[kasa] allow_login_v1` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aes_devices_get_the_reversible_password_only_when_trusted() {
    for (host, hide_lv, allow, want_v1) in [
        (80u8, true, false, false),
        (81, false, false, false),
        (82, false, true, true),
    ] {
        // KLAP generation 1: the probe's answer announces lv 1 unless hidden.
        let ep25 = aes_sim(host).version(Version::V1).start().await;
        ep25.hide_lv(hide_lv);
        let port = ep25.discovery_addr.port();
        let app = TestApp::with_sims(vec![], |s| {
            s.discovery.targets = vec![format!("127.0.3.{host}:9999")];
            s.discovery.port_20002 = port;
            s.kasa.username = me().username.clone();
            s.kasa.allow_login_v1 = allow;
            let pw = s.data_dir.join("kasa-password");
            std::fs::create_dir_all(&s.data_dir).unwrap();
            std::fs::write(&pw, "correct horse\n").unwrap();
            s.kasa.password_file = Some(pw);
        })
        .await;
        app.wait_devices("the EP25 online over AES", |d| {
            by_model(d, "EP25")
                .first()
                .is_some_and(|x| x["status"] == "online" && x["transport"] == "aes")
        })
        .await;
        let v1 = ep25.stats.v1_logins.load(Ordering::Relaxed);
        assert_eq!(
            v1 > 0,
            want_v1,
            "host {host}: {v1} logins with the reversible password"
        );
        app.stop().await;
    }
}
