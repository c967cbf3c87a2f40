//! The first five minutes of a new install, against the real binary: `kasad run` on an empty
//! data directory makes a one-time setup code (in its log and in `setup-code`, mode 0600),
//! wrong codes are refused and throttled, the right one creates the first administrator and
//! is gone, and `kasad setup-code` prints it meanwhile.

use crate::helpers::{free_port, login};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_kasad");

/// `kasad run` on a fresh data directory (no devices, loopback only); killed on drop.
pub struct Fresh {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its data directory.
    pub data: std::path::PathBuf,
    /// Its configuration file.
    pub config: std::path::PathBuf,
    /// Its log (stderr).
    pub log: std::path::PathBuf,
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a daemon in `dir` without users; returns once it answers `GET /api/setup`.
pub async fn fresh(dir: &std::path::Path) -> Fresh {
    let data = dir.join("data");
    let config = dir.join("kasad.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[http]\nlisten = \"127.0.0.1:{port}\"\ntrusted_proxies = [\"127.0.0.1\"]\n\
             [discovery]\nenabled = false\n"
        ),
    )
    .unwrap();
    let log = dir.join("stderr.log");
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let f = Fresh {
        child,
        base: format!("http://127.0.0.1:{port}"),
        data,
        config,
        log,
    };
    let c = crate::helpers::client();
    for _ in 0..crate::helpers::ATTEMPTS {
        if let Ok(r) = c.get(format!("{}/api/setup", f.base)).send().await
            && r.status() == 200
        {
            return f;
        }
        tokio::time::sleep(crate::helpers::STEP).await;
    }
    panic!(
        "kasad run did not answer: {}",
        std::fs::read_to_string(&f.log).unwrap_or_default()
    );
}

async fn setup(base: &str, from: &str, code: &str) -> reqwest::Response {
    crate::helpers::client()
        .post(format!("{base}/api/setup"))
        .header("x-forwarded-for", from)
        .json(&json!({"setup_code": code, "username": "owner", "password": "owner-password-1"}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_install_is_set_up_with_its_one_time_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = fresh(dir.path()).await;
    let c = crate::helpers::client();
    let v: Value = c
        .get(format!("{}/api/setup", d.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"required": true}));
    // The code: a private file and the log say it.
    let file = d.data.join("setup-code");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let code = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert_eq!(code.len(), 26, "128 bits in base32: {code}");
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.contains(&code), "the code is in the log: {log}");
    // `kasad setup-code` (over the admin socket) prints it too.
    let out = Command::new(BIN)
        .args(["setup-code", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&code));

    // Wrong codes: refused, then throttled.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            setup(&d.base, "198.51.100.1", "AAAAAAAAAAAAAAAAAAAAAAAAAA")
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, vec![401, 401, 401, 401, 401, 429]);
    // The right code from elsewhere, after the short delay the failures asked for.
    let mut r = setup(&d.base, "198.51.100.2", &code).await;
    for _ in 0..40 {
        if r.status() != 429 {
            break;
        }
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(wait <= 30, "Retry-After {wait}");
        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
        r = setup(&d.base, "198.51.100.2", &code).await;
    }
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert!(!file.exists(), "the used code's file is gone");
    login(&c, &d.base, "owner", "owner-password-1").await;
    let again = setup(&d.base, "198.51.100.3", &code).await;
    assert_eq!(again.status(), 409);
    let v: Value = c
        .get(format!("{}/api/setup", d.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"required": false}));
    let out = Command::new(BIN)
        .args(["setup-code", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("kasad is set up"));
}
