//! How the relay and the test peer build their peer connections: the codecs they speak
//! (`codec.rs`), the interceptor chain (defaults plus one that hands keyframe requests to the
//! application; on the relay also transport-wide sequence numbers, GCC and a retransmission
//! budget) and the settings that loopback/NAT deployments need.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::Registry;
use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, Slot, StreamInfo, TaggedPacket,
};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

use crate::codec::Codec;
use crate::messages::MediaKind;

/// RFC 6464 audio level: how loud each Opus packet is, for speaking detection.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// The WebRTC kind of a media kind.
pub fn rtp_kind(kind: MediaKind) -> RtpCodecKind {
    match kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    }
}

/// The media kind of a WebRTC kind, if it is one the relay forwards.
pub fn media_kind(kind: RtpCodecKind) -> Option<MediaKind> {
    match kind {
        RtpCodecKind::Audio => Some(MediaKind::Audio),
        RtpCodecKind::Video => Some(MediaKind::Video),
        _ => None,
    }
}

/// A media engine that knows the relay's codecs only (Opus, RED if `red`; VP8 before H.264).
fn media_engine(red: bool) -> Result<MediaEngine, Error> {
    let mut engine = MediaEngine::default();
    for codec in Codec::ALL {
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: codec.rtp_codec(),
                payload_type: codec.payload_type(),
            },
            rtp_kind(codec.kind()),
        )?;
    }
    // Opus RED after Opus: offered to subscribers, taken from publishers that put it first.
    if red {
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: crate::red::rtp_codec(),
                payload_type: crate::red::RED_PAYLOAD_TYPE,
            },
            RtpCodecKind::Audio,
        )?;
    }
    engine.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    Ok(engine)
}

/// Whether an RTCP packet asks for a keyframe (PLI or FIR).
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Whether an RTCP packet tells how a subscriber is receiving: a bandwidth estimate (REMB), a
/// receiver report (loss) or a NACK.
pub fn is_reception_feedback(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<ReceiverEstimatedMaximumBitrate>()
        || any.is::<ReceiverReport>()
        || any.is::<TransportLayerNack>()
}

/// Marks inbound RTCP the application acts on for delivery to it: keyframe requests (PLI/FIR)
/// always, so that a sender reads them with `TrackLocal::poll`; on the relay also bandwidth
/// estimates and receiver reports, from which it chooses simulcast layers, and NACKs, which it
/// counts (the NACK responder inside the chain answers them). All other inbound RTCP stays with
/// the interceptors. Each delivered packet travels alone, since the core routes a
/// message to one track by its first destination SSRC. Sits last in the chain, after every
/// interceptor that reads RTCP. A packet an interceptor annotated (the congestion controller's
/// target) is passed on too, for the chain's end to carry its attributes to the connection.
struct FeedbackDelivery {
    reception: bool,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for FeedbackDelivery {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        let Packet::Rtcp(packets) = &msg.message.packet else {
            self.read_queue.push_back(msg);
            return Ok(());
        };
        for packet in packets {
            let wanted = is_keyframe_request(packet.as_ref())
                || (self.reception && is_reception_feedback(packet.as_ref()));
            if wanted {
                self.read_queue.push_back(TaggedPacket {
                    now: msg.now,
                    transport: msg.transport,
                    message: AttributedPacket::new(Packet::Rtcp(vec![packet.clone()]))
                        .with(Attribute::DeliverToApplication),
                });
            }
        }
        // What an interceptor learnt for the connection rides on the packet it learnt it from
        // (the congestion controller's new target on the TWCC feedback): passed on unmarked, the
        // chain's end strips the payload and carries the attributes on to `get_stats`.
        if !msg.message.attributes.is_empty() {
            self.read_queue.push_back(msg);
        }
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

/// What share of a subscriber's estimated downlink retransmissions may take.
pub(crate) const RETRANSMISSION_SHARE: f64 = 0.25;

/// Bounds the retransmissions a connection sends (NACK answers, rtc's responder) to a share of
/// the congestion controller's target: on a link that is already full, answering every NACK adds
/// to the overload that caused the losses, whose NACKs then multiply (seen on virtual time at a
/// 70 kbit/s bottleneck). A retransmission over the budget is not sent; the receiver's NACK
/// generator asks again, and a video that stays broken gets a keyframe (PLI) instead. Sits
/// between the pacer and the NACK responder: on the read leg it sees the target on the feedback
/// that carries it, on the write leg every retransmission on its way out.
pub(crate) struct RetransmissionBudget {
    /// Bit/s allowed now.
    rate: f64,
    /// Bits that may go now (a token bucket of half a second).
    tokens: f64,
    refilled: Option<Instant>,
    /// Retransmissions not sent, over the connection's life.
    pub(crate) refused: u64,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RetransmissionBudget {
    pub(crate) fn new(target_bps: f64) -> Self {
        let rate = target_bps * RETRANSMISSION_SHARE;
        Self {
            rate,
            tokens: rate / 2.0,
            refilled: None,
            refused: 0,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    /// Whether a retransmission of `bits` may go at `now` (and spends it if so).
    pub(crate) fn admit(&mut self, now: Instant, bits: f64) -> bool {
        if let Some(then) = self.refilled {
            let elapsed = now.saturating_duration_since(then).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.rate / 2.0);
        }
        self.refilled = Some(now);
        if self.tokens < bits {
            self.refused += 1;
            return false;
        }
        self.tokens -= bits;
        true
    }

    /// The congestion controller's new target.
    pub(crate) fn set_target(&mut self, target_bps: f64) {
        self.rate = target_bps * RETRANSMISSION_SHARE;
        self.tokens = self.tokens.min(self.rate / 2.0);
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RetransmissionBudget {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        let changed = Attribute::TargetBitrateChanged {
            bits_per_second: 0.0,
        };
        if let Some(Attribute::TargetBitrateChanged { bits_per_second }) = msg.message.get(&changed)
        {
            self.set_target(*bits_per_second);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if msg.message.has(&Attribute::Retransmission)
            && let Packet::Rtp(packet) = &msg.message.packet
        {
            use rtc::shared::marshal::MarshalSize;
            let bits = (packet.marshal_size() * 8) as f64;
            if !self.admit(msg.now, bits) {
                return Ok(());
            }
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for RetransmissionBudget {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

impl Interceptor for FeedbackDelivery {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// How often one missing packet is asked for again before it is given up. rtc's NACK generator
/// asks without limit: while a simulcast layer is paused (its publisher's uplink is short) the
/// packets lost just before the pause stay missing, and it asked for them every 100 ms for as
/// long as the pause lasted; the browser answered each time, and in Chromium over a 300 kbit/s
/// link those retransmissions of a layer nobody received took a third of the link. Ten tries
/// (about a second) repair what a retransmission can repair.
pub(crate) const NACKS_PER_PACKET: u16 = 10;

/// The NACK generator of every connection, held to [`NACKS_PER_PACKET`] tries per packet.
fn nack_generator() -> rtc::interceptor::NackGeneratorInterceptor {
    rtc::interceptor::NackGeneratorBuilder::new()
        .with_max_nacks_per_packet(NACKS_PER_PACKET)
        .build()
}

/// webrtc-rs's default interceptors (`register_default_interceptors`: NACK both ways, the
/// simulcast header extensions, the TWCC receiver, sender and receiver reports), with the NACK
/// generator held to [`NACKS_PER_PACKET`] tries per packet.
fn default_interceptors(registry: Registry, engine: &mut MediaEngine) -> Result<Registry, Error> {
    use rtc::peer_connection::configuration::interceptor_registry::{
        configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
    };
    use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, TYPE_RTCP_FB_NACK};
    for parameter in ["", "pli"] {
        engine.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_NACK.to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    let registry = registry
        .with(
            Slot::NackResponder,
            rtc::interceptor::NackResponderBuilder::new().build(),
        )
        .with(Slot::NackGenerator, nack_generator());
    configure_simulcast_extension_headers(engine)?;
    let registry = configure_twcc_receiver_only(registry, engine)?;
    Ok(configure_rtcp_reports(registry))
}

/// The media engine and interceptor chain both sides use: Opus (and Opus RED if `red`), VP8
/// and H.264, the simulcast header extensions, the default interceptors (NACK, reports, TWCC)
/// and the feedback the application acts on delivered to it (`reception`: estimates and
/// receiver reports too).
pub(crate) fn engine_and_registry(
    reception: bool,
    red: bool,
) -> Result<(MediaEngine, Registry), Error> {
    let mut engine = media_engine(red)?;
    let registry = default_interceptors(Registry::new(), &mut engine)?;
    let registry = registry.with(
        Slot::from(14_000),
        FeedbackDelivery {
            reception,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        },
    );
    Ok((engine, registry))
}

/// Where the relay's estimate of a subscriber's downlink starts (GCC's own default), bit/s.
pub(crate) const DOWNLINK_INITIAL_BPS: f64 = 300_000.0;
/// The lowest the estimate goes: audio alone still fits (GCC's default floor is 100 kb/s, which
/// would hide a link that carries only audio).
pub(crate) const DOWNLINK_MIN_BPS: f64 = 30_000.0;

/// How often the relay's ICE agent runs its checks. webrtc-rs's default (200 ms) also paces how
/// soon the relay notices the peer's nomination, which cost every join ~200 ms before DTLS could
/// start (seen on virtual time in `room/scenarios.rs`); at 25 ms the relay follows within a tick.
pub(crate) const RELAY_ICE_CHECK_INTERVAL: std::time::Duration =
    std::time::Duration::from_millis(25);

/// Checks per candidate pair before it is given up: 56 × 25 ms, the default's 1.4 s, so that a
/// slow path (a satellite or congested 4G link) is not failed sooner than before.
const RELAY_ICE_CHECKS: u16 = 56;

/// A host candidate for `addr` (the relay's announced address, or a client's own).
pub(crate) fn host_candidate(
    addr: std::net::SocketAddr,
) -> Result<rtc::peer_connection::transport::RTCIceCandidateInit, Error> {
    use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    RTCIceCandidate::from(&candidate).to_json()
}

/// The relay's side of a participant's connection: the sans-IO core, driven by the room over
/// the relay's shared socket (`socket.rs`). Its ICE credentials are fixed here so that the
/// socket can route the peer's STUN requests to it; it gathers nothing (the room adds the
/// socket's host candidates).
pub(crate) fn build_relay_connection(
    now: Instant,
    ufrag: String,
    pwd: String,
) -> Result<rtc::peer_connection::RTCPeerConnection, Error> {
    let (engine, registry) = engine_and_registry(true, true)?;
    // The relay estimates each subscriber's downlink itself: transport-wide sequence numbers on
    // what it sends, and Google Congestion Control over the subscriber's TWCC feedback, its loss
    // half tolerant of a line's random loss (`downlink.rs`; read back through `get_stats` as the
    // outbound streams' `target_bitrate`).
    let registry = registry
        .with(
            Slot::TwccSender,
            rtc::interceptor::TwccSenderBuilder::new().build(),
        )
        .with(
            Slot::CongestionControl,
            rtc::interceptor::CongestionControlBuilder::new(
                crate::downlink::DownlinkEstimator::new(
                    DOWNLINK_INITIAL_BPS,
                    DOWNLINK_MIN_BPS,
                    rtc::interceptor::GCC_MAX_BITRATE,
                ),
            )
            .build(),
        )
        .with(
            Slot::from(3_500),
            RetransmissionBudget::new(DOWNLINK_INITIAL_BPS),
        );
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_ice_credentials(ufrag, pwd)
        .with_ice_connection_attempts(Some(RELAY_ICE_CHECK_INTERVAL), Some(RELAY_ICE_CHECKS))
        .build();
    rtc::peer_connection::RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_that_never_arrives_is_asked_for_nacks_per_packet_times_then_given_up() {
        use rtc::interceptor::RTCPFeedback;
        let mut generator = nack_generator();
        generator.bind_remote_stream(&StreamInfo {
            ssrc: 5,
            rtcp_feedback: vec![RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            }],
            ..Default::default()
        });
        let t0 = Instant::now();
        // Packet 3 is lost, and its retransmissions never arrive.
        for seq in [1u16, 2, 4, 5] {
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    ssrc: 5,
                    sequence_number: seq,
                    ..Default::default()
                },
                payload: bytes::Bytes::from_static(b"media"),
            };
            generator
                .handle_read(TaggedPacket {
                    now: t0,
                    transport: Default::default(),
                    message: AttributedPacket::new(Packet::Rtp(packet)),
                })
                .expect("read");
            while generator.poll_read().is_some() {}
        }
        let mut nacks = 0;
        for step in 1..=100 {
            generator
                .handle_timeout(t0 + std::time::Duration::from_millis(100 * step))
                .expect("timeout");
            while generator.poll_write().is_some() {
                nacks += 1;
            }
        }
        // rtc's default would have asked 100 times in these ten seconds.
        assert_eq!(nacks, usize::from(NACKS_PER_PACKET));
    }

    #[test]
    fn retransmissions_are_held_to_a_quarter_of_the_target_over_time_with_half_a_second_of_burst() {
        let t0 = Instant::now();
        let mut budget = RetransmissionBudget::new(400_000.0); // 100 kbit/s for retransmissions
        let packet = 8_000.0; // 1,000-byte packets
        let mut sent = 0;
        for i in 0..200 {
            // 200 asked for within one second: twice what the budget carries.
            let now = t0 + std::time::Duration::from_millis(i * 5);
            sent += usize::from(budget.admit(now, packet));
        }
        // Half a second of burst (6 packets) and a second of refill (12) at most.
        assert!((12..=19).contains(&sent), "{sent} sent");
        assert_eq!(budget.refused, 200 - sent as u64);
        // A lower target lowers the budget at once.
        budget.set_target(40_000.0);
        let later = t0 + std::time::Duration::from_secs(10);
        let burst = (0..10).filter(|_| budget.admit(later, packet)).count();
        assert!(burst <= 1, "{burst} sent after the target fell");
    }
}
