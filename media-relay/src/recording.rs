//! Recording a track as it arrives: Opus into Ogg, VP8 into IVF, H.264 into an Annex B byte
//! stream, on a thread of its own (file
//! I/O never blocks forwarding), closed and hashed (SHA-256) when recording stops or the track
//! ends. Whether to record at all (everyone's consent) is the server's decision; this module only
//! writes what it is handed.
//!
//! The writers come from webrtc-rs (`rtc::media::io`), which trusts its input: the Ogg writer
//! overflows on a timestamp going backwards, the IVF writer does not look at sequence numbers. So
//! packets pass [`RecordingFilter`] first: in sequence order only, timestamps rebased to start
//! small and never go backwards.

use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use rtc::media::io::Writer;
use rtc::media::io::h26x_writer::H26xWriter;
use rtc::media::io::ivf_reader::IVFFileHeader;
use rtc::media::io::ivf_writer::IVFWriter;
use rtc::media::io::ogg_writer::OggWriter;
use rtc::rtp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::codec::Codec;
use crate::messages::ParticipantId;

/// One recorded track, closed and hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedTrack {
    /// The publisher.
    pub participant: ParticipantId,
    /// The track id as announced in `track_published`.
    pub track_id: String,
    /// Its codec (audio or video: `Codec::kind`), which names the file format
    /// (`Codec::recording_format`).
    pub codec: Codec,
    /// Where the file is.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of its content, lowercase hex.
    pub sha256: String,
    /// RTP packets written.
    pub packets_written: u64,
    /// RTP packets left out (out of order, duplicates, or the writer thread fell behind).
    pub packets_skipped: u64,
}

/// Why a recording failed; the server logs it and records the failure with the case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recording {path}: {reason}")]
pub struct RecordingError {
    /// The file concerned.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// The result the writer thread delivers when it is done.
pub(crate) type RecordingResult = Result<RecordedTrack, RecordingError>;

/// A file name from ids chosen elsewhere: only `[A-Za-z0-9_-]` survive, so no id can climb out
/// of the recording folder.
pub fn safe_file_stem(id: &str) -> String {
    let stem: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() { "_".into() } else { stem }
}

/// Admits packets to a writer: in sequence order, no duplicates, timestamps rebased to start at
/// 1000 and never going backwards. Pure.
#[derive(Debug, Clone, Default)]
pub struct RecordingFilter {
    last_seq: Option<u16>,
    first_timestamp: Option<u32>,
    last_timestamp: u32,
}

impl RecordingFilter {
    /// A filter that takes its bases from the first packet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The packet to write, or `None` to leave it out.
    pub fn admit(&mut self, mut packet: rtp::Packet) -> Option<rtp::Packet> {
        let seq = packet.header.sequence_number;
        if let Some(last) = self.last_seq
            && (seq.wrapping_sub(last) as i16) <= 0
        {
            return None;
        }
        let first = *self.first_timestamp.get_or_insert(packet.header.timestamp);
        let rebased = packet
            .header
            .timestamp
            .wrapping_sub(first)
            .wrapping_add(1000);
        if self.last_seq.is_some() && rebased < self.last_timestamp {
            return None;
        }
        self.last_seq = Some(seq);
        self.last_timestamp = rebased;
        packet.header.timestamp = rebased;
        Some(packet)
    }
}

/// The forwarder's end of a recording: hand packets over without blocking.
pub(crate) struct RecordingSink {
    packets: SyncSender<rtp::Packet>,
    skipped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RecordingSink {
    /// Hands a packet to the writer thread; a full queue drops it (counted).
    pub(crate) fn record(&self, packet: &rtp::Packet) {
        match self.packets.try_send(packet.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.skipped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// Starts a writer thread for one track into `dir`; dropping the sink closes and hashes the file,
/// and the result arrives on the returned receiver.
pub(crate) fn start(
    dir: &Path,
    participant: ParticipantId,
    track_id: String,
    codec: Codec,
) -> (RecordingSink, oneshot::Receiver<RecordingResult>) {
    let (extension, _) = codec.recording_format();
    let path = dir.join(format!("{}.{extension}", safe_file_stem(&track_id)));
    // About 10 s of video at 60 packets/s: a slow disk loses packets, never the call.
    let (packets, rx) = sync_channel(600);
    let skipped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (done, result) = oneshot::channel();
    let thread_skipped = skipped.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("rec-{extension}"))
        .spawn(move || {
            let outcome =
                write_track(&path, codec, rx).map(|(bytes, sha256, written, filtered)| {
                    RecordedTrack {
                        participant,
                        track_id,
                        codec,
                        path: path.clone(),
                        bytes,
                        sha256,
                        packets_written: written,
                        packets_skipped: filtered
                            + thread_skipped.load(std::sync::atomic::Ordering::Relaxed),
                    }
                });
            let _ = done.send(outcome);
        });
    if let Err(err) = spawned {
        tracing::warn!(%err, "recording thread not started");
    }
    (RecordingSink { packets, skipped }, result)
}

/// Writes until the sender side is dropped; returns (bytes, sha256 hex, written, filtered out).
fn write_track(
    path: &Path,
    codec: Codec,
    packets: Receiver<rtp::Packet>,
) -> Result<(u64, String, u64, u64), RecordingError> {
    let fail = |reason: String| RecordingError {
        path: path.to_owned(),
        reason,
    };
    let file = create_private(path).map_err(|e| fail(format!("create: {e}")))?;
    let sink = BufWriter::new(file);
    let mut writer: Box<dyn Writer> = match codec {
        Codec::H264 => Box::new(H26xWriter::new(sink, false)),
        Codec::Opus => {
            Box::new(OggWriter::new(sink, 48_000, 2).map_err(|e| fail(format!("ogg header: {e}")))?)
        }
        Codec::Vp8 => {
            let header = IVFFileHeader {
                signature: *b"DKIF",
                version: 0,
                header_size: 32,
                four_cc: *b"VP80",
                width: 640,
                height: 480,
                timebase_denominator: 30,
                timebase_numerator: 1,
                num_frames: 0,
                unused: 0,
            };
            Box::new(IVFWriter::new(sink, &header).map_err(|e| fail(format!("ivf header: {e}")))?)
        }
    };
    let mut filter = RecordingFilter::new();
    let (mut written, mut filtered) = (0u64, 0u64);
    for mut packet in packets {
        if codec == Codec::Opus {
            // RED (`red.rs`): the file holds the primary frames, as from a plain Opus sender.
            let red = packet.header.payload_type == crate::red::RED_PAYLOAD_TYPE;
            match crate::red::plain(&packet.payload, red) {
                Some(plain) => packet.payload = plain,
                None => {
                    filtered += 1;
                    continue;
                }
            }
        }
        match filter.admit(packet) {
            Some(packet) => match writer.write_rtp(&packet) {
                Ok(()) => written += 1,
                // A packet the depacketizer refuses is left out; the file stays valid.
                Err(_) => filtered += 1,
            },
            None => filtered += 1,
        }
    }
    writer.close().map_err(|e| fail(format!("close: {e}")))?;
    drop(writer);
    let (bytes, sha256) = hash_file(path).map_err(|e| fail(format!("hash: {e}")))?;
    Ok((bytes, sha256, written, filtered))
}

fn create_private(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    file.sync_all()?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16, timestamp: u32) -> rtp::Packet {
        rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                sequence_number: seq,
                timestamp,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[0x48, 1, 2, 3]),
        }
    }

    #[test]
    fn ids_cannot_escape_the_recording_folder() {
        assert_eq!(safe_file_stem("../../etc/passwd"), "______etc_passwd");
        assert_eq!(safe_file_stem("acct-7-audio-0"), "acct-7-audio-0");
        assert_eq!(safe_file_stem(""), "_");
    }

    #[test]
    fn late_duplicate_and_backwards_packets_are_left_out_and_timestamps_rebased() {
        let mut filter = RecordingFilter::new();
        let ts = |p: Option<rtp::Packet>| p.map(|p| p.header.timestamp);
        assert_eq!(ts(filter.admit(packet(65535, u32::MAX - 100))), Some(1000));
        assert_eq!(
            ts(filter.admit(packet(0, 859))),
            Some(1960),
            "across both wraps"
        );
        assert_eq!(ts(filter.admit(packet(0, 859))), None, "duplicate");
        assert_eq!(ts(filter.admit(packet(65534, 0))), None, "late");
        assert_eq!(
            ts(filter.admit(packet(1, 100))),
            None,
            "timestamp went backwards"
        );
        assert_eq!(ts(filter.admit(packet(2, 1819))), Some(2920));
    }

    #[test]
    fn a_recorded_opus_stream_is_a_closed_hashed_ogg_file() {
        let dir = std::env::temp_dir().join(format!("relay-rec-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (sink, result) = start(
            &dir,
            ParticipantId::from("p"),
            "p-audio-0".into(),
            Codec::Opus,
        );
        for i in 0..50u16 {
            sink.record(&packet(i, 960 * u32::from(i)));
        }
        sink.record(&packet(10, 9600)); // late
        // RED packets: their primary frames are written as Opus.
        for i in 50..60u16 {
            let mut red = packet(i, 960 * u32::from(i));
            let mut payload = vec![0x80 | 111, 0x0f, 0x00, 0x01, 111, 0xaa];
            payload.extend_from_slice(&red.payload);
            red.payload = payload.into();
            red.header.payload_type = crate::red::RED_PAYLOAD_TYPE;
            sink.record(&red);
        }
        drop(sink);
        let recorded = result
            .blocking_recv()
            .expect("thread reports")
            .expect("recorded");
        let content = std::fs::read(&recorded.path).expect("file exists");
        assert!(content.starts_with(b"OggS"));
        assert_eq!(recorded.bytes, content.len() as u64);
        assert_eq!(recorded.sha256, hex::encode(Sha256::digest(&content)));
        assert_eq!(
            (recorded.packets_written, recorded.packets_skipped),
            (60, 1)
        );
        // Each Ogg page holds one packet (the writer's close repeats the last with the
        // end-of-stream flag): the RED ones hold their 4-byte primary only, as the plain ones.
        let pages = ogg_packet_sizes(&content);
        assert!(pages.len() >= 60, "{pages:?}");
        assert!(pages.iter().all(|&size| size == 4), "{pages:?}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// The size of the one packet on each Ogg page after the two header pages.
    fn ogg_packet_sizes(file: &[u8]) -> Vec<usize> {
        let mut sizes = Vec::new();
        let mut at = 0;
        let mut page = 0;
        while at + 27 <= file.len() {
            let segments = file[at + 26] as usize;
            let lacing = &file[at + 27..at + 27 + segments];
            let body: usize = lacing.iter().map(|&l| l as usize).sum();
            if page >= 2 {
                sizes.push(body);
            }
            at += 27 + segments + body;
            page += 1;
        }
        sizes
    }

    #[test]
    fn a_recorded_h264_stream_is_an_annex_b_byte_stream_starting_with_its_parameter_sets() {
        let dir = std::env::temp_dir().join(format!("relay-rec-h264-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (sink, result) = start(
            &dir,
            ParticipantId::from("p"),
            "p-video-0".into(),
            Codec::H264,
        );
        let h264 = |seq: u16, marker: bool, payload: &'static [u8]| rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                sequence_number: seq,
                timestamp: 3000,
                marker,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(payload),
        };
        // STAP-A (SPS, PPS), then an IDR slice in two FU-A fragments.
        sink.record(&h264(1, false, &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce]));
        sink.record(&h264(2, false, &[0x7c, 0x85, 1, 2, 3]));
        sink.record(&h264(3, true, &[0x7c, 0x45, 4, 5]));
        drop(sink);
        let recorded = result
            .blocking_recv()
            .expect("thread reports")
            .expect("recorded");
        assert_eq!(recorded.codec, Codec::H264);
        assert!(recorded.path.extension().is_some_and(|e| e == "h264"));
        let content = std::fs::read(&recorded.path).expect("file exists");
        assert!(
            content.starts_with(&[0, 0, 0, 1, 0x67, 0x42]),
            "{content:02x?}"
        );
        let idr = [0, 0, 0, 1, 0x65, 1, 2, 3, 4, 5];
        assert!(
            content.windows(idr.len()).any(|w| w == idr),
            "{content:02x?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
