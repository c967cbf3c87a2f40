//! The first-run setup code: while no user exists, a one-time code (128 bits, base32) lets
//! whoever can read the daemon's log or `<data_dir>/setup-code` create the first
//! administrator from the login page (`POST /api/setup`). The file is written with mode 0600
//! and removed once the code is used.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// A fresh code: 128 random bits in base32 (26 characters).
pub fn new_code() -> String {
    base32(&crate::random::random_bytes::<16>())
}

/// A code as typed: upper case, without spaces and dashes.
pub fn normalize(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_uppercase)
        .collect()
}

/// Whether `typed` is `code`, compared in constant time.
pub fn matches(code: &str, typed: &str) -> bool {
    let typed = normalize(typed);
    let (a, b) = (code.as_bytes(), typed.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where the code is kept.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("setup-code")
}

/// The code in `data_dir`, made (and written, 0600) when there is none or it is unreadable.
pub fn load_or_create(data_dir: &Path) -> std::io::Result<String> {
    let p = path(data_dir);
    if let Ok(text) = std::fs::read_to_string(&p) {
        let code = normalize(text.lines().next().unwrap_or(""));
        if code.len() == 26 && code.bytes().all(|b| ALPHABET.contains(&b)) {
            return Ok(code);
        }
    }
    let code = new_code();
    write(data_dir, &code)?;
    Ok(code)
}

/// Writes `code` to the file (0600, complete or not at all).
fn write(data_dir: &Path, code: &str) -> std::io::Result<()> {
    let tmp = data_dir.join(format!(
        ".setup-code.{}",
        crate::random::random_token::<6>()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(format!("{code}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path(data_dir))
}

/// Removes the code file (the first administrator exists).
pub fn remove(data_dir: &Path) {
    match std::fs::remove_file(path(data_dir)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "could not remove the used setup code file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn base32_is_rfc_4648() {
        // RFC 4648 §10 test vectors, without padding.
        for (plain, enc) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(plain.as_bytes()), enc);
        }
        assert_eq!(new_code().len(), 26);
        assert_ne!(new_code(), new_code());
    }

    #[test]
    fn codes_match_as_typed_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let code = load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(dir.path()).unwrap(), code, "kept");
        let spaced = format!(" {}-{} ", &code[..13].to_lowercase(), &code[13..]);
        assert!(matches(&code, &spaced));
        assert!(!matches(&code, &code[1..]));
        let other = if code.ends_with('A') { 'B' } else { 'A' };
        assert!(!matches(&code, &format!("{}{other}", &code[..25])));
        remove(dir.path());
        assert!(!path(dir.path()).exists());
        assert_ne!(
            load_or_create(dir.path()).unwrap(),
            code,
            "a new one after removal"
        );
    }
}

/// The running daemon's setup code: present while no user exists.
#[derive(Debug)]
pub struct SetupState {
    code: std::sync::Mutex<Option<String>>,
    dir: PathBuf,
}

impl SetupState {
    /// With `code` (None: users exist) kept in `data_dir`.
    pub fn new(code: Option<String>, data_dir: &Path) -> Self {
        Self {
            code: std::sync::Mutex::new(code),
            dir: data_dir.to_path_buf(),
        }
    }

    /// Whether the first administrator is still to be made.
    pub fn required(&self) -> bool {
        self.code.lock().expect("setup lock").is_some()
    }

    /// Whether `typed` is the code (constant time); false once it was used.
    pub fn check(&self, typed: &str) -> bool {
        self.code
            .lock()
            .expect("setup lock")
            .as_deref()
            .is_some_and(|c| matches(c, typed))
    }

    /// The code for `kasad setup-code`, its file written again when it was lost.
    pub fn current(&self) -> std::io::Result<Option<String>> {
        let guard = self.code.lock().expect("setup lock");
        let Some(code) = guard.as_ref() else {
            return Ok(None);
        };
        if !path(&self.dir).exists() {
            write(&self.dir, code)?;
        }
        Ok(Some(code.clone()))
    }

    /// The code was used: forgotten, its file removed.
    pub fn used(&self) {
        *self.code.lock().expect("setup lock") = None;
        remove(&self.dir);
    }
}
