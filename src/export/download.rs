//! What a download of a finished export answers, HTTP library aside: whether it may be
//! downloaded at all (expired, not finished), its headers (`Content-Type`,
//! `Content-Disposition`, `ETag`, `Repr-Digest`, `Accept-Ranges`), conditional requests
//! (`If-None-Match`, `If-Range`) and a single `bytes=` range. The API handler streams the
//! part of the file this says.

use super::{ExportRecord, Status};
use crate::clock::rfc3339;

/// Why an export cannot be downloaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    /// Its file expired.
    #[error("Export file has expired and is no longer available")]
    Expired {
        /// When, RFC 3339.
        expired_at: Option<String>,
    },
    /// It is not finished.
    #[error("Export '{id}' is {status}; download it once it is completed")]
    NotReady {
        /// The export.
        id: String,
        /// Its status, as the API names it.
        status: String,
    },
}

/// What the request asked, from its headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    /// `If-None-Match`.
    pub if_none_match: Option<&'a str>,
    /// `If-Range`.
    pub if_range: Option<&'a str>,
    /// `Range`.
    pub range: Option<&'a str>,
}

/// How to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 with the whole file.
    Whole,
    /// 206 with `count` bytes from `start`.
    Part {
        /// First byte.
        start: u64,
        /// Bytes.
        count: u64,
    },
    /// 304: the client has it.
    NotModified,
    /// 416: the range lies outside the file.
    Unsatisfiable,
}

/// The answer and its headers (name, value) for a download of `rec`, whose file has `len`
/// bytes.
pub fn answer(rec: &ExportRecord, len: u64, ask: Ask<'_>) -> (Answer, Vec<(&'static str, String)>) {
    let sha = rec.checksum_sha256.clone().unwrap_or_default();
    let etag = format!("\"{}\"", &sha[..sha.len().min(32)]);
    let name = rec.file_name.clone().unwrap_or_else(|| rec.disk_name());
    let mut h = vec![
        ("content-type", rec.mime_type().to_owned()),
        (
            "content-disposition",
            format!("attachment; filename=\"{name}\""),
        ),
        ("etag", etag.clone()),
        ("accept-ranges", "bytes".into()),
        ("repr-digest", format!("sha-256=:{}:", hex_to_b64(&sha))),
    ];
    if ask.if_none_match == Some(etag.as_str()) {
        return (Answer::NotModified, h);
    }
    let range = match ask.if_range {
        Some(v) if v != etag => Ok(None),
        _ => parse_range(ask.range, len),
    };
    let answer = match range {
        Err(()) => {
            h.push(("content-range", format!("bytes */{len}")));
            return (Answer::Unsatisfiable, h);
        }
        Ok(None) => Answer::Whole,
        Ok(Some((s, e))) => {
            h.push(("content-range", format!("bytes {s}-{e}/{len}")));
            Answer::Part {
                start: s,
                count: e - s + 1,
            }
        }
    };
    let count = match answer {
        Answer::Part { count, .. } => count,
        _ => len,
    };
    h.push(("content-length", count.to_string()));
    (answer, h)
}

/// Whether `rec` can be downloaded at `now_ms`.
pub fn check(rec: &ExportRecord, now_ms: i64) -> Result<(), DownloadError> {
    if rec.is_expired(now_ms) {
        return Err(DownloadError::Expired {
            expired_at: rec.expires_ms.map(rfc3339),
        });
    }
    if rec.status != Status::Completed {
        return Err(DownloadError::NotReady {
            id: rec.id.clone(),
            status: serde_json::to_value(rec.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "not ready".into()),
        });
    }
    Ok(())
}

/// One `bytes=` range of a request, resolved against `len`: Ok(None) = whole file.
fn parse_range(range: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = range else {
        return Ok(None);
    };
    let spec = v.strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Ok(None); // multiple ranges: send the whole file (allowed by RFC 9110)
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        (s, "") => (s.parse().map_err(|_| ())?, len.saturating_sub(1)),
        (s, e) => (
            s.parse().map_err(|_| ())?,
            e.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1)),
        ),
    };
    if start >= len || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// Hex (a SHA-256) as base64, for `Repr-Digest`.
fn hex_to_b64(hex: &str) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_against_the_length() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=-4"), 10), Ok(Some((6, 9))));
        assert_eq!(parse_range(Some("bytes=7-"), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(Some("bytes=5-99"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        for bad in [
            "bytes=10-",
            "bytes=-0",
            "bytes=4-2",
            "items=0-1",
            "bytes=x-1",
        ] {
            assert_eq!(parse_range(Some(bad), 10), Err(()), "{bad}");
        }
    }
}
