//! The statement signing key: an Ed25519 key pair made at first use and kept in the data
//! directory (`statement.key`, PKCS#8, mode 0600, in backups), its fingerprint, and the
//! check of a signature that needs no key file (anyone holding a statement can run it).

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;

/// The key's file name in the data directory.
pub const FILE: &str = "statement.key";

/// Serialises the first use: two statements issued at once make one key.
static CREATING: Mutex<()> = Mutex::new(());

/// Why the key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file.
    #[error("statement key {0}: {1}")]
    Io(String, std::io::Error),
    /// Others can read it.
    #[error("statement key {0} is readable by others (mode {1:o}); run chmod 600 on it")]
    Exposed(String, u32),
    /// Not an Ed25519 PKCS#8 key.
    #[error("statement key {0} is not an Ed25519 key")]
    Invalid(String),
}

/// The signing key. Its `Debug` output shows the fingerprint only.
pub struct StatementKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for StatementKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StatementKey({})", self.fingerprint())
    }
}

impl StatementKey {
    /// Loads `dir/statement.key`, making it (0600) when there is none.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join(FILE);
        let name = path.display().to_string();
        let _one = CREATING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let io = |e| KeyError::Io(name.clone(), e);
        let bytes = match read_key(&path, &name)? {
            Some(b) => b,
            None => {
                let doc = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                    .map_err(|_| KeyError::Invalid(name.clone()))?;
                // Written aside, then linked into place: a crash never leaves half a key, and
                // a key another process made meanwhile is kept, never replaced.
                let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
                let _ = std::fs::remove_file(&tmp);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io)?;
                f.write_all(doc.as_ref()).map_err(io)?;
                f.sync_all().map_err(io)?;
                let linked = std::fs::hard_link(&tmp, &path);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => {
                        std::fs::File::open(dir)
                            .and_then(|d| d.sync_all())
                            .map_err(io)?;
                        doc.as_ref().to_vec()
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        read_key(&path, &name)?.ok_or_else(|| KeyError::Invalid(name.clone()))?
                    }
                    Err(e) => return Err(io(e)),
                }
            }
        };
        let pair = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|_| KeyError::Invalid(name))?;
        Ok(Self { pair })
    }

    /// The public key, 32 bytes.
    pub fn public_key(&self) -> [u8; 32] {
        self.pair
            .public_key()
            .as_ref()
            .try_into()
            .expect("an Ed25519 public key is 32 bytes")
    }

    /// The public key's fingerprint ([`fingerprint`]).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public_key())
    }

    /// Signs `msg`: 64 bytes.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.pair
            .sign(msg)
            .as_ref()
            .try_into()
            .expect("an Ed25519 signature is 64 bytes")
    }
}

/// The key file's bytes, `None` when there is none; refused when others can read it.
fn read_key(path: &Path, name: &str) -> Result<Option<Vec<u8>>, KeyError> {
    match std::fs::read(path) {
        Ok(b) => {
            let mode = std::fs::metadata(path)
                .map_err(|e| KeyError::Io(name.into(), e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(KeyError::Exposed(name.into(), mode & 0o777));
            }
            Ok(Some(b))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KeyError::Io(name.into(), e)),
    }
}

/// `SHA256:` and the unpadded base64 of the public key's SHA-256 (as OpenSSH shows keys).
pub fn fingerprint(public_key: &[u8]) -> String {
    use base64::Engine;
    let digest = Sha256::digest(public_key);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// Whether `sig` is `public_key`'s signature of `msg`.
pub fn verify(public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(msg, sig)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_0600_and_signs_what_verify_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let a = StatementKey::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = StatementKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key(), "loaded, not made again");
        let sig = a.sign(b"statement");
        assert!(verify(&b.public_key(), b"statement", &sig));
        assert!(!verify(&b.public_key(), b"statemenT", &sig));
        let other = tempfile::tempdir().unwrap();
        let c = StatementKey::load_or_create(other.path()).unwrap();
        assert!(!verify(&c.public_key(), b"statement", &sig));
        assert!(a.fingerprint().starts_with("SHA256:"));
        assert_eq!(a.fingerprint().len(), 7 + 43);
        assert!(!format!("{a:?}").contains("PRIVATE"));
        std::fs::set_permissions(
            dir.path().join(FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(matches!(
            StatementKey::load_or_create(dir.path()),
            Err(KeyError::Exposed(..))
        ));
    }
}
