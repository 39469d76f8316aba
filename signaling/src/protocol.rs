//! The `/ws` protocol's one home: every message the server sends of its own, every message a
//! client may send, and the socket's error codes (docs/signaling.md lists them). Call signaling
//! between a participant and the relay is typed in `media_relay::{ClientMessage, ServerMessage}`
//! and passes through [`crate::calls`] with a `call.` prefix; its refusals are
//! [`crate::calls::CallErrorCode`] and `media_relay::ErrorCode`.
//!
//! Every message is a JSON object with `"v": 1` and a `"type"`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::calls::CallErrorCode;
use crate::cases::QueueItem;
use crate::materials::Material;
use crate::workflow::{CaseState, Role};

/// The protocol version every message carries as `"v"`.
pub const VERSION: u32 = 1;

/// Who the socket belongs to, as `hello` tells it.
#[derive(Debug, Clone, Serialize)]
pub struct HelloUser {
    /// Account id.
    pub id: i64,
    /// Role.
    pub role: Role,
    /// Name shown.
    pub display_name: String,
}

/// A message the server sends of its own (not relayed from the media relay).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum ServerMessage {
    /// First message on a socket: who it belongs to.
    #[serde(rename = "hello")]
    Hello {
        /// The account.
        user: HelloUser,
    },
    /// The whole queue (on connect, and after missed notices), for approvers and supervisors.
    #[serde(rename = "queue.snapshot")]
    QueueSnapshot {
        /// The waiting cases.
        items: Vec<QueueItem>,
    },
    /// A case entered a queue.
    #[serde(rename = "queue.added")]
    QueueAdded {
        /// The case as the queue shows it.
        item: QueueItem,
    },
    /// A waiting case was taken by an approver (or transferred away).
    #[serde(rename = "queue.taken")]
    QueueTaken {
        /// The case.
        case_id: i64,
        /// Who took it.
        by: i64,
    },
    /// A waiting case was cancelled.
    #[serde(rename = "queue.cancelled")]
    QueueCancelled {
        /// The case.
        case_id: i64,
        /// Who cancelled it.
        by: i64,
    },
    /// A case changed: reload it.
    #[serde(rename = "case.updated")]
    CaseUpdated {
        /// The case.
        case_id: i64,
        /// Its state now.
        state: CaseState,
        /// The audit event that changed it, e.g. `case.accepted`.
        event: String,
    },
    /// A material was stored for a case.
    #[serde(rename = "material.added")]
    MaterialAdded {
        /// The case.
        case_id: i64,
        /// The material.
        material: Material,
    },
    /// The answer to a `ping`.
    #[serde(rename = "pong")]
    Pong {
        /// The ping's id, echoed.
        id: Option<Value>,
    },
    /// A message could not be handled, or the session ended; the socket stays open unless the
    /// code is `session_ended`.
    #[serde(rename = "error")]
    Error {
        /// Why.
        code: ErrorCode,
        /// In words, naming what is wrong.
        message: String,
    },
    /// After `call.join`: the participant's id, ICE servers and the recording state.
    #[serde(rename = "call.config")]
    CallConfig {
        /// The case.
        case_id: i64,
        /// The caller's participant id in the room.
        participant_id: media_relay::ParticipantId,
        /// STUN/TURN servers, with time-limited TURN credentials.
        ice_servers: Vec<media_relay::IceServer>,
        /// Whether the call is being recorded now.
        recording: bool,
        /// Whether the caller has consented to recording.
        consented: bool,
        /// The call's last chat messages, oldest first.
        chat: Vec<crate::chat::ChatLine>,
        /// Show the viewer's name and the time over the others' video (`watermark_video`).
        watermark: bool,
    },
    /// A picture annotated in a case's call (标注): started, drawn on, closed or saved (to the
    /// call's people).
    #[serde(rename = "call.annotation")]
    CallAnnotation {
        /// The case.
        case_id: i64,
        /// The annotation as it stands.
        annotation: crate::annotations::Annotation,
    },
    /// Where the approver's pointer is on an annotated picture (to the call's other people).
    #[serde(rename = "call.pointer")]
    CallPointer {
        /// The case.
        case_id: i64,
        /// The picture.
        annotation_id: i64,
        /// Whose pointer.
        from: i64,
        /// From the left, 0–1.
        x: f64,
        /// From the top, 0–1.
        y: f64,
    },
    /// A chat message in a case's call (to its people only).
    #[serde(rename = "call.chat")]
    CallChat {
        /// The case.
        case_id: i64,
        /// The message.
        #[serde(flatten)]
        line: crate::chat::ChatLine,
    },
    /// Recording started or stopped.
    #[serde(rename = "call.recording")]
    CallRecording {
        /// The case.
        case_id: i64,
        /// Whether it records now.
        recording: bool,
    },
    /// A `call.*` message the signaling refused.
    #[serde(rename = "call.error")]
    CallError {
        /// The case, when the message named one.
        case_id: Option<i64>,
        /// Why.
        code: CallErrorCode,
        /// In words.
        message: String,
    },
}

impl ServerMessage {
    /// The message as sent: the object with `"v"` added.
    pub fn to_value(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(object) = value.as_object_mut() {
            object.insert("v".into(), VERSION.into());
        }
        value
    }

    /// An `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }
}

/// The codes of `error` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, binary, or without a `type`.
    BadMessage,
    /// A `type` the server does not know.
    UnknownType,
    /// The session behind the socket ended (logout, expiry, disabled account); the socket closes.
    SessionEnded,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 3] = [
        ErrorCode::BadMessage,
        ErrorCode::UnknownType,
        ErrorCode::SessionEnded,
    ];
}

/// A message a client sends, as read from one text frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `{"type":"ping","id":…}`: answered with `pong`.
    Ping {
        /// Echoed in the `pong`.
        id: Option<Value>,
    },
    /// `call.<kind>` (join, offer, answer, candidate, leave, consent, video_size, …), handled by
    /// [`crate::calls`]; `value` is the whole message.
    Call {
        /// The kind, without the `call.` prefix.
        kind: String,
        /// The whole message.
        value: Value,
    },
}

/// Reads one client text frame: the message, or the `error` to answer (the socket stays open).
/// The socket loop and the fuzz target both read messages with this.
pub fn parse_client(text: &str) -> Result<ClientMessage, Box<ServerMessage>> {
    let refuse = |code, message: String| Box::new(ServerMessage::error(code, message));
    let value: Value = serde_json::from_str(text)
        .map_err(|e| refuse(ErrorCode::BadMessage, format!("not JSON: {e}")))?;
    let Some(kind) = value.get("type").and_then(Value::as_str) else {
        return Err(refuse(
            ErrorCode::BadMessage,
            "a message needs a \"type\"".into(),
        ));
    };
    if let Some(call) = kind.strip_prefix("call.") {
        return Ok(ClientMessage::Call {
            kind: call.to_string(),
            value: value.clone(),
        });
    }
    match kind {
        "ping" => Ok(ClientMessage::Ping {
            id: value.get("id").cloned(),
        }),
        other => Err(refuse(
            ErrorCode::UnknownType,
            format!("unknown message type {other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_and_unknown_client_messages_get_an_error_with_a_code() {
        let code = |text: &str| match parse_client(text).map_err(|e| *e) {
            Err(ServerMessage::Error { code, .. }) => Some(code),
            _ => None,
        };
        assert_eq!(code("{"), Some(ErrorCode::BadMessage));
        assert_eq!(code("{}"), Some(ErrorCode::BadMessage));
        assert_eq!(code(r#"{"type":7}"#), Some(ErrorCode::BadMessage));
        assert_eq!(code(r#"{"type":"fly"}"#), Some(ErrorCode::UnknownType));
        assert!(matches!(
            parse_client(r#"{"type":"ping","id":7}"#),
            Ok(ClientMessage::Ping { id: Some(id) }) if id == 7
        ));
        assert!(matches!(
            parse_client(r#"{"v":1,"type":"call.offer","case_id":3,"sdp":"v=0"}"#),
            Ok(ClientMessage::Call { kind, .. }) if kind == "offer"
        ));
    }

    #[test]
    fn server_messages_carry_the_version_and_their_type() {
        let pong = ServerMessage::Pong { id: Some(3.into()) }.to_value();
        assert_eq!(pong, serde_json::json!({ "v": 1, "type": "pong", "id": 3 }));
        let ended = ServerMessage::error(ErrorCode::SessionEnded, "log in again").to_value();
        assert_eq!(ended["type"], "error");
        assert_eq!(ended["code"], "session_ended");
        let refused = ServerMessage::CallError {
            case_id: Some(4),
            code: CallErrorCode::CallRefused,
            message: "no".into(),
        }
        .to_value();
        assert_eq!(refused["code"], "call_refused");
        assert_eq!(refused["type"], "call.error");
    }
}
