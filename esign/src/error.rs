//! The one error type of the esign crate, split by cause.
//!
//! `Malformed*` and `Verification` mean the input (a file, a proof, a signature from a browser) is bad;
//! `Misuse` means the caller asked for something the API does not allow; `Io` and `Store` mean the
//! environment failed. The verifier never returns these for a bad archive: it reports a failed check.

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
    /// Reading or writing a stream (not a named file) failed.
    #[error("{what}: {source}")]
    Stream {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// JSON that must be canonical (RFC 8785, integers only) is not.
    #[error("not canonical JSON: {0}")]
    NonCanonicalJson(String),
    /// Input (a public key, a note, a proof, a trust file) is not of the expected form.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// A signature or proof was well-formed but does not verify.
    #[error("{0}")]
    Verification(String),
    /// The caller used the API in a way it does not allow (a path outside `data/`, a duplicate file).
    #[error("misuse: {0}")]
    Misuse(String),
    /// The log's storage backend failed.
    #[error("log store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Writing the zip container failed.
    #[error("zip: {0}")]
    Zip(String),
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Malformed {
            what,
            reason: reason.into(),
        }
    }

    pub(crate) fn stream(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Stream {
            what: what.into(),
            source,
        }
    }
}
