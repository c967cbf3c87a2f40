//! Signed statements: issued as PDF, JSON and CSV through the export API, checked by
//! `kasad statement verify` (no configuration, no daemon) and `POST /api/statements/verify`,
//! read back with poppler, audited, and signed by a key that backups carry.

use crate::exports::{env, export_as};
use kasad::auth::signing::StatementKey;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;

fn body(format: &str) -> Value {
    json!({
        "export_type": "statement",
        "format": format,
        "devices": ["HEATER01"],
        "date_range": {"start": "2024-03-09", "end": "2024-03-11"},
        "options": {"timezone": "UTC"},
    })
}

fn kasad(args: &[&str]) -> (bool, String) {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    crate::helpers::kasad_cli(&args)
}

fn verify_file(dir: &Path, name: &str, bytes: &[u8], extra: &[&str]) -> (bool, String) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let mut args = vec!["statement", "verify", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    kasad(&args)
}

fn pdftotext(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.pdf");
    std::fs::write(&p, bytes).unwrap();
    let out = Command::new("pdftotext")
        .args(["-layout", p.to_str().unwrap(), "-"])
        .output()
        .expect("pdftotext (poppler-utils) must be installed");
    assert!(out.status.success(), "pdftotext failed on a statement");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn statements_are_signed_verified_and_fail_after_any_changed_byte() {
    let e = env().await;
    let app = &e.app;
    // A bill whose period covers the statement's (March): its standing charge is shared by
    // energy by default, and the statement carries its devices' share for 3 of the 31 days.
    let (s, b) = app
        .post_raw(
            "/api/bills",
            json!({"start": "2024-03-01", "end": "2024-03-31", "kwh": 600, "total": 150,
                "standing_charge": 31})
            .to_string(),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    // Both statement routes need a signed-in user.
    for (m, path) in [
        (Method::GET, "/api/statements/public-key"),
        (Method::POST, "/api/statements/verify"),
    ] {
        let r = app
            .client
            .request(m, format!("{}{path}", app.base))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let (s, key) = app.get("/api/statements/public-key").await;
    assert_eq!(s, 200, "{key}");
    let fp = key["fingerprint"].as_str().unwrap().to_owned();
    assert!(fp.starts_with("SHA256:"), "{key}");
    let dir = tempfile::tempdir().unwrap();

    // JSON: the statement's numbers, its key, and the check.
    let j = export_as(app, &body("json"), "json").await;
    let v: Value = serde_json::from_slice(&j).unwrap();
    let st = &v["statement"];
    assert_eq!(
        st["public_key"], key["public_key"],
        "the statement embeds its key"
    );
    assert_eq!(st["fingerprint"], fp.as_str());
    let facts = &st["report"]["statement"]["tables"]["statement"]["rows"];
    let fact = |name: &str| {
        facts
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["fact"] == name)
            .unwrap_or_else(|| panic!("no {name} in {facts}"))["value"]
            .clone()
    };
    let energy = fact("energy").as_f64().unwrap();
    let cost = fact("energy_cost").as_f64().unwrap();
    let standing = fact("standing_charge_share").as_f64().unwrap();
    assert!(energy > 1.0, "{energy}");
    let shared = &st["report"]["allocation"]["tables"]["allocation"]["rows"];
    let heater = shared
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["line"] == "Garage Heater")
        .unwrap_or_else(|| panic!("{shared}"));
    let whole = heater["standing_charge"].as_f64().unwrap();
    assert!(whole > 0.0 && whole < 31.0, "{heater}");
    assert!(
        (standing - (whole * 3.0 / 31.0 * 100.0).round() / 100.0).abs() < 0.006,
        "{standing} is 3/31 of {whole}"
    );
    assert!(cost > 0.0, "{cost}");
    assert!((fact("total").as_f64().unwrap() - (cost + standing)).abs() < 0.005);
    assert_eq!(fact("measured"), 100.0, "the fixture is all measured");
    let days = &st["report"]["energy"]["tables"]["energy_per_day"]["rows"];
    assert_eq!(
        days.as_array().unwrap().len(),
        3,
        "the end date is included: {days}"
    );
    let counters = &st["report"]["energy"]["tables"]["counters"]["rows"][0];
    assert!(counters["closing_counter"].as_f64() > counters["opening_counter"].as_f64());
    let (ok, text) = verify_file(dir.path(), "s.json", &j, &[]);
    assert!(ok, "{text}");
    assert!(text.contains(&fp), "{text}");

    // CSV.
    let c = export_as(app, &body("csv"), "csv").await;
    let (ok, text) = verify_file(dir.path(), "s.csv", &c, &["--public-key", &fp]);
    assert!(ok && text.contains("valid csv statement"), "{text}");
    assert!(String::from_utf8_lossy(&c).contains(key["public_key"].as_str().unwrap()));

    // PDF: poppler reads it (totals, the signer in the footer), the signed JSON is attached.
    let p = export_as(app, &body("pdf"), "pdf").await;
    let (ok, text) = verify_file(dir.path(), "s.pdf", &p, &[]);
    assert!(ok && text.contains("valid pdf statement"), "{text}");
    let shown = pdftotext(&p);
    assert!(shown.contains(&fp), "the footer names the signer:\n{shown}");
    assert!(shown.contains("standing_charge_share"), "{shown}");
    assert!(shown.contains(&format!("{standing}")), "{shown}");
    let list = Command::new("pdfdetach")
        .args(["-list", dir.path().join("s.pdf").to_str().unwrap()])
        .output()
        .expect("pdfdetach (poppler-utils) must be installed");
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("statement.json"),
        "{}",
        String::from_utf8_lossy(&list.stdout)
    );

    // Any changed byte fails: every byte of JSON and CSV, a spread of the PDF's, by the
    // library; a few of each by the command, which names the problem.
    for (name, file) in [("s.json", &j), ("s.csv", &c), ("s.pdf", &p)] {
        let n = file.len();
        let step = if name == "s.pdf" { (n / 700).max(1) } else { 1 };
        for i in (0..n).step_by(step).chain(n.saturating_sub(300)..n) {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            assert!(
                kasad::export::signed::verify(&bad, None).is_err(),
                "{name}: byte {i} of {n} changed and still valid"
            );
        }
        for i in [0, n / 3, n / 2, n - 40, n - 3] {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            let (ok, text) = verify_file(dir.path(), "bad", &bad, &[]);
            assert!(!ok, "{name}: byte {i} changed: {text}");
            assert!(text.contains("NOT VALID"), "{text}");
        }
    }

    // A statement edited and signed again with a key of one's own is refused by the API (it
    // checks against this appliance's key), and the command says to compare the signer.
    let forger_dir = tempfile::tempdir().unwrap();
    let forger = StatementKey::load_or_create(forger_dir.path()).unwrap();
    let mut edited = st.clone();
    edited["report"]["statement"]["tables"]["statement"]["rows"][0]["value"] =
        json!("Someone else");
    let forged = kasad::export::signed::sign_json(edited, &forger);
    let (ok, text) = verify_file(dir.path(), "forged.json", &forged, &[]);
    assert!(ok && text.contains("compare that fingerprint"), "{text}");
    assert!(!text.contains(&fp), "{text}");
    let (ok, text) = verify_file(dir.path(), "forged.json", &forged, &["--public-key", &fp]);
    assert!(!ok && text.contains("NOT VALID"), "{text}");

    // Another signer is told apart, given as a fingerprint or as a key file.
    let other_dir = tempfile::tempdir().unwrap();
    let other = StatementKey::load_or_create(other_dir.path()).unwrap();
    let (ok, text) = verify_file(
        dir.path(),
        "s.json",
        &j,
        &["--public-key", &other.fingerprint()],
    );
    assert!(!ok && text.contains("signed by"), "{text}");
    let key_file = dir.path().join("key.json");
    std::fs::write(&key_file, key.to_string()).unwrap();
    let (ok, text) = verify_file(
        dir.path(),
        "s.pdf",
        &p,
        &["--public-key", key_file.to_str().unwrap()],
    );
    assert!(ok, "{text}");

    // The check through the API.
    let check = |bytes: Vec<u8>, q: &str| {
        let r = app
            .req(Method::POST, &format!("/api/statements/verify{q}"))
            .body(bytes)
            .send();
        async move {
            let r = r.await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = check(p.clone(), "").await;
    assert_eq!(
        (s, v["fingerprint"].as_str()),
        (200, Some(fp.as_str())),
        "{v}"
    );
    let (s, v) = check(forged.clone(), "").await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (422, Some("STATEMENT_INVALID")),
        "{v}"
    );
    // A large hostile upload is answered, not parsed into memory.
    let mut big = b"{\"statement\":[".to_vec();
    big.extend(std::iter::repeat_n(b'1', 20 << 20));
    big.extend_from_slice(b"],\"signature\":{}}\n");
    let (s, v) = check(big, "").await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (422, Some("STATEMENT_INVALID")),
        "{v}"
    );
    let mut bad = p.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    let (s, v) = check(bad, "").await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (422, Some("STATEMENT_INVALID")),
        "{v}"
    );
    let (s, v) = check(
        c.clone(),
        &format!(
            "?public_key={}",
            other.fingerprint().replace('+', "%2B").replace('/', "%2F")
        ),
    )
    .await;
    assert_eq!(s, 422, "{v}");

    // Issuing is audited with the file's hash.
    let (_, audit) = app.get("/api/audit?event_types=STATEMENT_ISSUED").await;
    let entries = audit["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(entries.len(), 3, "{audit}");
    let hashes: Vec<String> = [&j, &c, &p]
        .iter()
        .map(|b| {
            Sha256::digest(b)
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect()
        })
        .collect();
    for h in &hashes {
        assert!(audit.to_string().contains(h.as_str()), "{h} in {audit}");
    }

    // The key survives a backup and a restore: the restored appliance signs as before.
    let r = app
        .req(Method::POST, "/api/admin/backup")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let zip = dir.path().join("b.zip");
    std::fs::write(&zip, r.bytes().await.unwrap()).unwrap();
    let restored = dir.path().join("restored");
    kasad::backup::restore(&zip, &restored).unwrap();
    assert_eq!(
        std::fs::read(restored.join("statement.key")).unwrap(),
        std::fs::read(e.data.path().join("statement.key")).unwrap()
    );
    let again = StatementKey::load_or_create(&restored).unwrap();
    assert_eq!(again.fingerprint(), fp);

    // Not compressed, and only pdf, json or csv.
    let mut zipped = body("json");
    zipped["options"] = json!({"timezone": "UTC", "compression": "gzip"});
    let (s, v) = app
        .post_raw("/api/exports/create", zipped.to_string())
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = app
        .post_raw("/api/exports/create", body("excel").to_string())
        .await;
    assert_eq!(s, 400, "{v}");
    e.app.stop().await;
}
