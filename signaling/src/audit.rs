//! The audit trail: an append-only table of events (actor, role, time, case, details).
//! The database refuses UPDATE and DELETE on it (triggers in the schema).

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::config::rfc3339;
use crate::error::Result;
use crate::workflow::Actor;

/// One audit event as exported.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Sequence number.
    pub id: i64,
    /// When, RFC 3339.
    pub at: String,
    /// Who (absent for the system or an unknown login name).
    pub actor_id: Option<i64>,
    /// In which role.
    pub actor_role: Option<String>,
    /// The actor's name as the accounts hold it now (staff, never the applicant), for readers of
    /// the trail; absent for the system.
    pub actor_name: Option<String>,
    /// The case it concerns.
    pub case_id: Option<i64>,
    /// What happened, e.g. `case.accepted`.
    pub kind: String,
    /// Details (no personal data).
    pub details: serde_json::Value,
}

/// Appends an event; call inside the transaction of the change it records.
pub fn append(
    conn: &Connection,
    at: i64,
    actor: Option<&Actor>,
    case_id: Option<i64>,
    kind: &str,
    details: &serde_json::Value,
) -> Result<()> {
    conn.execute(
        "INSERT INTO audit_events (at, actor_id, actor_role, case_id, kind, details) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![at, actor.map(|a| a.id), actor.map(|a| a.role.as_str()), case_id, kind, details.to_string()],
    )?;
    Ok(())
}

/// Which events to export.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this case.
    pub case_id: Option<i64>,
    /// From this time (ms, inclusive).
    pub from: Option<i64>,
    /// Until this time (ms, exclusive).
    pub to: Option<i64>,
}

/// Events matching `filter`, oldest first.
pub fn export(conn: &Connection, filter: &Filter) -> Result<Vec<AuditEvent>> {
    let mut stmt = conn.prepare(
        "SELECT e.id, e.at, e.actor_id, e.actor_role, e.case_id, e.kind, e.details, u.display_name
         FROM audit_events e LEFT JOIN users u ON u.id = e.actor_id
         WHERE (?1 IS NULL OR e.case_id = ?1) AND (?2 IS NULL OR e.at >= ?2) AND (?3 IS NULL OR e.at < ?3)
         ORDER BY e.id",
    )?;
    let events = stmt
        .query_map(params![filter.case_id, filter.from, filter.to], |r| {
            let details: String = r.get(6)?;
            Ok(AuditEvent {
                id: r.get(0)?,
                at: rfc3339(r.get(1)?),
                actor_id: r.get(2)?,
                actor_role: r.get(3)?,
                actor_name: r.get(7)?,
                case_id: r.get(4)?,
                kind: r.get(5)?,
                details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(events)
}
