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
}
