//! The device side of the AES securePassthrough transport for simulated devices: the RSA
//! handshake (a fresh AES key and IV encrypted to the client's public key), `login_device`
//! checked against the device's account (v1 `password` or v2 `password2`), the token, and
//! SMART requests inside `securePassthrough`. Sessions lapse after `TIMEOUT` (answered with
//! 9999); a wrong login is −1501.

use super::klap::Device;
use crate::protocol::passthrough::{LOGIN_ERROR, SESSION_TIMEOUT, SessionCipher, login_params};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

/// One AES session on the device.
pub(super) struct AesSession {
    cipher: SessionCipher,
    token: Option<String>,
    expires: Instant,
}

fn reply(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

/// `POST /app`: the handshake, or a securePassthrough call.
pub(super) async fn app(
    State(d): State<Arc<Device>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return reply(json!({"error_code": -1003}));
    };
    match req.get("method").and_then(Value::as_str) {
        Some("handshake") => handshake(&d, &req),
        Some("securePassthrough") => passthrough(&d, &q, &headers, &req).await,
        _ => reply(json!({"error_code": -1002})),
    }
}

fn handshake(d: &Device, req: &Value) -> Response {
    let Some(pem) = req.pointer("/params/key").and_then(Value::as_str) else {
        return reply(json!({"error_code": -1010}));
    };
    let Ok(public) = crate::protocol::passthrough::public_key_from_pem(pem) else {
        return reply(json!({"error_code": -1010}));
    };
    let material = crate::random::random_bytes::<32>();
    let Ok(sealed) = public.pkcs1v15_encrypt(&material) else {
        return reply(json!({"error_code": -1010}));
    };
    let cipher = SessionCipher::from_bytes(&material).expect("32 bytes");
    let cookie = super::klap::random_id();
    let timeout = d.spec().session_timeout;
    d.aes_sessions.lock().expect("aes lock").insert(
        cookie.clone(),
        AesSession {
            cipher,
            token: None,
            expires: Instant::now() + timeout,
        },
    );
    d.stats.handshakes.fetch_add(1, Ordering::Relaxed);
    let set_cookie = format!("TP_SESSIONID={cookie};TIMEOUT={}", timeout.as_secs());
    (
        [(header::SET_COOKIE, set_cookie)],
        axum::Json(json!({"error_code": 0, "result": {"key": B64.encode(sealed)}})),
    )
        .into_response()
}

async fn passthrough(
    d: &Arc<Device>,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    req: &Value,
) -> Response {
    let cookie = super::klap::session_cookie(headers).unwrap_or_default();
    let session = {
        let mut sessions = d.aes_sessions.lock().expect("aes lock");
        match sessions.get(&cookie) {
            Some(s) if Instant::now() < s.expires => Some((s.cipher.clone(), s.token.clone())),
            _ => {
                sessions.remove(&cookie);
                None
            }
        }
    };
    let Some((cipher, token)) = session else {
        d.stats.refused.fetch_add(1, Ordering::Relaxed);
        return reply(json!({"error_code": SESSION_TIMEOUT}));
    };
    let Some(Ok(plain)) = req
        .pointer("/params/request")
        .and_then(Value::as_str)
        .map(|r| cipher.open(r))
    else {
        return reply(json!({"error_code": -1005}));
    };
    let Ok(inner) = serde_json::from_slice::<Value>(&plain) else {
        return reply(json!({"error_code": -1003}));
    };
    let answer: Vec<u8> = if inner.get("method").and_then(Value::as_str) == Some("login_device") {
        let account = d.spec().account;
        let params = inner.get("params").cloned().unwrap_or(Value::Null);
        if params.get("password").is_some() {
            d.stats.v1_logins.fetch_add(1, Ordering::Relaxed);
        }
        let ok = [1, 2].iter().any(|&lv| {
            let want = login_params(&account, lv);
            want.as_object()
                .is_some_and(|w| w.iter().all(|(k, v)| params.get(k) == Some(v)))
        });
        if ok {
            let t = super::klap::random_id();
            if let Some(s) = d.aes_sessions.lock().expect("aes lock").get_mut(&cookie) {
                s.token = Some(t.clone());
            }
            json!({"error_code": 0, "result": {"token": t}})
                .to_string()
                .into_bytes()
        } else {
            json!({"error_code": LOGIN_ERROR}).to_string().into_bytes()
        }
    } else {
        if token.is_none() || q.get("token") != token.as_ref() {
            d.stats.refused.fetch_add(1, Ordering::Relaxed);
            return reply(json!({"error_code": SESSION_TIMEOUT}));
        }
        match d.sim.fault() {
            Some(super::Fault::Delay(t)) => tokio::time::sleep(t).await,
            Some(super::Fault::Hang) => std::future::pending::<()>().await,
            _ => {}
        }
        d.stats.answered.fetch_add(1, Ordering::Relaxed);
        super::smart::answer(&d.sim, &plain, d.clock.now_ms())
    };
    reply(json!({"error_code": 0, "result": {"response": cipher.seal(&answer)}}))
}
