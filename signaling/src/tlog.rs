//! The transparency log on SQLite: esign's `LogStore` over the `log_nodes` table, the entries
//! themselves in `log_entries`, and the signing keys (approvers' browser keys and the seal key)
//! whose registrations and revocations are log entries.
//!
//! Every function takes the caller's connection or transaction, so an append commits or rolls
//! back together with whatever it records (a key row, a sealed case).

use esign::entry::{KeyRegistration, KeyRevocation, KeyRole, LogEntry};
use esign::keys::{LogKey, key_id};
use esign::log::{KeyRecord, SignedCheckpoint, TransparencyLog};
use esign::merkle::{Hash, LogStore, Node};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::{Error, Result};

/// esign's log storage over a SQLite connection (or transaction).
pub struct SqliteLogStore<'a> {
    conn: &'a Connection,
}

fn store_err(e: rusqlite::Error) -> esign::Error {
    esign::Error::Store(Box::new(e))
}

impl LogStore for SqliteLogStore<'_> {
    fn size(&self) -> Result<u64, esign::Error> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM log_nodes WHERE level = 0", [], |r| {
                r.get(0)
            })
            .map_err(store_err)?;
        Ok(n as u64)
    }

    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, esign::Error> {
        let bytes: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT hash FROM log_nodes WHERE level = ?1 AND idx = ?2",
                params![level, index as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(store_err)?;
        bytes
            .map(|b| {
                <Hash>::try_from(b.as_slice()).map_err(|_| {
                    esign::Error::Store(format!("log node {level}/{index} is not 32 bytes").into())
                })
            })
            .transpose()
    }

    fn append(&mut self, nodes: &[Node]) -> Result<(), esign::Error> {
        // Callers run inside a transaction, which makes the batch all or nothing.
        for node in nodes {
            self.conn
                .execute(
                    "INSERT INTO log_nodes (level, idx, hash) VALUES (?1, ?2, ?3)",
                    params![node.level, node.index as i64, node.hash.as_slice()],
                )
                .map_err(store_err)?;
        }
        Ok(())
    }
}

/// The log over `conn`, signing with `key`.
pub fn open<'a>(conn: &'a Connection, key: &LogKey) -> TransparencyLog<SqliteLogStore<'a>> {
    TransparencyLog::new(SqliteLogStore { conn }, key.clone())
}

/// Maps esign errors: a signature or proof that fails is the caller's input; the rest is ours.
pub fn esign_error(e: esign::Error) -> Error {
    match e {
        esign::Error::Verification(m) => Error::bad("signature_invalid", m),
        esign::Error::Malformed { .. } | esign::Error::NonCanonicalJson(_) => {
            Error::bad("invalid_field", e.to_string())
        }
        other => Error::Internal(format!("esign: {other}")),
    }
}

/// Appends an entry (call inside a transaction); returns its index.
pub fn append(
    conn: &Connection,
    key: &LogKey,
    entry: &LogEntry,
    case_id: Option<i64>,
    now: i64,
) -> Result<u64> {
    let index = open(conn, key).append(entry).map_err(esign_error)?;
    let kind = match entry {
        LogEntry::Statement(_) => "statement",
        LogEntry::KeyRegistration(_) => "key_registration",
        LogEntry::KeyRevocation(_) => "key_revocation",
        _ => "other",
    };
    conn.execute(
        "INSERT INTO log_entries (idx, kind, entry, case_id, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            index as i64,
            kind,
            entry.encode().map_err(esign_error)?,
            case_id,
            now
        ],
    )?;
    Ok(index)
}

/// The current signed checkpoint.
pub fn checkpoint(conn: &Connection, key: &LogKey) -> Result<SignedCheckpoint> {
    open(conn, key).checkpoint().map_err(esign_error)
}

/// The consistency proof between two sizes, each at most the current size.
pub fn consistency(conn: &Connection, key: &LogKey, old: u64, new: u64) -> Result<Vec<Hash>> {
    let size = open(conn, key).size().map_err(esign_error)?;
    if old == 0 || old > new || new > size {
        return Err(Error::bad(
            "invalid_query",
            format!(
                "need 1 <= old <= new <= {size} (the current log size); an empty tree has no proof"
            ),
        ));
    }
    open(conn, key)
        .consistency_proof(old, new)
        .map_err(esign_error)
}

/// A registered key as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SigningKeyInfo {
    /// `ed25519:<16 hex>`.
    pub key_id: String,
    /// Owner user id (none for the seal key).
    pub user_id: Option<i64>,
    /// `approver` or `seal`.
    pub role: String,
    /// The raw public key, base64.
    pub public_key: String,
    /// Log index of the registration.
    pub log_index: u64,
    /// Revoked at this log index, if revoked.
    pub revocation_log_index: Option<u64>,
}

fn key_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<SigningKeyInfo> {
    Ok(SigningKeyInfo {
        key_id: r.get(0)?,
        user_id: r.get(1)?,
        role: r.get(2)?,
        public_key: r.get(3)?,
        log_index: r.get::<_, i64>(4)? as u64,
        revocation_log_index: r.get::<_, Option<i64>>(5)?.map(|i| i as u64),
    })
}

const KEY_COLUMNS: &str = "key_id, user_id, role, public_key, log_index, revocation_log_index";

/// One key by id.
pub fn key(conn: &Connection, key_id: &str) -> Result<Option<SigningKeyInfo>> {
    Ok(conn
        .query_row(
            &format!("SELECT {KEY_COLUMNS} FROM signing_keys WHERE key_id = ?1"),
            [key_id],
            key_info,
        )
        .optional()?)
}

/// Keys, all or of one user.
pub fn keys(conn: &Connection, user_id: Option<i64>) -> Result<Vec<SigningKeyInfo>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {KEY_COLUMNS} FROM signing_keys WHERE (?1 IS NULL OR user_id = ?1) ORDER BY log_index"
    ))?;
    let rows = stmt
        .query_map([user_id], key_info)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Registers a public key in the log (call inside a transaction).
pub fn register_key(
    conn: &Connection,
    log_key: &LogKey,
    key: &ed25519_dalek::VerifyingKey,
    user_id: Option<i64>,
    role: KeyRole,
    now: i64,
) -> Result<SigningKeyInfo> {
    let id = key_id(key);
    if self::key(conn, &id)?.is_some() {
        return Err(Error::conflict(
            "key_exists",
            format!("the key {id} is already registered"),
        ));
    }
    let owner = user_id.map_or_else(|| "server".to_string(), |u| format!("user:{u}"));
    let entry = LogEntry::KeyRegistration(KeyRegistration::new(key, &owner, role));
    let index = append(conn, log_key, &entry, None, now)?;
    conn.execute(
        "INSERT INTO signing_keys (key_id, user_id, role, public_key, registered_at, log_index) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, user_id, role.as_str(), esign::sig::public_key_to_base64(key), now, index as i64],
    )?;
    self::key(conn, &id)?.ok_or(Error::NotFound("key"))
}

/// Revokes a key in the log (call inside a transaction).
pub fn revoke_key(
    conn: &Connection,
    log_key: &LogKey,
    key_id: &str,
    reason: &str,
    now: i64,
) -> Result<SigningKeyInfo> {
    let info = key(conn, key_id)?.ok_or(Error::NotFound("key"))?;
    if info.revocation_log_index.is_some() {
        return Err(Error::conflict(
            "already_revoked",
            "this key is already revoked",
        ));
    }
    let entry = LogEntry::KeyRevocation(KeyRevocation {
        key_id: key_id.to_string(),
        reason: reason.to_string(),
    });
    let index = append(conn, log_key, &entry, None, now)?;
    conn.execute(
        "UPDATE signing_keys SET revoked_at = ?2, revocation_log_index = ?3, revocation_reason = ?4 WHERE key_id = ?1",
        params![key_id, now, index as i64, reason],
    )?;
    key(conn, key_id)?.ok_or(Error::NotFound("key"))
}

/// The log entry at `index`.
pub fn entry_at(conn: &Connection, index: u64) -> Result<LogEntry> {
    let bytes: Vec<u8> = conn.query_row(
        "SELECT entry FROM log_entries WHERE idx = ?1",
        [index as i64],
        |r| r.get(0),
    )?;
    LogEntry::decode(&bytes).map_err(esign_error)
}

/// The registration (and revocation, if any) of a key, as the archive's evidence needs them.
pub fn key_record(conn: &Connection, key_id: &str) -> Result<KeyRecord> {
    let info = key(conn, key_id)?.ok_or(Error::NotFound("key"))?;
    let LogEntry::KeyRegistration(registration) = entry_at(conn, info.log_index)? else {
        return Err(Error::Internal(format!(
            "log entry {} is not the registration of {key_id}",
            info.log_index
        )));
    };
    let revocation = match info.revocation_log_index {
        Some(at) => match entry_at(conn, at)? {
            LogEntry::KeyRevocation(r) => Some((r, at)),
            _ => {
                return Err(Error::Internal(format!(
                    "log entry {at} is not the revocation of {key_id}"
                )));
            }
        },
        None => None,
    };
    Ok(KeyRecord {
        registration,
        registered_at: info.log_index,
        revocation,
    })
}

/// Registers the server's seal key at start when it is not in the log yet (first start, or a
/// rotated key). Old archives keep verifying: their evidence carries the old key's registration.
pub fn ensure_seal_key(
    conn: &mut Connection,
    log_key: &LogKey,
    seal: &esign::keys::SealKey,
    now: i64,
) -> Result<()> {
    if key(conn, &seal.key_id())?.is_some() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    register_key(
        &tx,
        log_key,
        &seal.verifying_key(),
        None,
        KeyRole::Seal,
        now,
    )?;
    tx.commit()?;
    Ok(())
}
