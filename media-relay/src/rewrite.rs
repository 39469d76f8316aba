//! Per-subscriber rewriting of forwarded RTP: SSRC and payload type of the subscriber's leg,
//! no header extensions (their ids belong to the publisher's leg), and sequence numbers kept
//! contiguous across packets the relay chose not to forward (mute, waiting for a keyframe).
//!
//! Timestamps pass through while the source stays the same (its own clock is continuous). When a
//! subscriber leg moves to another simulcast layer, a stream with its own SSRC, sequence numbers
//! and timestamp base, [`DownstreamRewriter::switch_source`] makes the new source's numbers follow
//! on from the old one's: sequence numbers without a gap, timestamps advanced by the time that
//! passed. Pure: fed packets and times, no I/O.

use std::time::Instant;

use rtc::rtp;

/// How far behind the newest forwarded packet a straggler may be and still be sent.
const FLOOR_LAG: u16 = 1 << 14;

/// Keeps outgoing sequence numbers contiguous when the relay drops packets on purpose.
#[derive(Debug, Clone, Default)]
pub struct SequenceRewriter {
    offset: u16,
    highest_out: Option<u16>,
    resync_base: Option<u16>,
    resync: bool,
}

impl SequenceRewriter {
    /// A rewriter that takes its base from the first forwarded packet.
    pub fn new() -> Self {
        Self {
            resync: true,
            ..Self::default()
        }
    }

    /// The relay dropped this stream's packets on purpose; the next forwarded one follows on.
    pub fn gap(&mut self) {
        self.resync = true;
    }

    /// The outgoing sequence number for `seq_in`, or `None` if the packet is older than the
    /// last resynchronisation (it would collide with numbers already sent).
    pub fn forward(&mut self, seq_in: u16) -> Option<u16> {
        if self.resync {
            let next_out = self.highest_out.map_or(seq_in, |h| h.wrapping_add(1));
            self.offset = seq_in.wrapping_sub(next_out);
            self.resync_base = Some(seq_in);
            self.resync = false;
        } else if let Some(base) = self.resync_base {
            let ahead = seq_in.wrapping_sub(base);
            if (ahead as i16) < 0 {
                return None;
            }
            // The floor trails the newest packet by at most a quarter of the sequence space, so
            // it stays comparable: a fixed floor reads as "older" once the stream is 32,768
            // packets past it, and every packet after that would be dropped.
            if ahead > FLOOR_LAG {
                self.resync_base = Some(seq_in.wrapping_sub(FLOOR_LAG));
            }
        }
        let out = seq_in.wrapping_sub(self.offset);
        match self.highest_out {
            Some(h) if (out.wrapping_sub(h) as i16) <= 0 => {}
            _ => self.highest_out = Some(out),
        }
        Some(out)
    }
}

/// Rewrites one publisher's packets for one subscriber's leg.
#[derive(Debug, Clone)]
pub struct DownstreamRewriter {
    /// The SSRC announced to the subscriber.
    pub ssrc: u32,
    /// The payload type negotiated on the subscriber's leg.
    pub payload_type: u8,
    /// Video only: nothing is forwarded until a keyframe starts, so the subscriber's first frame
    /// decodes.
    pub waiting_for_keyframe: bool,
    sequence: SequenceRewriter,
    /// RTP clock rate of the stream (for rebasing timestamps).
    clock_rate: u32,
    /// Subtracted from source timestamps.
    timestamp_offset: u32,
    /// The last timestamp sent and when.
    last_out: Option<(u32, Instant)>,
    /// The next forwarded packet comes from a new source: rebase its timestamps.
    rebase: bool,
    /// VP8 legs: picture IDs, TL0PICIDX and KEYIDX continued across layer switches.
    vp8: Option<crate::vp8::Vp8Numbering>,
    /// Audio legs of a publisher that may send RED: how its RED packets go out on this leg.
    red: Option<RedLeg>,
}

/// How a leg passes on the publisher's RED packets (`red.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedLeg {
    /// The payload type of the publisher's RED packets.
    pub publisher: u8,
    /// The payload type of RED on the subscriber's leg, if it took RED: RED packets go out
    /// whole; otherwise only their primary goes out, as plain Opus.
    pub subscriber: Option<u8>,
}

impl DownstreamRewriter {
    /// A rewriter for a fresh subscriber leg of a stream with RTP clock `clock_rate`; `video`
    /// legs wait for a keyframe.
    pub fn new(ssrc: u32, payload_type: u8, clock_rate: u32, video: bool) -> Self {
        Self {
            ssrc,
            payload_type,
            waiting_for_keyframe: video,
            sequence: SequenceRewriter::new(),
            clock_rate,
            timestamp_offset: 0,
            last_out: None,
            rebase: false,
            vp8: None,
            red: None,
        }
    }

    /// The leg carries audio from a publisher that may send RED.
    pub fn with_red(mut self, red: RedLeg) -> Self {
        self.red = Some(red);
        self
    }

    /// The leg carries VP8: its payload descriptors' numbering is continued across switches.
    pub fn with_vp8(mut self) -> Self {
        self.vp8 = Some(crate::vp8::Vp8Numbering::default());
        self
    }

    /// The next forwarded packet comes from another source (a simulcast layer switch, which
    /// happens on a keyframe): its numbers continue the old source's.
    pub fn switch_source(&mut self) {
        self.sequence.gap();
        self.rebase = true;
    }

    /// The relay dropped packets of this stream on purpose (mute); video waits for a keyframe.
    pub fn pause(&mut self, video: bool) {
        self.sequence.gap();
        self.waiting_for_keyframe = video;
    }

    /// The packet to send to the subscriber at `now`, or `None` if it must not be sent.
    /// `keyframe_start` tells whether the packet begins a keyframe.
    pub fn rewrite(
        &mut self,
        packet: &rtp::Packet,
        keyframe_start: bool,
        now: Instant,
    ) -> Option<rtp::Packet> {
        let (payload_type, plain) = match self.red {
            Some(red) if packet.header.payload_type == red.publisher => match red.subscriber {
                Some(payload_type) => (payload_type, None),
                // Malformed RED is dropped: the subscriber counts it lost.
                None => (
                    self.payload_type,
                    Some(crate::red::primary(&packet.payload)?),
                ),
            },
            _ => (self.payload_type, None),
        };
        if self.waiting_for_keyframe {
            if !keyframe_start {
                return None;
            }
            self.waiting_for_keyframe = false;
        }
        let sequence_number = self.sequence.forward(packet.header.sequence_number)?;
        let switched = std::mem::take(&mut self.rebase);
        if switched && let Some((last, at)) = self.last_out {
            // At least one tick later than the last frame sent, so the new frame is a new one.
            let elapsed = now.saturating_duration_since(at).as_secs_f64() * self.clock_rate as f64;
            let next = last.wrapping_add((elapsed as u32).max(1));
            self.timestamp_offset = packet.header.timestamp.wrapping_sub(next);
        }
        let timestamp = packet.header.timestamp.wrapping_sub(self.timestamp_offset);
        match self.last_out {
            Some((last, _)) if last == timestamp => {}
            _ => self.last_out = Some((timestamp, now)),
        }
        // A header of its own (no extensions, no CSRCs: nothing to allocate per leg) around the
        // same payload bytes (a reference count, not a copy).
        Some(rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                padding: packet.header.padding,
                marker: packet.header.marker,
                payload_type,
                sequence_number,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: match (self.vp8.as_mut(), plain) {
                (Some(vp8), _) => vp8.rewrite(&packet.payload, switched),
                (None, Some(primary)) => primary,
                (None, None) => packet.payload.clone(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn packet(seq: u16) -> rtp::Packet {
        rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                sequence_number: seq,
                ssrc: 7,
                payload_type: 120,
                extension: true,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[0x10, 0x00]),
        }
    }

    #[test]
    fn ssrc_payload_type_and_extensions_are_those_of_the_subscriber_leg() {
        let mut rewriter = DownstreamRewriter::new(42, 96, 90_000, false);
        let out = rewriter
            .rewrite(&packet(10), false, Instant::now())
            .expect("audio is forwarded");
        assert_eq!(out.header.ssrc, 42);
        assert_eq!(out.header.payload_type, 96);
        assert!(!out.header.extension);
        assert_eq!(out.header.sequence_number, 10);
    }

    #[test]
    fn red_goes_out_whole_to_a_red_leg_and_as_its_primary_to_a_plain_one() {
        // RED: one redundant block of 2 bytes (timestamp offset 960), then the primary.
        let red_payload = bytes::Bytes::from_static(&[0x80 | 111, 0x0f, 0x00, 0x02, 111, 1, 2, 9]);
        let red = |seq| rtp::Packet {
            header: rtp::header::Header {
                payload_type: 63,
                ..packet(seq).header
            },
            payload: red_payload.clone(),
        };
        let now = Instant::now();
        let mut whole = DownstreamRewriter::new(42, 111, 48_000, false).with_red(RedLeg {
            publisher: 63,
            subscriber: Some(63),
        });
        let out = whole.rewrite(&red(5), false, now).unwrap();
        assert_eq!(
            (out.header.payload_type, out.payload),
            (63, red_payload.clone())
        );

        let mut plain = DownstreamRewriter::new(43, 111, 48_000, false).with_red(RedLeg {
            publisher: 63,
            subscriber: None,
        });
        let out = plain.rewrite(&red(5), false, now).unwrap();
        assert_eq!(out.header.payload_type, 111);
        assert_eq!(&out.payload[..], &[9]);
        // Malformed RED is dropped (the subscriber sees it as lost), and what follows goes on.
        let mut broken = red(6);
        broken.payload = bytes::Bytes::from_static(&[0x80 | 111, 0]);
        assert!(plain.rewrite(&broken, false, now).is_none());
        let next = plain.rewrite(&red(7), false, now).unwrap();
        assert_eq!(
            next.header.sequence_number,
            out.header.sequence_number.wrapping_add(2)
        );
        // A publisher's plain Opus packet goes out as Opus on both legs.
        let opus = rtp::Packet {
            header: rtp::header::Header {
                payload_type: 111,
                ..packet(8).header
            },
            payload: bytes::Bytes::from_static(&[0xfc]),
        };
        assert_eq!(
            whole
                .rewrite(&opus, false, now)
                .unwrap()
                .header
                .payload_type,
            111
        );
        assert_eq!(
            plain.rewrite(&opus, false, now).unwrap().payload,
            opus.payload
        );
    }

    #[test]
    fn video_waits_for_a_keyframe_then_numbers_follow_on() {
        let mut rewriter = DownstreamRewriter::new(42, 96, 90_000, true);
        assert!(
            rewriter
                .rewrite(&packet(1), false, Instant::now())
                .is_none()
        );
        assert!(
            rewriter
                .rewrite(&packet(2), false, Instant::now())
                .is_none()
        );
        let first = rewriter
            .rewrite(&packet(3), true, Instant::now())
            .expect("keyframe forwarded");
        let second = rewriter
            .rewrite(&packet(4), false, Instant::now())
            .expect("follows keyframe");
        assert_eq!(
            second.header.sequence_number,
            first.header.sequence_number.wrapping_add(1)
        );
    }

    #[test]
    fn a_muted_stretch_leaves_no_hole_in_the_sequence() {
        let mut rewriter = DownstreamRewriter::new(42, 111, 48_000, false);
        assert_eq!(
            rewriter
                .rewrite(&packet(65534), false, Instant::now())
                .map(|p| p.header.sequence_number),
            Some(65534)
        );
        rewriter.pause(false);
        // 500 packets dropped while muted, across the wrap.
        let out = rewriter
            .rewrite(&packet(498), false, Instant::now())
            .expect("unmuted");
        assert_eq!(out.header.sequence_number, 65535);
        let out = rewriter
            .rewrite(&packet(499), false, Instant::now())
            .expect("next");
        assert_eq!(out.header.sequence_number, 0);
        // A straggler from before the mute would collide: dropped.
        assert!(
            rewriter
                .rewrite(&packet(65535), false, Instant::now())
                .is_none()
        );
    }

    #[test]
    fn a_stream_is_forwarded_without_end_across_many_wraps() {
        // The soak trial's video stopped 32,768 packets after the leg's first one (~9 minutes of
        // 60 packets/s) and audio 11 minutes in: the floor against stragglers stayed where the
        // stream began and read as "newer" than everything half the sequence space later.
        let mut rewriter = DownstreamRewriter::new(42, 96, 90_000, true);
        let now = Instant::now();
        let mut expected = None;
        for n in 0..200_000u32 {
            let seq = (1000 + n) as u16;
            let out = rewriter
                .rewrite(&packet(seq), n == 0, now)
                .unwrap_or_else(|| panic!("packet {n} (sequence {seq}) was dropped"));
            if let Some(expected) = expected {
                assert_eq!(out.header.sequence_number, expected, "packet {n}");
            }
            expected = Some(out.header.sequence_number.wrapping_add(1));
        }
    }

    #[test]
    fn a_straggler_far_behind_the_stream_is_dropped_and_a_recent_one_is_sent() {
        let mut rewriter = SequenceRewriter::new();
        for seq in 0..40_000u16 {
            rewriter.forward(seq).expect("in order");
        }
        assert_eq!(rewriter.forward(39_000), Some(39_000), "1,000 behind");
        assert_eq!(rewriter.forward(20_000), None, "20,000 behind");
        assert_eq!(rewriter.forward(40_000), Some(40_000));
    }

    #[test]
    fn reordered_packets_keep_their_relative_order() {
        let mut rewriter = SequenceRewriter::new();
        assert_eq!(rewriter.forward(100), Some(100));
        assert_eq!(rewriter.forward(102), Some(102));
        assert_eq!(rewriter.forward(101), Some(101));
        assert_eq!(rewriter.forward(103), Some(103));
    }

    #[test]
    fn a_layer_switch_continues_sequence_numbers_and_timestamps_by_the_time_that_passed() {
        let start = Instant::now();
        let mut rewriter = DownstreamRewriter::new(42, 96, 90_000, true);
        let layer = |seq: u16, ts: u32, ssrc: u32| {
            let mut p = packet(seq);
            p.header.timestamp = ts;
            p.header.ssrc = ssrc;
            p
        };
        // Layer A: two frames 33 ms apart.
        let a1 = rewriter
            .rewrite(&layer(100, 5_000, 1), true, start)
            .expect("keyframe");
        let a2 = rewriter
            .rewrite(
                &layer(101, 8_000, 1),
                false,
                start + Duration::from_millis(33),
            )
            .expect("delta");
        assert_eq!(a2.header.timestamp.wrapping_sub(a1.header.timestamp), 3_000);
        // Layer B: its own numbers entirely; the switch comes 40 ms after A's last frame.
        rewriter.switch_source();
        let b1 = rewriter
            .rewrite(
                &layer(60_000, 4_000_000_000, 2),
                true,
                start + Duration::from_millis(73),
            )
            .expect("keyframe of B");
        assert_eq!(b1.header.ssrc, 42);
        assert_eq!(
            b1.header.sequence_number,
            a2.header.sequence_number.wrapping_add(1)
        );
        assert_eq!(
            b1.header.timestamp.wrapping_sub(a2.header.timestamp),
            3_600,
            "40 ms at 90 kHz"
        );
        // B's later packets keep B's own spacing.
        let b2 = rewriter
            .rewrite(
                &layer(60_001, 4_000_003_000, 2),
                false,
                start + Duration::from_millis(106),
            )
            .expect("delta of B");
        assert_eq!(b2.header.timestamp.wrapping_sub(b1.header.timestamp), 3_000);
        assert_eq!(
            b2.header.sequence_number,
            b1.header.sequence_number.wrapping_add(1)
        );
    }
}
