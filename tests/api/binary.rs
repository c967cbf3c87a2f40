//! Black-box tests of the real `kasad` binary: the demo, clean shutdown on SIGTERM, crash
//! safety under SIGKILL, and the configuration commands.

use crate::helpers::{ADMIN_PASSWORD, ATTEMPTS, STEP, login, login_pair};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_kasad");

pub(crate) struct Daemon {
    child: Child,
    pub(crate) base: String,
    pub(crate) token: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn demo(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Daemon {
    demo_with(data_dir, env, Stdio::null()).await
}

async fn demo_with(data_dir: &std::path::Path, env: &[(&str, &str)], stderr: Stdio) -> Daemon {
    demo_on("127.0.0.1:0", "0", data_dir, env, stderr).await
}

async fn demo_on(
    listen: &str,
    history_days: &str,
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
    stderr: Stdio,
) -> Daemon {
    demo_args(
        &["--listen", listen, "--history-days", history_days],
        data_dir,
        env,
        stderr,
    )
    .await
}

/// `kasad demo` with `args`, the test admin password and `data_dir`; returns once it listens.
pub(crate) async fn demo_args(
    args: &[&str],
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
    stderr: Stdio,
) -> Daemon {
    let mut cmd = Command::new(BIN);
    cmd.arg("demo")
        .args(args)
        .args(["--admin-password", ADMIN_PASSWORD, "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .env("KASAD_POLL__INTERVAL", "300ms");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("kasad binary runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(Ok(line)) = lines.next() {
        if let Some(rest) = line.split("listening on ").nth(1) {
            let base = rest.trim().trim_end_matches('/').to_owned();
            // Keep draining stdout so the daemon never writes into a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            let token = login(&crate::helpers::client(), &base, "admin", ADMIN_PASSWORD).await;
            return Daemon { child, base, token };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("kasad demo exited before listening");
}

pub(crate) fn signal(d: &Daemon, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

pub(crate) async fn get(d: &(String, String), path: &str) -> Option<(u16, Value)> {
    let r = crate::helpers::client()
        .get(format!("{}{path}", d.0))
        .bearer_auth(&d.1)
        .send()
        .await
        .ok()?;
    let s = r.status().as_u16();
    Some((s, r.json().await.ok()?))
}

pub(crate) async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..ATTEMPTS {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(STEP).await;
    }
    panic!("gave up waiting for {what}");
}

pub(crate) fn total_points(v: &Value) -> u64 {
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["device_type"] != "strip")
        .map(|d| d["data_points"].as_u64().unwrap())
        .sum()
}

#[tokio::test]
async fn demo_runs_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = demo(dir.path(), &[]).await;
    let base = (d.base.clone(), d.token.clone());
    wait_for("healthy", async || {
        get(&base, "/api/health").await.filter(|(s, _)| *s == 200)
    })
    .await;
    let first = wait_for("8 devices with readings", async || {
        let (_, v) = get(&base, "/api/devices").await?;
        let top = v["devices"]
            .as_array()?
            .iter()
            .filter(|d| d["parent_id"].is_null())
            .count();
        (top >= 8 && total_points(&v) > 0).then(|| total_points(&v))
    })
    .await;
    wait_for("data_points growing", async || {
        let (_, v) = get(&base, "/api/devices").await?;
        (total_points(&v) > first).then_some(())
    })
    .await;
    // The newer devices: online over each transport, with readings.
    let newer = wait_for(
        "KLAP v1, KLAP v2 and AES devices online with readings",
        async || {
            let (_, v) = get(&base, "/api/devices").await?;
            let devs = v["devices"].as_array()?.clone();
            let ids: Vec<String> = ["klap", "klap_v2", "aes"]
                .iter()
                .map(|t| {
                    devs.iter()
                        .find(|d| {
                            d["transport"] == *t
                                && d["status"] == "online"
                                && d["data_points"].as_u64() > Some(0)
                                && d["device_type"] != "strip"
                        })
                        .and_then(|d| d["device_id"].as_str().map(str::to_owned))
                })
                .collect::<Option<_>>()?;
            Some(ids)
        },
    )
    .await;
    let today = chrono::Utc::now().date_naive();
    let body = serde_json::json!({"export_type": "device_data", "format": "csv", "devices": "all",
        "date_range": {"start": today.pred_opt().unwrap().to_string(), "end": today.succ_opt().unwrap().to_string()},
        "performance_options": {"background_processing": false}});
    let c = reqwest::Client::new();
    let r: Value = c
        .post(format!("{}/api/exports/create", base.0))
        .bearer_auth(&base.1)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "completed", "{r}");
    let csv = c
        .get(format!(
            "{}/api/exports/download/{}",
            base.0,
            r["export_id"].as_str().unwrap()
        ))
        .bearer_auth(&base.1)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for id in &newer {
        assert!(
            csv.lines().any(|l| l.contains(id.as_str())),
            "{id} missing from the demo's export"
        );
    }
    signal(&d, "-TERM");
    let status = wait_for("exit after SIGTERM", async || d.child.try_wait().unwrap()).await;
    assert_eq!(status.code(), Some(0), "clean exit");
}

/// All raw reading timestamps per device id.
pub(crate) async fn snapshot(base: &(String, String)) -> Vec<(String, BTreeSet<String>)> {
    let (_, v) = get(base, "/api/devices").await.unwrap();
    let mut out = Vec::new();
    for d in v["devices"]
        .as_array()
        .unwrap()
        .iter()
        // A device listed unidentified (known only from its 20002 answer) has no readings yet.
        .filter(|d| d["device_type"] != "strip" && d["data_points"].as_u64() > Some(0))
    {
        let id = d["device_id"].as_str().unwrap().to_owned();
        let (_, r) = get(
            base,
            &format!("/api/devices/{id}/readings?start=2000-01-01"),
        )
        .await
        .unwrap();
        let ts = r["readings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["timestamp"].as_str().unwrap().to_owned())
            .collect();
        out.push((id, ts));
    }
    out
}

async fn durable_commits(base: &(String, String)) -> Option<u64> {
    get(base, "/api/health").await?.1["store"]["durable_commits"].as_u64()
}

#[tokio::test]
async fn sigkill_during_ingest_loses_nothing_older_than_the_last_durable_commit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("kasad.toml");
    std::fs::write(&cfg, format!("data_dir = {data:?}\n")).unwrap();
    // Odd rounds also checkpoint the database every second, so that kills land around
    // checkpoints and staging-log epochs too; even rounds recover from the log alone.
    let env = [
        ("KASAD_STORAGE__COMMIT_INTERVAL", "400ms"),
        ("KASAD_STORAGE__CHECKPOINT_INTERVAL", "1s"),
    ];
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for round in 0..crate::crash::rounds(20) {
        let env = &env[..1 + round as usize % 2];
        let d = demo(&data, env).await;
        let base = (d.base.clone(), d.token.clone());
        wait_for("readings flowing", async || {
            let (_, v) = get(&base, "/api/devices").await?;
            (total_points(&v) > 0).then_some(())
        })
        .await;
        let seen = snapshot(&base).await;
        // Everything in the snapshot was handed to the writer before these two durable
        // commits began, so it is on disk once they are done: that is the stated bound.
        let c0 = wait_for("a durable commit count", async || {
            durable_commits(&base).await
        })
        .await;
        wait_for("two more durable commits", async || {
            durable_commits(&base).await.filter(|c| *c >= c0 + 2)
        })
        .await;
        // Then a random moment within the next poll cycles.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(std::time::Duration::from_millis(rng % 700)).await;
        signal(&d, "-KILL");
        drop(d);

        crate::crash::verify(&cfg, &format!("round {round}"));
        let again = demo(&data, env).await;
        let after = snapshot(&(again.base.clone(), again.token.clone())).await;
        for (id, ts) in &seen {
            let kept = &after
                .iter()
                .find(|(i, _)| i == id)
                .unwrap_or_else(|| panic!("round {round}: device {id} lost"))
                .1;
            let missing: Vec<_> = ts.difference(kept).collect();
            assert!(
                missing.is_empty(),
                "round {round}: {id} lost {} readings: {missing:?}",
                missing.len()
            );
        }
        drop(again);
        eprintln!("crash loop: ingest round {round} passed");
    }
}

#[test]
fn check_config_accepts_the_example_and_rejects_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let example = Command::new(BIN).arg("print-config").output().unwrap();
    assert!(example.status.success());
    let good = dir.path().join("good.toml");
    std::fs::write(&good, &example.stdout).unwrap();
    let ok = Command::new(BIN)
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("OK"));
    assert!(
        ok.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Valid but risky: accepted, with a warning.
    let risky = dir.path().join("risky.toml");
    std::fs::write(&risky, "[http]\ntrusted_proxies = [\"::/0\"]\n").unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&risky)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "warning: [http] trusted_proxies \"::/0\" trusts X-Forwarded-For from every client"
        ),
        "{err}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[poll]\ninterval = \"soon\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid duration") && err.contains("bad.toml"),
        "{err}"
    );
}

#[tokio::test]
async fn no_token_password_or_key_appears_in_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let data = dir.path().join("data");
    let d = demo_with(&data, &[("RUST_LOG", "trace")], Stdio::from(log)).await;
    let c = crate::helpers::client();
    let pair = login_pair(&c, &d.base, "admin", ADMIN_PASSWORD).await;
    let _ = c
        .get(format!("{}/api/devices", d.base))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap();
    let _ = c
        .post(format!("{}/api/auth/login", d.base))
        .json(&serde_json::json!({"username": "admin", "password": "wrong-but-secret-pw"}))
        .send()
        .await
        .unwrap();
    signal(&d, "-TERM");
    let mut d = d;
    wait_for("exit", async || d.child.try_wait().unwrap()).await;
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("kasad listening"), "logs were captured");
    let mut secrets = vec![
        ADMIN_PASSWORD.to_owned(),
        "wrong-but-secret-pw".to_owned(),
        d.token.clone(),
        pair["access_token"].as_str().unwrap().to_owned(),
        pair["refresh_token"].as_str().unwrap().to_owned(),
    ];
    for k in ["jwt.key", "audit.key"] {
        let b = std::fs::read(data.join(k)).unwrap();
        secrets.push(b.iter().map(|x| format!("{x:02x}")).collect());
        use base64::Engine;
        secrets.push(base64::engine::general_purpose::STANDARD.encode(&b));
        secrets.push(format!("{:?}", &b[..8]).trim_end_matches(']').to_owned());
    }
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "a secret appears in the logs");
    }
}

fn kasad_cli(args: &[&str], cfg: &std::path::Path, stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn user_commands_work_with_the_daemon_running_and_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("kasad.toml");
    std::fs::write(&cfg, format!("data_dir = {data:?}\n")).unwrap();
    let mut d = demo(&data, &[]).await;
    let c = crate::helpers::client();

    // Running daemon: the command goes through the admin socket.
    let (ok, out) = kasad_cli(
        &[
            "user",
            "add",
            "ops",
            "--role",
            "operator",
            "--password-stdin",
        ],
        &cfg,
        "ops-password-1\n",
    );
    assert!(ok, "{out}");
    login(&c, &d.base, "ops", "ops-password-1").await;
    let (ok, out) = kasad_cli(&["user", "list"], &cfg, "");
    assert!(
        ok && out.contains("\"ops\"") && out.contains("\"admin\""),
        "{out}"
    );
    let (ok, out) = kasad_cli(&["user", "disable", "ops"], &cfg, "");
    assert!(ok, "{out}");
    let r = c
        .post(format!("{}/api/auth/login", d.base))
        .json(&serde_json::json!({"username": "ops", "password": "ops-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a disabled user cannot log in");
    let (ok, out) = kasad_cli(&["user", "add", "x", "--role", "root"], &cfg, "");
    assert!(!ok && out.contains("--role"), "{out}");
    let (ok, out) = kasad_cli(&["audit", "verify"], &cfg, "");
    assert!(ok && out.contains("OK"), "{out}");

    signal(&d, "-TERM");
    wait_for("exit", async || d.child.try_wait().unwrap()).await;

    // Stopped daemon: the command opens the database itself; a generated password is printed.
    let (ok, out) = kasad_cli(&["user", "add", "viv", "--role", "viewer"], &cfg, "");
    assert!(ok && out.contains("generated password: "), "{out}");
    let (ok, out) = kasad_cli(&["user", "delete", "ops"], &cfg, "");
    assert!(ok, "{out}");
    let (ok, out) = kasad_cli(&["audit", "verify"], &cfg, "");
    assert!(ok && out.contains("OK"), "{out}");
}

/// The number printed right after `prefix` in `out`.
fn number_after(out: &str, prefix: &str) -> u64 {
    out.split(prefix)
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {prefix:?} in: {out}"))
}

fn run_example(cmd: &str, script: &str, env: &[(&str, String)]) -> (String, String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/examples")
        .join(script);
    let out = Command::new(cmd)
        .arg(&path)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is required for the spec examples test: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

/// The spec's Python (requests + pandas) and JavaScript integration examples, unchanged, against
/// `kasad demo` on its documented address, localhost:5272.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_integration_examples_run_against_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    if std::net::TcpListener::bind("127.0.0.1:5272").is_err() {
        panic!("port 5272 is busy: stop the other kasad (the spec examples use localhost:5272)");
    }
    let d = demo_on(
        "127.0.0.1:5272",
        "1",
        dir.path(),
        &[("KASAD_POLL__INTERVAL", "60s")],
        Stdio::null(),
    )
    .await;
    let now = chrono::Utc::now();
    let env = vec![
        ("KASAD_TOKEN", d.token.clone()),
        ("KASAD_DEVICE_IP", "127.0.0.3".to_owned()),
        ("KASAD_BASE", d.base.clone()),
        (
            "KASAD_START",
            (now - chrono::Duration::days(1))
                .format("%Y-%m-%d")
                .to_string(),
        ),
        ("KASAD_END", now.format("%Y-%m-%d").to_string()),
    ];
    let (out, _) = run_example("python3", "spec_example.py", &env);
    let n = number_after(&out, "Exported ");
    assert!(n > 100, "a day of one-minute readings: {out}");
    for col in ["timestamp", "power_w", "energy_kwh", "cost"] {
        assert!(out.contains(col), "{col} in df.head(): {out}");
    }
    let mut env = env;
    env[3].1 = (now - chrono::Duration::hours(2)).to_rfc3339();
    env[4].1 = now.to_rfc3339();
    let (out, err) = run_example("node", "spec_example.js", &env);
    assert!(out.contains("Export created: exp_"), "{out}");
    assert!(out.contains("Export completed"), "{out}{err}");
    let bytes = number_after(&out, "Data downloaded: ");
    assert!(bytes > 1000, "{out}");
    assert!(!err.contains("Export failed"), "{err}");
    drop(d);
}

/// Under systemd (`Type=notify`, `WatchdogSec=`): `kasad run` says READY=1 once it serves,
/// pings the watchdog every half period, and says STOPPING=1 on SIGTERM before a clean exit.
#[test]
fn kasad_run_speaks_the_systemd_notify_protocol() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kasad.toml");
    let data = dir.path().join("data");
    let token_file = dir.path().join("metrics.token");
    std::fs::write(&token_file, "monitoring-token-0123456789\n").unwrap();
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {data:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[discovery]\nenabled = false\n\
             [metrics]\ntoken_file = {token_file:?}\n"
        ),
    )
    .unwrap();
    let sock = dir.path().join("notify.sock");
    let rx = UnixDatagram::bind(&sock).unwrap();
    rx.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut d = Daemon {
        child,
        base: String::new(),
        token: String::new(),
    };
    let next = || {
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).expect("a notification within 60 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next();
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving on 127.0.0.1:"),
        "{ready:?}"
    );
    assert_eq!(next(), "WATCHDOG=1");
    assert_eq!(next(), "WATCHDOG=1");
    // `kasad healthcheck` on the address it serves: exit 0 now, 1 once it has stopped.
    let addr = ready.rsplit(' ').next().unwrap().to_owned();
    let health = |config: &std::path::Path| {
        let out = Command::new(BIN)
            .args([
                "healthcheck",
                "--addr",
                &addr,
                "--timeout",
                "30",
                "--config",
            ])
            .arg(config)
            .output()
            .unwrap();
        (out.status.code(), crate::helpers::output_text(&out))
    };
    // With the configuration's scrape token it gets the detail; without, the status alone.
    let (code, text) = health(&cfg);
    assert_eq!(code, Some(0), "{text}");
    let version = format!(": ok (version {}, up ", env!("CARGO_PKG_VERSION"));
    assert!(text.contains(&version), "{text}");
    let (code, text) = health(&dir.path().join("missing.toml"));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.trim_end().ends_with(": ok"), "{text}");
    signal(&d, "-TERM");
    let mut last = next();
    while last == "WATCHDOG=1" {
        last = next();
    }
    assert_eq!(last, "STOPPING=1");
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let (code, text) = health(&cfg);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("does not answer"), "{text}");
}
