//! `/api/auth`: login, refresh (rotating), logout and the current user.

use super::AppState;
use super::error::{ApiError, ApiJson};
use super::guard::ClientAddr;
use super::guard::CurrentUser;
use crate::audit::{Event, EventType, Severity};
use crate::auth::{jwt, password, random_token};
use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Lifetime of an access token.
pub const ACCESS_TTL_S: i64 = 15 * 60;
/// Lifetime of a refresh token.
pub const REFRESH_TTL_MS: i64 = 30 * 86_400_000;

/// `POST /api/auth/login` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    username: String,
    password: String,
}

/// `POST /api/auth/refresh` and `/logout` body.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    refresh_token: String,
}

fn token_hash(t: &str) -> String {
    Sha256::digest(t.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn issue(st: &AppState, user: &crate::store::users::User) -> Result<Value, ApiError> {
    let now = st.clock.now_ms();
    let claims = jwt::Claims {
        sub: user.id,
        name: user.username.clone(),
        ver: user.token_version,
        jti: random_token::<16>(),
        iat: now / 1000,
        exp: now / 1000 + ACCESS_TTL_S,
        typ: "access".into(),
    };
    let access = jwt::sign(&claims, &st.auth.jwt_key);
    let refresh = random_token::<32>();
    let (store, h, uid) = (st.store.clone(), token_hash(&refresh), user.id);
    tokio::task::spawn_blocking(move || store.put_refresh(&h, uid, now + REFRESH_TTL_MS))
        .await
        .map_err(ApiError::internal)??;
    Ok(
        json!({"access_token": access, "refresh_token": refresh, "token_type": "bearer", "expires_in": ACCESS_TTL_S}),
    )
}

/// `POST /api/auth/login`.
pub async fn login(
    State(st): State<AppState>,
    ClientAddr(client): ClientAddr,
    ApiJson(body): ApiJson<Login>,
) -> Result<Json<Value>, ApiError> {
    let client = client.unwrap_or_default();
    let now = st.clock.now_ms();
    let mut ev = Event::new(EventType::LoginFailure, Severity::Warning);
    ev.username = Some(body.username.clone());
    ev.client = Some(client.clone());
    if let Some(until) = st.auth.throttle.blocked_until(&body.username, &client, now) {
        ev.event_type = EventType::RateLimitExceeded;
        ev.resource = Some("POST /api/auth/login".into());
        st.audit(ev).await;
        return Err(ApiError::rate_limited(
            "Too many failed logins. Please try again later.",
            "5 failed logins per 15 minutes",
            until,
        ));
    }
    let store = st.store.clone();
    let (name, pw) = (body.username.clone(), body.password);
    let user = tokio::task::spawn_blocking(move || {
        let u = store.user_by_name(&name)?;
        let ok = password::verify(&pw, u.as_ref().map(|u| u.password_hash.as_str()));
        Ok::<_, crate::store::Error>(u.filter(|u| ok && !u.disabled))
    })
    .await
    .map_err(ApiError::internal)??;
    let Some(user) = user else {
        st.auth.throttle.failed(&body.username, &client, now);
        st.audit(ev).await;
        return Err(ApiError::unauthorized("Invalid username or password"));
    };
    st.auth.throttle.succeeded(&body.username);
    let tokens = issue(&st, &user).await?;
    ev.event_type = EventType::LoginSuccess;
    ev.severity = Severity::Info;
    ev.user_id = Some(user.id);
    st.audit(ev).await;
    Ok(Json(tokens))
}

/// `POST /api/auth/refresh`: trades a refresh token for a new pair; the old one is spent.
pub async fn refresh(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Json<Value>, ApiError> {
    let store = st.store.clone();
    let h = token_hash(&body.refresh_token);
    let now = st.clock.now_ms();
    let user = tokio::task::spawn_blocking(move || {
        let Some((uid, exp)) = store.take_refresh(&h)? else {
            return Ok(None);
        };
        Ok::<_, crate::store::Error>(store.user(uid)?.filter(|u| exp > now && !u.disabled))
    })
    .await
    .map_err(ApiError::internal)??
    .ok_or_else(|| ApiError::unauthorized("Invalid or expired refresh token"))?;
    Ok(Json(issue(&st, &user).await?))
}

/// `POST /api/auth/logout`: revokes the access token and, if given, the refresh token.
pub async fn logout(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    body: Option<ApiJson<RefreshBody>>,
) -> Result<Json<Value>, ApiError> {
    let store = st.store.clone();
    let (jti, exp, now) = (
        cu.claims.jti.clone(),
        cu.claims.exp * 1000,
        st.clock.now_ms(),
    );
    let refresh = body.map(|ApiJson(b)| token_hash(&b.refresh_token));
    tokio::task::spawn_blocking(move || {
        store.revoke_access(&jti, exp, now)?;
        if let Some(h) = refresh {
            store.take_refresh(&h)?;
        }
        Ok::<_, crate::store::Error>(())
    })
    .await
    .map_err(ApiError::internal)??;
    st.audit(cu.event(EventType::Logout, Severity::Info)).await;
    Ok(Json(json!({"logged_out": true})))
}

/// `GET /api/auth/me`.
pub async fn me(Extension(cu): Extension<CurrentUser>) -> Json<Value> {
    let u = &cu.user;
    Json(json!({
        "user_id": u.id, "username": u.username, "role": u.role,
        "permissions": u.effective_permissions(),
    }))
}
