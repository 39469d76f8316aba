//! The one error type of the load generator, split by cause.

use std::path::PathBuf;

/// What can go wrong while loading a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A setting or flag that cannot work; names it.
    #[error("{setting}: {reason}")]
    Config {
        /// The setting or flag.
        setting: &'static str,
        /// Why, and what to do instead.
        reason: String,
    },
    /// The server answered an HTTP request with an unexpected status.
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        /// The request.
        what: String,
        /// Its status.
        status: u16,
        /// The body (the server's `{code, message}`).
        body: String,
    },
    /// The server sent something the generator cannot use (bad JSON, a missing field, a refusal
    /// on `/ws`).
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// HTTP transport failure.
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// WebSocket transport failure.
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The test peer could not be built or started.
    #[error("test peer: {0}")]
    Peer(#[from] media_relay::RelayError),
    /// Something did not happen in time (join, first media).
    #[error("timed out: {0}")]
    Timeout(String),
    /// A file or socket.
    #[error("{path}: {source}")]
    Io {
        /// The file, or what the socket was for.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl LoadError {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
