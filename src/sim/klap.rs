//! Simulated KLAP (and AES) devices: an HTTP server on one loopback address doing the device side of
//! KLAP v1 or v2 (handshake against one cloud account, signature check of every request,
//! sessions that lapse after `TIMEOUT`), answering IOT JSON from a [`SimDevice`] or SMART JSON
//! ([`super::smart`]), plus the device's answer to the UDP 20002 discovery probe. Fault modes:
//! the injectable [`super::Fault`]s, wrong credentials (a different account) and dropped
//! sessions (the next request gets a 403).

use super::device::SimDevice;
use super::server::{SimHandle, answer};
use crate::clock::SharedClock;
use crate::domain::Family;
use crate::protocol::klap::{self, Credentials, Session, Version};
use crate::protocol::port20002;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;

/// How a simulated KLAP device behaves.
#[derive(Debug, Clone)]
pub struct KlapSpec {
    /// KLAP generation.
    pub version: Version,
    /// IOT JSON (HS100 UK) or SMART JSON (KP125M, P316M) inside.
    pub family: Family,
    /// The cloud account the device is bound to (blank when never bound).
    pub account: Credentials,
    /// Session lifetime sent as the `TIMEOUT` cookie.
    pub session_timeout: Duration,
    /// Serve AES securePassthrough (`POST /app`) instead of KLAP; the 20002 answer says `AES`
    /// and its login version is 2 for [`Version::V2`], else 1.
    pub aes: bool,
}

/// What the device saw, for tests.
#[derive(Debug, Default)]
pub struct KlapStats {
    /// Completed handshakes (handshake2 accepted).
    pub handshakes: AtomicU64,
    /// Requests refused with 403 (no session, or a lapsed one).
    pub refused: AtomicU64,
    /// Requests answered.
    pub answered: AtomicU64,
    /// AES `login_device` requests that carried the login-version-1 `password` (the
    /// password itself, base64): a client should send it only to devices it trusts.
    pub v1_logins: AtomicU64,
}

struct Pending {
    local: Vec<u8>,
    remote: [u8; 16],
    auth: Vec<u8>,
}

struct Live {
    session: Session,
    expires: Instant,
}

pub(super) struct Device {
    spec: Mutex<KlapSpec>,
    pub(super) sim: SimHandle,
    pub(super) clock: SharedClock,
    pending: Mutex<HashMap<String, Pending>>,
    sessions: Mutex<HashMap<String, Live>>,
    pub(super) aes_sessions: Mutex<HashMap<String, super::aes::AesSession>>,
    /// The 20002 answer leaves out `encrypt_type` (the client must fall back).
    hide_scheme: std::sync::atomic::AtomicBool,
    /// The 20002 answer leaves out `lv`.
    hide_lv: std::sync::atomic::AtomicBool,
    pub(super) stats: Arc<KlapStats>,
}

impl Device {
    pub(super) fn spec(&self) -> KlapSpec {
        self.spec.lock().expect("spec lock").clone()
    }
}

/// A random session cookie or token.
pub(super) fn random_id() -> String {
    crate::random::random_token::<16>()
}

/// A running simulated KLAP device.
#[derive(Clone)]
pub struct KlapHandle {
    /// The device state, faults and HTTP address (`sim.addr`).
    pub sim: SimHandle,
    /// Where it answers the 20002 probe.
    pub discovery_addr: SocketAddr,
    /// Counters.
    pub stats: Arc<KlapStats>,
    dev: Arc<Device>,
}

impl std::fmt::Debug for KlapHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KlapHandle")
            .field("addr", &self.sim.addr)
            .field("discovery_addr", &self.discovery_addr)
            .finish()
    }
}

impl KlapHandle {
    /// Forgets every session: the next request of each client gets a 403 (KLAP) or 9999
    /// (AES).
    pub fn drop_sessions(&self) {
        self.dev.sessions.lock().expect("sessions lock").clear();
        self.dev.aes_sessions.lock().expect("aes lock").clear();
    }

    /// Binds the device to another account (the daemon's credentials stop matching).
    pub fn set_account(&self, account: Credentials) {
        self.dev.spec.lock().expect("spec lock").account = account;
    }

    /// Leaves `encrypt_type` out of the 20002 answer, as some devices do.
    pub fn hide_scheme(&self, hide: bool) {
        self.dev.hide_scheme.store(hide, Ordering::Relaxed);
    }

    /// Leaves `lv` (the login version) out of the 20002 answer.
    pub fn hide_lv(&self, hide: bool) {
        self.dev.hide_lv.store(hide, Ordering::Relaxed);
    }
}

pub(super) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    crate::protocol::klap_client::cookie_in(headers, header::COOKIE, "TP_SESSIONID")
}

async fn handshake1(State(d): State<Arc<Device>>, body: Bytes) -> Response {
    if body.len() != 16 {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let spec = d.spec.lock().expect("spec lock").clone();
    let remote = crate::random::random_bytes::<16>();
    let auth = klap::auth_hash(spec.version, &spec.account);
    let server = klap::server_hash(spec.version, &body, &remote, &auth);
    let cookie = random_id();
    d.pending.lock().expect("pending lock").insert(
        cookie.clone(),
        Pending {
            local: body.to_vec(),
            remote,
            auth,
        },
    );
    let mut out = remote.to_vec();
    out.extend_from_slice(&server);
    let set_cookie = format!(
        "TP_SESSIONID={cookie};TIMEOUT={}",
        spec.session_timeout.as_secs()
    );
    ([(header::SET_COOKIE, set_cookie)], out).into_response()
}

async fn handshake2(State(d): State<Arc<Device>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(cookie) = session_cookie(&headers) else {
        return StatusCode::FORBIDDEN.into_response();
    };
    let Some(p) = d.pending.lock().expect("pending lock").remove(&cookie) else {
        return StatusCode::FORBIDDEN.into_response();
    };
    let spec = d.spec.lock().expect("spec lock").clone();
    if body.as_ref() != klap::client_hash(spec.version, &p.local, &p.remote, &p.auth) {
        return StatusCode::FORBIDDEN.into_response();
    }
    d.sessions.lock().expect("sessions lock").insert(
        cookie,
        Live {
            session: Session::new(&p.local, &p.remote, &p.auth),
            expires: Instant::now() + spec.session_timeout,
        },
    );
    d.stats.handshakes.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK.into_response()
}

async fn request(
    State(d): State<Arc<Device>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(seq) = q.get("seq").and_then(|s| s.parse::<i32>().ok()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let session = session_cookie(&headers).and_then(|c| {
        let mut sessions = d.sessions.lock().expect("sessions lock");
        match sessions.get(&c) {
            Some(l) if Instant::now() < l.expires => Some(l.session.clone()),
            Some(_) => {
                sessions.remove(&c);
                None
            }
            None => None,
        }
    });
    let Some(session) = session else {
        d.stats.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::FORBIDDEN.into_response();
    };
    let Ok(plain) = session.open(seq, &body, true) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match d.sim.fault() {
        Some(super::Fault::Delay(t)) => tokio::time::sleep(t).await,
        Some(super::Fault::Hang) => std::future::pending::<()>().await,
        Some(super::Fault::Garbage) => return (StatusCode::OK, vec![0x5a; 40]).into_response(),
        _ => {}
    }
    let family = d.spec.lock().expect("spec lock").family;
    let now_ms = d.clock.now_ms();
    let reply = match family {
        Family::Iot => answer(&d.sim, &plain, now_ms),
        Family::Smart => super::smart::answer(&d.sim, &plain, now_ms),
    };
    d.stats.answered.fetch_add(1, Ordering::Relaxed);
    (StatusCode::OK, session.seal(seq, &reply)).into_response()
}

/// The device's answer to a 20002 probe.
fn announce(d: &Device, http_port: u16) -> Vec<u8> {
    let spec = d.spec.lock().expect("spec lock").clone();
    // Real devices announce a hash of their id here (python-kasa's KP125M dump), not the id
    // `get_device_info` gives.
    let (id, model, mac) = d.sim.with_device(|s| {
        let sp = s.spec();
        let hash: String = <md5::Md5 as md5::Digest>::digest(sp.device_id.as_bytes())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        (hash, sp.model.name(), sp.mac.replace(':', "-"))
    });
    let device_type = match spec.family {
        Family::Iot => "IOT.SMARTPLUGSWITCH",
        Family::Smart => "SMART.KASAPLUG",
    };
    let lv = match spec.version {
        Version::V1 => 1,
        Version::V2 => 2,
    };
    let body = json!({"error_code": 0, "result": {
        "device_id": id, "device_type": device_type, "device_model": model,
        "ip": d.sim.addr.ip().to_string(), "mac": mac, "factory_default": false,
        "is_support_iot_cloud": true, "obd_src": "tplink",
        "mgt_encrypt_schm": {"is_support_https": false,
            "encrypt_type": if spec.aes { "AES" } else { "KLAP" }, "http_port": http_port, "lv": lv},
    }});
    let mut body = body;
    if d.hide_scheme.load(Ordering::Relaxed)
        && let Some(s) = body
            .pointer_mut("/result/mgt_encrypt_schm")
            .and_then(|s| s.as_object_mut())
    {
        s.remove("encrypt_type");
    }
    if d.hide_lv.load(Ordering::Relaxed)
        && let Some(s) = body
            .pointer_mut("/result/mgt_encrypt_schm")
            .and_then(|s| s.as_object_mut())
    {
        s.remove("lv");
    }
    port20002::datagram(1, 0, 0, body.to_string().as_bytes())
}

async fn serve_discovery(sock: UdpSocket, d: Arc<Device>, http_port: u16) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = tokio::select! {
            () = d.sim.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r { Ok(x) => x, Err(_) => continue },
        };
        if port20002::checked_payload(&buf[..n]).is_err()
            || matches!(d.sim.fault(), Some(super::Fault::Hang))
        {
            continue;
        }
        let _ = sock.send_to(&announce(&d, http_port), from).await;
    }
}

/// Starts a KLAP device on `ip`: HTTP on an ephemeral port, the 20002 answer on
/// `discovery_port` (0 = ephemeral).
pub async fn start_klap(
    device: SimDevice,
    spec: KlapSpec,
    ip: IpAddr,
    discovery_port: u16,
    clock: SharedClock,
) -> std::io::Result<KlapHandle> {
    let tcp = TcpListener::bind((ip, 0)).await?;
    let udp = UdpSocket::bind((ip, discovery_port)).await?;
    let addr = tcp.local_addr()?;
    let sim = SimHandle::new(addr, device);
    let stats = Arc::new(KlapStats::default());
    let dev = Arc::new(Device {
        spec: Mutex::new(spec),
        sim: sim.clone(),
        clock,
        pending: Mutex::default(),
        sessions: Mutex::default(),
        aes_sessions: Mutex::default(),
        hide_scheme: Default::default(),
        hide_lv: Default::default(),
        stats: stats.clone(),
    });
    let app = if dev.spec().aes {
        axum::Router::new().route("/app", post(super::aes::app))
    } else {
        axum::Router::new()
            .route("/app/handshake1", post(handshake1))
            .route("/app/handshake2", post(handshake2))
            .route("/app/request", post(request))
    }
    .with_state(dev.clone());
    let cancel = sim.cancel_token();
    tokio::spawn(async move {
        let _ = axum::serve(tcp, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
    });
    let discovery_addr = udp.local_addr()?;
    tokio::spawn(serve_discovery(udp, dev.clone(), addr.port()));
    Ok(KlapHandle {
        sim,
        discovery_addr,
        stats,
        dev,
    })
}
