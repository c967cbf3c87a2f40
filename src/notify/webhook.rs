//! A signed JSON notice POSTed to an allowed webhook: the allow-list rule, the HMAC
//! signature, and errors that show only the origin (a webhook's path is often its secret).

use super::NotifyError;
use crate::config::Settings;
use serde_json::Value;

/// Whether `url` lies under the allow-list entry `prefix`: the same scheme, host and port, no
/// user info, and the prefix's path segments leading the URL's (compared after the URL parser
/// resolved `..` and `%2e%2e`), so `https://ha.local` does not allow `https://ha.local.evil`
/// and `http://127.0.0.1:80@evil/` is refused.
pub fn webhook_allowed(url: &reqwest::Url, prefix: &str) -> bool {
    let Ok(p) = reqwest::Url::parse(prefix) else {
        return false;
    };
    let segments = |u: &reqwest::Url| -> Vec<String> {
        u.path_segments()
            .map(|s| s.filter(|x| !x.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let (want, got) = (segments(&p), segments(url));
    // An encoded separator could mean another path to the receiving server.
    let odd = got.iter().any(|x| {
        let x = x.to_ascii_lowercase();
        x.contains("%2f") || x.contains("%5c") || x == "%2e" || x == "%2e%2e"
    });
    !odd && url.scheme() == p.scheme()
        && url.host_str() == p.host_str()
        && url.port_or_known_default() == p.port_or_known_default()
        && url.username().is_empty()
        && url.password().is_none()
        && got.len() >= want.len()
        && got[..want.len()] == want[..]
}

/// `scheme://host:port` of a URL: what errors and logs may show (a webhook's path is often
/// its secret).
pub fn origin(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .map(|u| {
            format!(
                "{}://{}:{}",
                u.scheme(),
                u.host_str().unwrap_or_default(),
                u.port_or_known_default().unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "the webhook".into())
}

/// POSTs `notice` to `url`, signed with `secret` when given.
pub async fn webhook(
    url: &str,
    secret: Option<&str>,
    notice: &Value,
    s: &Settings,
) -> Result<String, NotifyError> {
    let fail = |e: &dyn std::fmt::Display| NotifyError::Webhook(e.to_string());
    crate::tls::install_tls();
    let client = reqwest::Client::builder()
        .timeout(s.delivery.timeout.0)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| fail(&e.without_url()))?;
    let body = serde_json::to_vec(notice).map_err(|e| fail(&e))?;
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, "kasad");
    if let Some(k) = secret {
        req = req.header("X-Kasad-Signature", format!("sha256={}", sign(k, &body)));
    }
    // Errors name only the origin: a webhook's path is often its secret.
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| NotifyError::Webhook(format!("{}: {}", origin(url), e.without_url())))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(NotifyError::Webhook(format!(
            "{} answered {status}",
            origin(url)
        )));
    }
    Ok(format!("webhook answered {}", status.as_u16()))
}

/// Hex HMAC-SHA256 of `body` with `key`.
pub fn sign(key: &str, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut m =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.as_bytes()).expect("any key");
    m.update(body);
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
