//! A room's core, sans IO: its members, their peer connections (webrtc-rs's sans-IO `rtc`), the
//! negotiation, and the forwarding between them. No sockets, tasks, channels or clock inside:
//! [`RoomCore::handle`] takes one input at the time the caller says (a datagram, a member's
//! signaling message, a command, a timeout), [`RoomCore::poll_output`] yields what to do about it
//! (datagrams to send, messages to members, routes for the socket), and
//! [`RoomCore::poll_timeout`] says when to call again. Grace periods, keyframe limiters, quality
//! reports and layer decisions are deadlines inside it. The tokio task that drives a core over
//! the real socket and channels is `task.rs`; tests drive it on virtual time (`sim.rs`,
//! `scenarios.rs`).
//!
//! The control plane (membership, negotiation, signaling) is `control.rs`; the media plane
//! (datagrams, forwarding, feedback, layers, recording taps, quality) is `media.rs`; a member's
//! state machines are `state.rs`.
//!
//! Negotiation: the participant's first offer opens its connection; after that the relay is the
//! offerer (server-driven). A participant offer is still accepted when the relay has no offer of
//! its own outstanding, and refused with `negotiation_in_progress` otherwise; the relay never
//! waits on the participant for anything but the answer to its own offer, so there is no glare.

mod control;
mod latch;
mod media;
mod state;
pub(crate) mod task;

#[cfg(all(test, feature = "test-peer"))]
mod scenarios;
#[cfg(all(test, feature = "test-peer"))]
mod sim;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::media_stream::MediaStreamTrackId;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::sansio::Protocol;

use crate::codec::Codec;
use crate::error::RelayError;
use crate::forwarder::Forwarder;
use crate::messages::{
    ClientMessage, LeaveReason, MediaKind, ParticipantId, RoomId, ServerMessage, TrackSource,
};
use crate::metrics::RoomCounters;
use crate::quality::QualityTracker;
use crate::recording::RecordingSink;

use state::{Grace, Negotiation, Presence, Transport};

/// What a room's core needs to know of the relay's configuration.
#[derive(Debug, Clone)]
pub(crate) struct RoomConfig {
    pub(crate) max_participants: usize,
    pub(crate) keyframe_request_interval: Duration,
    /// How long a member whose signaling or connection dropped keeps its place (zero: none).
    pub(crate) resume_grace: Duration,
    /// How often everyone is told everyone's connection quality (zero: never).
    pub(crate) quality_interval: Duration,
    /// The addresses the relay's host candidates announce, one per socket.
    pub(crate) host_candidates: Vec<SocketAddr>,
}

/// Opens a recording tap for one track (a writer of its own, outside the core).
pub(crate) type Recorder = Box<dyn FnMut(&ParticipantId, &str, Codec) -> RecordingSink + Send>;

/// One datagram for the connection `link`.
pub(crate) struct Datagram {
    pub(crate) link: u64,
    /// The relay's address it arrived at (what the link's ICE candidate names).
    pub(crate) local: SocketAddr,
    pub(crate) peer: SocketAddr,
    pub(crate) data: BytesMut,
}

/// What a room's core is told.
pub(crate) enum Input {
    /// A datagram for one of its members' connections.
    Datagram(Datagram),
    /// A participant joins with a new connection (`link`, unique relay-wide) and signaling
    /// handle (`attachment`, unique in the room). A participant already here is replaced (removed,
    /// its old handle told so) when `replace`, and otherwise refused.
    Join {
        participant: ParticipantId,
        attachment: u64,
        link: u64,
        replace: bool,
    },
    /// The same participant takes its place back with a new signaling handle.
    Resume {
        participant: ParticipantId,
        attachment: u64,
    },
    /// A message from the participant's handle `attachment` (ignored from a stale handle).
    Client {
        participant: ParticipantId,
        attachment: u64,
        message: ClientMessage,
    },
    /// Messages to handle `attachment` cannot be delivered: it was dropped (`Vanished`: the
    /// member may resume within its grace period) or is too slow (`TooSlow`: it is removed).
    Undeliverable {
        attachment: u64,
        reason: LeaveReason,
    },
    /// Start recording every track, now and to come, through `Recorder`.
    StartRecording(Recorder),
    /// Stop recording: every tap is closed.
    StopRecording,
    /// A deadline from [`RoomCore::poll_timeout`] has come.
    Timeout,
    /// The participant is taken out (`dismissed`), if it is here.
    Remove { participant: ParticipantId },
    /// Everyone leaves (`room_closed`).
    Close,
}

/// What a room's core asks its driver to do, in order.
#[derive(Debug)]
pub(crate) enum Output {
    /// Send a datagram from the relay's address `from` to `to`.
    Transmit {
        from: SocketAddr,
        to: SocketAddr,
        data: BytesMut,
    },
    /// Deliver a message to the signaling handle `attachment`.
    Deliver {
        attachment: u64,
        message: ServerMessage,
    },
    /// The handle `attachment` is done with (its member left, or resumed on another handle).
    Release { attachment: u64 },
    /// Route STUN requests naming `ufrag` (and then their senders) to connection `link`.
    Route { ufrag: String, link: u64 },
    /// Forget every route of connection `link` (it closed).
    Unroute { link: u64 },
}

/// A track a member publishes, and the state that forwards it.
struct Published {
    track_id: String,
    /// The core's id for the track: its packets arrive tagged with it. It is the publisher's own
    /// id for the track (its `msid`), used also to notice when it stops sending it.
    source: MediaStreamTrackId,
    receiver: RTCRtpReceiverId,
    codec: Codec,
    /// Microphone, camera or screen.
    carries: TrackSource,
    /// Its encodings (simulcast layers) and the legs it is forwarded on.
    forwarder: Forwarder,
}

impl Member {
    /// What it can receive, bit/s: the lower of what it reports (REMB) and what the relay
    /// estimates from its TWCC feedback, whichever it has.
    fn downlink(&self) -> Option<u64> {
        match (self.estimate, self.congestion) {
            (Some(remb), Some(gcc)) => Some(remb.min(gcc)),
            (one, other) => one.or(other),
        }
    }
}

struct Member {
    id: ParticipantId,
    /// Relay-wide id of this member's connection: the socket routes its datagrams by it, the
    /// forwarders name their subscribers by it, and a rejoin gets a new one.
    link: u64,
    pc: RTCPeerConnection,
    /// The relay's ICE passwords for this connection (the first, and each ICE restart's): a
    /// binding request that passes integrity with one may move the path (`latch.rs`).
    ice_pwds: Vec<String>,
    /// Where the connection's datagrams go when the member's address changed under it.
    latch: latch::PathLatch,
    presence: Presence,
    negotiation: Negotiation,
    transport: Transport,
    grace: Option<Grace>,
    /// What it publishes; what it receives is in the others' forwarders (the one table of
    /// subscriptions).
    published: Vec<Published>,
    muted: Vec<MediaKind>,
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
    /// The relay's own estimate of its downlink (GCC over its TWCC feedback), bit/s.
    congestion: Option<u64>,
    /// NACKs the relay had sent it as of the last quality report (for the metrics).
    nacks_sent: u64,
    /// It receives the others' video (`false`: audio only, 只用语音).
    receives_video: bool,
    /// Its own id (`msid`) of the track that carries its screen, declared by `screen_share`.
    screen: Option<String>,
}

/// A room: its members and everything between them.
pub(crate) struct RoomCore {
    id: RoomId,
    config: RoomConfig,
    members: Vec<Member>,
    /// Room-wide track numbering, so a rejoin never reuses a track id (or a recording's name).
    next_track: u64,
    recording: Option<Recorder>,
    /// The time of the current input: the core reads no clock.
    now: Instant,
    /// Connections may have something to do (an input reached them since the last drive).
    dirty: bool,
    next_quality_report: Option<Instant>,
    /// When the members' downlink estimates are next read from their connections.
    next_estimate: Instant,
    outputs: VecDeque<Output>,
    counters: RoomCounters,
}

impl RoomCore {
    pub(crate) fn new(id: RoomId, config: RoomConfig, now: Instant) -> Self {
        let next_quality_report =
            (!config.quality_interval.is_zero()).then(|| now + config.quality_interval);
        Self {
            id,
            config,
            members: Vec::new(),
            next_track: 0,
            recording: None,
            now,
            dirty: false,
            next_quality_report,
            next_estimate: now + ESTIMATE_EVERY,
            outputs: VecDeque::new(),
            counters: RoomCounters::default(),
        }
    }

    /// Takes one input at `now` (never earlier than the last input's time). Errors answer
    /// commands (`Join`, `Resume`, recording); a member's own mistakes go back to it as
    /// messages instead, and the room stays up.
    pub(crate) fn handle(&mut self, now: Instant, input: Input) -> Result<(), RelayError> {
        self.now = self.now.max(now);
        let result = match input {
            Input::Datagram(datagram) => {
                self.on_datagram(datagram);
                Ok(())
            }
            Input::Join {
                participant,
                attachment,
                link,
                replace,
            } => self.join(participant, attachment, link, replace),
            Input::Resume {
                participant,
                attachment,
            } => self.resume(participant, attachment),
            Input::Client {
                participant,
                attachment,
                message,
            } => {
                if let Some(index) = self.attached(&participant, attachment) {
                    self.on_client(index, message);
                }
                Ok(())
            }
            Input::Undeliverable { attachment, reason } => {
                self.undeliverable(attachment, reason);
                Ok(())
            }
            Input::StartRecording(recorder) => self.start_recording(recorder),
            Input::StopRecording => self.stop_recording(),
            Input::Timeout => {
                self.on_timeout();
                Ok(())
            }
            Input::Remove { participant } => {
                self.remove(&participant, LeaveReason::Dismissed);
                Ok(())
            }
            Input::Close => {
                self.close();
                Ok(())
            }
        };
        self.dirty = true;
        result
    }

    /// The next thing to do, after driving every connection until it is quiet.
    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        if std::mem::take(&mut self.dirty) {
            self.drive();
        }
        self.outputs.pop_front()
    }

    /// When to give the core an [`Input::Timeout`].
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        let mut deadline = self.next_quality_report;
        if !self.members.is_empty() {
            deadline = Some(deadline.map_or(self.next_estimate, |d| d.min(self.next_estimate)));
        }
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
        };
        for member in &mut self.members {
            consider(member.pc.poll_timeout());
            consider(member.grace.map(|g| g.until));
            for published in &member.published {
                consider(published.forwarder.next_deadline());
            }
        }
        deadline
    }

    /// No members are left: the room may end.
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Members now.
    pub(crate) fn member_count(&self) -> usize {
        self.members.len()
    }

    /// What must hold between any two inputs: each track has at most one subscription per
    /// member, never its own publisher's, and only members subscribe. The simulator checks it
    /// after every step.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        for member in &self.members {
            for track in &member.published {
                let mut subscribers: Vec<u64> =
                    track.forwarder.subscriptions().map(|(s, _)| s).collect();
                let count = subscribers.len();
                subscribers.sort_unstable();
                subscribers.dedup();
                if subscribers.len() != count {
                    return Err(format!("{}: a member subscribed twice", track.track_id));
                }
                if subscribers.contains(&member.link) {
                    return Err(format!("{}: its publisher subscribes", track.track_id));
                }
                if let Some(stranger) = subscribers.iter().find(|s| self.link_index(**s).is_none())
                {
                    return Err(format!("{}: link {stranger} is not here", track.track_id));
                }
                let offered = track
                    .forwarder
                    .pending
                    .iter()
                    .filter(|leg| leg.stage == crate::forwarder::LegStage::Offered);
                for leg in offered {
                    let subscriber = self.link_index(leg.subscriber).map(|i| &self.members[i]);
                    if !subscriber.is_some_and(|m| m.negotiation.relay_offered()) {
                        return Err(format!(
                            "{}: a leg waits for an answer to no offer",
                            track.track_id
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The counters since the last call, for the relay-wide metrics.
    pub(crate) fn take_counters(&mut self) -> RoomCounters {
        std::mem::take(&mut self.counters)
    }

    fn on_timeout(&mut self) {
        let now = self.now;
        if self.next_quality_report.is_some_and(|t| t <= now) {
            self.next_quality_report = Some(now + self.config.quality_interval);
            self.report_quality();
        }
        if self.next_estimate <= now {
            self.next_estimate = now + ESTIMATE_EVERY;
            self.read_estimates();
        }
        let expired: Vec<(ParticipantId, LeaveReason)> = self
            .members
            .iter()
            .filter_map(|m| {
                m.grace
                    .filter(|g| g.until <= now)
                    .map(|g| (m.id.clone(), g.reason))
            })
            .collect();
        for (participant, reason) in expired {
            self.remove(&participant, reason);
        }
        self.media_timeouts();
    }

    /// The index of `id` if `attachment` is its current signaling handle.
    fn attached(&self, id: &ParticipantId, attachment: u64) -> Option<usize> {
        self.members
            .iter()
            .position(|m| &m.id == id && m.presence.attached() == Some(attachment))
    }

    fn member_index(&self, id: &ParticipantId) -> Option<usize> {
        self.members.iter().position(|m| &m.id == id)
    }

    fn link_index(&self, link: u64) -> Option<usize> {
        self.members.iter().position(|m| m.link == link)
    }

    /// The member index and track index of the published track `track_id` (track ids are unique
    /// in the room). Only control messages and feedback look tracks up by id; media does not.
    fn track_index(&self, track_id: &str) -> Option<(usize, usize)> {
        self.members.iter().enumerate().find_map(|(p, m)| {
            m.published
                .iter()
                .position(|t| t.track_id == track_id)
                .map(|k| (p, k))
        })
    }

    /// Queues a message to a member; a detached member's are dropped (what matters is sent
    /// again as a snapshot when it resumes: the offer, who is here, the tracks).
    fn send_to(&mut self, index: usize, message: ServerMessage) {
        if let Some(attachment) = self.members[index].presence.attached() {
            self.outputs.push_back(Output::Deliver {
                attachment,
                message,
            });
        }
    }

    fn broadcast_except(&mut self, except: usize, message: ServerMessage) {
        for index in 0..self.members.len() {
            if index != except {
                self.send_to(index, message.clone());
            }
        }
    }

    fn error_to(
        &mut self,
        index: usize,
        code: crate::messages::ErrorCode,
        message: impl Into<String>,
    ) {
        self.send_to(
            index,
            ServerMessage::Error {
                code,
                message: message.into(),
            },
        );
    }

    /// Sends every datagram member `index`'s connection has ready.
    fn flush(&mut self, index: usize) {
        let member = &mut self.members[index];
        while let Some(out) = member.pc.poll_write() {
            self.outputs.push_back(Output::Transmit {
                from: out.transport.local_addr,
                to: member.latch.destination(out.transport.peer_addr),
                data: out.message,
            });
        }
    }
}

/// How often the relay reads each member's downlink estimate (GCC) from its connection.
const ESTIMATE_EVERY: Duration = Duration::from_millis(250);

/// The name a track id gives what a track carries.
fn source_name(source: TrackSource) -> &'static str {
    match source {
        TrackSource::Microphone => "audio",
        TrackSource::Camera => "video",
        TrackSource::Screen => "screen",
    }
}
