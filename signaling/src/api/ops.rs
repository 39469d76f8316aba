//! Operations and oversight: health, readiness, metrics, the OpenAPI document, the audit export,
//! the service figures, and the embedded web client.

use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::OpenApi;

use super::{Caller, Json, Query};
use crate::audit::{self, Filter};
use crate::config::parse_rfc3339;
use crate::error::{Error, Result};
use crate::metrics::DepartmentLabel;
use crate::state::AppState;
use crate::stats::{self, Report};
use crate::workflow::Role;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, content_type = "text/plain", description = "ok")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", responses((status = 200, content_type = "text/plain", description = "ready"), (status = 503, description = "database unavailable")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state
        .db
        .call(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
        .await
    {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain", description = "Prometheus text format")))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response> {
    let lengths: Vec<(String, i64)> = state
        .db
        .call(|c| {
            let mut stmt = c.prepare(
                "SELECT d.name, COUNT(c.id) FROM departments d
                 LEFT JOIN cases c ON c.department_id = d.id AND c.state = 'waiting' GROUP BY d.id",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await?;
    state
        .metrics
        .observe_relay(&state.relay.metrics().snapshot());
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    state.metrics.runtime_tasks.set(tasks as i64);
    for (department, n) in lengths {
        state
            .metrics
            .queue_length
            .get_or_create(&DepartmentLabel { department })
            .set(n);
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response())
}

/// The time range of an export or report.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// Only this case (audit export).
    pub case_id: Option<i64>,
    /// From, RFC 3339 (inclusive).
    pub from: Option<String>,
    /// To, RFC 3339 (exclusive).
    pub to: Option<String>,
}

fn parse_time(field: &'static str, value: &Option<String>) -> Result<Option<i64>> {
    value
        .as_deref()
        .map(|v| {
            parse_rfc3339(v).ok_or_else(|| {
                Error::bad(
                    "invalid_query",
                    format!("{field}: use RFC 3339, e.g. 2026-11-26T00:00:00+08:00"),
                )
            })
        })
        .transpose()
}

/// The audit trail as JSON lines (auditors, supervisors). The export itself is audited.
#[utoipa::path(get, path = "/api/audit", params(RangeQuery), responses((status = 200, content_type = "application/x-ndjson", body = [crate::audit::AuditEvent])))]
pub async fn audit_export(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RangeQuery>,
) -> Result<Response> {
    caller.require(&[Role::Auditor, Role::Supervisor])?;
    let filter = Filter {
        case_id: q.case_id,
        from: parse_time("from", &q.from)?,
        to: parse_time("to", &q.to)?,
    };
    let actor = caller.actor();
    let now = state.now();
    let events = state
        .db
        .call(move |c| {
            let events = audit::export(c, &filter)?;
            audit::append(
                c,
                now,
                Some(&actor),
                filter.case_id,
                "audit.exported",
                &serde_json::json!({ "events": events.len() }),
            )?;
            Ok(events)
        })
        .await?;
    let mut body = String::new();
    for event in events {
        body.push_str(&serde_json::to_string(&event).map_err(|e| Error::Internal(e.to_string()))?);
        body.push('\n');
    }
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson; charset=utf-8")],
        body,
    )
        .into_response())
}

/// The start of today in China Standard Time (UTC+8), in epoch ms.
fn start_of_local_day(now: i64) -> i64 {
    const OFFSET: i64 = 8 * 3_600_000;
    const DAY: i64 = 86_400_000;
    (now + OFFSET).div_euclid(DAY) * DAY - OFFSET
}

/// Service figures per department and service point for a period (default: today, UTC+8).
#[utoipa::path(get, path = "/api/stats", params(RangeQuery), responses((status = 200, body = Report)))]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RangeQuery>,
) -> Result<Json<Report>> {
    caller.require(&[Role::Supervisor, Role::Auditor, Role::Admin])?;
    let now = state.now();
    let from = parse_time("from", &q.from)?.unwrap_or_else(|| start_of_local_day(now));
    let to = parse_time("to", &q.to)?.unwrap_or(now + 1);
    if from >= to {
        return Err(Error::bad("invalid_query", "from must be before to"));
    }
    let target = state.config.simple_target_minutes;
    let records = state.db.call(move |c| stats::records(c, from, to)).await?;
    Ok(Json(stats::report(&records, from, to, target)))
}

/// The OpenAPI document, generated from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "cloudhelp (云帮办) API",
        description = "Remote video assistance for public-security government service."
    ),
    paths(
        super::auth::login,
        super::auth::token,
        super::auth::logout,
        super::auth::me,
        super::cases::catalogue,
        super::cases::experts,
        super::cases::queue,
        super::cases::list,
        super::cases::open,
        super::cases::get,
        super::cases::action,
        super::cases::materials,
        super::cases::upload,
        super::uploads::start,
        super::uploads::status,
        super::uploads::chunk,
        super::uploads::cancel,
        super::cases::download,
        super::cases::rate,
        super::invitations::issue,
        super::invitations::list,
        super::invitations::revoke,
        super::invitations::open,
        super::invitations::accept,
        super::invitations::resident,
        super::annotations::start_on_material,
        super::annotations::start_on_frame,
        super::annotations::base,
        super::annotations::save,
        super::signatures::ask,
        super::signatures::list,
        super::signatures::sign,
        super::cases::followups,
        super::cases::close_followup,
        super::admin::list_users,
        super::admin::add_user,
        super::admin::disable_user,
        super::esign::register_key,
        super::esign::list_keys,
        super::esign::revoke_key,
        super::esign::prepare_decision,
        super::esign::seal_decision,
        super::esign::download_archive,
        super::esign::download_receipt,
        super::esign::verify_archive,
        super::esign::checkpoint,
        super::esign::consistency,
        super::esign::trust,
        audit_export,
        stats,
        openapi,
        healthz,
        readyz,
        metrics,
        crate::ws::upgrade,
    )
)]
pub struct ApiDoc;

/// Serves the OpenAPI document.
#[utoipa::path(get, path = "/api/openapi.json", responses((status = 200, content_type = "application/json", description = "this document")))]
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        ApiDoc::openapi().to_pretty_json().unwrap_or_default(),
    )
        .into_response()
}

/// The embedded web client.
pub async fn static_asset(uri: Uri) -> Response {
    match web_client::asset(uri.path()) {
        Some((bytes, content_type)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::X_FRAME_OPTIONS, "DENY"),
            ],
            bytes,
        )
            .into_response(),
        None => Error::NotFound("page").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_day_starts_at_midnight_china_standard_time() {
        // 2026-11-26T03:00:00+08:00 → 2026-11-26T00:00:00+08:00
        let now = parse_rfc3339("2026-11-26T03:00:00+08:00").unwrap();
        assert_eq!(
            start_of_local_day(now),
            parse_rfc3339("2026-11-26T00:00:00+08:00").unwrap()
        );
    }
}

#[cfg(test)]
mod openapi_tests {
    use super::ApiDoc;
    use utoipa::OpenApi;

    /// Every `.route(path, method(handler)...)` of the router in `api/mod.rs`, as
    /// `(METHOD, full path)`: routes before `.nest("/api", api)` are under `/api`.
    fn routes_in_router_source() -> Vec<(String, String)> {
        let source = include_str!("mod.rs");
        let (nested, top) = source
            .split_once(".nest(\"/api\", api)")
            .expect("the router nests the API under /api");
        let mut routes = Vec::new();
        for (text, prefix) in [(nested, "/api"), (top, "")] {
            for call in text.split(".route(").skip(1) {
                let path = call.split('"').nth(1).expect("a route path literal");
                // The route call ends at its closing parenthesis.
                let mut depth = 1;
                let end = call
                    .char_indices()
                    .find(|&(_, c)| {
                        match c {
                            '(' => depth += 1,
                            ')' => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .map_or(call.len(), |(i, _)| i);
                let body = &call[..end];
                for method in ["get", "post", "put", "delete", "patch"] {
                    let called = body
                        .match_indices(&format!("{method}("))
                        .any(|(i, _)| i == 0 || !body.as_bytes()[i - 1].is_ascii_alphanumeric());
                    if called {
                        routes.push((method.to_uppercase(), format!("{prefix}{path}")));
                    }
                }
            }
        }
        routes
    }

    #[test]
    fn every_route_of_the_router_is_in_the_openapi_document() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let routes = routes_in_router_source();
        assert!(
            routes.len() > 30,
            "the router source was not read: {routes:?}"
        );
        let missing: Vec<_> = routes
            .iter()
            .filter(|(method, path)| {
                paths
                    .get(path)
                    .and_then(|p| p.get(method.to_lowercase()))
                    .is_none()
            })
            .collect();
        assert!(
            missing.is_empty(),
            "routes missing from /api/openapi.json: {missing:?}"
        );
        // And nothing documented that the router does not serve.
        for (path, item) in paths {
            for method in item.as_object().unwrap().keys() {
                assert!(
                    routes.contains(&(method.to_uppercase(), path.clone())),
                    "{method} {path} is documented but not routed"
                );
            }
        }
    }
}
