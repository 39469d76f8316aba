//! One task per room: owns its participants, their peer connections and the negotiation state,
//! and drives every renegotiation. Nothing else touches a room's state; the relay handle, the
//! participants' pumps and the peer-connection handlers talk to it through channels.
//!
//! Negotiation: the participant's first offer opens its connection; after that the relay is the
//! offerer (server-driven). A participant offer is still accepted when the relay has no offer of
//! its own outstanding, and refused with `negotiation_in_progress` otherwise; the relay never
//! waits on the participant for anything but the answer to its own offer, so there is no glare.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, StatsSelector,
};
use webrtc::rtp_transceiver::RtpSender;

use crate::engine::{
    AUDIO_LEVEL_URI, build_peer_connection, codec_for, is_keyframe_request, media_kind,
};
use crate::error::RelayError;
use crate::forwarder::{AudioLevelTap, ForwardCommand, run_forwarder};
use crate::messages::{
    ClientMessage, ErrorCode, IceCandidate, LeaveReason, MediaKind, ParticipantId, RoomId,
    ServerMessage,
};
use crate::metrics::RelayMetrics;
use crate::quality::{QualityTracker, totals_from};
use crate::recording::{self, RecordingResult};
use crate::relay::{Participant, RelayInner};
use crate::rewrite::DownstreamRewriter;
use crate::sdp;

/// What the relay handle and participant pumps send to a room.
pub(crate) enum RoomCommand {
    Join {
        participant: ParticipantId,
        reply: oneshot::Sender<Result<Participant, RelayError>>,
    },
    /// The same participant takes its place back with a fresh signaling handle.
    Resume {
        participant: ParticipantId,
        reply: oneshot::Sender<Result<Participant, RelayError>>,
    },
    Client {
        participant: ParticipantId,
        attachment: u64,
        message: ClientMessage,
    },
    Vanished {
        participant: ParticipantId,
        attachment: u64,
    },
    /// Start recording every track, now and to come, into `dir`.
    StartRecording {
        dir: std::path::PathBuf,
        reply: oneshot::Sender<Result<(), RelayError>>,
    },
    /// Stop recording; the reply carries every file, closed and hashed.
    StopRecording {
        reply: oneshot::Sender<Result<Vec<RecordingResult>, RelayError>>,
    },
    /// A member's grace period ran out (ignored unless `token` is still the running one).
    GraceExpired {
        participant: ParticipantId,
        token: u64,
    },
    Close,
}

/// What peer-connection handlers report; unbounded so a handler never blocks its driver while
/// the room awaits that same driver.
enum PcEvent {
    Candidate(IceCandidate),
    State(RTCPeerConnectionState),
    Track(Arc<dyn TrackRemote>),
    /// From the member's audio forwarder.
    Speaking(bool),
}

struct Internal {
    participant: ParticipantId,
    session: u64,
    event: PcEvent,
}

struct PcHandler {
    participant: ParticipantId,
    session: u64,
    events: mpsc::UnboundedSender<Internal>,
}

impl PcHandler {
    fn report(&self, event: PcEvent) {
        // The room is gone: nothing left to tell.
        let _ = self.events.send(Internal {
            participant: self.participant.clone(),
            session: self.session,
            event,
        });
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PcHandler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => self.report(PcEvent::Candidate(IceCandidate {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid,
                sdp_mline_index: init.sdp_mline_index,
            })),
            Err(err) => tracing::warn!(%err, "local candidate not serialisable"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.report(PcEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        self.report(PcEvent::Track(track));
    }
}

/// A track a member publishes, and the command line to its forwarder.
struct Published {
    track_id: String,
    /// The publisher's own id for the track (its `msid`), to notice when it stops sending it.
    source_track_id: String,
    kind: MediaKind,
    forwarder: mpsc::UnboundedSender<ForwardCommand>,
}

/// A track a member receives from another member.
struct DownLeg {
    publisher: ParticipantId,
    track_id: String,
    kind: MediaKind,
    ssrc: u32,
    local: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    /// Subscribed at the forwarder (the leg's negotiation completed).
    active: bool,
}

struct Member {
    id: ParticipantId,
    /// Tags this member's peer-connection events (a rejoin under the same id gets a new one).
    session: u64,
    pc: Arc<dyn PeerConnection>,
    out: mpsc::Sender<ServerMessage>,
    pump: JoinHandle<()>,
    /// Tags the current signaling handle's messages (a resume gets a new one).
    attachment: u64,
    /// The signaling handle is gone; messages to the member are dropped until it resumes.
    detached: bool,
    /// The peer connection failed; an ICE restart may still bring it back.
    pc_failed: bool,
    /// The running grace period: its token and the reason used if it runs out.
    grace: Option<(u64, LeaveReason)>,
    /// The first offer/answer exchange is done.
    connected_signaling: bool,
    /// DTLS/SRTP is up: packets written now reach the peer (earlier ones are dropped, and a
    /// keyframe dropped that way would leave a new subscriber without a picture).
    media_connected: bool,
    offer_outstanding: bool,
    needs_offer: bool,
    published: Vec<Published>,
    downs: Vec<DownLeg>,
    muted: Vec<MediaKind>,
    /// Candidates that raced ahead of the first offer, applied once it is.
    early_candidates: Vec<IceCandidate>,
    /// The audio-level header extension id of its last offer.
    audio_level_id: Option<u8>,
    quality: QualityTracker,
}

/// Candidates kept while waiting for the first offer; a peer sending more is misbehaving.
const MAX_EARLY_CANDIDATES: usize = 64;

struct Room {
    id: RoomId,
    relay: Arc<RelayInner>,
    commands: mpsc::WeakSender<RoomCommand>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    members: Vec<Member>,
    next_session: u64,
    /// Members to remove once the current step is done (slow consumers, dropped receivers).
    doomed: Vec<(ParticipantId, LeaveReason)>,
    /// Room-wide track numbering, so a rejoin never reuses a track id (or a recording's name).
    next_track: u64,
    recording: Option<Recording>,
}

/// A recording in progress: where, and the files' results as their writers finish.
struct Recording {
    dir: std::path::PathBuf,
    results: Vec<oneshot::Receiver<RecordingResult>>,
}

static NEXT_SSRC: AtomicU32 = AtomicU32::new(0x1000_0001);

fn next_ssrc() -> u32 {
    // Unique per process, which is more than the one-per-connection uniqueness SSRCs need.
    NEXT_SSRC.fetch_add(0x9E37_79B9, Ordering::Relaxed) | 1
}

pub(crate) async fn run_room(
    relay: Arc<RelayInner>,
    id: RoomId,
    mut inbox: mpsc::Receiver<RoomCommand>,
    commands: mpsc::WeakSender<RoomCommand>,
) {
    let (internal_tx, mut internal_rx) = mpsc::unbounded_channel();
    let mut room = Room {
        id,
        relay,
        commands,
        internal_tx,
        members: Vec::new(),
        next_session: 1,
        doomed: Vec::new(),
        next_track: 0,
        recording: None,
    };
    let quality_interval = room.relay.config.quality_interval;
    let mut quality_tick = (!quality_interval.is_zero()).then(|| {
        let mut tick = tokio::time::interval(quality_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });
    loop {
        tokio::select! {
            _ = async {
                match quality_tick.as_mut() {
                    Some(tick) => tick.tick().await,
                    None => std::future::pending().await,
                }
            } => room.report_quality().await,
            command = inbox.recv() => {
                match command {
                    None | Some(RoomCommand::Close) => {
                        room.close().await;
                        break;
                    }
                    Some(command) => room.handle_command(command).await,
                }
            }
            Some(internal) = internal_rx.recv() => room.handle_internal(internal).await,
        }
        room.reap().await;
        if room.members.is_empty() {
            break;
        }
    }
    tracing::debug!(room = %room.id, "room closed");
}

impl Room {
    /// The index of `id` if `attachment` is its current signaling handle.
    fn attached(&self, id: &ParticipantId, attachment: u64) -> Option<usize> {
        self.members
            .iter()
            .position(|m| &m.id == id && m.attachment == attachment && !m.detached)
    }

    /// Starts the member's grace period unless one runs; with no grace configured, removes it now.
    async fn start_grace(&mut self, index: usize, reason: LeaveReason) {
        let grace = self.relay.config.resume_grace;
        if grace.is_zero() {
            let id = self.members[index].id.clone();
            return self.remove(&id, reason).await;
        }
        if self.members[index].grace.is_some() {
            return;
        }
        let token = self.next_session;
        self.next_session += 1;
        self.members[index].grace = Some((token, reason));
        let participant = self.members[index].id.clone();
        let commands = self.commands.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(commands) = commands.upgrade() {
                let _ = commands
                    .send(RoomCommand::GraceExpired { participant, token })
                    .await;
            }
        });
        tracing::info!(room = %self.id, participant = %self.members[index].id, ?reason, "grace period started");
    }

    /// Ends the grace period once signaling is attached and the connection is not failed.
    fn end_grace_if_healthy(&mut self, index: usize) {
        let member = &mut self.members[index];
        if !member.detached && !member.pc_failed && member.grace.take().is_some() {
            tracing::info!(room = %self.id, participant = %member.id, "resumed");
        }
    }

    /// A signaling handle for member `participant`: its channels and the pump that tags its
    /// messages with a fresh attachment id.
    fn attach(
        &mut self,
        participant: &ParticipantId,
    ) -> Result<
        (
            Participant,
            mpsc::Sender<ServerMessage>,
            JoinHandle<()>,
            u64,
        ),
        RelayError,
    > {
        let commands = self.commands.upgrade().ok_or(RelayError::Gone)?;
        let attachment = self.next_session;
        self.next_session += 1;
        let (out, events) = mpsc::channel(self.relay.config.outbound_queue);
        let (sender, mut client_rx) = mpsc::channel::<ClientMessage>(64);
        let pump_id = participant.clone();
        let pump = tokio::spawn(async move {
            while let Some(message) = client_rx.recv().await {
                let command = RoomCommand::Client {
                    participant: pump_id.clone(),
                    attachment,
                    message,
                };
                if commands.send(command).await.is_err() {
                    return;
                }
            }
            let _ = commands
                .send(RoomCommand::Vanished {
                    participant: pump_id,
                    attachment,
                })
                .await;
        });
        let handle = Participant {
            id: participant.clone(),
            room: self.id.clone(),
            sender,
            events,
        };
        Ok((handle, out, pump, attachment))
    }

    /// What a (re)attached member is told first: who is here and what they publish.
    fn welcome(&mut self, index: usize) {
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
                    kind: p.kind,
                })
            })
            .collect();
        for message in existing {
            self.send_to(index, message);
        }
    }

    async fn resume(&mut self, participant: ParticipantId) -> Result<Participant, RelayError> {
        let index = self.member_index(&participant).ok_or(RelayError::Gone)?;
        let (handle, out, pump, attachment) = self.attach(&participant)?;
        let member = &mut self.members[index];
        member.pump.abort();
        member.out = out;
        member.pump = pump;
        member.attachment = attachment;
        member.detached = false;
        self.welcome(index);
        // An offer sent while it was away (or lost with the old socket) is sent again.
        if self.members[index].offer_outstanding {
            let pc = self.members[index].pc.clone();
            if let Some(sdp) = self.local_sdp(&pc).await {
                self.send_to(index, ServerMessage::Offer { sdp });
            }
        }
        self.end_grace_if_healthy(index);
        Ok(handle)
    }

    fn member_index(&self, id: &ParticipantId) -> Option<usize> {
        self.members.iter().position(|m| &m.id == id)
    }

    /// Queues a message to a member; a full or closed queue dooms the member.
    fn send_to(&mut self, index: usize, message: ServerMessage) {
        let member = &self.members[index];
        if member.detached {
            return; // resent as a snapshot on resume where it matters (offer, tracks)
        }
        match member.out.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.doomed.push((member.id.clone(), LeaveReason::TooSlow))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.doomed.push((member.id.clone(), LeaveReason::Vanished))
            }
        }
    }

    fn broadcast_except(&mut self, except: &ParticipantId, message: ServerMessage) {
        for index in 0..self.members.len() {
            if &self.members[index].id != except {
                self.send_to(index, message.clone());
            }
        }
    }

    fn error_to(&mut self, index: usize, code: ErrorCode, message: impl Into<String>) {
        self.send_to(
            index,
            ServerMessage::Error {
                code,
                message: message.into(),
            },
        );
    }

    async fn handle_command(&mut self, command: RoomCommand) {
        match command {
            RoomCommand::Join { participant, reply } => {
                let result = self.join(participant).await;
                let _ = reply.send(result);
            }
            RoomCommand::Resume { participant, reply } => {
                let result = self.resume(participant).await;
                let _ = reply.send(result);
            }
            RoomCommand::Client {
                participant,
                attachment,
                message,
            } => {
                if self.attached(&participant, attachment).is_some() {
                    self.handle_client(participant, message).await;
                }
            }
            RoomCommand::Vanished {
                participant,
                attachment,
            } => {
                if let Some(index) = self.attached(&participant, attachment) {
                    self.members[index].detached = true;
                    self.start_grace(index, LeaveReason::Vanished).await;
                }
            }
            RoomCommand::StartRecording { dir, reply } => {
                let _ = reply.send(self.start_recording(dir));
            }
            RoomCommand::StopRecording { reply } => match self.recording.take() {
                None => {
                    let _ = reply.send(Err(RelayError::Recording("not recording".into())));
                }
                Some(recording) => {
                    for member in &self.members {
                        for published in &member.published {
                            let _ = published.forwarder.send(ForwardCommand::Record(None));
                        }
                    }
                    // Writers close and hash on their own threads; do not hold the room for it.
                    tokio::spawn(async move {
                        let mut files = Vec::new();
                        for result in recording.results {
                            if let Ok(result) = result.await {
                                files.push(result);
                            }
                        }
                        let _ = reply.send(Ok(files));
                    });
                }
            },
            RoomCommand::GraceExpired { participant, token } => {
                let expired = self
                    .member_index(&participant)
                    .and_then(|i| self.members[i].grace)
                    .filter(|(running, _)| *running == token);
                if let Some((_, reason)) = expired {
                    self.remove(&participant, reason).await;
                }
            }
            RoomCommand::Close => {}
        }
    }

    async fn join(&mut self, participant: ParticipantId) -> Result<Participant, RelayError> {
        if self.member_index(&participant).is_some() {
            return Err(RelayError::AlreadyInRoom {
                room: self.id.clone(),
                participant,
            });
        }
        let max = self.relay.config.max_participants;
        if self.members.len() >= max {
            return Err(RelayError::RoomFull {
                room: self.id.clone(),
                max,
            });
        }
        let session = self.next_session;
        self.next_session += 1;
        let handler = Arc::new(PcHandler {
            participant: participant.clone(),
            session,
            events: self.internal_tx.clone(),
        });
        let config = &self.relay.config;
        let pc =
            build_peer_connection(config.udp_addrs.clone(), &config.ice_servers, handler).await?;
        let (handle, out, pump, attachment) = match self.attach(&participant) {
            Ok(attached) => attached,
            Err(err) => {
                let _ = pc.close().await;
                return Err(err);
            }
        };
        self.members.push(Member {
            id: participant.clone(),
            session,
            pc,
            out,
            pump,
            attachment,
            detached: false,
            pc_failed: false,
            grace: None,
            connected_signaling: false,
            media_connected: false,
            offer_outstanding: false,
            needs_offer: false,
            published: Vec::new(),
            downs: Vec::new(),
            muted: Vec::new(),
            early_candidates: Vec::new(),
            audio_level_id: None,
            quality: QualityTracker::new(),
        });
        RelayMetrics::inc(&self.relay.metrics.participants);
        let index = self.members.len() - 1;
        // Who is here and what is published; the tracks come with the relay's offer.
        self.welcome(index);
        self.broadcast_except(
            &participant,
            ServerMessage::ParticipantJoined {
                participant_id: participant.clone(),
            },
        );
        tracing::info!(room = %self.id, participant = %participant, "joined");
        Ok(handle)
    }

    async fn handle_client(&mut self, participant: ParticipantId, message: ClientMessage) {
        let Some(index) = self.member_index(&participant) else {
            return;
        };
        match message {
            ClientMessage::Offer { sdp } => self.on_offer(index, sdp).await,
            ClientMessage::Answer { sdp } => self.on_answer(index, sdp).await,
            ClientMessage::Candidate { candidate } => self.on_candidate(index, candidate).await,
            ClientMessage::Mute { kind, muted } => self.on_mute(index, kind, muted),
            ClientMessage::Leave => self.remove(&participant, LeaveReason::Left).await,
        }
    }

    async fn on_offer(&mut self, index: usize, sdp_text: String) {
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
        if !usable.opus && !usable.vp8 {
            return self.error_to(
                index,
                ErrorCode::NoUsableCodec,
                "the offer has neither Opus audio nor VP8 video",
            );
        }
        if self.members[index].offer_outstanding {
            return self.error_to(
                index,
                ErrorCode::NegotiationInProgress,
                "answer the relay's offer first, then offer again",
            );
        }
        let audio_level_id = sdp::audio_extmap_id(&offer.sdp, AUDIO_LEVEL_URI);
        let pc = self.members[index].pc.clone();
        if let Err(err) = pc.set_remote_description(offer).await {
            return self.error_to(
                index,
                ErrorCode::BadSdp,
                format!("offer not applicable: {err}"),
            );
        }
        self.members[index].audio_level_id = audio_level_id;
        let answer = match pc.create_answer(None).await {
            Ok(answer) => answer,
            Err(err) => {
                tracing::warn!(%err, "create_answer failed");
                return self.error_to(index, ErrorCode::Internal, "could not answer");
            }
        };
        if let Err(err) = pc.set_local_description(answer).await {
            tracing::warn!(%err, "set_local_description(answer) failed");
            return self.error_to(index, ErrorCode::Internal, "could not answer");
        }
        let Some(sdp) = self.local_sdp(&pc).await else {
            return self.error_to(index, ErrorCode::Internal, "could not answer");
        };
        self.send_to(index, ServerMessage::Answer { sdp });
        let first = !self.members[index].connected_signaling;
        self.members[index].connected_signaling = true;
        for candidate in std::mem::take(&mut self.members[index].early_candidates) {
            self.on_candidate(index, candidate).await;
        }
        if first {
            // Subscribe the newcomer to everything already published.
            let sources: Vec<(ParticipantId, String, MediaKind)> = self
                .members
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != index)
                .flat_map(|(_, m)| {
                    m.published
                        .iter()
                        .map(|p| (m.id.clone(), p.track_id.clone(), p.kind))
                })
                .collect();
            for (publisher, track_id, kind) in sources {
                self.add_down_leg(index, publisher, track_id, kind).await;
            }
        }
        // Tracks the participant no longer sends are unpublished (webrtc-rs does not end them).
        let stopped: Vec<String> = self.members[index]
            .published
            .iter()
            .filter(|p| names_tracks && !still_sent.contains(&p.source_track_id))
            .map(|p| p.track_id.clone())
            .collect();
        for track_id in stopped {
            self.unpublish(index, &track_id).await;
        }
        // Legs added before this exchange were negotiated by it.
        self.activate_legs(index).await;
        self.maybe_offer(index).await;
    }

    async fn on_answer(&mut self, index: usize, sdp_text: String) {
        if !self.members[index].offer_outstanding {
            return self.error_to(
                index,
                ErrorCode::UnexpectedAnswer,
                "the relay has no offer outstanding",
            );
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
        let pc = self.members[index].pc.clone();
        if let Err(err) = pc.set_remote_description(answer).await {
            // The offer stays outstanding: a corrected answer may follow.
            return self.error_to(
                index,
                ErrorCode::BadSdp,
                format!("answer not applicable: {err}"),
            );
        }
        self.members[index].offer_outstanding = false;
        self.activate_legs(index).await;
        self.maybe_offer(index).await;
    }

    async fn on_candidate(&mut self, index: usize, candidate: IceCandidate) {
        if !self.members[index].connected_signaling {
            let early = &mut self.members[index].early_candidates;
            if early.len() < MAX_EARLY_CANDIDATES {
                early.push(candidate);
                return;
            }
            return self.error_to(
                index,
                ErrorCode::CandidateBeforeOffer,
                "too many candidates before the offer",
            );
        }
        if candidate.candidate.is_empty() {
            return; // end of candidates
        }
        let init = RTCIceCandidateInit {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_mline_index,
            ..Default::default()
        };
        let pc = self.members[index].pc.clone();
        if let Err(err) = pc.add_ice_candidate(init).await {
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
        for published in member.published.iter().filter(|p| p.kind == kind) {
            let _ = published.forwarder.send(ForwardCommand::SetMuted(muted));
        }
        let id = member.id.clone();
        self.broadcast_except(
            &id,
            ServerMessage::TrackMuted {
                participant_id: id.clone(),
                kind,
                muted,
            },
        );
    }

    async fn handle_internal(&mut self, internal: Internal) {
        let Internal {
            participant,
            session,
            event,
        } = internal;
        let Some(index) = self
            .members
            .iter()
            .position(|m| m.id == participant && m.session == session)
        else {
            return; // a removed member's late events
        };
        match event {
            PcEvent::Candidate(mut candidate) => {
                if let Some(ip) = self.relay.config.public_ip {
                    candidate.candidate = sdp::rewrite_candidate_address(&candidate.candidate, ip);
                }
                self.send_to(index, ServerMessage::Candidate { candidate });
            }
            PcEvent::State(state) => match state {
                RTCPeerConnectionState::Connected => {
                    // Connected again after an ICE restart (a resume): its video's decoders
                    // downstream may have lost sync, and a browser sends no keyframe unasked.
                    if self.members[index].media_connected || self.members[index].pc_failed {
                        for published in &self.members[index].published {
                            if published.kind == MediaKind::Video {
                                let _ = published.forwarder.send(ForwardCommand::RequestKeyframe);
                            }
                        }
                    }
                    self.members[index].media_connected = true;
                    self.members[index].pc_failed = false;
                    self.end_grace_if_healthy(index);
                    self.activate_legs(index).await;
                }
                // An ICE restart may still revive a failed connection within the grace period.
                RTCPeerConnectionState::Failed => {
                    self.members[index].pc_failed = true;
                    self.start_grace(index, LeaveReason::ConnectionLost).await;
                }
                RTCPeerConnectionState::Closed => {
                    self.remove(&participant, LeaveReason::ConnectionLost).await;
                }
                _ => {}
            },
            PcEvent::Track(track) => self.on_published(index, track).await,
            PcEvent::Speaking(speaking) => self.broadcast_except(
                &participant,
                ServerMessage::Speaking {
                    participant_id: participant.clone(),
                    speaking,
                },
            ),
        }
    }

    async fn on_published(&mut self, index: usize, track: Arc<dyn TrackRemote>) {
        let Some(kind) = media_kind(track.kind().await) else {
            return;
        };
        let source_track_id = track.track_id().await;
        let publisher = self.members[index].id.clone();
        let ordinal = self.next_track;
        self.next_track += 1;
        let track_id = format!("{publisher}-{}-{ordinal}", kind_name(kind));
        let (forwarder, commands) = mpsc::unbounded_channel();
        if self.members[index].muted.contains(&kind) {
            let _ = forwarder.send(ForwardCommand::SetMuted(true));
        }
        let audio_level = match (kind, self.members[index].audio_level_id) {
            (MediaKind::Audio, Some(extension_id)) => {
                let events = self.internal_tx.clone();
                let participant = publisher.clone();
                let session = self.members[index].session;
                Some(AudioLevelTap {
                    extension_id,
                    report: Box::new(move |speaking| {
                        // The room is gone: nobody left to tell.
                        let _ = events.send(Internal {
                            participant: participant.clone(),
                            session,
                            event: PcEvent::Speaking(speaking),
                        });
                    }),
                })
            }
            _ => None,
        };
        tokio::spawn(run_forwarder(
            track,
            kind,
            commands,
            self.relay.config.keyframe_request_interval,
            self.relay.metrics.clone(),
            audio_level,
        ));
        if let Some(recording) = self.recording.as_mut() {
            let (sink, result) =
                recording::start(&recording.dir, publisher.clone(), track_id.clone(), kind);
            let _ = forwarder.send(ForwardCommand::Record(Some(sink)));
            recording.results.push(result);
        }
        self.members[index].published.push(Published {
            track_id: track_id.clone(),
            source_track_id,
            kind,
            forwarder,
        });
        tracing::info!(room = %self.id, participant = %publisher, %track_id, "track published");
        self.broadcast_except(
            &publisher,
            ServerMessage::TrackPublished {
                participant_id: publisher.clone(),
                track_id: track_id.clone(),
                kind,
            },
        );
        for other in 0..self.members.len() {
            if other != index && self.members[other].connected_signaling {
                self.add_down_leg(other, publisher.clone(), track_id.clone(), kind)
                    .await;
                self.maybe_offer(other).await;
            }
        }
    }

    /// Adds a local track for `publisher`'s track to member `index`; negotiated by the next offer.
    async fn add_down_leg(
        &mut self,
        index: usize,
        publisher: ParticipantId,
        track_id: String,
        kind: MediaKind,
    ) {
        let ssrc = next_ssrc();
        let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            publisher.to_string(),
            track_id.clone(),
            track_id.clone(),
            crate::engine::rtp_kind(kind),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec_for(kind),
                ..Default::default()
            }],
        )));
        let pc = self.members[index].pc.clone();
        match pc.add_track(local.clone() as Arc<dyn TrackLocal>).await {
            Ok(sender) => {
                let member = &mut self.members[index];
                member.downs.push(DownLeg {
                    publisher,
                    track_id,
                    kind,
                    ssrc,
                    local,
                    sender,
                    active: false,
                });
                member.needs_offer = true;
            }
            Err(err) => tracing::warn!(%err, "add_track failed"),
        }
    }

    /// Starts forwarding on every negotiated leg of member `index` not yet forwarding.
    async fn activate_legs(&mut self, index: usize) {
        if !self.members[index].media_connected {
            return;
        }
        let subscriber = self.members[index].id.clone();
        let mut activated = Vec::new();
        for (leg_index, leg) in self.members[index].downs.iter().enumerate() {
            if leg.active {
                continue;
            }
            let Ok(parameters) = leg.sender.get_parameters().await else {
                continue;
            };
            let mime = codec_for(leg.kind).mime_type;
            let Some(payload_type) = parameters
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&mime))
                .map(|c| c.payload_type)
            else {
                continue; // not negotiated (yet): the next exchange may settle it
            };
            activated.push((leg_index, payload_type));
        }
        for (leg_index, payload_type) in activated {
            let leg = &self.members[index].downs[leg_index];
            let Some(forwarder) = self.forwarder_of(&leg.publisher, &leg.track_id) else {
                continue;
            };
            let video = leg.kind == MediaKind::Video;
            let local = leg.local.clone();
            let _ = forwarder.send(ForwardCommand::Subscribe {
                subscriber: subscriber.clone(),
                local: local.clone(),
                rewriter: DownstreamRewriter::new(leg.ssrc, payload_type, video),
            });
            // Keyframe requests from this subscriber go to the publisher (rate-limited there).
            let metrics = self.relay.metrics.clone();
            tokio::spawn(async move {
                while let Some(TrackLocalEvent::OnRtcpPacket(packets)) = local.poll().await {
                    if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                        RelayMetrics::inc(&metrics.keyframe_requests_received);
                        if forwarder.send(ForwardCommand::RequestKeyframe).is_err() {
                            break;
                        }
                    }
                }
            });
            self.members[index].downs[leg_index].active = true;
        }
    }

    fn forwarder_of(
        &self,
        publisher: &ParticipantId,
        track_id: &str,
    ) -> Option<mpsc::UnboundedSender<ForwardCommand>> {
        self.members
            .iter()
            .find(|m| &m.id == publisher)?
            .published
            .iter()
            .find(|p| p.track_id == track_id)
            .map(|p| p.forwarder.clone())
    }

    /// Sends a relay offer to member `index` if it needs one and none is outstanding.
    async fn maybe_offer(&mut self, index: usize) {
        let member = &self.members[index];
        if !member.connected_signaling || member.offer_outstanding || !member.needs_offer {
            return;
        }
        let pc = member.pc.clone();
        let offer = match pc.create_offer(None).await {
            Ok(offer) => offer,
            Err(err) => return tracing::warn!(%err, "create_offer failed"),
        };
        if let Err(err) = pc.set_local_description(offer).await {
            return tracing::warn!(%err, "set_local_description(offer) failed");
        }
        let Some(sdp) = self.local_sdp(&pc).await else {
            return;
        };
        let member = &mut self.members[index];
        member.offer_outstanding = true;
        member.needs_offer = false;
        self.send_to(index, ServerMessage::Offer { sdp });
    }

    async fn local_sdp(&self, pc: &Arc<dyn PeerConnection>) -> Option<String> {
        let sdp = pc.local_description().await?.sdp;
        Some(match self.relay.config.public_ip {
            Some(ip) => rewrite(&sdp, ip),
            None => sdp,
        })
    }

    /// Stops forwarding one of member `index`'s tracks and takes it from the others.
    async fn unpublish(&mut self, index: usize, track_id: &str) {
        let publisher = self.members[index].id.clone();
        // Dropping the forwarder's command sender ends the forwarder.
        self.members[index]
            .published
            .retain(|p| p.track_id != track_id);
        tracing::info!(room = %self.id, participant = %publisher, %track_id, "track unpublished");
        for other in 0..self.members.len() {
            if other == index {
                continue;
            }
            let (gone, kept): (Vec<DownLeg>, Vec<DownLeg>) = self.members[other]
                .downs
                .drain(..)
                .partition(|leg| leg.publisher == publisher && leg.track_id == track_id);
            self.members[other].downs = kept;
            let pc = self.members[other].pc.clone();
            for leg in &gone {
                if let Err(err) = pc.remove_track(&leg.sender).await {
                    tracing::debug!(%err, "remove_track failed");
                }
            }
            if !gone.is_empty() {
                self.members[other].needs_offer = true;
            }
            self.send_to(
                other,
                ServerMessage::TrackUnpublished {
                    participant_id: publisher.clone(),
                    track_id: track_id.to_owned(),
                },
            );
            self.maybe_offer(other).await;
        }
    }

    /// Removes a member: closes its connection, stops its forwarders, and takes its tracks
    /// from the others (each renegotiated).
    async fn remove(&mut self, participant: &ParticipantId, reason: LeaveReason) {
        let Some(index) = self.member_index(participant) else {
            return;
        };
        let member = self.members.remove(index);
        member.pump.abort();
        if matches!(reason, LeaveReason::RoomClosed | LeaveReason::TooSlow) {
            let _ = member.out.try_send(ServerMessage::Removed { reason });
        }
        // Dropping the forwarder senders ends the forwarders.
        drop(member.published);
        if let Err(err) = member.pc.close().await {
            tracing::debug!(%err, "close failed");
        }
        RelayMetrics::dec(&self.relay.metrics.participants);
        tracing::info!(room = %self.id, participant = %participant, ?reason, "left");
        for other in 0..self.members.len() {
            for published in &self.members[other].published {
                let _ = published.forwarder.send(ForwardCommand::Unsubscribe {
                    subscriber: participant.clone(),
                });
            }
            let (gone, kept): (Vec<DownLeg>, Vec<DownLeg>) = self.members[other]
                .downs
                .drain(..)
                .partition(|leg| &leg.publisher == participant);
            self.members[other].downs = kept;
            if !gone.is_empty() {
                let pc = self.members[other].pc.clone();
                for leg in gone {
                    if let Err(err) = pc.remove_track(&leg.sender).await {
                        tracing::debug!(%err, "remove_track failed");
                    }
                }
                self.members[other].needs_offer = true;
            }
            self.send_to(
                other,
                ServerMessage::ParticipantLeft {
                    participant_id: participant.clone(),
                    reason,
                },
            );
            self.maybe_offer(other).await;
        }
    }

    fn start_recording(&mut self, dir: std::path::PathBuf) -> Result<(), RelayError> {
        if self.recording.is_some() {
            return Err(RelayError::Recording("already recording".into()));
        }
        if !dir.is_dir() {
            return Err(RelayError::Recording(format!(
                "{} is not a folder",
                dir.display()
            )));
        }
        let mut recording = Recording {
            dir,
            results: Vec::new(),
        };
        for member in &self.members {
            for published in &member.published {
                let (sink, result) = recording::start(
                    &recording.dir,
                    member.id.clone(),
                    published.track_id.clone(),
                    published.kind,
                );
                let _ = published.forwarder.send(ForwardCommand::Record(Some(sink)));
                recording.results.push(result);
            }
        }
        tracing::info!(room = %self.id, tracks = recording.results.len(), "recording started");
        self.recording = Some(recording);
        Ok(())
    }

    /// Sends everyone the connection quality of every connected member.
    async fn report_quality(&mut self) {
        let mut reports = Vec::new();
        for member in self.members.iter_mut().filter(|m| m.media_connected) {
            let report = member
                .pc
                .get_stats(std::time::Instant::now(), StatsSelector::None)
                .await;
            let quality = member
                .quality
                .update(std::time::Instant::now(), totals_from(&report));
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

    /// Removes the members found slow or gone during the last step.
    async fn reap(&mut self) {
        while let Some((participant, reason)) = self.doomed.pop() {
            match (reason, self.member_index(&participant)) {
                // Its events receiver was dropped: like a dropped handle, it may resume.
                (LeaveReason::Vanished, Some(index)) => {
                    self.members[index].detached = true;
                    self.start_grace(index, reason).await;
                }
                _ => self.remove(&participant, reason).await,
            }
        }
    }

    async fn close(&mut self) {
        while let Some(member) = self.members.first() {
            let id = member.id.clone();
            self.remove(&id, LeaveReason::RoomClosed).await;
        }
    }
}

fn rewrite(sdp_text: &str, ip: IpAddr) -> String {
    sdp::rewrite_sdp_candidates(sdp_text, ip)
}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}
