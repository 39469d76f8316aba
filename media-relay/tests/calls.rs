//! Calls through the relay with real webrtc-rs peers over UDP on 127.0.0.1, driven through the
//! relay's signaling API (no server in between).

mod common;

use std::time::Duration;

use common::{PATIENCE, join, receives_from, relay};
use media_relay::test_peer::{ReceivedTrack, TestPeer, TestPeerConfig};
use media_relay::{ClientMessage, Codec, LeaveReason, MediaKind, ParticipantId, ServerMessage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_party_call_each_side_receives_the_others_audio_and_complete_vp8_frames_in_order() {
    let relay = relay();
    let agent = join(&relay, "case-1", "agent", TestPeerConfig::default()).await;
    let approver = join(&relay, "case-1", "approver", TestPeerConfig::default()).await;

    for (peer, other) in [(&agent, "approver"), (&approver, "agent")] {
        let report = peer
            .wait_until(PATIENCE, |r| receives_from(r, &[other], 100, 30))
            .await
            .unwrap_or_else(|r| panic!("no media from {other}: {r:#?}"));
        let video = report
            .live_tracks(MediaKind::Video)
            .next()
            .expect("checked above");
        assert!(video.counts.keyframes >= 1, "{video:#?}");
        assert_eq!(video.counts.frames_incomplete, 0, "{video:#?}");
        assert_eq!(video.counts.out_of_order, 0, "{video:#?}");
        assert_eq!(video.counts.frames_undecodable(), 0, "{video:#?}");
        let audio = report
            .live_tracks(MediaKind::Audio)
            .next()
            .expect("checked above");
        assert_eq!(audio.counts.out_of_order, 0, "{audio:#?}");
    }
    let metrics = relay.metrics().snapshot();
    assert!(
        metrics.packets_forwarded > 0 && metrics.plis_sent > 0,
        "{metrics:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_from_a_phone_reaches_the_other_side_as_h264_starting_on_a_keyframe_with_whole_frames()
{
    let relay = relay();
    let phone = TestPeerConfig {
        video_codec: Codec::H264,
        ..TestPeerConfig::default()
    };
    let agent = join(&relay, "case-h264", "agent", phone).await;
    let approver = join(&relay, "case-h264", "approver", TestPeerConfig::default()).await;

    let video = video_from(&approver, "agent").await;
    assert_eq!(video.codec, Some(Codec::H264), "{video:#?}");
    assert!(video.counts.keyframes >= 1, "{video:#?}");
    assert_eq!(
        video.counts.first_frame_keyframe,
        Some(true),
        "the first forwarded frame is a keyframe: {video:#?}"
    );
    assert!(
        video.counts.frames_decodable > 0,
        "whole frames decode in order: {video:#?}"
    );
    // The other direction stays VP8: each publisher's codec is kept.
    let video = video_from(&agent, "approver").await;
    assert_eq!(video.codec, Some(Codec::Vp8), "{video:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_cross_the_sequence_wrap_and_srtp_rollover_without_a_lost_packet() {
    // Every stream of the agent starts 200 packets before the 16-bit wrap: the relay's inbound
    // SRTP, its rewriting and the subscriber leg's outbound SRTP all roll over within seconds.
    let relay = relay();
    let near_wrap = TestPeerConfig {
        first_sequence: 65_336,
        ..TestPeerConfig::default()
    };
    let _agent = join(&relay, "case-wrap", "agent", near_wrap).await;
    let approver = join(&relay, "case-wrap", "approver", TestPeerConfig::default()).await;

    // 500 audio packets (10 s) and 600 video packets: every stream is well past the wrap.
    let report = approver
        .wait_until(Duration::from_secs(30), |r| {
            r.live_tracks_of("agent")
                .any(|t| t.kind == MediaKind::Audio && t.counts.packets >= 500)
                && r.live_tracks_of("agent")
                    .any(|t| t.kind == MediaKind::Video && t.counts.packets >= 600)
        })
        .await
        .unwrap_or_else(|r| panic!("the agent's media stopped at the wrap: {r:#?}"));
    for track in report.live_tracks_of("agent") {
        assert_eq!(track.counts.lost, 0, "{track:#?}");
        assert_eq!(track.counts.out_of_order, 0, "{track:#?}");
        if track.kind == MediaKind::Video {
            assert_eq!(track.counts.frames_incomplete, 0, "{track:#?}");
            assert_eq!(track.counts.frames_undecodable(), 0, "{track:#?}");
        }
    }
}

/// The video `peer` receives from `publisher`, once it has media from it (20 whole frames).
async fn video_from(peer: &TestPeer, publisher: &str) -> ReceivedTrack {
    let report = peer
        .wait_until(PATIENCE, |r| receives_from(r, &[publisher], 60, 20))
        .await
        .unwrap_or_else(|r| panic!("no media from {publisher}: {r:#?}"));
    report
        .live_tracks_of(publisher)
        .find(|t| t.kind == MediaKind::Video)
        .cloned()
        .expect("checked above")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_party_room_every_participant_receives_three_audio_and_three_video_streams() {
    let relay = relay();
    let names = ["agent", "approver", "expert-1", "expert-2"];
    let config = TestPeerConfig {
        video_fps: 15,
        ..TestPeerConfig::default()
    };
    let mut peers = Vec::new();
    for name in names {
        peers.push((name, join(&relay, "case-4", name, config.clone()).await));
    }
    for (name, peer) in &peers {
        let others: Vec<&str> = names.iter().copied().filter(|n| n != name).collect();
        peer.wait_until(PATIENCE, |r| receives_from(r, &others, 50, 10))
            .await
            .unwrap_or_else(|r| panic!("{name} lacks streams from {others:?}: {r:#?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_participant_s_tracks_are_removed_from_the_others() {
    let relay = relay();
    let agent = join(&relay, "case-leave", "agent", TestPeerConfig::default()).await;
    let approver = join(&relay, "case-leave", "approver", TestPeerConfig::default()).await;
    let expert = join(&relay, "case-leave", "expert", TestPeerConfig::default()).await;
    for (peer, others) in [
        (&agent, ["approver", "expert"]),
        (&approver, ["agent", "expert"]),
    ] {
        peer.wait_until(PATIENCE, |r| receives_from(r, &others, 20, 5))
            .await
            .unwrap_or_else(|r| panic!("room did not start: {r:#?}"));
    }

    expert.leave().await;

    for (peer, other) in [(&agent, "approver"), (&approver, "agent")] {
        let report = peer
            .wait_until(PATIENCE, |r| {
                r.live_tracks_of("expert").count() == 0
                    && r.messages.iter().any(|m| {
                        matches!(m, ServerMessage::ParticipantLeft { participant_id, reason: LeaveReason::Left }
                            if *participant_id == ParticipantId::from("expert"))
                    })
            })
            .await
            .unwrap_or_else(|r| panic!("expert's tracks not removed: {r:#?}"));
        assert_eq!(report.live_tracks_of(other).count(), 2, "{report:#?}");
    }
    // The remaining call goes on.
    let before = agent
        .report()
        .live_tracks_of("approver")
        .map(|t| t.counts.packets)
        .sum::<u64>();
    agent
        .wait_until(PATIENCE, |r| {
            r.live_tracks_of("approver")
                .map(|t| t.counts.packets)
                .sum::<u64>()
                > before + 50
        })
        .await
        .unwrap_or_else(|r| panic!("call stopped after the leave: {r:#?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muted_video_stops_reaching_the_others_and_resumes_on_a_keyframe_without_a_sequence_gap() {
    let relay = relay();
    let config = TestPeerConfig {
        keyframe_interval: std::time::Duration::from_secs(600),
        ..TestPeerConfig::default()
    };
    let agent = join(&relay, "case-mute", "agent", config.clone()).await;
    let approver = join(&relay, "case-mute", "approver", config).await;
    approver
        .wait_until(PATIENCE, |r| receives_from(r, &["agent"], 50, 20))
        .await
        .unwrap_or_else(|r| panic!("call did not start: {r:#?}"));

    let video_of = |r: &media_relay::test_peer::PeerReport| {
        r.live_tracks_of("agent")
            .find(|t| t.kind == MediaKind::Video)
            .map(|t| t.counts.clone())
            .unwrap_or_default()
    };
    let audio_packets = |r: &media_relay::test_peer::PeerReport| {
        r.live_tracks_of("agent")
            .find(|t| t.kind == MediaKind::Audio)
            .map_or(0, |t| t.counts.packets)
    };

    agent.send(ClientMessage::Mute {
        kind: MediaKind::Video,
        muted: true,
    });
    let muted = approver
        .wait_until(PATIENCE, |r| {
            r.messages.iter().any(|m| {
                matches!(
                    m,
                    ServerMessage::TrackMuted {
                        kind: MediaKind::Video,
                        muted: true,
                        ..
                    }
                )
            })
        })
        .await
        .unwrap_or_else(|r| panic!("no mute notice: {r:#?}"));
    // Let packets already in flight land (half a second of audio), then watch one second.
    let audio_then = audio_packets(&muted);
    let settled = approver
        .wait_until(PATIENCE, |r| audio_packets(r) >= audio_then + 25)
        .await
        .unwrap_or_else(|r| panic!("audio stopped too: {r:#?}"));
    let video_while_muted = video_of(&settled).packets;
    let later = approver
        .wait_until(PATIENCE, |r| audio_packets(r) >= audio_then + 75)
        .await
        .unwrap_or_else(|r| panic!("audio stopped too: {r:#?}"));
    assert_eq!(
        video_of(&later).packets,
        video_while_muted,
        "video kept flowing while muted"
    );

    agent.send(ClientMessage::Mute {
        kind: MediaKind::Video,
        muted: false,
    });
    let frames_before = video_of(&later).frames_complete;
    let resumed = approver
        .wait_until(PATIENCE, |r| {
            video_of(r).frames_complete >= frames_before + 20
        })
        .await
        .unwrap_or_else(|r| panic!("video did not resume: {r:#?}"));
    let video = video_of(&resumed);
    assert!(
        video.keyframes >= 2,
        "unmute asked the publisher for a keyframe: {video:?}"
    );
    assert_eq!(
        video.lost, 0,
        "the muted stretch left no sequence gap: {video:?}"
    );
    assert_eq!(video.frames_undecodable(), 0, "{video:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_s_keyframe_request_reaches_the_publisher() {
    let relay = relay();
    let config = TestPeerConfig {
        keyframe_interval: std::time::Duration::from_secs(600),
        ..TestPeerConfig::default()
    };
    let agent = join(&relay, "case-pli", "agent", config.clone()).await;
    let approver = join(&relay, "case-pli", "approver", config).await;
    approver
        .wait_until(PATIENCE, |r| receives_from(r, &["agent"], 50, 20))
        .await
        .unwrap_or_else(|r| panic!("call did not start: {r:#?}"));
    let requests_before = agent.report().keyframe_requests;

    assert_eq!(approver.request_keyframe("agent").await, 1);

    let report = approver
        .wait_until(PATIENCE, |r| {
            r.live_tracks_of("agent")
                .any(|t| t.kind == MediaKind::Video && t.counts.keyframes >= 2)
        })
        .await
        .unwrap_or_else(|r| panic!("no keyframe after the request: {r:#?}"));
    assert!(agent.report().keyframe_requests > requests_before);
    assert!(relay.metrics().snapshot().keyframe_requests_received >= 1);
    let video = report
        .live_tracks_of("agent")
        .find(|t| t.kind == MediaKind::Video)
        .expect("checked above");
    assert_eq!(video.counts.frames_undecodable(), 0, "{video:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_the_publisher_stops_sending_is_removed_from_the_others() {
    let relay = relay();
    let agent = join(&relay, "case-unpub", "agent", TestPeerConfig::default()).await;
    let approver = join(&relay, "case-unpub", "approver", TestPeerConfig::default()).await;
    approver
        .wait_until(PATIENCE, |r| receives_from(r, &["agent"], 20, 5))
        .await
        .unwrap_or_else(|r| panic!("call did not start: {r:#?}"));
    agent
        .wait_until(PATIENCE, |r| receives_from(r, &["approver"], 20, 5))
        .await
        .unwrap_or_else(|r| panic!("call did not start: {r:#?}"));

    agent.unpublish(MediaKind::Video);

    let report = approver
        .wait_until(PATIENCE, |r| {
            r.messages
                .iter()
                .any(|m| matches!(m, ServerMessage::TrackUnpublished { .. }))
                && r.live_tracks_of("agent")
                    .all(|t| t.kind == MediaKind::Audio)
        })
        .await
        .unwrap_or_else(|r| panic!("agent's video not removed: {r:#?}"));
    let audio_before = report
        .live_tracks_of("agent")
        .map(|t| t.counts.packets)
        .sum::<u64>();
    approver
        .wait_until(PATIENCE, |r| {
            r.live_tracks_of("agent")
                .map(|t| t.counts.packets)
                .sum::<u64>()
                > audio_before + 25
        })
        .await
        .unwrap_or_else(|r| panic!("agent's audio stopped too: {r:#?}"));
    // The agent still receives both of the approver's tracks.
    agent
        .wait_until(PATIENCE, |r| receives_from(r, &["approver"], 100, 30))
        .await
        .unwrap_or_else(|r| panic!("approver's media stopped: {r:#?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_others_learn_who_speaks_and_when_a_muted_speaker_stops() {
    let relay = relay();
    let talking = TestPeerConfig {
        audio_level: Some(30),
        ..TestPeerConfig::default()
    };
    let silent = TestPeerConfig {
        audio_level: Some(127),
        ..TestPeerConfig::default()
    };
    let agent = join(&relay, "case-speak", "agent", talking).await;
    let approver = join(&relay, "case-speak", "approver", silent).await;
    let speaking = |r: &media_relay::test_peer::PeerReport, who: &str, state: bool| {
        r.messages.iter().any(|m| {
            matches!(m, ServerMessage::Speaking { participant_id, speaking }
                if *participant_id == ParticipantId::from(who) && *speaking == state)
        })
    };
    approver
        .wait_until(PATIENCE, |r| speaking(r, "agent", true))
        .await
        .unwrap_or_else(|r| panic!("agent's speech not noticed: {r:#?}"));

    agent.send(ClientMessage::Mute {
        kind: MediaKind::Audio,
        muted: true,
    });
    approver
        .wait_until(PATIENCE, |r| speaking(r, "agent", false))
        .await
        .unwrap_or_else(|r| panic!("muted agent still speaking: {r:#?}"));
    // The approver, silent all along, was never reported speaking.
    assert!(!speaking(&agent.report(), "approver", true));
}
