//! The relay's UDP socket: one per configured address, shared by every peer connection of every
//! room (ICE, DTLS, SRTP and RTCP all on one port). A reader task hands each datagram to the
//! room that owns the peer it came from; rooms send through the same socket.
//!
//! Demultiplexing (as str0m and LiveKit do): a datagram from a known remote address goes to that
//! address's link; from an unknown one, only a STUN binding request is accepted, and its USERNAME
//! (`<relay ufrag>:<peer ufrag>`, RFC 8445 §7.2.2) names the link. The link's ICE agent then
//! checks the request's integrity; a forged USERNAME can at most make a room read and refuse one
//! packet.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::error::RelayError;
use crate::metrics::RelayMetrics;

/// Largest datagram read (an MTU-sized packet is ~1,200–1,500 bytes).
const MAX_DATAGRAM: usize = 2048;

/// The socket buffers asked for: every peer of every room shares one socket, so a burst from many
/// peers (or keyframes fanned out to many) must fit while the reader or the network catches up.
/// The kernel caps it at `net.core.rmem_max` / `wmem_max`.
const SOCKET_BUFFER: usize = 4 << 20;

/// Datagrams queued to one room before further ones are dropped (UDP semantics: a room that
/// cannot keep up loses packets, it does not stall the other rooms).
pub(crate) const ROOM_QUEUE: usize = 4096;

/// One received datagram, for the link `link`.
pub(crate) struct Inbound {
    pub(crate) link: u64,
    /// The announced address the datagram arrived at (what the link's ICE candidate names).
    pub(crate) local: SocketAddr,
    pub(crate) peer: SocketAddr,
    pub(crate) at: Instant,
    pub(crate) data: BytesMut,
}

/// Where a link's datagrams go.
#[derive(Clone)]
struct Route {
    link: u64,
    room: mpsc::Sender<Inbound>,
}

#[derive(Default)]
struct Routes {
    /// Local ICE username fragment → link.
    by_ufrag: HashMap<String, Route>,
    /// (socket index, remote address) → link.
    by_addr: HashMap<(usize, SocketAddr), Route>,
}

/// One bound socket and the address its candidates announce.
struct Bound {
    socket: Arc<UdpSocket>,
    announced: SocketAddr,
}

/// The shared sockets and the routing table.
pub(crate) struct UdpMux {
    bound: Vec<Bound>,
    routes: Mutex<Routes>,
    /// Bumped whenever a route is added or forgotten: the readers keep the routes they used in
    /// a cache of their own and take the lock only when this changed or an address is new.
    generation: AtomicU64,
    metrics: Arc<RelayMetrics>,
}

impl UdpMux {
    /// Binds every address and starts a reader per socket. A wildcard address needs `public_ip`
    /// (the candidates must name an address peers can reach).
    pub(crate) async fn bind(
        addrs: &[SocketAddr],
        public_ip: Option<IpAddr>,
        metrics: Arc<RelayMetrics>,
    ) -> Result<Arc<Self>, RelayError> {
        let mut bound = Vec::new();
        for addr in addrs {
            let socket = bind_udp(*addr)
                .map_err(|e| RelayError::Config(format!("cannot bind UDP {addr}: {e}")))?;
            let local = socket
                .local_addr()
                .map_err(|e| RelayError::Config(format!("UDP {addr}: {e}")))?;
            let ip = match public_ip {
                Some(ip) => ip,
                None if local.ip().is_unspecified() => {
                    return Err(RelayError::Config(format!(
                        "UDP {addr} is a wildcard address: set the public address peers reach"
                    )));
                }
                None => local.ip(),
            };
            bound.push(Bound {
                socket: Arc::new(socket),
                announced: SocketAddr::new(ip, local.port()),
            });
        }
        let mux = Arc::new(Self {
            bound,
            routes: Mutex::new(Routes::default()),
            generation: AtomicU64::new(0),
            metrics,
        });
        for index in 0..mux.bound.len() {
            let weak = Arc::downgrade(&mux);
            let socket = mux.bound[index].socket.clone();
            tokio::spawn(async move { read_loop(weak, index, socket).await });
        }
        Ok(mux)
    }

    /// The addresses the relay's candidates announce, one per socket.
    pub(crate) fn announced(&self) -> Vec<SocketAddr> {
        self.bound.iter().map(|b| b.announced).collect()
    }

    /// The bound local addresses, one per socket.
    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.bound
            .iter()
            .filter_map(|b| b.socket.local_addr().ok())
            .collect()
    }

    /// Routes STUN requests naming `ufrag` (and then their senders' datagrams) to `link`.
    pub(crate) fn register(&self, ufrag: &str, link: u64, room: mpsc::Sender<Inbound>) {
        self.lock()
            .by_ufrag
            .insert(ufrag.to_owned(), Route { link, room });
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Forgets every route of `link` (its connection closed).
    pub(crate) fn forget(&self, link: u64) {
        let mut routes = self.lock();
        routes.by_ufrag.retain(|_, r| r.link != link);
        routes.by_addr.retain(|_, r| r.link != link);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Sends one datagram from the socket whose announced address is `from` (the first socket if
    /// none matches). A full socket buffer drops the datagram, as the network would.
    pub(crate) fn send(&self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        let bound = self
            .bound
            .iter()
            .find(|b| b.announced == from)
            .or_else(|| self.bound.first());
        let Some(bound) = bound else { return };
        match bound.socket.try_send_to(data, to) {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                RelayMetrics::inc(&self.metrics.datagrams_dropped);
            }
            Err(err) => tracing::debug!(%to, %err, "UDP send failed"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        // Every critical section is a single map operation: a panic cannot leave it half done.
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The link a datagram from `peer` on socket `index` belongs to, learning the address from a
    /// STUN request's USERNAME.
    fn route(&self, index: usize, peer: SocketAddr, data: &[u8]) -> Option<Route> {
        let mut routes = self.lock();
        if let Some(route) = routes.by_addr.get(&(index, peer)) {
            return Some(route.clone());
        }
        let ufrag = stun_username(data)?.split(':').next()?.to_owned();
        let route = routes.by_ufrag.get(&ufrag)?.clone();
        routes.by_addr.insert((index, peer), route.clone());
        Some(route)
    }
}

/// A non-blocking UDP socket on `addr` with large buffers (see [`SOCKET_BUFFER`]).
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    for (name, set, get) in [
        (
            "receive",
            Socket::set_recv_buffer_size as fn(&Socket, usize) -> std::io::Result<()>,
            Socket::recv_buffer_size as fn(&Socket) -> std::io::Result<usize>,
        ),
        (
            "send",
            Socket::set_send_buffer_size,
            Socket::send_buffer_size,
        ),
    ] {
        set(&socket, SOCKET_BUFFER)?;
        let got = get(&socket)?;
        // Linux reports twice what it grants (the other half is its bookkeeping).
        if got < SOCKET_BUFFER {
            tracing::warn!(
                %addr, asked = SOCKET_BUFFER, got,
                "UDP {name} buffer capped by the kernel: raise net.core.{}mem_max for busy relays",
                if name == "receive" { "r" } else { "w" }
            );
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

async fn read_loop(mux: std::sync::Weak<UdpMux>, index: usize, socket: Arc<UdpSocket>) {
    // Datagrams are received into the spare capacity of one large buffer and split off it, so a
    // packet costs neither an allocation nor zeroing.
    let mut buf = BytesMut::with_capacity(64 * MAX_DATAGRAM);
    // The routes this reader used, valid while the table's generation is unchanged: a datagram
    // costs an atomic load, not the table's lock.
    let mut cache: HashMap<SocketAddr, Route> = HashMap::new();
    let mut cached_generation = u64::MAX;
    loop {
        // Empty here: each received datagram was split off whole.
        if buf.capacity() < MAX_DATAGRAM {
            buf.reserve(64 * MAX_DATAGRAM);
        }
        let received = socket.recv_buf_from(&mut buf).await;
        let Some(mux) = mux.upgrade() else { return };
        let (len, peer) = match received {
            Ok(received) => received,
            Err(err) => {
                // ICMP port-unreachable from a departed peer surfaces here on some systems.
                tracing::debug!(%err, "UDP receive failed");
                continue;
            }
        };
        let data = buf.split_to(len);
        let generation = mux.generation.load(Ordering::Acquire);
        if generation != cached_generation {
            cache.clear();
            cached_generation = generation;
        }
        let route = match cache.entry(peer) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let Some(route) = mux.route(index, peer, &data) else {
                    RelayMetrics::inc(&mux.metrics.datagrams_unrouted);
                    continue;
                };
                entry.insert(route)
            }
        };
        let inbound = Inbound {
            link: route.link,
            local: mux.bound[index].announced,
            peer,
            at: Instant::now(),
            data,
        };
        match route.room.try_send(inbound) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                RelayMetrics::inc(&mux.metrics.datagrams_dropped);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => mux.forget(route.link),
        }
    }
}

const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const STUN_BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const STUN_USERNAME: u16 = 0x0006;
const STUN_MESSAGE_INTEGRITY: u16 = 0x0008;

/// The first attribute of type `kind` in a STUN binding request (RFC 8489 §5, §14), if `data` is
/// one: its offset from the message's start and its value.
fn stun_attribute(data: &[u8], kind: u16) -> Option<(usize, &[u8])> {
    if data.len() < 20 || data[0..2] != STUN_BINDING_REQUEST || data[4..8] != STUN_MAGIC {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([data[2], data[3]]));
    data.get(20..20 + length)?;
    let mut offset = 20;
    while offset + 4 <= 20 + length {
        let at = u16::from_be_bytes([data[offset], data[offset + 1]]);
        let len = usize::from(u16::from_be_bytes([data[offset + 2], data[offset + 3]]));
        let value = data.get(offset + 4..offset + 4 + len)?;
        if at == kind {
            return Some((offset, value));
        }
        offset += (4 + len).div_ceil(4) * 4;
    }
    None
}

/// The USERNAME of a STUN binding request, if `data` is one.
pub(crate) fn stun_username(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(stun_attribute(data, STUN_USERNAME)?.1).ok()
}

/// Whether `data` is a STUN binding request whose MESSAGE-INTEGRITY checks with the short-term
/// credential `password` (RFC 8489 §14.5: HMAC-SHA1 over the message up to the attribute, with
/// the header's length counting up to the attribute's end).
pub(crate) fn stun_integrity_ok(data: &[u8], password: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    let Some((offset, tag)) = stun_attribute(data, STUN_MESSAGE_INTEGRITY) else {
        return false;
    };
    if tag.len() != 20 {
        return false;
    }
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(password) else {
        return false;
    };
    let length = u16::try_from(offset + 24 - 20).unwrap_or(u16::MAX);
    mac.update(&data[0..2]);
    mac.update(&length.to_be_bytes());
    mac.update(&data[4..offset]);
    mac.verify_slice(tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(attributes: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in attributes {
            body.extend_from_slice(&kind.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut packet = vec![0x00, 0x01];
        packet.extend_from_slice(&(body.len() as u16).to_be_bytes());
        packet.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        packet.extend_from_slice(&[7; 12]);
        packet.extend_from_slice(&body);
        packet
    }

    /// The next datagram routed to the inbox: link, sender and bytes.
    async fn received(inbox: &mut mpsc::Receiver<Inbound>) -> (u64, SocketAddr, Vec<u8>) {
        let wait = tokio::time::timeout(std::time::Duration::from_secs(5), inbox.recv());
        let got = wait.await.expect("routed in time").expect("inbox open");
        (got.link, got.peer, got.data.to_vec())
    }

    #[tokio::test]
    async fn a_peer_is_routed_by_its_stun_username_then_by_its_address_until_forgotten() {
        let metrics = Arc::new(RelayMetrics::default());
        let mux = UdpMux::bind(
            &[SocketAddr::from(([127, 0, 0, 1], 0))],
            None,
            metrics.clone(),
        )
        .await
        .expect("binds");
        let relay_addr = mux.local_addrs()[0];
        let (room, mut inbox) = mpsc::channel(16);
        mux.register("relayufrag", 7, room);
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("peer socket");
        let stranger = std::net::UdpSocket::bind("127.0.0.1:0").expect("stranger socket");
        // The reader's decisions are awaited, never slept on: a routed datagram arrives in the
        // inbox, an unrouted one raises the counter (and only then is the inbox checked empty).
        let unrouted = |n: u64| {
            let metrics = metrics.clone();
            tokio::time::timeout(std::time::Duration::from_secs(5), async move {
                while metrics.snapshot().datagrams_unrouted < n {
                    tokio::task::yield_now().await;
                }
            })
        };
        let rtp = [0x80u8, 96, 0, 1];

        // Media from an address nobody vouched for is dropped and counted.
        peer.send_to(&rtp, relay_addr).expect("sent");
        unrouted(1).await.expect("counted as unrouted");
        assert!(inbox.try_recv().is_err());

        // A binding request naming the link's ufrag is routed, and teaches the mux the address.
        let request = binding_request(&[(0x0006, b"relayufrag:peerufrag")]);
        peer.send_to(&request, relay_addr).expect("sent");
        let from = peer.local_addr().expect("address");
        assert_eq!(received(&mut inbox).await, (7, from, request.clone()));
        peer.send_to(&rtp, relay_addr).expect("sent");
        assert_eq!(received(&mut inbox).await, (7, from, rtp.to_vec()));

        // Another ufrag routes nowhere; a forgotten link's address no longer routes either (the
        // reader's cache of routes is dropped with it).
        stranger
            .send_to(&binding_request(&[(0x0006, b"otherufrag:x")]), relay_addr)
            .expect("sent");
        mux.forget(7);
        peer.send_to(&rtp, relay_addr).expect("sent");
        unrouted(3).await.expect("both counted as unrouted");
        assert!(inbox.try_recv().is_err());
        assert_eq!(metrics.snapshot().datagrams_unrouted, 3);
    }

    #[tokio::test]
    async fn the_shared_socket_gets_the_largest_buffers_the_kernel_allows() {
        let socket = bind_udp(SocketAddr::from(([127, 0, 0, 1], 0))).expect("binds");
        let limit = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(SOCKET_BUFFER)
        };
        let sock = socket2::SockRef::from(&socket);
        // Linux reports twice the size it grants; the default is ~208 KiB.
        let receive = sock.recv_buffer_size().expect("readable");
        assert!(receive >= SOCKET_BUFFER.min(limit("rmem_max")), "{receive}");
        let send = sock.send_buffer_size().expect("readable");
        assert!(send >= SOCKET_BUFFER.min(limit("wmem_max")), "{send}");
    }

    #[test]
    fn username_is_read_after_a_padded_attribute() {
        let packet = binding_request(&[(0x0024, b"\x6e\x7f\x1e"), (0x0006, b"relayA:peerB")]);
        assert_eq!(stun_username(&packet), Some("relayA:peerB"));
    }

    /// RFC 5769 §2.1, the sample request (software name, priority, ICE-CONTROLLED, username,
    /// integrity, fingerprint), with its password.
    const RFC5769_REQUEST: &str = "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e20746573742063\
        6c69656e74002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020000800149a\
        eaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf";

    #[test]
    fn integrity_checks_with_the_right_password_only() {
        let request = hex::decode(RFC5769_REQUEST.replace(' ', "")).expect("hex");
        assert_eq!(stun_username(&request), Some("evtj:h6vY"));
        assert!(stun_integrity_ok(&request, b"VOkJxbRl1RmTxUk/WvJxBt"));
        assert!(!stun_integrity_ok(&request, b"VOkJxbRl1RmTxUk/WvJxBT"));
        let mut tampered = request.clone();
        tampered[30] ^= 1; // in the SOFTWARE attribute
        assert!(!stun_integrity_ok(&tampered, b"VOkJxbRl1RmTxUk/WvJxBt"));
        assert!(!stun_integrity_ok(
            &binding_request(&[(0x0006, b"a:b")]),
            b"x"
        ));
    }

    #[test]
    fn non_stun_and_truncated_packets_have_no_username() {
        let packet = binding_request(&[(0x0006, b"relayA:peerB")]);
        assert_eq!(stun_username(&packet[..packet.len() - 3]), None);
        let mut response = packet.clone();
        response[1] = 0x01; // 0x0101: a binding success response, not a request
        response[0] = 0x01;
        assert_eq!(stun_username(&response), None);
        assert_eq!(stun_username(&[0x80, 0x60, 0, 1]), None); // RTP
        assert_eq!(stun_username(&binding_request(&[(0x8028, b"abcd")])), None);
    }
}
