//! Opus RED (RFC 2198 redundant audio, `audio/red`): each packet carries the previous Opus
//! frame(s) beside its own, so a receiver that lost a packet plays the copy carried by the next
//! one instead of concealing the gap. Browsers send it when it is negotiated first for their
//! audio; the relay forwards it whole to subscribers that took RED too and gives the others, and
//! the recording, only the primary (newest) frame. Pure functions over payload bytes; never
//! panics on short or malformed input.
//!
//! A RED payload is a list of block headers and then the blocks, the primary last:
//!
//! ```text
//! redundant header: |1| block PT (7) | timestamp offset (14) | block length (10) |   4 bytes
//! primary header:   |0| block PT (7) |                                            1 byte
//! ```

use bytes::Bytes;

/// The payload type the relay gives `red/48000/2` in its media engine (Chromium's too). The
/// relay's answers carry its own payload types, so a publisher's RED arrives under this one.
pub const RED_PAYLOAD_TYPE: u8 = 63;

/// RED's MIME type.
pub const MIME_TYPE: &str = "audio/red";

/// RED's RTP description in the relay's media engine: the relay's Opus as both the primary and
/// the redundant format.
pub fn rtp_codec() -> rtc::rtp_transceiver::rtp_sender::RTCRtpCodec {
    rtc::rtp_transceiver::rtp_sender::RTCRtpCodec {
        mime_type: MIME_TYPE.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: format!("{0}/{0}", crate::Codec::Opus.payload_type()),
        rtcp_feedback: vec![],
    }
}

/// Walks a RED payload's block headers, handing `redundant` each redundant block's timestamp
/// offset and length; returns where the primary block starts, if the payload is well formed.
fn walk(payload: &[u8], mut redundant: impl FnMut(u16, usize)) -> Option<usize> {
    let mut header = 0;
    let mut blocks = 0usize;
    loop {
        let first = *payload.get(header)?;
        if first & 0x80 == 0 {
            header += 1;
            break;
        }
        let bytes = payload.get(header..header + 4)?;
        let offset = (u16::from(bytes[1]) << 6) | u16::from(bytes[2] >> 2);
        let length = (usize::from(bytes[2] & 0x03) << 8) | usize::from(bytes[3]);
        redundant(offset, length);
        blocks += length;
        header += 4;
    }
    let primary = header + blocks;
    (primary <= payload.len()).then_some(primary)
}

/// How far back (in RTP timestamp units) each redundant block of a RED payload lies, oldest
/// first: a receiver's view of which earlier frames a packet brings again.
pub fn redundant_offsets(payload: &[u8]) -> Option<Vec<u16>> {
    let mut offsets = Vec::new();
    walk(payload, |offset, _| offsets.push(offset))?;
    Some(offsets)
}

/// The primary (newest) Opus frame of a RED payload, sharing its bytes; `None` if the payload is
/// not well-formed RED.
pub fn primary(payload: &Bytes) -> Option<Bytes> {
    walk(payload, |_, _| {}).map(|offset| payload.slice(offset..))
}

/// The payload a packet of a stream that may carry RED gives to a leg (or a recording) that
/// takes plain Opus: `red` says whether the packet is RED. `None` for malformed RED.
pub fn plain(payload: &Bytes, red: bool) -> Option<Bytes> {
    if red {
        primary(payload)
    } else {
        Some(payload.clone())
    }
}

/// A RED payload of Opus frames (the relay's Opus payload type): redundant blocks `(timestamp
/// offset, bytes)`, oldest first, then the primary. What a browser sends; for tests and the
/// simulated browser.
#[cfg(any(test, feature = "test-peer"))]
pub fn encode(redundant: &[(u16, &[u8])], primary: &[u8]) -> Vec<u8> {
    let opus = crate::Codec::Opus.payload_type();
    let mut out = Vec::new();
    for (offset, block) in redundant {
        let word = (u32::from(*offset) << 10) | block.len() as u32;
        out.push(0x80 | opus);
        out.extend_from_slice(&word.to_be_bytes()[1..]);
    }
    out.push(opus);
    for (_, block) in redundant {
        out.extend_from_slice(block);
    }
    out.extend_from_slice(primary);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn red(redundant: &[(u16, &[u8])], primary: &[u8]) -> Bytes {
        Bytes::from(encode(redundant, primary))
    }

    #[test]
    fn the_primary_is_the_newest_block_after_the_redundant_ones() {
        let payload = red(&[(1920, b"oldest!"), (960, b"older")], b"newest frame");
        assert_eq!(
            primary(&payload).unwrap(),
            Bytes::from_static(b"newest frame")
        );
        assert_eq!(redundant_offsets(&payload).unwrap(), [1920, 960]);
        let alone = red(&[], b"only");
        assert_eq!(primary(&alone).unwrap(), Bytes::from_static(b"only"));
    }

    #[test]
    fn a_redundant_block_longer_than_255_bytes_uses_the_length_high_bits() {
        let long = vec![7u8; 300];
        let payload = red(&[(16_383, &long)], b"p");
        assert_eq!(primary(&payload).unwrap(), Bytes::from_static(b"p"));
        assert_eq!(redundant_offsets(&payload).unwrap(), [16_383]);
    }

    #[test]
    fn malformed_red_is_refused_not_misread() {
        assert_eq!(primary(&Bytes::new()), None);
        // A redundant header cut short.
        assert_eq!(primary(&Bytes::from_static(&[0x80 | 111, 0x00])), None);
        // Blocks announced longer than the payload.
        assert_eq!(
            primary(&Bytes::from_static(&[0x80 | 111, 0, 0, 50, 111, 1])),
            None
        );
        // Headers that never end.
        assert_eq!(
            primary(&Bytes::from_static(&[0xff, 0, 0, 0, 0xff, 0, 0, 0])),
            None
        );
    }

    #[test]
    fn a_plain_opus_packet_passes_unchanged() {
        let opus = Bytes::from_static(&[0xfc, 1, 2, 3]);
        assert_eq!(plain(&opus, false).unwrap(), opus);
        assert_eq!(
            plain(&red(&[(960, b"a")], b"b"), true).unwrap(),
            Bytes::from_static(b"b")
        );
    }
}
