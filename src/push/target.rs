//! A push target made from its `[[push]]` entry: the URL checked against `[delivery]
//! webhook_allow`, the secrets read from their files (never logged), an HTTP client with TLS
//! by rustls (and the optional CA file), and the request of a batch.

use super::samples::Series;
use crate::config::{PushTarget, Settings};
use std::time::Duration;

/// Why a target cannot be made (the daemon refuses to start).
#[derive(Debug, thiserror::Error)]
#[error("push[{index}] ({name}): {msg}")]
pub struct TargetError {
    index: usize,
    name: String,
    msg: String,
}

/// The protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Prometheus remote write 1.0.
    RemoteWrite,
    /// InfluxDB line protocol.
    Influx,
}

/// A target ready to receive batches. Its `Debug` never shows the credentials.
pub struct Target {
    /// Its name.
    pub name: String,
    /// The protocol.
    pub kind: Kind,
    /// Its `[[push]]` entry.
    pub cfg: PushTarget,
    /// Where batches go (for influx: with its path and query).
    endpoint: reqwest::Url,
    /// The `Authorization` header, if any (never shown).
    auth: Option<String>,
    client: reqwest::Client,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("origin", &crate::notify::origin(self.endpoint.as_str()))
            .field("auth", &self.auth.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// Why a batch was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth trying again (the target away, busy, or refusing our credentials for now).
    Retry(String),
    /// The target refused the data itself (400, 422: e.g. samples too old for it): sending
    /// it again would be refused again.
    Rejected(String),
}

/// Reads a secret file: its first line, trimmed; refused when empty, unreadable or large.
fn secret(path: &std::path::Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() || meta.len() > 64 * 1024 {
        return Err(format!("{} is not a small file", path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or_default().trim().to_owned();
    if line.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(line)
}

impl Target {
    /// Makes target `index` of the settings.
    pub fn new(index: usize, s: &Settings) -> Result<Self, TargetError> {
        let cfg = s.push[index].clone();
        let err = |msg: String| TargetError {
            index,
            name: cfg.name.clone(),
            msg,
        };
        let origin = crate::notify::origin(&cfg.url);
        let url =
            reqwest::Url::parse(&cfg.url).map_err(|e| err(format!("url of {origin}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err("url must be http:// or https://".into()));
        }
        if !s
            .delivery
            .webhook_allow
            .iter()
            .any(|p| crate::notify::webhook_allowed(&url, p))
        {
            return Err(err(format!(
                "the url at {origin} is not under an entry of [delivery] webhook_allow"
            )));
        }
        let kind = if cfg.kind == "influx" {
            Kind::Influx
        } else {
            Kind::RemoteWrite
        };
        let endpoint = match kind {
            Kind::RemoteWrite => url,
            Kind::Influx => {
                let mut u = url;
                let base = u.path().trim_end_matches('/').to_owned();
                match &cfg.database {
                    Some(db) => {
                        u.set_path(&format!("{base}/write"));
                        u.query_pairs_mut()
                            .append_pair("db", db)
                            .append_pair("precision", "ms");
                    }
                    None => {
                        u.set_path(&format!("{base}/api/v2/write"));
                        u.query_pairs_mut()
                            .append_pair("org", cfg.org.as_deref().unwrap_or_default())
                            .append_pair("bucket", cfg.bucket.as_deref().unwrap_or_default())
                            .append_pair("precision", "ms");
                    }
                }
                u
            }
        };
        let auth = match (&cfg.bearer_token_file, &cfg.username, &cfg.password_file) {
            (Some(f), _, _) => {
                let t = secret(f).map_err(|e| err(format!("bearer_token_file {e}")))?;
                // InfluxDB 2 takes its API token as `Token`.
                let scheme = if kind == Kind::Influx && cfg.database.is_none() {
                    "Token"
                } else {
                    "Bearer"
                };
                Some(format!("{scheme} {t}"))
            }
            (None, Some(u), Some(f)) => {
                use base64::Engine;
                let p = secret(f).map_err(|e| err(format!("password_file {e}")))?;
                let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                Some(format!("Basic {b}"))
            }
            _ => None,
        };
        crate::tls::install_tls();
        let tls = crate::tls::client_config(cfg.ca_file.as_deref(), &format!("push[{index}]"))
            .map_err(|e| err(e.to_string()))?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| err(format!("http client: {}", e.without_url())))?;
        Ok(Self {
            name: cfg.name.clone(),
            kind,
            cfg,
            endpoint,
            auth,
            client,
        })
    }

    /// Sends `series`; `Ok` once the target accepted them (2xx).
    pub async fn send(&self, series: &[Series]) -> Result<(), SendError> {
        let mut req = self.client.post(self.endpoint.clone());
        let body = match self.kind {
            Kind::RemoteWrite => {
                for (k, v) in super::remote_write::HEADERS {
                    req = req.header(k, v);
                }
                super::remote_write::body(series)
            }
            Kind::Influx => {
                req = req.header("content-type", "text/plain; charset=utf-8");
                super::influx::body(series)
            }
        };
        req = req.header("user-agent", concat!("kasad/", env!("CARGO_PKG_VERSION")));
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        let origin = crate::notify::origin(self.endpoint.as_str());
        let r = req
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::Retry(format!("{origin}: {}", e.without_url())))?;
        let status = r.status();
        if status.is_success() {
            return Ok(());
        }
        let text = r.text().await.unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        let msg = format!("{origin} answered {status}: {}", text.trim());
        Err(match status.as_u16() {
            400 | 422 => SendError::Rejected(msg),
            _ => SendError::Retry(msg),
        })
    }
}
