//! The VP8 RTP payload descriptor (RFC 7741 §4.2): just enough to find frame starts and keyframes.
//! Pure functions over payload bytes; never panics on short or malformed input.

/// Length of the VP8 payload descriptor at the start of `payload`, if it is well formed.
pub fn descriptor_len(payload: &[u8]) -> Option<usize> {
    let first = *payload.first()?;
    let mut len = 1;
    if first & 0x80 != 0 {
        let ext = *payload.get(1)?;
        len += 1;
        if ext & 0x80 != 0 {
            // PictureID: 7 or 15 bits, the M bit says which.
            let pic = *payload.get(len)?;
            len += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            len += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            len += 1; // TID/Y/KEYIDX
        }
    }
    (payload.len() >= len).then_some(len)
}

/// Whether this packet starts a VP8 frame (S bit set and partition index 0).
pub fn is_frame_start(payload: &[u8]) -> bool {
    payload
        .first()
        .is_some_and(|b| b & 0x10 != 0 && b & 0x07 == 0)
}

/// Whether this packet starts a VP8 keyframe (frame start, and the frame tag's P bit clear).
pub fn is_keyframe_start(payload: &[u8]) -> bool {
    if !is_frame_start(payload) {
        return false;
    }
    match descriptor_len(payload).and_then(|len| payload.get(len)) {
        Some(tag) => tag & 0x01 == 0,
        None => false,
    }
}

/// Where the numbering fields of a VP8 payload descriptor are: the picture ID (offset, and
/// whether it has 15 bits), TL0PICIDX and KEYIDX (offsets), those present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Fields {
    picture_id: Option<(usize, bool)>,
    tl0: Option<usize>,
    keyidx: Option<usize>,
}

fn fields(payload: &[u8]) -> Option<Fields> {
    descriptor_len(payload)?;
    let mut f = Fields::default();
    if payload[0] & 0x80 == 0 {
        return Some(f);
    }
    let ext = payload[1];
    let mut at = 2;
    if ext & 0x80 != 0 {
        let long = payload[at] & 0x80 != 0;
        f.picture_id = Some((at, long));
        at += if long { 2 } else { 1 };
    }
    if ext & 0x40 != 0 {
        f.tl0 = Some(at);
        at += 1;
    }
    if ext & 0x10 != 0 {
        f.keyidx = Some(at);
    }
    Some(f)
}

/// Keeps a subscriber's VP8 numbering continuous when its leg moves to another simulcast layer.
///
/// Each layer numbers its pictures (picture ID), its base-layer pictures (TL0PICIDX) and its
/// key indices (KEYIDX) on its own. A browser's decoder orders frames by picture ID: after a
/// switch, a keyframe whose picture ID is "older" than the last one decoded is dropped as late,
/// and so is every frame after it — the picture stayed frozen in Chromium after the first layer
/// switch. Like sequence numbers and timestamps, these are continued across a switch: the first
/// picture from the new layer follows the last one sent.
#[derive(Debug, Clone, Default)]
pub struct Vp8Numbering {
    /// Subtracted from the source's values (picture ID mod 2^15 or 2^7, TL0PICIDX mod 2^8, KEYIDX
    /// mod 2^5).
    picture_offset: u16,
    tl0_offset: u8,
    keyidx_offset: u8,
    /// The highest values sent so far.
    last_picture: Option<u16>,
    last_tl0: Option<u8>,
    last_keyidx: Option<u8>,
}

impl Vp8Numbering {
    /// The payload to send for `payload`; `switched` says it is the first packet from a new
    /// source (a layer switch, which starts on a keyframe). A payload is copied only while its
    /// numbers need changing.
    pub fn rewrite(&mut self, payload: &bytes::Bytes, switched: bool) -> bytes::Bytes {
        let Some(f) = fields(payload) else {
            return payload.clone();
        };
        let picture = f.picture_id.map(|(at, long)| {
            if long {
                (
                    u16::from_be_bytes([payload[at], payload[at + 1]]) & 0x7fff,
                    0x7fff_u16,
                )
            } else {
                (u16::from(payload[at] & 0x7f), 0x7f_u16)
            }
        });
        let tl0 = f.tl0.map(|at| payload[at]);
        let keyidx = f.keyidx.map(|at| payload[at] & 0x1f);
        if switched {
            if let (Some((p, mask)), Some(last)) = (picture, self.last_picture) {
                self.picture_offset = p.wrapping_sub(last.wrapping_add(1)) & mask;
            }
            if let (Some(t), Some(last)) = (tl0, self.last_tl0) {
                self.tl0_offset = t.wrapping_sub(last.wrapping_add(1));
            }
            if let (Some(k), Some(last)) = (keyidx, self.last_keyidx) {
                self.keyidx_offset = k.wrapping_sub(last.wrapping_add(1)) & 0x1f;
            }
        }
        let picture = picture.map(|(p, mask)| (p.wrapping_sub(self.picture_offset) & mask, mask));
        let tl0 = tl0.map(|t| t.wrapping_sub(self.tl0_offset));
        let keyidx = keyidx.map(|k| k.wrapping_sub(self.keyidx_offset) & 0x1f);
        // The highest sent (a retransmission of an older picture leaves them).
        if let Some((p, mask)) = picture {
            let half = mask / 2 + 1;
            match self.last_picture {
                Some(last) if (p.wrapping_sub(last) & mask) >= half => {}
                _ => self.last_picture = Some(p),
            }
        }
        if let Some(t) = tl0 {
            match self.last_tl0 {
                Some(last) if t.wrapping_sub(last) >= 128 => {}
                _ => self.last_tl0 = Some(t),
            }
        }
        if let Some(k) = keyidx {
            self.last_keyidx = Some(k);
        }
        if self.picture_offset == 0 && self.tl0_offset == 0 && self.keyidx_offset == 0 {
            return payload.clone();
        }
        let mut out = bytes::BytesMut::from(&payload[..]);
        if let (Some((at, long)), Some((p, _))) = (f.picture_id, picture) {
            if long {
                out[at..at + 2].copy_from_slice(&(p | 0x8000).to_be_bytes());
            } else {
                out[at] = p as u8;
            }
        }
        if let (Some(at), Some(t)) = (f.tl0, tl0) {
            out[at] = t;
        }
        if let (Some(at), Some(k)) = (f.keyidx, keyidx) {
            out[at] = (out[at] & 0xe0) | k;
        }
        out.freeze()
    }
}

/// The picture size (width, height) a packet starting a VP8 keyframe announces (RFC 6386
/// §9.1: start code, then 14-bit width and height).
pub fn keyframe_size(payload: &[u8]) -> Option<(u16, u16)> {
    if !is_keyframe_start(payload) {
        return None;
    }
    let data = payload.get(descriptor_len(payload)?..)?;
    match data.get(3..10)? {
        [0x9d, 0x01, 0x2a, w0, w1, h0, h1] => Some((
            u16::from_le_bytes([*w0, *w1]) & 0x3fff,
            u16::from_le_bytes([*h0, *h1]) & 0x3fff,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_empty_payloads_are_not_keyframes() {
        assert!(!is_keyframe_start(&[]));
        assert!(!is_keyframe_start(&[0x10]));
        assert!(!is_keyframe_start(&[0x90, 0x80]));
        assert_eq!(descriptor_len(&[0x90, 0x80]), None);
    }

    #[test]
    fn extended_descriptor_with_15_bit_picture_id_is_skipped() {
        // X=1,S=1 | I=1 | M=1 picture id (2 bytes) | frame tag with P=0
        let payload = [0x90, 0x80, 0x81, 0x23, 0x50, 0x9d, 0x01, 0x2a];
        assert_eq!(descriptor_len(&payload), Some(4));
        assert!(is_keyframe_start(&payload));
    }

    #[test]
    fn delta_frame_and_continuation_packets_are_not_keyframe_starts() {
        assert!(!is_keyframe_start(&[0x10, 0x01, 0x00]));
        assert!(!is_keyframe_start(&[0x00, 0x00, 0x00]));
        assert!(is_frame_start(&[0x10, 0x01]));
    }

    #[test]
    fn no_short_payload_makes_the_parser_panic() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for payload in [&[a][..], &[a, b][..], &[a, b, a][..], &[0x90, a, b][..]] {
                    let len = descriptor_len(payload);
                    assert!(len.is_none_or(|l| l <= payload.len()));
                    let _ = is_keyframe_start(payload);
                }
            }
        }
    }

    /// A VP8 packet with a 15-bit picture ID, TL0PICIDX and TID/KEYIDX, starting a frame.
    fn numbered(picture: u16, tl0: u8, keyidx: u8, keyframe: bool) -> bytes::Bytes {
        let mut p = vec![0x90, 0xf0];
        p.extend_from_slice(&(picture | 0x8000).to_be_bytes());
        p.push(tl0);
        p.push(0x40 | keyidx); // TID 1, Y 0
        p.push(if keyframe { 0x10 } else { 0x11 }); // frame tag: P bit
        p.extend_from_slice(b"data");
        bytes::Bytes::from(p)
    }

    fn numbers(payload: &[u8]) -> (u16, u8, u8) {
        (
            u16::from_be_bytes([payload[2], payload[3]]) & 0x7fff,
            payload[4],
            payload[5] & 0x1f,
        )
    }

    #[test]
    fn numbering_continues_across_a_layer_switch_and_is_untouched_before_one() {
        let mut n = Vp8Numbering::default();
        let first = numbered(1000, 50, 3, true);
        assert_eq!(
            n.rewrite(&first, false),
            first,
            "no switch yet: the same bytes"
        );
        n.rewrite(&numbered(1001, 50, 3, false), false);
        // The new layer numbers its pictures far away, and "older".
        let switched = n.rewrite(&numbered(200, 7, 30, true), true);
        assert_eq!(numbers(&switched), (1002, 51, 4));
        assert_eq!(&switched[7..], b"data", "the rest of the payload is kept");
        assert_eq!(switched[5] & 0xe0, 0x40, "TID and Y are kept");
        let next = n.rewrite(&numbered(201, 8, 30, false), false);
        assert_eq!(numbers(&next), (1003, 52, 4));
        // Across the picture ID's wrap.
        let mut w = Vp8Numbering::default();
        w.rewrite(&numbered(0x7ffe, 255, 31, false), false);
        let wrapped = w.rewrite(&numbered(10, 1, 0, true), true);
        assert_eq!(numbers(&wrapped), (0x7fff, 0, 0));
        assert_eq!(
            numbers(&w.rewrite(&numbered(11, 1, 0, false), false)),
            (0, 0, 0)
        );
    }

    #[test]
    fn a_retransmitted_older_picture_does_not_move_the_numbering_back() {
        let mut n = Vp8Numbering::default();
        n.rewrite(&numbered(500, 1, 0, true), false);
        n.rewrite(&numbered(502, 1, 0, false), false);
        n.rewrite(&numbered(501, 1, 0, false), false); // a retransmission
        let switched = n.rewrite(&numbered(9, 9, 9, true), true);
        assert_eq!(numbers(&switched).0, 503);
    }
}
