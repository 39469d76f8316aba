//! Cases: open, list, view, the workflow actions, materials, the rating and follow-ups.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{Caller, Json, Path, Query};
use crate::cases::{self, CaseView, OpenCase, QueueItem};
use crate::catalogue::{self, Catalogue};
use crate::error::{Error, Result};
use crate::materials::{self, Material};
use crate::metrics::{DepartmentLabel, EventLabel, ScoreLabel, TargetLabel};
use crate::protocol::ServerMessage;
use crate::ratings::{self, FollowUp, Rating};
use crate::sealing::Update;
use crate::state::{AppState, Audience};
use crate::workflow::{self, Actor, CaseFacts, CaseState, Command, IdentityMethod, Role};

/// The catalogue of departments, points and items.
#[utoipa::path(get, path = "/api/catalogue", responses((status = 200, body = Catalogue)))]
pub async fn catalogue(State(state): State<AppState>, _caller: Caller) -> Result<Json<Catalogue>> {
    Ok(Json(state.db.call(|c| catalogue::load(c)).await?))
}

/// An expert an approver may invite.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExpertRef {
    /// User id.
    pub id: i64,
    /// Name.
    pub display_name: String,
    /// Department.
    pub department_id: Option<i64>,
}

/// The experts an approver may invite (多警种会诊).
#[utoipa::path(get, path = "/api/experts", responses((status = 200, body = [ExpertRef])))]
pub async fn experts(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ExpertRef>>> {
    caller.require(&[Role::Approver])?;
    let users = state.db.call(|c| crate::accounts::list_users(c)).await?;
    Ok(Json(
        users
            .into_iter()
            .filter(|u| u.role == Role::Expert && !u.disabled)
            .map(|u| ExpertRef {
                id: u.id,
                display_name: u.display_name,
                department_id: u.department_id,
            })
            .collect(),
    ))
}

/// The waiting cases: an approver's department, or every department for a supervisor.
#[utoipa::path(get, path = "/api/queue", responses((status = 200, body = [QueueItem])))]
pub async fn queue(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<QueueItem>>> {
    caller.require(&[Role::Approver, Role::Supervisor])?;
    let department = if caller.user.role == Role::Approver {
        caller.user.department_id
    } else {
        None
    };
    let now = state.now();
    Ok(Json(
        state
            .db
            .call(move |c| cases::queue(c, department, now))
            .await?,
    ))
}

/// Filter for the case list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only cases in this state.
    pub state: Option<CaseState>,
}

/// The cases the caller may see, newest first.
#[utoipa::path(get, path = "/api/cases", params(ListQuery), responses((status = 200, body = [CaseView])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<CaseView>>> {
    let actor = caller.actor();
    let now = state.now();
    Ok(Json(
        state
            .db
            .call(move |c| cases::list(c, &actor, q.state, now))
            .await?,
    ))
}

/// Opens a case (agents): it enters the department's queue.
#[utoipa::path(post, path = "/api/cases", request_body = OpenCase, responses((status = 201, body = CaseView), (status = 400, body = crate::error::ErrorBody)))]
pub async fn open(
    State(state): State<AppState>,
    caller: Caller,
    Json(input): Json<OpenCase>,
) -> Result<Response> {
    caller.require(&[Role::Agent])?;
    let actor = caller.actor();
    let now = state.now();
    let (view, item) = state
        .db
        .call(move |c| {
            let id = cases::open(c, &actor, &input, now)?;
            Ok((
                cases::view(c, id, &actor, now)?,
                cases::queue_item(c, id, now)?,
            ))
        })
        .await?;
    tracing::info!(case = %view.number, department = %view.department_name, "case opened");
    state
        .metrics
        .case_events
        .get_or_create(&EventLabel {
            event: "case.opened".into(),
        })
        .inc();
    if let Some(item) = item {
        state.notify(
            Audience::Queue(view.department_id),
            ServerMessage::QueueAdded { item },
        );
    }
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// One case, as the caller may see it (applicant data masked unless the caller holds the case).
#[utoipa::path(get, path = "/api/cases/{id}", params(("id" = i64, Path)), responses((status = 200, body = CaseView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<CaseView>> {
    let actor = caller.actor();
    let now = state.now();
    Ok(Json(
        state
            .db
            .call(move |c| cases::view(c, id, &actor, now))
            .await?,
    ))
}

/// The fields an action may carry; which are needed depends on the action.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Reason (reject, request-material; optional for approve and cancel).
    pub reason: Option<String>,
    /// The expert to invite (invite).
    pub expert_id: Option<i64>,
    /// The department code to transfer to (transfer).
    pub department: Option<String>,
    /// How identity was checked (identity-check).
    pub methods: Option<Vec<IdentityMethod>>,
}

fn missing(field: &'static str, action: &str) -> Error {
    Error::bad("invalid_field", format!("{field}: required for {action}"))
}

/// Applies a workflow action: accept, invite, transfer, request-material, resume, identity-check,
/// approve, reject, issue, cancel. A refused transition answers 409 naming the current state.
#[utoipa::path(
    post,
    path = "/api/cases/{id}/actions/{action}",
    params(("id" = i64, Path), ("action" = String, Path, description = "accept | invite | transfer | request-material | resume | identity-check | approve | reject | issue | cancel")),
    request_body(content = ActionBody, description = "optional for accept, resume, issue"),
    responses((status = 200, body = CaseView), (status = 409, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody))
)]
pub async fn action(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(i64, String)>,
    body: axum::body::Bytes,
) -> Result<Json<CaseView>> {
    // The body is optional (accept, resume, issue need none), so it is parsed here.
    let body: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Error::bad("invalid_json", format!("the action body: {e}")))?
    };
    let actor = caller.actor();
    let now = state.now();
    let action_name = action.clone();
    let keys = state.clone();
    let (transitioned, after) = state
        .db
        .call(move |c| {
            let reason = body.reason.clone().unwrap_or_default();
            let command = match action.as_str() {
                "accept" => Command::Accept,
                "invite" => {
                    let expert_id = body.expert_id.ok_or_else(|| missing("expert_id", &action))?;
                    let expert = crate::accounts::user_by_id(c, expert_id)?
                        .filter(|u| !u.disabled)
                        .ok_or_else(|| Error::bad("invalid_field", "expert_id: no such active user"))?;
                    Command::InviteExpert { expert: expert.actor() }
                }
                "transfer" => {
                    let code = body.department.clone().ok_or_else(|| missing("department", &action))?;
                    let to = catalogue::department_id(c, &code)?
                        .ok_or_else(|| Error::bad("invalid_field", format!("department: no department with code {code}")))?;
                    Command::Transfer { to }
                }
                "request-material" => Command::RequestMaterial { reason },
                "resume" => Command::Resume,
                "identity-check" => Command::RecordIdentityCheck { methods: body.methods.clone().ok_or_else(|| missing("methods", &action))? },
                "approve" | "reject" => {
                    return Err(Error::bad(
                        "signed_decision_required",
                        format!("{action}: decisions are signed; use POST /api/cases/{id}/decision and then /decision/seal"),
                    ));
                }
                "issue" => Command::Issue,
                "cancel" => Command::Cancel { reason },
                other => {
                    return Err(Error::bad(
                        "unknown_action",
                        format!("unknown action {other:?}; use accept, invite, transfer, request-material, resume, identity-check, approve, reject, issue or cancel"),
                    ));
                }
            };
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let transitioned = cases::transition_in(&tx, id, &actor, &command, now)?;
            if command == Command::Issue {
                // Issuing is recorded in the case's chain of signed archives, or not at all.
                super::esign::sealer(&keys).continue_case(&tx, id, &Update::Issued, Some(&actor), now)?;
            }
            tx.commit()?;
            let after = After::load(c, id, &transitioned, &actor, now)?;
            Ok((transitioned, after))
        })
        .await?;
    if transitioned.outcome.facts.experts.len() > transitioned.before.experts.len() {
        // Before the newcomer can join: no recording runs without their consent.
        crate::recording::pause_without_everyones_consent(&state, id).await;
    }
    let view = announce(&state, caller.user.id, id, &transitioned, after, now);
    Ok(Json(view.ok_or_else(|| {
        Error::conflict(
            "no_longer_visible",
            format!("{action_name} done; the case has left your view"),
        )
    })?))
}

/// What is read after a transition to tell the caller, the watchers and the metrics.
pub(crate) struct After {
    view: Option<CaseView>,
    item: Option<QueueItem>,
    timing: Timing,
}

impl After {
    /// Reads it in the transition's connection.
    pub(crate) fn load(
        c: &rusqlite::Connection,
        id: i64,
        t: &cases::Transitioned,
        actor: &Actor,
        now: i64,
    ) -> Result<After> {
        let timing: Timing = c.query_row(
            "SELECT d.name, i.simple, c.opened_at, c.queued_at FROM cases c
             JOIN departments d ON d.id = ?2 JOIN service_items i ON i.id = c.item_id WHERE c.id = ?1",
            [id, t.before.department_id],
            |r| Ok(Timing { department: r.get(0)?, simple: r.get(1)?, opened_at: r.get(2)?, queued_at: r.get(3)? }),
        )?;
        // After a transfer the former approver no longer sees the case.
        let view = match cases::view(c, id, actor, now) {
            Ok(v) => Some(v),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(After {
            view,
            item: cases::queue_item(c, id, now)?,
            timing,
        })
    }
}

/// Records a transition in the metrics and tells the queue watchers and the case's people;
/// returns the caller's view of the case, if it still sees it.
pub(crate) fn announce(
    state: &AppState,
    by: i64,
    id: i64,
    transitioned: &cases::Transitioned,
    after_read: After,
    now: i64,
) -> Option<CaseView> {
    let After { view, item, timing } = after_read;
    let before = &transitioned.before;
    let after = &transitioned.outcome.facts;
    let event = transitioned.outcome.event;
    tracing::info!(case_id = id, event, "case transition");
    record_metrics(state, before, after, event, &timing, now);
    // Queue watchers: the case left one queue and/or entered another.
    if before.state == CaseState::Waiting
        && (after.state != CaseState::Waiting || after.department_id != before.department_id)
    {
        let message = if after.state == CaseState::Cancelled {
            ServerMessage::QueueCancelled { case_id: id, by }
        } else {
            ServerMessage::QueueTaken { case_id: id, by }
        };
        state.notify(Audience::Queue(before.department_id), message);
    }
    if let Some(item) = item.filter(|_| before.state != CaseState::Waiting) {
        state.notify(
            Audience::Queue(after.department_id),
            ServerMessage::QueueAdded { item },
        );
    }
    if crate::calls::has_call(before.state) && !crate::calls::has_call(after.state) {
        let state = state.clone();
        tokio::spawn(async move {
            // A recording still running (the case was cancelled or transferred) is kept first.
            if let Err(e) = crate::recording::stop_and_store(&state, id).await {
                tracing::error!(case_id = id, error = %e, "recording not stored");
            }
            crate::recording::forget(&state, id);
            state.relay.close_room(&crate::calls::room_of(id)).await;
        });
    }
    let mut users: Vec<i64> = before
        .experts
        .iter()
        .chain(&after.experts)
        .copied()
        .collect();
    users.extend(before.approver_id.into_iter().chain(after.approver_id));
    state.notify(
        Audience::Case {
            point_id: after.point_id,
            users,
        },
        ServerMessage::CaseUpdated {
            case_id: id,
            state: after.state,
            event: event.to_string(),
        },
    );
    if before.state == CaseState::Waiting
        && (after.state != CaseState::Waiting || after.department_id != before.department_id)
    {
        // The cases behind it moved up: their agents (and residents) see the new place, told
        // after this case's own update.
        let (department, everyone) = (before.department_id, after.state == CaseState::Waiting);
        let state = state.clone();
        tokio::spawn(async move { announce_queue_moved(&state, department, id, everyone).await });
    }
    view
}

/// What the metrics need to know of a case's times.
struct Timing {
    department: String,
    simple: bool,
    opened_at: i64,
    queued_at: i64,
}

fn record_metrics(
    state: &AppState,
    before: &CaseFacts,
    after: &CaseFacts,
    event: &str,
    timing: &Timing,
    now: i64,
) {
    let m = &state.metrics;
    m.case_events
        .get_or_create(&EventLabel {
            event: event.to_string(),
        })
        .inc();
    if before.state == CaseState::Waiting && after.state == CaseState::InCall {
        let waited = (now - timing.queued_at).max(0) as f64 / 1000.0;
        m.queue_wait
            .get_or_create(&DepartmentLabel {
                department: timing.department.clone(),
            })
            .observe(waited);
    }
    let finished =
        matches!(after.state, CaseState::Issued | CaseState::Rejected) && !before.state.is_final();
    if finished && timing.simple {
        let target_ms = i64::from(state.config.simple_target_minutes) * 60_000;
        let within = now - timing.opened_at <= target_ms;
        m.simple_finished
            .get_or_create(&TargetLabel {
                within_target: within.to_string(),
            })
            .inc();
    }
}

pub(crate) fn check_material_access(actor: &Actor, facts: &CaseFacts, write: bool) -> Result<()> {
    let participant = match actor.role {
        // can_see already checked the point: its agents read, the case's own agent adds.
        Role::Agent => !write || workflow::is_case_agent(actor, facts),
        Role::Approver => workflow::holds(actor, facts),
        Role::Expert => !write,
        Role::Auditor => !write,
        // The applicant at home adds photos of its materials; it reads none.
        Role::Resident => write && facts.residents.contains(&actor.id),
        Role::Supervisor | Role::Admin => false,
    };
    if participant {
        Ok(())
    } else if write {
        Err(Error::Forbidden(
            "only the agent who opened the case or the approver holding it may add materials"
                .into(),
        ))
    } else {
        Err(Error::Forbidden(
            "materials are open to the case's participants and auditors only".into(),
        ))
    }
}

/// The materials of a case.
#[utoipa::path(get, path = "/api/cases/{id}/materials", params(("id" = i64, Path)), responses((status = 200, body = [Material])))]
pub async fn materials(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<Vec<Material>>> {
    let actor = caller.actor();
    Ok(Json(
        state
            .db
            .call(move |c| {
                let facts = cases::visible_facts(c, id, &actor)?;
                check_material_access(&actor, &facts, false)?;
                materials::list(c, id)
            })
            .await?,
    ))
}

/// Where an upload's name comes from.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The file's name as the uploader knows it (no folders).
    pub filename: String,
}

/// Uploads a material: the raw bytes are the body (any Content-Type; the type is read from the
/// bytes). Acknowledged (201) only once the bytes are on disk and recorded.
#[utoipa::path(
    post,
    path = "/api/cases/{id}/materials",
    params(("id" = i64, Path), UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = Material), (status = 413, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody))
)]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let filename = materials::check_filename(&q.filename)?;
    let limit = state.config.max_material_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(size) = declared {
        check_material_size(size, limit)?;
    }
    let actor = caller.actor();
    let check = material_check(id, actor.clone(), state.config.max_materials_per_case);
    let facts = state.db.call(check.clone()).await?;
    let received = state
        .blobs
        .receive(body.into_data_stream(), limit, "max_material_bytes")
        .await?;
    let material = store_material(&state, id, actor, facts, received, filename, check, |_| {
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(material)).into_response())
}

/// Refuses a material larger than `limit` (`max_material_bytes`).
pub(crate) fn check_material_size(size: u64, limit: u64) -> Result<()> {
    if size > limit {
        return Err(Error::TooLarge(format!(
            "the material is larger than the limit of {limit} bytes (max_material_bytes)"
        )));
    }
    Ok(())
}

/// Whether `actor` may add a material to case `id` now: it sees the case and may write to it,
/// the case takes materials in its state, and it has fewer than `max_count`. Checked before the
/// bytes come and again when they are recorded (the case may have moved on meanwhile).
pub(crate) fn material_check(
    id: i64,
    actor: Actor,
    max_count: u32,
) -> impl Fn(&mut rusqlite::Connection) -> Result<CaseFacts> + Clone + Send + 'static {
    move |c: &mut rusqlite::Connection| -> Result<CaseFacts> {
        let facts = cases::facts_for_materials(c, id, &actor)?;
        check_material_access(&actor, &facts, true)?;
        if !facts.state.accepts_materials() {
            return Err(Error::conflict(
                "invalid_transition",
                format!("cannot add materials: the case is {}", facts.state.as_str()),
            ));
        }
        if materials::count(c, id)? >= max_count {
            return Err(Error::conflict(
                "too_many_materials",
                format!("the case already has {max_count} materials (max_materials_per_case)"),
            ));
        }
        Ok(facts)
    }
}

/// Stores fully received bytes as a material of case `id`: their type read from the bytes, the
/// blob moved into place and fsynced, then `check` again, the row and `also` (in the same turn of
/// the database), then the case's people told. Acknowledge only after this returns.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn store_material(
    state: &AppState,
    id: i64,
    actor: Actor,
    facts: CaseFacts,
    received: crate::blobs::Received,
    filename: String,
    check: impl Fn(&mut rusqlite::Connection) -> Result<CaseFacts> + Send + 'static,
    also: impl FnOnce(&mut rusqlite::Connection) -> Result<()> + Send + 'static,
) -> Result<Material> {
    let media_type = materials::sniff(&received.head)?;
    let blob = materials::StoredBlob {
        sha256: received.sha256.clone(),
        size: received.size,
        media_type,
        filename,
    };
    let size = blob.size;
    let blobs = state.blobs.clone();
    tokio::task::spawn_blocking(move || blobs.commit(received))
        .await
        .map_err(|e| Error::Internal(format!("blob task failed: {e}")))??;
    let now = state.now();
    let material = state
        .db
        .call(move |c| {
            check(c)?; // the case may have moved on while the bytes streamed
            let material = materials::insert(c, id, &actor, &blob, now)?;
            also(c)?;
            Ok(material)
        })
        .await?;
    state.metrics.materials.inc();
    tracing::info!(
        case_id = id,
        material_id = material.id,
        size,
        media_type,
        "material stored"
    );
    announce_material(state, &facts, &material);
    Ok(material)
}

/// Records blobs the server made (`materials::made_blob`) as materials of case `id` by `actor`,
/// in one transaction with `then` (given the new materials' ids, in order), within the case's
/// material limit; then tells the case's staff. Returns what `then` returned.
pub(crate) async fn record_made<T: Send + 'static>(
    state: &AppState,
    id: i64,
    actor: Actor,
    blobs: Vec<materials::StoredBlob>,
    event: &'static str,
    then: impl FnOnce(&rusqlite::Transaction<'_>, &[i64]) -> Result<T> + Send + 'static,
) -> Result<T> {
    let max = state.config.max_materials_per_case;
    let now = state.now();
    let (value, facts, stored) = state
        .db
        .call(move |c| {
            let tx = c.transaction()?;
            if materials::count(&tx, id)? + blobs.len() as u32 > max {
                return Err(Error::conflict(
                    "too_many_materials",
                    format!("the case already has {max} materials (max_materials_per_case)"),
                ));
            }
            let ids = blobs
                .iter()
                .map(|blob| materials::insert_in(&tx, id, actor.id, Some(&actor), event, blob, now))
                .collect::<Result<Vec<i64>>>()?;
            let value = then(&tx, &ids)?;
            tx.commit()?;
            let facts = cases::facts(c, id)?.ok_or(Error::NotFound("case"))?;
            let stored = ids
                .into_iter()
                .filter_map(|m| materials::get(c, id, m).transpose())
                .collect::<Result<Vec<_>>>()?;
            Ok((value, facts, stored))
        })
        .await?;
    for material in &stored {
        announce_material(state, &facts, material);
    }
    Ok(value)
}

/// Tells the people of each case waiting in `department` behind case `left` (every one of them
/// when `everyone`: `left` was transferred and queued elsewhere) that its place in the queue
/// changed (`case.updated` with event `queue.moved`), so their pages show the new position.
async fn announce_queue_moved(state: &AppState, department: i64, left: i64, everyone: bool) {
    let waiting = state
        .db
        .call(move |c| {
            cases::waiting_behind(c, department, left, everyone)?
                .into_iter()
                .filter_map(|id| cases::facts(c, id).transpose().map(|f| f.map(|f| (id, f))))
                .collect::<Result<Vec<_>>>()
        })
        .await;
    let Ok(waiting) = waiting else {
        return;
    };
    for (case_id, facts) in waiting {
        super::invitations::tell_case_people(state, case_id, &facts, "queue.moved");
    }
}

/// Tells the case's staff (its point's agents, its approver and experts; not residents, who add
/// materials but read none) that a material was added.
pub(crate) fn announce_material(state: &AppState, facts: &CaseFacts, material: &Material) {
    let mut users = facts.experts.clone();
    users.extend(facts.approver_id);
    state.notify(
        Audience::Case {
            point_id: facts.point_id,
            users,
        },
        ServerMessage::MaterialAdded {
            case_id: material.case_id,
            material: material.clone(),
        },
    );
}

/// RFC 5987 encoding of a file name for Content-Disposition.
fn content_disposition(filename: &str) -> String {
    let encoded: String = filename
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename*=UTF-8''{encoded}")
}

/// The bytes of a material.
#[utoipa::path(get, path = "/api/cases/{id}/materials/{material_id}", params(("id" = i64, Path), ("material_id" = i64, Path)), responses((status = 200, content_type = "application/octet-stream")))]
pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, material_id)): Path<(i64, i64)>,
) -> Result<Response> {
    let actor = caller.actor();
    let material = state
        .db
        .call(move |c| {
            let facts = cases::visible_facts(c, id, &actor)?;
            check_material_access(&actor, &facts, false)?;
            materials::get(c, id, material_id)?.ok_or(Error::NotFound("material"))
        })
        .await?;
    let file = tokio::fs::File::open(state.blobs.path(&material.sha256)).await?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, material.media_type.clone()),
            (header::CONTENT_LENGTH, material.size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                content_disposition(&material.filename),
            ),
            (header::CACHE_CONTROL, "private, no-store".to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (
                header::HeaderName::from_static("x-content-sha256"),
                material.sha256.clone(),
            ),
        ],
        body,
    )
        .into_response())
}

/// What a rating opened.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RatingResponse {
    /// The follow-up opened by a bad score.
    pub followup_id: Option<i64>,
}

/// Records the resident's rating (好差评) once the case is issued or rejected; 2 or less opens a
/// follow-up for a supervisor.
#[utoipa::path(post, path = "/api/cases/{id}/rating", params(("id" = i64, Path)), request_body = Rating, responses((status = 201, body = RatingResponse), (status = 409, body = crate::error::ErrorBody)))]
pub async fn rate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(rating): Json<Rating>,
) -> Result<Response> {
    caller.require(&[Role::Agent])?;
    let actor = caller.actor();
    let now = state.now();
    let followup_ms = i64::from(state.config.followup_days) * 86_400_000;
    let score = rating.score;
    let keys = state.clone();
    let followup_id = state
        .db
        .call(move |c| {
            let facts = cases::visible_facts(c, id, &actor)?;
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let followup = ratings::rate_in(&tx, id, &facts, &actor, &rating, followup_ms, now)?;
            let update = Update::Rated {
                score,
                followup: followup.map(|f| (f, now + followup_ms)),
            };
            super::esign::sealer(&keys).continue_case(&tx, id, &update, Some(&actor), now)?;
            tx.commit()?;
            Ok(followup)
        })
        .await?;
    state
        .metrics
        .ratings
        .get_or_create(&ScoreLabel {
            score: score.to_string(),
        })
        .inc();
    Ok((StatusCode::CREATED, Json(RatingResponse { followup_id })).into_response())
}

/// Filter for follow-ups.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FollowUpQuery {
    /// Only open ones (default true).
    pub open: Option<bool>,
}

/// Follow-ups of bad ratings (supervisors).
#[utoipa::path(get, path = "/api/followups", params(FollowUpQuery), responses((status = 200, body = [FollowUp])))]
pub async fn followups(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FollowUpQuery>,
) -> Result<Json<Vec<FollowUp>>> {
    caller.require(&[Role::Supervisor])?;
    let now = state.now();
    let open = q.open.unwrap_or(true);
    Ok(Json(
        state
            .db
            .call(move |c| ratings::followups(c, open, now))
            .await?,
    ))
}

/// The outcome of a follow-up.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseFollowUp {
    /// What was done (整改反馈).
    pub outcome: String,
}

/// Closes a follow-up with its outcome (supervisors).
#[utoipa::path(post, path = "/api/followups/{id}/close", params(("id" = i64, Path)), request_body = CloseFollowUp, responses((status = 204), (status = 409, body = crate::error::ErrorBody)))]
pub async fn close_followup(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<CloseFollowUp>,
) -> Result<StatusCode> {
    caller.require(&[Role::Supervisor])?;
    let actor = caller.actor();
    let now = state.now();
    let keys = state.clone();
    state
        .db
        .call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let case_id = ratings::close_followup_in(&tx, id, &actor, &body.outcome, now)?;
            let update = Update::FollowUpClosed { followup_id: id };
            super::esign::sealer(&keys).continue_case(&tx, case_id, &update, Some(&actor), now)?;
            tx.commit()?;
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
