//! Account administration over HTTP (admins); the CLI's `cloudhelp user …` does the same offline.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Caller, Json, Path};
use crate::accounts::{self, NewUser, User};
use crate::audit;
use crate::error::Result;
use crate::state::AppState;
use crate::workflow::Role;

/// A new account.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddUser {
    /// Login name.
    pub username: String,
    /// Name shown to others.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Service point code (agents).
    pub point: Option<String>,
    /// Department code (approvers, experts).
    pub department: Option<String>,
    /// Initial password (8 characters or more).
    pub password: String,
}

/// Every account.
#[utoipa::path(get, path = "/api/admin/users", responses((status = 200, body = [User])))]
pub async fn list_users(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<User>>> {
    caller.require(&[Role::Admin])?;
    Ok(Json(state.db.call(|c| accounts::list_users(c)).await?))
}

/// Adds an account.
#[utoipa::path(post, path = "/api/admin/users", request_body = AddUser, responses((status = 201, body = User), (status = 409, body = crate::error::ErrorBody)))]
pub async fn add_user(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<AddUser>,
) -> Result<Response> {
    caller.require(&[Role::Admin])?;
    let actor = caller.actor();
    let now = state.now();
    let user = state
        .db
        .call(move |c| {
            let tx = c.transaction()?;
            let user = accounts::add_user(
                &tx,
                &NewUser {
                    username: body.username,
                    display_name: body.display_name,
                    role: body.role,
                    point_code: body.point,
                    department_code: body.department,
                    password: body.password,
                },
                now,
            )?;
            audit::append(
                &tx,
                now,
                Some(&actor),
                None,
                "user.added",
                &serde_json::json!({ "user_id": user.id, "role": user.role }),
            )?;
            tx.commit()?;
            Ok(user)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

/// Disables an account and ends its sessions.
#[utoipa::path(post, path = "/api/admin/users/{username}/disable", params(("username" = String, Path)), responses((status = 200, body = User), (status = 404, body = crate::error::ErrorBody)))]
pub async fn disable_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<Json<User>> {
    caller.require(&[Role::Admin])?;
    let actor = caller.actor();
    let now = state.now();
    Ok(Json(
        state
            .db
            .call(move |c| {
                let tx = c.transaction()?;
                let user = accounts::disable_user(&tx, &username)?;
                audit::append(
                    &tx,
                    now,
                    Some(&actor),
                    None,
                    "user.disabled",
                    &serde_json::json!({ "user_id": user.id }),
                )?;
                tx.commit()?;
                Ok(user)
            })
            .await?,
    ))
}
