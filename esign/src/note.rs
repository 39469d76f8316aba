//! C2SP signed notes and tlog checkpoints: the log's signed tree heads.
//!
//! Owns the note wire format (c2sp.org/signed-note) and the checkpoint body (c2sp.org/tlog-checkpoint),
//! both parsed strictly: anything the specs do not allow, or that has a second spelling, is refused.
//! Signatures are Ed25519 (type 0x01) over the note text, checked with `verify_strict`. A note text may
//! never begin with `DSSEv1 `, so no note signature can be replayed as a PAE signature (see `sig`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::merkle::Hash;
use crate::sig::{decode_base64, public_key_from_bytes};

/// The signed-note signature type byte for Ed25519.
const ED25519_TYPE: u8 = 0x01;
/// Notes larger than this are refused before parsing.
pub const MAX_NOTE_BYTES: usize = 1 << 20;
/// At most this many signature lines (as Go's `note.Open`).
const MAX_SIGNATURES: usize = 100;
/// The em dash and space that begin a signature line.
const SIG_PREFIX: &str = "\u{2014} ";

/// Checks a signed-note key name: non-empty, no whitespace, no `+`.
pub fn check_key_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(Error::malformed(
            "note key name",
            format!("{name:?} must be non-empty, without spaces or '+'"),
        ));
    }
    Ok(())
}

/// The 4-byte key hash: SHA-256(name || 0x0A || 0x01 || public key)[..4].
pub fn key_hash(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519_TYPE]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// A note verifier key: a name and an Ed25519 public key (text form `name+hash+base64(0x01||key)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    hash: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// A verifier for `key` under `name`.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, Error> {
        check_key_name(name)?;
        Ok(Self {
            name: name.to_string(),
            hash: key_hash(name, &key),
            key,
        })
    }

    /// Parses the text form, checking that the stated hash matches the name and key.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::malformed("note verifier key", format!("{text:?}: {why}"));
        // The key is standard base64, which may itself contain '+': split off name and hash only.
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("want name+hash+key"));
        };
        check_key_name(name)?;
        if hash.len() != 8 || hash.chars().any(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
            return Err(bad("hash must be 8 lowercase hex digits"));
        }
        let raw = decode_base64(key, "note verifier key")?;
        let Some((&ED25519_TYPE, key)) = raw.split_first() else {
            return Err(bad("only Ed25519 (type 0x01) keys are supported"));
        };
        let verifier = Self::new(name, public_key_from_bytes(key)?)?;
        if hex::encode(verifier.hash) != hash {
            return Err(bad("hash does not match the name and key"));
        }
        Ok(verifier)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }
}

impl std::fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = vec![ED25519_TYPE];
        raw.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.hash),
            STANDARD.encode(raw)
        )
    }
}

/// Checks a note text: UTF-8 (given), ends in a newline, no blank line, no control characters but
/// newline, not the PAE prefix.
fn check_text(text: &str) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::malformed("note text", why.to_string()));
    if text.is_empty() || !text.ends_with('\n') {
        return bad("must be non-empty and end with a newline");
    }
    if text.contains("\n\n") || text.starts_with('\n') {
        return bad("must not contain a blank line");
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return bad("must not contain control characters other than newline");
    }
    if text.starts_with("DSSEv1 ") {
        return bad("must not begin with the DSSE prefix");
    }
    Ok(())
}

/// Signs `text` as a signed note with one signature by `key` under `name`.
pub fn sign_note(text: &str, name: &str, key: &SigningKey) -> Result<String, Error> {
    check_text(text)?;
    let verifier = NoteVerifier::new(name, key.verifying_key())?;
    let signature = key.sign(text.as_bytes());
    let mut raw = verifier.hash.to_vec();
    raw.extend_from_slice(&signature.to_bytes());
    Ok(format!(
        "{text}\n{SIG_PREFIX}{name} {}\n",
        STANDARD.encode(raw)
    ))
}

/// A note whose signature by at least one trusted key has been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedNote {
    /// The signed text, including its final newline.
    pub text: String,
    /// Names of the trusted keys whose signatures verified.
    pub signed_by: Vec<String>,
}

/// Parses a signed note strictly and checks it against `verifiers`.
///
/// Signatures from unknown keys are ignored (as the spec requires); a signature from a known key that
/// fails rejects the whole note; at least one known key must have signed.
pub fn open_note(note: &[u8], verifiers: &[NoteVerifier]) -> Result<VerifiedNote, Error> {
    let bad = |why: String| Error::malformed("signed note", why);
    if note.len() > MAX_NOTE_BYTES {
        return Err(bad(format!("{} bytes is over the limit", note.len())));
    }
    let note = std::str::from_utf8(note).map_err(|_| bad("not UTF-8".into()))?;
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| bad("no blank line before the signatures".into()))?;
    let (text, signatures) = (&note[..split + 1], &note[split + 2..]);
    check_text(text)?;
    if signatures.is_empty() || !signatures.ends_with('\n') {
        return Err(bad("signature lines must end with a newline".into()));
    }
    let lines: Vec<&str> = signatures[..signatures.len() - 1].split('\n').collect();
    if lines.len() > MAX_SIGNATURES {
        return Err(bad(format!("{} signature lines is too many", lines.len())));
    }
    let mut signed_by = Vec::new();
    for line in lines {
        let rest = line.strip_prefix(SIG_PREFIX).ok_or_else(|| {
            bad(format!(
                "signature line {line:?} does not start with an em dash"
            ))
        })?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| bad(format!("signature line {line:?} has no key name")))?;
        check_key_name(name)?;
        let raw = decode_base64(b64, "note signature")?;
        if raw.len() < 5 {
            return Err(bad(format!("signature by {name} is too short")));
        }
        let Some(verifier) = verifiers
            .iter()
            .find(|v| v.name == name && v.hash == raw[..4])
        else {
            continue;
        };
        let signature = <[u8; 64]>::try_from(&raw[4..])
            .map_err(|_| bad(format!("signature by {name} is not 64 bytes")))?;
        verifier
            .key
            .verify_strict(text.as_bytes(), &Signature::from_bytes(&signature))
            .map_err(|_| {
                Error::Verification(format!("note signature by {name} does not verify"))
            })?;
        if !signed_by.contains(&verifier.name) {
            signed_by.push(verifier.name.clone());
        }
    }
    if signed_by.is_empty() {
        return Err(Error::Verification(
            "note is not signed by any trusted key".into(),
        ));
    }
    Ok(VerifiedNote {
        text: text.to_string(),
        signed_by,
    })
}

/// A tlog checkpoint: the log's origin, its size, and its root hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line (its name).
    pub origin: String,
    /// The number of entries.
    pub size: u64,
    /// The RFC 6962 root hash at that size.
    pub root: Hash,
    /// Extension lines, if any (none are written by cloudhelp).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text of this checkpoint.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Parses a checkpoint body strictly (decimal without leading zeros, canonical base64).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::malformed("checkpoint", why.to_string());
        check_text(text)?;
        let mut lines = text[..text.len() - 1].split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(bad("needs an origin, a size and a root hash line"));
        };
        if origin.is_empty() {
            return Err(bad("empty origin"));
        }
        let canonical_size = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size: u64 = size
            .parse()
            .ok()
            .filter(|_| canonical_size)
            .ok_or_else(|| bad("tree size is not a decimal number without leading zeros"))?;
        let root: Hash = decode_base64(root, "checkpoint root hash")?
            .try_into()
            .map_err(|_| bad("root hash is not 32 bytes"))?;
        let extensions: Vec<String> = lines.map(str::to_string).collect();
        Ok(Self {
            origin: origin.to_string(),
            size,
            root,
            extensions,
        })
    }
}

/// Checks a signed checkpoint note against trusted log keys: signature, then body, then that the
/// origin is the name of a key that signed it.
pub fn open_checkpoint(note: &[u8], log_keys: &[NoteVerifier]) -> Result<Checkpoint, Error> {
    let verified = open_note(note, log_keys)?;
    let checkpoint = Checkpoint::parse(&verified.text)?;
    if !verified.signed_by.contains(&checkpoint.origin) {
        return Err(Error::Verification(format!(
            "checkpoint origin {:?} is not the name of the key that signed it",
            checkpoint.origin
        )));
    }
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn verifier() -> NoteVerifier {
        NoteVerifier::new("example.org/log", log_key().verifying_key()).unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "example.org/log".into(),
            size: 12,
            root: [9; 32],
            extensions: vec![],
        }
    }

    #[test]
    fn a_signed_checkpoint_opens_with_its_key() {
        let note = sign_note(&checkpoint().to_text(), "example.org/log", &log_key()).unwrap();
        assert_eq!(
            open_checkpoint(note.as_bytes(), &[verifier()]).unwrap(),
            checkpoint()
        );
    }

    #[test]
    fn verifier_text_round_trips_and_a_wrong_hash_is_refused() {
        let text = verifier().to_string();
        assert_eq!(NoteVerifier::parse(&text).unwrap(), verifier());
        let (head, tail) = text.split_once('+').unwrap();
        let forged = format!("{head}+00000000+{}", tail.split_once('+').unwrap().1);
        assert!(NoteVerifier::parse(&forged).is_err());
    }

    #[test]
    fn a_checkpoint_signed_by_an_unknown_key_is_refused() {
        let other = SigningKey::from_bytes(&[8; 32]);
        let note = sign_note(&checkpoint().to_text(), "example.org/log", &other).unwrap();
        let err = open_checkpoint(note.as_bytes(), &[verifier()]).unwrap_err();
        assert!(
            err.to_string().contains("not signed by any trusted key"),
            "{err}"
        );
    }

    #[test]
    fn a_changed_checkpoint_body_is_refused() {
        let note = sign_note(&checkpoint().to_text(), "example.org/log", &log_key()).unwrap();
        let changed = note.replacen("\n12\n", "\n13\n", 1);
        assert!(open_checkpoint(changed.as_bytes(), &[verifier()]).is_err());
    }

    #[test]
    fn a_checkpoint_whose_origin_is_not_the_signer_is_refused() {
        let mut cp = checkpoint();
        cp.origin = "other.org/log".into();
        let note = sign_note(&cp.to_text(), "example.org/log", &log_key()).unwrap();
        assert!(open_checkpoint(note.as_bytes(), &[verifier()]).is_err());
    }

    #[test]
    fn second_spellings_of_a_checkpoint_are_refused() {
        for text in [
            "example.org/log\n012\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n",
            "example.org/log\n+12\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n",
            "example.org/log\n12\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk\n",
            "example.org/log\n12\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=",
            "example.org/log\r\n12\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n",
        ] {
            assert!(Checkpoint::parse(text).is_err(), "{text:?}");
        }
        assert!(Checkpoint::parse(&checkpoint().to_text()).is_ok());
    }

    #[test]
    fn a_note_text_with_the_dsse_prefix_cannot_be_signed_or_opened() {
        assert!(sign_note("DSSEv1 3 abc 0 \n", "example.org/log", &log_key()).is_err());
    }

    #[test]
    fn a_note_signature_never_verifies_as_a_statement_signature() {
        let text = checkpoint().to_text();
        let note = sign_note(&text, "example.org/log", &log_key()).unwrap();
        let line = note.lines().last().unwrap();
        let raw = STANDARD.decode(line.rsplit(' ').next().unwrap()).unwrap();
        let sig = Signature::from_bytes(&raw[4..].try_into().unwrap());
        let as_statement = crate::sig::verify(
            &log_key().verifying_key(),
            crate::sig::PayloadType::Statement,
            text.as_bytes(),
            &sig,
        );
        assert!(as_statement.is_err());
    }

    #[test]
    fn a_failing_signature_from_a_known_key_rejects_the_note_even_with_a_good_one() {
        let note = sign_note(&checkpoint().to_text(), "example.org/log", &log_key()).unwrap();
        let sig_line = note.lines().last().unwrap().to_string();
        let mut raw = STANDARD
            .decode(sig_line.rsplit(' ').next().unwrap())
            .unwrap();
        raw[10] ^= 1;
        let bad_line = format!("{SIG_PREFIX}example.org/log {}", STANDARD.encode(raw));
        let doubled = format!("{note}{bad_line}\n");
        assert!(open_note(doubled.as_bytes(), &[verifier()]).is_err());
    }
}
