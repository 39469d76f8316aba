//! One forwarder per published track: the state the room keeps to fan a publisher's packets out
//! to each subscriber leg (rewritten for that leg), ask the publisher for keyframes through the
//! rate limiter, tell who is speaking, and feed a recording. Plain data fed packets and times:
//! the room owns the peer connections and does the writing.

use std::time::{Duration, Instant};

use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;

use crate::codec::Codec;
use crate::keyframe::{KeyframeDecision, KeyframeRequestLimiter};
use crate::messages::{MediaKind, ParticipantId};
use crate::quality::FreezeCounter;
use crate::recording::RecordingSink;
use crate::rewrite::DownstreamRewriter;
use crate::speaking::{SpeakingDetector, SpeakingPolicy};

/// One subscriber's copy of the track.
pub(crate) struct Leg {
    pub(crate) subscriber: ParticipantId,
    pub(crate) sender: RTCRtpSenderId,
    pub(crate) rewriter: DownstreamRewriter,
    /// Freezes in the video forwarded on this leg.
    pub(crate) freezes: FreezeCounter,
}

/// What a received packet asks of the room.
pub(crate) struct Arrival {
    /// Forward it to the legs (`false` while muted).
    pub(crate) forward: bool,
    /// It starts a VP8 keyframe.
    pub(crate) keyframe: bool,
    /// The publisher started (`Some(true)`) or stopped speaking.
    pub(crate) speaking: Option<bool>,
}

/// What a timer asks of the room.
#[derive(Default)]
pub(crate) struct Due {
    /// Send the publisher a PLI now.
    pub(crate) send_pli: bool,
    /// The publisher stopped speaking (silence outlasted the hold time).
    pub(crate) speaking: Option<bool>,
}

pub(crate) struct Forwarder {
    codec: Codec,
    pub(crate) legs: Vec<Leg>,
    limiter: KeyframeRequestLimiter,
    /// The audio-level header extension id and the detector fed from it.
    speaking: Option<(u8, SpeakingDetector)>,
    /// The publisher's SSRC, learnt from its packets (for PLIs).
    pub(crate) media_ssrc: Option<u32>,
    muted: bool,
    recording: Option<RecordingSink>,
}

impl Forwarder {
    pub(crate) fn new(
        codec: Codec,
        keyframe_interval: Duration,
        audio_level_id: Option<u8>,
        media_ssrc: u32,
    ) -> Self {
        let video = codec.kind() == MediaKind::Video;
        Self {
            codec,
            legs: Vec::new(),
            limiter: KeyframeRequestLimiter::new(keyframe_interval),
            speaking: audio_level_id
                .filter(|_| !video)
                .map(|id| (id, SpeakingDetector::new(SpeakingPolicy::default()))),
            media_ssrc: (media_ssrc != 0).then_some(media_ssrc),
            muted: false,
            recording: None,
        }
    }

    fn video(&self) -> bool {
        self.codec.kind() == MediaKind::Video
    }

    /// A packet from the publisher; records it when recording and not muted.
    pub(crate) fn on_packet(&mut self, now: Instant, packet: &rtp::Packet) -> Arrival {
        self.media_ssrc = Some(packet.header.ssrc);
        let speaking = self.speaking.as_mut().and_then(|(id, detector)| {
            // A muted participant is not speaking, whatever its microphone says.
            let level = match packet.header.get_extension(*id) {
                Some(value) if !self.muted => value.first().map_or(127, |b| b & 0x7f),
                _ => 127,
            };
            detector.on_level(now, level)
        });
        if self.muted {
            return Arrival {
                forward: false,
                keyframe: false,
                speaking,
            };
        }
        if let Some(sink) = &self.recording {
            sink.record(packet);
        }
        let keyframe = self.codec.is_keyframe_start(&packet.payload);
        if keyframe {
            self.limiter.keyframe_forwarded(now);
        }
        Arrival {
            forward: true,
            keyframe,
            speaking,
        }
    }

    /// Someone wants a keyframe (a new leg, a subscriber's PLI/FIR, a recording start, unmute):
    /// whether to send a PLI now (otherwise the limiter sends one later, or a keyframe is due).
    pub(crate) fn want_keyframe(&mut self, now: Instant) -> bool {
        self.video() && self.limiter.request(now) == KeyframeDecision::SendNow
    }

    /// Adds a subscriber leg; video asks for a keyframe so it can start decoding.
    pub(crate) fn subscribe(&mut self, now: Instant, leg: Leg) -> bool {
        self.legs.push(leg);
        self.want_keyframe(now)
    }

    /// Drops every leg of `subscriber`.
    pub(crate) fn unsubscribe(&mut self, subscriber: &ParticipantId) {
        self.legs.retain(|leg| &leg.subscriber != subscriber);
    }

    /// Mutes or unmutes; returns whether to send a PLI now (video resumes on a keyframe).
    pub(crate) fn set_muted(&mut self, now: Instant, muted: bool) -> bool {
        let was = std::mem::replace(&mut self.muted, muted);
        if muted && !was {
            let video = self.video();
            for leg in &mut self.legs {
                leg.rewriter.pause(video);
                leg.freezes.pause();
            }
        }
        !muted && was && self.want_keyframe(now)
    }

    /// Starts (`Some`) or stops (`None`, closing the file) recording; a video file starts at a
    /// keyframe, so starting returns whether to send a PLI now.
    pub(crate) fn record(&mut self, now: Instant, sink: Option<RecordingSink>) -> bool {
        let starts = sink.is_some();
        self.recording = sink;
        starts && self.want_keyframe(now)
    }

    /// When [`Forwarder::poll`] next has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [
            self.limiter.next_deadline(),
            self.speaking.as_ref().and_then(|(_, d)| d.next_deadline()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers due at `now`.
    pub(crate) fn poll(&mut self, now: Instant) -> Due {
        Due {
            send_pli: self.limiter.poll(now),
            speaking: self
                .speaking
                .as_mut()
                .and_then(|(_, detector)| detector.poll(now)),
        }
    }
}
