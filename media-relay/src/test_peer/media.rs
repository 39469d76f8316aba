//! Synthetic media: Opus-shaped audio packets, VP8 frames with a correct payload descriptor, and
//! H.264 frames packetized as RFC 6184 mode 1 (STAP-A parameter sets, FU-A slices). Not decodable
//! pictures, but every field a relay or a depacketizer looks at is right.

use crate::codec::Codec;

/// The video frames a test peer sends, in its codec's packetization.
#[derive(Debug, Clone)]
pub enum FrameSource {
    /// VP8.
    Vp8(Vp8FrameSource),
    /// H.264.
    H264(H264FrameSource),
}

impl FrameSource {
    /// A source of `codec` frames split into payloads of at most `max_payload` bytes (VP8 unless
    /// `codec` is H.264).
    pub fn new(codec: Codec, max_payload: usize) -> Self {
        match codec {
            Codec::H264 => FrameSource::H264(H264FrameSource::new(max_payload)),
            _ => FrameSource::Vp8(Vp8FrameSource::new(max_payload)),
        }
    }

    /// A VP8 source for simulcast layer `layer` (0 = lowest): every frame carries the layer's
    /// tag ([`vp8_layer_tag`]) and keyframes a picture size halved per layer below the top of
    /// `layers`.
    pub fn vp8_layer(max_payload: usize, layer: u8, layers: u8) -> Self {
        FrameSource::Vp8(Vp8FrameSource {
            layer: Some((layer, layers)),
            ..Vp8FrameSource::new(max_payload)
        })
    }

    /// The packets (marker, payload) of the next frame of about `size` bytes.
    pub fn frame(&mut self, keyframe: bool, size: usize) -> Vec<(bool, Vec<u8>)> {
        match self {
            FrameSource::Vp8(source) => source.frame(keyframe, size),
            FrameSource::H264(source) => source.frame(keyframe, size),
        }
    }
}

/// Builds H.264 RTP payloads: a keyframe is a STAP-A with SPS and PPS, then the IDR slice; a
/// delta frame is one non-IDR slice; slices larger than a payload go as FU-A fragments.
#[derive(Debug, Clone)]
pub struct H264FrameSource {
    max_payload: usize,
    frame_number: u32,
}

impl H264FrameSource {
    /// A source that splits slices into payloads of at most `max_payload` bytes (min 16).
    pub fn new(max_payload: usize) -> Self {
        Self {
            max_payload: max_payload.max(16),
            frame_number: 0,
        }
    }

    /// The packets (marker, payload) of the next frame of about `size` bytes.
    pub fn frame(&mut self, keyframe: bool, size: usize) -> Vec<(bool, Vec<u8>)> {
        let mut packets = Vec::new();
        if keyframe {
            // Constrained baseline, level 3.1 (42e01f), as the relay's fmtp line says.
            let sps: &[u8] = &[0x67, 0x42, 0xe0, 0x1f, 0x8c, 0x8d, 0x40];
            let pps: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
            let mut stap = vec![0x78];
            for nal in [sps, pps] {
                stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
                stap.extend_from_slice(nal);
            }
            packets.push((false, stap));
        }
        let header = if keyframe { 0x65 } else { 0x41 };
        let number = self.frame_number.to_be_bytes();
        self.frame_number = self.frame_number.wrapping_add(1);
        let body: Vec<u8> = (0..size.max(2) - 1).map(|i| number[i % 4]).collect();
        if body.len() < self.max_payload {
            let mut nal = vec![header];
            nal.extend_from_slice(&body);
            packets.push((true, nal));
            return packets;
        }
        let chunk = self.max_payload - 2;
        let count = body.len().div_ceil(chunk);
        for (i, part) in body.chunks(chunk).enumerate() {
            // FU indicator (NRI of the NAL, type 28), FU header (S, E bits and the NAL type).
            let mut payload = vec![(header & 0x60) | 28, header & 0x1f];
            if i == 0 {
                payload[1] |= 0x80;
            }
            if i + 1 == count {
                payload[1] |= 0x40;
            }
            payload.extend_from_slice(part);
            packets.push((i + 1 == count, payload));
        }
        packets
    }
}

/// Builds VP8 RTP payloads (descriptor + frame bytes) for frames of a given size.
#[derive(Debug, Clone)]
pub struct Vp8FrameSource {
    max_payload: usize,
    frame_number: u32,
    /// Simulcast: this source's layer and how many there are.
    layer: Option<(u8, u8)>,
}

/// Marks a simulcast layer's frames: these two bytes follow the VP8 frame header, then the layer.
const LAYER_TAG: [u8; 2] = *b"Ly";

impl Vp8FrameSource {
    /// A source that splits frames into payloads of at most `max_payload` bytes (min 16).
    pub fn new(max_payload: usize) -> Self {
        Self {
            max_payload: max_payload.max(16),
            frame_number: 0,
            layer: None,
        }
    }

    /// The packets (marker, payload) of the next frame of `size` bytes (at least 13).
    pub fn frame(&mut self, keyframe: bool, size: usize) -> Vec<(bool, Vec<u8>)> {
        let size = size.max(13);
        let mut frame = Vec::with_capacity(size);
        // Frame tag: P bit (bit 0) clear for a keyframe; show_frame set; first partition size 0.
        frame.push(if keyframe { 0x10 } else { 0x11 });
        frame.extend_from_slice(&[0x00, 0x00]);
        if keyframe {
            // Start code and the picture size: 640x480, halved per layer below the top.
            let shift = self.layer.map_or(0, |(layer, layers)| layers - 1 - layer);
            let (width, height) = (640u16 >> shift, 480u16 >> shift);
            frame.extend_from_slice(&[0x9d, 0x01, 0x2a]);
            frame.extend_from_slice(&width.to_le_bytes());
            frame.extend_from_slice(&height.to_le_bytes());
        }
        if let Some((layer, _)) = self.layer {
            frame.extend_from_slice(&LAYER_TAG);
            frame.push(layer);
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

/// The simulcast layer a VP8 frame's first packet names, if its source tagged it
/// ([`FrameSource::vp8_layer`]).
pub fn vp8_layer_tag(payload: &[u8]) -> Option<u8> {
    let data = payload.get(crate::vp8::descriptor_len(payload)?..)?;
    let header = if data.first()? & 0x01 == 0 { 10 } else { 3 };
    match data.get(header..header + 3)? {
        [a, b, layer] if [*a, *b] == LAYER_TAG => Some(*layer),
        _ => None,
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

    #[test]
    fn simulcast_frames_name_their_layer_and_untagged_frames_none() {
        for keyframe in [true, false] {
            let mut source = FrameSource::vp8_layer(1100, 1, 3);
            let packets = source.frame(keyframe, 3000);
            assert_eq!(vp8_layer_tag(&packets[0].1), Some(1));
            assert_eq!(crate::vp8::is_keyframe_start(&packets[0].1), keyframe);
        }
        let plain = Vp8FrameSource::new(1100).frame(true, 3000);
        assert_eq!(vp8_layer_tag(&plain[0].1), None);
    }
}
