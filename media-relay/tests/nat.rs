//! Where peers reach the relay: one fixed UDP port for every peer connection of every room, and
//! behind a 1:1 NAT the configured public address, never the local one.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{PATIENCE, receives_from};
use media_relay::test_peer::{TestPeer, TestPeerConfig};
use media_relay::{ParticipantId, Relay, RelayConfig, RoomId, ServerMessage};
use tokio::sync::mpsc;

/// Joins `who` to `room` with a test peer, and returns the peer and every SDP answer the relay
/// sent it (tapped on the way).
async fn join_tapped(
    relay: &Relay,
    room: &str,
    who: &str,
) -> (TestPeer, mpsc::UnboundedReceiver<String>) {
    let participant = relay
        .join(RoomId::from(room), ParticipantId::from(who))
        .await
        .expect("join");
    let (to_relay, mut from_relay) = participant.into_parts();
    let (tap_tx, tap_rx) = mpsc::channel(64);
    let (answers_tx, answers) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = from_relay.recv().await {
            if let ServerMessage::Answer { sdp } = &message {
                let _ = answers_tx.send(sdp.clone());
            }
            if tap_tx.send(message).await.is_err() {
                break;
            }
        }
    });
    let peer = TestPeer::start(TestPeerConfig::default(), to_relay, tap_rx)
        .await
        .expect("test peer starts");
    (peer, answers)
}

/// The distinct `address port` of the candidate lines of an SDP.
fn candidate_addresses(sdp: &str) -> Vec<String> {
    let mut addresses: Vec<String> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            format!("{} {}", fields[4], fields[5])
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

async fn first_answer(answers: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(PATIENCE, answers.recv())
        .await
        .expect("the relay answers in time")
        .expect("relay open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_candidates_carry_the_configured_public_address() {
    common::init_tracing();
    let public: IpAddr = "203.0.113.7".parse().expect("literal address");
    let relay = Relay::new(RelayConfig {
        public_ip: Some(public),
        ..RelayConfig::default()
    })
    .expect("valid");
    let bound = relay.bind().await.expect("binds");
    let (_peer, mut answers) = join_tapped(&relay, "case-nat", "agent").await;
    let sdp = first_answer(&mut answers).await;
    let candidates = candidate_addresses(&sdp);
    assert_eq!(
        candidates,
        vec![format!("203.0.113.7 {}", bound[0].port())],
        "{sdp}"
    );
    assert!(!sdp.contains("127.0.0.1"), "{sdp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_of_every_room_uses_the_one_configured_udp_port() {
    common::init_tracing();
    // A port free a moment ago: the relay binds it as configured.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let relay = Relay::new(RelayConfig {
        udp_addrs: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        ..RelayConfig::default()
    })
    .expect("valid");
    assert_eq!(
        relay.bind().await.expect("binds"),
        vec![SocketAddr::from(([127, 0, 0, 1], port))]
    );
    let mut peers = Vec::new();
    for (room, who) in [
        ("case-a", "agent-a"),
        ("case-a", "approver-a"),
        ("case-b", "agent-b"),
        ("case-b", "approver-b"),
    ] {
        let (peer, mut answers) = join_tapped(&relay, room, who).await;
        let sdp = first_answer(&mut answers).await;
        assert_eq!(
            candidate_addresses(&sdp),
            vec![format!("127.0.0.1 {port}")],
            "{who}: {sdp}"
        );
        peers.push(peer);
    }
    // Media flows in both rooms through the one socket, each room only to its own members.
    for (index, other) in [
        (0, "approver-a"),
        (1, "agent-a"),
        (2, "approver-b"),
        (3, "agent-b"),
    ] {
        peers[index]
            .wait_until(PATIENCE, |r| receives_from(r, &[other], 20, 3))
            .await
            .unwrap_or_else(|r| panic!("peer {index} does not receive {other}: {r:#?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_already_taken_is_refused_at_bind_naming_the_address() {
    common::init_tracing();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("a socket");
    let addr = taken.local_addr().expect("its address");
    let relay = Relay::new(RelayConfig {
        udp_addrs: vec![addr],
        ..RelayConfig::default()
    })
    .expect("valid");
    let err = relay
        .bind()
        .await
        .expect_err("the port is taken")
        .to_string();
    assert!(err.contains(&addr.to_string()), "{err}");
    let err = relay
        .join(RoomId::from("case"), ParticipantId::from("agent"))
        .await
        .expect_err("no socket, no join")
        .to_string();
    assert!(err.contains(&addr.to_string()), "{err}");
}

#[test]
fn a_wildcard_address_without_a_public_address_is_refused() {
    let err = Relay::new(RelayConfig {
        udp_addrs: vec![SocketAddr::from(([0, 0, 0, 0], 7882))],
        ..RelayConfig::default()
    })
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("public"), "{err}");
}
