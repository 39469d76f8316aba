//! Canonical statements, signatures, archive packing, the transparency log and the verifier.
//!
//! Pure: no async runtime, no network, no database. The same code verifies on the server and in the
//! offline CLI. The only I/O it does is reading and writing key files (0600) and archive streams.

pub mod archive;
pub mod entry;
pub mod error;
pub mod jcs;
pub mod keys;
pub mod log;
pub mod merkle;
pub mod note;
pub mod sig;
pub mod verify;
mod zipread;

pub use error::Error;
