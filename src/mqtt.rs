//! MQTT: every plug, strip and outlet's state after each poll cycle, Home Assistant
//! discovery, and relay commands (only with `[mqtt] allow_control = true`).
//!
//! Topics, under `topic_prefix` (`kasad`):
//! - `kasad/status`: `online`, or `offline` as the broker's last will (retained);
//! - `kasad/<id>/availability`: `online` / `offline` — whether the device answers (retained);
//! - `kasad/<id>/power` (W), `voltage` (V), `current` (A), `energy_today` (kWh in the
//!   daemon's time zone), `energy_total` (kWh, the device's counter) and `relay` (`ON` /
//!   `OFF`, retained); a strip has power and energy today, the sums of its outlets;
//! - `kasad/<id>/relay/set`: `ON` / `OFF` switches a plug or outlet when allowed, audited
//!   as DEVICE_CONTROLLED by `mqtt:<host>:<port>`; otherwise ignored with a warning;
//! - `<discovery_prefix>/sensor|switch/kasad_<id>/<entity>/config`: Home Assistant
//!   discovery (retained), power W `measurement`, energy kWh `total_increasing`;
//! - `kasad/alerts/<rule_id>`: each notice of an alert rule with the `mqtt` channel (JSON with
//!   `event_type` `alert.raised`, `alert.resolved` or `alert.test`), and its Home Assistant
//!   `event` entity at `<discovery_prefix>/event/kasad_alert_<rule_id>/config` (retained).
//!
//! Messages wait in a bounded outbox: a full one drops its oldest message (counted in
//! `/metrics`) and never holds up polling. While the broker is away only retained state
//! (configs, relay, availability) is queued — measurements would arrive stale — and after
//! every (re)connection the retained topics are published again, so a broker restarted
//! without persistence has everything back at once.

use crate::audit::{Event, EventType, Severity};
use crate::auth::keys::SecretKey;
use crate::clock::SharedClock;
use crate::config::Mqtt as Config;
use crate::domain::{DeviceId, DeviceStatus, DeviceType};
use crate::live::Live;
use crate::poller::registry::Registry;
use crate::store::Store;
use rumqttc::{AsyncClient, Event as MqttEvent, LastWill, MqttOptions, Packet, QoS};
use serde_json::json;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct MqttStats {
    /// Connected to the broker now.
    pub connected: AtomicBool,
    /// Messages handed to the broker connection.
    pub published: AtomicU64,
    /// Messages dropped from a full outbox (oldest first).
    pub dropped: AtomicU64,
    /// Relay commands received (obeyed or not).
    pub commands: AtomicU64,
}

/// One message.
#[derive(Debug, Clone, PartialEq)]
struct Msg {
    topic: String,
    payload: String,
    retain: bool,
}

/// The latest message of every topic.
type Last = Arc<Mutex<BTreeMap<String, Msg>>>;

/// Messages waiting for the broker; the oldest go first when it is full.
#[derive(Debug)]
struct Outbox {
    queue: Mutex<VecDeque<Msg>>,
    cap: usize,
    ready: Notify,
}

impl Outbox {
    /// Queues `m`; a full outbox drops its oldest. A dropped retained message is forgotten in
    /// `last`, so the next cycle sends it again.
    fn push(&self, m: Msg, stats: &MqttStats, last: &Mutex<BTreeMap<String, Msg>>) {
        let mut q = self.queue.lock().expect("outbox lock");
        while q.len() >= self.cap.max(1) {
            if let Some(old) = q.pop_front() {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                if old.retain {
                    last.lock().expect("last lock").remove(&old.topic);
                }
            }
        }
        q.push_back(m);
        drop(q);
        self.ready.notify_one();
    }

    fn take(&self) -> Option<Msg> {
        self.queue.lock().expect("outbox lock").pop_front()
    }
}

/// What the publisher needs.
pub struct Mqtt {
    /// Settings.
    pub cfg: Config,
    /// Password (from `password_file`), if any.
    pub password: Option<String>,
    /// Where device states come from.
    pub store: Store,
    /// Device reachability and addresses.
    pub registry: Arc<Registry>,
    /// The daemon's zone (for "today").
    pub tz: chrono_tz::Tz,
    /// Prices today's energy (needed by the live snapshot).
    pub exporter: Arc<crate::export::jobs::Exporter>,
    /// Poll cycles end with a notification here.
    pub cycles: Arc<crate::poller::PollerStatus>,
    /// Poll interval (a reading older than three is not shown).
    pub poll_interval: Duration,
    /// Poll timeout, for relay commands.
    pub poll_timeout: Duration,
    /// Device connections (relay commands reuse a KLAP device's session).
    pub conns: std::sync::Arc<crate::poller::conns::ConnPool>,
    /// Time.
    pub clock: SharedClock,
    /// Signs audit entries.
    pub audit_key: SecretKey,
    /// Counters.
    pub stats: Arc<MqttStats>,
    /// Notices of alert rules with the `mqtt` channel.
    pub alerts: tokio::sync::broadcast::Sender<crate::alerts::send::Notice>,
}

/// The state topics of one device and their payloads.
fn states(prefix: &str, l: &Live, online: bool) -> Vec<Msg> {
    let Some(id) = &l.id else { return Vec::new() };
    let t = |k: &str| format!("{prefix}/{id}/{k}");
    let mut out = vec![Msg {
        topic: t("availability"),
        payload: if online { "online" } else { "offline" }.into(),
        retain: true,
    }];
    let num = |k: &str, v: f64| Msg {
        topic: t(k),
        payload: format!("{v}"),
        retain: false,
    };
    if let Some(p) = l.power_mw {
        out.push(num("power", p as f64 / 1e3));
    }
    if let Some(v) = l.voltage_mv {
        out.push(num("voltage", v as f64 / 1e3));
    }
    if let Some(c) = l.current_ma {
        out.push(num("current", c as f64 / 1e3));
    }
    if l.power_mw.is_some() || l.counter_wh.is_some() {
        out.push(num("energy_today", l.today_mwh as f64 / 1e6));
    }
    if let Some(c) = l.counter_wh {
        out.push(num("energy_total", c as f64 / 1e3));
    }
    if let (Some(on), false) = (l.is_on, l.device_type == Some(DeviceType::Strip)) {
        out.push(Msg {
            topic: t("relay"),
            payload: if on { "ON" } else { "OFF" }.into(),
            retain: true,
        });
    }
    out
}

/// Home Assistant discovery configs of one device.
fn discovery(cfg: &Config, l: &Live, has_relay: bool) -> Vec<Msg> {
    let Some(id) = &l.id else { return Vec::new() };
    let (p, d) = (&cfg.topic_prefix, &cfg.discovery_prefix);
    let uid = format!("kasad_{id}");
    let device = json!({"identifiers": [uid], "name": l.name, "model": l.model,
        "manufacturer": "TP-Link"});
    let avail =
        json!([{"topic": format!("{p}/status")}, {"topic": format!("{p}/{id}/availability")}]);
    let mut out = Vec::new();
    let strip = l.device_type == Some(DeviceType::Strip);
    let sensors: &[(&str, &str, &str, &str, &str)] = &[
        ("power", "Power", "power", "W", "measurement"),
        ("voltage", "Voltage", "voltage", "V", "measurement"),
        ("current", "Current", "current", "A", "measurement"),
        (
            "energy_today",
            "Energy today",
            "energy",
            "kWh",
            "total_increasing",
        ),
        (
            "energy_total",
            "Energy counter",
            "energy",
            "kWh",
            "total_increasing",
        ),
    ];
    let metered = l.power_mw.is_some() || l.counter_wh.is_some();
    for &(key, name, class, unit, state) in sensors {
        // Only what the device reports (a strip: the sums of its outlets).
        let reported = match key {
            "power" | "energy_today" => metered,
            "voltage" => l.voltage_mv.is_some() && !strip,
            "current" => l.current_ma.is_some() && !strip,
            _ => l.counter_wh.is_some() && !strip,
        };
        if !reported {
            continue;
        }
        let c = json!({"name": name, "unique_id": format!("{uid}_{key}"),
            "object_id": format!("{uid}_{key}"),
            "default_entity_id": format!("sensor.{uid}_{key}"),
            "state_topic": format!("{p}/{id}/{key}"),
            "device_class": class, "unit_of_measurement": unit, "state_class": state,
            "availability": avail, "availability_mode": "all", "device": device});
        out.push(Msg {
            topic: format!("{d}/sensor/{uid}/{key}/config"),
            payload: c.to_string(),
            retain: true,
        });
    }
    if has_relay {
        let c = json!({"name": "Relay", "unique_id": format!("{uid}_relay"),
            "object_id": format!("{uid}_relay"), "default_entity_id": format!("switch.{uid}_relay"),
            "state_topic": format!("{p}/{id}/relay"),
            "command_topic": format!("{p}/{id}/relay/set"), "payload_on": "ON",
            "payload_off": "OFF", "availability": avail, "availability_mode": "all",
            "device": device});
        out.push(Msg {
            topic: format!("{d}/switch/{uid}/relay/config"),
            payload: c.to_string(),
            retain: true,
        });
    }
    out
}

impl Mqtt {
    /// Runs until `cancel`: the broker connection (reconnecting with backoff), the outbox,
    /// and a state snapshot after every poll cycle.
    pub async fn run(self, cancel: CancellationToken) {
        let me = Arc::new(self);
        let cfg = &me.cfg;
        let status = format!("{}/status", cfg.topic_prefix);
        let Some(opts) = me.options(&status) else {
            return;
        };
        let (client, mut events) = AsyncClient::new(opts, 64);
        let outbox = Arc::new(Outbox {
            queue: Mutex::new(VecDeque::new()),
            cap: cfg.queue,
            ready: Notify::new(),
        });
        // The latest message of every topic, published again after each reconnection.
        let last: Last = Arc::default();
        let sender = me.send(client.clone(), outbox.clone(), cancel.clone());
        let snapshots = me
            .clone()
            .snapshots(outbox.clone(), last.clone(), cancel.clone());
        let (commands, worker) = me.clone().commands(outbox.clone(), last.clone());
        let alerts = me
            .clone()
            .alert_notices(outbox.clone(), last.clone(), cancel.clone());
        let set_filter = format!("{}/+/relay/set", cfg.topic_prefix);
        let mut backoff = Duration::from_secs(1);
        let mut reported = false;
        loop {
            let ev = tokio::select! {
                () = cancel.cancelled() => break,
                ev = events.poll() => ev,
            };
            match ev {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!(host = %cfg.host, port = cfg.port, "mqtt connected");
                    me.stats.connected.store(true, Ordering::Relaxed);
                    (backoff, reported) = (Duration::from_secs(1), false);
                    // Never awaited here: only this loop's polling frees the client's queue.
                    let (c, f) = (client.clone(), set_filter.clone());
                    tokio::spawn(async move { c.subscribe(f, QoS::AtLeastOnce).await });
                    me.announce(&status, &outbox, &last);
                }
                // A retained command would switch the plug again at every reconnection.
                Ok(MqttEvent::Incoming(Packet::Publish(p))) if !p.retain => {
                    let payload = String::from_utf8_lossy(&p.payload).trim().to_owned();
                    me.stats.commands.fetch_add(1, Ordering::Relaxed);
                    if commands.try_send((p.topic, payload)).is_err() {
                        tracing::warn!(
                            "mqtt: relay commands arrive faster than they are carried out; one dropped"
                        );
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if me.stats.connected.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "mqtt connection lost; reconnecting");
                    } else if !reported {
                        tracing::warn!(error = %e, host = %cfg.host, port = cfg.port,
                            "mqtt broker unreachable; retrying with backoff");
                    }
                    reported = true;
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
        sender.abort();
        snapshots.abort();
        worker.abort();
        alerts.abort();
        me.say_goodbye(&client, &mut events, &status).await;
    }

    /// The connection options: keep-alive, the `offline` will, credentials and TLS; `None`
    /// (logged) when TLS cannot be set up.
    fn options(&self, status: &str) -> Option<MqttOptions> {
        let cfg = &self.cfg;
        let mut opts = MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_last_will(LastWill::new(status, "offline", QoS::AtLeastOnce, true));
        if !cfg.username.is_empty() {
            opts.set_credentials(&cfg.username, self.password.clone().unwrap_or_default());
        }
        if cfg.tls {
            match crate::tls::client_config(cfg.ca_file.as_deref(), "[mqtt]") {
                Ok(c) => {
                    opts.set_transport(rumqttc::Transport::tls_with_config(
                        rumqttc::TlsConfiguration::Rustls(Arc::new(c)),
                    ));
                }
                Err(e) => {
                    tracing::error!(error = %e, "mqtt: TLS cannot be set up; not connecting");
                    return None;
                }
            }
        }
        Some(opts)
    }

    /// Publishes the outbox in order until `stop`.
    fn send(
        &self,
        client: AsyncClient,
        outbox: Arc<Outbox>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let qos = if self.cfg.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let stats = self.stats.clone();
        tokio::spawn(async move {
            loop {
                while let Some(m) = outbox.take() {
                    // Waits while the connection's own queue is full (broker away);
                    // the outbox drops its oldest meanwhile.
                    tokio::select! {
                        () = stop.cancelled() => return,
                        r = client.publish(m.topic, qos, m.retain, m.payload) => {
                            if r.is_ok() {
                                stats.published.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = outbox.ready.notified() => {}
                }
            }
        })
    }

    /// After every poll cycle: the states that changed (retained) and the measurements
    /// (while connected) into the outbox.
    fn snapshots(
        self: Arc<Self>,
        outbox: Arc<Outbox>,
        last: Last,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = self.cycles.cycle_done.notified() => {}
                }
                match self.snapshot().await {
                    Ok(msgs) => {
                        for m in msgs {
                            let new = {
                                let mut l = last.lock().expect("last lock");
                                l.insert(m.topic.clone(), m.clone()).as_ref() != Some(&m)
                            };
                            // Measurements are only worth sending while connected; a
                            // backlog of old ones would arrive looking current.
                            let live = self.stats.connected.load(Ordering::Relaxed);
                            if (new && m.retain) || (!m.retain && live) {
                                outbox.push(m, &self.stats, &last);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "mqtt: no device states"),
                }
            }
        })
    }

    /// Alert notices: the event, and its Home Assistant event entity (retained).
    fn alert_notices(
        self: Arc<Self>,
        outbox: Arc<Outbox>,
        last: Last,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let mut rx = self.alerts.subscribe();
        tokio::spawn(async move {
            loop {
                let n = tokio::select! {
                    () = stop.cancelled() => return,
                    n = rx.recv() => n,
                };
                let n = match n {
                    Ok(n) => n,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => {
                        tracing::warn!(dropped = k, "mqtt: alert notices dropped");
                        continue;
                    }
                    Err(_) => return,
                };
                let (p, d) = (&self.cfg.topic_prefix, &self.cfg.discovery_prefix);
                let rule = &n.alert.rule_id;
                let topic = format!("{p}/alerts/{rule}");
                let config = json!({"name": n.rule_name, "unique_id": format!("kasad_alert_{rule}"),
                    "state_topic": topic, "event_types": ["alert.raised", "alert.resolved", "alert.test"],
                    "availability_topic": format!("{p}/status"),
                    "device": {"identifiers": ["kasad_alerts"], "name": "kasad alerts", "manufacturer": "kasad"}});
                let mut body = n.json();
                body["event_type"] = json!(n.event);
                for m in [
                    Msg {
                        topic: format!("{d}/event/kasad_alert_{rule}/config"),
                        payload: config.to_string(),
                        retain: true,
                    },
                    Msg {
                        topic,
                        payload: body.to_string(),
                        retain: false,
                    },
                ] {
                    outbox.push(m, &self.stats, &last);
                }
            }
        })
    }

    /// Relay commands, one at a time; more than a few waiting are dropped.
    fn commands(
        self: Arc<Self>,
        outbox: Arc<Outbox>,
        last: Last,
    ) -> (
        tokio::sync::mpsc::Sender<(String, String)>,
        tokio::task::JoinHandle<()>,
    ) {
        let (commands, mut queued) = tokio::sync::mpsc::channel::<(String, String)>(8);
        let worker = tokio::spawn(async move {
            while let Some((topic, payload)) = queued.recv().await {
                if let Some(m) = self.command(&topic, &payload).await {
                    last.lock()
                        .expect("last lock")
                        .insert(m.topic.clone(), m.clone());
                    outbox.push(m, &self.stats, &last);
                }
            }
        });
        (commands, worker)
    }

    /// On (re)connection: `online`, and the retained state again (a broker may have lost
    /// it); measurements wait for the next cycle rather than going out stale.
    fn announce(&self, status: &str, outbox: &Outbox, last: &Last) {
        let online = Msg {
            topic: status.to_owned(),
            payload: "online".into(),
            retain: true,
        };
        outbox.push(online, &self.stats, last);
        let again: Vec<Msg> = (last.lock().expect("last lock").values())
            .filter(|m| m.retain)
            .cloned()
            .collect();
        for m in again {
            outbox.push(m, &self.stats, last);
        }
    }

    /// A clean stop says so (the will is only for a lost connection). Nothing here waits on
    /// a full queue: then the connection just drops and the broker sends the will.
    async fn say_goodbye(
        &self,
        client: &AsyncClient,
        events: &mut rumqttc::EventLoop,
        status: &str,
    ) {
        if self.stats.connected.load(Ordering::Relaxed)
            && client
                .try_publish(status, QoS::AtLeastOnce, true, "offline")
                .is_ok()
            && client.try_disconnect().is_ok()
        {
            let flush = async {
                while let Ok(ev) = events.poll().await {
                    if matches!(ev, MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_millis(500), flush).await;
        }
    }

    /// Every device's discovery configs and states now.
    async fn snapshot(&self) -> anyhow::Result<Vec<Msg>> {
        let now = self.clock.now_ms();
        let (tz, interval) = (self.tz, self.poll_interval);
        let (store, exporter) = (self.store.clone(), self.exporter.clone());
        let rows = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Live>> {
            let tariffs = exporter.tariffs()?;
            Ok(crate::live::today(&store, &tariffs, now, tz, interval)?.0)
        })
        .await??;
        let mut out = Vec::new();
        for l in &rows {
            let Some(id) = &l.id else { continue };
            let online = self.online(id, l);
            let relay = l.is_on.is_some() && l.device_type != Some(DeviceType::Strip);
            out.extend(discovery(&self.cfg, l, relay));
            out.extend(states(&self.cfg.topic_prefix, l, online));
        }
        Ok(out)
    }

    /// Whether `id` (or the strip it belongs to) answers its polls.
    fn online(&self, id: &DeviceId, l: &Live) -> bool {
        let entry = self.registry.find(id);
        entry.is_some_and(|e| e.status == DeviceStatus::Online) && l.ts_ms.is_some()
    }

    /// A message on `kasad/<id>/relay/set`; the relay's new state when it was switched.
    async fn command(&self, topic: &str, payload: &str) -> Option<Msg> {
        let prefix = format!("{}/", self.cfg.topic_prefix);
        let id = topic
            .strip_prefix(&prefix)
            .and_then(|t| t.strip_suffix("/relay/set"))
            .and_then(|i| DeviceId::parse(i).ok())?;
        let on = match payload.to_ascii_uppercase().as_str() {
            "ON" | "1" | "TRUE" => true,
            "OFF" | "0" | "FALSE" => false,
            _ => {
                tracing::warn!(device = %id, payload, "mqtt: relay command is neither ON nor OFF");
                return None;
            }
        };
        if !self.cfg.allow_control {
            tracing::warn!(device = %id, "mqtt: relay command ignored ([mqtt] allow_control = false)");
            return None;
        }
        let Some(entry) = self.registry.find(&id) else {
            tracing::warn!(device = %id, "mqtt: relay command for an unknown device");
            return None;
        };
        if entry.info.device_id == id && entry.info.device_type == DeviceType::Strip {
            tracing::warn!(device = %id, "mqtt: switch a strip's outlets one by one");
            return None;
        }
        let outlet = (entry.info.device_id != id).then_some(&id);
        let res = (self.conns)
            .set_relay(&entry.target(), outlet, on, self.poll_timeout)
            .await;
        let mut ev = Event::new(EventType::DeviceControlled, Severity::Info);
        ev.username = Some(format!("mqtt:{}:{}", self.cfg.host, self.cfg.port));
        ev.resource = Some(format!("device:{id}"));
        ev.details = json!({"on": on, "ok": res.is_ok(), "via": "mqtt",
            "error": res.as_ref().err().map(ToString::to_string)});
        self.store
            .audit_logged(&self.audit_key, ev, self.clock.now_ms())
            .await;
        match res {
            Ok(()) => {
                tracing::info!(device = %id, on, "mqtt: relay switched");
                // Home Assistant's switch shows the new state now, not after the next poll.
                Some(Msg {
                    topic: format!("{prefix}{id}/relay"),
                    payload: if on { "ON" } else { "OFF" }.into(),
                    retain: true,
                })
            }
            Err(e) => {
                tracing::warn!(device = %id, error = %e, "mqtt: relay did not switch");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lamp() -> Live {
        Live {
            id: Some(DeviceId::parse("PLUG01").unwrap()),
            name: "Lamp".into(),
            model: "HS110(EU)".into(),
            device_type: Some(DeviceType::Plug),
            ts_ms: Some(1),
            power_mw: Some(45_200),
            voltage_mv: Some(230_100),
            current_ma: Some(196),
            counter_wh: Some(16_323),
            is_on: Some(true),
            today_mwh: 1_234_500,
            ..Live::default()
        }
    }

    #[test]
    fn a_plug_publishes_its_values_in_display_units() {
        let m = states("kasad", &lamp(), true);
        let got: Vec<(&str, &str, bool)> = m
            .iter()
            .map(|m| (m.topic.as_str(), m.payload.as_str(), m.retain))
            .collect();
        assert_eq!(
            got,
            vec![
                ("kasad/PLUG01/availability", "online", true),
                ("kasad/PLUG01/power", "45.2", false),
                ("kasad/PLUG01/voltage", "230.1", false),
                ("kasad/PLUG01/current", "0.196", false),
                ("kasad/PLUG01/energy_today", "1.2345", false),
                ("kasad/PLUG01/energy_total", "16.323", false),
                ("kasad/PLUG01/relay", "ON", true),
            ]
        );
    }

    #[test]
    fn the_outbox_drops_its_oldest_when_full() {
        let stats = MqttStats::default();
        let o = Outbox {
            queue: Mutex::default(),
            cap: 2,
            ready: Notify::new(),
        };
        let last = Mutex::new(BTreeMap::new());
        for i in 0..5 {
            let m = Msg {
                topic: format!("t{i}"),
                payload: String::new(),
                retain: i == 0,
            };
            last.lock().unwrap().insert(m.topic.clone(), m.clone());
            o.push(m, &stats, &last);
        }
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 3);
        // The dropped retained message is forgotten, so the next cycle sends it again.
        assert!(!last.lock().unwrap().contains_key("t0"));
        assert!(last.lock().unwrap().contains_key("t1"));
        assert_eq!(o.take().unwrap().topic, "t3");
        assert_eq!(o.take().unwrap().topic, "t4");
        assert!(o.take().is_none());
    }
}
