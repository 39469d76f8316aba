//! H.264 RTP payloads (RFC 6184): just enough to find where a keyframe starts. A keyframe access
//! unit begins with its parameter sets (SPS) or its IDR slice, sent as a single NAL unit, inside
//! an aggregation packet (STAP-A), or as the first fragment of a fragmentation unit (FU-A).
//! Pure functions over payload bytes; never panics on short or malformed input.

const IDR: u8 = 5;
const SPS: u8 = 7;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

fn starts_keyframe(nal_type: u8) -> bool {
    nal_type == IDR || nal_type == SPS
}

/// Whether this packet starts a keyframe (an SPS or the start of an IDR slice).
pub fn is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        STAP_A => {
            let mut rest = &payload[1..];
            while rest.len() >= 3 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                if starts_keyframe(rest[2] & 0x1f) {
                    return true;
                }
                rest = rest.get(2 + size..).unwrap_or_default();
            }
            false
        }
        FU_A => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && starts_keyframe(fu & 0x1f)),
        nal_type => starts_keyframe(nal_type),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_nal_sps_and_idr_start_keyframes_and_other_slices_do_not() {
        assert!(is_keyframe_start(&[0x67, 0x42, 0xe0, 0x1f])); // SPS
        assert!(is_keyframe_start(&[0x65, 0x88])); // IDR slice
        assert!(!is_keyframe_start(&[0x41, 0x9a])); // non-IDR slice
        assert!(!is_keyframe_start(&[0x68, 0xce])); // PPS alone
        assert!(!is_keyframe_start(&[]));
    }

    #[test]
    fn an_aggregation_packet_with_parameter_sets_starts_a_keyframe() {
        let stap = [0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce];
        assert!(is_keyframe_start(&stap));
        let only_pps = [0x78, 0x00, 0x02, 0x68, 0xce];
        assert!(!is_keyframe_start(&only_pps));
        // A size running past the end stops the walk without panicking.
        assert!(!is_keyframe_start(&[0x78, 0xff, 0xff, 0x68]));
        assert!(!is_keyframe_start(&[0x78, 0x00]));
    }

    #[test]
    fn only_the_first_fragment_of_an_idr_slice_starts_a_keyframe() {
        assert!(is_keyframe_start(&[0x7c, 0x85, 0xaa])); // FU-A, start, IDR
        assert!(!is_keyframe_start(&[0x7c, 0x05, 0xaa])); // middle fragment
        assert!(!is_keyframe_start(&[0x7c, 0x81, 0xaa])); // start of a non-IDR slice
        assert!(!is_keyframe_start(&[0x7c])); // truncated
    }
}
