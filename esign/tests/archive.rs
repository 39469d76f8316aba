//! End-to-end archive tests: pack a valid archive through the server's flow, check it verifies,
//! then tamper with it one way at a time and check the report rejects it naming what changed.

use std::io::{Cursor, Read, Write};

use ed25519_dalek::{Signer, SigningKey};
use esign::archive::{
    ArchiveWriter, KeyEvidence, LogEvidence, LogProof, PayloadSummary, RevocationEvidence, Signers,
};
use esign::archive::{names, sha256_hex};
use esign::entry::{KeyRegistration, KeyRevocation, KeyRole, LogEntry};
use esign::keys::{LogKey, SealKey, key_id};
use esign::log::{KeyRecord, TransparencyLog};
use esign::merkle::MemoryStore;
use esign::verify::{
    Limits, Receipt, Report, Trust, verify, verify_chain, verify_receipt, verify_with_limits,
};
use serde_json::json;

const LOG_NAME: &str = "cloudhelp.test/log";

/// A log with registered keys, as the server would hold it.
struct Fixture {
    log: TransparencyLog<MemoryStore>,
    trust: Trust,
    approver: SigningKey,
    seal: SealKey,
    /// Every key registration and revocation appended, with its index.
    registrations: Vec<(KeyRegistration, u64)>,
    revocations: Vec<(KeyRevocation, u64)>,
}

impl Fixture {
    fn new() -> Self {
        let log_key = LogKey::from_signing_key(LOG_NAME, SigningKey::from_bytes(&[1; 32])).unwrap();
        let trust = Trust::new(vec![log_key.verifier()]);
        let mut fx = Self {
            log: TransparencyLog::new(MemoryStore::new(), log_key),
            trust,
            approver: SigningKey::from_bytes(&[2; 32]),
            seal: SealKey::from_signing_key(SigningKey::from_bytes(&[3; 32])),
            registrations: Vec::new(),
            revocations: Vec::new(),
        };
        let seal = fx.seal.verifying_key();
        fx.register(&seal, "server", KeyRole::Seal);
        let approver = fx.approver.verifying_key();
        fx.register(&approver, "account-7", KeyRole::Approver);
        fx
    }

    fn register(&mut self, key: &ed25519_dalek::VerifyingKey, owner: &str, role: KeyRole) {
        let reg = KeyRegistration::new(key, owner, role);
        let index = self
            .log
            .append(&LogEntry::KeyRegistration(reg.clone()))
            .unwrap();
        self.registrations.push((reg, index));
    }

    fn revoke(&mut self, key: &ed25519_dalek::VerifyingKey) {
        let rev = KeyRevocation {
            key_id: key_id(key),
            reason: "device lost".into(),
        };
        let index = self
            .log
            .append(&LogEntry::KeyRevocation(rev.clone()))
            .unwrap();
        self.revocations.push((rev, index));
    }

    /// Evidence for one key at tree size `size`, as the server would assemble it.
    fn evidence(&self, id: &str, size: u64) -> KeyEvidence {
        let (reg, index) = self
            .registrations
            .iter()
            .find(|(r, _)| r.key_id == id)
            .unwrap();
        let revocation = self
            .revocations
            .iter()
            .find(|(r, i)| r.key_id == id && *i < size)
            .map(|(r, i)| RevocationEvidence {
                entry: r.clone(),
                revoked: LogProof::new(*i, &self.log.inclusion_proof(*i, size).unwrap()),
            });
        KeyEvidence {
            registration: reg.clone(),
            registered: LogProof::new(*index, &self.log.inclusion_proof(*index, size).unwrap()),
            revocation,
        }
    }

    /// Packs a case the way the server does: payload, statement, browser signature, seal, log, finish.
    fn pack(&mut self, case_id: &str) -> Vec<u8> {
        self.pack_with(case_id, |_| {})
    }

    /// As [`Fixture::pack`], running `after_append` once the statement is in the log.
    fn pack_with(&mut self, case_id: &str, after_append: impl FnOnce(&mut Self)) -> Vec<u8> {
        let mut writer = ArchiveWriter::new(Cursor::new(Vec::new()), case_id).unwrap();
        let photo: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        writer
            .add_file(
                "data/materials/id-card.jpg",
                &mut photo.as_slice(),
                photo.len() as u64,
            )
            .unwrap();
        writer
            .add_bytes("data/materials/申请表.pdf", b"%PDF-1.7 form")
            .unwrap();
        writer
            .add_bytes("data/events.jsonl", b"{\"event\":\"case_opened\"}\n")
            .unwrap();
        writer
            .add_bytes("data/call-quality.json", b"{\"rtt_ms\":80}")
            .unwrap();
        let pending = writer
            .finish_payload(PayloadSummary {
                decision: json!({"outcome": "approved", "item": "户籍证明", "case": case_id}),
                signers: Signers {
                    approver: Some(key_id(&self.approver.verifying_key())),
                    seal: self.seal.key_id(),
                },
                previous_statement: None,
                update: None,
                bagging_date: "2026-11-26".into(),
            })
            .unwrap();
        // What the browser does with WebCrypto: Ed25519 over the PAE bytes.
        let browser_signature = self.approver.sign(&pending.signing_bytes());
        let sealed = pending
            .seal(
                &browser_signature,
                &self.approver.verifying_key(),
                &self.seal,
            )
            .unwrap();
        let index = self.log.append(&sealed.log_entry()).unwrap();
        after_append(self);
        let checkpoint = self.log.checkpoint().unwrap();
        let size = checkpoint.checkpoint.size;
        let signers = sealed.statement().signers.clone();
        let evidence = LogEvidence {
            statement: LogProof::new(index, &self.log.inclusion_proof(index, size).unwrap()),
            keys: if signers.approver.as_ref() == Some(&signers.seal) {
                vec![self.evidence(&signers.seal, size)]
            } else {
                signers
                    .approver
                    .iter()
                    .chain([&signers.seal])
                    .map(|id| self.evidence(id, size))
                    .collect()
            },
            checkpoint,
        };
        sealed.finish(evidence).unwrap().into_inner()
    }

    fn verify(&self, archive: &[u8]) -> Report {
        verify(Cursor::new(archive), &self.trust)
    }

    /// Packs a continuation of the case whose statements are in `earlier` (archives, oldest
    /// first) as the server does after the decision: the earlier receipts in `data/previous/`,
    /// the decision unchanged, sealed by the seal key alone. `tweak` may change the summary.
    fn continue_case(
        &mut self,
        case_id: &str,
        earlier: &[Vec<u8>],
        kind: &str,
        tweak: impl FnOnce(&mut PayloadSummary),
    ) -> Vec<u8> {
        let mut writer = ArchiveWriter::new(Cursor::new(Vec::new()), case_id).unwrap();
        writer
            .add_bytes("data/events.jsonl", b"{\"event\":\"case.issued\"}\n")
            .unwrap();
        for (n, archive) in earlier.iter().enumerate() {
            let receipt = Receipt::from_archive(Cursor::new(archive)).unwrap();
            writer
                .add_bytes(&names::previous(n + 1), receipt.to_json().as_bytes())
                .unwrap();
        }
        let last = earlier.last().map(|a| get(a, names::STATEMENT));
        let decision = last.as_ref().map_or(json!({}), |s| {
            serde_json::from_slice::<serde_json::Value>(s).unwrap()["decision"].clone()
        });
        let mut summary = PayloadSummary {
            decision,
            signers: Signers {
                approver: None,
                seal: self.seal.key_id(),
            },
            previous_statement: last.map(|s| sha256_hex(&s)),
            update: Some(json!({"kind": kind, "at": "2026-11-26T10:00:00Z"})),
            bagging_date: "2026-11-26".into(),
        };
        tweak(&mut summary);
        let sealed = writer
            .finish_payload(summary)
            .unwrap()
            .seal_continuation(&self.seal)
            .unwrap();
        let index = self.log.append(&sealed.log_entry()).unwrap();
        let checkpoint = self.log.checkpoint().unwrap();
        let size = checkpoint.checkpoint.size;
        let evidence = LogEvidence {
            statement: LogProof::new(index, &self.log.inclusion_proof(index, size).unwrap()),
            keys: vec![self.evidence(&self.seal.key_id(), size)],
            checkpoint,
        };
        sealed.finish(evidence).unwrap().into_inner()
    }
}

/// Asserts the report fails, that check `name` is among the failures, and its reason mentions `what`.
#[track_caller]
fn assert_rejected(report: &Report, name: &str, what: &str) {
    assert!(!report.passed(), "tampered archive passed:\n{report}");
    let failed: Vec<_> = report.failures().collect();
    let check = failed
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no failed check {name}:\n{report}"));
    assert!(
        check.detail.contains(what),
        "check {name} does not name {what:?}: {}",
        check.detail
    );
}

/// Reads every entry (name, bytes) with the zip crate, in order.
fn entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(Cursor::new(archive)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).unwrap();
            (f.name().unwrap().to_string(), bytes)
        })
        .collect()
}

/// Writes entries back as a well-formed stored zip (CRCs recomputed, as a careful forger would).
fn rezip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .unix_permissions(0o644);
    for (name, bytes) in entries {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn edit(archive: &[u8], f: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) -> Vec<u8> {
    let mut all = entries(archive);
    f(&mut all);
    rezip(&all)
}

fn replace(archive: &[u8], name: &str, bytes: Vec<u8>) -> Vec<u8> {
    edit(archive, |all| {
        all.iter_mut().find(|(n, _)| n == name).unwrap().1 = bytes;
    })
}

fn get(archive: &[u8], name: &str) -> Vec<u8> {
    entries(archive)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1
}

/// Header positions of one entry in the raw zip: (local header offset, central header offset).
fn headers(archive: &[u8], name: &str) -> (usize, usize) {
    let eocd = archive.len() - 22;
    let u16_at = |at: usize| u16::from_le_bytes([archive[at], archive[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(archive[at..at + 4].try_into().unwrap()) as usize;
    let mut at = u32_at(eocd + 16);
    while at < eocd {
        let (n, e, c) = (u16_at(at + 28), u16_at(at + 30), u16_at(at + 32));
        if &archive[at + 46..at + 46 + n] == name.as_bytes() {
            return (u32_at(at + 42), at);
        }
        at += 46 + n + e + c;
    }
    panic!("{name} not found");
}

/// Renames an entry in place, in both headers (same length), leaving everything else alone.
fn raw_rename(archive: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let (local, central) = headers(archive, from);
    let mut out = archive.to_vec();
    out[local + 30..local + 30 + to.len()].copy_from_slice(to.as_bytes());
    out[central + 46..central + 46 + to.len()].copy_from_slice(to.as_bytes());
    out
}

#[test]
fn a_packed_archive_verifies_with_every_check_passing() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let report = fx.verify(&archive);
    assert!(report.passed(), "{report}");
    for name in [
        "zip.container",
        "bag.payload_manifest",
        "statement.canonical",
        "signature.approver",
        "signature.seal",
        "log.checkpoint",
        "log.statement_inclusion",
        "log.approver_key_registered",
        "log.approver_key_not_revoked",
        "log.seal_key_registered",
    ] {
        assert!(
            report.check(name).is_some_and(|c| c.passed),
            "{name}:\n{report}"
        );
    }
}

#[test]
fn the_report_is_deterministic() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    assert_eq!(fx.verify(&archive), fx.verify(&archive));
    let tampered = replace(&archive, "data/events.jsonl", b"{}\n".to_vec());
    assert_eq!(
        fx.verify(&tampered).to_json(),
        fx.verify(&tampered).to_json()
    );
    let json: serde_json::Value = serde_json::from_str(&fx.verify(&tampered).to_json()).unwrap();
    assert_eq!(json["valid"], false);
    let json: serde_json::Value = serde_json::from_str(&fx.verify(&archive).to_json()).unwrap();
    assert_eq!(json["valid"], true);
}

#[test]
fn one_changed_payload_byte_is_rejected_naming_the_file() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let mut photo = get(&archive, "data/materials/id-card.jpg");
    photo[1000] ^= 1;
    let tampered = replace(&archive, "data/materials/id-card.jpg", photo);
    assert_rejected(
        &fx.verify(&tampered),
        "bag.payload_manifest",
        "data/materials/id-card.jpg: content changed",
    );
}

#[test]
fn one_flipped_byte_in_the_raw_zip_is_rejected_by_the_crc_naming_the_file() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let (local, _) = headers(&archive, "data/events.jsonl");
    let mut tampered = archive.clone();
    tampered[local + 30 + "data/events.jsonl".len() + 3] ^= 0x20;
    assert_rejected(
        &fx.verify(&tampered),
        "zip.contents",
        "data/events.jsonl: CRC-32",
    );
}

#[test]
fn a_changed_tag_file_is_rejected_naming_it() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let info = String::from_utf8(get(&archive, "bag-info.txt")).unwrap();
    let tampered = replace(
        &archive,
        "bag-info.txt",
        info.replace("2026-11-26", "2026-11-27").into_bytes(),
    );
    assert_rejected(
        &fx.verify(&tampered),
        "bag.tag_manifest",
        "bag-info.txt: content changed",
    );
}

#[test]
fn a_changed_manifest_with_a_matching_file_is_still_rejected_by_the_statement() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    // Forge consistently inside the bag: new file content and a manifest and tag manifest to match.
    let new_events = b"{\"event\":\"forged\"}\n".to_vec();
    let old_manifest = String::from_utf8(get(&archive, "manifest-sha256.txt")).unwrap();
    let old_digest = esign::archive::sha256_hex(&get(&archive, "data/events.jsonl"));
    let manifest = old_manifest.replace(&old_digest, &esign::archive::sha256_hex(&new_events));
    let tag = String::from_utf8(get(&archive, "tagmanifest-sha256.txt"))
        .unwrap()
        .replace(
            &esign::archive::sha256_hex(old_manifest.as_bytes()),
            &esign::archive::sha256_hex(manifest.as_bytes()),
        );
    let tampered = edit(&archive, |all| {
        for (name, bytes) in all.iter_mut() {
            match name.as_str() {
                "data/events.jsonl" => *bytes = new_events.clone(),
                "manifest-sha256.txt" => *bytes = manifest.clone().into_bytes(),
                "tagmanifest-sha256.txt" => *bytes = tag.clone().into_bytes(),
                _ => {}
            }
        }
    });
    let report = fx.verify(&tampered);
    assert!(
        report.check("bag.payload_manifest").unwrap().passed,
        "{report}"
    );
    assert_rejected(
        &report,
        "statement.tag_manifest_digest",
        "tagmanifest-sha256.txt",
    );
    assert_rejected(&report, "statement.files", "data/events.jsonl");
}

#[test]
fn an_added_payload_file_is_rejected_naming_it() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let tampered = edit(&archive, |all| {
        all.insert(1, ("data/materials/extra.jpg".into(), b"x".to_vec()));
    });
    assert_rejected(
        &fx.verify(&tampered),
        "bag.payload_manifest",
        "data/materials/extra.jpg is in the archive but not in manifest-sha256.txt",
    );
}

#[test]
fn a_removed_payload_file_is_rejected_naming_it() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let tampered = edit(&archive, |all| {
        all.retain(|(n, _)| n != "data/call-quality.json")
    });
    assert_rejected(
        &fx.verify(&tampered),
        "bag.payload_manifest",
        "data/call-quality.json is listed in manifest-sha256.txt but not in the archive",
    );
}

#[test]
fn a_renamed_payload_file_is_rejected_naming_it() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let tampered = edit(&archive, |all| {
        for (name, _) in all.iter_mut() {
            if name == "data/call-quality.json" {
                *name = "data/call-quality.txt".into();
            }
        }
    });
    assert_rejected(
        &fx.verify(&tampered),
        "bag.payload_manifest",
        "data/call-quality.json",
    );
}

#[test]
fn an_unlisted_entry_outside_the_payload_is_rejected_naming_it() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let tampered = edit(&archive, |all| {
        all.push(("esign/extra.sig".into(), b"x".to_vec()))
    });
    assert_rejected(&fx.verify(&tampered), "bag.entries", "esign/extra.sig");
}

#[test]
fn a_duplicate_entry_name_is_rejected() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    // Both names are 18 bytes: the approver signature entry now claims to be the decision too.
    let tampered = raw_rename(&archive, "esign/approver.sig", "data/decision.json");
    assert_rejected(
        &fx.verify(&tampered),
        "zip.entry_names",
        "duplicate entry name \"data/decision.json\"",
    );
}

#[test]
fn names_differing_only_in_case_are_rejected() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let tampered = raw_rename(&archive, "esign/approver.sig", "DATA/DECISION.JSON");
    assert_rejected(&fx.verify(&tampered), "zip.entry_names", "only in case");
}

#[test]
fn a_name_with_dot_dot_is_rejected() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let tampered = raw_rename(&archive, "data/events.jsonl", "../../events.json");
    assert_rejected(
        &fx.verify(&tampered),
        "zip.entry_names",
        "../../events.json",
    );
}

#[test]
fn an_absolute_name_is_rejected() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let tampered = raw_rename(&archive, "data/events.jsonl", "/data/events.json");
    assert_rejected(
        &fx.verify(&tampered),
        "zip.entry_names",
        "/data/events.json",
    );
}

#[test]
fn a_name_with_a_backslash_is_rejected() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let tampered = raw_rename(&archive, "data/events.jsonl", "data\\events.jsonl");
    assert_rejected(&fx.verify(&tampered), "zip.entry_names", "backslash");
}

#[test]
fn local_and_central_headers_that_disagree_are_rejected() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let (local, _) = headers(&archive, "data/events.jsonl");
    let mut tampered = archive.clone();
    tampered[local + 10] ^= 1; // the local header's modification time
    assert_rejected(
        &fx.verify(&tampered),
        "zip.container",
        "\"data/events.jsonl\": local header disagrees with the central directory",
    );
    // A local name that differs from the central one is the classic smuggling trick.
    let mut tampered = archive.clone();
    tampered[local + 30 + 5] = b'E';
    assert_rejected(&fx.verify(&tampered), "zip.container", "data/events.jsonl");
}

#[test]
fn declared_sizes_that_lie_are_rejected() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let (local, central) = headers(&archive, "data/events.jsonl");
    let mut tampered = archive.clone();
    // Claim 1000 more bytes in both headers, consistently.
    for (at, _) in [
        (local + 18, ()),
        (local + 22, ()),
        (central + 20, ()),
        (central + 24, ()),
    ] {
        let size = u32::from_le_bytes(tampered[at..at + 4].try_into().unwrap()) + 1000;
        tampered[at..at + 4].copy_from_slice(&size.to_le_bytes());
    }
    assert_rejected(&fx.verify(&tampered), "zip.container", "data/events.jsonl");
    // Compressed and uncompressed sizes that differ on a stored entry.
    let mut tampered = archive.clone();
    for at in [local + 22, central + 24] {
        tampered[at] ^= 4;
    }
    assert_rejected(&fx.verify(&tampered), "zip.container", "compressed but");
}

#[test]
fn a_compressed_entry_is_rejected() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let (local, central) = headers(&archive, "data/events.jsonl");
    let mut tampered = archive.clone();
    tampered[local + 8] = 8; // deflate
    tampered[central + 10] = 8;
    assert_rejected(
        &fx.verify(&tampered),
        "zip.container",
        "compression method 8",
    );
}

#[test]
fn an_archive_beyond_the_size_limit_is_rejected_before_reading_it() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let limits = Limits {
        max_total_bytes: 100_000,
        ..Limits::default()
    };
    let report = verify_with_limits(Cursor::new(&archive), &fx.trust, &limits);
    assert_rejected(&report, "zip.container", "limit of 100000 bytes");
    let limits = Limits {
        max_entries: 5,
        ..Limits::default()
    };
    let report = verify_with_limits(Cursor::new(&archive), &fx.trust, &limits);
    assert_rejected(&report, "zip.container", "over the limit of 5");
}

#[test]
fn bytes_prepended_to_the_archive_are_rejected() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    // A self-extractor or polyglot prefix shifts everything; offsets no longer add up.
    let mut tampered = b"hidden".to_vec();
    tampered.extend_from_slice(&archive);
    assert_rejected(&fx.verify(&tampered), "zip.container", "central directory");
}

#[test]
fn bytes_hidden_between_the_last_entry_and_the_directory_are_rejected() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let eocd = archive.len() - 22;
    let cd_offset = u32::from_le_bytes(archive[eocd + 16..eocd + 20].try_into().unwrap()) as usize;
    let mut tampered = archive[..cd_offset].to_vec();
    tampered.extend_from_slice(b"PK\x03\x04 a hidden entry nobody lists");
    let shift = tampered.len() - cd_offset;
    tampered.extend_from_slice(&archive[cd_offset..]);
    let eocd = tampered.len() - 22;
    tampered[eocd + 16..eocd + 20].copy_from_slice(&((cd_offset + shift) as u32).to_le_bytes());
    assert_rejected(&fx.verify(&tampered), "zip.container", "unaccounted bytes");
}

#[test]
fn a_non_canonical_statement_is_rejected() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let statement: serde_json::Value =
        serde_json::from_slice(&get(&archive, "esign/statement.json")).unwrap();
    let pretty = serde_json::to_vec_pretty(&statement).unwrap();
    let tampered = replace(&archive, "esign/statement.json", pretty);
    assert_rejected(
        &fx.verify(&tampered),
        "statement.canonical",
        "esign/statement.json: not canonical JSON",
    );
}

#[test]
fn a_changed_decision_in_the_statement_fails_both_signatures() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let text = String::from_utf8(get(&archive, "esign/statement.json")).unwrap();
    let forged = text.replace("\"approved\"", "\"rejected\"");
    let tampered = replace(&archive, "esign/statement.json", forged.into_bytes());
    let report = fx.verify(&tampered);
    assert_rejected(&report, "statement.decision", "data/decision.json");
    assert_rejected(&report, "signature.approver", "esign/approver.sig");
    assert_rejected(&report, "signature.seal", "esign/seal.sig");
    assert_rejected(&report, "log.statement_inclusion", "esign/statement.json");
}

#[test]
fn escape_sequences_from_the_archive_reach_the_text_report_only_escaped() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let text = String::from_utf8(get(&archive, "esign/statement.json")).unwrap();
    let approver = key_id(&fx.approver.verifying_key());
    // Canonical JSON writes ESC as \u001b; parsed, the key id holds a real ESC and BEL.
    let forged = text.replace(&approver, "\\u001b]0;owned\\u0007\\u001b[2J\u{202e}");
    let tampered = replace(&archive, "esign/statement.json", forged.into_bytes());
    let report = fx.verify(&tampered);
    assert_rejected(&report, "keys.approver", "");
    let shown = report.to_string();
    assert!(
        !shown.contains(['\u{1b}', '\u{7}', '\u{202e}']),
        "raw control characters printed: {shown:?}"
    );
    assert!(shown.contains("\\u{1b}]0;owned\\u{7}"), "{shown}");
}

#[test]
fn a_signature_swapped_from_another_case_is_rejected() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let other = fx.pack("case-002");
    let tampered = replace(
        &archive,
        "esign/approver.sig",
        get(&other, "esign/approver.sig"),
    );
    assert_rejected(
        &fx.verify(&tampered),
        "signature.approver",
        "esign/approver.sig: Ed25519 signature",
    );
    let tampered = replace(&archive, "esign/seal.sig", get(&other, "esign/seal.sig"));
    assert_rejected(&fx.verify(&tampered), "signature.seal", "esign/seal.sig");
}

#[test]
fn an_inclusion_proof_for_another_entry_is_rejected() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let other = fx.pack("case-002");
    // The other case's proof file: a valid checkpoint and a valid proof, but for its own statement.
    let tampered = replace(&archive, "esign/proof", get(&other, "esign/proof"));
    let report = fx.verify(&tampered);
    assert!(report.check("log.checkpoint").unwrap().passed, "{report}");
    assert_rejected(
        &report,
        "log.statement_inclusion",
        "proof is for another entry",
    );
}

#[test]
fn a_checkpoint_signed_by_an_unknown_key_is_rejected() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let proof: serde_json::Value = serde_json::from_slice(&get(&archive, "esign/proof")).unwrap();
    let note = proof["checkpoint"].as_str().unwrap();
    let text = &note[..note.find("\n\n").unwrap() + 1];
    let rogue = LogKey::from_signing_key(LOG_NAME, SigningKey::from_bytes(&[66; 32])).unwrap();
    let mut forged = proof.clone();
    forged["checkpoint"] = rogue.sign_note(text).unwrap().into();
    let bytes = esign::jcs::canonicalize(&forged).unwrap();
    let tampered = replace(&archive, "esign/proof", bytes);
    assert_rejected(
        &fx.verify(&tampered),
        "log.checkpoint",
        "not signed by any trusted key",
    );
}

#[test]
fn an_approver_key_revoked_before_the_statement_is_rejected() {
    let mut fx = Fixture::new();
    let approver = fx.approver.verifying_key();
    fx.revoke(&approver);
    let archive = fx.pack("case-001");
    assert_rejected(
        &fx.verify(&archive),
        "log.approver_key_not_revoked",
        "revoked at log index 2",
    );
}

#[test]
fn an_approver_key_revoked_after_the_statement_still_verifies() {
    let mut fx = Fixture::new();
    let first = fx.pack("case-001");
    let approver = fx.approver.verifying_key();
    fx.revoke(&approver);
    // A later archive of another case carries the revocation; the first archive stays valid.
    assert!(fx.verify(&first).passed());
    let second = fx.pack("case-002");
    let report = fx.verify(&second);
    assert_rejected(
        &report,
        "log.approver_key_not_revoked",
        "before the statement",
    );
}

#[test]
fn a_key_registered_with_the_wrong_role_is_rejected() {
    let mut fx = Fixture::new();
    // The approver's key is used as if it were the seal key.
    fx.seal = SealKey::from_signing_key(fx.approver.clone());
    let archive = fx.pack("case-001");
    assert_rejected(
        &fx.verify(&archive),
        "keys.seal",
        "registered as approver, not seal",
    );
}

#[test]
fn a_seal_key_rotation_keeps_old_archives_valid() {
    let mut fx = Fixture::new();
    let old = fx.pack("case-001");
    let old_seal = fx.seal.verifying_key();
    let new_seal = SealKey::from_signing_key(SigningKey::from_bytes(&[9; 32]));
    fx.register(&new_seal.verifying_key(), "server", KeyRole::Seal);
    fx.seal = new_seal;
    fx.revoke(&old_seal);
    let new = fx.pack("case-002");
    assert!(fx.verify(&old).passed(), "{}", fx.verify(&old));
    assert!(fx.verify(&new).passed(), "{}", fx.verify(&new));
}

#[test]
fn the_trust_file_round_trips_and_an_archive_fails_under_another_log_key() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let trust = Trust::from_json(fx.trust.to_json().as_bytes()).unwrap();
    assert_eq!(trust, fx.trust);
    let other = LogKey::from_signing_key(LOG_NAME, SigningKey::from_bytes(&[5; 32])).unwrap();
    let report = verify(Cursor::new(&archive), &Trust::new(vec![other.verifier()]));
    assert_rejected(&report, "log.checkpoint", "not signed by any trusted key");
}

#[test]
fn garbage_and_empty_input_are_rejected_without_panicking() {
    let fx = Fixture::new();
    for input in [
        &b""[..],
        b"PK\x05\x06",
        &[0u8; 100],
        b"not a zip at all, just text",
    ] {
        assert_rejected(&fx.verify(input), "zip.container", "");
    }
}

fn writer() -> ArchiveWriter<Cursor<Vec<u8>>> {
    ArchiveWriter::new(Cursor::new(Vec::new()), "case-009").unwrap()
}

#[test]
fn the_packer_refuses_unsafe_reserved_and_duplicate_paths() {
    let mut w = writer();
    for bad in [
        "data/../bagit.txt",
        "/data/a.txt",
        "data\\a.txt",
        "data//a.txt",
        "materials/a.txt",
        "data/decision.json",
        "data/a\nb.txt",
        "data/100%.txt",
    ] {
        assert!(w.add_bytes(bad, b"x").is_err(), "{bad:?} was accepted");
    }
    w.add_bytes("data/a.txt", b"x").unwrap();
    assert!(w.add_bytes("data/a.txt", b"y").is_err());
    assert!(w.add_bytes("data/A.TXT", b"y").is_err());
}

#[test]
fn the_packer_refuses_a_case_id_that_could_break_bag_info() {
    for bad in ["", "case\n1", "case/1", "案件1"] {
        assert!(
            ArchiveWriter::new(Cursor::new(Vec::new()), bad).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn sealing_refuses_an_approver_signature_that_does_not_verify() {
    let fx = Fixture::new();
    let mut w = writer();
    w.add_bytes("data/events.jsonl", b"{}\n").unwrap();
    let pending = w
        .finish_payload(PayloadSummary {
            decision: json!({"outcome": "approved"}),
            signers: Signers {
                approver: Some(key_id(&fx.approver.verifying_key())),
                seal: fx.seal.key_id(),
            },
            previous_statement: None,
            update: None,
            bagging_date: "2026-11-26".into(),
        })
        .unwrap();
    // Signed over the bare statement instead of the PAE bytes: refused.
    let wrong = fx.approver.sign(pending.statement_bytes());
    let err = pending
        .seal(&wrong, &fx.approver.verifying_key(), &fx.seal)
        .err()
        .expect("a signature over the wrong bytes must be refused");
    assert!(err.to_string().contains("verify_strict"), "{err}");
}

#[test]
fn a_decision_with_a_float_cannot_be_packed() {
    let fx = Fixture::new();
    let w = writer();
    let result = w.finish_payload(PayloadSummary {
        decision: json!({"score": 0.5}),
        signers: Signers {
            approver: Some(key_id(&fx.approver.verifying_key())),
            seal: fx.seal.key_id(),
        },
        previous_statement: None,
        update: None,
        bagging_date: "2026-11-26".into(),
    });
    assert!(result.is_err());
}

#[test]
fn finishing_refuses_log_evidence_for_another_statement() {
    let mut fx = Fixture::new();
    let mut w = writer();
    w.add_bytes("data/events.jsonl", b"{}\n").unwrap();
    let pending = w
        .finish_payload(PayloadSummary {
            decision: json!({"outcome": "approved"}),
            signers: Signers {
                approver: Some(key_id(&fx.approver.verifying_key())),
                seal: fx.seal.key_id(),
            },
            previous_statement: Some("ab".repeat(32)),
            update: None,
            bagging_date: "2026-11-26".into(),
        })
        .unwrap();
    let signature = fx.approver.sign(&pending.signing_bytes());
    let sealed = pending
        .seal(&signature, &fx.approver.verifying_key(), &fx.seal)
        .unwrap();
    // Append something else and present its proof as the statement's.
    let other = fx
        .log
        .append(&LogEntry::Statement(b"{\"other\":1}".to_vec()))
        .unwrap();
    let checkpoint = fx.log.checkpoint().unwrap();
    let size = checkpoint.checkpoint.size;
    let evidence = LogEvidence {
        statement: LogProof::new(other, &fx.log.inclusion_proof(other, size).unwrap()),
        keys: vec![],
        checkpoint,
    };
    assert!(sealed.finish(evidence).is_err());
}

#[test]
fn a_large_payload_is_streamed_and_verifies() {
    let mut fx = Fixture::new();
    let mut w = writer();
    let size = 8 << 20;
    let digest = w
        .add_file(
            "data/recordings/call.webm",
            &mut std::io::repeat(0x5a).take(size),
            size,
        )
        .unwrap();
    assert_eq!(digest.size, size);
    let pending = w
        .finish_payload(PayloadSummary {
            decision: json!({"outcome": "approved"}),
            signers: Signers {
                approver: Some(key_id(&fx.approver.verifying_key())),
                seal: fx.seal.key_id(),
            },
            previous_statement: None,
            update: None,
            bagging_date: "2026-11-26".into(),
        })
        .unwrap();
    let signature = fx.approver.sign(&pending.signing_bytes());
    let sealed = pending
        .seal(&signature, &fx.approver.verifying_key(), &fx.seal)
        .unwrap();
    let index = fx.log.append(&sealed.log_entry()).unwrap();
    // The one call the server makes for the evidence, from its own key records.
    let records: Vec<KeyRecord> = fx
        .registrations
        .iter()
        .map(|(registration, at)| KeyRecord {
            registration: registration.clone(),
            registered_at: *at,
            revocation: None,
        })
        .collect();
    let evidence = fx.log.evidence(index, &records).unwrap();
    let archive = sealed.finish(evidence).unwrap().into_inner();
    let report = fx.verify(&archive);
    assert!(report.passed(), "{report}");
}

/// A small deterministic generator (xorshift64*), so mutation runs are the same every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_mutations_of_an_archive_never_panic_and_never_pass() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    // Mutate where it matters most: headers, tag files and esign/ (everything but the big photo).
    let (photo, _) = headers(&archive, "data/materials/id-card.jpg");
    let skip = photo + 100..photo + 200_000;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..1000 {
        let mut mutated = archive.clone();
        for _ in 0..1 + rng.below(3) {
            let mut at = rng.below(mutated.len());
            while skip.contains(&at) {
                at = rng.below(mutated.len());
            }
            match rng.below(3) {
                0 => mutated[at] ^= 1 << rng.below(8),
                1 => mutated[at] = rng.next() as u8,
                _ => {
                    mutated.remove(at);
                }
            }
        }
        if mutated == archive {
            continue; // a random byte can equal the one it replaced
        }
        let report = fx.verify(&mutated);
        if report.passed() {
            let diff: Vec<usize> = (0..archive.len().min(mutated.len()))
                .filter(|&i| archive[i] != mutated[i])
                .take(3)
                .collect();
            let (_, cd) = headers(&archive, "bagit.txt");
            panic!(
                "round {round}: a mutated archive passed; first differences at {diff:?} (len {} -> {}), central directory at {cd}",
                archive.len(),
                mutated.len()
            );
        }
    }
}

#[test]
fn random_bytes_never_panic_the_parsers() {
    let mut rng = Rng(42);
    let verifier = LogKey::from_signing_key(LOG_NAME, SigningKey::from_bytes(&[1; 32]))
        .unwrap()
        .verifier();
    let seeds: [&[u8]; 4] = [
        b"{\"a\":[1,2,{\"b\":null}]}",
        b"cloudhelp.test/log\n3\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n\n\xe2\x80\x94 x AAAA\n",
        b"DSSEv1 40 application/vnd.cloudhelp.statement+json 2 {}",
        b"{\"log_keys\":[\"a+00000000+AQ==\"]}",
    ];
    for _ in 0..2000 {
        let seed = seeds[rng.below(seeds.len())];
        let mut input = seed.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(input.len());
            input[at] = rng.next() as u8;
        }
        let _ = esign::jcs::parse_canonical(&input);
        let _ = esign::note::open_note(&input, std::slice::from_ref(&verifier));
        let _ = std::str::from_utf8(&input).map(esign::note::Checkpoint::parse);
        let _ = LogEntry::decode(&input);
        let _ = Trust::from_json(&input);
    }
}

#[test]
fn a_key_registered_only_after_the_statement_is_rejected() {
    let mut fx = Fixture::new();
    let late = SigningKey::from_bytes(&[11; 32]);
    fx.approver = late.clone();
    let archive = fx.pack_with("case-001", |fx| {
        fx.register(&late.verifying_key(), "account-9", KeyRole::Approver);
    });
    assert_rejected(
        &fx.verify(&archive),
        "log.approver_key_registered",
        "not before the statement",
    );
}

#[test]
fn a_seal_key_revoked_before_the_statement_is_rejected() {
    let mut fx = Fixture::new();
    let seal = fx.seal.verifying_key();
    fx.revoke(&seal);
    let archive = fx.pack("case-001");
    assert_rejected(
        &fx.verify(&archive),
        "log.seal_key_not_revoked",
        "revoked at log index",
    );
}

#[test]
fn a_key_whose_id_does_not_match_its_public_key_is_rejected() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let mut keys: serde_json::Value = serde_json::from_slice(&get(&archive, "esign/keys")).unwrap();
    let other = SigningKey::from_bytes(&[12; 32]).verifying_key();
    keys["keys"][0]["registration"]["public_key"] = esign::sig::public_key_to_base64(&other).into();
    let tampered = replace(
        &archive,
        "esign/keys",
        esign::jcs::canonicalize(&keys).unwrap(),
    );
    assert_rejected(
        &fx.verify(&tampered),
        "keys.file",
        "is not the id of its public key",
    );
}

#[test]
fn a_revocation_left_out_of_the_archive_is_caught_by_the_log_not_the_archive() {
    // The limit of offline verification, stated as a test: an archive whose server omitted a
    // revocation still verifies; a log monitor that reads every entry is what catches it.
    let mut fx = Fixture::new();
    let approver = fx.approver.verifying_key();
    fx.revoke(&approver);
    let revocations = std::mem::take(&mut fx.revocations);
    let archive = fx.pack("case-001");
    assert!(fx.verify(&archive).passed());
    assert_eq!(revocations.len(), 1);
}

#[test]
fn a_statement_with_its_files_reordered_is_rejected() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let mut statement: serde_json::Value =
        serde_json::from_slice(&get(&archive, "esign/statement.json")).unwrap();
    statement["files"].as_array_mut().unwrap().reverse();
    let bytes = esign::jcs::canonicalize(&statement).unwrap();
    let tampered = replace(&archive, "esign/statement.json", bytes);
    let report = fx.verify(&tampered);
    assert_rejected(&report, "statement.files", "not sorted by path");
    assert_rejected(&report, "signature.approver", "esign/approver.sig");
}

#[test]
fn the_whole_esign_folder_of_another_case_is_rejected() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let other = fx.pack("case-002");
    let tampered = edit(&archive, |all| {
        for (name, bytes) in all.iter_mut() {
            if name.starts_with("esign/") {
                *bytes = get(&other, name);
            }
        }
    });
    let report = fx.verify(&tampered);
    assert!(report.check("signature.approver").unwrap().passed);
    assert_rejected(&report, "bag.info", "External-Identifier");
    assert_rejected(
        &report,
        "statement.tag_manifest_digest",
        "tagmanifest-sha256.txt",
    );
    assert_rejected(&report, "statement.decision", "data/decision.json");
}

#[test]
fn zip64_sized_entries_verify_and_a_lie_in_their_sizes_is_rejected() {
    let mut fx = Fixture::new();
    let packed = fx.pack("case-001");
    let name = "data/materials/id-card.jpg";
    // The form the packer gives entries of 4 GiB or more, here on a small one (rewritten in place,
    // so the statement still holds).
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (entry, bytes) in entries(&packed) {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(0o644)
            .last_modified_time(zip::DateTime::default())
            .large_file(entry == name);
        zip.start_file(entry.as_str(), options).unwrap();
        zip.write_all(&bytes).unwrap();
    }
    let archive = zip.finish().unwrap().into_inner();
    let report = fx.verify(&archive);
    assert!(report.passed(), "{report}");
    let (local, central) = headers(&archive, name);
    // The local zip64 field follows the name: id 1, length 16, then the two sizes.
    let extra = local + 30 + name.len();
    assert_eq!(&archive[extra..extra + 4], &[1, 0, 16, 0]);
    let mut tampered = archive.clone();
    tampered[extra + 4] ^= 1;
    assert_rejected(
        &fx.verify(&tampered),
        "zip.container",
        "local extra field disagrees",
    );
    // Both headers lie the same way: the entries no longer tile the file.
    let central_extra = central + 46 + name.len();
    let mut tampered = archive.clone();
    for at in [extra + 4, extra + 12, central_extra + 4, central_extra + 12] {
        tampered[at + 1] ^= 1;
    }
    assert_rejected(&fx.verify(&tampered), "zip.container", name);
}

/// Writes and hashes 4.2 GiB of disk, so it runs on demand with the benchmarks
/// (`cargo test --release -p esign --features slow-tests --test archive`), not in every test run.
#[cfg(feature = "slow-tests")]
#[test]
fn an_archive_beyond_4_gib_uses_zip64_and_verifies() {
    let mut fx = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.zip");
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
    let mut w = ArchiveWriter::new(file, "case-big").unwrap();
    let size = (4u64 << 30) + (200 << 20);
    w.add_file(
        "data/recordings/call.webm",
        &mut std::io::repeat(7).take(size),
        size,
    )
    .unwrap();
    // Entries after the 4 GiB mark need zip64 offsets in the central directory.
    w.add_bytes("data/events.jsonl", b"{}\n").unwrap();
    let pending = w
        .finish_payload(PayloadSummary {
            decision: json!({"outcome": "approved"}),
            signers: Signers {
                approver: Some(key_id(&fx.approver.verifying_key())),
                seal: fx.seal.key_id(),
            },
            previous_statement: None,
            update: None,
            bagging_date: "2026-11-26".into(),
        })
        .unwrap();
    let signature = fx.approver.sign(&pending.signing_bytes());
    let sealed = pending
        .seal(&signature, &fx.approver.verifying_key(), &fx.seal)
        .unwrap();
    let index = fx.log.append(&sealed.log_entry()).unwrap();
    let records: Vec<KeyRecord> = fx
        .registrations
        .iter()
        .map(|(registration, at)| KeyRecord {
            registration: registration.clone(),
            registered_at: *at,
            revocation: None,
        })
        .collect();
    let mut out = sealed
        .finish(fx.log.evidence(index, &records).unwrap())
        .unwrap();
    out.flush().unwrap();
    drop(out);
    let report = esign::verify::verify_file(&path, &fx.trust);
    assert!(report.passed(), "{report}");
}

/// The peak resident memory of this process so far, in KiB (Linux `VmHWM`).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A statement of ~12 MB, nested 120 deep with 100 KB keys: before error paths were built lazily,
/// checking it cost ~720 MB (a path string per level, kept for every level below it).
#[test]
fn a_deeply_nested_statement_is_refused_without_costing_more_memory_than_its_size() {
    const CHILD: &str = "ESIGN_MEMORY_TRIAL";
    const NAME: &str =
        "a_deeply_nested_statement_is_refused_without_costing_more_memory_than_its_size";
    if std::env::var_os(CHILD).is_some() {
        let mut fx = Fixture::new();
        let archive = fx.pack("case-001");
        let key = "k".repeat(100_000);
        let levels = 120;
        let crafted = format!(
            "{}1{}",
            format!("{{\"{key}\":").repeat(levels),
            "}".repeat(levels)
        );
        let tampered = replace(&archive, "esign/statement.json", crafted.into_bytes());
        let before = peak_rss_kib();
        let report = fx.verify(&tampered);
        let growth = peak_rss_kib().saturating_sub(before);
        assert_rejected(
            &report,
            "statement.canonical",
            "nested deeper than 32 levels",
        );
        println!("PEAK-GROWTH-KIB {growth}");
        return;
    }
    // Measured in a process of its own, so that no other test moves the peak.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let growth: u64 = stdout
        .split("PEAK-GROWTH-KIB ")
        .nth(1)
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no measurement in {stdout}"));
    assert!(
        growth < 100 * 1024,
        "verifying a 12 MB statement raised peak memory by {growth} KiB"
    );
}

#[test]
fn the_receipt_of_an_archive_verifies_alone_and_a_changed_decision_in_it_does_not() {
    use esign::verify::{Receipt, verify_receipt};
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let receipt = Receipt::from_archive(Cursor::new(&archive)).unwrap();
    let json = receipt.to_json();
    let report = verify_receipt(json.as_bytes(), &fx.trust);
    assert!(report.passed(), "{report}");
    for check in [
        "signature.approver",
        "signature.seal",
        "log.statement_inclusion",
    ] {
        assert!(
            report.check(check).is_some_and(|c| c.passed),
            "{check}: {report}"
        );
    }
    assert!(!json.contains("%PDF"), "a receipt carries no payload");
    let forged = Receipt {
        statement: receipt.statement.replace("\"approved\"", "\"rejected\""),
        ..receipt.clone()
    };
    let report = verify_receipt(forged.to_json().as_bytes(), &fx.trust);
    assert_rejected(&report, "signature.approver", "esign/approver.sig");
    assert_rejected(&report, "log.statement_inclusion", "esign/statement.json");
    let other_format = json.replace(Receipt::FORMAT, "cloudhelp-receipt/9");
    assert_rejected(
        &verify_receipt(other_format.as_bytes(), &fx.trust),
        "receipt.format",
        "expected",
    );
}

#[test]
fn only_entries_of_4_gib_or_more_are_zip64_so_older_tools_read_the_rest() {
    let mut fx = Fixture::new();
    let archive = fx.pack("case-001");
    let (local, central) = headers(&archive, "data/materials/id-card.jpg");
    let needed = u16::from_le_bytes([archive[local + 4], archive[local + 5]]);
    let extra = u16::from_le_bytes([archive[local + 28], archive[local + 29]]);
    let compressed = u32::from_le_bytes(archive[central + 20..central + 24].try_into().unwrap());
    assert_eq!(
        (needed, extra),
        (10, 0),
        "a 200 kB material is a plain entry"
    );
    assert_eq!(compressed, 200_000);
    assert!(fx.verify(&archive).passed());
}

#[test]
fn a_stream_that_ends_at_another_length_than_declared_is_refused() {
    let mut w = writer();
    let refused = w
        .add_file("data/a.bin", &mut &[1u8; 10][..], 11)
        .unwrap_err();
    assert!(
        refused.to_string().contains("not the 11 declared"),
        "{refused}"
    );
}

/// A case's chain of three: its decision, issuing and the rating, as the server would seal them.
fn three_step_chain(fx: &mut Fixture, case_id: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let decision = fx.pack(case_id);
    let issued = fx.continue_case(case_id, std::slice::from_ref(&decision), "issued", |_| {});
    let rated = fx.continue_case(
        case_id,
        &[decision.clone(), issued.clone()],
        "rated",
        |_| {},
    );
    (decision, issued, rated)
}

/// The receipt of an archive, as JSON bytes.
fn receipt_of(archive: &[u8]) -> Vec<u8> {
    Receipt::from_archive(Cursor::new(archive))
        .unwrap()
        .to_json()
        .into_bytes()
}

#[test]
fn a_case_chain_of_decision_issuing_and_rating_verifies_from_the_newest_archive_alone() {
    let mut fx = Fixture::new();
    let (decision, issued, rated) = three_step_chain(&mut fx, "case-chain");
    for archive in [&issued, &rated] {
        let report = fx.verify(archive);
        assert!(report.passed(), "{report}");
        // Sealed by the server alone: no approver checks, and nothing passes for one.
        assert!(report.check("signature.approver").is_none(), "{report}");
        assert!(
            report
                .check("statement.continuation")
                .is_some_and(|c| c.passed)
        );
        assert!(
            !entries(archive)
                .iter()
                .any(|(n, _)| n == names::APPROVER_SIG)
        );
    }
    let chain = fx.verify(&rated);
    let detail = &chain.check("chain.previous").unwrap().detail;
    assert!(
        detail.contains("3 statements of case case-chain")
            && detail.contains("decision (log index 2), issued (log index 3), rated (log index 4)"),
        "{detail}"
    );
    // The decision's own archive is the first of the chain.
    let first = fx.verify(&decision);
    assert!(
        first
            .check("chain.previous")
            .unwrap()
            .detail
            .contains("no previous statement")
    );
    // Each in turn, in any order: the receipts link from the decision to the newest.
    let given = vec![
        ("rated.zip".to_string(), receipt_of(&rated)),
        ("decision.zip".to_string(), receipt_of(&decision)),
        ("issued.zip".to_string(), receipt_of(&issued)),
    ];
    let check = verify_chain(&given, &fx.trust);
    assert!(check.passed, "{}", check.detail);
    // A continuation's receipt has no approver signature and verifies on its own.
    let receipt = receipt_of(&issued);
    assert!(!String::from_utf8_lossy(&receipt).contains("approver_sig"));
    let report = verify_receipt(&receipt, &fx.trust);
    assert!(report.passed(), "{report}");
}

#[test]
fn a_chain_with_a_missing_statement_is_rejected_naming_the_gap() {
    let mut fx = Fixture::new();
    let (decision, issued, rated) = three_step_chain(&mut fx, "case-gap");
    let given = vec![
        ("decision.zip".to_string(), receipt_of(&decision)),
        ("rated.zip".to_string(), receipt_of(&rated)),
    ];
    let check = verify_chain(&given, &fx.trust);
    assert!(!check.passed);
    assert!(
        check.detail.contains("rated.zip: previous_statement is"),
        "{}",
        check.detail
    );
    // Without the decision, the oldest given names a statement that is not there.
    let check = verify_chain(&[("issued.zip".into(), receipt_of(&issued))], &fx.trust);
    assert!(
        !check.passed && check.detail.contains("not among those given"),
        "{}",
        check.detail
    );
}

#[test]
fn a_continuation_naming_another_previous_statement_is_rejected() {
    let mut fx = Fixture::new();
    let decision = fx.pack("case-link");
    let forged = fx.continue_case("case-link", &[decision], "issued", |s| {
        s.previous_statement = Some("ab".repeat(32));
    });
    assert_rejected(
        &fx.verify(&forged),
        "chain.previous",
        "previous_statement is",
    );
}

#[test]
fn a_continuation_of_another_case_or_another_decision_is_rejected() {
    let mut fx = Fixture::new();
    let other = fx.pack("case-other");
    let mixed = fx.continue_case("case-mine", std::slice::from_ref(&other), "issued", |_| {});
    assert_rejected(
        &fx.verify(&mixed),
        "chain.previous",
        "is not case case-other",
    );
    let changed = fx.continue_case("case-other", &[other], "issued", |s| {
        s.decision = json!({"outcome": "rejected"});
    });
    assert_rejected(&fx.verify(&changed), "chain.previous", "decision differs");
}

#[test]
fn a_continuation_without_its_earlier_statements_is_rejected() {
    let mut fx = Fixture::new();
    let decision = fx.pack("case-bare");
    let statement = get(&decision, names::STATEMENT);
    let bare = fx.continue_case("case-bare", &[], "issued", |s| {
        s.previous_statement = Some(sha256_hex(&statement));
        s.decision = json!({"outcome": "approved", "item": "户籍证明", "case": "case-bare"});
    });
    assert_rejected(
        &fx.verify(&bare),
        "chain.previous",
        "holds no earlier statements",
    );
}

#[test]
fn an_earlier_statement_that_does_not_verify_on_its_own_is_rejected_naming_it() {
    // The decision was logged under a log key the auditor does not trust.
    let mut elsewhere = Fixture::new();
    elsewhere.log = TransparencyLog::new(
        MemoryStore::new(),
        LogKey::from_signing_key("elsewhere.test/log", SigningKey::from_bytes(&[9; 32])).unwrap(),
    );
    elsewhere.registrations.clear();
    let seal = elsewhere.seal.verifying_key();
    elsewhere.register(&seal, "server", KeyRole::Seal);
    let approver = elsewhere.approver.verifying_key();
    elsewhere.register(&approver, "account-7", KeyRole::Approver);
    let decision = elsewhere.pack("case-untrusted");
    let mut fx = Fixture::new();
    let issued = fx.continue_case("case-untrusted", &[decision], "issued", |_| {});
    assert_rejected(
        &fx.verify(&issued),
        "chain.previous",
        "data/previous/001.json: log.checkpoint fails",
    );
}

#[test]
fn an_approver_signature_added_to_a_continuation_is_rejected() {
    let mut fx = Fixture::new();
    let decision = fx.pack("case-extra");
    let issued = fx.continue_case(
        "case-extra",
        std::slice::from_ref(&decision),
        "issued",
        |_| {},
    );
    let with_sig = edit(&issued, |entries| {
        let sig = get(&decision, names::APPROVER_SIG);
        let at = entries
            .iter()
            .position(|(n, _)| n == names::SEAL_SIG)
            .unwrap();
        entries.insert(at, (names::APPROVER_SIG.to_string(), sig));
    });
    assert_rejected(
        &fx.verify(&with_sig),
        "statement.continuation",
        "esign/approver.sig is present",
    );
}

#[test]
fn the_packer_refuses_a_statement_without_an_approver_that_is_not_a_continuation() {
    let fx = Fixture::new();
    for (update, previous, what) in [
        (None, Some("ab".repeat(32)), "no update"),
        (
            Some(json!({"kind": "issued"})),
            None,
            "must name its previous_statement",
        ),
        (
            Some(json!("issued")),
            Some("ab".repeat(32)),
            "must be an object",
        ),
    ] {
        let err = writer()
            .finish_payload(PayloadSummary {
                decision: json!({"outcome": "approved"}),
                signers: Signers {
                    approver: None,
                    seal: fx.seal.key_id(),
                },
                previous_statement: previous,
                update,
                bagging_date: "2026-11-26".into(),
            })
            .err()
            .expect("refused");
        assert!(err.to_string().contains(what), "{err}");
    }
    let err = writer()
        .finish_payload(PayloadSummary {
            decision: json!({"outcome": "approved"}),
            signers: Signers {
                approver: Some(key_id(&fx.approver.verifying_key())),
                seal: fx.seal.key_id(),
            },
            previous_statement: None,
            update: Some(json!({"kind": "issued"})),
            bagging_date: "2026-11-26".into(),
        })
        .err()
        .expect("refused");
    assert!(err.to_string().contains("carries no update"), "{err}");
}
