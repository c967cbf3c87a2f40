//! Test harness: the real daemon in-process on 127.0.0.1:0 with its own temporary data
//! directory, simulated devices on 127.0.0.x ephemeral ports, and a small HTTP client.

use kasad::app::{self, Running};
use kasad::clock::{self, Clock};
use kasad::config::{Dur, Settings};
use kasad::sim::{self, SimDevice, SimHandle};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// Most polls of a condition before a test gives up (each poll sleeps [`STEP`]).
pub const ATTEMPTS: u32 = 300;
/// Pause between polls of a condition.
pub const STEP: Duration = Duration::from_millis(100);

/// Password of the `admin` user every test daemon starts with.
pub const ADMIN_PASSWORD: &str = "test-admin-password";

/// An HTTP client. reqwest shares the daemon's TLS features (rustls without a built-in
/// crypto provider), so the provider is installed first.
pub fn client() -> reqwest::Client {
    kasad::tls::install_tls();
    reqwest::Client::new()
}

/// Logs in and returns the whole answer (access and refresh token).
pub async fn login_pair(client: &reqwest::Client, base: &str, user: &str, password: &str) -> Value {
    let r = client
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "login as {user}");
    r.json().await.unwrap()
}

/// Logs in and returns the access token.
pub async fn login(client: &reqwest::Client, base: &str, user: &str, password: &str) -> String {
    login_pair(client, base, user, password).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A metered plug record for store-level tests.
pub fn plug_info(id: &str) -> kasad::domain::DeviceInfo {
    kasad::domain::DeviceInfo::plug(kasad::domain::DeviceId::parse(id).unwrap())
        .at("127.0.0.9:9999")
        .named(id)
        .made("KP115(US)", "1.0", "1")
}

/// Runs the real `kasad` binary with `args`; whether it succeeded, and stdout + stderr.
pub fn kasad_cli(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kasad"))
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), output_text(&out))
}

/// `GET base + path` with a bearer token, as JSON.
pub async fn get_json(base: &str, token: &str, path: &str) -> Value {
    client()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A finished command's stdout followed by its stderr.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Settings for a test daemon: loopback only, fast polls, short commits.
pub fn settings(dir: &std::path::Path, targets: &[SocketAddr]) -> Settings {
    let mut s = Settings {
        data_dir: dir.to_path_buf(),
        ..Settings::default()
    };
    s.http.listen = "127.0.0.1:0".parse().unwrap();
    s.discovery.loopback_only = true;
    s.discovery.targets = targets.iter().map(ToString::to_string).collect();
    s.discovery.window = Dur(Duration::from_millis(300));
    s.discovery.interval = Dur(Duration::from_secs(3600));
    s.poll.interval = Dur(Duration::from_millis(200));
    s.poll.timeout = Dur(Duration::from_secs(1));
    s.storage.commit_interval = Dur(Duration::from_millis(500));
    s.validate().unwrap();
    s
}

/// `n` fleet devices whose simulated state starts now.
pub fn fleet(n: u32) -> Vec<SimDevice> {
    kasad::cli::demo::fleet(n, clock::SystemClock.now_ms())
}

/// Starts simulated devices on 127.0.0.2… with ephemeral ports.
pub async fn start_sims(devices: Vec<SimDevice>) -> Vec<SimHandle> {
    start_sims_with(devices, clock::system()).await
}

/// Starts simulated devices on 127.0.0.2… with ephemeral ports, reading time from `clock`.
pub async fn start_sims_with(
    devices: Vec<SimDevice>,
    clock: kasad::clock::SharedClock,
) -> Vec<SimHandle> {
    let mut out = Vec::new();
    for (i, d) in devices.into_iter().enumerate() {
        out.push(
            sim::start(d, sim::fleet_ip(i as u32), 0, clock.clone())
                .await
                .expect("simulator binds a loopback port"),
        );
    }
    out
}

/// A running daemon with its simulated devices.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// HTTP client.
    pub client: reqwest::Client,
    /// Access token of the `admin` user.
    pub token: String,
    /// The simulated devices.
    pub sims: Vec<SimHandle>,
    /// Data directory (deleted on drop).
    pub dir: tempfile::TempDir,
    pub running: Running,
}

impl TestApp {
    /// Starts simulated `devices` and a daemon that discovers them.
    pub async fn spawn(devices: Vec<SimDevice>) -> Self {
        Self::spawn_with(devices, |_| {}).await
    }

    /// Like [`spawn`](Self::spawn) with settings adjusted by `tweak`.
    pub async fn spawn_with(devices: Vec<SimDevice>, tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::with_sims(start_sims(devices).await, tweak).await
    }

    /// A daemon that discovers already running simulated devices.
    pub async fn with_sims(sims: Vec<SimHandle>, tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::start(sims, clock::system(), tweak).await
    }

    /// A daemon that discovers running simulated devices and reads time from `clock`.
    pub async fn with_sims_and_clock(
        sims: Vec<SimHandle>,
        clock: kasad::clock::SharedClock,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        Self::start(sims, clock, tweak).await
    }

    /// A daemon without devices reading time from `clock`.
    pub async fn with_clock(
        clock: kasad::clock::SharedClock,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        Self::start(vec![], clock, tweak).await
    }

    /// A daemon on `data_dir` (already holding data), no devices on the network, reading time
    /// from `clock`.
    pub async fn on_data(
        data_dir: &std::path::Path,
        clock: kasad::clock::SharedClock,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        let dir = data_dir.to_path_buf();
        Self::start(vec![], clock, move |s| {
            s.data_dir = dir;
            s.discovery.enabled = false;
            tweak(s);
        })
        .await
    }

    async fn start(
        sims: Vec<SimHandle>,
        clock: kasad::clock::SharedClock,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<SocketAddr> = sims.iter().map(|s| s.addr).collect();
        let mut s = settings(dir.path(), &addrs);
        tweak(&mut s);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let opts = app::StartOptions {
            admin_password: Some(ADMIN_PASSWORD.into()),
        };
        let running = app::start_with(s, listener, clock, opts).await.unwrap();
        let base = format!("http://{}", running.addr);
        let client = client();
        let token = login(&client, &base, "admin", ADMIN_PASSWORD).await;
        Self {
            base,
            client,
            token,
            sims,
            dir,
            running,
        }
    }

    /// A request with the admin token.
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// A request with another user's token.
    pub fn req_as(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
    }

    /// The status of a bodiless request made with another user's token.
    pub async fn status_as(&self, method: reqwest::Method, path: &str, token: &str) -> u16 {
        self.req_as(method, path, token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// GET a path; returns status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.req(reqwest::Method::GET, path).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST a path without a body.
    pub async fn post(&self, path: &str) -> (u16, Value) {
        let r = self.req(reqwest::Method::POST, path).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The device list.
    pub async fn devices(&self) -> Vec<Value> {
        let (s, v) = self.get("/api/devices").await;
        assert_eq!(s, 200, "{v}");
        v["devices"].as_array().unwrap().clone()
    }

    /// Polls the device list until `ok` holds; panics with `what` after [`ATTEMPTS`].
    pub async fn wait_devices(&self, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        for _ in 0..ATTEMPTS {
            let d = self.devices().await;
            if ok(&d) {
                return d;
            }
            tokio::time::sleep(STEP).await;
        }
        panic!(
            "gave up waiting for: {what}; devices: {:#?}",
            self.devices().await
        );
    }

    /// Stops the daemon cleanly, then `kasad store verify` checks `data_dir` (the app's
    /// directory lives until then).
    pub async fn stop_and_verify(mut self, data_dir: &std::path::Path) {
        let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        self.stop().await;
        let cfg = kept.path().join("verify.toml");
        std::fs::write(&cfg, format!("data_dir = {data_dir:?}\n")).unwrap();
        let (ok, out) = kasad_cli(&[
            std::ffi::OsStr::new("store"),
            std::ffi::OsStr::new("verify"),
            std::ffi::OsStr::new("--config"),
            cfg.as_os_str(),
        ]);
        assert!(ok, "{out}");
    }

    /// Stops the daemon cleanly.
    pub async fn stop(self) {
        self.running.shutdown.cancel();
        self.running.done.await.unwrap().unwrap();
        for s in &self.sims {
            s.stop();
        }
    }
}

/// The entry with `device_type` == `t` (first match).
pub fn of_type<'a>(d: &'a [Value], t: &str) -> Vec<&'a Value> {
    d.iter().filter(|x| x["device_type"] == t).collect()
}

/// A free loopback port (closed again; a server the test starts binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A date `offset` days from the first call (fixed for the whole run, so that a loop that
/// crosses midnight compares the same days).
pub fn day(offset: i64) -> String {
    static START: std::sync::OnceLock<chrono::DateTime<chrono::Utc>> = std::sync::OnceLock::new();
    (*START.get_or_init(chrono::Utc::now) + chrono::Duration::days(offset))
        .format("%Y-%m-%d")
        .to_string()
}

/// A simulated KLAP or AES device on 127.0.3.`host` (each test its own addresses), built
/// from a day-long session on the account `owner@example.com` / `correct horse`, the
/// system clock and an ephemeral 20002 port; [`SimBuilder::start`] starts it.
pub struct SimBuilder {
    host: u8,
    model: kasad::sim::Model,
    spec: kasad::sim::KlapSpec,
    probe_port: u16,
    clock: kasad::clock::SharedClock,
}

/// An IOT device of `model` speaking KLAP `version` (see [`SimBuilder`]).
pub fn klap_sim(
    host: u8,
    model: kasad::sim::Model,
    version: kasad::protocol::klap::Version,
) -> SimBuilder {
    SimBuilder {
        host,
        model,
        spec: kasad::sim::KlapSpec {
            version,
            family: kasad::domain::Family::Iot,
            account: kasad::protocol::klap::Credentials::new("owner@example.com", "correct horse"),
            session_timeout: std::time::Duration::from_secs(86_400),
            aes: false,
        },
        probe_port: 0,
        clock: kasad::clock::system(),
    }
}

/// An EP25 hw 2.6 speaking SMART over AES securePassthrough (see [`SimBuilder`]).
pub fn aes_sim(host: u8) -> SimBuilder {
    let mut b = klap_sim(
        host,
        kasad::sim::Model::Ep25,
        kasad::protocol::klap::Version::V2,
    )
    .smart();
    b.spec.aes = true;
    b
}

impl SimBuilder {
    /// Speaks SMART inside the transport.
    pub fn smart(mut self) -> Self {
        self.spec.family = kasad::domain::Family::Smart;
        self
    }

    /// The KLAP generation (for AES: the login version its probe answer announces).
    pub fn version(mut self, v: kasad::protocol::klap::Version) -> Self {
        self.spec.version = v;
        self
    }

    /// Bound to `account`.
    pub fn account(mut self, account: kasad::protocol::klap::Credentials) -> Self {
        self.spec.account = account;
        self
    }

    /// Sessions lapse after `timeout`.
    pub fn session(mut self, timeout: std::time::Duration) -> Self {
        self.spec.session_timeout = timeout;
        self
    }

    /// Answers the 20002 probe on `port` (0: ephemeral).
    pub fn probe_port(mut self, port: u16) -> Self {
        self.probe_port = port;
        self
    }

    /// Runs on `clock`.
    pub fn clock(mut self, clock: kasad::clock::SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Starts it, with six 60 W loads (one per outlet of a strip).
    pub async fn start(self) -> kasad::sim::KlapHandle {
        use kasad::sim::{Load, SimDevice, SimSpec};
        let spec = SimSpec::numbered(
            u32::from(self.host) + 300,
            self.model,
            vec![Load::Constant(60_000); 6],
        );
        let d = SimDevice::new(spec, self.clock.now_ms());
        let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 3, self.host));
        kasad::sim::start_klap(d, self.spec, ip, self.probe_port, self.clock)
            .await
            .unwrap()
    }
}

impl TestApp {
    /// POSTs `body` as JSON text, as it is (a hostile body: too big, malformed), on a
    /// connection closed after it; the status and the JSON answer (`null` when none).
    pub async fn post_raw(&self, path: &str, body: String) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .header("connection", "close")
            .body(body)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap_or(Value::Null),
        )
    }

    /// Creates alert rule `body` (201 expected); its id.
    pub async fn alert_rule(&self, body: Value) -> String {
        let r = self
            .req(reqwest::Method::POST, "/api/alerts/rules")
            .json(&body)
            .send()
            .await
            .unwrap();
        let (s, v): (u16, Value) = (r.status().as_u16(), r.json().await.unwrap());
        assert_eq!(s, 201, "{v}");
        v["rule_id"].as_str().unwrap().to_owned()
    }

    /// The alerts of rule `rule`, newest first.
    pub async fn alerts_of(&self, rule: &str) -> Vec<Value> {
        let (s, v) = self.get("/api/alerts?limit=1000").await;
        assert_eq!(s, 200, "{v}");
        v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["rule_id"] == rule)
            .cloned()
            .collect()
    }

    /// Waits (bounded) until two alert evaluations have finished after now: the second one
    /// surely began after whatever the caller changed.
    pub async fn two_evaluations(&self) {
        let n = async || {
            self.get("/api/health").await.1["alerts"]["evaluations"]
                .as_u64()
                .unwrap()
        };
        let start = n().await;
        for _ in 0..ATTEMPTS {
            if n().await >= start + 2 {
                return;
            }
            tokio::time::sleep(STEP).await;
        }
        panic!("no alert evaluation");
    }
}
