//! The speed figures, measured in one run (not a timed test):
//! seal and verify a large archive against `sha256sum` of the same bytes, log appends per second,
//! and the time of an inclusion proof at one million entries.
//!
//! Run: `cargo bench -p esign` (release build). `ESIGN_BENCH_MIB` sets the payload size (default
//! 1024); `ESIGN_BENCH_LOG` the log size (default 1_000_000).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use esign::archive::{ArchiveWriter, PayloadSummary, Signers};
use esign::entry::{KeyRegistration, KeyRole, LogEntry};
use esign::keys::{LogKey, SealKey, key_id};
use esign::log::{KeyRecord, TransparencyLog};
use esign::merkle::{MemoryStore, MerkleTree, leaf_hash};
use esign::verify::{Trust, verify_file};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Wall time of `sha256sum FILE` (coreutils), the reference for hashing-bound work.
fn sha256sum(path: &Path) -> Duration {
    let start = Instant::now();
    let status = Command::new("sha256sum")
        .arg(path)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("sha256sum must be installed for this benchmark");
    assert!(status.success());
    start.elapsed()
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("esign benchmark: run it with `cargo bench -p esign`");
        return;
    }
    let mib = env_u64("ESIGN_BENCH_MIB", 1024);
    let log_size = env_u64("ESIGN_BENCH_LOG", 1_000_000);
    let dir = tempfile::tempdir_in(std::env::var("ESIGN_BENCH_DIR").unwrap_or("/tmp".into()))
        .expect("a temporary folder");

    // A payload file of pseudo-random bytes (so nothing could shortcut on zeros).
    let payload = dir.path().join("recording.webm");
    {
        let mut out = BufWriter::new(File::create(&payload).unwrap());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for chunk in block.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            out.write_all(&block).unwrap();
        }
        out.flush().unwrap();
    }
    sha256sum(&payload); // warm the page cache
    let reference_payload = sha256sum(&payload);

    // Seal: pack, sign, log, finish.
    let approver = SigningKey::from_bytes(&[2; 32]);
    let seal = SealKey::from_signing_key(SigningKey::from_bytes(&[3; 32]));
    let log_key =
        LogKey::from_signing_key("bench.example/log", SigningKey::from_bytes(&[1; 32])).unwrap();
    let trust = Trust::new(vec![log_key.verifier()]);
    let mut log = TransparencyLog::new(MemoryStore::new(), log_key);
    let mut records = Vec::new();
    for (key, role) in [
        (seal.verifying_key(), KeyRole::Seal),
        (approver.verifying_key(), KeyRole::Approver),
    ] {
        let registration = KeyRegistration::new(&key, "bench", role);
        let at = log
            .append(&LogEntry::KeyRegistration(registration.clone()))
            .unwrap();
        records.push(KeyRecord {
            registration,
            registered_at: at,
            revocation: None,
        });
    }
    let archive = dir.path().join("case.zip");
    let start = Instant::now();
    let mut w = ArchiveWriter::new(
        BufWriter::with_capacity(1 << 20, File::create(&archive).unwrap()),
        "bench-1",
    )
    .unwrap();
    w.add_file(
        "data/recordings/call.webm",
        &mut BufReader::with_capacity(1 << 20, File::open(&payload).unwrap()),
        std::fs::metadata(&payload).unwrap().len(),
    )
    .unwrap();
    w.add_bytes("data/events.jsonl", b"{\"event\":\"opened\"}\n")
        .unwrap();
    let pending = w
        .finish_payload(PayloadSummary {
            decision: serde_json::json!({"outcome": "approved"}),
            signers: Signers {
                approver: Some(key_id(&approver.verifying_key())),
                seal: seal.key_id(),
            },
            previous_statement: None,
            update: None,
            bagging_date: "2026-11-26".into(),
        })
        .unwrap();
    let signature = approver.sign(&pending.signing_bytes());
    let sealed = pending
        .seal(&signature, &approver.verifying_key(), &seal)
        .unwrap();
    let index = log.append(&sealed.log_entry()).unwrap();
    let mut out = sealed
        .finish(log.evidence(index, &records).unwrap())
        .unwrap();
    out.flush().unwrap();
    out.into_inner().unwrap().sync_all().unwrap();
    let seal_time = start.elapsed();

    sha256sum(&archive);
    let reference_archive = sha256sum(&archive);
    let start = Instant::now();
    let report = verify_file(&archive, &trust);
    let verify_time = start.elapsed();
    assert!(report.passed(), "{report}");

    println!("payload {mib} MiB");
    println!(
        "seal   {:>8.3} s   sha256sum of the payload {:>8.3} s   ratio {:.2} (goal <= 1.5)",
        seal_time.as_secs_f64(),
        reference_payload.as_secs_f64(),
        seal_time.as_secs_f64() / reference_payload.as_secs_f64()
    );
    println!(
        "verify {:>8.3} s   sha256sum of the archive {:>8.3} s   ratio {:.2} (goal <= 1.3)",
        verify_time.as_secs_f64(),
        reference_archive.as_secs_f64(),
        verify_time.as_secs_f64() / reference_archive.as_secs_f64()
    );

    // Log appends: typed statement entries (canonical check, PAE, leaf hash, tree update).
    let mut log = TransparencyLog::new(
        MemoryStore::new(),
        LogKey::generate("bench.example/log").unwrap(),
    );
    let bodies: Vec<Vec<u8>> = (0..log_size)
        .map(|i| format!("{{\"case_id\":\"case-{i}\",\"version\":1}}").into_bytes())
        .collect();
    let start = Instant::now();
    for body in bodies {
        log.append(&LogEntry::Statement(body)).unwrap();
    }
    let append = start.elapsed();
    println!(
        "append {log_size} statement entries: {:.0} entries/s (goal >= 20000)",
        log_size as f64 / append.as_secs_f64()
    );

    // Tree only (leaf hashes given), then inclusion proofs at that size.
    let mut tree = MerkleTree::new(MemoryStore::new());
    for i in 0..log_size {
        tree.append_leaf_hash(leaf_hash(&i.to_le_bytes())).unwrap();
    }
    let size = tree.size().unwrap();
    let probes = 100_000u64;
    let mut x = 12345u64;
    let start = Instant::now();
    for _ in 0..probes {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let proof = tree.inclusion_proof((x >> 11) % size, size).unwrap();
        std::hint::black_box(proof);
    }
    let per_proof = start.elapsed() / probes as u32;
    println!("inclusion proof at {size} entries: {per_proof:?} each (goal < 50 µs)");
}
