//! Serves a [`SimDevice`] over TCP (framed) and UDP (discovery) on one address and port, with
//! injectable faults.

use super::device::{Model, SimDevice, SimSpec};
use super::load::Load;
use crate::clock::SharedClock;
use crate::protocol::{MAX_FRAME, cipher, frame};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// A misbehaviour to inject into every answer until cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer after this delay.
    Delay(Duration),
    /// Accept the request and never answer.
    Hang,
    /// Send half of the answer frame, then close the connection.
    DropMidFrame,
    /// Answer with bytes that are not a valid encrypted JSON frame.
    Garbage,
    /// Answer every method with this `err_code`.
    ErrCode(i64),
    /// SMART devices: refuse `multipleRequest` with −1003 (JSON decode failed), as devices do
    /// that cannot take a batch.
    RefuseBatch,
}

type Shared = Arc<Mutex<SimDevice>>;

/// A running simulated device.
#[derive(Debug, Clone)]
pub struct SimHandle {
    /// Where it listens (TCP and UDP).
    pub addr: SocketAddr,
    device: Shared,
    fault: Arc<Mutex<Option<Fault>>>,
    cancel: CancellationToken,
}

impl SimHandle {
    /// Injects a fault (or clears it with `None`).
    pub fn set_fault(&self, f: Option<Fault>) {
        *self.fault.lock().expect("fault lock") = f;
    }

    /// Runs `f` on the device state (e.g. to reset counters or read meter values).
    pub fn with_device<T>(&self, f: impl FnOnce(&mut SimDevice) -> T) -> T {
        f(&mut self.device.lock().expect("device lock"))
    }

    /// Stops listening.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// A handle for `device` served at `addr` by another server (KLAP).
    pub(super) fn new(addr: SocketAddr, device: SimDevice) -> Self {
        Self {
            addr,
            device: Arc::new(Mutex::new(device)),
            fault: Arc::new(Mutex::new(None)),
            cancel: CancellationToken::new(),
        }
    }

    /// The injected fault, if any.
    pub(super) fn fault(&self) -> Option<Fault> {
        *self.fault.lock().expect("fault lock")
    }

    /// Resolves when the device is stopped.
    pub(super) async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// The token that stops the device.
    pub(super) fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

/// Starts serving `device` on `ip:port` (port 0 picks a free port shared by TCP and UDP).
pub async fn start(
    device: SimDevice,
    ip: IpAddr,
    port: u16,
    clock: SharedClock,
) -> std::io::Result<SimHandle> {
    let (tcp, udp) = bind_pair(ip, port).await?;
    let addr = tcp.local_addr()?;
    let h = SimHandle {
        addr,
        device: Arc::new(Mutex::new(device)),
        fault: Arc::new(Mutex::new(None)),
        cancel: CancellationToken::new(),
    };
    tokio::spawn(serve_tcp(tcp, h.clone(), clock.clone()));
    tokio::spawn(serve_udp(udp, h.clone(), clock));
    Ok(h)
}

async fn bind_pair(ip: IpAddr, port: u16) -> std::io::Result<(TcpListener, UdpSocket)> {
    let mut last = None;
    for _ in 0..20 {
        let tcp = TcpListener::bind((ip, port)).await?;
        let p = tcp.local_addr()?.port();
        match UdpSocket::bind((ip, p)).await {
            Ok(udp) => return Ok((tcp, udp)),
            Err(e) if port == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port pair")))
}

/// The IOT JSON answer of the device to one request (bytes of JSON).
pub(super) fn answer(h: &SimHandle, req: &[u8], now_ms: i64) -> Vec<u8> {
    let fault = *h.fault.lock().expect("fault lock");
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(req) else {
        return b"{}".to_vec();
    };
    let mut resp = h.with_device(|d| d.handle(&req, now_ms));
    if let (Some(Fault::ErrCode(code)), Some(obj)) = (fault, resp.as_object_mut()) {
        for v in obj.values_mut() {
            *v = serde_json::json!({"err_code": code, "err_msg": "injected error"});
        }
    }
    serde_json::to_vec(&resp).unwrap_or_default()
}

async fn serve_tcp(listener: TcpListener, h: SimHandle, clock: SharedClock) {
    loop {
        tokio::select! {
            () = h.cancel.cancelled() => return,
            acc = listener.accept() => if let Ok((s, _)) = acc {
                tokio::spawn(serve_conn(s, h.clone(), clock.clone()));
            }
        }
    }
}

async fn serve_conn(mut s: TcpStream, h: SimHandle, clock: SharedClock) {
    loop {
        let req = tokio::select! {
            () = h.cancel.cancelled() => return,
            r = frame::read_frame(&mut s, MAX_FRAME) => match r { Ok(r) => r, Err(_) => return },
        };
        let fault = *h.fault.lock().expect("fault lock");
        let body = answer(&h, &req, clock.now_ms());
        let out = match fault {
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                frame::encode_tcp(&body)
            }
            Some(Fault::Hang) => {
                h.cancel.cancelled().await;
                return;
            }
            Some(Fault::DropMidFrame) => {
                let f = frame::encode_tcp(&body);
                let _ = s.write_all(&f[..f.len() / 2]).await;
                return;
            }
            Some(Fault::Garbage) => {
                let mut g = vec![0x00, 0x00, 0x00, 0x20];
                g.extend((0u8..32).map(|i| i.wrapping_mul(37) ^ 0x5a));
                g
            }
            _ => frame::encode_tcp(&body),
        };
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn serve_udp(sock: UdpSocket, h: SimHandle, clock: SharedClock) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = tokio::select! {
            () = h.cancel.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r { Ok(x) => x, Err(_) => continue },
        };
        let fault = *h.fault.lock().expect("fault lock");
        if matches!(fault, Some(Fault::Hang | Fault::DropMidFrame)) {
            continue;
        }
        let body = answer(&h, &cipher::decrypt(&buf[..n]), clock.now_ms());
        let out = if fault == Some(Fault::Garbage) {
            b"\x01\x02garbage".to_vec()
        } else {
            frame::encode_udp(&body)
        };
        let _ = sock.send_to(&out, from).await;
    }
}

/// The model and loads of device `i` in a demo or bench fleet: a household mix with an HS300
/// and an HS100 in every eight devices.
pub fn fleet_spec(i: u32) -> SimSpec {
    use Load::*;
    let (model, loads) = match i % 8 {
        0 => (Model::Hs110V1, vec![Fridge]),
        1 => (Model::Kp115, vec![Heater]),
        2 => (
            Model::Hs300,
            vec![Lamp, Tv, Computer, Constant(4_500), Fridge, Constant(0)],
        ),
        3 => (Model::Hs100, vec![Lamp]),
        4 => (Model::Hs110V4, vec![Tv]),
        5 => (Model::Kp115, vec![Computer]),
        6 => (Model::Hs110V1, vec![Lamp]),
        _ => (Model::Hs110V4, vec![Constant(7_000)]),
    };
    SimSpec::numbered(i, model, loads)
}

/// The address of fleet device `i`: 127.0.0.2, 127.0.0.3, … (continuing into 127.0.1.x).
pub fn fleet_ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + i))
}

/// Starts `n` fleet devices whose state begins at `start_ms`, each on its own loopback
/// address, on `port` where free and on an ephemeral port otherwise.
pub async fn start_fleet(
    devices: Vec<SimDevice>,
    port: u16,
    clock: SharedClock,
) -> std::io::Result<Vec<SimHandle>> {
    let mut out = Vec::with_capacity(devices.len());
    for (i, d) in devices.into_iter().enumerate() {
        let ip = fleet_ip(i as u32);
        let h = match start(d.clone(), ip, port, clock.clone()).await {
            Ok(h) => h,
            Err(_) => start(d, ip, 0, clock.clone()).await?,
        };
        out.push(h);
    }
    Ok(out)
}
