//! Scenario tests of a room on virtual time (`sim.rs`): real webrtc-rs peers and the room's
//! core in memory, no sockets and no sleeps.

use std::time::Duration;

use super::sim::{Impairment, Sim};
use crate::error::RelayError;
use crate::messages::{
    ClientMessage, ErrorCode, LeaveReason, MediaKind, ParticipantId, ServerMessage, TrackSource,
};

fn receives_video(sim: &Sim, who: &str, from: &str) -> bool {
    sim.client(who)
        .track_from(from, "video")
        .is_some_and(|r| r.keyframes > 0)
}

/// Packets `who` received of `from`'s track of `kind` ("audio", "video").
fn packets(sim: &Sim, who: &str, from: &str, kind: &str) -> Option<u64> {
    sim.client(who).track_from(from, kind).map(|r| r.packets)
}

fn left(sim: &Sim, who: &str, gone: &str) -> Option<LeaveReason> {
    sim.client(who).messages.iter().find_map(|m| match m {
        ServerMessage::ParticipantLeft {
            participant_id,
            reason,
        } if participant_id == &ParticipantId::from(gone) => Some(*reason),
        _ => None,
    })
}

/// Alice and Bob in a call, each receiving the other's video.
fn call_of_two(seed: u64, grace: Duration) -> Sim {
    let mut sim = Sim::new(seed, grace);
    assert!(sim.join("alice", false));
    assert!(sim.join("bob", false));
    assert!(
        sim.run_until_true(Duration::from_secs(5), |s| receives_video(
            s, "alice", "bob"
        ) && receives_video(
            s, "bob", "alice"
        )),
        "both see each other within 5 s of virtual time"
    );
    sim
}

#[test]
fn two_members_receive_each_others_audio_and_video_and_a_leave_is_renegotiated_away() {
    let mut sim = call_of_two(1, Duration::ZERO);
    sim.run_for(Duration::from_secs(3));
    for (who, from) in [("alice", "bob"), ("bob", "alice")] {
        let client = sim.client(who);
        let audio = client.track_from(from, "audio").expect("audio arrives");
        let video = client.track_from(from, "video").expect("video arrives");
        // 3 s and more of 50 audio packets/s and 15 frames/s, nothing lost on a clean path.
        assert!(
            audio.packets >= 150,
            "{who}: {} audio packets",
            audio.packets
        );
        assert!(
            video.packets >= 45,
            "{who}: {} video packets",
            video.packets
        );
        assert_eq!((audio.missing(), video.missing()), (0, 0), "{who}");
    }

    let offers_before = sim
        .client("bob")
        .count(|m| matches!(m, ServerMessage::Offer { .. }));
    sim.send("alice", ClientMessage::Leave);
    sim.run_for(Duration::from_secs(1));
    let bob = sim.client("bob");
    assert_eq!(left(&sim, "bob", "alice"), Some(LeaveReason::Left));
    assert_eq!(
        bob.count(|m| matches!(m, ServerMessage::TrackUnpublished { .. })),
        0,
        "a member who leaves takes its tracks with it; they are not unpublished one by one"
    );
    assert_eq!(
        bob.count(|m| matches!(m, ServerMessage::Offer { .. })),
        offers_before + 1,
        "the relay offers Bob the call without Alice's tracks"
    );
    assert_eq!(sim.core.member_count(), 1);
    let before = bob.track_from("alice", "video").map(|r| r.packets);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        packets(&sim, "bob", "alice", "video"),
        before,
        "nothing of Alice arrives after she left"
    );
}

#[test]
fn a_late_joiner_gets_a_keyframe_at_once_because_the_relay_asks_the_publisher_for_one() {
    let mut sim = call_of_two(2, Duration::ZERO);
    // Ten seconds on, Alice's last keyframe is long past: she sends one only when asked.
    sim.run_for(Duration::from_secs(10));
    let plis_before = sim.client("alice").plis;
    assert!(sim.join("carol", false));
    assert!(
        sim.run_until_true(Duration::from_secs(5), |s| receives_video(
            s, "carol", "alice"
        ))
    );
    let carol = sim.client("carol");
    let connected = carol.connected_at.expect("carol connected");
    let video = carol.track_from("alice", "video").expect("video");
    let waited = video.first_keyframe_at.expect("a keyframe") - connected;
    assert!(
        waited < Duration::from_millis(300),
        "Carol waited {waited:?} for a picture after connecting"
    );
    assert!(
        sim.client("alice").plis > plis_before,
        "the relay asked Alice"
    );
}

#[test]
fn a_member_offer_while_the_relay_offer_is_outstanding_is_refused_and_negotiation_recovers() {
    let mut sim = call_of_two(3, Duration::ZERO);
    // Alice holds the relay's next offer (Carol's tracks) unanswered and offers herself.
    sim.client_mut("alice").hold_offers = true;
    let offers = |s: &Sim| {
        s.client("alice")
            .count(|m| matches!(m, ServerMessage::Offer { .. }))
    };
    let before = offers(&sim);
    assert!(sim.join("carol", false));
    assert!(sim.run_until_true(Duration::from_secs(5), |s| offers(s) > before));
    let offer = sim
        .client("alice")
        .messages
        .iter()
        .find_map(|m| match m {
            ServerMessage::Answer { sdp } => Some(sdp.clone()),
            _ => None,
        })
        .expect("the answer to her first offer");
    // Any offer will do: it must be refused for its timing before anything else is looked at.
    let offer = offer.replace("a=setup:passive", "a=setup:actpass");
    sim.send("alice", ClientMessage::Offer { sdp: offer });
    sim.run_for(Duration::from_millis(10));

    assert!(sim.client("alice").messages.iter().any(|m| matches!(
        m,
        ServerMessage::Error {
            code: ErrorCode::NegotiationInProgress,
            ..
        }
    )));
    // Once she answers, the call goes on with Carol's media reaching her.
    sim.client_mut("alice").hold_offers = false;
    assert!(
        sim.run_until_true(Duration::from_secs(5), |s| receives_video(
            s, "alice", "carol"
        ) && receives_video(
            s, "carol", "alice"
        ))
    );
}

#[test]
fn an_answer_nobody_asked_for_is_refused_with_its_code() {
    let mut sim = call_of_two(4, Duration::ZERO);
    sim.send(
        "bob",
        ClientMessage::Answer {
            sdp: "v=0\r\n".into(),
        },
    );
    sim.run_for(Duration::from_millis(10));
    assert!(sim.client("bob").messages.iter().any(|m| matches!(
        m,
        ServerMessage::Error {
            code: ErrorCode::UnexpectedAnswer,
            ..
        }
    )));
    assert_eq!(sim.core.member_count(), 2, "the room stays up");
}

#[test]
fn a_member_whose_signaling_drops_keeps_its_place_for_the_grace_period_then_is_removed() {
    let grace = Duration::from_secs(10);
    let mut sim = call_of_two(5, grace);
    sim.drop_signaling("alice");
    sim.run_for(grace - Duration::from_millis(100));
    assert_eq!(left(&sim, "bob", "alice"), None, "within the grace period");
    assert_eq!(sim.core.member_count(), 2);
    // Her media still flows meanwhile: only the signaling went.
    let before = packets(&sim, "bob", "alice", "audio");
    sim.run_for(Duration::from_millis(100));
    assert!(packets(&sim, "bob", "alice", "audio") > before);
    sim.run_for(Duration::from_millis(10));
    assert_eq!(left(&sim, "bob", "alice"), Some(LeaveReason::Vanished));
    assert_eq!(sim.core.member_count(), 1);
}

#[test]
fn a_member_who_resumes_within_the_grace_period_keeps_its_place_and_gets_a_snapshot() {
    let grace = Duration::from_secs(10);
    let mut sim = call_of_two(6, grace);
    sim.drop_signaling("alice");
    sim.run_for(Duration::from_secs(4));
    assert!(sim.resume("alice"));
    let joined_at = sim.client("alice").messages.len();
    sim.run_for(grace);
    assert_eq!(
        left(&sim, "bob", "alice"),
        None,
        "the grace period ended with the resume"
    );
    assert_eq!(sim.core.member_count(), 2);
    let alice = sim.client("alice");
    let snapshot = &alice.messages[joined_at - 2..];
    assert!(
        snapshot.iter().any(|m| matches!(m, ServerMessage::Joined { others, resumed: true, .. } if others == &[ParticipantId::from("bob")])),
        "{snapshot:?}"
    );
    // A first join is a new place, and says so (a client resuming on its old connection leaves
    // it for a new one then).
    assert!(matches!(
        alice.messages.first(),
        Some(ServerMessage::Joined { resumed: false, .. })
    ));
    assert!(
        snapshot.iter().any(|m| matches!(m, ServerMessage::TrackPublished { participant_id, .. } if participant_id == &ParticipantId::from("bob")))
    );
}

#[test]
fn a_second_join_replaces_the_first_in_one_turn_and_the_new_place_gets_media() {
    let mut sim = call_of_two(7, Duration::from_secs(10));
    // Refused without `replace`, in the same turn, with no waiting.
    assert!(!sim.join("alice", false));
    assert!(matches!(
        sim.refusals.last(),
        Some(RelayError::AlreadyInRoom { .. })
    ));
    let old_link = sim.client("alice").link;
    assert!(sim.join("alice", true));
    // The old place went in the same turn: its handle is told, then released.
    sim.run_for(Duration::from_millis(1));
    let old = sim
        .clients
        .iter()
        .find(|c| c.link == old_link)
        .expect("old client");
    assert!(old.messages.iter().any(|m| matches!(
        m,
        ServerMessage::Removed {
            reason: LeaveReason::Replaced
        }
    )));
    assert_eq!(old.attachment, None, "the old handle is released");
    assert_eq!(sim.core.member_count(), 2);
    assert_eq!(left(&sim, "bob", "alice"), Some(LeaveReason::Replaced));
    let bob_media_before = packets(&sim, "bob", "alice", "video");
    assert!(
        sim.run_until_true(Duration::from_secs(5), |s| receives_video(
            s, "alice", "bob"
        ))
    );
    // Bob receives the new Alice's video on a new track.
    assert!(sim.run_until_true(Duration::from_secs(5), |s| {
        s.client("bob")
            .received
            .iter()
            .filter(|(id, r)| id.starts_with("alice-video-") && r.keyframes > 0)
            .count()
            == 2
    }));
    assert!(bob_media_before.is_some());
}

#[test]
fn packets_lost_on_the_way_to_a_subscriber_are_repaired_by_retransmission() {
    let mut sim = call_of_two(8, Duration::ZERO);
    sim.client_mut("bob").downlink = Impairment {
        delay: Duration::from_millis(30),
        jitter: Duration::from_millis(10),
        loss: 0.05,
        ..Impairment::default()
    };
    let before = packets(&sim, "bob", "alice", "video").unwrap_or(0);
    sim.run_for(Duration::from_secs(10));
    // Let the last retransmissions arrive with nothing new being sent.
    sim.client_mut("alice").publishing = false;
    sim.run_for(Duration::from_secs(1));
    let video = sim
        .client("bob")
        .track_from("alice", "video")
        .expect("video");
    assert!(
        video.packets - before >= 140,
        "{} packets",
        video.packets - before
    );
    assert!(
        sim.dropped > 20,
        "the path dropped {} datagrams",
        sim.dropped
    );
    assert!(
        sim.core.counters.nacks_received > 0,
        "Bob asked for them again"
    );
    assert_eq!(video.missing(), 0, "every lost video packet was resent");
}

#[test]
fn opus_red_reaches_a_subscriber_that_took_it_whole_and_one_that_did_not_as_plain_opus() {
    let mut sim = Sim::new(21, Duration::ZERO);
    sim.red = true;
    assert!(sim.join("alice", false));
    assert!(sim.join("bob", false));
    sim.red = false;
    assert!(sim.join("carol", false));
    // 10 % random loss on both listeners' downlinks (audio is not retransmitted).
    for listener in ["bob", "carol"] {
        sim.client_mut(listener).downlink = Impairment {
            delay: Duration::from_millis(40),
            loss: 0.10,
            ..Impairment::default()
        };
    }
    sim.run_for(Duration::from_secs(20));
    let bob = sim
        .client("bob")
        .track_from("alice", "audio")
        .expect("bob hears alice");
    let carol = sim
        .client("carol")
        .track_from("alice", "audio")
        .expect("carol hears alice");
    let red = crate::red::RED_PAYLOAD_TYPE;
    let opus = crate::Codec::Opus.payload_type();
    assert_eq!(bob.payload_types.keys().copied().collect::<Vec<_>>(), [red]);
    assert_eq!(
        carol.payload_types.keys().copied().collect::<Vec<_>>(),
        [opus]
    );
    // Carol gets the primary alone: the 60-byte frame, no block headers, no copy.
    assert_eq!(carol.last_payload_len, 60);
    assert!(
        bob.packets > 800 && carol.packets > 800,
        "{} {}",
        bob.packets,
        carol.packets
    );
    // The same loss costs Carol one frame in ten; Bob gets almost all of them from the next
    // packet's copy (both lost only ~1 % of the time).
    let share = |r: &super::sim::Received| r.frames_missing() as f64 / (r.frames.len() as f64);
    assert!(
        share(carol) > 0.06,
        "carol missed {:.1} %",
        share(carol) * 100.0
    );
    assert!(share(bob) < 0.025, "bob missed {:.1} %", share(bob) * 100.0);
    // Alice, who took RED, hears Carol's plain Opus as plain Opus.
    let alice = sim
        .client("alice")
        .track_from("carol", "audio")
        .expect("alice hears carol");
    assert_eq!(
        alice.payload_types.keys().copied().collect::<Vec<_>>(),
        [opus]
    );
}

#[test]
fn packets_a_publisher_loses_on_its_way_to_the_relay_are_repaired_before_they_are_forwarded() {
    let mut sim = call_of_two(9, Duration::ZERO);
    sim.client_mut("alice").uplink = Impairment {
        delay: Duration::from_millis(40),
        jitter: Duration::ZERO,
        loss: 0.05,
        ..Impairment::default()
    };
    sim.run_for(Duration::from_secs(10));
    sim.client_mut("alice").publishing = false;
    sim.run_for(Duration::from_secs(1));
    let video = sim
        .client("bob")
        .track_from("alice", "video")
        .expect("video");
    assert!(
        sim.dropped > 20,
        "the path dropped {} datagrams",
        sim.dropped
    );
    assert_eq!(
        video.missing(),
        0,
        "the relay got every lost packet again and forwarded it"
    );
}

#[test]
fn a_track_a_member_stops_is_unpublished_and_renegotiated_away_from_the_others() {
    let mut sim = call_of_two(10, Duration::ZERO);
    let offers = |s: &Sim| {
        s.client("alice")
            .count(|m| matches!(m, ServerMessage::Offer { .. }))
    };
    let before = offers(&sim);
    sim.stop_video("bob");
    sim.run_for(Duration::from_secs(1));
    let alice = sim.client("alice");
    let unpublished: Vec<&str> = alice
        .messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::TrackUnpublished { track_id, .. } => Some(track_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(unpublished.len(), 1);
    assert!(unpublished[0].starts_with("bob-video-"), "{unpublished:?}");
    assert_eq!(
        offers(&sim),
        before + 1,
        "one relay offer takes the track away"
    );
    assert!(
        !alice
            .messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Error { .. })),
        "no glare, no error"
    );
    // Bob's audio goes on; his video no longer comes.
    let audio = alice.track_from("bob", "audio").map(|r| r.packets);
    let video = alice.track_from("bob", "video").map(|r| r.packets);
    sim.run_for(Duration::from_secs(1));
    let alice = sim.client("alice");
    assert!(alice.track_from("bob", "audio").map(|r| r.packets) > audio);
    assert_eq!(alice.track_from("bob", "video").map(|r| r.packets), video);
}

#[test]
fn a_member_whose_address_changes_comes_back_with_an_ice_restart_and_gets_a_fresh_keyframe() {
    let mut sim = call_of_two(11, Duration::from_secs(10));
    sim.run_for(Duration::from_secs(2));
    let plis = sim.client("alice").plis;
    let keyframes = sim
        .client("bob")
        .track_from("alice", "video")
        .map(|r| r.keyframes);
    sim.move_to("bob", std::net::SocketAddr::from(([10, 0, 2, 99], 6000)));
    sim.run_for(Duration::from_secs(2));
    let bob = sim.client("bob");
    assert_eq!(
        left(&sim, "alice", "bob"),
        None,
        "the others see nothing of it"
    );
    assert!(
        bob.track_from("alice", "video").map(|r| r.keyframes) > keyframes,
        "Bob's decoder gets a keyframe after the path changed"
    );
    assert!(
        sim.client("alice").plis > plis,
        "the relay asked Alice for it"
    );
    // Media flows both ways on the new path.
    let to_bob = bob.track_from("alice", "audio").map(|r| r.packets);
    let to_alice = packets(&sim, "alice", "bob", "audio");
    sim.run_for(Duration::from_secs(1));
    assert!(packets(&sim, "bob", "alice", "audio") > to_bob);
    assert!(packets(&sim, "alice", "bob", "audio") > to_alice);
}

#[test]
fn a_subscriber_climbs_simulcast_layers_as_its_bandwidth_allows_and_drops_at_once_each_switch_on_a_keyframe()
 {
    let mut sim = Sim::new(12, Duration::ZERO);
    assert!(sim.join_with("alice", false, true));
    assert!(sim.join("bob", false));
    assert!(
        sim.run_until_true(Duration::from_secs(5), |s| receives_video(
            s, "bob", "alice"
        ))
    );
    let layer = |s: &Sim| {
        s.client("bob")
            .track_from("alice", "video")
            .and_then(|r| r.layer)
    };
    // Without an estimate Bob gets the lowest layer, the one any link carries.
    sim.run_for(Duration::from_secs(2));
    assert_eq!(layer(&sim), Some(0));
    // A generous estimate: up one layer at a time, to the top.
    sim.client_mut("bob").remb = Some(5_000_000);
    assert!(
        sim.run_until_true(Duration::from_secs(20), |s| layer(s) == Some(2)),
        "reached layer {:?}",
        layer(&sim)
    );
    // The link gets poor: down to the lowest layer at once.
    sim.client_mut("bob").remb = Some(50_000);
    assert!(sim.run_until_true(Duration::from_secs(2), |s| layer(s) == Some(0)));
    sim.run_for(Duration::from_secs(1));
    let video = sim
        .client("bob")
        .track_from("alice", "video")
        .expect("video");
    assert!(
        video.layer_switches >= 3,
        "{} switches",
        video.layer_switches
    );
    assert_eq!(
        video.switches_without_keyframe, 0,
        "every switch on a keyframe"
    );
    assert_eq!(video.missing(), 0, "the sequence runs on across switches");
    assert!(sim.core.counters.layer_switches >= 3);
}

#[test]
fn on_a_clean_path_a_join_shows_a_picture_within_150_ms_because_the_relay_follows_the_nomination_at_once()
 {
    // Zero delay: what is left is the protocols' own pacing. The relay's ICE agent ran its
    // checks every 200 ms (webrtc-rs's default) and noticed the peer's nomination only at its
    // next run, so DTLS began 200 ms late: 400 ms to connect, here; now 25 ms.
    let mut sim = Sim::new(13, Duration::ZERO);
    let start = sim.now;
    assert!(sim.join("alice", false));
    assert!(sim.join("bob", false));
    assert!(
        sim.run_until_true(Duration::from_secs(5), |s| receives_video(
            s, "alice", "bob"
        ) && receives_video(
            s, "bob", "alice"
        ))
    );
    for name in ["alice", "bob"] {
        let client = sim.client(name);
        let connected = client.connected_at.expect("connected") - start;
        let picture = client
            .received
            .values()
            .filter_map(|r| r.first_keyframe_at)
            .min()
            .expect("a keyframe")
            - start;
        // The client nominates after one check interval (48 ms, as Chromium paces them).
        assert!(
            connected <= Duration::from_millis(100),
            "{name}: connected after {connected:?}"
        );
        assert!(
            picture < Duration::from_millis(150),
            "{name}: first picture after {picture:?}"
        );
    }
}

#[test]
fn a_member_that_goes_audio_only_gets_no_video_until_it_asks_again_then_a_keyframe_first() {
    let mut sim = call_of_two(14, Duration::ZERO);
    sim.run_for(Duration::from_secs(1));
    sim.send("bob", ClientMessage::ReceiveVideo { enabled: false });
    sim.run_for(Duration::from_millis(200)); // what was in flight arrives
    let (video, audio) = (
        packets(&sim, "bob", "alice", "video"),
        packets(&sim, "bob", "alice", "audio"),
    );
    sim.run_for(Duration::from_secs(3));
    assert_eq!(
        packets(&sim, "bob", "alice", "video"),
        video,
        "no video while audio only"
    );
    assert!(
        packets(&sim, "bob", "alice", "audio") > audio.map(|a| a + 100),
        "audio goes on"
    );
    // Alice still gets Bob's video: only what Bob receives changed.
    assert!(receives_video(&sim, "alice", "bob"));

    let keyframes = sim
        .client("bob")
        .track_from("alice", "video")
        .map(|r| r.keyframes);
    let plis = sim.client("alice").plis;
    sim.send("bob", ClientMessage::ReceiveVideo { enabled: true });
    assert!(sim.run_until_true(Duration::from_millis(300), |s| {
        s.client("bob")
            .track_from("alice", "video")
            .map(|r| r.keyframes)
            > keyframes
    }));
    assert!(
        sim.client("alice").plis > plis,
        "the relay asked Alice for a keyframe"
    );
    sim.run_for(Duration::from_secs(1));
    let video = sim
        .client("bob")
        .track_from("alice", "video")
        .expect("video");
    assert_eq!(video.missing(), 0, "the sequence goes on without a gap");
}

#[test]
fn a_subscription_added_while_an_offer_is_outstanding_carries_nothing_until_an_offer_naming_it_is_answered()
 {
    let mut sim = call_of_two(13, Duration::ZERO);
    sim.client_mut("bob").hold_offers = true;
    // The relay offers Bob Carol's tracks; Bob does not answer yet.
    assert!(sim.join("carol", false));
    sim.run_for(Duration::from_secs(1));
    // Dave's tracks are added to Bob's connection while that offer is outstanding.
    assert!(sim.join("dave", false));
    sim.run_for(Duration::from_secs(1));
    // Bob answers the offer naming Carol's track (or tracks: each opens when its first packet
    // comes); the next one, which names Dave's, he holds.
    sim.answer_held("bob");
    // The simulator fails the test at once if Bob gets RTP on an SSRC no offer he applied named
    // (Dave's, forwarded too early).
    sim.run_for(Duration::from_secs(2));
    let from_carol =
        packets(&sim, "bob", "carol", "audio").or(packets(&sim, "bob", "carol", "video"));
    assert!(
        from_carol.is_some_and(|n| n > 0),
        "what the answered offer named is forwarded to Bob"
    );
    assert_eq!(packets(&sim, "bob", "dave", "video"), None);
    sim.client_mut("bob").hold_offers = false;
    assert!(
        sim.run_until_true(Duration::from_secs(3), |s| receives_video(s, "bob", "dave")),
        "Dave's video reaches Bob once he answers the offer naming it"
    );
    let video = sim
        .client("bob")
        .track_from("dave", "video")
        .expect("video");
    assert_eq!(
        video.first_packet_at, video.first_keyframe_at,
        "the first of Dave's packets Bob gets starts a keyframe: none was spent before he could use it"
    );
}

#[test]
fn a_shared_screen_reaches_the_others_in_a_stream_of_its_own_stays_on_with_the_camera_off_and_stops_cleanly()
 {
    let mut sim = call_of_two(14, Duration::ZERO);
    sim.share_screen("alice");
    assert!(
        sim.run_until_true(Duration::from_secs(3), |s| s
            .client("bob")
            .track_from("alice", "screen")
            .is_some_and(|r| r.keyframes > 0)),
        "Bob sees Alice's screen"
    );
    let bob = sim.client("bob");
    let announced: Vec<(String, TrackSource)> = bob
        .messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::TrackPublished {
                participant_id,
                track_id,
                source,
                ..
            } if participant_id == &ParticipantId::from("alice") => {
                Some((track_id.clone(), *source))
            }
            _ => None,
        })
        .collect();
    let screen = announced
        .iter()
        .find(|(_, source)| *source == TrackSource::Screen)
        .map(|(id, _)| id.clone())
        .expect("the screen is announced as a screen");
    assert!(screen.starts_with("alice-screen-"), "{screen}");
    assert!(
        announced.iter().any(|(_, s)| *s == TrackSource::Camera)
            && announced.iter().any(|(_, s)| *s == TrackSource::Microphone),
        "{announced:?}"
    );
    assert_eq!(
        bob.streams.get(&screen).map(String::as_str),
        Some("alice~screen"),
        "the screen comes in a stream of its own"
    );

    // Alice turns her camera off: the screen goes on.
    sim.send(
        "alice",
        ClientMessage::Mute {
            kind: MediaKind::Video,
            muted: true,
        },
    );
    sim.run_for(Duration::from_millis(500));
    let camera_before = packets(&sim, "bob", "alice", "video");
    let screen_before = packets(&sim, "bob", "alice", "screen");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(packets(&sim, "bob", "alice", "video"), camera_before);
    assert!(
        packets(&sim, "bob", "alice", "screen") > screen_before,
        "the screen is still forwarded"
    );

    sim.stop_screen("alice");
    sim.run_for(Duration::from_secs(1));
    let unpublished = sim.client("bob").count(
        |m| matches!(m, ServerMessage::TrackUnpublished { track_id, .. } if *track_id == screen),
    );
    assert_eq!(unpublished, 1, "the screen track is unpublished once");
    let after = packets(&sim, "bob", "alice", "screen");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(packets(&sim, "bob", "alice", "screen"), after);
}

#[test]
fn a_screen_shared_while_the_call_is_recorded_is_recorded_like_a_camera_in_a_file_named_as_a_screen()
 {
    let mut sim = call_of_two(15, Duration::ZERO);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let results = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (folder, kept) = (dir.path().to_owned(), results.clone());
    let recorder: super::Recorder = Box::new(move |participant, track_id, codec| {
        let (sink, done) =
            crate::recording::start(&folder, participant.clone(), track_id.to_owned(), codec);
        kept.lock().unwrap().push(done);
        sink
    });
    sim.core
        .handle(sim.now, super::Input::StartRecording(recorder))
        .expect("recording starts");
    sim.share_screen("alice");
    sim.run_for(Duration::from_secs(3));
    sim.core
        .handle(sim.now, super::Input::StopRecording)
        .expect("recording stops");
    let recorded: Vec<_> = std::mem::take(&mut *results.lock().unwrap())
        .into_iter()
        .map(|done| done.blocking_recv().expect("a result").expect("a file"))
        .collect();
    let screen = recorded
        .iter()
        .find(|t| t.track_id.starts_with("alice-screen-"))
        .unwrap_or_else(|| {
            panic!(
                "no screen among {:?}",
                recorded.iter().map(|t| &t.track_id).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        screen.path.extension().and_then(|e| e.to_str()),
        Some("ivf")
    );
    assert!(
        screen
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .contains("screen"),
        "{:?}",
        screen.path
    );
    // Nearly 3 s at 15 frames/s.
    assert!(
        screen.packets_written >= 30,
        "{} packets",
        screen.packets_written
    );
    assert_eq!(
        recorded.len(),
        5,
        "two cameras, two microphones and the screen"
    );
}

#[test]
fn a_dismissed_member_is_told_so_and_the_others_see_it_leave_for_that_reason() {
    let mut sim = call_of_two(16, Duration::ZERO);
    sim.core
        .handle(
            sim.now,
            super::Input::Remove {
                participant: ParticipantId::from("bob"),
            },
        )
        .expect("removed");
    sim.run_for(Duration::from_millis(200));
    assert_eq!(left(&sim, "alice", "bob"), Some(LeaveReason::Dismissed));
    assert_eq!(
        sim.client("bob").count(|m| matches!(
            m,
            ServerMessage::Removed {
                reason: LeaveReason::Dismissed
            }
        )),
        1
    );
    assert_eq!(sim.core.member_count(), 1);
    // Someone not in the room: nothing happens.
    sim.core
        .handle(
            sim.now,
            super::Input::Remove {
                participant: ParticipantId::from("nobody"),
            },
        )
        .expect("nothing to do");
    assert_eq!(sim.core.member_count(), 1);
}

#[test]
fn the_relay_estimates_a_weak_downlink_itself_and_sends_that_subscriber_a_lower_layer_while_another_keeps_the_top()
 {
    // No REMB from anyone: the only estimate is the relay's own (GCC over TWCC feedback).
    let mut sim = Sim::new(17, Duration::ZERO);
    assert!(sim.join_with("alice", false, true));
    assert!(sim.join("bob", false));
    assert!(sim.join("carol", false));
    for watcher in ["bob", "carol"] {
        sim.client_mut(watcher).publishing = false;
    }
    // Carol's downlink: 100 kb/s with a 300 ms queue — room for Alice's audio and a low layer,
    // not for the top one (about 110 kb/s of video alone).
    sim.client_mut("carol").downlink = Impairment {
        delay: Duration::from_millis(40),
        rate_bps: 100_000,
        queue: Duration::from_millis(300),
        ..Impairment::default()
    };
    // A minute, looked at once a second after the first 10 s.
    sim.run_for(Duration::from_secs(10));
    let layer = |sim: &Sim, who: &str| {
        sim.client(who)
            .track_from("alice", "video")
            .and_then(|r| r.layer)
    };
    let (mut carol_low, mut bob_top) = (0, 0);
    let carol_before = sim
        .client("carol")
        .track_from("alice", "video")
        .unwrap()
        .packets;
    for _ in 0..60 {
        sim.run_for(Duration::from_secs(1));
        carol_low += usize::from(layer(&sim, "carol").is_some_and(|l| l < 2));
        bob_top += usize::from(layer(&sim, "bob") == Some(2));
    }
    assert!(
        bob_top >= 55,
        "Bob's clean path carries the top layer: {bob_top} s of 60"
    );
    // Most of the time: the estimate keeps growing while her leg sends less than her link
    // carries (no probing), so now and then a step up is tried, fails and waits longer.
    assert!(
        carol_low >= 45,
        "Carol's weak downlink gets a lower layer: {carol_low} s of 60"
    );
    let carol_after = sim
        .client("carol")
        .track_from("alice", "video")
        .unwrap()
        .packets;
    assert!(
        carol_after > carol_before + 600,
        "Carol's video goes on: {carol_before} → {carol_after}"
    );
}

#[test]
fn a_downlink_that_loses_a_tenth_at_random_but_has_room_keeps_the_top_layer_and_its_estimate() {
    // Bob's line loses 10 % of what is sent whatever the rate (a weak radio, the `congested`
    // profile) but is not full: the loss is repaired by retransmission, and it is no reason to
    // starve him (rtc's own loss half walked his estimate to the floor: the lowest layer).
    let mut sim = Sim::new(23, Duration::ZERO);
    assert!(sim.join_with("alice", false, true));
    assert!(sim.join("bob", false));
    sim.client_mut("bob").publishing = false;
    sim.client_mut("bob").downlink = Impairment {
        delay: Duration::from_millis(40),
        loss: 0.10,
        ..Impairment::default()
    };
    sim.run_for(Duration::from_secs(10));
    let mut top = 0;
    for _ in 0..30 {
        sim.run_for(Duration::from_secs(1));
        let layer = sim
            .client("bob")
            .track_from("alice", "video")
            .and_then(|r| r.layer);
        top += usize::from(layer == Some(2));
    }
    let estimate = sim.core.members[1].downlink().unwrap_or(0);
    assert!(
        top >= 25,
        "Bob had the top layer {top} s of 30 (estimate {estimate} bit/s)"
    );
    assert!(
        estimate >= 200_000,
        "Bob's estimate fell to {estimate} bit/s"
    );
}

#[test]
fn below_what_even_the_middle_layer_needs_retransmissions_stay_within_their_budget_and_the_video_goes_on()
 {
    let mut sim = Sim::new(18, Duration::ZERO);
    assert!(sim.join_with("alice", false, true));
    assert!(sim.join("carol", false));
    sim.client_mut("carol").publishing = false;
    // 70 kbit/s: Alice's audio and her lowest layer fit, nothing more. Every loss brings NACKs;
    // answering all of them overloads the link further (without the budget this run drops
    // thousands of datagrams every second).
    sim.client_mut("carol").downlink = Impairment {
        delay: Duration::from_millis(40),
        rate_bps: 70_000,
        queue: Duration::from_millis(300),
        ..Impairment::default()
    };
    sim.run_for(Duration::from_secs(10));
    let video = |sim: &Sim| sim.client("carol").track_from("alice", "video").cloned();
    let before = video(&sim).expect("Carol receives Alice's video");
    let dropped = sim.dropped;
    sim.run_for(Duration::from_secs(60));
    let after = video(&sim).unwrap();
    let lost_at_the_bottleneck = sim.dropped - dropped;
    // 564 or 638 in a minute here (runs differ: rtc draws its own SSRCs), a little more than
    // before the downlink estimate tolerated a line's random loss; thousands a second without
    // the budget.
    assert!(
        lost_at_the_bottleneck < 900,
        "{lost_at_the_bottleneck} datagrams dropped at the bottleneck in a minute"
    );
    assert!(
        after.packets > before.packets + 600,
        "Carol's video goes on: {} → {}",
        before.packets,
        after.packets
    );
    assert!(
        after.missing() < 100,
        "{} of Carol's video packets never arrived",
        after.missing()
    );
}

#[test]
fn on_a_downlink_too_short_for_the_only_video_layer_the_video_gives_way_so_the_audio_gets_through_and_comes_back_on_a_keyframe()
 {
    let mut sim = call_of_two(19, Duration::ZERO);
    // Alice sends one layer (~115 kbit/s) and audio (~40 kbit/s); Bob's downlink carries
    // 100 kbit/s. Forwarding both would overfill its queue, losing audio with the video.
    sim.client_mut("bob").downlink = Impairment {
        delay: Duration::from_millis(40),
        rate_bps: 100_000,
        queue: Duration::from_millis(300),
        ..Impairment::default()
    };
    sim.run_for(Duration::from_secs(20));
    let audio = |sim: &Sim| {
        sim.client("bob")
            .track_from("alice", "audio")
            .cloned()
            .unwrap()
    };
    let video = |sim: &Sim| {
        sim.client("bob")
            .track_from("alice", "video")
            .cloned()
            .unwrap()
    };
    let (audio_before, video_before) = (audio(&sim), video(&sim));
    sim.run_for(Duration::from_secs(20));
    let (audio_after, video_after) = (audio(&sim), video(&sim));
    let audio_sent = audio_after.packets - audio_before.packets;
    let audio_lost = audio_after.missing() - audio_before.missing();
    let video_sent = video_after.packets - video_before.packets;
    // Forwarding everything, Bob lost more than half of the audio here (574 of 1,000); with the
    // video out of the way only the tries to bring it back cost some (~6 % with rtc's own loss
    // half, ~8.5 % with ours, which tolerates a line's random loss: a failed try is brought down
    // a moment later, by the heavy loss or the queueing delay it causes).
    assert!(
        audio_sent >= 900 && audio_lost * 10 < audio_sent,
        "Bob's audio: {audio_sent} packets, {audio_lost} lost in 20 s"
    );
    assert!(
        video_sent < 300,
        "the video gave way: {video_sent} packets in 20 s (it needs ~400)"
    );
    // The link recovers: the video comes back, on a keyframe (once the hold that the failed
    // tries doubled has passed).
    sim.client_mut("bob").downlink = Impairment::default();
    let keyframes = video_after.keyframes;
    sim.run_for(Duration::from_secs(30));
    let back = video(&sim);
    assert!(
        back.packets > video_after.packets + 200 && back.keyframes > keyframes,
        "Bob's video is back: {} → {} packets, {} → {} keyframes",
        video_after.packets,
        back.packets,
        keyframes,
        back.keyframes
    );
}

#[test]
fn a_late_joiner_and_a_replacing_join_get_a_simulcast_publishers_video() {
    let mut sim = Sim::new(21, Duration::from_secs(10));
    assert!(sim.join_with("alice", false, true));
    assert!(sim.join("bob", false));
    assert!(
        sim.run_until_true(Duration::from_secs(5), |s| receives_video(
            s, "bob", "alice"
        ))
    );
    sim.run_for(Duration::from_secs(5));
    // Carol comes in later: the layers have long been open.
    assert!(sim.join("carol", false));

    assert!(
        sim.run_until_true(Duration::from_secs(5), |s| receives_video(
            s, "carol", "alice"
        )),
        "the late joiner gets Alice's video"
    );
    // Bob reloads: a new connection replaces the old in one turn.
    assert!(sim.join("bob", true));
    assert!(
        sim.run_until_true(Duration::from_secs(5), |s| {
            s.client("bob")
                .received
                .iter()
                .any(|(id, r)| id.starts_with("alice-video-") && r.keyframes > 0)
        }),
        "the reloaded subscriber gets Alice's video again"
    );
}

#[test]
fn a_stream_that_opens_again_is_not_taken_for_a_new_simulcast_layer() {
    // webrtc-rs opens a receiver's streams anew after a renegotiation, and Chromium's first
    // simulcast layer opens once without its rid and again with it: seen in Chromium, where the
    // duplicates became layers that never carried a packet.
    let mut sim = Sim::new(22, Duration::ZERO);
    assert!(sim.join_with("alice", false, true));
    assert!(sim.join("bob", false));
    assert!(
        sim.run_until_true(Duration::from_secs(5), |s| receives_video(
            s, "bob", "alice"
        ))
    );
    sim.run_for(Duration::from_secs(1));
    let video = |sim: &Sim| {
        let alice = &sim.core.members[0];
        let k = alice
            .published
            .iter()
            .position(|p| p.forwarder.video())
            .expect("Alice's video");
        (k, alice.published[k].forwarder.layers.len())
    };
    let (k, before) = video(&sim);
    assert_eq!(before, 3);
    let published = &sim.core.members[0].published[k];
    let (source, receiver) = (published.source.clone(), published.receiver);
    let ssrc = published.forwarder.layers[0].ssrc;
    assert!(
        published
            .forwarder
            .layers
            .iter()
            .all(|l| l.ssrc != 0xdead_beef)
    );
    sim.core
        .on_published(0, source.clone(), receiver, ssrc, Some("q".into()));
    assert_eq!(video(&sim).1, 3, "the same stream again: no new layer");
    sim.core
        .on_published(0, source, receiver, 0xdead_beef, Some("x".into()));
    assert_eq!(video(&sim).1, 4, "another stream of the track: a layer");
}
