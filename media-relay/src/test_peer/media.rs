//! Synthetic media: Opus-shaped audio packets and VP8 frames with a correct payload descriptor.
//! Not decodable pictures, but every field a relay or a depacketizer looks at is right.

/// Builds VP8 RTP payloads (descriptor + frame bytes) for frames of a given size.
#[derive(Debug, Clone)]
pub struct Vp8FrameSource {
    max_payload: usize,
    frame_number: u32,
}

impl Vp8FrameSource {
    /// A source that splits frames into payloads of at most `max_payload` bytes (min 16).
    pub fn new(max_payload: usize) -> Self {
        Self {
            max_payload: max_payload.max(16),
            frame_number: 0,
        }
    }

    /// The packets (marker, payload) of the next frame of `size` bytes (at least 10).
    pub fn frame(&mut self, keyframe: bool, size: usize) -> Vec<(bool, Vec<u8>)> {
        let size = size.max(10);
        let mut frame = Vec::with_capacity(size);
        // Frame tag: P bit (bit 0) clear for a keyframe; show_frame set; first partition size 0.
        frame.push(if keyframe { 0x10 } else { 0x11 });
        frame.extend_from_slice(&[0x00, 0x00]);
        if keyframe {
            // Start code and 640x480.
            frame.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
        }
        let number = self.frame_number.to_be_bytes();
        while frame.len() < size {
            frame.push(number[frame.len() % 4]);
        }
        self.frame_number = self.frame_number.wrapping_add(1);
        let chunk = self.max_payload - 1;
        let count = frame.len().div_ceil(chunk);
        frame
            .chunks(chunk)
            .enumerate()
            .map(|(i, part)| {
                let mut payload = Vec::with_capacity(part.len() + 1);
                // Descriptor: no extensions, S bit on the first packet, partition index 0.
                payload.push(if i == 0 { 0x10 } else { 0x00 });
                payload.extend_from_slice(part);
                (i + 1 == count, payload)
            })
            .collect()
    }
}

/// One 20 ms Opus packet's worth of bytes: a TOC byte (SILK-only WB, 20 ms, mono) and filler.
pub fn opus_payload(counter: u32) -> Vec<u8> {
    let mut payload = vec![0x48];
    payload.extend(counter.to_be_bytes().iter().cycle().take(60));
    payload
}

/// Marks the 12-byte send-time suffix: these 4 bytes, then microseconds since the Unix epoch.
const STAMP_MAGIC: [u8; 4] = *b"CHts";

/// Bytes a send stamp adds to a payload.
pub const STAMP_LEN: usize = 12;

/// Appends the send time (microseconds since the Unix epoch) to a payload, so that a receiver on
/// the same machine can tell how long the packet took. At the end, because a relay reads the
/// start of a payload (VP8 descriptor, Opus TOC) and must see it unchanged.
pub fn append_send_stamp(payload: &mut Vec<u8>, sent_at_micros: u64) {
    payload.extend_from_slice(&STAMP_MAGIC);
    payload.extend_from_slice(&sent_at_micros.to_be_bytes());
}

/// The send time a payload carries, if it ends with a stamp.
pub fn send_stamp(payload: &[u8]) -> Option<u64> {
    let start = payload.len().checked_sub(STAMP_LEN)?;
    let (magic, micros) = payload[start..].split_at(4);
    if magic != STAMP_MAGIC {
        return None;
    }
    Some(u64::from_be_bytes(micros.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_payload_gives_back_its_send_time_and_keeps_its_start() {
        let mut packets = Vp8FrameSource::new(1100).frame(true, 3000);
        let (_, first) = &mut packets[0];
        let start = first.clone();
        append_send_stamp(first, 1_764_000_000_123_456);
        assert_eq!(send_stamp(first), Some(1_764_000_000_123_456));
        assert!(
            first.starts_with(&start),
            "the descriptor a relay reads is unchanged"
        );
        let mut audio = opus_payload(7);
        append_send_stamp(&mut audio, 5);
        assert_eq!(audio[0], 0x48);
        assert_eq!(send_stamp(&audio), Some(5));
    }

    #[test]
    fn a_payload_without_a_stamp_has_none() {
        assert_eq!(send_stamp(&opus_payload(7)), None);
        assert_eq!(send_stamp(&[1, 2, 3]), None);
        assert_eq!(send_stamp(&[]), None);
    }
}
