//! The API through `app()` with `oneshot`, on a temporary SQLite file: the case workflow, the
//! authorization matrix, bad input, concurrency, materials, ratings, audit and figures.

mod common;

use axum::http::StatusCode;
use common::{APPLICANT, Answer, Auth, ID_NUMBER, TestApp, png};
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
            // Each step after the decision is sealed too, as a continuation of the case's chain.
            "case.issued",
            "case.sealed",
            "case.rated",
            "followup.opened",
            "case.sealed",
            "followup.closed",
            "case.sealed",
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
async fn sessions_expire_after_their_lifetime() {
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
}

/// A token login for `username` as if from the client at `peer`.
async fn login_from(app: &TestApp, peer: &str, username: &str, password: &str) -> Answer {
    app.request_from(
        peer,
        "POST",
        "/api/auth/token",
        Some(json!({ "username": username, "password": password })),
    )
    .await
}

#[tokio::test]
async fn wrong_passwords_lock_only_the_address_they_came_from_until_the_lock_expires() {
    let app = TestApp::new();
    let stranger = "203.0.113.9:40000";
    let office = "198.51.100.20:50000";
    for _ in 0..5 {
        let wrong = login_from(&app, stranger, "agent", "wrong-password").await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    }
    let locked = login_from(&app, stranger, "agent", "demo-agent-2026").await;
    assert_eq!(
        (locked.status.as_u16(), locked.code().as_str()),
        (403, "account_locked")
    );
    // The owner, at another address, is not locked out by the stranger.
    assert_eq!(
        login_from(&app, office, "agent", "demo-agent-2026")
            .await
            .status,
        OK
    );
    app.clock.advance_ms(16 * 60_000);
    assert_eq!(
        login_from(&app, stranger, "agent", "demo-agent-2026")
            .await
            .status,
        OK
    );
}

#[tokio::test]
async fn a_disabled_account_answers_like_a_wrong_password_until_the_password_is_right() {
    let app = TestApp::new();
    let admin = app.demo("admin").await;
    let disabled = app
        .request("POST", "/api/admin/users/agent/disable", &admin, None)
        .await;
    assert_eq!(disabled.status, OK);
    let wrong = login_from(&app, "192.0.2.1:1", "agent", "wrong-password").await;
    assert_eq!(
        (wrong.status, wrong.json()["message"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("wrong username or password"))
    );
    let right = login_from(&app, "192.0.2.1:1", "agent", "demo-agent-2026").await;
    assert_eq!(right.code(), "account_disabled");
    let unknown = login_from(&app, "192.0.2.1:1", "nobody", "x").await;
    assert_eq!(unknown.json()["message"], "wrong username or password");
}

#[tokio::test]
async fn a_login_flood_from_one_address_gets_429_with_retry_after_and_others_still_log_in() {
    let app = TestApp::with_config(|c| c.login_attempts_per_minute = 12);
    let flood = "203.0.113.50:1234";
    for _ in 0..12 {
        let answer = login_from(&app, flood, "nobody", "guess").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    let refused = login_from(&app, flood, "agent", "demo-agent-2026").await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_logins")
    );
    assert_eq!(
        refused.headers["retry-after"], "5",
        "12 a minute: one more every 5 s"
    );
    // The same /64 of IPv6 counts as one client; another address is untouched.
    assert_eq!(
        login_from(&app, "198.51.100.7:1", "agent", "demo-agent-2026")
            .await
            .status,
        OK
    );
    app.clock.advance_ms(5_000);
    assert_eq!(
        login_from(&app, flood, "agent", "demo-agent-2026")
            .await
            .status,
        OK
    );
}

/// Occupies both password-check threads with checks that wait until released (one send each).
async fn hold_password_checks(
    guard: &std::sync::Arc<signaling::login_guard::LoginGuard>,
) -> (
    std::sync::mpsc::Sender<()>,
    Vec<tokio::task::JoinHandle<signaling::error::Result<()>>>,
) {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Arc::new(std::sync::Mutex::new(released));
    let (started, mut starts) = tokio::sync::mpsc::unbounded_channel();
    let mut held = Vec::new();
    for _ in 0..signaling::login_guard::VERIFIERS {
        let (guard, released, started) = (guard.clone(), released.clone(), started.clone());
        held.push(tokio::spawn(async move {
            guard
                .check(move || {
                    started.send(()).unwrap();
                    released.lock().unwrap().recv().unwrap();
                })
                .await
        }));
    }
    for _ in 0..signaling::login_guard::VERIFIERS {
        starts.recv().await.unwrap();
    }
    (release, held)
}

#[tokio::test]
async fn a_locked_address_is_answered_without_a_password_check() {
    let app = TestApp::new();
    let stranger = "203.0.113.9:40000";
    for _ in 0..5 {
        login_from(&app, stranger, "agent", "wrong-password").await;
    }
    // No password check could run now: both threads are held and the queue is full.
    let guard = app.state.login_guard.clone();
    let (release, held) = hold_password_checks(&guard).await;
    use futures_util::FutureExt;
    for _ in 0..signaling::login_guard::QUEUED {
        assert!(guard.check(|| ()).now_or_never().is_none());
    }
    let locked = login_from(&app, stranger, "agent", "demo-agent-2026").await;
    assert_eq!(locked.code(), "account_locked");
    for _ in 0..signaling::login_guard::VERIFIERS {
        release.send(()).unwrap();
    }
    for task in held {
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn the_database_answers_while_logins_wait_for_a_password_check_and_a_full_queue_says_busy() {
    let app = TestApp::new();
    let approver = app.demo("approver").await;
    let guard = app.state.login_guard.clone();
    let (release, held) = hold_password_checks(&guard).await;
    // A login now waits for a verifier, outside the database lock: other requests are answered.
    let waiting = {
        let app_state = app.state.clone();
        tokio::spawn(async move {
            let request = axum::http::Request::post("/api/auth/token")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(
                    json!({"username": "agent", "password": "demo-agent-2026"}).to_string(),
                ))
                .unwrap();
            tower::ServiceExt::oneshot(signaling::api::app(app_state), request)
                .await
                .unwrap()
                .status()
        })
    };
    while guard.waiting() == 0 {
        tokio::task::yield_now().await; // until the login has reached the queue
    }
    let queue = app.request("GET", "/api/queue", &approver, None).await;
    assert_eq!(
        queue.status, OK,
        "the database answered while a login waited"
    );
    assert!(
        !waiting.is_finished(),
        "the login should still wait for a verifier"
    );
    // Fill the queue behind it (each check is queued on its first poll); the next login is
    // refused at once with 503 and Retry-After.
    use futures_util::FutureExt;
    for _ in 1..signaling::login_guard::QUEUED {
        assert!(guard.check(|| ()).now_or_never().is_none());
    }
    assert_eq!(guard.waiting(), signaling::login_guard::QUEUED);
    let busy = login_from(&app, "192.0.2.3:1", "agent", "demo-agent-2026").await;
    assert_eq!(
        (busy.status, busy.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "busy")
    );
    assert_eq!(busy.headers["retry-after"], "1");
    for _ in 0..signaling::login_guard::VERIFIERS {
        release.send(()).unwrap();
    }
    assert_eq!(waiting.await.unwrap(), OK);
    for task in held {
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_failed_login_keeps_at_most_64_characters_of_the_typed_name_in_the_audit_trail() {
    let app = TestApp::new();
    let long = "x".repeat(60_000);
    let answer = login_from(&app, "192.0.2.1:1", &long, "guess").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let auditor = app.demo("auditor").await;
    let events = app.request("GET", "/api/audit", &auditor, None).await;
    let text = String::from_utf8(events.body.clone()).unwrap();
    let failed = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["kind"] == "auth.login_failed")
        .expect("the failed login is audited");
    assert_eq!(failed["details"]["username"], "x".repeat(64));
    assert_eq!(failed["details"]["username_truncated"], true);
    assert!(
        text.len() < 10_000,
        "the audit export holds {} bytes",
        text.len()
    );
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

#[tokio::test(start_paused = true)]
async fn an_upload_that_stops_sending_is_cut_off_after_body_idle_seconds() {
    let app = TestApp::with_config(|c| c.body_idle_seconds = 30);
    let agent = app.demo("agent").await;
    let case = app.open_case(&agent, "id-loss").await;
    let Auth::Bearer(token) = &agent else {
        unreachable!()
    };
    // 100 bytes, then nothing ever again: the paused clock runs straight to the idle timeout.
    let first =
        futures_util::stream::iter([Ok::<_, std::io::Error>(axum::body::Bytes::from(png()))]);
    let body = axum::body::Body::from_stream(futures_util::StreamExt::chain(
        first,
        futures_util::stream::pending(),
    ));
    let request = axum::http::Request::post(format!("/api/cases/{case}/materials?filename=a.png"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/octet-stream")
        .body(body)
        .unwrap();
    let response = tower::ServiceExt::oneshot(signaling::api::app(app.state.clone()), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["code"], "body_interrupted", "{error}");
    let listed = app
        .request("GET", &format!("/api/cases/{case}/materials"), &agent, None)
        .await;
    assert_eq!(
        listed.json().as_array().map(Vec::len),
        Some(0),
        "nothing half-stored"
    );
}

#[tokio::test]
async fn every_response_carries_hsts_and_a_content_security_policy_that_allows_only_this_server() {
    let app = TestApp::new();
    for path in ["/", "/js/main.js", "/api/me", "/healthz"] {
        let answer = app.raw("GET", path, &Auth::None, None, None).await;
        assert_eq!(
            answer.headers["strict-transport-security"], "max-age=31536000",
            "{path}"
        );
        let csp = answer.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(
            answer.headers["x-content-type-options"], "nosniff",
            "{path}"
        );
    }
}

#[test]
fn the_data_folder_is_its_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::new();
    let mode = std::fs::metadata(app.dir.path().join("data"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[tokio::test]
async fn a_colleague_at_the_point_sees_the_case_but_only_its_own_agent_acts_on_it() {
    let app = TestApp::new();
    app.add_user("colleague", Role::Agent, Some("sx-zhuwen"), None);
    let agent = app.demo("agent").await;
    let colleague = app.token("colleague", "password-colleague").await;
    let case = app.open_case(&agent, "id-loss").await;
    let seen = app
        .request("GET", &format!("/api/cases/{case}"), &colleague, None)
        .await;
    assert_eq!(seen.status, OK, "colleagues at the point see the case");
    let cancel = app
        .request(
            "POST",
            &format!("/api/cases/{case}/actions/cancel"),
            &colleague,
            Some(json!({ "reason": "群众不办了" })),
        )
        .await;
    assert_eq!(cancel.status, StatusCode::FORBIDDEN);
    assert!(
        cancel.json()["message"]
            .as_str()
            .unwrap()
            .contains("only the agent who opened the case"),
        "{}",
        cancel.json()
    );
    let added = upload(&app, &colleague, case, "a.png", png()).await;
    assert_eq!(added.status, StatusCode::FORBIDDEN);
    assert!(
        added.json()["message"]
            .as_str()
            .unwrap()
            .contains("only the agent who opened the case")
    );

    // Decided and issued, the rating too is the case agent's.
    let approver = app.demo("approver").await;
    app.act(&approver, case, "accept", json!({}), OK).await;
    app.check_identity_and_approve(&approver, case).await;
    app.act(&approver, case, "issue", json!({}), OK).await;
    let rating = json!({ "score": 5, "comment": "" });
    let by_colleague = app
        .request(
            "POST",
            &format!("/api/cases/{case}/rating"),
            &colleague,
            Some(rating.clone()),
        )
        .await;
    assert_eq!(by_colleague.status, StatusCode::FORBIDDEN);
    let by_agent = app
        .request(
            "POST",
            &format!("/api/cases/{case}/rating"),
            &agent,
            Some(rating),
        )
        .await;
    assert_eq!(by_agent.status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_waiting_case_shows_its_place_and_a_wait_expected_from_how_fast_its_department_takes_cases()
 {
    let app = TestApp::new();
    let agent = app.demo("agent").await;
    let approver = app.demo("approver").await;
    let cases: Vec<i64> = {
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(app.open_case(&agent, "id-loss").await);
        }
        ids
    };
    let place = |case: i64| {
        let path = format!("/api/cases/{case}");
        let app = &app;
        let agent = agent.clone();
        async move { app.request("GET", &path, &agent, None).await.json()["queue_place"].clone() }
    };
    // Nothing taken yet: the place, and no estimate.
    assert_eq!(
        place(cases[3]).await,
        json!({ "position": 4, "expected_wait_seconds": null })
    );
    // One taken after 10 minutes: the estimate is its wait (600 s).
    app.clock.advance_ms(10 * 60_000);
    app.act(&approver, cases[0], "accept", json!({}), StatusCode::OK)
        .await;
    assert_eq!(
        place(cases[3]).await,
        json!({ "position": 3, "expected_wait_seconds": 600 })
    );
    // Two taken within two hours: the rate (2 per 7,200 s) gives 3,600 s a place.
    app.clock.advance_ms(5 * 60_000);
    let approver2 = app.demo("approver2").await;
    app.act(&approver2, cases[1], "accept", json!({}), StatusCode::OK)
        .await;
    assert_eq!(
        place(cases[3]).await,
        json!({ "position": 2, "expected_wait_seconds": 7200 })
    );
    // Taken cases have no place.
    assert_eq!(place(cases[0]).await, Value::Null);
}
