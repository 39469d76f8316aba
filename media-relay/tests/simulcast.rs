//! Simulcast: a publisher sends three layers of one video; each subscriber gets the layer its
//! reported bandwidth carries, moving down at once when it drops and back up when it recovers,
//! every switch on a keyframe of the new layer (the relay asks for it: the publisher here sends
//! keyframes only when asked).

mod common;

use std::time::Duration;

use common::{PATIENCE, join, receiver};
use media_relay::test_peer::{PeerReport, ReceivedTrack, TestPeerConfig};
use media_relay::{ClientMessage, ErrorCode, MediaKind, ParticipantId, RelayConfig, ServerMessage};

/// Up-switches wait out a 3 s hold per layer; two of them, plus a loaded machine.
const CLIMB: Duration = Duration::from_secs(30);

fn agent_video(report: &PeerReport) -> Option<&ReceivedTrack> {
    report
        .live_tracks(MediaKind::Video)
        .find(|t| t.publisher == "agent")
}

/// The layers the approver's quality records named, in order.
fn recorded_layers(report: &PeerReport) -> Vec<Option<u8>> {
    report
        .messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::ConnectionQuality {
                participant_id,
                quality,
            } if *participant_id == ParticipantId::from("approver") => Some(quality.layer),
            _ => None,
        })
        .collect()
}

fn on_layer(report: &PeerReport, layer: u8, min_frames: u64) -> bool {
    agent_video(report)
        .is_some_and(|t| t.counts.layer == Some(layer) && t.counts.frames_complete >= min_frames)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_whose_bandwidth_drops_moves_to_a_lower_layer_and_back_each_switch_on_a_keyframe()
 {
    let relay = media_relay::Relay::new(RelayConfig {
        quality_interval: Duration::from_secs(1),
        ..RelayConfig::default()
    })
    .expect("valid config");
    common::init_tracing();
    let publisher = TestPeerConfig {
        simulcast: true,
        // Keyframes only when asked: a switch can only happen on one the relay requested.
        keyframe_interval: Duration::from_secs(600),
        publish_audio: false,
        ..TestPeerConfig::default()
    };
    let agent = join(&relay, "case-simulcast", "agent", publisher).await;
    let approver = join(&relay, "case-simulcast", "approver", receiver(None)).await;

    // Before any estimate, a new subscriber starts on the lowest layer (once the layers are
    // measured: the first frames of a track that has just opened may come from another).
    let start = approver
        .wait_until(PATIENCE, |r| on_layer(r, 0, 10))
        .await
        .unwrap_or_else(|r| panic!("no frames of the lowest layer: {r:#?}"));
    let initial = agent_video(&start).expect("checked").counts.layer_switches;
    assert!(initial <= 1, "{start:#?}");

    // Plenty of bandwidth: up one layer at a time to the top.
    approver.report_bandwidth(Some(5_000_000));
    approver
        .wait_until(CLIMB, |r| on_layer(r, 2, 0))
        .await
        .unwrap_or_else(|r| panic!("did not climb to the top layer: {r:#?}"));

    // The link drops to 100 kbit/s: straight down to the lowest layer (about 40 kbit/s).
    approver.report_bandwidth(Some(100_000));
    let dropped = approver
        .wait_until(PATIENCE, |r| on_layer(r, 0, 0))
        .await
        .unwrap_or_else(|r| panic!("did not move down: {r:#?}"));
    let down = agent_video(&dropped).expect("checked").counts.clone();
    assert_eq!(down.layer_switches - initial, 3, "0→1→2→0: {down:?}");

    // It recovers: back up to the top (and the quality record says so).
    approver.report_bandwidth(Some(5_000_000));
    let report = approver
        .wait_until(CLIMB, |r| {
            on_layer(r, 2, 0) && recorded_layers(r).last() == Some(&Some(2))
        })
        .await
        .unwrap_or_else(|r| panic!("did not climb back: {r:#?}"));
    let track = agent_video(&report).expect("checked");
    let counts = &track.counts;
    assert_eq!(
        counts.layer_switches - initial,
        5,
        "0→1→2→0→1→2: {counts:?}"
    );
    assert_eq!(
        counts.layer_switches_mid_gop, 0,
        "every switch starts on a keyframe of the new layer: {counts:?}"
    );
    assert_eq!(
        counts.frames_decodable, counts.frames_complete,
        "no frame the decoder could not follow: {counts:?}"
    );
    assert_eq!(counts.first_frame_keyframe, Some(true));
    assert_eq!(
        counts.lost, 0,
        "sequence numbers continue across switches: {counts:?}"
    );
    assert!(
        agent.report().keyframe_requests >= 5,
        "the relay asked for each new layer's keyframe"
    );
    assert!(relay.metrics().snapshot().layer_switches >= 5);
    // The quality record told which layer the subscriber got, on the way down too.
    assert!(recorded_layers(&report).contains(&Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_showing_a_small_tile_gets_no_larger_layer_than_the_tile() {
    common::init_tracing();
    let relay = media_relay::Relay::new(RelayConfig::default()).expect("valid config");
    let publisher = TestPeerConfig {
        simulcast: true,
        publish_audio: false,
        ..TestPeerConfig::default()
    };
    let _agent = join(&relay, "case-tile", "agent", publisher).await;
    // Bandwidth for every layer: only the tile's size holds it back.
    let approver = join(&relay, "case-tile", "approver", receiver(Some(10_000_000))).await;
    let started = approver
        .wait_until(PATIENCE, |r| agent_video(r).is_some())
        .await
        .unwrap_or_else(|r| panic!("no video: {r:#?}"));
    let track_id = agent_video(&started).expect("checked").track_id.clone();
    // A tile of 300×200: the 320×240 layer is the smallest that fills it.
    approver.send(ClientMessage::VideoSize {
        track_id: track_id.clone(),
        width: 300,
        height: 200,
    });
    let middle = approver
        .wait_until(CLIMB, |r| on_layer(r, 1, 0))
        .await
        .unwrap_or_else(|r| panic!("did not reach the tile's layer: {r:#?}"));
    let switches = agent_video(&middle).expect("checked").counts.layer_switches;
    let frames = agent_video(&middle)
        .expect("checked")
        .counts
        .frames_complete;
    // 240 more frames (8 s at 30 fps, past two up-holds): still the tile's layer.
    let later = approver
        .wait_until(CLIMB, |r| {
            agent_video(r).is_some_and(|t| t.counts.frames_complete >= frames + 240)
        })
        .await
        .unwrap_or_else(|r| panic!("video stopped: {r:#?}"));
    let counts = &agent_video(&later).expect("checked").counts;
    assert_eq!(counts.layer, Some(1), "{counts:?}");
    assert_eq!(counts.layer_switches, switches, "{counts:?}");

    // The tile grows to 640×480: up to the top layer.
    approver.send(ClientMessage::VideoSize {
        track_id,
        width: 640,
        height: 480,
    });
    approver
        .wait_until(CLIMB, |r| on_layer(r, 2, 0))
        .await
        .unwrap_or_else(|r| panic!("did not follow the larger tile: {r:#?}"));

    // A size for a track it does not receive is refused by name.
    approver.send(ClientMessage::VideoSize {
        track_id: "nobody-video-9".into(),
        width: 1,
        height: 1,
    });
    approver
        .wait_until(PATIENCE, |r| {
            r.messages.iter().any(|m| {
                matches!(m, ServerMessage::Error { code: ErrorCode::UnknownTrack, message }
                    if message.contains("nobody-video-9"))
            })
        })
        .await
        .unwrap_or_else(|r| panic!("no unknown_track error: {r:#?}"));
}
