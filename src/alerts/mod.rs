//! Alerts: rules over live readings and insights that raise, raise again and resolve alerts,
//! and send their notices to the pages, e-mail, webhooks and MQTT.
//!
//! Owns: the [`Alerts`] service. After each poll cycle (never inside it) [`Alerts::cycle`]
//! reads the devices' newest state, follows appliance runs ([`tracker`]), and checks the live
//! kinds; once a local day (the daemon's zone) it computes the insights and checks the daily
//! kinds ([`eval`]). One alert per (rule, device): raised when its condition holds (after
//! `for_minutes`), notified again after the cool-down while it still holds and nobody
//! acknowledged it, resolved when it clears. Quiet hours and snoozes hold notices back, never
//! alerts. Every alert is stored; the open ones are read back at start, so a restart notifies
//! nothing again. [`send`] delivers notices; [`rules`] checks rule bodies.

pub mod eval;
pub mod rules;
pub mod send;
pub mod tracker;

use crate::audit::{Event, EventType, Severity};
use crate::auth::keys::SecretKey;
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::alert::{Alert, Kind, Rule, State};
use crate::store::audit::Pending;
use crate::store::{self, DeviceRecord, Store};
use chrono_tz::Tz;
use eval::{Cond, DeviceNow};
use send::Notice;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracker::Tracker;

/// The run threshold when neither the rule, the device nor its history says one, W.
pub const DEFAULT_RUN_THRESHOLD_W: f64 = 10.0;

/// What the evaluation keeps between cycles.
#[derive(Debug, Default)]
struct Inner {
    /// Open and acknowledged alerts by key (`rule|device`), read from the store at start.
    open: Option<HashMap<String, Alert>>,
    /// When a condition started to hold and when it was last seen holding, by key (for
    /// `for_minutes`).
    since: HashMap<String, (i64, i64)>,
    /// Appliance runs by key.
    trackers: HashMap<String, Tracker>,
    /// The local day the daily kinds were last checked.
    last_daily: Option<chrono::NaiveDate>,
    /// Run thresholds learned by the insights, W, by device.
    learned: HashMap<String, f64>,
}

/// The alerts service.
#[derive(Debug)]
pub struct Alerts {
    store: Store,
    clock: SharedClock,
    tz: Tz,
    settings: Arc<Settings>,
    audit_key: SecretKey,
    inner: Mutex<Inner>,
    /// Notices for MQTT (`<topic_prefix>/alerts/<rule_id>`).
    pub mqtt: tokio::sync::broadcast::Sender<Notice>,
    /// Evaluations finished since the start (the health detail shows it).
    evaluations: std::sync::atomic::AtomicU64,
}

fn key(rule_id: &str, device: Option<&str>) -> String {
    format!("{rule_id}|{}", device.unwrap_or(""))
}

/// An alert event for the audit log, by kasad itself.
fn event(t: EventType, a: &Alert) -> Event {
    let mut ev = Event::new(t, Severity::Info);
    ev.username = Some("kasad (alerts)".into());
    ev.resource = Some(format!("alert:{}", a.alert_id));
    ev.details = serde_json::json!({"rule_id": a.rule_id, "device_id": a.device_id,
        "kind": a.kind, "message": a.message, "value": a.value});
    ev
}

/// What one cycle changed: alerts to store with their audit events, and notices to send.
#[derive(Debug, Default)]
struct Changes {
    alerts: Vec<Alert>,
    events: Vec<Event>,
    notices: Vec<Notice>,
}

impl Alerts {
    /// The service for `store`, its clock, the daemon's zone and settings.
    pub fn new(
        store: Store,
        clock: SharedClock,
        settings: Arc<Settings>,
        audit_key: SecretKey,
    ) -> Self {
        Self {
            store,
            clock,
            tz: settings.tz(),
            settings,
            audit_key,
            inner: Mutex::new(Inner::default()),
            mqtt: tokio::sync::broadcast::channel(64).0,
            evaluations: Default::default(),
        }
    }

    /// Evaluations finished since the start.
    pub fn evaluations(&self) -> u64 {
        self.evaluations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The settings rules are checked against.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("alerts lock")
    }

    fn loaded<'a>(&self, inner: &'a mut Inner) -> store::Result<&'a mut HashMap<String, Alert>> {
        if inner.open.is_none() {
            let open = self
                .store
                .alerts()?
                .into_iter()
                .filter(|a| a.state != State::Resolved)
                .map(|a| (key(&a.rule_id, a.device_id.as_deref()), a))
                .collect();
            inner.open = Some(open);
        }
        Ok(inner.open.as_mut().expect("loaded"))
    }

    /// One evaluation as of now: the live kinds, and the daily kinds when the local day
    /// changed; stores what changed and returns the notices to send.
    pub fn cycle(&self) -> store::Result<Vec<Notice>> {
        let now = self.clock.now_ms();
        let rules = self.store.alert_rules()?;
        if rules.is_empty() {
            return Ok(Vec::new());
        }
        let records = self.store.device_records()?;
        let devices = self.devices_now(now, &rules)?;
        // Held through the commit: an acknowledgement meanwhile sees the stored state.
        let mut inner = self.lock();
        let mut ch = Changes::default();
        if let Err(e) = self.daily(&mut inner, &rules, &records, now, &mut ch) {
            tracing::warn!(error = %e, "alerts: the daily check failed; it runs again next cycle");
        }
        self.live(&mut inner, &rules, &records, &devices, now, &mut ch)?;
        self.notify_due(&mut inner, &rules, now, &mut ch)?;
        self.commit(ch)
    }

    /// Evaluates the live kinds against already gathered devices (the bench's entry point).
    pub fn evaluate_live(
        &self,
        rules: &[Rule],
        records: &[DeviceRecord],
        devices: &HashMap<String, DeviceNow>,
        now: i64,
    ) -> store::Result<usize> {
        let mut inner = self.lock();
        let mut ch = Changes::default();
        self.live(&mut inner, rules, records, devices, now, &mut ch)?;
        Ok(ch.alerts.len())
    }

    fn commit(&self, ch: Changes) -> store::Result<Vec<Notice>> {
        if !ch.alerts.is_empty() {
            let now = self.clock.now_ms();
            let refs: Vec<&Alert> = ch.alerts.iter().collect();
            let audit = ch
                .events
                .into_iter()
                .map(|e| Pending::new(&self.audit_key, e, now))
                .collect();
            self.store.alerts_put(&refs, audit)?;
        }
        Ok(ch.notices)
    }

    /// The devices' newest state: last reading, and what the `rules` read of it — fresh power
    /// (power and run rules), energy since local midnight (energy rules); nothing is read that
    /// no rule needs, as this runs after every poll cycle.
    fn devices_now(&self, now: i64, rules: &[Rule]) -> store::Result<HashMap<String, DeviceNow>> {
        use crate::domain::rollup::{Period, period_start};
        let needs = |kinds: &[Kind]| rules.iter().any(|r| kinds.contains(&r.body.kind));
        let power = needs(&[Kind::PowerAbove, Kind::PowerBelow, Kind::ApplianceFinished]);
        let energy = needs(&[Kind::DailyEnergyAbove]);
        let fresh = 3 * i64::try_from(self.settings.poll.interval.0.as_millis()).unwrap_or(60_000);
        let day0 = period_start(now, Period::Day, self.tz);
        let summaries = self.store.devices()?;
        let mut out = HashMap::new();
        for s in summaries {
            let r = &s.record;
            if r.info.device_type == crate::domain::DeviceType::Strip {
                continue;
            }
            let id = &r.info.device_id;
            let newest = if power {
                self.store
                    .scan_samples(id, now - fresh, now + 1)?
                    .last()
                    .transpose()?
            } else {
                None
            };
            let today: i64 = if energy {
                self.store
                    .scan_buckets(id, day0, now + 1)?
                    .map(|b| b.map(|b| b.energy_mwh))
                    .sum::<store::Result<i64>>()?
            } else {
                0
            };
            out.insert(
                id.to_string(),
                DeviceNow {
                    id: id.to_string(),
                    name: r.name().to_owned(),
                    last_reading_ms: s.last_reading_ms,
                    power_w: newest.and_then(|x| x.power_mw).map(|p| p as f64 / 1_000.0),
                    today_kwh: today as f64 / 1e6,
                },
            );
        }
        Ok(out)
    }

    /// The devices a rule covers, by id: an entry that names no device any more (a moved
    /// address, an empty room) covers nothing, the others still count.
    fn covered(rule: &Rule, records: &[DeviceRecord]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for w in rule.body.check().unwrap_or_default() {
            for r in store::select::select(std::slice::from_ref(&w), records).unwrap_or_default() {
                let id = r.info.device_id.to_string();
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
        out
    }

    fn live(
        &self,
        inner: &mut Inner,
        rules: &[Rule],
        records: &[DeviceRecord],
        devices: &HashMap<String, DeviceNow>,
        now: i64,
        ch: &mut Changes,
    ) -> store::Result<()> {
        let end_after = i64::from(self.settings.insights.run_end_minutes) * 60_000;
        let mut cover: HashMap<String, Vec<String>> = HashMap::new();
        let mut checked: std::collections::HashSet<String> = Default::default();
        let set: HashMap<&str, f64> = records
            .iter()
            .filter_map(|r| Some((r.info.device_id.as_str(), r.labels.run_threshold_w?)))
            .collect();
        for rule in rules
            .iter()
            .filter(|r| !r.body.kind.daily() && r.body.kind != Kind::BudgetForecast)
        {
            // Rules that name the same devices share one selection.
            let ids = cover
                .entry(rule.body.devices.to_string())
                .or_insert_with(|| Self::covered(rule, records));
            for id in ids.iter() {
                let Some(d) = devices.get(id) else { continue };
                let k = key(&rule.rule_id, Some(id));
                let (mut finished, mut running) = (None, false);
                if rule.body.kind == Kind::ApplianceFinished {
                    let threshold = rule
                        .body
                        .threshold_w
                        .or_else(|| set.get(id.as_str()).copied())
                        .or_else(|| inner.learned.get(id).copied())
                        .unwrap_or(DEFAULT_RUN_THRESHOLD_W);
                    let t = inner.trackers.entry(k.clone()).or_default();
                    if let (Some(ts), Some(p)) = (d.last_reading_ms, d.power_w) {
                        finished = t.feed(ts, p, threshold, end_after);
                    }
                    running = t.running();
                }
                let cond = eval::live(rule, d, now, finished.as_ref(), running);
                checked.insert(k.clone());
                self.apply(inner, rule, Some(id), cond, now, ch)?;
            }
        }
        // An open alert of a live rule whose device it no longer covers (the rule changed, the
        // device was forgotten) resolves rather than staying open for good.
        let stale: Vec<(Rule, String)> = self
            .loaded(inner)?
            .iter()
            .filter(|(k, _)| !checked.contains(*k))
            .filter_map(|(_, a)| {
                let r = rules.iter().find(|r| r.rule_id == a.rule_id)?;
                let live = !r.body.kind.daily() && r.body.kind != Kind::BudgetForecast;
                Some((r.clone(), a.device_id.clone()?)).filter(|_| live)
            })
            .collect();
        for (rule, device) in stale {
            self.apply(inner, &rule, Some(&device), Cond::Clear, now, ch)?;
        }
        Ok(())
    }

    fn daily(
        &self,
        inner: &mut Inner,
        rules: &[Rule],
        records: &[DeviceRecord],
        now: i64,
        ch: &mut Changes,
    ) -> store::Result<()> {
        use chrono::TimeZone;
        let today = self.tz.timestamp_millis_opt(now).unwrap().date_naive();
        if inner.last_daily == Some(today) {
            return Ok(());
        }
        let wanted: Vec<&Rule> = rules.iter().filter(|r| r.body.kind.daily()).collect();
        let needs_runs = rules.iter().any(|r| r.body.kind == Kind::ApplianceFinished);
        if wanted.is_empty() && !needs_runs {
            inner.last_daily = Some(today);
            return Ok(());
        }
        let report = self.insights(now)?;
        inner.last_daily = Some(today);
        for d in &report.devices {
            if let Some(r) = &d.runs {
                inner.learned.insert(d.id.to_string(), r.threshold_w);
            }
        }
        let yesterday = today.pred_opt().unwrap_or(today);
        for rule in wanted {
            if rule.body.kind == Kind::BudgetForecast {
                self.apply(inner, rule, None, eval::budget(&report), now, ch)?;
                continue;
            }
            for id in Self::covered(rule, records) {
                if let Some(i) = report.devices.iter().find(|d| d.id.as_str() == id) {
                    self.apply(
                        inner,
                        rule,
                        Some(&id),
                        eval::daily(rule, i, yesterday),
                        now,
                        ch,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// The household's insights now (for the daily kinds).
    fn insights(&self, now: i64) -> store::Result<crate::insights::Report> {
        let tariffs = crate::tariff::Versions::load(&self.store, &self.settings.tariff, self.tz)
            .map_err(|e| match e {
                crate::tariff::LoadError::Store(e) => e,
                e => store::Error::Invalid(e.to_string()),
            })?;
        let params = crate::insights::Params::in_force(&self.settings.insights, &self.store)?;
        crate::insights::compute::compute(
            &self.store,
            &tariffs,
            &params,
            now,
            self.tz,
            &mut Default::default(),
        )
    }

    /// Applies a condition to the alert of (rule, device).
    fn apply(
        &self,
        inner: &mut Inner,
        rule: &Rule,
        device: Option<&str>,
        cond: Cond,
        now: i64,
        ch: &mut Changes,
    ) -> store::Result<()> {
        let k = key(&rule.rule_id, device);
        let delay = match rule.body.kind {
            Kind::PowerAbove | Kind::PowerBelow => rule.body.for_ms(),
            _ => 0,
        };
        let (message, value, is_event) = match cond {
            Cond::Keep => return Ok(()),
            Cond::Clear => {
                inner.since.remove(&k);
                let quiet = self.quiet(rule, now);
                if let Some(mut a) = self.loaded(inner)?.remove(&k) {
                    a.state = State::Resolved;
                    a.resolved_ms = Some(now);
                    ch.events.push(event(EventType::AlertResolved, &a));
                    // Only an alert that was told is told resolved, and not in quiet hours or
                    // while snoozed (the alert list has it either way).
                    let snoozed = a.snoozed_until_ms.is_some_and(|t| now < t);
                    if a.notified_ms.is_some() && !quiet && !snoozed {
                        ch.notices.push(Notice::new("alert.resolved", &a, rule));
                    }
                    ch.alerts.push(a);
                }
                return Ok(());
            }
            Cond::Holds { message, value } => (message, value, false),
            Cond::Event { message, value } => (message, value, true),
        };
        // Seen holding again after longer than `for_minutes` without a reading (an outage):
        // the wait starts again.
        let seen = inner.since.entry(k.clone()).or_insert((now, now));
        if delay > 0 && now - seen.1 > delay {
            *seen = (now, now);
        }
        seen.1 = now;
        let since = seen.0;
        let open = self.loaded(inner)?;
        match open.get_mut(&k) {
            Some(a) => {
                // The message follows the condition in memory (and is stored with the next
                // change); an event is a change of its own.
                a.message = message;
                a.value = value;
                if is_event {
                    // Another run finished: a new event, told again whatever the cool-down.
                    a.raised_ms = now;
                    a.notified_ms = None;
                    a.state = State::Open;
                    a.acknowledged_ms = None;
                    ch.alerts.push(a.clone());
                }
            }
            None if now - since >= delay => {
                let a = Alert {
                    alert_id: format!("al_{}", crate::random::random_token::<12>()),
                    rule_id: rule.rule_id.clone(),
                    device_id: device.map(str::to_owned),
                    kind: rule.body.kind,
                    state: State::Open,
                    raised_ms: now,
                    resolved_ms: None,
                    acknowledged_ms: None,
                    notified_ms: None,
                    snoozed_until_ms: None,
                    message,
                    value,
                };
                ch.events.push(event(EventType::AlertRaised, &a));
                ch.alerts.push(a.clone());
                open.insert(k, a);
            }
            None => {}
        }
        Ok(())
    }

    /// Whether `rule`'s quiet hours hold at `now` (the daemon's zone).
    fn quiet(&self, rule: &Rule, now: i64) -> bool {
        use chrono::{TimeZone, Timelike};
        let local = self.tz.timestamp_millis_opt(now).unwrap();
        let minute = local.hour() * 60 + local.minute();
        rule.body
            .quiet_hours
            .as_ref()
            .is_some_and(|q| q.holds(minute))
    }

    /// Notices for open alerts never told (quiet hours or a snooze over) or due again after
    /// the cool-down.
    fn notify_due(
        &self,
        inner: &mut Inner,
        rules: &[Rule],
        now: i64,
        ch: &mut Changes,
    ) -> store::Result<()> {
        use chrono::{TimeZone, Timelike};
        let local = self.tz.timestamp_millis_opt(now).unwrap();
        let minute = local.hour() * 60 + local.minute();
        for a in self.loaded(inner)?.values_mut() {
            let Some(rule) = rules.iter().find(|r| r.rule_id == a.rule_id) else {
                continue;
            };
            let quiet = rule
                .body
                .quiet_hours
                .as_ref()
                .is_some_and(|q| q.holds(minute));
            let snoozed = a.snoozed_until_ms.is_some_and(|t| now < t);
            let due = match a.notified_ms {
                None => true,
                // Events are told once each; daily kinds once a day at most (their check).
                Some(t) => {
                    rule.body.kind != Kind::ApplianceFinished
                        && !rule.body.kind.daily()
                        && rule.body.kind != Kind::BudgetForecast
                        && now - t >= rule.body.cooldown_ms()
                }
            };
            if a.state != State::Open || quiet || snoozed || !due {
                continue;
            }
            a.notified_ms = Some(now);
            ch.notices.push(Notice::new("alert.raised", a, rule));
            match ch.alerts.iter_mut().find(|x| x.alert_id == a.alert_id) {
                Some(x) => *x = a.clone(),
                None => ch.alerts.push(a.clone()),
            }
        }
        Ok(())
    }

    /// Acknowledges alert `id` (by `by`); the alert after it, or None when unknown.
    pub fn acknowledge(&self, id: &str, by: Event) -> store::Result<Option<Alert>> {
        self.change(id, by, EventType::AlertAcknowledged, |a, now| {
            if a.state == State::Open {
                a.state = State::Acknowledged;
                a.acknowledged_ms = Some(now);
            }
        })
    }

    /// Snoozes alert `id` for `minutes`: no notices before then.
    pub fn snooze(&self, id: &str, minutes: u32, by: Event) -> store::Result<Option<Alert>> {
        self.change(id, by, EventType::AlertAcknowledged, |a, now| {
            a.snoozed_until_ms = Some(now + i64::from(minutes) * 60_000);
        })
    }

    fn change(
        &self,
        id: &str,
        mut by: Event,
        t: EventType,
        f: impl FnOnce(&mut Alert, i64),
    ) -> store::Result<Option<Alert>> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let open = self.loaded(&mut inner)?;
        let (mut a, was_open) = match open.values().find(|a| a.alert_id == id) {
            Some(a) => (a.clone(), true),
            None => match self.store.alert(id)? {
                Some(a) => (a, false),
                None => return Ok(None),
            },
        };
        f(&mut a, now);
        by.event_type = t;
        by.resource = Some(format!("alert:{id}"));
        by.details = serde_json::json!({"rule_id": a.rule_id, "device_id": a.device_id,
            "state": a.state, "snoozed_until": a.snoozed_until_ms.map(crate::clock::rfc3339)});
        self.store
            .alerts_put(&[&a], vec![Pending::new(&self.audit_key, by, now)])?;
        if was_open {
            open.insert(key(&a.rule_id, a.device_id.as_deref()), a.clone());
        }
        Ok(Some(a))
    }

    /// Resolves every open alert of rule `rule_id` and forgets its timers and runs (it was
    /// deleted or changed).
    pub fn forget_rule(&self, rule_id: &str) -> store::Result<()> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let open = self.loaded(&mut inner)?;
        let gone: Vec<String> = open
            .keys()
            .filter(|k| k.starts_with(&format!("{rule_id}|")))
            .cloned()
            .collect();
        let mut done = Vec::new();
        for k in gone {
            if let Some(mut a) = open.remove(&k) {
                a.state = State::Resolved;
                a.resolved_ms = Some(now);
                done.push(a);
            }
        }
        inner
            .since
            .retain(|k, _| !k.starts_with(&format!("{rule_id}|")));
        inner
            .trackers
            .retain(|k, _| !k.starts_with(&format!("{rule_id}|")));
        let refs: Vec<&Alert> = done.iter().collect();
        let audit = done
            .iter()
            .map(|a| Pending::new(&self.audit_key, event(EventType::AlertResolved, a), now))
            .collect();
        if !refs.is_empty() {
            self.store.alerts_put(&refs, audit)?;
        }
        Ok(())
    }

    /// Runs [`Self::cycle`] after every poll cycle until `stop`, sending its notices.
    pub async fn run(
        self: Arc<Self>,
        mut cycles: tokio::sync::watch::Receiver<u64>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                r = cycles.changed() => if r.is_err() { return },
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.cycle()).await {
                Ok(Ok(notices)) => {
                    for n in notices {
                        send::deliver(self.clone(), n);
                    }
                    self.evaluations
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "alerts: evaluation failed"),
                Err(e) => tracing::warn!(error = %e, "alerts: evaluation panicked"),
            }
        }
    }
}
