//! Signing keys, signed decisions, archives, verification and the public transparency log.

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::cases::{After, announce};
use super::{Caller, Json, Path, Query};
use crate::cases::{self, CaseView};
use crate::error::{Error, Result};
use crate::sealing::{self, ArchiveInfo, Prepared};
use crate::state::AppState;
use crate::tlog::{self, SigningKeyInfo};
use crate::workflow::{self, Actor, CaseFacts, Command, Role};

pub(crate) fn sealer(state: &AppState) -> sealing::Sealer<'_> {
    sealing::Sealer {
        blobs: &state.blobs,
        seal: &state.seal_key,
        log: &state.log_key,
    }
}

/// A browser's public key to register.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterKey {
    /// The raw 32-byte Ed25519 public key (WebCrypto `exportKey("raw")`), base64.
    pub public_key: String,
}

/// Registers an approver's browser key in the transparency log.
#[utoipa::path(post, path = "/api/keys", request_body = RegisterKey, responses((status = 201, body = SigningKeyInfo), (status = 409, body = crate::error::ErrorBody)))]
pub async fn register_key(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<RegisterKey>,
) -> Result<Response> {
    caller.require(&[Role::Approver])?;
    let vk = esign::sig::public_key_from_base64(body.public_key.trim())
        .map_err(|e| Error::bad("invalid_field", format!("public_key: {e}")))?;
    let actor = caller.actor();
    let now = state.now();
    let log_key = state.log_key.clone();
    let info = state
        .db
        .call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let info = tlog::register_key(
                &tx,
                &log_key,
                &vk,
                Some(actor.id),
                esign::entry::KeyRole::Approver,
                now,
            )?;
            crate::audit::append(
                &tx,
                now,
                Some(&actor),
                None,
                "key.registered",
                &serde_json::json!({ "key_id": info.key_id, "log_index": info.log_index }),
            )?;
            tx.commit()?;
            Ok(info)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// Signing keys: an approver's own; every key for auditors and admins.
#[utoipa::path(get, path = "/api/keys", responses((status = 200, body = [SigningKeyInfo])))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<SigningKeyInfo>>> {
    caller.require(&[Role::Approver, Role::Auditor, Role::Admin])?;
    let user = (caller.user.role == Role::Approver).then_some(caller.user.id);
    Ok(Json(state.db.call(move |c| tlog::keys(c, user)).await?))
}

/// Why a key is revoked.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeKey {
    /// A few words, no personal data (e.g. "device lost").
    pub reason: String,
}

/// Revokes a key (its owner or an admin); decisions sealed before stay valid, later ones fail.
#[utoipa::path(post, path = "/api/keys/{key_id}/revoke", params(("key_id" = String, Path)), request_body = RevokeKey, responses((status = 200, body = SigningKeyInfo)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
    Json(body): Json<RevokeKey>,
) -> Result<Json<SigningKeyInfo>> {
    caller.require(&[Role::Approver, Role::Admin])?;
    let actor = caller.actor();
    let now = state.now();
    let log_key = state.log_key.clone();
    Ok(Json(
        state
            .db
            .call(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let key = tlog::key(&tx, &key_id)?.ok_or(Error::NotFound("key"))?;
                let own = key.user_id == Some(actor.id);
                if key.role != "approver" || !(own || actor.role == Role::Admin) {
                    return Err(Error::NotFound("key"));
                }
                let info = tlog::revoke_key(&tx, &log_key, &key_id, body.reason.trim(), now)?;
                crate::audit::append(&tx, now, Some(&actor), None, "key.revoked", &serde_json::json!({ "key_id": key_id, "log_index": info.revocation_log_index }))?;
                tx.commit()?;
                Ok(info)
            })
            .await?,
    ))
}

/// A decision to prepare for signing.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// `approve` or `reject`.
    pub decision: String,
    /// The reason (required to reject).
    #[serde(default)]
    pub reason: String,
    /// The registered key that will sign.
    pub key_id: String,
}

/// Step 1 of a decision: packs the archive's payload and returns the statement bytes to sign in
/// the browser. Nothing is decided yet.
#[utoipa::path(post, path = "/api/cases/{id}/decision", params(("id" = i64, Path)), request_body = DecisionRequest, responses((status = 200, body = Prepared), (status = 409, body = crate::error::ErrorBody)))]
pub async fn prepare_decision(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<DecisionRequest>,
) -> Result<Json<Prepared>> {
    let command = match body.decision.as_str() {
        "approve" => Command::Approve {
            reason: body.reason,
        },
        "reject" => Command::Reject {
            reason: body.reason,
        },
        other => {
            return Err(Error::bad(
                "invalid_field",
                format!("decision: {other:?}; use approve or reject"),
            ));
        }
    };
    let actor = caller.actor();
    // The recording ends with the decision: its files are closed and go into the archive. Only
    // once the caller is known to be allowed to decide now (the same dry run `prepare` repeats).
    let allowed = {
        let (actor, command) = (actor.clone(), command.clone());
        state
            .db
            .call(move |c| {
                let facts = crate::cases::facts(c, id)?.ok_or(Error::NotFound("case"))?;
                Ok(crate::workflow::apply(&facts, &actor, &command)?)
            })
            .await
    };
    if allowed.is_ok()
        && let Err(e) = crate::recording::stop_and_store(&state, id).await
    {
        tracing::error!(case_id = id, error = %e, "recording not stored");
    }
    let now = state.now();
    let gathered = state
        .db
        .call(move |c| sealing::Sealer::gather(c, id, &actor, command, &body.key_id, now))
        .await?;
    let keys = state.clone();
    let (pending, prepared) = tokio::task::spawn_blocking(move || sealer(&keys).pack(gathered))
        .await
        .map_err(|e| Error::Internal(format!("packing task: {e}")))??;
    state.pending.put(id, pending);
    Ok(Json(prepared))
}

/// The browser's signature over the prepared statement.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SealRequest {
    /// The 64-byte Ed25519 signature over `signing_bytes`, base64.
    pub signature: String,
}

/// The decided case and its archive.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Sealed {
    /// The case after the decision.
    pub case: Option<CaseView>,
    /// The sealed archive.
    pub archive: ArchiveInfo,
}

/// Step 2: checks the signature against the approver's registered key, counter-signs with the
/// seal key, appends the statement to the log, stores the archive, and only then decides.
#[utoipa::path(post, path = "/api/cases/{id}/decision/seal", params(("id" = i64, Path)), request_body = SealRequest, responses((status = 200, body = Sealed), (status = 400, body = crate::error::ErrorBody)))]
pub async fn seal_decision(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<SealRequest>,
) -> Result<Json<Sealed>> {
    // Who may seal is settled from the case before the prepared decisions are looked at, so
    // nobody else learns whether one is waiting.
    let actor = caller.actor();
    state
        .db
        .call(move |c| {
            let facts = cases::visible_facts(c, id, &actor)?;
            if workflow::holds(&actor, &facts) {
                Ok(())
            } else {
                Err(Error::Forbidden(
                    "only the approver holding the case may seal its decision".into(),
                ))
            }
        })
        .await?;
    let pending = state.pending.take_for(id, caller.user.id).ok_or_else(|| {
        Error::conflict(
            "not_prepared",
            "no decision is prepared for this case; prepare it first",
        )
    })?;
    let actor = caller.actor();
    let now = state.now();
    let keys = state.clone();
    let (transitioned, archive, after) = state
        .db
        .call(
            move |c| match sealer(&keys).seal(c, pending, &body.signature, &actor, now) {
                Ok((transitioned, archive)) => {
                    let after = After::load(c, id, &transitioned, &actor, now)?;
                    Ok((transitioned, archive, after))
                }
                Err(failure) => {
                    if let Some(back) = failure.pending {
                        keys.pending.put(id, back);
                    }
                    Err(failure.error)
                }
            },
        )
        .await?;
    tracing::info!(
        case_id = id,
        log_index = archive.log_index,
        "decision sealed"
    );
    let case = announce(&state, caller.user.id, id, &transitioned, after, now);
    Ok(Json(Sealed { case, archive }))
}

/// Who may have a case's full archive: it holds the applicant's name and ID number unmasked and
/// the materials, so only the approver holding the case and auditors, the two roles that see the
/// applicant unmasked. Everyone else who may see the case gets its receipt.
fn check_archive_access(actor: &Actor, facts: &CaseFacts, id: i64) -> Result<()> {
    if workflow::holds(actor, facts) || actor.role == Role::Auditor {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "the full archive holds the applicant's personal data and is for the approver holding the case and auditors; \
             the case's receipt (GET /api/cases/{id}/receipt) proves the signed decision"
        )))
    }
}

/// Which of a case's archives: its place in the chain (1 is the signed decision), or the newest.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ArchiveQuery {
    /// 1 for the decision, 2… for each continuation; the newest when left out.
    pub sequence: Option<i64>,
}

/// The file name of an archive (without extension): the case number, and for a continuation
/// its place and kind, e.g. `YB-20261126-0001-2-issued`.
fn file_stem(info: &sealing::ArchiveInfo, number: &str) -> String {
    if info.sequence == 1 {
        number.to_string()
    } else {
        format!("{number}-{}-{}", info.sequence, info.kind)
    }
}

/// The case's archive record (`sequence`, or the newest) and its file name, for a caller who may
/// see the case.
async fn sealed(
    state: &AppState,
    caller: &Caller,
    id: i64,
    sequence: Option<i64>,
    full: bool,
) -> Result<(sealing::ArchiveInfo, String)> {
    let actor = caller.actor();
    state
        .db
        .call(move |c| {
            let facts = cases::visible_facts(c, id, &actor)?;
            if full {
                check_archive_access(&actor, &facts, id)?;
            }
            let info = sealing::archive(c, id, sequence)?.ok_or(Error::NotFound("archive"))?;
            let number: String =
                c.query_row("SELECT number FROM cases WHERE id = ?1", [id], |r| r.get(0))?;
            let stem = file_stem(&info, &number);
            Ok((info, stem))
        })
        .await
}

/// The signed receipt of a case's decision (JSON): the statement and its log evidence without
/// the payload, verifiable with `cloudhelp verify RECEIPT --trust TRUST`; for everyone who may see
/// the case.
#[utoipa::path(get, path = "/api/cases/{id}/receipt", params(("id" = i64, Path), ArchiveQuery), responses((status = 200, content_type = "application/json", description = "a cloudhelp-receipt/1 document"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn download_receipt(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(q): Query<ArchiveQuery>,
) -> Result<Response> {
    let (info, number) = sealed(&state, &caller, id, q.sequence, false).await?;
    let path = state.blobs.path(&info.sha256);
    let receipt = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(path)?;
        esign::verify::Receipt::from_archive(std::io::BufReader::new(file))
            .map_err(|e| Error::Internal(format!("receipt of a sealed archive: {e}")))
    })
    .await
    .map_err(|e| Error::Internal(format!("receipt task: {e}")))??;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{number}-receipt.json\""),
            ),
            (header::CACHE_CONTROL, "private, no-store".to_string()),
        ],
        receipt.to_json(),
    )
        .into_response())
}

/// The sealed archive of a case (BagIt zip), for the approver holding it and auditors.
#[utoipa::path(get, path = "/api/cases/{id}/archive", params(("id" = i64, Path), ArchiveQuery), responses((status = 200, content_type = "application/zip"), (status = 403, body = crate::error::ErrorBody)))]
pub async fn download_archive(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(q): Query<ArchiveQuery>,
) -> Result<Response> {
    let (info, number) = sealed(&state, &caller, id, q.sequence, true).await?;
    let file = tokio::fs::File::open(state.blobs.path(&info.sha256)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (header::CONTENT_LENGTH, info.size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{number}.zip\""),
            ),
            (header::CACHE_CONTROL, "private, no-store".to_string()),
            (
                header::HeaderName::from_static("x-content-sha256"),
                info.sha256.clone(),
            ),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    )
        .into_response())
}

/// Verifies an uploaded archive with this server's trust file — the same verifier as
/// `cloudhelp verify` — and returns its report (auditors).
#[utoipa::path(post, path = "/api/verify", request_body(content = Vec<u8>, content_type = "application/zip"), responses((status = 200, description = "the verifier's report")))]
pub async fn verify_archive(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Response> {
    caller.require(&[Role::Auditor])?;
    let received = state
        .blobs
        .receive(
            body.into_data_stream(),
            state.config.max_verify_bytes,
            "max_verify_bytes",
        )
        .await?;
    let trust = state.trust.clone();
    let report = tokio::task::spawn_blocking(move || {
        esign::verify::verify_file(received.path(), &trust).to_json()
    })
    .await
    .map_err(|e| Error::Internal(format!("verifier task: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], report).into_response())
}

/// The log's current signed checkpoint (C2SP signed note), public.
#[utoipa::path(get, path = "/api/log/checkpoint", responses((status = 200, content_type = "text/plain")))]
pub async fn checkpoint(State(state): State<AppState>) -> Result<Response> {
    let key = state.log_key.clone();
    let signed = state.db.call(move |c| tlog::checkpoint(c, &key)).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        signed.note,
    )
        .into_response())
}

/// Sizes for a consistency proof.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// The older tree size.
    pub old: u64,
    /// The newer tree size.
    pub new: u64,
}

/// A consistency proof between two log sizes.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsistencyProof {
    /// Older size.
    pub old: u64,
    /// Newer size.
    pub new: u64,
    /// The proof's hashes, base64.
    pub proof: Vec<String>,
}

/// The consistency proof between two sizes of the log, public: anyone can check it never forks.
#[utoipa::path(get, path = "/api/log/consistency", params(ConsistencyQuery), responses((status = 200, body = ConsistencyProof)))]
pub async fn consistency(
    State(state): State<AppState>,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>> {
    let key = state.log_key.clone();
    let hashes = state
        .db
        .call(move |c| tlog::consistency(c, &key, q.old, q.new))
        .await?;
    let proof = hashes
        .iter()
        .map(|h| base64::engine::general_purpose::STANDARD.encode(h))
        .collect();
    Ok(Json(ConsistencyProof {
        old: q.old,
        new: q.new,
        proof,
    }))
}

/// The trust file to pin: the log's public key (check it out of band, e.g. from the operator's
/// published documents, before relying on it).
#[utoipa::path(get, path = "/api/log/trust", responses((status = 200, content_type = "application/json")))]
pub async fn trust(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.trust.to_json(),
    )
        .into_response()
}

/// Decodes a consistency proof's hashes (for the CLI).
pub fn decode_proof(proof: &ConsistencyProof) -> Result<Vec<esign::merkle::Hash>> {
    proof
        .proof
        .iter()
        .map(|h| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(h)
                .map_err(|e| Error::bad("invalid_field", format!("proof: {e}")))?;
            <esign::merkle::Hash>::try_from(raw.as_slice())
                .map_err(|_| Error::bad("invalid_field", "proof: a hash is not 32 bytes"))
        })
        .collect()
}
