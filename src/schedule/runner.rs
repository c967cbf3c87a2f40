//! The scheduler: fires due schedules (cron in each schedule's zone, read through the
//! injectable clock), creates the export as the schedule's owner (scheduled runs do not count
//! against the rate limit), waits for it, delivers it with bounded retries and backoff,
//! records `last_run`, and audits each step. It also sends the retention notices of scheduled
//! exports through their schedule's e-mail or webhook.
//!
//! Timing rules (see [`due`]): each schedule remembers up to when its occurrences were handled.
//! Occurrences that passed while the daemon was down (or while the clock was wrong) collapse
//! into one run of the latest of them, if it is at most `[delivery] missed_run_grace` old; older
//! ones are skipped. A clock that jumps back by more than an hour restarts the count from
//! the new time, so a Pi that booted with a wrong date does not wait for it to come round again.
//! The wait for the next run is re-checked at least every minute, and at once when the clock
//! is set by hand (tests drive it with a manual clock).

use super::delivery::{self, Delivery, DeliveryError, Parcel, Vars};
use super::{Invalid, LastRun, RunStatus, ScheduleRecord};
use crate::audit::{Event, EventType, Severity};
use crate::auth::Permission;
use crate::auth::keys::SecretKey;
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::cron::Schedule;
use crate::export::jobs::{CreateError, Exporter, Origin};
use crate::export::{ExportRecord, Status};
use crate::store::{self, Store};
use chrono::TimeZone;
use chrono_tz::Tz;
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// What to do about one schedule at some moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The occurrence to run now, UTC ms.
    pub run: Option<i64>,
    /// Occurrences older than the grace period were skipped.
    pub skipped: bool,
    /// The next occurrence after now.
    pub next: Option<i64>,
    /// The new "handled up to" time.
    pub handled: i64,
}

/// Schedules due now (with their occurrence), and the earliest next occurrence.
type Tick = (Vec<(ScheduleRecord, i64)>, Option<i64>);

/// A clock step back larger than this restarts the count from the new time.
const CLOCK_BACK_MS: i64 = 3_600_000;
/// The longest wait between delivery attempts.
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(3600);

/// What a run cut short by a stop of the daemon records.
const STOPPED: &str = "interrupted by a stop of the daemon; the export, if made, is in the history but was not delivered";

/// A run later than this after its occurrence is reported as a catch-up (`missed`).
const LATE_MS: i64 = 60_000;

/// The timing rule: occurrences in `(base, now_ms]` collapse into one run of the latest if it
/// is within `grace_ms` (at least a minute, so a run is never lost to a late wake-up).
pub fn due(cron: &Schedule, tz: Tz, base: i64, now_ms: i64, grace_ms: i64) -> Due {
    match cron.next_after(base, tz) {
        Some(first) if first <= now_ms => {
            let from = base.max(now_ms.saturating_sub(grace_ms.max(LATE_MS)) - 1);
            let mut t = cron.next_after(from, tz);
            let mut latest = None;
            while let Some(x) = t.filter(|x| *x <= now_ms) {
                latest = Some(x);
                t = cron.next_after(x, tz);
            }
            Due {
                run: latest,
                skipped: latest.is_none_or(|l| l > first),
                next: t,
                handled: now_ms,
            }
        }
        next => Due {
            run: None,
            skipped: false,
            next,
            handled: base,
        },
    }
}

/// One schedule's step at `now`, with the clock guard: while the clock stands more than an hour
/// before the stored mark `stored` (it was stepped back), occurrences count from the moment
/// that was noticed, carried in memory as `back`, and the stored mark is never lowered. So a
/// clock stepped back (a Pi booted with an old time) neither waits until the old mark comes
/// round nor, once set right again, repeats the runs made before the step (or while it was
/// wrong). A restart while the clock is wrong counts again from the time of the restart.
/// Returns the decision, the mark to store, and the in-memory mark to keep.
pub fn step(
    cron: &Schedule,
    tz: Tz,
    stored: i64,
    back: Option<i64>,
    now: i64,
    grace_ms: i64,
) -> (Due, i64, Option<i64>) {
    if stored > now + CLOCK_BACK_MS {
        let d = due(cron, tz, back.unwrap_or(now).min(now), now, grace_ms);
        let handled = d.handled;
        return (d, stored, Some(handled));
    }
    let d = due(cron, tz, stored, now, grace_ms);
    (d.clone(), d.handled, None)
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The stored request no longer validates.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The export was refused (quota, disk, devices gone …).
    #[error(transparent)]
    Create(#[from] CreateError),
    /// The owner was deleted, disabled or lost a permission.
    #[error("the schedule's owner {0}")]
    Owner(String),
    /// A cap of `[schedules]` holds the run back.
    #[error("{0}")]
    Limit(String),
    /// The previous run is still going.
    #[error("the previous run of this schedule is still going")]
    Busy,
    /// Store failure.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The scheduler service; one per daemon.
#[derive(Debug)]
pub struct Scheduler {
    store: Store,
    exporter: Arc<Exporter>,
    clock: SharedClock,
    settings: Settings,
    audit_key: SecretKey,
    ticket_key: SecretKey,
    wake: tokio::sync::Notify,
    running: Mutex<HashSet<String>>,
    /// In-memory marks of schedules while the clock stands before their stored mark.
    back: Mutex<std::collections::HashMap<String, i64>>,
    /// Runs per owner in the rolling hour (`[schedules] max_runs_per_hour`).
    runs: crate::auth::rate::Rolling,
    stop: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

/// Removes a schedule from the running set when its run ends, however it ends.
struct Running(Arc<Scheduler>, String);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.lock().expect("running set").remove(&self.1);
    }
}

impl Scheduler {
    /// The service. `ticket_key` signs download links (the JWT key).
    pub fn new(
        store: Store,
        exporter: Arc<Exporter>,
        clock: SharedClock,
        settings: Settings,
        audit_key: SecretKey,
        ticket_key: SecretKey,
        stop: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            exporter,
            clock,
            settings,
            audit_key,
            ticket_key,
            wake: tokio::sync::Notify::new(),
            running: Mutex::default(),
            back: Mutex::default(),
            runs: Default::default(),
            stop,
            tasks: tokio_util::task::TaskTracker::new(),
        })
    }

    /// The configuration in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Re-reads the schedules now (after a change through the API).
    pub fn changed(&self) {
        self.wake.notify_one();
    }

    /// The next occurrence of `s` after now, if it is enabled and valid.
    pub fn next_run(&self, s: &ScheduleRecord) -> Option<i64> {
        if !s.enabled {
            return None;
        }
        let (cron, tz) = super::check_timing(&s.name, &s.schedule, &s.timezone).ok()?;
        let now = self.clock.now_ms();
        let back = self.back.lock().expect("marks").get(&s.id).copied();
        step(&cron, tz, s.handled_ms, back, now, self.grace_ms())
            .0
            .next
    }

    fn grace_ms(&self) -> i64 {
        i64::try_from(self.settings.delivery.missed_run_grace.0.as_millis()).unwrap_or(i64::MAX)
    }

    /// Runs until `stop`: fires due schedules, then sleeps until the next one (at most a
    /// minute, or until [`Self::changed`]); on stop waits for delivery tasks to end.
    pub async fn run(self: Arc<Self>) {
        let me = self.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || me.interrupted()).await {
            tracing::error!(error = %e, "scheduler: could not mark interrupted runs");
        }
        let mut steps = self.clock.steps();
        loop {
            let now = self.clock.now_ms();
            let me = self.clone();
            let next = match tokio::task::spawn_blocking(move || me.tick(now)).await {
                Ok(Ok((due, next))) => {
                    for (s, at) in due {
                        let trigger = if now - at > LATE_MS {
                            "missed"
                        } else {
                            "schedule"
                        };
                        // Failures are recorded in last_run and the audit log.
                        let _ = self.start(s, trigger, at).await;
                    }
                    next
                }
                other => {
                    tracing::error!(?other, "scheduler: reading the schedules failed");
                    None
                }
            };
            let wait = next.map_or(60_000, |n| (n - now).clamp(0, 60_000));
            let stepped = async {
                match &mut steps {
                    Some(rx) => {
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.stop.cancelled() => break,
                () = self.wake.notified() => {}
                () = stepped => {}
                () = tokio::time::sleep(std::time::Duration::from_millis(wait as u64)) => {}
            }
        }
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Runs still "running" when the daemon stopped end as failed, saying so.
    fn interrupted(&self) -> store::Result<()> {
        for s in self.store.schedules()? {
            if s.last_run
                .as_ref()
                .is_some_and(|r| r.status == RunStatus::Running)
            {
                self.store.schedule_update(
                    &s.id,
                    |r| match &mut r.last_run {
                        Some(l) if l.status == RunStatus::Running => {
                            l.status = RunStatus::Failed;
                            l.error = Some(STOPPED.into());
                            true
                        }
                        _ => false,
                    },
                    |_| None,
                )?;
            }
        }
        Ok(())
    }

    /// Marks what is due at `now` as handled; returns the schedules to run (with their
    /// occurrence) and the earliest next occurrence. A schedule the store fails on is left
    /// for the next tick; the others go on.
    fn tick(&self, now: i64) -> store::Result<Tick> {
        let (mut runs, mut next) = (Vec::new(), None::<i64>);
        for s in self.store.schedules()?.into_iter().filter(|s| s.enabled) {
            let Ok((cron, tz)) = super::check_timing(&s.name, &s.schedule, &s.timezone) else {
                continue;
            };
            let back = self.back.lock().expect("marks").get(&s.id).copied();
            let (d, stored, back) = step(&cron, tz, s.handled_ms, back, now, self.grace_ms());
            if stored != s.handled_ms {
                let seen = s.revision;
                let mut applied = false;
                let res = self.store.schedule_update(
                    &s.id,
                    |r| {
                        applied = r.revision == seen;
                        if applied {
                            r.handled_ms = stored;
                        }
                        applied
                    },
                    |_| None,
                );
                match res {
                    Ok(Some(_)) if applied => {}
                    // Changed through the API (or deleted) meanwhile: the next tick reads it.
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::error!(schedule = %s.id, error = %e, "scheduler: store failed");
                        continue;
                    }
                }
            }
            {
                let mut marks = self.back.lock().expect("marks");
                match back {
                    Some(b) => marks.insert(s.id.clone(), b),
                    None => marks.remove(&s.id),
                };
            }
            if d.skipped {
                tracing::warn!(schedule = %s.id, "runs missed longer ago than missed_run_grace were skipped");
            }
            if let Some(n) = d.next {
                next = Some(next.map_or(n, |m| m.min(n)));
            }
            if let Some(at) = d.run {
                runs.push((s, at));
            }
        }
        Ok((runs, next))
    }

    /// Starts a run of `s` (`trigger`: schedule, missed or manual): creates its export and
    /// returns it while rendering and delivery go on in the background.
    pub async fn start(
        self: &Arc<Self>,
        s: ScheduleRecord,
        trigger: &str,
        at: i64,
    ) -> Result<ExportRecord, RunError> {
        if !self
            .running
            .lock()
            .expect("running set")
            .insert(s.id.clone())
        {
            tracing::warn!(schedule = %s.id, "previous run still going; this one is skipped");
            return Err(RunError::Busy);
        }
        let guard = Running(self.clone(), s.id.clone());
        let now = self.clock.now_ms();
        let me = self.clone();
        let (s2, trig) = (s.clone(), trigger.to_owned());
        let created = tokio::task::spawn_blocking(move || me.create_export(&s2, at, &trig))
            .await
            .unwrap_or_else(|e| Err(RunError::Store(store::Error::Corrupt(e.to_string()))));
        let run = |status, export_id, error: Option<String>| LastRun {
            at_ms: now,
            status,
            export_id,
            error,
            delivered: None,
            trigger: trigger.to_owned(),
        };
        match created {
            Ok(rec) => {
                self.record(&s.id, run(RunStatus::Running, Some(rec.id.clone()), None))
                    .await;
                let me = self.clone();
                let (rec2, last) = (
                    rec.clone(),
                    run(RunStatus::Running, Some(rec.id.clone()), None),
                );
                self.tasks.spawn(async move {
                    me.finish(s, rec2, last, at).await;
                    drop(guard);
                });
                Ok(rec)
            }
            // A run by hand over the rate limit is the caller's answer (429), not a run.
            Err(e @ RunError::Create(CreateError::RateLimited { .. })) if trigger == "manual" => {
                Err(e)
            }
            Err(e) => {
                tracing::warn!(schedule = %s.id, error = %e, "scheduled export could not start");
                self.record(&s.id, run(RunStatus::Failed, None, Some(e.to_string())))
                    .await;
                let mut ev = Event::new(EventType::DeliveryFailed, Severity::Error);
                ev.user_id = Some(s.user_id);
                ev.username = Some(s.username.clone());
                ev.resource = Some(format!("schedule:{}", s.id));
                ev.details =
                    json!({"schedule_id": s.id, "stage": "export", "error": e.to_string()});
                self.audit(ev).await;
                Err(e)
            }
        }
    }

    /// Creates the export of the run for occurrence `at` (relative ranges resolve there) as
    /// the schedule's owner (blocking).
    fn create_export(
        &self,
        s: &ScheduleRecord,
        at: i64,
        trigger: &str,
    ) -> Result<ExportRecord, RunError> {
        let owner = self
            .store
            .user(s.user_id)?
            .filter(|u| !u.disabled)
            .ok_or_else(|| RunError::Owner("no longer exists or is disabled".into()))?;
        let tz: Tz = s
            .timezone
            .parse()
            .map_err(|_| Invalid::schedule(format!("unknown time zone {:?}", s.timezone)))?;
        let req = super::request_at(&s.export_config, at, tz)?;
        for p in std::iter::once(Permission::DataExport).chain(
            crate::export::ExportType::parse(&req.export_type)
                .and_then(crate::export::extra_permission),
        ) {
            if !owner.has(p) {
                return Err(RunError::Owner(format!("lacks {}", p.name())));
            }
        }
        let caps = &self.settings.schedules;
        let admin = owner.role == crate::auth::Role::Admin;
        if !admin {
            let hour = 3_600_000;
            let n = u32::try_from(caps.max_runs_per_hour).unwrap_or(u32::MAX);
            if let Err(l) = self.runs.hit(owner.id, self.clock.now_ms(), n, hour) {
                return Err(RunError::Limit(format!(
                    "skipped: the owner's schedules ran {n} times in the last hour \
                     ([schedules] max_runs_per_hour); the next run may start at {}",
                    crate::clock::rfc3339(l.retry_at_ms)
                )));
            }
        }
        let audit_body = json!({
            "export_type": req.export_type, "format": req.format, "devices": req.devices,
            "date_range": req.date_range, "schedule_id": s.id, "trigger": trigger,
        });
        let origin = Origin::Schedule {
            id: &s.id,
            manual: trigger == "manual",
            share: (!admin)
                .then(|| super::limits::quota_share(self.settings.exports.storage_quota_mb, caps)),
        };
        let (rec, _) = self
            .exporter
            .create(owner.id, &owner.username, req, origin)?;
        let mut ev = Event::new(EventType::DataExport, Severity::Info);
        ev.user_id = Some(owner.id);
        ev.username = Some(owner.username.clone());
        ev.resource = Some(format!("export:{}", rec.id));
        let mut details = audit_body;
        details["export_id"] = json!(rec.id);
        details["scheduled"] = json!(true);
        ev.details = details;
        self.store
            .audit_append(&self.audit_key, ev, self.clock.now_ms())?;
        Ok(rec)
    }

    /// Waits for the export, delivers it (retrying with backoff) and records the outcome.
    async fn finish(
        self: Arc<Self>,
        s: ScheduleRecord,
        rec: ExportRecord,
        mut last: LastRun,
        at: i64,
    ) {
        let job = self.exporter.spawn(rec.id.clone());
        tokio::select! {
            biased;
            _ = job => {}
            () = self.stop.cancelled() => {
                last.status = RunStatus::Failed;
                last.error = Some(STOPPED.into());
                self.record(&s.id, last).await;
                return;
            }
        }
        let store = self.store.clone();
        let id = rec.id.clone();
        let rec = match tokio::task::spawn_blocking(move || store.export(&id)).await {
            Ok(Ok(Some(r))) => r,
            _ => rec,
        };
        if rec.status != Status::Completed {
            last.status = RunStatus::Failed;
            last.error = Some(
                rec.error
                    .clone()
                    .unwrap_or_else(|| format!("the export ended {:?}", rec.status)),
            );
            self.record(&s.id, last).await;
            return;
        }
        let parcel = self.parcel(&s, rec, at).await;
        let cfg = &self.settings.delivery;
        let mut wait = cfg.retry_backoff.0;
        let mut attempt = 0;
        let outcome = loop {
            // The schedule as it is now: a changed target is used, a deleted one is not.
            let store = self.store.clone();
            let sid = s.id.clone();
            let target = match tokio::task::spawn_blocking(move || store.schedule(&sid)).await {
                Ok(Ok(Some(cur))) => cur.delivery,
                Ok(Ok(None)) => {
                    break Err(DeliveryError::Refused("the schedule was deleted".into()));
                }
                _ => s.delivery.clone(),
            };
            let attempt_done = tokio::select! {
                r = delivery::deliver(&target, &parcel, &self.settings) => r,
                () = self.stop.cancelled() => break Err(DeliveryError::Refused(STOPPED.into())),
            };
            match attempt_done {
                Ok(done) => break Ok(done),
                Err(e) if attempt >= cfg.retries || matches!(e, DeliveryError::Refused(_)) => {
                    break Err(e);
                }
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(schedule = %s.id, attempt, error = %e, "delivery failed; retrying");
                    tokio::select! {
                        () = self.stop.cancelled() => {
                            break Err(DeliveryError::Refused(format!("{STOPPED} (last error: {e})")));
                        }
                        () = tokio::time::sleep(wait) => {}
                    }
                    wait = wait.saturating_mul(2).min(MAX_BACKOFF);
                }
            }
        };
        let mut ev = match &outcome {
            Ok(done) => {
                last.status = RunStatus::Completed;
                last.delivered = Some(done.clone());
                let mut ev = Event::new(EventType::ExportDelivered, Severity::Info);
                ev.details = json!({"delivered": done});
                ev
            }
            Err(e) => {
                last.status = RunStatus::DeliveryFailed;
                last.error = Some(e.to_string());
                let mut ev = Event::new(EventType::DeliveryFailed, Severity::Error);
                ev.details =
                    json!({"stage": "delivery", "error": e.to_string(), "attempts": attempt + 1});
                ev
            }
        };
        ev.user_id = Some(s.user_id);
        ev.username = Some(s.username.clone());
        ev.resource = Some(format!("export:{}", parcel.export.id));
        ev.details["schedule_id"] = json!(s.id);
        ev.details["export_id"] = json!(parcel.export.id);
        ev.details["method"] = json!(method(&s.delivery));
        self.audit(ev).await;
        self.record(&s.id, last).await;
    }

    /// The parcel of a finished export: its file, template values, and a download link
    /// signed for the owner when `[http] public_url` is set.
    async fn parcel(&self, s: &ScheduleRecord, rec: ExportRecord, at: i64) -> Parcel {
        let now = self.clock.now_ms();
        let tz: Tz = s.timezone.parse().unwrap_or(Tz::UTC);
        let date = tz
            .timestamp_millis_opt(at)
            .single()
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        let link = match &self.settings.http.public_url {
            Some(base) => {
                let store = self.store.clone();
                let uid = rec.user_id;
                let owner = tokio::task::spawn_blocking(move || store.user(uid))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten();
                owner.map(|u| {
                    let ttl = i64::try_from(self.settings.delivery.link_ttl.0.as_secs())
                        .unwrap_or(i64::MAX / 2_000);
                    let h = crate::auth::ticket::Holder {
                        user_id: u.id,
                        token_version: u.token_version,
                        session: 0,
                    };
                    let (t, _) = crate::auth::ticket::issue(&self.ticket_key, &rec.id, h, now, ttl);
                    format!(
                        "{}/api/exports/download/{}?ticket={t}",
                        base.trim_end_matches('/'),
                        rec.id
                    )
                })
            }
            None => None,
        };
        Parcel {
            file: self.exporter.path_of(&rec),
            vars: Vars {
                name: s.name.clone(),
                date,
                export_type: rec.export_type.name().to_owned(),
                format: json!(rec.format).as_str().unwrap_or_default().to_owned(),
            },
            schedule_id: s.id.clone(),
            link,
            export: rec,
        }
    }

    /// Sends the retention notices of scheduled exports through their schedule's e-mail or
    /// webhook (one attempt each; failures are logged and audited).
    pub async fn notify_expiring(&self, recs: Vec<ExportRecord>) {
        for rec in recs {
            let Some(sid) = rec.schedule_id.clone() else {
                continue;
            };
            let store = self.store.clone();
            let key = sid.clone();
            let Ok(Ok(Some(s))) = tokio::task::spawn_blocking(move || store.schedule(&key)).await
            else {
                continue;
            };
            let now = self.clock.now_ms();
            let parcel = self.parcel(&s, rec, now).await;
            let notice = parcel.notice("export.expiring");
            // The admin's allow-lists as they are now.
            let allowed = s
                .delivery
                .check(&self.settings, &s.name)
                .map_err(|e| DeliveryError::Refused(e.message));
            let res = match (&s.delivery, allowed) {
                (_, Err(e)) => Err(e),
                (Delivery::Webhook { url, secret }, Ok(())) => {
                    delivery::webhook(url, secret.as_deref(), &notice, &self.settings)
                        .await
                        .map_err(DeliveryError::from)
                }
                (Delivery::Email { recipients, .. }, Ok(())) => {
                    self.notice_mail(recipients, &parcel).await
                }
                (Delivery::None | Delivery::Directory { .. }, Ok(())) => continue,
            };
            if let Err(e) = res {
                tracing::warn!(schedule = %sid, error = %e, "retention notice not delivered");
                let mut ev = Event::new(EventType::DeliveryFailed, Severity::Warning);
                ev.user_id = Some(s.user_id);
                ev.resource = Some(format!("export:{}", parcel.export.id));
                ev.details = json!({"schedule_id": sid, "stage": "retention_notice", "error": e.to_string()});
                self.audit(ev).await;
            }
        }
    }

    async fn notice_mail(
        &self,
        recipients: &[String],
        parcel: &Parcel,
    ) -> Result<String, DeliveryError> {
        let e = &parcel.export;
        let fail = |x: &dyn std::fmt::Display| DeliveryError::Email(x.to_string());
        let when = e.expires_ms.map(crate::clock::rfc3339).unwrap_or_default();
        let mut b = lettre::Message::builder()
            .from(self.settings.smtp.from.parse().map_err(|x| fail(&x))?)
            .subject(format!(
                "kasad export {} will be deleted on {when}",
                e.file_name.as_deref().unwrap_or(&e.id)
            ));
        for r in recipients {
            b = b.to(r.parse().map_err(|x| fail(&x))?);
        }
        let mut text = format!(
            "The export \"{}\" of the schedule \"{}\" will be deleted by retention on {when}.\n",
            e.file_name.as_deref().unwrap_or(&e.id),
            parcel.vars.name
        );
        if let Some(l) = &parcel.link {
            text.push_str(&format!("Download it before then: {l}\n"));
        }
        let msg = b.body(text).map_err(|x| fail(&x))?;
        delivery::send_mail(msg, &self.settings).await?;
        Ok("notice sent".into())
    }

    async fn record(&self, id: &str, last: LastRun) {
        let store = self.store.clone();
        let id = id.to_owned();
        let res = tokio::task::spawn_blocking(move || {
            store.schedule_update(
                &id,
                |r| {
                    r.last_run = Some(last);
                    true
                },
                |_| None,
            )
        })
        .await;
        if !matches!(res, Ok(Ok(_))) {
            tracing::error!("could not record a schedule's run");
        }
    }

    async fn audit(&self, ev: Event) {
        self.store
            .audit_logged(&self.audit_key, ev, self.clock.now_ms())
            .await;
    }
}

/// The method name of a delivery.
pub fn method(d: &Delivery) -> &'static str {
    match d {
        Delivery::None => "none",
        Delivery::Directory { .. } => "directory",
        Delivery::Email { .. } => "email",
        Delivery::Webhook { .. } => "webhook",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::clock::utc;

    const H: i64 = 3_600_000;

    /// [`due`] in UTC with times as RFC 3339.
    fn due_utc(c: &Schedule, base: &str, now: &str, grace_ms: i64) -> Due {
        due(c, Tz::UTC, utc(base), utc(now), grace_ms)
    }

    #[test]
    fn nothing_due_before_the_first_occurrence() {
        let c = Schedule::parse("0 9 * * *").unwrap();
        let d = due_utc(&c, "2026-11-25T08:00:00Z", "2026-11-25T08:30:00Z", 6 * H);
        assert_eq!(d.run, None);
        assert_eq!(d.next, Some(utc("2026-11-25T09:00:00Z")));
        assert_eq!(d.handled, utc("2026-11-25T08:00:00Z"));
    }

    #[test]
    fn an_occurrence_runs_once() {
        let c = Schedule::parse("0 9 * * *").unwrap();
        let now = utc("2026-11-25T09:00:00.200Z");
        let d = due(&c, Tz::UTC, utc("2026-11-25T08:59:00Z"), now, 6 * H);
        assert_eq!(d.run, Some(utc("2026-11-25T09:00:00Z")));
        assert!(!d.skipped);
        assert_eq!(d.next, Some(utc("2026-11-26T09:00:00Z")));
        // Handled: asking again a moment later runs nothing.
        let again = due(&c, Tz::UTC, d.handled, now + 500, 6 * H);
        assert_eq!(again.run, None);
    }

    #[test]
    fn missed_runs_collapse_into_one_within_grace() {
        let every_min = Schedule::parse("* * * * *").unwrap();
        // Down from 10:00 to 12:00: 120 missed occurrences → one run, of 12:00.
        let d = due_utc(
            &every_min,
            "2026-11-25T10:00:00Z",
            "2026-11-25T12:00:30Z",
            6 * H,
        );
        assert_eq!(d.run, Some(utc("2026-11-25T12:00:00Z")));
        assert!(d.skipped, "the older ones are skipped");
        // A daily run missed by 2 h with 6 h grace runs; by 8 h it does not.
        let daily = Schedule::parse("0 9 * * *").unwrap();
        let d = due_utc(
            &daily,
            "2026-11-25T08:00:00Z",
            "2026-11-25T11:00:00Z",
            6 * H,
        );
        assert_eq!(d.run, Some(utc("2026-11-25T09:00:00Z")));
        assert!(!d.skipped);
        let d = due_utc(
            &daily,
            "2026-11-25T08:00:00Z",
            "2026-11-25T17:00:00Z",
            6 * H,
        );
        assert_eq!(d.run, None);
        assert!(d.skipped);
        assert_eq!(d.next, Some(utc("2026-11-26T09:00:00Z")));
    }

    #[test]
    fn clock_jumps() {
        let daily = Schedule::parse("0 9 * * *").unwrap();
        // Forward (NTP sync after a boot at 1970): nothing of the past is run beyond grace.
        let (d, stored, back) = step(
            &daily,
            Tz::UTC,
            1_000,
            None,
            utc("2026-11-25T20:00:00Z"),
            6 * H,
        );
        assert_eq!(d.run, None);
        assert_eq!(d.next, Some(utc("2026-11-26T09:00:00Z")));
        assert_eq!((stored, back), (utc("2026-11-25T20:00:00Z"), None));
        // A small step back never repeats the run just made.
        let (d, ..) = step(
            &daily,
            Tz::UTC,
            utc("2026-11-25T09:00:01Z"),
            None,
            utc("2026-11-25T08:59:59Z"),
            6 * H,
        );
        assert_eq!(d.run, None);
        assert_eq!(d.next, Some(utc("2026-11-26T09:00:00Z")));
    }

    #[test]
    fn a_late_wake_up_within_a_minute_still_runs() {
        let c = Schedule::parse("0 9 * * *").unwrap();
        let d = due_utc(&c, "2026-11-25T08:00:00Z", "2026-11-25T09:00:30Z", 0);
        assert_eq!(d.run, Some(utc("2026-11-25T09:00:00Z")));
    }

    #[test]
    fn a_clock_stepped_back_and_set_right_again_repeats_nothing() {
        let daily = Schedule::parse("0 9 * * *").unwrap();
        let g = 6 * H;
        // 09:00 ran; the mark is 09:00:01 on the 25th.
        let mark = utc("2026-11-25T09:00:01Z");
        // The clock steps back a day (to 08:00 on the 24th): the next run is counted from
        // the new time, not from the mark, and the stored mark stays.
        let t1 = utc("2026-11-24T08:00:00Z");
        let (d, stored, back) = step(&daily, Tz::UTC, mark, None, t1, g);
        assert_eq!(d.next, Some(utc("2026-11-24T09:00:00Z")));
        assert_eq!((d.run, stored), (None, mark));
        // NTP sets it right at 10:00 on the 25th: 09:00 on the 25th already ran.
        let t2 = utc("2026-11-25T10:00:00Z");
        let (d, stored, back) = step(&daily, Tz::UTC, stored, back, t2, g);
        assert_eq!(d.run, None, "no second run of 09:00");
        assert_eq!((stored, back), (mark, None));
        assert_eq!(d.next, Some(utc("2026-11-26T09:00:00Z")));
        // While the clock stays back, its occurrences do run (the clock is all there is), and
        // once it is set right, the runs made before the step still do not repeat.
        let (_, stored, back) = step(&daily, Tz::UTC, mark, None, t1, g);
        let t3 = t1 + 61 * 60_000;
        let (d, stored, back) = step(&daily, Tz::UTC, stored, back, t3, g);
        assert_eq!(d.run, Some(utc("2026-11-24T09:00:00Z")));
        assert_eq!(
            (stored, back),
            (mark, Some(t3)),
            "the stored mark is never lowered"
        );
        let (d, stored, back) = step(&daily, Tz::UTC, stored, back, t2, g);
        assert_eq!(d.run, None, "09:00 on the 25th ran before the step");
        assert_eq!((stored, back), (mark, None));
    }

    #[test]
    fn dst_days_in_new_york_run_once() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let c = Schedule::parse("30 1 * * *").unwrap();
        // Fall-back 2026-11-01: 01:30 EDT (05:30Z) runs; 01:30 EST (06:30Z) does not.
        let d = due(
            &c,
            ny,
            utc("2026-11-01T05:00:00Z"),
            utc("2026-11-01T05:30:00Z"),
            6 * H,
        );
        assert_eq!(d.run, Some(utc("2026-11-01T05:30:00Z")));
        let d2 = due(&c, ny, d.handled, utc("2026-11-01T06:30:00Z"), 6 * H);
        assert_eq!(d2.run, None);
        assert_eq!(d2.next, Some(utc("2026-11-02T06:30:00Z")));
    }
}
