//! The applicant joins from home (群众远程接入): invitations through `app()` — issued by the case's
//! agent or holding approver, single-use, short-lived (on the test's clock), revocable, each use a
//! case event — and the resident session they open, which reaches its case's call and uploads and
//! nothing else.

mod common;

use axum::http::StatusCode;
use common::{Auth, TestApp, png};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

async fn open(app: &TestApp, token: &str) -> common::Answer {
    let body = json!({ "token": token });
    app.request("POST", "/api/invitations/open", &Auth::None, Some(body))
        .await
}

async fn accept(app: &TestApp, token: &str, consent: bool) -> common::Answer {
    let body = json!({ "token": token, "consent": consent });
    app.request("POST", "/api/invitations/accept", &Auth::None, Some(body))
        .await
}

fn kinds(events: &[Value], prefix: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| k.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn an_invitation_is_single_use_short_lived_and_revocable_and_every_use_is_a_case_event() {
    let app = TestApp::new();
    let agent = app.demo("agent").await;
    let case = app.open_case(&agent, "id-loss").await;

    // Issued by the case's agent: a link with its token in the fragment, and its QR code.
    let issued = app
        .request(
            "POST",
            &format!("/api/cases/{case}/invitations"),
            &agent,
            None,
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{:?}", issued.json());
    let body = issued.json();
    let url = body["url"].as_str().unwrap();
    assert!(url.starts_with("https://127.0.0.1:8443/#/invite/"), "{url}");
    assert!(
        body["qr_svg"].as_str().unwrap().contains("<svg"),
        "a QR code"
    );
    assert_eq!(body["invitation"]["state"], "open");
    let token = url.split("#/invite/").nth(1).unwrap();

    // Nobody else issues one: another agent of the point, the expert, the supervisor.
    let colleague = app.colleague_agent().await;
    for who in [colleague, app.demo("supervisor").await] {
        let refused = app
            .request(
                "POST",
                &format!("/api/cases/{case}/invitations"),
                &who,
                None,
            )
            .await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{:?}",
            refused.json()
        );
    }
    let expert = app.demo("expert").await;
    let refused = app
        .request(
            "POST",
            &format!("/api/cases/{case}/invitations"),
            &expert,
            None,
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::NOT_FOUND,
        "the expert does not see the case"
    );

    // Opened: the notice's facts, nothing personal.
    let notice = open(&app, token).await;
    assert_eq!(notice.status, StatusCode::OK);
    assert_eq!(notice.json()["item_name"], "居民身份证挂失");
    assert!(!String::from_utf8_lossy(&notice.body).contains(common::APPLICANT));
    assert_eq!(
        open(&app, "not-a-token").await.status,
        StatusCode::NOT_FOUND
    );

    // Without consent nothing happens; with it, a resident session.
    let refused = accept(&app, token, false).await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (StatusCode::BAD_REQUEST, "consent_required")
    );
    let accepted = accept(&app, token, true).await;
    assert_eq!(accepted.status, StatusCode::OK, "{:?}", accepted.json());
    assert_eq!(accepted.json()["user"]["role"], "resident");
    assert_eq!(accepted.json()["case_id"], case);
    let cookie = accepted.headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("Secure")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    // Used: a second use is refused in plain words.
    for again in [open(&app, token).await, accept(&app, token, true).await] {
        assert_eq!(
            (again.status, again.code().as_str()),
            (StatusCode::GONE, "invitation_used")
        );
        assert!(
            again.json()["message"]
                .as_str()
                .unwrap()
                .contains("new one")
        );
    }

    // Expired: 30 minutes by default.
    let (late, _) = app.invite_resident(&agent, case).await;
    app.clock.advance_ms(30 * 60_000);
    assert_eq!(open(&app, &late).await.code(), "invitation_expired");

    // Revoked before use.
    let (withdrawn, id) = app.invite_resident(&agent, case).await;
    let revoked = app
        .request(
            "DELETE",
            &format!("/api/cases/{case}/invitations/{id}"),
            &agent,
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(open(&app, &withdrawn).await.code(), "invitation_revoked");

    // The case's people see where each stands.
    let list = app
        .request(
            "GET",
            &format!("/api/cases/{case}/invitations"),
            &agent,
            None,
        )
        .await
        .json();
    let states: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["revoked", "expired", "used"]);

    let events = app.audit_trail(case).await;
    assert_eq!(
        kinds(&events, "invitation."),
        [
            "invitation.issued",
            "invitation.accepted",
            "invitation.refused",
            "invitation.refused",
            "invitation.issued",
            "invitation.refused",
            "invitation.issued",
            "invitation.revoked",
            "invitation.refused",
        ]
    );
    let accepted = events
        .iter()
        .find(|e| e["kind"] == "invitation.accepted")
        .unwrap();
    assert_eq!(accepted["actor_role"], "resident");
}

#[tokio::test]
async fn a_resident_session_reaches_its_cases_call_and_uploads_and_nothing_else_and_ends_when_revoked()
 {
    let app = TestApp::new();
    let agent = app.demo("agent").await;
    let approver = app.demo("approver").await;
    let case = app.open_case(&agent, "id-loss").await;
    let other = app.open_case(&agent, "id-loss").await;
    app.act(&approver, case, "accept", json!({}), StatusCode::OK)
        .await;
    let (token, id) = app.invite_resident(&approver, case).await;
    let resident = app.accept_invitation(&token).await;

    let own = app.request("GET", "/api/resident", &resident, None).await;
    assert_eq!(own.status, StatusCode::OK);
    let own = own.json();
    assert_eq!(
        (own["id"].as_i64(), own["state"].as_str()),
        (Some(case), Some("in_call"))
    );
    assert_eq!(own["call_open"], true);
    assert_eq!(own["residents"][0]["display_name"], "申请人");
    assert!(
        own.get("applicant_name").is_none() && own.get("note").is_none(),
        "none of the staff's view: {own}"
    );
    assert_eq!(
        app.request("GET", "/api/me", &resident, None).await.json()["user"]["role"],
        "resident"
    );
    for (method, path) in [
        ("GET", "/api/cases".to_string()),
        ("GET", format!("/api/cases/{case}")),
        ("GET", format!("/api/cases/{case}/materials")),
        ("GET", format!("/api/cases/{case}/invitations")),
        ("POST", format!("/api/cases/{case}/invitations")),
        ("GET", "/api/queue".to_string()),
        ("GET", "/api/audit".to_string()),
        ("GET", "/api/stats".to_string()),
    ] {
        let refused = app.request(method, &path, &resident, None).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{method} {path}");
    }

    // The staff see who joined: the case names its resident.
    let view = app
        .request("GET", &format!("/api/cases/{case}"), &approver, None)
        .await
        .json();
    assert_eq!(view["residents"][0]["display_name"], "申请人");

    // A photo of a material, uploaded from home, is the case's material; not into another case.
    let photo = png();
    let sha256 = hex::encode(Sha256::digest(&photo));
    let start = json!({ "filename": "户口本首页.png", "size": photo.len(), "sha256": sha256 });
    let started = app
        .request(
            "POST",
            &format!("/api/cases/{case}/uploads"),
            &resident,
            Some(start.clone()),
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{:?}", started.json());
    let upload = started.json()["id"].as_str().unwrap().to_string();
    let request = axum::http::Request::patch(format!("/api/cases/{case}/uploads/{upload}"))
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .body(axum::body::Body::from(photo.clone()))
        .unwrap();
    let done = app.send(request, &resident).await;
    assert!(done.status.is_success(), "{:?}", done.json());
    let materials = app
        .request(
            "GET",
            &format!("/api/cases/{case}/materials"),
            &approver,
            None,
        )
        .await
        .json();
    assert_eq!(materials[0]["sha256"], sha256.as_str(), "{materials}");
    let elsewhere = app
        .request(
            "POST",
            &format!("/api/cases/{other}/uploads"),
            &resident,
            Some(start),
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);

    // The identity check records that the applicant was in the call from home.
    app.act(
        &approver,
        case,
        "identity-check",
        json!({ "methods": ["id_card_shown"] }),
        StatusCode::OK,
    )
    .await;
    let events = app.audit_trail(case).await;
    let check = events
        .iter()
        .find(|e| e["kind"] == "case.identity_checked")
        .unwrap();
    assert_eq!(check["details"]["resident_remote"], true, "{check}");

    // A resident account cannot log in with a password.
    let login = json!({ "username": format!("resident-{id}"), "password": "anything-at-all" });
    let refused = app
        .request("POST", "/api/auth/token", &Auth::None, Some(login))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    // Withdrawn: the session ends at once.
    let revoked = app
        .request(
            "DELETE",
            &format!("/api/cases/{case}/invitations/{id}"),
            &approver,
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let gone = app.request("GET", "/api/resident", &resident, None).await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED);
    let view = app
        .request("GET", &format!("/api/cases/{case}"), &approver, None)
        .await
        .json();
    assert_eq!(view["residents"], json!([]));
}
