//! The crash trial (docs/reliability.md): the server is killed with SIGKILL at a random moment
//! while uploads, signed decisions and key registrations (log appends) run at once, then started
//! again on the same data folder, many times over. After each restart:
//!
//! - every upload the server acknowledged (201) is listed with its digest, and its bytes hash to it;
//! - every decision it acknowledged has an archive that `esign::verify` accepts, and no case shows a
//!   decision without its archive, or an archive that does not verify (nothing half-written);
//! - every key registration it acknowledged is listed;
//! - the log's checkpoint after the restart is consistent with every checkpoint published before
//!   (a consistency proof from the server, checked against the pinned log key).
//!
//! Kill moments come from a seeded generator, so a failing trial can be run again exactly.

use std::io::Cursor;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::LoadError;
use crate::rooms::demo_password;
use crate::server::{Server, Token, Trust};

/// How the trials run.
#[derive(Debug, Clone)]
pub struct CrashOptions {
    /// The `cloudhelp` binary.
    pub binary: PathBuf,
    /// The data folder, kept across trials (created on the first).
    pub data: PathBuf,
    /// How many kills.
    pub trials: u32,
    /// Seeds the kill moments and payload sizes.
    pub seed: u64,
    /// Kill moments are drawn uniformly from this range after the work starts.
    pub kill_after: (Duration, Duration),
}

/// What the trials found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CrashReport {
    /// Kills done.
    pub trials: u32,
    /// When each kill came, ms after the work started.
    pub kill_after_ms: Vec<u64>,
    /// Uploads acknowledged (and checked after the restart).
    pub uploads: usize,
    /// Decisions acknowledged (each archive verified).
    pub decisions: usize,
    /// Key registrations acknowledged.
    pub keys: usize,
    /// Checkpoints published before a kill, each proven consistent with the one after.
    pub checkpoints: usize,
    /// Archives verified in all (acknowledged ones and every other the cases show).
    pub archives_verified: usize,
    /// Every broken promise, naming the trial and what.
    pub failures: Vec<String>,
}

/// splitmix64: a small, seeded, reproducible generator (not for secrets).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low).max(1)
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes()[..chunk.len()]);
        }
        out
    }
}

/// What the server acknowledged during one trial's work.
#[derive(Default)]
struct Acknowledged {
    uploads: Vec<(i64, String)>,
    decisions: Vec<i64>,
    keys: Vec<String>,
    checkpoints: Vec<String>,
    cases: Vec<i64>,
}

/// The demo accounts' tokens (sessions are in the database, so they outlive a restart).
struct Accounts {
    agent: Token,
    approver: Token,
    auditor: Token,
}

/// A small PNG-typed payload of `size` bytes (the server sniffs the type from the first bytes).
fn payload(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    while bytes.len() < size {
        bytes.extend_from_slice(&rng.next().to_le_bytes());
    }
    bytes.truncate(size.max(16));
    bytes
}

/// `GET path` as `token`, answering JSON.
async fn get_json(
    server: &Server,
    token: &Token,
    path: &str,
) -> Result<serde_json::Value, LoadError> {
    server.json(Method::GET, path, Some(token), None).await
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Uploads into one case until the server goes away; records each 201.
async fn upload_loop(server: &Server, a: &Accounts, ack: &Mutex<Acknowledged>, seed: u64) {
    let mut rng = Rng(seed);
    let Ok(case) = server.open_case(&a.agent, "id-loss").await else {
        return;
    };
    ack.lock()
        .unwrap_or_else(|p| p.into_inner())
        .cases
        .push(case);
    for n in 0.. {
        let size = rng.between(1 << 10, 256 << 10) as usize;
        let bytes = payload(&mut rng, size);
        let path = format!("/api/cases/{case}/materials?filename=crash-{n}.png");
        match server.post_bytes(&path, &a.agent, bytes).await {
            Ok((201, answer)) => {
                let sha = answer["sha256"].as_str().unwrap_or_default().to_string();
                ack.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .uploads
                    .push((case, sha));
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Decides cases, each signed with a key of this loop's own, until the server goes away.
async fn decision_loop(server: &Server, a: &Accounts, ack: &Mutex<Acknowledged>, seed: u64) {
    let mut rng = Rng(seed);
    let key = SigningKey::from_bytes(&rng.bytes::<32>());
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = json!({ "public_key": b64.encode(key.verifying_key().as_bytes()) });
    let Ok(registered) = server
        .json(Method::POST, "/api/keys", Some(&a.approver), Some(body))
        .await
    else {
        return;
    };
    let key_id = registered["key_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ack.lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys
        .push(key_id.clone());
    loop {
        let Ok(case) = server.open_case(&a.agent, "id-loss").await else {
            return;
        };
        ack.lock()
            .unwrap_or_else(|p| p.into_inner())
            .cases
            .push(case);
        let steps = async {
            server.act(&a.approver, case, "accept", json!({})).await?;
            let methods = json!({ "methods": ["id_card_shown"] });
            server
                .act(&a.approver, case, "identity-check", methods)
                .await?;
            let decision = json!({ "decision": "approve", "reason": "同意", "key_id": key_id });
            let path = format!("/api/cases/{case}/decision");
            let prepared = server
                .json(Method::POST, &path, Some(&a.approver), Some(decision))
                .await?;
            let to_sign = b64
                .decode(prepared["signing_bytes"].as_str().unwrap_or_default())
                .map_err(|e| LoadError::Protocol(format!("signing_bytes: {e}")))?;
            let signature = b64.encode(key.sign(&to_sign).to_bytes());
            let path = format!("/api/cases/{case}/decision/seal");
            server
                .json(
                    Method::POST,
                    &path,
                    Some(&a.approver),
                    Some(json!({ "signature": signature })),
                )
                .await
        };
        match steps.await {
            Ok(_) => ack
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .decisions
                .push(case),
            Err(_) => return,
        }
    }
}

/// Registers keys (log appends) and reads the published checkpoint, until the server goes away.
async fn log_loop(server: &Server, a: &Accounts, ack: &Mutex<Acknowledged>, seed: u64) {
    let mut rng = Rng(seed);
    let b64 = base64::engine::general_purpose::STANDARD;
    loop {
        let key = SigningKey::from_bytes(&rng.bytes::<32>());
        let body = json!({ "public_key": b64.encode(key.verifying_key().as_bytes()) });
        match server
            .json(Method::POST, "/api/keys", Some(&a.approver), Some(body))
            .await
        {
            Ok(registered) => {
                let id = registered["key_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                ack.lock().unwrap_or_else(|p| p.into_inner()).keys.push(id);
            }
            Err(_) => return,
        }
        match server.get_bytes("/api/log/checkpoint", &a.auditor).await {
            Ok((200, note)) => ack
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .checkpoints
                .push(String::from_utf8_lossy(&note).into_owned()),
            _ => return,
        }
    }
}

fn start(options: &CrashOptions) -> Result<(Child, Server), LoadError> {
    let (child, base) =
        crate::process::start_demo_server(&options.binary, &options.data, Stdio::null())?;
    let server = Server::new(&base, &Trust::Ca(options.data.join("tls/cert.pem")))?;
    Ok((child, server))
}

/// The log size a checkpoint note states (its second line).
fn note_size(note: &str) -> u64 {
    note.lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or(0)
}

/// Runs the trials.
pub async fn crash_trials(options: &CrashOptions) -> Result<CrashReport, LoadError> {
    let mut report = CrashReport::default();
    let mut rng = Rng(options.seed);
    let (mut child, server) = start(options)?;
    let accounts = Accounts {
        agent: server.login("agent", demo_password("agent")?).await?,
        approver: server.login("approver", demo_password("approver")?).await?,
        auditor: server.login("auditor", demo_password("auditor")?).await?,
    };
    let (_, trust_json) = server
        .get_bytes("/api/log/trust", &accounts.auditor)
        .await?;
    let trust = esign::verify::Trust::from_json(&trust_json)
        .map_err(|e| LoadError::Protocol(format!("/api/log/trust: {e}")))?;
    let accounts = Arc::new(accounts);
    let mut server = server;
    let mut published: Vec<String> = Vec::new();
    let mut all_uploads: Vec<(i64, String)> = Vec::new();
    let mut all_keys: Vec<String> = Vec::new();
    for trial in 1..=options.trials {
        let ack = Arc::new(Mutex::new(Acknowledged::default()));
        let (low, high) = options.kill_after;
        let kill_after = rng.between(low.as_millis() as u64, high.as_millis() as u64);
        let work = {
            let (server, a, ack) = (server.clone(), accounts.clone(), ack.clone());
            let seed = rng.next();
            tokio::spawn(async move {
                tokio::join!(
                    upload_loop(&server, &a, &ack, seed),
                    decision_loop(&server, &a, &ack, seed ^ 1),
                    log_loop(&server, &a, &ack, seed ^ 2),
                );
            })
        };
        tokio::time::sleep(Duration::from_millis(kill_after)).await;
        child
            .kill()
            .map_err(|e| LoadError::io(&options.binary, e))?; // SIGKILL
        let _ = child.wait();
        // Every request still in flight fails now; what was answered before is acknowledged.
        let _ = work.await;
        report.trials += 1;
        report.kill_after_ms.push(kill_after);
        let ack = std::mem::take(&mut *ack.lock().unwrap_or_else(|p| p.into_inner()));
        (child, server) = start(options)?;
        let failures = check(
            &server,
            &accounts,
            &trust,
            &ack,
            &published,
            &mut report,
            trial,
        )
        .await?;
        report.failures.extend(failures);
        // Uploads of earlier trials must still be listed; keys too.
        all_uploads.extend(ack.uploads.iter().cloned());
        all_keys.extend(ack.keys.iter().cloned());
        report.failures.extend(
            still_there(&server, &accounts, &all_uploads, &all_keys)
                .await?
                .into_iter()
                .map(|f| format!("trial {trial}: {f}")),
        );
        report.uploads += ack.uploads.len();
        report.decisions += ack.decisions.len();
        report.keys += ack.keys.len();
        report.checkpoints += ack.checkpoints.len();
        if let Some(last) = ack.checkpoints.last() {
            published.push(last.clone());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(report)
}

/// The checks after one restart; returns what broke.
async fn check(
    server: &Server,
    a: &Accounts,
    trust: &esign::verify::Trust,
    ack: &Acknowledged,
    published: &[String],
    report: &mut CrashReport,
    trial: u32,
) -> Result<Vec<String>, LoadError> {
    let mut failures = Vec::new();
    let mut fail = |what: String| failures.push(format!("trial {trial}: {what}"));
    // Acknowledged uploads: listed, and their bytes hash to the digest.
    for (case, sha) in &ack.uploads {
        let listed = get_json(server, &a.auditor, &format!("/api/cases/{case}/materials")).await?;
        let Some(material) = listed
            .as_array()
            .and_then(|m| m.iter().find(|m| m["sha256"] == sha.as_str()))
        else {
            fail(format!(
                "acknowledged upload {sha} of case {case} is not listed"
            ));
            continue;
        };
        let id = material["id"].as_i64().unwrap_or_default();
        let (status, bytes) = server
            .get_bytes(&format!("/api/cases/{case}/materials/{id}"), &a.auditor)
            .await?;
        if status != 200 || sha256_hex(&bytes) != *sha {
            fail(format!(
                "acknowledged upload {sha} of case {case}: {status}, bytes hash to {}",
                sha256_hex(&bytes)
            ));
        }
    }
    // Every case this trial touched: an approval has its archive, and every archive verifies.
    for case in &ack.cases {
        let view = get_json(server, &a.auditor, &format!("/api/cases/{case}")).await?;
        let statements = view["statements"].as_array().cloned().unwrap_or_default();
        let decided = matches!(
            view["state"].as_str(),
            Some("approved" | "rejected" | "issued")
        );
        if decided && statements.is_empty() {
            fail(format!(
                "case {case} is {} without an archive",
                view["state"]
            ));
        }
        if ack.decisions.contains(case) && !decided {
            fail(format!(
                "acknowledged decision of case {case} is lost: the case is {}",
                view["state"]
            ));
        }
        for s in &statements {
            let sequence = s["sequence"].as_i64().unwrap_or(1);
            let (status, bytes) = server
                .get_bytes(
                    &format!("/api/cases/{case}/archive?sequence={sequence}"),
                    &a.auditor,
                )
                .await?;
            let verdict = esign::verify::verify(Cursor::new(&bytes), trust);
            report.archives_verified += 1;
            if status != 200 || !verdict.passed() {
                fail(format!(
                    "archive {sequence} of case {case} ({status}) does not verify: {}",
                    verdict
                        .failures()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    // The log after the restart extends every checkpoint published before it.
    let (_, now) = server.get_bytes("/api/log/checkpoint", &a.auditor).await?;
    let now = String::from_utf8_lossy(&now).into_owned();
    let new = note_size(&now);
    for old_note in published.iter().chain(&ack.checkpoints) {
        let old = note_size(old_note);
        let proof = get_json(
            server,
            &a.auditor,
            &format!("/api/log/consistency?old={old}&new={new}"),
        )
        .await;
        let consistent = proof.ok().and_then(|p| {
            let hashes: Option<Vec<esign::merkle::Hash>> = p["proof"]
                .as_array()?
                .iter()
                .map(|h| {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(h.as_str()?)
                        .ok()?;
                    bytes.try_into().ok()
                })
                .collect();
            esign::log::verify_checkpoint_consistency(
                old_note.as_bytes(),
                now.as_bytes(),
                &hashes?,
                trust.log_keys(),
            )
            .ok()
        });
        if consistent.is_none() {
            fail(format!(
                "the checkpoint after the restart (size {new}) is not proven consistent with the one published at size {old}"
            ));
        }
    }
    Ok(failures)
}

/// Earlier trials' acknowledged uploads are still listed, and every acknowledged key.
async fn still_there(
    server: &Server,
    a: &Accounts,
    uploads: &[(i64, String)],
    keys: &[String],
) -> Result<Vec<String>, LoadError> {
    let mut failures = Vec::new();
    let mut cases: Vec<i64> = uploads.iter().map(|(c, _)| *c).collect();
    cases.sort_unstable();
    cases.dedup();
    for case in cases {
        let listed = get_json(server, &a.auditor, &format!("/api/cases/{case}/materials")).await?;
        let shas: Vec<&str> = listed
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["sha256"].as_str()).collect())
            .unwrap_or_default();
        for (_, sha) in uploads.iter().filter(|(c, _)| *c == case) {
            if !shas.contains(&sha.as_str()) {
                failures.push(format!("upload {sha} of case {case} is gone"));
            }
        }
    }
    let listed = get_json(server, &a.approver, "/api/keys").await?;
    let ids: Vec<&str> = listed
        .as_array()
        .map(|k| k.iter().filter_map(|k| k["key_id"].as_str()).collect())
        .unwrap_or_default();
    for key in keys {
        if !ids.contains(&key.as_str()) {
            failures.push(format!("acknowledged key {key} is not listed"));
        }
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_moments_and_payloads_are_reproducible_from_the_seed() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        let moments: Vec<u64> = (0..5).map(|_| a.between(50, 1500)).collect();
        assert_eq!(
            moments,
            (0..5).map(|_| b.between(50, 1500)).collect::<Vec<_>>()
        );
        assert!(moments.iter().all(|m| (50..1500).contains(m)));
        assert_ne!(
            moments,
            (0..5).map(|_| Rng(8).between(50, 1500)).collect::<Vec<_>>()
        );
        let png = payload(&mut Rng(1), 4096);
        assert_eq!(png.len(), 4096);
        assert!(png.starts_with(b"\x89PNG"));
    }

    #[test]
    fn a_checkpoint_notes_size_is_its_second_line() {
        assert_eq!(note_size("cloudhelp.local/log\n42\nAAAA=\n\n— sig\n"), 42);
        assert_eq!(note_size("garbage"), 0);
    }
}
