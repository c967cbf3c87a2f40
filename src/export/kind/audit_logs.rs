//! The audit_logs export and its verification. Every row carries its sequence number, its
//! exact time in ms, the previous entry's MAC and its own, so that a filtered slice can be
//! checked on its own (`kasad audit verify-export FILE`): each row's MAC is recomputed with the
//! appliance's audit key, and rows with consecutive sequence numbers must link (`prev` equals
//! the MAC of the row before). Changing any field of any row breaks its MAC. A last column,
//! `chain`, links the rows of this file: `chain[i] = HMAC(key, "kasad audit export" ‖
//! chain[i-1] ‖ mac[i])` from an empty start, so removing, adding or reordering rows anywhere
//! but at the very end breaks the chain of the next row.

use crate::audit::{self, Entry, Event, EventType, Severity};
use crate::auth::keys::SecretKey;
use crate::export::format::{Cell, Sink};
use crate::export::pipeline::{Control, Limits, RenderError};
use crate::export::request::{CreateRequest, RequestError};
use crate::store::Store;
use crate::store::audit::AuditFilter;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

/// The columns of an audit_logs export.
pub const COLUMNS: [&str; 13] = [
    "seq",
    "timestamp",
    "ts_ms",
    "event_type",
    "severity",
    "user_id",
    "username",
    "client",
    "resource",
    "details",
    "prev",
    "mac",
    "chain",
];

/// The next link of the export chain after `prev` for an entry with MAC `mac`.
pub fn chain_link(key: &SecretKey, prev: &str, mac: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut m =
        <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.bytes()).expect("any key length");
    m.update(b"kasad audit export\0");
    m.update(prev.as_bytes());
    m.update(b"\0");
    m.update(mac.as_bytes());
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const PAGE: usize = 4096;

fn bad(message: String) -> RequestError {
    RequestError {
        code: "VALIDATION_ERROR",
        message,
    }
}

/// Names in a request field (a list of strings), each parsed by `parse`.
fn names<T>(
    field: &str,
    v: Option<&Value>,
    parse: impl Fn(&str) -> Option<T>,
    known: &str,
) -> Result<Vec<T>, RequestError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let list = v
        .as_array()
        .ok_or_else(|| bad(format!("{field} must be a list of names")))?;
    list.iter()
        .map(|x| {
            let s = x
                .as_str()
                .ok_or_else(|| bad(format!("{field}: {x} is not a name")))?;
            parse(s).ok_or_else(|| bad(format!("{field}: unknown {s:?}; known: {known}")))
        })
        .collect()
}

/// The audit_logs part of the metadata: its filters and how to verify the file.
pub fn metadata(f: &AuditFilter) -> Value {
    json!({
        "filters": {
            "event_types": f.event_types.iter().map(|t| t.name()).collect::<Vec<_>>(),
            "severity_levels": f.severities,
            "users": f.users,
        },
        "verification": "each row carries its sequence number, exact time (ts_ms), the previous entry's MAC (prev) and its own (mac); check a file with `kasad audit verify-export FILE` on the appliance",
    })
}

/// The entries an audit_logs request selects: its filters and `[start, end)`. Options that
/// only apply to device data are refused rather than ignored.
pub fn filter_of(
    req: &CreateRequest,
    start_ms: i64,
    end_ms: i64,
) -> Result<AuditFilter, RequestError> {
    crate::export::request::refuse_device_options(
        req,
        "use event_types, severity_levels, users and date_range",
    )?;
    if let Some(p) = &req.privacy_options
        && (p.anonymize_ip_addresses == Some(true) || p.hash_device_identifiers == Some(true))
    {
        return Err(bad(
            "audit_logs rows are signed as recorded: anonymize_ip_addresses and hash_device_identifiers cannot apply to them"
                .into(),
        ));
    }
    let types: Vec<String> = EventType::ALL.iter().map(|t| t.name()).collect();
    Ok(AuditFilter {
        event_types: names(
            "event_types",
            req.event_types.as_ref(),
            EventType::parse,
            &types.join(", "),
        )?,
        severities: names(
            "severity_levels",
            req.severity_levels.as_ref(),
            Severity::parse,
            "INFO, WARNING, ERROR, CRITICAL",
        )?,
        users: names("users", req.users.as_ref(), |s| Some(s.to_owned()), "")?,
        start_ms: Some(start_ms),
        end_ms: Some(end_ms),
    })
}

/// Writes the matching entries to `sink` (after its `begin`), oldest first, and finishes it.
pub fn write(
    store: &Store,
    filter: &AuditFilter,
    key: &SecretKey,
    sink: &mut dyn Sink,
    limits: Limits,
    ctl: &Control,
    written: &AtomicU64,
) -> Result<(u64, Value), RenderError> {
    let mut n: u64 = 0;
    let mut after = 0;
    let mut chain = String::new();
    loop {
        let page = store.audit_page(filter, after, PAGE)?;
        for e in &page {
            n += 1;
            if n > limits.max_records {
                return Err(RenderError::TooManyRecords(limits.max_records));
            }
            let details = serde_json::to_string(&e.event.details).unwrap_or_default();
            let (types, sev) = (e.event.event_type.name(), e.event.severity.name());
            chain = chain_link(key, &chain, &e.mac);
            fn text(s: &Option<String>) -> Cell<'_> {
                s.as_deref().map_or(Cell::Null, Cell::Text)
            }
            sink.row(&[
                Cell::Num(e.seq as f64, 0),
                Cell::Time(e.ts_ms),
                Cell::Num(e.ts_ms as f64, 0),
                Cell::Text(&types),
                Cell::Text(sev),
                e.event
                    .user_id
                    .map_or(Cell::Null, |u| Cell::Num(f64::from(u), 0)),
                text(&e.event.username),
                text(&e.event.client),
                text(&e.event.resource),
                Cell::Text(&details),
                Cell::Text(&e.prev),
                Cell::Text(&e.mac),
                Cell::Text(&chain),
            ])?;
        }
        if ctl.cancel.load(Ordering::Relaxed) {
            return Err(RenderError::Cancelled);
        }
        if written.load(Ordering::Relaxed) > limits.max_bytes {
            return Err(RenderError::TooLarge(limits.max_bytes / (1024 * 1024)));
        }
        match page.last() {
            Some(e) if page.len() == PAGE => after = e.seq,
            _ => break,
        }
    }
    let summary = json!({});
    sink.finish(n, &summary)?;
    Ok((n, summary))
}

/// An exported row: the entry as it was stored, and the file's chain value at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    /// The entry.
    pub entry: Entry,
    /// The `chain` column.
    pub chain: String,
}

/// Why an exported audit file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// Not text.
    #[error("the file is not UTF-8 text (CSV or JSON)")]
    NotText,
    /// JSON that does not parse.
    #[error("not valid JSON: {0}")]
    Json(String),
    /// JSON without the export's `data` list.
    #[error("no \"data\" list: not an audit_logs export")]
    NoData,
    /// CSV without the header row.
    #[error("no header row starting with \"seq\": not an audit_logs export with headers")]
    NoHeader,
    /// Nothing in it.
    #[error("the file is empty")]
    Empty,
    /// A column is missing from the header row.
    #[error("no {0:?} column: not an audit_logs export with its header row")]
    NoColumn(&'static str),
    /// A row that is not an entry.
    #[error("row {row}: {problem}")]
    Row {
        /// 1-based row number.
        row: usize,
        /// What is wrong with it.
        problem: String,
    },
}

/// How an exported audit file was changed, by entry `seq`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tampered {
    /// An entry's MAC does not match.
    #[error(
        "entry {0} does not match its MAC: it was changed after it was recorded, or it comes from another appliance"
    )]
    Mac(u64),
    /// An entry does not link to its predecessor.
    #[error("entry {0} does not link to entry {1}")]
    Link(u64, u64),
    /// Entries out of order.
    #[error("entry {0} is out of order")]
    Order(u64),
    /// The file's chain value does not match.
    #[error(
        "the rows before entry {0} were removed, added or reordered (its chain value does not match)"
    )]
    Chain(u64),
}

/// The rows of an exported file (CSV with a header row, or JSON).
pub fn parse_export(bytes: &[u8]) -> Result<Vec<Exported>, FileError> {
    let text = std::str::from_utf8(bytes).map_err(|_| FileError::NotText)?;
    let rows: Vec<Vec<Option<String>>> = if text.trim_start().starts_with('{') {
        json_rows(text)?
    } else {
        csv_rows(text)?
    };
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let row = |problem: String| FileError::Row {
                row: i + 1,
                problem,
            };
            let entry = entry_of(r).map_err(row)?;
            let chain = r[12].clone().ok_or_else(|| row("chain is empty".into()))?;
            Ok(Exported { entry, chain })
        })
        .collect()
}

fn json_rows(text: &str) -> Result<Vec<Vec<Option<String>>>, FileError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| FileError::Json(e.to_string()))?;
    let data = doc["data"].as_array().ok_or(FileError::NoData)?;
    Ok(data
        .iter()
        .map(|r| {
            COLUMNS
                .iter()
                .map(|c| match &r[*c] {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    v => Some(v.to_string()),
                })
                .collect()
        })
        .collect())
}

/// RFC 4180 records (quoted fields may hold delimiters, quotes and line breaks); the
/// delimiter is the one after the header's first column, `seq`.
fn csv_rows(text: &str) -> Result<Vec<Vec<Option<String>>>, FileError> {
    let delimiter = text
        .strip_prefix("seq")
        .and_then(|t| t.chars().next())
        .ok_or(FileError::NoHeader)?;
    let mut records: Vec<Vec<String>> = Vec::new();
    let (mut rec, mut field, mut quoted, mut in_quotes) = (Vec::new(), String::new(), false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (in_quotes, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => in_quotes = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => (in_quotes, quoted) = (true, true),
            (false, c) if c == delimiter => rec.push(unguard(
                std::mem::take(&mut field),
                std::mem::take(&mut quoted),
            )),
            (false, '\r') => {}
            (false, '\n') => {
                rec.push(unguard(
                    std::mem::take(&mut field),
                    std::mem::take(&mut quoted),
                ));
                records.push(std::mem::take(&mut rec));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !rec.is_empty() {
        rec.push(unguard(field, quoted));
        records.push(rec);
    }
    let header = records.first().ok_or(FileError::Empty)?;
    let at: Vec<usize> = COLUMNS
        .iter()
        .map(|c| (header.iter().position(|h| h == c)).ok_or(FileError::NoColumn(c)))
        .collect::<Result<_, _>>()?;
    Ok(records[1..]
        .iter()
        .map(|r| {
            at.iter()
                .map(|&i| r.get(i).filter(|s| !s.is_empty()).cloned())
                .collect()
        })
        .collect())
}

/// Undoes the CSV writer's formula guard (a `'` before a leading `=`, `+`, `-`, `@`, tab, CR).
fn unguard(s: String, quoted: bool) -> String {
    let mut it = s.chars();
    if quoted
        && it.next() == Some('\'')
        && it
            .next()
            .is_some_and(|c| matches!(c, '=' | '+' | '-' | '@' | '\t' | '\r'))
    {
        s[1..].to_owned()
    } else {
        s
    }
}

fn entry_of(r: &[Option<String>]) -> Result<Entry, String> {
    let get = |i: usize| r.get(i).cloned().flatten();
    let need = |i: usize| get(i).ok_or(format!("{} is empty", COLUMNS[i]));
    let num = |i: usize| -> Result<i64, String> {
        need(i)?
            .parse::<i64>()
            .map_err(|_| format!("{} is not a whole number", COLUMNS[i]))
    };
    let event_type: EventType = serde_json::from_value(Value::String(need(3)?))
        .map_err(|_| "unknown event_type".to_owned())?;
    let severity: Severity = serde_json::from_value(Value::String(need(4)?))
        .map_err(|_| "unknown severity".to_owned())?;
    let user_id = match get(5) {
        Some(s) => Some(s.parse::<u32>().map_err(|_| "user_id is not a number")?),
        None => None,
    };
    let details: Value = match get(9) {
        Some(s) => serde_json::from_str(&s).map_err(|_| "details is not JSON")?,
        None => Value::Null,
    };
    // The readable time is not covered by the MAC: it must say exactly what ts_ms says.
    let ts_ms = num(2)?;
    let shown = chrono::DateTime::parse_from_rfc3339(&need(1)?)
        .map_err(|_| "timestamp is not an RFC 3339 time")?;
    if shown.timestamp_millis() != ts_ms {
        return Err("timestamp does not match ts_ms (the time was changed)".into());
    }
    Ok(Entry {
        seq: u64::try_from(num(0)?).map_err(|_| "seq is negative")?,
        ts_ms,
        event: Event {
            event_type,
            severity,
            user_id,
            username: get(6),
            client: get(7),
            resource: get(8),
            details,
        },
        prev: need(10)?,
        mac: need(11)?,
    })
}

/// Checks every entry's MAC, the links between consecutive entries and the file's chain; the
/// number checked.
pub fn verify(key: &SecretKey, rows: &[Exported]) -> Result<usize, Tampered> {
    let mut last: Option<&Entry> = None;
    let mut chain = String::new();
    for r in rows {
        let e = &r.entry;
        if audit::compute_mac(key, e) != e.mac {
            return Err(Tampered::Mac(e.seq));
        }
        if let Some(p) = last
            && e.seq == p.seq + 1
            && e.prev != p.mac
        {
            return Err(Tampered::Link(e.seq, p.seq));
        }
        if last.is_some_and(|p| e.seq <= p.seq) {
            return Err(Tampered::Order(e.seq));
        }
        chain = chain_link(key, &chain, &e.mac);
        if chain != r.chain {
            return Err(Tampered::Chain(e.seq));
        }
        last = Some(e);
    }
    Ok(rows.len())
}
