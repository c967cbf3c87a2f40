//! `/api/exports/schedule` and `/api/exports/schedules/...`: create, list, read, change,
//! delete and run scheduled exports. The creator owns a schedule (admins see all); changes
//! are audited as `SCHEDULE_CHANGED` in the same transaction as the change.

use super::AppState;
use super::devices::blocking;
use super::error::{ApiError, ApiJson};
use super::exports::{is_admin, type_permission};
use super::guard::CurrentUser;
use crate::audit::{EventType, Severity};
use crate::clock::rfc3339;
use crate::export::jobs::CreateError;
use crate::schedule::runner::RunError;
use crate::schedule::{CreateBody, Delivery, ScheduleRecord, UpdateBody};
use crate::store::audit::Pending;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};

fn not_found(id: &str) -> ApiError {
    ApiError::not_found_what(
        "SCHEDULE_NOT_FOUND",
        "Schedule not found",
        format!("Schedule with ID '{id}' does not exist or you don't have access"),
    )
}

/// What the `over_limit` flags are computed from: every schedule, and which owners are
/// admins (exempt from the caps).
struct Caps {
    all: Vec<ScheduleRecord>,
    admins: std::collections::HashSet<u32>,
}

async fn caps(st: &AppState) -> Result<Caps, ApiError> {
    let store = st.store.clone();
    let (all, users) =
        blocking(move || Ok::<_, crate::store::Error>((store.schedules()?, store.users()?)))
            .await??;
    let admins = users
        .iter()
        .filter(|u| u.role == crate::auth::Role::Admin)
        .map(|u| u.id)
        .collect();
    Ok(Caps { all, admins })
}

fn view(st: &AppState, s: &ScheduleRecord, caps: &Caps) -> Value {
    let over = crate::schedule::limits::over_limit(
        s,
        caps.admins.contains(&s.user_id),
        &caps.all,
        &st.work.scheduler.settings().schedules,
        st.clock.now_ms(),
    );
    json!({
        "over_limit": over.is_some(),
        "over_limit_reason": over,
        "schedule_id": s.id,
        "name": s.name,
        "schedule": s.schedule,
        "timezone": s.timezone,
        "enabled": s.enabled,
        "export_config": s.export_config,
        "delivery": s.delivery.public(),
        "user_id": s.user_id,
        "username": s.username,
        "created_at": rfc3339(s.created_ms),
        "updated_at": rfc3339(s.updated_ms),
        "next_run": st.work.scheduler.next_run(s).map(rfc3339),
        "last_run": s.last_run.as_ref().map(|r| json!({
            "at": rfc3339(r.at_ms), "status": r.status, "export_id": r.export_id,
            "error": r.error, "delivered": r.delivered, "trigger": r.trigger,
        })),
    })
}

/// Checks everything a schedule says, as the user `cu` saving it (`new_delivery`: the
/// request sets the delivery), with the caps of its owner (none for an admin's).
async fn validate(
    st: &AppState,
    cu: &CurrentUser,
    s: &ScheduleRecord,
    new_delivery: bool,
) -> Result<(), ApiError> {
    let (cron, tz) = crate::schedule::check_timing(&s.name, &s.schedule, &s.timezone)?;
    crate::schedule::check_fires(&cron, tz, st.clock.now_ms())?;
    if new_delivery
        && matches!(
            s.delivery,
            Delivery::Directory {
                require_mount: Some(false),
                ..
            }
        )
        && !cu.user.has(crate::auth::Permission::SystemConfig)
    {
        let mut ev = cu.event(EventType::PermissionDenied, Severity::Warning);
        ev.resource = Some(format!("schedule:{}", s.id));
        ev.details =
            json!({"reason": "require_mount: false", "required_permission": "SYSTEM_CONFIG"});
        st.audit(ev).await;
        return Err(
            ApiError::permission_denied(crate::auth::Permission::SystemConfig).with(
                "reason",
                "delivery.require_mount: false writes to an unmounted directory",
            ),
        );
    }
    if !owner_is_admin(st, cu, s.user_id).await?
        && let Some(why) = crate::schedule::limits::too_often(
            &cron,
            tz,
            st.clock.now_ms(),
            &st.work.scheduler.settings().schedules,
        )
    {
        return Err(ApiError::bad_request(
            "INVALID_SCHEDULE",
            format!("schedule: {why}"),
        ));
    }
    let req = crate::schedule::request_at(&s.export_config, st.clock.now_ms(), tz)?;
    type_permission(cu, &req.export_type)?;
    s.delivery.check(st.work.scheduler.settings(), &s.name)?;
    let ex = st.work.exporter.clone();
    blocking(move || ex.plan(&req, None))
        .await?
        .map_err(ApiError::from)?;
    Ok(())
}

/// Whether user `owner` is an admin (exempt from the caps).
async fn owner_is_admin(st: &AppState, cu: &CurrentUser, owner: u32) -> Result<bool, ApiError> {
    if owner == cu.user.id {
        return Ok(is_admin(cu));
    }
    let store = st.store.clone();
    let u = blocking(move || store.user(owner)).await??;
    Ok(u.is_some_and(|u| u.role == crate::auth::Role::Admin))
}

/// The schedule `id` if `cu` owns it (or is an admin).
async fn owned(st: &AppState, cu: &CurrentUser, id: &str) -> Result<ScheduleRecord, ApiError> {
    let store = st.store.clone();
    let key = id.to_owned();
    let s = blocking(move || store.schedule(&key))
        .await??
        .ok_or_else(|| not_found(id))?;
    if s.user_id != cu.user.id && !is_admin(cu) {
        let mut ev = cu.event(EventType::PermissionDenied, Severity::Warning);
        ev.resource = Some(format!("schedule:{id}"));
        ev.details =
            json!({"user_id": cu.user.id, "attempted_schedule": id, "schedule_owner": s.username});
        st.audit(ev).await;
        return Err(not_found(id));
    }
    Ok(s)
}

/// What a `SCHEDULE_CHANGED` entry records: the timing and where the data goes (never a
/// webhook's path or secret).
fn change_details(action: &str, s: &ScheduleRecord) -> Value {
    json!({"action": action, "schedule_id": s.id, "name": s.name, "schedule": s.schedule,
        "timezone": s.timezone, "enabled": s.enabled, "delivery": s.delivery.summary()})
}

/// Stores the new schedule `s` with its `SCHEDULE_CHANGED` entry, and wakes the scheduler.
async fn insert(st: &AppState, cu: &CurrentUser, s: &ScheduleRecord) -> Result<(), ApiError> {
    let mut ev = cu.event(EventType::ScheduleChanged, Severity::Info);
    ev.resource = Some(format!("schedule:{}", s.id));
    ev.details = change_details("created", s);
    let (store, key, rec, now) = (
        st.store.clone(),
        st.auth.audit_key.clone(),
        s.clone(),
        st.clock.now_ms(),
    );
    blocking(move || store.schedule_put(&rec, Some(Pending::new(&key, ev, now)))).await??;
    st.work.scheduler.changed();
    Ok(())
}

/// `POST /api/exports/schedule`.
pub async fn create(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let now = st.clock.now_ms();
    let s = ScheduleRecord {
        id: format!("sch_{}", crate::random::random_token::<12>()),
        user_id: cu.user.id,
        username: cu.user.username.clone(),
        name: body.name,
        schedule: body.schedule,
        timezone: body
            .timezone
            .unwrap_or_else(|| st.site.timezone.name().to_owned()),
        enabled: body.enabled.unwrap_or(true),
        export_config: body.export_config,
        delivery: body.delivery.unwrap_or(Delivery::None),
        created_ms: now,
        updated_ms: now,
        handled_ms: now,
        last_run: None,
        revision: 0,
    };
    validate(&st, &cu, &s, true).await?;
    let mut c = caps(&st).await?;
    if !is_admin(&cu) {
        let owned = c.all.iter().filter(|x| x.user_id == cu.user.id).count();
        if let Some(why) =
            crate::schedule::limits::too_many(owned, &st.work.scheduler.settings().schedules)
        {
            return Err(ApiError::bad_request("SCHEDULE_LIMIT_EXCEEDED", why));
        }
    }
    insert(&st, &cu, &s).await?;
    c.all.push(s.clone());
    Ok((StatusCode::CREATED, Json(view(&st, &s, &c))).into_response())
}

/// `GET /api/exports/schedules`: the caller's schedules (an admin's: everyone's).
pub async fn list(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
) -> Result<Json<Value>, ApiError> {
    let c = caps(&st).await?;
    let list: Vec<Value> = c
        .all
        .iter()
        .filter(|s| is_admin(&cu) || s.user_id == cu.user.id)
        .map(|s| view(&st, s, &c))
        .collect();
    Ok(Json(json!({"schedules": list, "total": list.len()})))
}

/// `GET /api/exports/schedules/{schedule_id}`.
pub async fn get(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    super::error::ApiPath(id): super::error::ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let s = owned(&st, &cu, &id).await?;
    Ok(Json(view(&st, &s, &caps(&st).await?)))
}

/// `s` with the fields of `body`: a changed expression or zone, or re-enabling, counts from
/// `now` (no catch-up of runs from before the change); a webhook given again without its
/// secret keeps the stored one when the URL is the same.
fn merged(mut s: ScheduleRecord, body: &UpdateBody, now: i64) -> ScheduleRecord {
    let retime = body.schedule.as_ref().is_some_and(|x| *x != s.schedule)
        || body.timezone.as_ref().is_some_and(|x| *x != s.timezone)
        || (body.enabled == Some(true) && !s.enabled);
    let b = body.clone();
    s.name = b.name.unwrap_or(s.name);
    s.schedule = b.schedule.unwrap_or(s.schedule);
    s.timezone = b.timezone.unwrap_or(s.timezone);
    s.enabled = b.enabled.unwrap_or(s.enabled);
    s.export_config = b.export_config.unwrap_or(s.export_config);
    if let Some(mut d) = b.delivery {
        if let (
            Delivery::Webhook { url, secret },
            Delivery::Webhook {
                url: old,
                secret: kept,
            },
        ) = (&mut d, &s.delivery)
            && secret.is_none()
            && url == old
        {
            secret.clone_from(kept);
        }
        s.delivery = d;
    }
    s.updated_ms = now;
    s.revision += 1;
    if retime {
        s.handled_ms = now;
    }
    s
}

/// `PUT /api/exports/schedules/{schedule_id}`: changes the fields given.
pub async fn update(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    super::error::ApiPath(id): super::error::ApiPath<String>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<Value>, ApiError> {
    let cur = owned(&st, &cu, &id).await?;
    let now = st.clock.now_ms();
    let seen = cur.revision;
    validate(&st, &cu, &merged(cur, &body, now), body.delivery.is_some()).await?;
    // Applied again to the record as it is now, in one transaction with the audit entry: a
    // run recorded meanwhile is kept, and a schedule deleted meanwhile stays deleted.
    let mut ev = cu.event(EventType::ScheduleChanged, Severity::Info);
    ev.resource = Some(format!("schedule:{id}"));
    let (store, key, sid) = (st.store.clone(), st.auth.audit_key.clone(), id.clone());
    let (saved, conflict) = blocking(move || {
        let mut conflict = false;
        let saved = store.schedule_update(
            &sid,
            // Only over the version that was validated; the runner's records do not count.
            |r| {
                conflict = r.revision != seen;
                if conflict {
                    return false;
                }
                *r = merged(r.clone(), &body, now);
                true
            },
            |r| {
                ev.details = change_details("updated", r);
                Some(Pending::new(&key, ev, now))
            },
        );
        saved.map(|x| (x, conflict))
    })
    .await??;
    if conflict {
        return Err(ApiError::conflict(
            "SCHEDULE_CHANGED",
            "Schedule changed",
            "The schedule was changed by another request meanwhile; read it again and retry",
        ));
    }
    let saved = saved.ok_or_else(|| not_found(&id))?;
    st.work.scheduler.changed();
    Ok(Json(view(&st, &saved, &caps(&st).await?)))
}

/// `DELETE /api/exports/schedules/{schedule_id}`: a run already going finishes.
pub async fn remove(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    super::error::ApiPath(id): super::error::ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let s = owned(&st, &cu, &id).await?;
    let mut ev = cu.event(EventType::ScheduleChanged, Severity::Info);
    ev.resource = Some(format!("schedule:{id}"));
    ev.details = json!({"action": "deleted", "schedule_id": id, "name": s.name});
    let (store, key, now, sid) = (
        st.store.clone(),
        st.auth.audit_key.clone(),
        st.clock.now_ms(),
        id.clone(),
    );
    blocking(move || store.schedule_delete(&sid, Some(Pending::new(&key, ev, now))))
        .await??
        .ok_or_else(|| not_found(&id))?;
    st.work.scheduler.changed();
    Ok(Json(json!({
        "message": "Schedule deleted successfully",
        "schedule_id": id,
        "deleted_at": rfc3339(now),
    })))
}

/// `POST /api/exports/schedules/{schedule_id}/run`: runs it now (202 with the export id;
/// delivery goes on in the background and lands in `last_run`).
pub async fn run_now(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    super::error::ApiPath(id): super::error::ApiPath<String>,
) -> Result<Response, ApiError> {
    let s = owned(&st, &cu, &id).await?;
    let now = st.clock.now_ms();
    let rec = match st.work.scheduler.start(s, "manual", now).await {
        Ok(rec) => rec,
        // A run started by hand counts against the rate limit like any create.
        Err(RunError::Create(CreateError::RateLimited {
            retry_at_ms,
            count,
            limit,
        })) => {
            let mut ev = cu.event(EventType::RateLimitExceeded, Severity::Warning);
            ev.resource = Some(format!("POST /api/exports/schedules/{id}/run"));
            ev.details = json!({"user_id": cu.user.id, "export_count": count, "limit": limit});
            st.audit(ev).await;
            return Ok(super::exports::rate_limited(&st, retry_at_ms, limit));
        }
        Err(e) => return Err(e.into()),
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "message": "Scheduled export started",
            "schedule_id": id,
            "export_id": rec.id,
            "status_url": format!("/api/exports/{}", rec.id),
        })),
    )
        .into_response())
}
