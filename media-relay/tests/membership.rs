//! Who is in a room: a join that replaces a place still held, and rooms that end while joins
//! arrive. Driven through the relay's signaling API, no media.

mod common;

use common::{PATIENCE, relay};
use media_relay::{ClientMessage, LeaveReason, Participant, ParticipantId, RoomId, ServerMessage};

/// The messages `participant` gets until `wanted` matches one (which is returned).
async fn until(
    participant: &mut Participant,
    mut wanted: impl FnMut(&ServerMessage) -> bool,
) -> ServerMessage {
    loop {
        match tokio::time::timeout(PATIENCE, participant.recv()).await {
            Ok(Some(message)) if wanted(&message) => return message,
            Ok(Some(_)) => continue,
            other => panic!("{}: no such message: {other:?}", participant.id),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_join_replaces_the_place_still_held_and_the_old_handle_is_told_why() {
    let relay = relay();
    let room = RoomId::from("case-replace");
    let mut old = relay
        .join(room.clone(), ParticipantId::from("agent"))
        .await
        .expect("join");
    let mut approver = relay
        .join(room.clone(), ParticipantId::from("approver"))
        .await
        .expect("join");
    until(&mut approver, |m| matches!(m, ServerMessage::Joined { .. })).await;

    // A reload: the page joins again while the relay still holds its place.
    let mut new = relay
        .join_replacing(room.clone(), ParticipantId::from("agent"))
        .await
        .expect("the second join replaces the first at once");

    let first = until(&mut new, |_| true).await;
    assert!(
        matches!(&first, ServerMessage::Joined { others, .. } if others == &[ParticipantId::from("approver")]),
        "{first:?}"
    );
    let told = until(&mut old, |m| matches!(m, ServerMessage::Removed { .. })).await;
    assert!(
        matches!(
            told,
            ServerMessage::Removed {
                reason: LeaveReason::Replaced
            }
        ),
        "{told:?}"
    );
    let left = until(&mut approver, |m| {
        matches!(m, ServerMessage::ParticipantLeft { .. })
    })
    .await;
    assert!(
        matches!(
            &left,
            ServerMessage::ParticipantLeft { participant_id, reason: LeaveReason::Replaced }
                if participant_id == &ParticipantId::from("agent")
        ),
        "{left:?}"
    );
    let back = until(&mut approver, |m| {
        matches!(m, ServerMessage::ParticipantJoined { .. })
    })
    .await;
    assert!(
        matches!(&back, ServerMessage::ParticipantJoined { participant_id } if participant_id == &ParticipantId::from("agent")),
        "{back:?}"
    );
    // A plain join of someone already there is still refused as misuse.
    let duplicate = relay
        .join(room.clone(), ParticipantId::from("approver"))
        .await;
    assert!(
        matches!(
            duplicate,
            Err(media_relay::RelayError::AlreadyInRoom { .. })
        ),
        "{duplicate:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_right_after_the_last_one_leaves_always_find_a_room_that_takes_them() {
    // Each leave empties the room, which then ends unless a join is on its way: the join that
    // follows at once reaches either the same room (which stays) or a new one, never one that
    // is ending — no retry, no wait.
    let relay = relay();
    let room = RoomId::from("case-churn");
    for round in 0..300 {
        let mut place = relay
            .join_replacing(room.clone(), ParticipantId::from("agent"))
            .await
            .unwrap_or_else(|e| panic!("join {round}: {e}"));
        let first = until(&mut place, |_| true).await;
        assert!(
            matches!(first, ServerMessage::Joined { .. }),
            "join {round}: {first:?}"
        );
        place.send(ClientMessage::Leave).await.expect("leave");
    }
    // The last room leaves the directory once its last member is gone.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while relay.room_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the empty room is still listed: {:?}",
            relay.open_rooms()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(relay.metrics().snapshot().rooms, 0);
}
