//! Recording writes valid Ogg and IVF files of the expected duration, hashed; without it, nothing.

mod common;

use std::path::{Path, PathBuf};

use common::{PATIENCE, join, receives_from, relay};
use media_relay::test_peer::{PeerReport, TestPeerConfig};
use media_relay::{MediaKind, RoomId};
use sha2::{Digest, Sha256};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relay-rec-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Seconds of audio in an Ogg/Opus file: the last page's granule position at 48 kHz.
fn ogg_seconds(content: &[u8]) -> f64 {
    let last_page = content
        .windows(4)
        .rposition(|w| w == b"OggS")
        .expect("an Ogg page");
    let granule = u64::from_le_bytes(
        content[last_page + 6..last_page + 14]
            .try_into()
            .expect("8 bytes"),
    );
    granule as f64 / 48_000.0
}

/// Frames of an IVF file, checking that its structure adds up exactly; (frames, first is key).
fn ivf_frames(content: &[u8]) -> (u32, bool) {
    assert_eq!(&content[..4], b"DKIF");
    assert_eq!(&content[8..12], b"VP80");
    let declared = u32::from_le_bytes(content[24..28].try_into().expect("4 bytes"));
    let mut offset = 32;
    let mut frames = 0;
    let mut first_is_key = false;
    while offset < content.len() {
        let size = u32::from_le_bytes(content[offset..offset + 4].try_into().expect("4 bytes"));
        if frames == 0 {
            first_is_key = content[offset + 12] & 0x01 == 0;
        }
        offset += 12 + size as usize;
        frames += 1;
    }
    assert_eq!(offset, content.len(), "frames fill the file exactly");
    assert_eq!(frames, declared, "header counts the frames");
    (frames, first_is_key)
}

fn audio_from(report: &PeerReport, who: &str) -> u64 {
    report
        .live_tracks_of(who)
        .filter(|t| t.kind == MediaKind::Audio)
        .map(|t| t.counts.packets)
        .sum()
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).expect("readable").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_writes_hashed_ogg_and_ivf_files_of_the_call_s_duration() {
    let relay = relay();
    let room = RoomId::from("case-rec");
    let agent = join(&relay, "case-rec", "agent", TestPeerConfig::default()).await;
    let _approver = join(&relay, "case-rec", "approver", TestPeerConfig::default()).await;
    agent
        .wait_until(PATIENCE, |r| receives_from(r, &["approver"], 20, 5))
        .await
        .unwrap_or_else(|r| panic!("call did not start: {r:#?}"));

    let dir = temp_dir("call");
    relay
        .start_recording(&room, dir.clone())
        .await
        .expect("recording starts");
    // Three seconds of the call, measured by what arrives (50 audio packets a second).
    let start = audio_from(&agent.report(), "approver");
    agent
        .wait_until(PATIENCE, |r| audio_from(r, "approver") >= start + 150)
        .await
        .unwrap_or_else(|r| panic!("call stalled: {r:#?}"));
    let files = relay.stop_recording(&room).await.expect("recording stops");

    assert_eq!(
        files.len(),
        4,
        "two participants, audio and video each: {files:#?}"
    );
    for file in files {
        let file = file.expect("written");
        let content = std::fs::read(&file.path).expect("file exists");
        assert_eq!(file.bytes, content.len() as u64);
        assert_eq!(file.sha256, hex::encode(Sha256::digest(&content)));
        match file.codec.kind() {
            MediaKind::Audio => {
                assert!(content.starts_with(b"OggS"));
                let seconds = ogg_seconds(&content);
                assert!(
                    (2.5..4.0).contains(&seconds),
                    "{seconds} s of audio in {file:?}"
                );
            }
            MediaKind::Video => {
                let (frames, first_is_key) = ivf_frames(&content);
                assert!(first_is_key, "the file starts at a keyframe");
                // 30 fps for ~3 s (less the wait for the first keyframe).
                assert!((60..=110).contains(&frames), "{frames} frames in {file:?}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_recording_nothing_is_written() {
    let relay = relay();
    let room = RoomId::from("case-norec");
    let agent = join(&relay, "case-norec", "agent", TestPeerConfig::default()).await;
    let _approver = join(&relay, "case-norec", "approver", TestPeerConfig::default()).await;
    let dir = temp_dir("none");
    agent
        .wait_until(PATIENCE, |r| receives_from(r, &["approver"], 100, 30))
        .await
        .unwrap_or_else(|r| panic!("call did not start: {r:#?}"));
    assert_eq!(files_in(&dir), 0);
    assert!(
        relay.stop_recording(&room).await.is_err(),
        "nothing to stop"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
