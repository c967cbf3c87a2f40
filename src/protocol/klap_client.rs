//! The KLAP client over HTTP: handshake1/2 with the candidate credentials matched locally
//! against the device's hash, signed requests with the sequence number, the `TP_SESSIONID`
//! cookie, renewal before the session's `TIMEOUT` lapses and one re-handshake on a 403.

use super::klap::{self, Credentials, Session, Version};
use super::{Error, MAX_FRAME, Result};
use reqwest::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Session lifetime when the device sends no `TIMEOUT` cookie (python-kasa's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(86_400);

/// A session is renewed this long before it lapses (python-kasa), or half its lifetime when
/// that is shorter.
const RENEW_BEFORE: Duration = Duration::from_secs(20 * 60);

/// The longest session lifetime believed (a device's `TIMEOUT` beyond it is cut to it).
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 86_400);

/// The session lifetime a `TIMEOUT` cookie gives (a day when absent, at most
/// [`MAX_TIMEOUT`]).
pub(super) fn lifetime(timeout_cookie: Option<String>) -> Duration {
    timeout_cookie
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
        .min(MAX_TIMEOUT)
}

/// When to renew a session of `lifetime` started now: [`RENEW_BEFORE`] (or half the
/// lifetime, when shorter) before it lapses.
pub(super) fn renew_at(lifetime: Duration) -> Instant {
    Instant::now() + lifetime - RENEW_BEFORE.min(lifetime / 2)
}

/// The body of an answer, refused once past [`MAX_FRAME`] (read chunk by chunk: a chunked
/// answer has no length to check first).
pub(super) async fn bounded_body(mut resp: reqwest::Response) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(http_err)? {
        if out.len() + chunk.len() > MAX_FRAME {
            return Err(Error::FrameTooLarge {
                len: out.len() + chunk.len(),
                max: MAX_FRAME,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// One HTTP client for all devices (keeps connections, never uses a proxy).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client> {
    crate::tls::install_tls();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::Http(format!("HTTP client: {e}")))
}

#[derive(Debug)]
struct Live {
    session: Session,
    cookie: String,
    renew_at: Instant,
}

/// A KLAP connection to one device.
#[derive(Debug)]
pub struct KlapClient {
    http: reqwest::Client,
    base: String,
    version: Version,
    candidates: Arc<Vec<Credentials>>,
    live: Option<Live>,
}

/// The value of cookie `name` set by `resp` (`TP_SESSIONID`, `TIMEOUT`).
pub(super) fn cookie_value(resp: &reqwest::Response, name: &str) -> Option<String> {
    cookie_in(resp.headers(), reqwest::header::SET_COOKIE, name)
}

/// The value of cookie `name` in the `header` lines (`Set-Cookie` from a device, `Cookie`
/// from a client).
pub fn cookie_in(
    headers: &reqwest::header::HeaderMap,
    header: reqwest::header::HeaderName,
    name: &str,
) -> Option<String> {
    headers
        .get_all(header)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

pub(super) fn http_err(e: reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::Http("the device did not answer in time".into())
    } else {
        Error::Http(e.without_url().to_string())
    }
}

impl KlapClient {
    /// A client for the device at `addr` (its HTTP port) that tries `candidates` in order.
    pub fn new(
        http: reqwest::Client,
        addr: SocketAddr,
        version: Version,
        candidates: Arc<Vec<Credentials>>,
    ) -> Self {
        Self {
            http,
            base: format!("http://{addr}/app"),
            version,
            candidates,
            live: None,
        }
    }

    async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        body: Vec<u8>,
    ) -> Result<reqwest::Response> {
        let mut req = self
            .http
            .post(format!("{}/{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if let Some(c) = cookie {
            req = req.header(reqwest::header::COOKIE, format!("TP_SESSIONID={c}"));
        }
        req.send().await.map_err(http_err)
    }

    async fn handshake(&mut self) -> Result<Live> {
        let local = crate::random::random_bytes::<16>();
        let resp = self.post("handshake1", None, local.to_vec()).await?;
        if resp.status() != StatusCode::OK {
            return Err(Error::Http(format!(
                "handshake1 answered {}",
                resp.status()
            )));
        }
        let cookie = cookie_value(&resp, "TP_SESSIONID").unwrap_or_default();
        let lifetime = lifetime(cookie_value(&resp, "TIMEOUT"));
        let answer = bounded_body(resp).await?;
        if answer.len() != 48 {
            return Err(Error::Decode(format!(
                "handshake1 answer of {} bytes, expected 48",
                answer.len()
            )));
        }
        let (remote, server) = answer.split_at(16);
        let v = self.version;
        let auth = self
            .candidates
            .iter()
            .map(|c| klap::auth_hash(v, c))
            .find(|a| klap::server_hash(v, &local, remote, a).as_slice() == server)
            .ok_or_else(|| {
                Error::Auth(
                    "no credential matched (the configured account, the Kasa default, blank)"
                        .into(),
                )
            })?;
        let proof = klap::client_hash(v, &local, remote, &auth).to_vec();
        let resp = self.post("handshake2", Some(&cookie), proof).await?;
        if resp.status() != StatusCode::OK {
            return Err(Error::Http(format!(
                "handshake2 answered {}",
                resp.status()
            )));
        }
        Ok(Live {
            session: Session::new(&local, remote, &auth),
            cookie,
            renew_at: renew_at(lifetime),
        })
    }

    /// Sends one plaintext request and returns the plaintext answer. A session about to lapse
    /// is renewed first; a 403 (the device dropped the session) re-handshakes and retries once.
    pub async fn request(&mut self, plaintext: &[u8]) -> Result<Vec<u8>> {
        for attempt in 0..2 {
            let mut live = match self.live.take() {
                Some(l) if Instant::now() < l.renew_at => l,
                _ => self.handshake().await?,
            };
            let (seq, sealed) = live.session.next_request(plaintext);
            let resp = self
                .post(&format!("request?seq={seq}"), Some(&live.cookie), sealed)
                .await?;
            match resp.status() {
                StatusCode::OK => {
                    let answer = bounded_body(resp).await?;
                    let plain = live.session.open(seq, &answer, false)?;
                    self.live = Some(live);
                    return Ok(plain);
                }
                StatusCode::FORBIDDEN if attempt == 0 => {
                    tracing::debug!(base = %self.base, "KLAP session refused (403): handshaking again");
                }
                s => return Err(Error::Http(format!("request answered {s}"))),
            }
        }
        Err(Error::Http(
            "request refused (403) after a new handshake".into(),
        ))
    }
}
