//! The resident's rating (好差评) and the follow-up (整改反馈) a bad rating opens.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::audit;
use crate::config::rfc3339;
use crate::error::{Error, Result};
use crate::workflow::{Actor, CaseFacts};

/// A score at or below this opens a follow-up.
pub const BAD_SCORE: u8 = 2;

/// The rating as given by the resident.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rating {
    /// 1 (very dissatisfied) to 5 (very satisfied).
    pub score: u8,
    /// The resident's words.
    #[serde(default)]
    pub comment: String,
}

/// A follow-up of a bad rating.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FollowUp {
    /// Id.
    pub id: i64,
    /// The rated case.
    pub case_id: i64,
    /// Case number.
    pub case_number: String,
    /// The score that opened it.
    pub score: u8,
    /// The resident's comment.
    pub comment: String,
    /// Opened, RFC 3339.
    pub opened_at: String,
    /// Deadline, RFC 3339.
    pub due_at: String,
    /// Whether it is past its deadline and still open.
    pub overdue: bool,
    /// Closed, RFC 3339.
    pub closed_at: Option<String>,
    /// Who closed it.
    pub closed_by: Option<i64>,
    /// The recorded outcome.
    pub outcome: Option<String>,
}

/// Records a case's rating (once), and opens a follow-up when the score is bad, in the caller's
/// transaction (the rating commits with its place in the case's archive chain). Returns the
/// follow-up's id if one was opened.
pub fn rate_in(
    tx: &Connection,
    case_id: i64,
    facts: &CaseFacts,
    actor: &Actor,
    rating: &Rating,
    followup_ms: i64,
    now: i64,
) -> Result<Option<i64>> {
    if !crate::workflow::is_case_agent(actor, facts) {
        return Err(Error::Forbidden(
            "only the agent who opened the case records the resident's rating".into(),
        ));
    }
    if !(1..=5).contains(&rating.score) {
        return Err(Error::bad("invalid_field", "score: give 1 to 5"));
    }
    if rating.comment.chars().count() > 1000 {
        return Err(Error::bad(
            "invalid_field",
            "comment: at most 1000 characters",
        ));
    }
    if !facts.state.accepts_rating() {
        return Err(Error::conflict(
            "invalid_transition",
            format!(
                "cannot rate: the case is {}; a rating is recorded once the case is issued or rejected",
                facts.state.as_str()
            ),
        ));
    }
    let already: Option<i64> = tx
        .query_row(
            "SELECT case_id FROM ratings WHERE case_id = ?1",
            [case_id],
            |r| r.get(0),
        )
        .optional()?;
    if already.is_some() {
        return Err(Error::conflict(
            "already_rated",
            "this case has already been rated",
        ));
    }
    tx.execute(
        "INSERT INTO ratings (case_id, score, comment, recorded_by, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![case_id, rating.score, rating.comment, actor.id, now],
    )?;
    audit::append(
        tx,
        now,
        Some(actor),
        Some(case_id),
        "case.rated",
        &serde_json::json!({ "score": rating.score, "comment": rating.comment }),
    )?;
    let followup = if rating.score <= BAD_SCORE {
        tx.execute(
            "INSERT INTO followups (case_id, opened_at, due_at) VALUES (?1, ?2, ?3)",
            params![case_id, now, now + followup_ms],
        )?;
        let id = tx.last_insert_rowid();
        audit::append(
            tx,
            now,
            None,
            Some(case_id),
            "followup.opened",
            &serde_json::json!({ "followup_id": id, "due_at": rfc3339(now + followup_ms) }),
        )?;
        Some(id)
    } else {
        None
    };
    Ok(followup)
}

/// Follow-ups, open ones first.
pub fn followups(conn: &Connection, only_open: bool, now: i64) -> Result<Vec<FollowUp>> {
    let mut stmt = conn.prepare(
        "SELECT f.id, f.case_id, c.number, r.score, r.comment, f.opened_at, f.due_at, f.closed_at, f.closed_by, f.outcome
         FROM followups f JOIN cases c ON c.id = f.case_id JOIN ratings r ON r.case_id = f.case_id
         WHERE (?1 = 0 OR f.closed_at IS NULL)
         ORDER BY f.closed_at IS NOT NULL, f.due_at",
    )?;
    let rows = stmt
        .query_map([only_open], |r| {
            let due: i64 = r.get(6)?;
            let closed: Option<i64> = r.get(7)?;
            Ok(FollowUp {
                id: r.get(0)?,
                case_id: r.get(1)?,
                case_number: r.get(2)?,
                score: r.get(3)?,
                comment: r.get(4)?,
                opened_at: rfc3339(r.get(5)?),
                due_at: rfc3339(due),
                overdue: closed.is_none() && due < now,
                closed_at: closed.map(rfc3339),
                closed_by: r.get(8)?,
                outcome: r.get(9)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Closes a follow-up with its recorded outcome (整改反馈), in the caller's transaction; returns
/// the follow-up's case.
pub fn close_followup_in(
    tx: &Connection,
    id: i64,
    actor: &Actor,
    outcome: &str,
    now: i64,
) -> Result<i64> {
    if outcome.trim().is_empty() {
        return Err(Error::bad(
            "invalid_field",
            "outcome: record what was done (整改反馈)",
        ));
    }
    let row: Option<(i64, Option<i64>)> = tx
        .query_row(
            "SELECT case_id, closed_at FROM followups WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (case_id, closed) = row.ok_or(Error::NotFound("follow-up"))?;
    if closed.is_some() {
        return Err(Error::conflict(
            "already_closed",
            "this follow-up is already closed",
        ));
    }
    tx.execute(
        "UPDATE followups SET closed_at = ?2, closed_by = ?3, outcome = ?4 WHERE id = ?1",
        params![id, now, actor.id, outcome.trim()],
    )?;
    audit::append(
        tx,
        now,
        Some(actor),
        Some(case_id),
        "followup.closed",
        &serde_json::json!({ "followup_id": id, "outcome": outcome.trim() }),
    )?;
    Ok(case_id)
}
