//! MQTT against a real broker: Debian's mosquitto on 127.0.0.1 (a free port), watched with
//! mosquitto_sub (an independent client), commanded with mosquitto_pub.

use crate::helpers::{TestApp, free_port, start_sims};
use kasad::clock::Clock;
use kasad::sim::{Load, Model, SimDevice, SimSpec};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A mosquitto broker on 127.0.0.1:`port`, without persistence (a restart forgets retained
/// messages, the worst case for the daemon).
struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start(port: u16) -> Self {
        Self::start_with(port, "")
    }

    /// A broker with `extra` lines for its listener (TLS files).
    fn start_with(port: u16, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\n{extra}allow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        // Debian puts the broker in /usr/sbin, outside a normal user's PATH.
        let bin = if std::path::Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        };
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package mosquitto) is needed for the MQTT tests");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every message mosquitto_sub sees on `#`: topic -> (ever delivered retained, latest
/// payload).
struct Watch {
    child: Child,
    seen: Arc<Mutex<HashMap<String, (bool, String)>>>,
}

impl Watch {
    fn start(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    fn start_with(port: u16, extra: &[&str]) -> Self {
        let mut child = mosquitto("mosquitto_sub", port)
            .args(["-t", "#", "-F", "%r|%t|%p"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (Debian package mosquitto-clients) is needed");
        let out = child.stdout.take().unwrap();
        let seen: Arc<Mutex<HashMap<String, (bool, String)>>> = Arc::default();
        let s = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut p = line.splitn(3, '|');
                if let (Some(r), Some(t), Some(v)) = (p.next(), p.next(), p.next()) {
                    let mut seen = s.lock().unwrap();
                    let e = seen.entry(t.to_owned()).or_insert((false, String::new()));
                    *e = (e.0 || r == "1", v.to_owned());
                }
            }
        });
        Self { child, seen }
    }

    /// Waits until `topic` has been seen (with `ok` true of its payload).
    async fn wait(&self, topic: &str, ok: impl Fn(&str) -> bool) -> (bool, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(v) = self.seen.lock().unwrap().get(topic).cloned()
                && ok(&v.1)
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no {topic} seen: {:?}",
                self.keys()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.seen.lock().unwrap().keys().cloned().collect();
        k.sort();
        k
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mosquitto client command aimed at the test broker.
fn mosquitto(client: &str, port: u16) -> Command {
    let mut c = Command::new(client);
    c.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    c
}

fn publish(port: u16, topic: &str, msg: &str) {
    let st = mosquitto("mosquitto_pub", port)
        .args(["-t", topic, "-m", msg])
        .status()
        .expect("mosquitto_pub runs");
    assert!(st.success());
}

fn lamp() -> SimDevice {
    let now = kasad::clock::SystemClock.now_ms();
    SimDevice::new(
        SimSpec::numbered(3, Model::Kp115, vec![Load::Constant(45_200)]),
        now,
    )
}

async fn daemon(port: u16, prefix: &str, allow: bool) -> TestApp {
    daemon_with(port, prefix, move |m| m.allow_control = allow).await
}

async fn daemon_with(
    port: u16,
    prefix: &str,
    tweak: impl FnOnce(&mut kasad::config::Mqtt) + Send + 'static,
) -> TestApp {
    let sims = start_sims(vec![lamp()]).await;
    let prefix = prefix.to_owned();
    TestApp::with_sims(sims, move |s| {
        s.mqtt.enabled = true;
        s.mqtt.port = port;
        s.mqtt.client_id = format!("kasad-test-{prefix}");
        s.mqtt.topic_prefix = prefix;
        tweak(&mut s.mqtt);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_sees_every_device_and_control_needs_permission() {
    // kasad starts before the broker and polls for a while (more messages wait than the
    // connection's own queue holds): everything arrives once the broker is up.
    let port = free_port();
    let app = daemon(port, "kasad", false).await;
    let id = app.sims[0].with_device(|d| d.spec().device_id.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let broker = Broker::start(port);
    let watch = Watch::start(broker.port);

    // Discovery: retained configs with Home Assistant's classes.
    let cfg = |kind: &str, key: &str| format!("homeassistant/{kind}/kasad_{id}/{key}/config");
    let (_, power) = watch.wait(&cfg("sensor", "power"), |_| true).await;
    let power: Value = serde_json::from_str(&power).unwrap();
    assert_eq!(power["device_class"], "power");
    assert_eq!(power["unit_of_measurement"], "W");
    assert_eq!(power["state_class"], "measurement");
    assert_eq!(power["state_topic"], format!("kasad/{id}/power"));
    let (_, energy) = watch.wait(&cfg("sensor", "energy_total"), |_| true).await;
    let energy: Value = serde_json::from_str(&energy).unwrap();
    assert_eq!(
        (
            &energy["device_class"],
            &energy["unit_of_measurement"],
            &energy["state_class"]
        ),
        (
            &Value::from("energy"),
            &Value::from("kWh"),
            &Value::from("total_increasing")
        )
    );
    let (_, switch) = watch.wait(&cfg("switch", "relay"), |_| true).await;
    let switch: Value = serde_json::from_str(&switch).unwrap();
    assert_eq!(switch["command_topic"], format!("kasad/{id}/relay/set"));
    // States after the polls: the simulator's 45.2 W, relay and availability retained.
    watch
        .wait(&format!("kasad/{id}/power"), |p| p == "45.2")
        .await;
    // A subscriber arriving later gets what Home Assistant needs at its start, retained:
    // the configs, the relay state, availability; not the measurements.
    let late = Watch::start(broker.port);
    assert!(late.wait(&cfg("sensor", "power"), |_| true).await.0);
    assert!(late.wait(&cfg("switch", "relay"), |_| true).await.0);
    assert_eq!(
        late.wait(&format!("kasad/{id}/relay"), |_| true).await,
        (true, "ON".into())
    );
    assert_eq!(
        late.wait(&format!("kasad/{id}/availability"), |_| true)
            .await,
        (true, "online".into())
    );
    assert_eq!(
        late.wait("kasad/status", |_| true).await,
        (true, "online".into())
    );
    assert_eq!(
        late.wait(&format!("kasad/{id}/power"), |p| p == "45.2")
            .await,
        (false, "45.2".into()),
        "measurements are not retained"
    );
    drop(late);

    // Not allowed: a command is ignored (and counted).
    publish(broker.port, &format!("kasad/{id}/relay/set"), "OFF");
    let metrics = async || {
        let r = app
            .req(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metrics().await.contains("kasad_mqtt_commands_total 1") {
        assert!(Instant::now() < deadline, "the command did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metrics().await.contains("kasad_mqtt_connected 1"));
    // Given time to act (several poll cycles), it did not switch.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(app.sims[0].with_device(|d| d.relay_on(0)), "not switched");
    let (_, audit) = app.get("/api/audit?event_types=DEVICE_CONTROLLED").await;
    assert_eq!(audit["total"], 0, "{audit}");

    // The broker dies and comes back empty: everything is there again after reconnection.
    let port = broker.kill();
    drop(watch);
    let broker = Broker::start(port);
    let watch = Watch::start(port);
    watch.wait(&cfg("sensor", "power"), |_| true).await;
    watch
        .wait(&format!("kasad/{id}/relay"), |p| p == "ON")
        .await;
    watch.wait("kasad/status", |p| p == "online").await;
    watch
        .wait(&format!("kasad/{id}/power"), |p| p == "45.2")
        .await;
    let late = Watch::start(port);
    assert!(
        late.wait(&cfg("sensor", "power"), |_| true).await.0,
        "retained again"
    );
    drop(late);

    // A clean stop says offline (retained).
    app.stop().await;
    watch.wait("kasad/status", |p| p == "offline").await;
    let late = Watch::start(port);
    assert_eq!(
        late.wait("kasad/status", |_| true).await,
        (true, "offline".into())
    );
    drop(late);

    // Allowed: the plug is switched and the switch audited with the broker as the actor.
    let app = daemon(broker.port, "home", true).await;
    let id = app.sims[0].with_device(|d| d.spec().device_id.clone());
    watch.wait(&format!("home/{id}/relay"), |p| p == "ON").await;
    publish(broker.port, &format!("home/{id}/relay/set"), "OFF");
    watch
        .wait(&format!("home/{id}/relay"), |p| p == "OFF")
        .await;
    assert!(!app.sims[0].with_device(|d| d.relay_on(0)));
    let (_, audit) = app.get("/api/audit?event_types=DEVICE_CONTROLLED").await;
    let entry = &audit["entries"][0];
    assert_eq!(
        entry["username"],
        format!("mqtt:127.0.0.1:{}", broker.port),
        "{audit}"
    );
    assert_eq!(entry["details"]["on"], false);
    app.stop().await;
}

/// A CA and a certificate for 127.0.0.1 it signed, made with the openssl command line.
pub(crate) fn certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let st = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl makes the test certificates");
        assert!(st.success(), "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = [
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=kasad test CA",
    ];
    run(&[&["req", "-x509"][..], &ec, &ca].concat());
    let csr = [
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ];
    run(&[&["req"][..], &ec, &csr].concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    // mosquitto drops root rights: it must be able to read its files.
    for f in ["ca.pem", "server.pem", "server.key"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_broker_is_verified_against_the_configured_ca() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let p = |f: &str| certs.path().join(f).display().to_string();
    let tls = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\n",
        p("ca.pem"),
        p("server.pem"),
        p("server.key")
    );
    let broker = Broker::start_with(free_port(), &tls);
    let watch = Watch::start_with(broker.port, &["--cafile", &p("ca.pem")]);
    let ca = certs.path().join("ca.pem");
    let app = daemon_with(broker.port, "kasad", move |m| {
        m.tls = true;
        m.ca_file = Some(ca);
    })
    .await;
    let id = app.sims[0].with_device(|d| d.spec().device_id.clone());
    watch
        .wait(&format!("kasad/{id}/power"), |p| p == "45.2")
        .await;
    app.stop().await;
    // Without the CA (the public web roots only) the broker is not trusted: after several
    // poll cycles nothing has arrived and the daemon is not connected.
    let app = daemon_with(broker.port, "untrusted", |m| m.tls = true).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = app
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    let m = r.text().await.unwrap();
    assert!(m.contains("kasad_mqtt_connected 0"), "{m}");
    assert!(!watch.keys().iter().any(|k| k.starts_with("untrusted/")));
    app.stop().await;
}

/// A kasad name given through the API reaches Home Assistant's discovery (retained config).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_device_is_renamed_in_home_assistant_discovery() {
    let port = free_port();
    let broker = Broker::start(port);
    let app = daemon(port, "kasren", false).await;
    let id = app.sims[0].with_device(|d| d.spec().device_id.clone());
    let watch = Watch::start(broker.port);
    let topic = format!("homeassistant/sensor/kasad_{id}/power/config");
    let (_, first) = watch.wait(&topic, |_| true).await;
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_ne!(first["device"]["name"], "Fridge");
    let r = app
        .req(reqwest::Method::PATCH, &format!("/api/devices/{id}"))
        .json(&serde_json::json!({"name": "Fridge"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, renamed) = watch
        .wait(&topic, |p| {
            serde_json::from_str::<Value>(p).is_ok_and(|v| v["device"]["name"] == "Fridge")
        })
        .await;
    assert!(renamed.contains("Fridge"));
    app.stop().await;
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_notices_reach_mqtt_with_a_home_assistant_event_entity() {
    let port = free_port();
    let broker = Broker::start(port);
    let app = daemon(port, "kasalert", false).await;
    let watch = Watch::start(broker.port);
    app.wait_devices("the lamp polled", |d| {
        d.len() == 1 && d[0]["data_points"].as_u64() > Some(0)
    })
    .await;
    // The lamp draws 45.2 W: a rule over 10 W raises at the next evaluation.
    let r = app
        .req(reqwest::Method::POST, "/api/alerts/rules")
        .json(
            &serde_json::json!({"name": "Lamp left on", "kind": "power_above",
            "threshold_w": 10, "channels": ["mqtt"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let rule = r.json::<Value>().await.unwrap()["rule_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let config_topic = format!("homeassistant/event/kasad_alert_{rule}/config");
    let (_, config) = watch.wait(&config_topic, |_| true).await;
    let config: Value = serde_json::from_str(&config).unwrap();
    // A subscriber that comes later gets it from the broker: it is retained.
    let later = Watch::start(broker.port);
    let (retained, _) = later.wait(&config_topic, |_| true).await;
    assert!(retained, "the event entity's config is retained");
    assert_eq!(config["state_topic"], format!("kasalert/alerts/{rule}"));
    assert_eq!(config["name"], "Lamp left on");
    let (_, notice) = watch
        .wait(&format!("kasalert/alerts/{rule}"), |p| {
            p.contains("alert.raised")
        })
        .await;
    let notice: Value = serde_json::from_str(&notice).unwrap();
    assert_eq!(
        (&notice["event_type"], &notice["kind"], &notice["state"]),
        (
            &serde_json::json!("alert.raised"),
            &serde_json::json!("power_above"),
            &serde_json::json!("open")
        )
    );
    assert!(
        notice["message"].as_str().unwrap().contains("45.2 W"),
        "{notice}"
    );
    app.stop().await;
    drop(broker);
}
