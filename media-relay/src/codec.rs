//! The codecs the relay forwards: Opus audio, VP8 video, and H.264 video where both ends offer it
//! (the relay does not transcode: a subscriber that did not negotiate the publisher's codec does
//! not get that video). Each codec's RTP description and how to find its keyframes.

use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec};

use crate::messages::MediaKind;
use crate::{h264, vp8};

/// A codec the relay forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Opus audio.
    Opus,
    /// VP8 video (preferred: every browser has it).
    Vp8,
    /// H.264 video, constrained baseline, packetization mode 1 (phones encode it in hardware).
    H264,
}

impl Codec {
    /// Every codec, in the relay's order of preference within a kind.
    pub const ALL: [Codec; 3] = [Codec::Opus, Codec::Vp8, Codec::H264];

    /// The default codec of a kind.
    pub fn default_for(kind: MediaKind) -> Codec {
        match kind {
            MediaKind::Audio => Codec::Opus,
            MediaKind::Video => Codec::Vp8,
        }
    }

    /// Audio or video.
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::Opus => MediaKind::Audio,
            Codec::Vp8 | Codec::H264 => MediaKind::Video,
        }
    }

    /// The codec a MIME type names (`audio/opus`, `video/VP8`, `video/H264`; any case).
    pub fn from_mime(mime: &str) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|c| c.mime_type().eq_ignore_ascii_case(mime))
    }

    /// Its MIME type.
    pub fn mime_type(self) -> &'static str {
        match self {
            Codec::Opus => MIME_TYPE_OPUS,
            Codec::Vp8 => MIME_TYPE_VP8,
            Codec::H264 => MIME_TYPE_H264,
        }
    }

    /// Its RTP clock rate, Hz.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            Codec::Vp8 | Codec::H264 => 90_000,
        }
    }

    /// The payload type the relay's own offers use.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Opus => 111,
            Codec::Vp8 => 96,
            Codec::H264 => 102,
        }
    }

    /// Its RTP description: clock, channels, format parameters and RTCP feedback.
    pub fn rtp_codec(self) -> RTCRtpCodec {
        let video_feedback = || {
            ["nack", "nack pli", "ccm fir", "goog-remb"]
                .iter()
                .map(|fb| {
                    let (typ, parameter) = fb.split_once(' ').unwrap_or((fb, ""));
                    RTCPFeedback {
                        typ: typ.to_owned(),
                        parameter: parameter.to_owned(),
                    }
                })
                .collect()
        };
        match self {
            Codec::Opus => RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: self.clock_rate(),
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            Codec::Vp8 => RTCRtpCodec {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: self.clock_rate(),
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: video_feedback(),
            },
            Codec::H264 => RTCRtpCodec {
                mime_type: MIME_TYPE_H264.to_owned(),
                clock_rate: self.clock_rate(),
                channels: 0,
                sdp_fmtp_line:
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                        .to_owned(),
                rtcp_feedback: video_feedback(),
            },
        }
    }

    /// A recording's file name extension and media type: Ogg for Opus, IVF for VP8, an
    /// Annex B byte stream for H.264.
    pub fn recording_format(self) -> (&'static str, &'static str) {
        match self {
            Codec::Opus => ("ogg", "audio/ogg"),
            Codec::Vp8 => ("ivf", "video/x-ivf"),
            Codec::H264 => ("h264", "video/h264"),
        }
    }

    /// Whether a packet of this codec starts a keyframe (never, for audio).
    pub fn is_keyframe_start(self, payload: &[u8]) -> bool {
        match self {
            Codec::Opus => false,
            Codec::Vp8 => vp8::is_keyframe_start(payload),
            Codec::H264 => h264::is_keyframe_start(payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types_name_their_codec_in_any_case() {
        assert_eq!(Codec::from_mime("video/h264"), Some(Codec::H264));
        assert_eq!(Codec::from_mime("VIDEO/VP8"), Some(Codec::Vp8));
        assert_eq!(Codec::from_mime("audio/OPUS"), Some(Codec::Opus));
        assert_eq!(Codec::from_mime("video/VP9"), None);
        for codec in Codec::ALL {
            assert_eq!(Codec::from_mime(&codec.rtp_codec().mime_type), Some(codec));
        }
    }

    #[test]
    fn keyframes_are_found_by_each_video_codec_and_never_in_audio() {
        assert!(Codec::Vp8.is_keyframe_start(&[0x10, 0x00, 0x00, 0x00]));
        assert!(!Codec::Vp8.is_keyframe_start(&[0x67, 0x42]));
        assert!(Codec::H264.is_keyframe_start(&[0x67, 0x42]));
        assert!(!Codec::H264.is_keyframe_start(&[0x41, 0x9a]));
        assert!(!Codec::Opus.is_keyframe_start(&[0x10, 0x00, 0x00, 0x00]));
    }
}
