//! Calls through the server: webrtc-rs test peers (media-relay's `TestPeer`) signaling over the
//! real `/ws` of a served app, media over real UDP on loopback.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use common::{Auth, TestApp};
use futures_util::{SinkExt, StreamExt};
use media_relay::test_peer::{PeerReport, TestPeer, TestPeerConfig};
use media_relay::{ClientMessage, MediaKind, ServerMessage};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

const PATIENCE: Duration = Duration::from_secs(20);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn serve(app: &TestApp) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = signaling::app(app.state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

async fn socket(addr: std::net::SocketAddr, auth: &Auth) -> Socket {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    let Auth::Bearer(token) = auth else {
        panic!("bearer tokens only")
    };
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// The next `call.*` message on a socket (others skipped); fails the test after 10 s of silence.
async fn next_call(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("call."))
            {
                return value;
            }
        }
    }
}

async fn send(socket: &mut Socket, value: Value) {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

/// A test peer whose signaling runs over a `/ws` socket; every `call.*` message seen is kept.
struct CallPeer {
    peer: TestPeer,
    seen: Arc<Mutex<Vec<Value>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl CallPeer {
    /// Joins the case's call on a fresh socket and starts a peer publishing audio and video.
    async fn join(addr: std::net::SocketAddr, auth: &Auth, case: i64) -> CallPeer {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (to_relay, from_relay, tasks) = bridge(addr, auth, case, seen.clone()).await;
        let peer = TestPeer::start(TestPeerConfig::default(), to_relay, from_relay)
            .await
            .unwrap();
        CallPeer { peer, seen, tasks }
    }

    /// Drops the socket (as a lost network would) and signals again over a new one.
    async fn reconnect(&mut self, addr: std::net::SocketAddr, auth: &Auth, case: i64) {
        self.peer.detach_signaling();
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let (to_relay, from_relay, tasks) = bridge(addr, auth, case, self.seen.clone()).await;
        self.tasks = tasks;
        self.peer.attach_signaling(to_relay, from_relay);
        self.peer.restart_ice();
    }

    fn saw(&self, kind: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["type"] == kind)
            .cloned()
            .collect()
    }

    async fn receiving(&self, audio: usize, video: usize) -> PeerReport {
        let enough = |r: &PeerReport| {
            r.live_tracks(MediaKind::Audio)
                .filter(|t| t.counts.packets > 20)
                .count()
                >= audio
                && r.live_tracks(MediaKind::Video)
                    .filter(|t| t.counts.frames_complete > 10)
                    .count()
                    >= video
        };
        self.peer
            .wait_until(PATIENCE, enough)
            .await
            .unwrap_or_else(|r| panic!("not receiving {audio} audio and {video} video: {r:#?}"))
    }
}

impl Drop for CallPeer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Joins the call over a new socket and connects it to a pair of relay-message channels.
async fn bridge(
    addr: std::net::SocketAddr,
    auth: &Auth,
    case: i64,
    seen: Arc<Mutex<Vec<Value>>>,
) -> (
    mpsc::Sender<ClientMessage>,
    mpsc::Receiver<ServerMessage>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let mut ws = socket(addr, auth).await;
    send(
        &mut ws,
        json!({ "v": 1, "type": "call.join", "case_id": case }),
    )
    .await;
    let config = next_call(&mut ws).await;
    assert_eq!(config["type"], "call.config", "{config}");
    seen.lock().unwrap().push(config);
    let (mut sink, mut stream) = ws.split();
    let (to_relay, mut client_messages) = mpsc::channel::<ClientMessage>(64);
    let (server_messages, from_relay) = mpsc::channel::<ServerMessage>(256);
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let mut value: Value = serde_json::from_str(&text).unwrap();
            let Some(kind) = value["type"]
                .as_str()
                .and_then(|t| t.strip_prefix("call."))
                .map(str::to_string)
            else {
                continue;
            };
            seen.lock().unwrap().push(value.clone());
            if kind == "error" || kind == "config" {
                continue;
            }
            let object = value.as_object_mut().unwrap();
            object.remove("v");
            object.remove("case_id");
            object.insert("type".into(), json!(kind));
            let relay_message: ServerMessage = serde_json::from_value(value).unwrap();
            if server_messages.send(relay_message).await.is_err() {
                break;
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some(message) = client_messages.recv().await {
            let mut value = serde_json::to_value(&message).unwrap();
            let kind = value["type"].as_str().unwrap().to_string();
            value["type"] = json!(format!("call.{kind}"));
            value["case_id"] = json!(case);
            if sink
                .send(Message::Text(value.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    (to_relay, from_relay, vec![reader, writer])
}

/// A served app with a case in a call between the demo agent and approver.
async fn case_in_call() -> (TestApp, std::net::SocketAddr, Auth, Auth, i64) {
    let app = TestApp::with_config(|c| c.call_quality_seconds = 1);
    let addr = serve(&app).await;
    let agent = app.demo("agent").await;
    let approver = app.demo("approver").await;
    let case = app.open_case(&agent, "id-loss").await;
    app.act(&approver, case, "accept", json!({}), StatusCode::OK)
        .await;
    (app, addr, agent, approver, case)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_approver_hear_and_see_each_other_through_the_server() {
    let (app, addr, agent, approver, case) = case_in_call().await;
    let agent_peer = CallPeer::join(addr, &agent, case).await;
    let approver_peer = CallPeer::join(addr, &approver, case).await;
    for peer in [&agent_peer, &approver_peer] {
        let report = peer.receiving(1, 1).await;
        let video = report.live_tracks(MediaKind::Video).next().unwrap();
        assert_eq!(video.counts.out_of_order, 0);
        assert!(video.counts.keyframes > 0, "video starts on a keyframe");
    }
    let agent_id = app.request("GET", "/api/me", &agent, None).await.json()["user"]["id"]
        .as_i64()
        .unwrap();
    let publishers: Vec<String> = approver_peer
        .peer
        .report()
        .tracks
        .iter()
        .map(|t| t.publisher.clone())
        .collect();
    assert!(
        publishers.iter().all(|p| *p == format!("user-{agent_id}")),
        "opaque participant ids: {publishers:?}"
    );
    let config = &agent_peer.saw("call.config")[0];
    assert_eq!(config["participant_id"], format!("user-{agent_id}"));
    assert_eq!(config["ice_servers"], json!([]), "no TURN configured");
    let metrics = String::from_utf8(
        app.raw("GET", "/metrics", &Auth::None, None, None)
            .await
            .body,
    )
    .unwrap();
    assert!(
        metrics.contains("cloudhelp_relay_participants 2"),
        "{metrics}"
    );
    let forwarded = metrics
        .lines()
        .find(|l| l.starts_with("cloudhelp_relay_packets_forwarded_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert!(forwarded > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invited_expert_joins_and_all_three_receive_the_other_two() {
    let (app, addr, agent, approver, case) = case_in_call().await;
    let expert = app.demo("expert").await;
    let expert_id = app.request("GET", "/api/me", &expert, None).await.json()["user"]["id"].clone();
    app.act(
        &approver,
        case,
        "invite",
        json!({ "expert_id": expert_id }),
        StatusCode::OK,
    )
    .await;
    let peers = [
        CallPeer::join(addr, &agent, case).await,
        CallPeer::join(addr, &approver, case).await,
        CallPeer::join(addr, &expert, case).await,
    ];
    for peer in &peers {
        peer.receiving(2, 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_case_people_may_join_and_a_refusal_does_not_tell_whether_the_call_exists() {
    let (app, addr, agent, _approver, case) = case_in_call().await;
    let _agent_peer = CallPeer::join(addr, &agent, case).await; // the room exists now
    app.add_user(
        "agent-zz",
        signaling::workflow::Role::Agent,
        Some("zz-jingwu"),
        None,
    );
    let outsiders = [
        app.token("agent-zz", "password-agent-zz").await,
        app.demo("approver2").await,
        app.demo("expert").await, // not invited
        app.demo("supervisor").await,
        app.demo("auditor").await,
    ];
    let waiting = app.open_case(&agent, "id-renew").await;
    let mut answers = Vec::new();
    for who in &outsiders {
        let mut ws = socket(addr, who).await;
        send(
            &mut ws,
            json!({ "v": 1, "type": "call.join", "case_id": case }),
        )
        .await;
        answers.push(next_call(&mut ws).await);
        send(
            &mut ws,
            json!({ "v": 1, "type": "call.join", "case_id": 999_999 }),
        )
        .await;
        answers.push(next_call(&mut ws).await);
    }
    let mut ws = socket(addr, &agent).await;
    send(
        &mut ws,
        json!({ "v": 1, "type": "call.join", "case_id": waiting }),
    )
    .await;
    answers.push(next_call(&mut ws).await);
    for answer in &answers {
        assert_eq!(answer["code"], "call_refused", "{answer}");
        assert_eq!(
            answer["message"], answers[0]["message"],
            "the same words whether or not the call exists"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_whose_socket_drops_resumes_unseen_within_the_grace_period() {
    let (_app, addr, agent, approver, case) = case_in_call().await;
    let mut agent_peer = CallPeer::join(addr, &agent, case).await;
    let approver_peer = CallPeer::join(addr, &approver, case).await;
    approver_peer.receiving(1, 1).await;
    agent_peer.reconnect(addr, &agent, case).await;
    assert_eq!(
        agent_peer.saw("call.config").len(),
        2,
        "joined again on the new socket"
    );
    // Media from the agent keeps arriving at the approver, who never saw it leave.
    let before = approver_peer
        .peer
        .report()
        .tracks
        .iter()
        .map(|t| t.counts.frames_complete)
        .sum::<u64>();
    approver_peer
        .peer
        .wait_until(PATIENCE, |r| {
            r.tracks
                .iter()
                .map(|t| t.counts.frames_complete)
                .sum::<u64>()
                > before + 30
        })
        .await
        .expect("media keeps flowing after the resume");
    assert!(approver_peer.saw("call.participant_left").is_empty());
    // The resumed agent still receives the approver.
    agent_peer.receiving(1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deciding_the_case_ends_the_call_and_its_quality_record_goes_into_the_archive() {
    let (app, addr, agent, approver, case) = case_in_call().await;
    let agent_peer = CallPeer::join(addr, &agent, case).await;
    let approver_peer = CallPeer::join(addr, &approver, case).await;
    agent_peer.receiving(1, 1).await;
    // Wait for a quality sample of each participant (every second in this test).
    agent_peer
        .peer
        .wait_until(PATIENCE, |r| {
            r.messages
                .iter()
                .filter(|m| matches!(m, ServerMessage::ConnectionQuality { .. }))
                .count()
                >= 4
        })
        .await
        .unwrap();
    app.act(
        &approver,
        case,
        "identity-check",
        json!({ "methods": ["face_compared"] }),
        StatusCode::OK,
    )
    .await;
    app.decide(&approver, case, "approve", "同意").await;
    for peer in [&agent_peer, &approver_peer] {
        peer.peer
            .wait_until(PATIENCE, |r| {
                r.messages
                    .iter()
                    .any(|m| matches!(m, ServerMessage::Removed { .. }))
            })
            .await
            .expect("removed when the case is decided");
    }
    let auditor = app.demo("auditor").await;
    let archive = app
        .request("GET", &format!("/api/cases/{case}/archive"), &auditor, None)
        .await
        .body;
    let text = String::from_utf8_lossy(&archive);
    let start = text
        .find("[\n  {\n    \"at\"")
        .expect("call-quality.json holds samples");
    assert!(text[start..].contains("\"rtt_ms\""));
}

#[tokio::test]
async fn malformed_call_messages_get_a_call_error_and_the_socket_stays_open() {
    let (_app, addr, agent, _approver, case) = case_in_call().await;
    let mut ws = socket(addr, &agent).await;
    send(
        &mut ws,
        json!({ "v": 1, "type": "call.offer", "case_id": case, "sdp": "v=0" }),
    )
    .await;
    assert_eq!(next_call(&mut ws).await["code"], "not_joined");
    send(
        &mut ws,
        json!({ "v": 1, "type": "call.join", "case_id": "seven" }),
    )
    .await;
    assert_eq!(next_call(&mut ws).await["code"], "bad_message");
    send(
        &mut ws,
        json!({ "v": 1, "type": "call.join", "case_id": case }),
    )
    .await;
    assert_eq!(next_call(&mut ws).await["type"], "call.config");
    assert_eq!(next_call(&mut ws).await["type"], "call.joined");
    send(
        &mut ws,
        json!({ "v": 1, "type": "call.candidate", "case_id": case, "candidate": 5 }),
    )
    .await;
    let error = next_call(&mut ws).await;
    assert_eq!(error["code"], "bad_message");
    assert!(error["message"].as_str().unwrap().contains("candidate"));
    send(
        &mut ws,
        json!({ "v": 1, "type": "call.offer", "case_id": case, "sdp": "not sdp" }),
    )
    .await;
    loop {
        let message = next_call(&mut ws).await;
        if message["type"] == "call.error" {
            assert_eq!(message["code"], "bad_sdp", "{message}");
            break;
        }
    }
    send(&mut ws, json!({ "v": 1, "type": "ping", "id": 9 })).await;
    let pong = loop {
        let Message::Text(text) = ws.next().await.unwrap().unwrap() else {
            continue;
        };
        let value: Value = serde_json::from_str(&text).unwrap();
        if value["type"] == "pong" {
            break value;
        }
    };
    assert_eq!(pong["id"], 9);
}
