//! A job stores its plan when it is created and renders from it. A job that an older version
//! queued (it stored the create body instead) still renders after the upgrade, into the same
//! file an export of the same body makes today.

use crate::exports::{download, env, finished};
use crate::helpers::TestApp;
use kasad::export::Status;
use kasad::store::Store;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_queued_before_plans_were_stored_renders_after_the_upgrade() {
    let e = env().await;
    let body = json!({"export_type": "device_data", "format": "csv", "aggregation": "hourly",
        "date_range": {"start": "2024-03-09", "end": "2024-03-10"},
        "custom_fields": [{"name": "load", "formula": "power_w / 10"}]});
    let st = finished(&e.app, body.clone()).await;
    let id = st["export_id"].as_str().unwrap().to_owned();
    let (s, today, _) = download(&e.app, &id).await;
    assert_eq!(s, 200);
    e.app.stop().await;

    // What the record holds now is the plan, not the body.
    let store = Store::open(&e.data.path().join("kasad.redb"), 8).unwrap();
    let rec = store.export(&id).unwrap().unwrap();
    let plan = &rec.request["plan"];
    assert!(
        plan.is_object() && rec.request.get("body").is_none(),
        "{}",
        rec.request
    );
    // The same job as an older version stored it: the body and what creation resolved.
    let mut old = rec.clone();
    old.id = format!("{id}old");
    old.status = Status::Queued;
    (old.started_ms, old.completed_ms, old.expires_ms) = (None, None, None);
    (old.file_size, old.record_count, old.checksum_sha256) = (None, None, None);
    (old.progress, old.summary, old.error) = (0, None, None);
    let ids: Vec<_> = plan["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].clone())
        .collect();
    old.request = json!({"body": body, "resolved": {"device_ids": ids,
        "start_ms": plan["start_ms"], "end_ms": plan["end_ms"]}});
    store
        .export_create(&old, u64::MAX, u32::MAX, 3_600_000, None)
        .unwrap()
        .unwrap();
    drop(store);

    // The upgraded daemon runs the queued job at its start.
    let app = TestApp::on_data(e.data.path(), e.clock.clone(), |s| {
        s.exports.rate_limit_per_hour = 1000
    })
    .await;
    let mut done = json!(null);
    for _ in 0..200 {
        let (_, v) = app.get(&format!("/api/exports/{}", old.id)).await;
        if v["status"] == "completed" || v["status"] == "failed" {
            done = v;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(done["status"], "completed", "{done}");
    let (s, then, _) = download(&app, &old.id).await;
    assert_eq!(s, 200);
    assert!(!today.is_empty());
    assert_eq!(then, today, "the old job renders the same file");
    app.stop().await;
}
