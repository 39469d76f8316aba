//! Login (cookie for browsers, bearer token for tools), logout, and who-am-I.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{Caller, ClientAddress, Json, SESSION_COOKIE};
use crate::accounts::{self, LoginPolicy, SessionKind, User};
use crate::audit;
use crate::config::rfc3339;
use crate::error::{Error, Result};
use crate::state::AppState;

/// Login name and password.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A browser login: the cookie is set; the CSRF token goes in `X-CSRF-Token`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    /// Who logged in.
    pub user: User,
    /// Send this in `X-CSRF-Token` with every state-changing request.
    pub csrf_token: String,
    /// When the session ends, RFC 3339.
    pub expires_at: String,
}

/// A bearer token for tools.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// Who logged in.
    pub user: User,
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// When it ends, RFC 3339.
    pub expires_at: String,
}

fn policy(state: &AppState) -> LoginPolicy {
    LoginPolicy {
        max_failures: state.config.login_max_failures,
        lockout_ms: i64::from(state.config.lockout_minutes) * 60_000,
        session_ms: i64::from(state.config.session_hours) * 3_600_000,
    }
}

/// The longest login name kept in the audit trail (longer ones cannot exist: see `add_user`).
const LOGGED_USERNAME_CHARS: usize = 64;

async fn open_session(
    state: &AppState,
    address: ClientAddress,
    credentials: Credentials,
    kind: SessionKind,
) -> Result<(User, accounts::NewSession)> {
    state.login_guard.admit(address.0)?;
    let now = state.now();
    let policy = policy(state);
    let Credentials { username, password } = credentials;
    let username: String = username.chars().take(LOGGED_USERNAME_CHARS + 1).collect();
    let address = address.0.to_string();
    let candidate = {
        let (username, address) = (username.clone(), address.clone());
        state
            .db
            .call(move |c| accounts::login_candidate(c, &username, &address, now))
            .await?
    };
    // The slow part, outside the database lock and on the guard's bounded pool.
    let password_ok = match candidate.hash() {
        Some(hash) => {
            let hash = hash.to_string();
            state
                .login_guard
                .check(move || accounts::password_matches(&hash, &password))
                .await?
        }
        None => false,
    };
    state
        .db
        .call(move |c| {
            let result = accounts::login_finish(
                c,
                &username,
                &candidate,
                password_ok,
                &address,
                kind,
                policy,
                now,
            );
            match &result {
                Ok((user, _)) => audit::append(
                    c,
                    now,
                    Some(&user.actor()),
                    None,
                    "auth.login",
                    &serde_json::json!({ "kind": format!("{kind:?}").to_lowercase() }),
                )?,
                Err(e) => {
                    let shown: String = username.chars().take(LOGGED_USERNAME_CHARS).collect();
                    let details = serde_json::json!({
                        "username": shown,
                        "username_truncated": shown.len() < username.len(),
                        "reason": e.status_and_code().1,
                    });
                    audit::append(c, now, None, None, "auth.login_failed", &details)?
                }
            }
            result
        })
        .await
}

/// The `Set-Cookie` value of a browser session: HttpOnly, Secure, SameSite=Strict, until it ends.
pub(crate) fn session_cookie(session: &accounts::NewSession, now: i64) -> String {
    let max_age = (session.expires_at - now) / 1000;
    format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age}",
        session.token
    )
}

/// Logs in a browser: sets an HttpOnly, Secure, SameSite=Strict session cookie.
#[utoipa::path(post, path = "/api/auth/login", request_body = Credentials, responses((status = 200, body = LoginResponse), (status = 401, body = crate::error::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    address: ClientAddress,
    Json(credentials): Json<Credentials>,
) -> Result<Response> {
    let (user, session) = open_session(&state, address, credentials, SessionKind::Cookie).await?;
    let cookie = session_cookie(&session, state.now());
    let body = LoginResponse {
        user,
        csrf_token: session.csrf_token,
        expires_at: rfc3339(session.expires_at),
    };
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

/// Issues a bearer token for tools (no cookie, no CSRF token needed).
#[utoipa::path(post, path = "/api/auth/token", request_body = Credentials, responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::ErrorBody)))]
pub async fn token(
    State(state): State<AppState>,
    address: ClientAddress,
    Json(credentials): Json<Credentials>,
) -> Result<Json<TokenResponse>> {
    let (user, session) = open_session(&state, address, credentials, SessionKind::Bearer).await?;
    Ok(Json(TokenResponse {
        user,
        token: session.token,
        expires_at: rfc3339(session.expires_at),
    }))
}

/// Ends the caller's session and clears the cookie.
#[utoipa::path(post, path = "/api/auth/logout", responses((status = 204)))]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> Result<Response> {
    let now = state.now();
    let actor = caller.actor();
    let hash = caller.session.token_hash.clone();
    state
        .db
        .call(move |c| {
            accounts::logout(c, &hash)?;
            audit::append(
                c,
                now,
                Some(&actor),
                None,
                "auth.logout",
                &serde_json::json!({}),
            )
        })
        .await?;
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0");
    Ok((
        axum::http::StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, clear)],
    )
        .into_response())
}

/// The caller and its session's CSRF token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    /// The caller.
    pub user: User,
    /// The session's CSRF token (empty for bearer tokens).
    pub csrf_token: String,
}

/// Who the caller is.
#[utoipa::path(get, path = "/api/me", responses((status = 200, body = Me), (status = 401, body = crate::error::ErrorBody)))]
pub async fn me(caller: Caller) -> Result<Json<Me>, Error> {
    let csrf_token = match caller.session.kind {
        SessionKind::Cookie => caller.session.csrf_token.clone(),
        SessionKind::Bearer => String::new(),
    };
    Ok(Json(Me {
        user: caller.user,
        csrf_token,
    }))
}
