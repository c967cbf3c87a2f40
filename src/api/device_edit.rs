//! Managing devices (SYSTEM_CONFIG): labels (`PATCH /api/devices/{id}`: name, room, rated
//! power, notes, load kind and run threshold for the insights), forgetting (`DELETE …`, `?purge=true` with its readings) and restoring
//! (`POST …/restore`). Every change is audited with the old and new values in the same
//! transaction. A device a static `[[devices]]` entry names cannot be forgotten (409).

use super::AppState;
use super::devices::blocking;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::guard::CurrentUser;
use crate::audit::{EventType, Severity};
use crate::domain::labels::LoadKind;
use crate::domain::{DeviceId, DeviceLabels};
use crate::store::DeviceRecord;
use crate::store::audit::Pending;
use axum::extract::State;
use axum::{Extension, Json};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

/// A key given (even as `null`) is `Some`: `Some(None)` clears, a missing key leaves as is.
fn given<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `PATCH /api/devices/{device_id}` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsPatch {
    #[serde(default, deserialize_with = "given")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    room: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    rated_power_w: Option<Option<f64>>,
    #[serde(default, deserialize_with = "given")]
    notes: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    load_kind: Option<Option<LoadKind>>,
    #[serde(default, deserialize_with = "given")]
    run_threshold_w: Option<Option<f64>>,
}

impl LabelsPatch {
    fn apply(self, l: &mut DeviceLabels) {
        if let Some(v) = self.name {
            l.name = v;
        }
        if let Some(v) = self.room {
            l.room = v;
        }
        if let Some(v) = self.rated_power_w {
            l.rated_power_w = v;
        }
        if let Some(v) = self.notes {
            l.notes = v;
        }
        if let Some(v) = self.load_kind {
            // `auto` (or null) goes back to learning the kind.
            l.load_kind = v.filter(|k| *k != LoadKind::Auto);
        }
        if let Some(v) = self.run_threshold_w {
            l.run_threshold_w = v;
        }
    }
}

fn parse_id(id: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(id).map_err(|_| ApiError::device_not_found(id))
}

fn labels_json(r: &DeviceRecord) -> Value {
    json!({"name": r.labels.name, "room": r.labels.room,
        "rated_power_w": r.labels.rated_power_w, "notes": r.labels.notes,
        "load_kind": r.labels.load_kind.unwrap_or(LoadKind::Auto),
        "run_threshold_w": r.labels.run_threshold_w, "device_alias": r.info.name})
}

/// The row `/api/devices` shows for device `id` now.
async fn row_of(st: &AppState, id: &DeviceId) -> Result<Value, ApiError> {
    super::devices::device_rows(st)
        .await?
        .into_iter()
        .find(|r| r["device_id"] == id.as_str())
        .ok_or_else(|| ApiError::device_not_found(id.as_str()))
}

/// `PATCH /api/devices/{device_id}`.
pub async fn update(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<LabelsPatch>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let (store, key, now, did) = (
        st.store.clone(),
        st.auth.audit_key.clone(),
        st.clock.now_ms(),
        id.clone(),
    );
    let mut ev = cu.event(EventType::DeviceUpdated, Severity::Info);
    ev.resource = Some(format!("device:{id}"));
    blocking(move || {
        store.device_relabel(
            &did,
            |l| {
                patch.apply(l);
                l.check()
                    .map_err(|e| crate::store::Error::Invalid(e.to_string()))
            },
            |before, after| {
                ev.details = json!({"device_id": after.info.device_id,
                    "old": labels_json(before), "new": labels_json(after)});
                Some(Pending::new(&key, ev, now))
            },
        )
    })
    .await??;
    st.work.insights.invalidate();
    Ok(Json(row_of(&st, &id).await?))
}

/// `?purge=` of the delete.
#[derive(Debug, Deserialize)]
pub struct ForgetQuery {
    #[serde(default)]
    purge: bool,
}

/// Whether a static `[[devices]]` entry names device record `r` (or its strip).
fn is_static(st: &AppState, r: &DeviceRecord, all: &[DeviceRecord]) -> bool {
    let host = match &r.info.parent_id {
        Some(p) => all
            .iter()
            .find(|d| &d.info.device_id == p)
            .map_or(r.info.address.as_str(), |d| d.info.address.as_str()),
        None => r.info.address.as_str(),
    };
    let Ok(addr) = host.parse::<std::net::SocketAddr>() else {
        return false;
    };
    st.devices.static_hosts.contains(&addr)
}

/// `DELETE /api/devices/{device_id}[?purge=true]`: forgets the device (a strip with its
/// outlets); with `purge`, its readings and rollups go too (those still on their way to the
/// database included).
pub async fn forget(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ForgetQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let store = st.store.clone();
    let all = blocking(move || store.device_records()).await??;
    let rec = all
        .iter()
        .find(|d| d.info.device_id == id)
        .ok_or_else(|| ApiError::device_not_found(id.as_str()))?;
    if is_static(&st, rec, &all) {
        return Err(ApiError::conflict(
            "CONFLICT",
            "Conflict",
            "a static [[devices]] entry of the configuration names this device: remove it from the config first",
        ));
    }
    let (store, key, now, did) = (
        st.store.clone(),
        st.auth.audit_key.clone(),
        st.clock.now_ms(),
        id.clone(),
    );
    let mut ev = cu.event(EventType::DeviceDeleted, Severity::Warning);
    ev.resource = Some(format!("device:{id}"));
    let purge = q.purge;
    let gone = blocking(move || {
        store.device_forget(&did, now, purge, |recs| {
            ev.details = json!({"purged": purge, "devices": recs.iter().map(|r| json!({
                "device_id": r.info.device_id, "device_name": r.name(),
                "old": labels_json(r)})).collect::<Vec<_>>()});
            Some(Pending::new(&key, ev, now))
        })
    })
    .await??;
    let infos: Vec<_> = gone.iter().map(|r| r.info.clone()).collect();
    st.devices.registry.ignore(&infos);
    if purge {
        // Readings already handed to the writer are dropped as they arrive; a checkpoint
        // empties the staging log, so none can come back from it after a crash.
        if let Err(e) = st.devices.flusher.flush().await {
            tracing::warn!(error = %e, "no checkpoint after a purge");
        }
    }
    Ok(Json(json!({
        "deleted": true,
        "device_id": id,
        "forgotten": gone.iter().map(|r| r.info.device_id.as_str()).collect::<Vec<_>>(),
        "purged": purge,
    })))
}

/// `POST /api/devices/{device_id}/restore`: a forgotten device comes back with the history it
/// kept.
pub async fn restore(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let (store, key, now, did) = (
        st.store.clone(),
        st.auth.audit_key.clone(),
        st.clock.now_ms(),
        id.clone(),
    );
    let mut ev = cu.event(EventType::DeviceRestored, Severity::Info);
    ev.resource = Some(format!("device:{id}"));
    let back = blocking(move || {
        store.device_restore(&did, |recs| {
            ev.details = json!({"devices": recs.iter().map(|r| json!({
                "device_id": r.info.device_id, "device_name": r.name()})).collect::<Vec<_>>()});
            Some(Pending::new(&key, ev, now))
        })
    })
    .await??;
    let infos: Vec<_> = back.iter().map(|r| r.info.clone()).collect();
    st.devices
        .registry
        .unignore(&infos, tokio::time::Instant::now());
    Ok(Json(row_of(&st, &id).await?))
}
