//! The verifier on arbitrary bytes: it must report, never panic, and never pass.
#![no_main]

use std::io::Cursor;
use std::sync::OnceLock;

use esign::keys::LogKey;
use esign::verify::{Trust, verify};
use libfuzzer_sys::fuzz_target;

/// A fixed log key. Its seed is public, but a fuzzer does not sign, so no input may pass.
fn trust() -> &'static Trust {
    static TRUST: OnceLock<Trust> = OnceLock::new();
    TRUST.get_or_init(|| {
        let seed = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        // A constant, valid key name: from_signing_key cannot fail here.
        let key = LogKey::from_signing_key("fuzz.example/log", seed).expect("valid name");
        Trust::new(vec![key.verifier()])
    })
}

fuzz_target!(|data: &[u8]| {
    let report = verify(Cursor::new(data), trust());
    assert!(!report.passed());
});
