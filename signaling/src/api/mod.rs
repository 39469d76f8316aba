//! The HTTP API: `app(state) -> Router`, the request extractors that authenticate callers and
//! turn malformed input into `{code, message}` errors, and the OpenAPI document.

use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::routing::{get, post};
use subtle::ConstantTimeEq;
use tower_http::map_request_body::MapRequestBodyLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::accounts::{self, Session, SessionKind, User};
use crate::error::Error;
use crate::state::AppState;
use crate::workflow::Role;

pub mod admin;
pub mod annotations;
pub mod auth;
pub mod cases;
pub mod esign;
pub mod invitations;
pub mod ops;
pub mod signatures;
pub mod uploads;

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "cloudhelp_session";
/// The header that carries the CSRF token on state-changing cookie requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Largest JSON body accepted.
pub const JSON_LIMIT: usize = 64 * 1024;
/// Largest signature (its strokes and rendered image, base64) accepted.
pub const SIGNATURE_LIMIT: usize = 1024 * 1024;

/// Largest frozen frame accepted (a frame over it gets `413` from the handler's own check).
const FRAME_LIMIT: usize = crate::annotations::MAX_FRAME_BYTES as usize + 1;
/// Largest annotated picture to save (a PNG of a 4K frame with its marks, base64).
const ANNOTATION_LIMIT: usize = 8 * 1024 * 1024;

/// The whole application.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/auth/login", post(auth::login))
        .route("/auth/token", post(auth::token))
        .route("/auth/logout", post(auth::logout))
        .route("/me", get(auth::me))
        .route("/catalogue", get(cases::catalogue))
        .route("/experts", get(cases::experts))
        .route("/queue", get(cases::queue))
        .route("/cases", get(cases::list).post(cases::open))
        .route("/cases/{id}", get(cases::get))
        .route("/cases/{id}/actions/{action}", post(cases::action))
        .route(
            "/cases/{id}/materials",
            get(cases::materials)
                .post(cases::upload)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/cases/{id}/materials/{material_id}", get(cases::download))
        .route("/cases/{id}/uploads", post(uploads::start))
        .route(
            "/cases/{id}/uploads/{upload}",
            get(uploads::status)
                .patch(uploads::chunk)
                .delete(uploads::cancel)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/cases/{id}/invitations",
            get(invitations::list).post(invitations::issue),
        )
        .route(
            "/cases/{id}/invitations/{invitation}",
            axum::routing::delete(invitations::revoke),
        )
        .route("/invitations/open", post(invitations::open))
        .route("/invitations/accept", post(invitations::accept))
        .route("/resident", get(invitations::resident))
        .route(
            "/cases/{id}/annotations",
            post(annotations::start_on_material),
        )
        .route(
            "/cases/{id}/annotations/frame",
            post(annotations::start_on_frame).layer(DefaultBodyLimit::max(FRAME_LIMIT)),
        )
        .route(
            "/cases/{id}/annotations/{annotation}/base",
            get(annotations::base),
        )
        .route(
            "/cases/{id}/annotations/{annotation}/save",
            post(annotations::save).layer(DefaultBodyLimit::max(ANNOTATION_LIMIT)),
        )
        .route(
            "/cases/{id}/signatures",
            get(signatures::list).post(signatures::ask),
        )
        .route(
            "/cases/{id}/signatures/{request}/sign",
            post(signatures::sign).layer(DefaultBodyLimit::max(SIGNATURE_LIMIT)),
        )
        .route("/cases/{id}/rating", post(cases::rate))
        .route("/cases/{id}/decision", post(esign::prepare_decision))
        .route("/cases/{id}/decision/seal", post(esign::seal_decision))
        .route("/cases/{id}/archive", get(esign::download_archive))
        .route("/cases/{id}/receipt", get(esign::download_receipt))
        .route("/keys", get(esign::list_keys).post(esign::register_key))
        .route("/keys/{key_id}/revoke", post(esign::revoke_key))
        .route(
            "/verify",
            post(esign::verify_archive).layer(DefaultBodyLimit::disable()),
        )
        .route("/log/checkpoint", get(esign::checkpoint))
        .route("/log/consistency", get(esign::consistency))
        .route("/log/trust", get(esign::trust))
        .route("/followups", get(cases::followups))
        .route("/followups/{id}/close", post(cases::close_followup))
        .route("/audit", get(ops::audit_export))
        .route("/stats", get(ops::stats))
        .route("/admin/users", get(admin::list_users).post(admin::add_user))
        .route("/admin/users/{username}/disable", post(admin::disable_user))
        .route("/openapi.json", get(ops::openapi))
        .fallback(|| async { Error::NotFound("endpoint") });
    let router = Router::new()
        .nest("/api", api)
        .route("/ws", get(crate::ws::upgrade))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::static_asset)
        .layer(DefaultBodyLimit::max(JSON_LIMIT));
    security_headers(router)
        .layer(
            tower::ServiceBuilder::new()
                .layer(RequestBodyTimeoutLayer::new(
                    std::time::Duration::from_secs(u64::from(state.config.body_idle_seconds)),
                ))
                .layer(MapRequestBodyLayer::new(axum::body::Body::new)),
        )
        .with_state(state)
}

/// What the pages may load and run: only this server's own scripts, styles and connections
/// (so an injected string can neither run nor send anything elsewhere), images and media also
/// from `blob:`/`data:` (previews of captured photos and the call's streams).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; object-src 'none'; \
base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Headers on every response (a handler's own value wins): HSTS, the content security policy,
/// no MIME sniffing, no referrer sent along.
fn security_headers<S>(router: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let value = header::HeaderValue::from_static;
    [
        (header::STRICT_TRANSPORT_SECURITY, value("max-age=31536000")),
        (
            header::CONTENT_SECURITY_POLICY,
            value(CONTENT_SECURITY_POLICY),
        ),
        (header::X_CONTENT_TYPE_OPTIONS, value("nosniff")),
        (header::REFERRER_POLICY, value("no-referrer")),
    ]
    .into_iter()
    .fold(router, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::if_not_present(name, value))
    })
}

/// A JSON body whose rejections become `{code, message}` errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(Error))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// A path whose rejections become `{code, message}` errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct Path<T>(pub T);

/// A query string whose rejections become `{code, message}` errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub struct Query<T>(pub T);

impl From<JsonRejection> for Error {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Error::TooLarge(format!("the JSON body is larger than {JSON_LIMIT} bytes"));
        }
        let code = match r {
            JsonRejection::MissingJsonContentType(_) => "expected_json",
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            _ => "invalid_json",
        };
        Error::bad(code, r.body_text())
    }
}

impl From<PathRejection> for Error {
    fn from(r: PathRejection) -> Self {
        Error::bad("invalid_path", r.body_text())
    }
}

impl From<QueryRejection> for Error {
    fn from(r: QueryRejection) -> Self {
        Error::bad("invalid_query", r.body_text())
    }
}

/// An authenticated caller. State-changing requests made with the session cookie must carry the
/// session's CSRF token in `X-CSRF-Token`.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user.
    pub user: User,
    /// The session.
    pub session: Session,
}

impl Caller {
    /// The workflow's view of the caller.
    pub fn actor(&self) -> crate::workflow::Actor {
        self.user.actor()
    }

    /// Refuses callers whose role is not among `roles`.
    pub fn require(&self, roles: &[crate::workflow::Role]) -> Result<(), Error> {
        if roles.contains(&self.user.role) {
            Ok(())
        } else {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(Error::Forbidden(format!(
                "this needs the role {}",
                names.join(" or ")
            )))
        }
    }
}

/// The session token of a request: `Authorization: Bearer …` or the session cookie.
pub fn request_token(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return value.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
}

/// The client's address: the TCP peer, or the last entry of `client_address_header` when a
/// reverse proxy sets it. Requests handed to the router without a socket (tests) come from
/// `0.0.0.0`.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub std::net::IpAddr);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(name) = &state.config.client_address_header {
            let forwarded = parts
                .headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .map(str::trim);
            return match forwarded.and_then(|a| a.parse().ok()) {
                Some(address) => Ok(ClientAddress(address)),
                None => Err(Error::bad(
                    "bad_client_address",
                    format!("{name}: the proxy sent no client address this server can read"),
                )),
            };
        }
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        Ok(ClientAddress(peer))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = request_token(&parts.headers).ok_or(Error::Unauthenticated("log in first"))?;
        let now = state.now();
        let session = state
            .db
            .call(move |c| accounts::session(c, &token, now))
            .await?;
        if session.kind == SessionKind::Cookie && !parts.method.is_safe() {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !bool::from(sent.ct_eq(session.csrf_token.as_bytes())) {
                return Err(Error::denied(
                    "csrf_failed",
                    "missing or wrong X-CSRF-Token for this session; reload the page",
                ));
            }
        }
        if session.user.role == Role::Resident {
            let path = parts
                .extensions
                .get::<axum::extract::OriginalUri>()
                .map_or(parts.uri.path(), |original| original.path());
            if !resident_may_call(&parts.method, path) {
                return Err(Error::Forbidden(
                    "an invitation reaches its case's call and uploads only".into(),
                ));
            }
        }
        Ok(Caller {
            user: session.user.clone(),
            session,
        })
    }
}

/// What a resident's session may call: the socket (its case's call), who it is, its case, uploads
/// of its case's materials, its case's signature requests and signing (the handlers check the
/// case) and logging out. Everything else is
/// refused before any handler runs, whatever the handler would decide.
pub fn resident_may_call(method: &Method, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (method, segments.as_slice()) {
        (&Method::GET, ["ws"] | ["api", "me"] | ["api", "resident"]) => true,
        (&Method::POST, ["api", "auth", "logout"]) => true,
        (&Method::POST, ["api", "cases", id, "uploads"]) => number(id),
        (&Method::GET, ["api", "cases", id, "signatures"]) => number(id),
        (&Method::GET, ["api", "cases", id, "annotations", annotation, "base"]) => {
            number(id) && number(annotation)
        }
        (&Method::POST, ["api", "cases", id, "signatures", request, "sign"]) => {
            number(id) && number(request)
        }
        (&Method::GET | &Method::PATCH | &Method::DELETE, ["api", "cases", id, "uploads", _]) => {
            number(id)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resident_session_reaches_the_socket_its_case_and_uploads_and_nothing_else() {
        for (method, path) in [
            (Method::GET, "/ws"),
            (Method::GET, "/api/me"),
            (Method::GET, "/api/resident"),
            (Method::POST, "/api/auth/logout"),
            (Method::POST, "/api/cases/7/uploads"),
            (Method::PATCH, "/api/cases/7/uploads/ab12"),
            (Method::GET, "/api/cases/7/uploads/ab12"),
            (Method::DELETE, "/api/cases/7/uploads/ab12"),
            (Method::GET, "/api/cases/7/signatures"),
            (Method::POST, "/api/cases/7/signatures/3/sign"),
            (Method::GET, "/api/cases/7/annotations/2/base"),
        ] {
            assert!(resident_may_call(&method, path), "{method} {path}");
        }
        for (method, path) in [
            (Method::GET, "/api/cases"),
            (Method::GET, "/api/cases/7"),
            (Method::GET, "/api/cases/7/materials"),
            (Method::POST, "/api/cases/7/materials"),
            (Method::GET, "/api/cases/7/materials/1"),
            (Method::POST, "/api/cases/7/invitations"),
            (Method::POST, "/api/cases/7/actions/cancel"),
            (Method::GET, "/api/cases/7/archive"),
            (Method::GET, "/api/queue"),
            (Method::GET, "/api/audit"),
            (Method::GET, "/api/admin/users"),
            (Method::POST, "/api/cases/x/uploads"),
            (Method::POST, "/api/cases/7/uploads/../../materials"),
            (Method::GET, "/api/resident/other"),
            (Method::POST, "/api/cases/7/signatures"),
            (Method::POST, "/api/cases/7/signatures/x/sign"),
            (Method::POST, "/api/cases/7/annotations"),
            (Method::POST, "/api/cases/7/annotations/2/save"),
        ] {
            assert!(!resident_may_call(&method, path), "{method} {path}");
        }
    }
}
