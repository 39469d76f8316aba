//! The one error type of the esign crate, split by cause.

use std::path::PathBuf;

/// What went wrong in esign.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key file exists but does not hold a key of the expected form.
    #[error("key file {path} is malformed: {reason}")]
    MalformedKeyFile { path: PathBuf, reason: String },
    /// A key file is readable by other users; secrets must be 0600.
    #[error("key file {path} has mode {mode:o}; it must be 0600 (run: chmod 600 {path})")]
    KeyFilePermissions { path: PathBuf, mode: u32 },
    /// The operating system has no randomness to give.
    #[error("no randomness from the operating system: {0}")]
    Randomness(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
