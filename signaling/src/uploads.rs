//! Resumable uploads of materials, for agents on weak links: an offset-based protocol in the
//! manner of tus. The uploader declares the file (name, size, SHA-256) and gets an upload id;
//! it sends the bytes in chunks, each at the offset the server acknowledged last; a chunk is
//! acknowledged only once its bytes are fsynced and its new offset committed, so after a drop
//! (or a server crash) the uploader asks for the offset and goes on from there. The last chunk
//! checks the whole file's digest and stores it as a material, as a plain upload does. Only the
//! uploader sees or continues its upload; one not finished within a day is removed.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::workflow::Actor;

/// Largest chunk a request may carry; the client sends `CHUNK_BYTES`.
pub const MAX_CHUNK_BYTES: u64 = 8 << 20;

/// The chunk size the server suggests: small enough that a weak 4G link (~600 kb/s up) sends
/// one in a few seconds, so a drop loses little.
pub const CHUNK_BYTES: u64 = 256 << 10;

/// Unfinished uploads one user may hold at once.
pub const MAX_OPEN_PER_USER: i64 = 8;

/// How long an unfinished upload is kept, ms.
pub const KEEP_MS: i64 = 24 * 60 * 60 * 1000;

/// An upload in progress.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Upload {
    /// Its id (opaque).
    pub id: String,
    /// The case.
    pub case_id: i64,
    /// The file's name.
    pub filename: String,
    /// Declared size in bytes.
    pub size: u64,
    /// Declared SHA-256 (lowercase hex).
    pub sha256: String,
    /// Bytes acknowledged so far: the next chunk starts here.
    pub offset: u64,
    /// The chunk size to send.
    pub chunk_bytes: u64,
    /// When it is removed if not finished (ms since the epoch).
    pub expires_at: i64,
    /// The uploader (not shown).
    #[serde(skip)]
    pub user_id: i64,
}

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Upload> {
    let created_at: i64 = row.get(7)?;
    Ok(Upload {
        id: row.get(0)?,
        case_id: row.get(1)?,
        user_id: row.get(2)?,
        filename: row.get(3)?,
        size: row.get::<_, i64>(4)? as u64,
        sha256: row.get(5)?,
        offset: row.get::<_, i64>(6)? as u64,
        chunk_bytes: CHUNK_BYTES,
        expires_at: created_at + KEEP_MS,
    })
}

const COLUMNS: &str = "id, case_id, user_id, filename, size, sha256, acknowledged, created_at";

/// A declared SHA-256: 64 lowercase hex digits.
pub fn check_sha256(sha256: &str) -> Result<()> {
    let ok = sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::bad(
            "bad_sha256",
            "sha256 must be 64 lowercase hexadecimal digits",
        ))
    }
}

/// Records a new upload by `actor` for case `case_id` (checked by the caller), after removing
/// the expired ones; returns it and the ids of the removed ones (their files are the caller's to
/// delete).
pub fn create(
    conn: &mut Connection,
    case_id: i64,
    actor: &Actor,
    filename: &str,
    size: u64,
    sha256: &str,
    now: i64,
) -> Result<(Upload, Vec<String>)> {
    let tx = conn.transaction()?;
    let expired = expire(&tx, now)?;
    let open: i64 = tx.query_row(
        "SELECT COUNT(*) FROM uploads WHERE user_id = ?1",
        [actor.id],
        |r| r.get(0),
    )?;
    if open >= MAX_OPEN_PER_USER {
        return Err(Error::conflict(
            "too_many_uploads",
            format!("you have {open} unfinished uploads: finish or cancel one first"),
        ));
    }
    let id = hex::encode(crate::accounts::random_bytes::<16>()?);
    tx.execute(
        "INSERT INTO uploads (id, case_id, user_id, filename, size, sha256, acknowledged, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7)",
        params![id, case_id, actor.id, filename, size as i64, sha256, now],
    )?;
    let upload = tx.query_row(
        &format!("SELECT {COLUMNS} FROM uploads WHERE id = ?1"),
        [&id],
        from_row,
    )?;
    tx.commit()?;
    Ok((upload, expired))
}

/// Upload `id` of case `case_id`, if `actor` started it (anyone else is told it does not exist).
pub fn get(conn: &Connection, case_id: i64, id: &str, actor: &Actor) -> Result<Upload> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM uploads WHERE id = ?1 AND case_id = ?2 AND user_id = ?3"),
        params![id, case_id, actor.id],
        from_row,
    )
    .optional()?
    .ok_or(Error::NotFound("upload"))
}

/// Records that the bytes of `id` up to `offset` are on disk (fsynced).
pub fn acknowledge(conn: &Connection, id: &str, offset: u64) -> Result<()> {
    conn.execute(
        "UPDATE uploads SET acknowledged = ?2 WHERE id = ?1",
        params![id, offset as i64],
    )?;
    Ok(())
}

/// Forgets upload `id` (finished or cancelled).
pub fn remove(conn: &Connection, id: &str) -> Result<()> {
    conn.execute("DELETE FROM uploads WHERE id = ?1", [id])?;
    Ok(())
}

/// Forgets the uploads older than [`KEEP_MS`]; returns their ids.
pub fn expire(conn: &Connection, now: i64) -> Result<Vec<String>> {
    let cutoff = now - KEEP_MS;
    let ids = conn
        .prepare("SELECT id FROM uploads WHERE created_at < ?1")?
        .query_map([cutoff], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    conn.execute("DELETE FROM uploads WHERE created_at < ?1", [cutoff])?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_digest_must_be_64_lowercase_hex_digits() {
        assert!(check_sha256(&"a".repeat(64)).is_ok());
        assert!(check_sha256(&"A".repeat(64)).is_err());
        assert!(check_sha256(&"a".repeat(63)).is_err());
        assert!(check_sha256(&"g".repeat(64)).is_err());
    }
}
