//! What each fuzz target does with its bytes, in one place: the `cargo fuzz` targets
//! (`fuzz_targets/`) call these, and `tests/replay.rs` runs every corpus and regression file
//! through them on stable Rust in every test run.
//!
//! Each function feeds untrusted bytes to the parser that meets them in production and must
//! return, whatever the bytes; a panic, a hang or an allocation beyond libFuzzer's limit is a bug.
#![forbid(unsafe_code)]

use std::io::Cursor;
use std::sync::OnceLock;

/// A `/ws` client message (the text of one WebSocket frame).
pub fn ws_client_message(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = signaling::ws::read_client_message(text);
    }
}

/// An upload: the first line is the `?filename=`, the rest the file's first bytes (type sniffing).
pub fn upload_name_and_type(data: &[u8]) {
    let (name, head) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(name) = std::str::from_utf8(name) {
        let _ = signaling::materials::check_filename(name);
    }
    let _ = signaling::materials::sniff(head);
}

/// An SDP offer or answer as the relay reads it before handing it to the WebRTC stack.
pub fn relay_sdp(data: &[u8]) {
    if let Ok(sdp) = std::str::from_utf8(data) {
        let _ = media_relay::sdp::usable_media(sdp);
        let _ = media_relay::sdp::ice_ufrags(sdp);
        let _ = media_relay::sdp::sending_track_ids(sdp);
        let _ =
            media_relay::sdp::audio_extmap_id(sdp, "urn:ietf:params:rtp-hdrext:ssrc-audio-level");
    }
}

/// The trust pinned by the targets that check signatures: a fixed log key (its name is the one
/// in the corpus's checkpoints, so the fuzzer reaches the signature checks).
pub fn trust() -> &'static esign::verify::Trust {
    static TRUST: OnceLock<esign::verify::Trust> = OnceLock::new();
    TRUST.get_or_init(|| {
        let key =
            esign::keys::LogKey::from_signing_key("cloudhelp.fuzz/log", ed25519_signing_key())
                .expect("a valid log key name");
        esign::verify::Trust::new(vec![key.verifier()])
    })
}

fn ed25519_signing_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7; 32])
}

/// A signed note (a checkpoint) as an auditor's tool or a witness reads it.
pub fn signed_note(data: &[u8]) {
    let _ = esign::note::open_checkpoint(data, trust().log_keys());
}

/// A whole archive (or receipt) through the verifier: the strict zip reader, the bag, the
/// statement's canonical JSON, the signatures and the log proofs.
pub fn archive(data: &[u8]) {
    if esign::verify::is_receipt(data) {
        let _ = esign::verify::verify_receipt(data, trust());
    } else {
        let _ = esign::verify::verify(Cursor::new(data), trust());
        let _ = esign::verify::Receipt::from_archive(Cursor::new(data));
    }
}

/// What a target does with one input.
pub type Target = fn(&[u8]);

/// Every target by name (the folder names under `corpus/` and `regressions/`).
pub const TARGETS: [(&str, Target); 5] = [
    ("ws_client_message", ws_client_message),
    ("upload_name_and_type", upload_name_and_type),
    ("relay_sdp", relay_sdp),
    ("signed_note", signed_note),
    ("archive", archive),
];
