//! Counting what a receiver got, per remote track: packets, losses, reordering, and for video
//! (VP8 or H.264) whole frames, keyframes and whether frames decode in order. Pure: fed packets,
//! no I/O.

use crate::codec::Codec;
use crate::vp8;

/// What one remote track delivered, as counted by [`TrackCounter`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackCounts {
    /// RTP packets received.
    pub packets: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Packets that arrived with a lower sequence number than one already seen.
    pub out_of_order: u64,
    /// Sequence numbers skipped (forward gaps) and not filled in since.
    pub lost: u64,
    /// Packets that arrived late and filled a gap (retransmissions, reordering).
    pub recovered: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// VP8 frames whose packets all arrived, in order, from start bit to marker.
    pub frames_complete: u64,
    /// VP8 frames begun but broken by a gap, or never ended.
    pub frames_incomplete: u64,
    /// Complete VP8 keyframes.
    pub keyframes: u64,
    /// Whether the first frame that began was a keyframe (`None` before any frame began).
    pub first_frame_keyframe: Option<bool>,
    /// Complete VP8 frames that a decoder could show: a keyframe, or a delta frame whose chain
    /// back to a keyframe is unbroken.
    pub frames_decodable: u64,
    /// Complete frames that came before the first keyframe (a decoder shows none of them; the
    /// peer asks for a keyframe meanwhile).
    pub frames_before_keyframe: u64,
    /// VP8: the picture width of the last keyframe begun (a simulcast layer shows as its size).
    pub keyframe_width: Option<u16>,
    /// Simulcast: the layer of the last frame begun (from the synthetic frames' tag).
    pub layer: Option<u8>,
    /// Frames that began on another layer than the frame before them.
    pub layer_switches: u64,
    /// Of those, the ones that were not keyframes (a decoder could not follow).
    pub layer_switches_mid_gop: u64,
}

impl TrackCounts {
    /// Complete frames after the first keyframe that a decoder could not follow (a broken chain
    /// back to a keyframe). Frames before the first keyframe are not counted: no decoder shows
    /// them, and a receiver whose SRTP came up after the first keyframe asks for another.
    pub fn frames_undecodable(&self) -> u64 {
        self.frames_complete - self.frames_before_keyframe - self.frames_decodable
    }
}

/// Feeds RTP packets of one track and keeps [`TrackCounts`].
#[derive(Debug, Clone, Default)]
pub struct TrackCounter {
    /// The video codec whose frames are counted (none for audio).
    video: Option<Codec>,
    /// The previous packet in sequence ended a frame (an H.264 frame starts after a marker).
    after_marker: bool,
    counts: TrackCounts,
    last_seq: Option<u16>,
    /// Bit i: sequence number `last_seq - i` arrived (the last 128).
    seen: u128,
    frame_in_progress: bool,
    frame_broken: bool,
    frame_is_key: bool,
    chain_ok: bool,
}

/// What feeding one packet completed, for callers that time events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// Nothing noteworthy.
    Packet,
    /// A complete delta frame.
    Frame,
    /// A complete keyframe.
    Keyframe,
}

impl TrackCounter {
    /// A counter; `video` tracks also count VP8 frames.
    pub fn new(video: bool) -> Self {
        Self::for_codec(video.then_some(Codec::Vp8))
    }

    /// A counter for a track of this codec (`None` or Opus: packets only).
    pub fn for_codec(codec: Option<Codec>) -> Self {
        Self {
            video: codec.filter(|c| *c != Codec::Opus),
            after_marker: true,
            ..Self::default()
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> &TrackCounts {
        &self.counts
    }

    /// Counts one packet.
    pub fn feed(&mut self, seq: u16, marker: bool, payload: &[u8]) -> Fed {
        self.counts.packets += 1;
        self.counts.bytes += payload.len() as u64;
        if let Some(last) = self.last_seq {
            let delta = seq.wrapping_sub(last) as i16;
            if delta <= 0 {
                let back = delta.unsigned_abs() as u32;
                if back < 128 && self.seen & (1u128 << back) != 0 {
                    self.counts.duplicates += 1;
                    return Fed::Packet;
                }
                self.counts.out_of_order += 1;
                if back < 128 {
                    self.seen |= 1u128 << back;
                    self.counts.lost = self.counts.lost.saturating_sub(1);
                    self.counts.recovered += 1;
                }
                if self.frame_in_progress {
                    self.frame_broken = true;
                }
                return Fed::Packet;
            }
            if delta > 1 {
                self.counts.lost += (delta - 1) as u64;
                if self.frame_in_progress {
                    self.frame_broken = true;
                }
                self.chain_ok = false;
            }
            self.seen = self.seen.checked_shl(delta as u32).unwrap_or(0) | 1;
        } else {
            self.seen = 1;
        }
        self.last_seq = Some(seq);
        let Some(codec) = self.video else {
            return Fed::Packet;
        };
        let frame_start = match codec {
            Codec::Vp8 => vp8::is_frame_start(payload),
            _ => self.after_marker,
        };
        self.after_marker = marker;
        if frame_start {
            if self.frame_in_progress {
                self.counts.frames_incomplete += 1;
                self.chain_ok = false;
            }
            self.frame_in_progress = true;
            self.frame_broken = false;
            self.frame_is_key = codec.is_keyframe_start(payload);
            if let Some((width, _)) = vp8::keyframe_size(payload).filter(|_| codec == Codec::Vp8) {
                self.counts.keyframe_width = Some(width);
            }
            if let Some(layer) = crate::test_peer::media::vp8_layer_tag(payload) {
                if self.counts.layer.is_some_and(|l| l != layer) {
                    self.counts.layer_switches += 1;
                    if !self.frame_is_key {
                        self.counts.layer_switches_mid_gop += 1;
                    }
                }
                self.counts.layer = Some(layer);
            }
            self.counts
                .first_frame_keyframe
                .get_or_insert(self.frame_is_key);
        }
        if !(marker && self.frame_in_progress) {
            return Fed::Packet;
        }
        self.frame_in_progress = false;
        if self.frame_broken {
            self.counts.frames_incomplete += 1;
            self.chain_ok = false;
            return Fed::Packet;
        }
        self.counts.frames_complete += 1;
        if self.frame_is_key {
            self.counts.keyframes += 1;
            self.chain_ok = true;
        } else if self.counts.keyframes == 0 {
            self.counts.frames_before_keyframe += 1;
        }
        if self.chain_ok {
            self.counts.frames_decodable += 1;
        }
        if self.frame_is_key {
            Fed::Keyframe
        } else {
            Fed::Frame
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_peer::media::Vp8FrameSource;

    fn feed_frame(counter: &mut TrackCounter, seq: &mut u16, packets: &[(bool, Vec<u8>)]) {
        feed_frame_losing(counter, seq, packets, None);
    }

    /// Feeds a frame's packets with consecutive numbers, the packet at `lose` never arriving.
    fn feed_frame_losing(
        counter: &mut TrackCounter,
        seq: &mut u16,
        packets: &[(bool, Vec<u8>)],
        lose: Option<usize>,
    ) {
        for (i, (marker, payload)) in packets.iter().enumerate() {
            if Some(i) != lose {
                counter.feed(*seq, *marker, payload);
            }
            *seq = seq.wrapping_add(1);
        }
    }

    #[test]
    fn synthetic_frames_count_as_complete_and_decodable() {
        let mut source = Vp8FrameSource::new(1000);
        let mut counter = TrackCounter::new(true);
        let mut seq = 65530;
        for i in 0..10 {
            let frame = source.frame(i == 0, 3000);
            feed_frame(&mut counter, &mut seq, &frame);
        }
        let counts = counter.counts();
        assert_eq!(counts.frames_complete, 10);
        assert_eq!(counts.keyframes, 1);
        assert_eq!(counts.frames_decodable, 10);
        assert_eq!(
            (counts.lost, counts.out_of_order, counts.frames_incomplete),
            (0, 0, 0)
        );
    }

    #[test]
    fn frames_before_the_first_keyframe_are_counted_apart() {
        let mut source = Vp8FrameSource::new(1000);
        let mut counter = TrackCounter::new(true);
        let mut seq = 0u16;
        for _ in 0..4 {
            feed_frame(&mut counter, &mut seq, &source.frame(false, 3000));
        }
        feed_frame(&mut counter, &mut seq, &source.frame(true, 3000));
        feed_frame(&mut counter, &mut seq, &source.frame(false, 3000));
        let counts = counter.counts();
        assert_eq!(counts.first_frame_keyframe, Some(false));
        assert_eq!(
            (
                counts.frames_complete,
                counts.frames_before_keyframe,
                counts.frames_decodable
            ),
            (6, 4, 2)
        );
    }

    #[test]
    fn a_lost_packet_breaks_its_frame_and_the_chain_until_the_next_keyframe() {
        let mut source = Vp8FrameSource::new(1000);
        let mut counter = TrackCounter::new(true);
        let mut seq = 0u16;
        feed_frame(&mut counter, &mut seq, &source.frame(true, 3000));
        let broken = source.frame(false, 3000);
        assert!(broken.len() >= 3);
        feed_frame_losing(&mut counter, &mut seq, &broken, Some(1));
        feed_frame(&mut counter, &mut seq, &source.frame(false, 3000));
        feed_frame(&mut counter, &mut seq, &source.frame(true, 3000));
        let counts = counter.counts();
        assert_eq!(counts.frames_incomplete, 1);
        assert_eq!(counts.frames_complete, 3);
        assert_eq!(
            counts.frames_decodable, 2,
            "the delta after the loss is not decodable"
        );
        assert_eq!(counts.lost, 1);
    }

    #[test]
    fn h264_frames_are_told_apart_by_markers_and_keyframes_by_their_parameter_sets() {
        let mut source = crate::test_peer::media::H264FrameSource::new(1000);
        let mut counter = TrackCounter::for_codec(Some(Codec::H264));
        let mut seq = 100;
        let keyframe = source.frame(true, 3000);
        assert!(Codec::H264.is_keyframe_start(&keyframe[0].1));
        feed_frame(&mut counter, &mut seq, &keyframe);
        feed_frame(&mut counter, &mut seq, &source.frame(false, 500));
        let broken = source.frame(false, 3000);
        feed_frame_losing(&mut counter, &mut seq, &broken, Some(1));
        feed_frame(&mut counter, &mut seq, &source.frame(true, 3000));
        let counts = counter.counts();
        assert_eq!(counts.keyframes, 2);
        assert_eq!(counts.frames_complete, 3);
        assert_eq!(counts.frames_incomplete, 1);
        assert_eq!(counts.frames_decodable, 3);
    }

    #[test]
    fn a_late_packet_fills_its_gap_and_a_repeat_counts_as_duplicate() {
        let mut counter = TrackCounter::new(false);
        for seq in [10u16, 11, 13, 14, 12, 12, 15] {
            counter.feed(seq, false, &[0]);
        }
        let counts = counter.counts();
        assert_eq!(
            (counts.lost, counts.recovered, counts.duplicates),
            (0, 1, 1)
        );
        assert_eq!(counts.out_of_order, 1);
    }

    #[test]
    fn layer_changes_are_counted_and_those_off_a_keyframe_singled_out() {
        let mut low = crate::test_peer::media::FrameSource::vp8_layer(1000, 0, 3);
        let mut high = crate::test_peer::media::FrameSource::vp8_layer(1000, 2, 3);
        let mut counter = TrackCounter::new(true);
        let mut seq = 0u16;
        feed_frame(&mut counter, &mut seq, &low.frame(true, 500));
        feed_frame(&mut counter, &mut seq, &low.frame(false, 500));
        feed_frame(&mut counter, &mut seq, &high.frame(true, 3000));
        feed_frame(&mut counter, &mut seq, &high.frame(false, 3000));
        feed_frame(&mut counter, &mut seq, &low.frame(false, 500));
        let counts = counter.counts();
        assert_eq!(
            counts.keyframe_width,
            Some(640),
            "the top layer's keyframe size"
        );
        assert_eq!(counts.layer, Some(0));
        assert_eq!(counts.layer_switches, 2);
        assert_eq!(counts.layer_switches_mid_gop, 1);
    }
}
