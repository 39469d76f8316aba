//! Signed decisions: building a case's archive, having the approver's browser sign its statement,
//! counter-signing with the seal key, recording it in the transparency log, and only then marking
//! the case decided — all in one transaction.
//!
//! Two steps, because the approver's key never leaves the browser: `prepare` packs the payload and
//! returns the bytes to sign; `seal` takes the signature and finishes.

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
        _ => "bin",
    }
}

fn json_bytes(value: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::Internal(e.to_string()))
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
        let events = audit::export(
            conn,
            &Filter {
                case_id: Some(case_id),
                ..Filter::default()
            },
        )?;

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
        writer
            .add_bytes("data/case.json", &json_bytes(&view)?)
            .map_err(esign_error)?;
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
        let mut lines = Vec::new();
        for event in &events {
            lines.extend(serde_json::to_vec(event).map_err(|e| Error::Internal(e.to_string()))?);
            lines.push(b'\n');
        }
        writer
            .add_bytes("data/events.jsonl", &lines)
            .map_err(esign_error)?;
        writer
            .add_bytes("data/call-quality.json", &quality)
            .map_err(esign_error)?;
        let day = rfc3339(now + 8 * 3_600_000)
            .get(..10)
            .unwrap_or("1970-01-01")
            .to_string();
        let archive = writer
            .finish_payload(PayloadSummary {
                decision,
                signers: Signers {
                    approver: key_id.clone(),
                    seal: seal.key_id(),
                },
                previous_statement: None,
                bagging_date: day,
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
        let (blobs, seal_key, log_key) = (self.blobs, self.seal, self.log);
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
                key_id,
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
            let statement_sha256 = sealed.statement_sha256();
            let index = tlog::append(&tx, log_key, &sealed.log_entry(), Some(case_id), now)?;
            let records = [
                tlog::key_record(&tx, &key_id)?,
                tlog::key_record(&tx, &seal_key.key_id())?,
            ];
            let evidence = tlog::open(&tx, log_key)
                .evidence(index, &records)
                .map_err(esign_error)?;
            let mut file = sealed.finish(evidence).map_err(esign_error)?;
            file.flush()?;
            file.sync_all()?;
            drop(file);
            let (sha256, size) = blobs.adopt(temp)?;
            tx.execute(
            "INSERT INTO archives (case_id, sha256, size, statement_sha256, log_index, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![case_id, sha256, size, statement_sha256, index as i64, now],
        )?;
            audit::append(
                &tx,
                now,
                Some(actor),
                Some(case_id),
                "case.sealed",
                &serde_json::json!({ "archive_sha256": sha256, "statement_sha256": statement_sha256, "log_index": index, "approver_key": key_id }),
            )?;
            tx.commit()?;
            Ok((
                transitioned,
                ArchiveInfo {
                    case_id,
                    sha256,
                    size,
                    statement_sha256,
                    log_index: index,
                },
            ))
        };
        run().map_err(|error| SealFailure {
            error,
            pending: None,
        })
    }
}

/// The stored archive of a case.
pub fn archive(conn: &Connection, case_id: i64) -> Result<Option<ArchiveInfo>> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row(
            "SELECT case_id, sha256, size, statement_sha256, log_index FROM archives WHERE case_id = ?1",
            [case_id],
            |r| {
                Ok(ArchiveInfo {
                    case_id: r.get(0)?,
                    sha256: r.get(1)?,
                    size: r.get(2)?,
                    statement_sha256: r.get(3)?,
                    log_index: r.get::<_, i64>(4)? as u64,
                })
            },
        )
        .optional()?)
}
