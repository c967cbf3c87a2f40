//! Delivery of a finished scheduled export: into a directory (USB stick, SMB mount) as temp +
//! fsync + rename, by e-mail (lettre over rustls, attachment up to a size limit, else a link)
//! or as a signed JSON notice to a webhook. Targets are checked against the admin's
//! allow-lists (`[delivery]`) when a schedule is saved and again when it runs.

use super::Invalid;
use crate::config::Settings;
use crate::export::ExportRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::{Component, Path, PathBuf};

/// Where a schedule's exports go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum Delivery {
    /// Kept in the export history only.
    None,
    /// Copied into a directory under an allow-listed root.
    Directory {
        /// Absolute directory.
        path: String,
        /// File name template (`{{name}}`, `{{date}}`, `{{export_type}}`, `{{format}}`);
        /// default: the export's download name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
        /// Overrides `[delivery] require_mount` for this schedule.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        require_mount: Option<bool>,
    },
    /// Sent by e-mail through `[smtp]`.
    Email {
        /// Addresses in allow-listed domains.
        recipients: Vec<String>,
        /// Subject template (`{{date}}`, `{{name}}`, …).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
    },
    /// A JSON notice POSTed to a URL with an allow-listed prefix.
    Webhook {
        /// Target URL.
        url: String,
        /// Key of the `X-Kasad-Signature: sha256=<hex HMAC of the body>` header.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
    },
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

impl Delivery {
    /// The delivery as shown in API responses: the webhook secret is not returned.
    pub fn public(&self) -> Value {
        let mut v = json!(self);
        if let Delivery::Webhook { secret, .. } = self {
            v["secret"] = Value::Null;
            v["signed"] = json!(secret.is_some());
        }
        v
    }

    /// Checks the target against the configuration's allow-lists.
    pub fn check(&self, s: &Settings) -> Result<(), Invalid> {
        match self {
            Delivery::None => Ok(()),
            Delivery::Directory { path, filename, .. } => {
                allowed_dir(path, &s.delivery.directory_roots)?;
                if let Some(t) = filename {
                    file_name(t, &Vars::example())?;
                }
                Ok(())
            }
            Delivery::Email { recipients, .. } => {
                if s.smtp.host.is_empty() {
                    return Err(invalid(
                        "e-mail delivery needs a mail server: set [smtp] host in the configuration",
                    ));
                }
                if recipients.is_empty() || recipients.len() > 20 {
                    return Err(invalid("recipients must list 1 to 20 addresses"));
                }
                for r in recipients {
                    let mb: lettre::message::Mailbox = r
                        .parse()
                        .map_err(|e| invalid(format!("recipient {r:?}: {e}")))?;
                    let domain = mb.email.domain().to_ascii_lowercase();
                    if !s
                        .delivery
                        .email_allow_domains
                        .iter()
                        .any(|d| d.eq_ignore_ascii_case(&domain))
                    {
                        return Err(invalid(format!(
                            "recipient {r:?}: the domain {domain:?} is not in [delivery] email_allow_domains"
                        )));
                    }
                }
                Ok(())
            }
            Delivery::Webhook { url, secret } => {
                let u =
                    reqwest::Url::parse(url).map_err(|e| invalid(format!("url {url:?}: {e}")))?;
                if !matches!(u.scheme(), "http" | "https") {
                    return Err(invalid("url must be http:// or https://"));
                }
                if !s.delivery.webhook_allow.iter().any(|p| url.starts_with(p)) {
                    return Err(invalid(format!(
                        "url {url:?} does not start with a prefix in [delivery] webhook_allow"
                    )));
                }
                if secret.as_ref().is_some_and(|k| k.len() < 16) {
                    return Err(invalid("secret must have at least 16 characters"));
                }
                Ok(())
            }
        }
    }
}

/// `path` if it is absolute, free of `..`, and under one of `roots`; with that root.
fn allowed_dir(path: &str, roots: &[PathBuf]) -> Result<(PathBuf, PathBuf), Invalid> {
    let p = PathBuf::from(path);
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(invalid(format!(
            "path {path:?} must be an absolute directory without \"..\""
        )));
    }
    let root = roots.iter().find(|r| p.starts_with(r)).ok_or_else(|| {
        invalid(format!(
            "path {path:?} is not under a directory in [delivery] directory_roots ({})",
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    Ok((root.clone(), p))
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
    fn example() -> Self {
        Self {
            name: "report".into(),
            date: "2026-01-01".into(),
            export_type: "device_data".into(),
            format: "csv".into(),
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

/// A file name from `template`: one path component, no leading dot, no control characters.
fn file_name(template: &str, vars: &Vars) -> Result<String, Invalid> {
    let name: String = vars
        .fill(template)
        .chars()
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .collect();
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
    d.check(s).map_err(|e| DeliveryError::Refused(e.message))?;
    match d {
        Delivery::None => Ok("kept in the export history".into()),
        Delivery::Directory {
            path,
            filename,
            require_mount,
        } => {
            let (root, dir) = allowed_dir(path, &s.delivery.directory_roots)
                .map_err(|e| DeliveryError::Refused(e.message))?;
            let name = match filename {
                Some(t) => {
                    file_name(t, &parcel.vars).map_err(|e| DeliveryError::Refused(e.message))?
                }
                None => parcel
                    .export
                    .file_name
                    .clone()
                    .unwrap_or_else(|| parcel.export.disk_name()),
            };
            let must_mount = require_mount.unwrap_or(s.delivery.require_mount);
            let src = parcel.file.clone();
            tokio::task::spawn_blocking(move || to_directory(&src, &root, &dir, &name, must_mount))
                .await
                .map_err(|e| DeliveryError::Refused(format!("delivery task failed: {e}")))?
        }
        Delivery::Email {
            recipients,
            subject,
        } => email(recipients, subject.as_deref(), parcel, s).await,
        Delivery::Webhook { url, secret } => {
            webhook(
                url,
                secret.as_deref(),
                &parcel.notice("export.completed"),
                s,
            )
            .await
        }
    }
}

/// Whether `dir` lies on another file system than the directory holding `root` (so a mount
/// sits between them).
pub fn is_mounted(root: &Path, dir: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let base = root.parent().unwrap_or(root);
    Ok(std::fs::metadata(dir)?.dev() != std::fs::metadata(base)?.dev())
}

fn to_directory(
    src: &Path,
    root: &Path,
    dir: &Path,
    name: &str,
    must_mount: bool,
) -> Result<String, DeliveryError> {
    let shown = dir.display().to_string();
    let io = |source| DeliveryError::Io {
        path: shown.clone(),
        source,
    };
    if must_mount {
        // Never create directories on the SD card's bare mount point.
        match is_mounted(root, dir) {
            Ok(true) => {}
            Ok(false) => return Err(DeliveryError::NotMounted(shown)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DeliveryError::NotMounted(shown));
            }
            Err(e) => return Err(io(e)),
        }
    } else {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.kasad-part"));
    let copy = || -> std::io::Result<()> {
        let mut from = std::fs::File::open(src)?;
        let mut to = std::fs::File::create(&tmp)?;
        std::io::copy(&mut from, &mut to)?;
        to.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        std::fs::File::open(dir)?.sync_all()
    };
    copy().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })?;
    Ok(format!("written to {}", target.display()))
}

async fn email(
    recipients: &[String],
    subject: Option<&str>,
    parcel: &Parcel,
    s: &Settings,
) -> Result<String, DeliveryError> {
    use lettre::message::{Attachment, MultiPart, SinglePart, header::ContentType};
    let fail = |e: &dyn std::fmt::Display| DeliveryError::Email(e.to_string());
    let e = &parcel.export;
    let subject = parcel
        .vars
        .fill(subject.unwrap_or("kasad export {{name}} - {{date}}"));
    let size = e.file_size.unwrap_or(0);
    let attach = size <= s.smtp.max_attachment_mb.saturating_mul(1024 * 1024);
    let mut text = format!(
        "The scheduled export \"{}\" ran on {}.\n\nType: {}\nFormat: {}\nRecords: {}\nSize: {} bytes\nSHA-256: {}\n",
        parcel.vars.name,
        parcel.vars.date,
        e.export_type,
        parcel.vars.format,
        e.record_count.unwrap_or(0),
        size,
        e.checksum_sha256.as_deref().unwrap_or("-"),
    );
    match (&parcel.link, attach) {
        (_, true) => text.push_str("\nThe file is attached.\n"),
        (Some(l), false) => text.push_str(&format!(
            "\nThe file is larger than {} MB; download it here: {l}\n",
            s.smtp.max_attachment_mb
        )),
        (None, false) => text.push_str(&format!(
            "\nThe file is larger than {} MB; it is in the export history ({}).\n",
            s.smtp.max_attachment_mb, e.id
        )),
    }
    let mut builder = lettre::Message::builder()
        .from(s.smtp.from.parse().map_err(|x| fail(&x))?)
        .subject(subject);
    for r in recipients {
        builder = builder.to(r.parse().map_err(|x| fail(&x))?);
    }
    let body = SinglePart::plain(text);
    let msg = if attach {
        let bytes = tokio::fs::read(&parcel.file).await.map_err(|x| fail(&x))?;
        let ct = ContentType::parse(e.mime_type()).map_err(|x| fail(&x))?;
        let name = e.file_name.clone().unwrap_or_else(|| e.disk_name());
        // Base64 keeps the file byte for byte (text encodings may rewrite line ends).
        let file = lettre::message::Body::new_with_encoding(
            bytes,
            lettre::message::header::ContentTransferEncoding::Base64,
        )
        .map_err(|_| DeliveryError::Email("the attachment cannot be encoded".into()))?;
        builder.multipart(
            MultiPart::mixed()
                .singlepart(body)
                .singlepart(Attachment::new(name).body(file, ct)),
        )
    } else {
        builder.singlepart(body)
    }
    .map_err(|x| fail(&x))?;
    send_mail(msg, s).await?;
    Ok(format!(
        "sent to {}{}",
        recipients.join(", "),
        if attach {
            " with the file attached"
        } else {
            " with a link"
        }
    ))
}

/// Makes rustls' ring provider the process default (reqwest needs one before it builds a
/// client; idempotent). Tests call it too: their reqwest shares this crate's features.
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Sends `msg` through `[smtp]`.
pub async fn send_mail(msg: lettre::Message, s: &Settings) -> Result<(), DeliveryError> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    let fail = |e: &dyn std::fmt::Display| DeliveryError::Email(e.to_string());
    install_tls();
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
                .map_err(|e| DeliveryError::Email(format!("reading {}: {e}", p.display())))?
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

/// POSTs `notice` to `url`, signed with `secret` when given.
pub async fn webhook(
    url: &str,
    secret: Option<&str>,
    notice: &Value,
    s: &Settings,
) -> Result<String, DeliveryError> {
    let fail = |e: &dyn std::fmt::Display| DeliveryError::Webhook(e.to_string());
    install_tls();
    let client = reqwest::Client::builder()
        .timeout(s.delivery.timeout.0)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| fail(&e))?;
    let body = serde_json::to_vec(notice).map_err(|e| fail(&e))?;
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, "kasad");
    if let Some(k) = secret {
        req = req.header("X-Kasad-Signature", format!("sha256={}", sign(k, &body)));
    }
    let resp = req.body(body).send().await.map_err(|e| fail(&e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(DeliveryError::Webhook(format!("{url} answered {status}")));
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

    fn settings() -> Settings {
        let mut s = Settings::default();
        s.delivery.directory_roots = vec![PathBuf::from("/media")];
        s.delivery.webhook_allow = vec!["https://ha.example/api/webhook/".into()];
        s.delivery.email_allow_domains = vec!["example.com".into()];
        s.smtp.host = "mail.example.com".into();
        s
    }

    #[test]
    fn allow_lists_are_enforced() {
        let s = settings();
        let dir = |p: &str| Delivery::Directory {
            path: p.into(),
            filename: None,
            require_mount: None,
        };
        assert!(dir("/media/usb/kasad").check(&s).is_ok());
        for bad in ["/etc", "/media/../etc", "media/usb", "/mediax"] {
            let e = dir(bad).check(&s).unwrap_err();
            assert_eq!(e.code, "INVALID_DELIVERY", "{bad}");
        }
        let mail = |r: &str| Delivery::Email {
            recipients: vec![r.into()],
            subject: None,
        };
        assert!(mail("Ann <ann@Example.com>").check(&s).is_ok());
        assert!(
            mail("eve@evil.example")
                .check(&s)
                .unwrap_err()
                .message
                .contains("evil.example")
        );
        assert!(mail("not an address").check(&s).is_err());
        let hook = |u: &str| Delivery::Webhook {
            url: u.into(),
            secret: None,
        };
        assert!(hook("https://ha.example/api/webhook/abc").check(&s).is_ok());
        assert!(
            hook("https://evil.example/api/webhook/abc")
                .check(&s)
                .is_err()
        );
        let mut no_smtp = settings();
        no_smtp.smtp.host.clear();
        assert!(
            mail("ann@example.com")
                .check(&no_smtp)
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
    }

    #[test]
    fn mount_detection_compares_file_systems() {
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join("usb");
        std::fs::create_dir(&sub).unwrap();
        assert!(!is_mounted(tmp.path(), &sub).unwrap(), "same file system");
        // /proc is always its own file system under /.
        assert!(is_mounted(Path::new("/proc"), Path::new("/proc")).unwrap());
        assert!(is_mounted(tmp.path(), &tmp.path().join("gone")).is_err());
    }

    #[test]
    fn signatures_are_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
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
    }
}
