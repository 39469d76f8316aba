//! The API through `app()` with `oneshot`, on a temporary SQLite file: the case workflow, the
//! authorization matrix, bad input, concurrency, materials, ratings, audit and figures.

mod common;

use axum::http::StatusCode;
use common::{APPLICANT, Auth, ID_NUMBER, TestApp, png};
use serde_json::{Value, json};
use signaling::workflow::Role;

const OK: StatusCode = StatusCode::OK;
const CREATED: StatusCode = StatusCode::CREATED;
const CONFLICT: StatusCode = StatusCode::CONFLICT;

async fn upload(
    app: &TestApp,
    who: &Auth,
    case: i64,
    name: &str,
    bytes: Vec<u8>,
) -> common::Answer {
    let path = format!("/api/cases/{case}/materials?filename={}", urlencode(name));
    app.raw(
        "POST",
        &path,
        who,
        Some(bytes),
        Some("application/octet-stream"),
    )
    .await
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn a_case_goes_from_opening_to_rating_and_every_step_is_in_the_audit_trail() {
    let app = TestApp::new();
    let agent = app.demo("agent").await;
    let approver = app.demo("approver").await;
    let expert = app.demo("expert").await;
    let case = app.open_case(&agent, "id-loss").await;

    app.clock.advance_ms(45_000);
    let accepted = app
        .act(&approver, case, "accept", json!({}), OK)
        .await
        .json();
    assert_eq!(accepted["state"], "in_call");
    assert_eq!(accepted["waiting_seconds"], 45);
    let expert_id = app
        .request("GET", "/api/experts", &approver, None)
        .await
        .json()[0]["id"]
        .as_i64()
        .unwrap();
    app.act(
        &approver,
        case,
        "invite",
        json!({ "expert_id": expert_id }),
        OK,
    )
    .await;
    assert_eq!(
        app.request("GET", &format!("/api/cases/{case}"), &expert, None)
            .await
            .status,
        OK
    );
    app.act(
        &approver,
        case,
        "request-material",
        json!({ "reason": "请补充户口簿首页" }),
        OK,
    )
    .await;
    let stored = upload(&app, &agent, case, "户口簿首页.png", png()).await;
    assert_eq!(
        stored.status,
        CREATED,
        "{}",
        String::from_utf8_lossy(&stored.body)
    );
    app.act(&agent, case, "resume", json!({}), OK).await;
    app.act(
        &approver,
        case,
        "identity-check",
        json!({ "methods": ["id_card_shown", "face_compared"] }),
        OK,
    )
    .await;
    app.clock.advance_ms(120_000);
    app.decide(&approver, case, "approve", "材料齐全").await;
    let issued = app
        .act(&approver, case, "issue", json!({}), OK)
        .await
        .json();
    assert_eq!(issued["state"], "issued");

    let rated = app
        .request(
            "POST",
            &format!("/api/cases/{case}/rating"),
            &agent,
            Some(json!({ "score": 2, "comment": "等得有点久" })),
        )
        .await;
    assert_eq!(rated.status, CREATED);
    let followup = rated.json()["followup_id"]
        .as_i64()
        .expect("a score of 2 opens a follow-up");
    let supervisor = app.demo("supervisor").await;
    let open = app
        .request("GET", "/api/followups", &supervisor, None)
        .await
        .json();
    assert_eq!(open[0]["case_id"], case);
    assert_eq!(open[0]["score"], 2);
    let closed = app
        .request(
            "POST",
            &format!("/api/followups/{followup}/close"),
            &supervisor,
            Some(json!({ "outcome": "已电话回访并致歉" })),
        )
        .await;
    assert_eq!(closed.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.request("GET", "/api/followups", &supervisor, None)
            .await
            .json(),
        json!([])
    );

    let auditor = app.demo("auditor").await;
    let export = app
        .request("GET", &format!("/api/audit?case_id={case}"), &auditor, None)
        .await;
    assert_eq!(export.status, OK);
    let text = String::from_utf8(export.body).unwrap();
    let kinds: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "case.opened",
            "case.accepted",
            "case.expert_invited",
            "case.material_requested",
            "material.uploaded",
            "case.resumed",
            "case.identity_checked",
            "case.approved",
            "case.sealed",
            "case.issued",
            "case.rated",
            "followup.opened",
            "followup.closed",
        ]
    );
    assert!(
        !text.contains(ID_NUMBER) && !text.contains(APPLICANT),
        "the audit trail holds no applicant data"
    );
    let identity = text
        .lines()
        .find(|l| l.contains("case.identity_checked"))
        .unwrap();
    assert!(identity.contains("face_compared"));

    let stats = app
        .request("GET", "/api/stats", &supervisor, None)
        .await
        .json();
    let huzheng = &stats["by_department"]["户政"];
    assert_eq!(huzheng["cases"], 1);
    assert_eq!(huzheng["waiting_median_seconds"], 45.0);
    assert_eq!(huzheng["simple_within_target"], 1);
    assert_eq!(huzheng["ratings"], json!([0, 1, 0, 0, 0]));
    assert_eq!(stats["by_point"]["崧厦镇祝温村代办点"]["cases"], 1);

    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"cloudhelp_case_events_total{event="case.accepted"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"cloudhelp_simple_cases_finished_total{within_target="true"} 1"#));
    assert!(metrics.contains(r#"cloudhelp_ratings_total{score="2"} 1"#));
}

#[tokio::test]
async fn only_the_approver_holding_a_case_sees_the_applicant_unmasked() {
    let app = TestApp::new();
    let agent = app.demo("agent").await;
    let approver = app.demo("approver").await;
    let case = app.open_case(&agent, "id-renew").await;
    let approver2 = app.demo("approver2").await;
    let queue = app
        .request("GET", "/api/queue", &approver2, None)
        .await
        .json();
    assert_eq!(queue[0]["applicant_name"], "张**");
    let seen_by_agent = app
        .request("GET", &format!("/api/cases/{case}"), &agent, None)
        .await
        .json();
    assert_eq!(seen_by_agent["applicant_id_number"], "110101********109X");
    assert_eq!(seen_by_agent["applicant_masked"], true);
    let held = app
        .act(&approver, case, "accept", json!({}), OK)
        .await
        .json();
    assert_eq!(held["applicant_name"], APPLICANT);
    assert_eq!(held["applicant_id_number"], ID_NUMBER);
    let supervisor = app.demo("supervisor").await;
    let seen_by_supervisor = app
        .request("GET", &format!("/api/cases/{case}"), &supervisor, None)
        .await
        .json();
    assert_eq!(seen_by_supervisor["applicant_name"], "张**");
}

#[tokio::test]
async fn ten_approvers_accepting_at_once_have_exactly_one_winner() {
    let app = TestApp::new();
    for i in 0..10 {
        app.add_user(&format!("racer{i}"), Role::Approver, None, Some("huzheng"));
    }
    let agent = app.demo("agent").await;
    let case = app.open_case(&agent, "id-loss").await;
    let mut tokens = Vec::new();
    for i in 0..10 {
        tokens.push(
            app.token(&format!("racer{i}"), &format!("password-racer{i}"))
                .await,
        );
    }
    let app = std::sync::Arc::new(app);
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let app = app.clone();
            tokio::spawn(async move {
                app.request(
                    "POST",
                    &format!("/api/cases/{case}/actions/accept"),
                    &t,
                    None,
                )
                .await
            })
        })
        .collect();
    let mut won = 0;
    let mut taken = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        match answer.status {
            OK => won += 1,
            CONFLICT => {
                assert_eq!(answer.code(), "already_taken");
                taken += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((won, taken), (1, 9));
}

/// The roles of the authorization matrix, each with its relation to the case under test.
struct Cast {
    agent: Auth,
    agent_other_point: Auth,
    approver_holding: Auth,
    approver_same_department: Auth,
    approver_other_department: Auth,
    expert_invited: Auth,
    expert_not_invited: Auth,
    supervisor: Auth,
    auditor: Auth,
    admin: Auth,
}

impl Cast {
    fn all(&self) -> [(&'static str, &Auth); 11] {
        [
            ("agent", &self.agent),
            ("agent of another point", &self.agent_other_point),
            ("approver holding", &self.approver_holding),
            ("approver of the department", &self.approver_same_department),
            (
                "approver of another department",
                &self.approver_other_department,
            ),
            ("invited expert", &self.expert_invited),
            ("expert not invited", &self.expert_not_invited),
            ("supervisor", &self.supervisor),
            ("auditor", &self.auditor),
            ("admin", &self.admin),
            ("logged out", &Auth::None),
        ]
    }
}

/// A case in a call, held by `approver`, with one material and one invited expert.
async fn cast_and_case(app: &TestApp) -> (Cast, i64, i64) {
    app.add_user("agent-zz", Role::Agent, Some("zz-jingwu"), None);
    app.add_user("approver-jj", Role::Approver, None, Some("jiaojing"));
    app.add_user("expert-za", Role::Expert, None, Some("zhian"));
    let cast = Cast {
        agent: app.demo("agent").await,
        agent_other_point: app.token("agent-zz", "password-agent-zz").await,
        approver_holding: app.demo("approver").await,
        approver_same_department: app.demo("approver2").await,
        approver_other_department: app.token("approver-jj", "password-approver-jj").await,
        expert_invited: app.demo("expert").await,
        expert_not_invited: app.token("expert-za", "password-expert-za").await,
        supervisor: app.demo("supervisor").await,
        auditor: app.demo("auditor").await,
        admin: app.demo("admin").await,
    };
    let case = app.open_case(&cast.agent, "id-loss").await;
    app.act(&cast.approver_holding, case, "accept", json!({}), OK)
        .await;
    let expert_id = app
        .request("GET", "/api/me", &cast.expert_invited, None)
        .await
        .json()["user"]["id"]
        .as_i64()
        .unwrap();
    app.act(
        &cast.approver_holding,
        case,
        "invite",
        json!({ "expert_id": expert_id }),
        OK,
    )
    .await;
    app.act(
        &cast.approver_holding,
        case,
        "identity-check",
        json!({ "methods": ["id_card_captured"] }),
        OK,
    )
    .await;
    let material = upload(app, &cast.agent, case, "id.png", png()).await.json()["id"]
        .as_i64()
        .unwrap();
    (cast, case, material)
}

fn expect(app_row: &str, who: &str, got: StatusCode, want: u16) {
    assert_eq!(got.as_u16(), want, "{app_row} as {who}");
}

#[tokio::test]
async fn every_role_sees_and_does_only_what_its_relation_to_the_case_allows() {
    let app = TestApp::new();
    let (cast, case, material) = cast_and_case(&app).await;
    // Columns: agent, agent other point, approver holding, approver same dept, approver other dept,
    // expert invited, expert not invited, supervisor, auditor, admin, logged out.
    let reads: &[(&str, String, [u16; 11])] = &[
        (
            "view case",
            format!("/api/cases/{case}"),
            [200, 404, 200, 404, 404, 200, 404, 200, 200, 404, 401],
        ),
        (
            "list materials",
            format!("/api/cases/{case}/materials"),
            [200, 404, 200, 404, 404, 200, 404, 403, 200, 404, 401],
        ),
        (
            "download material",
            format!("/api/cases/{case}/materials/{material}"),
            [200, 404, 200, 404, 404, 200, 404, 403, 200, 404, 401],
        ),
        (
            "queue",
            "/api/queue".into(),
            [403, 403, 200, 200, 200, 403, 403, 200, 403, 403, 401],
        ),
        (
            "experts",
            "/api/experts".into(),
            [403, 403, 200, 200, 200, 403, 403, 403, 403, 403, 401],
        ),
        (
            "audit export",
            "/api/audit".into(),
            [403, 403, 403, 403, 403, 403, 403, 200, 200, 403, 401],
        ),
        (
            "figures",
            "/api/stats".into(),
            [403, 403, 403, 403, 403, 403, 403, 200, 200, 200, 401],
        ),
        (
            "follow-ups",
            "/api/followups".into(),
            [403, 403, 403, 403, 403, 403, 403, 200, 403, 403, 401],
        ),
        (
            "users",
            "/api/admin/users".into(),
            [403, 403, 403, 403, 403, 403, 403, 403, 403, 200, 401],
        ),
        (
            "catalogue",
            "/api/catalogue".into(),
            [200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 401],
        ),
    ];
    for (row, path, want) in reads {
        for ((who, auth), want) in cast.all().into_iter().zip(want) {
            expect(
                row,
                who,
                app.request("GET", path, auth, None).await.status,
                *want,
            );
        }
    }
    // Case lists contain the case exactly for those who may see it.
    let listed: Vec<bool> = {
        let mut v = Vec::new();
        for (_, auth) in cast.all().into_iter().take(10) {
            let list = app.request("GET", "/api/cases", auth, None).await.json();
            v.push(list.as_array().unwrap().iter().any(|c| c["id"] == case));
        }
        v
    };
    assert_eq!(
        listed,
        [
            true, false, true, false, false, true, false, true, true, false
        ]
    );

    // Writes that everyone but the entitled is refused; the case is unchanged afterwards.
    let uploads = [201, 404, 201, 404, 404, 403, 404, 403, 403, 404, 401];
    for ((who, auth), want) in cast.all().into_iter().zip(uploads) {
        expect(
            "upload",
            who,
            upload(&app, auth, case, "more.png", png()).await.status,
            want,
        );
    }
    let refusals: &[(&str, Value, [u16; 11])] = &[
        (
            "decision",
            json!({ "decision": "approve", "key_id": "ed25519:0000000000000000" }),
            [403, 404, 0, 404, 404, 403, 404, 403, 403, 404, 401],
        ),
        (
            "actions/cancel",
            json!({}),
            [0, 404, 403, 404, 404, 403, 404, 403, 403, 404, 401],
        ),
        (
            "actions/transfer",
            json!({ "department": "zhian" }),
            [403, 404, 0, 404, 404, 403, 404, 403, 403, 404, 401],
        ),
    ];
    for (action, body, want) in refusals {
        for ((who, auth), want) in cast.all().into_iter().zip(want) {
            if *want == 0 {
                continue; // the entitled caller; exercised by the workflow tests
            }
            let got = app
                .request(
                    "POST",
                    &format!("/api/cases/{case}/{action}"),
                    auth,
                    Some(body.clone()),
                )
                .await
                .status;
            expect(action, who, got, *want);
        }
    }
    let after = app
        .request(
            "GET",
            &format!("/api/cases/{case}"),
            &cast.approver_holding,
            None,
        )
        .await
        .json();
    assert_eq!(after["state"], "in_call");
    assert_eq!(after["department_name"], "户政");

    // Ratings: only the case's agent, and only once the case has ended.
    app.decide(&cast.approver_holding, case, "approve", "")
        .await;
    app.act(&cast.approver_holding, case, "issue", json!({}), OK)
        .await;
    let ratings = [201, 404, 403, 403, 403, 403, 403, 403, 403, 403, 401];
    for ((who, auth), want) in cast.all().into_iter().zip(ratings).rev() {
        let got = app
            .request(
                "POST",
                &format!("/api/cases/{case}/rating"),
                auth,
                Some(json!({ "score": 5 })),
            )
            .await
            .status;
        expect("rate", who, got, want);
    }
}

#[tokio::test]
async fn refused_transitions_answer_409_naming_the_current_state() {
    let app = TestApp::new();
    let agent = app.demo("agent").await;
    let approver = app.demo("approver").await;
    let case = app.open_case(&agent, "id-loss").await;
    let early = app.act(&approver, case, "issue", json!({}), CONFLICT).await;
    assert_eq!(early.code(), "invalid_transition");
    assert!(
        early.json()["message"]
            .as_str()
            .unwrap()
            .contains("waiting")
    );
    app.act(&approver, case, "accept", json!({}), OK).await;
    let (_, key_id) = app.register_key(&approver).await;
    let unchecked = app
        .prepare(&approver, case, "approve", "", &key_id)
        .await
        .expect_err("approving before the identity check is refused");
    assert_eq!(unchecked.code(), "precondition_failed");
    let unsigned = app
        .act(
            &approver,
            case,
            "approve",
            json!({}),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(unsigned.code(), "signed_decision_required");
    app.act(
        &agent,
        case,
        "cancel",
        json!({ "reason": "群众改日再办" }),
        OK,
    )
    .await;
    let late = app
        .act(&approver, case, "accept", json!({}), CONFLICT)
        .await;
    assert!(
        late.json()["message"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    let unknown = app
        .act(
            &approver,
            case,
            "teleport",
            json!({}),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(unknown.code(), "unknown_action");
}

#[tokio::test]
async fn transfer_moves_the_case_to_the_other_department_queue() {
    let app = TestApp::new();
    app.add_user("approver-jj", Role::Approver, None, Some("jiaojing"));
    let agent = app.demo("agent").await;
    let approver = app.demo("approver").await;
    let other = app.token("approver-jj", "password-approver-jj").await;
    let case = app.open_case(&agent, "id-loss").await;
    app.act(&approver, case, "accept", json!({}), OK).await;
    let moved = app
        .request(
            "POST",
            &format!("/api/cases/{case}/actions/transfer"),
            &approver,
            Some(json!({ "department": "jiaojing" })),
        )
        .await;
    assert_eq!(moved.code(), "no_longer_visible");
    let queue = app.request("GET", "/api/queue", &other, None).await.json();
    assert_eq!(queue[0]["case_id"], case);
    assert_eq!(
        app.request("GET", "/api/queue", &approver, None)
            .await
            .json(),
        json!([])
    );
    app.act(&other, case, "accept", json!({}), OK).await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let app = TestApp::new();
    let agent = app.demo("agent").await;
    let approver = app.demo("approver").await;
    let case = app.open_case(&agent, "id-loss").await;
    let post = |body: &'static str| {
        app.raw(
            "POST",
            "/api/cases",
            &agent,
            Some(body.as_bytes().to_vec()),
            Some("application/json"),
        )
    };

    let malformed = post("{\"item\": ").await;
    assert_eq!(
        (malformed.status.as_u16(), malformed.code().as_str()),
        (400, "malformed_json")
    );
    let unknown = post(r#"{"item":"id-loss","applicant_name":"李四","applicant_id_number":"11010119900307109X","colour":"red"}"#).await;
    assert_eq!(
        (unknown.status.as_u16(), unknown.code().as_str()),
        (400, "invalid_json")
    );
    assert!(
        unknown.json()["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{}",
        unknown.json()
    );
    let check_digit = post(
        r#"{"item":"id-loss","applicant_name":"李四","applicant_id_number":"110101199003071091"}"#,
    )
    .await;
    assert_eq!(
        (check_digit.status.as_u16(), check_digit.code().as_str()),
        (400, "invalid_id_number")
    );
    assert!(
        check_digit.json()["message"]
            .as_str()
            .unwrap()
            .contains("check character")
    );
    let unknown_item = post(
        r#"{"item":"nope","applicant_name":"李四","applicant_id_number":"11010119900307109X"}"#,
    )
    .await;
    assert!(
        unknown_item.json()["message"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    let huge = vec![b' '; 70 * 1024];
    let oversized = app
        .raw(
            "POST",
            "/api/cases",
            &agent,
            Some(huge),
            Some("application/json"),
        )
        .await;
    assert_eq!(oversized.status, StatusCode::PAYLOAD_TOO_LARGE);
    let not_json = app
        .raw(
            "POST",
            "/api/cases",
            &agent,
            Some(b"item=id-loss".to_vec()),
            Some("application/x-www-form-urlencoded"),
        )
        .await;
    assert_eq!(not_json.code(), "expected_json");
    let bad_id = app.request("GET", "/api/cases/abc", &agent, None).await;
    assert_eq!(
        (bad_id.status.as_u16(), bad_id.code().as_str()),
        (400, "invalid_path")
    );
    assert_eq!(
        app.request("GET", "/api/cases/999999", &agent, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.request("GET", "/api/nothing-here", &agent, None)
            .await
            .code(),
        "not_found"
    );
    let bad_time = app
        .request(
            "GET",
            "/api/audit?from=yesterday",
            &app.demo("auditor").await,
            None,
        )
        .await;
    assert!(
        bad_time.json()["message"]
            .as_str()
            .unwrap()
            .contains("from")
    );

    // Uploads: wrong content, path tricks in names, no name.
    let text = upload(
        &app,
        &agent,
        case,
        "notes.png",
        b"this is plain text, not a photo".to_vec(),
    )
    .await;
    assert_eq!(text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for name in ["../../etc/passwd", "/abs.png", "a\\b.png"] {
        let tricked = upload(&app, &agent, case, name, png()).await;
        assert_eq!(
            (tricked.status.as_u16(), tricked.code().as_str()),
            (400, "invalid_filename"),
            "{name}"
        );
    }
    let nameless = app
        .raw(
            "POST",
            &format!("/api/cases/{case}/materials"),
            &agent,
            Some(png()),
            None,
        )
        .await;
    assert_eq!(nameless.code(), "invalid_query");

    // Nothing was stored by any of it, and the server still serves.
    let materials = app
        .request("GET", &format!("/api/cases/{case}/materials"), &agent, None)
        .await
        .json();
    assert_eq!(materials, json!([]));
    let cases = app.request("GET", "/api/cases", &agent, None).await.json();
    assert_eq!(cases.as_array().unwrap().len(), 1);
    assert_eq!(
        std::fs::read_dir(app.dir.path().join("data/blobs/tmp"))
            .unwrap()
            .count(),
        0
    );
    app.act(&approver, case, "accept", json!({}), OK).await;
}

#[tokio::test]
async fn browser_sessions_need_the_csrf_token_of_their_own_live_session() {
    let app = TestApp::new();
    let browser = app.browser("agent", "demo-agent-2026").await;
    let Auth::Cookie { session, csrf } = browser.clone() else {
        unreachable!()
    };
    let other = app.browser("agent", "demo-agent-2026").await;
    let Auth::Cookie {
        csrf: other_csrf, ..
    } = other
    else {
        unreachable!()
    };
    let body =
        json!({ "item": "id-loss", "applicant_name": APPLICANT, "applicant_id_number": ID_NUMBER });

    // Reads need no token; writes do.
    assert_eq!(
        app.request(
            "GET",
            "/api/me",
            &Auth::Cookie {
                session: session.clone(),
                csrf: None
            },
            None
        )
        .await
        .status,
        OK
    );
    let without = app
        .request(
            "POST",
            "/api/cases",
            &Auth::Cookie {
                session: session.clone(),
                csrf: None,
            },
            Some(body.clone()),
        )
        .await;
    assert_eq!(
        (without.status.as_u16(), without.code().as_str()),
        (403, "csrf_failed")
    );
    let foreign = app
        .request(
            "POST",
            "/api/cases",
            &Auth::Cookie {
                session: session.clone(),
                csrf: other_csrf,
            },
            Some(body.clone()),
        )
        .await;
    assert_eq!(foreign.code(), "csrf_failed");
    assert_eq!(
        app.request("POST", "/api/cases", &browser, Some(body.clone()))
            .await
            .status,
        CREATED
    );

    // After logout the cookie and its token are dead: replaying them is refused.
    let out = app
        .request("POST", "/api/auth/logout", &browser, None)
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let replay = app
        .request(
            "POST",
            "/api/cases",
            &Auth::Cookie { session, csrf },
            Some(body),
        )
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.request("GET", "/api/cases", &app.demo("agent").await, None)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn the_session_cookie_is_httponly_secure_and_samesite() {
    let app = TestApp::new();
    let a = app
        .request(
            "POST",
            "/api/auth/login",
            &Auth::None,
            Some(json!({ "username": "agent", "password": "demo-agent-2026" })),
        )
        .await;
    let cookie = a.headers["set-cookie"].to_str().unwrap();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
}

#[tokio::test]
async fn sessions_expire_and_repeated_wrong_passwords_lock_the_account() {
    let app = TestApp::new();
    let agent = app.demo("agent").await;
    app.clock.advance_ms(13 * 3_600_000);
    let expired = app.request("GET", "/api/me", &agent, None).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert!(
        expired.json()["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    let login = |password: &'static str| {
        app.request(
            "POST",
            "/api/auth/token",
            &Auth::None,
            Some(json!({ "username": "agent", "password": password })),
        )
    };
    for _ in 0..5 {
        assert_eq!(
            login("wrong-password").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let locked = login("demo-agent-2026").await;
    assert_eq!(
        (locked.status.as_u16(), locked.code().as_str()),
        (403, "account_locked")
    );
    app.clock.advance_ms(16 * 60_000);
    assert_eq!(login("demo-agent-2026").await.status, OK);

    let admin = app.demo("admin").await;
    assert_eq!(
        app.request("POST", "/api/admin/users/agent/disable", &admin, None)
            .await
            .status,
        OK
    );
    assert_eq!(login("demo-agent-2026").await.code(), "account_disabled");
    let unknown_user = app
        .request(
            "POST",
            "/api/auth/token",
            &Auth::None,
            Some(json!({ "username": "nobody", "password": "x" })),
        )
        .await;
    assert_eq!(unknown_user.json()["message"], "wrong username or password");
}

#[tokio::test]
async fn identical_materials_are_stored_once_and_download_with_their_digest() {
    let app = TestApp::new();
    let agent = app.demo("agent").await;
    let case = app.open_case(&agent, "id-loss").await;
    let first = upload(&app, &agent, case, "a.png", png()).await.json();
    let second = upload(&app, &agent, case, "b.png", png()).await.json();
    assert_eq!(first["sha256"], second["sha256"]);
    assert_eq!(first["media_type"], "image/png");
    let digest = first["sha256"].as_str().unwrap();
    let blob_dir = app.dir.path().join("data/blobs/sha256").join(&digest[..2]);
    assert_eq!(std::fs::read_dir(&blob_dir).unwrap().count(), 1);
    let got = app
        .request(
            "GET",
            &format!("/api/cases/{case}/materials/{}", first["id"]),
            &agent,
            None,
        )
        .await;
    assert_eq!(got.body, png());
    assert_eq!(got.headers["x-content-sha256"], digest);
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&got.body)), digest);
    assert_eq!(got.headers["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn material_size_and_count_limits_are_enforced_with_the_setting_named() {
    let app = TestApp::with_config(|c| {
        c.max_material_bytes = 200;
        c.max_materials_per_case = 2;
    });
    let agent = app.demo("agent").await;
    let case = app.open_case(&agent, "id-loss").await;
    let mut big = png();
    big.resize(300, 0);
    let too_big = upload(&app, &agent, case, "big.png", big).await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        too_big.json()["message"]
            .as_str()
            .unwrap()
            .contains("max_material_bytes")
    );
    assert_eq!(
        upload(&app, &agent, case, "1.png", png()).await.status,
        CREATED
    );
    assert_eq!(
        upload(&app, &agent, case, "2.png", png()).await.status,
        CREATED
    );
    let third = upload(&app, &agent, case, "3.png", png()).await;
    assert_eq!(
        (third.status, third.code().as_str()),
        (CONFLICT, "too_many_materials")
    );
    app.act(&agent, case, "cancel", json!({}), OK).await;
}

#[tokio::test]
async fn a_rating_is_taken_once_after_the_case_ends_and_scores_are_checked() {
    let app = TestApp::new();
    let agent = app.demo("agent").await;
    let approver = app.demo("approver").await;
    let case = app.open_case(&agent, "id-loss").await;
    let path = format!("/api/cases/{case}/rating");
    let rate = |score: i64| app.request("POST", &path, &agent, Some(json!({ "score": score })));
    assert_eq!(rate(5).await.status, CONFLICT);
    app.act(&approver, case, "accept", json!({}), OK).await;
    app.decide(&approver, case, "reject", "不符合办理条件")
        .await;
    assert_eq!(rate(0).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(rate(6).await.status, StatusCode::BAD_REQUEST);
    let good = rate(4).await;
    assert_eq!(good.json()["followup_id"], Value::Null);
    assert_eq!(rate(1).await.code(), "already_rated");
}

#[tokio::test]
async fn the_openapi_document_lists_the_endpoints() {
    let app = TestApp::new();
    let doc = app
        .request("GET", "/api/openapi.json", &Auth::None, None)
        .await
        .json();
    for path in [
        "/api/cases",
        "/api/cases/{id}/actions/{action}",
        "/api/cases/{id}/materials",
        "/api/audit",
        "/api/stats",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
}
