//! `/ws` over a real socket: the live queue for approvers and case updates for participants.

mod common;

use std::time::Duration;

use common::{Auth, TestApp};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn serve(app: &TestApp) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = signaling::app(app.state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

async fn connect(
    addr: std::net::SocketAddr,
    auth: &Auth,
    origin: Option<&str>,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Auth::Bearer(token) = auth {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// The next JSON message, failing the test if none comes within 5 s (a hang, not a timing claim).
async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a message")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test]
async fn approvers_see_their_queue_live_and_agents_see_their_case_change() {
    let app = TestApp::new();
    let addr = serve(&app).await;
    let agent = app.demo("agent").await;
    let approver = app.demo("approver").await;
    let approver2 = app.demo("approver2").await;
    let waiting = app.open_case(&agent, "id-renew").await;

    let mut watcher = connect(addr, &approver, None).await.unwrap();
    assert_eq!(next(&mut watcher).await["type"], "hello");
    let snapshot = next(&mut watcher).await;
    assert_eq!(snapshot["type"], "queue.snapshot");
    assert_eq!(snapshot["items"][0]["case_id"], waiting);
    let mut agent_socket = connect(addr, &agent, None).await.unwrap();
    assert_eq!(next(&mut agent_socket).await["type"], "hello");

    let case = app.open_case(&agent, "id-loss").await;
    let added = next(&mut watcher).await;
    assert_eq!(
        (added["type"].as_str(), added["item"]["case_id"].as_i64()),
        (Some("queue.added"), Some(case))
    );
    assert_eq!(added["item"]["applicant_name"], "张**");

    app.act(
        &approver2,
        case,
        "accept",
        json!({}),
        axum::http::StatusCode::OK,
    )
    .await;
    let taken = next(&mut watcher).await;
    assert_eq!(
        (taken["type"].as_str(), taken["case_id"].as_i64()),
        (Some("queue.taken"), Some(case))
    );
    let update = next(&mut agent_socket).await;
    assert_eq!(
        (update["type"].as_str(), update["state"].as_str()),
        (Some("case.updated"), Some("in_call"))
    );

    app.act(
        &agent,
        waiting,
        "cancel",
        json!({}),
        axum::http::StatusCode::OK,
    )
    .await;
    let cancelled = next(&mut watcher).await;
    assert_eq!(
        (cancelled["type"].as_str(), cancelled["case_id"].as_i64()),
        (Some("queue.cancelled"), Some(waiting))
    );
}

#[tokio::test]
async fn other_departments_do_not_hear_of_a_case() {
    let app = TestApp::new();
    app.add_user(
        "approver-jj",
        signaling::workflow::Role::Approver,
        None,
        Some("jiaojing"),
    );
    let addr = serve(&app).await;
    let agent = app.demo("agent").await;
    let outsider = app.token("approver-jj", "password-approver-jj").await;
    let mut socket = connect(addr, &outsider, None).await.unwrap();
    assert_eq!(next(&mut socket).await["type"], "hello");
    assert_eq!(next(&mut socket).await["items"], json!([]));
    app.open_case(&agent, "id-loss").await; // 户政: not for 交警
    let own = app.open_case(&agent, "inspection-mark").await; // 交警车驾管
    let added = next(&mut socket).await;
    assert_eq!(
        added["item"]["case_id"], own,
        "the first notice is the own department's case"
    );
}

#[tokio::test]
async fn bad_messages_get_an_error_and_the_socket_stays_open() {
    let app = TestApp::new();
    let addr = serve(&app).await;
    let agent = app.demo("agent").await;
    let mut socket = connect(addr, &agent, None).await.unwrap();
    next(&mut socket).await;
    socket
        .send(Message::Text("{not json".into()))
        .await
        .unwrap();
    assert_eq!(next(&mut socket).await["code"], "bad_message");
    socket
        .send(Message::Text(r#"{"type":"launch"}"#.into()))
        .await
        .unwrap();
    assert_eq!(next(&mut socket).await["code"], "unknown_type");
    socket
        .send(Message::Text(r#"{"type":"ping","id":1}"#.into()))
        .await
        .unwrap();
    assert_eq!(next(&mut socket).await["type"], "pong");
}

#[tokio::test]
async fn unauthenticated_or_foreign_origin_upgrades_are_refused() {
    let app = TestApp::new();
    let addr = serve(&app).await;
    let err = connect(addr, &Auth::None, None)
        .await
        .expect_err("no login, no socket");
    assert!(err.to_string().contains("401"), "{err}");
    let agent = app.demo("agent").await;
    let err = connect(addr, &agent, Some("https://evil.example"))
        .await
        .expect_err("foreign origin refused");
    assert!(err.to_string().contains("403"), "{err}");
    assert!(
        connect(addr, &agent, Some(&format!("http://{addr}")))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_socket_ends_with_its_session_on_logout() {
    let app = TestApp::new();
    let addr = serve(&app).await;
    let agent = app.demo("agent").await;
    let mut socket = connect(addr, &agent, None).await.unwrap();
    assert_eq!(next(&mut socket).await["type"], "hello");
    let out = app.request("POST", "/api/auth/logout", &agent, None).await;
    assert_eq!(out.status, axum::http::StatusCode::NO_CONTENT);
    app.clock.advance_ms(6_000); // past the per-message check interval
    socket
        .send(Message::Text(r#"{"type":"ping"}"#.into()))
        .await
        .unwrap();
    let reply = next(&mut socket).await;
    assert_eq!(reply["code"], "session_ended", "{reply}");
    let closed = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("closed");
    assert!(
        matches!(closed, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
        "{closed:?}"
    );
}

#[tokio::test]
async fn a_frame_announced_larger_than_a_message_may_be_is_refused_from_its_header() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::new();
    let addr = serve(&app).await;
    let agent = app.demo("agent").await;
    let mut socket = connect(addr, &agent, None).await.unwrap();
    next(&mut socket).await;
    // A text frame header announcing 10 MiB, masked as from a client, and none of its payload:
    // the server must not wait for (and buffer) the 10 MiB before refusing it.
    let mut header = vec![0x81, 0xff];
    header.extend_from_slice(&(10u64 << 20).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = socket.get_mut() else {
        unreachable!("a plain test socket")
    };
    tcp.write_all(&header).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the server waited for the announced 10 MiB");
}

#[tokio::test]
async fn a_waiting_case_is_told_when_a_case_ahead_of_it_is_taken_and_its_place_moves_up() {
    let app = TestApp::new();
    let addr = serve(&app).await;
    let agent = app.demo("agent").await;
    let approver = app.demo("approver").await;
    let first = app.open_case(&agent, "id-loss").await;
    let second = app.open_case(&agent, "id-loss").await;
    let place = |case: i64| {
        let path = format!("/api/cases/{case}");
        let (app, agent) = (&app, agent.clone());
        async move { app.request("GET", &path, &agent, None).await.json()["queue_place"].clone() }
    };
    assert_eq!(place(second).await["position"], 2);

    let mut agent_socket = connect(addr, &agent, None).await.unwrap();
    assert_eq!(next(&mut agent_socket).await["type"], "hello");
    app.act(
        &approver,
        first,
        "accept",
        json!({}),
        axum::http::StatusCode::OK,
    )
    .await;
    // First the taken case's own update, then the one behind it is told it moved.
    let own = next(&mut agent_socket).await;
    assert_eq!(own["case_id"], first);
    let moved = next(&mut agent_socket).await;
    assert_eq!(
        (
            moved["type"].as_str(),
            moved["case_id"].as_i64(),
            moved["event"].as_str()
        ),
        (Some("case.updated"), Some(second), Some("queue.moved"))
    );
    assert_eq!(place(second).await["position"], 1);
    assert_eq!(place(first).await, Value::Null);
}
