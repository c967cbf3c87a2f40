//! The export job service: creation (validation, quota, free disk, rolling rate limit),
//! the queue (at most `max_concurrent_exports` render at once, FIFO), rendering on blocking
//! threads, cancellation, restart recovery, and the retention cleanup.
//!
//! Files: `<data_dir>/exports/<id><suffix>`; renders go to `.<id>.tmp`, are fsynced, hashed and
//! renamed, so a download never sees a partial file; a crash leaves only temp files, which the
//! next start removes before re-running the interrupted jobs.

use super::kind::{self, Inputs, KindPlan};
use super::pipeline::{self as render, Control, Limits, RenderError};
use super::plan::{self, Plan, PlanCtx, Resolved, StoredJob};
use super::request::{CreateRequest, RequestError};
use super::{ExportRecord, Status};
use crate::audit::{Event, EventType};
use crate::auth::keys::SecretKey;
use crate::clock::{SharedClock, rfc3339};
use crate::config::Settings;
use crate::store::exports::Refusal;
use crate::store::{self, Store};
use crate::tariff::engine::Prices;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// One hour, the rate-limit window.
pub const RATE_WINDOW_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// Why a create is refused.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The body is invalid.
    #[error(transparent)]
    Invalid(#[from] RequestError),
    /// Too many creates in the rolling hour.
    #[error("export rate limit exceeded")]
    RateLimited {
        /// When a create is allowed again, UTC ms.
        retry_at_ms: i64,
        /// Creates in the window.
        count: u32,
        /// The limit.
        limit: u32,
    },
    /// Export files use the whole quota.
    #[error("export storage quota of {0} MB is used up; delete old exports first")]
    Quota(u64),
    /// The owner's export files use their share of the quota (scheduled runs).
    #[error(
        "the schedule owner's exports use their share of the export quota ({0} MB, [schedules] quota_share_percent); delete old exports first"
    )]
    UserQuota(u64),
    /// The disk is nearly full.
    #[error(
        "only {free} MB free on the data disk (at least {min} MB are kept free); free space first"
    )]
    DiskFull {
        /// Free MB.
        free: u64,
        /// Floor.
        min: u64,
    },
    /// Store failure.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A stored tariff version no longer compiles.
    #[error("stored tariff: {0}")]
    Tariff(#[from] crate::tariff::TariffError),
    /// The job record could not be written.
    #[error("export record: {0}")]
    Record(#[from] serde_json::Error),
}

impl From<CreateError> for RenderError {
    /// Planning again at render time: the store's and the tariffs' failures stay what they
    /// are; a body that no longer validates (its devices are gone) is an invalid request.
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::Store(e) => RenderError::Store(e),
            CreateError::Tariff(e) => RenderError::Tariff(e),
            CreateError::Record(e) => RenderError::Record(e),
            e => RenderError::Invalid(e.to_string()),
        }
    }
}

/// Who asks for an export: the API, or a schedule (a run on its schedule is not counted by
/// the rate limit; a "run now" is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    /// `POST /api/exports/create`.
    Api,
    /// A scheduled export.
    Schedule {
        /// Schedule id.
        id: &'a str,
        /// Started by hand (`POST …/run`).
        manual: bool,
        /// The owner's share of the export quota, bytes (`None`: an admin's schedule).
        share: Option<u64>,
    },
}

/// What the service needs from the configuration.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// Settings (exports, retention, tariff, timezone).
    pub settings: Settings,
    /// Default time zone.
    pub tz: chrono_tz::Tz,
    /// The running daemon, for system reports (None in tools and tests without a daemon).
    pub runtime: Option<super::kind::system_report::Runtime>,
}

/// The export service; one per daemon, shared by the API and the cleanup task.
#[derive(Debug)]
pub struct Exporter {
    store: Store,
    clock: SharedClock,
    dir: PathBuf,
    cfg: ExportConfig,
    privacy_key: SecretKey,
    audit_key: SecretKey,
    slots: Arc<Semaphore>,
    /// Previews' own slots (as many): a preview never queues behind running exports.
    preview_slots: Arc<Semaphore>,
    running: Mutex<HashMap<String, Arc<Control>>>,
    stopping: std::sync::atomic::AtomicBool,
    tasks: tokio_util::task::TaskTracker,
}

fn new_id() -> String {
    format!("exp_{}", crate::random::random_token::<18>())
}

/// Download file name: `kasad_device_data_20240101-20240131_<id tail>.csv`.
fn file_name(rec: &ExportRecord, plan: &Plan) -> String {
    use chrono::TimeZone;
    let day = |ms: i64| {
        plan.tz
            .timestamp_millis_opt(ms)
            .single()
            .map(|t| t.format("%Y%m%d").to_string())
            .unwrap_or_default()
    };
    let tail: String = rec
        .id
        .chars()
        .rev()
        .take(6)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!(
        "kasad_{}_{}-{}_{}{}",
        rec.export_type,
        day(plan.start_ms),
        day(plan.end_ms - 1),
        tail,
        rec.suffix()
    )
}

impl Exporter {
    /// The service. Creates the exports directory.
    pub fn new(
        store: Store,
        clock: SharedClock,
        data_dir: &Path,
        cfg: ExportConfig,
        privacy_key: SecretKey,
        audit_key: SecretKey,
    ) -> std::io::Result<Arc<Self>> {
        let dir = data_dir.join("exports");
        std::fs::create_dir_all(&dir)?;
        let slots = Arc::new(Semaphore::new(cfg.settings.exports.max_concurrent_exports));
        let preview_slots = Arc::new(Semaphore::new(cfg.settings.exports.max_concurrent_exports));
        Ok(Arc::new(Self {
            store,
            clock,
            dir,
            cfg,
            privacy_key,
            audit_key,
            slots,
            preview_slots,
            running: Mutex::default(),
            stopping: Default::default(),
            tasks: tokio_util::task::TaskTracker::new(),
        }))
    }

    /// The data directory (the exports directory's parent): where the statement key lives.
    pub fn data_dir(&self) -> &Path {
        self.dir.parent().unwrap_or(&self.dir)
    }

    /// The configuration in force.
    pub fn config(&self) -> &ExportConfig {
        &self.cfg
    }

    /// Path of a finished export's file.
    pub fn path_of(&self, rec: &ExportRecord) -> PathBuf {
        self.dir.join(rec.disk_name())
    }

    fn tmp_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!(".{id}.tmp"))
    }

    /// Validates a body against the current devices (blocking: reads the store).
    pub fn plan(
        &self,
        body: &CreateRequest,
        resolved: Option<&Resolved>,
    ) -> Result<Plan, CreateError> {
        let devices = self.store.device_records()?;
        let s = &self.cfg.settings;
        let tariffs = self.tariffs()?;
        let ctx = PlanCtx {
            devices: &devices,
            default_tz: self.cfg.tz,
            limits: &s.exports,
            tariffs: &tariffs,
            privacy_key: self.privacy_key.bytes(),
            now_ms: self.clock.now_ms(),
        };
        Ok(plan::plan(body, &ctx, resolved)?)
    }

    /// The price of a kWh per bucket over the plan's range.
    pub fn prices(&self, plan: &Plan) -> Result<Arc<Prices>, CreateError> {
        Ok(kind::device_data::prices(&self.store, plan)?)
    }

    /// A preview of a device_data body: its first `limit` rows, how many it holds, and the
    /// size of its CSV.
    pub fn preview(
        &self,
        body: &CreateRequest,
        limit: usize,
        limits: Limits,
        ctl: &Control,
    ) -> Result<super::pipeline::Preview, CreateError> {
        let plan = self.plan(body, None)?;
        let prices = self.prices(&plan)?;
        let KindPlan::DeviceData(data) = &plan.kind else {
            return Err(CreateError::Invalid(RequestError {
                code: "VALIDATION_ERROR",
                message: "previews show device_data; create the export to see other types".into(),
            }));
        };
        let run = kind::device_data::Run {
            plan: &plan,
            data,
            prices: &prices,
        };
        super::pipeline::preview(&self.store, run, limit, limits, ctl).map_err(|e| match e {
            RenderError::Store(s) => CreateError::Store(s),
            other => CreateError::Invalid(RequestError {
                code: "VALIDATION_ERROR",
                message: other.to_string(),
            }),
        })
    }

    /// The tariff versions (the configured tariff when none is stored yet).
    pub fn tariffs(&self) -> Result<crate::tariff::Versions, CreateError> {
        use crate::tariff::{LoadError, Versions};
        Versions::load(&self.store, &self.cfg.settings.tariff, self.cfg.tz).map_err(|e| match e {
            LoadError::Store(e) => CreateError::Store(e),
            LoadError::Tariff(e) => CreateError::Tariff(e),
        })
    }

    /// A preview slot (as many as export slots, apart from them); None once the daemon stops.
    pub async fn preview_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.preview_slots.clone().acquire_owned().await.ok()
    }

    /// Progress of a running job.
    pub fn progress(&self, id: &str) -> Option<u8> {
        let running = self.running.lock().expect("running map");
        running
            .get(id)
            .map(|c| c.progress.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Validates and stores a new job (blocking). The caller spawns it with [`Self::spawn`].
    pub fn create(
        &self,
        user_id: u32,
        username: &str,
        body: CreateRequest,
        origin: Origin<'_>,
    ) -> Result<(ExportRecord, bool), CreateError> {
        let plan = self.plan(&body, None)?;
        let export_type = plan.kind.export_type();
        let s = &self.cfg.settings;
        if let Some(free) = crate::store::free_bytes(&self.dir).map(|b| b >> 20)
            && free < s.exports.min_free_disk_mb
        {
            return Err(CreateError::DiskFull {
                free,
                min: s.exports.min_free_disk_mb,
            });
        }
        let now = self.clock.now_ms();
        let policy = s.retention.policy(export_type);
        // A rough guess: 10 s polls, 400 k rows/s on a Pi.
        let rows = (plan.end_ms - plan.start_ms) / 10_000 * plan.devices.len() as i64;
        let guess = match &plan.kind {
            KindPlan::DeviceData(d) if d.aggregation.is_none() => 1_000 + rows / 400,
            _ => 1_000,
        };
        let mut rec = ExportRecord {
            id: new_id(),
            user_id,
            username: username.to_owned(),
            export_type,
            format: plan.format,
            compression: plan.compression,
            status: Status::Queued,
            progress: 0,
            created_ms: now,
            started_ms: None,
            completed_ms: None,
            estimated_ms: Some(now + guess),
            request: serde_json::Value::Null,
            file_name: None,
            file_size: None,
            record_count: None,
            checksum_sha256: None,
            error: None,
            summary: None,
            retention_days: policy.retention_days,
            auto_delete: policy.auto_delete,
            compliance_hold: policy.compliance_hold,
            expires_ms: None,
            notice_sent: false,
            deleted_ms: None,
            scheduled: matches!(origin, Origin::Schedule { manual: false, .. }),
            schedule_id: match origin {
                Origin::Api => None,
                Origin::Schedule { id, .. } => Some(id.to_owned()),
            },
        };
        rec.file_name = Some(file_name(&rec, &plan));
        let stored = StoredJob::Planned {
            plan: Box::new(plan.stored()),
        };
        rec.request = serde_json::to_value(&stored)?;
        let limit = s.exports.rate_limit_per_hour;
        let quota = s.exports.storage_quota_mb.saturating_mul(1024 * 1024);
        let share = match origin {
            Origin::Schedule { share, .. } => share,
            Origin::Api => None,
        };
        match self
            .store
            .export_create(&rec, quota, limit, RATE_WINDOW_MS, share)?
        {
            Ok(()) => Ok((rec, plan.background)),
            Err(Refusal::Quota) => Err(CreateError::Quota(s.exports.storage_quota_mb)),
            Err(Refusal::UserQuota) => Err(CreateError::UserQuota(share.unwrap_or(0) >> 20)),
            Err(Refusal::RateLimited { retry_at_ms, count }) => Err(CreateError::RateLimited {
                retry_at_ms,
                count,
                limit,
            }),
        }
    }

    /// Runs job `id` when a slot is free (on a thread of its own at low CPU priority, so that
    /// polling and the API stay quick while exports render); the handle finishes with the job.
    pub fn spawn(self: &Arc<Self>, id: String) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        self.tasks.spawn(async move {
            let Ok(_permit) = me.slots.clone().acquire_owned().await else {
                return;
            };
            let job = me.clone();
            let key = id.clone();
            let res = in_background("kasad-export", EXPORT_NICE, move || job.run(&key)).await;
            if let Err(e) = res {
                // A bug, not the user's doing: record it so the job does not stay
                // "processing" (and run again at every start).
                tracing::error!(error = %e, export_id = %id, "export task panicked");
                me.running.lock().expect("running map").remove(&id);
                let _ = std::fs::remove_file(me.tmp_path(&id));
                let failed = me.finish(
                    &id,
                    Err("internal error while rendering; the cause has been logged".into()),
                    me.clock.now_ms(),
                );
                if let Err(e) = failed {
                    tracing::error!(error = %e, export_id = %id, "could not record the failure");
                }
            }
        })
    }

    /// Renders one job (blocking).
    fn run(&self, id: &str) {
        let now = self.clock.now_ms();
        let started = self.store.export_update(id, |r| {
            if r.status != Status::Queued || r.deleted_ms.is_some() {
                return false;
            }
            r.status = Status::Processing;
            r.started_ms = Some(now);
            true
        });
        let rec = match started {
            Ok(Some(r)) if r.status == Status::Processing => r,
            Ok(_) => return,
            Err(e) => {
                tracing::error!(error = %e, export_id = id, "could not start export");
                return;
            }
        };
        let ctl = Arc::new(Control::default());
        self.running
            .lock()
            .expect("running map")
            .insert(id.to_owned(), ctl.clone());
        let deleted = matches!(self.store.export(id), Ok(Some(r)) if r.deleted_ms.is_some());
        if deleted || self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            ctl.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let result = self.render(&rec, &ctl);
        self.running.lock().expect("running map").remove(id);
        let tmp = self.tmp_path(id);
        let done = self.clock.now_ms();
        let update = match result {
            Ok(out) => {
                let final_path = self.path_of(&rec);
                let moved = std::fs::rename(&tmp, &final_path)
                    .and_then(|()| std::fs::File::open(&self.dir)?.sync_all());
                if let Err(e) = moved {
                    let _ = std::fs::remove_file(&tmp);
                    let _ = std::fs::remove_file(&final_path);
                    self.finish(id, Err(format!("could not store the file: {e}")), done)
                } else {
                    let kept = self.finish(id, Ok(out), done);
                    match &kept {
                        Ok(Some(r)) if r.status == Status::Completed => self.issued(r, done),
                        _ => {
                            let _ = std::fs::remove_file(&final_path);
                        }
                    }
                    kept
                }
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                if matches!(e, RenderError::Cancelled) {
                    Ok(None)
                } else {
                    tracing::warn!(export_id = id, error = %e, "export failed");
                    self.finish(id, Err(e.to_string()), done)
                }
            }
        };
        if let Err(e) = update {
            tracing::error!(error = %e, export_id = id, "could not record the export result");
        }
    }

    fn render(&self, rec: &ExportRecord, ctl: &Control) -> Result<render::Rendered, RenderError> {
        let stored: StoredJob =
            serde_json::from_value(rec.request.clone()).map_err(RenderError::Record)?;
        let plan = match stored {
            StoredJob::Planned { plan } => {
                let tariffs = self.tariffs()?;
                Plan::restore(*plan, &tariffs, &self.cfg.settings.exports)
            }
            // A job created by a version that stored the body: planned as it was then.
            StoredJob::Requested(r) => self.plan(&r.body, Some(&r.resolved))?,
        };
        let inputs = self.inputs(&plan, rec, ctl)?;
        let s = &self.cfg.settings.exports;
        let limits = Limits {
            max_records: s.max_records_per_export,
            max_bytes: s.max_file_size_mb * 1024 * 1024,
            distinct_budget: s.distinct_budget,
        };
        let inner = rec
            .file_name
            .clone()
            .unwrap_or_default()
            .trim_end_matches(".zip")
            .to_owned()
            + if rec.compression == super::Compression::Zip {
                rec.format.info().extension
            } else {
                ""
            };
        let meta = kind::metadata(
            &plan,
            &rec.id,
            &rfc3339(rec.created_ms),
            Some(&rec.username),
        );
        render::render(
            &self.store,
            &plan,
            &inputs,
            &meta,
            &self.tmp_path(&rec.id),
            &inner,
            limits,
            ctl,
        )
    }

    /// Audits an issued statement with its file's hash (`STATEMENT_ISSUED`): whoever holds
    /// a copy can show it is the one issued.
    fn issued(&self, r: &ExportRecord, now: i64) {
        if r.export_type != super::ExportType::Statement {
            return;
        }
        let summary = r.summary.clone().unwrap_or_default();
        let ev = Event::about_export(
            EventType::StatementIssued,
            &r.id,
            json!({"sha256": r.checksum_sha256, "filename": r.file_name, "format": r.format,
                "fingerprint": summary["fingerprint"], "owner": r.username}),
        )
        .by(r.user_id, &r.username, None);
        if let Err(e) = self.store.audit_append(&self.audit_key, ev, now) {
            tracing::error!(error = %e, export_id = %r.id, "could not audit the issued statement");
        }
    }

    /// What the render of `plan` (asked by `rec`'s owner) reads besides it.
    fn inputs(
        &self,
        plan: &Plan,
        rec: &ExportRecord,
        ctl: &Control,
    ) -> Result<Inputs, RenderError> {
        let daemon = kind::Daemon {
            store: &self.store,
            settings: &self.cfg.settings,
            privacy_key: self.privacy_key.bytes(),
            audit_key: &self.audit_key,
            runtime: self.cfg.runtime.as_ref(),
            now_ms: self.clock.now_ms(),
            requester: rec.user_id,
            data_dir: self.data_dir(),
        };
        kind::inputs(plan, &daemon, ctl)
    }

    fn finish(
        &self,
        id: &str,
        result: Result<render::Rendered, String>,
        now: i64,
    ) -> store::Result<Option<ExportRecord>> {
        self.store.export_update(id, |r| {
            if r.status != Status::Processing || r.deleted_ms.is_some() {
                return false;
            }
            r.completed_ms = Some(now);
            match &result {
                Ok(out) => {
                    r.status = Status::Completed;
                    r.progress = 100;
                    r.file_size = Some(out.file_size);
                    r.record_count = Some(out.record_count);
                    r.checksum_sha256 = Some(out.sha256.clone());
                    r.summary = Some(out.summary.clone());
                    r.expires_ms = (r.auto_delete && !r.compliance_hold)
                        .then(|| now + i64::from(r.retention_days) * DAY_MS);
                }
                Err(msg) => {
                    r.status = Status::Failed;
                    r.error = Some(msg.clone());
                }
            }
            true
        })
    }

    /// Deletes (or cancels) an export: marks the tombstone, stops a running render, removes
    /// the file. Refused while a compliance hold applies.
    pub fn delete(&self, id: &str) -> store::Result<Option<ExportRecord>> {
        let now = self.clock.now_ms();
        let mut held = false;
        let rec = self.store.export_update(id, |r| {
            if r.deleted_ms.is_some() {
                return false;
            }
            if r.compliance_hold && r.status == Status::Completed {
                held = true;
                return false;
            }
            if matches!(r.status, Status::Queued | Status::Processing) {
                r.status = Status::Cancelled;
            }
            r.deleted_ms = Some(now);
            true
        })?;
        if held {
            return Err(store::Error::ComplianceHold);
        }
        if let Some(c) = self.running.lock().expect("running map").get(id) {
            c.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(r) = &rec {
            let _ = std::fs::remove_file(self.path_of(r));
        }
        Ok(rec)
    }

    /// Stops every running render (daemon shutdown); the jobs stay `processing` and run again
    /// at the next start.
    pub fn stop_all(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.running.lock().expect("running map").values() {
            c.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.slots.close();
        self.preview_slots.close();
    }

    /// Stops every render and waits (bounded) until no job task holds the store.
    pub async fn shutdown(&self, limit: std::time::Duration) {
        self.stop_all();
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("an export did not stop in time");
        }
    }

    /// After a start: removes temp files and re-queues jobs that were queued or running.
    pub fn recover(self: &Arc<Self>) -> store::Result<usize> {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let mut n = 0;
        for r in self.store.exports()? {
            if r.deleted_ms.is_none() && matches!(r.status, Status::Queued | Status::Processing) {
                self.store.export_update(&r.id, |x| {
                    x.status = Status::Queued;
                    x.progress = 0;
                    true
                })?;
                self.spawn(r.id);
                n += 1;
            }
        }
        Ok(n)
    }

    /// The retention sweep: deletes expired files (marking records `expired`) and writes the
    /// pre-deletion notice for exports expiring within `notification_before_deletion` hours.
    /// Returns the number expired and the exports noticed (scheduled ones also get the notice
    /// through their schedule's delivery).
    pub fn cleanup(&self) -> store::Result<(usize, Vec<ExportRecord>)> {
        let now = self.clock.now_ms();
        let notice_ms =
            i64::from(self.cfg.settings.retention.notification_before_deletion) * 3_600_000;
        let (mut expired, mut notified) = (0, Vec::new());
        for r in self.store.exports()? {
            if r.deleted_ms.is_some() || r.status != Status::Completed {
                continue;
            }
            let Some(exp) = r.expires_ms.filter(|_| r.auto_delete && !r.compliance_hold) else {
                continue;
            };
            if now >= exp {
                let _ = std::fs::remove_file(self.path_of(&r));
                self.store.export_update(&r.id, |x| {
                    x.status = Status::Expired;
                    true
                })?;
                let ev = Event::about_export(
                    EventType::DataDeleted,
                    &r.id,
                    json!({"filename": r.file_name, "reason": "retention",
                        "owner": r.username, "expired_at": rfc3339(exp)}),
                );
                self.store.audit_append(&self.audit_key, ev, now)?;
                expired += 1;
            } else if notice_ms > 0 && !r.notice_sent && exp - now <= notice_ms {
                self.store.export_update(&r.id, |x| {
                    x.notice_sent = true;
                    true
                })?;
                let ev = Event::about_export(
                    EventType::ExportExpiring,
                    &r.id,
                    json!({"filename": r.file_name, "owner": r.username,
                        "user_id": r.user_id, "expires_at": rfc3339(exp)}),
                );
                self.store.audit_append(&self.audit_key, ev, now)?;
                notified.push(r);
            }
        }
        Ok((expired, notified))
    }
}

/// How far an export's render thread gives way: exports are bulk work and yield to polling,
/// API requests and previews.
const EXPORT_NICE: i32 = 10;

/// How far a preview's thread gives way: a preview reads every row of its request, so it
/// yields to the small API requests (status, history, readings, health) and to polling, but
/// not to running exports.
pub const PREVIEW_NICE: i32 = 5;

/// Runs `f` on a new thread named `name` at nice `nice` (threads it starts inherit that). An
/// error means `f` panicked.
pub async fn in_background<T: Send + 'static>(
    name: &str,
    nice: i32,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, &'static str> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // Linux: per thread. A failure only leaves the default priority.
            let tid = rustix::thread::gettid();
            let _ = rustix::process::setpriority_process(Some(tid), nice);
            let _ = tx.send(f());
        });
    if spawned.is_err() {
        return Err("no thread for the work");
    }
    rx.await.map_err(|_| "the work's thread panicked")
}
