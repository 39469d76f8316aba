//! One task per room: owns its participants, their peer connections (the sans-IO `rtc` core)
//! and the negotiation state, drives every renegotiation, and forwards media between them.
//! Nothing else touches a room's state; the relay handle, the participants' pumps and the
//! shared UDP socket (`socket.rs`) talk to it through channels.
//!
//! Each turn of the loop takes one input (a command, a burst of datagrams, a timer), then
//! drives every connection until it is quiet: events, received media (forwarded at once into
//! the subscribers' connections), then every connection's outgoing datagrams onto the socket.
//!
//! Negotiation: the participant's first offer opens its connection; after that the relay is the
//! offerer (server-driven). A participant offer is still accepted when the relay has no offer of
//! its own outstanding, and refused with `negotiation_in_progress` otherwise; the relay never
//! waits on the participant for anything but the answer to its own offer, so there is no glare.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use rtc::media_stream::{MediaStreamTrack, MediaStreamTrackId};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::StatsSelector;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::codec::Codec;
use crate::engine::{AUDIO_LEVEL_URI, build_relay_connection, is_keyframe_request};
use crate::error::RelayError;
use crate::forwarder::{Forwarder, Leg};
use crate::messages::{
    ClientMessage, ErrorCode, IceCandidate, LeaveReason, MediaKind, ParticipantId, RoomId,
    ServerMessage,
};
use crate::metrics::RelayMetrics;
use crate::quality::{QualityTracker, totals_from};
use crate::recording::{self, RecordingResult};
use crate::relay::{Participant, RelayInner, Retirement};
use crate::sdp;
use crate::socket::{Inbound, ROOM_QUEUE, UdpMux};

/// What the relay handle and participant pumps send to a room.
pub(crate) enum RoomCommand {
    Join {
        participant: ParticipantId,
        /// A participant already in the room is replaced (removed, its old handle told so) in
        /// the same turn; otherwise the join is refused with `AlreadyInRoom`.
        replace: bool,
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

/// A track a member publishes, and the state that forwards it.
struct Published {
    track_id: String,
    /// The core's id for the track: its packets arrive tagged with it. It is the publisher's own
    /// id for the track (its `msid`), used also to notice when it stops sending it.
    source: MediaStreamTrackId,
    receiver: RTCRtpReceiverId,
    codec: Codec,
    /// Its encodings (simulcast layers) and the legs it is forwarded on.
    forwarder: Forwarder,
}

/// A track a member receives from another member.
struct DownLeg {
    publisher: ParticipantId,
    track_id: String,
    /// The publisher's codec: the relay does not transcode.
    codec: Codec,
    ssrc: u32,
    sender: RTCRtpSenderId,
    /// Subscribed at the forwarder (the leg's negotiation completed).
    active: bool,
    /// The size the member shows it at (`video_size`), kept for a leg not yet active.
    display: Option<(u32, u32)>,
}

struct Member {
    id: ParticipantId,
    /// Relay-wide id of this member's connection: the socket routes its datagrams by it, and a
    /// rejoin under the same participant id gets a new one.
    link: u64,
    pc: RTCPeerConnection,
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
    /// The relay's host candidates were added (once, after the first remote description).
    candidates_added: bool,
    /// The local ICE username fragments the socket routes to this member.
    ufrags: Vec<String>,
    /// The peer's ICE username fragment, to notice its ICE restarts.
    remote_ufrag: Option<String>,
    /// The peer restarted ICE: once connected again, its video needs fresh keyframes.
    ice_restarted: bool,
    quality: QualityTracker,
    /// The bandwidth it last reported it can receive (REMB), bit/s.
    estimate: Option<u64>,
    /// NACKs the relay had sent it as of the last quality report (for the metrics).
    nacks_sent: u64,
}

/// Candidates kept while waiting for the first offer; a peer sending more is misbehaving.
const MAX_EARLY_CANDIDATES: usize = 64;

/// What a subscriber's audio legs are assumed to take of its bandwidth estimate, each, bit/s
/// (Opus speech with packet overhead); the rest is shared among its video legs.
const AUDIO_BUDGET_BPS: u64 = 48_000;

/// Datagrams taken from the socket's queue in one turn before the connections are driven.
const DATAGRAM_BURST: usize = 64;

struct Room {
    id: RoomId,
    relay: Arc<RelayInner>,
    mux: Arc<UdpMux>,
    commands: mpsc::WeakSender<RoomCommand>,
    datagrams: mpsc::Sender<Inbound>,
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
static NEXT_LINK: AtomicU64 = AtomicU64::new(1);

fn next_ssrc() -> u32 {
    // Unique per process, which is more than the one-per-connection uniqueness SSRCs need.
    NEXT_SSRC.fetch_add(0x9E37_79B9, Ordering::Relaxed) | 1
}

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

/// How soon an empty room asks again to leave the directory when a caller still held its
/// address (it was between looking the room up and sending to it).
const RETIRE_RECHECK: std::time::Duration = std::time::Duration::from_millis(20);

pub(crate) async fn run_room(
    relay: Arc<RelayInner>,
    mux: Arc<UdpMux>,
    id: RoomId,
    generation: u64,
    mut inbox: mpsc::Receiver<RoomCommand>,
    commands: mpsc::WeakSender<RoomCommand>,
) {
    let (datagrams, mut datagram_rx) = mpsc::channel(ROOM_QUEUE);
    let mut room = Room {
        id,
        relay,
        mux,
        commands,
        datagrams,
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
    let mut recheck: Option<Instant> = None;
    loop {
        // An empty room ends by leaving the directory under its lock, so that no join can reach
        // a room that is ending: a command already sent is taken, a sender still held waits.
        if room.members.is_empty() {
            match room
                .relay
                .retire(&room.id, generation, &mut inbox, &room.commands)
            {
                Retirement::Retired => break,
                Retirement::Command(command) => {
                    room.handle_command(command);
                    room.drive();
                    room.reap();
                    continue;
                }
                Retirement::Held => recheck = Some(Instant::now() + RETIRE_RECHECK),
            }
        }
        let deadline = match (room.next_deadline(), recheck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = async {
                match quality_tick.as_mut() {
                    Some(tick) => tick.tick().await,
                    None => std::future::pending().await,
                }
            } => room.report_quality(),
            command = inbox.recv() => {
                match command {
                    None => {
                        room.close();
                        break;
                    }
                    Some(command) => room.handle_command(command),
                }
            }
            Some(inbound) = datagram_rx.recv() => {
                room.on_datagram(inbound);
                for _ in 1..DATAGRAM_BURST {
                    match datagram_rx.try_recv() {
                        Ok(inbound) => room.on_datagram(inbound),
                        Err(_) => break,
                    }
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                recheck = None;
                room.on_timeout(Instant::now());
            }
        }
        room.drive();
        room.reap();
    }
    tracing::debug!(room = %room.id, "room closed");
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Room {
    /// The index of `id` if `attachment` is its current signaling handle.
    fn attached(&self, id: &ParticipantId, attachment: u64) -> Option<usize> {
        self.members
            .iter()
            .position(|m| &m.id == id && m.attachment == attachment && !m.detached)
    }

    fn member_index(&self, id: &ParticipantId) -> Option<usize> {
        self.members.iter().position(|m| &m.id == id)
    }

    fn link_index(&self, link: u64) -> Option<usize> {
        self.members.iter().position(|m| m.link == link)
    }

    /// Starts the member's grace period unless one runs; with no grace configured, removes it now.
    fn start_grace(&mut self, index: usize, reason: LeaveReason) {
        let grace = self.relay.config.resume_grace;
        if grace.is_zero() {
            let id = self.members[index].id.clone();
            return self.remove(&id, reason);
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
                    kind: p.codec.kind(),
                })
            })
            .collect();
        for message in existing {
            self.send_to(index, message);
        }
    }

    fn resume(&mut self, participant: ParticipantId) -> Result<Participant, RelayError> {
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
        if self.members[index].offer_outstanding
            && let Some(sdp) = self.local_sdp(index)
        {
            self.send_to(index, ServerMessage::Offer { sdp });
        }
        self.end_grace_if_healthy(index);
        Ok(handle)
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

    fn handle_command(&mut self, command: RoomCommand) {
        match command {
            RoomCommand::Join {
                participant,
                replace,
                reply,
            } => {
                let result = self.join(participant, replace);
                let _ = reply.send(result);
            }
            RoomCommand::Resume { participant, reply } => {
                let result = self.resume(participant);
                let _ = reply.send(result);
            }
            RoomCommand::Client {
                participant,
                attachment,
                message,
            } => {
                if self.attached(&participant, attachment).is_some() {
                    self.handle_client(participant, message);
                }
            }
            RoomCommand::Vanished {
                participant,
                attachment,
            } => {
                if let Some(index) = self.attached(&participant, attachment) {
                    self.members[index].detached = true;
                    self.start_grace(index, LeaveReason::Vanished);
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
                    let now = Instant::now();
                    for member in &mut self.members {
                        for published in &mut member.published {
                            published.forwarder.record(now, None);
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
                    self.remove(&participant, reason);
                }
            }
            // Everyone goes; the room then ends unless someone joins again meanwhile.
            RoomCommand::Close => self.close(),
        }
    }

    fn join(
        &mut self,
        participant: ParticipantId,
        replace: bool,
    ) -> Result<Participant, RelayError> {
        if self.member_index(&participant).is_some() {
            if !replace {
                return Err(RelayError::AlreadyInRoom {
                    room: self.id.clone(),
                    participant,
                });
            }
            self.remove(&participant, LeaveReason::Replaced);
        }
        let max = self.relay.config.max_participants;
        if self.members.len() >= max {
            return Err(RelayError::RoomFull {
                room: self.id.clone(),
                max,
            });
        }
        let (ufrag, pwd) = ice_credentials();
        let pc = build_relay_connection(Instant::now(), ufrag.clone(), pwd)?;
        let (handle, out, pump, attachment) = self.attach(&participant)?;
        let link = NEXT_LINK.fetch_add(1, Ordering::Relaxed);
        self.mux.register(&ufrag, link, self.datagrams.clone());
        self.members.push(Member {
            id: participant.clone(),
            link,
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
            candidates_added: false,
            ufrags: vec![ufrag],
            remote_ufrag: None,
            ice_restarted: false,
            quality: QualityTracker::new(),
            estimate: None,
            nacks_sent: 0,
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

    fn handle_client(&mut self, participant: ParticipantId, message: ClientMessage) {
        let Some(index) = self.member_index(&participant) else {
            return;
        };
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
            ClientMessage::Leave => self.remove(&participant, LeaveReason::Left),
        }
    }

    /// Adds the relay's host candidates (one per socket, with the announced address) to member
    /// `index`'s connection: every description it sends from now on carries them.
    fn add_host_candidates(&mut self, index: usize) {
        if self.members[index].candidates_added {
            return;
        }
        for addr in self.mux.announced() {
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
            .new_candidate_host();
            let init = candidate.and_then(|c| RTCIceCandidate::from(&c).to_json());
            match init.and_then(|init| self.members[index].pc.add_local_candidate(init)) {
                Ok(()) => {}
                Err(err) => tracing::warn!(%err, %addr, "host candidate not added"),
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
        if self.members[index].offer_outstanding {
            return self.error_to(
                index,
                ErrorCode::NegotiationInProgress,
                "answer the relay's offer first, then offer again",
            );
        }
        let audio_level_id = sdp::audio_extmap_id(&offer.sdp, AUDIO_LEVEL_URI);
        let remote_ufrag = sdp::ice_ufrags(&offer.sdp).first().map(|u| u.to_string());
        let now = Instant::now();
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
        let first = !self.members[index].connected_signaling;
        self.members[index].connected_signaling = true;
        for candidate in std::mem::take(&mut self.members[index].early_candidates) {
            self.on_candidate(index, candidate);
        }
        if first {
            // Subscribe the newcomer to everything already published.
            let sources: Vec<(ParticipantId, String, Codec)> = self
                .members
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != index)
                .flat_map(|(_, m)| {
                    m.published
                        .iter()
                        .map(|p| (m.id.clone(), p.track_id.clone(), p.codec))
                })
                .collect();
            for (publisher, track_id, codec) in sources {
                self.add_down_leg(index, publisher, track_id, codec);
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
        // Legs added before this exchange were negotiated by it.
        self.activate_legs(index);
        self.maybe_offer(index);
    }

    fn on_answer(&mut self, index: usize, sdp_text: String) {
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
        let now = Instant::now();
        if let Err(err) = self.members[index].pc.set_remote_description(now, answer) {
            // The offer stays outstanding: a corrected answer may follow.
            return self.error_to(
                index,
                ErrorCode::BadSdp,
                format!("answer not applicable: {err}"),
            );
        }
        self.members[index].offer_outstanding = false;
        self.activate_legs(index);
        self.maybe_offer(index);
    }

    fn on_candidate(&mut self, index: usize, candidate: IceCandidate) {
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
        if let Err(err) = self.members[index].pc.add_remote_candidate(init) {
            self.error_to(
                index,
                ErrorCode::BadCandidate,
                format!("candidate refused: {err}"),
            );
        }
    }

    fn on_mute(&mut self, index: usize, kind: MediaKind, muted: bool) {
        let now = Instant::now();
        let member = &mut self.members[index];
        member.muted.retain(|k| *k != kind);
        if muted {
            member.muted.push(kind);
        }
        let mut plis = Vec::new();
        for (k, published) in member.published.iter_mut().enumerate() {
            if published.codec.kind() == kind {
                for layer in published.forwarder.set_muted(now, muted) {
                    plis.push((k, layer));
                }
            }
        }
        for (k, layer) in plis {
            self.write_pli(index, k, layer, now);
        }
        let id = self.members[index].id.clone();
        self.broadcast_except(
            &id,
            ServerMessage::TrackMuted {
                participant_id: id.clone(),
                kind,
                muted,
            },
        );
    }

    /// Member `index` shows `track_id` at `size`: cap that leg's simulcast layer.
    fn on_video_size(&mut self, index: usize, track_id: &str, size: (u32, u32)) {
        let Some(leg) = self.members[index]
            .downs
            .iter_mut()
            .find(|leg| leg.track_id == track_id)
        else {
            return self.error_to(
                index,
                ErrorCode::UnknownTrack,
                format!("video_size: no track {track_id:?} is sent to you"),
            );
        };
        leg.display = Some(size);
        let publisher = leg.publisher.clone();
        let subscriber = self.members[index].id.clone();
        let Some((p, k)) = self.published_index(&publisher, track_id) else {
            return;
        };
        let now = Instant::now();
        let forwarder = &mut self.members[p].published[k].forwarder;
        let Some(leg) = forwarder.leg_of(&subscriber) else {
            return; // not active yet: the leg starts with the size kept above
        };
        if let Some(layer) = forwarder.set_display(now, leg, size) {
            self.write_pli(p, k, layer, now);
        }
    }

    /// Hands one datagram to the connection it was routed to.
    fn on_datagram(&mut self, inbound: Inbound) {
        let Some(index) = self.link_index(inbound.link) else {
            return; // a removed member's late packets
        };
        let message = TaggedBytesMut {
            now: inbound.at,
            transport: TransportContext {
                local_addr: inbound.local,
                peer_addr: inbound.peer,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: inbound.data,
        };
        if let Err(err) = self.members[index].pc.handle_read(message) {
            // One bad datagram (stray, replayed, undecryptable) must not end the connection.
            tracing::trace!(%err, participant = %self.members[index].id, "datagram refused");
        }
    }

    /// The earliest time a connection or a forwarder has something to do.
    fn next_deadline(&mut self) -> Option<Instant> {
        let mut deadline: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
        };
        for member in &mut self.members {
            consider(member.pc.poll_timeout());
            for published in &member.published {
                consider(published.forwarder.next_deadline());
            }
        }
        deadline
    }

    fn on_timeout(&mut self, now: Instant) {
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
                self.write_pli(index, k, layer, now);
            }
            for change in speaking {
                self.announce_speaking(index, change);
            }
        }
    }

    /// Drives every connection until none has anything left: its events, its received media
    /// (forwarded into the others' connections), then everyone's outgoing datagrams.
    fn drive(&mut self) {
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
            let now = Instant::now();
            for index in 0..self.members.len() {
                while let Some(message) = self.members[index].pc.poll_read() {
                    progressed = true;
                    self.on_pc_message(index, now, message.message);
                }
            }
            for member in &mut self.members {
                while let Some(out) = member.pc.poll_write() {
                    self.mux.send(
                        out.transport.local_addr,
                        out.transport.peer_addr,
                        &out.message,
                    );
                }
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
                let member = &self.members[index];
                if member.media_connected || member.pc_failed {
                    self.resync_video(index);
                }
                self.members[index].media_connected = true;
                self.members[index].pc_failed = false;
                self.end_grace_if_healthy(index);
                self.activate_legs(index);
            }
            // An ICE restart may still revive a failed connection within the grace period.
            RTCPeerConnectionState::Failed => {
                self.members[index].pc_failed = true;
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
    fn on_pc_message(&mut self, index: usize, now: Instant, message: RTCMessage) {
        match message {
            RTCMessage::RtpPacket(source, packet) => {
                let Some(k) = self.members[index]
                    .published
                    .iter()
                    .position(|p| p.source == source)
                else {
                    return;
                };
                let forwarder = &mut self.members[index].published[k].forwarder;
                let Some(layer) = forwarder.layer_of(packet.header.ssrc) else {
                    return;
                };
                RelayMetrics::inc(&self.relay.metrics.packets_received);
                let arrival = forwarder.on_packet(now, layer, &packet);
                if let Some(change) = arrival.speaking {
                    self.announce_speaking(index, change);
                }
                if arrival.forward {
                    self.forward(index, k, layer, now, &packet, arrival.keyframe);
                }
            }
            // Feedback about what this member receives.
            RTCMessage::RtcpPacket(track_id, packets) => {
                for packet in &packets {
                    self.on_feedback(index, now, &track_id, packet.as_ref());
                }
            }
            _ => {}
        }
    }

    /// One RTCP packet from member `index` about what it receives: a keyframe request goes to
    /// the publisher of that leg's current layer, a bandwidth estimate and receiver-report loss
    /// choose its simulcast layers.
    fn on_feedback(
        &mut self,
        index: usize,
        now: Instant,
        track_id: &str,
        packet: &dyn rtc::rtcp::Packet,
    ) {
        if is_keyframe_request(packet) {
            let Some(leg) = self.members[index]
                .downs
                .iter()
                .find(|leg| leg.track_id == track_id)
            else {
                return;
            };
            RelayMetrics::inc(&self.relay.metrics.keyframe_requests_received);
            let (publisher, track_id) = (leg.publisher.clone(), leg.track_id.clone());
            let subscriber = self.members[index].id.clone();
            if let Some((p, k)) = self.published_index(&publisher, &track_id) {
                let forwarder = &mut self.members[p].published[k].forwarder;
                let leg = forwarder.leg_of(&subscriber);
                if let Some(layer) = leg.and_then(|leg| forwarder.want_keyframe_for(now, leg)) {
                    self.write_pli(p, k, layer, now);
                }
            }
            return;
        }
        let any = packet.as_any();
        if any.is::<TransportLayerNack>() {
            // Answered by the NACK responder inside the connection; counted here.
            RelayMetrics::inc(&self.relay.metrics.nacks_received);
        } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
            self.members[index].estimate = Some(remb.bitrate.max(0.0) as u64);
            self.choose_layers(index, now);
        } else if let Some(report) = any.downcast_ref::<ReceiverReport>() {
            let subscriber = self.members[index].id.clone();
            self.act_on_legs_of(&subscriber, |forwarder, leg| {
                let leg = &mut forwarder.legs[leg];
                if let Some(reception) = report.reports.iter().find(|r| r.ssrc == leg.rewriter.ssrc)
                {
                    leg.loss = f64::from(reception.fraction_lost) / 256.0;
                }
                None
            });
            if self.members[index].estimate.is_some() {
                self.choose_layers(index, now);
            }
        }
    }

    /// Shares member `index`'s reported bandwidth among the video it receives (audio first,
    /// then an equal share per video leg) and lets each leg's selector choose its layer.
    fn choose_layers(&mut self, index: usize, now: Instant) {
        let Some(estimate) = self.members[index].estimate else {
            return;
        };
        let subscriber = self.members[index].id.clone();
        let downs = &self.members[index].downs;
        let audio = downs
            .iter()
            .filter(|d| d.codec.kind() == MediaKind::Audio)
            .count() as u64;
        let video = downs
            .iter()
            .filter(|d| d.codec.kind() == MediaKind::Video)
            .count() as u64;
        if video == 0 {
            return;
        }
        let share = estimate.saturating_sub(audio * AUDIO_BUDGET_BPS) / video;
        self.act_on_legs_of(&subscriber, |forwarder, leg| {
            forwarder.on_estimate(now, leg, share)
        });
    }

    /// Writes one packet of member `index`'s track `k` to every subscriber leg.
    fn forward(
        &mut self,
        index: usize,
        k: usize,
        layer: usize,
        now: Instant,
        packet: &rtc::rtp::Packet,
        keyframe: bool,
    ) {
        let metrics = self.relay.metrics.clone();
        let (before, rest) = self.members.split_at_mut(index);
        let (publisher, after) = rest.split_first_mut().expect("index is in range");
        let video = publisher.published[k].codec.kind() == MediaKind::Video;
        for leg in &mut publisher.published[k].forwarder.legs {
            let (admitted, switched) = leg.admits(layer, keyframe);
            if switched {
                RelayMetrics::inc(&metrics.layer_switches);
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
                .find(|m| m.id == leg.subscriber)
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
                tracing::debug!(subscriber = %leg.subscriber, %err, "forward failed");
                continue;
            }
            if frame_end && video {
                leg.freezes.on_frame(now);
            }
            RelayMetrics::inc(&metrics.packets_forwarded);
            metrics
                .bytes_forwarded
                .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn announce_speaking(&mut self, index: usize, speaking: bool) {
        let participant = self.members[index].id.clone();
        self.broadcast_except(
            &participant,
            ServerMessage::Speaking {
                participant_id: participant.clone(),
                speaking,
            },
        );
    }

    /// After member `index`'s path changed: keyframes of the video it publishes (its subscribers'
    /// decoders lost packets, and a browser sends no keyframe unasked) and of the video it
    /// receives (its own decoders did; asking now saves waiting for its PLI).
    fn resync_video(&mut self, index: usize) {
        self.request_video_keyframes(index);
        let now = Instant::now();
        let subscriber = self.members[index].id.clone();
        self.act_on_legs_of(&subscriber, |forwarder, leg| {
            forwarder.want_keyframe_for(now, leg)
        });
    }

    /// Runs `act` on each of `subscriber`'s legs (one per track it receives) and sends the
    /// publishers the PLIs it asks for (the layer it returns).
    fn act_on_legs_of(
        &mut self,
        subscriber: &ParticipantId,
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
        let now = Instant::now();
        for (p, k, layer) in plis {
            self.write_pli(p, k, layer, now);
        }
    }

    /// Asks for a keyframe of every layer of every video track member `index` publishes.
    fn request_video_keyframes(&mut self, index: usize) {
        let now = Instant::now();
        for k in 0..self.members[index].published.len() {
            for layer in 0..self.members[index].published[k].forwarder.layers.len() {
                if self.members[index].published[k]
                    .forwarder
                    .want_keyframe(now, layer)
                {
                    self.write_pli(index, k, layer, now);
                }
            }
        }
    }

    /// Writes a PLI for `layer` of member `index`'s track `k` (its limiter said so).
    fn write_pli(&mut self, index: usize, k: usize, layer: usize, now: Instant) {
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
            Ok(()) => RelayMetrics::inc(&self.relay.metrics.plis_sent),
            Err(err) => tracing::debug!(%err, "PLI not sent"),
        }
    }

    /// The member index and track index of `publisher`'s `track_id`.
    fn published_index(&self, publisher: &ParticipantId, track_id: &str) -> Option<(usize, usize)> {
        let index = self.member_index(publisher)?;
        let k = self.members[index]
            .published
            .iter()
            .position(|p| p.track_id == track_id)?;
        Some((index, k))
    }

    fn on_published(
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
        let publisher = self.members[index].id.clone();
        let ordinal = self.next_track;
        self.next_track += 1;
        let track_id = format!("{publisher}-{}-{ordinal}", kind_name(kind));
        let now = Instant::now();
        let mut forwarder = Forwarder::new(
            codec,
            self.relay.config.keyframe_request_interval,
            self.members[index].audio_level_id,
            ssrc,
        );
        if self.members[index].muted.contains(&kind) {
            forwarder.set_muted(now, true);
        }
        if let Some(recording) = self.recording.as_mut() {
            let (sink, result) =
                recording::start(&recording.dir, publisher.clone(), track_id.clone(), codec);
            // The first packet is not yet here: the limiter lets the PLI out when it is asked.
            forwarder.record(now, Some(sink));
            recording.results.push(result);
        }
        self.members[index].published.push(Published {
            track_id: track_id.clone(),
            source,
            receiver,
            codec,
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
                self.add_down_leg(other, publisher.clone(), track_id.clone(), codec);
                self.maybe_offer(other);
            }
        }
    }

    /// Adds a local track for `publisher`'s track to member `index`; negotiated by the next offer.
    fn add_down_leg(
        &mut self,
        index: usize,
        publisher: ParticipantId,
        track_id: String,
        codec: Codec,
    ) {
        let ssrc = next_ssrc();
        let local = MediaStreamTrack::new(
            publisher.to_string(),
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
                let member = &mut self.members[index];
                member.downs.push(DownLeg {
                    publisher,
                    track_id,
                    codec,
                    ssrc,
                    sender,
                    active: false,
                    display: None,
                });
                member.needs_offer = true;
            }
            Err(err) => tracing::warn!(%err, "adding a track failed"),
        }
    }

    /// Starts forwarding on every negotiated leg of member `index` not yet forwarding.
    fn activate_legs(&mut self, index: usize) {
        if !self.members[index].media_connected {
            return;
        }
        let subscriber = self.members[index].id.clone();
        let mut activated = Vec::new();
        let member = &mut self.members[index];
        for (leg_index, leg) in member.downs.iter().enumerate() {
            if leg.active {
                continue;
            }
            let Some(mut sender) = member.pc.rtp_sender(leg.sender) else {
                continue;
            };
            let mime = leg.codec.mime_type();
            let Some(payload_type) = sender
                .get_parameters()
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
                .map(|c| c.payload_type)
            else {
                continue; // not negotiated (yet): the next exchange may settle it
            };
            activated.push((leg_index, payload_type));
        }
        let now = Instant::now();
        for (leg_index, payload_type) in activated {
            let leg = &self.members[index].downs[leg_index];
            let (publisher, track_id) = (leg.publisher.clone(), leg.track_id.clone());
            let mut new_leg = Leg::new(
                subscriber.clone(),
                leg.sender,
                leg.ssrc,
                payload_type,
                leg.codec,
            );
            new_leg.display = leg.display;
            self.members[index].downs[leg_index].active = true;
            let Some((p, k)) = self.published_index(&publisher, &track_id) else {
                continue;
            };
            if let Some(layer) = self.members[p].published[k]
                .forwarder
                .subscribe(now, new_leg)
            {
                self.write_pli(p, k, layer, now);
            }
        }
    }

    /// Sends a relay offer to member `index` if it needs one and none is outstanding.
    fn maybe_offer(&mut self, index: usize) {
        let member = &mut self.members[index];
        if !member.connected_signaling || member.offer_outstanding || !member.needs_offer {
            return;
        }
        let pc = &mut member.pc;
        let offered = pc
            .create_offer(None)
            .and_then(|offer| pc.set_local_description(Instant::now(), offer));
        if let Err(err) = offered {
            return tracing::warn!(%err, "offer failed");
        }
        let Some(sdp) = self.local_sdp(index) else {
            return;
        };
        let member = &mut self.members[index];
        member.offer_outstanding = true;
        member.needs_offer = false;
        self.send_to(index, ServerMessage::Offer { sdp });
    }

    /// The member's local description, after making sure the socket routes its ICE username
    /// fragment (an ICE restart may bring a new one).
    fn local_sdp(&mut self, index: usize) -> Option<String> {
        let sdp = self.members[index].pc.local_description()?.sdp;
        let member = &mut self.members[index];
        for ufrag in sdp::ice_ufrags(&sdp) {
            if !member.ufrags.iter().any(|u| u == ufrag) {
                self.mux
                    .register(ufrag, member.link, self.datagrams.clone());
                member.ufrags.push(ufrag.to_owned());
            }
        }
        Some(sdp)
    }

    /// Stops forwarding one of member `index`'s tracks and takes it from the others.
    fn unpublish(&mut self, index: usize, track_id: &str) {
        let publisher = self.members[index].id.clone();
        self.members[index]
            .published
            .retain(|p| p.track_id != track_id);
        tracing::info!(room = %self.id, participant = %publisher, %track_id, "track unpublished");
        for other in 0..self.members.len() {
            if other == index {
                continue;
            }
            self.drop_legs(other, |leg| {
                leg.publisher == publisher && leg.track_id == track_id
            });
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

    /// Removes member `index`'s legs that `gone` selects (renegotiated by its next offer).
    fn drop_legs(&mut self, index: usize, gone: impl Fn(&DownLeg) -> bool) {
        let member = &mut self.members[index];
        let (dropped, kept): (Vec<DownLeg>, Vec<DownLeg>) =
            member.downs.drain(..).partition(|leg| gone(leg));
        member.downs = kept;
        for leg in &dropped {
            if let Err(err) = member.pc.remove_track(leg.sender) {
                tracing::debug!(%err, "remove_track failed");
            }
        }
        if !dropped.is_empty() {
            member.needs_offer = true;
        }
    }

    /// Removes a member: closes its connection, stops its forwarders, and takes its tracks
    /// from the others (each renegotiated).
    fn remove(&mut self, participant: &ParticipantId, reason: LeaveReason) {
        let Some(index) = self.member_index(participant) else {
            return;
        };
        let mut member = self.members.remove(index);
        member.pump.abort();
        if matches!(
            reason,
            LeaveReason::RoomClosed | LeaveReason::TooSlow | LeaveReason::Replaced
        ) {
            let _ = member.out.try_send(ServerMessage::Removed { reason });
        }
        // Tell the peer (DTLS close), then forget its routes.
        if let Err(err) = member.pc.close() {
            tracing::debug!(%err, "close failed");
        }
        while let Some(out) = member.pc.poll_write() {
            self.mux.send(
                out.transport.local_addr,
                out.transport.peer_addr,
                &out.message,
            );
        }
        self.mux.forget(member.link);
        RelayMetrics::dec(&self.relay.metrics.participants);
        tracing::info!(room = %self.id, participant = %participant, ?reason, "left");
        for other in 0..self.members.len() {
            for published in &mut self.members[other].published {
                published.forwarder.unsubscribe(participant);
            }
            self.drop_legs(other, |leg| &leg.publisher == participant);
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
        let now = Instant::now();
        let mut plis = Vec::new();
        for (index, member) in self.members.iter_mut().enumerate() {
            for (k, published) in member.published.iter_mut().enumerate() {
                let (sink, result) = recording::start(
                    &recording.dir,
                    member.id.clone(),
                    published.track_id.clone(),
                    published.codec,
                );
                if published.forwarder.record(now, Some(sink)) {
                    plis.push((index, k));
                }
                recording.results.push(result);
            }
        }
        for (index, k) in plis {
            self.write_pli(index, k, 0, now);
        }
        tracing::info!(room = %self.id, tracks = recording.results.len(), "recording started");
        self.recording = Some(recording);
        Ok(())
    }

    /// Sends everyone the connection quality of every connected member.
    fn report_quality(&mut self) {
        let now = Instant::now();
        let mut reports = Vec::new();
        for index in 0..self.members.len() {
            // Freezes in what it was sent: over every leg of every track it receives.
            let subscriber = self.members[index].id.clone();
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
            if !member.media_connected {
                continue;
            }
            let report = member.pc.get_stats(now, StatsSelector::None);
            let totals = totals_from(&report);
            self.relay.metrics.nacks_sent.fetch_add(
                totals.nacks_sent.saturating_sub(member.nacks_sent),
                std::sync::atomic::Ordering::Relaxed,
            );
            member.nacks_sent = totals.nacks_sent;
            let mut quality = member.quality.update(now, totals);
            quality.freezes = freezes;
            quality.frozen_ms = u32::try_from(frozen.as_millis()).unwrap_or(u32::MAX);
            quality.layer = layer.map(|l| u8::try_from(l).unwrap_or(u8::MAX));
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
    fn reap(&mut self) {
        while let Some((participant, reason)) = self.doomed.pop() {
            match (reason, self.member_index(&participant)) {
                // Its events receiver was dropped: like a dropped handle, it may resume.
                (LeaveReason::Vanished, Some(index)) => {
                    self.members[index].detached = true;
                    self.start_grace(index, reason);
                }
                _ => self.remove(&participant, reason),
            }
        }
    }

    fn close(&mut self) {
        while let Some(member) = self.members.first() {
            let id = member.id.clone();
            self.remove(&id, LeaveReason::RoomClosed);
        }
    }
}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}
