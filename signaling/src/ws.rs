//! `/ws`: the authenticated WebSocket. Today it carries live queue and case events; call
//! signaling joins it later. Messages are JSON with `"v": 1` and a `"type"`; see
//! `docs/signaling.md`.
//!
//! The session logic is written over a `Sink`/`Stream` of messages so that it can be driven by
//! channels in tests as well as by a real socket.

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::broadcast;

use crate::accounts::User;
use crate::api::Caller;
use crate::cases;
use crate::error::{Error, Result};
use crate::protocol::{ClientMessage, ErrorCode, HelloUser, ServerMessage, parse_client};
use crate::state::{AppState, Notice};
use crate::workflow::Role;

/// Largest client message accepted, in bytes.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// Whether a browser's `Origin` is this server (or configured); tools send none.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin);
    origin_host == host || allowed.iter().any(|a| a == origin)
}

/// Upgrades an authenticated request to the WebSocket (the live queue, notices and calls; the
/// messages are in docs/signaling.md).
#[utoipa::path(get, path = "/ws", responses((status = 101, description = "switching to the WebSocket protocol"), (status = 401, body = crate::error::ErrorBody)))]
pub async fn upgrade(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response> {
    if !origin_allowed(&headers, &state.config.allowed_origins) {
        return Err(Error::Forbidden(
            "this page's origin may not open the WebSocket; add it to allowed_origins".into(),
        ));
    }
    let user = caller.user;
    let token_hash = caller.session.token_hash;
    Ok(ws
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket: WebSocket| async move {
            let (sink, stream) = socket.split();
            state.metrics.ws_clients.inc();
            run(state.clone(), user, token_hash, sink, stream).await;
            state.metrics.ws_clients.dec();
        }))
}

/// The queue snapshot a user should see on connect (or after missing notices).
async fn snapshot(state: &AppState, user: &User) -> Result<Option<serde_json::Value>> {
    let department = match user.role {
        Role::Approver => user.department_id,
        Role::Supervisor => None,
        _ => return Ok(None),
    };
    let now = state.now();
    let items = state
        .db
        .call(move |c| cases::queue(c, department, now))
        .await?;
    Ok(Some(ServerMessage::QueueSnapshot { items }.to_value()))
}

/// How often an open socket checks that its session still exists (logout, disabled account,
/// expiry end the socket too).
const SESSION_CHECK: std::time::Duration = std::time::Duration::from_secs(30);
/// Client messages check the session too, at most this often (ms), so that signaling bursts do
/// not each cost a database read.
const MESSAGE_SESSION_CHECK_MS: i64 = 5_000;

/// Whether the session behind a socket is still live.
async fn session_alive(state: &AppState, token_hash: &str) -> bool {
    let hash = token_hash.to_string();
    let now = state.now();
    state
        .db
        .call(move |c| crate::accounts::session_alive(c, &hash, now))
        .await
        .unwrap_or(false)
}

/// Runs one connection until the client leaves or its session ends.
pub async fn run<W, R>(state: AppState, user: User, token_hash: String, mut sink: W, mut stream: R)
where
    W: Sink<Message> + Unpin,
    R: Stream<Item = std::result::Result<Message, axum::Error>> + Unpin,
{
    // The session was checked when the socket was opened.
    let mut checked_at = state.now();
    let mut notices = state.notices.subscribe();
    let (out, mut outgoing) = tokio::sync::mpsc::channel::<serde_json::Value>(256);
    let mut calls = crate::calls::Calls::new(out);
    let send = |value: serde_json::Value| Message::Text(value.to_string().into());
    let hello = ServerMessage::Hello {
        user: HelloUser {
            id: user.id,
            role: user.role,
            display_name: user.display_name.clone(),
        },
    }
    .to_value();
    if sink.send(send(hello)).await.is_err() {
        return;
    }
    if let Ok(Some(snap)) = snapshot(&state, &user).await
        && sink.send(send(snap)).await.is_err()
    {
        return;
    }
    let mut check = tokio::time::interval(SESSION_CHECK);
    check.tick().await; // the first tick is immediate; the session was just checked
    let ended = ServerMessage::error(
        ErrorCode::SessionEnded,
        "the session has ended; log in again",
    )
    .to_value();
    loop {
        tokio::select! {
            _ = check.tick() => {
                if !session_alive(&state, &token_hash).await {
                    let _ = sink.send(send(ended)).await;
                    return;
                }
            }
            Some(message) = outgoing.recv() => {
                if sink.send(send(message)).await.is_err() {
                    return;
                }
            }
            notice = notices.recv() => match notice {
                Ok(Notice { audience, message }) => {
                    if audience.includes(user.id, user.role, user.point_id, user.department_id)
                        && sink.send(Message::Text(message.to_string().into())).await.is_err()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Missed notices: send the whole queue again rather than a wrong picture.
                    if let Ok(Some(snap)) = snapshot(&state, &user).await
                        && sink.send(send(snap)).await.is_err()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = stream.next() => {
                let reply = match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Text(_)))
                        if state.now() - checked_at >= MESSAGE_SESSION_CHECK_MS
                            && {
                                checked_at = state.now();
                                !session_alive(&state, &token_hash).await
                            } =>
                    {
                        let _ = sink.send(send(ended)).await;
                        return;
                    }
                    Some(Ok(Message::Text(text))) => match parse_client(&text) {
                        Ok(ClientMessage::Call { kind, value }) => calls.handle(&state, &user, &kind, &value).await,
                        Ok(ClientMessage::Ping { id }) => Some(ServerMessage::Pong { id }.to_value()),
                        Err(refusal) => Some(refusal.to_value()),
                    },
                    Some(Ok(Message::Binary(_))) => Some(ServerMessage::error(ErrorCode::BadMessage, "send JSON text messages, not binary").to_value()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                };
                if let Some(reply) = reply
                    && sink.send(send(reply)).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Reads one client message the way the socket loop does, up to where a session would be needed:
/// the answer for a plain message, or the relay message a `call.*` one becomes (or why it cannot).
/// For the fuzz targets (`fuzz/`): whatever the bytes, this returns and never panics.
#[doc(hidden)]
pub fn read_client_message(text: &str) -> Option<serde_json::Value> {
    match parse_client(text) {
        Ok(ClientMessage::Call { kind, value }) => match crate::calls::from_socket(&kind, &value) {
            Ok(message) => serde_json::to_value(message).ok(),
            Err(e) => Some(ServerMessage::error(ErrorCode::BadMessage, e).to_value()),
        },
        Ok(ClientMessage::Ping { id }) => Some(ServerMessage::Pong { id }.to_value()),
        Err(refusal) => Some(refusal.to_value()),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fuzz_entry_reads_messages_as_the_socket_does() {
        assert_eq!(read_client_message("{").unwrap()["code"], "bad_message");
        assert_eq!(
            read_client_message(r#"{"type":"fly"}"#).unwrap()["code"],
            "unknown_type"
        );
        assert_eq!(
            read_client_message(r#"{"type":"ping","id":7}"#).unwrap()["id"],
            7
        );
        let offer = read_client_message(r#"{"v":1,"type":"call.offer","case_id":3,"sdp":"v=0"}"#);
        assert_eq!(offer.unwrap()["type"], "offer");
    }

    #[test]
    fn a_foreign_origin_is_refused_and_the_own_origin_allowed() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8443".parse().unwrap());
        assert!(origin_allowed(&h, &[]));
        h.insert(header::ORIGIN, "https://127.0.0.1:8443".parse().unwrap());
        assert!(origin_allowed(&h, &[]));
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!origin_allowed(&h, &[]));
        assert!(origin_allowed(&h, &["https://evil.example".to_string()]));
    }
}
