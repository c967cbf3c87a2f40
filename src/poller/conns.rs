//! Connections kept open between polls (as python-kasa does): a poll reuses the device's
//! connection and saves the TCP handshake and teardown, or for KLAP devices the session and
//! its handshake. A connection is returned to the pool only after a fully successful poll; an
//! XOR connection the device has closed meanwhile is replaced once. The pool also holds what
//! opening a KLAP connection takes: the HTTP client and the candidate credentials.

use super::device::{Extra, Polled, poll};
use crate::clock::Clock;
use crate::domain::{DeviceId, Family, Transport};
use crate::protocol::client::Connection;
use crate::protocol::klap::{self, Credentials, Version};
use crate::protocol::klap_client::{KlapClient, http_client};
use crate::protocol::passthrough::AesClient;
use crate::protocol::{Error, Result, messages};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How to reach one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Its address (TCP 9999 for XOR, the HTTP port for KLAP).
    pub addr: SocketAddr,
    /// The transport.
    pub transport: Transport,
    /// The request language.
    pub family: Family,
    /// Whether an earlier poll found a meter (IOT: sysinfo and realtime share one request).
    pub meter: bool,
    /// The login version announced on 20002 (AES: 2 sends `password2`, else `password`).
    pub login_version: Option<u8>,
}

impl Target {
    /// A legacy device at `addr`.
    pub fn xor(addr: SocketAddr, meter: bool) -> Self {
        Self {
            addr,
            transport: Transport::Xor,
            family: Family::Iot,
            meter,
            login_version: None,
        }
    }
}

/// Idle connections by device address.
#[derive(Debug)]
pub struct ConnPool {
    idle: Mutex<HashMap<SocketAddr, Connection>>,
    max_idle: usize,
    candidates: Arc<Vec<Credentials>>,
    aes_candidates: Arc<Vec<Credentials>>,
    http: OnceLock<reqwest::Client>,
    clock: crate::clock::SharedClock,
}

impl Default for ConnPool {
    fn default() -> Self {
        Self::new(0)
    }
}

impl ConnPool {
    /// A pool keeping at most `max_idle` connections (each holds a file descriptor); beyond
    /// it polls connect anew. KLAP devices are tried with the Kasa default and blank
    /// credentials until [`ConnPool::with_account`] adds the user's.
    pub fn new(max_idle: usize) -> Self {
        Self {
            idle: Mutex::default(),
            max_idle,
            candidates: Arc::new(klap::candidates(None)),
            aes_candidates: Arc::new(klap::aes_candidates(None)),
            http: OnceLock::new(),
            clock: crate::clock::system(),
        }
    }

    /// Reads time (request timestamps of the AES transport) from `clock`.
    pub fn with_clock(mut self, clock: crate::clock::SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Tries `account` (the TP-Link cloud account) first with KLAP devices.
    pub fn with_account(mut self, account: Option<Credentials>) -> Self {
        self.candidates = Arc::new(klap::candidates(account.as_ref()));
        self.aes_candidates = Arc::new(klap::aes_candidates(account.as_ref()));
        self
    }

    fn take(&self, addr: SocketAddr) -> Option<Connection> {
        self.idle.lock().expect("pool lock").remove(&addr)
    }

    fn put(&self, addr: SocketAddr, c: Connection) {
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < self.max_idle {
            idle.insert(addr, c);
        }
    }

    async fn open(&self, t: &Target, timeout: Duration) -> Result<Connection> {
        let version = match t.transport {
            Transport::Xor => return Connection::connect(t.addr, timeout).await,
            Transport::Klap => Version::V1,
            Transport::KlapV2 => Version::V2,
            Transport::Aes => {
                let a = AesClient::new(
                    self.http()?,
                    t.addr,
                    t.login_version,
                    self.aes_candidates.clone(),
                    self.clock.clone(),
                );
                return Ok(Connection::aes(a, timeout));
            }
            Transport::Unknown => {
                return Err(Error::Http(
                    "the device's transport is not supported".into(),
                ));
            }
        };
        let k = KlapClient::new(self.http()?, t.addr, version, self.candidates.clone());
        Ok(Connection::klap(k, timeout))
    }

    fn http(&self) -> Result<reqwest::Client> {
        if let Some(h) = self.http.get() {
            return Ok(h.clone());
        }
        let h = http_client(Duration::from_secs(30))?;
        Ok(self.http.get_or_init(|| h).clone())
    }

    async fn poll_on(
        c: &mut Connection,
        t: &Target,
        extra: Extra,
        clock: &dyn Clock,
    ) -> Result<Polled> {
        let mut p = match t.family {
            Family::Iot => poll(c, t.addr, t.meter, extra, clock).await?,
            Family::Smart => super::smart::poll(c, t.addr, t.transport, extra, clock).await?,
        };
        for i in &mut p.infos {
            i.transport = t.transport;
        }
        Ok(p)
    }

    /// Polls `t`, on a kept connection when there is one. `gap_from_ms`, `last_seen_ms`: see
    /// [`Extra`]; the day totals must be in before three quarters of `timeout` (the caller's
    /// limit for the whole poll) have passed, so they never cost the readings.
    pub async fn poll(
        &self,
        t: &Target,
        (gap_from_ms, last_seen_ms): (Option<i64>, Option<i64>),
        timeout: Duration,
        clock: &dyn Clock,
    ) -> Result<Polled> {
        let extra = Extra {
            gap_from_ms,
            last_seen_ms,
            deadline: tokio::time::Instant::now() + timeout * 3 / 4,
        };
        if let Some(mut c) = self.take(t.addr) {
            match Self::poll_on(&mut c, t, extra, clock).await {
                Ok(p) => {
                    if p.clean {
                        self.put(t.addr, c);
                    }
                    return Ok(p);
                }
                // The device closed the idle connection (reboot, idle timeout): connect anew.
                Err(Error::Io(e)) => {
                    tracing::debug!(addr = %t.addr, error = %e, "kept connection was closed")
                }
                Err(e) => return Err(e),
            }
        }
        let mut c = self.open(t, timeout).await?;
        let p = Self::poll_on(&mut c, t, extra, clock).await?;
        if p.clean {
            self.put(t.addr, c);
        }
        Ok(p)
    }

    /// Switches a plug, or one outlet of a strip (on a connection of its own; a KLAP device's
    /// kept session is reused).
    pub async fn set_relay(
        &self,
        t: &Target,
        outlet: Option<&DeviceId>,
        on: bool,
        timeout: Duration,
    ) -> Result<()> {
        let kept = (t.transport != Transport::Xor)
            .then(|| self.take(t.addr))
            .flatten();
        let mut c = match kept {
            Some(k) => k,
            None => self.open(t, timeout).await?,
        };
        let res = match t.family {
            Family::Iot => {
                let req = messages::set_relay_request(on, outlet.map(DeviceId::as_str));
                c.request(&req)
                    .await
                    .and_then(|r| messages::extract(&r, "system", "set_relay_state").map(|_| ()))
            }
            Family::Smart => super::smart::set_relay(&mut c, outlet, on).await,
        };
        if res.is_ok() && t.transport != Transport::Xor {
            self.put(t.addr, c);
        }
        res
    }
}
