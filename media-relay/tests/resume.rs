//! A participant whose signaling drops keeps its place for the grace period: the others see
//! nothing, media keeps flowing, and it resumes with a new handle; after the grace it has left.
//! A participant whose network changes (a new address) comes back with an ICE restart.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{Lossy, join_behind_proxy};
use common::{PATIENCE, init_tracing, join, receives_from};
use media_relay::test_peer::{PeerReport, TestPeerConfig};
use media_relay::{LeaveReason, ParticipantId, Relay, RelayConfig, RoomId, ServerMessage};

fn relay_with_grace(grace: Duration) -> Relay {
    init_tracing();
    Relay::new(RelayConfig {
        resume_grace: grace,
        ..RelayConfig::default()
    })
    .expect("valid")
}

fn saw_left(report: &PeerReport, who: &str) -> bool {
    report.messages.iter().any(|m| {
        matches!(m, ServerMessage::ParticipantLeft { participant_id, .. }
            if *participant_id == ParticipantId::from(who))
    })
}

fn packets_from(report: &PeerReport, who: &str) -> u64 {
    report.live_tracks_of(who).map(|t| t.counts.packets).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_resumes_within_the_grace_period_unseen_by_the_others() {
    let relay = relay_with_grace(Duration::from_secs(30));
    let agent = join(&relay, "case-resume", "agent", TestPeerConfig::default()).await;
    let approver = join(&relay, "case-resume", "approver", TestPeerConfig::default()).await;
    agent
        .wait_until(PATIENCE, |r| receives_from(r, &["approver"], 20, 5))
        .await
        .unwrap_or_else(|r| panic!("call did not start: {r:#?}"));

    approver.detach_signaling(); // the approver's WebSocket dropped
    let before = packets_from(&agent.report(), "approver");
    agent
        .wait_until(PATIENCE, |r| packets_from(r, "approver") > before + 100)
        .await
        .unwrap_or_else(|r| panic!("media stopped while signaling was away: {r:#?}"));

    let resumed = relay
        .resume(
            &RoomId::from("case-resume"),
            ParticipantId::from("approver"),
        )
        .await
        .expect("still in the room");
    let (sender, events) = resumed.into_parts();
    approver.attach_signaling(sender, events);
    let asked_before = approver.report().keyframe_requests;
    approver.restart_ice(); // its network changed meanwhile
    // After the ICE restart its subscribers' decoders start again from a keyframe.
    approver
        .wait_until(PATIENCE, |r| r.keyframe_requests > asked_before)
        .await
        .unwrap_or_else(|r| {
            panic!(
                "no keyframe asked of the resumed publisher: {}",
                r.keyframe_requests
            )
        });

    // Signaling works again: a newcomer's tracks reach the resumed approver.
    let expert = join(&relay, "case-resume", "expert", TestPeerConfig::default()).await;
    approver
        .wait_until(PATIENCE, |r| receives_from(r, &["agent", "expert"], 20, 5))
        .await
        .unwrap_or_else(|r| panic!("no renegotiation after resume: {r:#?}"));
    expert
        .wait_until(PATIENCE, |r| {
            receives_from(r, &["agent", "approver"], 20, 5)
        })
        .await
        .unwrap_or_else(|r| panic!("newcomer lacks the resumed approver: {r:#?}"));
    assert!(
        !saw_left(&agent.report(), "approver"),
        "the agent saw the approver leave"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_grace_period_a_detached_participant_has_left() {
    let grace = Duration::from_millis(700);
    let relay = relay_with_grace(grace);
    let agent = join(&relay, "case-gone", "agent", TestPeerConfig::default()).await;
    let approver = join(&relay, "case-gone", "approver", TestPeerConfig::default()).await;
    agent
        .wait_until(PATIENCE, |r| receives_from(r, &["approver"], 20, 5))
        .await
        .unwrap_or_else(|r| panic!("call did not start: {r:#?}"));

    let detached_at = Instant::now();
    approver.detach_signaling();
    let report = agent
        .wait_until(PATIENCE, |r| saw_left(r, "approver"))
        .await
        .unwrap_or_else(|r| panic!("approver never left: {r:#?}"));
    assert!(
        detached_at.elapsed() >= grace,
        "left before the grace ran out"
    );
    assert!(report.messages.iter().any(|m| matches!(
        m,
        ServerMessage::ParticipantLeft {
            reason: LeaveReason::Vanished,
            ..
        }
    )));
    let resumed = relay
        .resume(&RoomId::from("case-gone"), ParticipantId::from("approver"))
        .await;
    assert!(resumed.is_err(), "no place left to resume");
    agent
        .wait_until(PATIENCE, |r| r.live_tracks_of("approver").count() == 0)
        .await
        .unwrap_or_else(|r| panic!("approver's tracks stayed: {r:#?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_whose_address_changes_comes_back_with_an_ice_restart_unseen_by_the_others() {
    let relay = relay_with_grace(Duration::from_secs(30));
    let approver = join(&relay, "case-move", "approver", TestPeerConfig::default()).await;
    let agent = join_behind_proxy(
        &relay,
        "case-move",
        "agent",
        TestPeerConfig::default(),
        Lossy::No,
    )
    .await;
    approver
        .wait_until(PATIENCE, |r| receives_from(r, &["agent"], 20, 5))
        .await
        .unwrap_or_else(|r| panic!("call did not start: {r:#?}"));
    let unrouted_before = relay.metrics().snapshot().datagrams_unrouted;

    // The phone moves to another network: its packets now come from another address, which the
    // relay does not know, so they are not routed.
    agent.change_address();
    approver
        .wait_until(PATIENCE, |_| {
            relay.metrics().snapshot().datagrams_unrouted > unrouted_before
        })
        .await
        .unwrap_or_else(|r| panic!("packets from the new address were routed: {r:#?}"));

    // It restarts ICE: the checks from the new address carry its new ICE username, the relay's
    // socket routes them to its connection, and media flows both ways again.
    agent.peer.restart_ice();
    let from_agent = packets_from(&approver.report(), "agent");
    let from_approver = packets_from(&agent.peer.report(), "approver");
    approver
        .wait_until(PATIENCE, |r| packets_from(r, "agent") > from_agent + 200)
        .await
        .unwrap_or_else(|r| panic!("the agent's media did not come back: {r:#?}"));
    let report = agent
        .peer
        .wait_until(PATIENCE, |r| {
            packets_from(r, "approver") > from_approver + 200
        })
        .await
        .unwrap_or_else(|r| panic!("the approver's media did not reach the new address: {r:#?}"));
    assert!(
        !saw_left(&approver.report(), "agent"),
        "the others saw nothing"
    );
    assert!(
        report
            .live_tracks_of("approver")
            .all(|t| t.counts.frames_decodable + 3 >= t.counts.frames_complete),
        "video decodes after the move: {report:#?}"
    );
}
