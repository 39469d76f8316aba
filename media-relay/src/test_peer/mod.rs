//! A webrtc-rs client peer for tests and the load generator: connects to the relay through the
//! relay's signaling messages, publishes synthetic Opus (50 packets/s) and VP8 (configurable
//! frame rate, periodic keyframes, a keyframe on every PLI/FIR), and counts what it receives per
//! remote track. Transport-agnostic: it reads and writes message channels, so a WebSocket client
//! can bridge them to the server's `/ws`.

pub mod delay;
pub mod frames;
pub mod light;
pub mod media;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpSendParameters,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};
use webrtc::rtp_transceiver::{RtpSender, RtpTransceiver};

use crate::RelayError;
use crate::codec::Codec;
use crate::engine::{AUDIO_LEVEL_URI, is_keyframe_request, media_kind, rtp_kind};
use crate::messages::{ClientMessage, IceCandidate, MediaKind, ServerMessage};
use crate::turn::IceServer;
use delay::DelayHistogram;
use frames::{Fed, TrackCounter, TrackCounts};
use media::{FrameSource, append_send_stamp, opus_payload, send_stamp};

/// How a test peer behaves.
#[derive(Debug, Clone)]
pub struct TestPeerConfig {
    /// Local UDP address to bind.
    pub udp_addr: SocketAddr,
    /// Publish Opus audio (else receive audio only).
    pub publish_audio: bool,
    /// Publish video (else receive video only).
    pub publish_video: bool,
    /// The codec of the published video (VP8 or H.264).
    pub video_codec: Codec,
    /// Video frames per second.
    pub video_fps: u32,
    /// A keyframe at least this often (besides the first frame and PLI/FIR answers).
    pub keyframe_interval: Duration,
    /// Bytes of a keyframe.
    pub keyframe_bytes: usize,
    /// Bytes of a delta frame.
    pub delta_frame_bytes: usize,
    /// The RFC 6464 audio level (−dBov, 0 loudest, 127 silence) put on every Opus packet, if any.
    pub audio_level: Option<u8>,
    /// End every published payload with its send time (`media::append_send_stamp`), so that
    /// subscribers on the same machine measure the delay (`ReceivedTrack::delays`).
    pub stamp_packets: bool,
    /// Send the first offer (the relay's way). Off: wait for the server's offer and answer it
    /// (how SFUs such as Janus set up a subscriber).
    pub offer_first: bool,
    /// STUN/TURN servers for the peer's own side (e.g. the relay's `ice_servers_for`).
    pub ice_servers: Vec<IceServer>,
    /// Gather only TURN relay candidates (`iceTransportPolicy: "relay"`), as a client on a
    /// network that lets nothing else through.
    pub relay_only: bool,
    /// Publish VP8 video as three simulcast layers ([`SIMULCAST_LAYERS`]), as a browser with
    /// simulcast on does: one track, three encodings with their own SSRCs, told apart by rid.
    pub simulcast: bool,
    /// Report this receive bandwidth (REMB) from the start; see [`TestPeer::report_bandwidth`].
    pub reported_bandwidth: Option<u64>,
    /// The RTP sequence number every published stream starts at (near 65,535 to cross the
    /// 16-bit wrap, and SRTP's rollover, within seconds).
    pub first_sequence: u16,
}

/// The simulcast layers a test peer sends, in the order its offer lists them (highest first,
/// as many browser set-ups do): rid, the layer's rank (0 = lowest; its frames carry it, see
/// [`media::vp8_layer_tag`]) and the divisor of the configured frame sizes.
pub const SIMULCAST_LAYERS: [(&str, u8, usize); 3] = [("f", 2, 1), ("h", 1, 3), ("q", 0, 9)];

impl Default for TestPeerConfig {
    fn default() -> Self {
        Self {
            udp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            publish_audio: true,
            publish_video: true,
            video_codec: Codec::Vp8,
            video_fps: 30,
            keyframe_interval: Duration::from_secs(3),
            keyframe_bytes: 6000,
            delta_frame_bytes: 1500,
            audio_level: None,
            stamp_packets: false,
            offer_first: true,
            ice_servers: Vec::new(),
            relay_only: false,
            simulcast: false,
            reported_bandwidth: None,
            first_sequence: 1000,
        }
    }
}

/// One remote track as the peer received it.
#[derive(Debug, Clone)]
pub struct ReceivedTrack {
    /// The publisher (the relay sets the stream id to the participant id).
    pub publisher: String,
    /// The track id the relay announced.
    pub track_id: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// The codec its packets arrived in (known from the first packet).
    pub codec: Option<Codec>,
    /// Counts so far.
    pub counts: TrackCounts,
    /// When the first packet arrived (peer clock).
    pub first_packet_at: Option<Instant>,
    /// When the first complete keyframe arrived (peer clock).
    pub first_keyframe_at: Option<Instant>,
    /// The track ended (removed by renegotiation or connection closed).
    pub ended: bool,
    /// Publisher-to-here delays of the packets that carried a send stamp.
    pub delays: DelayHistogram,
}

/// What the peer has seen so far.
#[derive(Debug, Clone, Default)]
pub struct PeerReport {
    /// Remote tracks in arrival order.
    pub tracks: Vec<ReceivedTrack>,
    /// Every relay message other than SDP and candidates, in order.
    pub messages: Vec<ServerMessage>,
    /// The peer connection reached `connected`.
    pub connected: bool,
    /// When it did (peer clock).
    pub connected_at: Option<Instant>,
    /// Keyframe requests (PLI/FIR) the relay sent this peer.
    pub keyframe_requests: u64,
    /// Packets this peer published.
    pub packets_sent: u64,
}

impl PeerReport {
    /// Remote tracks of one kind that have not ended.
    pub fn live_tracks(&self, kind: MediaKind) -> impl Iterator<Item = &ReceivedTrack> {
        self.tracks
            .iter()
            .filter(move |t| t.kind == kind && !t.ended)
    }

    /// Remote tracks of a publisher that have not ended.
    pub fn live_tracks_of<'a>(
        &'a self,
        publisher: &'a str,
    ) -> impl Iterator<Item = &'a ReceivedTrack> {
        self.tracks
            .iter()
            .filter(move |t| t.publisher == publisher && !t.ended)
    }
}

struct Shared {
    report: Mutex<PeerReport>,
    /// The remote tracks, in the order of `PeerReport::tracks`.
    remote_tracks: Mutex<Vec<Arc<dyn TrackRemote>>>,
    changes: watch::Sender<u64>,
    connected: watch::Sender<bool>,
    /// Layers (bit = index in the publication's encodings) asked for a keyframe.
    force_keyframe: AtomicU32,
    /// The bandwidth this peer reports to the relay (REMB) every 200 ms, if set.
    reported_bandwidth: watch::Sender<Option<u64>>,
    /// No video frames are sent before this time (a stalled camera or uplink).
    video_stalled_until: Mutex<Option<Instant>>,
    packets_sent: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PeerReport> {
        // The report is plain data; a panic elsewhere leaves it readable.
        self.report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The remote tracks whose reports `wanted` selects.
    fn remote_tracks_where(
        &self,
        wanted: impl Fn(&ReceivedTrack) -> bool,
    ) -> Vec<Arc<dyn TrackRemote>> {
        let report = self.lock();
        let remote = self
            .remote_tracks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        report
            .tracks
            .iter()
            .zip(remote.iter())
            .filter(|(t, _)| wanted(t))
            .map(|(_, remote)| remote.clone())
            .collect()
    }

    fn update(&self, change: impl FnOnce(&mut PeerReport)) {
        change(&mut self.lock());
        self.changes.send_modify(|n| *n += 1);
    }
}

enum PeerEvent {
    Candidate(IceCandidate),
}

struct Handler {
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<PeerEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.events.send(PeerEvent::Candidate(IceCandidate {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid,
                sdp_mline_index: init.sdp_mline_index,
            }));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            let now = Instant::now();
            self.shared.update(|r| {
                r.connected = true;
                r.connected_at.get_or_insert(now);
            });
            self.shared.connected.send_replace(true);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        tokio::spawn(count_track(self.shared.clone(), track));
    }
}

/// Asks the sender of `media_ssrc` on `track` for a keyframe; whether the PLI went out.
async fn send_pli(track: &dyn TrackRemote, media_ssrc: u32) -> bool {
    let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc,
    };
    track.write_rtcp(vec![Box::new(pli)]).await.is_ok()
}

/// How often a receiver without a picture asks again for a keyframe.
const KEYFRAME_ASK_INTERVAL: Duration = Duration::from_millis(300);

async fn count_track(shared: Arc<Shared>, track: Arc<dyn TrackRemote>) {
    let Some(kind) = media_kind(track.kind().await) else {
        return;
    };
    let publisher = track.stream_id().await;
    let track_id = track.track_id().await;
    let index = {
        // Both lists grow together under the report lock, so indexes agree.
        let mut report = shared.lock();
        shared
            .remote_tracks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(track.clone());
        report.tracks.push(ReceivedTrack {
            publisher,
            track_id,
            kind,
            codec: None,
            counts: TrackCounts::default(),
            first_packet_at: None,
            first_keyframe_at: None,
            ended: false,
            delays: DelayHistogram::default(),
        });
        report.tracks.len() - 1
    };
    let mut counter: Option<TrackCounter> = None;
    // A decoder that has no picture yet asks for one, as a browser's does: video that starts on
    // a delta frame (its keyframe lost, e.g. while the connection's SRTP was being set up) gets a
    // PLI, at most one per `KEYFRAME_ASK_INTERVAL`, until a keyframe comes.
    let mut asked_for_keyframe: Option<Instant> = None;
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(packet) => {
                let now = Instant::now();
                if counter.is_none() {
                    let codec = track
                        .codec(packet.header.ssrc)
                        .await
                        .and_then(|c| Codec::from_mime(&c.mime_type));
                    shared.update(|r| r.tracks[index].codec = codec);
                    counter = Some(TrackCounter::for_codec(
                        codec.or((kind == MediaKind::Video).then_some(Codec::Vp8)),
                    ));
                }
                let Some(counter) = counter.as_mut() else {
                    continue;
                };
                let fed = counter.feed(
                    packet.header.sequence_number,
                    packet.header.marker,
                    &packet.payload,
                );
                let counts = counter.counts().clone();
                if counts.first_frame_keyframe == Some(false)
                    && counts.keyframes == 0
                    && asked_for_keyframe.is_none_or(|at| now - at >= KEYFRAME_ASK_INTERVAL)
                {
                    asked_for_keyframe = Some(now);
                    // Lost, it is asked for again on a later packet.
                    send_pli(track.as_ref(), packet.header.ssrc).await;
                }
                let delay = send_stamp(&packet.payload).map(|sent| {
                    Duration::from_micros(unix_micros(SystemTime::now()).saturating_sub(sent))
                });
                shared.update(|r| {
                    let t = &mut r.tracks[index];
                    t.counts = counts;
                    if let Some(delay) = delay {
                        t.delays.record(delay);
                    }
                    t.first_packet_at.get_or_insert(now);
                    if fed == Fed::Keyframe {
                        t.first_keyframe_at.get_or_insert(now);
                    }
                });
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
    shared.update(|r| r.tracks[index].ended = true);
}

/// Commands from the handle to the peer's signaling task.
enum Command {
    Send(ClientMessage),
    Unpublish(MediaKind),
    /// Drop the signaling channels (as a lost socket would); the connection stays.
    Detach,
    /// Use these signaling channels from now on.
    Attach(mpsc::Sender<ClientMessage>, mpsc::Receiver<ServerMessage>),
    /// Re-offer with fresh ICE credentials.
    RestartIce,
}

/// A running test peer. Dropping it stops its tasks and closes its connection.
pub struct TestPeer {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    pc: Arc<dyn PeerConnection>,
    started_at: Instant,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TestPeer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl TestPeer {
    /// Builds the peer connection, sends the first offer through `to_relay`, and starts
    /// answering relay messages from `from_relay` and publishing once connected.
    pub async fn start(
        config: TestPeerConfig,
        to_relay: mpsc::Sender<ClientMessage>,
        from_relay: mpsc::Receiver<ServerMessage>,
    ) -> Result<Self, RelayError> {
        let started_at = Instant::now();
        let (changes, _) = watch::channel(0);
        let (connected, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            report: Mutex::new(PeerReport::default()),
            remote_tracks: Mutex::new(Vec::new()),
            changes,
            connected,
            force_keyframe: AtomicU32::new(0),
            reported_bandwidth: watch::Sender::new(config.reported_bandwidth),
            video_stalled_until: Mutex::new(None),
            packets_sent: AtomicU64::new(0),
        });
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let handler = Arc::new(Handler {
            shared: shared.clone(),
            events: events_tx,
        });
        let pc = build_peer_connection(
            vec![config.udp_addr],
            &config.ice_servers,
            config.relay_only,
            handler,
        )
        .await?;

        let mut publications = Vec::new();
        for (kind, publish) in [
            (MediaKind::Audio, config.publish_audio),
            (MediaKind::Video, config.publish_video),
        ] {
            if publish {
                let ssrc = match kind {
                    MediaKind::Audio => 0x0A0D_1000 | (started_at.elapsed().subsec_nanos() & 0xfff),
                    MediaKind::Video => 0x0B1D_2000 | (started_at.elapsed().subsec_nanos() & 0xfff),
                };
                let label = format!("{kind:?}").to_lowercase();
                let rids: Vec<&str> = if kind == MediaKind::Video && config.simulcast {
                    SIMULCAST_LAYERS.iter().map(|(rid, _, _)| *rid).collect()
                } else {
                    vec![""]
                };
                let ssrcs: Vec<u32> = (0..rids.len() as u32).map(|i| ssrc + i).collect();
                let encodings = rids
                    .iter()
                    .zip(&ssrcs)
                    .map(|(rid, ssrc)| RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            rid: (*rid).to_owned(),
                            ssrc: Some(*ssrc),
                            ..Default::default()
                        },
                        codec: publication_codec(&config, kind).rtp_codec(),
                        ..Default::default()
                    })
                    .collect();
                let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                    "test-peer".to_owned(),
                    format!("test-peer-{label}"),
                    label,
                    rtp_kind(kind),
                    encodings,
                )));
                let transceiver = pc
                    .add_transceiver_from_track(local.clone() as Arc<dyn TrackLocal>, None)
                    .await?;
                if kind == MediaKind::Video {
                    // Offer every video codec, its own first, as browsers do: the relay forwards
                    // each publisher's codec, which may not be this peer's.
                    let own = publication_codec(&config, kind);
                    let preferences = std::iter::once(own)
                        .chain(Codec::ALL.into_iter().filter(|c| *c != own))
                        .filter(|c| c.kind() == MediaKind::Video)
                        .map(|c| RTCRtpCodecParameters {
                            rtp_codec: c.rtp_codec(),
                            payload_type: c.payload_type(),
                        })
                        .collect();
                    transceiver.set_codec_preferences(preferences).await?;
                }
                let sender = transceiver
                    .sender()
                    .await?
                    .ok_or(webrtc::error::Error::ErrRTPSenderNotExisted)?;
                publications.push(Publication {
                    kind,
                    ssrcs,
                    local,
                    sender,
                    transceiver,
                });
            } else {
                pc.add_transceiver_from_kind(
                    rtp_kind(kind),
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    }),
                )
                .await?;
            }
        }

        if config.offer_first {
            let offer = pc.create_offer(None).await?;
            pc.set_local_description(offer).await?;
            let sdp = pc
                .local_description()
                .await
                .map(|d| d.sdp)
                .ok_or(RelayError::Gone)?;
            to_relay
                .send(ClientMessage::Offer { sdp })
                .await
                .map_err(|_| RelayError::Gone)?;
        }

        let (commands, commands_rx) = mpsc::unbounded_channel();
        let senders = publications
            .iter()
            .map(|p| (p.kind, p.sender.clone()))
            .collect();
        let mut tasks = vec![tokio::spawn(run_signaling(
            pc.clone(),
            senders,
            shared.clone(),
            to_relay,
            from_relay,
            events_rx,
            commands_rx,
        ))];
        for publication in &publications {
            if publication.kind == MediaKind::Video {
                let local = publication.local.clone();
                let shared = shared.clone();
                let ssrcs = publication.ssrcs.clone();
                tasks.push(tokio::spawn(async move {
                    while let Some(TrackLocalEvent::OnRtcpPacket(packets)) = local.poll().await {
                        for packet in packets.iter().filter(|p| is_keyframe_request(p.as_ref())) {
                            // A request names the encoding it wants a keyframe of.
                            let layers = packet
                                .destination_ssrc()
                                .first()
                                .and_then(|ssrc| ssrcs.iter().position(|s| s == ssrc))
                                .map_or(u32::MAX, |layer| 1 << layer);
                            shared.force_keyframe.fetch_or(layers, Ordering::Relaxed);
                            shared.update(|r| r.keyframe_requests += 1);
                        }
                    }
                }));
            }
        }
        tasks.push(tokio::spawn(report_bandwidth(shared.clone())));
        if !publications.is_empty() {
            tasks.push(tokio::spawn(publish(config, shared.clone(), publications)));
        }
        Ok(Self {
            shared,
            commands,
            pc,
            started_at,
            tasks,
        })
    }

    /// When the peer started (its clock; compare with the report's instants).
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// A copy of what the peer has seen so far.
    pub fn report(&self) -> PeerReport {
        let mut report = self.shared.lock().clone();
        report.packets_sent = self.shared.packets_sent.load(Ordering::Relaxed);
        report
    }

    /// Waits until `done` holds for the report, or `timeout` passes: `Err` carries the last
    /// report, for the assertion message.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl FnMut(&PeerReport) -> bool,
    ) -> Result<PeerReport, Box<PeerReport>> {
        wait_for_report(&self.shared.changes, || self.report(), timeout, done).await
    }

    /// Sends no video frames for `length` from now, as a stalled camera or uplink would (the
    /// relay is not told: unlike a mute, the others see a freeze).
    pub fn stall_video(&self, length: Duration) {
        *self
            .shared
            .video_stalled_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now() + length);
    }

    /// Asks for a keyframe (PLI) on every live video track received from `publisher`, as a
    /// decoder that lost sync would; returns how many requests went out.
    pub async fn request_keyframe(&self, publisher: &str) -> usize {
        let targets = self.shared.remote_tracks_where(|t| {
            t.publisher == publisher && t.kind == MediaKind::Video && !t.ended
        });
        let mut sent = 0;
        for track in targets {
            let Some(media_ssrc) = track.ssrcs().await.first().copied() else {
                continue;
            };
            if send_pli(track.as_ref(), media_ssrc).await {
                sent += 1;
            }
        }
        sent
    }

    /// Reports `bps` as this peer's receive bandwidth (REMB, every 200 ms, covering every live
    /// video track it receives), as a browser's estimator does; `None` stops the reports.
    pub fn report_bandwidth(&self, bps: Option<u64>) {
        self.shared.reported_bandwidth.send_replace(bps);
    }

    /// Stops publishing one kind and offers the change to the relay.
    pub fn unpublish(&self, kind: MediaKind) {
        // The signaling task is gone only after close; then there is nothing to unpublish.
        let _ = self.commands.send(Command::Unpublish(kind));
    }

    /// Drops the signaling channels, as a lost WebSocket would; media keeps flowing.
    pub fn detach_signaling(&self) {
        let _ = self.commands.send(Command::Detach);
    }

    /// Uses new signaling channels (e.g. from `Relay::resume`).
    pub fn attach_signaling(
        &self,
        to_relay: mpsc::Sender<ClientMessage>,
        from_relay: mpsc::Receiver<ServerMessage>,
    ) {
        let _ = self.commands.send(Command::Attach(to_relay, from_relay));
    }

    /// Re-offers with fresh ICE credentials (what a client does after its network changed).
    pub fn restart_ice(&self) {
        let _ = self.commands.send(Command::RestartIce);
    }

    /// Sends any message to the relay (e.g. `Mute`, or bad input in tests).
    pub fn send(&self, message: ClientMessage) {
        // The signaling task is gone only after close; then there is no one to tell.
        let _ = self.commands.send(Command::Send(message));
    }

    /// Leaves the room and closes the connection.
    pub async fn leave(self) {
        self.send(ClientMessage::Leave);
        // Give the signaling task the chance to pass `Leave` on before the drop aborts it.
        let mut changes = self.shared.changes.subscribe();
        let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
        let _ = self.pc.close().await;
    }

    /// Closes the connection without a word (as a crashed browser would).
    pub async fn vanish(self) {
        let _ = self.pc.close().await;
    }
}

struct Publication {
    kind: MediaKind,
    /// One per encoding (three with simulcast, in `SIMULCAST_LAYERS` order).
    ssrcs: Vec<u32>,
    local: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    transceiver: Arc<dyn RtpTransceiver>,
}

async fn run_signaling(
    pc: Arc<dyn PeerConnection>,
    mut senders: Vec<(MediaKind, Arc<dyn RtpSender>)>,
    shared: Arc<Shared>,
    to_relay: mpsc::Sender<ClientMessage>,
    from_relay: mpsc::Receiver<ServerMessage>,
    mut events: mpsc::UnboundedReceiver<PeerEvent>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut link = Some((to_relay, from_relay));
    loop {
        let outgoing = tokio::select! {
            message = async {
                match link.as_mut() {
                    Some((_, from_relay)) => from_relay.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                match message {
                    Some(message) => handle_relay_message(&pc, &shared, message).await,
                    None => {
                        link = None; // the relay removed us, or the link was cut
                        shared.update(|_| {});
                        None
                    }
                }
            }
            Some(PeerEvent::Candidate(candidate)) = events.recv() => {
                Some(ClientMessage::Candidate { candidate })
            }
            command = commands.recv() => match command {
                None => break,
                Some(Command::Send(message)) => Some(message),
                Some(Command::Unpublish(kind)) => unpublish(&pc, &mut senders, kind).await,
                Some(Command::Detach) => {
                    link = None;
                    None
                }
                Some(Command::Attach(to_relay, from_relay)) => {
                    link = Some((to_relay, from_relay));
                    None
                }
                Some(Command::RestartIce) => restart_ice(&pc).await,
            },
        };
        // Messages while detached are lost, as they would be on a dead socket.
        if let (Some(message), Some((to_relay, _))) = (outgoing, link.as_ref())
            && to_relay.send(message).await.is_err()
        {
            link = None;
        }
    }
    // Wake waiters: nothing more will come.
    shared.update(|_| {});
}

async fn restart_ice(pc: &Arc<dyn PeerConnection>) -> Option<ClientMessage> {
    pc.restart_ice().await.ok()?;
    let offer = pc.create_offer(None).await.ok()?;
    pc.set_local_description(offer).await.ok()?;
    let sdp = pc.local_description().await?.sdp;
    Some(ClientMessage::Offer { sdp })
}

/// Stops sending one kind and offers the change (the relay accepts offers while it is idle).
async fn unpublish(
    pc: &Arc<dyn PeerConnection>,
    senders: &mut Vec<(MediaKind, Arc<dyn RtpSender>)>,
    kind: MediaKind,
) -> Option<ClientMessage> {
    let position = senders.iter().position(|(k, _)| *k == kind)?;
    let (_, sender) = senders.remove(position);
    pc.remove_track(&sender).await.ok()?;
    let offer = pc.create_offer(None).await.ok()?;
    pc.set_local_description(offer).await.ok()?;
    let sdp = pc.local_description().await?.sdp;
    Some(ClientMessage::Offer { sdp })
}

async fn handle_relay_message(
    pc: &Arc<dyn PeerConnection>,
    shared: &Shared,
    message: ServerMessage,
) -> Option<ClientMessage> {
    match message {
        ServerMessage::Answer { sdp } => {
            let answer = RTCSessionDescription::answer(sdp).ok()?;
            if let Err(err) = pc.set_remote_description(answer).await {
                tracing::warn!(%err, "test peer: relay answer refused");
            }
            None
        }
        ServerMessage::Offer { sdp } => {
            // Tracks no longer sent by the relay are gone (webrtc-rs does not end them itself).
            let sending = crate::sdp::sending_track_ids(&sdp);
            shared.update(|r| {
                for track in r.tracks.iter_mut() {
                    if !sending.contains(&track.track_id) {
                        track.ended = true;
                    }
                }
            });
            let offer = RTCSessionDescription::offer(sdp).ok()?;
            if let Err(err) = pc.set_remote_description(offer).await {
                tracing::warn!(%err, "test peer: relay offer refused");
                return None;
            }
            let answer = pc.create_answer(None).await.ok()?;
            pc.set_local_description(answer).await.ok()?;
            let sdp = pc.local_description().await?.sdp;
            Some(ClientMessage::Answer { sdp })
        }
        ServerMessage::Candidate { candidate } => {
            let init = RTCIceCandidateInit {
                candidate: candidate.candidate,
                sdp_mid: candidate.sdp_mid,
                sdp_mline_index: candidate.sdp_mline_index,
                ..Default::default()
            };
            if let Err(err) = pc.add_ice_candidate(init).await {
                tracing::warn!(%err, "test peer: relay candidate refused");
            }
            None
        }
        other => {
            shared.update(|r| r.messages.push(other));
            None
        }
    }
}

/// The codec a test peer publishes a kind in.
fn publication_codec(config: &TestPeerConfig, kind: MediaKind) -> Codec {
    match kind {
        MediaKind::Audio => Codec::Opus,
        MediaKind::Video => config.video_codec,
    }
}

/// Sends the bandwidth set by [`TestPeer::report_bandwidth`] as a REMB every 200 ms; sleeps
/// while none is set (most peers of a load run never set one).
async fn report_bandwidth(shared: Arc<Shared>) {
    let mut bandwidth = shared.reported_bandwidth.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        // The sender lives as long as the peer: an error means the peer is gone.
        let Ok(Some(bps)) = bandwidth.wait_for(Option::is_some).await.map(|b| *b) else {
            return;
        };
        tick.tick().await;
        let tracks = shared.remote_tracks_where(|t| t.kind == MediaKind::Video && !t.ended);
        let mut ssrcs = Vec::new();
        for track in &tracks {
            ssrcs.extend(track.ssrcs().await);
        }
        let Some(track) = tracks.first() else {
            continue;
        };
        let remb = rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 0,
            bitrate: bps as f32,
            ssrcs,
        };
        if let Err(err) = track.write_rtcp(vec![Box::new(remb)]).await {
            tracing::debug!(%err, "test peer: REMB not sent");
        }
    }
}

/// The negotiated id of header extension `uri` on a sender.
fn extension_id(parameters: Option<&RTCRtpSendParameters>, uri: &str) -> Option<u8> {
    parameters?
        .rtp_parameters
        .header_extensions
        .iter()
        .find(|e| e.uri == uri)
        .and_then(|e| u8::try_from(e.id).ok())
}

/// One encoding of the published video: its stream, frames and frame-size divisor.
struct VideoLayer {
    stream: Stream,
    frames: FrameSource,
    divisor: usize,
    last_keyframe: Option<Instant>,
}

/// Publishes once connected: Opus every 20 ms, video at the configured frame rate (each
/// simulcast layer its own stream).
async fn publish(config: TestPeerConfig, shared: Arc<Shared>, publications: Vec<Publication>) {
    let mut connected = shared.connected.subscribe();
    if connected.wait_for(|c| *c).await.is_err() {
        return;
    }
    let mut audio = None;
    let mut video: Vec<VideoLayer> = Vec::new();
    for publication in publications {
        let codec = publication_codec(&config, publication.kind);
        let fallback = codec.payload_type();
        let mime = codec.mime_type();
        let parameters = publication.sender.get_parameters().await.ok();
        let payload_type = parameters
            .as_ref()
            .and_then(|p| {
                p.rtp_parameters
                    .codecs
                    .iter()
                    .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
            })
            .map_or(fallback, |c| c.payload_type);
        let audio_level = match (publication.kind, config.audio_level) {
            (MediaKind::Audio, Some(level)) => {
                extension_id(parameters.as_ref(), AUDIO_LEVEL_URI).map(|id| (id, level))
            }
            _ => None,
        };
        let stream = |ssrc: u32, timestamp: u32, extensions: Vec<(u8, bytes::Bytes)>| Stream {
            local: publication.local.clone(),
            ssrc,
            payload_type,
            seq: config.first_sequence,
            timestamp,
            audio_level,
            extensions,
            stamp: config.stamp_packets,
        };
        match publication.kind {
            MediaKind::Audio => audio = Some(stream(publication.ssrcs[0], 1_000_000, Vec::new())),
            MediaKind::Video if publication.ssrcs.len() > 1 => {
                // Simulcast: each packet names its media section and its encoding, which is how
                // a receiver tells the layers apart (their SSRCs are announced nowhere).
                let mid = publication.transceiver.mid().await.ok().flatten();
                let mid_id = extension_id(parameters.as_ref(), rtc::sdp::extmap::SDES_MID_URI);
                let rid_id = extension_id(
                    parameters.as_ref(),
                    rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI,
                );
                for (i, (rid, rank, divisor)) in SIMULCAST_LAYERS.iter().enumerate() {
                    let mut extensions = Vec::new();
                    if let (Some(id), Some(mid)) = (mid_id, mid.as_ref()) {
                        extensions.push((id, bytes::Bytes::from(mid.clone().into_bytes())));
                    }
                    if let Some(id) = rid_id {
                        extensions.push((id, bytes::Bytes::from_static(rid.as_bytes())));
                    }
                    // Each layer its own timestamp base, as encoders have.
                    let base = 1_000_000u32.wrapping_add(i as u32 * 977_777_777);
                    video.push(VideoLayer {
                        stream: stream(publication.ssrcs[i], base, extensions),
                        frames: FrameSource::vp8_layer(1100, *rank, SIMULCAST_LAYERS.len() as u8),
                        divisor: *divisor,
                        last_keyframe: None,
                    });
                }
            }
            MediaKind::Video => video.push(VideoLayer {
                stream: stream(publication.ssrcs[0], 1_000_000, Vec::new()),
                frames: FrameSource::new(config.video_codec, 1100),
                divisor: 1,
                last_keyframe: None,
            }),
        }
    }
    let mut audio_tick = tokio::time::interval(Duration::from_millis(20));
    let frame_period = Duration::from_secs(1) / config.video_fps.max(1);
    let mut video_tick = tokio::time::interval(frame_period);
    let frame_ticks = 90_000 / config.video_fps.max(1);
    let mut audio_counter = 0u32;
    loop {
        tokio::select! {
            _ = audio_tick.tick(), if audio.is_some() => {
                if let Some(stream) = audio.as_mut() {
                    stream.send(&shared, false, opus_payload(audio_counter), 960).await;
                    audio_counter = audio_counter.wrapping_add(1);
                }
            }
            _ = video_tick.tick(), if !video.is_empty() => {
                let now = Instant::now();
                let stalled = *shared
                    .video_stalled_until
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let forced = shared.force_keyframe.swap(0, Ordering::Relaxed);
                for (i, layer) in video.iter_mut().enumerate() {
                    if stalled.is_some_and(|until| now < until) {
                        layer.stream.timestamp = layer.stream.timestamp.wrapping_add(frame_ticks);
                        continue;
                    }
                    let keyframe = forced & (1 << i) != 0
                        || layer
                            .last_keyframe
                            .is_none_or(|t| now.duration_since(t) >= config.keyframe_interval);
                    if keyframe {
                        layer.last_keyframe = Some(now);
                    }
                    let size = if keyframe { config.keyframe_bytes } else { config.delta_frame_bytes };
                    for (marker, payload) in layer.frames.frame(keyframe, size / layer.divisor) {
                        layer.stream.send(&shared, marker, payload, 0).await;
                    }
                    layer.stream.timestamp = layer.stream.timestamp.wrapping_add(frame_ticks);
                }
            }
        }
    }
}

struct Stream {
    local: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    /// Audio level extension: (negotiated id, level).
    audio_level: Option<(u8, u8)>,
    /// Header extensions every packet carries (simulcast: mid and rid).
    extensions: Vec<(u8, bytes::Bytes)>,
    /// End each payload with its send time.
    stamp: bool,
}

/// Microseconds since the Unix epoch (0 for a clock set before it).
fn unix_micros(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Stream {
    async fn send(&mut self, shared: &Shared, marker: bool, mut payload: Vec<u8>, advance: u32) {
        if self.stamp {
            append_send_stamp(&mut payload, unix_micros(SystemTime::now()));
        }
        let mut packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker,
                payload_type: self.payload_type,
                sequence_number: self.seq,
                timestamp: self.timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: payload.into(),
        };
        for (id, value) in &self.extensions {
            // A failure only loses the extension (the relay then cannot tell the layer).
            let _ = packet.header.set_extension(*id, value.clone());
        }
        if let Some((id, level)) = self.audio_level {
            // The V (voice activity) bit with the level; a failure only loses the level.
            let voice = if level <= 50 { 0x80 } else { 0 };
            let _ = packet
                .header
                .set_extension(id, bytes::Bytes::from(vec![voice | (level & 0x7f)]));
        }
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(advance);
        if self.local.write_rtp(packet).await.is_ok() {
            shared.packets_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Builds an async (webrtc crate) peer connection bound to `udp_addrs`, with mDNS off and
/// keyframe requests delivered: the client side, for the test peer and the load generator.
async fn build_peer_connection(
    udp_addrs: Vec<SocketAddr>,
    ice_servers: &[IceServer],
    relay_only: bool,
    handler: Arc<dyn PeerConnectionEventHandler>,
) -> Result<Arc<dyn PeerConnection>, webrtc::error::Error> {
    // Plain Opus: the relay gives these peers the primary of a publisher's RED.
    let (engine, registry) = crate::engine::engine_and_registry(false, false)?;
    // A multicast socket fails where the namespace has none, and loopback peers need plain IPs.
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(true)
        .build();
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(
            ice_servers
                .iter()
                .map(|s| RTCIceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone(),
                    credential: s.credential.clone(),
                })
                .collect(),
        )
        .with_ice_transport_policy(if relay_only {
            RTCIceTransportPolicy::Relay
        } else {
            RTCIceTransportPolicy::All
        })
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_handler(handler)
        .with_udp_addrs(udp_addrs)
        .build()
        .await?;
    Ok(Arc::new(pc))
}

/// Waits until `done` holds for `report()`, re-checking at each change, or `timeout` passes:
/// `Err` carries the last report, for the assertion message.
async fn wait_for_report(
    changes: &watch::Sender<u64>,
    report: impl Fn() -> PeerReport,
    timeout: Duration,
    mut done: impl FnMut(&PeerReport) -> bool,
) -> Result<PeerReport, Box<PeerReport>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut changes = changes.subscribe();
    loop {
        let current = report();
        if done(&current) {
            return Ok(current);
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            _ => return Err(Box::new(report())),
        }
    }
}
