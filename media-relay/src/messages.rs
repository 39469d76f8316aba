//! The signaling surface of the relay: typed messages a participant sends in and gets out.
//!
//! Owns only the shapes (serde, JSON-ready). The server may put them on its `/ws` as they are,
//! inside its own envelope; this module must not know about sockets, cases or users.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::quality::ConnectionQuality;

/// A room on the relay; the server maps its cases to rooms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoomId(pub String);

/// A participant inside a room; unique within that room.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ParticipantId(pub String);

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for RoomId {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl From<&str> for ParticipantId {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// Opus audio.
    Audio,
    /// VP8 video.
    Video,
}

/// What a published track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    /// A microphone (every audio track).
    Microphone,
    /// A camera (a video track not declared a screen).
    Camera,
    /// A shared screen or window (同屏), declared with `screen_share` before it is offered. Its
    /// subscribers get it in a stream of its own, `<participant>~screen`; muting video does not
    /// touch it.
    Screen,
}

/// One trickled ICE candidate, as the browser's `RTCIceCandidateInit` spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// The `candidate:` attribute line (RFC 8839 §5.1); empty means end of candidates.
    pub candidate: String,
    /// The m-section's `mid`, if known.
    #[serde(default)]
    pub sdp_mid: Option<String>,
    /// The m-section's index, if known.
    #[serde(default, rename = "sdpMLineIndex")]
    pub sdp_mline_index: Option<u16>,
}

/// What a participant sends to the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientMessage {
    /// An SDP offer. The first one opens the connection; later ones are accepted only while the
    /// relay has no offer of its own outstanding (else `negotiation_in_progress`).
    Offer {
        /// The SDP text.
        sdp: String,
    },
    /// The answer to a relay offer (`ServerMessage::Offer`).
    Answer {
        /// The SDP text.
        sdp: String,
    },
    /// A trickled ICE candidate of the participant.
    Candidate {
        /// The candidate.
        candidate: IceCandidate,
    },
    /// Stop (or resume) forwarding this participant's audio or video to the others.
    Mute {
        /// Which of its tracks.
        kind: MediaKind,
        /// `true` to mute, `false` to unmute.
        muted: bool,
    },
    /// The size at which the participant shows one video it receives (device pixels; 0×0 when
    /// hidden). The relay sends no simulcast layer larger than needed for it: the smallest layer
    /// at least that size, or the lowest when hidden.
    VideoSize {
        /// The track id from `track_published`.
        track_id: String,
        /// Shown width.
        width: u32,
        /// Shown height.
        height: u32,
    },
    /// Stop (`false`) or resume (`true`) receiving the others' video, as a participant on a weak
    /// link that goes audio-only (只用语音) does. Its audio is untouched; video resumes on a
    /// keyframe, with no gap in the sequence.
    ReceiveVideo {
        /// Whether to receive video.
        enabled: bool,
    },
    /// The participant starts sharing its screen in the track `track` (its own id for it, the
    /// track part of the `msid` in its next offer), or stops (`None`; the offer that drops the
    /// track ends it for the others). Sent before that offer.
    ScreenShare {
        /// The screen track's id, or `None`.
        track: Option<String>,
    },
    /// The participant leaves the room; the relay closes its connection.
    Leave,
}

/// Why a participant left the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LeaveReason {
    /// It sent `leave`.
    Left,
    /// Its signaling handle was dropped (socket gone) without a word.
    Vanished,
    /// Its peer connection failed or closed (ICE consent lost).
    ConnectionLost,
    /// It could not keep up with its signaling messages.
    TooSlow,
    /// The room was closed by the server.
    RoomClosed,
    /// It joined again (a reload, a new tab or device): the new place replaced this one.
    Replaced,
    /// The server took it out (`Relay::remove`): its access to the call was withdrawn.
    Dismissed,
}

impl LeaveReason {
    /// Every reason, for clients that keep a list of them.
    pub const ALL: [LeaveReason; 7] = [
        LeaveReason::Left,
        LeaveReason::Vanished,
        LeaveReason::ConnectionLost,
        LeaveReason::TooSlow,
        LeaveReason::RoomClosed,
        LeaveReason::Replaced,
        LeaveReason::Dismissed,
    ];
}

/// An error code on the signaling socket; the connection and the room stay up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The SDP could not be parsed or applied.
    BadSdp,
    /// The SDP offers neither Opus audio nor VP8 video.
    NoUsableCodec,
    /// The relay has an offer outstanding: answer it first, then offer again.
    NegotiationInProgress,
    /// An answer arrived while the relay had no offer outstanding.
    UnexpectedAnswer,
    /// More than 64 candidates arrived before the first offer (fewer are kept and applied).
    CandidateBeforeOffer,
    /// The candidate could not be parsed or applied.
    BadCandidate,
    /// No track with that id is sent to this participant.
    UnknownTrack,
    /// The relay failed internally; the details are in its log, not here.
    Internal,
}

impl ErrorCode {
    /// Every code, for clients that keep a list of them.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::BadSdp,
        ErrorCode::NoUsableCodec,
        ErrorCode::NegotiationInProgress,
        ErrorCode::UnexpectedAnswer,
        ErrorCode::CandidateBeforeOffer,
        ErrorCode::BadCandidate,
        ErrorCode::UnknownTrack,
        ErrorCode::Internal,
    ];

    /// The code as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadSdp => "bad_sdp",
            ErrorCode::NoUsableCodec => "no_usable_codec",
            ErrorCode::NegotiationInProgress => "negotiation_in_progress",
            ErrorCode::UnexpectedAnswer => "unexpected_answer",
            ErrorCode::CandidateBeforeOffer => "candidate_before_offer",
            ErrorCode::BadCandidate => "bad_candidate",
            ErrorCode::UnknownTrack => "unknown_track",
            ErrorCode::Internal => "internal",
        }
    }
}

/// What the relay sends to a participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMessage {
    /// Sent once on join: who is already in the room.
    Joined {
        /// This participant.
        participant_id: ParticipantId,
        /// The others, in join order.
        others: Vec<ParticipantId>,
        /// The participant's earlier place was given back, its connection with it (a resume);
        /// `false`: a new place, which needs a new connection (a resume that came too late, or
        /// to a relay that restarted, is a fresh join).
        #[serde(default)]
        resumed: bool,
    },
    /// The answer to the participant's offer.
    Answer {
        /// The SDP text.
        sdp: String,
    },
    /// A relay-driven renegotiation: apply it and reply with `answer`.
    Offer {
        /// The SDP text.
        sdp: String,
    },
    /// A trickled ICE candidate of the relay.
    Candidate {
        /// The candidate.
        candidate: IceCandidate,
    },
    /// Someone joined the room.
    ParticipantJoined {
        /// Who.
        participant_id: ParticipantId,
    },
    /// Someone left the room; their tracks are removed in the next relay offer.
    ParticipantLeft {
        /// Who.
        participant_id: ParticipantId,
        /// Why.
        reason: LeaveReason,
    },
    /// A participant publishes a track; it arrives in the next relay offer with `stream_id` equal
    /// to the participant id (`<participant>~screen` for a screen) and `track_id` as given.
    TrackPublished {
        /// The publisher.
        participant_id: ParticipantId,
        /// The track's id as the subscribers see it (`msid` track part).
        track_id: String,
        /// Audio or video.
        kind: MediaKind,
        /// Microphone, camera or screen.
        source: TrackSource,
    },
    /// A participant stopped publishing a track; it leaves in the next relay offer.
    TrackUnpublished {
        /// The publisher.
        participant_id: ParticipantId,
        /// The track's id as announced in `track_published`.
        track_id: String,
    },
    /// A participant started or stopped speaking (from the audio level its browser reports).
    Speaking {
        /// Who.
        participant_id: ParticipantId,
        /// The new state.
        speaking: bool,
    },
    /// A participant's connection over the last interval (sent to everyone, itself included).
    ConnectionQuality {
        /// Whose connection.
        participant_id: ParticipantId,
        /// RTT, loss, jitter, bitrates and a grade.
        quality: ConnectionQuality,
    },
    /// A participant muted or unmuted one of its tracks.
    TrackMuted {
        /// The publisher.
        participant_id: ParticipantId,
        /// Which of its tracks.
        kind: MediaKind,
        /// The new state.
        muted: bool,
    },
    /// The relay removed this participant (the room closed, or it fell behind); nothing follows.
    Removed {
        /// Why.
        reason: LeaveReason,
    },
    /// A message could not be acted on; the connection and room stay up.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable, safe to show.
        message: String,
    },
}

#[cfg(test)]
mod tests {

    #[test]
    fn every_error_code_is_listed_once_and_named_as_on_the_wire() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert!(seen.insert(code.as_str()), "{} twice", code.as_str());
        }
    }

    use super::*;

    #[test]
    fn client_messages_read_the_documented_json() {
        let offer: ClientMessage =
            serde_json::from_str(r#"{"type":"offer","sdp":"v=0"}"#).expect("valid json");
        assert_eq!(offer, ClientMessage::Offer { sdp: "v=0".into() });
        let candidate: ClientMessage = serde_json::from_str(
            r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
        )
        .expect("valid json");
        assert!(
            matches!(candidate, ClientMessage::Candidate { candidate } if candidate.sdp_mline_index == Some(0))
        );
        let mute: ClientMessage =
            serde_json::from_str(r#"{"type":"mute","kind":"video","muted":true}"#)
                .expect("valid json");
        assert_eq!(
            mute,
            ClientMessage::Mute {
                kind: MediaKind::Video,
                muted: true
            }
        );
        let leave: ClientMessage = serde_json::from_str(r#"{"type":"leave"}"#).expect("valid json");
        assert_eq!(leave, ClientMessage::Leave);
    }

    #[test]
    fn server_errors_carry_a_snake_case_code() {
        let json = serde_json::to_string(&ServerMessage::Error {
            code: ErrorCode::NoUsableCodec,
            message: "x".into(),
        })
        .expect("serializable");
        assert_eq!(
            json,
            r#"{"type":"error","code":"no_usable_codec","message":"x"}"#
        );
    }
}
