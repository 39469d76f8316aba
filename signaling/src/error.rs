//! The crate's one error type and its single mapping to HTTP statuses and `{code, message}` bodies.
//!
//! Internal details (SQL, paths, I/O) are logged, never sent to the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::workflow::WorkflowError;

/// What went wrong, split by cause: the caller's input, the caller's rights, state, or our I/O.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed or a field is invalid.
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code.
        code: &'static str,
        /// What is wrong, naming the field.
        message: String,
    },
    /// No valid session or token.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// Refused for a reason the client should tell apart (a locked or disabled account).
    #[error("{message}")]
    Denied {
        /// Machine-readable code.
        code: &'static str,
        /// What to do about it.
        message: String,
    },
    /// The thing does not exist, or the caller may not know that it does.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with the current state.
    #[error("{message}")]
    Conflict {
        /// Machine-readable code.
        code: &'static str,
        /// What the current state is.
        message: String,
    },
    /// It existed and is no longer usable (a used, expired or revoked invitation).
    #[error("{message}")]
    Gone {
        /// Machine-readable code.
        code: &'static str,
        /// What happened to it.
        message: String,
    },
    /// The body is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// The content is not of an accepted type.
    #[error("{0}")]
    UnsupportedMedia(String),
    /// Too many attempts: try again after `retry_after_s` seconds (sent as `Retry-After`).
    #[error("{message}")]
    TooManyRequests {
        /// Machine-readable code.
        code: &'static str,
        /// What was limited.
        message: String,
        /// Seconds until an attempt can succeed.
        retry_after_s: u64,
    },
    /// The server is at a bound it keeps to stay responsive (e.g. password checks queued).
    #[error("{message}")]
    Busy {
        /// What is busy.
        message: String,
        /// Seconds to wait before trying again.
        retry_after_s: u64,
    },
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    /// A file operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Something that should not happen; details are logged.
    #[error("internal: {0}")]
    Internal(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A bad-request error with a code.
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Error::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A refusal with a code.
    pub fn denied(code: &'static str, message: impl Into<String>) -> Self {
        Error::Denied {
            code,
            message: message.into(),
        }
    }

    /// A conflict error with a code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Error::Conflict {
            code,
            message: message.into(),
        }
    }

    /// The status and code this error maps to.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::Denied { code, .. } => (StatusCode::FORBIDDEN, code),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Error::Gone { code, .. } => (StatusCode::GONE, code),
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Error::UnsupportedMedia(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Error::TooManyRequests { code, .. } => (StatusCode::TOO_MANY_REQUESTS, code),
            Error::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Error::Database(_) | Error::Io(_) | Error::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }

    /// The message safe to show the client.
    pub fn public_message(&self) -> String {
        match self {
            Error::Database(_) | Error::Io(_) | Error::Internal(_) => {
                "internal error; it has been logged".to_string()
            }
            other => other.to_string(),
        }
    }
}

impl From<WorkflowError> for Error {
    fn from(e: WorkflowError) -> Self {
        match e {
            WorkflowError::NotVisible => Error::NotFound("case"),
            WorkflowError::Forbidden(m) => Error::Forbidden(m.to_string()),
            WorkflowError::AlreadyTaken => Error::conflict("already_taken", e.to_string()),
            WorkflowError::InvalidTransition { .. } => {
                Error::conflict("invalid_transition", e.to_string())
            }
            WorkflowError::Precondition(m) => Error::conflict("precondition_failed", m),
            WorkflowError::InvalidField { .. } => Error::bad("invalid_field", e.to_string()),
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `already_taken`.
    pub code: String,
    /// Human-readable explanation naming what is wrong.
    pub message: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let retry_after = match &self {
            Error::TooManyRequests { retry_after_s, .. } | Error::Busy { retry_after_s, .. } => {
                Some(retry_after_s.max(&1).to_string())
            }
            _ => None,
        };
        let body = ErrorBody {
            code: code.to_string(),
            message: self.public_message(),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after
            && let Ok(value) = axum::http::HeaderValue::from_str(&seconds)
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}
