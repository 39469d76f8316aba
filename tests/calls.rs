//! Calls through the server: webrtc-rs test peers (media-relay's `TestPeer`) signaling over the
//! real `/ws` of a served app (the bridge of `cloudhelp_load::call`), media over real UDP on
//! loopback.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use cloudhelp_load::call::{CallPeer, next_call_message, send_json};
use cloudhelp_load::server::Socket;
use cloudhelp_load::{Server, Token, Trust};
use common::{Auth, TestApp};
use futures_util::StreamExt;
use media_relay::MediaKind;
use media_relay::ServerMessage;
use media_relay::test_peer::{PeerReport, TestPeerConfig};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const PATIENCE: Duration = Duration::from_secs(20);

async fn serve(app: &TestApp) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = signaling::app(app.state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    Server::new(&format!("http://{addr}"), &Trust::PlainOnly).unwrap()
}

fn token(auth: &Auth) -> Token {
    let Auth::Bearer(token) = auth else {
        panic!("bearer tokens only")
    };
    Token::new(token.clone())
}

async fn socket(server: &Server, auth: &Auth) -> Socket {
    server.websocket(&token(auth)).await.unwrap()
}

async fn next_call(socket: &mut Socket) -> Value {
    next_call_message(socket).await.unwrap()
}

/// The next `call.error` on the socket, passing over other call messages.
async fn next_call_error(socket: &mut Socket) -> Value {
    loop {
        let message = next_call(socket).await;
        if message["type"] == "call.error" {
            return message;
        }
    }
}

async fn send(socket: &mut Socket, value: Value) {
    send_json(socket, &value).await.unwrap()
}

async fn join(server: &Server, auth: &Auth, case: i64) -> CallPeer {
    CallPeer::join(server, &token(auth), case, TestPeerConfig::default())
        .await
        .unwrap()
}

async fn receiving(peer: &CallPeer, audio: usize, video: usize) -> PeerReport {
    let enough = |r: &PeerReport| {
        r.live_tracks(MediaKind::Audio)
            .filter(|t| t.counts.packets > 20)
            .count()
            >= audio
            // Decodable: a chain of complete frames that starts at a complete keyframe (a
            // keyframe with a packet lost on a busy machine is repaired or followed by the next).
            && r.live_tracks(MediaKind::Video)
                .filter(|t| t.counts.frames_decodable > 10)
                .count()
                >= video
    };
    peer.peer
        .wait_until(PATIENCE, enough)
        .await
        .unwrap_or_else(|r| panic!("not receiving {audio} audio and {video} video: {r:#?}"))
}

/// A served app with a case in a call between the demo agent and approver.
/// The approver invites the demo expert into the case; returns the expert's login.
async fn invite_expert(app: &TestApp, approver: &Auth, case: i64) -> Auth {
    let expert = app.demo("expert").await;
    let expert_id = app.request("GET", "/api/me", &expert, None).await.json()["user"]["id"].clone();
    app.act(
        approver,
        case,
        "invite",
        json!({ "expert_id": expert_id }),
        StatusCode::OK,
    )
    .await;
    expert
}

async fn case_in_call() -> (TestApp, Server, Auth, Auth, i64) {
    let app = TestApp::with_config(|c| c.call_quality_seconds = 1);
    let server = serve(&app).await;
    let agent = app.demo("agent").await;
    let approver = app.demo("approver").await;
    let case = app.open_case(&agent, "id-loss").await;
    app.act(&approver, case, "accept", json!({}), StatusCode::OK)
        .await;
    (app, server, agent, approver, case)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_approver_hear_and_see_each_other_through_the_server() {
    let (app, server, agent, approver, case) = case_in_call().await;
    let agent_peer = join(&server, &agent, case).await;
    let approver_peer = join(&server, &approver, case).await;
    for peer in [&agent_peer, &approver_peer] {
        let report = receiving(peer, 1, 1).await;
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
    assert_eq!(
        config["watermark"], false,
        "watermark_video is off by default"
    );
    let metrics = app.metrics().await;
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
    let (app, server, agent, approver, case) = case_in_call().await;
    let expert = invite_expert(&app, &approver, case).await;
    let peers = [
        join(&server, &agent, case).await,
        join(&server, &approver, case).await,
        join(&server, &expert, case).await,
    ];
    for peer in &peers {
        receiving(peer, 2, 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_case_people_may_join_and_a_refusal_does_not_tell_whether_the_call_exists() {
    let (app, server, agent, _approver, case) = case_in_call().await;
    let _agent_peer = join(&server, &agent, case).await; // the room exists now
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
        let mut ws = socket(&server, who).await;
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
    let mut ws = socket(&server, &agent).await;
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
    let (_app, server, agent, approver, case) = case_in_call().await;
    let mut agent_peer = join(&server, &agent, case).await;
    let approver_peer = join(&server, &approver, case).await;
    receiving(&approver_peer, 1, 1).await;
    agent_peer
        .reconnect(&server, &token(&agent), case)
        .await
        .unwrap();
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
    receiving(&agent_peer, 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_page_joins_afresh_instead_of_taking_over_the_old_connection() {
    let (_app, server, agent, approver, case) = case_in_call().await;
    let old_page = join(&server, &agent, case).await;
    let approver_peer = join(&server, &approver, case).await;
    receiving(&approver_peer, 1, 1).await;
    // The page reloads: a new peer connection joins without `resume` while the old place is held.
    drop(old_page);
    let new_page = join(&server, &agent, case).await;
    receiving(&new_page, 1, 1).await;
    // The approver sees the old place leave and receives the new page's media.
    approver_peer
        .peer
        .wait_until(PATIENCE, |r| {
            r.live_tracks(MediaKind::Video)
                .any(|t| t.counts.frames_complete > 10)
                && r.tracks
                    .iter()
                    .filter(|t| t.kind == MediaKind::Video)
                    .count()
                    >= 2
        })
        .await
        .expect("the new page's video reaches the approver");
    assert!(!approver_peer.saw("call.participant_left").is_empty());
}

/// How many decodable video frames `peer` has received so far.
fn frames_received(peer: &CallPeer) -> u64 {
    peer.peer
        .report()
        .live_tracks(MediaKind::Video)
        .map(|t| t.counts.frames_decodable)
        .sum()
}

/// Waits until `peer` has received `more` decodable video frames beyond `since`.
async fn keeps_receiving(peer: &CallPeer, since: u64, more: u64) {
    peer.peer
        .wait_until(PATIENCE, |r| {
            r.live_tracks(MediaKind::Video)
                .map(|t| t.counts.frames_decodable)
                .sum::<u64>()
                >= since + more
        })
        .await
        .unwrap_or_else(|r| panic!("video stopped: {r:#?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_stays_open_through_the_decision_and_issuing_and_closes_when_its_time_is_over() {
    let (app, server, agent, approver, case) = case_in_call().await;
    let agent_peer = join(&server, &agent, case).await;
    let approver_peer = join(&server, &approver, case).await;
    receiving(&agent_peer, 1, 1).await;
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
    app.check_identity_and_approve(&approver, case).await;
    // The approver can tell the resident the result on video: media keeps flowing both ways.
    for peer in [&agent_peer, &approver_peer] {
        keeps_receiving(peer, frames_received(peer), 30).await;
    }
    let view = app
        .act(&approver, case, "issue", json!({}), StatusCode::OK)
        .await
        .json();
    assert_eq!(view["state"], "issued");
    assert_eq!(view["call_open"], true, "{view}");
    for peer in [&agent_peer, &approver_peer] {
        keeps_receiving(peer, frames_received(peer), 30).await;
    }
    // Nothing closes before the time limit after the last step (issuing)...
    app.clock
        .advance_ms(signaling::workflow::CALL_AFTER_DECISION_MS - 1000);
    assert!(
        signaling::calls::close_expired(&app.state)
            .await
            .unwrap()
            .is_empty()
    );
    // ...and at the limit the room closes: everyone is told once, and no one can join again.
    app.clock.advance_ms(1000);
    assert_eq!(
        signaling::calls::close_expired(&app.state).await.unwrap(),
        [case]
    );
    for peer in [&agent_peer, &approver_peer] {
        peer.peer
            .wait_until(PATIENCE, |r| {
                r.messages.iter().any(|m| {
                    matches!(
                        m,
                        ServerMessage::Removed {
                            reason: media_relay::LeaveReason::RoomClosed
                        }
                    )
                })
            })
            .await
            .expect("removed when the call's time is over");
    }
    let view = app
        .request("GET", &format!("/api/cases/{case}"), &agent, None)
        .await
        .json();
    assert_eq!(view["call_open"], false, "{view}");
    let mut ws = socket(&server, &agent).await;
    send(
        &mut ws,
        json!({ "v": 1, "type": "call.join", "case_id": case }),
    )
    .await;
    assert_eq!(next_call(&mut ws).await["code"], "call_refused");

    // The quality record went into the archive, with measured samples only.
    let auditor = app.demo("auditor").await;
    let archive = app
        .request("GET", &format!("/api/cases/{case}/archive"), &auditor, None)
        .await
        .body;
    let text = String::from_utf8_lossy(&archive);
    let start = text
        .find("[\n  {\n    \"at\"")
        .expect("call-quality.json holds samples");
    let end = start
        + text[start..]
            .find("\n]")
            .expect("the end of call-quality.json");
    let samples: Vec<Value> = serde_json::from_str(&text[start..end + 2]).unwrap();
    assert!(!samples.is_empty());
    for sample in &samples {
        let q = &sample["quality"];
        assert!(
            !q["rtt_ms"].is_null() || q["uplink_kbps"] != 0 || q["downlink_kbps"] != 0,
            "a sample that measured nothing: {sample}"
        );
    }
}

#[tokio::test]
async fn malformed_call_messages_get_a_call_error_and_the_socket_stays_open() {
    let (_app, server, agent, _approver, case) = case_in_call().await;
    let mut ws = socket(&server, &agent).await;
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
    let error = next_call_error(&mut ws).await;
    assert_eq!(error["code"], "bad_sdp", "{error}");
    // A display size for a track this participant does not receive is refused by name; one
    // with a size that is not a number does not parse.
    send(
        &mut ws,
        json!({ "v": 1, "type": "call.video_size", "case_id": case, "track_id": "user-99-video-0", "width": 320, "height": 180 }),
    )
    .await;
    let error = next_call_error(&mut ws).await;
    assert_eq!(error["code"], "unknown_track", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("user-99-video-0")
    );
    send(
        &mut ws,
        json!({ "v": 1, "type": "call.video_size", "case_id": case, "track_id": "x", "width": "big", "height": 1 }),
    )
    .await;
    let error = next_call_error(&mut ws).await;
    assert_eq!(error["code"], "bad_message", "{error}");
    send(&mut ws, json!({ "v": 1, "type": "ping", "id": 9 })).await;
    let (pong, _) = until_pong(&mut ws).await;
    assert_eq!(pong["id"], 9);
}

/// Every message on the socket up to the first `pong`: the pong, and what came before it.
async fn until_pong(ws: &mut Socket) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    loop {
        let Message::Text(text) = ws.next().await.unwrap().unwrap() else {
            continue;
        };
        let value: Value = serde_json::from_str(&text).unwrap();
        if value["type"] == "pong" {
            return (value, before);
        }
        before.push(value);
    }
}

/// Sends a recording consent (or its withdrawal) on a socket.
async fn consent(socket: &mut Socket, case: i64, consent: bool) {
    send(
        socket,
        json!({ "v": 1, "type": "call.consent", "case_id": case, "consent": consent }),
    )
    .await;
}

/// The materials of a case that are call recordings: (media type, bytes).
async fn recordings(app: &TestApp, who: &Auth, case: i64) -> Vec<(String, Vec<u8>)> {
    let listed = app
        .request("GET", &format!("/api/cases/{case}/materials"), who, None)
        .await
        .json();
    let mut files = Vec::new();
    for m in listed.as_array().unwrap() {
        let media_type = m["media_type"].as_str().unwrap().to_string();
        if media_type.starts_with("audio/") || media_type.starts_with("video/") {
            let bytes = app
                .request(
                    "GET",
                    &format!("/api/cases/{case}/materials/{}", m["id"]),
                    who,
                    None,
                )
                .await
                .body;
            files.push((media_type, bytes));
        }
    }
    files
}

/// Seconds of media in an Ogg/Opus file: the last page's granule position at 48 kHz.
fn ogg_seconds(bytes: &[u8]) -> f64 {
    let last = bytes
        .windows(4)
        .rposition(|w| w == b"OggS")
        .expect("an Ogg page");
    let granule = u64::from_le_bytes(bytes[last + 6..last + 14].try_into().unwrap());
    granule as f64 / 48_000.0
}

/// Frames in an IVF file (header field).
fn ivf_frames(bytes: &[u8]) -> u32 {
    assert_eq!(&bytes[..4], b"DKIF");
    u32::from_le_bytes(bytes[24..28].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_recorded_only_after_everyone_consented_and_the_files_go_into_the_archive() {
    let (app, server, agent, approver, case) = case_in_call().await;
    let agent_peer = join(&server, &agent, case).await;
    let approver_peer = join(&server, &approver, case).await;
    receiving(&approver_peer, 1, 1).await;
    let mut watcher = socket(&server, &agent).await;
    consent(&mut watcher, case, true).await;
    let recordings_dir = app.dir.path().join(format!("data/recordings/case-{case}"));
    assert!(!recordings_dir.exists(), "one consent is not enough");
    let mut approver_socket = socket(&server, &approver).await;
    consent(&mut approver_socket, case, true).await;
    let started = next_call(&mut watcher).await;
    assert_eq!(
        (started["type"].as_str(), started["recording"].as_bool()),
        (Some("call.recording"), Some(true))
    );
    // Let about two seconds of media be recorded.
    let frames = |r: &PeerReport| {
        r.tracks
            .iter()
            .map(|t| t.counts.frames_complete)
            .sum::<u64>()
    };
    let before = frames(&agent_peer.peer.report());
    agent_peer
        .peer
        .wait_until(PATIENCE, |r| frames(r) > before + 60)
        .await
        .expect("media flows while recording");
    app.check_identity_and_approve(&approver, case).await;

    let files = recordings(&app, &agent, case).await;
    let kinds: Vec<&str> = files.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "audio/ogg").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "video/x-ivf").count(),
        2,
        "{kinds:?}"
    );
    for (media_type, bytes) in &files {
        if media_type == "audio/ogg" {
            let seconds = ogg_seconds(bytes);
            assert!((1.0..60.0).contains(&seconds), "{seconds} s of audio");
        } else {
            assert!(ivf_frames(bytes) >= 30, "{} frames", ivf_frames(bytes));
        }
    }
    let auditor = app.demo("auditor").await;
    let archive = app
        .request("GET", &format!("/api/cases/{case}/archive"), &auditor, None)
        .await
        .body;
    let names = String::from_utf8_lossy(&archive);
    assert!(
        names.contains(".ogg") && names.contains(".ivf"),
        "the recordings are in the archive"
    );
    let trail = String::from_utf8(
        app.request("GET", &format!("/api/audit?case_id={case}"), &auditor, None)
            .await
            .body,
    )
    .unwrap();
    assert_eq!(trail.matches("call.recording_consent").count(), 2);
    assert!(trail.contains("call.recording_started") && trail.contains("call.recording_stored"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_everyones_consent_nothing_is_recorded() {
    let (app, server, agent, approver, case) = case_in_call().await;
    let _agent_peer = join(&server, &agent, case).await;
    let approver_peer = join(&server, &approver, case).await;
    receiving(&approver_peer, 1, 1).await;
    let mut agent_socket = socket(&server, &agent).await;
    consent(&mut agent_socket, case, true).await;
    let mut approver_socket = socket(&server, &approver).await;
    consent(&mut approver_socket, case, false).await;
    let auditor = app.demo("auditor").await;
    // A refused consent from someone outside the case changes nothing either.
    let mut outsider = socket(&server, &auditor).await;
    consent(&mut outsider, case, true).await;
    assert_eq!(next_call(&mut outsider).await["code"], "call_refused");
    app.check_identity_and_approve(&approver, case).await;
    assert!(recordings(&app, &agent, case).await.is_empty());
    assert!(
        !app.dir
            .path()
            .join(format!("data/recordings/case-{case}"))
            .exists(),
        "no file was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expert_invited_into_a_recorded_call_is_not_recorded_until_it_has_seen_so_and_consented()
{
    let (app, server, agent, approver, case) = case_in_call().await;
    let _agent_peer = join(&server, &agent, case).await;
    let approver_peer = join(&server, &approver, case).await;
    receiving(&approver_peer, 1, 1).await;
    let mut watcher = socket(&server, &agent).await;
    consent(&mut watcher, case, true).await;
    let mut approver_socket = socket(&server, &approver).await;
    consent(&mut approver_socket, case, true).await;
    assert_eq!(next_call(&mut watcher).await["recording"], true);

    let expert = invite_expert(&app, &approver, case).await;
    // By the time the invitation is answered, the recording has stopped and its files are kept.
    let paused = next_call(&mut watcher).await;
    assert_eq!(
        (paused["type"].as_str(), paused["recording"].as_bool()),
        (Some("call.recording"), Some(false))
    );
    let kept = recordings(&app, &agent, case).await.len();
    assert!(
        kept >= 2,
        "what was recorded before the invitation is stored ({kept} files)"
    );

    // The expert joins: told it is not recorded and it has not consented.
    let mut expert_socket = socket(&server, &expert).await;
    send(
        &mut expert_socket,
        json!({ "v": 1, "type": "call.join", "case_id": case }),
    )
    .await;
    let config = next_call(&mut expert_socket).await;
    assert_eq!(config["type"], "call.config");
    assert_eq!(
        (config["recording"].as_bool(), config["consented"].as_bool()),
        (Some(false), Some(false))
    );
    // Its consent completes everyone's: recording starts again, in new files.
    consent(&mut expert_socket, case, true).await;
    assert_eq!(next_call(&mut watcher).await["recording"], true);
    // Someone who joins now is told at once that the call is recorded.
    let mut rejoin = socket(&server, &agent).await;
    send(
        &mut rejoin,
        json!({ "v": 1, "type": "call.join", "case_id": case }),
    )
    .await;
    let config = next_call(&mut rejoin).await;
    assert_eq!(
        (config["recording"].as_bool(), config["consented"].as_bool()),
        (Some(true), Some(true))
    );

    let auditor = app.demo("auditor").await;
    let trail = String::from_utf8(
        app.request("GET", &format!("/api/audit?case_id={case}"), &auditor, None)
            .await
            .body,
    )
    .unwrap();
    assert!(trail.contains("call.recording_paused"));
    assert_eq!(trail.matches("call.recording_started").count(), 2);
}

/// The next `call.chat` on the socket, passing over other call messages.
async fn next_chat(socket: &mut Socket) -> Value {
    next_of(socket, "call.chat").await
}

/// The next call message of type `kind` on the socket, passing over others.
async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let message = next_call(socket).await;
        if message["type"] == kind {
            return message;
        }
    }
}

/// `call.join` on a socket, up to its `call.config`.
async fn join_signaling(socket: &mut Socket, case: i64) -> Value {
    send(
        socket,
        json!({ "v": 1, "type": "call.join", "case_id": case }),
    )
    .await;
    loop {
        let message = next_call(socket).await;
        if message["type"] == "call.config" {
            return message;
        }
    }
}

#[tokio::test]
async fn a_chat_message_reaches_the_calls_people_only_is_kept_with_the_case_and_comes_with_a_join()
{
    let (app, server, agent, approver, case) = case_in_call().await;
    // Another agent of the same point sees the case (masked) but is not in its call.
    let colleague = app.colleague_agent().await;
    let mut colleague_ws = socket(&server, &colleague).await;
    let mut agent_ws = socket(&server, &agent).await;
    let mut approver_ws = socket(&server, &approver).await;

    // Not in the call yet: refused.
    send(
        &mut agent_ws,
        json!({ "v": 1, "type": "call.chat", "case_id": case, "text": "喂" }),
    )
    .await;
    assert_eq!(next_call_error(&mut agent_ws).await["code"], "not_joined");

    assert_eq!(join_signaling(&mut agent_ws, case).await["chat"], json!([]));
    join_signaling(&mut approver_ws, case).await;
    send(
        &mut agent_ws,
        json!({ "v": 1, "type": "call.chat", "case_id": case, "text": "  声音断断续续，请看户口簿第二页  " }),
    )
    .await;
    for ws in [&mut approver_ws, &mut agent_ws] {
        let chat = next_chat(ws).await;
        assert_eq!(chat["case_id"], case);
        assert_eq!(chat["text"], "声音断断续续，请看户口簿第二页", "trimmed");
        assert_eq!(chat["from_name"], "王代办");
        assert_eq!(chat["role"], "agent");
    }
    // The colleague's socket gets nothing of it: a ping's pong comes first.
    send(
        &mut colleague_ws,
        json!({ "v": 1, "type": "ping", "id": 1 }),
    )
    .await;
    let (_, before) = until_pong(&mut colleague_ws).await;
    assert!(
        before.iter().all(|m| m["type"] != "call.chat"),
        "a colleague outside the call got the chat: {before:?}"
    );

    // Kept with the case: in the audit trail, and given to whoever joins later.
    let auditor = app.demo("auditor").await;
    let trail = String::from_utf8(
        app.request("GET", &format!("/api/audit?case_id={case}"), &auditor, None)
            .await
            .body,
    )
    .unwrap();
    assert!(
        trail.contains("call.chat") && trail.contains("请看户口簿第二页"),
        "{trail}"
    );
    let mut again = socket(&server, &approver).await;
    let config = join_signaling(&mut again, case).await;
    assert_eq!(config["chat"].as_array().unwrap().len(), 1);
    assert_eq!(config["chat"][0]["text"], "声音断断续续，请看户口簿第二页");

    // Too long, and too fast, are refused by name; the socket stays open.
    let long = "字".repeat(signaling::chat::MAX_CHARS + 1);
    send(
        &mut agent_ws,
        json!({ "v": 1, "type": "call.chat", "case_id": case, "text": long }),
    )
    .await;
    let error = next_call_error(&mut agent_ws).await;
    assert_eq!(error["code"], "bad_message");
    assert!(
        error["message"].as_str().unwrap().contains("501"),
        "{error}"
    );
    for i in 0..signaling::chat::BURST {
        send(
            &mut agent_ws,
            json!({ "v": 1, "type": "call.chat", "case_id": case, "text": format!("第{i}条") }),
        )
        .await;
    }
    let error = next_call_error(&mut agent_ws).await;
    assert_eq!(error["code"], "chat_too_fast", "{error}");

    // Sealed with the decision, the chat is in the archive's events.
    app.check_identity_and_approve(&approver, case).await;
    let archive = app
        .request("GET", &format!("/api/cases/{case}/archive"), &auditor, None)
        .await
        .body;
    let events = String::from_utf8(common::zip_entry(&archive, "data/events.jsonl")).unwrap();
    assert!(
        events.contains("call.chat") && events.contains("请看户口簿第二页"),
        "{events}"
    );
}

#[tokio::test]
async fn a_screen_share_is_recorded_as_a_case_event_when_it_starts_and_when_it_stops() {
    let (app, server, agent, approver, case) = case_in_call().await;
    // Someone not in the call (no call.join on this socket) shares nothing, and nothing is kept.
    let mut outsider = socket(&server, &approver).await;
    send(
        &mut outsider,
        json!({ "v": 1, "type": "call.screen_share", "case_id": case, "track": "x" }),
    )
    .await;
    assert_eq!(next_call_error(&mut outsider).await["code"], "not_joined");
    let mut agent_ws = socket(&server, &agent).await;
    join_signaling(&mut agent_ws, case).await;
    for track in [json!("screen-track-1"), Value::Null] {
        send(
            &mut agent_ws,
            json!({ "v": 1, "type": "call.screen_share", "case_id": case, "track": track }),
        )
        .await;
    }
    // A track that is not a string is refused by name.
    send(
        &mut agent_ws,
        json!({ "v": 1, "type": "call.screen_share", "case_id": case, "track": 5 }),
    )
    .await;
    let error = next_call_error(&mut agent_ws).await;
    assert_eq!(error["code"], "bad_message");
    assert!(
        error["message"].as_str().unwrap().contains("screen_share"),
        "{error}"
    );

    let events = app.audit_trail(case).await;
    let shares: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "call.screen_share")
        .collect();
    let sharing: Vec<&Value> = shares.iter().map(|e| &e["details"]["sharing"]).collect();
    assert_eq!(sharing, [&json!(true), &json!(false)], "{events:?}");
    assert!(
        shares.iter().all(|e| e["actor_role"] == "agent"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applicant_joins_from_home_with_an_invitation_and_leaves_the_call_when_it_is_withdrawn()
{
    let (app, server, agent, approver, case) = case_in_call().await;
    let (token, invitation) = app.invite_resident(&agent, case).await;
    let Auth::Cookie { session, .. } = app.accept_invitation(&token).await else {
        unreachable!("a browser session")
    };
    let resident = Auth::Bearer(session);
    let resident_id = app.request("GET", "/api/me", &resident, None).await.json()["user"]["id"]
        .as_i64()
        .unwrap();
    let approver_peer = join(&server, &approver, case).await;
    let resident_peer = join(&server, &resident, case).await;
    // The applicant at home and the approver see and hear each other.
    receiving(&resident_peer, 1, 1).await;
    receiving(&approver_peer, 1, 1).await;
    let from_home = format!("user-{resident_id}");
    assert!(
        approver_peer
            .peer
            .report()
            .live_tracks_of(&from_home)
            .count()
            >= 2
    );

    // The agent withdraws the invitation: the resident is taken out of the call at once.
    let revoked = app
        .request(
            "DELETE",
            &format!("/api/cases/{case}/invitations/{invitation}"),
            &agent,
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    approver_peer
        .peer
        .wait_until(PATIENCE, |r| r.live_tracks_of(&from_home).count() == 0)
        .await
        .expect("the resident's tracks leave the approver's call");
    let left = approver_peer.saw("call.participant_left");
    assert!(
        left.iter()
            .any(|m| m["participant_id"] == from_home.as_str() && m["reason"] == "dismissed"),
        "{left:?}"
    );
}

#[tokio::test]
async fn the_approver_points_at_a_frozen_frame_everyone_in_the_call_sees_it_at_once_and_the_saved_picture_names_what_it_was_drawn_on()
 {
    let (app, server, agent, approver, case) = case_in_call().await;
    let agent_id = app.request("GET", "/api/me", &agent, None).await.json()["user"]["id"]
        .as_i64()
        .unwrap();
    let mut agent_ws = socket(&server, &agent).await;
    let mut approver_ws = socket(&server, &approver).await;
    join_signaling(&mut agent_ws, case).await;
    join_signaling(&mut approver_ws, case).await;

    // The approver freezes a frame of the agent's camera.
    let frame = common::png();
    let freeze = |who: &Auth, of: String, bytes: Vec<u8>| {
        let request =
            axum::http::Request::post(format!("/api/cases/{case}/annotations/frame?of={of}"))
                .header("content-type", "image/png")
                .body(axum::body::Body::from(bytes))
                .unwrap();
        let who = who.clone();
        let app = &app;
        async move { app.send(request, &who).await }
    };
    let refused = freeze(&agent, format!("user-{agent_id}"), frame.clone()).await;
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "only the approver draws"
    );
    let blobs = |app: &TestApp| walk_files(&app.dir.path().join("data/blobs/sha256"));
    let stored_before = blobs(&app);
    let not_in_call = freeze(&approver, "user-9999".into(), frame.clone()).await;
    assert_eq!(not_in_call.code(), "invalid_field");
    assert_eq!(blobs(&app), stored_before, "a refused frame is not kept");
    let gif = freeze(
        &approver,
        format!("user-{agent_id}"),
        b"GIF89a....".to_vec(),
    )
    .await;
    assert_eq!(gif.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let started = freeze(&approver, format!("user-{agent_id}"), frame.clone()).await;
    assert_eq!(started.status, StatusCode::CREATED, "{:?}", started.json());
    let annotation = started.json();
    let id = annotation["id"].as_i64().unwrap();
    let frame_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&frame));
    assert_eq!(annotation["base"]["kind"], "frame");
    assert_eq!(annotation["base"]["sha256"], frame_sha.as_str());

    // Everyone in the call is told and fetches the picture.
    let told = next_of(&mut agent_ws, "call.annotation").await;
    assert_eq!(told["annotation"]["id"], id);
    let base = app
        .request(
            "GET",
            &format!("/api/cases/{case}/annotations/{id}/base"),
            &agent,
            None,
        )
        .await;
    assert_eq!(
        (base.status, base.body.clone()),
        (StatusCode::OK, frame.clone())
    );
    let auditor = app.demo("auditor").await;
    let outsider = app
        .request(
            "GET",
            &format!("/api/cases/{case}/annotations/{id}/base"),
            &auditor,
            None,
        )
        .await;
    assert_eq!(
        outsider.status,
        StatusCode::NOT_FOUND,
        "only the call's people"
    );

    // Shapes and the pointer reach the agent at once; the approver's own pointer is not echoed.
    let shapes = json!([
        { "kind": "arrow", "x1": 0.1, "y1": 0.1, "x2": 0.4, "y2": 0.5 },
        { "kind": "circle", "x": 0.5, "y": 0.5, "r": 0.1 },
        { "kind": "text", "x": 0.6, "y": 0.2, "text": "这里看不清" }
    ]);
    send(
        &mut approver_ws,
        json!({ "v": 1, "type": "call.annotate", "case_id": case, "annotation_id": id, "shapes": shapes }),
    )
    .await;
    let drawn = next_of(&mut agent_ws, "call.annotation").await;
    assert_eq!(drawn["annotation"]["shapes"], shapes);
    send(
        &mut approver_ws,
        json!({ "v": 1, "type": "call.pointer", "case_id": case, "annotation_id": id, "x": 0.25, "y": 0.75 }),
    )
    .await;
    let pointer = next_of(&mut agent_ws, "call.pointer").await;
    assert_eq!(
        (pointer["x"].as_f64(), pointer["y"].as_f64()),
        (Some(0.25), Some(0.75))
    );
    send(&mut approver_ws, json!({ "v": 1, "type": "ping", "id": 9 })).await;
    let (_, before_pong) = until_pong(&mut approver_ws).await;
    assert!(
        before_pong.iter().all(|m| m["type"] != "call.pointer"),
        "{before_pong:?}"
    );

    // Refused by name: the agent drawing, a shape off the picture.
    send(
        &mut agent_ws,
        json!({ "v": 1, "type": "call.annotate", "case_id": case, "annotation_id": id, "shapes": [] }),
    )
    .await;
    assert_eq!(next_call_error(&mut agent_ws).await["code"], "call_refused");
    send(
        &mut approver_ws,
        json!({ "v": 1, "type": "call.annotate", "case_id": case, "annotation_id": id, "shapes": [{ "kind": "circle", "x": 2.0, "y": 0.5, "r": 0.1 }] }),
    )
    .await;
    let off = next_call_error(&mut approver_ws).await;
    assert!(
        off["message"].as_str().unwrap().contains("shapes[0]"),
        "{off}"
    );

    // Saved: the picture and a record that names the frame it was drawn on.
    let saved = app
        .request(
            "POST",
            &format!("/api/cases/{case}/annotations/{id}/save"),
            &approver,
            Some(json!({ "image_png": common::b64(&common::png()) })),
        )
        .await;
    assert_eq!(saved.status, StatusCode::CREATED, "{:?}", saved.json());
    let saved = saved.json();
    assert_eq!(saved["closed"], true);
    let record_id = saved["record_material_id"].as_i64().unwrap();
    let record: Value = serde_json::from_slice(
        &app.request(
            "GET",
            &format!("/api/cases/{case}/materials/{record_id}"),
            &approver,
            None,
        )
        .await
        .body,
    )
    .unwrap();
    assert_eq!(record["type"], "cloudhelp.annotation/v1");
    assert_eq!(record["base"]["sha256"], frame_sha.as_str());
    assert_eq!(record["base"]["of"], format!("user-{agent_id}"));
    assert_eq!(record["shapes"], shapes);
    send(
        &mut approver_ws,
        json!({ "v": 1, "type": "call.annotate", "case_id": case, "annotation_id": id, "shapes": shapes }),
    )
    .await;
    let closed = next_call_error(&mut approver_ws).await;
    assert!(
        closed["message"].as_str().unwrap().contains("closed"),
        "{closed}"
    );

    // A material of another case is not found from this one.
    let other = app.open_case(&agent, "id-loss").await;
    let uploaded = app
        .send(
            axum::http::Request::post(format!(
                "/api/cases/{other}/materials?filename=%E6%88%B7%E5%8F%A3%E7%B0%BF.png"
            ))
            .header("content-type", "image/png")
            .body(axum::body::Body::from(common::png()))
            .unwrap(),
            &agent,
        )
        .await;
    assert_eq!(
        uploaded.status,
        StatusCode::CREATED,
        "{:?}",
        uploaded.json()
    );
    let foreign = app
        .request(
            "POST",
            &format!("/api/cases/{case}/annotations"),
            &approver,
            Some(json!({ "material_id": uploaded.json()["id"] })),
        )
        .await;
    assert_eq!(
        foreign.status,
        StatusCode::NOT_FOUND,
        "{:?}",
        foreign.json()
    );

    // A material can be drawn on as well; the events are in the trail.
    let on_material = app
        .request(
            "POST",
            &format!("/api/cases/{case}/annotations"),
            &approver,
            Some(json!({ "material_id": saved["image_material_id"] })),
        )
        .await;
    assert_eq!(
        on_material.status,
        StatusCode::CREATED,
        "{:?}",
        on_material.json()
    );
    assert_eq!(on_material.json()["base"]["kind"], "material");
    let kinds: Vec<String> = app
        .audit_trail(case)
        .await
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| k.starts_with("annotation."))
        .map(str::to_string)
        .collect();
    assert_eq!(
        kinds,
        [
            "annotation.started",
            "annotation.material_stored",
            "annotation.material_stored",
            "annotation.saved",
            "annotation.started",
        ]
    );
}

/// Every file under `dir`, recursively (none if it does not exist).
fn walk_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            if path.is_dir() { walk_files(&path) } else { 1 }
        })
        .sum()
}
