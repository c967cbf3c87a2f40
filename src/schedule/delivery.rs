//! Delivery of a finished scheduled export: into a directory (USB stick, SMB mount) as temp +
//! fsync + rename, by e-mail (lettre over rustls, attachment up to a size limit, else a link)
//! or as a signed JSON notice to a webhook. Targets are checked against the admin's
//! allow-lists (`[delivery]`) when a schedule is saved and again when it runs.

use super::Invalid;
use crate::config::Settings;
use crate::export::ExportRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Where a schedule's exports go.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
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
                allowed_dir(path, &s.delivery.directory_roots)?;
                if let Some(t) = filename {
                    file_name(t, &Vars::longest(name))?;
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
                // Messages name only the origin: they end up in last_run and the audit log,
                // and a webhook's path is often its secret.
                let u = reqwest::Url::parse(url)
                    .map_err(|e| invalid(format!("url of {}: {e}", origin(url))))?;
                if !matches!(u.scheme(), "http" | "https") {
                    return Err(invalid("url must be http:// or https://"));
                }
                if !s
                    .delivery
                    .webhook_allow
                    .iter()
                    .any(|p| webhook_allowed(&u, p))
                {
                    return Err(invalid(format!(
                        "the url at {} is not under an entry of [delivery] webhook_allow",
                        origin(url)
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
fn origin(url: &str) -> String {
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
    to_directory_with(src, root, dir, name, must_mount, &|| {})
}

/// Opens directory `name` inside `dir`, never through a symbolic link and never outside it:
/// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or an `O_NOFOLLOW` open where the
/// kernel has no `openat2` (before Linux 5.6).
fn open_beneath(dir: &OwnedFd, name: &std::ffi::OsStr) -> rustix::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    match rustix::fs::openat2(
        dir,
        name,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Err(rustix::io::Errno::NOSYS) => rustix::fs::openat(dir, name, flags, Mode::empty()),
        other => other,
    }
}

/// `name` with `-n` before its extension (`report.csv.gz` → `report-2.csv.gz`).
fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    let ext_at = [".csv", ".json", ".xlsx", ".pdf", ".zip", ".gz"]
        .iter()
        .filter_map(|e| name.find(e))
        .min()
        .or_else(|| name.rfind('.'))
        .unwrap_or(name.len());
    format!("{}-{n}{}", &name[..ext_at], &name[ext_at..])
}

/// Writes `src` as `name` (or `name-1`, `name-2` … when taken: nothing is ever overwritten)
/// into `dir` beneath `root`. Every step goes through directory descriptors opened beneath
/// the root without following links, so a link swapped in at any moment cannot move the
/// write elsewhere. `before_write` runs between opening the directory and writing (tests).
fn to_directory_with(
    src: &Path,
    root: &Path,
    dir: &Path,
    name: &str,
    must_mount: bool,
    before_write: &dyn Fn(),
) -> Result<String, DeliveryError> {
    use rustix::fs::{Mode, OFlags};
    let shown = dir.display().to_string();
    let io = |source: std::io::Error| DeliveryError::Io {
        path: shown.clone(),
        source,
    };
    let outside = || {
        DeliveryError::Refused(format!(
            "{shown} leads outside {} through a symbolic link",
            root.display()
        ))
    };
    let rest = dir.strip_prefix(root).map_err(|_| outside())?;
    // The root is the administrator's (it may itself be a link, as /media can be).
    let mut cur = match rustix::fs::open(
        root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) if must_mount => {
            return Err(DeliveryError::NotMounted(shown));
        }
        Err(e) => return Err(io(e.into())),
    };
    let base_dev = std::fs::metadata(root.parent().unwrap_or(root))
        .map_err(io)?
        .dev();
    let mounted = |fd: &OwnedFd| rustix::fs::fstat(fd).map(|st| st.st_dev != base_dev);
    for part in rest.components() {
        let Component::Normal(part) = part else {
            return Err(outside());
        };
        let fd = match open_beneath(&cur, part) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                // Never create folders on the SD card's bare mount point; missing folders on
                // the mounted stick or share are created.
                if must_mount && !mounted(&cur).map_err(|e| io(e.into()))? {
                    return Err(DeliveryError::NotMounted(shown));
                }
                match rustix::fs::mkdirat(&cur, part, Mode::from_raw_mode(0o750)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(io(e.into())),
                }
                open_beneath(&cur, part).map_err(|e| match e {
                    rustix::io::Errno::LOOP
                    | rustix::io::Errno::XDEV
                    | rustix::io::Errno::NOTDIR => outside(),
                    e => io(e.into()),
                })?
            }
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::XDEV | rustix::io::Errno::NOTDIR) => {
                return Err(outside());
            }
            Err(e) => return Err(io(e.into())),
        };
        cur = fd;
    }
    if must_mount && !mounted(&cur).map_err(|e| io(e.into()))? {
        return Err(DeliveryError::NotMounted(shown));
    }
    before_write();
    // A fresh, unguessable temp name, created exclusively (never through an existing link)
    // in the opened directory, then moved to a free name without replacing anything.
    let tmp = format!(".kasad-{}.part", crate::auth::random_token::<9>());
    let write = || -> std::io::Result<String> {
        let fd = rustix::fs::openat(
            &cur,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o640),
        )?;
        let mut to = std::fs::File::from(fd);
        std::io::copy(&mut std::fs::File::open(src)?, &mut to)?;
        to.sync_all()?;
        for n in 0..1000 {
            let target = numbered(name, n);
            match rustix::fs::renameat_with(
                &cur,
                tmp.as_str(),
                &cur,
                target.as_str(),
                rustix::fs::RenameFlags::NOREPLACE,
            ) {
                Ok(()) => return Ok(target),
                Err(rustix::io::Errno::EXIST) => continue,
                // File systems without RENAME_NOREPLACE (some network ones): a hard link,
                // which never replaces either, then the temp name goes.
                Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                    match rustix::fs::linkat(
                        &cur,
                        tmp.as_str(),
                        &cur,
                        target.as_str(),
                        rustix::fs::AtFlags::empty(),
                    ) {
                        Ok(()) => {
                            rustix::fs::unlinkat(&cur, tmp.as_str(), rustix::fs::AtFlags::empty())?;
                            return Ok(target);
                        }
                        Err(rustix::io::Errno::EXIST) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(std::io::Error::other(format!(
            "{name} and 999 numbered names are taken"
        )))
    };
    let target = write().map_err(|e| {
        let _ = rustix::fs::unlinkat(&cur, tmp.as_str(), rustix::fs::AtFlags::empty());
        io(e)
    })?;
    // Some network file systems refuse to fsync a directory; the file itself is synced.
    if let Err(e) = rustix::fs::fsync(&cur) {
        tracing::warn!(dir = %shown, error = %e, "could not sync the directory");
    }
    Ok(format!("written to {}", dir.join(target).display()))
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
        .map_err(|e| DeliveryError::Webhook(format!("{}: {}", origin(url), e.without_url())))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(DeliveryError::Webhook(format!(
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
    fn directory_writes_never_follow_links_out_of_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let src = root.path().join("export.csv");
        std::fs::write(&src, b"a,b\r\n").unwrap();
        // A directory link under the root that leads outside is refused.
        let link = root.path().join("usb");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        let e = to_directory(&src, root.path(), &link.join("x"), "f.csv", false).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing is created outside"
        );
        // A file link at the target name is neither written through nor replaced: the export
        // takes the next free name.
        let dir = root.path().join("out");
        std::fs::create_dir(&dir).unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("f.csv")).unwrap();
        let done = to_directory(&src, root.path(), &dir, "f.csv", false).unwrap();
        assert!(done.ends_with("f-1.csv"), "{done}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(dir.join("f-1.csv")).unwrap(), b"a,b\r\n");
        assert!(dir.join("f.csv").is_symlink());
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|d| d.file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temp file left: {names:?}");
    }

    /// Finding 9: the directory was checked for links and then written by path, so a link
    /// swapped in between moved the file elsewhere (the data directory, say).
    #[test]
    fn a_link_swapped_in_during_delivery_writes_nothing_outside() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let src = root.path().join("export.csv");
        std::fs::write(&src, b"data").unwrap();
        let dir = root.path().join("usb").join("reports");
        std::fs::create_dir_all(&dir).unwrap();
        let (real, out) = (dir.clone(), outside.path().to_path_buf());
        let moved = root.path().join("usb").join("reports.old");
        let swap = || {
            // After the checks, before the write: the folder becomes a link to elsewhere.
            std::fs::rename(&real, &moved).unwrap();
            std::os::unix::fs::symlink(&out, &real).unwrap();
        };
        to_directory_with(&src, root.path(), &dir, "f.csv", false, &swap).unwrap();
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing written outside the root"
        );
        // The file went into the folder that was opened (now renamed), inside the root.
        assert_eq!(std::fs::read(moved.join("f.csv")).unwrap(), b"data");
    }

    #[test]
    fn nothing_is_overwritten() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("r.csv.gz"), b"older").unwrap();
        let src = root.path().join("src");
        for (i, body) in [b"one", b"two"].iter().enumerate() {
            std::fs::write(&src, body).unwrap();
            let done = to_directory(&src, root.path(), &dir, "r.csv.gz", false).unwrap();
            assert!(done.ends_with(&format!("r-{}.csv.gz", i + 1)), "{done}");
        }
        assert_eq!(std::fs::read(dir.join("r.csv.gz")).unwrap(), b"older");
        assert_eq!(std::fs::read(dir.join("r-2.csv.gz")).unwrap(), b"two");
        assert_eq!(numbered("report", 3), "report-3");
        assert_eq!(numbered("a.b.xlsx", 1), "a.b-1.xlsx");
    }

    #[test]
    fn a_reader_never_sees_a_partial_file() {
        use sha2::Digest;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        std::fs::create_dir(&dir).unwrap();
        let versions: Vec<Vec<u8>> = (0..3u8).map(|v| vec![b'a' + v; 8 << 20]).collect();
        let hashes: Vec<_> = versions.iter().map(sha2::Sha256::digest).collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for n in ["f.csv", "f-1.csv", "f-2.csv"] {
                        if let Ok(b) = std::fs::read(dir.join(n)) {
                            seen.push(sha2::Sha256::digest(&b));
                        }
                    }
                }
                seen
            })
        };
        for v in &versions {
            let src = root.path().join("src");
            std::fs::write(&src, v).unwrap();
            to_directory(&src, root.path(), &dir, "f.csv", false).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = reader.join().unwrap();
        assert!(!seen.is_empty());
        assert!(
            seen.iter().all(|h| hashes.contains(h)),
            "a partial file was read"
        );
    }

    #[test]
    fn a_missing_folder_on_a_mounted_target_is_created() {
        // /dev/shm is a tmpfs mounted below /dev (devtmpfs): a mount between root and target.
        let base = tempfile::tempdir_in("/dev/shm").unwrap();
        let src = base.path().join("export.csv");
        std::fs::write(&src, b"x").unwrap();
        let dir = base.path().join("kasad").join("reports");
        let done = to_directory(&src, Path::new("/dev"), &dir, "f.csv", true).unwrap();
        assert!(done.contains("written to"), "{done}");
        assert_eq!(std::fs::read(dir.join("f.csv")).unwrap(), b"x");
        // Not mounted: a folder on the root's own file system.
        let plain = tempfile::tempdir().unwrap();
        let e = to_directory(
            &src,
            plain.path(),
            &plain.path().join("usb/x"),
            "f.csv",
            true,
        )
        .unwrap_err();
        assert!(matches!(e, DeliveryError::NotMounted(_)), "{e}");
        assert!(
            !plain.path().join("usb").exists(),
            "nothing created on the SD card"
        );
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
        assert!(!format!("{d:?}").contains("0123456789abcdef"), "{d:?}");
    }
}
