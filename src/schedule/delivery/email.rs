//! Delivery by e-mail through `[smtp]` (lettre over rustls): the file attached up to
//! `max_attachment_mb`, else a download link or a pointer to the export history.

use super::{DeliveryError, Parcel};
use crate::config::Settings;

/// Sends the run's export to `recipients`; returns what was done.
pub(super) async fn deliver(
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
    crate::notify::send_mail(msg, s).await?;
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
