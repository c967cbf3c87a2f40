//! Polling one plug or strip: sysinfo (and the meter in the same round trip once we know the
//! device has one), then one meter request per strip outlet on the same connection.

use super::registry::infos_from_sysinfo;
use crate::clock::Clock;
use crate::domain::{DeviceId, DeviceInfo, Reading};
use crate::protocol::client::Connection;
use crate::protocol::messages::{self, Realtime, SysInfo};
use crate::protocol::{Error, Result};
use std::net::SocketAddr;
use std::time::Duration;

/// What one successful poll produced.
#[derive(Debug, Clone)]
pub struct Polled {
    /// Device records (parent first, then outlets).
    pub infos: Vec<DeviceInfo>,
    /// One reading per plug, or per outlet of a strip.
    pub readings: Vec<Reading>,
}

fn meter_or_none(r: Result<Realtime>, id: &str) -> Result<Option<Realtime>> {
    match r {
        Ok(rt) => Ok(Some(rt)),
        Err(e) if e.is_not_supported() => Ok(None),
        Err(e @ Error::Device { .. }) => {
            tracing::debug!(device = id, error = %e, "meter read failed");
            Err(e)
        }
        Err(e) => Err(e),
    }
}

fn reading(
    id: DeviceId,
    ts_ms: i64,
    rt: Option<Realtime>,
    relay_on: bool,
    rssi: Option<i32>,
) -> Reading {
    let rt = rt.unwrap_or_default();
    Reading {
        device_id: id,
        ts_ms,
        power_mw: rt.power_mw,
        voltage_mv: rt.voltage_mv,
        current_ma: rt.current_ma,
        counter_wh: rt.total_wh,
        relay_on,
        rssi,
    }
}

/// Polls the device at `addr` over `conn`. `known_meter` says whether an earlier poll found a
/// meter (then sysinfo and realtime share one request).
pub async fn poll(
    conn: &mut Connection,
    addr: SocketAddr,
    known_meter: bool,
    clock: &dyn Clock,
) -> Result<Polled> {
    let req = if known_meter {
        messages::sysinfo_and_realtime_request()
    } else {
        messages::sysinfo_request()
    };
    let resp = conn.request(&req).await?;
    let ts_ms = clock.now_ms();
    let sys = SysInfo::from_response(&resp)?;
    let infos = infos_from_sysinfo(addr, &sys).map_err(|e| Error::Decode(e.to_string()))?;
    let mut readings = Vec::new();
    if sys.children.is_empty() {
        let rt = if !sys.has_emeter {
            None
        } else if known_meter {
            meter_or_none(Realtime::from_response(&resp), &sys.device_id)?
        } else {
            let r = conn.request(&messages::realtime_request(None)).await?;
            meter_or_none(Realtime::from_response(&r), &sys.device_id)?
        };
        readings.push(reading(
            infos[0].device_id.clone(),
            ts_ms,
            rt,
            sys.relay_on.unwrap_or(false),
            sys.rssi,
        ));
    } else {
        for (child, info) in sys.children.iter().zip(&infos[1..]) {
            let rt = if sys.has_emeter {
                let r = conn
                    .request(&messages::realtime_request(Some(info.device_id.as_str())))
                    .await?;
                meter_or_none(Realtime::from_response(&r), info.device_id.as_str())?
            } else {
                None
            };
            readings.push(reading(
                info.device_id.clone(),
                ts_ms,
                rt,
                child.on,
                sys.rssi,
            ));
        }
    }
    Ok(Polled { infos, readings })
}

/// Switches a plug, or one outlet of a strip.
pub async fn set_relay(
    addr: SocketAddr,
    outlet: Option<&DeviceId>,
    on: bool,
    timeout: Duration,
) -> Result<()> {
    let mut conn = Connection::connect(addr, timeout).await?;
    let resp = conn
        .request(&messages::set_relay_request(
            on,
            outlet.map(DeviceId::as_str),
        ))
        .await?;
    messages::extract(&resp, "system", "set_relay_state").map(|_| ())
}
