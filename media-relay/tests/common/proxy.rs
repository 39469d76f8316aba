//! A participant whose media goes through a user-space UDP proxy on loopback (tc netem is not
//! available here): the proxy can lose every n-th RTP packet one way, and can move to a new
//! address, as a phone's path does when it changes networks.
//!
//! The path is forced through the proxy: the participant is told only the proxy's address for
//! the relay, and the relay never hears the participant's own candidates (it learns the proxy's
//! address as a peer-reflexive one).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use media_relay::test_peer::{TestPeer, TestPeerConfig};
use media_relay::{ClientMessage, ParticipantId, Relay, RoomId, ServerMessage};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Which way the proxy loses packets, and how many: every `n`-th RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lossy {
    /// Nothing is lost.
    No,
    /// From the participant to the relay.
    Uplink(u64),
    /// From the relay to the participant.
    Downlink(u64),
}

/// RTP, not RTCP, STUN or DTLS (RFC 7983 demultiplexing, RFC 5761 for RTCP).
fn is_rtp(datagram: &[u8]) -> bool {
    datagram.len() >= 12
        && (128..=191).contains(&datagram[0])
        && !(192..=223).contains(&datagram[1])
}

/// Drops every `every`-th RTP packet seen (never, for 0); counts the drops.
struct Dropper {
    every: u64,
    seen: u64,
    dropped: Arc<AtomicU64>,
}

impl Dropper {
    /// Whether to drop this datagram.
    fn drops(&mut self, datagram: &[u8]) -> bool {
        if self.every == 0 || !is_rtp(datagram) {
            return false;
        }
        self.seen += 1;
        let drop = self.seen.is_multiple_of(self.every);
        if drop {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop
    }
}

/// Forwards between one peer and `target`, losing packets as `lossy` says; a message on the
/// returned channel moves its relay-facing side to a new port. Returns the address the peer
/// should send to.
async fn proxy(
    target: SocketAddr,
    lossy: Lossy,
    dropped: Arc<AtomicU64>,
) -> (SocketAddr, mpsc::UnboundedSender<()>) {
    let front = UdpSocket::bind("127.0.0.1:0").await.expect("bind front");
    let mut back = UdpSocket::bind("127.0.0.1:0").await.expect("bind back");
    let address = front.local_addr().expect("bound");
    let (rebind, mut rebinds) = mpsc::unbounded_channel();
    let (up_every, down_every) = match lossy {
        Lossy::No => (0, 0),
        Lossy::Uplink(n) => (n, 0),
        Lossy::Downlink(n) => (0, n),
    };
    tokio::spawn(async move {
        let mut peer: Option<SocketAddr> = None;
        let mut uplink = Dropper {
            every: up_every,
            seen: 0,
            dropped: dropped.clone(),
        };
        let mut downlink = Dropper {
            every: down_every,
            seen: 0,
            dropped,
        };
        let (mut up, mut down) = (vec![0u8; 2048], vec![0u8; 2048]);
        loop {
            tokio::select! {
                Some(()) = rebinds.recv() => {
                    back = UdpSocket::bind("127.0.0.1:0").await.expect("bind new back");
                }
                Ok((n, from)) = front.recv_from(&mut up) => {
                    peer = Some(from);
                    if uplink.drops(&up[..n]) {
                        continue;
                    }
                    let _ = back.send_to(&up[..n], target).await;
                }
                Ok((n, _)) = back.recv_from(&mut down) => {
                    if downlink.drops(&down[..n]) {
                        continue;
                    }
                    if let Some(peer) = peer {
                        let _ = front.send_to(&down[..n], peer).await;
                    }
                }
            }
        }
    });
    (address, rebind)
}

/// Rewrites `127.0.0.1 <port> typ host` candidates to go through a proxy per relay port.
struct CandidateRewriter {
    proxies: HashMap<u16, u16>,
    lossy: Lossy,
    dropped: Arc<AtomicU64>,
    rebinds: Arc<Mutex<Vec<mpsc::UnboundedSender<()>>>>,
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
                let (address, rebind) = proxy(target, self.lossy, self.dropped.clone()).await;
                self.rebinds
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(rebind);
                self.proxies.insert(port, address.port());
                address.port()
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

/// A participant behind a proxy.
pub struct Proxied {
    pub peer: TestPeer,
    /// RTP packets the proxy dropped.
    pub dropped: Arc<AtomicU64>,
    rebinds: Arc<Mutex<Vec<mpsc::UnboundedSender<()>>>>,
}

impl Proxied {
    /// Moves the participant's side of the path to a new address: the relay now hears it from
    /// another port, as after a change of network.
    pub fn change_address(&self) {
        for rebind in self
            .rebinds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = rebind.send(());
        }
    }
}

/// Joins `who` to `room` with its media through a proxy that loses as `lossy` says.
pub async fn join_behind_proxy(
    relay: &Relay,
    room: &str,
    who: &str,
    config: TestPeerConfig,
    lossy: Lossy,
) -> Proxied {
    let participant = relay
        .join(RoomId::from(room), ParticipantId::from(who))
        .await
        .expect("join");
    let (to_relay, mut from_relay) = participant.into_parts();
    let (peer_tx, mut peer_out) = mpsc::channel::<ClientMessage>(64);
    let (peer_in_tx, peer_in) = mpsc::channel::<ServerMessage>(64);
    let dropped = Arc::new(AtomicU64::new(0));
    let rebinds = Arc::new(Mutex::new(Vec::new()));
    let mut rewriter = CandidateRewriter {
        proxies: HashMap::new(),
        lossy,
        dropped: dropped.clone(),
        rebinds: rebinds.clone(),
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
    Proxied {
        peer,
        dropped,
        rebinds,
    }
}
