//! The case archive: its file formats, and the packer the server calls to write one.
//!
//! Owns the archive layout (see docs/archive-format.md): a BagIt 1.0 bag in a zip of stored entries,
//! with `esign/` holding the statement, the signatures, the log proof and the keys. The packer streams
//! payload files (hashing while writing, so a 1 GiB recording never sits in memory) and is a chain of
//! states: [`ArchiveWriter`] → [`PendingArchive`] (statement built, waiting for the approver's
//! browser signature) → [`SealedArchive`] (sealed, waiting for the log) → finished writer.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, Write};

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::Error;
use crate::entry::{KeyRegistration, KeyRevocation, LogEntry, to_canonical};
use crate::jcs::canonicalize;
use crate::keys::{SealKey, key_id};
use crate::log::SignedCheckpoint;
use crate::merkle::{Hash, verify_inclusion};
use crate::sig::{self, PayloadType};

/// The statement format version written and accepted.
pub const STATEMENT_VERSION: u64 = 1;
/// `bagit.txt`, exactly.
pub const BAGIT_TXT: &str = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n";
/// Entry names with a fixed meaning.
pub mod names {
    /// The bag declaration.
    pub const BAGIT: &str = "bagit.txt";
    /// The bag metadata.
    pub const BAG_INFO: &str = "bag-info.txt";
    /// The payload manifest.
    pub const MANIFEST: &str = "manifest-sha256.txt";
    /// The tag manifest.
    pub const TAG_MANIFEST: &str = "tagmanifest-sha256.txt";
    /// The decision, canonical JSON, identical to the statement's `decision`.
    pub const DECISION: &str = "data/decision.json";
    /// The statement.
    pub const STATEMENT: &str = "esign/statement.json";
    /// The approver's signature.
    pub const APPROVER_SIG: &str = "esign/approver.sig";
    /// The server seal signature.
    pub const SEAL_SIG: &str = "esign/seal.sig";
    /// The statement's inclusion proof and the signed checkpoint.
    pub const PROOF: &str = "esign/proof";
    /// The public keys and their registration proofs.
    pub const KEYS: &str = "esign/keys";
    /// The folder of a continuation's earlier statements, as receipts, oldest first.
    pub const PREVIOUS: &str = "data/previous/";

    /// The path of the `n`-th (1-based) earlier statement's receipt in a continuation.
    pub fn previous(n: usize) -> String {
        format!("{PREVIOUS}{n:03}.json")
    }
}

/// One payload file as the statement lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    /// Path inside the bag, beginning `data/`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// Who signs a statement: key ids of the approver's key and of the seal key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signers {
    /// Key id of the approver's browser key; null for a continuation, which the server seals alone.
    pub approver: Option<String>,
    /// Key id of the server seal key.
    pub seal: String,
}

/// The decision statement: what the approver and the seal sign and what the log records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Always [`STATEMENT_VERSION`].
    pub version: u64,
    /// The case id.
    pub case_id: String,
    /// SHA-256 (hex) of `tagmanifest-sha256.txt`, which pins bagit.txt, bag-info.txt and the manifest.
    pub tagmanifest_sha256: String,
    /// Every payload file, sorted by path.
    pub files: Vec<FileDigest>,
    /// The decision (integers only), identical to `data/decision.json`.
    pub decision: Value,
    /// Key ids of the signers.
    pub signers: Signers,
    /// SHA-256 (hex) of the previous statement of this case, or null for the first.
    pub previous_statement: Option<String>,
    /// What happened after the decision (issuing, the rating, a follow-up): present exactly in a
    /// continuation, which has no approver signer and always names its previous statement. Absent
    /// (not null) in a decision statement, so decision statements keep their original form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Value>,
}

impl Statement {
    /// Checks the rule that ties signers, update and previous statement together.
    pub fn check_kind(&self) -> Result<(), String> {
        match (&self.signers.approver, &self.update) {
            (Some(_), None) => Ok(()),
            (None, Some(update)) if update.is_object() => {
                if self.previous_statement.is_some() {
                    Ok(())
                } else {
                    Err("a continuation (no approver signer) must name its previous_statement".into())
                }
            }
            (None, Some(_)) => Err("update must be an object".into()),
            (Some(_), Some(_)) => {
                Err("a statement signed by an approver carries no update; updates are continuations".into())
            }
            (None, None) => Err("signers.approver is null but there is no update: only a continuation is sealed by the server alone".into()),
        }
    }

    /// True for a continuation: sealed by the server alone, after the decision.
    pub fn is_continuation(&self) -> bool {
        self.signers.approver.is_none()
    }
}

/// Where an entry sits in the log, with its inclusion proof at the archive's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogProof {
    /// The entry's index in the log.
    pub log_index: u64,
    /// The inclusion proof hashes, standard base64, from the leaf upward.
    pub inclusion: Vec<String>,
}

impl LogProof {
    /// A proof for the entry at `log_index`.
    pub fn new(log_index: u64, inclusion: &[Hash]) -> Self {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        Self {
            log_index,
            inclusion: inclusion.iter().map(|h| b64.encode(h)).collect(),
        }
    }

    /// The proof hashes, decoded strictly.
    pub fn hashes(&self) -> Result<Vec<Hash>, Error> {
        self.inclusion
            .iter()
            .map(|h| {
                sig::decode_base64(h, "inclusion proof hash")?
                    .try_into()
                    .map_err(|_| Error::malformed("inclusion proof hash", "not 32 bytes"))
            })
            .collect()
    }
}

/// `esign/proof`: the statement's place in the log and the signed checkpoint it is proven against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofFile {
    /// The signed checkpoint note (C2SP signed-note text).
    pub checkpoint: String,
    /// The statement entry's index and inclusion proof.
    pub statement: LogProof,
}

/// A revocation of a key, with its place in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationEvidence {
    /// The revocation entry.
    pub entry: KeyRevocation,
    /// Its index and inclusion proof.
    pub revoked: LogProof,
}

/// A public key with the proof of its registration (and of its revocation, if the log has one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEvidence {
    /// The registration entry.
    pub registration: KeyRegistration,
    /// Its index and inclusion proof.
    pub registered: LogProof,
    /// The key's revocation entry, when the log holds one at the checkpoint.
    pub revocation: Option<RevocationEvidence>,
}

/// `esign/keys`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    /// The keys, sorted by key id.
    pub keys: Vec<KeyEvidence>,
}

/// What the log gave back for a sealed statement: everything `esign/proof` and `esign/keys` hold.
#[derive(Clone, Debug)]
pub struct LogEvidence {
    /// A checkpoint that includes the statement.
    pub checkpoint: SignedCheckpoint,
    /// The statement's index and inclusion proof at that checkpoint.
    pub statement: LogProof,
    /// The approver's and the seal key's evidence, proven at the same checkpoint.
    pub keys: Vec<KeyEvidence>,
}

/// Checks an entry name: relative, `/`-separated, no `.`/`..`/empty parts, portable characters.
pub fn check_entry_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 512 {
        return Err(format!("{name:?}: empty or longer than 512 bytes"));
    }
    if name.starts_with('/') || name.contains('\\') || name.contains(':') {
        return Err(format!(
            "{name:?}: absolute path, backslash or drive letter"
        ));
    }
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!("{name:?}: empty, '.' or '..' path component"));
        }
        if part.starts_with(' ') || part.ends_with(' ') || part.ends_with('.') {
            return Err(format!(
                "{name:?}: component begins or ends with a space or dot"
            ));
        }
        if !part
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ' | '(' | ')' | '+'))
        {
            return Err(format!(
                "{name:?}: only letters, digits, space and . - _ ( ) + are allowed"
            ));
        }
    }
    Ok(())
}

/// Checks a case id: 1–128 characters of `A-Z a-z 0-9 . _ -`.
pub fn check_case_id(case_id: &str) -> Result<(), Error> {
    let ok = !case_id.is_empty()
        && case_id.len() <= 128
        && case_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Misuse(format!(
            "case id {case_id:?} must be 1-128 of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// The lines of a sha256 manifest: `<hex>  <path>\n`, sorted by path.
pub(crate) fn manifest_text<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut sorted: Vec<(&str, &str)> = entries.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    sorted
        .into_iter()
        .map(|(path, digest)| format!("{digest}  {path}\n"))
        .collect()
}

/// `bag-info.txt` for these payload totals.
pub(crate) fn bag_info_text(
    case_id: &str,
    bagging_date: &str,
    octets: u64,
    files: usize,
) -> String {
    format!(
        "Bag-Software-Agent: cloudhelp-esign/{}\nBagging-Date: {bagging_date}\nExternal-Identifier: {case_id}\nPayload-Oxum: {octets}.{files}\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// True for `YYYY-MM-DD` shaped text.
fn is_date(text: &str) -> bool {
    text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
}

/// True for 64 lowercase hex digits.
pub(crate) fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes the payload of a case archive. The first state of the packer.
pub struct ArchiveWriter<W: Write + Seek> {
    zip: ZipWriter<W>,
    case_id: String,
    files: BTreeMap<String, FileDigest>,
    folded_names: BTreeSet<String>,
}

/// What the statement needs besides the payload files.
#[derive(Clone, Debug)]
pub struct PayloadSummary {
    /// The decision (integers only); also written as `data/decision.json`.
    pub decision: Value,
    /// Key ids of the approver's key and the seal key that will sign.
    pub signers: Signers,
    /// SHA-256 (hex) of the previous statement of the case, if any.
    pub previous_statement: Option<String>,
    /// What happened after the decision, for a continuation (`signers.approver` is then None).
    pub update: Option<Value>,
    /// The bagging date, `YYYY-MM-DD` (time is an argument, never read from a clock here).
    pub bagging_date: String,
}

fn stored() -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .unix_permissions(0o644)
        .last_modified_time(zip::DateTime::default())
        .large_file(false)
}

fn zip_err(e: zip::result::ZipError) -> Error {
    Error::Zip(e.to_string())
}

impl<W: Write + Seek> ArchiveWriter<W> {
    /// Starts an archive for `case_id` on `out` (a file, usually).
    pub fn new(out: W, case_id: &str) -> Result<Self, Error> {
        check_case_id(case_id)?;
        let mut writer = Self {
            zip: ZipWriter::new(out),
            case_id: case_id.to_string(),
            files: BTreeMap::new(),
            folded_names: BTreeSet::new(),
        };
        writer.put(names::BAGIT, BAGIT_TXT.as_bytes())?;
        Ok(writer)
    }

    /// Streams one payload file of `size` bytes from `reader` into the archive at `path` (which
    /// begins `data/`), hashing it on the way; returns its digest. Only a file of 4 GiB − 1 or more
    /// gets a zip64 entry, so that older archive tools read every other; a stream that ends at
    /// another length than `size` is refused.
    pub fn add_file(
        &mut self,
        path: &str,
        reader: &mut dyn Read,
        size: u64,
    ) -> Result<FileDigest, Error> {
        if !path.starts_with("data/") || path == names::DECISION {
            return Err(Error::Misuse(format!(
                "payload path {path:?} must begin data/ and not be {}",
                names::DECISION
            )));
        }
        let digest = self.add_payload(path, reader, size >= u64::from(u32::MAX))?;
        if digest.size != size {
            return Err(Error::Misuse(format!(
                "{path}: the stream held {} bytes, not the {size} declared",
                digest.size
            )));
        }
        Ok(digest)
    }

    /// Adds one payload file from memory (events.jsonl, call-quality.json).
    pub fn add_bytes(&mut self, path: &str, bytes: &[u8]) -> Result<FileDigest, Error> {
        if !path.starts_with("data/") || path == names::DECISION {
            return Err(Error::Misuse(format!(
                "payload path {path:?} must begin data/ and not be {}",
                names::DECISION
            )));
        }
        if bytes.len() as u64 >= u64::from(u32::MAX) {
            return self.add_payload(path, &mut &bytes[..], true);
        }
        self.add_payload(path, &mut &bytes[..], false)
    }

    fn add_payload(
        &mut self,
        path: &str,
        reader: &mut dyn Read,
        zip64: bool,
    ) -> Result<FileDigest, Error> {
        self.claim(path)?;
        let options = stored().large_file(zip64);
        self.zip.start_file(path, options).map_err(zip_err)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::stream(format!("reading {path}"), e)),
            };
            hasher.update(&buf[..n]);
            self.zip
                .write_all(&buf[..n])
                .map_err(|e| Error::stream(format!("writing {path}"), e))?;
            size += n as u64;
        }
        if size > crate::jcs::MAX_SAFE_INTEGER {
            return Err(Error::Misuse(format!("{path} is larger than 2^53 bytes")));
        }
        let digest = FileDigest {
            path: path.to_string(),
            size,
            sha256: hex::encode(hasher.finalize()),
        };
        self.files.insert(path.to_string(), digest.clone());
        Ok(digest)
    }

    /// Refuses unsafe names and names that collide (also when folded to lower case).
    fn claim(&mut self, path: &str) -> Result<(), Error> {
        check_entry_name(path).map_err(Error::Misuse)?;
        if !self.folded_names.insert(path.to_lowercase()) {
            return Err(Error::Misuse(format!("{path:?} is already in the archive")));
        }
        Ok(())
    }

    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        self.claim(name)?;
        self.zip.start_file(name, stored()).map_err(zip_err)?;
        self.zip
            .write_all(bytes)
            .map_err(|e| Error::stream(format!("writing {name}"), e))
    }

    /// Writes `data/decision.json`, the manifests and `bag-info.txt`, and builds the statement.
    pub fn finish_payload(mut self, summary: PayloadSummary) -> Result<PendingArchive<W>, Error> {
        if !is_date(&summary.bagging_date) {
            return Err(Error::Misuse("bagging date must be YYYY-MM-DD".into()));
        }
        if let Some(previous) = &summary.previous_statement
            && !is_sha256_hex(previous)
        {
            return Err(Error::Misuse(
                "previous statement must be 64 lowercase hex digits".into(),
            ));
        }
        let decision_bytes = canonicalize(&summary.decision)?;
        self.add_payload(names::DECISION, &mut &decision_bytes[..], false)?;
        let files: Vec<FileDigest> = self.files.values().cloned().collect();
        let manifest = manifest_text(files.iter().map(|f| (f.path.as_str(), f.sha256.as_str())));
        let octets = files.iter().map(|f| f.size).sum();
        let bag_info = bag_info_text(&self.case_id, &summary.bagging_date, octets, files.len());
        let bagit_digest = sha256_hex(BAGIT_TXT.as_bytes());
        let info_digest = sha256_hex(bag_info.as_bytes());
        let manifest_digest = sha256_hex(manifest.as_bytes());
        let tag_manifest = manifest_text([
            (names::BAGIT, bagit_digest.as_str()),
            (names::BAG_INFO, info_digest.as_str()),
            (names::MANIFEST, manifest_digest.as_str()),
        ]);
        self.put(names::BAG_INFO, bag_info.as_bytes())?;
        self.put(names::MANIFEST, manifest.as_bytes())?;
        self.put(names::TAG_MANIFEST, tag_manifest.as_bytes())?;
        let statement = Statement {
            version: STATEMENT_VERSION,
            case_id: self.case_id.clone(),
            tagmanifest_sha256: sha256_hex(tag_manifest.as_bytes()),
            files,
            decision: summary.decision,
            signers: summary.signers,
            previous_statement: summary.previous_statement,
            update: summary.update,
        };
        statement.check_kind().map_err(Error::Misuse)?;
        let statement_bytes = to_canonical(&statement)?;
        Ok(PendingArchive {
            zip: self.zip,
            statement,
            statement_bytes,
        })
    }
}

/// An archive whose statement is built and waits for the approver's signature.
pub struct PendingArchive<W: Write + Seek> {
    zip: ZipWriter<W>,
    statement: Statement,
    statement_bytes: Vec<u8>,
}

impl<W: Write + Seek> PendingArchive<W> {
    /// The statement.
    pub fn statement(&self) -> &Statement {
        &self.statement
    }

    /// The statement's canonical bytes (`esign/statement.json`).
    pub fn statement_bytes(&self) -> &[u8] {
        &self.statement_bytes
    }

    /// The bytes the approver's browser signs: `PAE(statement type, statement bytes)`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        sig::signing_bytes(PayloadType::Statement, &self.statement_bytes)
    }

    /// Checks the approver's signature (verify_strict) and counter-signs with the seal key.
    pub fn seal(
        self,
        approver_signature: &Signature,
        approver_key: &VerifyingKey,
        seal_key: &SealKey,
    ) -> Result<SealedArchive<W>, Error> {
        let signer = self.statement.signers.approver.as_deref();
        if signer != Some(key_id(approver_key).as_str()) {
            return Err(Error::Misuse(format!(
                "approver key {} is not the statement's signer {signer:?}",
                key_id(approver_key),
            )));
        }
        sig::verify(
            approver_key,
            PayloadType::Statement,
            &self.statement_bytes,
            approver_signature,
        )?;
        self.counter_sign(Some(*approver_signature), seal_key)
    }

    /// Seals a continuation with the seal key alone (its statement has no approver signer).
    pub fn seal_continuation(self, seal_key: &SealKey) -> Result<SealedArchive<W>, Error> {
        if !self.statement.is_continuation() {
            return Err(Error::Misuse(
                "a statement with an approver signer needs the approver's signature".into(),
            ));
        }
        self.counter_sign(None, seal_key)
    }

    fn counter_sign(
        self,
        approver_signature: Option<Signature>,
        seal_key: &SealKey,
    ) -> Result<SealedArchive<W>, Error> {
        if seal_key.key_id() != self.statement.signers.seal {
            return Err(Error::Misuse(format!(
                "seal key {} is not the statement's seal {}",
                seal_key.key_id(),
                self.statement.signers.seal
            )));
        }
        let seal_signature = sig::sign(
            seal_key.signing_key(),
            PayloadType::Statement,
            &self.statement_bytes,
        );
        Ok(SealedArchive {
            pending: self,
            approver_signature,
            seal_signature,
        })
    }
}

/// A sealed archive that waits for its statement to enter the log.
pub struct SealedArchive<W: Write + Seek> {
    pending: PendingArchive<W>,
    approver_signature: Option<Signature>,
    seal_signature: Signature,
}

impl<W: Write + Seek> SealedArchive<W> {
    /// The log entry to append for this statement.
    pub fn log_entry(&self) -> LogEntry {
        LogEntry::Statement(self.pending.statement_bytes.clone())
    }

    /// The statement.
    pub fn statement(&self) -> &Statement {
        &self.pending.statement
    }

    /// SHA-256 (hex) of the statement bytes: the next statement of the case names it as previous.
    pub fn statement_sha256(&self) -> String {
        sha256_hex(&self.pending.statement_bytes)
    }

    /// Writes `esign/` from the log's evidence and closes the zip; returns the writer.
    ///
    /// The evidence is checked first (the statement's inclusion at the checkpoint, both signers'
    /// keys present), so a server bug cannot produce an archive that fails verification silently.
    pub fn finish(self, evidence: LogEvidence) -> Result<W, Error> {
        let checkpoint = &evidence.checkpoint.checkpoint;
        let leaf = self.log_entry().leaf_hash()?;
        verify_inclusion(
            evidence.statement.log_index,
            checkpoint.size,
            &leaf,
            &evidence.statement.hashes()?,
            &checkpoint.root,
        )?;
        let signers = &self.pending.statement.signers;
        for wanted in signers.approver.iter().chain([&signers.seal]) {
            if !evidence
                .keys
                .iter()
                .any(|k| &k.registration.key_id == wanted)
            {
                return Err(Error::Misuse(format!("no key evidence for {wanted}")));
            }
        }
        let mut keys = evidence.keys;
        keys.sort_by(|a, b| a.registration.key_id.cmp(&b.registration.key_id));
        let proof = ProofFile {
            checkpoint: evidence.checkpoint.note,
            statement: evidence.statement,
        };
        let PendingArchive {
            mut zip,
            statement_bytes,
            ..
        } = self.pending;
        let approver_sig = self
            .approver_signature
            .map(|s| (names::APPROVER_SIG, sig::signature_to_file(&s)));
        let files = [(names::STATEMENT, statement_bytes)]
            .into_iter()
            .chain(approver_sig)
            .chain([
                (
                    names::SEAL_SIG,
                    sig::signature_to_file(&self.seal_signature),
                ),
                (names::PROOF, to_canonical(&proof)?),
                (names::KEYS, to_canonical(&KeysFile { keys })?),
            ]);
        for (name, bytes) in files {
            zip.start_file(name, stored()).map_err(zip_err)?;
            zip.write_all(&bytes)
                .map_err(|e| Error::stream(format!("writing {name}"), e))?;
        }
        zip.finish().map_err(zip_err)
    }
}
