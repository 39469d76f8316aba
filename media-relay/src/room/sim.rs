//! A room on virtual time, for tests: a [`RoomCore`] and webrtc-rs client peers (the same sans-IO
//! `rtc` connections, playing the browsers' part) wired together in memory through a simulated
//! network with delay, jitter and loss per path, as str0m's tests do. No socket, task or sleep:
//! the simulation jumps from one deadline to the next (a packet's arrival, a connection's timer,
//! the core's timer, a client's next media), so a minute of call runs in a moment and the same
//! seed gives the same run.
//!
//! Each client publishes Opus-shaped audio (50 packets/s) and VP8 video (15 frames/s: a keyframe
//! first and whenever the relay asks with a PLI, as a browser does; optionally as three simulcast
//! layers told apart by rid, as Chromium sends them), answers the relay's offers, reports a
//! receive bandwidth (REMB) when told to, and counts what it receives per track: packets,
//! keyframes, gaps in the sequence, and simulcast layer switches.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::{Datagram, Input, Output, RoomConfig, RoomCore};
use crate::codec::Codec;
use crate::engine::is_keyframe_request;
use crate::messages::{
    ClientMessage, LeaveReason, MediaKind, ParticipantId, RoomId, ServerMessage,
};
use crate::socket::stun_username;
use crate::test_peer::light::{answer_offer, candidate_message, client_connection, host_candidate};
use crate::test_peer::media::{FrameSource, vp8_layer_tag};

/// The simulcast layers a client sends when asked to, highest first as Chromium lists them:
/// rid and the divisor of the frame sizes.
const SIMULCAST: [(&str, usize); 3] = [("f", 1), ("h", 3), ("q", 9)];

/// How many packets of a stream name its mid and rid (about 2 s of a layer at 15 frames/s).
const NAMING_PACKETS: u32 = 60;

/// The relay's one address in the simulated network.
const RELAY: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    7882,
);

/// One direction of a client's path: what the network does to its datagrams.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Impairment {
    pub(super) delay: Duration,
    /// Up to this much more delay, drawn per packet (so packets may be reordered).
    pub(super) jitter: Duration,
    /// Fraction of media datagrams (SRTP and SRTCP) dropped; ICE and DTLS are left alone, so
    /// that what a test measures is media repair, not the handshake's retransmission.
    pub(super) loss: f64,
    /// A bottleneck of this many bit/s (0: none): datagrams wait their turn in its queue, and
    /// one that would wait longer than `queue` is dropped (drop-tail).
    pub(super) rate_bps: u64,
    /// The bottleneck's queue, as the longest wait it holds.
    pub(super) queue: Duration,
}

impl Impairment {
    /// When a datagram of `len` bytes handed to the path at `now` leaves its bottleneck (`busy`:
    /// when the bottleneck is free again), or `None` when the queue is full and it is dropped.
    fn depart(&self, now: Instant, busy: &mut Instant, len: usize) -> Option<Instant> {
        if self.rate_bps == 0 {
            return Some(now);
        }
        let start = (*busy).max(now);
        if start - now > self.queue {
            return None;
        }
        let sending = Duration::from_secs_f64(len as f64 * 8.0 / self.rate_bps as f64);
        *busy = start + sending;
        Some(*busy)
    }
}

struct InFlight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

/// What a client counted of one track it receives.
#[derive(Debug, Default, Clone)]
pub(super) struct Received {
    pub(super) packets: u64,
    pub(super) keyframes: u64,
    pub(super) first_packet_at: Option<Instant>,
    pub(super) first_keyframe_at: Option<Instant>,
    /// Sequence numbers seen (extended to 64 bits), to find what never arrived.
    seen: BTreeMap<u64, ()>,
    highest: Option<u64>,
    /// The simulcast layer (rank, 0 = lowest) of the last frame, from its tag.
    pub(super) layer: Option<u8>,
    pub(super) layer_switches: u64,
    /// Switches whose first frame was not a keyframe (an undecodable picture).
    pub(super) switches_without_keyframe: u64,
    /// Packets by payload type.
    pub(super) payload_types: BTreeMap<u8, u64>,
    /// Audio: the timestamps of the frames it could play, from a packet's primary or from a
    /// later RED packet's redundant block.
    pub(super) frames: BTreeMap<u32, ()>,
    /// The length of the last payload.
    pub(super) last_payload_len: usize,
}

impl Received {
    fn on_packet(&mut self, now: Instant, sequence: u16, keyframe: bool, layer: Option<u8>) {
        if let Some(layer) = layer {
            if self.layer.is_some_and(|l| l != layer) {
                self.layer_switches += 1;
                if !keyframe {
                    self.switches_without_keyframe += 1;
                }
            }
            self.layer = Some(layer);
        }
        self.packets += 1;
        self.first_packet_at.get_or_insert(now);
        if keyframe {
            self.keyframes += 1;
            self.first_keyframe_at.get_or_insert(now);
        }
        let extended = match self.highest {
            None => u64::from(sequence) + (1 << 16),
            Some(highest) => {
                let base = highest & !0xffff;
                [base.wrapping_sub(1 << 16), base, base + (1 << 16)]
                    .into_iter()
                    .map(|b| b + u64::from(sequence))
                    .min_by_key(|c| c.abs_diff(highest))
                    .expect("three candidates")
            }
        };
        self.highest = Some(self.highest.map_or(extended, |h| h.max(extended)));
        self.seen.insert(extended, ());
    }

    /// Audio frames (one per 960 ticks) between the first and the last it could play that it
    /// could not.
    pub(super) fn frames_missing(&self) -> u64 {
        match (self.frames.keys().next(), self.frames.keys().next_back()) {
            (Some(first), Some(last)) => {
                u64::from(last.wrapping_sub(*first) / 960) + 1 - self.frames.len() as u64
            }
            _ => 0,
        }
    }

    /// Sequence numbers between the first and the last received that never arrived.
    pub(super) fn missing(&self) -> u64 {
        match (self.seen.keys().next(), self.seen.keys().next_back()) {
            (Some(first), Some(last)) => last - first + 1 - self.seen.len() as u64,
            _ => 0,
        }
    }
}

/// A stream a client sends: a track, or one simulcast layer of its video.
struct Sending {
    sender: RTCRtpSenderId,
    codec: Codec,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    frames: FrameSource,
    keyframe_wanted: bool,
    /// A simulcast layer: its rid and the divisor of the frame sizes.
    layer: Option<(&'static str, usize)>,
    /// The header extensions every packet carries (simulcast: mid and rid), found once the
    /// connection negotiated their ids.
    extensions: Option<Vec<(u8, Bytes)>>,
    /// Packets still to carry the extensions: like a browser, a simulcast layer names its mid
    /// and rid only until the receiver has seen them (Chromium stops once a receiver report
    /// names the SSRC); later packets are known by their SSRC alone.
    naming_left: u32,
    /// Audio sent as RED: the frame before, carried again in the next packet.
    red: Option<Vec<u8>>,
}

/// A webrtc-rs peer playing a browser's part.
pub(super) struct Client {
    pub(super) name: String,
    pub(super) addr: SocketAddr,
    pc: RTCPeerConnection,
    /// Its signaling handle's attachment while it has one.
    pub(super) attachment: Option<u64>,
    pub(super) link: u64,
    /// Every message the relay sent it, in order.
    pub(super) messages: Vec<ServerMessage>,
    /// Messages waiting for it to act on (answers, offers).
    unread: Vec<ServerMessage>,
    /// Hold the relay's offers unanswered (to test what happens meanwhile).
    pub(super) hold_offers: bool,
    held: Vec<String>,
    pub(super) connected_at: Option<Instant>,
    pub(super) state: RTCPeerConnectionState,
    pub(super) received: HashMap<String, Received>,
    /// The stream each track it receives came in (its `msid` stream id), by track id.
    pub(super) streams: HashMap<String, String>,
    /// Keyframe requests the relay sent it.
    pub(super) plis: u64,
    sending: Vec<Sending>,
    /// Send media (the network still carries what is in flight when it stops).
    pub(super) publishing: bool,
    next_audio: Instant,
    next_video: Instant,
    /// The receivers of the video it gets (REMB goes out through one).
    receivers: Vec<rtc::rtp_transceiver::RTCRtpReceiverId>,
    /// The SSRC of video it receives (what its REMB names).
    video_ssrc: Option<u32>,
    /// The receive bandwidth it reports every 200 ms, bit/s.
    pub(super) remb: Option<u64>,
    next_remb: Instant,
    /// Its datagrams are dropped both ways (it went away without a word).
    pub(super) unplugged: bool,
    /// Every SSRC a description it applied named (`a=ssrc:`); kept after they go, so that what
    /// was in flight is not counted below.
    known_ssrcs: HashSet<u32>,
    /// RTP packets that reached it on an SSRC no description had named yet: a browser drops
    /// them, so a keyframe among them is a picture lost.
    pub(super) unannounced_rtp: u64,
    pub(super) uplink: Impairment,
    pub(super) downlink: Impairment,
    /// When each direction's bottleneck is free again.
    up_busy: Instant,
    down_busy: Instant,
}

impl Client {
    /// Messages of one kind it was sent, by a predicate.
    pub(super) fn count(&self, matches: impl Fn(&ServerMessage) -> bool) -> usize {
        self.messages.iter().filter(|m| matches(m)).count()
    }

    /// What it received of the first track whose id contains `from` and `kind` ("audio", "video").
    pub(super) fn track_from(&self, from: &str, kind: &str) -> Option<&Received> {
        self.received
            .iter()
            .find(|(id, _)| id.starts_with(&format!("{from}-{kind}-")))
            .map(|(_, r)| r)
    }

    /// Makes an offer of its connection as it is now and returns it.
    fn offer(&mut self, now: Instant) -> String {
        let offer = self.pc.create_offer(None).expect("offer");
        self.pc
            .set_local_description(now, offer)
            .expect("local offer");
        self.pc.local_description().expect("described").sdp
    }

    /// Applies the relay's offer and returns the answer.
    fn answer(&mut self, now: Instant, sdp: String) -> String {
        self.known_ssrcs.extend(announced_ssrcs(&sdp));
        answer_offer(&mut self.pc, now, sdp).expect("offer answered")
    }
}

/// A room and its clients on one virtual clock.
pub(super) struct Sim {
    pub(super) now: Instant,
    pub(super) core: RoomCore,
    pub(super) clients: Vec<Client>,
    flights: Vec<InFlight>,
    next_seq: u64,
    rng: StdRng,
    next_attachment: u64,
    next_link: u64,
    /// The socket's routes, learnt as the real one learns them (`socket.rs`).
    by_ufrag: HashMap<String, u64>,
    by_addr: HashMap<SocketAddr, u64>,
    /// Datagrams that reached the relay from an address it could not route.
    pub(super) unrouted: u64,
    /// Media datagrams the network dropped.
    pub(super) dropped: u64,
    /// Answers to commands the core refused.
    pub(super) refusals: Vec<crate::error::RelayError>,
    /// Clients that join from now on take Opus RED and send their audio as RED, as Chromium
    /// does when the page puts RED first.
    pub(super) red: bool,
}

impl Sim {
    /// A room with the relay's defaults and `grace` for resumes.
    pub(super) fn new(seed: u64, grace: Duration) -> Self {
        let now = Instant::now();
        let config = RoomConfig {
            max_participants: crate::relay::MAX_ROOM_SIZE,
            keyframe_request_interval: Duration::from_millis(500),
            resume_grace: grace,
            quality_interval: Duration::from_secs(5),
            host_candidates: vec![RELAY],
        };
        Self {
            now,
            core: RoomCore::new(RoomId::from("sim"), config, now),
            clients: Vec::new(),
            flights: Vec::new(),
            next_seq: 0,
            rng: StdRng::seed_from_u64(seed),
            next_attachment: 1,
            next_link: 1,
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            unrouted: 0,
            dropped: 0,
            refusals: Vec::new(),
            red: false,
        }
    }

    pub(super) fn client(&self, name: &str) -> &Client {
        self.clients
            .iter()
            .rev()
            .find(|c| c.name == name)
            .expect("a client of that name")
    }

    pub(super) fn client_mut(&mut self, name: &str) -> &mut Client {
        self.clients
            .iter_mut()
            .rev()
            .find(|c| c.name == name)
            .expect("a client of that name")
    }

    fn input(&mut self, input: Input) -> Result<(), crate::error::RelayError> {
        self.core.handle(self.now, input)
    }

    /// A new client `name` joins (replacing a member of that name when `replace`), publishes
    /// audio and video, and sends its offer and candidate.
    pub(super) fn join(&mut self, name: &str, replace: bool) -> bool {
        self.join_with(name, replace, false)
    }

    /// Like [`Sim::join`], the video as three simulcast layers when `simulcast`.
    pub(super) fn join_with(&mut self, name: &str, replace: bool, simulcast: bool) -> bool {
        let attachment = self.next_attachment;
        self.next_attachment += 1;
        let link = self.next_link;
        self.next_link += 1;
        let joined = self.input(Input::Join {
            participant: ParticipantId::from(name),
            attachment,
            link,
            replace,
        });
        if let Err(err) = joined {
            self.refusals.push(err);
            return false;
        }
        let host = 10 + self.clients.len() as u8;
        let addr = SocketAddr::from(([10, 0, 1, host], 5000));
        let red = self.red;
        let mut pc = client_connection(self.now, red).expect("client connection");
        let mut sending = Vec::new();
        for (n, codec) in [Codec::Opus, Codec::Vp8].into_iter().enumerate() {
            let layers: &[(&'static str, usize)] = match codec {
                Codec::Vp8 if simulcast => &SIMULCAST,
                _ => &[("", 1)],
            };
            let ssrc = |i: usize| 0x5000_0000 + (link as u32) * 16 + (n * 4 + i) as u32;
            let encodings = layers
                .iter()
                .enumerate()
                .map(|(i, (rid, _))| encoding(codec, rid, ssrc(i)))
                .collect();
            let kind = crate::engine::rtp_kind(codec.kind());
            let track = MediaStreamTrack::new(
                format!("{name}-stream"),
                format!("{name}-{}", kind_name(codec.kind())),
                format!("{name}-{}", kind_name(codec.kind())),
                kind,
                encodings,
            );
            let sender = pc.add_track(track).expect("track added");
            for (i, (rid, divisor)) in layers.iter().enumerate() {
                let frames = if simulcast {
                    let rank = (SIMULCAST.len() - 1 - i) as u8;
                    FrameSource::vp8_layer(1000, rank, SIMULCAST.len() as u8)
                } else {
                    FrameSource::new(Codec::Vp8, 1000)
                };
                sending.push(Sending {
                    sender,
                    codec,
                    ssrc: ssrc(i),
                    sequence: 1000,
                    timestamp: 0,
                    frames,
                    keyframe_wanted: true,
                    layer: (simulcast && codec == Codec::Vp8).then_some((*rid, *divisor)),
                    extensions: (!simulcast || codec != Codec::Vp8).then(Vec::new),
                    naming_left: NAMING_PACKETS,
                    red: (red && codec == Codec::Opus).then(Vec::new),
                });
            }
        }
        let offer = pc.create_offer(None).expect("offer");
        pc.set_local_description(self.now, offer)
            .expect("local offer");
        let candidate = host_candidate(addr).expect("host candidate");
        pc.add_local_candidate(candidate.clone())
            .expect("candidate");
        let sdp = pc.local_description().expect("described").sdp;
        self.clients.push(Client {
            name: name.to_owned(),
            addr,
            pc,
            attachment: Some(attachment),
            link,
            messages: Vec::new(),
            unread: Vec::new(),
            hold_offers: false,
            held: Vec::new(),
            connected_at: None,
            state: RTCPeerConnectionState::New,
            received: HashMap::new(),
            streams: HashMap::new(),
            plis: 0,
            sending,
            publishing: true,
            next_audio: self.now,
            next_video: self.now,
            receivers: Vec::new(),
            video_ssrc: None,
            remb: None,
            next_remb: self.now,
            unplugged: false,
            known_ssrcs: HashSet::new(),
            unannounced_rtp: 0,
            uplink: Impairment::default(),
            downlink: Impairment::default(),
            up_busy: self.now,
            down_busy: self.now,
        });
        self.send(name, ClientMessage::Offer { sdp });
        self.send(name, candidate_message(candidate));
        true
    }

    /// A signaling message from the newest client `name`, on its current handle.
    pub(super) fn send(&mut self, name: &str, message: ClientMessage) {
        let client = self.client(name);
        let Some(attachment) = client.attachment else {
            return;
        };
        let _ = self.input(Input::Client {
            participant: ParticipantId::from(name),
            attachment,
            message,
        });
    }

    /// Client `name` stops sending its video track and offers the change, as a browser does
    /// after `removeTrack`.
    pub(super) fn stop_video(&mut self, name: &str) {
        let now = self.now;
        let client = self.client_mut(name);
        let sender = client
            .sending
            .iter()
            .find(|s| s.codec == Codec::Vp8)
            .expect("a video track")
            .sender;
        client.sending.retain(|s| s.sender != sender);
        client.pc.remove_track(sender).expect("track removed");
        let sdp = client.offer(now);
        self.send(name, ClientMessage::Offer { sdp });
    }

    /// Client `name` shares its screen as the web client does: it declares the track
    /// (`screen_share`), adds it in a stream of its own and offers.
    pub(super) fn share_screen(&mut self, name: &str) {
        let now = self.now;
        let client = self.client_mut(name);
        let ssrc = 0x6000_0000 + client.link as u32;
        let track_id = format!("{name}-screen");
        let track = MediaStreamTrack::new(
            format!("{name}-screen-stream"),
            track_id.clone(),
            track_id.clone(),
            crate::engine::rtp_kind(MediaKind::Video),
            vec![encoding(Codec::Vp8, "", ssrc)],
        );
        // A transceiver of its own, as the web client asks for: `add_track` (like a browser's
        // `addTrack`) would reuse the unused sender of a track the relay sends it.
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![],
            send_encodings: vec![],
        };
        let sender = client
            .pc
            .add_transceiver_from_track(track, Some(init))
            .map(RTCRtpSenderId::from)
            .expect("screen track added");
        client.sending.push(Sending {
            sender,
            codec: Codec::Vp8,
            ssrc,
            sequence: 1000,
            timestamp: 0,
            frames: FrameSource::new(Codec::Vp8, 1000),
            keyframe_wanted: true,
            layer: None,
            extensions: Some(Vec::new()),
            naming_left: NAMING_PACKETS,
            red: None,
        });
        let sdp = client.offer(now);
        let track = Some(track_id);
        self.send(name, ClientMessage::ScreenShare { track });
        self.send(name, ClientMessage::Offer { sdp });
    }

    /// Client `name` stops sharing its screen: says so, removes the track and offers.
    pub(super) fn stop_screen(&mut self, name: &str) {
        let now = self.now;
        let client = self.client_mut(name);
        let ssrc = 0x6000_0000 + client.link as u32;
        let sender = client
            .sending
            .iter()
            .find(|s| s.ssrc == ssrc)
            .expect("a screen track")
            .sender;
        client.sending.retain(|s| s.sender != sender);
        client.pc.remove_track(sender).expect("track removed");
        let sdp = client.offer(now);
        self.send(name, ClientMessage::ScreenShare { track: None });
        self.send(name, ClientMessage::Offer { sdp });
    }

    /// Client `name`'s network changes (a new address, as when a phone moves from Wi-Fi to 4G):
    /// it restarts ICE from `addr` and offers, as a browser does after `restartIce()`.
    pub(super) fn move_to(&mut self, name: &str, addr: SocketAddr) {
        let now = self.now;
        let client = self.client_mut(name);
        client.addr = addr;
        client.pc.restart_ice();
        client.offer(now);
        let candidate = host_candidate(addr).expect("host candidate");
        client
            .pc
            .add_local_candidate(candidate.clone())
            .expect("candidate");
        let sdp = client.pc.local_description().expect("described").sdp;
        self.send(name, ClientMessage::Offer { sdp });
        self.send(name, candidate_message(candidate));
    }

    /// Client `name`'s signaling handle is dropped (its socket closed).
    pub(super) fn drop_signaling(&mut self, name: &str) {
        if let Some(attachment) = self.client_mut(name).attachment.take() {
            let _ = self.input(Input::Undeliverable {
                attachment,
                reason: LeaveReason::Vanished,
            });
        }
    }

    /// Client `name` comes back on a new signaling handle.
    pub(super) fn resume(&mut self, name: &str) -> bool {
        let attachment = self.next_attachment;
        self.next_attachment += 1;
        match self.input(Input::Resume {
            participant: ParticipantId::from(name),
            attachment,
        }) {
            Ok(()) => {
                self.client_mut(name).attachment = Some(attachment);
                true
            }
            Err(err) => {
                self.refusals.push(err);
                false
            }
        }
    }

    /// Client `name` answers the relay's offers it holds now and goes on holding later ones.
    pub(super) fn answer_held(&mut self, name: &str) {
        let now = self.now;
        let client = self.client_mut(name);
        let held = std::mem::take(&mut client.held);
        let replies: Vec<String> = held
            .into_iter()
            .map(|sdp| client.answer(now, sdp))
            .collect();
        for sdp in replies {
            self.send(name, ClientMessage::Answer { sdp });
        }
        self.settle();
    }

    /// Runs the room for `duration` of virtual time.
    pub(super) fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        self.run_until(until, |_| false);
    }

    /// Runs until `done` holds (checked after every step) or `limit` of virtual time passed;
    /// whether it held.
    pub(super) fn run_until_true(&mut self, limit: Duration, done: impl Fn(&Sim) -> bool) -> bool {
        let until = self.now + limit;
        self.run_until(until, done)
    }

    fn run_until(&mut self, until: Instant, done: impl Fn(&Sim) -> bool) -> bool {
        loop {
            self.settle();
            if done(self) {
                return true;
            }
            let mut next = until;
            let mut consider = |t: Option<Instant>| {
                if let Some(t) = t {
                    next = next.min(t);
                }
            };
            consider(self.flights.iter().map(|f| f.at).min());
            consider(self.core.poll_timeout());
            for client in &mut self.clients {
                consider(client.pc.poll_timeout());
                if client.publishing && client.connected_at.is_some() {
                    consider(Some(client.next_audio.min(client.next_video)));
                }
                if client.remb.is_some() {
                    consider(Some(client.next_remb));
                }
            }
            if next >= until {
                self.now = until;
                self.settle();
                return done(self);
            }
            self.now = self.now.max(next);
            self.fire();
        }
    }

    /// Everything due at `now`: arrivals, timers, media.
    fn fire(&mut self) {
        let now = self.now;
        let mut due: Vec<InFlight> = Vec::new();
        let mut i = 0;
        while i < self.flights.len() {
            if self.flights[i].at <= now {
                due.push(self.flights.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|f| (f.at, f.seq));
        for flight in due {
            self.arrive(flight);
        }
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            let _ = self.input(Input::Timeout);
        }
        for client in &mut self.clients {
            if client.pc.poll_timeout().is_some_and(|t| t <= now) {
                let _ = client.pc.handle_timeout(now);
            }
            if client.publishing && client.connected_at.is_some() {
                send_media(client, now);
            }
            if let Some(bitrate) = client.remb.filter(|_| client.next_remb <= now) {
                client.next_remb = now + REMB_EVERY;
                report_bandwidth(client, now, bitrate);
            }
        }
    }

    fn arrive(&mut self, flight: InFlight) {
        if flight.to == RELAY {
            let link = match self.by_addr.get(&flight.from) {
                Some(link) => Some(*link),
                None => stun_username(&flight.data)
                    .and_then(|u| u.split(':').next())
                    .and_then(|ufrag| self.by_ufrag.get(ufrag).copied())
                    .inspect(|link| {
                        self.by_addr.insert(flight.from, *link);
                    }),
            };
            let Some(link) = link else {
                self.unrouted += 1;
                return;
            };
            let _ = self.input(Input::Datagram(Datagram {
                link,
                local: RELAY,
                peer: flight.from,
                data: BytesMut::from(&flight.data[..]),
            }));
            return;
        }
        let now = self.now;
        if let Some(client) = self
            .clients
            .iter_mut()
            .find(|c| c.addr == flight.to && !c.unplugged)
        {
            if rtp_ssrc(&flight.data).is_some_and(|ssrc| !client.known_ssrcs.contains(&ssrc)) {
                client.unannounced_rtp += 1;
            }
            let _ = client.pc.handle_read(TaggedBytesMut {
                now,
                transport: TransportContext {
                    local_addr: flight.to,
                    peer_addr: flight.from,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message: BytesMut::from(&flight.data[..]),
            });
        }
    }

    /// Puts a datagram on the network, through the path's impairment; `depart` is when it left
    /// the path's bottleneck (`None`: dropped there).
    fn transmit(
        &mut self,
        (from, to): (SocketAddr, SocketAddr),
        data: &[u8],
        impairment: Impairment,
        depart: Option<Instant>,
    ) {
        let Some(depart) = depart else {
            self.dropped += 1;
            return;
        };
        let media = matches!(data.first(), Some(128..=191));
        if media && impairment.loss > 0.0 && self.rng.gen_bool(impairment.loss.min(1.0)) {
            self.dropped += 1;
            return;
        }
        let jitter = if impairment.jitter.is_zero() {
            Duration::ZERO
        } else {
            impairment.jitter.mul_f64(self.rng.gen_range(0.0..1.0))
        };
        self.next_seq += 1;
        self.flights.push(InFlight {
            at: depart + impairment.delay + jitter,
            seq: self.next_seq,
            from,
            to,
            data: data.to_vec(),
        });
    }

    /// Carries out everything that needs no time: the core's outputs, the clients' signaling,
    /// their datagrams, events and received media; until nothing moves.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(output) = self.core.poll_output() {
                moved = true;
                self.carry_out(output);
            }
            for index in 0..self.clients.len() {
                moved |= self.client_turn(index);
            }
            if let Err(broken) = self.core.check_invariants() {
                panic!("the room's invariants broke: {broken}");
            }
            if let Some(client) = self.clients.iter().find(|c| c.unannounced_rtp > 0) {
                panic!(
                    "{} got RTP on an SSRC no description it applied had named",
                    client.name
                );
            }
            if !moved {
                break;
            }
        }
    }

    fn carry_out(&mut self, output: Output) {
        match output {
            Output::Transmit { from, to, data } => {
                let now = self.now;
                let Some((downlink, depart)) = self
                    .clients
                    .iter_mut()
                    .find(|c| c.addr == to && !c.unplugged)
                    .map(|c| {
                        (
                            c.downlink,
                            c.downlink.depart(now, &mut c.down_busy, data.len()),
                        )
                    })
                else {
                    return;
                };
                self.transmit((from, to), &data, downlink, depart);
            }
            Output::Deliver {
                attachment,
                message,
            } => {
                if let Some(client) = self
                    .clients
                    .iter_mut()
                    .find(|c| c.attachment == Some(attachment))
                {
                    client.messages.push(message.clone());
                    client.unread.push(message);
                }
            }
            Output::Release { attachment } => {
                for client in &mut self.clients {
                    if client.attachment == Some(attachment) {
                        client.attachment = None;
                    }
                }
            }
            Output::Route { ufrag, link } => {
                self.by_ufrag.insert(ufrag, link);
            }
            Output::Unroute { link } => {
                self.by_ufrag.retain(|_, l| *l != link);
                self.by_addr.retain(|_, l| *l != link);
            }
        }
    }

    /// One client's turn: act on the relay's messages, then its connection's output.
    fn client_turn(&mut self, index: usize) -> bool {
        let now = self.now;
        let mut moved = false;
        let mut replies = Vec::new();
        {
            let client = &mut self.clients[index];
            for message in std::mem::take(&mut client.unread) {
                moved = true;
                match message {
                    ServerMessage::Answer { sdp } => {
                        client.known_ssrcs.extend(announced_ssrcs(&sdp));
                        let answer = RTCSessionDescription::answer(sdp).expect("answer parses");
                        client
                            .pc
                            .set_remote_description(now, answer)
                            .unwrap_or_else(|e| panic!("{}: answer applies: {e}", client.name));
                    }
                    ServerMessage::Offer { sdp } if client.hold_offers => client.held.push(sdp),
                    ServerMessage::Offer { sdp } => replies.push(client.answer(now, sdp)),
                    _ => {}
                }
            }
            if !client.hold_offers {
                for sdp in std::mem::take(&mut client.held) {
                    replies.push(client.answer(now, sdp));
                }
            }
        }
        let name = self.clients[index].name.clone();
        for sdp in replies {
            self.send(&name, ClientMessage::Answer { sdp });
        }
        let client = &mut self.clients[index];
        let mut datagrams = Vec::new();
        while let Some(out) = client.pc.poll_write() {
            datagrams.push((
                out.transport.local_addr,
                out.transport.peer_addr,
                out.message,
            ));
        }
        while let Some(event) = client.pc.poll_event() {
            moved = true;
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    client.state = state;
                    if state == RTCPeerConnectionState::Connected {
                        client.connected_at.get_or_insert(now);
                    }
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    if is_video(&init.track_id) {
                        client.receivers.push(init.receiver_id);
                    }
                    if let Some(stream) = init.stream_ids.first() {
                        client.streams.insert(init.track_id.clone(), stream.clone());
                    }
                }
                _ => {}
            }
        }
        while let Some(message) = client.pc.poll_read() {
            moved = true;
            match message.message {
                RTCMessage::RtpPacket(track_id, packet) => {
                    let video = is_video(&track_id);
                    let keyframe = video && Codec::Vp8.is_keyframe_start(&packet.payload);
                    let layer = video.then(|| vp8_layer_tag(&packet.payload)).flatten();
                    if video {
                        client.video_ssrc = Some(packet.header.ssrc);
                    }
                    let received = client.received.entry(track_id).or_default();
                    *received
                        .payload_types
                        .entry(packet.header.payload_type)
                        .or_default() += 1;
                    received.last_payload_len = packet.payload.len();
                    if !video {
                        let at = packet.header.timestamp;
                        received.frames.insert(at, ());
                        if packet.header.payload_type == crate::red::RED_PAYLOAD_TYPE {
                            for back in
                                crate::red::redundant_offsets(&packet.payload).unwrap_or_default()
                            {
                                received.frames.insert(at.wrapping_sub(u32::from(back)), ());
                            }
                        }
                    }
                    received.on_packet(now, packet.header.sequence_number, keyframe, layer);
                }
                RTCMessage::RtcpPacket(_, packets) => {
                    for packet in packets.iter().filter(|p| is_keyframe_request(p.as_ref())) {
                        client.plis += 1;
                        let asked = packet
                            .as_any()
                            .downcast_ref::<PictureLossIndication>()
                            .map(|pli| pli.media_ssrc);
                        for sending in &mut client.sending {
                            if sending.codec == Codec::Vp8
                                && asked.is_none_or(|ssrc| ssrc == sending.ssrc)
                            {
                                sending.keyframe_wanted = true;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let (addr, uplink, unplugged) = (client.addr, client.uplink, client.unplugged);
        moved |= !datagrams.is_empty();
        if !unplugged {
            // What it still sends from an address it no longer has is lost with that network.
            for (from, to, data) in datagrams.into_iter().filter(|(from, ..)| *from == addr) {
                let client = &mut self.clients[index];
                let depart = uplink.depart(now, &mut client.up_busy, data.len());
                self.transmit((from, to), &data, uplink, depart);
            }
        }
        moved
    }
}

/// The SSRC of an RTP packet (not RTCP, STUN or DTLS; SRTP leaves the header clear).
fn rtp_ssrc(datagram: &[u8]) -> Option<u32> {
    let rtp = matches!(datagram.first(), Some(128..=191))
        && datagram.len() >= 12
        && !(64..=95).contains(&(datagram[1] & 0x7f));
    rtp.then(|| u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]))
}

/// The SSRCs a session description names.
fn announced_ssrcs(sdp: &str) -> impl Iterator<Item = u32> + '_ {
    sdp.lines().filter_map(|line| {
        let rest = line.strip_prefix("a=ssrc:")?;
        rest.split(' ').next()?.parse().ok()
    })
}

/// How often a client reports its receive bandwidth, when it does.
const REMB_EVERY: Duration = Duration::from_millis(200);

/// Sends a REMB of `bitrate` through one of the client's video receivers.
fn report_bandwidth(client: &mut Client, now: Instant, bitrate: u64) {
    let remb = ReceiverEstimatedMaximumBitrate {
        sender_ssrc: 0,
        bitrate: bitrate as f32,
        ssrcs: client.video_ssrc.into_iter().collect(),
    };
    if let Some(mut receiver) = client
        .receivers
        .first()
        .and_then(|id| client.pc.rtp_receiver(*id))
    {
        let _ = receiver.write_rtcp(now, vec![Box::new(remb)]);
    }
}

/// Audio every 20 ms and a video frame every 66 ms that are due by `now`.
fn send_media(client: &mut Client, now: Instant) {
    const AUDIO_EVERY: Duration = Duration::from_millis(20);
    const VIDEO_EVERY: Duration = Duration::from_micros(66_667);
    let mid = video_mid(&client.pc);
    for sending in &mut client.sending {
        if sending.extensions.is_none() {
            sending.extensions = simulcast_extensions(&mut client.pc, sending, mid.as_deref());
        }
    }
    while client.next_audio <= now {
        let at = client.next_audio;
        client.next_audio += AUDIO_EVERY;
        for sending in client.sending.iter_mut().filter(|s| s.codec == Codec::Opus) {
            // 60 bytes of a frame numbered by its sequence.
            let mut frame = vec![0xfc; 60];
            frame[1..3].copy_from_slice(&sending.sequence.to_be_bytes());
            let payload = match sending.red.as_mut() {
                Some(before) => {
                    let redundant: &[(u16, &[u8])] = if before.is_empty() {
                        &[]
                    } else {
                        &[(960, before.as_slice())]
                    };
                    let payload = crate::red::encode(redundant, &frame);
                    *before = frame;
                    payload
                }
                None => frame,
            };
            write(&mut client.pc, sending, at, vec![(false, payload)], 960);
        }
    }
    while client.next_video <= now {
        let at = client.next_video;
        client.next_video += VIDEO_EVERY;
        for sending in client.sending.iter_mut().filter(|s| s.codec == Codec::Vp8) {
            let keyframe = std::mem::take(&mut sending.keyframe_wanted);
            let divisor = sending.layer.map_or(1, |(_, d)| d);
            let size = if keyframe { 2400 } else { 900 } / divisor;
            let packets = sending.frames.frame(keyframe, size);
            write(&mut client.pc, sending, at, packets, 6000);
        }
    }
}

/// The mid of the client's video section, from its local description.
fn video_mid(pc: &RTCPeerConnection) -> Option<String> {
    let sdp = pc.local_description()?.sdp;
    let video = sdp
        .split("m=")
        .find(|section| section.starts_with("video"))?;
    video
        .lines()
        .find_map(|line| line.strip_prefix("a=mid:"))
        .map(|mid| mid.trim().to_owned())
}

/// A simulcast layer's mid and rid header extensions, once their ids are negotiated (what a
/// receiver tells the layers apart by: their SSRCs are announced nowhere).
fn simulcast_extensions(
    pc: &mut RTCPeerConnection,
    sending: &Sending,
    mid: Option<&str>,
) -> Option<Vec<(u8, Bytes)>> {
    let (rid, _) = sending.layer?;
    let mut sender = pc.rtp_sender(sending.sender)?;
    let parameters = sender.get_parameters();
    let id = |uri: &str| {
        parameters
            .rtp_parameters
            .header_extensions
            .iter()
            .find(|e| e.uri == uri)
            .and_then(|e| u8::try_from(e.id).ok())
    };
    let mid_id = id(rtc::sdp::extmap::SDES_MID_URI)?;
    let rid_id = id(rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI)?;
    Some(vec![
        (mid_id, Bytes::from(mid?.to_owned().into_bytes())),
        (rid_id, Bytes::from_static(rid.as_bytes())),
    ])
}

fn write(
    pc: &mut RTCPeerConnection,
    sending: &mut Sending,
    at: Instant,
    packets: Vec<(bool, Vec<u8>)>,
    step: u32,
) {
    let Some(extensions) = sending.extensions.as_ref() else {
        return; // a simulcast layer before its extensions are negotiated
    };
    for (marker, payload) in packets {
        let mut packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker,
                payload_type: match sending.red {
                    Some(_) => crate::red::RED_PAYLOAD_TYPE,
                    None => sending.codec.payload_type(),
                },
                sequence_number: sending.sequence,
                timestamp: sending.timestamp,
                ssrc: sending.ssrc,
                ..Default::default()
            },
            payload: Bytes::from(payload),
        };
        if sending.naming_left > 0 {
            sending.naming_left -= 1;
            for (id, value) in extensions {
                let _ = packet.header.set_extension(*id, value.clone());
            }
        }
        sending.sequence = sending.sequence.wrapping_add(1);
        if let Some(mut sender) = pc.rtp_sender(sending.sender) {
            let _ = sender.write_rtp(at, packet);
        }
    }
    sending.timestamp = sending.timestamp.wrapping_add(step);
}

/// One encoding a client sends: its codec, rid (empty without simulcast) and SSRC.
fn encoding(codec: Codec, rid: &str, ssrc: u32) -> RTCRtpEncodingParameters {
    RTCRtpEncodingParameters {
        rtp_coding_parameters: RTCRtpCodingParameters {
            rid: rid.to_owned(),
            ssrc: Some(ssrc),
            ..Default::default()
        },
        codec: codec.rtp_codec(),
        ..Default::default()
    }
}

/// Whether a track the relay names is video (a camera or a screen).
fn is_video(track_id: &str) -> bool {
    track_id.contains("-video-") || track_id.contains("-screen-")
}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}
