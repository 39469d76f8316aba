//! The media plane of a room: datagrams into the connections, forwarding each published packet
//! to its subscribers' legs, feedback (keyframe requests, bandwidth estimates, receiver
//! reports), simulcast layers, recording taps and connection quality.

use rtc::media_stream::MediaStreamTrackId;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::StatsSelector;
use rtc::statistics::report::RTCStatsReportEntry;

use super::state::Transport;
use super::{Datagram, Published, Recorder, RoomCore, source_name};
use crate::codec::Codec;
use crate::engine::is_keyframe_request;
use crate::error::RelayError;
use crate::forwarder::{Forwarder, Leg, LegStage, PendingLeg};
use crate::messages::{LeaveReason, MediaKind, ServerMessage, TrackSource};
use crate::quality::totals_from;

/// What a subscriber's audio legs are assumed to take of its bandwidth estimate, each, bit/s
/// (Opus speech with packet overhead); the rest is shared among its video legs.
const AUDIO_BUDGET_BPS: u64 = 48_000;

impl RoomCore {
    /// Hands one datagram to the connection it was routed to.
    pub(super) fn on_datagram(&mut self, datagram: Datagram) {
        let Some(index) = self.link_index(datagram.link) else {
            return; // a removed member's late packets
        };
        let member = &mut self.members[index];
        let pwds = &member.ice_pwds;
        let data = &datagram.data;
        if let Some(moved) = member.latch.heard(self.now, datagram.peer, || {
            pwds.iter()
                .any(|pwd| crate::socket::stun_integrity_ok(data, pwd.as_bytes()))
        }) {
            tracing::info!(participant = %member.id, to = %moved, "the participant's address changed: following it");
            // What was lost while the old address was silent: fresh keyframes both ways, as
            // after an ICE restart.
            self.resync_video(index);
        }
        let message = TaggedBytesMut {
            now: self.now,
            transport: TransportContext {
                local_addr: datagram.local,
                peer_addr: datagram.peer,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: datagram.data,
        };
        if let Err(err) = self.members[index].pc.handle_read(message) {
            // One bad datagram (stray, replayed, undecryptable) must not end the connection.
            tracing::trace!(%err, participant = %self.members[index].id, "datagram refused");
        }
    }

    /// The connections' and forwarders' deadlines that have come.
    pub(super) fn media_timeouts(&mut self) {
        let now = self.now;
        for index in 0..self.members.len() {
            let member = &mut self.members[index];
            if member.pc.poll_timeout().is_some_and(|t| t <= now)
                && let Err(err) = member.pc.handle_timeout(now)
            {
                tracing::debug!(%err, participant = %member.id, "timeout handling failed");
            }
            let mut plis = Vec::new();
            let mut speaking = Vec::new();
            for (k, published) in member.published.iter_mut().enumerate() {
                if published
                    .forwarder
                    .next_deadline()
                    .is_some_and(|t| t <= now)
                {
                    let due = published.forwarder.poll(now);
                    plis.extend(due.plis.into_iter().map(|layer| (k, layer)));
                    speaking.extend(due.speaking);
                }
            }
            for (k, layer) in plis {
                self.write_pli(index, k, layer);
            }
            for change in speaking {
                self.announce_speaking(index, change);
            }
        }
    }

    /// Drives every connection until none has anything left: its events, its received media
    /// (forwarded into the others' connections), then everyone's outgoing datagrams.
    pub(super) fn drive(&mut self) {
        loop {
            let mut progressed = false;
            let mut events = Vec::new();
            for member in &mut self.members {
                while let Some(event) = member.pc.poll_event() {
                    events.push((member.link, event));
                }
            }
            progressed |= !events.is_empty();
            for (link, event) in events {
                if let Some(index) = self.link_index(link) {
                    self.on_pc_event(index, event);
                }
            }
            for index in 0..self.members.len() {
                while let Some(message) = self.members[index].pc.poll_read() {
                    progressed = true;
                    self.on_pc_message(index, message.message);
                }
            }
            for index in 0..self.members.len() {
                self.flush(index);
            }
            if !progressed {
                break;
            }
        }
    }

    fn on_pc_event(&mut self, index: usize, event: RTCPeerConnectionEvent) {
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                self.on_connection_state(index, state)
            }
            RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                RTCIceConnectionState::Connected | RTCIceConnectionState::Completed,
            ) if self.members[index].ice_restarted => {
                // Its path changed: the decoders on both sides of it may have lost sync.
                self.members[index].ice_restarted = false;
                self.resync_video(index);
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                self.on_published(index, init.track_id, init.receiver_id, init.ssrc, init.rid)
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) => {
                let gone = self.members[index]
                    .published
                    .iter()
                    .find(|p| p.source == track_id)
                    .map(|p| p.track_id.clone());
                if let Some(track_id) = gone {
                    self.unpublish(index, &track_id);
                }
            }
            _ => {}
        }
    }

    fn on_connection_state(&mut self, index: usize, state: RTCPeerConnectionState) {
        match state {
            RTCPeerConnectionState::Connected => {
                // Connected again after an ICE restart (a resume): the decoders on both sides
                // of it may have lost sync.
                if self.members[index].transport.was_up() {
                    self.resync_video(index);
                }
                self.members[index].transport = Transport::Connected;
                self.end_grace_if_healthy(index);
                self.activate_legs(index);
            }
            // An ICE restart may still revive a failed connection within the grace period.
            RTCPeerConnectionState::Failed => {
                self.members[index].transport = Transport::Failed { since: self.now };
                self.start_grace(index, LeaveReason::ConnectionLost);
            }
            RTCPeerConnectionState::Closed => {
                let id = self.members[index].id.clone();
                self.remove(&id, LeaveReason::ConnectionLost);
            }
            _ => {}
        }
    }

    /// Media or feedback read from member `index`'s connection.
    fn on_pc_message(&mut self, index: usize, message: RTCMessage) {
        match message {
            RTCMessage::RtpPacket(source, packet) => {
                // By SSRC (a number) when a layer of the track has it; by the track's id only
                // for a stream's first packets, while a layer's SSRC is still to be learnt.
                let ssrc = packet.header.ssrc;
                let published = &self.members[index].published;
                let Some(k) = published
                    .iter()
                    .position(|p| p.forwarder.layers.iter().any(|l| l.ssrc == ssrc))
                    .or_else(|| published.iter().position(|p| p.source == source))
                else {
                    return;
                };
                let now = self.now;
                let forwarder = &mut self.members[index].published[k].forwarder;
                let Some(layer) = forwarder.layer_of(packet.header.ssrc) else {
                    return;
                };
                self.counters.packets_received += 1;
                let arrival = forwarder.on_packet(now, layer, &packet);
                if let Some(change) = arrival.speaking {
                    self.announce_speaking(index, change);
                }
                if arrival.forward {
                    self.forward(index, k, layer, &packet, arrival.keyframe);
                }
            }
            // Feedback about what this member receives.
            RTCMessage::RtcpPacket(track_id, packets) => {
                for packet in &packets {
                    self.on_feedback(index, &track_id, packet.as_ref());
                }
            }
            _ => {}
        }
    }

    /// One RTCP packet from member `index` about what it receives: a keyframe request goes to
    /// the publisher of that leg's current layer, a bandwidth estimate and receiver-report loss
    /// choose its simulcast layers.
    fn on_feedback(&mut self, index: usize, track_id: &str, packet: &dyn rtc::rtcp::Packet) {
        let now = self.now;
        let subscriber = self.members[index].link;
        if is_keyframe_request(packet) {
            let found = self.track_index(track_id).filter(|(p, k)| {
                self.members[*p].published[*k]
                    .forwarder
                    .subscribed(subscriber)
            });
            let Some((p, k)) = found else {
                return;
            };
            self.counters.keyframe_requests_received += 1;
            let forwarder = &mut self.members[p].published[k].forwarder;
            let leg = forwarder.leg_of(subscriber);
            if let Some(layer) = leg.and_then(|leg| forwarder.want_keyframe_for(now, leg)) {
                self.write_pli(p, k, layer);
            }
            return;
        }
        let any = packet.as_any();
        if any.is::<TransportLayerNack>() {
            // Answered by the NACK responder inside the connection; counted here.
            self.counters.nacks_received += 1;
        } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
            self.members[index].estimate = Some(remb.bitrate.max(0.0) as u64);
            self.choose_layers(index);
        } else if let Some(report) = any.downcast_ref::<ReceiverReport>() {
            self.act_on_legs_of(subscriber, |forwarder, leg| {
                let leg = &mut forwarder.legs[leg];
                if let Some(reception) = report.reports.iter().find(|r| r.ssrc == leg.rewriter.ssrc)
                {
                    leg.loss = f64::from(reception.fraction_lost) / 256.0;
                }
                None
            });
            if self.members[index].downlink().is_some() {
                self.choose_layers(index);
            }
        }
    }

    /// Reads each connected member's downlink estimate (GCC over its TWCC feedback) from its
    /// connection, and lets a member whose estimate moved choose its layers again.
    pub(super) fn read_estimates(&mut self) {
        let now = self.now;
        let mut moved = Vec::new();
        for (index, member) in self.members.iter_mut().enumerate() {
            if !member.transport.was_up() {
                continue;
            }
            let report = member.pc.get_stats(now, StatsSelector::None);
            let target = report
                .iter()
                .filter_map(|entry| match entry {
                    RTCStatsReportEntry::OutboundRtp(outbound) => Some(outbound.target_bitrate),
                    _ => None,
                })
                .fold(0.0_f64, f64::max);
            // Zero until its first feedback: no estimate yet.
            if !(target.is_finite() && target > 0.0) {
                continue;
            }
            let target = target as u64;
            let changed = member.congestion.is_none_or(|before| {
                before.abs_diff(target) * 20 > before // more than 5 %
            });
            if changed {
                member.congestion = Some(target);
                moved.push(index);
            }
        }
        for index in moved {
            self.choose_layers(index);
        }
    }

    /// Shares member `index`'s downlink estimate (`Member::downlink`) among the video it receives (audio first,
    /// then an equal share per video leg) and lets each leg's selector choose its layer.
    fn choose_layers(&mut self, index: usize) {
        let Some(estimate) = self.members[index].downlink() else {
            return;
        };
        let subscriber = self.members[index].link;
        let (mut audio, mut video) = (0u64, 0u64);
        let received = self.members.iter().flat_map(|m| &m.published);
        for published in received.filter(|p| p.forwarder.subscribed(subscriber)) {
            match published.codec.kind() {
                MediaKind::Audio => audio += 1,
                MediaKind::Video => video += 1,
            }
        }
        if video == 0 {
            return;
        }
        let share = estimate.saturating_sub(audio * AUDIO_BUDGET_BPS) / video;
        let now = self.now;
        self.act_on_legs_of(subscriber, |forwarder, leg| {
            forwarder.on_estimate(now, leg, share)
        });
    }

    /// Writes one packet of member `index`'s track `k` to every subscriber leg.
    fn forward(
        &mut self,
        index: usize,
        k: usize,
        layer: usize,
        packet: &rtc::rtp::Packet,
        keyframe: bool,
    ) {
        let now = self.now;
        let counters = &mut self.counters;
        let (before, rest) = self.members.split_at_mut(index);
        let (publisher, after) = rest.split_first_mut().expect("index is in range");
        let video = publisher.published[k].codec.kind() == MediaKind::Video;
        for leg in &mut publisher.published[k].forwarder.legs {
            if leg.paused {
                continue;
            }
            let (admitted, switched) = leg.admits(layer, keyframe);
            if switched {
                counters.layer_switches += 1;
            }
            if !admitted {
                continue;
            }
            let Some(out) = leg.rewriter.rewrite(packet, keyframe, now) else {
                continue;
            };
            let Some(subscriber) = before
                .iter_mut()
                .chain(after.iter_mut())
                .find(|m| m.link == leg.subscriber)
            else {
                continue;
            };
            let bytes = out.payload.len() as u64;
            let frame_end = out.header.marker;
            let Some(mut sender) = subscriber.pc.rtp_sender(leg.sender) else {
                continue;
            };
            // The core drops (and logs) a packet it cannot send; count only what it took.
            if let Err(err) = sender.write_rtp(now, out) {
                tracing::debug!(subscriber = %subscriber.id, %err, "forward failed");
                continue;
            }
            if frame_end && video {
                leg.freezes.on_frame(now);
            }
            counters.packets_forwarded += 1;
            counters.bytes_forwarded += bytes;
        }
    }

    fn announce_speaking(&mut self, index: usize, speaking: bool) {
        let participant = self.members[index].id.clone();
        self.broadcast_except(
            index,
            ServerMessage::Speaking {
                participant_id: participant,
                speaking,
            },
        );
    }

    /// After member `index`'s path changed: keyframes of the video it publishes (its subscribers'
    /// decoders lost packets, and a browser sends no keyframe unasked) and of the video it
    /// receives (its own decoders did; asking now saves waiting for its PLI).
    fn resync_video(&mut self, index: usize) {
        self.request_video_keyframes(index);
        let now = self.now;
        let subscriber = self.members[index].link;
        self.act_on_legs_of(subscriber, |forwarder, leg| {
            forwarder.want_keyframe_for(now, leg)
        });
    }

    /// Runs `act` on each of `subscriber`'s legs (one per track it receives) and sends the
    /// publishers the PLIs it asks for (the layer it returns).
    fn act_on_legs_of(
        &mut self,
        subscriber: u64,
        mut act: impl FnMut(&mut Forwarder, usize) -> Option<usize>,
    ) {
        let mut plis = Vec::new();
        for (p, member) in self.members.iter_mut().enumerate() {
            for (k, published) in member.published.iter_mut().enumerate() {
                let forwarder = &mut published.forwarder;
                if let Some(layer) = forwarder
                    .leg_of(subscriber)
                    .and_then(|leg| act(forwarder, leg))
                {
                    plis.push((p, k, layer));
                }
            }
        }
        for (p, k, layer) in plis {
            self.write_pli(p, k, layer);
        }
    }

    /// Asks for a keyframe of every layer of every video track member `index` publishes.
    fn request_video_keyframes(&mut self, index: usize) {
        let now = self.now;
        for k in 0..self.members[index].published.len() {
            for layer in 0..self.members[index].published[k].forwarder.layers.len() {
                if self.members[index].published[k]
                    .forwarder
                    .want_keyframe(now, layer)
                {
                    self.write_pli(index, k, layer);
                }
            }
        }
    }

    /// Writes a PLI for `layer` of member `index`'s track `k` (its limiter said so).
    fn write_pli(&mut self, index: usize, k: usize, layer: usize) {
        let now = self.now;
        let member = &mut self.members[index];
        let published = &member.published[k];
        let receiver = published.receiver;
        let Some(media_ssrc) = published
            .forwarder
            .layers
            .get(layer)
            .map(|l| l.ssrc)
            .filter(|ssrc| *ssrc != 0)
        else {
            return;
        };
        let Some(mut receiver) = member.pc.rtp_receiver(receiver) else {
            return;
        };
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        };
        match receiver.write_rtcp(now, vec![Box::new(pli)]) {
            Ok(()) => self.counters.plis_sent += 1,
            Err(err) => tracing::debug!(%err, "PLI not sent"),
        }
    }

    pub(super) fn on_published(
        &mut self,
        index: usize,
        source: MediaStreamTrackId,
        receiver: RTCRtpReceiverId,
        ssrc: u32,
        rid: Option<String>,
    ) {
        if let Some(published) = self.members[index]
            .published
            .iter_mut()
            .find(|p| p.source == source)
        {
            // Another encoding of a track already published: a simulcast layer.
            // The same stream opened again (webrtc-rs opens a receiver's streams anew after a
            // renegotiation, and a simulcast layer first seen without its rid once more with it):
            // not a new layer.
            if published.forwarder.layers.iter().any(|l| l.ssrc == ssrc) {
                return;
            }
            let layer = published.forwarder.add_layer(ssrc);
            tracing::info!(room = %self.id, track_id = %published.track_id, layer, ?rid, "simulcast layer opened");
            return;
        }
        let Some(codec) = self.members[index].pc.rtp_receiver(receiver).and_then(|r| {
            let track = r.track();
            let kind = crate::engine::media_kind(track.kind())?;
            let codec = track
                .codec(ssrc)
                .and_then(|c| Codec::from_mime(&c.mime_type));
            Some(codec.unwrap_or(Codec::default_for(kind)))
        }) else {
            return;
        };
        let kind = codec.kind();
        let carries = match kind {
            MediaKind::Audio => TrackSource::Microphone,
            MediaKind::Video if self.members[index].screen.as_deref() == Some(&*source) => {
                TrackSource::Screen
            }
            MediaKind::Video => TrackSource::Camera,
        };
        let publisher = self.members[index].id.clone();
        let ordinal = self.next_track;
        self.next_track += 1;
        let track_id = format!("{publisher}-{}-{ordinal}", source_name(carries));
        let now = self.now;
        let mut forwarder = Forwarder::new(
            codec,
            self.config.keyframe_request_interval,
            self.members[index].audio_level_id,
            ssrc,
        );
        if carries != TrackSource::Screen && self.members[index].muted.contains(&kind) {
            forwarder.set_muted(now, true);
        }
        if let Some(recorder) = self.recording.as_mut() {
            // The first packet is not yet here: the limiter lets the PLI out when it is asked.
            forwarder.record(now, Some(recorder(&publisher, &track_id, codec)));
        }
        self.members[index].published.push(Published {
            track_id: track_id.clone(),
            source,
            receiver,
            codec,
            carries,
            forwarder,
        });
        tracing::info!(room = %self.id, participant = %publisher, %track_id, "track published");
        self.broadcast_except(
            index,
            ServerMessage::TrackPublished {
                participant_id: publisher.clone(),
                track_id: track_id.clone(),
                kind,
                source: carries,
            },
        );
        let k = self.members[index].published.len() - 1;
        for other in 0..self.members.len() {
            if other != index && self.members[other].negotiation.opened() {
                self.subscribe(other, index, k);
                self.maybe_offer(other);
            }
        }
    }

    /// Starts forwarding on every leg of member `index`'s whose offer it answered.
    pub(super) fn activate_legs(&mut self, index: usize) {
        if !self.members[index].transport.was_up() {
            return;
        }
        let subscriber = self.members[index].link;
        let mut waiting = Vec::new();
        for (p, member) in self.members.iter().enumerate() {
            for (k, published) in member.published.iter().enumerate() {
                for pending in published.forwarder.pending.iter() {
                    if pending.subscriber == subscriber && pending.stage == LegStage::Agreed {
                        waiting.push((p, k, pending.sender, published.codec));
                    }
                }
            }
        }
        let now = self.now;
        for (p, k, sender, codec) in waiting {
            let Some(mut rtp_sender) = self.members[index].pc.rtp_sender(sender) else {
                continue;
            };
            let negotiated = &rtp_sender.get_parameters().rtp_parameters.codecs;
            let payload_type_of = |mime: &str| {
                negotiated
                    .iter()
                    .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
                    .map(|c| c.payload_type)
            };
            let Some(payload_type) = payload_type_of(codec.mime_type()) else {
                continue; // not negotiated (yet): the next exchange may settle it
            };
            let red = payload_type_of(crate::red::MIME_TYPE);
            let forwarder = &mut self.members[p].published[k].forwarder;
            // Sender ids are per connection: the subscriber's own is the one.
            let mine = |l: &PendingLeg| l.subscriber == subscriber && l.sender == sender;
            let Some(j) = forwarder.pending.iter().position(mine) else {
                continue;
            };
            let pending = forwarder.pending.remove(j);
            let mut leg = Leg::new(subscriber, sender, pending.ssrc, (payload_type, red), codec);
            leg.display = pending.display;
            leg.paused = codec.kind() == MediaKind::Video && !self.members[index].receives_video;
            let paused = leg.paused;
            let forwarder = &mut self.members[p].published[k].forwarder;
            if let Some(layer) = forwarder.subscribe(now, leg).filter(|_| !paused) {
                self.write_pli(p, k, layer);
            }
        }
    }

    /// Member `index` stops (or resumes) receiving the others' video: its video legs send nothing
    /// meanwhile, and start again on a keyframe with their sequence unbroken.
    pub(super) fn receive_video(&mut self, index: usize, enabled: bool) {
        if self.members[index].receives_video == enabled {
            return;
        }
        self.members[index].receives_video = enabled;
        let (subscriber, now) = (self.members[index].link, self.now);
        let mut plis = Vec::new();
        for (p, member) in self.members.iter_mut().enumerate() {
            for (k, published) in member.published.iter_mut().enumerate() {
                if published.codec.kind() != MediaKind::Video {
                    continue;
                }
                let forwarder = &mut published.forwarder;
                let Some(leg) = forwarder.leg_of(subscriber) else {
                    continue;
                };
                forwarder.legs[leg].paused = !enabled;
                if enabled {
                    plis.extend(
                        forwarder
                            .want_keyframe_for(now, leg)
                            .map(|layer| (p, k, layer)),
                    );
                } else {
                    forwarder.legs[leg].rewriter.pause(true);
                    forwarder.legs[leg].freezes.pause();
                }
            }
        }
        for (p, k, layer) in plis {
            self.write_pli(p, k, layer);
        }
    }

    /// Mutes or unmutes member `index`'s tracks of `kind` (video resumes on a keyframe).
    pub(super) fn mute_tracks(&mut self, index: usize, kind: MediaKind, muted: bool) {
        let now = self.now;
        let mut plis = Vec::new();
        for (k, published) in self.members[index].published.iter_mut().enumerate() {
            // A shared screen is not the camera: turning the camera off leaves it on.
            if published.codec.kind() == kind && published.carries != TrackSource::Screen {
                for layer in published.forwarder.set_muted(now, muted) {
                    plis.push((k, layer));
                }
            }
        }
        for (k, layer) in plis {
            self.write_pli(index, k, layer);
        }
    }

    /// `subscriber` shows member `p`'s track `k` at `size` (its leg is active).
    pub(super) fn display_size(&mut self, p: usize, k: usize, subscriber: u64, size: (u32, u32)) {
        let now = self.now;
        let forwarder = &mut self.members[p].published[k].forwarder;
        let Some(leg) = forwarder.leg_of(subscriber) else {
            return;
        };
        if let Some(layer) = forwarder.set_display(now, leg, size) {
            self.write_pli(p, k, layer);
        }
    }

    pub(super) fn start_recording(&mut self, mut recorder: Recorder) -> Result<(), RelayError> {
        if self.recording.is_some() {
            return Err(RelayError::Recording("already recording".into()));
        }
        let now = self.now;
        let mut plis = Vec::new();
        let mut tracks = 0;
        for (index, member) in self.members.iter_mut().enumerate() {
            for (k, published) in member.published.iter_mut().enumerate() {
                let sink = recorder(&member.id, &published.track_id, published.codec);
                if published.forwarder.record(now, Some(sink)) {
                    plis.push((index, k));
                }
                tracks += 1;
            }
        }
        for (index, k) in plis {
            self.write_pli(index, k, 0);
        }
        tracing::info!(room = %self.id, tracks, "recording started");
        self.recording = Some(recorder);
        Ok(())
    }

    /// Closes every recording tap (each writer then closes and hashes its file).
    pub(super) fn stop_recording(&mut self) -> Result<(), RelayError> {
        if self.recording.take().is_none() {
            return Err(RelayError::Recording("not recording".into()));
        }
        let now = self.now;
        for member in &mut self.members {
            for published in &mut member.published {
                published.forwarder.record(now, None);
            }
        }
        Ok(())
    }

    /// Sends everyone the connection quality of every connected member.
    pub(super) fn report_quality(&mut self) {
        let now = self.now;
        let mut reports = Vec::new();
        for index in 0..self.members.len() {
            // Freezes in what it was sent: over every leg of every track it receives.
            let subscriber = self.members[index].link;
            let (mut freezes, mut frozen) = (0u32, std::time::Duration::ZERO);
            let mut layer: Option<usize> = None;
            for member in &mut self.members {
                for published in &mut member.published {
                    let simulcast = published.forwarder.simulcast();
                    for leg in &mut published.forwarder.legs {
                        if leg.subscriber == subscriber {
                            let (count, length) = leg.freezes.take();
                            freezes += count;
                            frozen += length;
                            let rank = leg.selector.as_ref().and_then(|s| s.current_rank());
                            if let Some(rank) = rank.filter(|_| simulcast) {
                                layer = Some(layer.map_or(rank, |l| l.min(rank)));
                            }
                        }
                    }
                }
            }
            let member = &mut self.members[index];
            if !member.transport.was_up() {
                continue;
            }
            let report = member.pc.get_stats(now, StatsSelector::None);
            let totals = totals_from(&report);
            self.counters.nacks_sent += totals.nacks_sent.saturating_sub(member.nacks_sent);
            member.nacks_sent = totals.nacks_sent;
            let mut quality = member.quality.update(now, totals);
            quality.freezes = freezes;
            quality.frozen_ms = u32::try_from(frozen.as_millis()).unwrap_or(u32::MAX);
            quality.layer = layer.map(|l| u8::try_from(l).unwrap_or(u8::MAX));
            quality.estimate_kbps = member
                .downlink()
                .map(|bps| u32::try_from(bps / 1000).unwrap_or(u32::MAX));
            reports.push(ServerMessage::ConnectionQuality {
                participant_id: member.id.clone(),
                quality,
            });
        }
        for report in reports {
            for index in 0..self.members.len() {
                self.send_to(index, report.clone());
            }
        }
    }
}
