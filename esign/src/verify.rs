//! The offline verifier: archive + trust file in, a deterministic report out.
//!
//! Owns what an auditor's "valid" means. It trusts nothing in the archive but what it recomputes:
//! leaves are hashed from the archive's own statement and key entries, digests from the bytes, and
//! the only outside input is the pinned log key(s) in [`Trust`]. Every check is listed in a fixed
//! order with a reason naming the file or field; a check whose inputs failed earlier is not run, and
//! the failure that stopped it is in the report, so a report that stops early never passes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::archive::{
    BAGIT_TXT, FileDigest, KeyEvidence, KeysFile, LogProof, ProofFile, STATEMENT_VERSION,
    Statement, check_case_id, check_entry_name, is_sha256_hex, names, sha256_hex,
};
use crate::entry::{KeyRole, LogEntry, to_canonical};
use crate::jcs::{canonicalize, parse_canonical};
use crate::merkle::verify_inclusion;
use crate::note::{Checkpoint, NoteVerifier, open_checkpoint};
use crate::sig::{self, PayloadType};
pub use crate::zipread::Limits;
use crate::zipread::{ZipEntry, read_directory, stream_entry};

/// What the auditor trusts: the log's public key(s), in signed-note verifier key form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    log_keys: Vec<NoteVerifier>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    log_keys: Vec<String>,
}

impl Trust {
    /// Trusts checkpoints signed by any of `log_keys` (more than one while a log key is rotated).
    pub fn new(log_keys: Vec<NoteVerifier>) -> Self {
        Self { log_keys }
    }

    /// Parses a trust file: `{"log_keys":["<name>+<hash>+<key>", ...]}`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        let file: TrustFile = serde_json::from_slice(bytes)
            .map_err(|e| Error::malformed("trust file", e.to_string()))?;
        if file.log_keys.is_empty() {
            return Err(Error::malformed("trust file", "log_keys is empty"));
        }
        let log_keys = file
            .log_keys
            .iter()
            .map(|k| NoteVerifier::parse(k))
            .collect::<Result<_, _>>()?;
        Ok(Self { log_keys })
    }

    /// Reads a trust file from disk.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&bytes)
    }

    /// The trust file's JSON text.
    pub fn to_json(&self) -> String {
        let file = TrustFile {
            log_keys: self.log_keys.iter().map(ToString::to_string).collect(),
        };
        // Serializing a struct of strings cannot fail.
        serde_json::to_string_pretty(&file).unwrap_or_default() + "\n"
    }

    /// The trusted log keys.
    pub fn log_keys(&self) -> &[NoteVerifier] {
        &self.log_keys
    }
}

/// One check of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// A stable name, e.g. `bag.payload_manifest`.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was found, naming the file or field.
    pub detail: String,
}

/// The verifier's report: every check run, in a fixed order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// True only when at least one check ran and every check passed.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// The check named `name`, if it ran.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The report as JSON (for `--json`): `{"valid": bool, "checks": [{name, passed, detail}]}`.
    pub fn to_json(&self) -> String {
        let value = serde_json::json!({ "valid": self.passed(), "checks": self.checks });
        // Serializing strings and booleans cannot fail.
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }
}

/// Whether `c` changes the direction of the text around it (marks, embeddings, overrides,
/// isolates): invisible, and able to make `exe.txt` of `txt.exe` on screen.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// Text for a terminal: control characters (C0, DEL, C1) and bidirectional overrides, which an
/// archive's fields could carry to recolour, retitle or reorder what the auditor reads, are shown
/// as `\u{..}` escapes instead.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || is_bidi_control(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.checks {
            let mark = if c.passed { "PASS" } else { "FAIL" };
            writeln!(
                f,
                "{mark}  {:<34} {}",
                printable(&c.name),
                printable(&c.detail)
            )?;
        }
        let verdict = if self.passed() { "VALID" } else { "INVALID" };
        writeln!(f, "{verdict}")
    }
}

/// Receipts are small: at most the five signed files, each within the tag file limit.
const RECEIPT_LIMIT: u64 = 5 * crate::zipread::DEFAULT_MAX_TAG_FILE_BYTES + 4096;

/// Verifies the archive or receipt at `path`.
pub fn verify_file(path: &Path, trust: &Trust) -> Report {
    let opened = std::fs::File::open(path).and_then(|mut file| {
        let mut first = [0u8; 16];
        let n = file.read(&mut first)?;
        file.rewind()?;
        Ok((file, is_receipt(&first[..n])))
    });
    match opened {
        Ok((mut file, true)) => {
            let mut bytes = Vec::new();
            match (&mut file).take(RECEIPT_LIMIT + 1).read_to_end(&mut bytes) {
                Ok(_) if bytes.len() as u64 <= RECEIPT_LIMIT => verify_receipt(&bytes, trust),
                Ok(_) => Report {
                    checks: vec![Check {
                        name: "receipt.format".into(),
                        passed: false,
                        detail: format!("{}: larger than a receipt can be", path.display()),
                    }],
                },
                Err(e) => Report {
                    checks: vec![Check {
                        name: "archive.open".into(),
                        passed: false,
                        detail: format!("{}: {e}", path.display()),
                    }],
                },
            }
        }
        Ok((file, false)) => verify(std::io::BufReader::new(file), trust),
        Err(e) => Report {
            checks: vec![Check {
                name: "archive.open".into(),
                passed: false,
                detail: format!("{}: {e}", path.display()),
            }],
        },
    }
}

/// Verifies an archive read from `reader`, with the default [`Limits`].
pub fn verify<R: Read + Seek>(reader: R, trust: &Trust) -> Report {
    verify_with_limits(reader, trust, &Limits::default())
}

/// Verifies an archive read from `reader`, with explicit limits.
pub fn verify_with_limits<R: Read + Seek>(mut reader: R, trust: &Trust, limits: &Limits) -> Report {
    let mut v = Verifier { checks: Vec::new() };
    // Every step returns None when a check failed that later steps depend on.
    let _ = v.run(&mut reader, trust, limits);
    Report { checks: v.checks }
}

struct Verifier {
    checks: Vec<Check>,
}

/// What the archive holds after reading: payload digests, and tag/esign files in memory.
struct Contents {
    payload: BTreeMap<String, FileDigest>,
    tags: BTreeMap<String, Vec<u8>>,
}

/// Every check the verifier can report, in the order it runs them (an archive or a receipt runs a
/// subset). Readers that name checks in plain words (the auditor's page) keep this list.
pub const CHECK_NAMES: &[&str] = &[
    "archive.open",
    "receipt.format",
    "zip.container",
    "zip.entry_names",
    "bag.entries",
    "zip.contents",
    "bag.declaration",
    "bag.payload_manifest",
    "bag.tag_manifest",
    "statement.canonical",
    "bag.info",
    "statement.tag_manifest_digest",
    "statement.files",
    "statement.decision",
    "keys.file",
    "keys.approver",
    "statement.continuation",
    "keys.seal",
    "signature.approver",
    "signature.seal",
    "log.checkpoint",
    "log.statement_inclusion",
    "log.approver_key_registered",
    "log.approver_key_not_revoked",
    "log.seal_key_registered",
    "log.seal_key_not_revoked",
    "chain.previous",
    "chain.files",
];

impl Verifier {
    /// Records a check; returns the value on success, None on failure.
    fn check<T>(&mut self, name: &str, result: Result<(T, String), String>) -> Option<T> {
        debug_assert!(CHECK_NAMES.contains(&name), "{name} is not in CHECK_NAMES");
        let (value, passed, detail) = match result {
            Ok((value, detail)) => (Some(value), true, detail),
            Err(detail) => (None, false, detail),
        };
        self.checks.push(Check {
            name: name.to_string(),
            passed,
            detail,
        });
        value
    }

    fn run<R: Read + Seek>(&mut self, r: &mut R, trust: &Trust, limits: &Limits) -> Option<()> {
        let entries = self.check(
            "zip.container",
            read_directory(r, limits).map(|e| {
                let n = e.len();
                (
                    e,
                    format!("{n} stored entries; local and central headers agree"),
                )
            }),
        )?;
        self.check("zip.entry_names", entry_names(&entries))?;
        self.check("bag.entries", expected_entries(&entries))?;
        let contents = self.check("zip.contents", read_contents(r, &entries, limits))?;
        let tag = |name: &str| {
            contents
                .tags
                .get(name)
                .map(Vec::as_slice)
                .unwrap_or_default()
        };

        self.check(
            "bag.declaration",
            if tag(names::BAGIT) == BAGIT_TXT.as_bytes() {
                Ok(((), "bagit.txt declares BagIt 1.0, UTF-8".into()))
            } else {
                Err("bagit.txt is not the BagIt 1.0 declaration".into())
            },
        );
        self.check(
            "bag.payload_manifest",
            payload_manifest(tag(names::MANIFEST), &contents.payload),
        );
        self.check("bag.tag_manifest", tag_manifest(&contents));

        let statement_bytes = tag(names::STATEMENT);
        let statement = self.check("statement.canonical", parse_statement(statement_bytes))?;
        self.check(
            "bag.info",
            bag_info(tag(names::BAG_INFO), &statement, &contents),
        );
        let tag_digest = sha256_hex(tag(names::TAG_MANIFEST));
        self.check(
            "statement.tag_manifest_digest",
            if statement.tagmanifest_sha256 == tag_digest {
                Ok(((), format!("tagmanifest-sha256.txt has SHA-256 {tag_digest}")))
            } else {
                Err(format!(
                    "statement.tagmanifest_sha256 is {}, but tagmanifest-sha256.txt hashes to {tag_digest}",
                    statement.tagmanifest_sha256
                ))
            },
        );
        self.check(
            "statement.files",
            statement_files(&statement, &contents.payload),
        );
        self.check(
            "statement.decision",
            statement_decision(&statement, &contents),
        );
        let log_index = self.signed_and_logged(
            &statement,
            &SignedFiles {
                statement: statement_bytes,
                approver_sig: contents.tags.get(names::APPROVER_SIG).map(Vec::as_slice),
                seal_sig: tag(names::SEAL_SIG),
                proof: tag(names::PROOF),
                keys: tag(names::KEYS),
            },
            trust,
        )?;
        let own = Link::new(names::STATEMENT, statement, statement_bytes, log_index);
        self.check("chain.previous", embedded_chain(own, &contents, trust));
        Some(())
    }

    /// The checks an archive and a receipt share: both signatures (the seal's alone for a
    /// continuation) by keys valid in the log at the statement's position, and the statement's
    /// inclusion under a trusted checkpoint. Returns the statement's log index.
    fn signed_and_logged(
        &mut self,
        statement: &Statement,
        files: &SignedFiles<'_>,
        trust: &Trust,
    ) -> Option<u64> {
        let statement_bytes = files.statement;
        let keys = self.check("keys.file", parse_keys(files.keys))?;
        let approver = match &statement.signers.approver {
            Some(id) => self.check("keys.approver", find_key(&keys, id, KeyRole::Approver)),
            None => {
                self.check("statement.continuation", continuation(statement, files))?;
                None
            }
        };
        let seal = self.check(
            "keys.seal",
            find_key(&keys, &statement.signers.seal, KeyRole::Seal),
        );
        if let Some(key) = &approver {
            self.check(
                "signature.approver",
                signature(
                    key,
                    files.approver_sig.unwrap_or_default(),
                    statement_bytes,
                    names::APPROVER_SIG,
                ),
            );
        }
        if let Some(key) = &seal {
            self.check(
                "signature.seal",
                signature(key, files.seal_sig, statement_bytes, names::SEAL_SIG),
            );
        }

        let (proof, checkpoint) = self.check("log.checkpoint", checkpoint(files.proof, trust))?;
        let statement_index = proof.statement.log_index;
        self.check(
            "log.statement_inclusion",
            inclusion(
                &LogEntry::Statement(statement_bytes.to_vec()),
                &proof.statement,
                &checkpoint,
                names::STATEMENT,
            ),
        );
        for (role, key) in [("approver", approver), ("seal", seal)] {
            let Some(key) = key else { continue };
            self.check(
                &format!("log.{role}_key_registered"),
                registered_before(&key, statement_index, &checkpoint),
            );
            self.check(
                &format!("log.{role}_key_not_revoked"),
                not_revoked_before(&key, statement_index, &checkpoint),
            );
        }
        Some(statement_index)
    }

    /// Verifies a receipt; its statement as a link of its case's chain, named `name`.
    fn run_receipt(&mut self, name: &str, bytes: &[u8], trust: &Trust) -> Option<Link> {
        let receipt = self.check(
            "receipt.format",
            Receipt::parse(bytes).map(|r| {
                (
                    r,
                    "a cloudhelp receipt: the signed statement and its log evidence, no payload"
                        .to_string(),
                )
            }),
        )?;
        let files = receipt.files();
        let statement = self.check("statement.canonical", parse_statement(files.statement))?;
        let log_index = self.signed_and_logged(&statement, &files, trust)?;
        Some(Link::new(name, statement, files.statement, log_index))
    }
}

/// The signed files of an archive's `esign/` folder, wherever they were read from.
struct SignedFiles<'a> {
    statement: &'a [u8],
    /// Absent in a continuation.
    approver_sig: Option<&'a [u8]>,
    seal_sig: &'a [u8],
    proof: &'a [u8],
    keys: &'a [u8],
}

/// What a case's people other than its approver and auditors get instead of the archive: the
/// signed statement (file digests and the decision, no personal data) and its log evidence, the
/// exact bytes of the archive's `esign/` files. It proves that the decision was signed and logged;
/// the files themselves are only in the full archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Always [`Receipt::FORMAT`].
    pub format: String,
    /// `esign/statement.json`.
    pub statement: String,
    /// `esign/approver.sig`; absent for a continuation, which the server seals alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver_sig: Option<String>,
    /// `esign/seal.sig`.
    pub seal_sig: String,
    /// `esign/proof`.
    pub proof: String,
    /// `esign/keys`.
    pub keys: String,
}

impl Receipt {
    /// The value of `format`.
    pub const FORMAT: &'static str = "cloudhelp-receipt/1";

    /// The receipt of an archive (which should itself verify; this only copies its `esign/` files).
    pub fn from_archive<R: Read + Seek>(mut reader: R) -> Result<Receipt, Error> {
        let limits = Limits::default();
        let entries = read_directory(&mut reader, &limits).map_err(Error::Zip)?;
        let mut read = |name: &str| -> Result<Option<String>, Error> {
            let Some(entry) = entries.iter().find(|e| e.name == name) else {
                return Ok(None);
            };
            if entry.size > limits.max_tag_file_bytes {
                return Err(Error::Zip(format!("{name} is too large")));
            }
            let mut bytes = Vec::new();
            stream_entry(&mut reader, entry, |chunk| bytes.extend_from_slice(chunk))
                .map_err(Error::Zip)?;
            String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| Error::Zip(format!("{name} is not UTF-8")))
        };
        let mut required = |name: &str| -> Result<String, Error> {
            read(name)?.ok_or_else(|| Error::Zip(format!("{name} is missing")))
        };
        let statement = required(names::STATEMENT)?;
        let seal_sig = required(names::SEAL_SIG)?;
        let proof = required(names::PROOF)?;
        let keys = required(names::KEYS)?;
        Ok(Receipt {
            format: Receipt::FORMAT.to_string(),
            statement,
            approver_sig: read(names::APPROVER_SIG)?,
            seal_sig,
            proof,
            keys,
        })
    }

    /// The receipt in `path`, or the receipt of the archive in `path`.
    pub fn from_file(path: &Path) -> Result<Receipt, Error> {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut first = [0u8; 16];
        let n = file.read(&mut first).map_err(|e| Error::io(path, e))?;
        file.rewind().map_err(|e| Error::io(path, e))?;
        if is_receipt(&first[..n]) {
            let mut bytes = Vec::new();
            file.take(RECEIPT_LIMIT + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| Error::io(path, e))?;
            Receipt::parse(&bytes).map_err(|e| Error::malformed("receipt", e))
        } else {
            Receipt::from_archive(std::io::BufReader::new(file))
        }
    }

    fn parse(bytes: &[u8]) -> Result<Receipt, String> {
        let receipt: Receipt =
            serde_json::from_slice(bytes).map_err(|e| format!("not a cloudhelp receipt: {e}"))?;
        if receipt.format != Receipt::FORMAT {
            return Err(format!(
                "format is {:?}, expected {:?}",
                receipt.format,
                Receipt::FORMAT
            ));
        }
        Ok(receipt)
    }

    fn files(&self) -> SignedFiles<'_> {
        SignedFiles {
            statement: self.statement.as_bytes(),
            approver_sig: self.approver_sig.as_deref().map(str::as_bytes),
            seal_sig: self.seal_sig.as_bytes(),
            proof: self.proof.as_bytes(),
            keys: self.keys.as_bytes(),
        }
    }

    /// The receipt as pretty JSON, the form the server hands out.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Verifies a receipt (see [`Receipt`]): its statement, both signatures and its log evidence.
pub fn verify_receipt(bytes: &[u8], trust: &Trust) -> Report {
    let mut v = Verifier { checks: Vec::new() };
    let _ = v.run_receipt("receipt", bytes, trust);
    Report { checks: v.checks }
}

/// Receipts are JSON (they begin with `{`); archives are zip files (`PK`).
pub fn is_receipt(first_bytes: &[u8]) -> bool {
    first_bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{')
}

type CheckResult<T> = Result<(T, String), String>;

fn entry_names(entries: &[ZipEntry]) -> CheckResult<()> {
    let mut seen = BTreeSet::new();
    let mut folded = BTreeSet::new();
    for e in entries {
        check_entry_name(&e.name).map_err(|why| format!("unsafe entry name {why}"))?;
        if !seen.insert(e.name.as_str()) {
            return Err(format!("duplicate entry name {:?}", e.name));
        }
        if !folded.insert(e.name.to_lowercase()) {
            return Err(format!(
                "entry name {:?} differs from another only in case",
                e.name
            ));
        }
    }
    Ok(((), "all names relative, portable and unique".into()))
}

/// The files every archive has outside `data/` (a continuation has no `esign/approver.sig`).
const FIXED: [&str; 8] = [
    names::BAGIT,
    names::BAG_INFO,
    names::MANIFEST,
    names::TAG_MANIFEST,
    names::STATEMENT,
    names::SEAL_SIG,
    names::PROOF,
    names::KEYS,
];

fn expected_entries(entries: &[ZipEntry]) -> CheckResult<()> {
    let present: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    if let Some(extra) = present
        .iter()
        .find(|n| !n.starts_with("data/") && !FIXED.contains(n) && **n != names::APPROVER_SIG)
    {
        return Err(format!("unlisted entry {extra:?} outside data/"));
    }
    if let Some(missing) = FIXED
        .iter()
        .chain([&names::DECISION])
        .find(|n| !present.contains(*n))
    {
        return Err(format!("required entry {missing:?} is missing"));
    }
    Ok((
        (),
        "every entry outside data/ is a known bag or esign file".into(),
    ))
}

fn read_contents<R: Read + Seek>(
    r: &mut R,
    entries: &[ZipEntry],
    limits: &Limits,
) -> CheckResult<Contents> {
    let mut payload = BTreeMap::new();
    let mut tags = BTreeMap::new();
    for e in entries {
        let keep = !e.name.starts_with("data/")
            || e.name == names::DECISION
            || e.name.starts_with(names::PREVIOUS);
        if keep && e.size > limits.max_tag_file_bytes {
            return Err(format!(
                "{}: {} bytes is over the tag file limit of {}",
                e.name, e.size, limits.max_tag_file_bytes
            ));
        }
        let mut hasher = Sha256::new();
        let mut kept = Vec::new();
        stream_entry(r, e, |chunk| {
            hasher.update(chunk);
            if keep {
                kept.extend_from_slice(chunk);
            }
        })?;
        if e.name.starts_with("data/") {
            payload.insert(
                e.name.clone(),
                FileDigest {
                    path: e.name.clone(),
                    size: e.size,
                    sha256: hex::encode(hasher.finalize()),
                },
            );
        }
        if keep {
            tags.insert(e.name.clone(), kept);
        }
    }
    Ok((
        Contents { payload, tags },
        "every entry read; CRC-32 of each matches".into(),
    ))
}

/// Parses `<64 hex>  <path>\n` lines as the packer writes them (sorted, two spaces, no duplicates).
fn parse_manifest(file: &str, bytes: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{file} is not UTF-8"))?;
    let mut out = BTreeMap::new();
    let mut previous: Option<&str> = None;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bad = || format!("{file} line {}: not \"<sha256 hex>  <path>\\n\"", i + 1);
        let line = line.strip_suffix('\n').ok_or_else(bad)?;
        let (digest, path) = line.split_once("  ").ok_or_else(bad)?;
        if digest.len() != 64
            || !digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(bad());
        }
        if previous.is_some_and(|p| p >= path) {
            return Err(format!(
                "{file} line {}: {path:?} is out of order or repeated",
                i + 1
            ));
        }
        previous = Some(path);
        out.insert(path.to_string(), digest.to_string());
    }
    Ok(out)
}

fn payload_manifest(manifest: &[u8], payload: &BTreeMap<String, FileDigest>) -> CheckResult<()> {
    let listed = parse_manifest(names::MANIFEST, manifest)?;
    for (path, digest) in &listed {
        match payload.get(path) {
            None => {
                return Err(format!(
                    "{path} is listed in {} but not in the archive (removed or renamed)",
                    names::MANIFEST
                ));
            }
            Some(f) if &f.sha256 != digest => {
                return Err(format!(
                    "{path}: content changed (SHA-256 {} but the manifest says {digest})",
                    f.sha256
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = payload.keys().find(|p| !listed.contains_key(*p)) {
        return Err(format!(
            "{extra} is in the archive but not in {} (added or renamed)",
            names::MANIFEST
        ));
    }
    Ok((
        (),
        format!("{} payload files match {}", listed.len(), names::MANIFEST),
    ))
}

fn tag_manifest(contents: &Contents) -> CheckResult<()> {
    let bytes = contents
        .tags
        .get(names::TAG_MANIFEST)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let listed = parse_manifest(names::TAG_MANIFEST, bytes)?;
    let want: BTreeSet<&str> = [names::BAGIT, names::BAG_INFO, names::MANIFEST].into();
    let got: BTreeSet<&str> = listed.keys().map(String::as_str).collect();
    if got != want {
        return Err(format!(
            "{} lists {got:?}, want exactly {want:?}",
            names::TAG_MANIFEST
        ));
    }
    for (path, digest) in &listed {
        let actual = sha256_hex(
            contents
                .tags
                .get(path)
                .map(Vec::as_slice)
                .unwrap_or_default(),
        );
        if &actual != digest {
            return Err(format!(
                "{path}: content changed (SHA-256 {actual} but {} says {digest})",
                names::TAG_MANIFEST
            ));
        }
    }
    Ok((
        (),
        "bagit.txt, bag-info.txt and manifest-sha256.txt match".into(),
    ))
}

fn parse_statement(bytes: &[u8]) -> CheckResult<Statement> {
    let file = names::STATEMENT;
    let value = parse_canonical(bytes).map_err(|e| format!("{file}: {e}"))?;
    let statement: Statement = serde_json::from_value(value).map_err(|e| format!("{file}: {e}"))?;
    // Missing optional fields would deserialize as null: only the exact bytes are acceptable.
    if to_canonical(&statement).map_err(|e| format!("{file}: {e}"))? != bytes {
        return Err(format!(
            "{file}: a field is missing or not of the statement form"
        ));
    }
    if statement.version != STATEMENT_VERSION {
        return Err(format!(
            "{file}: version {} is not {STATEMENT_VERSION}",
            statement.version
        ));
    }
    check_case_id(&statement.case_id).map_err(|e| format!("{file}: case_id: {e}"))?;
    if !is_sha256_hex(&statement.tagmanifest_sha256) {
        return Err(format!(
            "{file}: tagmanifest_sha256 is not 64 lowercase hex digits"
        ));
    }
    if let Some(previous) = statement
        .previous_statement
        .as_deref()
        .filter(|p| !is_sha256_hex(p))
    {
        return Err(format!(
            "{file}: previous_statement {previous:?} is not 64 lowercase hex digits"
        ));
    }
    statement.check_kind().map_err(|e| format!("{file}: {e}"))?;
    let detail = format!("{file} is RFC 8785 canonical; case {}", statement.case_id);
    Ok((statement, detail))
}

fn bag_info(bytes: &[u8], statement: &Statement, contents: &Contents) -> CheckResult<()> {
    let file = names::BAG_INFO;
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{file} is not UTF-8"))?;
    let mut fields = BTreeMap::new();
    for line in text.split_inclusive('\n') {
        let (label, value) = line
            .strip_suffix('\n')
            .and_then(|l| l.split_once(": "))
            .ok_or_else(|| format!("{file}: line {line:?} is not \"Label: value\""))?;
        if fields.insert(label, value).is_some() {
            return Err(format!("{file}: {label} appears twice"));
        }
    }
    let octets: u64 = contents.payload.values().map(|f| f.size).sum();
    let oxum = format!("{octets}.{}", contents.payload.len());
    if fields.get("Payload-Oxum") != Some(&oxum.as_str()) {
        return Err(format!(
            "{file}: Payload-Oxum is {:?}, the payload is {oxum}",
            fields.get("Payload-Oxum")
        ));
    }
    if fields.get("External-Identifier") != Some(&statement.case_id.as_str()) {
        return Err(format!(
            "{file}: External-Identifier is not the statement's case_id {}",
            statement.case_id
        ));
    }
    Ok((
        (),
        format!(
            "Payload-Oxum {oxum}; External-Identifier {}",
            statement.case_id
        ),
    ))
}

fn statement_files(
    statement: &Statement,
    payload: &BTreeMap<String, FileDigest>,
) -> CheckResult<()> {
    let listed: BTreeMap<&str, &FileDigest> = statement
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    if !statement.files.windows(2).all(|w| w[0].path < w[1].path) {
        return Err("statement.files is not sorted by path, or lists a path twice".into());
    }
    for (path, f) in &listed {
        match payload.get(*path) {
            None => {
                return Err(format!(
                    "statement.files lists {path}, which the archive lacks"
                ));
            }
            Some(actual) if actual != *f => {
                return Err(format!(
                    "statement.files: {path} differs from the archive (size {} sha256 {} in the statement; size {} sha256 {} in the archive)",
                    f.size, f.sha256, actual.size, actual.sha256
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = payload.keys().find(|p| !listed.contains_key(p.as_str())) {
        return Err(format!(
            "{extra} is in the archive but not in statement.files"
        ));
    }
    Ok((
        (),
        format!("{} files with sizes and digests match", listed.len()),
    ))
}

fn statement_decision(statement: &Statement, contents: &Contents) -> CheckResult<()> {
    let in_bag = contents
        .tags
        .get(names::DECISION)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let canonical =
        canonicalize(&statement.decision).map_err(|e| format!("statement.decision: {e}"))?;
    if canonical != in_bag {
        return Err(format!(
            "{} is not the statement's decision in canonical form",
            names::DECISION
        ));
    }
    Ok(((), format!("{} equals statement.decision", names::DECISION)))
}

fn parse_keys(bytes: &[u8]) -> CheckResult<KeysFile> {
    let file = names::KEYS;
    let value = parse_canonical(bytes).map_err(|e| format!("{file}: {e}"))?;
    let keys: KeysFile = serde_json::from_value(value).map_err(|e| format!("{file}: {e}"))?;
    if to_canonical(&keys).map_err(|e| format!("{file}: {e}"))? != bytes {
        return Err(format!(
            "{file}: a field is missing or not of the keys form"
        ));
    }
    if !keys
        .keys
        .windows(2)
        .all(|w| w[0].registration.key_id < w[1].registration.key_id)
    {
        return Err(format!(
            "{file}: keys are not sorted by key id, or one is listed twice"
        ));
    }
    let mut ids = BTreeSet::new();
    for k in &keys.keys {
        k.registration
            .verifying_key()
            .map_err(|e| format!("{file}: {}: {e}", k.registration.key_id))?;
        if !ids.insert(k.registration.key_id.as_str()) {
            return Err(format!(
                "{file}: key {} appears twice",
                k.registration.key_id
            ));
        }
    }
    let n = keys.keys.len();
    Ok((keys, format!("{n} keys, each id matching its public key")))
}

fn find_key(keys: &KeysFile, key_id: &str, role: KeyRole) -> CheckResult<KeyEvidence> {
    let found = keys
        .keys
        .iter()
        .find(|k| k.registration.key_id == key_id)
        .ok_or_else(|| {
            format!(
                "statement.signers.{} names {key_id}, which {} lacks",
                role.as_str(),
                names::KEYS
            )
        })?;
    if found.registration.role != role {
        return Err(format!(
            "{key_id} is registered as {}, not {}",
            found.registration.role.as_str(),
            role.as_str()
        ));
    }
    Ok((
        found.clone(),
        format!(
            "{key_id} registered as {} to {}",
            role.as_str(),
            found.registration.owner
        ),
    ))
}

fn signature(key: &KeyEvidence, sig_file: &[u8], statement: &[u8], file: &str) -> CheckResult<()> {
    let signature = sig::signature_from_file(sig_file).map_err(|e| format!("{file}: {e}"))?;
    let public = key
        .registration
        .verifying_key()
        .map_err(|e| format!("{file}: {e}"))?;
    sig::verify(&public, PayloadType::Statement, statement, &signature).map_err(|e| {
        format!(
            "{file}: {e} for {} by {} (changed statement, or a signature from another case)",
            names::STATEMENT,
            key.registration.key_id
        )
    })?;
    Ok((
        (),
        format!(
            "{file} verifies (verify_strict) by {}",
            key.registration.key_id
        ),
    ))
}

fn checkpoint(bytes: &[u8], trust: &Trust) -> CheckResult<(ProofFile, Checkpoint)> {
    let file = names::PROOF;
    let value = parse_canonical(bytes).map_err(|e| format!("{file}: {e}"))?;
    let proof: ProofFile = serde_json::from_value(value).map_err(|e| format!("{file}: {e}"))?;
    if to_canonical(&proof).map_err(|e| format!("{file}: {e}"))? != bytes {
        return Err(format!(
            "{file}: a field is missing or not of the proof form"
        ));
    }
    let checkpoint = open_checkpoint(proof.checkpoint.as_bytes(), trust.log_keys())
        .map_err(|e| format!("{file}: checkpoint: {e}"))?;
    let detail = format!(
        "checkpoint of {} at size {} signed by a trusted log key",
        checkpoint.origin, checkpoint.size
    );
    Ok(((proof, checkpoint), detail))
}

fn inclusion(
    entry: &LogEntry,
    proof: &LogProof,
    checkpoint: &Checkpoint,
    what: &str,
) -> CheckResult<()> {
    let leaf = entry.leaf_hash().map_err(|e| format!("{what}: {e}"))?;
    let hashes = proof.hashes().map_err(|e| format!("{what}: {e}"))?;
    verify_inclusion(
        proof.log_index,
        checkpoint.size,
        &leaf,
        &hashes,
        &checkpoint.root,
    )
    .map_err(|e| {
        format!(
            "{what} at log index {}: {e} (the proof is for another entry, or the entry changed)",
            proof.log_index
        )
    })?;
    Ok((
        (),
        format!(
            "{what} is entry {} of the log at size {}",
            proof.log_index, checkpoint.size
        ),
    ))
}

fn registered_before(
    key: &KeyEvidence,
    statement_index: u64,
    checkpoint: &Checkpoint,
) -> CheckResult<()> {
    let id = &key.registration.key_id;
    inclusion(
        &LogEntry::KeyRegistration(key.registration.clone()),
        &key.registered,
        checkpoint,
        &format!("registration of {id}"),
    )?;
    if key.registered.log_index >= statement_index {
        return Err(format!(
            "{id} was registered at log index {}, not before the statement at {statement_index}",
            key.registered.log_index
        ));
    }
    Ok((
        (),
        format!(
            "{id} registered at log index {} before the statement at {statement_index}",
            key.registered.log_index
        ),
    ))
}

fn not_revoked_before(
    key: &KeyEvidence,
    statement_index: u64,
    checkpoint: &Checkpoint,
) -> CheckResult<()> {
    let id = &key.registration.key_id;
    let Some(revocation) = &key.revocation else {
        return Ok((
            (),
            format!("no revocation of {id} in the archive's evidence"),
        ));
    };
    if &revocation.entry.key_id != id {
        return Err(format!(
            "{}: the revocation listed under {id} is for {}",
            names::KEYS,
            revocation.entry.key_id
        ));
    }
    inclusion(
        &LogEntry::KeyRevocation(revocation.entry.clone()),
        &revocation.revoked,
        checkpoint,
        &format!("revocation of {id}"),
    )?;
    let at = revocation.revoked.log_index;
    if at < statement_index {
        return Err(format!(
            "{id} was revoked at log index {at} ({}), before the statement at {statement_index}",
            revocation.entry.reason
        ));
    }
    Ok((
        (),
        format!("{id} was revoked only later, at log index {at}"),
    ))
}

/// A continuation's own check: it carries no approver signature, and says what it records.
fn continuation(statement: &Statement, files: &SignedFiles<'_>) -> CheckResult<()> {
    if files.approver_sig.is_some() {
        return Err(format!(
            "{} is present, but the statement has no approver signer (a continuation is sealed by the server alone)",
            names::APPROVER_SIG
        ));
    }
    Ok((
        (),
        format!(
            "a continuation of the decision, sealed by the server alone: {}",
            Link::label(statement)
        ),
    ))
}

/// One statement of a case's chain, as the chain checks see it.
#[derive(Clone, Debug)]
pub struct Link {
    name: String,
    statement: Statement,
    sha256: String,
    log_index: u64,
}

impl Link {
    fn new(name: &str, statement: Statement, bytes: &[u8], log_index: u64) -> Self {
        Self {
            name: name.to_string(),
            statement,
            sha256: sha256_hex(bytes),
            log_index,
        }
    }

    /// What a statement records: `decision`, or its update's `kind`.
    fn label(statement: &Statement) -> String {
        match &statement.update {
            None => "decision".into(),
            Some(update) => update
                .get("kind")
                .and_then(serde_json::Value::as_str)
                .map_or_else(|| "update".into(), printable),
        }
    }

    /// The statement's index in the log.
    pub fn log_index(&self) -> u64 {
        self.log_index
    }
}

/// A receipt that must verify on its own, as a link named `name`.
fn receipt_link(name: &str, bytes: &[u8], trust: &Trust) -> Result<Link, String> {
    let mut v = Verifier { checks: Vec::new() };
    let link = v.run_receipt(name, bytes, trust);
    let report = Report { checks: v.checks };
    match (link, report.failures().next()) {
        (Some(link), None) => Ok(link),
        (_, Some(failed)) => Err(format!("{name}: {} fails: {}", failed.name, failed.detail)),
        (None, None) => Err(format!("{name}: not verified")),
    }
}

/// The statements of one case, oldest first: the first is the approver's signed decision, each
/// later one a continuation naming the one before by SHA-256, of the same case and decision, later
/// in the log.
fn chain(links: &[Link]) -> CheckResult<()> {
    let first = links.first().ok_or("no statements")?;
    if let Some(previous) = &first.statement.previous_statement {
        return Err(format!(
            "{}: names previous statement {previous}, which is not among those given",
            first.name
        ));
    }
    if first.statement.is_continuation() {
        return Err(format!(
            "{}: the first statement of a case must be the approver's signed decision",
            first.name
        ));
    }
    for pair in links.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.statement.case_id != a.statement.case_id {
            return Err(format!(
                "{}: case {} is not case {} of {}",
                b.name, b.statement.case_id, a.statement.case_id, a.name
            ));
        }
        if b.statement.previous_statement.as_deref() != Some(a.sha256.as_str()) {
            return Err(format!(
                "{}: previous_statement is {:?}, but the statement before it ({}) has SHA-256 {}",
                b.name, b.statement.previous_statement, a.name, a.sha256
            ));
        }
        if !b.statement.is_continuation() {
            return Err(format!(
                "{}: a later statement of a case must be a continuation",
                b.name
            ));
        }
        if b.statement.decision != a.statement.decision {
            return Err(format!(
                "{}: its decision differs from that of {}",
                b.name, a.name
            ));
        }
        if b.log_index <= a.log_index {
            return Err(format!(
                "{}: log index {} is not after {} of {}",
                b.name, b.log_index, a.log_index, a.name
            ));
        }
    }
    let steps: Vec<String> = links
        .iter()
        .map(|l| format!("{} (log index {})", Link::label(&l.statement), l.log_index))
        .collect();
    Ok((
        (),
        format!(
            "{} statements of case {}, each naming the one before: {}",
            links.len(),
            first.statement.case_id,
            steps.join(", ")
        ),
    ))
}

/// The chain of an archive: the receipts of the earlier statements it carries in
/// `data/previous/`, each verified on its own, then linked to this statement.
fn embedded_chain(own: Link, contents: &Contents, trust: &Trust) -> CheckResult<()> {
    let earlier: Vec<(&String, &Vec<u8>)> = contents
        .tags
        .iter()
        .filter(|(name, _)| name.starts_with(names::PREVIOUS))
        .collect();
    if own.statement.previous_statement.is_none() {
        if let Some((name, _)) = earlier.first() {
            return Err(format!(
                "{name}: an earlier statement, but the statement names no previous_statement"
            ));
        }
        return Ok((
            (),
            format!(
                "the first statement of case {}: no previous statement",
                own.statement.case_id
            ),
        ));
    }
    if earlier.is_empty() {
        return Err(format!(
            "the statement names previous_statement {:?}, but {} holds no earlier statements",
            own.statement.previous_statement,
            names::PREVIOUS
        ));
    }
    let mut links = Vec::with_capacity(earlier.len() + 1);
    for (n, (name, bytes)) in earlier.into_iter().enumerate() {
        let want = names::previous(n + 1);
        if *name != want {
            return Err(format!(
                "{name}: expected {want} (earlier statements are numbered from 001 without gaps)"
            ));
        }
        links.push(receipt_link(name, bytes, trust)?);
    }
    links.push(own);
    chain(&links)
}

/// Checks that the statements of several archives or receipts (named, e.g. by file) are one case's
/// whole chain, in any order given: each must verify on its own (its report is the caller's), and
/// together they must link from the decision to the newest (check `chain.files`).
pub fn verify_chain(items: &[(String, Vec<u8>)], trust: &Trust) -> Check {
    let links: Result<Vec<Link>, String> = items
        .iter()
        .map(|(name, receipt)| receipt_link(name, receipt, trust))
        .collect();
    let result = links.and_then(|mut links| {
        links.sort_by_key(Link::log_index);
        chain(&links)
    });
    let (passed, detail) = match result {
        Ok(((), detail)) => (true, detail),
        Err(detail) => (false, detail),
    };
    Check {
        name: "chain.files".into(),
        passed,
        detail,
    }
}
