//! Signed decisions and archives through the API: keys in the log, the two-step decision, what a
//! bad signature, a revoked key or a moved-on case does, archives for auditors, the public log,
//! and an independent BagIt validator.

mod common;

use axum::http::StatusCode;
use common::{APPLICANT, Auth, ID_NUMBER, TestApp, b64, png, unb64};
use ed25519_dalek::Signer;
use serde_json::{Value, json};

/// A case in a call, identity checked, with one material: ready for a decision.
async fn ready_case(app: &TestApp) -> (Auth, Auth, i64) {
    let agent = app.demo("agent").await;
    let approver = app.demo("approver").await;
    let case = app.open_case(&agent, "id-loss").await;
    app.act(&approver, case, "accept", json!({}), StatusCode::OK)
        .await;
    app.act(
        &approver,
        case,
        "identity-check",
        json!({ "methods": ["id_card_shown"] }),
        StatusCode::OK,
    )
    .await;
    let path = format!("/api/cases/{case}/materials?filename=id.png");
    assert_eq!(
        app.raw(
            "POST",
            &path,
            &agent,
            Some(png()),
            Some("application/octet-stream")
        )
        .await
        .status,
        StatusCode::CREATED
    );
    (agent, approver, case)
}

async fn log_size(app: &TestApp) -> u64 {
    let note = String::from_utf8(
        app.raw("GET", "/api/log/checkpoint", &Auth::None, None, None)
            .await
            .body,
    )
    .unwrap();
    note.lines().nth(1).unwrap().parse().unwrap()
}

async fn state_of(app: &TestApp, who: &Auth, case: i64) -> Value {
    app.request("GET", &format!("/api/cases/{case}"), who, None)
        .await
        .json()["state"]
        .clone()
}

#[tokio::test]
async fn a_wrong_signature_decides_nothing_and_the_right_one_can_follow() {
    let app = TestApp::new();
    let (agent, approver, case) = ready_case(&app).await;
    let (key, key_id) = app.register_key(&approver).await;
    let bytes = app
        .prepare(&approver, case, "approve", "同意", &key_id)
        .await
        .unwrap();
    let size = log_size(&app).await;

    let forged = app
        .seal(&approver, case, &key.sign(b"something else").to_bytes())
        .await;
    assert_eq!(
        (forged.status, forged.code().as_str()),
        (StatusCode::BAD_REQUEST, "signature_invalid")
    );
    let garbage = app.seal(&approver, case, b"short").await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    assert_eq!(state_of(&app, &agent, case).await, "in_call");
    assert_eq!(log_size(&app).await, size, "nothing was logged");
    let other_key = common::fresh_key();
    let wrong_key = app
        .seal(&approver, case, &other_key.sign(&bytes).to_bytes())
        .await;
    assert_eq!(
        wrong_key.code(),
        "signature_invalid",
        "a signature by an unregistered key is refused"
    );

    let sealed = app
        .seal(&approver, case, &key.sign(&bytes).to_bytes())
        .await;
    assert_eq!(
        sealed.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&sealed.body)
    );
    let sealed = sealed.json();
    assert_eq!(sealed["case"]["state"], "approved");
    assert_eq!(sealed["archive"]["log_index"], size);
    assert_eq!(log_size(&app).await, size + 1);
    let again = app
        .seal(&approver, case, &key.sign(&bytes).to_bytes())
        .await;
    assert_eq!(again.code(), "not_prepared");
}

#[tokio::test]
async fn only_the_holder_learns_whether_a_decision_is_prepared_and_no_one_else_can_take_it() {
    let app = TestApp::new();
    let (agent, approver, case) = ready_case(&app).await;
    let (key, key_id) = app.register_key(&approver).await;
    let outsider = app.demo("approver2").await;
    let forged = [7u8; 64];
    let mut answers_before = Vec::new();
    for who in [&agent, &outsider] {
        let a = app.seal(who, case, &forged).await;
        answers_before.push((a.status, a.code()));
    }
    let bytes = app
        .prepare(&approver, case, "approve", "同意", &key_id)
        .await
        .unwrap();
    for (who, expected) in [&agent, &outsider].into_iter().zip(&answers_before) {
        let a = app.seal(who, case, &forged).await;
        assert_eq!(
            &(a.status, a.code()),
            expected,
            "the answer changed once a decision was prepared"
        );
    }
    assert_eq!(
        answers_before[0],
        (StatusCode::FORBIDDEN, "forbidden".to_string())
    );
    assert_eq!(
        answers_before[1],
        (StatusCode::NOT_FOUND, "not_found".to_string())
    );
    // The holder's prepared decision is still there.
    let sealed = app
        .seal(&approver, case, &key.sign(&bytes).to_bytes())
        .await;
    assert_eq!(sealed.status, StatusCode::OK);
}

#[tokio::test]
async fn a_revoked_key_can_neither_prepare_nor_seal() {
    let app = TestApp::new();
    let (_, approver, case) = ready_case(&app).await;
    let (key, key_id) = app.register_key(&approver).await;
    let bytes = app
        .prepare(&approver, case, "approve", "", &key_id)
        .await
        .unwrap();
    let revoked = app
        .request(
            "POST",
            &format!("/api/keys/{key_id}/revoke"),
            &approver,
            Some(json!({ "reason": "设备丢失" })),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert!(revoked.json()["revocation_log_index"].is_u64());
    let sealed = app
        .seal(&approver, case, &key.sign(&bytes).to_bytes())
        .await;
    assert_eq!(sealed.code(), "key_revoked");
    let prepared = app
        .prepare(&approver, case, "approve", "", &key_id)
        .await
        .expect_err("revoked");
    assert_eq!(prepared.code(), "key_revoked");
    // A new key works.
    app.decide(&approver, case, "approve", "").await;
}

#[tokio::test]
async fn a_case_that_moved_on_after_preparing_cannot_be_sealed() {
    let app = TestApp::new();
    let (agent, approver, case) = ready_case(&app).await;
    let (key, key_id) = app.register_key(&approver).await;
    let bytes = app
        .prepare(&approver, case, "approve", "", &key_id)
        .await
        .unwrap();
    app.act(
        &agent,
        case,
        "cancel",
        json!({ "reason": "群众离开" }),
        StatusCode::OK,
    )
    .await;
    let size = log_size(&app).await;
    let sealed = app
        .seal(&approver, case, &key.sign(&bytes).to_bytes())
        .await;
    assert_eq!(sealed.status, StatusCode::CONFLICT);
    assert!(
        sealed.json()["message"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    assert_eq!(log_size(&app).await, size, "no statement was logged");
    let auditor = app.demo("auditor").await;
    assert_eq!(
        app.request("GET", &format!("/api/cases/{case}/archive"), &auditor, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn only_the_approver_who_prepared_may_seal_and_keys_are_checked() {
    let app = TestApp::new();
    let (agent, approver, case) = ready_case(&app).await;
    let (key, key_id) = app.register_key(&approver).await;
    let bytes = app
        .prepare(&approver, case, "reject", "材料不符", &key_id)
        .await
        .unwrap();
    let approver2 = app.demo("approver2").await;
    assert_eq!(
        app.seal(&approver2, case, &key.sign(&bytes).to_bytes())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Someone else's key id cannot be used to prepare.
    let (_, other_key_id) = app.register_key(&approver2).await;
    let borrowed = app
        .prepare(&approver, case, "reject", "材料不符", &other_key_id)
        .await
        .expect_err("not its key");
    assert!(
        borrowed.json()["message"]
            .as_str()
            .unwrap()
            .contains("key_id")
    );
    // Bad keys are refused by name; agents register none.
    let bad = app
        .request(
            "POST",
            "/api/keys",
            &approver,
            Some(json!({ "public_key": "not base64!" })),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let twice = app
        .request(
            "POST",
            "/api/keys",
            &approver,
            Some(json!({ "public_key": b64(key.verifying_key().as_bytes()) })),
        )
        .await;
    assert_eq!(twice.code(), "key_exists");
    assert_eq!(
        app.request(
            "POST",
            "/api/keys",
            &agent,
            Some(json!({ "public_key": b64(&[7; 32]) }))
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    let mine = app
        .request("GET", "/api/keys", &approver, None)
        .await
        .json();
    assert_eq!(mine.as_array().unwrap().len(), 1);
    assert_eq!(
        app.seal(&approver, case, &key.sign(&bytes).to_bytes())
            .await
            .json()["case"]["state"],
        "rejected"
    );
}

#[tokio::test]
async fn the_full_archive_goes_to_the_holder_and_auditors_others_get_a_receipt_and_uploads_verify()
{
    let app = TestApp::new();
    let (agent, approver, case) = ready_case(&app).await;
    let sealed = app.decide(&approver, case, "approve", "同意").await;
    let auditor = app.demo("auditor").await;
    let path = format!("/api/cases/{case}/archive");
    let archive = app.request("GET", &path, &auditor, None).await;
    assert_eq!(archive.status, StatusCode::OK);
    assert_eq!(archive.headers["content-type"], "application/zip");
    assert_eq!(
        archive.headers["x-content-sha256"],
        sealed["archive"]["sha256"].as_str().unwrap()
    );
    assert_eq!(
        app.request("GET", &path, &approver, None).await.status,
        StatusCode::OK
    );
    // The agent sees the applicant masked, so it may not have the archive (it holds the name and
    // ID number unmasked); it gets the receipt, which verifies and holds neither.
    let refused = app.request("GET", &path, &agent, None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("/receipt"),
        "{}",
        refused.json()
    );
    let receipt_path = format!("/api/cases/{case}/receipt");
    for who in [&agent, &app.demo("supervisor").await] {
        let receipt = app.request("GET", &receipt_path, who, None).await;
        assert_eq!(receipt.status, StatusCode::OK);
        let text = String::from_utf8(receipt.body.clone()).unwrap();
        assert!(
            !text.contains(APPLICANT) && !text.contains(ID_NUMBER),
            "{text}"
        );
        let report = esign::verify::verify_receipt(&receipt.body, &app.state.trust);
        assert!(report.passed(), "{report}");
        // And offline, with the CLI, trusting only the pinned log key.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("receipt.json"), &receipt.body).unwrap();
        std::fs::write(dir.path().join("trust.json"), app.state.trust.to_json()).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloudhelp"))
            .current_dir(dir.path())
            .env_clear()
            .args(["verify", "receipt.json", "--trust", "trust.json"])
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && shown.contains("VALID"), "{shown}");
    }
    assert_eq!(
        app.request("GET", &path, &app.demo("supervisor").await, None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.request("GET", &path, &app.demo("approver2").await, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let report = app
        .raw(
            "POST",
            "/api/verify",
            &auditor,
            Some(archive.body.clone()),
            Some("application/zip"),
        )
        .await
        .json();
    assert_eq!(report["valid"], true, "{report}");
    let mut tampered = archive.body.clone();
    let last = tampered.len() / 2;
    tampered[last] ^= 0x20;
    let report = app
        .raw(
            "POST",
            "/api/verify",
            &auditor,
            Some(tampered),
            Some("application/zip"),
        )
        .await
        .json();
    assert_eq!(report["valid"], false);
    assert_eq!(
        app.raw(
            "POST",
            "/api/verify",
            &agent,
            Some(archive.body),
            Some("application/zip")
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_archive_is_a_bag_that_an_independent_bagit_validator_accepts() {
    let app = TestApp::new();
    let (_, approver, case) = ready_case(&app).await;
    app.decide(&approver, case, "approve", "同意").await;
    let auditor = app.demo("auditor").await;
    let archive = app
        .request("GET", &format!("/api/cases/{case}/archive"), &auditor, None)
        .await
        .body;
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("case.zip");
    std::fs::write(&zip, &archive).unwrap();
    let bag = dir.path().join("bag");
    let script = "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])";
    let unzip = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&zip)
        .arg(&bag)
        .status()
        .unwrap();
    assert!(unzip.success());
    for payload in [
        "data/decision.json",
        "data/events.jsonl",
        "data/materials/001.png",
        "data/call-quality.json",
    ] {
        assert!(bag.join(payload).is_file(), "{payload} in the bag");
    }
    // bagit-python (Library of Congress), installed by scripts/test.
    let validate = std::process::Command::new("python3")
        .args(["-m", "bagit", "--validate"])
        .arg(&bag)
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "bagit-python refused the bag: {}",
        String::from_utf8_lossy(&validate.stderr)
    );
    // A continuation (issuing) is a bag too.
    app.act(&approver, case, "issue", json!({}), StatusCode::OK)
        .await;
    let issued = app
        .request("GET", &format!("/api/cases/{case}/archive"), &auditor, None)
        .await
        .body;
    std::fs::write(&zip, &issued).unwrap();
    let continued = dir.path().join("continued");
    assert!(
        std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&zip)
            .arg(&continued)
            .status()
            .unwrap()
            .success()
    );
    assert!(continued.join("data/previous/001.json").is_file());
    let validate = std::process::Command::new("python3")
        .args(["-m", "bagit", "--validate"])
        .arg(&continued)
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "bagit-python refused the continuation: {}",
        String::from_utf8_lossy(&validate.stderr)
    );
    // ...and notices a changed payload file.
    std::fs::write(bag.join("data/decision.json"), b"{}").unwrap();
    let changed = std::process::Command::new("python3")
        .args(["-m", "bagit", "--validate"])
        .arg(&bag)
        .output()
        .unwrap();
    assert!(!changed.status.success());
}

#[tokio::test]
async fn the_public_log_proves_a_newer_checkpoint_extends_an_older_one() {
    let app = TestApp::new();
    let (_, approver, case) = ready_case(&app).await;
    app.decide(&approver, case, "approve", "同意").await;
    let old_note = app
        .raw("GET", "/api/log/checkpoint", &Auth::None, None, None)
        .await
        .body;
    let old_size = log_size(&app).await;
    let (_, approver2, second) = {
        let agent = app.demo("agent").await;
        let approver2 = app.demo("approver2").await;
        let second = app.open_case(&agent, "id-renew").await;
        app.act(&approver2, second, "accept", json!({}), StatusCode::OK)
            .await;
        (agent, approver2, second)
    };
    app.decide(&approver2, second, "reject", "不符合条件").await;
    let new_note = app
        .raw("GET", "/api/log/checkpoint", &Auth::None, None, None)
        .await
        .body;
    let new_size = log_size(&app).await;
    assert!(new_size > old_size);
    let proof = app
        .request(
            "GET",
            &format!("/api/log/consistency?old={old_size}&new={new_size}"),
            &Auth::None,
            None,
        )
        .await;
    assert_eq!(proof.status, StatusCode::OK);
    let trust = app
        .raw("GET", "/api/log/trust", &Auth::None, None, None)
        .await
        .body;
    let bad = app
        .request(
            "GET",
            &format!("/api/log/consistency?old={new_size}&new={old_size}"),
            &Auth::None,
            None,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // An empty tree has no proof: a clear 400 naming the rule, not a 500.
    let empty = app
        .request("GET", "/api/log/consistency?old=0&new=0", &Auth::None, None)
        .await;
    assert_eq!(
        (empty.status, empty.code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
    assert!(
        empty.json()["message"]
            .as_str()
            .unwrap()
            .contains("1 <= old")
    );

    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("old.note", &old_note),
        ("new.note", &new_note),
        ("trust.json", &trust),
        ("proof.json", &proof.body),
    ] {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let run = |old: &str, new: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cloudhelp"))
            .current_dir(dir.path())
            .env_clear()
            .args([
                "log",
                "consistency",
                old,
                new,
                "--trust",
                "trust.json",
                "--proof",
                "proof.json",
            ])
            .output()
            .unwrap()
    };
    let ok = run("old.note", "new.note");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains(&format!(
        "size {new_size} extends the log at size {old_size}"
    )));
    // A forked history: the proof does not fit checkpoints it was not made for.
    let mut forged: Value = serde_json::from_slice(&proof.body).unwrap();
    let first = unb64(forged["proof"][0].as_str().unwrap());
    let mut flipped = first.clone();
    flipped[0] ^= 1;
    forged["proof"][0] = json!(b64(&flipped));
    std::fs::write(dir.path().join("proof.json"), forged.to_string()).unwrap();
    let refused = run("old.note", "new.note");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("NOT provably extend"));
}

#[tokio::test]
async fn the_sealed_record_is_true_to_the_decision_and_the_case_shows_who_signed_and_where_it_is_logged()
 {
    let app = TestApp::new();
    let (agent, approver, case) = ready_case(&app).await;
    app.clock.advance_ms(90_000);
    let sealed = app.decide(&approver, case, "approve", "同意").await;
    let log_index = sealed["archive"]["log_index"].as_u64().unwrap();
    let view = sealed["case"].clone();
    let decided_at = view["decided_at"].as_str().unwrap().to_string();
    let keys = app
        .request("GET", "/api/keys", &approver, None)
        .await
        .json();
    let key_id = keys[0]["key_id"].as_str().unwrap().to_string();
    // Both the approver and the agent see 已签章: which key, when, and the log index.
    for who in [&approver, &agent] {
        let seen = app
            .request("GET", &format!("/api/cases/{case}"), who, None)
            .await
            .json();
        let seal = &seen["seal"];
        assert_eq!(seal["log_index"], log_index, "{seen}");
        assert_eq!(seal["approver_key"], key_id.as_str());
        assert_eq!(
            seal["statement_sha256"],
            sealed["archive"]["statement_sha256"]
        );
        assert!(seal["seal_key"].as_str().unwrap().starts_with("ed25519:"));
        assert!(seal["sealed_at"].is_string());
    }
    let archive = app
        .request(
            "GET",
            &format!("/api/cases/{case}/archive"),
            &approver,
            None,
        )
        .await
        .body;
    let record: Value =
        serde_json::from_slice(&common::zip_entry(&archive, "data/case.json")).unwrap();
    assert_eq!(record["state"], "approved", "{record}");
    assert_eq!(record["decided_at"], decided_at.as_str());
    assert_eq!(record["decision_reason"], "同意");
    assert_eq!(record["actions"], json!([]));
    let decision: Value =
        serde_json::from_slice(&common::zip_entry(&archive, "data/decision.json")).unwrap();
    assert_eq!(
        decision["decided_at"],
        decided_at.as_str(),
        "one decision time everywhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_answers_while_a_decision_packs_its_materials() {
    let app = TestApp::new();
    let (agent, approver, case) = ready_case(&app).await;
    let (_, key_id) = app.register_key(&approver).await;
    // Swap the stored material for a FIFO: packing it then waits until this test writes to it,
    // which holds the packing step open for as long as the test needs.
    use sha2::Digest;
    let blob = app
        .state
        .blobs
        .path(&hex::encode(sha2::Sha256::digest(png())));
    std::fs::remove_file(&blob).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&blob)
        .status()
        .unwrap();
    assert!(made.success());
    let preparing = {
        let (app_state, approver) = (app.state.clone(), approver.clone());
        let key_id = key_id.clone();
        tokio::spawn(async move {
            let Auth::Bearer(token) = approver else {
                unreachable!()
            };
            let body = json!({ "decision": "approve", "reason": "同意", "key_id": key_id });
            let request = axum::http::Request::post(format!("/api/cases/{case}/decision"))
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap();
            tower::ServiceExt::oneshot(signaling::api::app(app_state), request)
                .await
                .unwrap()
                .status()
        })
    };
    // Opening the FIFO for writing returns once the packing step has opened it for reading; it
    // then waits for the bytes, in the middle of packing. Meanwhile the database must answer.
    let opened = tokio::task::spawn_blocking(move || {
        std::fs::OpenOptions::new().write(true).open(&blob).unwrap()
    });
    let mut fifo = tokio::time::timeout(std::time::Duration::from_secs(10), opened)
        .await
        .expect("packing reads the material")
        .unwrap();
    let listed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        app.request("GET", &format!("/api/cases/{case}"), &agent, None),
    )
    .await
    .expect("the database answered while a decision was packing");
    assert_eq!(listed.status, StatusCode::OK);
    assert!(!preparing.is_finished());
    std::io::Write::write_all(&mut fifo, &png()).unwrap();
    drop(fifo);
    assert_eq!(preparing.await.unwrap(), StatusCode::OK);
}

/// Runs `cloudhelp verify FILES… --trust trust.json` in `dir`; its exit success and output.
fn cli_verify(app: &TestApp, dir: &std::path::Path, files: &[&str]) -> (bool, String) {
    std::fs::write(dir.join("trust.json"), app.state.trust.to_json()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloudhelp"))
        .current_dir(dir)
        .env_clear()
        .arg("verify")
        .args(files)
        .args(["--trust", "trust.json"])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn issuing_the_rating_and_the_follow_up_are_sealed_as_a_chain_that_cloudhelp_verify_checks() {
    let app = TestApp::new();
    let (agent, approver, case) = ready_case(&app).await;
    app.decide(&approver, case, "approve", "同意").await;
    app.clock.advance_ms(60_000);
    app.act(&approver, case, "issue", json!({}), StatusCode::OK)
        .await;
    app.clock.advance_ms(60_000);
    // The agent's page offers the rating because the view lists it (and only until it is given).
    let offered = |view: &Value| {
        view["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "rate" && a["allowed"] == true)
    };
    let before = app
        .request("GET", &format!("/api/cases/{case}"), &agent, None)
        .await
        .json();
    assert!(offered(&before), "{before}");
    let comment = "等了很久，窗口说不清楚";
    let rated = app
        .request(
            "POST",
            &format!("/api/cases/{case}/rating"),
            &agent,
            Some(json!({ "score": 1, "comment": comment })),
        )
        .await;
    assert_eq!(rated.status, StatusCode::CREATED, "{}", rated.json());
    let followup = rated.json()["followup_id"].as_i64().unwrap();
    let supervisor = app.demo("supervisor").await;
    app.clock.advance_ms(60_000);
    let closed = app
        .request(
            "POST",
            &format!("/api/followups/{followup}/close"),
            &supervisor,
            Some(json!({ "outcome": "已回访，说明了办理流程" })),
        )
        .await;
    assert_eq!(closed.status, StatusCode::NO_CONTENT);

    // The case shows its chain: the decision, then a continuation for each later step.
    let view = app
        .request("GET", &format!("/api/cases/{case}"), &agent, None)
        .await
        .json();
    let statements = view["statements"].as_array().unwrap();
    let kinds: Vec<&str> = statements
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["decision", "issued", "rated", "followup_closed"],
        "{view}"
    );
    assert!(!offered(&view), "rated once: {view}");
    let indexes: Vec<u64> = statements
        .iter()
        .map(|s| s["log_index"].as_u64().unwrap())
        .collect();
    assert!(indexes.windows(2).all(|w| w[0] < w[1]), "{indexes:?}");

    // The newest archive holds the case as it ended, its whole trail and the earlier statements.
    let newest = app
        .request(
            "GET",
            &format!("/api/cases/{case}/archive"),
            &approver,
            None,
        )
        .await;
    assert_eq!(newest.status, StatusCode::OK);
    let record: Value =
        serde_json::from_slice(&common::zip_entry(&newest.body, "data/case.json")).unwrap();
    assert_eq!(record["state"], "issued", "{record}");
    let events = String::from_utf8(common::zip_entry(&newest.body, "data/events.jsonl")).unwrap();
    for kind in [
        "case.issued",
        "case.rated",
        "followup.opened",
        "followup.closed",
    ] {
        assert!(events.contains(kind), "{kind} missing from {events}");
    }
    let statement: Value =
        serde_json::from_slice(&common::zip_entry(&newest.body, "esign/statement.json")).unwrap();
    assert_eq!(statement["signers"]["approver"], Value::Null);
    assert_eq!(statement["update"]["kind"], "followup_closed");
    assert_eq!(statement["update"]["sequence"], 4);
    assert_eq!(
        statement["previous_statement"],
        statements[2]["statement_sha256"]
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("newest.zip"), &newest.body).unwrap();
    let (ok, shown) = cli_verify(&app, dir.path(), &["newest.zip"]);
    assert!(ok, "{shown}");
    assert!(
        shown.contains("4 statements of case") && shown.contains("issued (log index"),
        "{shown}"
    );

    // Each in turn: the receipts, in any order, link from the decision to the newest. The agent
    // gets receipts (no personal data, not the rating's words) but not the archives.
    let mut names = Vec::new();
    for sequence in [3, 1, 4, 2] {
        let receipt = app
            .request(
                "GET",
                &format!("/api/cases/{case}/receipt?sequence={sequence}"),
                &agent,
                None,
            )
            .await;
        assert_eq!(receipt.status, StatusCode::OK);
        let text = String::from_utf8(receipt.body.clone()).unwrap();
        assert!(
            !text.contains(APPLICANT) && !text.contains(ID_NUMBER) && !text.contains(comment),
            "{text}"
        );
        let name = format!("receipt-{sequence}.json");
        std::fs::write(dir.path().join(&name), &receipt.body).unwrap();
        names.push(name);
    }
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let (ok, shown) = cli_verify(&app, dir.path(), &all);
    assert!(ok && shown.contains("PASS  chain.files"), "{shown}");
    let without_issuing: Vec<&str> = all
        .iter()
        .copied()
        .filter(|n| *n != "receipt-2.json")
        .collect();
    let (ok, shown) = cli_verify(&app, dir.path(), &without_issuing);
    assert!(!ok && shown.contains("FAIL  chain.files"), "{shown}");
    assert_eq!(
        app.request(
            "GET",
            &format!("/api/cases/{case}/archive?sequence=2"),
            &agent,
            None
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.request(
            "GET",
            &format!("/api/cases/{case}/archive?sequence=9"),
            &approver,
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    // A refused step seals nothing.
    let again = app
        .request(
            "POST",
            &format!("/api/cases/{case}/rating"),
            &agent,
            Some(json!({ "score": 5 })),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let view = app
        .request("GET", &format!("/api/cases/{case}"), &agent, None)
        .await
        .json();
    assert_eq!(view["statements"].as_array().unwrap().len(), 4);
}

/// The auditor's page names every check of the verifier in plain words: it lists the same checks
/// as the verifier, in both languages, with what each shows.
#[test]
fn the_auditor_page_names_every_verifier_check_in_chinese_and_english() {
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web-client/static/js");
    let page = std::fs::read_to_string(web.join("pages/auditor.js")).unwrap();
    let list = page
        .split("export const CHECKS = [")
        .nth(1)
        .and_then(|rest| rest.split("];").next())
        .expect("CHECKS in auditor.js");
    let listed: Vec<&str> = list
        .split(',')
        .map(|c| c.trim().trim_matches('\''))
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(listed, esign::verify::CHECK_NAMES, "auditor.js CHECKS");
    let i18n = std::fs::read_to_string(web.join("i18n.js")).unwrap();
    for name in esign::verify::CHECK_NAMES {
        for key in [
            format!("'check.{name}':"),
            format!("'check_proves.{name}':"),
        ] {
            assert_eq!(i18n.matches(&key).count(), 2, "{key} in zh and en");
        }
    }
}
