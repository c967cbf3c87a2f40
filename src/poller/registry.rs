//! The devices the daemon knows: where they are, what they are, and whether they answer.
//!
//! Keyed by device id; an address change (DHCP) just moves the entry. Unreachable devices are
//! retried with exponential backoff and shown offline after [`OFFLINE_AFTER`] failed polls.

use crate::domain::{DeviceId, DeviceInfo, DeviceStatus, DeviceType, Family, Transport};
use crate::protocol::messages::SysInfo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Consecutive failed polls before a device is shown offline and backed off.
pub const OFFLINE_AFTER: u32 = 2;

/// One pollable device (a plug or a whole strip) and its outlets.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The plug or strip.
    pub info: DeviceInfo,
    /// Outlets of a strip, in index order.
    pub outlets: Vec<DeviceInfo>,
    /// Where it is polled.
    pub addr: SocketAddr,
    /// Reachability.
    pub status: DeviceStatus,
    /// Consecutive failures.
    pub failures: u32,
    /// No poll before this instant.
    pub next_attempt: Instant,
    /// Last successful poll, UTC ms.
    pub last_seen_ms: Option<i64>,
    /// The newest stored reading when the daemon started (the start of a gap across a
    /// restart, until the first successful poll).
    pub stored_until_ms: Option<i64>,
    /// Last failure, for the API and logs.
    pub last_error: Option<String>,
    /// Successful polls since the daemon started.
    pub polls_ok: u64,
    /// Known only from a 20002 answer (whose `device_id` is a hash of the real one): not
    /// stored; its first successful poll replaces it with the device's real records.
    pub provisional: bool,
    /// The login version the device announced on 20002 (AES: which password field to send).
    pub login_version: Option<u8>,
    /// Transports still to try, in order, while a provisional device answers none tried yet
    /// (its 20002 answer did not name one).
    pub fallback: Vec<Transport>,
    /// Failed polls since the daemon started.
    pub polls_failed: u64,
}

impl Entry {
    /// A device first seen now at `addr`, offline until its first poll.
    fn new(info: DeviceInfo, addr: SocketAddr, now: Instant) -> Self {
        Self {
            info,
            outlets: Vec::new(),
            addr,
            status: DeviceStatus::Offline,
            failures: 0,
            next_attempt: now,
            last_seen_ms: None,
            stored_until_ms: None,
            last_error: None,
            polls_ok: 0,
            polls_failed: 0,
            provisional: false,
            login_version: None,
            fallback: Vec::new(),
        }
    }

    /// How to reach it.
    pub fn target(&self) -> super::conns::Target {
        super::conns::Target {
            addr: self.addr,
            transport: self.info.transport,
            family: self.info.family,
            meter: self.info.has_emeter,
            login_version: self.login_version,
        }
    }
}

/// Shared registry of devices.
#[derive(Debug, Default)]
pub struct Registry {
    entries: Mutex<HashMap<DeviceId, Entry>>,
    /// Forgotten devices (by id, and by MAC for their 20002 answers): never registered again
    /// until restored.
    ignored: Mutex<(
        std::collections::HashSet<DeviceId>,
        std::collections::HashSet<String>,
    )>,
}

/// The wait before the next attempt after `failures` failed polls in a row: none before
/// [`OFFLINE_AFTER`], then the interval doubling up to `max_backoff`.
fn backoff(failures: u32, interval: Duration, max_backoff: Duration) -> Duration {
    match failures.checked_sub(OFFLINE_AFTER) {
        None => Duration::ZERO,
        Some(n) => (interval * 2u32.pow(n.min(16))).min(max_backoff),
    }
}

/// A MAC address as 12 upper-case hex digits (`50:C7:BF:…`, `50-C7-BF-…` alike); `None`
/// when it is not one.
pub fn mac_key(mac: &str) -> Option<String> {
    let k: String = mac
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (k.len() == 12 && k != "000000000000").then_some(k)
}

/// Builds the device records (parent first, then outlets) that a sysinfo answer describes.
pub fn infos_from_sysinfo(
    addr: SocketAddr,
    s: &SysInfo,
) -> Result<Vec<DeviceInfo>, crate::domain::device::InvalidDeviceId> {
    let id = DeviceId::parse(&s.device_id)?;
    let strip = !s.children.is_empty();
    let base = DeviceInfo {
        device_id: id.clone(),
        parent_id: None,
        outlet_index: None,
        address: addr.to_string(),
        name: s.alias.clone(),
        device_type: if strip {
            DeviceType::Strip
        } else {
            DeviceType::Plug
        },
        model: s.model.clone(),
        hw_ver: s.hw_ver.clone(),
        sw_ver: s.sw_ver.clone(),
        transport: Transport::Xor,
        family: crate::domain::Family::Iot,
        has_emeter: s.has_emeter,
        mac: s.mac.clone(),
        latitude: s.latitude,
        longitude: s.longitude,
    };
    let mut out = vec![base.clone()];
    for (i, c) in s.children.iter().enumerate() {
        out.push(DeviceInfo {
            device_id: DeviceId::outlet(&id, &c.id)?,
            parent_id: Some(id.clone()),
            outlet_index: Some(u8::try_from(i).unwrap_or(u8::MAX)),
            name: c.alias.clone(),
            device_type: DeviceType::StripOutlet,
            ..base.clone()
        });
    }
    Ok(out)
}

impl Registry {
    /// Adds or updates a device from what it said about itself; returns the records that are
    /// new or changed (to persist).
    pub fn upsert(&self, infos: Vec<DeviceInfo>, now: Instant) -> Vec<DeviceInfo> {
        let Some((parent, outlets)) = infos.split_first() else {
            return Vec::new();
        };
        if self.is_ignored(&parent.device_id, &parent.mac) {
            return Vec::new();
        }
        let addr: SocketAddr = match parent.address.parse() {
            Ok(a) => a,
            Err(_) => return Vec::new(),
        };
        let mut map = self.entries.lock().expect("registry lock");
        let is_new = !map.contains_key(&parent.device_id);
        let e = map
            .entry(parent.device_id.clone())
            .or_insert_with(|| Entry::new(parent.clone(), addr, now));
        if e.addr != addr {
            tracing::info!(device = %parent.device_id, from = %e.addr, to = %addr, "device moved");
            e.addr = addr;
            e.next_attempt = now;
            e.failures = 0;
        }
        let mut changed = Vec::new();
        if is_new || e.info != *parent || e.outlets != outlets {
            changed = infos.clone();
        }
        e.info = parent.clone();
        e.outlets = outlets.to_vec();
        // Its own answer (a poll, or a stored record) identifies the device.
        e.provisional = false;
        changed
    }

    /// Devices whose next attempt is due.
    pub fn due(&self, now: Instant) -> Vec<Entry> {
        let map = self.entries.lock().expect("registry lock");
        map.values()
            .filter(|e| e.next_attempt <= now && e.status != DeviceStatus::Unsupported)
            .cloned()
            .collect()
    }

    /// Sets a device's newest stored reading at start, so a gap across a restart is known.
    pub fn set_stored_until(&self, id: &DeviceId, ts_ms: i64) {
        if let Some(e) = self.entries.lock().expect("registry lock").get_mut(id) {
            e.stored_until_ms = Some(ts_ms);
        }
    }

    /// Records a successful poll.
    pub fn mark_ok(&self, id: &DeviceId, now_ms: i64) {
        if let Some(e) = self.entries.lock().expect("registry lock").get_mut(id) {
            if e.status != DeviceStatus::Online {
                tracing::info!(device = %id, addr = %e.addr, "device online");
            }
            e.status = DeviceStatus::Online;
            e.failures = 0;
            e.polls_ok += 1;
            e.last_seen_ms = Some(now_ms);
            e.last_error = None;
        }
    }

    /// Records a failed poll and schedules the next attempt.
    pub fn mark_failed(
        &self,
        id: &DeviceId,
        error: String,
        now: Instant,
        interval: Duration,
        max_backoff: Duration,
    ) {
        self.record_failure(id, error, now, (interval, max_backoff), false);
    }

    /// One failed poll: counted, the status it leads to (`auth_required` when no credential
    /// was accepted, else offline from [`OFFLINE_AFTER`] failures on), the error, and the next
    /// attempt backed off.
    fn record_failure(
        &self,
        id: &DeviceId,
        error: String,
        now: Instant,
        (interval, max_backoff): (Duration, Duration),
        auth: bool,
    ) {
        let mut map = self.entries.lock().expect("registry lock");
        let Some(e) = map.get_mut(id) else {
            return;
        };
        e.failures += 1;
        e.polls_failed += 1;
        let status = match auth {
            true => DeviceStatus::AuthRequired,
            false if e.failures >= OFFLINE_AFTER => DeviceStatus::Offline,
            false => e.status,
        };
        if status != e.status && auth {
            tracing::warn!(device = %id, addr = %e.addr,
                "device rejects every credential: set [kasa] username and password_file");
        } else if status != e.status {
            tracing::warn!(device = %id, addr = %e.addr, %error, "device offline");
        }
        e.status = status;
        tracing::debug!(device = %id, failures = e.failures, %error, "poll failed");
        e.next_attempt = now + backoff(e.failures, interval, max_backoff);
        e.last_error = Some(error);
    }

    /// The device accepted none of the candidate credentials: shown as `auth_required` (not
    /// offline) and retried with the same backoff as an offline device.
    pub fn mark_auth_required(
        &self,
        id: &DeviceId,
        error: String,
        now: Instant,
        interval: Duration,
        max_backoff: Duration,
    ) {
        self.record_failure(id, error, now, (interval, max_backoff), true);
    }

    /// Marks a device the daemon cannot talk to (never polled).
    pub fn mark_unsupported(&self, id: &DeviceId, why: String) {
        if let Some(e) = self.entries.lock().expect("registry lock").get_mut(id) {
            e.status = DeviceStatus::Unsupported;
            e.last_error = Some(why);
        }
    }

    /// A copy of every entry.
    pub fn snapshot(&self) -> Vec<Entry> {
        self.entries
            .lock()
            .expect("registry lock")
            .values()
            .cloned()
            .collect()
    }

    /// The entry for a plug/strip id, or the strip holding an outlet id.
    pub fn find(&self, id: &DeviceId) -> Option<Entry> {
        let map = self.entries.lock().expect("registry lock");
        map.get(id).cloned().or_else(|| {
            map.values()
                .find(|e| e.outlets.iter().any(|o| &o.device_id == id))
                .cloned()
        })
    }

    /// Whether any known device is at `addr`.
    /// Registers a device known only from its 20002 answer (see [`Entry::provisional`]),
    /// unless an entry with that id exists.
    pub fn add_provisional(
        &self,
        info: DeviceInfo,
        login_version: Option<u8>,
        fallback: Vec<Transport>,
        now: Instant,
    ) {
        let Ok(addr) = info.address.parse() else {
            return;
        };
        if self.is_ignored(&info.device_id, &info.mac) {
            return;
        }
        let mut map = self.entries.lock().expect("registry lock");
        map.entry(info.device_id.clone()).or_insert_with(|| Entry {
            provisional: true,
            login_version,
            fallback,
            ..Entry::new(info, addr, now)
        });
    }

    /// Moves a provisional device that failed on its transport to the next one of its
    /// fallback order, tried at once; false when none is left.
    pub fn next_transport(&self, id: &DeviceId, now: Instant) -> bool {
        let mut map = self.entries.lock().expect("registry lock");
        let Some(e) = map
            .get_mut(id)
            .filter(|e| e.provisional && !e.fallback.is_empty())
        else {
            return false;
        };
        let next = e.fallback.remove(0);
        tracing::info!(device = %id, from = e.info.transport.name(), to = next.name(),
            "trying the next transport");
        e.info.transport = next;
        e.next_attempt = now;
        true
    }

    /// Forgets a device (a provisional entry replaced by the real one).
    pub fn remove(&self, id: &DeviceId) {
        self.entries.lock().expect("registry lock").remove(id);
    }

    fn is_ignored(&self, id: &DeviceId, mac: &str) -> bool {
        let ig = self.ignored.lock().expect("registry lock");
        ig.0.contains(id) || mac_key(mac).is_some_and(|m| ig.1.contains(&m))
    }

    /// Devices forgotten by a person (`devices`: their records): removed, and ignored by
    /// discovery and polling until [`Registry::unignore`]. An outlet alone leaves its strip
    /// polled (the writer drops the outlet's readings).
    pub fn ignore(&self, devices: &[DeviceInfo]) {
        let mut ig = self.ignored.lock().expect("registry lock");
        let mut map = self.entries.lock().expect("registry lock");
        for d in devices {
            ig.0.insert(d.device_id.clone());
            if d.parent_id.is_none() {
                map.remove(&d.device_id);
                if let Some(m) = mac_key(&d.mac) {
                    ig.1.insert(m);
                }
            }
        }
    }

    /// Devices restored: registered again (as stored, polled at once) and no longer ignored.
    pub fn unignore(&self, devices: &[DeviceInfo], now: Instant) {
        {
            let mut ig = self.ignored.lock().expect("registry lock");
            for d in devices {
                ig.0.remove(&d.device_id);
                if let Some(m) = mac_key(&d.mac) {
                    ig.1.remove(&m);
                }
            }
        }
        let parents = devices.iter().filter(|d| d.parent_id.is_none());
        for p in parents {
            let mut infos = vec![p.clone()];
            let mut outlets: Vec<_> = devices
                .iter()
                .filter(|d| d.parent_id.as_ref() == Some(&p.device_id))
                .cloned()
                .collect();
            outlets.sort_by_key(|o| o.outlet_index);
            infos.extend(outlets);
            self.upsert(infos, now);
        }
    }

    /// The id of the device (plug or strip) with this MAC address, in any notation.
    /// Whether a device kasad has polled (not one known only from a 20002 answer) has MAC
    /// address `mac`.
    pub fn known_mac(&self, mac: &str) -> bool {
        let Some(key) = mac_key(mac) else {
            return false;
        };
        let map = self.entries.lock().expect("registry lock");
        map.values()
            .any(|e| !e.provisional && mac_key(&e.info.mac).as_deref() == Some(key.as_str()))
    }

    /// The device with MAC address `mac`, if any.
    pub fn find_by_mac(&self, mac: &str) -> Option<DeviceId> {
        let key = mac_key(mac)?;
        let map = self.entries.lock().expect("registry lock");
        map.values()
            .find(|e| mac_key(&e.info.mac).as_deref() == Some(key.as_str()))
            .map(|e| e.info.device_id.clone())
    }

    /// What a 20002 answer says of a known device now: its transport and request family
    /// (a firmware update moves devices from AES to KLAP) and its login version. A changed
    /// transport is tried at once.
    pub fn update_transport(
        &self,
        id: &DeviceId,
        transport: Transport,
        family: Family,
        login_version: Option<u8>,
        now: Instant,
    ) {
        if let Some(e) = self.entries.lock().expect("registry lock").get_mut(id) {
            e.login_version = login_version.or(e.login_version);
            if e.info.transport != transport || e.info.family != family {
                tracing::info!(device = %id, from = e.info.transport.name(), to = transport.name(),
                    "device changed transport");
                e.info.transport = transport;
                e.info.family = family;
                for o in &mut e.outlets {
                    o.transport = transport;
                    o.family = family;
                }
                e.next_attempt = now;
                e.failures = 0;
                if e.status == DeviceStatus::Unsupported {
                    e.status = DeviceStatus::Offline;
                }
            }
        }
    }

    /// Keeps what a provisional entry learnt (its login version) for the real one.
    pub fn set_login_version(&self, id: &DeviceId, login_version: Option<u8>) {
        if let Some(e) = self.entries.lock().expect("registry lock").get_mut(id) {
            e.login_version = login_version.or(e.login_version);
        }
    }

    /// Moves a known device to `addr` (a discovery answer); false when the device is unknown.
    pub fn relocate(&self, id: &DeviceId, addr: SocketAddr, now: Instant) -> bool {
        let mut map = self.entries.lock().expect("registry lock");
        let Some(e) = map.get_mut(id) else {
            return false;
        };
        if e.addr != addr {
            tracing::info!(device = %id, from = %e.addr, to = %addr, "device moved");
            e.addr = addr;
            e.info.address = addr.to_string();
            e.next_attempt = now;
            e.failures = 0;
        }
        true
    }

    pub fn knows_addr(&self, addr: SocketAddr) -> bool {
        self.entries
            .lock()
            .expect("registry lock")
            .values()
            .any(|e| e.addr == addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sysinfo(id: &str, children: usize) -> SysInfo {
        let kids: Vec<_> = (0..children)
            .map(|i| json!({"id": format!("{i:02}"), "alias": "o", "state": 1}))
            .collect();
        SysInfo::parse(
            &json!({"deviceId": id, "alias": "a", "feature": "TIM:ENE", "children": kids}),
        )
        .unwrap()
    }

    #[test]
    fn mac_addresses_match_in_any_notation() {
        assert_eq!(mac_key("50:c7:bf:01:02:03"), mac_key("50-C7-BF-01-02-03"));
        assert_eq!(mac_key("50C7BF010203").as_deref(), Some("50C7BF010203"));
        assert_eq!(mac_key(""), None);
        assert_eq!(
            mac_key("00:00:00:00:00:00"),
            None,
            "a zeroed MAC matches nothing"
        );
        assert_eq!(mac_key("50:C7:BF:01:02"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn moves_follow_the_device_id_and_failures_back_off() {
        let r = Registry::default();
        let now = Instant::now();
        let a: SocketAddr = "127.0.0.2:9999".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:9999".parse().unwrap();
        let changed = r.upsert(infos_from_sysinfo(a, &sysinfo("D1", 2)).unwrap(), now);
        assert_eq!(changed.len(), 3);
        let fresh = Registry::default();
        let plug = infos_from_sysinfo(a, &sysinfo("P9", 0)).unwrap();
        assert_eq!(fresh.upsert(plug, now).len(), 1, "a new plug is persisted");
        assert_eq!(changed[1].device_id.as_str(), "D100");
        assert!(
            r.upsert(infos_from_sysinfo(a, &sysinfo("D1", 2)).unwrap(), now)
                .is_empty()
        );
        r.upsert(infos_from_sysinfo(b, &sysinfo("D1", 2)).unwrap(), now);
        assert_eq!(r.snapshot().len(), 1);
        assert_eq!(r.snapshot()[0].addr, b);

        let id = DeviceId::parse("D1").unwrap();
        let iv = Duration::from_secs(10);
        r.mark_failed(&id, "x".into(), now, iv, Duration::from_secs(60));
        assert_eq!(r.due(now).len(), 1, "one failure is retried at once");
        r.mark_failed(&id, "x".into(), now, iv, Duration::from_secs(60));
        assert_eq!(r.find(&id).unwrap().status, DeviceStatus::Offline);
        assert!(r.due(now).is_empty());
        assert_eq!(r.due(now + iv).len(), 1);
        for _ in 0..10 {
            r.mark_failed(&id, "x".into(), now, iv, Duration::from_secs(60));
        }
        assert!(r.due(now + Duration::from_secs(59)).is_empty());
        assert_eq!(
            r.due(now + Duration::from_secs(60)).len(),
            1,
            "capped at max_backoff"
        );
        r.mark_ok(&id, 5);
        assert_eq!(
            r.find(&DeviceId::parse("D101").unwrap()).unwrap().status,
            DeviceStatus::Online
        );
    }
}
