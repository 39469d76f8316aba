//! A case's call over the server's `/ws`: the bridge between a socket's `call.*` messages and the
//! relay-message channels a [`TestPeer`] reads and writes, and [`CallPeer`], a test peer joined
//! that way. Shared by the integration tests and the load generator.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use media_relay::test_peer::light::LightPeer;
use media_relay::test_peer::{TestPeer, TestPeerConfig};
use media_relay::{ClientMessage, ServerMessage};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::LoadError;
use crate::server::{Server, Socket, Token};

/// How long to wait for the server's next `call.*` message before giving up.
const SILENCE: Duration = Duration::from_secs(10);

/// Every `call.*` message a peer's sockets carried, in order.
pub type Seen = Arc<Mutex<Vec<Value>>>;

/// Sends one JSON message on a socket.
pub async fn send_json(socket: &mut Socket, value: &Value) -> Result<(), LoadError> {
    Ok(socket.send(Message::Text(value.to_string().into())).await?)
}

/// The next `call.*` message on a socket (other messages skipped).
pub async fn next_call_message(socket: &mut Socket) -> Result<Value, LoadError> {
    loop {
        let message = tokio::time::timeout(SILENCE, socket.next())
            .await
            .map_err(|_| LoadError::Timeout("no call message from the server".into()))?
            .ok_or_else(|| LoadError::Protocol("the server closed /ws".into()))??;
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if value["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("call."))
        {
            return Ok(value);
        }
    }
}

/// A relay message from the server's `call.*` form: `None` for messages that are the server's
/// own (`call.config`, `call.error`) or that do not parse.
pub fn relay_message_from_call(mut value: Value) -> Option<ServerMessage> {
    let kind = value["type"].as_str()?.strip_prefix("call.")?.to_string();
    if kind == "error" || kind == "config" {
        return None;
    }
    let object = value.as_object_mut()?;
    object.remove("v");
    object.remove("case_id");
    object.insert("type".into(), json!(kind));
    serde_json::from_value(value).ok()
}

/// The server's `call.*` form of a relay message.
pub fn call_message_from_relay(message: &ClientMessage, case: i64) -> Option<Value> {
    let mut value = serde_json::to_value(message).ok()?;
    let kind = value["type"].as_str()?.to_string();
    value["type"] = json!(format!("call.{kind}"));
    value["case_id"] = json!(case);
    value["v"] = json!(1);
    Some(value)
}

/// The two channel halves a [`TestPeer`] signals over, and the tasks that bridge them to `/ws`.
pub struct CallLink {
    /// Relay messages from the peer.
    pub to_relay: mpsc::Sender<ClientMessage>,
    /// Relay messages for the peer.
    pub from_relay: mpsc::Receiver<ServerMessage>,
    /// The bridge tasks (reader, writer); abort them to drop the socket.
    pub tasks: Vec<JoinHandle<()>>,
}

impl CallLink {
    /// Opens `/ws`, sends `call.join` for the case (`resume`: keep the place of a peer connection
    /// that is still up), waits for `call.config` and starts bridging.
    pub async fn open(
        server: &Server,
        token: &Token,
        case: i64,
        resume: bool,
        seen: Seen,
    ) -> Result<CallLink, LoadError> {
        Self::join_on(server.websocket(token).await?, case, resume, seen).await
    }

    /// The same on a socket that is already open: the first thing sent is `call.join`.
    pub async fn join_on(
        mut ws: Socket,
        case: i64,
        resume: bool,
        seen: Seen,
    ) -> Result<CallLink, LoadError> {
        send_json(
            &mut ws,
            &json!({ "v": 1, "type": "call.join", "case_id": case, "resume": resume }),
        )
        .await?;
        let config = next_call_message(&mut ws).await?;
        if config["type"] != "call.config" {
            return Err(LoadError::Protocol(format!("call.join refused: {config}")));
        }
        lock(&seen).push(config);
        let (mut sink, mut stream) = ws.split();
        let (to_relay, mut client_messages) = mpsc::channel::<ClientMessage>(64);
        let (server_messages, from_relay) = mpsc::channel::<ServerMessage>(256);
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if !value["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("call."))
                {
                    continue;
                }
                lock(&seen).push(value.clone());
                let Some(relay_message) = relay_message_from_call(value) else {
                    continue;
                };
                if server_messages.send(relay_message).await.is_err() {
                    break;
                }
            }
        });
        let writer = tokio::spawn(async move {
            while let Some(message) = client_messages.recv().await {
                let Some(value) = call_message_from_relay(&message, case) else {
                    continue;
                };
                if sink
                    .send(Message::Text(value.to_string().into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(CallLink {
            to_relay,
            from_relay,
            tasks: vec![reader, writer],
        })
    }
}

fn lock(seen: &Seen) -> std::sync::MutexGuard<'_, Vec<Value>> {
    // A list of messages: readable even if a holder panicked.
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A test peer whose signaling runs over `/ws`; every `call.*` message seen is kept.
pub struct CallPeer {
    /// The peer (reports, waits, renegotiation).
    pub peer: TestPeer,
    seen: Seen,
    tasks: Vec<JoinHandle<()>>,
}

impl CallPeer {
    /// Joins the case's call on a fresh socket and starts a peer with `config`.
    pub async fn join(
        server: &Server,
        token: &Token,
        case: i64,
        config: TestPeerConfig,
    ) -> Result<CallPeer, LoadError> {
        Self::join_on(server.websocket(token).await?, case, config).await
    }

    /// Joins the case's call on a socket that is already open (its `call.join` is the first
    /// message sent), so that a caller can time the join without the socket's own set-up.
    pub async fn join_on(
        socket: Socket,
        case: i64,
        config: TestPeerConfig,
    ) -> Result<CallPeer, LoadError> {
        let seen = Seen::default();
        let link = CallLink::join_on(socket, case, false, seen.clone()).await?;
        let peer = TestPeer::start(config, link.to_relay, link.from_relay).await?;
        Ok(CallPeer {
            peer,
            seen,
            tasks: link.tasks,
        })
    }

    /// Drops the socket (as a lost network would) and signals again over a new one, with an ICE
    /// restart.
    pub async fn reconnect(
        &mut self,
        server: &Server,
        token: &Token,
        case: i64,
    ) -> Result<(), LoadError> {
        self.peer.detach_signaling();
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let link = CallLink::open(server, token, case, true, self.seen.clone()).await?;
        self.tasks = link.tasks;
        self.peer.attach_signaling(link.to_relay, link.from_relay);
        self.peer.restart_ice();
        Ok(())
    }

    /// The `call.*` messages of one type seen so far.
    pub fn saw(&self, kind: &str) -> Vec<Value> {
        lock(&self.seen)
            .iter()
            .filter(|v| v["type"] == kind)
            .cloned()
            .collect()
    }
}

/// A light receive-only peer whose signaling runs over `/ws` (see `media_relay::test_peer::light`).
pub struct LightCallPeer {
    /// The peer.
    pub peer: LightPeer,
    tasks: Vec<JoinHandle<()>>,
}

impl LightCallPeer {
    /// Joins the case's call on a fresh socket with a light peer bound to `udp_addr`.
    pub async fn join(
        server: &Server,
        token: &Token,
        case: i64,
        udp_addr: std::net::SocketAddr,
    ) -> Result<LightCallPeer, LoadError> {
        let link = CallLink::open(server, token, case, false, Seen::default()).await?;
        let peer = LightPeer::start(udp_addr, true, None, link.to_relay, link.from_relay).await?;
        Ok(LightCallPeer {
            peer,
            tasks: link.tasks,
        })
    }
}

impl Drop for LightCallPeer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for CallPeer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_messages_cross_the_call_prefix_both_ways() {
        let wire = json!({ "v": 1, "type": "call.participant_joined", "case_id": 7, "participant_id": "user-3" });
        assert!(matches!(
            relay_message_from_call(wire),
            Some(ServerMessage::ParticipantJoined { .. })
        ));
        assert_eq!(
            relay_message_from_call(json!({ "v": 1, "type": "call.config", "case_id": 7 })),
            None
        );
        assert_eq!(
            relay_message_from_call(json!({ "type": "call.answer" })),
            None
        );
        let out = call_message_from_relay(&ClientMessage::Leave, 7).unwrap();
        assert_eq!(out, json!({ "v": 1, "type": "call.leave", "case_id": 7 }));
    }
}
