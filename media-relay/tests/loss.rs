//! Retransmission under loss: a publisher behind a lossy uplink (every 20th RTP packet dropped
//! by a user-space UDP proxy: tc netem is not available here) still reaches its subscriber
//! nearly whole, because the relay NACKs what it misses and forwards the retransmissions.
//!
//! The path is forced through the proxy: the publisher is told only the proxy's address for the
//! relay, and the relay never hears the publisher's own candidates (it learns the proxy's
//! address as a peer-reflexive one).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{PATIENCE, join, receives_from, relay};
use media_relay::test_peer::{TestPeer, TestPeerConfig};
use media_relay::{ClientMessage, MediaKind, ParticipantId, RoomId, ServerMessage};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// RTP, not RTCP, STUN or DTLS (RFC 7983 demultiplexing, RFC 5761 for RTCP).
fn is_rtp(datagram: &[u8]) -> bool {
    datagram.len() >= 12
        && (128..=191).contains(&datagram[0])
        && !(192..=223).contains(&datagram[1])
}

/// Forwards between one peer and `target`, dropping every `drop_every`-th RTP packet from the
/// peer; returns the address the peer should send to.
async fn lossy_proxy(target: SocketAddr, drop_every: u64, dropped: Arc<AtomicU64>) -> SocketAddr {
    let front = UdpSocket::bind("127.0.0.1:0").await.expect("bind front");
    let back = UdpSocket::bind("127.0.0.1:0").await.expect("bind back");
    let address = front.local_addr().expect("bound");
    tokio::spawn(async move {
        let mut peer: Option<SocketAddr> = None;
        let mut rtp_seen = 0u64;
        let (mut up, mut down) = (vec![0u8; 2048], vec![0u8; 2048]);
        loop {
            tokio::select! {
                Ok((n, from)) = front.recv_from(&mut up) => {
                    peer = Some(from);
                    if is_rtp(&up[..n]) {
                        rtp_seen += 1;
                        if rtp_seen.is_multiple_of(drop_every) {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    let _ = back.send_to(&up[..n], target).await;
                }
                Ok((n, _)) = back.recv_from(&mut down) => {
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
                let proxy = lossy_proxy(target, 20, self.dropped.clone()).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_uplink_is_repaired_by_retransmission_before_it_reaches_subscribers() {
    let relay = relay();
    let approver = join(&relay, "case-loss", "approver", TestPeerConfig::default()).await;

    let participant = relay
        .join(RoomId::from("case-loss"), ParticipantId::from("agent"))
        .await
        .expect("join");
    let (to_relay, mut from_relay) = participant.into_parts();
    let (peer_tx, mut peer_out) = mpsc::channel::<ClientMessage>(64);
    let (peer_in_tx, peer_in) = mpsc::channel::<ServerMessage>(64);
    let dropped = Arc::new(AtomicU64::new(0));
    let mut rewriter = CandidateRewriter {
        proxies: HashMap::new(),
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
    let agent = TestPeer::start(TestPeerConfig::default(), peer_tx, peer_in)
        .await
        .expect("test peer starts");

    let video_from_agent = |r: &media_relay::test_peer::PeerReport| {
        r.live_tracks_of("agent")
            .find(|t| t.kind == MediaKind::Video)
            .map(|t| t.counts.clone())
            .unwrap_or_default()
    };
    let report = approver
        .wait_until(PATIENCE, |r| {
            receives_from(r, &["agent"], 50, 10) && video_from_agent(r).packets >= 600
        })
        .await
        .unwrap_or_else(|r| panic!("agent's media did not arrive: {r:#?}"));
    let video = video_from_agent(&report);
    let dropped = dropped.load(Ordering::Relaxed);
    eprintln!("dropped on the uplink: {dropped}; at the subscriber: {video:?}");
    assert!(
        dropped >= 30,
        "the proxy dropped too little to tell: {dropped}"
    );
    assert!(
        video.lost * 5 <= dropped,
        "most drops repaired: {} of {dropped} still missing ({video:?})",
        video.lost
    );
    drop(agent);
}
