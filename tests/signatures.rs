//! The applicant's signature (申请人签名确认) through `app()`: asked by the approver holding the
//! case, refused while the call is not recorded (the default), signed by the right signer under
//! the exact summary it was shown, stored as two materials (the PNG and a JSON record) in one step,
//! and archived with the case.

mod common;

use axum::http::StatusCode;
use common::{Auth, TestApp, b64, png, zip_entry};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A case in its call between the demo agent and approver, in an app whose signatures do not
/// need a recording (recording needs a real relay room: `tests/calls.rs`).
async fn case_in_call(requires_recording: bool) -> (TestApp, Auth, Auth, i64) {
    let app = TestApp::with_config(|c| c.signature_requires_recording = requires_recording);
    let agent = app.demo("agent").await;
    let approver = app.demo("approver").await;
    let case = app.open_case(&agent, "id-loss").await;
    app.act(&approver, case, "accept", json!({}), StatusCode::OK)
        .await;
    (app, agent, approver, case)
}

async fn ask(app: &TestApp, approver: &Auth, case: i64, signer: &str) -> common::Answer {
    let body = json!({ "signer": signer });
    app.request(
        "POST",
        &format!("/api/cases/{case}/signatures"),
        approver,
        Some(body),
    )
    .await
}

/// Two strokes of a made-up signature.
fn strokes() -> Value {
    json!([
        [{ "x": 0.1, "y": 0.5, "t": 0 }, { "x": 0.2, "y": 0.4, "t": 16 }, { "x": 0.3, "y": 0.6, "t": 33 }],
        [{ "x": 0.5, "y": 0.5, "t": 400 }, { "x": 0.7, "y": 0.45, "t": 420 }]
    ])
}

async fn sign(
    app: &TestApp,
    who: &Auth,
    case: i64,
    request: &Value,
    summary_sha256: &str,
    strokes: Value,
    image: &[u8],
) -> common::Answer {
    let body =
        json!({ "summary_sha256": summary_sha256, "strokes": strokes, "image_png": b64(image) });
    let id = request["id"].as_i64().unwrap();
    app.request(
        "POST",
        &format!("/api/cases/{case}/signatures/{id}/sign"),
        who,
        Some(body),
    )
    .await
}

async fn kinds(app: &TestApp, case: i64) -> Vec<String> {
    app.audit_trail(case)
        .await
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| k.starts_with("signature."))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn by_default_a_signature_is_asked_for_only_while_the_call_is_recorded() {
    let (app, _agent, approver, case) = case_in_call(true).await;
    let refused = ask(&app, &approver, case, "agent").await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (StatusCode::CONFLICT, "recording_required")
    );
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("同意录音")
    );
    assert!(kinds(&app, case).await.is_empty(), "nothing was asked");
}

#[tokio::test]
async fn the_applicant_signs_the_summary_it_was_shown_and_the_signature_becomes_two_archived_materials()
 {
    let (app, agent, approver, case) = case_in_call(false).await;

    // Only the holding approver asks; from home only once someone joined from home.
    let by_agent = ask(&app, &agent, case, "agent").await;
    assert_eq!(by_agent.status, StatusCode::FORBIDDEN);
    let no_resident = ask(&app, &approver, case, "resident").await;
    assert_eq!(no_resident.code(), "no_resident");

    let asked = ask(&app, &approver, case, "agent").await;
    assert_eq!(asked.status, StatusCode::CREATED, "{:?}", asked.json());
    let request = asked.json();
    let summary = request["summary"].as_str().unwrap().to_string();
    assert_eq!(request["summary_sha256"], sha256(summary.as_bytes()));
    assert!(
        summary.contains("居民身份证挂失") && summary.contains("申请人签名确认"),
        "{summary}"
    );
    assert!(
        !summary.contains(common::APPLICANT) && !summary.contains(common::ID_NUMBER),
        "the applicant is masked as the signer sees it: {summary}"
    );

    // The agent's page finds it waiting.
    let listed = app
        .request(
            "GET",
            &format!("/api/cases/{case}/signatures"),
            &agent,
            None,
        )
        .await
        .json();
    assert_eq!(listed[0]["state"], "pending");

    // Refusals, each by name: another text, an empty pad, not a PNG, the wrong signer.
    let shown = sha256(summary.as_bytes());
    let other = sha256("另一段文字".as_bytes());
    let changed = sign(&app, &agent, case, &request, &other, strokes(), &png()).await;
    assert_eq!(changed.code(), "summary_changed");
    let empty = sign(&app, &agent, case, &request, &shown, json!([]), &png()).await;
    assert_eq!(empty.code(), "invalid_field");
    assert!(
        empty.json()["message"]
            .as_str()
            .unwrap()
            .contains("strokes")
    );
    let outside = json!([[{ "x": 1.5, "y": 0.5, "t": 0 }, { "x": 0.2, "y": 0.5, "t": 5 }]]);
    let wild = sign(&app, &agent, case, &request, &shown, outside, &png()).await;
    assert_eq!(wild.code(), "invalid_field");
    let not_png = sign(
        &app,
        &agent,
        case,
        &request,
        &shown,
        strokes(),
        b"GIF89a....",
    )
    .await;
    assert!(not_png.json()["message"].as_str().unwrap().contains("PNG"));
    let wrong = sign(&app, &approver, case, &request, &shown, strokes(), &png()).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);

    // Signed: two materials, bound to each other and to the summary.
    let signed = sign(&app, &agent, case, &request, &shown, strokes(), &png()).await;
    assert_eq!(signed.status, StatusCode::CREATED, "{:?}", signed.json());
    let signed = signed.json();
    assert_eq!(signed["state"], "signed");
    let materials = app.materials(&approver, case).await;
    let by_id = |id: &Value| {
        materials
            .as_array()
            .unwrap()
            .iter()
            .find(|m| &m["id"] == id)
            .cloned()
            .unwrap()
    };
    let image = by_id(&signed["image_material_id"]);
    let record = by_id(&signed["record_material_id"]);
    assert_eq!(image["media_type"], "image/png");
    assert_eq!(image["sha256"], sha256(&png()));
    assert_eq!(record["media_type"], "application/json");
    let bytes = app
        .request(
            "GET",
            &format!("/api/cases/{case}/materials/{}", record["id"]),
            &approver,
            None,
        )
        .await
        .body;
    let kept: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(kept["type"], "cloudhelp.signature/v1");
    assert_eq!(kept["summary"], summary.as_str());
    assert_eq!(kept["summary_sha256"], shown.as_str());
    assert_eq!(kept["image_sha256"], image["sha256"]);
    assert_eq!(kept["strokes"], strokes());

    let again = sign(&app, &agent, case, &request, &shown, strokes(), &png()).await;
    assert_eq!(again.code(), "signature_not_pending");
    // A new request replaces one still waiting.
    let first = ask(&app, &approver, case, "agent").await.json();
    ask(&app, &approver, case, "agent").await;
    let late = sign(&app, &agent, case, &first, &shown, strokes(), &png()).await;
    assert_eq!(late.code(), "signature_not_pending");
    assert_eq!(
        kinds(&app, case).await,
        [
            "signature.requested",
            "signature.material_stored",
            "signature.material_stored",
            "signature.signed",
            "signature.requested",
            "signature.requested",
        ]
    );

    // Archived with the decision: the PNG and the record among the materials.
    app.check_identity_and_approve(&approver, case).await;
    let auditor = app.demo("auditor").await;
    let archive = app
        .request("GET", &format!("/api/cases/{case}/archive"), &auditor, None)
        .await
        .body;
    let listed: Value =
        serde_json::from_slice(&zip_entry(&archive, "data/materials.json")).unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["sha256"] == record["sha256"])
        .expect("the record is archived");
    let path = entry["path"].as_str().unwrap();
    assert!(path.ends_with(".json"), "{path}");
    assert_eq!(
        sha256(&zip_entry(&archive, path)),
        record["sha256"].as_str().unwrap()
    );
    // The archive with the signature in it verifies offline, against the pinned trust alone.
    let report = esign::verify::verify(std::io::Cursor::new(&archive), &app.state.trust);
    assert!(
        report.passed(),
        "{:?}",
        report
            .checks
            .iter()
            .filter(|c| !c.passed)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn the_applicant_at_home_signs_on_its_own_phone_and_nobody_else_signs_for_it() {
    let (app, agent, approver, case) = case_in_call(false).await;
    let (token, _) = app.invite_resident(&agent, case).await;
    let resident = app.accept_invitation(&token).await;
    let request = ask(&app, &approver, case, "resident").await.json();
    assert_eq!(request["signer"], "resident");
    let listed = app
        .request(
            "GET",
            &format!("/api/cases/{case}/signatures"),
            &resident,
            None,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let summary = listed.json()[0]["summary"].as_str().unwrap().to_string();
    let shown = sha256(summary.as_bytes());
    let by_agent = sign(&app, &agent, case, &request, &shown, strokes(), &png()).await;
    assert_eq!(by_agent.status, StatusCode::FORBIDDEN);
    let signed = sign(&app, &resident, case, &request, &shown, strokes(), &png()).await;
    assert_eq!(signed.status, StatusCode::CREATED, "{:?}", signed.json());
    let materials = app.materials(&approver, case).await;
    let resident_id =
        app.request("GET", "/api/me", &resident, None).await.json()["user"]["id"].clone();
    assert!(
        materials
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["filename"].as_str().unwrap().starts_with("申请人签名"))
            .all(|m| m["uploaded_by"] == resident_id),
        "{materials}"
    );
}
