//! Cases in the database: opening, loading the workflow facts, applying a transition atomically
//! with its audit event, and the views each role may see.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::audit;
use crate::catalogue;
use crate::config::rfc3339;
use crate::error::{Error, Result};
use crate::personal::{mask_id_number, mask_name, validate_id_number};
use crate::workflow::{self, Actor, CaseFacts, CaseState, Command, DepartmentId, Outcome, Role};

/// What an agent sends to open a case.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenCase {
    /// The service item's code.
    pub item: String,
    /// The applicant's name.
    pub applicant_name: String,
    /// The applicant's resident ID number (18 characters, GB 11643).
    pub applicant_id_number: String,
    /// A note for the approver.
    #[serde(default)]
    pub note: String,
}

/// A short reference to a user.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserRef {
    /// Id.
    pub id: i64,
    /// Display name.
    pub display_name: String,
}

/// A case as a caller may see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CaseView {
    /// Id.
    pub id: i64,
    /// Case number shown to people, e.g. `YB20261126-000042`.
    pub number: String,
    /// State.
    pub state: CaseState,
    /// Service item code.
    pub item_code: String,
    /// Service item name.
    pub item_name: String,
    /// Whether it is a simple item (10-minute target).
    pub simple: bool,
    /// Materials the item requires.
    pub required_materials: Vec<String>,
    /// Department whose queue it is in.
    pub department_id: DepartmentId,
    /// Department name.
    pub department_name: String,
    /// Service point id.
    pub point_id: i64,
    /// Service point name.
    pub point_name: String,
    /// Township of the point.
    pub township: String,
    /// The agent.
    pub agent: UserRef,
    /// The approver holding it.
    pub approver: Option<UserRef>,
    /// Invited experts.
    pub experts: Vec<UserRef>,
    /// The applicant joined from home (群众远程接入): its resident accounts in the call.
    pub residents: Vec<UserRef>,
    /// Applicant's name; masked unless the caller is the approver holding the case.
    pub applicant_name: String,
    /// Applicant's ID number; masked unless the caller is the approver holding the case.
    pub applicant_id_number: String,
    /// Whether the two fields above are masked.
    pub applicant_masked: bool,
    /// The agent's note.
    pub note: String,
    /// Whether the identity check was recorded.
    pub identity_checked: bool,
    /// Reason given with the decision or the request for material.
    pub decision_reason: Option<String>,
    /// Opened, RFC 3339.
    pub opened_at: String,
    /// Entered its current queue, RFC 3339.
    pub queued_at: String,
    /// Accepted, RFC 3339.
    pub accepted_at: Option<String>,
    /// Decided, RFC 3339.
    pub decided_at: Option<String>,
    /// Ended (issued, rejected, cancelled), RFC 3339.
    pub ended_at: Option<String>,
    /// Seconds it has waited (or waited) in the queue.
    pub waiting_seconds: i64,
    /// Where it stands in its department's queue, while it waits.
    pub queue_place: Option<QueuePlace>,
    /// Whether its call is open now: in the call, and after the decision until the time limit
    /// (`workflow::CALL_AFTER_DECISION_MS` after the last step).
    pub call_open: bool,
    /// What the caller may do now, from a dry run of the workflow (empty in archives).
    pub actions: Vec<workflow::AvailableAction>,
    /// The signed decision, once sealed: who signed with which key, when, and where it is in the
    /// transparency log.
    pub seal: Option<SealView>,
    /// The case's chain of sealed statements, oldest first: the decision, then a continuation for
    /// each later step (issued, rated, follow-up closed).
    pub statements: Vec<StatementView>,
}

/// One sealed statement of a case's chain.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatementView {
    /// 1 for the decision, then each continuation.
    pub sequence: i64,
    /// `decision`, `issued`, `rated` or `followup_closed`.
    pub kind: String,
    /// The statement's index in the transparency log.
    pub log_index: u64,
    /// When it was sealed, RFC 3339.
    pub sealed_at: String,
    /// SHA-256 of the statement.
    pub statement_sha256: String,
}

fn statements(conn: &Connection, id: i64) -> Result<Vec<StatementView>> {
    let mut stmt = conn.prepare_cached(
        "SELECT sequence, kind, log_index, created_at, statement_sha256 FROM archives
         WHERE case_id = ?1 ORDER BY sequence",
    )?;
    let rows = stmt
        .query_map([id], |r| {
            Ok(StatementView {
                sequence: r.get(0)?,
                kind: r.get(1)?,
                log_index: r.get::<_, i64>(2)? as u64,
                sealed_at: rfc3339(r.get(3)?),
                statement_sha256: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// A sealed decision as the case shows it (已签章).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SealView {
    /// The approver's key that signed the statement.
    pub approver_key: String,
    /// The server's seal key that counter-signed it.
    pub seal_key: String,
    /// When it was sealed, RFC 3339.
    pub sealed_at: String,
    /// The statement's index in the transparency log.
    pub log_index: u64,
    /// SHA-256 of the statement.
    pub statement_sha256: String,
}

/// What `viewer` may do on the case now: the workflow's commands (a dry run of each), and
/// `rate` while the case's own agent can still record the resident's rating.
fn actions(
    conn: &Connection,
    id: i64,
    facts: &workflow::CaseFacts,
    viewer: &Actor,
) -> Result<Vec<workflow::AvailableAction>> {
    let mut actions = workflow::available(facts, viewer);
    if workflow::is_case_agent(viewer, facts) && facts.state.accepts_rating() {
        let rated: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM ratings WHERE case_id = ?1)",
            [id],
            |r| r.get(0),
        )?;
        if !rated {
            actions.push(workflow::AvailableAction {
                action: "rate",
                allowed: true,
                reason: None,
            });
        }
    }
    Ok(actions)
}

/// The sealed decision of a case, if any.
fn seal_view(conn: &Connection, id: i64) -> Result<Option<SealView>> {
    let sealed: Option<(i64, String, i64)> = conn
        .query_row(
            "SELECT log_index, statement_sha256, created_at FROM archives WHERE case_id = ?1 AND sequence = 1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((log_index, statement_sha256, sealed_at)) = sealed else {
        return Ok(None);
    };
    // The signers are named in the statement, which the log holds.
    let signers = match crate::tlog::entry_at(conn, log_index as u64)? {
        esign::entry::LogEntry::Statement(bytes) => {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|e| Error::Internal(format!("log entry {log_index}: {e}")))?["signers"]
                .clone()
        }
        _ => {
            return Err(Error::Internal(format!(
                "log entry {log_index} is not a statement"
            )));
        }
    };
    let key = |role: &str| signers[role].as_str().unwrap_or_default().to_string();
    Ok(Some(SealView {
        approver_key: key("approver"),
        seal_key: key("seal"),
        sealed_at: rfc3339(sealed_at),
        log_index: log_index as u64,
        statement_sha256,
    }))
}

/// A waiting case as the queue shows it (no personal data).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueItem {
    /// Case id.
    pub case_id: i64,
    /// Case number.
    pub number: String,
    /// Department.
    pub department_id: DepartmentId,
    /// Service item name.
    pub item_name: String,
    /// Simple item.
    pub simple: bool,
    /// Service point name.
    pub point_name: String,
    /// Township.
    pub township: String,
    /// Masked applicant name.
    pub applicant_name: String,
    /// When it entered the queue, RFC 3339.
    pub queued_at: String,
    /// Seconds waited so far.
    pub waiting_seconds: i64,
}

struct Row {
    facts: CaseFacts,
    number: String,
    item_id: i64,
    applicant_name: String,
    applicant_id_number: String,
    note: String,
    decision_reason: Option<String>,
    opened_at: i64,
    queued_at: i64,
    accepted_at: Option<i64>,
    decided_at: Option<i64>,
    ended_at: Option<i64>,
}

const ROW_COLUMNS: &str = "state, department_id, point_id, agent_id, approver_id, identity_checked, number, item_id,
    applicant_name, applicant_id_number, note, decision_reason, opened_at, queued_at, accepted_at, decided_at, ended_at";

fn load_row(conn: &Connection, id: i64) -> Result<Option<Row>> {
    let row = conn
        .query_row(
            &format!("SELECT {ROW_COLUMNS} FROM cases WHERE id = ?1"),
            [id],
            |r| {
                let state: String = r.get(0)?;
                Ok(Row {
                    facts: CaseFacts {
                        state: CaseState::parse(&state).unwrap_or(CaseState::Cancelled),
                        department_id: r.get(1)?,
                        point_id: r.get(2)?,
                        agent_id: r.get(3)?,
                        approver_id: r.get(4)?,
                        experts: Vec::new(),
                        residents: Vec::new(),
                        identity_checked: r.get(5)?,
                        decided_at: r.get(15)?,
                        ended_at: r.get(16)?,
                    },
                    number: r.get(6)?,
                    item_id: r.get(7)?,
                    applicant_name: r.get(8)?,
                    applicant_id_number: r.get(9)?,
                    note: r.get(10)?,
                    decision_reason: r.get(11)?,
                    opened_at: r.get(12)?,
                    queued_at: r.get(13)?,
                    accepted_at: r.get(14)?,
                    decided_at: r.get(15)?,
                    ended_at: r.get(16)?,
                })
            },
        )
        .optional()?;
    let Some(mut row) = row else { return Ok(None) };
    row.facts.experts = conn
        .prepare("SELECT user_id FROM case_experts WHERE case_id = ?1 ORDER BY invited_at")?
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    row.facts.residents = crate::invitations::residents(conn, id)?;
    Ok(Some(row))
}

/// The workflow facts of a case.
pub fn facts(conn: &Connection, id: i64) -> Result<Option<CaseFacts>> {
    Ok(load_row(conn, id)?.map(|r| r.facts))
}

/// The facts of a case the actor may see; "not found" otherwise, so nothing leaks.
pub fn visible_facts(conn: &Connection, id: i64, actor: &Actor) -> Result<CaseFacts> {
    match facts(conn, id)? {
        Some(f) if workflow::can_see(actor, &f) => Ok(f),
        _ => Err(Error::NotFound("case")),
    }
}

/// The facts of a case the actor may add materials to if its role allows: one it sees, or, for
/// a resident, its own case (which it does not otherwise see); "not found" otherwise.
pub fn facts_for_materials(conn: &Connection, id: i64, actor: &Actor) -> Result<CaseFacts> {
    match facts(conn, id)? {
        Some(f) if actor.role == Role::Resident && f.residents.contains(&actor.id) => Ok(f),
        _ => visible_facts(conn, id, actor),
    }
}

/// Opens a case for an agent; it enters the item's department queue.
pub fn open(conn: &mut Connection, agent: &Actor, input: &OpenCase, now: i64) -> Result<i64> {
    let point_id = match (agent.role, agent.point_id) {
        (Role::Agent, Some(p)) => p,
        _ => {
            return Err(Error::Forbidden(
                "only an agent of a service point may open a case".into(),
            ));
        }
    };
    let item = catalogue::item_by_code(conn, &input.item)?.ok_or_else(|| {
        Error::bad(
            "invalid_field",
            format!("item: no service item with code {}", input.item),
        )
    })?;
    let name = input.applicant_name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(Error::bad(
            "invalid_field",
            "applicant_name: give the applicant's name (1-64 characters)",
        ));
    }
    let id_number = validate_id_number(&input.applicant_id_number)
        .map_err(|e| Error::bad("invalid_id_number", format!("applicant_id_number: {e}")))?;
    if input.note.chars().count() > 2000 {
        return Err(Error::bad("invalid_field", "note: at most 2000 characters"));
    }
    let tx = conn.transaction()?;
    let next: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM cases", [], |r| {
        r.get(0)
    })?;
    let day = rfc3339(now)
        .get(..10)
        .unwrap_or("00000000")
        .replace('-', "");
    let number = format!("YB{day}-{next:06}");
    tx.execute(
        "INSERT INTO cases (id, number, item_id, department_id, point_id, agent_id, state, applicant_name,
            applicant_id_number, note, opened_at, queued_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'waiting', ?7, ?8, ?9, ?10, ?10)",
        params![next, number, item.id, item.department_id, point_id, agent.id, name, id_number, input.note, now],
    )?;
    audit::append(
        &tx,
        now,
        Some(agent),
        Some(next),
        "case.opened",
        &serde_json::json!({ "number": number, "item": item.code, "department_id": item.department_id }),
    )?;
    tx.commit()?;
    Ok(next)
}

/// The result of a transition: the facts before and the outcome.
#[derive(Debug, Clone)]
pub struct Transitioned {
    /// Facts before.
    pub before: CaseFacts,
    /// What happened.
    pub outcome: Outcome,
}

/// Loads, applies and persists a command in one transaction, with its audit event. Two approvers
/// accepting at once are serialised here: the second sees the first's result and is refused.
pub fn transition(
    conn: &mut Connection,
    id: i64,
    actor: &Actor,
    command: &Command,
    now: i64,
) -> Result<Transitioned> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let transitioned = transition_in(&tx, id, actor, command, now)?;
    tx.commit()?;
    Ok(transitioned)
}

/// [`transition`] inside the caller's transaction, for changes that commit together with other
/// writes (a signed decision commits with its log entry and archive row).
pub fn transition_in(
    tx: &Connection,
    id: i64,
    actor: &Actor,
    command: &Command,
    now: i64,
) -> Result<Transitioned> {
    let before = facts(tx, id)?.ok_or(Error::NotFound("case"))?;
    let outcome = workflow::apply(&before, actor, command)?;
    let after = &outcome.facts;
    let reason = match command {
        Command::Approve { reason }
        | Command::Reject { reason }
        | Command::RequestMaterial { reason } => Some(reason.clone()),
        _ => None,
    };
    let queued_again = after.state == CaseState::Waiting && before.state != CaseState::Waiting;
    let decided = matches!(after.state, CaseState::Approved | CaseState::Rejected)
        && before.state != after.state;
    let ended = after.state.is_final() && !before.state.is_final();
    tx.execute(
        "UPDATE cases SET state = ?2, department_id = ?3, approver_id = ?4, identity_checked = ?5,
            decision_reason = COALESCE(?6, decision_reason),
            queued_at = CASE WHEN ?7 THEN ?10 ELSE queued_at END,
            accepted_at = CASE WHEN ?8 THEN ?10 WHEN ?7 THEN NULL ELSE accepted_at END,
            decided_at = CASE WHEN ?9 THEN ?10 ELSE decided_at END,
            ended_at = CASE WHEN ?11 THEN ?10 ELSE ended_at END,
            version = version + 1
         WHERE id = ?1",
        params![
            id,
            after.state.as_str(),
            after.department_id,
            after.approver_id,
            after.identity_checked,
            reason,
            queued_again,
            matches!(command, Command::Accept),
            decided,
            now,
            ended
        ],
    )?;
    if after.experts.len() < before.experts.len() {
        tx.execute("DELETE FROM case_experts WHERE case_id = ?1", [id])?;
    }
    for expert in after.experts.iter().filter(|e| !before.experts.contains(e)) {
        tx.execute(
            "INSERT INTO case_experts (case_id, user_id, invited_at) VALUES (?1, ?2, ?3)",
            params![id, expert, now],
        )?;
    }
    audit::append(
        tx,
        now,
        Some(actor),
        Some(id),
        outcome.event,
        &outcome.details,
    )?;
    Ok(Transitioned { before, outcome })
}

pub(crate) fn user_ref(conn: &Connection, id: i64) -> Result<UserRef> {
    let display_name =
        conn.query_row("SELECT display_name FROM users WHERE id = ?1", [id], |r| {
            r.get(0)
        })?;
    Ok(UserRef { id, display_name })
}

/// The case as `viewer` may see it; "not found" when it may not.
pub fn view(conn: &Connection, id: i64, viewer: &Actor, now: i64) -> Result<CaseView> {
    let row = load_row(conn, id)?.ok_or(Error::NotFound("case"))?;
    if !workflow::can_see(viewer, &row.facts) {
        return Err(Error::NotFound("case"));
    }
    let unmasked = workflow::holds(viewer, &row.facts);
    let (item_code, item_name, simple, materials): (String, String, bool, String) = conn
        .query_row(
            "SELECT code, name, simple, required_materials FROM service_items WHERE id = ?1",
            [row.item_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
    let department_name: String = conn.query_row(
        "SELECT name FROM departments WHERE id = ?1",
        [row.facts.department_id],
        |r| r.get(0),
    )?;
    let (point_name, township): (String, String) = conn.query_row(
        "SELECT name, township FROM service_points WHERE id = ?1",
        [row.facts.point_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let waited_until = row.accepted_at.or(row.ended_at).unwrap_or(now);
    Ok(CaseView {
        id,
        number: row.number,
        state: row.facts.state,
        item_code,
        item_name,
        simple,
        required_materials: serde_json::from_str(&materials).unwrap_or_default(),
        department_id: row.facts.department_id,
        department_name,
        point_id: row.facts.point_id,
        point_name,
        township,
        agent: user_ref(conn, row.facts.agent_id)?,
        approver: row
            .facts
            .approver_id
            .map(|a| user_ref(conn, a))
            .transpose()?,
        experts: row
            .facts
            .experts
            .iter()
            .map(|e| user_ref(conn, *e))
            .collect::<Result<_>>()?,
        residents: row
            .facts
            .residents
            .iter()
            .map(|r| user_ref(conn, *r))
            .collect::<Result<_>>()?,
        applicant_name: if unmasked {
            row.applicant_name.clone()
        } else {
            mask_name(&row.applicant_name)
        },
        applicant_id_number: if unmasked {
            row.applicant_id_number.clone()
        } else {
            mask_id_number(&row.applicant_id_number)
        },
        applicant_masked: !unmasked,
        note: row.note,
        identity_checked: row.facts.identity_checked,
        decision_reason: row.decision_reason,
        opened_at: rfc3339(row.opened_at),
        queued_at: rfc3339(row.queued_at),
        accepted_at: row.accepted_at.map(rfc3339),
        decided_at: row.decided_at.map(rfc3339),
        ended_at: row.ended_at.map(rfc3339),
        waiting_seconds: (waited_until - row.queued_at).max(0) / 1000,
        queue_place: queue_place(conn, id, now)?,
        call_open: workflow::call_open(&row.facts, now),
        actions: actions(conn, id, &row.facts, viewer)?,
        seal: seal_view(conn, id)?,
        statements: statements(conn, id)?,
    })
}

/// Every case `viewer` may see, newest first, optionally in one state.
pub fn list(
    conn: &Connection,
    viewer: &Actor,
    state: Option<CaseState>,
    now: i64,
) -> Result<Vec<CaseView>> {
    // Narrow in SQL by the viewer's scope, then apply the one visibility rule of the workflow.
    let ids: Vec<i64> = match viewer.role {
        Role::Agent => conn
            .prepare("SELECT id FROM cases WHERE point_id = ?1 ORDER BY id DESC LIMIT 500")?
            .query_map([viewer.point_id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?,
        Role::Approver => conn
            .prepare(
                "SELECT id FROM cases WHERE approver_id = ?1 OR (state = 'waiting' AND department_id = ?2)
                 ORDER BY id DESC LIMIT 500",
            )?
            .query_map(params![viewer.id, viewer.department_id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?,
        Role::Expert => conn
            .prepare("SELECT case_id FROM case_experts WHERE user_id = ?1 ORDER BY case_id DESC LIMIT 500")?
            .query_map([viewer.id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?,
        Role::Supervisor | Role::Auditor => conn
            .prepare("SELECT id FROM cases ORDER BY id DESC LIMIT 500")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?,
        Role::Admin | Role::Resident => Vec::new(),
    };
    let mut views = Vec::with_capacity(ids.len());
    for id in ids {
        match view(conn, id, viewer, now) {
            Ok(v) if state.is_none_or(|s| v.state == s) => views.push(v),
            Ok(_) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(views)
}

/// The waiting cases of a department (or of all, for supervisors), oldest first.
pub fn queue(
    conn: &Connection,
    department: Option<DepartmentId>,
    now: i64,
) -> Result<Vec<QueueItem>> {
    let mut stmt = conn.prepare(
        "SELECT c.id, c.number, c.department_id, i.name, i.simple, p.name, p.township, c.applicant_name, c.queued_at
         FROM cases c JOIN service_items i ON i.id = c.item_id JOIN service_points p ON p.id = c.point_id
         WHERE c.state = 'waiting' AND (?1 IS NULL OR c.department_id = ?1)
         ORDER BY c.queued_at, c.id",
    )?;
    let items = stmt
        .query_map([department], |r| {
            let name: String = r.get(7)?;
            let queued_at: i64 = r.get(8)?;
            Ok(QueueItem {
                case_id: r.get(0)?,
                number: r.get(1)?,
                department_id: r.get(2)?,
                item_name: r.get(3)?,
                simple: r.get(4)?,
                point_name: r.get(5)?,
                township: r.get(6)?,
                applicant_name: mask_name(&name),
                queued_at: rfc3339(queued_at),
                waiting_seconds: (now - queued_at).max(0) / 1000,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(items)
}

/// Where a waiting case stands in its department's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QueuePlace {
    /// 1 for the next case to be taken.
    pub position: u32,
    /// The wait expected from now, seconds, from recent figures: the position over the
    /// department's rate of taking cases in the last [`RATE_WINDOW_MS`] (at least two taken);
    /// else the median wait of its last cases taken within a week; absent with neither.
    pub expected_wait_seconds: Option<i64>,
}

/// The window the department's recent rate of taking cases is measured over.
pub const RATE_WINDOW_MS: i64 = 2 * 3_600_000;

/// Where case `id` stands in its department's queue, if it is waiting.
pub fn queue_place(conn: &Connection, id: i64, now: i64) -> Result<Option<QueuePlace>> {
    let row: Option<(i64, i64, String)> = conn
        .query_row(
            "SELECT department_id, queued_at, state FROM cases WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((department, queued_at, _)) = row.filter(|(_, _, state)| state == "waiting") else {
        return Ok(None);
    };
    let ahead: i64 = conn.query_row(
        "SELECT COUNT(*) FROM cases WHERE state = 'waiting' AND department_id = ?1
         AND (queued_at < ?2 OR (queued_at = ?2 AND id < ?3))",
        params![department, queued_at, id],
        |r| r.get(0),
    )?;
    let position = u32::try_from(ahead + 1).unwrap_or(u32::MAX);
    let taken_recently: i64 = conn.query_row(
        "SELECT COUNT(*) FROM cases WHERE department_id = ?1 AND accepted_at >= ?2",
        params![department, now - RATE_WINDOW_MS],
        |r| r.get(0),
    )?;
    let expected = if taken_recently >= 2 {
        Some(i64::from(position) * (RATE_WINDOW_MS / 1000) / taken_recently)
    } else {
        let mut waits: Vec<i64> = conn
            .prepare(
                "SELECT accepted_at - queued_at FROM cases
                 WHERE department_id = ?1 AND accepted_at >= ?2 AND accepted_at >= queued_at
                 ORDER BY accepted_at DESC LIMIT 50",
            )?
            .query_map(params![department, now - 7 * 86_400_000], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        waits.sort_unstable();
        waits.get(waits.len() / 2).map(|ms| ms / 1000)
    };
    Ok(Some(QueuePlace {
        position,
        expected_wait_seconds: expected,
    }))
}

/// The cases waiting in `department` behind case `left` (which has just left its queue), or all
/// of them when `everyone` (to tell them their place moved).
pub fn waiting_behind(
    conn: &Connection,
    department: DepartmentId,
    left: i64,
    everyone: bool,
) -> Result<Vec<i64>> {
    let queued_at: i64 = conn
        .query_row("SELECT queued_at FROM cases WHERE id = ?1", [left], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or(i64::MIN);
    Ok(conn
        .prepare(
            "SELECT id FROM cases WHERE state = 'waiting' AND department_id = ?1
             AND (?4 OR queued_at > ?2 OR (queued_at = ?2 AND id > ?3))",
        )?
        .query_map(params![department, queued_at, left, everyone], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// One queue item, if the case is waiting.
pub fn queue_item(conn: &Connection, id: i64, now: i64) -> Result<Option<QueueItem>> {
    Ok(queue(conn, None, now)?
        .into_iter()
        .find(|q| q.case_id == id))
}
