//! Domain-separated Ed25519 signatures (DSSE pre-authentication encoding).
//!
//! Owns what bytes a signature covers. Every signature made or checked by cloudhelp is over
//! `PAE(payload type, body)`, so a signature made for one kind of object never verifies as another.
//! Verification is always `verify_strict` (rejects small-order keys and R, non-canonical encodings).
//! Checkpoints are the one exception: they are C2SP signed notes (see `note`), whose text can never
//! begin with the PAE prefix `DSSEv1 `, so a note signature and a PAE signature cannot coincide.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::Error;

/// The kinds of object cloudhelp signs; each has its own DSSE payload type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayloadType {
    /// A case decision statement (`esign/statement.json`).
    Statement,
    /// A key registration log entry.
    KeyRegistration,
    /// A key revocation log entry.
    KeyRevocation,
}

impl PayloadType {
    /// The DSSE payload type string.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadType::Statement => "application/vnd.cloudhelp.statement+json",
            PayloadType::KeyRegistration => "application/vnd.cloudhelp.key-registration+json",
            PayloadType::KeyRevocation => "application/vnd.cloudhelp.key-revocation+json",
        }
    }
}

/// The DSSE v1 pre-authentication encoding: `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        body.len()
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    out
}

/// The exact bytes a signer signs for `body` of kind `kind` (what the browser passes to WebCrypto).
pub fn signing_bytes(kind: PayloadType, body: &[u8]) -> Vec<u8> {
    pae(kind.as_str(), body)
}

/// Signs `body` as an object of kind `kind`.
pub fn sign(key: &SigningKey, kind: PayloadType, body: &[u8]) -> Signature {
    key.sign(&signing_bytes(kind, body))
}

/// Checks a signature over `body` of kind `kind` with `verify_strict`.
pub fn verify(
    key: &VerifyingKey,
    kind: PayloadType,
    body: &[u8],
    signature: &Signature,
) -> Result<(), Error> {
    key.verify_strict(&signing_bytes(kind, body), signature)
        .map_err(|_| {
            Error::Verification(format!(
                "Ed25519 signature ({}) does not verify (verify_strict)",
                kind.as_str()
            ))
        })
}

/// Parses a public key from 32 bytes, refusing small-order ("weak") keys.
pub fn public_key_from_bytes(bytes: &[u8]) -> Result<VerifyingKey, Error> {
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| Error::malformed("public key", format!("{} bytes, want 32", bytes.len())))?;
    let key = VerifyingKey::from_bytes(&array)
        .map_err(|_| Error::malformed("public key", "not a point on edwards25519"))?;
    if key.is_weak() {
        return Err(Error::malformed("public key", "small-order (weak) key"));
    }
    Ok(key)
}

/// Parses a public key from standard base64 (with padding), as stored in log entries.
pub fn public_key_from_base64(text: &str) -> Result<VerifyingKey, Error> {
    let bytes = decode_base64(text, "public key")?;
    public_key_from_bytes(&bytes)
}

/// Encodes a public key as standard base64.
pub fn public_key_to_base64(key: &VerifyingKey) -> String {
    STANDARD.encode(key.as_bytes())
}

/// Parses a signature from its `.sig` file form: standard base64 of 64 bytes and one newline.
pub fn signature_from_file(bytes: &[u8]) -> Result<Signature, Error> {
    let text = std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| t.strip_suffix('\n'))
        .ok_or_else(|| {
            Error::malformed("signature file", "not one line of base64 ending in \\n")
        })?;
    let raw = decode_base64(text, "signature file")?;
    let array: [u8; 64] = raw
        .as_slice()
        .try_into()
        .map_err(|_| Error::malformed("signature file", format!("{} bytes, want 64", raw.len())))?;
    Ok(Signature::from_bytes(&array))
}

/// Encodes a signature in its `.sig` file form.
pub fn signature_to_file(signature: &Signature) -> Vec<u8> {
    format!("{}\n", STANDARD.encode(signature.to_bytes())).into_bytes()
}

/// Decodes strict standard base64: padding required, no whitespace, canonical trailing bits.
pub(crate) fn decode_base64(text: &str, what: &'static str) -> Result<Vec<u8>, Error> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|e| Error::malformed(what, format!("bad base64: {e}")))?;
    // The engine rejects non-zero trailing bits; re-encoding catches any other second spelling.
    if STANDARD.encode(&bytes) != text {
        return Err(Error::malformed(what, "base64 is not in canonical form"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn pae_matches_the_dsse_specification_example() {
        // DSSE protocol.md: PAE("http://example.com/HelloWorld", "hello world").
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn a_statement_signature_verifies_as_a_statement() {
        let k = key(1);
        let sig = sign(&k, PayloadType::Statement, b"{}");
        verify(&k.verifying_key(), PayloadType::Statement, b"{}", &sig).unwrap();
    }

    #[test]
    fn a_statement_signature_never_verifies_as_a_key_registration() {
        let k = key(1);
        let sig = sign(&k, PayloadType::Statement, b"{}");
        assert!(
            verify(
                &k.verifying_key(),
                PayloadType::KeyRegistration,
                b"{}",
                &sig
            )
            .is_err()
        );
    }

    #[test]
    fn a_key_registration_signature_never_verifies_as_a_statement() {
        let k = key(2);
        let sig = sign(&k, PayloadType::KeyRegistration, b"{}");
        assert!(verify(&k.verifying_key(), PayloadType::Statement, b"{}", &sig).is_err());
    }

    #[test]
    fn a_key_revocation_signature_never_verifies_as_a_registration_or_statement() {
        let k = key(3);
        let sig = sign(&k, PayloadType::KeyRevocation, b"{}");
        assert!(
            verify(
                &k.verifying_key(),
                PayloadType::KeyRegistration,
                b"{}",
                &sig
            )
            .is_err()
        );
        assert!(verify(&k.verifying_key(), PayloadType::Statement, b"{}", &sig).is_err());
    }

    #[test]
    fn a_raw_signature_over_the_body_never_verifies_as_any_kind() {
        let k = key(4);
        let raw = k.sign(b"{}");
        for kind in [
            PayloadType::Statement,
            PayloadType::KeyRegistration,
            PayloadType::KeyRevocation,
        ] {
            assert!(verify(&k.verifying_key(), kind, b"{}", &raw).is_err());
        }
    }

    #[test]
    fn signature_files_round_trip_and_reject_other_spellings() {
        let sig = sign(&key(5), PayloadType::Statement, b"x");
        let file = signature_to_file(&sig);
        assert_eq!(signature_from_file(&file).unwrap(), sig);
        let mut no_newline = file.clone();
        no_newline.pop();
        assert!(signature_from_file(&no_newline).is_err());
        let mut crlf = file[..file.len() - 1].to_vec();
        crlf.extend_from_slice(b"\r\n");
        assert!(signature_from_file(&crlf).is_err());
    }

    #[test]
    fn weak_public_keys_are_refused() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(public_key_from_bytes(&identity).is_err());
    }
}
