//! Typed transparency-log entries: statements, key registrations, key revocations.
//!
//! Owns the byte form of a log entry: `PAE(payload type, body)`, with the body canonical JSON. The
//! leaf hash is RFC 6962's SHA-256(0x00 || entry bytes), so the type is bound into the leaf and a key
//! registration can never be passed off as a statement. A key is valid for a statement when its
//! registration sits before the statement in the log and no revocation of it does.

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::jcs::{canonicalize, parse_canonical};
use crate::keys::key_id;
use crate::merkle::{Hash, leaf_hash};
use crate::sig::{PayloadType, public_key_from_base64, public_key_to_base64, signing_bytes};

/// What a registered key may sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyRole {
    /// An approver's browser key (WebCrypto Ed25519), signs decision statements.
    Approver,
    /// A server seal key, counter-signs decision statements.
    Seal,
}

impl KeyRole {
    /// The role's name in JSON and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Approver => "approver",
            KeyRole::Seal => "seal",
        }
    }
}

/// A key registration entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRegistration {
    /// The key id (see [`crate::keys::key_id`]).
    pub key_id: String,
    /// The Ed25519 public key, standard base64.
    pub public_key: String,
    /// The account the key belongs to (an account id, never a personal name or ID number).
    pub owner: String,
    /// What the key may sign.
    pub role: KeyRole,
}

impl KeyRegistration {
    /// A registration for `key`, owned by `owner`, with `role`.
    pub fn new(key: &VerifyingKey, owner: &str, role: KeyRole) -> Self {
        Self {
            key_id: key_id(key),
            public_key: public_key_to_base64(key),
            owner: owner.to_string(),
            role,
        }
    }

    /// The public key, checked to be a strong key whose id is `key_id`.
    pub fn verifying_key(&self) -> Result<VerifyingKey, Error> {
        let key = public_key_from_base64(&self.public_key)?;
        if key_id(&key) != self.key_id {
            return Err(Error::Verification(format!(
                "key registration: key_id {} is not the id of its public key ({})",
                self.key_id,
                key_id(&key)
            )));
        }
        Ok(key)
    }
}

/// A key revocation entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRevocation {
    /// The revoked key's id.
    pub key_id: String,
    /// Why, in a few words (no personal data).
    pub reason: String,
}

/// One entry of the transparency log.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogEntry {
    /// A decision statement: its canonical bytes, exactly as in `esign/statement.json`.
    Statement(Vec<u8>),
    /// A key registration.
    KeyRegistration(KeyRegistration),
    /// A key revocation.
    KeyRevocation(KeyRevocation),
}

impl LogEntry {
    /// The entry's payload type.
    pub fn payload_type(&self) -> PayloadType {
        match self {
            LogEntry::Statement(_) => PayloadType::Statement,
            LogEntry::KeyRegistration(_) => PayloadType::KeyRegistration,
            LogEntry::KeyRevocation(_) => PayloadType::KeyRevocation,
        }
    }

    /// The entry's body: canonical JSON.
    pub fn body(&self) -> Result<Vec<u8>, Error> {
        match self {
            LogEntry::Statement(bytes) => {
                parse_canonical(bytes)?;
                Ok(bytes.clone())
            }
            LogEntry::KeyRegistration(r) => to_canonical(r),
            LogEntry::KeyRevocation(r) => to_canonical(r),
        }
    }

    /// The entry's bytes in the log: `PAE(payload type, body)`.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        Ok(signing_bytes(self.payload_type(), &self.body()?))
    }

    /// The RFC 6962 leaf hash of the entry.
    pub fn leaf_hash(&self) -> Result<Hash, Error> {
        Ok(leaf_hash(&self.encode()?))
    }

    /// Parses entry bytes as written by [`LogEntry::encode`], strictly.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let bad = |why: &str| Error::malformed("log entry", why.to_string());
        let rest = bytes
            .strip_prefix(b"DSSEv1 ")
            .ok_or_else(|| bad("no DSSEv1 prefix"))?;
        let (type_len, rest) = split_decimal(rest).ok_or_else(|| bad("bad type length"))?;
        if rest.len() <= type_len || rest[type_len] != b' ' {
            return Err(bad("truncated payload type"));
        }
        let (payload_type, rest) = (&rest[..type_len], &rest[type_len + 1..]);
        let (body_len, body) = split_decimal(rest).ok_or_else(|| bad("bad body length"))?;
        if body.len() != body_len {
            return Err(bad("body length does not match"));
        }
        let value = parse_canonical(body)?;
        let entry = match payload_type {
            t if t == PayloadType::Statement.as_str().as_bytes() => {
                LogEntry::Statement(body.to_vec())
            }
            t if t == PayloadType::KeyRegistration.as_str().as_bytes() => {
                LogEntry::KeyRegistration(
                    serde_json::from_value(value).map_err(|e| bad(&e.to_string()))?,
                )
            }
            t if t == PayloadType::KeyRevocation.as_str().as_bytes() => LogEntry::KeyRevocation(
                serde_json::from_value(value).map_err(|e| bad(&e.to_string()))?,
            ),
            _ => return Err(bad("unknown payload type")),
        };
        Ok(entry)
    }
}

/// Splits `"<decimal> rest"`; refuses leading zeros and empty numbers.
fn split_decimal(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let space = bytes.iter().position(|&b| b == b' ')?;
    let digits = &bytes[..space];
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits[0] == b'0')
    {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((n, &bytes[space + 1..]))
}

/// Serializes a value as canonical JSON.
pub(crate) fn to_canonical<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    let value = serde_json::to_value(value).map_err(|e| Error::NonCanonicalJson(e.to_string()))?;
    canonicalize(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn registration() -> KeyRegistration {
        let key = SigningKey::from_bytes(&[3; 32]).verifying_key();
        KeyRegistration::new(&key, "account:42", KeyRole::Approver)
    }

    #[test]
    fn entries_round_trip_through_their_log_bytes() {
        for entry in [
            LogEntry::Statement(b"{\"a\":1}".to_vec()),
            LogEntry::KeyRegistration(registration()),
            LogEntry::KeyRevocation(KeyRevocation {
                key_id: registration().key_id,
                reason: "device lost".into(),
            }),
        ] {
            assert_eq!(LogEntry::decode(&entry.encode().unwrap()).unwrap(), entry);
        }
    }

    #[test]
    fn the_same_body_as_a_different_kind_has_a_different_leaf() {
        let body = b"{\"key_id\":\"x\",\"reason\":\"y\"}".to_vec();
        let as_statement = LogEntry::Statement(body.clone()).leaf_hash().unwrap();
        let as_revocation = LogEntry::KeyRevocation(KeyRevocation {
            key_id: "x".into(),
            reason: "y".into(),
        })
        .leaf_hash()
        .unwrap();
        assert_ne!(as_statement, as_revocation);
    }

    #[test]
    fn a_registration_whose_key_id_lies_is_refused() {
        let mut r = registration();
        r.key_id = "ed25519:0000000000000000".into();
        assert!(r.verifying_key().is_err());
        assert!(registration().verifying_key().is_ok());
    }

    #[test]
    fn huge_declared_lengths_are_refused_without_overflow() {
        let input = b"DSSEv1 18446744073709551615 x 0 ";
        assert!(LogEntry::decode(input).is_err());
        let input = b"DSSEv1 1 x 18446744073709551615 {}";
        assert!(LogEntry::decode(input).is_err());
    }

    #[test]
    fn a_non_canonical_statement_cannot_enter_the_log() {
        assert!(LogEntry::Statement(b"{ }".to_vec()).leaf_hash().is_err());
    }
}
