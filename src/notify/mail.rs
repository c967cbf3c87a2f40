//! E-mail through `[smtp]` (lettre over rustls): the transport, and the recipient allow-list.

use super::NotifyError;
use crate::config::Settings;

/// Checks `recipients` (1 to 20) against `[delivery] email_allow_domains`, and that a mail
/// server is configured; the reason in words when not.
pub fn check_recipients(recipients: &[String], s: &Settings) -> Result<(), String> {
    if s.smtp.host.is_empty() {
        return Err(
            "e-mail delivery needs a mail server: set [smtp] host in the configuration".into(),
        );
    }
    if recipients.is_empty() || recipients.len() > 20 {
        return Err("recipients must list 1 to 20 addresses".into());
    }
    for r in recipients {
        let mb: lettre::message::Mailbox =
            r.parse().map_err(|e| format!("recipient {r:?}: {e}"))?;
        let domain = mb.email.domain().to_ascii_lowercase();
        if !s
            .delivery
            .email_allow_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&domain))
        {
            return Err(format!(
                "recipient {r:?}: the domain {domain:?} is not in [delivery] email_allow_domains"
            ));
        }
    }
    Ok(())
}

/// A plain-text message from `[smtp] from` to `recipients`.
pub fn plain(
    recipients: &[String],
    subject: &str,
    text: String,
    s: &Settings,
) -> Result<lettre::Message, NotifyError> {
    let fail = |e: &dyn std::fmt::Display| NotifyError::Email(e.to_string());
    let mut builder = lettre::Message::builder()
        .from(s.smtp.from.parse().map_err(|x| fail(&x))?)
        .subject(subject);
    for r in recipients {
        builder = builder.to(r.parse().map_err(|x| fail(&x))?);
    }
    builder.body(text).map_err(|x| fail(&x))
}

/// Sends `msg` through `[smtp]`.
pub async fn send_mail(msg: lettre::Message, s: &Settings) -> Result<(), NotifyError> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    let fail = |e: &dyn std::fmt::Display| NotifyError::Email(e.to_string());
    crate::tls::install_tls();
    let c = &s.smtp;
    let builder = match c.tls.as_str() {
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host).map_err(|e| fail(&e))?,
        "starttls" => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host).map_err(|e| fail(&e))?
        }
        _ => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host),
    };
    let mut builder = builder.port(c.port).timeout(Some(s.delivery.timeout.0));
    if !c.username.is_empty() {
        let password = match &c.password_file {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| NotifyError::Email(format!("reading {}: {e}", p.display())))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            None => String::new(),
        };
        builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
            c.username.clone(),
            password,
        ));
    }
    builder.build().send(msg).await.map_err(|e| fail(&e))?;
    Ok(())
}
