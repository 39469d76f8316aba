//! The load generator and benchmark harness: rooms of webrtc-rs test peers (media-relay's
//! `TestPeer`) joined to a running server's calls over its real `/ws`, the figures of a measuring
//! window (packets/s, loss, added latency, join time, CPU and memory from `/proc`), a ramp, joins
//! per second, the signaling benchmark, the raw UDP fan-out baseline, and the
//! `docs/benchmarks.md` page. The `/ws` call bridge here is the one the integration tests use
//! too.

#![warn(missing_docs)]

pub mod baseline;
pub mod call;
pub mod crash;
mod error;
pub mod floods;
pub mod janus;
pub mod joins;
pub mod measure;
pub mod peer;
pub mod process;
pub mod procfs;
pub mod report;
pub mod rooms;
pub mod run;
pub mod scenario;
pub mod server;
pub mod signaling_bench;
pub mod soak;

pub use error::LoadError;
pub use run::{RunOptions, RunResult, run};
pub use scenario::Scenario;
pub use server::{Server, Token, Trust};
