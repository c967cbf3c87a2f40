//! Interoperability with a third-party implementation of the device side: the npm package
//! tplink-smarthome-simulator 5.0.1 (installed by `.ci/run` into tests/npm-sim). kasad must
//! discover its devices by unicast probe and read exactly the values it serves.

use crate::helpers::{ATTEMPTS, STEP, TestApp};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

struct NodeSim {
    child: Child,
    devices: Vec<Value>,
}

impl Drop for NodeSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node_sim(specs: &Value) -> NodeSim {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/npm-sim");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/tplink-smarthome-simulator")
            .exists(),
        "the npm simulator is not installed: run `npm ci --prefix tests/npm-sim` (the README's test command does)"
    );
    let mut child = Command::new("node")
        .arg("run-sim.js")
        .arg(specs.to_string())
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node must be installed to run the interop test");
    let mut devices = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.expect("simulator output");
        if line == "ready" {
            return NodeSim { child, devices };
        }
        devices.push(serde_json::from_str(&line).expect("simulator prints JSON lines"));
    }
    let _ = child.wait();
    panic!("the npm simulator exited before it was ready");
}

/// v1 float fields ×1000 rounded; v2 integer fields as they are.
fn expected(rt: &Value, v2: &str, v1: &str) -> i64 {
    rt.get(v2)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| (rt[v1].as_f64().unwrap() * 1000.0).round() as i64)
}

#[tokio::test]
async fn discovers_and_polls_the_reference_simulator() {
    let specs = json!([
        {"model": "hs110", "address": "127.0.0.72"},
        {"model": "hs110v2", "address": "127.0.0.73"},
        {"model": "hs300", "address": "127.0.0.74"},
        {"model": "hs100", "address": "127.0.0.75"},
    ]);
    let sim = start_node_sim(&specs);
    let targets: Vec<String> = sim
        .devices
        .iter()
        .map(|d| format!("{}:{}", d["address"].as_str().unwrap(), d["port"]))
        .collect();
    let app = TestApp::spawn_with(vec![], |s| {
        s.discovery.targets = targets.clone();
        assert!(
            targets
                .iter()
                .all(|t| t.parse::<SocketAddr>().unwrap().ip().is_loopback())
        );
    })
    .await;
    let devices = app
        .wait_devices("all simulator devices polled", |d| {
            d.len() == 4 + 6
                && d.iter()
                    .filter(|x| x["device_type"] != "strip")
                    .all(|x| x["data_points"].as_u64() >= Some(1))
        })
        .await;

    for sim_dev in &sim.devices {
        let sys = &sim_dev["sysinfo"];
        let id = sys["deviceId"].as_str().unwrap();
        let listed = devices
            .iter()
            .find(|d| d["device_id"] == id)
            .expect("device listed by its deviceId");
        assert_eq!(listed["model"], sys["model"]);
        assert_eq!(listed["device_name"], sys["alias"]);
        assert_eq!(listed["device_ip"], sim_dev["address"]);
        let children = sys["children"].as_array().cloned().unwrap_or_default();
        let series_ids: Vec<String> = if children.is_empty() {
            vec![id.to_owned()]
        } else {
            assert_eq!(listed["device_type"], "strip");
            children
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned())
                .collect()
        };
        if sim_dev["model"] == "hs300" {
            assert_eq!(series_ids.len(), 6, "the HS300 gives 6 outlet series");
        }
        for (i, sid) in series_ids.iter().enumerate() {
            let (s, body) = app
                .get(&format!("/api/devices/{sid}/readings?resolution=raw"))
                .await;
            assert_eq!(s, 200, "{body}");
            let r = &body["readings"][0];
            let rt = &sim_dev["realtime"][i];
            if sim_dev["model"] == "hs100" {
                assert_eq!(listed["has_emeter"], false);
                assert!(r["power_w"].is_null(), "HS100 gives relay state only: {r}");
                assert_eq!(r["is_on"], sys["relay_state"] == 1);
                continue;
            }
            let rt = rt.get("get_realtime").unwrap_or(rt);
            let mw = (r["power_w"].as_f64().unwrap() * 1000.0).round() as i64;
            assert_eq!(mw, expected(rt, "power_mw", "power"), "{sid} power");
            let mv = (r["voltage"].as_f64().unwrap() * 1000.0).round() as i64;
            assert_eq!(mv, expected(rt, "voltage_mv", "voltage"), "{sid} voltage");
            let ma = (r["current"].as_f64().unwrap() * 1000.0).round() as i64;
            assert_eq!(ma, expected(rt, "current_ma", "current"), "{sid} current");
            let wh = (r["total_kwh"].as_f64().unwrap() * 1000.0).round() as i64;
            assert_eq!(wh, expected(rt, "total_wh", "total"), "{sid} counter");
        }
    }
    // The values the launcher set, restated: hs110 (v1) 61.753 W, hs300 outlet 3 at 31.5 W.
    let hs110 = &sim.devices[0]["sysinfo"]["deviceId"];
    let (_, b) = app
        .get(&format!(
            "/api/devices/{}/readings",
            hs110.as_str().unwrap()
        ))
        .await;
    assert_eq!(b["readings"][0]["power_w"], 61.753);
    let outlet3 = sim.devices[2]["sysinfo"]["children"][3]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, b) = app.get(&format!("/api/devices/{outlet3}/readings")).await;
    assert_eq!(b["readings"][0]["power_w"], 31.5);
    let _ = (ATTEMPTS, STEP);
    app.stop().await;
}
