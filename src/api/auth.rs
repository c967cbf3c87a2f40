//! `/api/auth`: login, refresh (rotating, with reuse detection), logout and the current user.
//!
//! A login reserves its place in the throttle before its password is checked and waits for an
//! Argon2 turn (see `auth::throttle` and `auth::gate`); bad input from a client without a
//! token counts against its address and is audited once per address and window.

use super::AppState;
use super::error::{ApiError, ApiJson};
use super::guard::ClientAddr;
use super::guard::CurrentUser;
use crate::audit::{Event, EventType, Severity};
use crate::auth::throttle::Refusal;
use crate::auth::{jwt, password};
use crate::random::random_token;
use crate::store::users::Rotation;
use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Lifetime of an access token.
pub const ACCESS_TTL_S: i64 = 15 * 60;
/// Lifetime of a refresh token.
pub const REFRESH_TTL_MS: i64 = 30 * 86_400_000;
/// Longest username a login or a new user may give, in characters.
pub const MAX_USERNAME: usize = 64;
/// Longest password, in bytes.
pub const MAX_PASSWORD: usize = 1024;

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

/// Checks the lengths every password-taking route shares (login, user creation, setup).
pub fn check_credentials(username: &str, password: &str) -> Result<(), ApiError> {
    if username.is_empty() || username.chars().count() > MAX_USERNAME {
        return Err(ApiError::validation(format!(
            "username: 1-{MAX_USERNAME} characters"
        )));
    }
    if password.len() > MAX_PASSWORD {
        return Err(ApiError::validation(format!(
            "password: at most {MAX_PASSWORD} bytes"
        )));
    }
    Ok(())
}

fn token_hash(t: &str) -> String {
    Sha256::digest(t.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn access_token(st: &AppState, user: &crate::store::users::User, family: u64) -> Value {
    let now = st.clock.now_ms();
    let claims = jwt::Claims {
        sub: user.id,
        name: user.username.clone(),
        ver: user.token_version,
        jti: random_token::<16>(),
        iat: now / 1000,
        exp: now / 1000 + ACCESS_TTL_S,
        typ: "access".into(),
        fam: family,
    };
    json!({"access_token": jwt::sign(&claims, &st.auth.jwt_key), "token_type": "bearer",
        "expires_in": ACCESS_TTL_S})
}

/// A request without a token refused for bad input: counted against the client's address
/// and audited once per address and window.
pub(super) async fn bad_input(st: &AppState, client: &str, route: &str, e: ApiError) -> ApiError {
    let now = st.clock.now_ms();
    if let Some(r) = st.auth.throttle.address_refused(client, now) {
        let mut ev = Event::new(EventType::RateLimitExceeded, Severity::Warning);
        ev.client = Some(client.to_owned());
        ev.resource = Some(route.to_owned());
        return refused(st, ev, r).await;
    }
    if st.auth.throttle.bad_input(client, now) {
        let mut ev = Event::new(EventType::LoginFailure, Severity::Warning);
        ev.client = Some(client.to_owned());
        ev.resource = Some(route.to_owned());
        ev.details = json!({"reason": "bad input", "message": e.message(),
            "note": "further bad input from this address in this window is counted, not logged one by one"});
        st.audit(ev).await;
    }
    e
}

/// The 429 of a throttled login, audited when it is the first of its key's window.
pub(super) async fn refused(st: &AppState, mut ev: Event, r: Refusal) -> ApiError {
    if r.audit {
        ev.event_type = EventType::RateLimitExceeded;
        ev.details = json!({"rule": r.rule, "retry_after": crate::clock::rfc3339(r.retry_at_ms),
            "note": "further refusals in this window are counted and logged when it ends"});
        st.audit(ev).await;
    }
    let limit = match r.rule {
        "address" => "5 failed logins per address per 15 minutes",
        _ => "5 failed logins per username per 15 minutes, then a delay of 2 s doubling up to 30 s",
    };
    ApiError::rate_limited(
        "Too many failed logins. Please try again later.",
        limit,
        r.retry_at_ms,
        st.clock.now_ms(),
    )
}

/// `POST /api/auth/login`.
pub async fn login(
    State(st): State<AppState>,
    ClientAddr(client): ClientAddr,
    body: Result<ApiJson<Login>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let client = client.unwrap_or_default();
    const ROUTE: &str = "POST /api/auth/login";
    let body =
        match body.and_then(|ApiJson(b)| check_credentials(&b.username, &b.password).map(|()| b)) {
            Ok(b) => b,
            Err(e) => return Err(bad_input(&st, &client, ROUTE, e).await),
        };
    let now = st.clock.now_ms();
    let mut ev = Event::new(EventType::LoginFailure, Severity::Warning);
    ev.username = Some(body.username.clone());
    ev.client = Some(client.clone());
    ev.resource = Some(ROUTE.into());
    let reservation = match st.auth.throttle.reserve(&body.username, &client, now) {
        Ok(r) => r,
        Err(r) => return Err(refused(&st, ev, r).await),
    };
    let store = st.store.clone();
    let (name, pw) = (body.username.clone(), body.password);
    // Dropped unsettled (the queue was full, or the store failed): released, not counted.
    let user = st
        .auth
        .gate
        .run(move || {
            let u = store.user_by_name(&name)?;
            let ok = password::verify(&pw, u.as_ref().map(|u| u.password_hash.as_str()));
            Ok::<_, crate::store::Error>(u.filter(|u| ok && !u.disabled))
        })
        .await
        .map_err(|busy| ApiError::busy(busy.to_string(), 2))??;
    let now = st.clock.now_ms();
    let Some(user) = user else {
        reservation.failed(now);
        ev.resource = None;
        st.audit(ev).await;
        return Err(ApiError::unauthorized("Invalid username or password"));
    };
    reservation.succeeded();
    let refresh = random_token::<32>();
    let (store, h, uid) = (st.store.clone(), token_hash(&refresh), user.id);
    let family =
        tokio::task::spawn_blocking(move || store.session_start(&h, uid, now + REFRESH_TTL_MS))
            .await
            .map_err(ApiError::internal)??;
    let mut tokens = access_token(&st, &user, family);
    tokens["refresh_token"] = json!(refresh);
    ev.event_type = EventType::LoginSuccess;
    ev.severity = Severity::Info;
    ev.user_id = Some(user.id);
    ev.resource = None;
    st.audit(ev).await;
    Ok(Json(tokens))
}

/// `POST /api/auth/refresh`: trades a refresh token for a new pair; the old one is spent. A
/// token traded before and presented again revokes its whole session (a copy of it is in
/// someone else's hands) and is audited.
pub async fn refresh(
    State(st): State<AppState>,
    ClientAddr(client): ClientAddr,
    body: Result<ApiJson<RefreshBody>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let client = client.unwrap_or_default();
    const ROUTE: &str = "POST /api/auth/refresh";
    let invalid = || ApiError::unauthorized("Invalid or expired refresh token");
    let body = match body {
        Ok(ApiJson(b)) if b.refresh_token.len() <= 256 => b,
        Ok(_) => {
            let e = ApiError::validation("refresh_token: at most 256 characters");
            return Err(bad_input(&st, &client, ROUTE, e).await);
        }
        Err(e) => return Err(bad_input(&st, &client, ROUTE, e).await),
    };
    if let Some(r) = st.auth.throttle.address_refused(&client, st.clock.now_ms()) {
        let mut ev = Event::new(EventType::RateLimitExceeded, Severity::Warning);
        ev.client = Some(client);
        ev.resource = Some(ROUTE.into());
        return Err(refused(&st, ev, r).await);
    }
    let old = token_hash(&body.refresh_token);
    let store = st.store.clone();
    let h = old.clone();
    // A read first: a random token costs no write transaction.
    let found = tokio::task::spawn_blocking(move || store.refresh_lookup(&h))
        .await
        .map_err(ApiError::internal)??;
    if found.is_none() {
        // Counted against the address, not audited one by one: a refusal of the address
        // (after the allowance) is.
        st.auth.throttle.failed_secret(&client, st.clock.now_ms());
        return Err(invalid());
    }
    let now = st.clock.now_ms();
    let new = random_token::<32>();
    let (store, h, nh) = (st.store.clone(), old, token_hash(&new));
    let outcome = tokio::task::spawn_blocking(move || {
        store.refresh_rotate(&h, &nh, now, now + REFRESH_TTL_MS)
    })
    .await
    .map_err(ApiError::internal)??;
    let (user_id, family) = match outcome {
        Rotation::Rotated { user_id, family } => (user_id, family),
        Rotation::Reused { user_id, family } => {
            let mut ev = Event::new(EventType::RefreshTokenReused, Severity::Critical);
            ev.user_id = Some(user_id);
            ev.client = Some(client);
            ev.resource = Some(ROUTE.into());
            ev.details = json!({"session": format!("{family:016x}"),
                "action": "the session was revoked: a refresh token was used twice"});
            st.audit(ev).await;
            return Err(invalid());
        }
        Rotation::Invalid => return Err(invalid()),
    };
    let store = st.store.clone();
    let user = tokio::task::spawn_blocking(move || store.user(user_id))
        .await
        .map_err(ApiError::internal)??
        .filter(|u| !u.disabled)
        .ok_or_else(invalid)?;
    let mut tokens = access_token(&st, &user, family);
    tokens["refresh_token"] = json!(new);
    Ok(Json(tokens))
}

/// `POST /api/auth/logout`: revokes the access token and ends its session (its refresh
/// tokens and the download tickets issued in it); a refresh token in the body is spent too.
pub async fn logout(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
    body: Option<ApiJson<RefreshBody>>,
) -> Result<Json<Value>, ApiError> {
    let store = st.store.clone();
    let (jti, exp, now, family, uid) = (
        cu.claims.jti.clone(),
        cu.claims.exp * 1000,
        st.clock.now_ms(),
        cu.claims.fam,
        cu.user.id,
    );
    let refresh = body.map(|ApiJson(b)| token_hash(&b.refresh_token));
    tokio::task::spawn_blocking(move || {
        store.revoke_access(&jti, exp, now)?;
        store.session_end(family)?;
        if let Some(h) = refresh {
            // Only the caller's own token; a session of its own goes with it.
            match store.refresh_lookup(&h)? {
                Some(r) if r.user_id == uid && r.family != 0 => store.session_end(r.family)?,
                Some(r) if r.user_id == uid => store.refresh_remove(&h)?,
                _ => {}
            }
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

/// Every minute: audits the refusal counts of throttle windows that ended (one entry per key
/// and window; the window's first refusal was audited when it happened) and forgets idle keys.
pub async fn audit_sweep(
    throttle: std::sync::Arc<crate::auth::throttle::Throttle>,
    store: crate::store::Store,
    key: crate::auth::keys::SecretKey,
    clock: crate::clock::SharedClock,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
        }
        let now = clock.now_ms();
        for s in throttle.drain_summaries(now) {
            let t = if s.bad_input {
                EventType::LoginFailure
            } else {
                EventType::RateLimitExceeded
            };
            let mut ev = Event::new(t, Severity::Warning);
            ev.resource = Some("POST /api/auth".into());
            ev.details = json!({"summary": s.what, "count": s.refused,
                "window_start": crate::clock::rfc3339(s.window_start_ms)});
            store.audit_logged(&key, ev, now).await;
        }
    }
}
