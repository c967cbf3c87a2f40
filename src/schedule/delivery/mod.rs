//! Delivery of a finished scheduled export: into a directory (USB stick, SMB mount), by
//! e-mail, or as a signed JSON notice to a webhook. Targets are checked against the admin's
//! allow-lists (`[delivery]`) when a schedule is saved and again when it runs. Each way out
//! has its file: [`directory`], [`email`], [`webhook`].

use super::Invalid;
use crate::config::Settings;
use crate::export::ExportRecord;
use crate::notify::origin;
use serde_json::{Value, json};
use std::path::PathBuf;

mod directory;
mod email;

pub use crate::domain::schedule::Delivery;
pub use crate::notify::{send_mail, sign, webhook, webhook_allowed};
pub use directory::is_mounted;

/// Debug output (logs) shows [`Delivery::summary`]: never a webhook's path or secret.
impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Delivery({})", self.summary())
    }
}

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid {
        code: "INVALID_DELIVERY",
        message: message.into(),
    }
}

/// Why a delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The target is not (or no longer) allowed or usable.
    #[error("{0}")]
    Refused(String),
    /// A directory target is not a mounted file system.
    #[error(
        "{0} is not on a mounted file system (require_mount): is the USB stick or share mounted?"
    )]
    NotMounted(String),
    /// Writing the file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// Target.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The mail server refused or could not be reached.
    #[error("e-mail: {0}")]
    Email(String),
    /// The webhook failed or answered with an error status.
    #[error("webhook: {0}")]
    Webhook(String),
}

impl From<crate::notify::NotifyError> for DeliveryError {
    fn from(e: crate::notify::NotifyError) -> Self {
        match e {
            crate::notify::NotifyError::Email(m) => DeliveryError::Email(m),
            crate::notify::NotifyError::Webhook(m) => DeliveryError::Webhook(m),
        }
    }
}

impl Delivery {
    /// Where the data goes, for the audit log: the directory, the recipients, or the
    /// webhook's origin (its path and secret are left out).
    pub fn summary(&self) -> Value {
        match self {
            Delivery::None => json!({"method": "none"}),
            Delivery::Directory { path, .. } => json!({"method": "directory", "path": path}),
            Delivery::Email { recipients, .. } => {
                json!({"method": "email", "recipients": recipients})
            }
            Delivery::Webhook { url, secret } => {
                json!({"method": "webhook", "origin": origin(url), "signed": secret.is_some()})
            }
        }
    }

    /// The delivery as shown in API responses: the webhook secret is not returned.
    pub fn public(&self) -> Value {
        let mut v = json!(self);
        if let Delivery::Webhook { secret, .. } = self {
            v["secret"] = Value::Null;
            v["signed"] = json!(secret.is_some());
        }
        v
    }

    /// Checks the target against the configuration's allow-lists, for a schedule named
    /// `name` (its file-name template is tried with the longest values it can get).
    pub fn check(&self, s: &Settings, name: &str) -> Result<(), Invalid> {
        match self {
            Delivery::None => Ok(()),
            Delivery::Directory { path, filename, .. } => {
                directory::allowed_dir(path, &s.delivery.directory_roots)?;
                if let Some(t) = filename {
                    file_name(t, &Vars::longest(name))?;
                }
                Ok(())
            }
            Delivery::Email { recipients, .. } => {
                crate::notify::check_recipients(recipients, s).map_err(invalid)
            }
            Delivery::Webhook { url, secret } => {
                crate::notify::check_webhook(url, secret.as_deref(), s).map_err(invalid)
            }
        }
    }
}

/// Template values of one run.
#[derive(Debug, Clone)]
pub struct Vars {
    /// Schedule name.
    pub name: String,
    /// Run date, local `YYYY-MM-DD`.
    pub date: String,
    /// Export type.
    pub export_type: String,
    /// Format id (`csv`, …).
    pub format: String,
}

impl Vars {
    /// The longest values a schedule named `name` can give its templates.
    pub fn longest(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            date: "2026-12-31".into(),
            export_type: "configuration".into(),
            format: "excel".into(),
        }
    }

    /// `template` with `{{name}}`, `{{date}}`, `{{export_type}}` and `{{format}}` replaced.
    pub fn fill(&self, template: &str) -> String {
        template
            .replace("{{name}}", &self.name)
            .replace("{{date}}", &self.date)
            .replace("{{export_type}}", &self.export_type)
            .replace("{{format}}", &self.format)
    }
}

/// A file name from `template` that any target file system takes (FAT and SMB included):
/// one path component, `/ \ : * ? " < > |` replaced by `_`, no trailing dots or spaces, no
/// leading dot, no control characters, at most 200 bytes.
fn file_name(template: &str, vars: &Vars) -> Result<String, Invalid> {
    let name: String = vars
        .fill(template)
        .chars()
        .map(|c| if "/\\:*?\"<>|".contains(c) { '_' } else { c })
        .collect();
    let name = name.trim_end_matches(['.', ' ']).to_owned();
    if name.is_empty()
        || name.starts_with('.')
        || name.len() > 200
        || name.chars().any(char::is_control)
    {
        return Err(invalid(format!(
            "filename {template:?} gives {name:?}: a file name must be 1 to 200 characters, not start with '.', and have no control characters"
        )));
    }
    Ok(name)
}

/// A finished export on its way out.
#[derive(Debug, Clone)]
pub struct Parcel {
    /// The export.
    pub export: ExportRecord,
    /// Its file.
    pub file: PathBuf,
    /// Absolute download link with a ticket, when `[http] public_url` is set.
    pub link: Option<String>,
    /// Template values.
    pub vars: Vars,
    /// Schedule id.
    pub schedule_id: String,
}

impl Parcel {
    /// The JSON notice of a webhook (also the facts of an e-mail).
    pub fn notice(&self, event: &str) -> Value {
        let e = &self.export;
        json!({
            "event": event,
            "schedule_id": self.schedule_id,
            "schedule_name": self.vars.name,
            "export_id": e.id,
            "export_type": e.export_type,
            "format": e.format,
            "status": e.status,
            "file_name": e.file_name,
            "file_size": e.file_size,
            "record_count": e.record_count,
            "checksum_sha256": e.checksum_sha256,
            "created_at": crate::clock::rfc3339(e.created_ms),
            "completed_at": e.completed_ms.map(crate::clock::rfc3339),
            "expires_at": e.expires_ms.map(crate::clock::rfc3339),
            "download_url": format!("/api/exports/download/{}", e.id),
            "download_link": self.link,
        })
    }
}

/// Delivers `parcel` once; returns what was done.
pub async fn deliver(d: &Delivery, parcel: &Parcel, s: &Settings) -> Result<String, DeliveryError> {
    d.check(s, &parcel.vars.name)
        .map_err(|e| DeliveryError::Refused(e.message))?;
    match d {
        Delivery::None => Ok("kept in the export history".into()),
        Delivery::Directory {
            path,
            filename,
            require_mount,
        } => directory::deliver(path, filename.as_deref(), *require_mount, parcel, s).await,
        Delivery::Email {
            recipients,
            subject,
        } => email::deliver(recipients, subject.as_deref(), parcel, s).await,
        Delivery::Webhook { url, secret } => webhook(
            url,
            secret.as_deref(),
            &parcel.notice("export.completed"),
            s,
        )
        .await
        .map_err(DeliveryError::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let mut s = Settings::default();
        s.delivery.directory_roots = vec![PathBuf::from("/media")];
        s.delivery.webhook_allow = vec!["https://ha.example/api/webhook/".into()];
        s.delivery.email_allow_domains = vec!["example.com".into()];
        s.smtp.host = "mail.example.com".into();
        s
    }

    fn check(d: &Delivery, s: &Settings) -> Result<(), Invalid> {
        d.check(s, "Monthly report")
    }

    #[test]
    fn allow_lists_are_enforced() {
        let s = settings();
        let dir = |p: &str| Delivery::Directory {
            path: p.into(),
            filename: None,
            require_mount: None,
        };
        assert!(check(&dir("/media/usb/kasad"), &s).is_ok());
        for bad in ["/etc", "/media/../etc", "media/usb", "/mediax"] {
            let e = check(&dir(bad), &s).unwrap_err();
            assert_eq!(e.code, "INVALID_DELIVERY", "{bad}");
        }
        let mail = |r: &str| Delivery::Email {
            recipients: vec![r.into()],
            subject: None,
        };
        assert!(check(&mail("Ann <ann@Example.com>"), &s).is_ok());
        assert!(
            check(&mail("eve@evil.example"), &s)
                .unwrap_err()
                .message
                .contains("evil.example")
        );
        assert!(check(&mail("not an address"), &s).is_err());
        let hook = |u: &str| Delivery::Webhook {
            url: u.into(),
            secret: None,
        };
        assert!(check(&hook("https://ha.example/api/webhook/abc"), &s).is_ok());
        for bad in [
            "https://evil.example/api/webhook/abc",
            "https://ha.example.evil.example/api/webhook/abc",
            "https://ha.example@evil.example/api/webhook/abc",
            "https://x:y@ha.example/api/webhook/abc",
            "https://ha.example:444/api/webhook/abc",
            "http://ha.example/api/webhook/abc",
            "https://ha.example/api/webhookX",
            "https://ha.example/api/webhook/../../admin",
            "https://ha.example/api/webhook/%2e%2e/%2E%2E/admin",
            "https://ha.example/api/webhook/a%2F..%2F..%2Fadmin",
            "ftp://ha.example/api/webhook/abc",
        ] {
            assert!(check(&hook(bad), &s).is_err(), "{bad}");
        }
        assert!(check(&hook("https://ha.example:443/api/webhook/x/y"), &s).is_ok());
        let mut no_smtp = settings();
        no_smtp.smtp.host.clear();
        assert!(
            check(&mail("ann@example.com"), &no_smtp)
                .unwrap_err()
                .message
                .contains("[smtp]")
        );
    }

    #[test]
    fn file_names_are_one_safe_component() {
        let v = Vars {
            name: "Monthly/Report".into(),
            date: "2026-11-01".into(),
            export_type: "device_data".into(),
            format: "csv".into(),
        };
        assert_eq!(
            file_name("{{name}}_{{date}}.{{format}}", &v).unwrap(),
            "Monthly_Report_2026-11-01.csv"
        );
        assert!(file_name(".hidden", &v).is_err());
        assert!(file_name("", &v).is_err());
        // What FAT and SMB refuse is replaced; trailing dots and spaces go.
        assert_eq!(
            file_name("a:b*c?d\"e<f>g|h. .", &v).unwrap(),
            "a_b_c_d_e_f_g_h"
        );
        assert!(file_name("x\ny", &v).is_err());
        let long = Vars::longest(&"ü".repeat(100));
        assert!(
            file_name("{{name}}_{{date}}.csv", &long).is_err(),
            "over 200 bytes"
        );
    }

    #[test]
    fn secrets_are_not_shown() {
        let d = Delivery::Webhook {
            url: "https://x".into(),
            secret: Some("0123456789abcdef".into()),
        };
        let v = d.public();
        assert_eq!(v["secret"], Value::Null);
        assert_eq!(v["signed"], true);
        assert!(!format!("{d:?}").contains("0123456789abcdef"), "{d:?}");
    }
}
