//! Calls over `/ws`: joining a case's room on the relay, and carrying the relay's messages in
//! both directions with a `call.` prefix and the `case_id`. Who may join is the workflow's rule
//! (`may_join_call`); everything else is the relay's.
//!
//! One `Calls` per WebSocket connection. Dropping it (the socket is gone) drops the relay
//! handles, which starts the relay's grace period: a `call.join` on a new socket within it
//! resumes the same place.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use media_relay::{ClientMessage, ParticipantId, RelayError, RoomId, ServerMessage};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::accounts::User;
use crate::cases;
use crate::state::AppState;
use crate::workflow;

/// The relay room of a case.
pub fn room_of(case_id: i64) -> RoomId {
    RoomId(format!("case-{case_id}"))
}

/// The relay participant of a user: an opaque id, never a name.
pub fn participant_of(user_id: i64) -> ParticipantId {
    ParticipantId(format!("user-{user_id}"))
}

/// A `call.error` message.
pub fn call_error(case_id: Option<i64>, code: CallErrorCode, message: &str) -> Value {
    crate::protocol::ServerMessage::CallError {
        case_id,
        code,
        message: message.to_string(),
    }
    .to_value()
}

impl serde::Serialize for CallErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Why the signaling refused a `call.*` message (the relay's own refusals carry
/// [`media_relay::ErrorCode`]s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallErrorCode {
    /// No call of this case that the caller may join.
    CallRefused,
    /// The call holds its maximum of participants.
    RoomFull,
    /// The message is malformed.
    BadMessage,
    /// The caller has not joined this call (or it ended).
    NotJoined,
    /// Everyone consented but recording could not start.
    RecordingUnavailable,
    /// Chat messages came faster than allowed: wait a moment.
    ChatTooFast,
    /// The server failed; the details are in its log.
    Internal,
}

impl CallErrorCode {
    const ALL: [CallErrorCode; 7] = [
        CallErrorCode::CallRefused,
        CallErrorCode::RoomFull,
        CallErrorCode::BadMessage,
        CallErrorCode::NotJoined,
        CallErrorCode::RecordingUnavailable,
        CallErrorCode::ChatTooFast,
        CallErrorCode::Internal,
    ];

    /// The code as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            CallErrorCode::CallRefused => "call_refused",
            CallErrorCode::RoomFull => "room_full",
            CallErrorCode::BadMessage => "bad_message",
            CallErrorCode::NotJoined => "not_joined",
            CallErrorCode::RecordingUnavailable => "recording_unavailable",
            CallErrorCode::ChatTooFast => "chat_too_fast",
            CallErrorCode::Internal => "internal",
        }
    }
}

/// Every code a `call.error` can carry: the signaling's and the relay's, each once.
pub fn call_error_codes() -> std::collections::BTreeSet<&'static str> {
    CallErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .chain(media_relay::ErrorCode::ALL.iter().map(|c| c.as_str()))
        .collect()
}

/// Puts a relay message on the socket's form: `call.<type>`, with the case id.
fn to_socket(case_id: i64, message: &ServerMessage) -> Option<Value> {
    let mut value = serde_json::to_value(message).ok()?;
    let object = value.as_object_mut()?;
    let kind = object.get("type")?.as_str()?.to_string();
    object.insert("type".into(), Value::String(format!("call.{kind}")));
    object.insert("case_id".into(), json!(case_id));
    object.insert("v".into(), crate::protocol::VERSION.into());
    Some(value)
}

/// Reads a client's `call.*` message (other than `call.join`) as a relay message.
pub(crate) fn from_socket(kind: &str, message: &Value) -> Result<ClientMessage, String> {
    let mut object = message.as_object().cloned().unwrap_or_default();
    object.remove("v");
    object.remove("case_id");
    object.insert("type".into(), Value::String(kind.to_string()));
    serde_json::from_value(Value::Object(object)).map_err(|e| format!("call.{kind}: {e}"))
}

/// This socket's place in one call: where its messages go, and a flag that stops the relay's
/// messages to that place reaching the socket once the socket left it or joined again (the
/// replaced place is told `removed: replaced`, which is for other tabs, not for this one).
struct Joined {
    sender: mpsc::Sender<ClientMessage>,
    done: Arc<AtomicBool>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
    }
}

/// The calls of one WebSocket connection.
pub struct Calls {
    joined: HashMap<i64, Joined>,
    out: mpsc::Sender<Value>,
}

impl Calls {
    /// Calls whose relay messages go to `out` (the socket's writer).
    pub fn new(out: mpsc::Sender<Value>) -> Calls {
        Calls {
            joined: HashMap::new(),
            out,
        }
    }

    /// Handles one `call.*` message; returns an error message for the socket, if any.
    pub async fn handle(
        &mut self,
        state: &AppState,
        user: &User,
        kind: &str,
        message: &Value,
    ) -> Option<Value> {
        let Some(case_id) = message.get("case_id").and_then(Value::as_i64) else {
            return Some(call_error(
                None,
                CallErrorCode::BadMessage,
                &format!("call.{kind} needs a numeric case_id"),
            ));
        };
        match kind {
            "join" => {
                let resume = message
                    .get("resume")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                self.join(state, user, case_id, resume).await
            }
            "consent" => {
                let Some(consent) = message.get("consent").and_then(Value::as_bool) else {
                    return Some(call_error(
                        Some(case_id),
                        CallErrorCode::BadMessage,
                        "call.consent needs consent: true or false",
                    ));
                };
                crate::recording::consent(state, user, case_id, consent).await
            }
            "chat" => {
                if !self.joined.contains_key(&case_id) {
                    return Some(call_error(
                        Some(case_id),
                        CallErrorCode::NotJoined,
                        "join the call of this case first (call.join)",
                    ));
                }
                let Some(text) = message.get("text").and_then(Value::as_str) else {
                    return Some(call_error(
                        Some(case_id),
                        CallErrorCode::BadMessage,
                        "call.chat needs a text",
                    ));
                };
                if !state.chat_pace.admit(user.id, state.now()) {
                    return Some(call_error(
                        Some(case_id),
                        CallErrorCode::ChatTooFast,
                        &format!(
                            "at most {} chat messages in {} s; wait a moment",
                            crate::chat::BURST,
                            crate::chat::WINDOW_MS / 1000
                        ),
                    ));
                }
                crate::chat::send(state, user, case_id, text).await
            }
            "annotate" | "pointer" | "annotation_close" => {
                if !self.joined.contains_key(&case_id) {
                    return Some(call_error(
                        Some(case_id),
                        CallErrorCode::NotJoined,
                        "join the call of this case first (call.join)",
                    ));
                }
                crate::api::annotations::on_socket(state, user, case_id, kind, message).await
            }
            _ => {
                let relay_message = match from_socket(kind, message) {
                    Ok(m) => m,
                    Err(e) => {
                        return Some(call_error(Some(case_id), CallErrorCode::BadMessage, &e));
                    }
                };
                let leaving = matches!(relay_message, ClientMessage::Leave);
                let Some(Joined { sender, .. }) = self.joined.get(&case_id) else {
                    return Some(call_error(
                        Some(case_id),
                        CallErrorCode::NotJoined,
                        "join the call of this case first (call.join)",
                    ));
                };
                if let ClientMessage::ScreenShare { track } = &relay_message
                    && let Err(refused) = audit_screen_share(state, user, case_id, track).await
                {
                    return Some(refused);
                }
                // Bounded: a client flooding messages waits here instead of growing a queue.
                let sent = sender.send(relay_message).await.is_ok();
                if leaving || !sent {
                    self.joined.remove(&case_id);
                }
                (!sent).then(|| {
                    call_error(
                        Some(case_id),
                        CallErrorCode::NotJoined,
                        "the call has ended; join again",
                    )
                })
            }
        }
    }

    async fn join(
        &mut self,
        state: &AppState,
        user: &User,
        case_id: i64,
        resume: bool,
    ) -> Option<Value> {
        let refused = || {
            call_error(
                Some(case_id),
                CallErrorCode::CallRefused,
                "there is no call of this case that you may join",
            )
        };
        let actor = user.actor();
        let now = state.now();
        let allowed = state
            .db
            .call(move |c| {
                Ok(cases::facts(c, case_id)?
                    .is_some_and(|f| workflow::may_join_call(&actor, &f, now)))
            })
            .await;
        if !matches!(allowed, Ok(true)) {
            return Some(refused());
        }
        // A second join on this socket replaces the first handle.
        self.joined.remove(&case_id);
        let room = room_of(case_id);
        let me = participant_of(user.id);
        let participant = if resume {
            // The client still has its peer connection (its socket dropped): take the place back.
            match state.relay.resume(&room, me.clone()).await {
                Ok(p) => Ok(p),
                Err(_) => state.relay.join(room, me.clone()).await,
            }
        } else {
            // A new connection (a reloaded page, another tab): a place still held for this
            // user (within the grace period) is replaced, so the relay does not answer with a
            // connection the new page cannot reach.
            state.relay.join_replacing(room, me.clone()).await
        };
        let participant = match participant {
            Ok(p) => p,
            Err(RelayError::RoomFull { max, .. }) => {
                return Some(call_error(
                    Some(case_id),
                    CallErrorCode::RoomFull,
                    &format!("the call already has {max} participants"),
                ));
            }
            Err(e) => {
                tracing::error!(case_id, error = %e, "relay join failed");
                return Some(call_error(
                    Some(case_id),
                    CallErrorCode::Internal,
                    "the call could not be joined; try again",
                ));
            }
        };
        let ice_servers = state
            .relay
            .ice_servers_for(&me, std::time::SystemTime::now());
        let (recording, consented) = crate::recording::status(state, case_id, user.id);
        let chat = state
            .db
            .call(move |c| crate::chat::history(c, case_id))
            .await
            .unwrap_or_default();
        let config = crate::protocol::ServerMessage::CallConfig {
            case_id,
            participant_id: me.clone(),
            ice_servers,
            recording,
            consented,
            chat,
            watermark: state.config.watermark_video,
        }
        .to_value();
        if self.out.send(config).await.is_err() {
            return None;
        }
        let (sender, mut events) = participant.into_parts();
        let done = Arc::new(AtomicBool::new(false));
        self.joined.insert(
            case_id,
            Joined {
                sender,
                done: done.clone(),
            },
        );
        let out = self.out.clone();
        let state = state.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if done.load(Ordering::Acquire) {
                    break;
                }
                if let ServerMessage::ConnectionQuality {
                    participant_id,
                    quality,
                } = &event
                    && *participant_id == me
                {
                    record_quality(&state, case_id, &me, quality).await;
                }
                let Some(value) = to_socket(case_id, &event) else {
                    continue;
                };
                if out.send(value).await.is_err() {
                    break; // the socket is gone; dropping `events` tells the relay
                }
            }
        });
        None
    }
}

/// Records that `user` starts (a track) or stops (none) sharing a screen in the call: a case
/// event (`call.screen_share`, in the audit export and the archive). Nothing is shared unless
/// it is recorded.
async fn audit_screen_share(
    state: &AppState,
    user: &User,
    case_id: i64,
    track: &Option<String>,
) -> Result<(), Value> {
    let actor = user.actor();
    let now = state.now();
    let sharing = track.is_some();
    let written = state
        .db
        .call(move |c| {
            crate::audit::append(
                c,
                now,
                Some(&actor),
                Some(case_id),
                "call.screen_share",
                &json!({ "sharing": sharing }),
            )
        })
        .await;
    written.map_err(|e| {
        tracing::error!(case_id, error = %e, "screen share not recorded");
        call_error(
            Some(case_id),
            CallErrorCode::Internal,
            "the screen share could not be recorded; try again",
        )
    })
}

/// Keeps one quality sample of a participant with the case (it goes into the archive).
async fn record_quality(
    state: &AppState,
    case_id: i64,
    participant: &ParticipantId,
    quality: &media_relay::quality::ConnectionQuality,
) {
    // A sample that measured nothing (the first of every connection) says nothing of the call.
    if !quality.measured() {
        return;
    }
    let Ok(text) = serde_json::to_string(quality) else {
        return;
    };
    let who = participant.0.clone();
    let now = state.now();
    let saved = state
        .db
        .call(move |c| {
            c.execute(
                "INSERT INTO call_quality (case_id, at, participant, quality) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![case_id, now, who, text],
            )?;
            Ok(())
        })
        .await;
    if let Err(e) = saved {
        tracing::warn!(case_id, error = %e, "call quality sample not kept");
    }
}

/// The call quality record of a case, oldest first, as it goes into the archive.
pub fn quality_record(
    conn: &rusqlite::Connection,
    case_id: i64,
) -> crate::error::Result<Vec<Value>> {
    let mut stmt = conn.prepare(
        "SELECT at, participant, quality FROM call_quality WHERE case_id = ?1 ORDER BY id",
    )?;
    let rows = stmt
        .query_map([case_id], |r| {
            let at: i64 = r.get(0)?;
            let participant: String = r.get(1)?;
            let quality: String = r.get(2)?;
            Ok((at, participant, quality))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .map(|(at, participant, quality)| {
            json!({ "at": crate::config::rfc3339(at), "participant": participant, "quality": serde_json::from_str::<Value>(&quality).unwrap_or(Value::Null) })
        })
        .collect())
}

/// Whether a case in this state may have a call: in the call, waiting for material, and after
/// the decision until the time limit ([`workflow::call_open`]). A case that leaves these states
/// (cancelled, transferred) has its room closed at once.
pub fn has_call(state: workflow::CaseState) -> bool {
    use workflow::CaseState::*;
    matches!(
        state,
        InCall | AwaitingMaterial | Approved | Rejected | Issued
    )
}

/// Closes the rooms of decided cases whose call time is over ([`workflow::CALL_AFTER_DECISION_MS`]
/// after the last step); returns the cases closed. The server runs it every few seconds; tests
/// call it after moving their clock.
pub async fn close_expired(state: &AppState) -> crate::error::Result<Vec<i64>> {
    let open: Vec<i64> = state
        .relay
        .open_rooms()
        .iter()
        .filter_map(|room| room.0.strip_prefix("case-")?.parse().ok())
        .collect();
    if open.is_empty() {
        return Ok(Vec::new());
    }
    let now = state.now();
    let expired = state
        .db
        .call(move |c| {
            let mut expired = Vec::new();
            for id in open {
                if let Some(facts) = cases::facts(c, id)?
                    && !workflow::call_open(&facts, now)
                {
                    expired.push(id);
                }
            }
            Ok(expired)
        })
        .await?;
    for &id in &expired {
        crate::recording::forget(state, id);
        state.relay.close_room(&room_of(id)).await;
        tracing::info!(
            case_id = id,
            "call closed: its time after the decision is over"
        );
    }
    Ok(expired)
}

#[cfg(test)]
mod tests {

    use std::collections::BTreeSet;

    /// The web client's `const NAME = ['a', 'b', ...];` in call.js, checked against `expected`,
    /// and the words for each (`'PREFIX.a':`) once in Chinese and once in English in i18n.js.
    fn assert_the_web_client_knows(name: &str, expected: &BTreeSet<String>, prefix: &str) {
        let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web-client/static/js");
        let call_js = std::fs::read_to_string(web.join("call.js")).unwrap();
        let list = call_js
            .split(&format!("const {name} = ["))
            .nth(1)
            .and_then(|rest| rest.split("];").next())
            .unwrap_or_else(|| panic!("{name} in call.js"));
        let known: BTreeSet<String> = list
            .split(',')
            .map(|c| c.trim().trim_matches('\'').to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(&known, expected, "call.js {name} against the server's");
        let i18n = std::fs::read_to_string(web.join("i18n.js")).unwrap();
        for item in expected {
            let key = format!("'{prefix}.{item}':");
            assert_eq!(i18n.matches(&key).count(), 2, "{key} in zh and en");
        }
    }

    /// The web client keeps its own list of call error codes (to say each in plain words); it must
    /// know every code the server sends, and have words for each in both languages.
    #[test]
    fn the_web_client_knows_every_call_error_code_and_says_each_in_chinese_and_english() {
        let codes = super::call_error_codes()
            .into_iter()
            .map(String::from)
            .collect();
        assert_the_web_client_knows("KNOWN_ERRORS", &codes, "call.err");
    }

    /// Likewise for the reasons a place in the call ends (`call.removed`).
    #[test]
    fn the_web_client_knows_every_reason_a_place_ends_and_says_each_in_chinese_and_english() {
        let reasons = media_relay::LeaveReason::ALL
            .iter()
            .map(|r| {
                serde_json::to_value(r)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_the_web_client_knows("KNOWN_REMOVALS", &reasons, "call.removed");
    }

    use super::*;

    #[test]
    fn relay_messages_get_the_call_prefix_and_client_messages_lose_it() {
        let joined = ServerMessage::Joined {
            participant_id: participant_of(7),
            others: vec![participant_of(3)],
            resumed: false,
        };
        let value = to_socket(42, &joined).unwrap();
        assert_eq!(value["type"], "call.joined");
        assert_eq!(value["case_id"], 42);
        assert_eq!(value["participant_id"], "user-7");
        let offer = json!({ "v": 1, "type": "call.offer", "case_id": 42, "sdp": "v=0" });
        assert!(
            matches!(from_socket("offer", &offer), Ok(ClientMessage::Offer { sdp }) if sdp == "v=0")
        );
        let err = from_socket("offer", &json!({ "case_id": 42 })).unwrap_err();
        assert!(err.contains("sdp"), "{err}");
        assert!(from_socket("teleport", &json!({})).is_err());
    }
}
