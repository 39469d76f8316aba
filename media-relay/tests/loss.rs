//! Retransmission under loss, in both legs (every 20th RTP packet dropped by a user-space UDP
//! proxy: tc netem is not available here): a publisher behind a lossy uplink still reaches its
//! subscriber nearly whole, because the relay NACKs what it misses and forwards the
//! retransmissions; a subscriber behind a lossy downlink gets nearly everything, because the
//! relay answers its NACKs from the packets it sent.
//!
//! The path is forced through the proxy: the participant is told only the proxy's address for
//! the relay, and the relay never hears the participant's own candidates (it learns the proxy's
//! address as a peer-reflexive one).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use common::{PATIENCE, join, receiver, receives_from};
use media_relay::metrics::MetricsSnapshot;
use media_relay::test_peer::frames::TrackCounts;
use media_relay::test_peer::{PeerReport, TestPeer, TestPeerConfig};
use media_relay::{
    ClientMessage, MediaKind, ParticipantId, Relay, RelayConfig, RoomId, ServerMessage,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// RTP, not RTCP, STUN or DTLS (RFC 7983 demultiplexing, RFC 5761 for RTCP).
fn is_rtp(datagram: &[u8]) -> bool {
    datagram.len() >= 12
        && (128..=191).contains(&datagram[0])
        && !(192..=223).contains(&datagram[1])
}

/// Which way the proxy loses packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lossy {
    /// From the participant to the relay.
    Uplink,
    /// From the relay to the participant.
    Downlink,
}

/// Drops every `drop_every`-th RTP packet seen; counts the drops.
struct Dropper {
    drop_every: u64,
    seen: u64,
    dropped: Arc<AtomicU64>,
}

impl Dropper {
    /// Whether to drop this datagram.
    fn drops(&mut self, datagram: &[u8]) -> bool {
        if !is_rtp(datagram) {
            return false;
        }
        self.seen += 1;
        let drop = self.seen.is_multiple_of(self.drop_every);
        if drop {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop
    }
}

/// Forwards between one peer and `target`, dropping every `drop_every`-th RTP packet going the
/// `lossy` way; returns the address the peer should send to.
async fn lossy_proxy(
    target: SocketAddr,
    drop_every: u64,
    lossy: Lossy,
    dropped: Arc<AtomicU64>,
) -> SocketAddr {
    let front = UdpSocket::bind("127.0.0.1:0").await.expect("bind front");
    let back = UdpSocket::bind("127.0.0.1:0").await.expect("bind back");
    let address = front.local_addr().expect("bound");
    tokio::spawn(async move {
        let mut peer: Option<SocketAddr> = None;
        let mut dropper = Dropper {
            drop_every,
            seen: 0,
            dropped,
        };
        let (mut up, mut down) = (vec![0u8; 2048], vec![0u8; 2048]);
        loop {
            tokio::select! {
                Ok((n, from)) = front.recv_from(&mut up) => {
                    peer = Some(from);
                    if lossy == Lossy::Uplink && dropper.drops(&up[..n]) {
                        continue;
                    }
                    let _ = back.send_to(&up[..n], target).await;
                }
                Ok((n, _)) = back.recv_from(&mut down) => {
                    if lossy == Lossy::Downlink && dropper.drops(&down[..n]) {
                        continue;
                    }
                    if let Some(peer) = peer {
                        let _ = front.send_to(&down[..n], peer).await;
                    }
                }
            }
        }
    });
    address
}

/// Rewrites `127.0.0.1 <port> typ host` candidates to go through a lossy proxy per relay port.
struct CandidateRewriter {
    proxies: HashMap<u16, u16>,
    lossy: Lossy,
    dropped: Arc<AtomicU64>,
}

impl CandidateRewriter {
    async fn candidate(&mut self, candidate: &str) -> String {
        let fields: Vec<&str> = candidate.split(' ').collect();
        if fields.len() < 8 || fields[4] != "127.0.0.1" || fields[7] != "host" {
            return candidate.to_owned();
        }
        let Ok(port) = fields[5].parse::<u16>() else {
            return candidate.to_owned();
        };
        let proxy_port = match self.proxies.get(&port) {
            Some(p) => *p,
            None => {
                let target = SocketAddr::from(([127, 0, 0, 1], port));
                let proxy = lossy_proxy(target, 20, self.lossy, self.dropped.clone()).await;
                self.proxies.insert(port, proxy.port());
                proxy.port()
            }
        };
        let proxy_port = proxy_port.to_string();
        let mut fields = fields;
        fields[5] = &proxy_port;
        fields.join(" ")
    }

    async fn sdp(&mut self, sdp: &str) -> String {
        let mut out = String::new();
        for line in sdp.split("\r\n") {
            if let Some(candidate) = line.strip_prefix("a=")
                && candidate.starts_with("candidate:")
            {
                out.push_str("a=");
                out.push_str(&self.candidate(candidate).await);
                out.push_str("\r\n");
                continue;
            }
            if !line.is_empty() {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
        out
    }
}

fn strip_candidates(sdp: &str) -> String {
    sdp.split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with("a=candidate:"))
        .map(|l| format!("{l}\r\n"))
        .collect()
}

/// A relay that reports quality (and so counts NACKs) every second.
fn relay() -> Relay {
    common::init_tracing();
    Relay::new(RelayConfig {
        quality_interval: Duration::from_secs(1),
        ..RelayConfig::default()
    })
    .expect("valid config")
}

/// Joins `who` to `room` with its media through a lossy proxy; returns the peer and the count
/// of packets the proxy dropped.
async fn join_behind_proxy(
    relay: &Relay,
    room: &str,
    who: &str,
    config: TestPeerConfig,
    lossy: Lossy,
) -> (TestPeer, Arc<AtomicU64>) {
    let participant = relay
        .join(RoomId::from(room), ParticipantId::from(who))
        .await
        .expect("join");
    let (to_relay, mut from_relay) = participant.into_parts();
    let (peer_tx, mut peer_out) = mpsc::channel::<ClientMessage>(64);
    let (peer_in_tx, peer_in) = mpsc::channel::<ServerMessage>(64);
    let dropped = Arc::new(AtomicU64::new(0));
    let mut rewriter = CandidateRewriter {
        proxies: HashMap::new(),
        lossy,
        dropped: dropped.clone(),
    };
    tokio::spawn(async move {
        while let Some(mut message) = from_relay.recv().await {
            match &mut message {
                ServerMessage::Answer { sdp } | ServerMessage::Offer { sdp } => {
                    *sdp = rewriter.sdp(sdp).await;
                }
                ServerMessage::Candidate { candidate } => {
                    candidate.candidate = rewriter.candidate(&candidate.candidate).await;
                }
                _ => {}
            }
            if peer_in_tx.send(message).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(mut message) = peer_out.recv().await {
            match &mut message {
                ClientMessage::Candidate { .. } => continue,
                ClientMessage::Offer { sdp } | ClientMessage::Answer { sdp } => {
                    *sdp = strip_candidates(sdp);
                }
                _ => {}
            }
            if to_relay.send(message).await.is_err() {
                break;
            }
        }
    });
    let peer = TestPeer::start(config, peer_tx, peer_in)
        .await
        .expect("test peer starts");
    (peer, dropped)
}

/// The video counts of `publisher`'s track in a report.
fn video_from(report: &PeerReport, publisher: &str) -> TrackCounts {
    report
        .live_tracks_of(publisher)
        .find(|t| t.kind == MediaKind::Video)
        .map(|t| t.counts.clone())
        .unwrap_or_default()
}

/// Waits until a relay counter passes zero (it is updated at each quality report).
async fn counter_rises(relay: &Relay, counter: impl Fn(&MetricsSnapshot) -> u64) -> u64 {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let value = counter(&relay.metrics().snapshot());
        if value > 0 || tokio::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that the proxy dropped enough to tell and that at most a fifth of it stayed missing.
fn assert_repaired(video: &TrackCounts, dropped: u64, leg: &str) {
    eprintln!("dropped on the {leg}: {dropped}; at the subscriber: {video:?}");
    assert!(
        dropped >= 30,
        "the proxy dropped too little to tell: {dropped}"
    );
    assert!(
        video.lost * 5 <= dropped,
        "most drops repaired: {} of {dropped} still missing ({video:?})",
        video.lost
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_uplink_is_repaired_by_retransmission_before_it_reaches_subscribers() {
    let relay = relay();
    let approver = join(&relay, "case-loss", "approver", TestPeerConfig::default()).await;
    let (agent, dropped) = join_behind_proxy(
        &relay,
        "case-loss",
        "agent",
        TestPeerConfig::default(),
        Lossy::Uplink,
    )
    .await;
    let report = approver
        .wait_until(PATIENCE, |r| {
            receives_from(r, &["agent"], 50, 10) && video_from(r, "agent").packets >= 600
        })
        .await
        .unwrap_or_else(|r| panic!("agent's media did not arrive: {r:#?}"));
    assert_repaired(
        &video_from(&report, "agent"),
        dropped.load(Ordering::Relaxed),
        "uplink",
    );
    assert!(
        counter_rises(&relay, |m| m.nacks_sent).await > 0,
        "the relay's NACKs to the publisher are counted"
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_downlink_is_repaired_by_the_relay_answering_the_subscribers_nacks() {
    let relay = relay();
    let approver = join(
        &relay,
        "case-loss-down",
        "approver",
        TestPeerConfig::default(),
    )
    .await;
    let (agent, dropped) = join_behind_proxy(
        &relay,
        "case-loss-down",
        "agent",
        receiver(None),
        Lossy::Downlink,
    )
    .await;
    let report = agent
        .wait_until(PATIENCE, |r| video_from(r, "approver").packets >= 600)
        .await
        .unwrap_or_else(|r| panic!("approver's media did not arrive: {r:#?}"));
    let video = video_from(&report, "approver");
    assert_repaired(&video, dropped.load(Ordering::Relaxed), "downlink");
    assert!(video.recovered > 0, "retransmissions arrived: {video:?}");
    assert!(
        counter_rises(&relay, |m| m.nacks_received).await > 0,
        "the subscriber's NACKs are counted"
    );
    drop(approver);
}
