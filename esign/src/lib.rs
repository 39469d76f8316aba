//! Canonical statements, signatures, archive packing, the transparency log and the verifier.
//!
//! Pure: no async runtime, no network, no database. The same code verifies on the server and in the
//! offline CLI. The only I/O it does is reading and writing key files, which must be 0600.

pub mod error;
pub mod keys;

pub use error::Error;
