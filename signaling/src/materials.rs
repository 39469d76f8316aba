//! Materials (申请材料) of a case: photos, scans and PDFs, typed from their bytes and stored by
//! digest. The row is written only after the blob is durable; the upload is acknowledged after
//! the row commits.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::audit;
use crate::config::rfc3339;
use crate::error::{Error, Result};
use crate::workflow::Actor;

/// The media types accepted, recognised from the first bytes of the file.
pub const ACCEPTED_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/heif",
    "image/tiff",
    "application/pdf",
];

/// A stored material.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Material {
    /// Id.
    pub id: i64,
    /// Case.
    pub case_id: i64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type recognised from the bytes.
    pub media_type: String,
    /// The file name the uploader gave.
    pub filename: String,
    /// Who uploaded it.
    pub uploaded_by: i64,
    /// When, RFC 3339.
    pub uploaded_at: String,
}

/// A durable blob about to be recorded as a material.
#[derive(Debug, Clone)]
pub struct StoredBlob {
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type recognised from the bytes.
    pub media_type: &'static str,
    /// The uploader's file name (checked).
    pub filename: String,
}

/// Stores bytes the server made for a case (a rendered signature, an annotated picture, their
/// records) durably in the blob folder, ready to be recorded as a material. Blocking.
pub fn made_blob(
    blobs: &crate::blobs::BlobStore,
    bytes: &[u8],
    media_type: &'static str,
    filename: String,
) -> Result<StoredBlob> {
    let (sha256, size) = blobs.store_bytes(bytes)?;
    Ok(StoredBlob {
        sha256,
        size,
        media_type,
        filename,
    })
}

/// Recognises the type of a file from its first bytes; refuses anything not accepted.
pub fn sniff(head: &[u8]) -> Result<&'static str> {
    let kind = infer::get(head).map(|k| k.mime_type());
    match kind {
        Some(m) if ACCEPTED_TYPES.contains(&m) => Ok(ACCEPTED_TYPES.iter().find(|t| **t == m).copied().unwrap_or("application/octet-stream")),
        Some(m) => Err(Error::UnsupportedMedia(format!(
            "the file's content is {m}; accepted are photos and scans (JPEG, PNG, WebP, HEIF, TIFF) and PDF"
        ))),
        None => Err(Error::UnsupportedMedia(
            "the file's content is not a recognised photo, scan or PDF (the type is read from the bytes, not the name)".into(),
        )),
    }
}

/// Checks an uploader's file name: a plain name, no folders, no control characters.
pub fn check_filename(name: &str) -> Result<String> {
    let name = name.trim();
    let bad = |why: &str| Error::bad("invalid_filename", format!("filename: {why}"));
    if name.is_empty() {
        return Err(bad("give the file's name in ?filename="));
    }
    if name.chars().count() > 200 {
        return Err(bad("at most 200 characters"));
    }
    if name.contains(['/', '\\']) || name == "." || name == ".." || name.starts_with("..") {
        return Err(bad("a plain file name without folders or '..'"));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c.is_control() || esign::verify::is_bidi_control(c))
    {
        return Err(bad(&format!(
            "no control or text-direction characters (found U+{:04X})",
            u32::from(c)
        )));
    }
    Ok(name.to_string())
}

/// How many materials a case has.
pub fn count(conn: &Connection, case_id: i64) -> Result<u32> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM materials WHERE case_id = ?1",
        [case_id],
        |r| r.get(0),
    )?)
}

/// Records a material whose blob is already durable, with its audit event.
pub fn insert(
    conn: &mut Connection,
    case_id: i64,
    actor: &Actor,
    blob: &StoredBlob,
    now: i64,
) -> Result<Material> {
    insert_as(
        conn,
        case_id,
        actor.id,
        Some(actor),
        "material.uploaded",
        blob,
        now,
    )
}

/// Records a durable blob as a material of `case_id` attributed to `owner`, with an audit event
/// `event` by `actor` (none: the system, e.g. a call recording).
pub fn insert_as(
    conn: &mut Connection,
    case_id: i64,
    owner: i64,
    actor: Option<&Actor>,
    event: &str,
    blob: &StoredBlob,
    now: i64,
) -> Result<Material> {
    let tx = conn.transaction()?;
    let id = insert_in(&tx, case_id, owner, actor, event, blob, now)?;
    tx.commit()?;
    get(conn, case_id, id)?.ok_or(Error::NotFound("material"))
}

/// Like [`insert_as`], inside the caller's transaction; returns the material's id.
pub fn insert_in(
    conn: &Connection,
    case_id: i64,
    owner: i64,
    actor: Option<&Actor>,
    event: &str,
    blob: &StoredBlob,
    now: i64,
) -> Result<i64> {
    let StoredBlob {
        sha256,
        size,
        media_type,
        filename,
    } = blob;
    conn.execute(
        "INSERT INTO materials (case_id, sha256, size, media_type, filename, uploaded_by, uploaded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![case_id, sha256, size, media_type, filename, owner, now],
    )?;
    let id = conn.last_insert_rowid();
    audit::append(
        conn,
        now,
        actor,
        Some(case_id),
        event,
        &serde_json::json!({ "material_id": id, "sha256": sha256, "size": size, "media_type": media_type }),
    )?;
    Ok(id)
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Material> {
    Ok(Material {
        id: r.get(0)?,
        case_id: r.get(1)?,
        sha256: r.get(2)?,
        size: r.get(3)?,
        media_type: r.get(4)?,
        filename: r.get(5)?,
        uploaded_by: r.get(6)?,
        uploaded_at: rfc3339(r.get(7)?),
    })
}

const COLUMNS: &str = "id, case_id, sha256, size, media_type, filename, uploaded_by, uploaded_at";

/// The materials of a case, oldest first.
pub fn list(conn: &Connection, case_id: i64) -> Result<Vec<Material>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM materials WHERE case_id = ?1 ORDER BY id"
    ))?;
    let rows = stmt
        .query_map([case_id], from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// One material of a case.
pub fn get(conn: &Connection, case_id: i64, id: i64) -> Result<Option<Material>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM materials WHERE case_id = ?1 AND id = ?2"),
            params![case_id, id],
            from_row,
        )
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_comes_from_the_bytes_not_the_name() {
        assert_eq!(sniff(b"%PDF-1.7\n").unwrap(), "application/pdf");
        assert_eq!(
            sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F']).unwrap(),
            "image/jpeg"
        );
        assert!(matches!(
            sniff(b"MZ\x90\x00 an executable"),
            Err(Error::UnsupportedMedia(_))
        ));
        assert!(matches!(
            sniff(b"just text"),
            Err(Error::UnsupportedMedia(_))
        ));
    }

    #[test]
    fn file_names_with_folders_or_control_characters_are_refused() {
        assert_eq!(
            check_filename(" 户口簿首页.jpg ").unwrap(),
            "户口簿首页.jpg"
        );
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "a\\b.jpg",
            "..",
            "a\nb.jpg",
            "",
        ] {
            assert!(check_filename(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_names_with_text_direction_characters_are_refused_naming_the_character() {
        // U+202E shows "photo\u{202e}gpj.exe" as "photoexe.jpg".
        for (name, code) in [
            ("photo\u{202e}gpj.exe", "U+202E"),
            ("a\u{2067}b.jpg", "U+2067"),
            ("a\u{200f}.png", "U+200F"),
        ] {
            let message = check_filename(name).unwrap_err().to_string();
            assert!(message.contains(code), "{name:?}: {message}");
        }
    }
}
