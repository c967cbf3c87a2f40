//! Password hashing with Argon2id (OWASP parameters: 19 MiB, t = 2, p = 1). Hashing is slow by
//! design: callers run it on a blocking thread. Unknown users are checked against a dummy hash
//! so that a login takes as long whether or not the user exists.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use std::sync::LazyLock;

/// Shortest password accepted.
pub const MIN_LEN: usize = 8;

/// Why a password cannot be set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    /// Too short.
    #[error("password must be at least {MIN_LEN} characters")]
    TooShort,
    /// Too long (argon2 is fine, but a megabyte of password is a mistake or an attack).
    #[error("password must be at most 1024 bytes")]
    TooLong,
    /// The hasher failed.
    #[error("password hashing failed")]
    Hash,
}

/// Hashes a password into a PHC string.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_LEN {
        return Err(PasswordError::TooShort);
    }
    if password.len() > 1024 {
        return Err(PasswordError::TooLong);
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hash)
}

static DUMMY: LazyLock<String> =
    LazyLock::new(|| hash("dummy password for unknown users").unwrap_or_default());

/// Checks a password against a PHC hash; with `None` (unknown user) it spends the same time
/// on a dummy hash and returns false.
pub fn verify(password: &str, phc: Option<&str>) -> bool {
    let target = phc.unwrap_or(DUMMY.as_str());
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), target)
        .is_ok();
    ok && phc.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", Some(&h)));
        assert!(!verify("wrong horse!", Some(&h)));
        assert!(!verify("correct horse", None));
        assert_eq!(hash("short"), Err(PasswordError::TooShort));
    }
}
