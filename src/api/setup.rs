//! `/api/setup`: the first administrator, made from the login page with the one-time setup
//! code while no user exists (`GET` says whether it is needed, `POST` makes the admin). Wrong
//! codes are throttled like wrong passwords and audited; the code goes once it is used.

use super::AppState;
use super::auth::{bad_input, check_credentials};
use super::error::{ApiError, ApiJson};
use super::guard::ClientAddr;
use crate::audit::{Event, EventType, Severity};
use crate::auth::{Role, password};
use crate::store::audit::Pending;
use crate::store::users::User;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// `POST /api/setup` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupBody {
    setup_code: String,
    username: String,
    password: String,
}

/// `GET /api/setup`: `{"required": bool}`.
pub async fn status(State(st): State<AppState>) -> Json<Value> {
    Json(json!({"required": st.auth.setup.required()}))
}

fn done() -> ApiError {
    ApiError::conflict("CONFLICT", "Conflict", "kasad is set up already: log in")
}

/// `POST /api/setup`: creates the first administrator.
pub async fn create(
    State(st): State<AppState>,
    ClientAddr(client): ClientAddr,
    body: Result<ApiJson<SetupBody>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    const ROUTE: &str = "POST /api/setup";
    let client = client.unwrap_or_default();
    if !st.auth.setup.required() {
        return Err(done());
    }
    let checked = body.and_then(|ApiJson(b)| {
        check_credentials(&b.username, &b.password)?;
        if !crate::auth::valid_username(&b.username) {
            return Err(ApiError::validation(
                "username: 1-64 characters of letters, digits, '.', '_', '-', '@'",
            ));
        }
        if b.setup_code.len() > 64 {
            return Err(ApiError::validation("setup_code: at most 64 characters"));
        }
        Ok(b)
    });
    let b = match checked {
        Ok(b) => b,
        Err(e) => return Err(bad_input(&st, &client, ROUTE, e).await),
    };
    let now = st.clock.now_ms();
    let mut ev = Event::new(EventType::LoginFailure, Severity::Warning);
    ev.client = Some(client.clone());
    ev.resource = Some(ROUTE.into());
    ev.username = Some(b.username.clone());
    // Wrong codes count like wrong passwords: per address, and for the one "setup" key.
    let reservation = match st.auth.throttle.reserve("\u{0}setup", &client, now) {
        Ok(r) => r,
        Err(r) => return Err(super::auth::refused(&st, ev, r).await),
    };
    if !st.auth.setup.check(&b.setup_code) {
        reservation.failed(now);
        ev.details = json!({"reason": "wrong setup code"});
        st.audit(ev).await;
        return Err(ApiError::unauthorized("Wrong setup code"));
    }
    let pw = b.password;
    let hash = st
        .auth
        .gate
        .run(move || password::hash(&pw))
        .await
        .map_err(|busy| ApiError::busy(busy.to_string(), 2))?
        .map_err(|e| ApiError::validation(format!("password: {e}")))?;
    let user = User {
        id: 0,
        username: b.username.clone(),
        password_hash: hash,
        role: Role::Admin,
        permissions: vec![],
        disabled: false,
        created_ms: now,
        updated_ms: now,
        token_version: 0,
    };
    let mut created = Event::new(EventType::UserCreated, Severity::Info);
    created.username = Some("setup".into());
    created.client = Some(client);
    created.resource = Some(format!("user:{}", b.username));
    created.details = json!({"role": "admin", "via": "first-run setup code"});
    let (store, key) = (st.store.clone(), st.auth.audit_key.clone());
    let res = tokio::task::spawn_blocking(move || {
        store.create_first_user(user, Some(Pending::new(&key, created, now)))
    })
    .await
    .map_err(ApiError::internal)?;
    let u = match res {
        Ok(u) => u,
        Err(crate::store::Error::Conflict(_)) => {
            st.auth.setup.used();
            return Err(done());
        }
        Err(e) => return Err(e.into()),
    };
    reservation.succeeded();
    st.auth.setup.used();
    tracing::info!(username = %u.username, "the first administrator was created with the setup code");
    Ok((
        StatusCode::CREATED,
        Json(json!({"user_id": u.id, "username": u.username, "role": u.role})),
    ))
}
