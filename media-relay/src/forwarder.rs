//! One forwarder per published track, and with it the track's subscriptions: the only record of
//! who receives the track (legs still being negotiated, then active legs). It holds the state the
//! room keeps to fan a publisher's packets out to each subscriber leg (rewritten for that leg), choose each video leg's simulcast layer, ask
//! the publisher for keyframes through each layer's rate limiter, tell who is speaking, and feed
//! a recording. Plain data fed packets and times: the room owns the peer connections and does the
//! writing.

use std::time::{Duration, Instant};

use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;

use crate::codec::Codec;
use crate::keyframe::{KeyframeDecision, KeyframeRequestLimiter};
use crate::layer::{BitrateMeter, LayerDecision, LayerPolicy, LayerSelector};
use crate::messages::MediaKind;
use crate::quality::FreezeCounter;
use crate::recording::RecordingSink;
use crate::rewrite::{DownstreamRewriter, RedLeg};
use crate::speaking::{SpeakingDetector, SpeakingPolicy};

/// How often the layers' bitrates are measured and every leg's choice revisited.
const LAYER_WINDOW: Duration = Duration::from_millis(500);

/// One subscriber's copy of the track.
pub(crate) struct Leg {
    /// The subscriber's link (its connection's relay-wide id).
    pub(crate) subscriber: u64,
    pub(crate) sender: RTCRtpSenderId,
    pub(crate) rewriter: DownstreamRewriter,
    /// Freezes in the video forwarded on this leg.
    pub(crate) freezes: FreezeCounter,
    /// Video: which of the publisher's layers this leg gets (a track without simulcast has one).
    pub(crate) selector: Option<LayerSelector>,
    /// Loss fraction (0..1) the subscriber last reported for this leg.
    pub(crate) loss: f64,
    /// The size the subscriber shows this video at, if it said (`video_size`).
    pub(crate) display: Option<(u32, u32)>,
    /// The subscriber asked for no video (`receive_video: false`): nothing is sent on this leg.
    pub(crate) paused: bool,
}

impl Leg {
    /// A leg; video legs choose among layers and wait for a keyframe. `payload_types` are the
    /// codec's and RED's (audio, if the subscriber took it) on the subscriber's leg.
    pub(crate) fn new(
        subscriber: u64,
        sender: RTCRtpSenderId,
        ssrc: u32,
        payload_types: (u8, Option<u8>),
        codec: Codec,
    ) -> Self {
        let video = codec.kind() == MediaKind::Video;
        let (payload_type, red) = payload_types;
        Self {
            subscriber,
            sender,
            rewriter: {
                let rewriter =
                    DownstreamRewriter::new(ssrc, payload_type, codec.clock_rate(), video);
                match codec {
                    Codec::Vp8 => rewriter.with_vp8(),
                    Codec::Opus => rewriter.with_red(RedLeg {
                        publisher: crate::red::RED_PAYLOAD_TYPE,
                        subscriber: red,
                    }),
                    Codec::H264 => rewriter,
                }
            },
            freezes: FreezeCounter::new(),
            selector: video.then(|| LayerSelector::new(1, LayerPolicy::default())),
            loss: 0.0,
            display: None,
            paused: false,
        }
    }

    /// Whether to forward a packet of `layer` to this leg; `switched` when it is the first of a
    /// new layer (the rewriter then continues the old layer's numbers).
    pub(crate) fn admits(&mut self, layer: usize, keyframe: bool) -> (bool, bool) {
        let Some(selector) = self.selector.as_mut() else {
            return (true, false);
        };
        let before = selector.current();
        let admitted = selector.on_packet(layer, keyframe);
        let switched = before.is_some() && selector.current() != before;
        if switched {
            self.rewriter.switch_source();
        }
        (admitted, switched)
    }
}

/// A subscription whose negotiation is not done: the subscriber's connection has a local track
/// for it, not yet agreed with the subscriber (its payload type is not known).
pub(crate) struct PendingLeg {
    /// The subscriber's link.
    pub(crate) subscriber: u64,
    pub(crate) sender: RTCRtpSenderId,
    pub(crate) ssrc: u32,
    /// The size the subscriber shows it at, if it said already (`video_size`).
    pub(crate) display: Option<(u32, u32)>,
    pub(crate) stage: LegStage,
}

/// How far a pending subscription's negotiation went. Only an agreed leg may carry media: a
/// packet sent before the subscriber applied the offer naming its SSRC is dropped there, and
/// if that packet was the keyframe the relay asked for, the picture waits for the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LegStage {
    /// Added to the subscriber's connection after its last offer was made.
    Added,
    /// In the relay's offer the subscriber has not answered yet.
    Offered,
    /// The subscriber answered an offer that named it.
    Agreed,
}

/// One encoding of the published track (a simulcast layer, or the only one).
pub(crate) struct Layer {
    /// The SSRC its packets carry (0 until learnt, if the core did not tell).
    pub(crate) ssrc: u32,
    /// The picture size its last VP8 keyframe announced.
    size: Option<(u16, u16)>,
    limiter: KeyframeRequestLimiter,
    meter: BitrateMeter,
}

/// What a received packet asks of the room.
pub(crate) struct Arrival {
    /// Forward it to the legs (`false` while muted).
    pub(crate) forward: bool,
    /// It starts a keyframe.
    pub(crate) keyframe: bool,
    /// The publisher started (`Some(true)`) or stopped speaking.
    pub(crate) speaking: Option<bool>,
}

/// What a timer asks of the room.
#[derive(Default)]
pub(crate) struct Due {
    /// Send the publisher a PLI for each of these layers now.
    pub(crate) plis: Vec<usize>,
    /// The publisher stopped speaking (silence outlasted the hold time).
    pub(crate) speaking: Option<bool>,
}

pub(crate) struct Forwarder {
    codec: Codec,
    /// Active subscriptions, forwarded to.
    pub(crate) legs: Vec<Leg>,
    /// Subscriptions still being negotiated.
    pub(crate) pending: Vec<PendingLeg>,
    pub(crate) layers: Vec<Layer>,
    keyframe_interval: Duration,
    /// The audio-level header extension id and the detector fed from it.
    speaking: Option<(u8, SpeakingDetector)>,
    muted: bool,
    /// Records layer 0 (the first encoding opened) while `Some`.
    recording: Option<RecordingSink>,
    /// When the layers' bitrates are next measured (video with legs only).
    next_measure: Option<Instant>,
}

impl Forwarder {
    pub(crate) fn new(
        codec: Codec,
        keyframe_interval: Duration,
        audio_level_id: Option<u8>,
        ssrc: u32,
    ) -> Self {
        let video = codec.kind() == MediaKind::Video;
        let mut forwarder = Self {
            codec,
            legs: Vec::new(),
            pending: Vec::new(),
            layers: Vec::new(),
            keyframe_interval,
            speaking: audio_level_id
                .filter(|_| !video)
                .map(|id| (id, SpeakingDetector::new(SpeakingPolicy::default()))),
            muted: false,
            recording: None,
            next_measure: None,
        };
        forwarder.add_layer(ssrc);
        forwarder
    }

    pub(crate) fn video(&self) -> bool {
        self.codec.kind() == MediaKind::Video
    }

    /// Another encoding of the track opened (a simulcast layer); returns its index.
    pub(crate) fn add_layer(&mut self, ssrc: u32) -> usize {
        self.layers.push(Layer {
            ssrc,
            size: None,
            limiter: KeyframeRequestLimiter::new(self.keyframe_interval),
            meter: BitrateMeter::new(LAYER_WINDOW),
        });
        self.layers.len() - 1
    }

    /// The layer a packet with `ssrc` belongs to.
    pub(crate) fn layer_of(&mut self, ssrc: u32) -> Option<usize> {
        if let Some(layer) = self.layers.iter().position(|l| l.ssrc == ssrc) {
            return Some(layer);
        }
        // A layer opened without its SSRC takes the first unknown one.
        let layer = self.layers.iter().position(|l| l.ssrc == 0)?;
        self.layers[layer].ssrc = ssrc;
        Some(layer)
    }

    /// The track is sent as several layers.
    pub(crate) fn simulcast(&self) -> bool {
        self.layers.len() > 1
    }

    /// A packet of `layer` from the publisher; records it when recording and not muted.
    pub(crate) fn on_packet(
        &mut self,
        now: Instant,
        layer: usize,
        packet: &rtp::Packet,
    ) -> Arrival {
        self.layers[layer].meter.add(now, packet.payload.len());
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
        if layer == 0
            && let Some(sink) = &self.recording
        {
            sink.record(packet);
        }
        let keyframe = self.codec.is_keyframe_start(&packet.payload);
        if keyframe {
            self.layers[layer].limiter.keyframe_forwarded(now);
            if self.codec == Codec::Vp8 {
                self.layers[layer].size = crate::vp8::keyframe_size(&packet.payload);
            }
        }
        Arrival {
            forward: true,
            keyframe,
            speaking,
        }
    }

    /// Someone wants a keyframe of `layer` (a new leg, a subscriber's PLI/FIR, a layer switch, a
    /// recording start, unmute): whether to send a PLI now (otherwise the limiter sends one
    /// later, or a keyframe is due).
    pub(crate) fn want_keyframe(&mut self, now: Instant, layer: usize) -> bool {
        self.video()
            && self
                .layers
                .get_mut(layer)
                .is_some_and(|l| l.limiter.request(now) == KeyframeDecision::SendNow)
    }

    /// The layer a leg is getting or about to get (what a keyframe request of it is about).
    fn wanted_layer(leg: &Leg) -> usize {
        leg.selector.as_ref().map_or(0, LayerSelector::target)
    }

    /// The layers to ask a keyframe of for leg `leg` (its target), filtered by the limiters.
    pub(crate) fn want_keyframe_for(&mut self, now: Instant, leg: usize) -> Option<usize> {
        let layer = Self::wanted_layer(self.legs.get(leg)?);
        self.want_keyframe(now, layer).then_some(layer)
    }

    /// Adds a subscriber leg; returns the layer to send a PLI for now, if any (video starts
    /// decoding on a keyframe).
    pub(crate) fn subscribe(&mut self, now: Instant, mut leg: Leg) -> Option<usize> {
        let bitrates = self.bitrates(now);
        if let Some(selector) = leg.selector.as_mut() {
            selector.set_bitrates(&bitrates);
        }
        self.legs.push(leg);
        self.cap_by_display(self.legs.len() - 1);
        if self.video() {
            self.next_measure.get_or_insert(now + LAYER_WINDOW);
        }
        self.want_keyframe_for(now, self.legs.len() - 1)
    }

    /// The index of `subscriber`'s leg.
    pub(crate) fn leg_of(&self, subscriber: u64) -> Option<usize> {
        self.legs.iter().position(|l| l.subscriber == subscriber)
    }

    /// Drops `subscriber`'s subscription, pending or active.
    pub(crate) fn unsubscribe(&mut self, subscriber: u64) {
        self.legs.retain(|leg| leg.subscriber != subscriber);
        self.pending.retain(|leg| leg.subscriber != subscriber);
    }

    /// Whether `subscriber` has a subscription, pending or active.
    pub(crate) fn subscribed(&self, subscriber: u64) -> bool {
        self.leg_of(subscriber).is_some() || self.pending.iter().any(|p| p.subscriber == subscriber)
    }

    /// Every subscription's subscriber and the sender on its connection, pending or active.
    pub(crate) fn subscriptions(&self) -> impl Iterator<Item = (u64, RTCRtpSenderId)> + '_ {
        self.legs
            .iter()
            .map(|l| (l.subscriber, l.sender))
            .chain(self.pending.iter().map(|p| (p.subscriber, p.sender)))
    }

    /// Mutes or unmutes; returns the layers to send a PLI for now (video resumes on a keyframe).
    pub(crate) fn set_muted(&mut self, now: Instant, muted: bool) -> Vec<usize> {
        let was = std::mem::replace(&mut self.muted, muted);
        if muted && !was {
            let video = self.video();
            for leg in &mut self.legs {
                leg.rewriter.pause(video);
                leg.freezes.pause();
            }
        }
        if muted || !was {
            return Vec::new();
        }
        self.keyframes_for_legs(now)
    }

    /// The layers any leg wants, each asked of its limiter once.
    fn keyframes_for_legs(&mut self, now: Instant) -> Vec<usize> {
        let mut layers: Vec<usize> = self.legs.iter().map(Self::wanted_layer).collect();
        if layers.is_empty() {
            layers.push(0);
        }
        layers.sort_unstable();
        layers.dedup();
        layers.retain(|&layer| self.want_keyframe(now, layer));
        layers
    }

    /// Starts (`Some`) or stops (`None`, closing the file) recording layer 0; a video file
    /// starts at a keyframe, so starting returns whether to send layer 0 a PLI now.
    pub(crate) fn record(&mut self, now: Instant, sink: Option<RecordingSink>) -> bool {
        let starts = sink.is_some();
        self.recording = sink;
        starts && self.want_keyframe(now, 0)
    }

    /// Each layer's bitrate over the last window.
    fn bitrates(&mut self, now: Instant) -> Vec<u64> {
        self.layers.iter_mut().map(|l| l.meter.bps(now)).collect()
    }

    /// A bandwidth estimate (bit/s) for leg `leg`: returns the layer to send a PLI for now if
    /// the leg is to switch.
    pub(crate) fn on_estimate(
        &mut self,
        now: Instant,
        leg: usize,
        estimate_bps: u64,
    ) -> Option<usize> {
        let leg = self.legs.get_mut(leg)?;
        let loss = leg.loss;
        let decision = leg.selector.as_mut()?.on_estimate(now, estimate_bps, loss);
        if decision == LayerDecision::Suspend {
            // No video until it comes back on a keyframe; no hole in the sequence either.
            leg.rewriter.pause(true);
            return None;
        }
        self.keyframe_for(now, decision)
    }

    /// The layer to send a PLI for now, when `decision` switches to it and its limiter agrees.
    fn keyframe_for(&mut self, now: Instant, decision: LayerDecision) -> Option<usize> {
        match decision {
            LayerDecision::SwitchTo(layer) => self.want_keyframe(now, layer).then_some(layer),
            LayerDecision::Keep | LayerDecision::Suspend => None,
        }
    }

    /// Leg `leg` is shown at `size` (`video_size`): returns the layer to send a PLI for now if
    /// the leg is to switch.
    pub(crate) fn set_display(
        &mut self,
        now: Instant,
        leg: usize,
        size: (u32, u32),
    ) -> Option<usize> {
        self.legs.get_mut(leg)?.display = Some(size);
        let decision = self.cap_by_display(leg)?;
        self.keyframe_for(now, decision)
    }

    /// Caps leg `leg`'s layer by the size it is shown at: the lowest-ranked layer whose
    /// keyframes are at least that size (no cap when none is, or sizes are unknown).
    fn cap_by_display(&mut self, leg: usize) -> Option<LayerDecision> {
        let (width, height) = self.legs.get(leg)?.display?;
        let selector = self.legs[leg].selector.as_mut()?;
        let sizes: Vec<Option<(u16, u16)>> = self.layers.iter().map(|l| l.size).collect();
        let big_enough = |layer: usize| {
            sizes[layer].is_some_and(|(w, h)| u32::from(w) >= width && u32::from(h) >= height)
        };
        let cap = selector
            .ranked()
            .iter()
            .position(|&l| big_enough(l))
            .unwrap_or(usize::MAX);
        Some(selector.set_max_rank(cap))
    }

    /// When [`Forwarder::poll`] next has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.layers
            .iter()
            .filter_map(|l| l.limiter.next_deadline())
            .chain(self.speaking.as_ref().and_then(|(_, d)| d.next_deadline()))
            .chain(self.next_measure)
            .min()
    }

    /// Runs the timers due at `now`: deferred keyframe requests, speaking, and the layers'
    /// measurement (a layer that stopped moves its legs elsewhere).
    pub(crate) fn poll(&mut self, now: Instant) -> Due {
        let mut plis: Vec<usize> = (0..self.layers.len())
            .filter(|&l| self.layers[l].limiter.poll(now))
            .collect();
        if self.next_measure.is_some_and(|t| t <= now) {
            self.next_measure = (!self.legs.is_empty() && self.video()).then(|| now + LAYER_WINDOW);
            let bitrates = self.bitrates(now);
            let mut switches = Vec::new();
            for leg in 0..self.legs.len() {
                let measured = self.legs[leg]
                    .selector
                    .as_mut()
                    .map(|s| s.set_bitrates(&bitrates));
                // The ranking or the layers' sizes may have changed: the display cap follows.
                let capped = self.cap_by_display(leg);
                for decision in [measured, capped].into_iter().flatten() {
                    if let LayerDecision::SwitchTo(layer) = decision {
                        switches.push(layer);
                    }
                }
            }
            for layer in switches {
                if !plis.contains(&layer) && self.want_keyframe(now, layer) {
                    plis.push(layer);
                }
            }
        }
        Due {
            plis,
            speaking: self
                .speaking
                .as_mut()
                .and_then(|(_, detector)| detector.poll(now)),
        }
    }
}
