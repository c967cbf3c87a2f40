//! Connections kept open between polls (as python-kasa does): a poll reuses the device's
//! connection and saves the TCP handshake and teardown. A connection is returned to the pool
//! only after a fully successful poll; one the device has closed meanwhile is replaced once.

use super::device::{Extra, Polled, poll};
use crate::clock::Clock;
use crate::protocol::client::Connection;
use crate::protocol::{Error, Result};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

/// Idle connections by device address.
#[derive(Debug, Default)]
pub struct ConnPool {
    idle: Mutex<HashMap<SocketAddr, Connection>>,
    max_idle: usize,
}

impl ConnPool {
    /// A pool keeping at most `max_idle` connections (each holds a file descriptor); beyond
    /// it polls connect anew.
    pub fn new(max_idle: usize) -> Self {
        Self {
            idle: Mutex::default(),
            max_idle,
        }
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

    /// Polls `addr`, on a kept connection when there is one. `gap_from_ms`: see [`Extra`]; the
    /// day totals must be in before three quarters of `timeout` (the caller's limit for the
    /// whole poll) have passed, so they never cost the readings.
    pub async fn poll(
        &self,
        addr: SocketAddr,
        meter: bool,
        gap_from_ms: Option<i64>,
        timeout: Duration,
        clock: &dyn Clock,
    ) -> Result<Polled> {
        let extra = Extra {
            gap_from_ms,
            deadline: tokio::time::Instant::now() + timeout * 3 / 4,
        };
        if let Some(mut c) = self.take(addr) {
            match poll(&mut c, addr, meter, extra, clock).await {
                Ok(p) => {
                    if p.clean {
                        self.put(addr, c);
                    }
                    return Ok(p);
                }
                // The device closed the idle connection (reboot, idle timeout): connect anew.
                Err(Error::Io(e)) => {
                    tracing::debug!(%addr, error = %e, "kept connection was closed")
                }
                Err(e) => return Err(e),
            }
        }
        let mut c = Connection::connect(addr, timeout).await?;
        let p = poll(&mut c, addr, meter, extra, clock).await?;
        if p.clean {
            self.put(addr, c);
        }
        Ok(p)
    }
}
