//! The content-addressed blob folder: `sha256/ab/abcdef…` under the data folder.
//!
//! An upload streams into `tmp/`, hashed as it goes, is fsynced, and only then renamed into place
//! (and the folder fsynced). The caller commits its database row after that and acknowledges last,
//! so an acknowledged material always has its bytes on disk. Leftovers in `tmp/` from a crash are
//! removed at start; a blob with no row is inert and is reused by the next upload of the same bytes.
//!
//! A resumable upload (`uploads.rs`) grows in `partial/<id>`, which survives a restart: each
//! chunk is fsynced before its new length is recorded, and a file longer than what was recorded
//! (a chunk whose acknowledgement never left) is cut back to the recorded length before the next
//! chunk is appended.

use std::path::{Path, PathBuf};

use axum::body::Bytes as BodyChunk;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// How many leading bytes are kept to recognise the file type.
const HEAD_LEN: usize = 8192;

/// The blob folder.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// A fully received, fsynced upload not yet moved into place.
#[derive(Debug)]
pub struct Received {
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The first bytes, for type detection.
    pub head: Vec<u8>,
    temp: tempfile::TempPath,
}

impl BlobStore {
    /// Opens the folder under `root`, creating it, and clears unfinished uploads.
    pub fn open(root: &Path) -> Result<BlobStore> {
        let store = BlobStore {
            root: root.to_path_buf(),
        };
        std::fs::create_dir_all(store.root.join("sha256"))?;
        let tmp = store.root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(store.root.join("partial"))?;
        Ok(store)
    }

    /// Where the bytes of the resumable upload `id` grow (`id` is the server's own hex id).
    pub fn partial_path(&self, id: &str) -> PathBuf {
        self.root.join("partial").join(id)
    }

    /// Appends the chunk `body` to the resumable upload `id` at `offset` (what was acknowledged
    /// so far: longer leftovers are cut back first), at most `room` bytes, and fsyncs; returns
    /// the new length. A chunk that breaks off adds nothing: the length stays `offset`.
    pub async fn append_partial<S, E>(
        &self,
        id: &str,
        offset: u64,
        body: S,
        room: u64,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<BodyChunk, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = self.partial_path(id);
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .await?;
        let length = file.metadata().await?.len();
        if length < offset {
            return Err(Error::conflict(
                "upload_lost",
                format!(
                    "the upload's stored bytes end at {length}, before the acknowledged {offset}: start it again"
                ),
            ));
        }
        file.set_len(offset).await?;
        let appended = Self::append_chunk(&mut file, body, room).await;
        if appended.is_err() {
            // Nothing of a broken chunk counts: back to what was acknowledged.
            file.set_len(offset).await?;
        }
        let added = appended?;
        file.sync_all().await?;
        Ok(offset + added)
    }

    async fn append_chunk<S, E>(file: &mut tokio::fs::File, mut body: S, room: u64) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<BodyChunk, E>> + Unpin,
        E: std::fmt::Display,
    {
        use tokio::io::AsyncSeekExt;
        file.seek(std::io::SeekFrom::End(0)).await?;
        let mut added = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                Error::bad(
                    "body_interrupted",
                    format!("the chunk was interrupted: {e}"),
                )
            })?;
            added += chunk.len() as u64;
            if added > room {
                return Err(Error::TooLarge(format!(
                    "the chunk goes past the upload's declared size by {} bytes",
                    added - room
                )));
            }
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(added)
    }

    /// A complete resumable upload as a received file: its digest must be `sha256`, or it is
    /// removed and refused. Blocking (it reads the whole file).
    pub fn finish_partial(&self, id: &str, sha256: &str) -> Result<Received> {
        use std::io::Read;
        let path = self.partial_path(id);
        let temp = tempfile::TempPath::try_from_path(&path)?;
        let (digest, size) = hash_file(&temp)?;
        if digest != sha256 {
            return Err(Error::bad(
                "digest_mismatch",
                format!(
                    "the uploaded bytes have SHA-256 {digest}, not the declared {sha256}: start again"
                ),
            ));
        }
        let mut head = Vec::with_capacity(HEAD_LEN);
        std::fs::File::open(&temp)?
            .take(HEAD_LEN as u64)
            .read_to_end(&mut head)?;
        Ok(Received {
            sha256: digest,
            size,
            head,
            temp,
        })
    }

    /// The folder under `root` as it is, touching nothing (for tools reading another server's
    /// folder, such as a backup).
    pub fn at(root: &Path) -> BlobStore {
        BlobStore {
            root: root.to_path_buf(),
        }
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn path(&self, sha256: &str) -> PathBuf {
        let prefix = sha256.get(..2).unwrap_or("xx");
        self.root.join("sha256").join(prefix).join(sha256)
    }

    /// Streams `body` into a temporary file, hashing it, refusing more than `limit` bytes (the
    /// refusal names `setting`, the limit's name), and fsyncs it. Nothing is visible to anyone
    /// until [`BlobStore::commit`]. A refused or interrupted body's file is removed on the
    /// blocking pool: unlinking a gigabyte of freshly written data can take a second, which must
    /// not stall the server's other requests.
    pub async fn receive<S, E>(&self, body: S, limit: u64, setting: &str) -> Result<Received>
    where
        S: Stream<Item = std::result::Result<BodyChunk, E>> + Unpin,
        E: std::fmt::Display,
    {
        let temp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))?.into_temp_path();
        match Self::stream_into(&temp, body, limit, setting).await {
            Ok((sha256, size, head)) => Ok(Received {
                sha256,
                size,
                head,
                temp,
            }),
            Err(e) => {
                let _ = tokio::task::spawn_blocking(move || drop(temp)).await;
                Err(e)
            }
        }
    }

    async fn stream_into<S, E>(
        temp: &Path,
        mut body: S,
        limit: u64,
        setting: &str,
    ) -> Result<(String, u64, Vec<u8>)>
    where
        S: Stream<Item = std::result::Result<BodyChunk, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut file = tokio::fs::File::create(temp).await?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut head = Vec::with_capacity(HEAD_LEN);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                Error::bad(
                    "body_interrupted",
                    format!("the upload was interrupted: {e}"),
                )
            })?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(Error::TooLarge(format!(
                    "the upload is larger than the limit of {limit} bytes ({setting})"
                )));
            }
            if head.len() < HEAD_LEN {
                let take = (HEAD_LEN - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        drop(file);
        Ok((hex::encode(hasher.finalize()), size, head))
    }

    /// The folder for files not yet in place (emptied at start).
    pub fn tmp_folder(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Takes a finished, fsynced file made in [`BlobStore::tmp_folder`] into the store by its
    /// digest; returns the digest and size.
    pub fn adopt(&self, temp: tempfile::TempPath) -> Result<(String, u64)> {
        let (sha256, size) = hash_file(&temp)?;
        self.commit(Received {
            sha256: sha256.clone(),
            size,
            head: Vec::new(),
            temp,
        })?;
        Ok((sha256, size))
    }

    /// Stores bytes the server made (a rendered signature, its record): written to the tmp
    /// folder and fsynced, then taken into the store; returns the digest and size.
    pub fn store_bytes(&self, bytes: &[u8]) -> Result<(String, u64)> {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new_in(self.tmp_folder())?;
        file.write_all(bytes)?;
        file.as_file().sync_all()?;
        self.adopt(file.into_temp_path())
    }

    /// Moves a received upload into place (or drops it when the same bytes are already stored)
    /// and fsyncs the folder, so the blob survives a crash from here on.
    pub fn commit(&self, received: Received) -> Result<()> {
        let target = self.path(&received.sha256);
        if target.exists() {
            return Ok(()); // the temp file is removed when `received.temp` drops
        }
        let folder = target
            .parent()
            .ok_or_else(|| Error::Internal("blob path without a folder".into()))?
            .to_path_buf();
        std::fs::create_dir_all(&folder)?;
        received
            .temp
            .persist(&target)
            .map_err(|e| Error::Io(e.error))?;
        std::fs::File::open(&folder)?.sync_all()?;
        Ok(())
    }
}

/// SHA-256 (hex) and size of a file, streamed.
pub fn hash_file(path: &Path) -> Result<(String, u64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// The path of a received upload before it is committed (to verify it in place, say).
impl Received {
    /// Where the bytes are.
    pub fn path(&self) -> &Path {
        &self.temp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(
        parts: &[&'static [u8]],
    ) -> impl Stream<Item = std::result::Result<BodyChunk, std::io::Error>> + Unpin {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(BodyChunk::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn a_received_blob_is_hashed_while_streaming_and_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let got = store
            .receive(chunks(&[b"hello ", b"world"]), 100, "max_material_bytes")
            .await
            .unwrap();
        assert_eq!(got.sha256, hex::encode(Sha256::digest(b"hello world")));
        assert_eq!(got.size, 11);
        let digest = got.sha256.clone();
        store.commit(got).unwrap();
        let again = store
            .receive(chunks(&[b"hello world"]), 100, "max_material_bytes")
            .await
            .unwrap();
        store.commit(again).unwrap();
        assert_eq!(std::fs::read(store.path(&digest)).unwrap(), b"hello world");
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn an_oversized_upload_is_refused_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let err = store
            .receive(
                chunks(&[b"0123456789", b"0123456789"]),
                15,
                "max_material_bytes",
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::TooLarge(m) if m.contains("15 bytes (max_material_bytes)")),
            "{err}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
