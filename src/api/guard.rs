//! The access check every protected route runs: a valid access token for an enabled user whose
//! token version matches, not revoked, holding the route's permission. Denials are audited.

use super::AppState;
use super::error::ApiError;
use crate::audit::{Event, EventType, Severity};
use crate::auth::{Permission, jwt, ticket};
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
    /// Like `Requires`, or a download ticket (`?ticket=`) bound to the last path segment and a
    /// user who still holds the permission (browser links, e-mailed links).
    Ticket(Permission),
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
        self.did(Event::new(t, s))
    }

    /// `e`, done by this user from this client.
    pub fn did(&self, e: Event) -> Event {
        e.by(self.user.id, &self.user.username, self.client.clone())
    }
}

/// The client's IP address: the peer's, or — when the peer is one of `[http]
/// trusted_proxies` — the one it forwarded for (set by [`real_client`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientAddr(pub Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientAddr>()
            .cloned()
            .unwrap_or_else(|| {
                ClientAddr(
                    parts
                        .extensions
                        .get::<ConnectInfo<SocketAddr>>()
                        .map(|c| c.0.ip().to_string()),
                )
            }))
    }
}

/// The client's IP address (see [`ClientAddr`]).
pub fn client_of(req: &Request) -> Option<String> {
    match req.extensions().get::<ClientAddr>() {
        Some(c) => c.0.clone(),
        None => req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string()),
    }
}

/// Who the client is behind `peer`: the peer itself unless it is a trusted proxy; otherwise,
/// walking `X-Forwarded-For` from the nearest hop back, the first address that is not a
/// trusted proxy (a client cannot forge hops a trusted proxy added after its own). A hop that
/// is not an address (`unknown`, garbage) ends the walk at the proxy that passed it on, and
/// when every hop is a trusted proxy the peer is the answer: hops further left are the
/// client's own words.
pub fn client_ip(
    peer: std::net::IpAddr,
    headers: &HeaderMap,
    trusted: &[crate::config::Net],
) -> std::net::IpAddr {
    let is_trusted = |ip: std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut last_proxy = peer;
    for hop in hops.into_iter().rev() {
        let Some(ip) = hop_ip(hop) else {
            return last_proxy;
        };
        if !is_trusted(ip) {
            return ip;
        }
        last_proxy = ip;
    }
    peer
}

/// An `X-Forwarded-For` entry as an address: `1.2.3.4`, `1.2.3.4:80`, `::1` or `[::1]:80`.
fn hop_ip(hop: &str) -> Option<std::net::IpAddr> {
    hop.parse()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// Middleware: records the [`ClientAddr`] of every request.
pub async fn real_client(
    State(site): State<std::sync::Arc<super::SiteState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let trusted = &site.trusted_proxies;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(peer) = peer {
        let ip = client_ip(peer, req.headers(), trusted);
        req.extensions_mut()
            .insert(ClientAddr(Some(ip.to_string())));
    }
    next.run(req).await
}

pub(super) fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub(super) async fn authenticate(
    st: &AppState,
    token: Option<String>,
    client: Option<String>,
) -> Result<CurrentUser, ApiError> {
    let token = token.ok_or_else(|| ApiError::unauthorized("A bearer token is required"))?;
    let now = st.clock.now_ms();
    let claims = jwt::verify(&token, &st.auth.jwt_key, now / 1000)
        .map_err(|e| ApiError::unauthorized(format!("Invalid token: {e}")))?;
    // Two point reads, microseconds from redb's cache: done here rather than handed to the
    // blocking pool, which would cost more than the reads on every request.
    let (user, revoked, open) = (
        st.store.user(claims.sub)?,
        st.store.is_revoked(&claims.jti)?,
        st.store.session_open(claims.fam, now)?,
    );
    let user = user
        .filter(|u| !u.disabled && u.token_version == claims.ver && !revoked && open)
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
    let ticket = match (&token, access) {
        (None, Access::Ticket(_)) => ticket_param(req.uri().query()),
        _ => None,
    };
    let authed = match ticket {
        Some(t) => by_ticket(&st, &t, req.uri().path(), client_of(&req)).await,
        None => authenticate(&st, token, client_of(&req)).await,
    };
    let cu = match authed {
        Ok(cu) => cu,
        Err(e) => return e.into_response(),
    };
    if let Access::Requires(p) | Access::Ticket(p) = access
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

fn ticket_param(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("ticket="))
        .map(str::to_owned)
}

/// A ticket for `resource` (an export id) and the signed-in user, valid for a page link's
/// lifetime and only while the user's session lasts.
pub fn issue_ticket(st: &AppState, resource: &str, cu: &CurrentUser, now_ms: i64) -> (String, i64) {
    let h = ticket::Holder {
        user_id: cu.user.id,
        token_version: cu.user.token_version,
        session: cu.claims.fam,
    };
    ticket::issue(&st.auth.jwt_key, resource, h, now_ms, ticket::TTL_S)
}

async fn by_ticket(
    st: &AppState,
    ticket: &str,
    path: &str,
    client: Option<String>,
) -> Result<CurrentUser, ApiError> {
    let invalid = || ApiError::unauthorized("Invalid or expired download ticket");
    let claimed = ticket::parse(ticket).ok_or_else(invalid)?;
    let now = st.clock.now_ms();
    let (uid, family, exp_s) = (claimed.user_id, claimed.session, claimed.exp_s);
    if now / 1000 >= exp_s {
        return Err(invalid());
    }
    let store = st.store.clone();
    let (user, open) = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::store::Error>((store.user(uid)?, store.session_open(family, now)?))
    })
    .await
    .map_err(ApiError::internal)??;
    let user = user.filter(|u| !u.disabled && open).ok_or_else(invalid)?;
    let resource = path.rsplit('/').next().unwrap_or_default();
    if !claimed.valid(&st.auth.jwt_key, resource, user.token_version, now) {
        return Err(invalid());
    }
    Ok(CurrentUser {
        claims: jwt::Claims {
            sub: user.id,
            name: user.username.clone(),
            ver: user.token_version,
            jti: String::new(),
            iat: 0,
            exp: exp_s,
            typ: "ticket".into(),
            fam: family,
        },
        user,
        client,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let trusted: Vec<_> = ["127.0.0.1", "10.0.0.0/8"]
            .iter()
            .map(|s| crate::config::Net::parse(s).unwrap())
            .collect();
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("x-forwarded-for", v.parse().unwrap());
            m
        };
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // A client talking directly cannot claim another address.
        assert_eq!(
            client_ip(ip("192.0.2.9"), &h("203.0.113.7"), &trusted),
            ip("192.0.2.9")
        );
        // Behind the proxy: the nearest untrusted hop; a forged hop before it is ignored.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &h("203.0.113.7"), &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_ip(
                ip("127.0.0.1"),
                &h("1.1.1.1, 203.0.113.7, 10.0.0.5"),
                &trusted
            ),
            ip("203.0.113.7")
        );
        // No header: the proxy itself.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &HeaderMap::new(), &trusted),
            ip("127.0.0.1")
        );
        let via = |v: &str| client_ip(ip("127.0.0.1"), &h(v), &trusted);
        // Ports and brackets are stripped.
        assert_eq!(via("203.0.113.7:4711"), ip("203.0.113.7"));
        assert_eq!(via("[2001:db8::1]:80"), ip("2001:db8::1"));
        // Garbage ends the walk at the proxy that passed it on, not at a forged hop beyond.
        assert_eq!(via("198.51.100.1, unknown, 10.0.0.5"), ip("10.0.0.5"));
        // Every hop a trusted proxy (a forged 10.x at the left): the peer.
        assert_eq!(via("10.9.9.9, 10.0.0.5"), ip("127.0.0.1"));
    }
}
