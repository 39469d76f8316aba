//! Small pure checks and rewrites over SDP text, done before handing it to the WebRTC stack, so a
//! peer gets a precise error code and the public (1:1 NAT) address reaches the browser.

/// What an SDP offers that the relay can forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsableMedia {
    /// An audio m-section offers Opus.
    pub opus: bool,
    /// A video m-section offers VP8.
    pub vp8: bool,
    /// A video m-section offers H.264.
    pub h264: bool,
}

impl UsableMedia {
    /// Whether anything at all can be forwarded.
    pub fn any(&self) -> bool {
        self.opus || self.vp8 || self.h264
    }
}

/// Reads which forwardable codecs the SDP's m-sections offer (by `a=rtpmap`).
pub fn usable_media(sdp: &str) -> UsableMedia {
    let mut usable = UsableMedia::default();
    let mut section = "";
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("m=") {
            section = rest.split(' ').next().unwrap_or("");
            continue;
        }
        let Some(rtpmap) = line.strip_prefix("a=rtpmap:") else {
            continue;
        };
        let encoding = rtpmap.split_once(' ').map_or("", |(_, e)| e);
        let name = encoding.split('/').next().unwrap_or("");
        match section {
            "audio" if name.eq_ignore_ascii_case("opus") => usable.opus = true,
            "video" if name.eq_ignore_ascii_case("vp8") => usable.vp8 = true,
            "video" if name.eq_ignore_ascii_case("h264") => usable.h264 = true,
            _ => {}
        }
    }
    usable
}

/// The ICE username fragments of an SDP (`a=ice-ufrag:`), session- or media-level, in order
/// and without repeats.
pub fn ice_ufrags(sdp: &str) -> Vec<&str> {
    let mut ufrags: Vec<&str> = Vec::new();
    for ufrag in sdp
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
    {
        if !ufrags.contains(&ufrag) {
            ufrags.push(ufrag);
        }
    }
    ufrags
}

/// The `msid` track ids of the m-sections in which the SDP's author sends media (direction
/// `sendrecv` or `sendonly`, port not 0). A receiver applying a relay offer uses this to tell
/// which forwarded tracks are gone, as a browser's `removetrack` does.
pub fn sending_track_ids(sdp: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut section: Option<(bool, bool, Option<String>)> = None; // (port ok, sends, track id)
    let mut flush = |section: &mut Option<(bool, bool, Option<String>)>| {
        if let Some((true, true, Some(id))) = section.take() {
            ids.push(id);
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("m=") {
            flush(&mut section);
            let port_ok = rest.split(' ').nth(1).is_some_and(|port| port != "0");
            // RFC 3264: sendrecv unless a direction attribute says otherwise.
            section = Some((port_ok, true, None));
            continue;
        }
        let Some((_, sends, track)) = section.as_mut() else {
            continue;
        };
        match line {
            "a=sendrecv" | "a=sendonly" => *sends = true,
            "a=recvonly" | "a=inactive" => *sends = false,
            _ => {
                if let Some(msid) = line.strip_prefix("a=msid:") {
                    *track = msid.split(' ').nth(1).map(str::to_owned);
                }
            }
        }
    }
    flush(&mut section);
    ids
}

/// The id an SDP's audio section gives a header extension (`a=extmap:<id>[/dir] <uri>`).
pub fn audio_extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    let mut in_audio = false;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("m=") {
            in_audio = rest.starts_with("audio ");
            continue;
        }
        if !in_audio {
            continue;
        }
        let Some(rest) = line.strip_prefix("a=extmap:") else {
            continue;
        };
        let mut fields = rest.split(' ');
        let id = fields.next().unwrap_or("").split('/').next().unwrap_or("");
        if fields.next() == Some(uri) {
            return id.parse().ok().filter(|id| (1..=14).contains(id));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROWSER_LIKE: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n";

    #[test]
    fn opus_vp8_and_h264_are_found_in_their_own_sections() {
        assert_eq!(
            usable_media(BROWSER_LIKE),
            UsableMedia {
                opus: true,
                vp8: true,
                h264: true
            }
        );
    }

    #[test]
    fn pcmu_and_vp9_only_offer_nothing_usable() {
        let sdp = "v=0\r\nm=audio 9 RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\nm=video 9 RTP/SAVPF 98\r\na=rtpmap:98 VP9/90000\r\n";
        assert_eq!(usable_media(sdp), UsableMedia::default());
        assert!(!usable_media(sdp).any());
        let h264_only = "v=0\r\nm=video 9 RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n";
        assert!(usable_media(h264_only).h264 && usable_media(h264_only).any());
        // VP8 listed under an audio section does not count.
        assert_eq!(
            usable_media("m=audio 9 X 96\na=rtpmap:96 VP8/90000\n"),
            UsableMedia::default()
        );
    }

    #[test]
    fn only_sections_that_send_name_their_tracks() {
        let sdp = "v=0\r\nm=audio 9 X 111\r\na=sendonly\r\na=msid:alice alice-audio-0\r\n\
m=video 9 X 96\r\na=inactive\r\na=msid:bob bob-video-0\r\n\
m=video 0 X 96\r\na=sendonly\r\na=msid:carol carol-video-0\r\n\
m=video 9 X 96\r\na=msid:dave dave-video-0\r\n";
        assert_eq!(sending_track_ids(sdp), ["alice-audio-0", "dave-video-0"]);
    }

    #[test]
    fn the_audio_level_extension_id_is_read_from_the_audio_section() {
        let uri = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
        let sdp = "v=0\r\nm=video 9 X 96\r\na=extmap:3 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
m=audio 9 X 111\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:1/sendrecv urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n";
        assert_eq!(audio_extmap_id(sdp, uri), Some(1));
        assert_eq!(
            audio_extmap_id("m=audio 9 X 111\na=extmap:99 x\n", "x"),
            None
        );
    }

    #[test]
    fn ice_ufrags_are_read_once_each_in_order() {
        let sdp = "v=0\r\na=ice-ufrag:abcd\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:abcd\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:efgh\r\n";
        assert_eq!(ice_ufrags(sdp), vec!["abcd", "efgh"]);
        assert!(ice_ufrags("v=0\r\n").is_empty());
    }
}
