//! Authentication, permissions, throttling, user management, relay control and the audit log.

use crate::helpers::{ADMIN_PASSWORD, TestApp, fleet, login, login_pair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use kasad::auth::jwt::{self, Claims};
use kasad::auth::keys::SecretKey;
use reqwest::Method;
use serde_json::{Value, json};

fn key_of(app: &TestApp, name: &str) -> SecretKey {
    let b: [u8; 32] = std::fs::read(app.dir.path().join(name))
        .unwrap()
        .try_into()
        .unwrap();
    SecretKey::from_bytes(b)
}

fn claims(sub: u32, exp: i64) -> Claims {
    Claims {
        sub,
        name: "admin".into(),
        ver: 0,
        jti: "t".into(),
        iat: 0,
        exp,
        typ: "access".into(),
        fam: 0,
    }
}

async fn call(
    app: &TestApp,
    method: &Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Value, Option<String>) {
    let mut r = app
        .client
        .request(method.clone(), format!("{}{path}", app.base));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if *method != Method::GET && *method != Method::DELETE {
        r = r.json(&json!({}));
    }
    let resp = r.send().await.unwrap();
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
        www,
    )
}

async fn create_user(app: &TestApp, name: &str, role: &str) -> u32 {
    let r = app
        .req(Method::POST, "/api/users")
        .json(&json!({"username": name, "password": "user-password-1", "role": role}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["user_id"]
        .as_u64()
        .unwrap() as u32
}

async fn audit(app: &TestApp, query: &str) -> Vec<Value> {
    let (s, v) = app.get(&format!("/api/audit?{query}")).await;
    assert_eq!(s, 200, "{v}");
    v["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn health_detail_is_for_admins_only() {
    let app = TestApp::spawn(vec![]).await;
    create_user(&app, "vera", "viewer").await;
    let viewer = login(&app.client, &app.base, "vera", "user-password-1").await;
    let url = format!("{}/api/health", app.base);
    let anon = app.client.get(&url).send().await.unwrap();
    assert_eq!(anon.status(), 200);
    assert_eq!(anon.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let r = app
        .req_as(Method::GET, "/api/health", &viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let r = app
        .req_as(Method::GET, "/api/health", "not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (s, v) = app.get("/api/health").await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["store"]["ok"], true);
    let db = std::fs::metadata(app.dir.path().join("kasad.redb"))
        .unwrap()
        .len();
    assert_eq!(v["store"]["database_bytes"], db, "{v}");
    assert!(v["store"]["free_bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(v["poller"]["fresh"].as_bool().unwrap(), "{v}");
    app.stop().await;
}

#[tokio::test]
async fn every_protected_route_refuses_bad_tokens_and_missing_permissions() {
    let app = TestApp::spawn(vec![]).await;
    create_user(&app, "vera", "viewer").await;
    let viewer = login(&app.client, &app.base, "vera", "user-password-1").await;
    let (s, doc) = app.get("/api/openapi.json").await;
    assert_eq!(s, 200);
    let key = key_of(&app, "jwt.key");
    let now = chrono::Utc::now().timestamp();
    let expired = jwt::sign(&claims(1, now - 1), &key);
    let other_key = jwt::sign(&claims(1, now + 600), &SecretKey::from_bytes([9; 32]));
    let alg_none = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(serde_json::to_vec(&claims(1, now + 600)).unwrap())
    );
    let refresh = login_pair(&app.client, &app.base, "admin", ADMIN_PASSWORD).await;
    let refresh_token = refresh["refresh_token"].as_str().unwrap().to_owned();
    let mut protected = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if op.get("security") == Some(&json!([])) {
                continue;
            }
            protected += 1;
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let url = path
                .replace("{device_id}", "X1")
                .replace("{user_id}", "999");
            for (what, tok) in [
                ("no token", None),
                ("expired", Some(expired.as_str())),
                ("other key", Some(other_key.as_str())),
                ("alg none", Some(alg_none.as_str())),
                ("refresh token", Some(refresh_token.as_str())),
            ] {
                let (s, body, www) = call(&app, &m, &url, tok).await;
                assert_eq!(s, 401, "{method} {url} with {what}: {body}");
                assert_eq!(
                    body["error_code"], "UNAUTHORIZED",
                    "{method} {url} with {what}"
                );
                assert_eq!(www.as_deref(), Some("Bearer"));
            }
            if let Some(p) = op.get("x-required-permission").and_then(Value::as_str) {
                let (s, body, _) = call(&app, &m, &url, Some(&viewer)).await;
                if p == "DEVICE_READ" {
                    assert_ne!(s, 403, "{method} {url}: viewers hold DEVICE_READ");
                } else {
                    assert_eq!(s, 403, "{method} {url} as viewer: {body}");
                    assert_eq!(body["error_code"], "PERMISSION_DENIED");
                    assert_eq!(body["required_permission"], p);
                }
            }
        }
    }
    assert!(
        protected >= 12,
        "the document lists every protected route ({protected})"
    );
    let denied = audit(&app, "event_types=permission_denied&users=vera").await;
    assert!(!denied.is_empty(), "403s are audited");
    app.stop().await;
}

#[tokio::test]
async fn repeated_login_failures_are_throttled_and_audited() {
    let app = TestApp::spawn(vec![]).await;
    let url = format!("{}/api/auth/login", app.base);
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let r = app
            .client
            .post(&url)
            .json(&json!({"username": "admin", "password": "wrong-password"}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error_code"], "RATE_LIMIT_EXCEEDED");
            assert!(v["retry_after"].is_string());
        }
    }
    assert_eq!(statuses, vec![401, 401, 401, 401, 401, 429, 429]);
    // Even the right password is refused from this address for the window.
    let r = app
        .client
        .post(&url)
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let wait: i64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&wait), "Retry-After {wait}");
    assert_eq!(audit(&app, "event_types=LOGIN_FAILURE").await.len(), 5);
    // Refusals are audited once per address and window (the others are counted and logged
    // as one entry when the window ends).
    assert_eq!(
        audit(&app, "event_types=rate_limit_exceeded").await.len(),
        1
    );
    let (s, v) = app.get("/api/audit?event_types=bogus").await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (400, Some("VALIDATION_ERROR"))
    );
    app.stop().await;
}

#[tokio::test]
async fn tokens_rotate_revoke_and_die_with_a_disabled_user() {
    let app = TestApp::spawn(vec![]).await;
    let uid = create_user(&app, "olga", "operator").await;
    let login_body = login_pair(&app.client, &app.base, "olga", "user-password-1").await;
    assert_eq!(login_body["token_type"], "bearer");
    assert_eq!(login_body["expires_in"], 900);
    let access = login_body["access_token"].as_str().unwrap();
    let refresh = login_body["refresh_token"].as_str().unwrap();
    let me: Value = app
        .req_as(Method::GET, "/api/auth/me", access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "operator");
    assert_eq!(
        me["permissions"],
        json!(["DATA_EXPORT", "DEVICE_READ", "DEVICE_CONTROL"])
    );

    let refresh_url = format!("{}/api/auth/refresh", app.base);
    let trade = |token: Value| {
        app.client
            .post(&refresh_url)
            .json(&json!({"refresh_token": token}))
            .send()
    };
    let r = trade(json!(refresh)).await.unwrap();
    assert_eq!(r.status(), 200);
    let second: Value = r.json().await.unwrap();

    // Logout ends the session: its access tokens (the first one too) and its refresh token.
    let access2 = second["access_token"].as_str().unwrap();
    assert_eq!(
        app.status_as(Method::POST, "/api/auth/logout", access2)
            .await,
        200
    );
    assert_eq!(
        app.status_as(Method::GET, "/api/auth/me", access2).await,
        401,
        "logged-out token is revoked"
    );
    assert_eq!(
        trade(second["refresh_token"].clone())
            .await
            .unwrap()
            .status(),
        401,
        "the session's refresh token ended with the logout"
    );
    assert_eq!(
        app.status_as(Method::GET, "/api/auth/me", access).await,
        401,
        "the session's first access token ended with it"
    );

    // A new session: a disabled user's tokens stop working at once.
    let again = login_pair(&app.client, &app.base, "olga", "user-password-1").await;
    let access = again["access_token"].as_str().unwrap();
    assert_eq!(
        app.status_as(Method::GET, "/api/devices", access).await,
        200
    );
    let r = app
        .req(Method::PATCH, &format!("/api/users/{uid}"))
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.status_as(Method::GET, "/api/devices", access).await,
        401,
        "a disabled user's tokens stop working at once"
    );
    assert_eq!(
        trade(again["refresh_token"].clone())
            .await
            .unwrap()
            .status(),
        401
    );

    for (body, field) in [
        (
            json!({"username": "x y", "password": "long-enough-1", "role": "viewer"}),
            "username",
        ),
        (
            json!({"username": "ok", "password": "short", "role": "viewer"}),
            "password",
        ),
        (
            json!({"username": "ok", "password": "long-enough-1", "role": "superuser"}),
            "role",
        ),
        (
            json!({"username": "ok", "password": "long-enough-1", "role": "viewer", "colour": 1}),
            "colour",
        ),
    ] {
        let r = app
            .req(Method::POST, "/api/users")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error_code"], "VALIDATION_ERROR");
        assert!(v["message"].as_str().unwrap().contains(field), "{v}");
    }
    let r = app
        .req(Method::POST, "/api/users")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .req(Method::POST, "/api/users")
        .header("content-type", "application/json")
        .body(vec![b' '; 200_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let types: Vec<Value> = audit(&app, "users=admin")
        .await
        .iter()
        .map(|e| e["event_type"].clone())
        .collect();
    assert!(types.contains(&json!("USER_CREATED")) && types.contains(&json!("USER_UPDATED")));
    app.stop().await;
}

#[tokio::test]
async fn relay_control_switches_the_simulator_and_is_audited() {
    let app = TestApp::spawn(fleet(3)).await;
    let d = app
        .wait_devices("devices polled", |d| {
            d.iter().filter(|x| x["online"] == true).count() >= 3 + 6
        })
        .await;
    let plug = d.iter().find(|x| x["model"] == "KP115(US)").unwrap()["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let outlet = d.iter().find(|x| x["outlet_index"] == 2).unwrap()["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for id in [&plug, &outlet] {
        let r = app
            .req(Method::POST, &format!("/api/devices/{id}/relay"))
            .json(&json!({"on": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{id}");
    }
    assert!(!app.sims[1].with_device(|dev| {
        dev.readings_at(kasad::clock::Clock::now_ms(&kasad::clock::SystemClock))[0].relay_on
    }));
    let strip_state = app.sims[2].with_device(|dev| {
        dev.readings_at(kasad::clock::Clock::now_ms(&kasad::clock::SystemClock))
    });
    assert!(
        !strip_state[2].relay_on && strip_state[1].relay_on,
        "only outlet 2 switched"
    );
    let entries = audit(&app, "event_types=DEVICE_CONTROLLED").await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["details"]["on"], false);
    let r = app
        .req(Method::POST, "/api/devices/NOPE/relay")
        .json(&json!({"on": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn key_files_are_private_and_headers_are_set() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn(vec![]).await;
    for k in ["jwt.key", "audit.key"] {
        let mode = std::fs::metadata(app.dir.path().join(k))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{k}");
    }
    let r = app.req(Method::GET, "/api/health").send().await.unwrap();
    for h in [
        "x-content-type-options",
        "x-frame-options",
        "content-security-policy",
        "x-request-id",
    ] {
        assert!(r.headers().contains_key(h), "{h}");
    }
    assert!(
        !r.headers().contains_key("access-control-allow-origin"),
        "no CORS by default"
    );
    app.stop().await;
}

/// Users can be managed only while someone can manage them: the last enabled admin cannot be
/// disabled, demoted or deleted (409), and nothing about them changes.
#[tokio::test]
async fn the_last_enabled_admin_cannot_be_disabled_demoted_or_deleted() {
    let app = TestApp::spawn(vec![]).await;
    let patch = |id: u32, body: Value| {
        app.req(Method::PATCH, &format!("/api/users/{id}"))
            .json(&body)
            .send()
    };
    let r = patch(1, json!({"disabled": true})).await.unwrap();
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("last enabled admin"),
        "{v}"
    );
    // Nobody changes their own role (403 before the last-admin rule is reached).
    let r = patch(1, json!({"role": "operator"})).await.unwrap();
    assert_eq!(r.status(), 403);
    let (s, me) = app.get("/api/auth/me").await;
    assert_eq!((s, me["role"].as_str()), (200, Some("admin")), "unchanged");
    // With a second admin, either may go.
    let second = create_user(&app, "second-admin", "admin").await;
    assert_eq!(
        patch(second, json!({"disabled": true}))
            .await
            .unwrap()
            .status(),
        200
    );
    // …but a disabled admin does not count: the first is the last enabled one again.
    assert_eq!(
        patch(1, json!({"disabled": true})).await.unwrap().status(),
        409
    );
    assert_eq!(
        patch(second, json!({"disabled": false}))
            .await
            .unwrap()
            .status(),
        200
    );
    let r = app
        .req(Method::DELETE, &format!("/api/users/{second}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}

/// Behind a reverse proxy listed in `[http] trusted_proxies`, login throttling and the audit
/// log see the address the proxy forwarded for; without it, `X-Forwarded-For` is ignored.
#[tokio::test]
async fn trusted_proxies_forward_the_real_client_address() {
    for (trusted, want) in [(true, "203.0.113.7"), (false, "127.0.0.1")] {
        let app = TestApp::spawn_with(vec![], move |s| {
            if trusted {
                s.http.trusted_proxies = vec![kasad::config::Net::parse("127.0.0.0/8").unwrap()];
            }
        })
        .await;
        let r = app
            .client
            .post(format!("{}/api/auth/login", app.base))
            .header("x-forwarded-for", "203.0.113.7")
            .json(&json!({"username": "admin", "password": "wrong-password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let entries = audit(&app, "event_types=LOGIN_FAILURE").await;
        assert_eq!(entries[0]["client_address"], want, "trusted: {trusted}");
        app.stop().await;
    }
}
