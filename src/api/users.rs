//! `/api/users`: user management (USER_MANAGE), every change audited in the same transaction.

use super::AppState;
use super::error::{ApiError, ApiJson};
use super::guard::CurrentUser;
use crate::audit::{EventType, Severity};
use crate::auth::{Holder, Permission, Role, check_change, password};
use crate::store::audit::Pending;
use crate::store::users::User;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

fn view(u: &User) -> Value {
    json!({
        "user_id": u.id, "username": u.username, "role": u.role,
        "permissions": u.permissions, "effective_permissions": u.effective_permissions(),
        "disabled": u.disabled, "created_at": crate::clock::rfc3339(u.created_ms),
        "updated_at": crate::clock::rfc3339(u.updated_ms),
    })
}

async fn hash(st: &AppState, pw: String) -> Result<String, ApiError> {
    st.auth
        .gate
        .run(move || password::hash(&pw))
        .await
        .map_err(|busy| ApiError::busy(busy.to_string(), 2))?
        .map_err(|e| ApiError::validation(format!("password: {e}")))
}

fn holder(u: &User) -> Holder<'_> {
    Holder {
        id: u.id,
        role: u.role,
        extra: &u.permissions,
    }
}

/// Audits a change the privilege rules refused and answers 403 with the reason.
async fn denied(st: &AppState, cu: &CurrentUser, target: String, e: ApiError) -> ApiError {
    if e.status() == StatusCode::FORBIDDEN {
        let mut ev = cu.event(EventType::PermissionDenied, Severity::Warning);
        ev.resource = Some(target);
        ev.details = json!({"reason": e.message()});
        st.audit(ev).await;
    }
    e
}

/// `GET /api/users`.
pub async fn list(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = st.store.clone();
    let users = tokio::task::spawn_blocking(move || store.users())
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(
        json!({"users": users.iter().map(view).collect::<Vec<_>>()}),
    ))
}

/// `POST /api/users` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    username: String,
    password: String,
    role: Role,
    #[serde(default)]
    permissions: Vec<Permission>,
}

/// `POST /api/users`.
pub async fn create(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiJson(b): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    super::auth::check_credentials(&b.username, &b.password)?;
    if !crate::auth::valid_username(&b.username) {
        return Err(ApiError::validation(
            "username: 1-64 characters of letters, digits, '.', '_', '-', '@'",
        ));
    }
    let new = Holder {
        id: 0,
        role: b.role,
        extra: &b.permissions,
    };
    if let Err(why) = check_change(holder(&cu.user), None, Some(new)) {
        let e = ApiError::forbidden(why.to_string());
        return Err(denied(&st, &cu, format!("user:{}", b.username), e).await);
    }
    let now = st.clock.now_ms();
    let u = User {
        id: 0,
        username: b.username,
        password_hash: hash(&st, b.password).await?,
        role: b.role,
        permissions: b.permissions,
        disabled: false,
        created_ms: now,
        updated_ms: now,
        token_version: 0,
    };
    let mut ev = cu.event(EventType::UserCreated, Severity::Info);
    ev.resource = Some(format!("user:{}", u.username));
    ev.details = json!({"role": u.role, "permissions": u.permissions});
    let (store, s2) = (st.store.clone(), st.clone());
    let created = tokio::task::spawn_blocking(move || {
        store.create_user(u, Some(Pending::new(&s2.auth.audit_key, ev, now)))
    })
    .await
    .map_err(ApiError::internal)??;
    Ok((StatusCode::CREATED, Json(view(&created))))
}

/// `PATCH /api/users/{user_id}` body: any subset.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    role: Option<Role>,
    permissions: Option<Vec<Permission>>,
    disabled: Option<bool>,
    password: Option<String>,
}

/// `PATCH /api/users/{user_id}`.
pub async fn update(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    super::error::ApiPath(id): super::error::ApiPath<u32>,
    ApiJson(p): ApiJson<Patch>,
) -> Result<Json<Value>, ApiError> {
    if p.password
        .as_ref()
        .is_some_and(|pw| pw.len() > super::auth::MAX_PASSWORD)
    {
        return Err(ApiError::validation("password: at most 1024 bytes"));
    }
    let new_hash = match p.password {
        Some(pw) => Some(hash(&st, pw).await?),
        None => None,
    };
    let now = st.clock.now_ms();
    let mut ev = cu.event(EventType::UserUpdated, Severity::Info);
    ev.resource = Some(format!("user:{id}"));
    ev.details = json!({"role": p.role, "permissions": p.permissions, "disabled": p.disabled,
        "password_changed": new_hash.is_some()});
    let (store, s2, actor) = (st.store.clone(), st.clone(), cu.user.clone());
    let res = tokio::task::spawn_blocking(move || {
        store.update_user(
            id,
            now,
            |u| {
                let before = u.clone();
                if let Some(r) = p.role {
                    u.role = r;
                }
                if let Some(ps) = p.permissions {
                    u.permissions = ps;
                }
                if let Some(d) = p.disabled {
                    u.disabled = d;
                }
                if let Some(h) = new_hash {
                    u.password_hash = h;
                }
                check_change(holder(&actor), Some(holder(&before)), Some(holder(u)))
                    .map_err(|e| crate::store::Error::Refused(e.to_string()))
            },
            Some(Pending::new(&s2.auth.audit_key, ev, now)),
        )
    })
    .await
    .map_err(ApiError::internal)?;
    match res {
        Ok(u) => Ok(Json(view(&u))),
        Err(e) => Err(denied(&st, &cu, format!("user:{id}"), e.into()).await),
    }
}

/// `DELETE /api/users/{user_id}`.
pub async fn remove(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    super::error::ApiPath(id): super::error::ApiPath<u32>,
) -> Result<Json<Value>, ApiError> {
    if id == cu.user.id {
        return Err(ApiError::validation(
            "user_id: you cannot delete your own account",
        ));
    }
    let now = st.clock.now_ms();
    let mut ev = cu.event(EventType::UserDeleted, Severity::Warning);
    ev.resource = Some(format!("user:{id}"));
    let (store, s2, actor) = (st.store.clone(), st.clone(), cu.user.clone());
    let res = tokio::task::spawn_blocking(move || {
        store.delete_user(
            id,
            |u| {
                check_change(holder(&actor), Some(holder(u)), None)
                    .map_err(|e| crate::store::Error::Refused(e.to_string()))
            },
            Some(Pending::new(&s2.auth.audit_key, ev, now)),
        )
    })
    .await
    .map_err(ApiError::internal)?;
    let u = match res {
        Ok(u) => u,
        Err(e) => return Err(denied(&st, &cu, format!("user:{id}"), e.into()).await),
    };
    Ok(Json(
        json!({"deleted": true, "user_id": u.id, "username": u.username}),
    ))
}
