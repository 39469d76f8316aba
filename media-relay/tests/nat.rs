//! Behind a 1:1 NAT the relay announces its public address, never the local one.

mod common;

use std::net::IpAddr;

use common::PATIENCE;
use media_relay::test_peer::{TestPeer, TestPeerConfig};
use media_relay::{ParticipantId, Relay, RelayConfig, RoomId, ServerMessage};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_candidates_carry_the_configured_public_address() {
    common::init_tracing();
    let public: IpAddr = "203.0.113.7".parse().expect("literal address");
    let relay = Relay::new(RelayConfig {
        public_ip: Some(public),
        ..RelayConfig::default()
    })
    .expect("valid");
    let participant = relay
        .join(RoomId::from("case-nat"), ParticipantId::from("agent"))
        .await
        .expect("join");
    let (to_relay, mut from_relay) = participant.into_parts();

    // Tap the relay's messages on their way to the peer.
    let (tap_tx, tap_rx) = mpsc::channel(64);
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = from_relay.recv().await {
            let _ = seen_tx.send(message.clone());
            if tap_tx.send(message).await.is_err() {
                break;
            }
        }
    });
    let _peer = TestPeer::start(TestPeerConfig::default(), to_relay, tap_rx)
        .await
        .expect("test peer starts");

    let mut answer_checked = false;
    let mut candidates = 0;
    while !(answer_checked && candidates > 0) {
        let message = tokio::time::timeout(PATIENCE, seen.recv())
            .await
            .expect("relay keeps talking")
            .expect("relay open");
        match message {
            ServerMessage::Answer { sdp } => {
                for line in sdp.lines().filter(|l| l.starts_with("a=candidate:")) {
                    assert!(line.contains(" 203.0.113.7 "), "{line}");
                }
                assert!(!sdp.contains("127.0.0.1 "), "{sdp}");
                answer_checked = true;
            }
            ServerMessage::Candidate { candidate } => {
                assert!(
                    candidate.candidate.contains(" 203.0.113.7 "),
                    "{}",
                    candidate.candidate
                );
                candidates += 1;
            }
            _ => {}
        }
    }
}
