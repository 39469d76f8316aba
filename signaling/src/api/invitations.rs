//! The applicant joins from home (群众远程接入, see `crate::invitations`): the case's agent or
//! holding approver issues, lists and withdraws invitations; whoever holds a link opens it (the
//! notice) and accepts it (a resident session); the resident reads its own case. The token travels
//! in request bodies only (never in a path, so never in an access log), and the link carries it in
//! the URL fragment (never sent to a server, never in a `Referer`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{Caller, ClientAddress, Json, Path};
use crate::accounts::User;
use crate::config::rfc3339;
use crate::error::{Error, Result};
use crate::invitations::{self, Invitation, InvitationNotice, ResidentCase};
use crate::protocol::ServerMessage;
use crate::state::{AppState, Audience};
use crate::workflow::CaseFacts;

/// An invitation just issued: the link (shown once) and its QR code.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedInvitation {
    /// The invitation.
    pub invitation: Invitation,
    /// The link to give the applicant: `<public_url>/#/invite/<token>`.
    pub url: String,
    /// The link as a QR code, an SVG image.
    pub qr_svg: String,
}

/// The token of a link, as the invitation page read it from the URL fragment.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvitationToken {
    /// The token.
    pub token: String,
}

/// The applicant's answer to the notice.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitation {
    /// The token.
    pub token: String,
    /// Consent to the notice (the call may be recorded; what is used). Must be `true`.
    pub consent: bool,
}

/// The resident's session: the cookie is set; the CSRF token goes in `X-CSRF-Token`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AcceptedInvitation {
    /// The resident account.
    pub user: User,
    /// Send this in `X-CSRF-Token` with every state-changing request.
    pub csrf_token: String,
    /// When the session ends, RFC 3339.
    pub expires_at: String,
    /// The case whose call it may join.
    pub case_id: i64,
}

/// The URL residents reach this server at: `public_url`, else the host the issuing page used
/// (`Host` in HTTP/1.1, the request's authority in HTTP/2).
fn public_base(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<String> {
    if let Some(url) = &state.config.public_url {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| Error::bad("no_host", "the request names no host; set public_url"))?;
    let scheme = if state.config.plain_http && state.config.client_address_header.is_none() {
        "http"
    } else {
        "https"
    };
    Ok(format!("{scheme}://{host}"))
}

/// The SVG QR code of `text`.
fn qr_svg(text: &str) -> Result<String> {
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M)
        .map_err(|e| Error::Internal(format!("QR code: {e}")))?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build())
}

/// Issues an invitation for the case's applicant to join its call from home.
#[utoipa::path(post, path = "/api/cases/{id}/invitations", params(("id" = i64, Path)),
    responses((status = 201, body = IssuedInvitation), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<i64>,
) -> Result<Response> {
    let base = public_base(&state, &headers, &uri)?;
    let actor = caller.actor();
    let now = state.now();
    let lifetime = i64::from(state.config.invitation_minutes) * 60_000;
    let (invitation, token) = state
        .db
        .call(move |c| invitations::issue(c, id, &actor, now, lifetime))
        .await?;
    let url = format!("{base}/#/invite/{token}");
    let qr_svg = qr_svg(&url)?;
    tracing::info!(
        case_id = id,
        invitation = invitation.id,
        "invitation issued"
    );
    let body = IssuedInvitation {
        invitation,
        url,
        qr_svg,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The case's invitations (the case's agent or holding approver), newest first.
#[utoipa::path(get, path = "/api/cases/{id}/invitations", params(("id" = i64, Path)),
    responses((status = 200, body = [Invitation]), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<Vec<Invitation>>> {
    let actor = caller.actor();
    let now = state.now();
    let list = state
        .db
        .call(move |c| {
            let facts = crate::cases::visible_facts(c, id, &actor)?;
            if !(crate::workflow::is_case_agent(&actor, &facts)
                || crate::workflow::holds(&actor, &facts))
            {
                return Err(Error::Forbidden(
                    "only the case's agent or the approver holding it see its invitations".into(),
                ));
            }
            invitations::list(c, id, now)
        })
        .await?;
    Ok(Json(list))
}

/// Withdraws an invitation; a resident who joined with it is taken out of the call at once and
/// its session ends.
#[utoipa::path(delete, path = "/api/cases/{id}/invitations/{invitation}", params(("id" = i64, Path), ("invitation" = i64, Path)),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, invitation)): Path<(i64, i64)>,
) -> Result<StatusCode> {
    let actor = caller.actor();
    let now = state.now();
    let resident = state
        .db
        .call(move |c| invitations::revoke(c, id, invitation, &actor, now))
        .await?;
    if let Some(resident) = resident {
        let room = crate::calls::room_of(id);
        state
            .relay
            .remove(&room, crate::calls::participant_of(resident))
            .await;
        announce(&state, id, "invitation.revoked").await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Tells the case's people (its point's agents, its approver, experts and residents) that
/// something of the case changed (`case.updated` with `event`).
pub(crate) async fn announce(state: &AppState, case_id: i64, event: &'static str) {
    let Ok(Some(facts)) = state
        .db
        .call(move |c| crate::cases::facts(c, case_id))
        .await
    else {
        return;
    };
    tell_case_people(state, case_id, &facts, event);
}

/// `case.updated` with `event` to the people of case `case_id` (its point's agents, its approver,
/// experts and residents).
pub(crate) fn tell_case_people(state: &AppState, case_id: i64, facts: &CaseFacts, event: &str) {
    state.notify(
        Audience::Case {
            point_id: facts.point_id,
            users: facts.call_people(),
        },
        ServerMessage::CaseUpdated {
            case_id,
            state: facts.state,
            event: event.to_string(),
        },
    );
}

/// What a link leads to: the notice's facts, or why it can no longer be used (`410` with
/// `invitation_used`, `invitation_expired` or `invitation_revoked`; `404` for a token never
/// issued). No session needed.
#[utoipa::path(post, path = "/api/invitations/open", request_body = InvitationToken,
    responses((status = 200, body = InvitationNotice), (status = 404, body = crate::error::ErrorBody), (status = 410, body = crate::error::ErrorBody)))]
pub async fn open(
    State(state): State<AppState>,
    address: ClientAddress,
    Json(body): Json<InvitationToken>,
) -> Result<Json<InvitationNotice>> {
    state.login_guard.admit(address.0)?;
    let now = state.now();
    let notice = state
        .db
        .call(move |c| invitations::open(c, &body.token, now))
        .await?;
    Ok(Json(notice))
}

/// The applicant consents to the notice: the invitation is spent and a resident session opens
/// (an HttpOnly, Secure, SameSite=Strict cookie), which reaches that case's call only. Recording
/// asks the resident's own consent in the call, as everyone's.
#[utoipa::path(post, path = "/api/invitations/accept", request_body = AcceptInvitation,
    responses((status = 200, body = AcceptedInvitation), (status = 400, body = crate::error::ErrorBody), (status = 410, body = crate::error::ErrorBody)))]
pub async fn accept(
    State(state): State<AppState>,
    address: ClientAddress,
    Json(body): Json<AcceptInvitation>,
) -> Result<Response> {
    state.login_guard.admit(address.0)?;
    if !body.consent {
        return Err(Error::bad(
            "consent_required",
            "consent: the call can only be joined after agreeing to the notice",
        ));
    }
    let now = state.now();
    let length = i64::from(state.config.resident_session_minutes) * 60_000;
    let (user, session, case_id) = state
        .db
        .call(move |c| invitations::accept(c, &body.token, now, length))
        .await?;
    // A call being recorded pauses until the newcomer consents to recording (同意录音) as well.
    crate::recording::pause_without_everyones_consent(&state, case_id).await;
    announce(&state, case_id, "invitation.accepted").await;
    let cookie = super::auth::session_cookie(&session, now);
    let body = AcceptedInvitation {
        user,
        csrf_token: session.csrf_token,
        expires_at: rfc3339(session.expires_at),
        case_id,
    };
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

/// The resident's own case: what its call page needs.
#[utoipa::path(get, path = "/api/resident", responses((status = 200, body = ResidentCase), (status = 404, body = crate::error::ErrorBody)))]
pub async fn resident(State(state): State<AppState>, caller: Caller) -> Result<Json<ResidentCase>> {
    let actor = caller.actor();
    let now = state.now();
    let view = state
        .db
        .call(move |c| invitations::resident_view(c, &actor, now))
        .await?;
    Ok(Json(view))
}
