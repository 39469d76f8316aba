//! Accounts: users with roles, argon2 password hashes, login with lock-out, and sessions.
//!
//! A session token is 32 random bytes shown to the client once; only its SHA-256 is stored, so a
//! copy of the database does not log anyone in. Each session has its own CSRF token.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::workflow::{Actor, DepartmentId, PointId, Role, UserId};

/// A user as the API shows it (never the hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Login name.
    pub username: String,
    /// Name shown to others.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// An agent's service point.
    pub point_id: Option<PointId>,
    /// An approver's or expert's department.
    pub department_id: Option<DepartmentId>,
    /// Whether the account is disabled.
    pub disabled: bool,
}

impl User {
    /// The workflow's view of this user.
    pub fn actor(&self) -> Actor {
        Actor {
            id: self.id,
            role: self.role,
            point_id: self.point_id,
            department_id: self.department_id,
        }
    }
}

/// What is needed to make a user.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Login name.
    pub username: String,
    /// Name shown to others.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Service point code (agents).
    pub point_code: Option<String>,
    /// Department code (approvers, experts).
    pub department_code: Option<String>,
    /// The initial password.
    pub password: String,
}

/// How a session is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A browser cookie; state-changing requests need the CSRF token.
    Cookie,
    /// An `Authorization: Bearer` token for tools.
    Bearer,
}

impl SessionKind {
    fn as_str(self) -> &'static str {
        match self {
            SessionKind::Cookie => "cookie",
            SessionKind::Bearer => "bearer",
        }
    }
}

/// A new session: the secret token (shown once) and its CSRF token.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The bearer or cookie value.
    pub token: String,
    /// The CSRF token to send in `X-CSRF-Token`.
    pub csrf_token: String,
    /// Expiry, epoch ms.
    pub expires_at: i64,
}

/// A live session looked up from its token.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user.
    pub user: User,
    /// How it is carried.
    pub kind: SessionKind,
    /// Its CSRF token.
    pub csrf_token: String,
    /// SHA-256 of the token, to end it.
    pub token_hash: String,
}

const USER_COLUMNS: &str = "id, username, display_name, role, point_id, department_id, disabled";

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let role: String = row.get(3)?;
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        display_name: row.get(2)?,
        role: Role::parse(&role).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                3,
                rusqlite::types::Type::Text,
                format!("unknown role {role}").into(),
            )
        })?,
        point_id: row.get(4)?,
        department_id: row.get(5)?,
        disabled: row.get(6)?,
    })
}

/// Hashes a password with argon2id and a random salt.
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))
}

/// Checks `password` against `hash` (argon2id; slow by design: run it off the database lock).
pub fn password_matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// `N` random bytes from the system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    Ok(bytes)
}

/// Random bytes as unpadded base64url.
pub fn random_token() -> Result<String> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// SHA-256 of a token, hex: what is stored instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Checks a new user's fields and the rule that agents have a point and approvers/experts a
/// department.
pub fn add_user(conn: &Connection, new: &NewUser, now: i64) -> Result<User> {
    let username = new.username.trim();
    if username.is_empty()
        || username.len() > 64
        || !username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(Error::bad(
            "invalid_field",
            "username: use 1-64 letters, digits, '.', '_' or '-'",
        ));
    }
    if new.role == Role::Resident {
        return Err(Error::bad(
            "invalid_field",
            "role: a resident's account comes from an invitation only",
        ));
    }
    if new.password.chars().count() < 8 {
        return Err(Error::bad(
            "invalid_field",
            "password: use at least 8 characters",
        ));
    }
    let point_id = match (&new.role, &new.point_code) {
        (Role::Agent, Some(code)) => {
            Some(crate::catalogue::point_id(conn, code)?.ok_or_else(|| {
                Error::bad(
                    "invalid_field",
                    format!("point: no service point with code {code}"),
                )
            })?)
        }
        (Role::Agent, None) => {
            return Err(Error::bad(
                "invalid_field",
                "point: an agent belongs to a service point",
            ));
        }
        (_, Some(_)) => {
            return Err(Error::bad(
                "invalid_field",
                "point: only agents belong to a service point",
            ));
        }
        (_, None) => None,
    };
    let department_id = match (&new.role, &new.department_code) {
        (Role::Approver | Role::Expert, Some(code)) => {
            Some(crate::catalogue::department_id(conn, code)?.ok_or_else(|| {
                Error::bad(
                    "invalid_field",
                    format!("department: no department with code {code}"),
                )
            })?)
        }
        (Role::Approver | Role::Expert, None) => {
            return Err(Error::bad(
                "invalid_field",
                "department: approvers and experts belong to a department",
            ));
        }
        (_, Some(_)) => {
            return Err(Error::bad(
                "invalid_field",
                "department: only approvers and experts belong to a department",
            ));
        }
        (_, None) => None,
    };
    let hash = hash_password(&new.password)?;
    let inserted = conn.execute(
        "INSERT INTO users (username, display_name, role, point_id, department_id, password_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![username, new.display_name.trim(), new.role.as_str(), point_id, department_id, hash, now],
    );
    if let Err(rusqlite::Error::SqliteFailure(e, _)) = &inserted
        && e.code == rusqlite::ErrorCode::ConstraintViolation
    {
        return Err(Error::conflict(
            "username_taken",
            format!("username {username} is already taken"),
        ));
    }
    inserted?;
    user_by_id(conn, conn.last_insert_rowid())?.ok_or(Error::NotFound("user"))
}

/// A user by id.
pub fn user_by_id(conn: &Connection, id: UserId) -> Result<Option<User>> {
    Ok(conn
        .query_row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
            [id],
            user_from_row,
        )
        .optional()?)
}

/// Every user, by username.
pub fn list_users(conn: &Connection) -> Result<Vec<User>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {USER_COLUMNS} FROM users ORDER BY username"
    ))?;
    let users = stmt
        .query_map([], user_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(users)
}

/// Disables an account and ends its sessions.
pub fn disable_user(conn: &Connection, username: &str) -> Result<User> {
    let id: UserId = conn
        .query_row(
            "SELECT id FROM users WHERE username = ?1",
            [username],
            |r| r.get(0),
        )
        .optional()?
        .ok_or(Error::NotFound("user"))?;
    conn.execute("UPDATE users SET disabled = 1 WHERE id = ?1", [id])?;
    conn.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
    user_by_id(conn, id)?.ok_or(Error::NotFound("user"))
}

/// Login settings.
#[derive(Debug, Clone, Copy)]
pub struct LoginPolicy {
    /// Failed attempts in a row that lock the account.
    pub max_failures: u32,
    /// Lock duration, ms.
    pub lockout_ms: i64,
    /// Session lifetime, ms.
    pub session_ms: i64,
}

/// An account as a login finds it, before the password is checked.
#[derive(Debug, Clone)]
pub enum LoginCandidate {
    /// No such login name: the password is checked against a dummy hash all the same, so that
    /// timing does not tell which names exist.
    Unknown,
    /// Too many wrong passwords came from this address.
    Locked {
        /// Minutes until it may try again.
        minutes: i64,
    },
    /// An account to check the password of.
    Account {
        /// Its id.
        id: UserId,
        /// Its argon2 hash.
        hash: String,
        /// Whether it is disabled (said only once the password is right).
        disabled: bool,
    },
}

impl LoginCandidate {
    /// The hash to check the password against; none for a locked address, which is refused
    /// without a check (its answer says it is locked anyway, and the check would be work for
    /// nothing).
    pub fn hash(&self) -> Option<&str> {
        match self {
            LoginCandidate::Account { hash, .. } => Some(hash),
            LoginCandidate::Unknown => Some(dummy_hash()),
            LoginCandidate::Locked { .. } => None,
        }
    }
}

/// The first step of a login (in the database lock): the account and whether `address` is locked
/// out of it.
pub fn login_candidate(
    conn: &Connection,
    username: &str,
    address: &str,
    now: i64,
) -> Result<LoginCandidate> {
    let row: Option<(UserId, String, bool)> = conn
        .query_row(
            // A resident's account has no password: only its invitation opens a session.
            "SELECT id, password_hash, disabled FROM users WHERE username = ?1 AND role != 'resident'",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((id, hash, disabled)) = row else {
        return Ok(LoginCandidate::Unknown);
    };
    let locked_until: Option<i64> = conn
        .query_row(
            "SELECT locked_until FROM login_failures WHERE username = ?1 AND address = ?2",
            params![username, address],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(until) = locked_until.filter(|&until| until > now) {
        return Ok(LoginCandidate::Locked {
            minutes: (until - now + 59_999) / 60_000,
        });
    }
    Ok(LoginCandidate::Account { id, hash, disabled })
}

/// The last step of a login (in the database lock): records the check's result for `address` and
/// opens a session when the password was right.
///
/// Every refusal before the password is right is the same `401`; a locked address is told so
/// (without a check, so the lock is no oracle), a disabled account only once its password is right.
#[allow(clippy::too_many_arguments)]
pub fn login_finish(
    conn: &Connection,
    username: &str,
    candidate: &LoginCandidate,
    password_ok: bool,
    address: &str,
    kind: SessionKind,
    policy: LoginPolicy,
    now: i64,
) -> Result<(User, NewSession)> {
    let wrong = || Error::Unauthenticated("wrong username or password");
    let (id, disabled) = match candidate {
        LoginCandidate::Unknown => return Err(wrong()),
        LoginCandidate::Locked { minutes } => {
            return Err(Error::denied(
                "account_locked",
                format!(
                    "too many wrong passwords from this address: try again in {minutes} minute(s), or from the usual computer"
                ),
            ));
        }
        LoginCandidate::Account { id, disabled, .. } => (*id, *disabled),
    };
    if !password_ok {
        let failures: u32 = conn
            .query_row(
                "SELECT failures FROM login_failures WHERE username = ?1 AND address = ?2",
                params![username, address],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0)
            + 1;
        let (failures, lock) = if failures >= policy.max_failures {
            (0, now + policy.lockout_ms)
        } else {
            (failures, 0)
        };
        conn.execute(
            "INSERT INTO login_failures (username, address, failures, locked_until, last_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (username, address) DO UPDATE
             SET failures = excluded.failures, locked_until = excluded.locked_until, last_at = excluded.last_at",
            params![username, address, failures, lock, now],
        )?;
        return Err(wrong());
    }
    conn.execute(
        "DELETE FROM login_failures WHERE username = ?1 AND address = ?2",
        params![username, address],
    )?;
    if disabled {
        return Err(Error::denied(
            "account_disabled",
            "this account is disabled; ask an administrator",
        ));
    }
    let session = new_session(conn, id, kind, now, policy.session_ms)?;
    let user = user_by_id(conn, id)?.ok_or(Error::NotFound("user"))?;
    Ok((user, session))
}

/// Opens a session of `kind` for user `id`, lasting `length_ms`.
pub fn new_session(
    conn: &Connection,
    id: UserId,
    kind: SessionKind,
    now: i64,
    length_ms: i64,
) -> Result<NewSession> {
    let session = NewSession {
        token: random_token()?,
        csrf_token: random_token()?,
        expires_at: now + length_ms,
    };
    conn.execute(
        "INSERT INTO sessions (token_hash, user_id, kind, csrf_token, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![token_hash(&session.token), id, kind.as_str(), session.csrf_token, now, session.expires_at],
    )?;
    Ok(session)
}

/// Forgets failed-login records that no longer lock anything and are older than `older_than`.
pub fn forget_login_failures(conn: &Connection, older_than: i64, now: i64) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM login_failures WHERE last_at < ?1 AND locked_until <= ?2",
        params![older_than, now],
    )?)
}

/// An argon2 hash of a random password, made once, for timing-equal refusals.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        random_token()
            .and_then(|pw| hash_password(&pw))
            .unwrap_or_default()
    })
}

/// Looks up a live session; expired sessions are removed and refused.
pub fn session(conn: &Connection, token: &str, now: i64) -> Result<Session> {
    let hash = token_hash(token);
    let row: Option<(UserId, String, String, i64)> = conn
        .query_row(
            "SELECT user_id, kind, csrf_token, expires_at FROM sessions WHERE token_hash = ?1",
            [&hash],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((user_id, kind, csrf_token, expires_at)) = row else {
        return Err(Error::Unauthenticated(
            "not logged in, or the session has ended; log in again",
        ));
    };
    if expires_at <= now {
        conn.execute("DELETE FROM sessions WHERE token_hash = ?1", [&hash])?;
        return Err(Error::Unauthenticated(
            "the session has expired; log in again",
        ));
    }
    let user =
        user_by_id(conn, user_id)?.ok_or(Error::Unauthenticated("the account no longer exists"))?;
    if user.disabled {
        return Err(Error::Unauthenticated("this account is disabled"));
    }
    Ok(Session {
        user,
        kind: if kind == "bearer" {
            SessionKind::Bearer
        } else {
            SessionKind::Cookie
        },
        csrf_token,
        token_hash: hash,
    })
}

/// Whether the session with this token hash exists, has not expired, and its user is enabled.
pub fn session_alive(conn: &Connection, token_hash: &str, now: i64) -> Result<bool> {
    let alive: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = ?1 AND s.expires_at > ?2 AND u.disabled = 0",
            params![token_hash, now],
            |r| r.get(0),
        )
        .optional()?;
    Ok(alive.is_some())
}

/// Ends a session.
pub fn logout(conn: &Connection, token_hash: &str) -> Result<()> {
    conn.execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])?;
    Ok(())
}
