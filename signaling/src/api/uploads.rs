//! Resumable uploads of materials over HTTP (see `crate::uploads`): start, send a chunk at the
//! acknowledged offset, ask where it stands, cancel.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::cases::{check_material_size, material_check, store_material};
use super::{Caller, Json, Path};
use crate::error::{Error, Result};
use crate::materials::{self, Material};
use crate::state::AppState;
use crate::uploads::{self, MAX_CHUNK_BYTES, Upload};

/// The header a chunk names its offset in (as tus does).
pub const UPLOAD_OFFSET: &str = "upload-offset";

/// A file to upload in chunks.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartUpload {
    /// The file's name as the uploader knows it (no folders).
    pub filename: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lowercase hex: checked when the last chunk arrives.
    pub sha256: String,
}

/// Starts a resumable upload of a material: the case is checked as for a plain upload.
#[utoipa::path(post, path = "/api/cases/{id}/uploads", params(("id" = i64, Path)), request_body = StartUpload,
    responses((status = 201, body = Upload), (status = 413, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<StartUpload>,
) -> Result<Response> {
    let filename = materials::check_filename(&body.filename)?;
    uploads::check_sha256(&body.sha256)?;
    check_material_size(body.size, state.config.max_material_bytes)?;
    let actor = caller.actor();
    let check = material_check(id, actor.clone(), state.config.max_materials_per_case);
    let now = state.now();
    let (upload, expired) = state
        .db
        .call(move |c| {
            check(c)?;
            uploads::create(c, id, &actor, &filename, body.size, &body.sha256, now)
        })
        .await?;
    remove_partials(&state, expired).await;
    tracing::info!(case_id = id, upload = %upload.id, size = upload.size, "upload started");
    Ok((StatusCode::CREATED, Json(upload)).into_response())
}

/// Where an upload stands: the offset the next chunk starts at.
#[utoipa::path(get, path = "/api/cases/{id}/uploads/{upload}", params(("id" = i64, Path), ("upload" = String, Path)),
    responses((status = 200, body = Upload), (status = 404, body = crate::error::ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, upload)): Path<(i64, String)>,
) -> Result<Json<Upload>> {
    let actor = caller.actor();
    Ok(Json(
        state
            .db
            .call(move |c| uploads::get(c, id, &upload, &actor))
            .await?,
    ))
}

/// One chunk of an upload, at the offset in `Upload-Offset` (which must be the acknowledged
/// one). Answered once its bytes are fsynced and the new offset recorded: 200 with the upload,
/// or, for the last chunk, 201 with the stored material (its digest checked).
#[utoipa::path(patch, path = "/api/cases/{id}/uploads/{upload}", params(("id" = i64, Path), ("upload" = String, Path), ("Upload-Offset" = u64, Header)),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses((status = 200, body = Upload), (status = 201, body = Material), (status = 409, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody)))]
pub async fn chunk(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, upload_id)): Path<(i64, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let offset = headers
        .get(UPLOAD_OFFSET)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            Error::bad(
                "missing_offset",
                "a chunk names its offset in the Upload-Offset header",
            )
        })?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_CHUNK_BYTES) {
        return Err(Error::TooLarge(format!(
            "a chunk may carry at most {MAX_CHUNK_BYTES} bytes"
        )));
    }
    let actor = caller.actor();
    let upload = {
        let (actor, upload_id) = (actor.clone(), upload_id.clone());
        state
            .db
            .call(move |c| uploads::get(c, id, &upload_id, &actor))
            .await?
    };
    if offset != upload.offset {
        return Err(Error::conflict(
            "offset_mismatch",
            format!(
                "the next chunk starts at byte {} (this one says {offset})",
                upload.offset
            ),
        ));
    }
    let room = (upload.size - offset).min(MAX_CHUNK_BYTES);
    let reached = state
        .blobs
        .append_partial(&upload.id, offset, body.into_data_stream(), room)
        .await?;
    {
        let upload_id = upload.id.clone();
        state
            .db
            .call(move |c| uploads::acknowledge(c, &upload_id, reached))
            .await?;
    }
    if reached < upload.size {
        return Ok(Json(Upload {
            offset: reached,
            ..upload
        })
        .into_response());
    }
    let material = finish(&state, id, actor, upload).await?;
    Ok((StatusCode::CREATED, Json(material)).into_response())
}

/// The last chunk is in: check the digest and store the material (the upload's row goes in the
/// same turn of the database as the material's).
async fn finish(
    state: &AppState,
    id: i64,
    actor: crate::workflow::Actor,
    upload: Upload,
) -> Result<Material> {
    let check = material_check(id, actor.clone(), state.config.max_materials_per_case);
    let facts = state.db.call(check.clone()).await?;
    let blobs = state.blobs.clone();
    let (upload_id, sha256) = (upload.id.clone(), upload.sha256.clone());
    let received = tokio::task::spawn_blocking(move || blobs.finish_partial(&upload_id, &sha256))
        .await
        .map_err(|e| Error::Internal(format!("upload task failed: {e}")))?;
    let stored = match received {
        Ok(received) => {
            let upload_id = upload.id.clone();
            store_material(
                state,
                id,
                actor,
                facts,
                received,
                upload.filename,
                check,
                move |c| uploads::remove(c, &upload_id),
            )
            .await
        }
        Err(err) => Err(err),
    };
    if stored.is_err() {
        // Its bytes are gone (refused, and removed with the received file): so is the upload.
        let upload_id = upload.id.clone();
        state
            .db
            .call(move |c| uploads::remove(c, &upload_id))
            .await?;
    }
    stored
}

/// Cancels an upload: its bytes are removed.
#[utoipa::path(delete, path = "/api/cases/{id}/uploads/{upload}", params(("id" = i64, Path), ("upload" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, upload_id)): Path<(i64, String)>,
) -> Result<StatusCode> {
    let actor = caller.actor();
    let removed = state
        .db
        .call(move |c| {
            let upload = uploads::get(c, id, &upload_id, &actor)?;
            uploads::remove(c, &upload.id)?;
            Ok(upload.id)
        })
        .await?;
    remove_partials(&state, vec![removed]).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes the bytes of uploads that are no longer recorded.
async fn remove_partials(state: &AppState, ids: Vec<String>) {
    if ids.is_empty() {
        return;
    }
    let blobs = state.blobs.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for id in ids {
            let _ = std::fs::remove_file(blobs.partial_path(&id));
        }
    })
    .await;
}
