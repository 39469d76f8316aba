//! Helpers shared by the integration tests: a relay on loopback, and test peers joined to it.
#![allow(dead_code)]

pub mod proxy;

use std::time::Duration;

use media_relay::test_peer::{PeerReport, TestPeer, TestPeerConfig};
use media_relay::{MediaKind, ParticipantId, Relay, RelayConfig, RoomId};

/// Long enough for a loaded CI machine, short enough to fail a broken relay quickly.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rtc_dtls=error,rtc_ice=error".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn relay() -> Relay {
    init_tracing();
    Relay::new(RelayConfig::default()).expect("default config is valid")
}

pub async fn join(relay: &Relay, room: &str, who: &str, config: TestPeerConfig) -> TestPeer {
    let participant = relay
        .join(RoomId::from(room), ParticipantId::from(who))
        .await
        .expect("join");
    let (sender, events) = participant.into_parts();
    TestPeer::start(config, sender, events)
        .await
        .expect("test peer starts")
}

/// A participant that only receives, reporting `bandwidth` (REMB) from the start if given.
pub fn receiver(bandwidth: Option<u64>) -> TestPeerConfig {
    TestPeerConfig {
        publish_audio: false,
        publish_video: false,
        reported_bandwidth: bandwidth,
        ..TestPeerConfig::default()
    }
}

/// Whether the report has live tracks of `kind` from exactly these publishers, each past
/// `min_packets` packets (and, for video, `min_frames` complete frames).
pub fn receives_from(
    report: &PeerReport,
    publishers: &[&str],
    min_packets: u64,
    min_frames: u64,
) -> bool {
    let audio: Vec<_> = report.live_tracks(MediaKind::Audio).collect();
    let video: Vec<_> = report.live_tracks(MediaKind::Video).collect();
    audio.len() == publishers.len()
        && video.len() == publishers.len()
        && publishers.iter().all(|p| {
            audio
                .iter()
                .any(|t| t.publisher == *p && t.counts.packets >= min_packets)
                && video.iter().any(|t| {
                    t.publisher == *p
                        && t.counts.packets >= min_packets
                        && t.counts.frames_complete >= min_frames
                })
        })
}
