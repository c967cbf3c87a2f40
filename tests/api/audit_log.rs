//! The audit log is tamper-evident: altering or removing an entry is found by
//! `kasad audit verify` (run against the stopped daemon's data directory), and retention keeps
//! the chain verifiable.

use crate::helpers::TestApp;
use redb::{Database, ReadableTable, TableDefinition};
use reqwest::Method;
use serde_json::json;

const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

fn verify(cfg: &std::path::Path) -> (bool, String) {
    crate::helpers::kasad_cli(&[
        "audit".as_ref(),
        "verify".as_ref(),
        "--config".as_ref(),
        cfg.as_ref(),
    ])
}

fn edit(db: &std::path::Path, f: impl FnOnce(&mut redb::Table<u64, &[u8]>)) {
    let db = Database::open(db).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(AUDIT).unwrap();
        f(&mut t);
    }
    txn.commit().unwrap();
}

fn get(db: &std::path::Path, seq: u64) -> Vec<u8> {
    let mut out = Vec::new();
    edit(db, |t| out = t.get(seq).unwrap().unwrap().value().to_vec());
    out
}

#[tokio::test]
async fn tampering_is_detected_and_retention_keeps_the_chain() {
    let app = TestApp::spawn(vec![]).await;
    for name in ["ann", "ben", "cat", "dan"] {
        let r = app
            .req(Method::POST, "/api/users")
            .json(&json!({"username": name, "password": "long-enough-1", "role": "viewer"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let (s, v) = app.get("/api/audit/verify").await;
    assert_eq!((s, v["ok"].as_bool()), (200, Some(true)), "{v}");
    let TestApp {
        running, dir, sims, ..
    } = app;
    running.shutdown.cancel();
    running.done.await.unwrap().unwrap();
    drop(sims);
    let cfg = dir.path().join("kasad.toml");
    std::fs::write(&cfg, format!("data_dir = {:?}\n", dir.path())).unwrap();
    let db = dir.path().join("kasad.redb");

    let (ok, text) = verify(&cfg);
    assert!(ok, "{text}");
    assert!(text.contains("OK"), "{text}");

    // Change one byte of entry 3's stored details.
    let original = get(&db, 3);
    let mut altered = original.clone();
    let pos = String::from_utf8_lossy(&altered)
        .find("\"details\"")
        .unwrap()
        + 12;
    altered[pos] ^= 0x01;
    edit(&db, |t| {
        t.insert(3, altered.as_slice()).unwrap();
    });
    let (ok, text) = verify(&cfg);
    assert!(!ok && text.contains("sequence 3"), "{text}");

    // Put it back, then delete entry 2 from the middle.
    edit(&db, |t| {
        t.insert(3, original.as_slice()).unwrap();
        t.remove(2).unwrap();
    });
    let (ok, text) = verify(&cfg);
    assert!(!ok && text.contains("sequence 2"), "{text}");

    // Retention on an intact log keeps it verifiable; a compliance hold blocks it.
    let fresh = TestApp::spawn(vec![]).await;
    for name in ["eve", "fay"] {
        fresh
            .req(Method::POST, "/api/users")
            .json(&json!({"username": name, "password": "long-enough-1", "role": "viewer"}))
            .send()
            .await
            .unwrap();
    }
    let TestApp {
        running, dir: dir2, ..
    } = fresh;
    running.shutdown.cancel();
    running.done.await.unwrap().unwrap();
    let store = kasad::store::Store::open(&dir2.path().join("kasad.redb"), 8).unwrap();
    let key: [u8; 32] = std::fs::read(dir2.path().join("audit.key"))
        .unwrap()
        .try_into()
        .unwrap();
    let key = kasad::auth::keys::SecretKey::from_bytes(key);
    let (entries, total) = store.audit_query(&Default::default(), 100, 0).unwrap();
    assert!(total >= 3);
    let cut = entries.iter().map(|e| e.ts_ms).min().unwrap() + 1;
    store.audit_set_hold(true).unwrap();
    assert!(matches!(
        store.audit_retain(&key, cut, cut),
        Err(kasad::store::Error::ComplianceHold)
    ));
    store.audit_set_hold(false).unwrap();
    let removed = store.audit_retain(&key, cut, cut).unwrap();
    assert!(removed >= 1);
    let v = store.audit_verify(&key).unwrap();
    assert!(v.ok, "{v:?}");
    drop(store);
    let cfg2 = dir2.path().join("kasad.toml");
    std::fs::write(&cfg2, format!("data_dir = {:?}\n", dir2.path())).unwrap();
    let (ok, text) = verify(&cfg2);
    assert!(ok, "{text}");
}
