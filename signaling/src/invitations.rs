//! The applicant joins a case's call from home (群众远程接入, "随时随地办"): the case's agent or
//! the approver holding it issues an invitation — a link with a random token, bound to that case,
//! single-use, short-lived and revocable. Opening the link shows a notice; consenting to it spends
//! the invitation and makes a resident account (role `resident`, no password) with a browser
//! session, which reaches that case's call and uploads and nothing else (`api::resident_scope`).
//! Only the token's SHA-256 is stored. Every step is a case event.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::json;

use crate::accounts::{self, NewSession, SessionKind, User};
use crate::audit;
use crate::error::{Error, Result};
use crate::workflow::{self, Actor, Role, UserId};

/// The name every resident account shows in the call (never the applicant's own name: that is
/// personal data, and the people in the call have the case for it).
pub const RESIDENT_DISPLAY_NAME: &str = "申请人";

/// Where an invitation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvitationState {
    /// Issued; the link may be opened and accepted until it expires.
    Open,
    /// Accepted: the resident has its session (the link cannot be used again).
    Used,
    /// Not accepted in time.
    Expired,
    /// Withdrawn by the case's people (a used one also ends the resident's session).
    Revoked,
}

/// One invitation as the case's people see it (never its token).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Invitation {
    /// Id.
    pub id: i64,
    /// The case.
    pub case_id: i64,
    /// Who issued it.
    pub issued_by: UserId,
    /// When, epoch ms.
    pub issued_at: i64,
    /// Until when it may be accepted, epoch ms.
    pub expires_at: i64,
    /// When it was accepted, epoch ms.
    pub used_at: Option<i64>,
    /// When it was revoked, epoch ms.
    pub revoked_at: Option<i64>,
    /// The resident account it made, once accepted.
    pub resident_id: Option<UserId>,
    /// Where it stands at the time of the answer.
    pub state: InvitationState,
}

const COLUMNS: &str =
    "id, case_id, issued_by, issued_at, expires_at, used_at, revoked_at, resident_id";

fn from_row(now: i64) -> impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<Invitation> {
    move |r| {
        let mut invitation = Invitation {
            id: r.get(0)?,
            case_id: r.get(1)?,
            issued_by: r.get(2)?,
            issued_at: r.get(3)?,
            expires_at: r.get(4)?,
            used_at: r.get(5)?,
            revoked_at: r.get(6)?,
            resident_id: r.get(7)?,
            state: InvitationState::Open,
        };
        invitation.state = if invitation.revoked_at.is_some() {
            InvitationState::Revoked
        } else if invitation.used_at.is_some() {
            InvitationState::Used
        } else if now >= invitation.expires_at {
            InvitationState::Expired
        } else {
            InvitationState::Open
        };
        Ok(invitation)
    }
}

/// The refusal for a link that can no longer be used, in plain words.
fn gone(state: InvitationState) -> Error {
    let (code, message) = match state {
        InvitationState::Used => (
            "invitation_used",
            "this invitation has been used already; ask the staff for a new one",
        ),
        InvitationState::Expired => (
            "invitation_expired",
            "this invitation has expired; ask the staff for a new one",
        ),
        InvitationState::Revoked => (
            "invitation_revoked",
            "this invitation was withdrawn; ask the staff for a new one",
        ),
        InvitationState::Open => unreachable!("an open invitation is not gone"),
    };
    Error::Gone {
        code,
        message: message.into(),
    }
}

/// Issues an invitation into case `case_id` by `actor`, valid for `lifetime_ms`; returns it and
/// its token (shown once, in the link).
pub fn issue(
    conn: &mut Connection,
    case_id: i64,
    actor: &Actor,
    now: i64,
    lifetime_ms: i64,
) -> Result<(Invitation, String)> {
    let tx = conn.transaction()?;
    let facts = crate::cases::visible_facts(&tx, case_id, actor)?;
    if !workflow::may_invite_resident(actor, &facts) {
        return Err(Error::Forbidden(
            "only the case's agent or the approver holding it may invite the applicant, while the \
             case is waiting or in its call"
                .into(),
        ));
    }
    let token = accounts::random_token()?;
    tx.execute(
        "INSERT INTO invitations (case_id, token_hash, issued_by, issued_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            case_id,
            accounts::token_hash(&token),
            actor.id,
            now,
            now + lifetime_ms
        ],
    )?;
    let id = tx.last_insert_rowid();
    let details = json!({ "invitation_id": id, "expires_at": now + lifetime_ms });
    audit::append(
        &tx,
        now,
        Some(actor),
        Some(case_id),
        "invitation.issued",
        &details,
    )?;
    let invitation = by_id(&tx, id, now)?;
    tx.commit()?;
    Ok((invitation, token))
}

fn by_id(conn: &Connection, id: i64, now: i64) -> Result<Invitation> {
    Ok(conn.query_row(
        &format!("SELECT {COLUMNS} FROM invitations WHERE id = ?1"),
        [id],
        from_row(now),
    )?)
}

/// The invitation a link's token names, whatever its state; "not found" for a token never issued.
fn by_token(conn: &Connection, token: &str, now: i64) -> Result<Invitation> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM invitations WHERE token_hash = ?1"),
        [accounts::token_hash(token)],
        from_row(now),
    )
    .optional()?
    .ok_or(Error::NotFound("invitation"))
}

/// What the invitation page shows before consent: the item and the point, nothing personal.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InvitationNotice {
    /// The service item's name (事项).
    pub item_name: String,
    /// The service point that opened the case.
    pub point_name: String,
    /// Until when the link may be accepted, epoch ms.
    pub expires_at: i64,
}

/// The open invitation of `token` (else why not, as [`Error::Gone`] or "not found"); every
/// refused use is a case event.
pub fn open(conn: &Connection, token: &str, now: i64) -> Result<InvitationNotice> {
    let invitation = checked(conn, token, now)?;
    let (_, item_name, point_name) = case_names(conn, invitation.case_id)?;
    Ok(InvitationNotice {
        item_name,
        point_name,
        expires_at: invitation.expires_at,
    })
}

/// A case's number, item name and service point name.
fn case_names(conn: &Connection, case_id: i64) -> Result<(String, String, String)> {
    Ok(conn.query_row(
        "SELECT c.number, i.name, p.name FROM cases c JOIN service_items i ON i.id = c.item_id
         JOIN service_points p ON p.id = c.point_id WHERE c.id = ?1",
        [case_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?)
}

/// The invitation of `token` if it is open; a refused use is recorded (then refused).
fn checked(conn: &Connection, token: &str, now: i64) -> Result<Invitation> {
    let invitation = by_token(conn, token, now)?;
    if invitation.state != InvitationState::Open {
        let details = json!({ "invitation_id": invitation.id, "state": invitation.state });
        audit::append(
            conn,
            now,
            None,
            Some(invitation.case_id),
            "invitation.refused",
            &details,
        )?;
        return Err(gone(invitation.state));
    }
    Ok(invitation)
}

/// The resident consented to the notice: the invitation is spent, a resident account made and a
/// browser session opened for it, lasting `session_ms`. Returns the account, the session and the
/// case.
pub fn accept(
    conn: &mut Connection,
    token: &str,
    now: i64,
    session_ms: i64,
) -> Result<(User, NewSession, i64)> {
    let tx = conn.transaction()?;
    let invitation = match checked(&tx, token, now) {
        Ok(invitation) => invitation,
        Err(refused) => {
            tx.commit()?; // the refusal is recorded
            return Err(refused);
        }
    };
    tx.execute(
        "INSERT INTO users (username, display_name, role, password_hash, created_at)
         VALUES (?1, ?2, 'resident', '!', ?3)",
        params![
            format!("resident-{}", invitation.id),
            RESIDENT_DISPLAY_NAME,
            now
        ],
    )?;
    let resident = tx.last_insert_rowid();
    tx.execute(
        "UPDATE invitations SET used_at = ?1, resident_id = ?2 WHERE id = ?3",
        params![now, resident, invitation.id],
    )?;
    let session = accounts::new_session(&tx, resident, SessionKind::Cookie, now, session_ms)?;
    let user = accounts::user_by_id(&tx, resident)?.ok_or(Error::NotFound("user"))?;
    audit::append(
        &tx,
        now,
        Some(&user.actor()),
        Some(invitation.case_id),
        "invitation.accepted",
        &json!({ "invitation_id": invitation.id, "notice_consented": true }),
    )?;
    tx.commit()?;
    Ok((user, session, invitation.case_id))
}

/// Revokes invitation `id` of case `case_id` by `actor` (the case's agent or holding approver). A
/// used one ends its resident's sessions and disables the account; returns that resident, whom
/// the caller takes out of the call.
pub fn revoke(
    conn: &mut Connection,
    case_id: i64,
    id: i64,
    actor: &Actor,
    now: i64,
) -> Result<Option<UserId>> {
    let tx = conn.transaction()?;
    let facts = crate::cases::visible_facts(&tx, case_id, actor)?;
    if !(workflow::is_case_agent(actor, &facts) || workflow::holds(actor, &facts)) {
        return Err(Error::Forbidden(
            "only the case's agent or the approver holding it may withdraw an invitation".into(),
        ));
    }
    let invitation = tx
        .query_row(
            &format!("SELECT {COLUMNS} FROM invitations WHERE id = ?1 AND case_id = ?2"),
            params![id, case_id],
            from_row(now),
        )
        .optional()?
        .ok_or(Error::NotFound("invitation"))?;
    if invitation.state == InvitationState::Revoked {
        return Ok(None);
    }
    tx.execute(
        "UPDATE invitations SET revoked_at = ?1 WHERE id = ?2",
        params![now, id],
    )?;
    if let Some(resident) = invitation.resident_id {
        tx.execute("DELETE FROM sessions WHERE user_id = ?1", [resident])?;
        tx.execute("UPDATE users SET disabled = 1 WHERE id = ?1", [resident])?;
    }
    audit::append(
        &tx,
        now,
        Some(actor),
        Some(case_id),
        "invitation.revoked",
        &json!({ "invitation_id": id, "was": invitation.state }),
    )?;
    tx.commit()?;
    Ok(invitation.resident_id)
}

/// Every invitation of a case, newest first.
pub fn list(conn: &Connection, case_id: i64, now: i64) -> Result<Vec<Invitation>> {
    Ok(conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM invitations WHERE case_id = ?1 ORDER BY id DESC"
        ))?
        .query_map([case_id], from_row(now))?
        .collect::<rusqlite::Result<_>>()?)
}

/// The residents in case `case_id`: accounts of its used, unrevoked invitations.
pub fn residents(conn: &Connection, case_id: i64) -> Result<Vec<UserId>> {
    Ok(conn
        .prepare(
            "SELECT resident_id FROM invitations
             WHERE case_id = ?1 AND resident_id IS NOT NULL AND revoked_at IS NULL ORDER BY id",
        )?
        .query_map([case_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// The case as its resident sees it: what the call page needs, nothing of the staff's work.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ResidentCase {
    /// The case id (for `call.*` messages and uploads).
    pub id: i64,
    /// Case number.
    pub number: String,
    /// The service item's name.
    pub item_name: String,
    /// The service point.
    pub point_name: String,
    /// Where the case stands.
    pub state: workflow::CaseState,
    /// Whether its call is open now.
    pub call_open: bool,
    /// Where it stands in its department's queue, while it waits.
    pub queue_place: Option<crate::cases::QueuePlace>,
    /// The people of the call, as the tiles name them.
    pub agent: crate::cases::UserRef,
    /// The approver, once one took the case.
    pub approver: Option<crate::cases::UserRef>,
    /// Invited experts.
    pub experts: Vec<crate::cases::UserRef>,
    /// The residents (this account among them).
    pub residents: Vec<crate::cases::UserRef>,
}

/// The resident's own case.
pub fn resident_view(conn: &Connection, resident: &Actor, now: i64) -> Result<ResidentCase> {
    let case_id = case_of(conn, resident)?;
    let facts = crate::cases::facts(conn, case_id)?.ok_or(Error::NotFound("case"))?;
    let (number, item_name, point_name) = case_names(conn, case_id)?;
    let people = |ids: &[UserId]| -> Result<Vec<crate::cases::UserRef>> {
        ids.iter()
            .map(|id| crate::cases::user_ref(conn, *id))
            .collect()
    };
    Ok(ResidentCase {
        id: case_id,
        number,
        item_name,
        point_name,
        state: facts.state,
        call_open: workflow::call_open(&facts, now),
        queue_place: crate::cases::queue_place(conn, case_id, now)?,
        agent: crate::cases::user_ref(conn, facts.agent_id)?,
        approver: facts
            .approver_id
            .map(|a| crate::cases::user_ref(conn, a))
            .transpose()?,
        experts: people(&facts.experts)?,
        residents: people(&facts.residents)?,
    })
}

/// The case a resident account belongs to.
pub fn case_of(conn: &Connection, resident: &Actor) -> Result<i64> {
    if resident.role != Role::Resident {
        return Err(Error::NotFound("case"));
    }
    conn.query_row(
        "SELECT case_id FROM invitations WHERE resident_id = ?1 AND revoked_at IS NULL",
        [resident.id],
        |r| r.get(0),
    )
    .optional()?
    .ok_or(Error::NotFound("case"))
}
