//! The control plane of a room: membership (join, resume, leave, grace periods), negotiation
//! (offers, answers, candidates) and the signaling messages members exchange.

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;

use super::state::{CandidateUse, Grace, Negotiation, Presence, Transport};
use super::{Member, Output, RoomCore};
use crate::engine::{AUDIO_LEVEL_URI, build_relay_connection};
use crate::error::RelayError;
use crate::forwarder::{Forwarder, LegStage, PendingLeg};
use crate::messages::{
    ClientMessage, ErrorCode, IceCandidate, LeaveReason, MediaKind, ParticipantId, ServerMessage,
    TrackSource,
};
use crate::quality::QualityTracker;
use crate::sdp;

/// Random ICE credentials (RFC 8445 §5.3: ufrag ≥ 24 bits, password ≥ 128 bits of randomness).
fn ice_credentials() -> (String, String) {
    use rand::Rng;
    let random = |n: usize| -> String {
        rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(n)
            .map(char::from)
            .collect()
    };
    (random(16), random(32))
}

/// A fresh SSRC for a track the relay sends.
fn next_ssrc() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT_SSRC: AtomicU32 = AtomicU32::new(0x1000_0001);
    // Unique per process, which is more than the one-per-connection uniqueness SSRCs need.
    NEXT_SSRC.fetch_add(0x9E37_79B9, Ordering::Relaxed) | 1
}

impl RoomCore {
    pub(super) fn join(
        &mut self,
        participant: ParticipantId,
        attachment: u64,
        link: u64,
        replace: bool,
    ) -> Result<(), RelayError> {
        if self.member_index(&participant).is_some() {
            if !replace {
                return Err(RelayError::AlreadyInRoom {
                    room: self.id.clone(),
                    participant,
                });
            }
            self.remove(&participant, LeaveReason::Replaced);
        }
        let max = self.config.max_participants;
        if self.members.len() >= max {
            return Err(RelayError::RoomFull {
                room: self.id.clone(),
                max,
            });
        }
        let (ufrag, pwd) = ice_credentials();
        let pc = build_relay_connection(self.now, ufrag.clone(), pwd.clone())?;
        self.outputs.push_back(Output::Route {
            ufrag: ufrag.clone(),
            link,
        });
        self.members.push(Member {
            id: participant.clone(),
            link,
            pc,
            ice_pwds: vec![pwd],
            latch: Default::default(),
            presence: Presence::Attached { attachment },
            negotiation: Negotiation::new(),
            transport: Transport::Connecting,
            grace: None,
            published: Vec::new(),
            muted: Vec::new(),
            audio_level_id: None,
            candidates_added: false,
            ufrags: vec![ufrag],
            remote_ufrag: None,
            ice_restarted: false,
            quality: QualityTracker::new(),
            estimate: None,
            congestion: None,
            nacks_sent: 0,
            receives_video: true,
            screen: None,
        });
        let index = self.members.len() - 1;
        // Who is here and what is published; the tracks come with the relay's offer.
        self.welcome(index, false);
        self.broadcast_except(
            index,
            ServerMessage::ParticipantJoined {
                participant_id: participant.clone(),
            },
        );
        tracing::info!(room = %self.id, participant = %participant, "joined");
        Ok(())
    }

    /// What a (re)attached member is told first: who is here (and whether it got its place
    /// back) and what they publish.
    fn welcome(&mut self, index: usize, resumed: bool) {
        let participant = self.members[index].id.clone();
        let others: Vec<ParticipantId> = self
            .members
            .iter()
            .filter(|m| m.id != participant)
            .map(|m| m.id.clone())
            .collect();
        self.send_to(
            index,
            ServerMessage::Joined {
                participant_id: participant.clone(),
                others,
                resumed,
            },
        );
        let existing: Vec<ServerMessage> = self
            .members
            .iter()
            .filter(|m| m.id != participant)
            .flat_map(|m| {
                m.published.iter().map(|p| ServerMessage::TrackPublished {
                    participant_id: m.id.clone(),
                    track_id: p.track_id.clone(),
                    kind: p.codec.kind(),
                    source: p.carries,
                })
            })
            .collect();
        for message in existing {
            self.send_to(index, message);
        }
    }

    pub(super) fn resume(
        &mut self,
        participant: ParticipantId,
        attachment: u64,
    ) -> Result<(), RelayError> {
        let index = self.member_index(&participant).ok_or(RelayError::Gone)?;
        let old = self.members[index].presence.attachment();
        self.outputs.push_back(Output::Release { attachment: old });
        self.members[index].presence = Presence::Attached { attachment };
        self.welcome(index, true);
        // An offer sent while it was away (or lost with the old socket) is sent again.
        if self.members[index].negotiation.relay_offered()
            && let Some(sdp) = self.local_sdp(index)
        {
            self.send_to(index, ServerMessage::Offer { sdp });
        }
        self.end_grace_if_healthy(index);
        Ok(())
    }

    /// Messages to handle `attachment` cannot be delivered.
    pub(super) fn undeliverable(&mut self, attachment: u64, reason: LeaveReason) {
        let Some(index) = self
            .members
            .iter()
            .position(|m| m.presence.attached() == Some(attachment))
        else {
            return;
        };
        match reason {
            // Its handle was dropped: like a dropped socket, it may resume.
            LeaveReason::Vanished => {
                self.members[index]
                    .presence
                    .detach(attachment, self.now, reason);
                self.start_grace(index, reason);
            }
            _ => {
                let id = self.members[index].id.clone();
                self.remove(&id, reason);
            }
        }
    }

    /// Starts the member's grace period unless one runs; with no grace configured, removes it now.
    pub(super) fn start_grace(&mut self, index: usize, reason: LeaveReason) {
        let grace = self.config.resume_grace;
        if grace.is_zero() {
            let id = self.members[index].id.clone();
            return self.remove(&id, reason);
        }
        if self.members[index].grace.is_some() {
            return;
        }
        self.members[index].grace = Some(Grace {
            until: self.now + grace,
            reason,
        });
        tracing::info!(room = %self.id, participant = %self.members[index].id, ?reason, "grace period started");
    }

    /// Ends the grace period once signaling is attached and the connection is not failed.
    pub(super) fn end_grace_if_healthy(&mut self, index: usize) {
        let member = &mut self.members[index];
        let healthy = member.presence.attached().is_some()
            && !matches!(member.transport, Transport::Failed { .. });
        if healthy && member.grace.take().is_some() {
            tracing::info!(room = %self.id, participant = %member.id, "resumed");
        }
    }

    pub(super) fn on_client(&mut self, index: usize, message: ClientMessage) {
        match message {
            ClientMessage::Offer { sdp } => self.on_offer(index, sdp),
            ClientMessage::Answer { sdp } => self.on_answer(index, sdp),
            ClientMessage::Candidate { candidate } => self.on_candidate(index, candidate),
            ClientMessage::Mute { kind, muted } => self.on_mute(index, kind, muted),
            ClientMessage::VideoSize {
                track_id,
                width,
                height,
            } => self.on_video_size(index, &track_id, (width, height)),
            ClientMessage::ReceiveVideo { enabled } => self.receive_video(index, enabled),
            ClientMessage::ScreenShare { track } => self.members[index].screen = track,
            ClientMessage::Leave => {
                let id = self.members[index].id.clone();
                self.remove(&id, LeaveReason::Left);
            }
        }
    }

    /// Adds the relay's host candidates (one per socket, with the announced address) to member
    /// `index`'s connection: every description it sends from now on carries them.
    fn add_host_candidates(&mut self, index: usize) {
        if self.members[index].candidates_added {
            return;
        }
        for addr in self.config.host_candidates.clone() {
            let added = crate::engine::host_candidate(addr)
                .and_then(|init| self.members[index].pc.add_local_candidate(init));
            if let Err(err) = added {
                tracing::warn!(%err, %addr, "host candidate not added");
            }
        }
        self.members[index].candidates_added = true;
    }

    fn on_offer(&mut self, index: usize, sdp_text: String) {
        let usable = sdp::usable_media(&sdp_text);
        let still_sent = sdp::sending_track_ids(&sdp_text);
        // An offer without any msid names no tracks: then nothing can be judged stopped.
        let names_tracks = sdp_text.contains("a=msid:");
        let offer = match RTCSessionDescription::offer(sdp_text) {
            Ok(offer) => offer,
            Err(err) => {
                return self.error_to(index, ErrorCode::BadSdp, format!("unparsable offer: {err}"));
            }
        };
        if !usable.any() {
            return self.error_to(
                index,
                ErrorCode::NoUsableCodec,
                "the offer has no Opus audio and no VP8 or H.264 video",
            );
        }
        if let Err(err) = self.members[index].negotiation.check_offer() {
            return self.error_to(index, err.code(), err.to_string());
        }
        let audio_level_id = sdp::audio_extmap_id(&offer.sdp, AUDIO_LEVEL_URI);
        let remote_ufrag = sdp::ice_ufrags(&offer.sdp).first().map(|u| u.to_string());
        let now = self.now;
        if let Err(err) = self.members[index].pc.set_remote_description(now, offer) {
            return self.error_to(
                index,
                ErrorCode::BadSdp,
                format!("offer not applicable: {err}"),
            );
        }
        let member = &mut self.members[index];
        member.audio_level_id = audio_level_id;
        if member.remote_ufrag.is_some() && member.remote_ufrag != remote_ufrag {
            member.ice_restarted = true;
        }
        member.remote_ufrag = remote_ufrag;
        self.add_host_candidates(index);
        let pc = &mut self.members[index].pc;
        let answered = pc
            .create_answer(None)
            .and_then(|answer| pc.set_local_description(now, answer));
        if let Err(err) = answered {
            tracing::warn!(%err, "answer failed");
            return self.error_to(index, ErrorCode::Internal, "could not answer");
        }
        let Some(sdp) = self.local_sdp(index) else {
            return self.error_to(index, ErrorCode::Internal, "could not answer");
        };
        self.send_to(index, ServerMessage::Answer { sdp });
        let (early, first) = self.members[index].negotiation.offer_answered();
        for candidate in early {
            self.on_candidate(index, candidate);
        }
        if first {
            // Subscribe the newcomer to everything already published.
            for p in (0..self.members.len()).filter(|p| *p != index) {
                for k in 0..self.members[p].published.len() {
                    self.subscribe(index, p, k);
                }
            }
        }
        // Tracks the participant no longer sends are unpublished.
        let stopped: Vec<String> = self.members[index]
            .published
            .iter()
            .filter(|p| names_tracks && !still_sent.contains(&p.source))
            .map(|p| p.track_id.clone())
            .collect();
        for track_id in stopped {
            self.unpublish(index, &track_id);
        }
        // Legs agreed before the transport was up start now; legs added since the relay's
        // last offer wait for the next one (`maybe_offer` below).
        self.activate_legs(index);
        self.maybe_offer(index);
    }

    fn on_answer(&mut self, index: usize, sdp_text: String) {
        if let Err(err) = self.members[index].negotiation.check_answer() {
            return self.error_to(index, err.code(), err.to_string());
        }
        let answer = match RTCSessionDescription::answer(sdp_text) {
            Ok(answer) => answer,
            Err(err) => {
                return self.error_to(
                    index,
                    ErrorCode::BadSdp,
                    format!("unparsable answer: {err}"),
                );
            }
        };
        let now = self.now;
        if let Err(err) = self.members[index].pc.set_remote_description(now, answer) {
            // The offer stays outstanding: a corrected answer may follow.
            return self.error_to(
                index,
                ErrorCode::BadSdp,
                format!("answer not applicable: {err}"),
            );
        }
        self.members[index].negotiation.answer_applied();
        self.advance_pending_legs(index, LegStage::Offered, LegStage::Agreed);
        self.activate_legs(index);
        self.maybe_offer(index);
    }

    fn on_candidate(&mut self, index: usize, candidate: IceCandidate) {
        let candidate = match self.members[index].negotiation.candidate(candidate) {
            Ok(CandidateUse::Kept) => return,
            Ok(CandidateUse::Apply(candidate)) => candidate,
            Err(err) => return self.error_to(index, err.code(), err.to_string()),
        };
        if candidate.candidate.is_empty() {
            return; // end of candidates
        }
        let init = RTCIceCandidateInit {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_mline_index,
            ..Default::default()
        };
        if let Err(err) = self.members[index].pc.add_remote_candidate(init) {
            self.error_to(
                index,
                ErrorCode::BadCandidate,
                format!("candidate refused: {err}"),
            );
        }
    }

    fn on_mute(&mut self, index: usize, kind: MediaKind, muted: bool) {
        let member = &mut self.members[index];
        member.muted.retain(|k| *k != kind);
        if muted {
            member.muted.push(kind);
        }
        self.mute_tracks(index, kind, muted);
        let id = self.members[index].id.clone();
        self.broadcast_except(
            index,
            ServerMessage::TrackMuted {
                participant_id: id,
                kind,
                muted,
            },
        );
    }

    /// Member `index` shows `track_id` at `size`: cap that leg's simulcast layer.
    fn on_video_size(&mut self, index: usize, track_id: &str, size: (u32, u32)) {
        let subscriber = self.members[index].link;
        let found = self.track_index(track_id).filter(|(p, k)| {
            self.members[*p].published[*k]
                .forwarder
                .subscribed(subscriber)
        });
        let Some((p, k)) = found else {
            return self.error_to(
                index,
                ErrorCode::UnknownTrack,
                format!("video_size: no track {track_id:?} is sent to you"),
            );
        };
        let forwarder = &mut self.members[p].published[k].forwarder;
        if let Some(pending) = forwarder
            .pending
            .iter_mut()
            .find(|l| l.subscriber == subscriber)
        {
            pending.display = Some(size); // the leg starts with it
            return;
        }
        self.display_size(p, k, subscriber, size);
    }

    /// Subscribes member `index` to member `p`'s track `k`: a local track on its connection,
    /// negotiated by the next offer, and a pending leg in the track's forwarder.
    pub(super) fn subscribe(&mut self, index: usize, p: usize, k: usize) {
        let ssrc = next_ssrc();
        let (track_id, codec, carries) = {
            let published = &self.members[p].published[k];
            (
                published.track_id.clone(),
                published.codec,
                published.carries,
            )
        };
        // A screen comes in a stream of its own, so a browser shows it apart from the camera.
        let stream = match carries {
            TrackSource::Screen => format!("{}~screen", self.members[p].id),
            _ => self.members[p].id.to_string(),
        };
        let local = MediaStreamTrack::new(
            stream,
            track_id.clone(),
            track_id.clone(),
            crate::engine::rtp_kind(codec.kind()),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec.rtp_codec(),
                ..Default::default()
            }],
        );
        // A transceiver of its own (not the subscriber's own sendrecv one): its codec may differ
        // from what the subscriber itself sends.
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![],
            send_encodings: vec![],
        };
        let added = self.members[index]
            .pc
            .add_transceiver_from_track(local, Some(init));
        match added.map(RTCRtpSenderId::from) {
            Ok(sender) => {
                let subscriber = self.members[index].link;
                self.members[p].published[k]
                    .forwarder
                    .pending
                    .push(PendingLeg {
                        subscriber,
                        sender,
                        ssrc,
                        display: None,
                        stage: LegStage::Added,
                    });
                self.members[index].negotiation.change();
            }
            Err(err) => tracing::warn!(%err, "adding a track failed"),
        }
    }

    /// Sends a relay offer to member `index` if it needs one and none is outstanding.
    pub(super) fn maybe_offer(&mut self, index: usize) {
        if !self.members[index].negotiation.take_offer_turn() {
            return;
        }
        let now = self.now;
        let pc = &mut self.members[index].pc;
        let offered = pc
            .create_offer(None)
            .and_then(|offer| pc.set_local_description(now, offer));
        if let Err(err) = offered {
            self.members[index].negotiation.offer_failed();
            return tracing::warn!(%err, "offer failed");
        }
        let Some(sdp) = self.local_sdp(index) else {
            self.members[index].negotiation.offer_failed();
            return;
        };
        self.advance_pending_legs(index, LegStage::Added, LegStage::Offered);
        self.send_to(index, ServerMessage::Offer { sdp });
    }

    /// Moves member `index`'s pending subscriptions at stage `from` to `to`.
    fn advance_pending_legs(&mut self, index: usize, from: LegStage, to: LegStage) {
        let subscriber = self.members[index].link;
        for member in &mut self.members {
            for published in &mut member.published {
                for leg in &mut published.forwarder.pending {
                    if leg.subscriber == subscriber && leg.stage == from {
                        leg.stage = to;
                    }
                }
            }
        }
    }

    /// The member's local description, after making sure the socket routes its ICE username
    /// fragment (an ICE restart may bring a new one).
    fn local_sdp(&mut self, index: usize) -> Option<String> {
        let sdp = self.members[index].pc.local_description()?.sdp;
        let member = &mut self.members[index];
        for ufrag in sdp::ice_ufrags(&sdp) {
            if !member.ufrags.iter().any(|u| u == ufrag) {
                self.outputs.push_back(Output::Route {
                    ufrag: ufrag.to_owned(),
                    link: member.link,
                });
                member.ufrags.push(ufrag.to_owned());
            }
        }
        for line in sdp.lines() {
            if let Some(pwd) = line.trim_end().strip_prefix("a=ice-pwd:")
                && !member.ice_pwds.iter().any(|p| p == pwd)
            {
                member.ice_pwds.push(pwd.to_owned());
            }
        }
        Some(sdp)
    }

    /// Stops forwarding one of member `index`'s tracks and takes it from the others.
    pub(super) fn unpublish(&mut self, index: usize, track_id: &str) {
        let publisher = self.members[index].id.clone();
        let Some(k) = self.members[index]
            .published
            .iter()
            .position(|p| p.track_id == track_id)
        else {
            return;
        };
        let published = self.members[index].published.remove(k);
        self.end_subscriptions(&published.forwarder);
        tracing::info!(room = %self.id, participant = %publisher, %track_id, "track unpublished");
        for other in 0..self.members.len() {
            if other == index {
                continue;
            }
            self.send_to(
                other,
                ServerMessage::TrackUnpublished {
                    participant_id: publisher.clone(),
                    track_id: track_id.to_owned(),
                },
            );
            self.maybe_offer(other);
        }
    }

    /// Takes a track that is gone from every subscriber's connection (renegotiated by its next
    /// offer).
    fn end_subscriptions(&mut self, forwarder: &Forwarder) {
        for (subscriber, sender) in forwarder.subscriptions() {
            let Some(index) = self.link_index(subscriber) else {
                continue;
            };
            let member = &mut self.members[index];
            if let Err(err) = member.pc.remove_track(sender) {
                tracing::debug!(%err, "remove_track failed");
            }
            member.negotiation.change();
        }
    }

    /// Removes a member: closes its connection, stops its forwarders, and takes its tracks
    /// from the others (each renegotiated).
    pub(super) fn remove(&mut self, participant: &ParticipantId, reason: LeaveReason) {
        let Some(index) = self.member_index(participant) else {
            return;
        };
        if matches!(
            reason,
            LeaveReason::RoomClosed
                | LeaveReason::TooSlow
                | LeaveReason::Replaced
                | LeaveReason::Dismissed
        ) {
            self.send_to(index, ServerMessage::Removed { reason });
        }
        // Tell the peer (DTLS close), then forget its routes.
        if let Err(err) = self.members[index].pc.close() {
            tracing::debug!(%err, "close failed");
        }
        self.flush(index);
        let member = self.members.remove(index);
        self.outputs.push_back(Output::Release {
            attachment: member.presence.attachment(),
        });
        self.outputs
            .push_back(Output::Unroute { link: member.link });
        tracing::info!(room = %self.id, participant = %participant, ?reason, "left");
        for published in &member.published {
            self.end_subscriptions(&published.forwarder);
        }
        for other in 0..self.members.len() {
            for published in &mut self.members[other].published {
                published.forwarder.unsubscribe(member.link);
            }
            self.send_to(
                other,
                ServerMessage::ParticipantLeft {
                    participant_id: participant.clone(),
                    reason,
                },
            );
            self.maybe_offer(other);
        }
    }

    pub(super) fn close(&mut self) {
        while let Some(member) = self.members.first() {
            let id = member.id.clone();
            self.remove(&id, LeaveReason::RoomClosed);
        }
    }
}
