//! Inputs that once broke something, kept as files named after what they broke.

use esign::note::NoteVerifier;

fn regression(name: &str) -> String {
    let path = format!("{}/tests/regressions/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A log key whose base64 contains '+' was refused as "want name+hash+key" (about one key in
/// four), which broke `cloudhelp log consistency` with the server's own trust file.
#[test]
fn a_verifier_key_whose_base64_contains_a_plus_parses_and_prints_back_the_same() {
    let text = regression("verifier-key-with-plus-in-base64.txt");
    let verifier = NoteVerifier::parse(text.trim()).expect("a valid verifier key");
    assert_eq!(verifier.to_string(), text.trim());
}
