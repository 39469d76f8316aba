//! Every participant hears, every interval, how everyone's connection is doing.

mod common;

use std::time::Duration;

use common::{PATIENCE, init_tracing, join};
use media_relay::quality::{ConnectionQuality, QualityGrade};
use media_relay::test_peer::{PeerReport, TestPeerConfig};
use media_relay::{ParticipantId, Relay, RelayConfig, ServerMessage};

/// Every quality sample of `who` the peer was sent, oldest first.
fn samples<'a>(
    report: &'a PeerReport,
    who: &'a str,
) -> impl Iterator<Item = ConnectionQuality> + 'a {
    report.messages.iter().filter_map(move |m| match m {
        ServerMessage::ConnectionQuality {
            participant_id,
            quality,
        } if *participant_id == ParticipantId::from(who) => Some(*quality),
        _ => None,
    })
}

fn latest(report: &PeerReport, who: &str) -> Option<ConnectionQuality> {
    samples(report, who).last()
}

/// A relay that reports quality every half second.
fn quality_relay() -> Relay {
    init_tracing();
    Relay::new(RelayConfig {
        quality_interval: Duration::from_millis(500),
        ..RelayConfig::default()
    })
    .expect("valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_quality_reports_bitrates_loss_and_rtt_of_everyone() {
    let relay = quality_relay();
    let agent = join(&relay, "case-quality", "agent", TestPeerConfig::default()).await;
    let _approver = join(
        &relay,
        "case-quality",
        "approver",
        TestPeerConfig::default(),
    )
    .await;

    // Both send ~30 fps of 1.5 kB frames plus audio: well over 200 kbit/s each way.
    let flowing = |q: Option<ConnectionQuality>| {
        q.is_some_and(|q| q.uplink_kbps > 200 && q.downlink_kbps > 200)
    };
    let report = agent
        .wait_until(PATIENCE, |r| {
            flowing(latest(r, "agent")) && flowing(latest(r, "approver"))
        })
        .await
        .unwrap_or_else(|r| panic!("no quality reports with media: {:#?}", r.messages));
    for who in ["agent", "approver"] {
        let quality = latest(&report, who).expect("checked above");
        eprintln!("{who}: {quality:?}");
        assert_eq!(
            quality.uplink_loss, 0.0,
            "loopback loses nothing: {quality:?}"
        );
        assert_eq!(quality.grade, QualityGrade::Good, "{quality:?}");
        assert!(quality.uplink_kbps < 5_000, "{quality:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_whose_video_stalls_shows_as_freezes_in_what_the_others_receive() {
    let relay = quality_relay();
    let agent = join(&relay, "case-freeze", "agent", TestPeerConfig::default()).await;
    let approver = join(&relay, "case-freeze", "approver", TestPeerConfig::default()).await;
    approver
        .wait_until(PATIENCE, |r| common::receives_from(r, &["agent"], 60, 30))
        .await
        .unwrap_or_else(|r| panic!("no video from the agent: {r:#?}"));

    agent.stall_video(Duration::from_millis(800));
    // The approver's own record (what it was sent) shows the freeze; the agent's does not.
    let report = approver
        .wait_until(PATIENCE, |r| samples(r, "approver").any(|q| q.freezes > 0))
        .await
        .unwrap_or_else(|r| panic!("no freeze reported: {:#?}", r.messages));
    let frozen: u32 = samples(&report, "approver").map(|q| q.frozen_ms).sum();
    assert!(
        (700..5_000).contains(&frozen),
        "one freeze of about 800 ms: {frozen} ms"
    );
    let agent_freezes: u32 = samples(&agent.report(), "agent").map(|q| q.freezes).sum();
    assert_eq!(agent_freezes, 0, "the approver's video never stalled");
}
