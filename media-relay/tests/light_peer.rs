//! The load generator's light receive-only peer against the real relay over UDP: it connects,
//! counts every packet of every track it is sent from the RTP headers alone, and agrees with a
//! full peer receiving the same tracks.

mod common;

use std::net::SocketAddr;

use common::{PATIENCE, join, receiver, relay};
use media_relay::test_peer::TestPeerConfig;
use media_relay::test_peer::light::LightPeer;
use media_relay::{MediaKind, ParticipantId, RoomId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_light_peer_counts_every_packet_it_is_sent_from_the_headers_alone() {
    let relay = relay();
    let publisher = join(&relay, "light", "publisher", TestPeerConfig::default()).await;
    let full = join(&relay, "light", "full", receiver(None)).await;
    let participant = relay
        .join(RoomId::from("light"), ParticipantId::from("light"))
        .await
        .expect("join");
    let (sender, events) = participant.into_parts();
    let light = LightPeer::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        true,
        None,
        sender,
        events,
    )
    .await
    .expect("light peer starts");

    let report = light
        .wait_until(PATIENCE, |r| {
            r.connected
                && r.live_tracks(MediaKind::Audio)
                    .any(|t| t.counts.packets >= 100)
                && r.live_tracks(MediaKind::Video)
                    .any(|t| t.counts.packets >= 100)
        })
        .await
        .unwrap_or_else(|r| panic!("the light peer counted too little: {r:#?}"));
    // Each track is named as the relay announced it, from the description's msid lines.
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let track = report
            .live_tracks(kind)
            .next()
            .expect("a track of each kind");
        assert_eq!(track.publisher, "publisher");
        assert!(
            track.track_id.starts_with("publisher-"),
            "{}",
            track.track_id
        );
        assert_eq!(track.counts.lost, 0, "{kind:?}: nothing lost on loopback");
        assert_eq!(track.counts.duplicates, 0);
    }
    // The full peer, decrypting the same streams, saw as many packets (within what arrived
    // while the two reports were taken).
    let full_report = full.report();
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let light_packets = light
            .report()
            .live_tracks(kind)
            .map(|t| t.counts.packets)
            .sum::<u64>();
        let full_packets = full_report
            .live_tracks(kind)
            .map(|t| t.counts.packets)
            .sum::<u64>();
        assert!(light_packets > 0 && full_packets > 0);
        let (low, high) = (
            light_packets.min(full_packets),
            light_packets.max(full_packets),
        );
        assert!(
            high - low <= high / 5 + 20,
            "{kind:?}: light {light_packets}, full {full_packets}"
        );
    }
    drop(publisher);
}
