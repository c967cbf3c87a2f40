//! Secret keys kept in the data directory: created on first start from the OS random source,
//! written with mode 0600, never logged.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// A 32-byte secret whose `Debug` output is redacted.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// A key from fixed bytes (tests).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }
}

/// Loads the existing key at `path`. Refuses a key file that others can read or that has the
/// wrong size.
pub fn load(path: &Path) -> std::io::Result<SecretKey> {
    let b = std::fs::read(path)?;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is readable by others (mode {:o}); run chmod 600 on it",
            path.display(),
            mode & 0o777
        )));
    }
    let key: [u8; 32] = b
        .try_into()
        .map_err(|_| std::io::Error::other(format!("{} is not a 32-byte key", path.display())))?;
    Ok(SecretKey(key))
}

/// Loads the key at `path` ([`load`]), creating it (mode 0600) when missing.
pub fn load_or_create(path: &Path) -> std::io::Result<SecretKey> {
    match load(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = crate::random::random_bytes::<32>();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            f.write_all(&key)?;
            f.sync_all()?;
            Ok(SecretKey(key))
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        let a = load_or_create(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = load_or_create(&p).unwrap();
        assert_eq!(a.bytes(), b.bytes());
        assert_eq!(format!("{a:?}"), "SecretKey(<redacted>)");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            load_or_create(&p)
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
    }
}
