//! A light receive-only peer for the load generator: the same sans-IO `rtc` connection the relay
//! uses (ICE, DTLS, SRTCP, answering offers), driven by one task over one UDP socket, that counts
//! received RTP from the packets' headers without decrypting them. SRTP leaves the RTP header in
//! the clear, so sequence numbers (loss, reordering, duplicates) and SSRCs (which track) are
//! readable; payloads are not, so a light peer measures no latency and sees no frames. Every
//! received media packet costs it a header parse, where a full [`super::TestPeer`] pays an SRTP
//! decryption and the async `webrtc` crate's channel hops: so the generator stays lighter than
//! the relay it loads. RTCP, STUN and DTLS go through the connection as usual.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::frames::TrackCounter;
use super::{PeerReport, ReceivedTrack, wait_for_report};
use crate::engine::engine_and_registry;
use crate::error::RelayError;
use crate::messages::{ClientMessage, IceCandidate, MediaKind, ServerMessage};

/// How often the peer publishes its counts to [`LightPeer::report`] (and reports bandwidth).
const PUBLISH_EVERY: Duration = Duration::from_millis(200);

/// A webrtc-rs client connection with the relay's codecs (Opus RED too if `red`) and
/// interceptors, gathering nothing (its host candidate is added by the caller).
pub(crate) fn client_connection(now: Instant, red: bool) -> Result<RTCPeerConnection, RelayError> {
    let (engine, registry) = engine_and_registry(false, red)?;
    // Checks paced as Chromium paces them (48 ms), 1.4 s per pair as webrtc-rs's default.
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_ice_connection_attempts(Some(Duration::from_millis(48)), Some(29))
        .build();
    Ok(rtc::peer_connection::RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build(now)?)
}

/// A host candidate for `addr`.
pub(crate) fn host_candidate(addr: SocketAddr) -> Result<RTCIceCandidateInit, RelayError> {
    Ok(crate::engine::host_candidate(addr)?)
}

/// The signaling form of a candidate.
pub(crate) fn candidate_message(candidate: RTCIceCandidateInit) -> ClientMessage {
    ClientMessage::Candidate {
        candidate: IceCandidate {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_mline_index,
        },
    }
}

/// Applies a remote offer and returns the answer's SDP.
pub(crate) fn answer_offer(
    pc: &mut RTCPeerConnection,
    now: Instant,
    sdp: String,
) -> Result<String, RelayError> {
    pc.set_remote_description(now, RTCSessionDescription::offer(sdp)?)?;
    let answer = pc.create_answer(None)?;
    pc.set_local_description(now, answer)?;
    local_sdp(pc)
}

fn local_sdp(pc: &RTCPeerConnection) -> Result<String, RelayError> {
    pc.local_description()
        .map(|d| d.sdp)
        .ok_or(RelayError::WebRtc(
            rtc::shared::error::Error::ErrPeerConnLocalDescriptionNil,
        ))
}

/// Whether a datagram is RTP (not RTCP, STUN or DTLS; RFC 7983 and RFC 5761).
fn is_rtp(data: &[u8]) -> bool {
    data.len() >= 12 && (128..=191).contains(&data[0]) && !(192..=223).contains(&data[1])
}

/// An RTP packet's sequence number, SSRC, payload type and payload length (encrypted, with its
/// authentication tag), from its header.
fn rtp_header(data: &[u8]) -> Option<(u16, u32, u8, usize)> {
    let csrcs = usize::from(data[0] & 0x0f);
    let mut length = 12 + 4 * csrcs;
    if data[0] & 0x10 != 0 {
        let words = data.get(length + 2..length + 4)?;
        length += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let payload = data.len().checked_sub(length)?;
    let sequence = u16::from_be_bytes([data[2], data[3]]);
    let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    Some((sequence, ssrc, data[1] & 0x7f, payload))
}

/// What the remote description says of a stream the peer receives.
#[derive(Debug, Clone)]
struct StreamInfo {
    publisher: String,
    track_id: String,
    kind: MediaKind,
}

/// The received streams a description announces (`a=ssrc:N msid:STREAM TRACK`), and the kind
/// of each payload type, for streams it does not announce.
fn streams_of(sdp: &str) -> (HashMap<u32, StreamInfo>, HashMap<u8, MediaKind>) {
    let mut streams = HashMap::new();
    let mut kinds = HashMap::new();
    let mut kind = None;
    for line in sdp.lines() {
        if let Some(media) = line.strip_prefix("m=") {
            kind = match media.split(' ').next() {
                Some("audio") => Some(MediaKind::Audio),
                Some("video") => Some(MediaKind::Video),
                _ => None,
            };
            for pt in media
                .split(' ')
                .skip(3)
                .filter_map(|p| p.parse::<u8>().ok())
            {
                if let Some(kind) = kind {
                    kinds.insert(pt, kind);
                }
            }
        } else if let Some(rest) = line.strip_prefix("a=ssrc:")
            && let Some((ssrc, attribute)) = rest.split_once(' ')
            && let Some(msid) = attribute.strip_prefix("msid:")
            && let (Ok(ssrc), Some(kind)) = (ssrc.parse::<u32>(), kind)
        {
            let (publisher, track_id) = msid.trim().split_once(' ').unwrap_or((msid, msid));
            streams.insert(
                ssrc,
                StreamInfo {
                    publisher: publisher.to_owned(),
                    track_id: track_id.to_owned(),
                    kind,
                },
            );
        }
    }
    (streams, kinds)
}

/// One stream received, counted from its headers.
struct Counted {
    track: usize,
    counter: TrackCounter,
}

/// The peer's state, owned by its task.
struct Light {
    pc: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
    to_relay: mpsc::Sender<ClientMessage>,
    shared: Arc<Shared>,
    report: PeerReport,
    counted: HashMap<u32, Counted>,
    streams: HashMap<u32, StreamInfo>,
    kinds: HashMap<u8, MediaKind>,
    reported_bandwidth: Option<u64>,
    next_publish: Instant,
    /// Its host candidate went to the other side.
    candidate_sent: bool,
}

struct Shared {
    report: Mutex<PeerReport>,
    changes: watch::Sender<u64>,
}

/// A light receive-only peer (see the module's description).
pub struct LightPeer {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LightPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LightPeer {
    /// Binds `udp_addr`, then signals through `to_relay` and `from_relay`: with `offer_first` it
    /// offers to receive audio and video (as the relay's participants do), otherwise it answers
    /// the other side's offer (as a Janus subscriber does). With `reported_bandwidth` it reports
    /// that receive bandwidth (REMB) every 200 ms.
    pub async fn start(
        udp_addr: SocketAddr,
        offer_first: bool,
        reported_bandwidth: Option<u64>,
        to_relay: mpsc::Sender<ClientMessage>,
        from_relay: mpsc::Receiver<ServerMessage>,
    ) -> Result<Self, RelayError> {
        let socket = UdpSocket::bind(udp_addr)
            .await
            .map_err(|e| RelayError::Config(format!("light peer UDP {udp_addr}: {e}")))?;
        let local = socket
            .local_addr()
            .map_err(|e| RelayError::Config(format!("light peer UDP: {e}")))?;
        let now = Instant::now();
        let mut pc = client_connection(now, false)?;
        let shared = Arc::new(Shared {
            report: Mutex::new(PeerReport::default()),
            changes: watch::Sender::new(0),
        });
        if offer_first {
            for kind in [MediaKind::Audio, MediaKind::Video] {
                pc.add_transceiver_from_kind(
                    crate::engine::rtp_kind(kind),
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        streams: vec![],
                        send_encodings: vec![],
                    }),
                )?;
            }
            let offer = pc.create_offer(None)?;
            pc.set_local_description(now, offer)?;
            let candidate = host_candidate(local)?;
            pc.add_local_candidate(candidate.clone())?;
            let sdp = local_sdp(&pc)?;
            let sent = to_relay.send(ClientMessage::Offer { sdp }).await.is_ok()
                && to_relay.send(candidate_message(candidate)).await.is_ok();
            if !sent {
                return Err(RelayError::Gone);
            }
        }
        let light = Light {
            pc,
            socket,
            local,
            to_relay,
            shared: shared.clone(),
            report: PeerReport::default(),
            counted: HashMap::new(),
            streams: HashMap::new(),
            kinds: HashMap::new(),
            reported_bandwidth,
            next_publish: now,
            candidate_sent: offer_first,
        };
        let task = tokio::spawn(light.run(from_relay));
        Ok(Self { shared, task })
    }

    /// A copy of what the peer has counted (at most 200 ms old).
    pub fn report(&self) -> PeerReport {
        self.shared
            .report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `done` holds for the report, or `timeout` passes (see
    /// [`super::TestPeer::wait_until`]).
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl FnMut(&PeerReport) -> bool,
    ) -> Result<PeerReport, Box<PeerReport>> {
        wait_for_report(&self.shared.changes, || self.report(), timeout, done).await
    }
}

impl Light {
    async fn run(mut self, mut from_relay: mpsc::Receiver<ServerMessage>) {
        let mut buf = vec![0u8; 2048];
        loop {
            self.drive().await;
            let now = Instant::now();
            if self.next_publish <= now {
                self.next_publish = now + PUBLISH_EVERY;
                self.publish(now);
            }
            let deadline = self
                .pc
                .poll_timeout()
                .map_or(self.next_publish, |t| t.min(self.next_publish));
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((len, peer)) = received else { continue };
                    self.datagram(&buf[..len], peer);
                    // Whatever else is already there, without waiting.
                    while let Ok((len, peer)) = self.socket.try_recv_from(&mut buf) {
                        self.datagram(&buf[..len], peer);
                    }
                }
                message = from_relay.recv() => match message {
                    Some(message) => self.signaling(message).await,
                    None => return,
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                    let _ = self.pc.handle_timeout(Instant::now());
                }
            }
        }
    }

    fn datagram(&mut self, data: &[u8], peer: SocketAddr) {
        if is_rtp(data) {
            if let Some((sequence, ssrc, payload_type, length)) = rtp_header(data) {
                self.count(sequence, ssrc, payload_type, length);
            }
            return;
        }
        let _ = self.pc.handle_read(TaggedBytesMut {
            now: Instant::now(),
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: peer,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        });
    }

    fn count(&mut self, sequence: u16, ssrc: u32, payload_type: u8, length: usize) {
        let counted = self.counted.entry(ssrc).or_insert_with(|| {
            let info = self
                .streams
                .get(&ssrc)
                .cloned()
                .unwrap_or_else(|| StreamInfo {
                    publisher: String::new(),
                    track_id: ssrc.to_string(),
                    kind: self
                        .kinds
                        .get(&payload_type)
                        .copied()
                        .unwrap_or(MediaKind::Video),
                });
            self.report.tracks.push(ReceivedTrack {
                publisher: info.publisher,
                track_id: info.track_id,
                kind: info.kind,
                codec: None,
                counts: Default::default(),
                first_packet_at: Some(Instant::now()),
                first_keyframe_at: None,
                ended: false,
                delays: Default::default(),
            });
            Counted {
                track: self.report.tracks.len() - 1,
                // Packets only: the payload (and with it the frame) is encrypted.
                counter: TrackCounter::for_codec(None),
            }
        });
        // The counter reads only the payload's length when it counts packets only.
        counted
            .counter
            .feed(sequence, false, &PAYLOAD[..length.min(PAYLOAD.len())]);
    }

    /// Sends what the connection has to send; takes note of its events.
    async fn drive(&mut self) {
        while let Some(out) = self.pc.poll_write() {
            let _ = self
                .socket
                .send_to(&out.message, out.transport.peer_addr)
                .await;
        }
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                let connected = state == RTCPeerConnectionState::Connected;
                if connected && self.report.connected_at.is_none() {
                    self.report.connected_at = Some(Instant::now());
                }
                self.report.connected = connected;
                self.publish(Instant::now());
            }
        }
        // Received RTCP and anything else the connection hands up: nothing to do with it.
        while self.pc.poll_read().is_some() {}
    }

    async fn signaling(&mut self, message: ServerMessage) {
        let now = Instant::now();
        match message {
            ServerMessage::Offer { sdp } => {
                self.learn_streams(&sdp);
                let answered = answer_offer(&mut self.pc, now, sdp);
                let Ok(answer) = answered else {
                    return tracing::debug!("light peer: offer not answered");
                };
                let mut messages = vec![ClientMessage::Answer { sdp: answer }];
                if !self.candidate_sent {
                    // The first exchange: tell the other side where to reach this peer.
                    self.candidate_sent = true;
                    if let Ok(candidate) = host_candidate(self.local) {
                        let _ = self.pc.add_local_candidate(candidate.clone());
                        messages.push(candidate_message(candidate));
                    }
                }
                for message in messages {
                    let _ = self.to_relay.send(message).await;
                }
            }
            ServerMessage::Answer { sdp } => {
                self.learn_streams(&sdp);
                if let Ok(answer) = RTCSessionDescription::answer(sdp) {
                    let _ = self.pc.set_remote_description(now, answer);
                }
            }
            ServerMessage::TrackUnpublished { track_id, .. } => {
                for track in &mut self.report.tracks {
                    if track.track_id == track_id {
                        track.ended = true;
                    }
                }
            }
            other => self.report.messages.push(other),
        }
    }

    fn learn_streams(&mut self, sdp: &str) {
        let (streams, kinds) = streams_of(sdp);
        self.streams.extend(streams);
        self.kinds.extend(kinds);
    }

    /// Publishes the counts for [`LightPeer::report`]; reports bandwidth if told to.
    fn publish(&mut self, now: Instant) {
        for (ssrc, counted) in &self.counted {
            let track = &mut self.report.tracks[counted.track];
            track.counts = counted.counter.counts().clone();
            // A stream whose first packets came before its description was read is named once
            // the description is known.
            if track.publisher.is_empty()
                && let Some(info) = self.streams.get(ssrc)
            {
                track.publisher = info.publisher.clone();
                track.track_id = info.track_id.clone();
                track.kind = info.kind;
            }
        }
        *self
            .shared
            .report
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.report.clone();
        self.shared.changes.send_modify(|n| *n += 1);
        if let Some(bitrate) = self.reported_bandwidth {
            let video = self
                .counted
                .iter()
                .find(|(_, c)| self.report.tracks[c.track].kind == MediaKind::Video)
                .map(|(ssrc, _)| *ssrc);
            let remb = ReceiverEstimatedMaximumBitrate {
                sender_ssrc: 0,
                bitrate: bitrate as f32,
                ssrcs: video.into_iter().collect(),
            };
            let receiver = self.pc.get_receivers().next();
            if let (Some(_), Some(id)) = (video, receiver)
                && let Some(mut receiver) = self.pc.rtp_receiver(id)
            {
                let _ = receiver.write_rtcp(now, vec![Box::new(remb)]);
            }
        }
    }
}

/// Stands in for a payload the light peer does not read: the counter takes only its length.
static PAYLOAD: [u8; 2048] = [0; 2048];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_is_told_from_rtcp_stun_and_dtls_and_its_header_is_read_without_the_payload() {
        let mut rtp = vec![0x90, 96, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
        rtp.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]); // one extension word
        rtp.extend_from_slice(&[7; 100]);
        assert!(is_rtp(&rtp));
        assert_eq!(rtp_header(&rtp), Some((0x1234, 0xdead_beef, 96, 100)));
        let rtcp_sr = [0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(!is_rtp(&rtcp_sr));
        let stun = [0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0];
        assert!(!is_rtp(&stun));
        let dtls = [22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(!is_rtp(&dtls));
    }

    #[test]
    fn the_description_names_each_stream_and_the_kind_of_each_payload_type() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ssrc:11 msid:alice alice-audio-0\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=ssrc:22 msid:bob bob-video-1\r\n";
        let (streams, kinds) = streams_of(sdp);
        assert_eq!(streams[&11].publisher, "alice");
        assert_eq!(streams[&11].track_id, "alice-audio-0");
        assert_eq!(streams[&11].kind, MediaKind::Audio);
        assert_eq!(streams[&22].kind, MediaKind::Video);
        assert_eq!(kinds[&111], MediaKind::Audio);
        assert_eq!(kinds[&102], MediaKind::Video);
    }
}
