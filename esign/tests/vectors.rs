//! Third-party vectors: Wycheproof and CCTV Ed25519, transparency-dev Merkle proofs.
//!
//! Read from `esign/tests/vectors/` (copied unchanged, with their sources and licences in its
//! README), so a clone needs nothing beside it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, VerifyingKey};
use esign::merkle::{Hash, verify_consistency, verify_inclusion};
use serde::Deserialize;

fn vectors() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors")).to_path_buf()
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> T {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// verify_strict on raw bytes, with parsing failures counted as rejection.
fn strict_accepts(key: &[u8], sig: &[u8], msg: &[u8]) -> bool {
    let Ok(key) = <[u8; 32]>::try_from(key) else {
        return false;
    };
    let Ok(sig) = <[u8; 64]>::try_from(sig) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(&key) else {
        return false;
    };
    key.verify_strict(msg, &Signature::from_bytes(&sig)).is_ok()
}

#[derive(Deserialize)]
struct Wycheproof {
    #[serde(rename = "testGroups")]
    groups: Vec<WycheproofGroup>,
}

#[derive(Deserialize)]
struct WycheproofGroup {
    #[serde(rename = "publicKey")]
    public_key: WycheproofKey,
    tests: Vec<WycheproofCase>,
}

#[derive(Deserialize)]
struct WycheproofKey {
    pk: String,
}

#[derive(Deserialize)]
struct WycheproofCase {
    #[serde(rename = "tcId")]
    id: u32,
    msg: String,
    sig: String,
    result: String,
}

#[test]
fn every_wycheproof_ed25519_case_gets_its_expected_result_from_verify_strict() {
    let file: Wycheproof = read_json(&vectors().join("ed25519/wycheproof_ed25519_test.json"));
    let mut count = 0;
    for group in &file.groups {
        let key = hex::decode(&group.public_key.pk).unwrap();
        for case in &group.tests {
            let accepted = strict_accepts(
                &key,
                &hex::decode(&case.sig).unwrap_or_default(),
                &hex::decode(&case.msg).unwrap(),
            );
            let expected = match case.result.as_str() {
                "valid" => true,
                "invalid" => false,
                other => panic!("case {}: result {other:?} needs a stated position", case.id),
            };
            assert_eq!(accepted, expected, "wycheproof case {}", case.id);
            count += 1;
        }
    }
    assert_eq!(count, 151);
}

#[derive(Deserialize)]
struct CctvCase {
    number: u32,
    key: String,
    sig: String,
    msg: String,
    flags: Option<Vec<String>>,
}

/// Our stated position, per CCTV flag: does the verifier (verify_strict) accept a signature whose
/// vector carries this flag? A vector is accepted only when every flag it carries is accepted.
fn position_on(flag: &str) -> bool {
    match flag {
        // A low-order A or R is rejected outright: verify_strict refuses small-order points.
        "low_order_A" | "low_order_R" => false,
        // Non-canonical encodings exist only for low-order points here, so they are rejected too
        // (and RFC 8032 requires it).
        "non_canonical_A" | "non_canonical_R" => false,
        // Cofactorless verification: a residue that only cancels when multiplied by 8 fails.
        "low_order_residue" => false,
        // Only ever flagged together with a non-canonical point, which is rejected.
        "reencoded_k" => false,
        // A mixed-order point (prime-order part plus a torsion part) cannot be blocklisted and
        // verifies when the equation holds without the cofactor: accepted.
        "low_order_component_A" | "low_order_component_R" => true,
        other => panic!("CCTV flag {other:?} has no stated position"),
    }
}

#[test]
fn every_cctv_ed25519_edge_case_is_accepted_or_rejected_as_stated_per_flag() {
    let cases: Vec<CctvCase> = read_json(&vectors().join("ed25519/cctv_ed25519vectors.json"));
    assert_eq!(cases.len(), 914);
    let mut tally: BTreeMap<bool, u32> = BTreeMap::new();
    for case in &cases {
        let flags = case.flags.clone().unwrap_or_default();
        let expected = flags.iter().all(|f| position_on(f));
        let accepted = strict_accepts(
            &hex::decode(&case.key).unwrap(),
            &hex::decode(&case.sig).unwrap(),
            case.msg.as_bytes(),
        );
        assert_eq!(
            accepted, expected,
            "CCTV vector {} with flags {flags:?}",
            case.number
        );
        *tally.entry(accepted).or_default() += 1;
    }
    // Both outcomes occur, so the table above is exercised in both directions.
    assert!(tally[&true] > 0 && tally[&false] > 0, "{tally:?}");
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InclusionCase {
    leaf_idx: u64,
    tree_size: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    want_err: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsistencyCase {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    want_err: bool,
}

fn b64(text: &str) -> Vec<u8> {
    STANDARD.decode(text).unwrap()
}

/// Proof elements must be hashes; anything else fails to parse, which is a rejection.
fn parse_proof(proof: &Option<Vec<String>>) -> Option<Vec<Hash>> {
    proof
        .iter()
        .flatten()
        .map(|p| Hash::try_from(b64(p).as_slice()).ok())
        .collect()
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    out.sort();
}

#[test]
fn every_merkle_inclusion_vector_verifies_or_is_rejected_as_it_wants() {
    let mut files = Vec::new();
    json_files(&vectors().join("merkle/testdata/inclusion"), &mut files);
    assert!(files.len() > 50, "found only {} files", files.len());
    for path in &files {
        let case: InclusionCase = read_json(path);
        let verdict = match parse_proof(&case.proof) {
            None => Err(()),
            Some(proof) => verify_inclusion(
                case.leaf_idx,
                case.tree_size,
                &b64(&case.leaf_hash),
                &proof,
                &b64(&case.root),
            )
            .map_err(|_| ()),
        };
        assert_eq!(verdict.is_err(), case.want_err, "{}", path.display());
    }
}

#[test]
fn every_merkle_consistency_vector_verifies_or_is_rejected_as_it_wants() {
    let mut files = Vec::new();
    json_files(&vectors().join("merkle/testdata/consistency"), &mut files);
    assert!(files.len() > 50, "found only {} files", files.len());
    for path in &files {
        let case: ConsistencyCase = read_json(path);
        let verdict = match parse_proof(&case.proof) {
            None => Err(()),
            Some(proof) => verify_consistency(
                case.size1,
                case.size2,
                &proof,
                &b64(&case.root1),
                &b64(&case.root2),
            )
            .map_err(|_| ()),
        };
        assert_eq!(verdict.is_err(), case.want_err, "{}", path.display());
    }
}
