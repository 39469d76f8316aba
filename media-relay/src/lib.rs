//! The SFU: rooms, participants, peer connections and RTP forwarding. Knows nothing of cases or
//! users: the server maps its cases to [`RoomId`]s and its people to [`ParticipantId`]s, and
//! carries [`ClientMessage`]/[`ServerMessage`] over its own `/ws`. See `docs/relay.md`.
//!
//! Each room is a sans-IO core (`room/`: no sockets, tasks or clock inside) that owns its
//! members' webrtc-rs connections (`rtc`, sans-IO too), driven by a thin tokio task over one
//! UDP socket per configured address shared by all peer connections (`socket.rs`). Decisions
//! (keyframe rate limiting, per-subscriber rewriting, layers, SDP checks) live in pure modules
//! fed with packets and times.

#![warn(missing_docs)]

pub mod codec;
mod directory;
mod downlink;
mod engine;
mod error;
mod forwarder;
pub mod h264;
pub mod keyframe;
pub mod layer;
mod messages;
pub mod metrics;
mod participant;
pub mod quality;
pub mod recording;
pub mod red;
mod relay;
pub mod rewrite;
mod room;
pub mod sdp;
mod socket;
pub mod speaking;
pub mod turn;
pub mod vp8;

#[cfg(feature = "test-peer")]
pub mod test_peer;

pub use codec::Codec;
pub use error::RelayError;
pub use messages::{
    ClientMessage, ErrorCode, IceCandidate, LeaveReason, MediaKind, ParticipantId, RoomId,
    ServerMessage, TrackSource,
};
pub use metrics::RelayMetrics;
pub use participant::Participant;
pub use relay::{Relay, RelayConfig};
pub use turn::{IceServer, TurnConfig};
