//! Access tokens: compact JWTs signed with HMAC-SHA256 over a key from the data directory.
//!
//! Verification accepts exactly `alg: HS256` (never `none`, never another algorithm), checks
//! the signature in constant time, then expiry and the token type. Refresh tokens are not
//! JWTs at all (opaque random strings, stored hashed), so one can never pass as an access token.

use super::keys::SecretKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: u32,
    /// Username at issue time (informational).
    pub name: String,
    /// The user's token version: bumped by password changes and disabling.
    pub ver: u32,
    /// Token id (for logout).
    pub jti: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// Always `"access"`.
    pub typ: String,
    /// The session (refresh-token family) it was issued in; 0 for none. Logout ends the
    /// session, and with it the download tickets issued in it.
    #[serde(default)]
    pub fam: u64,
}

/// Why a token is refused (the API shows one generic message; the reason is for logs/tests).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// Header names another algorithm (including `none`).
    #[error("unsupported token algorithm")]
    Algorithm,
    /// Signature does not match.
    #[error("bad token signature")]
    Signature,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// Not an access token.
    #[error("not an access token")]
    WrongType,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
}

fn mac(key: &SecretKey, data: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key.bytes()).expect("any key length");
    m.update(data);
    m
}

/// Signs claims into a token.
pub fn sign(claims: &Claims, key: &SecretKey) -> String {
    let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = B64.encode(serde_json::to_vec(claims).expect("claims serialise"));
    let signing_input = format!("{header}.{body}");
    let sig = B64.encode(mac(key, signing_input.as_bytes()).finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// Verifies a token at `now_s` (Unix seconds) and returns its claims.
pub fn verify(token: &str, key: &SecretKey, now_s: i64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(b), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Header = B64
        .decode(h)
        .ok()
        .and_then(|x| serde_json::from_slice(&x).ok())
        .ok_or(TokenError::Malformed)?;
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm);
    }
    let sig = B64.decode(s).map_err(|_| TokenError::Malformed)?;
    mac(key, format!("{h}.{b}").as_bytes())
        .verify_slice(&sig)
        .map_err(|_| TokenError::Signature)?;
    let claims: Claims = B64
        .decode(b)
        .ok()
        .and_then(|x| serde_json::from_slice(&x).ok())
        .ok_or(TokenError::Malformed)?;
    if claims.typ != "access" {
        return Err(TokenError::WrongType);
    }
    if now_s >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: 1,
            name: "ann".into(),
            ver: 0,
            jti: "j".into(),
            iat: 100,
            exp,
            typ: "access".into(),
            fam: 0,
        }
    }

    #[test]
    fn signed_tokens_verify_until_they_expire() {
        let k = SecretKey::from_bytes([7; 32]);
        let t = sign(&claims(200), &k);
        assert_eq!(verify(&t, &k, 150).unwrap(), claims(200));
        assert_eq!(verify(&t, &k, 200), Err(TokenError::Expired));
        assert_eq!(
            verify(&t, &SecretKey::from_bytes([8; 32]), 150),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn alg_none_and_tampering_are_refused() {
        let k = SecretKey::from_bytes([7; 32]);
        let t = sign(&claims(200), &k);
        let parts: Vec<&str> = t.split('.').collect();
        let none = format!("{}.{}.", B64.encode(br#"{"alg":"none"}"#), parts[1]);
        assert_eq!(verify(&none, &k, 150), Err(TokenError::Algorithm));
        let mut c = claims(200);
        c.sub = 2;
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(serde_json::to_vec(&c).unwrap()),
            parts[2]
        );
        assert_eq!(verify(&forged, &k, 150), Err(TokenError::Signature));
        assert_eq!(verify("abc", &k, 150), Err(TokenError::Malformed));
        let mut r = claims(200);
        r.typ = "refresh".into();
        assert_eq!(verify(&sign(&r, &k), &k, 150), Err(TokenError::WrongType));
    }
}
