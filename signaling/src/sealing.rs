//! Signed decisions: building a case's archive, having the approver's browser sign its statement,
//! counter-signing with the seal key, recording it in the transparency log, and only then marking
//! the case decided — all in one transaction.
//!
//! Two steps, because the approver's key never leaves the browser: `prepare` packs the payload and
//! returns the bytes to sign; `seal` takes the signature and finishes.
//!
//! What happens after the decision (issuing, the rating, closing a follow-up) is sealed by the
//! server alone as a *continuation*: a small archive of the case as it then stands, its audit trail,
//! the receipts of the earlier statements, and a statement naming the previous one, committed in
//! the same transaction as the step it records ([`Sealer::continue_case`]).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use base64::Engine;
use esign::archive::{ArchiveWriter, PayloadSummary, PendingArchive, Signers};
use esign::keys::SealKey;
use esign::sig::PayloadType;
use rusqlite::{Connection, params};
use serde::Serialize;

use crate::audit::{self, Filter};
use crate::blobs::BlobStore;
use crate::cases::{self, Transitioned};
use crate::config::rfc3339;
use crate::error::{Error, Result};
use crate::materials;
use crate::tlog::{self, esign_error};
use crate::workflow::{self, Actor, Command};

/// A prepared decision waiting for the approver's signature.
pub struct PendingDecision {
    /// The case.
    pub case_id: i64,
    /// The approver who prepared it (only it may seal it).
    pub approver_id: i64,
    /// The approver's key that must sign.
    pub key_id: String,
    /// Approve or reject, with the reason.
    pub command: Command,
    /// When it was decided: the time the archive records, and the case's `decided_at` once sealed.
    pub decided_at: i64,
    archive: PendingArchive<std::fs::File>,
    temp: tempfile::TempPath,
}

/// What an archive will hold, read in the database lock by [`Sealer::gather`].
pub struct Gathered {
    case_id: i64,
    approver_id: i64,
    key_id: String,
    command: Command,
    now: i64,
    view: cases::CaseView,
    materials: Vec<materials::Material>,
    events: Vec<audit::AuditEvent>,
    quality: Vec<u8>,
    decision: serde_json::Value,
}

/// Prepared decisions by case id; a new preparation replaces an older one.
#[derive(Default)]
pub struct PendingDecisions(Mutex<HashMap<i64, Box<PendingDecision>>>);

impl PendingDecisions {
    /// Keeps a prepared decision.
    pub fn put(&self, case_id: i64, pending: Box<PendingDecision>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(case_id, pending);
    }
    /// Takes the prepared decision of a case if `approver_id` prepared it; anyone else's attempt
    /// leaves it in place, in the same lock, so no legitimate seal can miss it meanwhile.
    pub fn take_for(&self, case_id: i64, approver_id: i64) -> Option<Box<PendingDecision>> {
        let mut pending = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get(&case_id) {
            Some(p) if p.approver_id == approver_id => pending.remove(&case_id),
            _ => None,
        }
    }
}

/// What the browser needs to sign.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Prepared {
    /// The exact bytes to sign with Ed25519 (DSSE PAE of the statement), base64.
    pub signing_bytes: String,
    /// The payload type inside those bytes.
    pub payload_type: String,
    /// The statement (RFC 8785 canonical JSON), for display.
    pub statement: serde_json::Value,
    /// The key that must sign.
    pub key_id: String,
}

/// A sealed archive as recorded.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ArchiveInfo {
    /// The case.
    pub case_id: i64,
    /// Its place in the case's chain: 1 for the decision, then each continuation.
    pub sequence: i64,
    /// What it records: `decision`, `issued`, `rated` or `followup_closed`.
    pub kind: String,
    /// SHA-256 of the zip.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the statement.
    pub statement_sha256: String,
    /// The statement's index in the transparency log.
    pub log_index: u64,
}

fn extension(media_type: &str) -> &'static str {
    match media_type {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        "image/heif" => "heif",
        "image/tiff" => "tiff",
        "application/pdf" => "pdf",
        "audio/ogg" => "ogg",
        "video/x-ivf" => "ivf",
        "application/json" => "json",
        _ => "bin",
    }
}

fn json_bytes(value: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::Internal(e.to_string()))
}

/// The bag's date: the day in China Standard Time.
fn bagging_date(now: i64) -> String {
    rfc3339(now + 8 * 3_600_000)
        .get(..10)
        .unwrap_or("1970-01-01")
        .to_string()
}

/// What happened after the decision, recorded by a continuation (no personal data: the statement
/// reaches receipt holders; the rating's words are in the archive's audit trail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The result was issued (出件).
    Issued,
    /// The resident's rating; a bad one opened a follow-up.
    Rated {
        /// 1 to 5.
        score: u8,
        /// The follow-up it opened, with its deadline.
        followup: Option<(i64, i64)>,
    },
    /// A follow-up of a bad rating was closed (整改反馈).
    FollowUpClosed {
        /// The follow-up.
        followup_id: i64,
    },
}

impl Update {
    /// The archive's kind, as `archives.kind` and the statement's `update.kind` hold it.
    pub fn kind(&self) -> &'static str {
        match self {
            Update::Issued => "issued",
            Update::Rated { .. } => "rated",
            Update::FollowUpClosed { .. } => "followup_closed",
        }
    }

    fn to_json(&self, sequence: i64, case_number: &str, now: i64) -> serde_json::Value {
        let mut update = serde_json::json!({
            "kind": self.kind(),
            "sequence": sequence,
            "case_number": case_number,
            "at": rfc3339(now),
        });
        match self {
            Update::Issued => {}
            Update::Rated { score, followup } => {
                update["score"] = (*score).into();
                update["followup_id"] = followup.map(|(id, _)| id).into();
                update["followup_due_at"] = followup.map(|(_, due)| rfc3339(due)).into();
            }
            Update::FollowUpClosed { followup_id } => {
                update["followup_id"] = (*followup_id).into();
            }
        }
        update
    }
}

/// Writes what every archive of a case holds about it: the case as the holding approver sees it,
/// its audit trail and its call quality.
fn write_record(
    writer: &mut ArchiveWriter<std::fs::File>,
    view: &cases::CaseView,
    events: &[audit::AuditEvent],
    quality: &[u8],
) -> Result<()> {
    writer
        .add_bytes("data/case.json", &json_bytes(view)?)
        .map_err(esign_error)?;
    let mut lines = Vec::new();
    for event in events {
        lines.extend(serde_json::to_vec(event).map_err(|e| Error::Internal(e.to_string()))?);
        lines.push(b'\n');
    }
    writer
        .add_bytes("data/events.jsonl", &lines)
        .map_err(esign_error)?;
    writer
        .add_bytes("data/call-quality.json", quality)
        .map_err(esign_error)?;
    Ok(())
}

/// A case's audit trail.
fn case_events(conn: &Connection, case_id: i64) -> Result<Vec<audit::AuditEvent>> {
    audit::export(
        conn,
        &Filter {
            case_id: Some(case_id),
            ..Filter::default()
        },
    )
}

/// What sealing works with: the blob store and the server's keys.
pub struct Sealer<'a> {
    /// Where materials are read and archives stored.
    pub blobs: &'a BlobStore,
    /// The seal key that counter-signs.
    pub seal: &'a SealKey,
    /// The transparency log's key.
    pub log: &'a esign::keys::LogKey,
}

/// A failed seal: why, and the prepared decision when it is still good (a wrong signature can be
/// sent again without preparing anew).
pub struct SealFailure {
    /// Why.
    pub error: Error,
    /// The untouched prepared decision, if it can be retried.
    pub pending: Option<Box<PendingDecision>>,
}

impl Sealer<'_> {
    /// The first step of preparing (in the database lock): checks that the decision is allowed
    /// now and reads what the archive will hold, writing nothing. [`Sealer::pack`] packs it
    /// afterwards, outside the lock: zipping hundreds of megabytes of materials takes a while.
    pub fn gather(
        conn: &Connection,
        case_id: i64,
        actor: &Actor,
        command: Command,
        key_id: &str,
        now: i64,
    ) -> Result<Gathered> {
        let facts = cases::facts(conn, case_id)?.ok_or(Error::NotFound("case"))?;
        let outcome = workflow::apply(&facts, actor, &command)?; // a dry run: is the decision allowed now?
        let key = tlog::key(conn, key_id)?
            .filter(|k| k.user_id == Some(actor.id) && k.role == "approver")
            .ok_or_else(|| {
                Error::bad(
                    "invalid_field",
                    format!("key_id: {key_id} is not a registered signing key of yours"),
                )
            })?;
        if key.revocation_log_index.is_some() {
            return Err(Error::conflict(
                "key_revoked",
                "this signing key is revoked; register a new one",
            ));
        }
        let (result, reason) = match &command {
            Command::Approve { reason } => ("approved", reason.clone()),
            Command::Reject { reason } => ("rejected", reason.clone()),
            _ => {
                return Err(Error::Internal(
                    "only approve and reject are signed decisions".into(),
                ));
            }
        };
        // The holding approver's view (unmasked), as it stands once this decision is sealed.
        let mut view = cases::view(conn, case_id, actor, now)?;
        view.state = outcome.facts.state;
        view.decision_reason = Some(reason.clone());
        view.decided_at = Some(rfc3339(now));
        view.ended_at = outcome.facts.state.is_final().then(|| rfc3339(now));
        view.actions = Vec::new();
        let materials = materials::list(conn, case_id)?;
        let events = case_events(conn, case_id)?;
        let quality = json_bytes(&crate::calls::quality_record(conn, case_id)?)?;
        let decision = serde_json::json!({
            "case_number": view.number,
            "outcome": result,
            "reason": reason,
            "item": view.item_code,
            "department": view.department_name,
            "approver_id": actor.id,
            "approver_key": key_id,
            "identity_checked": outcome.facts.identity_checked,
            "resident_remote": !outcome.facts.residents.is_empty(),
            "decided_at": rfc3339(now),
            "materials": materials.len(),
        });
        Ok(Gathered {
            case_id,
            approver_id: actor.id,
            key_id: key_id.to_string(),
            command,
            now,
            view,
            materials,
            events,
            quality,
            decision,
        })
    }

    /// Packs what [`Sealer::gather`] read into the archive (no database needed) and returns what
    /// the browser must sign.
    pub fn pack(&self, gathered: Gathered) -> Result<(Box<PendingDecision>, Prepared)> {
        let (blobs, seal) = (self.blobs, self.seal);
        let Gathered {
            case_id,
            approver_id,
            key_id,
            command,
            now,
            view,
            materials,
            events,
            quality,
            decision,
        } = gathered;
        let (file, temp) = tempfile::NamedTempFile::new_in(blobs.tmp_folder())?.into_parts();
        let mut writer = ArchiveWriter::new(file, &view.number).map_err(esign_error)?;
        write_record(&mut writer, &view, &events, &quality)?;
        let mut listed = Vec::new();
        for (n, m) in materials.iter().enumerate() {
            let path = format!("data/materials/{:03}.{}", n + 1, extension(&m.media_type));
            let mut reader = std::fs::File::open(blobs.path(&m.sha256))?;
            writer
                .add_file(&path, &mut reader, m.size)
                .map_err(esign_error)?;
            listed.push(serde_json::json!({ "path": path, "filename": m.filename, "sha256": m.sha256, "media_type": m.media_type, "uploaded_at": m.uploaded_at }));
        }
        writer
            .add_bytes("data/materials.json", &json_bytes(&listed)?)
            .map_err(esign_error)?;
        let archive = writer
            .finish_payload(PayloadSummary {
                decision,
                signers: Signers {
                    approver: Some(key_id.clone()),
                    seal: seal.key_id(),
                },
                previous_statement: None,
                update: None,
                bagging_date: bagging_date(now),
            })
            .map_err(esign_error)?;
        let prepared = Prepared {
            signing_bytes: base64::engine::general_purpose::STANDARD
                .encode(archive.signing_bytes()),
            payload_type: PayloadType::Statement.as_str().to_string(),
            statement: serde_json::from_slice(archive.statement_bytes())
                .map_err(|e| Error::Internal(e.to_string()))?,
            key_id: key_id.clone(),
        };
        let pending = PendingDecision {
            case_id,
            approver_id,
            key_id,
            command,
            decided_at: now,
            archive,
            temp,
        };
        Ok((Box::new(pending), prepared))
    }

    /// Checks the browser's signature, seals, logs, stores the archive and decides the case, in one
    /// transaction. On a bad signature the pending decision is handed back, untouched.
    pub fn seal(
        &self,
        conn: &mut Connection,
        pending: Box<PendingDecision>,
        signature_base64: &str,
        actor: &Actor,
        now: i64,
    ) -> std::result::Result<(Transitioned, ArchiveInfo), SealFailure> {
        let seal_key = self.seal;
        let key = match tlog::key(conn, &pending.key_id) {
            Ok(Some(k)) if k.revocation_log_index.is_none() => k,
            Ok(_) => {
                let error = Error::conflict(
                    "key_revoked",
                    "the signing key was revoked; register a new one and decide again",
                );
                return Err(SealFailure {
                    error,
                    pending: None,
                });
            }
            Err(error) => {
                return Err(SealFailure {
                    error,
                    pending: Some(pending),
                });
            }
        };
        let checked = (|| {
            let mut file = signature_base64.trim().to_string();
            file.push('\n');
            let signature = esign::sig::signature_from_file(file.as_bytes())
                .map_err(|e| Error::bad("invalid_field", format!("signature: {e}")))?;
            let vk = esign::sig::public_key_from_base64(&key.public_key).map_err(esign_error)?;
            esign::sig::verify(
                &vk,
                PayloadType::Statement,
                pending.archive.statement_bytes(),
                &signature,
            )
            .map_err(esign_error)?;
            Ok((signature, vk))
        })();
        let (signature, vk) = match checked {
            Ok(v) => v,
            Err(error) => {
                return Err(SealFailure {
                    error,
                    pending: Some(pending),
                });
            }
        };
        let run = || -> Result<(Transitioned, ArchiveInfo)> {
            let PendingDecision {
                case_id,
                command,
                archive,
                temp,
                key_id: _,
                decided_at,
                ..
            } = *pending;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // The case may have moved on (cancelled, transferred) since the preparation. It is
            // decided at the time the signed statement records.
            let transitioned = cases::transition_in(&tx, case_id, actor, &command, decided_at)?;
            let sealed = archive
                .seal(&signature, &vk, seal_key)
                .map_err(esign_error)?;
            let info = self.store(&tx, case_id, "decision", sealed, temp, Some(actor), now)?;
            tx.commit()?;
            Ok((transitioned, info))
        };
        run().map_err(|error| SealFailure {
            error,
            pending: None,
        })
    }
}

impl Sealer<'_> {
    /// Logs a sealed statement, stores its archive with the log's evidence and records it as the
    /// case's next archive, in the caller's transaction.
    #[allow(clippy::too_many_arguments)]
    fn store(
        &self,
        tx: &Connection,
        case_id: i64,
        kind: &str,
        sealed: esign::archive::SealedArchive<std::fs::File>,
        temp: tempfile::TempPath,
        actor: Option<&Actor>,
        now: i64,
    ) -> Result<ArchiveInfo> {
        let statement_sha256 = sealed.statement_sha256();
        let signers = sealed.statement().signers.clone();
        let index = tlog::append(tx, self.log, &sealed.log_entry(), Some(case_id), now)?;
        let records = signers
            .approver
            .iter()
            .chain([&signers.seal])
            .map(|key| tlog::key_record(tx, key))
            .collect::<Result<Vec<_>>>()?;
        let evidence = tlog::open(tx, self.log)
            .evidence(index, &records)
            .map_err(esign_error)?;
        let mut file = sealed.finish(evidence).map_err(esign_error)?;
        file.flush()?;
        file.sync_all()?;
        drop(file);
        let (sha256, size) = self.blobs.adopt(temp)?;
        let sequence: i64 = tx.query_row(
            "SELECT COALESCE(MAX(sequence), 0) + 1 FROM archives WHERE case_id = ?1",
            [case_id],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO archives (case_id, sequence, kind, sha256, size, statement_sha256, log_index, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![case_id, sequence, kind, sha256, size, statement_sha256, index as i64, now],
        )?;
        audit::append(
            tx,
            now,
            actor,
            Some(case_id),
            "case.sealed",
            &serde_json::json!({
                "archive_sha256": sha256, "statement_sha256": statement_sha256, "log_index": index,
                "approver_key": signers.approver, "sequence": sequence, "kind": kind,
            }),
        )?;
        Ok(ArchiveInfo {
            case_id,
            sequence,
            kind: kind.to_string(),
            sha256,
            size,
            statement_sha256,
            log_index: index,
        })
    }

    /// Seals a continuation of a decided case recording `update`, in the caller's transaction (so
    /// it commits with the step it records, or not at all): the case as its holding approver now
    /// sees it, its whole audit trail and call quality, the receipts of the earlier statements in
    /// `data/previous/`, and a statement with the decision unchanged, naming the previous one,
    /// signed by the seal key alone. A case without a sealed decision has nothing to continue.
    pub fn continue_case(
        &self,
        tx: &Connection,
        case_id: i64,
        update: &Update,
        actor: Option<&Actor>,
        now: i64,
    ) -> Result<Option<ArchiveInfo>> {
        let earlier = archives(tx, case_id)?;
        let Some(last) = earlier.last() else {
            return Ok(None);
        };
        let receipts = earlier
            .iter()
            .map(|a| {
                let file = std::fs::File::open(self.blobs.path(&a.sha256))?;
                esign::verify::Receipt::from_archive(std::io::BufReader::new(file))
                    .map_err(|e| Error::Internal(format!("receipt of archive {}: {e}", a.sha256)))
            })
            .collect::<Result<Vec<_>>>()?;
        let previous: serde_json::Value = receipts
            .last()
            .map(|r| serde_json::from_str(&r.statement))
            .transpose()
            .map_err(|e| Error::Internal(format!("a sealed statement: {e}")))?
            .unwrap_or_default();
        let facts = cases::facts(tx, case_id)?.ok_or(Error::NotFound("case"))?;
        let holder = facts
            .approver_id
            .map(|id| crate::accounts::user_by_id(tx, id))
            .transpose()?
            .flatten()
            .ok_or_else(|| Error::Internal(format!("decided case {case_id} has no approver")))?;
        let mut view = cases::view(tx, case_id, &holder.actor(), now)?;
        view.actions = Vec::new();
        let events = case_events(tx, case_id)?;
        let quality = json_bytes(&crate::calls::quality_record(tx, case_id)?)?;

        let (file, temp) = tempfile::NamedTempFile::new_in(self.blobs.tmp_folder())?.into_parts();
        let mut writer = ArchiveWriter::new(file, &view.number).map_err(esign_error)?;
        write_record(&mut writer, &view, &events, &quality)?;
        for (n, receipt) in receipts.iter().enumerate() {
            writer
                .add_bytes(
                    &esign::archive::names::previous(n + 1),
                    receipt.to_json().as_bytes(),
                )
                .map_err(esign_error)?;
        }
        let sealed = writer
            .finish_payload(PayloadSummary {
                decision: previous["decision"].clone(),
                signers: Signers {
                    approver: None,
                    seal: self.seal.key_id(),
                },
                previous_statement: Some(last.statement_sha256.clone()),
                update: Some(update.to_json(last.sequence + 1, &view.number, now)),
                bagging_date: bagging_date(now),
            })
            .and_then(|pending| pending.seal_continuation(self.seal))
            .map_err(esign_error)?;
        self.store(tx, case_id, update.kind(), sealed, temp, actor, now)
            .map(Some)
    }
}

fn archive_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ArchiveInfo> {
    Ok(ArchiveInfo {
        case_id: r.get(0)?,
        sequence: r.get(1)?,
        kind: r.get(2)?,
        sha256: r.get(3)?,
        size: r.get(4)?,
        statement_sha256: r.get(5)?,
        log_index: r.get::<_, i64>(6)? as u64,
    })
}

const ARCHIVE_COLUMNS: &str = "case_id, sequence, kind, sha256, size, statement_sha256, log_index";

/// The archives of a case, oldest first: its decision, then each continuation.
pub fn archives(conn: &Connection, case_id: i64) -> Result<Vec<ArchiveInfo>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {ARCHIVE_COLUMNS} FROM archives WHERE case_id = ?1 ORDER BY sequence"
    ))?;
    let rows = stmt
        .query_map([case_id], archive_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// One stored archive of a case: `sequence`, or the newest.
pub fn archive(
    conn: &Connection,
    case_id: i64,
    sequence: Option<i64>,
) -> Result<Option<ArchiveInfo>> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row(
            &format!(
                "SELECT {ARCHIVE_COLUMNS} FROM archives WHERE case_id = ?1 AND (?2 IS NULL OR sequence = ?2)
                 ORDER BY sequence DESC LIMIT 1"
            ),
            params![case_id, sequence],
            archive_row,
        )
        .optional()?)
}
