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
