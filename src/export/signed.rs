//! Signed statements as files, and their check.
//!
//! - JSON: `{"statement":S,"signature":G}` and a newline, where `S` is the statement in
//!   serde_json's compact form (it holds the signer's public key) and `G` is
//!   `{"algorithm":"Ed25519","public_key","fingerprint","value"}` with the signature of `S`'s
//!   bytes. The check rebuilds the whole file from what it parsed: any other byte anywhere
//!   (a space, a reordered key, a changed digit) fails it.
//! - CSV: the statement's rows, then a last line `signature,Ed25519,<public key>,<value>` whose
//!   value signs every byte before that line. The rows carry the public key too.
//! - PDF: the document, with the signed JSON attached (`statement.json`) and, in its
//!   information dictionary, `/KasadStatementSignature (ed25519:<hex>)`: the signature of the
//!   file's bytes with those 128 hex digits as zeros. The check verifies the attachment as a
//!   JSON statement and the file's signature with the attachment's key.
//!
//! Base64 is the standard alphabet with padding; public keys are the raw 32 bytes.

use crate::auth::signing::{StatementKey, fingerprint, verify as verify_sig};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

/// The marker of the PDF signature; 128 hex digits follow it.
const PDF_MARK: &[u8] = b"ed25519:";
const PDF_KEY: &str = "KasadStatementSignature";
/// The name of the JSON statement attached to a PDF statement.
pub const ATTACHMENT: &str = "statement.json";

/// Why a file is not an untouched statement.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// Neither JSON, CSV nor PDF statement.
    #[error("not a kasad statement: {0}")]
    NotAStatement(String),
    /// The bytes are not as issued (the signature cannot match what was signed).
    #[error("the file was changed after it was issued: {0}")]
    Changed(String),
    /// The signature block itself is damaged.
    #[error("the signature block is damaged: {0}")]
    Damaged(String),
    /// The signature does not match the content.
    #[error(
        "the signature does not match the content: the statement was changed or not signed by this key"
    )]
    BadSignature,
    /// Signed by another key than the one expected.
    #[error("signed by {found}, not by the expected key {expected}")]
    WrongSigner {
        /// The fingerprint asked for.
        expected: String,
        /// The statement's signer.
        found: String,
    },
}

/// What an untouched statement says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `json`, `csv` or `pdf`.
    pub format: &'static str,
    /// The signer's public key.
    pub public_key: [u8; 32],
    /// Its fingerprint.
    pub fingerprint: String,
}

/// The JSON statement file of `statement` (an object; its `public_key` is set here).
pub fn sign_json(mut statement: Value, key: &StatementKey) -> Vec<u8> {
    let pk = key.public_key();
    statement["public_key"] = json!(B64.encode(pk));
    statement["fingerprint"] = json!(key.fingerprint());
    let canon = statement.to_string();
    let block = json!({
        "algorithm": "Ed25519",
        "public_key": B64.encode(pk),
        "fingerprint": key.fingerprint(),
        "value": B64.encode(key.sign(canon.as_bytes())),
    });
    format!("{{\"statement\":{canon},\"signature\":{block}}}\n").into_bytes()
}

/// The CSV statement file: `rows` (each line ending in CRLF, holding the public key) and the
/// signature line.
pub fn sign_csv(mut rows: Vec<u8>, key: &StatementKey) -> Vec<u8> {
    if !rows.ends_with(b"\r\n") {
        rows.extend_from_slice(b"\r\n");
    }
    let sig = key.sign(&rows);
    rows.extend_from_slice(csv_line(&key.public_key(), &sig).as_bytes());
    rows
}

fn csv_line(pk: &[u8], sig: &[u8]) -> String {
    format!(
        "signature,Ed25519,{},{}\r\n",
        B64.encode(pk),
        B64.encode(sig)
    )
}

/// Attaches the signed JSON statement `json` to `pdf` and signs the result.
pub fn sign_pdf(pdf: &[u8], json: &[u8], key: &StatementKey) -> Result<Vec<u8>, String> {
    use lopdf::{Dictionary, Object, Stream, StringFormat};
    let mut doc = lopdf::Document::load_mem(pdf).map_err(|e| e.to_string())?;
    let mut params = Dictionary::new();
    params.set("Size", Object::Integer(json.len() as i64));
    let mut file = Stream::new(
        Dictionary::from_iter([
            ("Type", Object::Name(b"EmbeddedFile".to_vec())),
            ("Subtype", Object::Name(b"application/json".to_vec())),
            ("Params", Object::Dictionary(params)),
        ]),
        json.to_vec(),
    );
    file.allows_compression = false;
    let file_id = doc.add_object(file);
    let name = || Object::String(ATTACHMENT.as_bytes().to_vec(), StringFormat::Literal);
    let spec = doc.add_object(Dictionary::from_iter([
        ("Type", Object::Name(b"Filespec".to_vec())),
        ("F", name()),
        ("UF", name()),
        (
            "Desc",
            Object::String(b"The signed statement".to_vec(), StringFormat::Literal),
        ),
        ("AFRelationship", Object::Name(b"Source".to_vec())),
        (
            "EF",
            Object::Dictionary(Dictionary::from_iter([("F", Object::Reference(file_id))])),
        ),
    ]));
    let tree = Dictionary::from_iter([(
        "Names",
        Object::Array(vec![name(), Object::Reference(spec)]),
    )]);
    let catalog = doc.catalog_mut().map_err(|e| e.to_string())?;
    catalog.set(
        "Names",
        Object::Dictionary(Dictionary::from_iter([(
            "EmbeddedFiles",
            Object::Dictionary(tree),
        )])),
    );
    catalog.set("AF", Object::Array(vec![Object::Reference(spec)]));
    let mut placeholder = PDF_MARK.to_vec();
    placeholder.extend_from_slice(&[b'0'; 128]);
    let info = Dictionary::from_iter([
        (
            PDF_KEY,
            Object::String(placeholder.clone(), StringFormat::Literal),
        ),
        (
            "KasadStatementKey",
            Object::String(
                B64.encode(key.public_key()).into_bytes(),
                StringFormat::Literal,
            ),
        ),
        (
            "Producer",
            Object::String(b"kasad".to_vec(), StringFormat::Literal),
        ),
    ]);
    let info_id = doc.add_object(info);
    doc.trailer.set("Info", Object::Reference(info_id));
    let mut out = Vec::with_capacity(pdf.len() + json.len() + 1024);
    doc.save_to(&mut out).map_err(|e| e.to_string())?;
    let at = last(&out, &placeholder).ok_or("the signature placeholder is missing")?;
    let sig = key.sign(&out);
    let hex: String = sig.iter().map(|b| format!("{b:02x}")).collect();
    let digits = at + PDF_MARK.len();
    out[digits..digits + 128].copy_from_slice(hex.as_bytes());
    Ok(out)
}

/// Checks a statement file; `expected`: the fingerprint its signer must have.
pub fn verify(bytes: &[u8], expected: Option<&str>) -> Result<Verified, VerifyError> {
    let v = if bytes.starts_with(b"%PDF-") {
        verify_pdf(bytes)?
    } else if bytes.starts_with(b"{") {
        verify_json(bytes)?
    } else if bytes.starts_with(b"section,") || bytes.starts_with(b"\"section\"") {
        verify_csv(bytes)?
    } else {
        return Err(VerifyError::NotAStatement(
            "expected a JSON, CSV or PDF statement".into(),
        ));
    };
    match expected {
        Some(fp) if fp.trim() != v.fingerprint => Err(VerifyError::WrongSigner {
            expected: fp.trim().to_owned(),
            found: v.fingerprint,
        }),
        _ => Ok(v),
    }
}

fn key_of(text: &str) -> Result<[u8; 32], VerifyError> {
    B64.decode(text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| VerifyError::Damaged("the public key is not 32 base64 bytes".into()))
}

fn sig_of(text: &str) -> Result<Vec<u8>, VerifyError> {
    B64.decode(text)
        .ok()
        .filter(|b| b.len() == 64)
        .ok_or_else(|| VerifyError::Damaged("the signature is not 64 base64 bytes".into()))
}

fn verify_json(bytes: &[u8]) -> Result<Verified, VerifyError> {
    // Only the small signature block is parsed: the statement is checked as the bytes it is,
    // so a large hostile upload costs a scan, never a tree of values.
    const HEAD: &[u8] = b"{\"statement\":";
    const MID: &[u8] = b",\"signature\":";
    let body = bytes.strip_prefix(HEAD).ok_or_else(|| {
        VerifyError::NotAStatement("a JSON statement starts {\"statement\":".into())
    })?;
    let cut = body
        .windows(MID.len())
        .rposition(|w| w == MID)
        .ok_or_else(|| VerifyError::Damaged("no signature block".into()))?;
    let (st, rest) = body.split_at(cut);
    let block = rest[MID.len()..]
        .strip_suffix(b"}\n")
        .ok_or_else(|| VerifyError::Changed("the file does not end as issued".into()))?;
    if block.len() > 4096 {
        return Err(VerifyError::Damaged(
            "the signature block is too large".into(),
        ));
    }
    let sig: Value = serde_json::from_slice(block)
        .map_err(|e| VerifyError::Damaged(format!("it does not parse ({e})")))?;
    if sig.to_string().as_bytes() != block {
        return Err(VerifyError::Changed(
            "the signature block's bytes are not the ones issued".into(),
        ));
    }
    let text = |k: &str| {
        sig.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| VerifyError::Damaged(format!("no {k}")))
    };
    if text("algorithm")? != "Ed25519" {
        return Err(VerifyError::Damaged("the algorithm is not Ed25519".into()));
    }
    let pk = key_of(text("public_key")?)?;
    let fp = fingerprint(&pk);
    if text("fingerprint")? != fp {
        return Err(VerifyError::Damaged(
            "the fingerprint is not the public key's".into(),
        ));
    }
    if !verify_sig(&pk, st, &sig_of(text("value")?)?) {
        return Err(VerifyError::BadSignature);
    }
    // The signed statement names the same key (it embeds its signer).
    let embedded = format!("\"public_key\":\"{}\"", text("public_key")?);
    if !st.windows(embedded.len()).any(|w| w == embedded.as_bytes()) {
        return Err(VerifyError::BadSignature);
    }
    Ok(Verified {
        format: "json",
        public_key: pk,
        fingerprint: fp,
    })
}

fn verify_csv(bytes: &[u8]) -> Result<Verified, VerifyError> {
    let body = bytes
        .strip_suffix(b"\r\n")
        .ok_or_else(|| VerifyError::Changed("the last line does not end in CRLF".into()))?;
    let cut = body
        .windows(2)
        .rposition(|w| w == b"\r\n")
        .map_or(0, |p| p + 2);
    let (content, last) = bytes.split_at(cut);
    let line = std::str::from_utf8(last)
        .map_err(|_| VerifyError::Damaged("the signature line is not text".into()))?;
    let parts: Vec<&str> = line.trim_end_matches("\r\n").split(',').collect();
    let [tag, alg, pk, sig] = parts[..] else {
        return Err(VerifyError::Damaged(
            "the last line is not signature,Ed25519,<key>,<value>".into(),
        ));
    };
    if tag != "signature" || alg != "Ed25519" {
        return Err(VerifyError::Damaged(
            "the last line is not signature,Ed25519,<key>,<value>".into(),
        ));
    }
    let key = key_of(pk)?;
    let sig = sig_of(sig)?;
    if csv_line(&key, &sig) != line {
        return Err(VerifyError::Changed(
            "the signature line is not as issued".into(),
        ));
    }
    if !content.windows(pk.len()).any(|w| w == pk.as_bytes()) {
        return Err(VerifyError::BadSignature);
    }
    if !verify_sig(&key, content, &sig) {
        return Err(VerifyError::BadSignature);
    }
    Ok(Verified {
        format: "csv",
        public_key: key,
        fingerprint: fingerprint(&key),
    })
}

fn verify_pdf(bytes: &[u8]) -> Result<Verified, VerifyError> {
    // The information dictionary is the last object written: its entries are the last
    // occurrences (a name in the attached statement cannot stand in for them).
    let key = format!("/{PDF_KEY}");
    let at = last(bytes, key.as_bytes())
        .ok_or_else(|| VerifyError::Damaged("no statement signature in the PDF".into()))?;
    let rest = &bytes[at + key.len()..];
    let mark = rest
        .windows(PDF_MARK.len())
        .take(8)
        .position(|w| w == PDF_MARK)
        .ok_or_else(|| VerifyError::Damaged("the PDF signature has no ed25519: mark".into()))?;
    let digits = at + key.len() + mark + PDF_MARK.len();
    let hex = bytes
        .get(digits..digits + 128)
        .ok_or_else(|| VerifyError::Damaged("the PDF signature is cut short".into()))?;
    let sig: Vec<u8> = hex
        .chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .filter(|s| {
                    s.bytes()
                        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
                })
                .and_then(|s| u8::from_str_radix(s, 16).ok())
        })
        .collect::<Option<_>>()
        .ok_or_else(|| VerifyError::Damaged("the PDF signature is not lower-case hex".into()))?;
    let kkey = b"/KasadStatementKey";
    let k = last(bytes, kkey)
        .ok_or_else(|| VerifyError::Damaged("the PDF names no statement key".into()))?;
    let tail = &bytes[k + kkey.len()..];
    let open = tail.iter().take(4).position(|c| *c == b'(');
    let pk = open
        .and_then(|o| {
            let t = &tail[o + 1..];
            let close = t.iter().take(64).position(|c| *c == b')')?;
            std::str::from_utf8(&t[..close]).ok()
        })
        .ok_or_else(|| VerifyError::Damaged("the PDF's statement key does not read".into()))?;
    let pk = key_of(pk)?;
    // The whole file first, before anything in it is parsed.
    let mut signed = bytes.to_vec();
    signed[digits..digits + 128].fill(b'0');
    if !verify_sig(&pk, &signed, &sig) {
        return Err(VerifyError::BadSignature);
    }
    let json = attachment(bytes)?;
    let inner = verify_json(&json).map_err(|e| match e {
        VerifyError::NotAStatement(m) => VerifyError::Changed(format!("the attached {m}")),
        other => other,
    })?;
    if inner.public_key != pk {
        return Err(VerifyError::BadSignature);
    }
    Ok(Verified {
        format: "pdf",
        ..inner
    })
}

/// Where `needle` last occurs in `hay`.
fn last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// The JSON statement attached to a PDF statement.
fn attachment(bytes: &[u8]) -> Result<Vec<u8>, VerifyError> {
    let changed = |m: &str| VerifyError::Changed(m.to_owned());
    // Signed by the key it names, so made by kasad; still bounded.
    let opts = lopdf::LoadOptions::with_max_decompressed_size(64 * 1024 * 1024);
    let doc = lopdf::Document::load_mem_with_options(bytes, opts)
        .map_err(|e| changed(&format!("the PDF does not parse ({e})")))?;
    let catalog = doc
        .catalog()
        .map_err(|_| changed("the PDF has no catalog"))?;
    let resolve = |o: &lopdf::Object| -> Option<lopdf::Object> {
        match o {
            lopdf::Object::Reference(id) => doc.get_object(*id).ok().cloned(),
            other => Some(other.clone()),
        }
    };
    let found = (|| {
        let names = resolve(catalog.get(b"Names").ok()?)?;
        let files = resolve(names.as_dict().ok()?.get(b"EmbeddedFiles").ok()?)?;
        let list = resolve(files.as_dict().ok()?.get(b"Names").ok()?)?;
        let list = list.as_array().ok()?;
        let spec = list.chunks(2).find_map(|p| {
            (p.first()?.as_str().ok()? == ATTACHMENT.as_bytes()).then(|| p.get(1).cloned())?
        })?;
        let spec = resolve(&spec)?;
        let ef = resolve(spec.as_dict().ok()?.get(b"EF").ok()?)?;
        let file = resolve(ef.as_dict().ok()?.get(b"F").ok()?)?;
        let stream = file.as_stream().ok()?;
        stream.get_plain_content_with_limit(64 * 1024 * 1024).ok()
    })();
    found.ok_or_else(|| VerifyError::NotAStatement(format!("the PDF has no attached {ATTACHMENT}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (StatementKey, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (StatementKey::load_or_create(dir.path()).unwrap(), dir)
    }

    /// Every single-byte change of `file` fails the check (all bytes when short, else a
    /// spread of positions including the first and last 200).
    fn every_change_fails(file: &[u8]) {
        let n = file.len();
        let positions: Vec<usize> = if n <= 4_000 {
            (0..n).collect()
        } else {
            (0..200)
                .chain((200..n - 200).step_by(n / 1500))
                .chain(n - 200..n)
                .collect()
        };
        for i in positions {
            let mut bad = file.to_vec();
            bad[i] ^= if bad[i] == b'0' { 0x01 } else { 0x20 };
            assert!(
                verify(&bad, None).is_err(),
                "byte {i} of {n} changed and still valid"
            );
        }
    }

    #[test]
    fn json_and_csv_statements_verify_untouched_and_fail_on_any_changed_byte() {
        let (k, _d) = key();
        let j = sign_json(
            json!({"issuer": "Flat 2", "total": 12.5, "days": [1, 2.25]}),
            &k,
        );
        let ok = verify(&j, None).unwrap();
        assert_eq!(
            (ok.format, ok.fingerprint.clone()),
            ("json", k.fingerprint())
        );
        every_change_fails(&j);
        let c = sign_csv(
            format!(
                "section,table,item\r\nstatement,key,{}\r\n",
                B64.encode(k.public_key())
            )
            .into_bytes(),
            &k,
        );
        assert_eq!(verify(&c, None).unwrap().format, "csv");
        every_change_fails(&c);
        assert!(matches!(
            verify(&c, Some("SHA256:nope")),
            Err(VerifyError::WrongSigner { .. })
        ));
        assert!(verify(&c, Some(&k.fingerprint())).is_ok());
    }

    #[test]
    fn a_statement_signed_by_another_key_is_told_apart() {
        let (a, _d) = key();
        let (b, _e) = key();
        let j = sign_json(json!({"issuer": "x"}), &a);
        assert!(verify(&j, Some(&b.fingerprint())).is_err());
        // Swapping in another key's signature block fails too.
        let other = sign_json(json!({"issuer": "x"}), &b);
        let text = String::from_utf8(j).unwrap();
        let sig_b = &String::from_utf8(other).unwrap()[..];
        let forged = format!(
            "{}{}",
            &text[..text.find(",\"signature\"").unwrap()],
            &sig_b[sig_b.find(",\"signature\"").unwrap()..]
        );
        assert_eq!(
            verify(forged.as_bytes(), None),
            Err(VerifyError::BadSignature)
        );
    }
}
