//! Pointing at what is wrong (标注, see `crate::annotations`): over HTTP the approver starts an
//! annotation on a frozen frame (its bytes) or a material, anyone in the call fetches the picture,
//! and the approver saves the annotated picture; over `/ws` the approver's shapes and pointer
//! reach everyone in the call at once.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::{Caller, Json, Path, Query};
use crate::annotations::{self, Annotation, NewBase, Shape};
use crate::calls::{CallErrorCode, call_error};
use crate::error::{Error, Result};
use crate::materials;
use crate::protocol::ServerMessage;
use crate::state::{AppState, Audience};
use crate::workflow::CaseFacts;

/// A material to draw on.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnnotateMaterial {
    /// The material (a picture of the case).
    pub material_id: i64,
}

/// Whose camera a frozen frame is of.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct FrameOf {
    /// The participant (`user-<id>`).
    pub of: String,
}

/// The annotated picture, rendered by the approver's page.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveAnnotation {
    /// The picture with its marks, a PNG, base64.
    pub image_png: String,
}

/// Tells the call's people (all but `except`) about an annotation.
fn tell(state: &AppState, facts: &CaseFacts, message: ServerMessage, except: Option<i64>) {
    let people = facts
        .call_people()
        .into_iter()
        .filter(|p| Some(*p) != except)
        .collect();
    state.notify(Audience::Users(people), message);
}

async fn started(state: &AppState, annotation: Annotation) -> Result<Response> {
    let case_id = annotation.case_id;
    let facts = state
        .db
        .call(move |c| crate::cases::facts(c, case_id))
        .await?
        .ok_or(Error::NotFound("case"))?;
    let message = ServerMessage::CallAnnotation {
        case_id,
        annotation: annotation.clone(),
    };
    tell(state, &facts, message, None);
    Ok((StatusCode::CREATED, Json(annotation)).into_response())
}

/// Starts an annotation on one of the case's pictures (the approver holding it, in its call).
#[utoipa::path(post, path = "/api/cases/{id}/annotations", params(("id" = i64, Path)), request_body = AnnotateMaterial,
    responses((status = 201, body = Annotation), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn start_on_material(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<AnnotateMaterial>,
) -> Result<Response> {
    let actor = caller.actor();
    let now = state.now();
    let base = NewBase::Material(body.material_id);
    let annotation = state
        .db
        .call(move |c| annotations::start(c, id, &actor, base, now))
        .await?;
    started(&state, annotation).await
}

/// Starts an annotation on a frame the approver froze from a participant's camera: the body is
/// the frame (JPEG or PNG, at most 8 MiB), kept with the case for its call's people.
#[utoipa::path(post, path = "/api/cases/{id}/annotations/frame", params(("id" = i64, Path), FrameOf),
    request_body(content = Vec<u8>, content_type = "image/jpeg"),
    responses((status = 201, body = Annotation), (status = 413, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody)))]
pub async fn start_on_frame(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(frame): Query<FrameOf>,
    body: axum::body::Bytes,
) -> Result<Response> {
    if body.len() as u64 > annotations::MAX_FRAME_BYTES {
        return Err(Error::TooLarge(format!(
            "a frame is at most {} bytes",
            annotations::MAX_FRAME_BYTES
        )));
    }
    let media_type = match materials::sniff(&body) {
        Ok(t @ ("image/jpeg" | "image/png")) => t,
        _ => {
            return Err(Error::UnsupportedMedia(
                "a frozen frame is a JPEG or PNG picture".into(),
            ));
        }
    };
    // Who may draw, and whose camera, is checked before the bytes are kept.
    let actor = caller.actor();
    let now = state.now();
    {
        let (actor, of) = (actor.clone(), frame.of.clone());
        state
            .db
            .call(move |c| annotations::may_freeze(c, id, &actor, &of, now))
            .await?;
    }
    let blobs = state.blobs.clone();
    let (sha256, _) = tokio::task::spawn_blocking(move || blobs.store_bytes(&body))
        .await
        .map_err(|e| Error::Internal(format!("frame task failed: {e}")))??;
    let base = NewBase::Frame {
        of: frame.of,
        sha256,
        media_type,
    };
    let annotation = state
        .db
        .call(move |c| annotations::start(c, id, &actor, base, now))
        .await?;
    started(&state, annotation).await
}

/// The picture an annotation is drawn on, for the call's people.
#[utoipa::path(get, path = "/api/cases/{id}/annotations/{annotation}/base", params(("id" = i64, Path), ("annotation" = i64, Path)),
    responses((status = 200, description = "the picture's bytes"), (status = 404, body = crate::error::ErrorBody)))]
pub async fn base(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, annotation)): Path<(i64, i64)>,
) -> Result<Response> {
    let actor = caller.actor();
    let now = state.now();
    let (sha256, media_type) = state
        .db
        .call(move |c| annotations::base(c, id, annotation, &actor, now))
        .await?;
    let file = tokio::fs::File::open(state.blobs.path(&sha256)).await?;
    let mut headers = HeaderMap::new();
    if let Ok(value) = media_type.parse() {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    let stream = tokio_util::io::ReaderStream::new(file);
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// Saves the annotated picture: the PNG and a JSON record (what was drawn on what) become
/// materials of the case, in one transaction with the annotation's new state.
#[utoipa::path(post, path = "/api/cases/{id}/annotations/{annotation}/save", params(("id" = i64, Path), ("annotation" = i64, Path)),
    request_body = SaveAnnotation,
    responses((status = 201, body = Annotation), (status = 400, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn save(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, annotation_id)): Path<(i64, i64)>,
    Json(body): Json<SaveAnnotation>,
) -> Result<Response> {
    use base64::Engine;
    let image = base64::engine::general_purpose::STANDARD
        .decode(body.image_png.as_bytes())
        .map_err(|_| Error::bad("invalid_field", "image_png: not base64"))?;
    if !matches!(materials::sniff(&image), Ok("image/png")) {
        return Err(Error::bad("invalid_field", "image_png: not a PNG image"));
    }
    let actor = caller.actor();
    let now = state.now();
    let annotation = {
        let actor = actor.clone();
        state
            .db
            .call(move |c| annotations::for_saving(c, id, annotation_id, &actor, now))
            .await?
    };
    let blobs = state.blobs.clone();
    let made = tokio::task::spawn_blocking(move || -> Result<_> {
        let stem = format!("标注-{annotation_id}");
        let image = materials::made_blob(&blobs, &image, "image/png", format!("{stem}.png"))?;
        let record = annotations::record(&annotation, &image.sha256, now);
        let record =
            materials::made_blob(&blobs, &record, "application/json", format!("{stem}.json"))?;
        Ok(vec![image, record])
    })
    .await
    .map_err(|e| Error::Internal(format!("annotation task failed: {e}")))??;
    let event = "annotation.material_stored";
    let saved =
        super::cases::record_made(&state, id, actor.clone(), made, event, move |tx, ids| {
            let annotation = annotations::for_saving(tx, id, annotation_id, &actor, now)?;
            annotations::saved(tx, &annotation, &actor, ids[0], ids[1], now)
        })
        .await?;
    let facts = state
        .db
        .call(move |c| crate::cases::facts(c, id))
        .await?
        .ok_or(Error::NotFound("case"))?;
    let message = ServerMessage::CallAnnotation {
        case_id: id,
        annotation: saved.clone(),
    };
    tell(&state, &facts, message, None);
    Ok((StatusCode::CREATED, Json(saved)).into_response())
}

/// `call.annotate`, `call.pointer` and `call.annotation_close` from a socket: the approver's
/// shapes, pointer and closing, passed to the call's people. Returns the `call.error`, if refused.
pub(crate) async fn on_socket(
    state: &AppState,
    user: &crate::accounts::User,
    case_id: i64,
    kind: &str,
    message: &Value,
) -> Option<Value> {
    let refused = |code, text: &str| Some(call_error(Some(case_id), code, text));
    let Some(annotation_id) = message.get("annotation_id").and_then(Value::as_i64) else {
        return refused(
            CallErrorCode::BadMessage,
            &format!("call.{kind} needs a numeric annotation_id"),
        );
    };
    let actor = user.actor();
    let now = state.now();
    if kind == "pointer" {
        let at = |k| {
            message
                .get(k)
                .and_then(Value::as_f64)
                .filter(|v| (0.0..=1.0).contains(v))
        };
        let (Some(x), Some(y)) = (at("x"), at("y")) else {
            return refused(
                CallErrorCode::BadMessage,
                "call.pointer needs x and y from 0 to 1",
            );
        };
        if !state.pointer_pace.admit(user.id, now) {
            return None; // a pointer moving faster than shown: the next position will do
        }
        let facts = state
            .db
            .call(move |c| {
                let annotation = annotations::get(c, case_id, annotation_id)?;
                let facts = crate::cases::facts(c, case_id)?.ok_or(Error::NotFound("case"))?;
                if annotation.by != actor.id || annotation.closed {
                    return Err(Error::NotFound("annotation"));
                }
                Ok(facts)
            })
            .await;
        let Ok(facts) = facts else {
            return refused(
                CallErrorCode::NotJoined,
                "no open picture of yours to point at",
            );
        };
        let message = ServerMessage::CallPointer {
            case_id,
            annotation_id,
            from: user.id,
            x,
            y,
        };
        tell(state, &facts, message, Some(user.id));
        return None;
    }
    let drawn = if kind == "annotate" {
        let shapes: Vec<Shape> = match message.get("shapes").cloned().map(serde_json::from_value) {
            Some(Ok(shapes)) => shapes,
            Some(Err(e)) => {
                return refused(
                    CallErrorCode::BadMessage,
                    &format!("call.annotate: shapes: {e}"),
                );
            }
            None => return refused(CallErrorCode::BadMessage, "call.annotate needs shapes"),
        };
        state
            .db
            .call(move |c| annotations::draw(c, case_id, annotation_id, &actor, &shapes, now))
            .await
    } else {
        state
            .db
            .call(move |c| annotations::close(c, case_id, annotation_id, &actor, now))
            .await
    };
    match drawn {
        Ok((annotation, facts)) => {
            let message = ServerMessage::CallAnnotation {
                case_id,
                annotation,
            };
            tell(state, &facts, message, None);
            None
        }
        Err(Error::BadRequest { message, .. }) | Err(Error::Conflict { message, .. }) => {
            refused(CallErrorCode::BadMessage, &message)
        }
        Err(e) => {
            tracing::debug!(case_id, error = %e, "annotation refused");
            refused(
                CallErrorCode::CallRefused,
                "only the approver holding the case draws, on an open picture of its call",
            )
        }
    }
}
