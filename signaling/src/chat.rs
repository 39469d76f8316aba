//! In-call chat (文字交流): short text messages among the people of a case's call — its agent,
//! the approver holding it and invited experts — useful when the audio fails or a number must be
//! spelled out. Each message is a case event (`call.chat` in the audit trail, with its text), so it
//! is in the audit export and the archive's `data/events.jsonl`; it goes live to those people's
//! sockets only (not to other agents of the point, who see the case masked), and a joiner gets the
//! last [`HISTORY`] in its `call.config`. The text never reaches the log.

use std::collections::VecDeque;

use rusqlite::{Connection, params};
use serde::Serialize;
use serde_json::json;

use crate::accounts::User;
use crate::audit;
use crate::calls::{CallErrorCode, call_error};
use crate::cases;
use crate::error::{Error, Result};
use crate::protocol::ServerMessage;
use crate::state::{AppState, Audience};
use crate::workflow::{self, Role};

/// The longest message, in characters.
pub const MAX_CHARS: usize = 500;

/// Messages one user may send within [`WINDOW_MS`] (over all its sockets).
pub const BURST: usize = 5;

/// The window of [`BURST`], ms.
pub const WINDOW_MS: i64 = 10_000;

/// Messages a joiner is given from before it joined.
pub const HISTORY: usize = 50;

/// One chat message as the call's people see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChatLine {
    /// Its id (the audit event's).
    pub id: i64,
    /// Who wrote it.
    pub from: i64,
    /// The writer's name as shown.
    pub from_name: String,
    /// The writer's role.
    pub role: Role,
    /// The text.
    pub text: String,
    /// When, ms since the epoch.
    pub at: i64,
}

/// The text to keep: trimmed, 1 to [`MAX_CHARS`] characters, no control characters but line
/// breaks, no text-direction controls; or what is wrong with it.
pub fn check_text(text: &str) -> std::result::Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("call.chat needs some text".into());
    }
    let chars = text.chars().count();
    if chars > MAX_CHARS {
        return Err(format!(
            "call.chat text is {chars} characters; at most {MAX_CHARS}"
        ));
    }
    if let Some(c) = text.chars().find(|c| {
        (c.is_control() && *c != '\n')
            || ('\u{202a}'..='\u{202e}').contains(c)
            || ('\u{2066}'..='\u{2069}').contains(c)
    }) {
        return Err(format!(
            "call.chat text holds the control character U+{:04X}",
            u32::from(c)
        ));
    }
    Ok(text.to_string())
}

/// One user's recent messages, to hold it to a burst per window.
#[derive(Debug, Default)]
pub struct Pace {
    sent: VecDeque<i64>,
}

impl Pace {
    /// Forgets what left the window (`window_ms`) by `now`; whether anything is still in it.
    fn active(&mut self, now: i64, window_ms: i64) -> bool {
        while self.sent.front().is_some_and(|t| now - t >= window_ms) {
            self.sent.pop_front();
        }
        !self.sent.is_empty()
    }

    /// Whether a message may go at `now` with at most `burst` per `window_ms` (and counts it if
    /// so).
    pub fn admit(&mut self, now: i64, burst: usize, window_ms: i64) -> bool {
        self.active(now, window_ms);
        if self.sent.len() >= burst {
            return false;
        }
        self.sent.push_back(now);
        true
    }
}

/// Every user's pace, however many sockets (tabs) it writes from. Holds only the users who wrote
/// within the last window.
#[derive(Debug)]
pub struct Paces {
    burst: usize,
    window_ms: i64,
    by_user: std::sync::Mutex<std::collections::HashMap<i64, Pace>>,
}

impl Default for Paces {
    /// The chat's: [`BURST`] per [`WINDOW_MS`].
    fn default() -> Self {
        Self::new(BURST, WINDOW_MS)
    }
}

impl Paces {
    /// At most `burst` messages per user per `window_ms`.
    pub fn new(burst: usize, window_ms: i64) -> Self {
        Self {
            burst,
            window_ms,
            by_user: Default::default(),
        }
    }

    /// Whether `user` may send a message at `now` (and counts it if so).
    pub fn admit(&self, user: i64, now: i64) -> bool {
        let mut by_user = self
            .by_user
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = self.window_ms;
        by_user.retain(|_, pace| pace.active(now, window));
        by_user
            .entry(user)
            .or_default()
            .admit(now, self.burst, window)
    }
}

/// Sends `text` from `user` to the call of case `case_id`: checked, kept as a case event, then
/// delivered to the case's call people. Returns the `call.error` for the socket, if refused.
pub async fn send(
    state: &AppState,
    user: &User,
    case_id: i64,
    text: &str,
) -> Option<serde_json::Value> {
    let text = match check_text(text) {
        Ok(text) => text,
        Err(message) => {
            return Some(call_error(
                Some(case_id),
                CallErrorCode::BadMessage,
                &message,
            ));
        }
    };
    let actor = user.actor();
    let now = state.now();
    let (from, from_name, role) = (user.id, user.display_name.clone(), user.role);
    let stored = state
        .db
        .call(move |c| {
            let facts = cases::facts(c, case_id)?
                .filter(|f| workflow::may_join_call(&actor, f, now))
                .ok_or(Error::NotFound("case"))?;
            audit::append(
                c,
                now,
                Some(&actor),
                Some(case_id),
                "call.chat",
                &json!({ "text": text }),
            )?;
            let line = ChatLine {
                id: c.last_insert_rowid(),
                from,
                from_name,
                role,
                text,
                at: now,
            };
            Ok((facts, line))
        })
        .await;
    let Ok((facts, line)) = stored else {
        return Some(call_error(
            Some(case_id),
            CallErrorCode::CallRefused,
            "there is no call of this case that you may join",
        ));
    };
    tracing::info!(case_id, chat_id = line.id, "call chat message");
    state.notify(
        Audience::Users(facts.call_people()),
        ServerMessage::CallChat { case_id, line },
    );
    None
}

/// The last [`HISTORY`] messages of a case's call, oldest first.
pub fn history(conn: &Connection, case_id: i64) -> Result<Vec<ChatLine>> {
    let mut lines = conn
        .prepare(
            "SELECT e.id, e.actor_id, u.display_name, u.role, e.details, e.at
             FROM audit_events e JOIN users u ON u.id = e.actor_id
             WHERE e.case_id = ?1 AND e.kind = 'call.chat'
             ORDER BY e.id DESC LIMIT ?2",
        )?
        .query_map(params![case_id, HISTORY as i64], |r| {
            let details: String = r.get(4)?;
            let role: String = r.get(3)?;
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, role, details, r.get(5)?))
        })?
        .collect::<rusqlite::Result<Vec<(i64, i64, String, String, String, i64)>>>()?
        .into_iter()
        .filter_map(|(id, from, from_name, role, details, at)| {
            let text = serde_json::from_str::<serde_json::Value>(&details)
                .ok()?
                .get("text")?
                .as_str()?
                .to_string();
            Some(ChatLine {
                id,
                from,
                from_name,
                role: Role::parse(&role)?,
                text,
                at,
            })
        })
        .collect::<Vec<_>>();
    lines.reverse();
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(check_text("  请出示户口簿  ").unwrap(), "请出示户口簿");
        assert!(check_text("   ").is_err());
        assert!(check_text(&"字".repeat(MAX_CHARS)).is_ok());
        let long = check_text(&"字".repeat(MAX_CHARS + 1)).unwrap_err();
        assert!(long.contains("501"), "{long}");
        assert!(check_text("第一行\n第二行").is_ok());
        assert!(check_text("a\u{1b}[2Jb").unwrap_err().contains("U+001B"));
        assert!(check_text("a\u{202e}b").unwrap_err().contains("U+202E"));
    }

    #[test]
    fn a_user_is_held_to_the_burst_over_all_its_sockets_and_others_are_not_held_by_it() {
        let paces = Paces::default();
        for i in 0..BURST as i64 {
            assert!(paces.admit(7, i));
        }
        assert!(
            !paces.admit(7, 10),
            "a seventh tab of the same user is no way around it"
        );
        assert!(paces.admit(8, 10), "another user writes on");
        assert!(paces.admit(7, WINDOW_MS));
    }

    #[test]
    fn a_pace_admits_at_most_a_burst_per_window_then_again_once_it_has_passed() {
        let mut pace = Pace::default();
        for i in 0..BURST as i64 {
            assert!(pace.admit(1_000 + i, BURST, WINDOW_MS));
        }
        assert!(!pace.admit(1_010, BURST, WINDOW_MS));
        assert!(!pace.admit(1_000 + WINDOW_MS - 1, BURST, WINDOW_MS));
        assert!(pace.admit(1_000 + WINDOW_MS, BURST, WINDOW_MS));
    }
}
