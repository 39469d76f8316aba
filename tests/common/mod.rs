//! Helpers for the end-to-end tests: an app on a temporary data folder, driven through
//! `tower::ServiceExt::oneshot` (no socket), plus logins as each demo role.
#![allow(dead_code)] // each test binary uses a different part of the helpers

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use signaling::accounts::{self, NewUser};
use signaling::config::ManualClock;
use signaling::workflow::Role;
use signaling::{AppState, Config, app};
use tower::ServiceExt;

/// A valid, made-up resident ID number (GB 11643 check character X).
pub const ID_NUMBER: &str = "11010119900307109X";
/// A made-up applicant name.
pub const APPLICANT: &str = "张小明";

/// The start time of every test clock: 2026-11-26T09:00:00+08:00.
pub const T0: i64 = 1_795_654_800_000;

/// An app on a fresh data folder with the demo seed and a hand-moved clock.
pub struct TestApp {
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
}

/// An HTTP answer: status, headers and body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }

    /// The session cookie this answer set, with the CSRF token of its body.
    pub fn cookie_session(&self) -> Auth {
        let cookie = self
            .headers
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let session = cookie
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("cloudhelp_session=")
            .to_string();
        Auth::Cookie {
            session,
            csrf: Some(self.json()["csrf_token"].as_str().unwrap().to_string()),
        }
    }
}

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Bearer(String),
    Cookie {
        session: String,
        csrf: Option<String>,
    },
}

impl TestApp {
    pub fn new() -> TestApp {
        Self::with_config(|_| {})
    }

    pub fn with_config(adjust: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        adjust(&mut config);
        let clock = Arc::new(ManualClock::at(T0));
        let state = AppState::open_with_clock(config, clock.clone()).unwrap();
        state
            .db
            .call_blocking(|c| signaling::demo::seed(c, T0))
            .unwrap();
        TestApp { state, clock, dir }
    }

    /// Adds a user in a department or at a point; the password is `password-<username>`.
    pub fn add_user(
        &self,
        username: &str,
        role: Role,
        point: Option<&str>,
        department: Option<&str>,
    ) {
        let new = NewUser {
            username: username.into(),
            display_name: username.into(),
            role,
            point_code: point.map(Into::into),
            department_code: department.map(Into::into),
            password: format!("password-{username}"),
        };
        self.state
            .db
            .call_blocking(|c| accounts::add_user(c, &new, T0))
            .unwrap();
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        auth: &Auth,
        body: Option<Value>,
    ) -> Answer {
        let bytes = body.map(|b| b.to_string().into_bytes());
        self.raw(method, path, auth, bytes, Some("application/json"))
            .await
    }

    /// The Prometheus text at `/metrics` (no login needed).
    pub async fn metrics(&self) -> String {
        String::from_utf8(
            self.raw("GET", "/metrics", &Auth::None, None, None)
                .await
                .body,
        )
        .expect("metrics are UTF-8")
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        auth: &Auth,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Answer {
        self.raw_from(None, method, path, auth, body, content_type)
            .await
    }

    /// A JSON request as if it came over a socket from `peer`.
    pub async fn request_from(
        &self,
        peer: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let peer: std::net::SocketAddr = peer.parse().unwrap();
        let bytes = body.map(|b| b.to_string().into_bytes());
        self.raw_from(
            Some(peer),
            method,
            path,
            &Auth::None,
            bytes,
            Some("application/json"),
        )
        .await
    }

    async fn raw_from(
        &self,
        peer: Option<std::net::SocketAddr>,
        method: &str,
        path: &str,
        auth: &Auth,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Answer {
        let mut builder = Request::builder().method(method).uri(path);
        if let (Some(ct), Some(_)) = (content_type, &body) {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        if let Some(peer) = peer {
            builder = builder.extension(axum::extract::ConnectInfo(peer));
        }
        let request = builder
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .unwrap();
        self.send(request, auth).await
    }

    /// Any request, as `auth` (and from this server's own host).
    pub async fn send(&self, mut request: Request<Body>, auth: &Auth) -> Answer {
        let headers = request.headers_mut();
        headers.insert(header::HOST, "127.0.0.1:8443".parse().unwrap());
        match auth {
            Auth::None => {}
            Auth::Bearer(t) => {
                headers.insert(
                    header::AUTHORIZATION,
                    format!("Bearer {t}").parse().unwrap(),
                );
            }
            Auth::Cookie { session, csrf } => {
                headers.insert(
                    header::COOKIE,
                    format!("cloudhelp_session={session}").parse().unwrap(),
                );
                if let Some(csrf) = csrf {
                    headers.insert("x-csrf-token", csrf.parse().unwrap());
                }
            }
        }
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A bearer token for a user.
    pub async fn token(&self, username: &str, password: &str) -> Auth {
        let a = self
            .request(
                "POST",
                "/api/auth/token",
                &Auth::None,
                Some(json!({ "username": username, "password": password })),
            )
            .await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "login {username}: {}",
            String::from_utf8_lossy(&a.body)
        );
        Auth::Bearer(a.json()["token"].as_str().unwrap().to_string())
    }

    /// A bearer token for a demo user.
    pub async fn demo(&self, username: &str) -> Auth {
        let login = signaling::demo::DEMO_LOGINS
            .iter()
            .find(|l| l.username == username)
            .unwrap();
        self.token(username, login.password).await
    }

    /// A browser login: the session cookie and CSRF token.
    pub async fn browser(&self, username: &str, password: &str) -> Auth {
        let a = self
            .request(
                "POST",
                "/api/auth/login",
                &Auth::None,
                Some(json!({ "username": username, "password": password })),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK);
        a.cookie_session()
    }

    /// Issues an invitation into `case` as `who`; its link's token and its id.
    pub async fn invite_resident(&self, who: &Auth, case: i64) -> (String, i64) {
        let a = self
            .request("POST", &format!("/api/cases/{case}/invitations"), who, None)
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.json());
        let url = a.json()["url"].as_str().unwrap().to_string();
        let token = url.split("#/invite/").nth(1).unwrap().to_string();
        (token, a.json()["invitation"]["id"].as_i64().unwrap())
    }

    /// Accepts an invitation as the applicant's browser does: its resident session.
    pub async fn accept_invitation(&self, token: &str) -> Auth {
        let body = json!({ "token": token, "consent": true });
        let a = self
            .request("POST", "/api/invitations/accept", &Auth::None, Some(body))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
        a.cookie_session()
    }

    /// Another agent of the demo agent's service point (`agent-two`), logged in.
    pub async fn colleague_agent(&self) -> Auth {
        self.add_user("agent-two", Role::Agent, Some("sx-zhuwen"), None);
        self.token("agent-two", "password-agent-two").await
    }

    /// The case's audit trail as the demo auditor exports it, oldest first.
    pub async fn audit_trail(&self, case: i64) -> Vec<Value> {
        let auditor = self.demo("auditor").await;
        let a = self
            .request("GET", &format!("/api/audit?case_id={case}"), &auditor, None)
            .await;
        assert_eq!(a.status, StatusCode::OK);
        String::from_utf8(a.body)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The case's materials as `who` lists them.
    pub async fn materials(&self, who: &Auth, case: i64) -> Value {
        let path = format!("/api/cases/{case}/materials");
        self.request("GET", &path, who, None).await.json()
    }

    /// Opens a case for the demo agent; returns its id.
    pub async fn open_case(&self, agent: &Auth, item: &str) -> i64 {
        let a = self
            .request("POST", "/api/cases", agent, Some(json!({ "item": item, "applicant_name": APPLICANT, "applicant_id_number": ID_NUMBER, "note": "" })))
            .await;
        assert_eq!(
            a.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        a.json()["id"].as_i64().unwrap()
    }

    /// Registers a fresh browser-style Ed25519 key for an approver; returns it and its id.
    pub async fn register_key(&self, approver: &Auth) -> (ed25519_dalek::SigningKey, String) {
        let key = fresh_key();
        let public_key = b64(key.verifying_key().as_bytes());
        let a = self
            .request(
                "POST",
                "/api/keys",
                approver,
                Some(json!({ "public_key": public_key })),
            )
            .await;
        assert_eq!(
            a.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        let id = a.json()["key_id"].as_str().unwrap().to_string();
        (key, id)
    }

    /// Prepares a decision with `key`; returns the bytes to sign, or the refusal.
    pub async fn prepare(
        &self,
        approver: &Auth,
        case: i64,
        decision: &str,
        reason: &str,
        key_id: &str,
    ) -> Result<Vec<u8>, Answer> {
        let body = json!({ "decision": decision, "reason": reason, "key_id": key_id });
        let a = self
            .request(
                "POST",
                &format!("/api/cases/{case}/decision"),
                approver,
                Some(body),
            )
            .await;
        if a.status != StatusCode::OK {
            return Err(a);
        }
        Ok(unb64(a.json()["signing_bytes"].as_str().unwrap()))
    }

    /// Sends a signature for the prepared decision.
    pub async fn seal(&self, approver: &Auth, case: i64, signature: &[u8]) -> Answer {
        let body = json!({ "signature": b64(signature) });
        self.request(
            "POST",
            &format!("/api/cases/{case}/decision/seal"),
            approver,
            Some(body),
        )
        .await
    }

    /// Decides a case the way the approver's browser does: register a key, prepare, sign, seal.
    /// Asserts success; returns the sealed answer (`{case, archive}`).
    pub async fn decide(&self, approver: &Auth, case: i64, decision: &str, reason: &str) -> Value {
        use ed25519_dalek::Signer;
        let (key, key_id) = self.register_key(approver).await;
        let bytes = match self
            .prepare(approver, case, decision, reason, &key_id)
            .await
        {
            Ok(b) => b,
            Err(a) => panic!(
                "prepare {decision}: {} {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            ),
        };
        let sealed = self
            .seal(approver, case, &key.sign(&bytes).to_bytes())
            .await;
        assert_eq!(
            sealed.status,
            StatusCode::OK,
            "seal {decision}: {}",
            String::from_utf8_lossy(&sealed.body)
        );
        sealed.json()
    }

    /// Records the identity check and approves with a signed decision, as an approver ends most
    /// cases in these tests.
    pub async fn check_identity_and_approve(&self, approver: &Auth, case: i64) -> Value {
        self.act(
            approver,
            case,
            "identity-check",
            json!({ "methods": ["id_card_shown"] }),
            StatusCode::OK,
        )
        .await;
        self.decide(approver, case, "approve", "同意").await
    }

    /// Runs a workflow action and asserts its status.
    pub async fn act(
        &self,
        who: &Auth,
        case: i64,
        action: &str,
        body: Value,
        want: StatusCode,
    ) -> Answer {
        let a = self
            .request(
                "POST",
                &format!("/api/cases/{case}/actions/{action}"),
                who,
                Some(body),
            )
            .await;
        assert_eq!(
            a.status,
            want,
            "{action}: {}",
            String::from_utf8_lossy(&a.body)
        );
        a
    }
}

/// A new Ed25519 key (distinct per call within a test run).
pub fn fresh_key() -> ed25519_dalek::SigningKey {
    use sha2::Digest;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let seed: [u8; 32] =
        sha2::Sha256::digest(format!("test key {n} {:?}", std::time::SystemTime::now())).into();
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

/// Standard base64.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard base64.
pub fn unb64(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// A tiny valid PNG (1x1), for uploads.
pub fn png() -> Vec<u8> {
    let mut v = vec![
        0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D, b'I', b'H', b'D', b'R',
    ];
    v.extend_from_slice(&[
        0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1F, 0x15, 0xC4, 0x89,
    ]);
    v.extend_from_slice(b"\0\0\0\0IEND\xAE\x42\x60\x82");
    v
}

/// One entry of a zip archive, read by Python's `zipfile` (an independent reader).
pub fn zip_entry(archive: &[u8], name: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("archive.zip");
    std::fs::write(&zip, archive).unwrap();
    let script = "import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&zip)
        .arg(name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
