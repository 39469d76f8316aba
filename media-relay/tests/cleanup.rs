//! Leaving frees everything: after many join/leave cycles the process runs no more tasks than
//! before, and the relay's gauges are back to zero.

mod common;

use std::time::Duration;

use common::{PATIENCE, join, receives_from, relay};
use media_relay::test_peer::TestPeerConfig;
use media_relay::{ParticipantId, Relay, RoomId};

async fn settle(relay: &Relay, baseline: Option<usize>) -> usize {
    let metrics = tokio::runtime::Handle::current().metrics();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let tasks = metrics.num_alive_tasks();
        let quiet = relay.room_count() == 0 && baseline.is_none_or(|b| tasks <= b);
        if quiet {
            eprintln!("settled: {tasks} tasks alive (baseline {baseline:?})");
            return tasks;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {} rooms and {tasks} tasks (baseline {baseline:?})",
            relay.room_count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn call(relay: &Relay, room: &str) {
    let config = TestPeerConfig {
        video_fps: 15,
        ..TestPeerConfig::default()
    };
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = alive();
    let agent = join(relay, room, "agent", config.clone()).await;
    let approver = join(relay, room, "approver", config).await;
    agent
        .wait_until(PATIENCE, |r| receives_from(r, &["approver"], 10, 3))
        .await
        .unwrap_or_else(|r| panic!("call did not start: {r:#?}"));
    let during = alive();
    assert!(
        during > before,
        "a call runs tasks ({before} before, {during} during), so counting them measures cleanup"
    );
    agent.leave().await;
    approver.vanish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_join_leave_cycles_leave_no_tasks_behind() {
    let relay = relay();
    call(&relay, "warm-up").await;
    let baseline = settle(&relay, None).await;

    for i in 0..100 {
        let participant = relay
            .join(
                RoomId(format!("room-{}", i % 7)),
                ParticipantId(format!("p{i}")),
            )
            .await
            .expect("join");
        drop(participant); // vanishes before it ever offers
    }
    for i in 0..5 {
        call(&relay, &format!("call-{i}")).await;
    }
    settle(&relay, Some(baseline)).await;
    let gauges = relay.metrics().snapshot();
    assert_eq!((gauges.rooms, gauges.participants), (0, 0), "{gauges:?}");
}
