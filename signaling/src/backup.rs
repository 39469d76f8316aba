//! `cloudhelp backup DIR` and `cloudhelp restore DIR`: a consistent copy of a data folder, taken
//! while the server runs, and its return into a fresh folder.
//!
//! The database is copied with `VACUUM INTO`, one read transaction of SQLite's own, so the copy is
//! the database as of one instant even while the server writes. Blobs are content-addressed and
//! written (fsynced and renamed) before the row that names them commits, so every blob the copy
//! names is already on disk when the copy is taken; each is copied and its SHA-256 checked on the
//! way. The keys, the trust file and the TLS certificate come along. `backup.json` lists every
//! file with its digest; restore checks them all before it writes anything into the new folder.

use std::io::{Read, Write};
use std::path::Path;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::blobs::BlobStore;
use crate::error::{Error, Result};

/// The name of the manifest in a backup folder.
pub const MANIFEST: &str = "backup.json";

/// The files of the data folder a backup carries besides the database and blobs.
const FIXED_FILES: [&str; 5] = [
    "keys/seal.key",
    "keys/log.key",
    "trust.json",
    "tls/cert.pem",
    "tls/key.pem",
];

/// One file of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupFile {
    /// Path relative to the data folder.
    pub path: String,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What `backup.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Always 1.
    pub format: u32,
    /// When the backup was taken, epoch ms.
    pub created_at: i64,
    /// Every file, the database first.
    pub files: Vec<BackupFile>,
}

/// Copies `from` to `to` (created 0600 when `private`), hashing the bytes; fsyncs the copy.
fn copy_hashed(from: &Path, to: &Path, private: bool) -> Result<(String, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut input = std::fs::File::open(from)?;
    let mut output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(to)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n])?;
        size += n as u64;
    }
    output.sync_all()?;
    Ok((hex::encode(hasher.finalize()), size))
}

fn empty_folder(dir: &Path, what: &str) -> Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(Error::bad(
            "not_empty",
            format!("{what} {} is not empty: give a new folder", dir.display()),
        ));
    }
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    Ok(())
}

/// The blobs the database names (materials and archives).
fn named_blobs(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT sha256 FROM materials UNION SELECT sha256 FROM archives ORDER BY 1")?;
    let digests = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(digests)
}

/// Takes a consistent backup of the data folder `data` (a server may be running on it) into the
/// new folder `to`.
pub fn backup(data: &Path, to: &Path, now: i64) -> Result<Manifest> {
    let database = data.join("cloudhelp.db");
    if !database.exists() {
        return Err(Error::bad(
            "no_database",
            format!("{} holds no cloudhelp.db", data.display()),
        ));
    }
    empty_folder(to, "the backup folder")?;
    let copy = to.join("cloudhelp.db");
    let source = Connection::open(&database)?;
    source.busy_timeout(std::time::Duration::from_secs(30))?;
    source.execute("VACUUM INTO ?1", [copy.to_string_lossy()])?;
    drop(source);
    std::fs::File::open(&copy)?.sync_all()?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600))?;
    }
    let (sha256, size) = hash_file(&copy)?;
    let mut files = vec![BackupFile {
        path: "cloudhelp.db".into(),
        sha256,
        size,
    }];
    let snapshot = Connection::open_with_flags(&copy, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let from_blobs = BlobStore::at(&data.join("blobs"));
    let to_blobs = BlobStore::at(&to.join("blobs"));
    for digest in named_blobs(&snapshot)? {
        let (sha256, size) =
            copy_hashed(&from_blobs.path(&digest), &to_blobs.path(&digest), false)?;
        if sha256 != digest {
            return Err(Error::Internal(format!(
                "blob {digest} in the data folder hashes to {sha256}: the store is damaged"
            )));
        }
        files.push(BackupFile {
            path: relative(&to_blobs.path(&digest), to),
            sha256,
            size,
        });
    }
    for path in FIXED_FILES {
        let from = data.join(path);
        if from.exists() {
            let (sha256, size) = copy_hashed(&from, &to.join(path), path.ends_with(".key"))?;
            files.push(BackupFile {
                path: path.into(),
                sha256,
                size,
            });
        }
    }
    let manifest = Manifest {
        format: 1,
        created_at: now,
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
    let mut out = std::fs::File::create(to.join(MANIFEST))?;
    out.write_all(&text)?;
    out.sync_all()?;
    Ok(manifest)
}

fn relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), size))
}

/// Brings the backup in `from` back into the new data folder `data`: every file is checked against
/// the manifest first, then copied, and the copied database passes SQLite's integrity check.
pub fn restore(from: &Path, data: &Path) -> Result<Manifest> {
    let text = std::fs::read(from.join(MANIFEST)).map_err(|e| {
        Error::bad(
            "not_a_backup",
            format!("{}: no {MANIFEST} ({e})", from.display()),
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| Error::bad("not_a_backup", format!("{MANIFEST}: {e}")))?;
    for file in &manifest.files {
        let safe = Path::new(&file.path)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !safe {
            return Err(Error::bad(
                "not_a_backup",
                format!("{MANIFEST} names {:?}, outside the backup", file.path),
            ));
        }
        let (sha256, size) = hash_file(&from.join(&file.path))
            .map_err(|e| Error::bad("damaged_backup", format!("{}: {e}", file.path)))?;
        if (sha256.as_str(), size) != (file.sha256.as_str(), file.size) {
            return Err(Error::bad(
                "damaged_backup",
                format!(
                    "{} does not match {MANIFEST} (SHA-256 {sha256}, {size} bytes)",
                    file.path
                ),
            ));
        }
    }
    empty_folder(data, "the data folder")?;
    for file in &manifest.files {
        let private = file.path == "cloudhelp.db" || file.path.ends_with(".key");
        copy_hashed(&from.join(&file.path), &data.join(&file.path), private)?;
    }
    let conn = Connection::open(data.join("cloudhelp.db"))?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(Error::Internal(format!(
            "the restored database fails SQLite's integrity check: {check}"
        )));
    }
    Ok(manifest)
}
