//! The access check every protected route runs: a valid access token for an enabled user whose
//! token version matches, not revoked, holding the route's permission. Denials are audited.

use super::AppState;
use super::error::ApiError;
use crate::audit::{Event, EventType, Severity};
use crate::auth::{Permission, jwt};
use crate::store::users::User;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, login, refresh, pages).
    Open,
    /// Any signed-in user.
    Authenticated,
    /// A signed-in user holding this permission.
    Requires(Permission),
}

/// The signed-in user of a request (an extension set by the guard).
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// The account.
    pub user: User,
    /// The verified token.
    pub claims: jwt::Claims,
    /// Client address.
    pub client: Option<String>,
}

impl CurrentUser {
    /// An audit event with this user as actor.
    pub fn event(&self, t: EventType, s: Severity) -> Event {
        let mut e = Event::new(t, s);
        e.user_id = Some(self.user.id);
        e.username = Some(self.user.username.clone());
        e.client = self.client.clone();
        e
    }
}

/// The client's IP address.
pub fn client_of(req: &Request) -> Option<String> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn authenticate(
    st: &AppState,
    token: Option<String>,
    client: Option<String>,
) -> Result<CurrentUser, ApiError> {
    let token = token.ok_or_else(|| ApiError::unauthorized("A bearer token is required"))?;
    let now = st.clock.now_ms();
    let claims = jwt::verify(&token, &st.auth.jwt_key, now / 1000)
        .map_err(|e| ApiError::unauthorized(format!("Invalid token: {e}")))?;
    let store = st.store.clone();
    let (sub, jti) = (claims.sub, claims.jti.clone());
    let (user, revoked) = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::store::Error>((store.user(sub)?, store.is_revoked(&jti)?))
    })
    .await
    .map_err(ApiError::internal)??;
    let user = user
        .filter(|u| !u.disabled && u.token_version == claims.ver && !revoked)
        .ok_or_else(|| ApiError::unauthorized("Invalid token: no longer valid"))?;
    Ok(CurrentUser {
        user,
        claims,
        client,
    })
}

/// Middleware: enforces `access` and puts the [`CurrentUser`] into the request.
pub async fn guard(
    State((st, access)): State<(AppState, Access)>,
    mut req: Request,
    next: Next,
) -> Response {
    if access == Access::Open {
        return next.run(req).await;
    }
    let token = bearer(req.headers()).map(str::to_owned);
    let resource = format!("{} {}", req.method(), req.uri().path());
    let cu = match authenticate(&st, token, client_of(&req)).await {
        Ok(cu) => cu,
        Err(e) => return e.into_response(),
    };
    if let Access::Requires(p) = access
        && !cu.user.has(p)
    {
        let mut ev = cu.event(EventType::PermissionDenied, Severity::Warning);
        ev.resource = Some(resource);
        ev.details = serde_json::json!({"required_permission": p.name()});
        st.audit(ev).await;
        return ApiError::permission_denied(p).into_response();
    }
    req.extensions_mut().insert(cu);
    next.run(req).await
}
