//! What the relay refuses, and that refusing leaves the room up.

mod common;

use common::{PATIENCE, join, receives_from, relay};
use media_relay::test_peer::{TestPeer, TestPeerConfig};
use media_relay::{
    ClientMessage, ErrorCode, ParticipantId, Relay, RelayConfig, RelayError, RoomId, ServerMessage,
};

async fn next_error(participant: &mut media_relay::Participant) -> ErrorCode {
    loop {
        match tokio::time::timeout(PATIENCE, participant.recv()).await {
            Ok(Some(ServerMessage::Error { code, .. })) => return code,
            Ok(Some(_)) => continue,
            other => panic!("no error message: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ninth_participant_is_refused_with_room_full() {
    common::init_tracing();
    let relay = Relay::new(RelayConfig::default()).expect("valid");
    let mut members = Vec::new();
    for i in 0..8 {
        members.push(
            relay
                .join(RoomId::from("case-9"), ParticipantId(format!("p{i}")))
                .await
                .expect("eight fit"),
        );
    }
    let refused = relay
        .join(RoomId::from("case-9"), ParticipantId::from("p8"))
        .await;
    assert!(
        matches!(refused, Err(RelayError::RoomFull { max: 8, .. })),
        "{refused:?}"
    );
    // The same id twice is misuse, refused as such.
    let duplicate = relay
        .join(RoomId::from("case-9"), ParticipantId::from("p0"))
        .await;
    assert!(
        matches!(duplicate, Err(RelayError::AlreadyInRoom { .. })),
        "{duplicate:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_codec_less_sdp_gets_a_clear_error_and_the_room_stays_up() {
    let relay = relay();
    let agent = join(&relay, "case-bad", "agent", TestPeerConfig::default()).await;

    let mut approver = relay
        .join(RoomId::from("case-bad"), ParticipantId::from("approver"))
        .await
        .expect("join");
    approver
        .send(ClientMessage::Offer {
            sdp: "this is not sdp".into(),
        })
        .await
        .expect("room up");
    assert_eq!(next_error(&mut approver).await, ErrorCode::BadSdp);

    let pcmu_only = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n\
a=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:0 PCMU/8000\r\n";
    approver
        .send(ClientMessage::Offer {
            sdp: pcmu_only.into(),
        })
        .await
        .expect("room up");
    assert_eq!(next_error(&mut approver).await, ErrorCode::NoUsableCodec);

    approver
        .send(ClientMessage::Answer { sdp: "v=0".into() })
        .await
        .expect("room up");
    assert_eq!(next_error(&mut approver).await, ErrorCode::UnexpectedAnswer);

    // The same participant then connects properly, and the call works both ways.
    let (sender, events) = approver.into_parts();
    let approver = TestPeer::start(TestPeerConfig::default(), sender, events)
        .await
        .expect("test peer starts");
    for (peer, other) in [(&agent, "approver"), (&approver, "agent")] {
        peer.wait_until(PATIENCE, |r| receives_from(r, &[other], 50, 10))
            .await
            .unwrap_or_else(|r| panic!("no media from {other} after bad input: {r:#?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_participant_is_removed_and_the_room_closes_when_empty() {
    let relay = relay();
    let agent = join(&relay, "case-vanish", "agent", TestPeerConfig::default()).await;
    let approver = relay
        .join(RoomId::from("case-vanish"), ParticipantId::from("approver"))
        .await
        .expect("join");
    drop(approver); // the server's socket for it went away without a word
    agent
        .wait_until(PATIENCE, |r| {
            r.messages.iter().any(|m| {
                matches!(m, ServerMessage::ParticipantLeft { participant_id, .. }
                    if *participant_id == ParticipantId::from("approver"))
            })
        })
        .await
        .unwrap_or_else(|r| panic!("vanished participant not removed: {r:#?}"));
    agent.leave().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while relay.room_count() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "room never closed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(relay.metrics().snapshot().participants, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_racing_ahead_of_the_offer_are_kept_not_refused() {
    let relay = relay();
    let agent = join(&relay, "case-early", "agent", TestPeerConfig::default()).await;
    let approver = relay
        .join(RoomId::from("case-early"), ParticipantId::from("approver"))
        .await
        .expect("join");
    approver
        .send(ClientMessage::Candidate {
            candidate: media_relay::IceCandidate {
                candidate: "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
            },
        })
        .await
        .expect("room up");
    let (sender, events) = approver.into_parts();
    let approver = TestPeer::start(TestPeerConfig::default(), sender, events)
        .await
        .expect("test peer starts");
    let report = approver
        .wait_until(PATIENCE, |r| receives_from(r, &["agent"], 20, 5))
        .await
        .unwrap_or_else(|r| panic!("no call: {r:#?}"));
    assert!(
        !report
            .messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Error { .. })),
        "{:#?}",
        report.messages
    );
    drop(agent);
}
