//! Abuse of the public surface, as an attacker on the LAN would try it: huge usernames,
//! parallel password guessing, locking the owner out, self-promotion, slow and idle
//! connections, random refresh tokens. Each test fails on kasad before these limits.

use crate::helpers::{ADMIN_PASSWORD, TestApp, login_pair};
use kasad::clock::{ManualClock, SharedClock};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A login POST as client `from` (the daemon trusts loopback as a proxy in these tests).
async fn login_from(app: &TestApp, from: &str, user: &str, password: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/api/auth/login", app.base))
        .header("x-forwarded-for", from)
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
}

async fn audit(app: &TestApp, query: &str) -> Vec<Value> {
    let (s, v) = app.get(&format!("/api/audit?{query}&limit=1000")).await;
    assert_eq!(s, 200, "{v}");
    v["entries"].as_array().unwrap().clone()
}

fn now_ms() -> i64 {
    kasad::clock::Clock::now_ms(&kasad::clock::SystemClock)
}

fn proxied(s: &mut kasad::config::Settings) {
    s.http.trusted_proxies = vec![kasad::config::Net::parse("127.0.0.0/8").unwrap()];
}

/// Finding 1: a throttled username made every login write its raw (60 KB) name into the
/// audit log, and the throttle map kept every such name.
#[tokio::test]
async fn sixty_kilobyte_usernames_are_refused_and_barely_grow_the_database() {
    let app = TestApp::spawn(vec![]).await;
    let db = app.dir.path().join("kasad.redb");
    // A few ordinary logins first: redb grows a new file by one large step at its first
    // writes, which is not what this measures.
    for _ in 0..5 {
        login_pair(&app.client, &app.base, "admin", ADMIN_PASSWORD).await;
    }
    let before = std::fs::metadata(&db).unwrap().len();
    let name = "u".repeat(60 * 1024);
    let mut statuses = Vec::new();
    for _ in 0..100 {
        let r = app
            .client
            .post(format!("{}/api/auth/login", app.base))
            .json(&json!({"username": name, "password": "wrong-password"}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        if status == 400 {
            assert_eq!(v["error_code"], "VALIDATION_ERROR", "{v}");
            assert!(v["message"].as_str().unwrap().contains("username"), "{v}");
        }
        statuses.push(status);
    }
    assert_eq!(statuses[0], 400);
    assert!(
        statuses.iter().all(|s| [400, 429].contains(s)),
        "{statuses:?}"
    );
    // Bad input counts against the address: after five, it is refused outright.
    assert_eq!(statuses.iter().filter(|&&s| s == 400).count(), 5);
    let after = std::fs::metadata(&db).unwrap().len();
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "the database grew by {} bytes",
        after - before
    );
    // One entry for the bad input and one for the refusal, neither holding the name.
    let entries = audit(&app, "event_types=LOGIN_FAILURE,RATE_LIMIT_EXCEEDED").await;
    assert_eq!(entries.len(), 2, "{entries:#?}");
    for e in &entries {
        assert!(e.to_string().len() < 2048, "{e}");
    }
    app.stop().await;
}

/// Finding 2: the check came before the (slow) password check and the failure was counted
/// after it, so attempts sent at once were all checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_parallel_wrong_passwords_from_sixty_addresses_check_at_most_five() {
    let app = Arc::new(TestApp::spawn_with(vec![], proxied).await);
    let mut tasks = Vec::new();
    for i in 0..60 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let from = format!("198.51.100.{}", i + 1);
            login_from(&app, &from, "admin", "wrong-password")
                .await
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let checked = statuses.iter().filter(|&&s| s == 401).count();
    assert!(checked <= 5, "{checked} passwords checked: {statuses:?}");
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
    let failures = audit(&app, "event_types=LOGIN_FAILURE&users=admin").await;
    assert!(failures.len() <= 5, "{} failures audited", failures.len());
    Arc::into_inner(app).unwrap().stop().await;
}

/// Finding 3: five failures from any address locked the username for every address for 15
/// minutes. Now a stranger's failures keep the owner waiting at most 30 s.
#[tokio::test]
async fn a_strangers_failures_keep_the_owner_out_for_seconds_not_minutes() {
    let clock = Arc::new(ManualClock::new(now_ms()));
    let shared: SharedClock = clock.clone();
    let app = TestApp::with_clock(shared, proxied).await;
    let mut stranger = Vec::new();
    for _ in 0..12 {
        let r = login_from(&app, "203.0.113.66", "admin", "guess-guess").await;
        stranger.push(r.status().as_u16());
        clock.advance(500);
    }
    assert_eq!(&stranger[..5], &[401; 5]);
    assert!(stranger[5..].iter().all(|&s| s == 429), "{stranger:?}");
    // The owner, from home: at most a short wait, with Retry-After saying how long.
    let mut waited = 0;
    loop {
        let r = login_from(&app, "192.0.2.10", "admin", ADMIN_PASSWORD).await;
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 429);
        let s: i64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=30).contains(&s), "Retry-After {s}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error_code"], "RATE_LIMIT_EXCEEDED");
        waited += s;
        clock.advance(s * 1000);
        assert!(waited <= 30, "the owner waited {waited} s");
    }
    // The stranger's own address stays refused for the window, whatever the username.
    let r = login_from(&app, "203.0.113.66", "admin", ADMIN_PASSWORD).await;
    assert_eq!(r.status(), 429);
    app.stop().await;
}

/// `kasad user unlock` (here: the admin socket the command uses) clears a username at once.
#[tokio::test]
async fn unlock_over_the_admin_socket_clears_a_username() {
    let clock = Arc::new(ManualClock::new(now_ms()));
    let app = TestApp::with_clock(clock.clone(), proxied).await;
    for i in 0..5 {
        let r = login_from(&app, &format!("203.0.113.{i}"), "admin", "guess-guess").await;
        assert_eq!(r.status(), 401);
    }
    let (_, h) = app.get("/api/health").await;
    assert_eq!(h["throttle"]["usernames"], 1, "{h}");
    assert_eq!(
        login_from(&app, "192.0.2.10", "admin", ADMIN_PASSWORD)
            .await
            .status(),
        429
    );
    let req = kasad::admin::Request::UserUnlock {
        username: "ADMIN".into(),
    };
    let v = kasad::admin::call(app.dir.path(), &req).await.unwrap();
    assert_eq!(v["unlocked"], true, "{v}");
    assert_eq!(
        login_from(&app, "192.0.2.10", "admin", ADMIN_PASSWORD)
            .await
            .status(),
        200
    );
    app.stop().await;
}

/// Finding 4: a viewer holding USER_MANAGE made itself admin and could reset an admin's
/// password. Privilege rules now refuse both (403, audited).
#[tokio::test]
async fn user_managers_cannot_promote_themselves_or_touch_admins() {
    let app = TestApp::spawn(vec![]).await;
    let r = app
        .req(Method::POST, "/api/users")
        .json(
            &json!({"username": "vera", "password": "vera-password-1", "role": "viewer",
            "permissions": ["USER_MANAGE"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let vera_id = r.json::<Value>().await.unwrap()["user_id"]
        .as_u64()
        .unwrap();
    let vera = login_pair(&app.client, &app.base, "vera", "vera-password-1").await;
    let vera = vera["access_token"].as_str().unwrap();
    let patch = |id: u64, body: Value| {
        app.req_as(Method::PATCH, &format!("/api/users/{id}"), vera)
            .json(&body)
            .send()
    };
    for (id, body, why) in [
        (vera_id, json!({"role": "admin"}), "own role"),
        (
            vera_id,
            json!({"permissions": ["USER_MANAGE", "SYSTEM_CONFIG"]}),
            "own role",
        ),
        (1, json!({"password": "taken-over-1"}), "only an admin"),
        (1, json!({"disabled": true}), "only an admin"),
    ] {
        let r = patch(id, body.clone()).await.unwrap();
        assert_eq!(r.status(), 403, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error_code"], "PERMISSION_DENIED");
        assert!(v["message"].as_str().unwrap().contains(why), "{v}");
    }
    // The admin's password still works; vera is still a viewer.
    login_pair(&app.client, &app.base, "admin", ADMIN_PASSWORD).await;
    let (_, users) = app.get("/api/users").await;
    let v = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "vera")
        .unwrap()
        .clone();
    assert_eq!(v["role"], "viewer");
    // Nothing she does not hold can be granted; what she holds can.
    let create = |body: Value| {
        app.req_as(Method::POST, "/api/users", vera)
            .json(&body)
            .send()
    };
    let r = create(json!({"username": "oscar", "password": "oscar-password", "role": "operator"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = create(json!({"username": "walt", "password": "walt-password", "role": "viewer"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let walt = r.json::<Value>().await.unwrap()["user_id"]
        .as_u64()
        .unwrap();
    assert_eq!(
        patch(walt, json!({"permissions": ["USER_MANAGE"]}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        patch(walt, json!({"permissions": ["AUDIT_READ"]}))
            .await
            .unwrap()
            .status(),
        403
    );
    let r = app
        .req_as(Method::DELETE, "/api/users/1", vera)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let denied = audit(&app, "event_types=PERMISSION_DENIED&users=vera").await;
    assert!(denied.len() >= 6, "{denied:#?}");
    assert!(
        denied.iter().any(|e| e["details"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("own role")),
        "{denied:#?}"
    );
    app.stop().await;
}

/// Sends half a request header on `n` fresh connections; returns them.
async fn half_sent(addr: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /api/health HTTP/1.1\r\nHost: kasad\r\nX-Slow: ")
            .await
            .unwrap();
        out.push(c);
    }
    out
}

/// Whether the server closes `c` (EOF or reset) within `bound`; what it sent is discarded.
async fn closed_within(c: &mut tokio::net::TcpStream, bound: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Finding 5: half-sent requests were held open forever. Now every request on a connection
/// has a header timeout, idle connections are closed, and the daemon keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_while_health_answers() {
    let app = TestApp::spawn_with(vec![], |s| {
        s.http.header_timeout = kasad::config::Dur(Duration::from_secs(1));
        s.http.idle_timeout = kasad::config::Dur(Duration::from_secs(2));
    })
    .await;
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let mut slow = half_sent(addr, 300).await;
    let (s, _) = app.get("/api/health").await;
    assert_eq!(s, 200, "health answers while 300 slow requests are open");
    // A kept-alive connection: one full request answered, then half of a second one.
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /api/health HTTP/1.1\r\nHost: kasad\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    kept.write_all(b"GET /api/health HTTP/1.1\r\nHost: ")
        .await
        .unwrap();
    // An idle kept-alive connection.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /api/health HTTP/1.1\r\nHost: kasad\r\n\r\n")
        .await
        .unwrap();
    let n = idle.read(&mut buf).await.unwrap();
    assert!(n > 0);
    let bound = Duration::from_secs(20);
    let mut open = 0;
    for c in &mut slow {
        if !closed_within(c, bound).await {
            open += 1;
        }
    }
    assert_eq!(open, 0, "slow requests left open by the server");
    assert!(
        closed_within(&mut kept, bound).await,
        "second request on a kept-alive connection"
    );
    assert!(closed_within(&mut idle, bound).await, "idle connection");
    // On a new connection: the client's pooled one sat idle past the 2 s idle timeout and
    // the server closed it, as it should — reusing it could race that close.
    let r = crate::helpers::client()
        .get(format!("{}/api/health", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}

/// Past `[http] max_connections` new connections wait until a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let app = TestApp::spawn_with(vec![], |s| {
        s.http.header_timeout = kasad::config::Dur(Duration::from_secs(2));
        s.http.max_connections = 3;
    })
    .await;
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let held = half_sent(addr, 3).await;
    // The client keeps its own idle connection from spawning: a new client has none.
    let fresh = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    let waiting = fresh.get(format!("{}/api/health", app.base)).send().await;
    assert!(
        waiting.is_err(),
        "served while every slot was held: {waiting:?}"
    );
    drop(held);
    let mut answered = false;
    for _ in 0..50 {
        if let Ok(r) = fresh.get(format!("{}/api/health", app.base)).send().await {
            answered = r.status() == 200;
            break;
        }
    }
    assert!(answered, "a freed slot serves the next connection");
    app.stop().await;
}

async fn write_transactions(app: &TestApp) -> u64 {
    let r = app.req(Method::GET, "/metrics").send().await.unwrap();
    let text = r.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("kasad_store_write_transactions_total "))
        .unwrap_or_else(|| panic!("no write counter in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// Finding 6: a random refresh token opened a write transaction, unthrottled.
#[tokio::test]
async fn random_refresh_tokens_cost_no_write_and_are_throttled() {
    let clock = Arc::new(ManualClock::new(now_ms()));
    let app = TestApp::with_clock(clock.clone(), |_| {}).await;
    let url = format!("{}/api/auth/refresh", app.base);
    let before = write_transactions(&app).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let token = kasad::random::random_token::<32>();
        let r = app
            .client
            .post(&url)
            .json(&json!({"refresh_token": token}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, vec![401; 5]);
    assert_eq!(
        write_transactions(&app).await,
        before,
        "no write for random tokens"
    );
    // Past the allowance the address is refused; the refusal is audited once.
    for _ in 0..20 {
        let r = app
            .client
            .post(&url)
            .json(&json!({"refresh_token": kasad::random::random_token::<32>()}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
    }
    assert!(write_transactions(&app).await <= before + 1);
    app.stop().await;
}

/// Finding 12: a refresh token traded before and presented again revokes its session (a
/// copy is in someone else's hands), and download tickets die with logout.
#[tokio::test]
async fn a_replayed_refresh_token_revokes_its_session_and_is_audited() {
    let app = TestApp::spawn(vec![]).await;
    let first = login_pair(&app.client, &app.base, "admin", ADMIN_PASSWORD).await;
    let url = format!("{}/api/auth/refresh", app.base);
    let trade = |t: &Value| {
        app.client
            .post(&url)
            .json(&json!({"refresh_token": t}))
            .send()
    };
    let r = trade(&first["refresh_token"]).await.unwrap();
    assert_eq!(r.status(), 200);
    let second: Value = r.json().await.unwrap();
    let access = second["access_token"].as_str().unwrap();
    assert_eq!(
        app.status_as(Method::GET, "/api/auth/me", access).await,
        200
    );
    // The thief replays the old token: refused, and the whole session ends.
    assert_eq!(trade(&first["refresh_token"]).await.unwrap().status(), 401);
    assert_eq!(trade(&second["refresh_token"]).await.unwrap().status(), 401);
    assert_eq!(
        app.status_as(Method::GET, "/api/auth/me", access).await,
        401
    );
    let reused = audit(&app, "event_types=REFRESH_TOKEN_REUSED").await;
    assert_eq!(reused.len(), 1, "{reused:#?}");
    assert_eq!(reused[0]["severity"], "CRITICAL");
    // Another session (the test's own admin token) is untouched.
    assert_eq!(app.get("/api/auth/me").await.0, 200);
    app.stop().await;
}
