//! The AES "securePassthrough" transport (kasa-protocol.md §1d): an RSA handshake that hands
//! the client an AES-128-CBC key and IV for the session, `login_device` with the v1 or v2
//! password field, and every SMART request wrapped, encrypted and base64-encoded in a
//! `securePassthrough` call carrying the session token. The session is renewed before its
//! `TIMEOUT` lapses; a session timeout (9999) or a 403 logs in again and retries once.

use super::klap::Credentials;
use super::klap_client::{bounded_body, cookie_value, http_err, lifetime, renew_at};
use super::{Error, Result};
use crate::clock::SharedClock;
use aes::Aes128;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use rsa::pkcs8::EncodePublicKey;
use serde_json::{Value, json};
use sha1::Digest;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// The device's "login failed" code (try the next candidate credential).
pub const LOGIN_ERROR: i64 = -1501;
/// The device's "session timeout" code (log in again).
pub const SESSION_TIMEOUT: i64 = 9999;

/// The client's RSA key pair (1024 bits, as the devices expect), made once per process.
pub struct KeyPair {
    private: rsa::PrivateKey,
    /// The public key as PEM (SubjectPublicKeyInfo, base64 on one line), as sent in the
    /// handshake.
    pub pem: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair").finish_non_exhaustive()
    }
}

/// The process's key pair (generated on first use).
pub fn key_pair() -> Result<&'static KeyPair> {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    if let Some(k) = KEYS.get() {
        return Ok(k);
    }
    let fail = |e: &dyn std::fmt::Display| Error::Http(format!("RSA key: {e}"));
    let private =
        rsa::PrivateKey::new(&mut crypto_common::getrandom::SysRng, 1024).map_err(|e| fail(&e))?;
    let der = private
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| fail(&e))?;
    // As python-kasa sends it (and devices are known to take): the base64 on one line.
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        B64.encode(der.as_bytes())
    );
    Ok(KEYS.get_or_init(|| KeyPair { private, pem }))
}

/// A session's AES-128-CBC key and IV (fixed for the session).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionCipher {
    key: [u8; 16],
    iv: [u8; 16],
}

impl std::fmt::Debug for SessionCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCipher").finish_non_exhaustive()
    }
}

impl SessionCipher {
    /// A cipher from 32 bytes: key ‖ IV.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        if b.len() != 32 {
            return Err(Error::Decode(format!(
                "session key of {} bytes, expected 32",
                b.len()
            )));
        }
        let mut c = Self {
            key: [0; 16],
            iv: [0; 16],
        };
        c.key.copy_from_slice(&b[..16]);
        c.iv.copy_from_slice(&b[16..]);
        Ok(c)
    }

    /// The key ‖ IV the handshake carries.
    pub fn to_bytes(&self) -> Vec<u8> {
        [self.key, self.iv].concat()
    }

    /// Decrypts the handshake's `key` (base64 of RSA PKCS#1 v1.5) with our private key.
    pub fn from_handshake(keys: &KeyPair, b64: &str) -> Result<Self> {
        let sealed = B64
            .decode(b64)
            .map_err(|e| Error::Decode(format!("handshake key is not base64: {e}")))?;
        // rsa 0.10 rejects bad padding implicitly (a synthetic plaintext): a wrong length is
        // then the only sign, and fails here.
        let plain = keys
            .private
            .pkcs1v15_decrypt(&sealed)
            .map_err(|e| Error::Decode(format!("handshake key does not decrypt: {e}")))?;
        Self::from_bytes(&plain)
    }

    /// base64 of the AES-128-CBC/PKCS#7 ciphertext.
    pub fn seal(&self, plain: &[u8]) -> String {
        B64.encode(
            cbc::Encryptor::<Aes128>::new(&self.key.into(), &self.iv.into())
                .encrypt_padded_vec::<Pkcs7>(plain),
        )
    }

    /// Decrypts base64 of AES-128-CBC/PKCS#7.
    pub fn open(&self, b64: &str) -> Result<Vec<u8>> {
        let ct = B64
            .decode(b64)
            .map_err(|e| Error::Decode(format!("passthrough payload is not base64: {e}")))?;
        cbc::Decryptor::<Aes128>::new(&self.key.into(), &self.iv.into())
            .decrypt_padded_vec::<Pkcs7>(&ct)
            .map_err(|_| Error::Decode("passthrough payload does not decrypt".into()))
    }
}

fn sha1_hex(s: &str) -> String {
    sha1::Sha1::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A public key from the PEM of a handshake, with or without the base64 wrapped (devices take
/// both; python-kasa sends one line).
pub fn public_key_from_pem(pem: &str) -> Result<rsa::PublicKey> {
    use rsa::pkcs8::DecodePublicKey;
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    let der = B64
        .decode(b64)
        .map_err(|e| Error::Decode(format!("public key is not base64: {e}")))?;
    rsa::PublicKey::from_public_key_der(&der)
        .map_err(|e| Error::Decode(format!("not an RSA public key: {e}")))
}

/// The `login_device` parameters: `username` = b64(hex(sha1(e-mail))); with login version 2
/// `password2` = b64(hex(sha1(password))), else `password` = b64(password).
pub fn login_params(c: &Credentials, login_version: u8) -> Value {
    let username = B64.encode(sha1_hex(&c.username));
    if login_version >= 2 {
        json!({"username": username, "password2": B64.encode(sha1_hex(&c.password))})
    } else {
        json!({"username": username, "password": B64.encode(&c.password)})
    }
}

#[derive(Debug)]
struct Live {
    cipher: SessionCipher,
    cookie: String,
    token: String,
    renew_at: Instant,
}

/// An AES securePassthrough connection to one device.
#[derive(Debug)]
pub struct AesClient {
    http: reqwest::Client,
    base: String,
    login_version: Option<u8>,
    candidates: Arc<Vec<Credentials>>,
    clock: SharedClock,
    live: Option<Live>,
}

/// The outer answer: `error_code` and `result`.
fn outer(v: &Value, what: &str) -> Result<Value> {
    match v.get("error_code").and_then(Value::as_i64) {
        Some(0) => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
        Some(code) => Err(Error::Device {
            module: "aes".into(),
            method: what.into(),
            code,
            msg: if code == SESSION_TIMEOUT {
                "session timeout".into()
            } else {
                "device error".into()
            },
        }),
        None => Err(Error::Decode(format!("{what}: answer has no error_code"))),
    }
}

fn is_session_lost(e: &Error) -> bool {
    matches!(e, Error::Device { code, .. } if *code == SESSION_TIMEOUT)
        || matches!(e, Error::Http(m) if m.contains("403"))
}

impl AesClient {
    /// A client for the device at `addr` (its HTTP port) logging in with the `candidates` in
    /// order. Only a device that announced login version 1 gets the v1 `password` field (the
    /// password itself, in base64); all others, and one whose version is not known yet, get
    /// the v2 `password2` (a hash).
    pub fn new(
        http: reqwest::Client,
        addr: SocketAddr,
        login_version: Option<u8>,
        candidates: Arc<Vec<Credentials>>,
        clock: SharedClock,
    ) -> Self {
        Self {
            http,
            base: format!("http://{addr}/app"),
            login_version,
            candidates,
            clock,
            live: None,
        }
    }

    /// POSTs JSON (with an explicit length: devices answer 500 to chunked bodies).
    async fn post(
        &self,
        url: &str,
        cookie: Option<&str>,
        body: &Value,
    ) -> Result<reqwest::Response> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::Decode(e.to_string()))?;
        let mut req = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .header("requestByApp", "true")
            .header(reqwest::header::CONTENT_LENGTH, bytes.len())
            .body(bytes);
        if let Some(c) = cookie {
            req = req.header(reqwest::header::COOKIE, format!("TP_SESSIONID={c}"));
        }
        let resp = req.send().await.map_err(http_err)?;
        if resp.status() != reqwest::StatusCode::OK {
            // Never the URL: it carries the session token.
            return Err(Error::Http(format!(
                "the device answered {}",
                resp.status()
            )));
        }
        Ok(resp)
    }

    async fn json(resp: reqwest::Response) -> Result<Value> {
        let b = bounded_body(resp).await?;
        serde_json::from_slice(&b).map_err(|e| Error::Decode(e.to_string()))
    }

    async fn handshake(&self) -> Result<(SessionCipher, String, Duration)> {
        let keys = key_pair()?;
        let req = json!({"method": "handshake", "params": {"key": keys.pem},
            "request_time_milis": self.clock.now_ms()});
        let resp = self.post(&self.base, None, &req).await?;
        let cookie = cookie_value(&resp, "TP_SESSIONID")
            .or_else(|| cookie_value(&resp, "SESSIONID"))
            .unwrap_or_default();
        let lifetime = lifetime(cookie_value(&resp, "TIMEOUT"));
        let r = outer(&Self::json(resp).await?, "handshake")?;
        let key = r
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Decode("handshake answer has no key".into()))?;
        Ok((SessionCipher::from_handshake(keys, key)?, cookie, lifetime))
    }

    /// One securePassthrough call; returns the inner answer's bytes.
    async fn call(
        &self,
        cipher: &SessionCipher,
        cookie: &str,
        token: Option<&str>,
        inner: &[u8],
    ) -> Result<Vec<u8>> {
        let url = match token {
            Some(t) => format!("{}?token={t}", self.base),
            None => self.base.clone(),
        };
        let req = json!({"method": "securePassthrough", "params": {"request": cipher.seal(inner)}});
        let resp = self.post(&url, Some(cookie), &req).await?;
        let r = outer(&Self::json(resp).await?, "securePassthrough")?;
        let sealed = r
            .get("response")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Decode("securePassthrough answer has no response".into()))?;
        cipher.open(sealed)
    }

    /// Handshake and login, trying each candidate (a fresh handshake for each, as python-kasa
    /// does after a login error).
    async fn login(&self) -> Result<Live> {
        let login_version = self.login_version.unwrap_or(2);
        for c in self.candidates.iter() {
            let (cipher, cookie, lifetime) = self.handshake().await?;
            let req = json!({"method": "login_device", "params": login_params(c, login_version),
                "request_time_milis": self.clock.now_ms()});
            let raw = self
                .call(&cipher, &cookie, None, req.to_string().as_bytes())
                .await?;
            let v: Value =
                serde_json::from_slice(&raw).map_err(|e| Error::Decode(e.to_string()))?;
            match v.get("error_code").and_then(Value::as_i64) {
                Some(0) => {
                    let token = v
                        .pointer("/result/token")
                        .and_then(Value::as_str)
                        .ok_or_else(|| Error::Decode("login answer has no token".into()))?
                        .to_owned();
                    return Ok(Live {
                        cipher,
                        cookie,
                        token,
                        renew_at: renew_at(lifetime),
                    });
                }
                Some(LOGIN_ERROR) => continue,
                other => {
                    return Err(Error::Decode(format!(
                        "login_device answered error_code {other:?}"
                    )));
                }
            }
        }
        Err(Error::Auth(
            "no credential was accepted (the configured account, the Kasa default, blank)".into(),
        ))
    }

    /// Sends one SMART request (plaintext JSON) and returns the device's answer.
    pub async fn request(&mut self, plaintext: &[u8]) -> Result<Vec<u8>> {
        for attempt in 0..2 {
            let live = match self.live.take() {
                Some(l) if Instant::now() < l.renew_at => l,
                _ => self.login().await?,
            };
            match self
                .call(&live.cipher, &live.cookie, Some(&live.token), plaintext)
                .await
            {
                Ok(a) => {
                    self.live = Some(live);
                    return Ok(a);
                }
                Err(e) if attempt == 0 && is_session_lost(&e) => {
                    tracing::debug!(base = %self.base, error = %e, "AES session lost: logging in again");
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Http(
            "the device dropped the new session as well".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_key_survives_the_rsa_round_trip_and_payloads_round_trip() {
        let keys = key_pair().unwrap();
        assert!(keys.pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(keys.pem.lines().count(), 3, "base64 on one line");
        let public = public_key_from_pem(&keys.pem).unwrap();
        let wrapped = <rsa::PublicKey as EncodePublicKey>::to_public_key_pem(
            &public,
            rsa::pkcs8::LineEnding::LF,
        )
        .unwrap();
        assert_eq!(public_key_from_pem(&wrapped).unwrap(), public);
        assert!(
            public_key_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .is_err()
        );
        let material: Vec<u8> = (0u8..32).collect();
        let sealed = B64.encode(public.pkcs1v15_encrypt(&material).unwrap());
        let c = SessionCipher::from_handshake(keys, &sealed).unwrap();
        assert_eq!(c.to_bytes(), material);
        let msg = br#"{"method":"get_device_info"}"#;
        assert_eq!(c.open(&c.seal(msg)).unwrap(), msg);
        assert!(c.open("not base64!").is_err());
        assert!(c.open(&B64.encode([1u8; 17])).is_err(), "not a whole block");
        let wrong = B64.encode(public.pkcs1v15_encrypt(&[7u8; 31]).unwrap());
        assert!(
            SessionCipher::from_handshake(keys, &wrong).is_err(),
            "31 bytes"
        );
        assert!(
            SessionCipher::from_handshake(keys, &B64.encode([9u8; 128])).is_err(),
            "garbage"
        );
    }

    #[test]
    fn login_fields_follow_the_login_version() {
        let c = Credentials::new("user@example.com", "hunter2");
        let sha1_user = "63a710569261a24b3766275b7000ce8d7b32e2f7";
        assert_eq!(sha1_hex("user@example.com"), sha1_user);
        let v1 = login_params(&c, 1);
        assert_eq!(v1["username"], B64.encode(sha1_user));
        assert_eq!(v1["password"], B64.encode("hunter2"));
        let v2 = login_params(&c, 2);
        assert_eq!(v2["password2"], B64.encode(sha1_hex("hunter2")));
        assert!(v2.get("password").is_none());
    }
}
