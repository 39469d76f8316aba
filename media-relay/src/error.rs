//! The crate's one error type, split by cause. Signaling-level problems caused by a peer are not
//! errors of the API: they go back to that peer as `ServerMessage::Error` and the room stays up.

use crate::messages::{ParticipantId, RoomId};

/// Errors returned by the relay's API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The room already holds the maximum number of participants.
    #[error("room {room} is full ({max} participants)")]
    RoomFull {
        /// The room.
        room: RoomId,
        /// Its capacity.
        max: usize,
    },
    /// Misuse: this participant id is already in the room.
    #[error("participant {participant} is already in room {room}")]
    AlreadyInRoom {
        /// The room.
        room: RoomId,
        /// The duplicate id.
        participant: ParticipantId,
    },
    /// The room or the participant's place in it is gone (closed, or the participant left).
    #[error("the room or participant is gone")]
    Gone,
    /// Misuse of recording: already (or not) recording, or the folder is not one.
    #[error("recording: {0}")]
    Recording(String),
    /// Misuse: the configuration is not usable.
    #[error("invalid relay configuration: {0}")]
    Config(String),
    /// The WebRTC stack failed (socket bind, DTLS setup, ...).
    #[error("webrtc: {0}")]
    WebRtc(#[from] rtc::shared::error::Error),
}
