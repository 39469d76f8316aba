//! Every text parser of outside input on arbitrary bytes: none may panic.
#![no_main]

use std::sync::OnceLock;

use esign::entry::LogEntry;
use esign::keys::LogKey;
use esign::note::{Checkpoint, NoteVerifier, open_note};
use esign::verify::Trust;
use libfuzzer_sys::fuzz_target;

fn verifier() -> &'static NoteVerifier {
    static VERIFIER: OnceLock<NoteVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let seed = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        // A constant, valid key name: from_signing_key cannot fail here.
        LogKey::from_signing_key("fuzz.example/log", seed)
            .expect("valid name")
            .verifier()
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = esign::jcs::parse_canonical(data);
    let _ = LogEntry::decode(data);
    let _ = Trust::from_json(data);
    let _ = esign::sig::signature_from_file(data);
    let _ = open_note(data, std::slice::from_ref(verifier()));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Checkpoint::parse(text);
        let _ = NoteVerifier::parse(text);
    }
});
