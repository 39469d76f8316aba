//! The applicant's signature over HTTP (see `crate::signatures`): the approver holding the case
//! asks, the signer's page lists what waits and signs, everyone of the case sees the result.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Caller, Json, Path};
use crate::error::{Error, Result};
use crate::materials;
use crate::signatures::{self, Signature, SignatureRequest, Signer};
use crate::state::AppState;

/// Who is to sign.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskSignature {
    /// `agent`: on the agent's device at the service point; `resident`: on the phone the
    /// applicant joined from.
    pub signer: Signer,
}

/// Asks the applicant to sign the summary of the application (the approver holding the case, in
/// its call). Refused with `recording_required` while the call is not recorded, unless
/// `signature_requires_recording` is off.
#[utoipa::path(post, path = "/api/cases/{id}/signatures", params(("id" = i64, Path)), request_body = AskSignature,
    responses((status = 201, body = SignatureRequest), (status = 403, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn ask(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<AskSignature>,
) -> Result<Response> {
    let actor = caller.actor();
    let now = state.now();
    let (recording, _) = crate::recording::status(&state, id, actor.id);
    let requires = state.config.signature_requires_recording;
    let request = state
        .db
        .call(move |c| signatures::request(c, id, &actor, body.signer, recording, requires, now))
        .await?;
    super::invitations::announce(&state, id, "signature.requested").await;
    Ok((StatusCode::CREATED, Json(request)).into_response())
}

/// The case's signature requests, newest first: for its holding approver, its agent and its
/// residents.
#[utoipa::path(get, path = "/api/cases/{id}/signatures", params(("id" = i64, Path)),
    responses((status = 200, body = [SignatureRequest]), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<Vec<SignatureRequest>>> {
    let actor = caller.actor();
    let list = state
        .db
        .call(move |c| {
            signatures::facts_for(c, id, &actor)?;
            signatures::list(c, id)
        })
        .await?;
    Ok(Json(list))
}

/// The signer signs: the strokes and the rendered pad, with the SHA-256 of the summary exactly as
/// shown. Both become materials of the case (the PNG, and a JSON record of what was signed and
/// how) in one transaction with the request's new state; acknowledged only then.
#[utoipa::path(post, path = "/api/cases/{id}/signatures/{request}/sign", params(("id" = i64, Path), ("request" = i64, Path)),
    request_body = Signature,
    responses((status = 201, body = SignatureRequest), (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn sign(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, request_id)): Path<(i64, i64)>,
    Json(body): Json<Signature>,
) -> Result<Response> {
    let actor = caller.actor();
    let (request, image, body) = {
        let actor = actor.clone();
        state
            .db
            .call(move |c| {
                let request = signatures::for_signer(c, id, request_id, &actor)?;
                let image = signatures::check(&request, &body)?;
                Ok((request, image, body))
            })
            .await?
    };
    let now = state.now();
    let blobs = state.blobs.clone();
    let made = tokio::task::spawn_blocking(move || -> Result<_> {
        let stem = format!("申请人签名-{request_id}");
        let image = materials::made_blob(&blobs, &image, "image/png", format!("{stem}.png"))?;
        let record = signatures::record(&request, &body, &image.sha256, now);
        let record =
            materials::made_blob(&blobs, &record, "application/json", format!("{stem}.json"))?;
        Ok((image, record))
    })
    .await
    .map_err(|e| Error::Internal(format!("signature task failed: {e}")))??;
    let (image, record) = made;
    let record_sha256 = record.sha256.clone();
    let event = "signature.material_stored";
    let signed = super::cases::record_made(
        &state,
        id,
        actor.clone(),
        vec![image, record],
        event,
        move |tx, ids| {
            // Again, in the transaction: it may have been signed or replaced meanwhile.
            let request = signatures::for_signer(tx, id, request_id, &actor)?;
            signatures::signed(tx, &request, &actor, ids[0], ids[1], &record_sha256, now)?;
            signatures::list(tx, id)?
                .into_iter()
                .find(|r| r.id == request_id)
                .ok_or(Error::NotFound("signature request"))
        },
    )
    .await?;
    tracing::info!(case_id = id, request = request_id, "signature stored");
    super::invitations::announce(&state, id, "signature.signed").await;
    Ok((StatusCode::CREATED, Json(signed)).into_response())
}
