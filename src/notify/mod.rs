//! The ways out for notices: e-mail through `[smtp]` ([`mail`]) and signed JSON to a webhook
//! ([`webhook`]), each with its allow-list check (`[delivery] email_allow_domains`,
//! `webhook_allow`). Scheduled exports and alerts both send through here.

pub mod mail;
pub mod webhook;

pub use mail::{check_recipients, plain, send_mail};
pub use webhook::{origin, sign, webhook, webhook_allowed};

use crate::config::Settings;

/// Why a notice did not go out.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The mail server refused or could not be reached.
    #[error("e-mail: {0}")]
    Email(String),
    /// The webhook failed or answered with an error status.
    #[error("webhook: {0}")]
    Webhook(String),
}

/// Checks a webhook target: http(s), under an entry of `[delivery] webhook_allow`, a secret of
/// at least 16 characters when given; the reason in words (naming only the origin) when not.
pub fn check_webhook(url: &str, secret: Option<&str>, s: &Settings) -> Result<(), String> {
    // Messages name only the origin: they end up in the audit log, and a webhook's path is
    // often its secret.
    let u = reqwest::Url::parse(url).map_err(|e| format!("url of {}: {e}", origin(url)))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("url must be http:// or https://".into());
    }
    if !s
        .delivery
        .webhook_allow
        .iter()
        .any(|p| webhook_allowed(&u, p))
    {
        return Err(format!(
            "the url at {} is not under an entry of [delivery] webhook_allow",
            origin(url)
        ));
    }
    if secret.is_some_and(|k| k.len() < 16) {
        return Err("secret must have at least 16 characters".into());
    }
    Ok(())
}
