//! The SQLite database: opening in WAL mode, versioned migrations, and running queries off the
//! async runtime.
//!
//! One connection behind a mutex: SQLite has one writer anyway, and serialising here makes every
//! read-modify-write (accept, rate, close a follow-up) atomic without retry loops. Queries run on
//! tokio's blocking pool so they never stall the reactor.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use crate::error::{Error, Result};

/// The schema, one entry per version. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, catalogue, cases, materials, ratings, follow-ups, audit.
    r#"
    CREATE TABLE departments (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL
    );
    CREATE TABLE service_points (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        township TEXT NOT NULL
    );
    CREATE TABLE service_items (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        department_id INTEGER NOT NULL REFERENCES departments(id),
        required_materials TEXT NOT NULL,
        simple INTEGER NOT NULL
    );
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL,
        role TEXT NOT NULL,
        point_id INTEGER REFERENCES service_points(id),
        department_id INTEGER REFERENCES departments(id),
        password_hash TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        failed_logins INTEGER NOT NULL DEFAULT 0,
        locked_until INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        kind TEXT NOT NULL,
        csrf_token TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE cases (
        id INTEGER PRIMARY KEY,
        number TEXT NOT NULL UNIQUE,
        item_id INTEGER NOT NULL REFERENCES service_items(id),
        department_id INTEGER NOT NULL REFERENCES departments(id),
        point_id INTEGER NOT NULL REFERENCES service_points(id),
        agent_id INTEGER NOT NULL REFERENCES users(id),
        approver_id INTEGER REFERENCES users(id),
        state TEXT NOT NULL,
        applicant_name TEXT NOT NULL,
        applicant_id_number TEXT NOT NULL,
        note TEXT NOT NULL,
        identity_checked INTEGER NOT NULL DEFAULT 0,
        decision_reason TEXT,
        opened_at INTEGER NOT NULL,
        queued_at INTEGER NOT NULL,
        accepted_at INTEGER,
        decided_at INTEGER,
        ended_at INTEGER,
        version INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX cases_by_department_state ON cases(department_id, state);
    CREATE INDEX cases_by_point ON cases(point_id);
    CREATE TABLE case_experts (
        case_id INTEGER NOT NULL REFERENCES cases(id),
        user_id INTEGER NOT NULL REFERENCES users(id),
        invited_at INTEGER NOT NULL,
        PRIMARY KEY (case_id, user_id)
    );
    CREATE TABLE materials (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        media_type TEXT NOT NULL,
        filename TEXT NOT NULL,
        uploaded_by INTEGER NOT NULL REFERENCES users(id),
        uploaded_at INTEGER NOT NULL
    );
    CREATE INDEX materials_by_case ON materials(case_id);
    CREATE TABLE ratings (
        case_id INTEGER PRIMARY KEY REFERENCES cases(id),
        score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
        comment TEXT NOT NULL,
        recorded_by INTEGER NOT NULL REFERENCES users(id),
        recorded_at INTEGER NOT NULL
    );
    CREATE TABLE followups (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL UNIQUE REFERENCES cases(id),
        opened_at INTEGER NOT NULL,
        due_at INTEGER NOT NULL,
        closed_at INTEGER,
        closed_by INTEGER REFERENCES users(id),
        outcome TEXT
    );
    CREATE TABLE audit_events (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        actor_id INTEGER,
        actor_role TEXT,
        case_id INTEGER,
        kind TEXT NOT NULL,
        details TEXT NOT NULL
    );
    CREATE INDEX audit_by_case ON audit_events(case_id);
    CREATE TRIGGER audit_events_are_append_only_update BEFORE UPDATE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
    CREATE TRIGGER audit_events_are_append_only_delete BEFORE DELETE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
    "#,
    // 2: the transparency log, signing keys and sealed archives.
    r#"
    CREATE TABLE log_nodes (
        level INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (level, idx)
    ) WITHOUT ROWID;
    CREATE TABLE log_entries (
        idx INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        entry BLOB NOT NULL,
        case_id INTEGER REFERENCES cases(id),
        at INTEGER NOT NULL
    );
    CREATE TABLE signing_keys (
        key_id TEXT PRIMARY KEY,
        user_id INTEGER REFERENCES users(id),
        role TEXT NOT NULL,
        public_key TEXT NOT NULL,
        registered_at INTEGER NOT NULL,
        log_index INTEGER NOT NULL,
        revoked_at INTEGER,
        revocation_log_index INTEGER,
        revocation_reason TEXT
    );
    CREATE TABLE archives (
        case_id INTEGER PRIMARY KEY REFERENCES cases(id),
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        statement_sha256 TEXT NOT NULL,
        log_index INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TRIGGER log_nodes_are_append_only_update BEFORE UPDATE ON log_nodes
        BEGIN SELECT RAISE(ABORT, 'the log is append-only'); END;
    CREATE TRIGGER log_nodes_are_append_only_delete BEFORE DELETE ON log_nodes
        BEGIN SELECT RAISE(ABORT, 'the log is append-only'); END;
    CREATE TRIGGER log_entries_are_append_only_update BEFORE UPDATE ON log_entries
        BEGIN SELECT RAISE(ABORT, 'the log is append-only'); END;
    CREATE TRIGGER log_entries_are_append_only_delete BEFORE DELETE ON log_entries
        BEGIN SELECT RAISE(ABORT, 'the log is append-only'); END;
    "#,
    // 3: the call quality record of each case.
    r#"
    CREATE TABLE call_quality (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        at INTEGER NOT NULL,
        participant TEXT NOT NULL,
        quality TEXT NOT NULL
    );
    CREATE INDEX call_quality_by_case ON call_quality(case_id);
    "#,
    // 4: failed logins counted per account and client address, so that a stranger's failures lock
    // only the stranger's address out of the account.
    r#"
    CREATE TABLE login_failures (
        username TEXT NOT NULL,
        address TEXT NOT NULL,
        failures INTEGER NOT NULL,
        locked_until INTEGER NOT NULL,
        last_at INTEGER NOT NULL,
        PRIMARY KEY (username, address)
    );
    ALTER TABLE users DROP COLUMN failed_logins;
    ALTER TABLE users DROP COLUMN locked_until;
    "#,
    // 5: a case has a chain of archives: its signed decision (sequence 1), then a continuation for
    // each later step (issued, rated, follow-up closed), each statement naming the one before.
    r#"
    CREATE TABLE archive_chain (
        case_id INTEGER NOT NULL REFERENCES cases(id),
        sequence INTEGER NOT NULL CHECK (sequence >= 1),
        kind TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        statement_sha256 TEXT NOT NULL,
        log_index INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (case_id, sequence)
    );
    INSERT INTO archive_chain
        SELECT case_id, 1, 'decision', sha256, size, statement_sha256, log_index, created_at FROM archives;
    DROP TABLE archives;
    ALTER TABLE archive_chain RENAME TO archives;
    "#,
    // 6: resumable uploads of materials: how much of each is acknowledged (the bytes are in
    // `blobs/partial/<id>`).
    r#"
    CREATE TABLE uploads (
        id TEXT PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        user_id INTEGER NOT NULL REFERENCES users(id),
        filename TEXT NOT NULL,
        size INTEGER NOT NULL CHECK (size >= 0),
        sha256 TEXT NOT NULL,
        acknowledged INTEGER NOT NULL CHECK (acknowledged >= 0 AND acknowledged <= size),
        created_at INTEGER NOT NULL
    );
    CREATE INDEX uploads_by_user ON uploads(user_id);
    "#,
    // 7: invitations of the applicant into a case's call from home (群众远程接入): single-use,
    // short-lived, revocable; the token itself is never stored.
    r#"
    CREATE TABLE invitations (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        token_hash TEXT NOT NULL UNIQUE,
        issued_by INTEGER NOT NULL REFERENCES users(id),
        issued_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER,
        revoked_at INTEGER,
        resident_id INTEGER REFERENCES users(id)
    );
    CREATE INDEX invitations_by_case ON invitations(case_id);
    CREATE INDEX invitations_by_resident ON invitations(resident_id);
    "#,
    // 8: the applicant's signature (申请人签名确认): what was asked, the exact summary and its
    // digest, and once signed the two materials it became.
    r#"
    CREATE TABLE signature_requests (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        requested_by INTEGER NOT NULL REFERENCES users(id),
        signer TEXT NOT NULL CHECK (signer IN ('agent', 'resident')),
        summary TEXT NOT NULL,
        summary_sha256 TEXT NOT NULL,
        requested_at INTEGER NOT NULL,
        signed_at INTEGER,
        signed_by INTEGER REFERENCES users(id),
        superseded_at INTEGER,
        image_material_id INTEGER REFERENCES materials(id),
        record_material_id INTEGER REFERENCES materials(id)
    );
    CREATE INDEX signature_requests_by_case ON signature_requests(case_id);
    "#,
    // 9: pictures annotated in a call (标注): what was drawn on (a frozen frame's or a material's
    // digest), the last shapes, and once saved the two materials it became.
    r#"
    CREATE TABLE annotations (
        id INTEGER PRIMARY KEY,
        case_id INTEGER NOT NULL REFERENCES cases(id),
        created_by INTEGER NOT NULL REFERENCES users(id),
        created_at INTEGER NOT NULL,
        base_kind TEXT NOT NULL CHECK (base_kind IN ('frame', 'material')),
        base_sha256 TEXT NOT NULL,
        base_material_id INTEGER REFERENCES materials(id),
        base_of TEXT,
        base_media_type TEXT NOT NULL,
        shapes TEXT NOT NULL,
        closed_at INTEGER,
        image_material_id INTEGER REFERENCES materials(id),
        record_material_id INTEGER REFERENCES materials(id)
    );
    CREATE INDEX annotations_by_case ON annotations(case_id);
    "#,
];

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    /// A second connection, for checkpoints only. A checkpoint copies the WAL into the main file
    /// and fsyncs it; run by the committing connection (SQLite's automatic checkpoint) it held the
    /// one lock every request waits for, for as long as the disk took.
    checkpointer: Arc<Mutex<Connection>>,
}

/// What one checkpoint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Frames in the WAL.
    pub wal_frames: i64,
    /// Of those, copied into the main file (all of them unless a reader still needs older ones).
    pub checkpointed: i64,
}

impl Db {
    /// Opens (or creates) the database file, switches it to WAL and brings the schema up to date.
    pub fn open(path: &Path) -> Result<Db> {
        owner_only(path)?;
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        // Commits only append to the WAL; `checkpoint` moves it into the main file.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = Connection::open(path)?;
        checkpointer.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            checkpointer: Arc::new(Mutex::new(checkpointer)),
        })
    }

    /// Copies the WAL into the main file on the checkpoint connection, without waiting for
    /// readers or writers (a passive checkpoint; the WAL starts over once all of it was copied).
    /// The server calls it every second; requests never wait for it.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let conn = self.checkpointer.lock().unwrap_or_else(|p| p.into_inner());
        let (wal_frames, checkpointed) =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })?;
        Ok(Checkpoint {
            wal_frames,
            checkpointed,
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.call_blocking(f))
            .await
            .map_err(|e| Error::Internal(format!("database task failed: {e}")))?
    }

    /// Runs `f` with the connection on this thread (CLI commands, start-up).
    pub fn call_blocking<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        // A poisoned lock means a query panicked mid-way; SQLite rolled the transaction back when
        // the statement was dropped, so the connection itself is still consistent.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    /// Checkpoints the WAL into the main file, so a clean stop leaves one self-contained file.
    pub fn close(&self) -> Result<()> {
        self.call_blocking(|conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }
}

/// Creates the database file readable by its owner only (0600), or makes it so. SQLite gives its
/// `-wal` and `-shm` files the main file's permissions; ones left by an older start are fixed too.
fn owner_only(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Applies every migration newer than the file's `user_version`, each in its own transaction.
fn migrate(conn: &mut Connection) -> Result<()> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > MIGRATIONS.len() {
        return Err(Error::Internal(format!(
            "the database has schema version {current}, newer than this program knows ({}); run a newer cloudhelp",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_and_its_wal_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let db = Db::open(&path).unwrap();
        db.call_blocking(|c| {
            c.execute("INSERT INTO departments (code, name) VALUES ('x', 'x')", [])?;
            Ok(())
        })
        .unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{}{suffix}", path.display());
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file}");
        }
    }

    #[test]
    fn the_wal_is_checkpointed_while_a_request_holds_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.db")).unwrap();
        db.call_blocking(|c| {
            for i in 0..200 {
                c.execute(
                    "INSERT INTO departments (code, name) VALUES (?1, ?1)",
                    [format!("d{i}")],
                )?;
            }
            Ok(())
        })
        .unwrap();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let db = db.clone();
            std::thread::spawn(move || {
                db.call_blocking(|_| {
                    held_tx.send(()).unwrap();
                    done_rx.recv().unwrap();
                    Ok(())
                })
            })
        };
        held_rx.recv().unwrap();
        // Two hundred commits left their frames in the WAL (no automatic checkpoint), and the
        // checkpoint copies them all while the request's lock is still held.
        let checkpoint = db.checkpoint().unwrap();
        assert!(checkpoint.wal_frames >= 200, "{checkpoint:?}");
        assert_eq!(checkpoint.checkpointed, checkpoint.wal_frames);
        done_tx.send(()).unwrap();
        holder.join().unwrap().unwrap();
        let rows: i64 = db
            .call_blocking(|c| {
                Ok(c.query_row("SELECT COUNT(*) FROM departments", [], |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(rows, 200);
    }

    #[test]
    fn migrations_run_once_and_neither_audit_events_nor_the_log_can_be_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        Db::open(&path).unwrap();
        let db = Db::open(&path).unwrap();
        db.call_blocking(|c| {
            let version: usize = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            assert_eq!(version, MIGRATIONS.len());
            c.execute(
                "INSERT INTO audit_events (at, kind, details) VALUES (1, 'x', '{}')",
                [],
            )?;
            let update = c.execute("UPDATE audit_events SET kind = 'y'", []);
            assert!(update.unwrap_err().to_string().contains("append-only"));
            let delete = c.execute("DELETE FROM audit_events", []);
            assert!(delete.unwrap_err().to_string().contains("append-only"));
            c.execute(
                "INSERT INTO log_nodes (level, idx, hash) VALUES (0, 0, x'00')",
                [],
            )?;
            for sql in ["UPDATE log_nodes SET hash = x'01'", "DELETE FROM log_nodes"] {
                let refused = c.execute(sql, []);
                assert!(
                    refused.unwrap_err().to_string().contains("append-only"),
                    "{sql}"
                );
            }
            Ok(())
        })
        .unwrap();
    }
}
