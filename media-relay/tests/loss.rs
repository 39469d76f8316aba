//! Retransmission under loss, in both legs (every 20th RTP packet dropped by a proxy,
//! `common::proxy`): a publisher behind a lossy uplink still reaches its subscriber nearly whole,
//! because the relay NACKs what it misses and forwards the retransmissions; a subscriber behind a
//! lossy downlink gets nearly everything, because the relay answers its NACKs from the packets it
//! sent.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::proxy::{Lossy, join_behind_proxy};
use common::{PATIENCE, join, receiver, receives_from};
use media_relay::metrics::MetricsSnapshot;
use media_relay::test_peer::frames::TrackCounts;
use media_relay::test_peer::{PeerReport, TestPeerConfig};
use media_relay::{MediaKind, Relay, RelayConfig};

/// A relay that reports quality (and so counts NACKs) every second.
fn relay() -> Relay {
    common::init_tracing();
    Relay::new(RelayConfig {
        quality_interval: Duration::from_secs(1),
        ..RelayConfig::default()
    })
    .expect("valid config")
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
    let agent = join_behind_proxy(
        &relay,
        "case-loss",
        "agent",
        TestPeerConfig::default(),
        Lossy::Uplink(20),
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
        agent.dropped.load(Ordering::Relaxed),
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
    let agent = join_behind_proxy(
        &relay,
        "case-loss-down",
        "agent",
        receiver(None),
        Lossy::Downlink(20),
    )
    .await;
    let report = agent
        .peer
        .wait_until(PATIENCE, |r| video_from(r, "approver").packets >= 600)
        .await
        .unwrap_or_else(|r| panic!("approver's media did not arrive: {r:#?}"));
    let video = video_from(&report, "approver");
    assert_repaired(&video, agent.dropped.load(Ordering::Relaxed), "downlink");
    assert!(video.recovered > 0, "retransmissions arrived: {video:?}");
    assert!(
        counter_rises(&relay, |m| m.nacks_received).await > 0,
        "the subscriber's NACKs are counted"
    );
    drop(approver);
}
