//! Flood trials: while one kind of abuse runs, another client probes `/readyz` every 20 ms; each
//! phase reports the probe's latency and failures and the server's memory (`/proc/<pid>`).
//!
//! Phases: a baseline with nothing else; failed logins (unknown names, so each costs a full
//! argon2 check, many at once); idle TLS connections held open; one `/ws` socket sending pings
//! as fast as the server takes them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::error::LoadError;
use crate::measure::Percentiles;
use crate::procfs;
use crate::server::Server;

/// What to flood with.
#[derive(Debug, Clone)]
pub struct FloodOptions {
    /// Failed logins sent.
    pub failed_logins: u32,
    /// Failed logins in flight at once.
    pub login_concurrency: u32,
    /// Idle TLS connections held.
    pub idle_connections: u32,
    /// Seconds the `/ws` socket sends pings.
    pub ws_seconds: u64,
    /// The login for the `/ws` socket.
    pub ws_login: (String, String),
    /// The logins for the upload floods: an agent (materials) and an auditor (`/api/verify`).
    pub upload_logins: [(String, String); 2],
    /// Bytes of each streamed upload (4 GiB in the trial); 0 leaves those phases out.
    pub upload_bytes: u64,
    /// Nesting depth of the crafted statement sent to `/api/verify`.
    pub deep_json_depth: usize,
    /// How many times the failed-login flood runs (memory should level off after the first).
    pub login_rounds: u32,
    /// The server's pid, for its memory.
    pub server_pid: Option<u32>,
}

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// What ran.
    pub phase: String,
    /// What the flood achieved (requests by status, connections held, messages sent).
    pub detail: String,
    /// `/readyz` latency of the probe during the phase, ms.
    pub readyz: Option<Percentiles>,
    /// Probes that failed or did not answer 200.
    pub readyz_failures: u64,
    /// The server's resident memory at the end of the phase, KiB.
    pub rss_kib: Option<u64>,
    /// The server's peak resident memory so far, KiB.
    pub peak_rss_kib: Option<u64>,
}

/// Probes `/readyz` every 20 ms until `stop`, on a client of its own.
async fn probe(server: Arc<Server>, stop: Arc<AtomicBool>) -> (Vec<Duration>, u64) {
    let mut times = Vec::new();
    let mut failures = 0;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match tokio::time::timeout(Duration::from_secs(5), server.get_status("/readyz")).await {
            Ok(Ok(200)) => times.push(started.elapsed()),
            _ => failures += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (times, failures)
}

/// The `/readyz` client, on a runtime and thread of its own. The floods are sent from this
/// process too, and with it pinned to one core its main runtime has one worker: a probe on that
/// worker waited behind the encryption of the flood's own body (a 4 GiB upload in 1 MiB
/// chunks) and measured the generator, not the server.
struct Prober {
    server: Arc<Server>,
    /// Always `Some` until dropped (a runtime is shut down in the background from async code).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Prober {
    fn new(server: Server) -> Result<Self, LoadError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("readyz-probe")
            .enable_all()
            .build()
            .map_err(|e| LoadError::io("the /readyz probe's runtime", e))?;
        Ok(Self {
            server: Arc::new(server),
            runtime: Some(runtime),
        })
    }

    fn spawn(&self, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(Vec<Duration>, u64)> {
        let runtime = self.runtime.as_ref().expect("present until dropped");
        runtime.spawn(probe(self.server.clone(), stop))
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `flood` while probing; the phase ends when `flood` returns its detail.
async fn phase<F>(
    name: &str,
    prober: &Prober,
    pid: Option<u32>,
    flood: F,
) -> Result<Phase, LoadError>
where
    F: std::future::Future<Output = Result<String, LoadError>>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let probing = prober.spawn(stop.clone());
    let detail = flood.await;
    stop.store(true, Ordering::Relaxed);
    let (times, failures) = probing
        .await
        .map_err(|e| LoadError::Protocol(format!("probe: {e}")))?;
    let memory = pid.and_then(|p| procfs::read(&procfs::dir_of(Some(p))).ok());
    Ok(Phase {
        phase: name.to_string(),
        detail: detail?,
        readyz: Percentiles::of_durations(&times),
        readyz_failures: failures,
        rss_kib: memory.as_ref().map(|m| m.rss_kib),
        peak_rss_kib: memory.as_ref().map(|m| m.peak_rss_kib),
    })
}

/// Runs every phase in turn.
pub async fn run_floods(
    server: Server,
    prober: Server,
    options: &FloodOptions,
) -> Result<Vec<Phase>, LoadError> {
    let server = Arc::new(server);
    let prober = Prober::new(prober)?;
    let pid = options.server_pid;
    let mut phases = Vec::new();

    phases.push(
        phase("baseline", &prober, pid, async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok("nothing else running".to_string())
        })
        .await?,
    );

    let failed = options.failed_logins;
    let concurrency = options.login_concurrency.max(1) as usize;
    for round in 1..=options.login_rounds.max(1) {
        let name = if round == 1 {
            "failed logins".to_string()
        } else {
            format!("failed logins, round {round}")
        };
        phases.push(
        phase(&name, &prober, pid, async {
            let statuses: Vec<u16> = futures_util::stream::iter(0..failed)
                .map(|i| {
                    let server = server.clone();
                    async move {
                        let body = serde_json::json!({ "username": format!("flood-{i}"), "password": "guess" });
                        server.post_status("/api/auth/token", body).await.unwrap_or(0)
                    }
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
            let count = |code: u16| statuses.iter().filter(|&&s| s == code).count();
            Ok(format!(
                "{failed} sent, {concurrency} at once: {} × 401, {} × 429, {} × 503, {} other",
                count(401),
                count(429),
                count(503),
                statuses.len() - count(401) - count(429) - count(503)
            ))
        })
        .await?,
    );
    }
    let wanted = options.idle_connections;
    phases.push(
        phase("idle TLS connections", &prober, pid, async {
            let mut held = Vec::new();
            let mut refused = 0;
            for _ in 0..wanted {
                match server.idle_connection().await {
                    Ok(c) => held.push(c),
                    Err(_) => refused += 1,
                }
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            let detail = format!("{} held for 3 s, {refused} refused", held.len());
            drop(held);
            Ok(detail)
        })
        .await?,
    );

    let seconds = options.ws_seconds;
    let (username, password) = options.ws_login.clone();
    let token = server.login(&username, &password).await?;
    phases.push(
        phase("/ws ping flood", &prober, pid, async {
            let socket = server.websocket(&token).await?;
            let (mut sink, mut stream) = socket.split();
            let answered = Arc::new(AtomicU64::new(0));
            let reading = {
                let answered = answered.clone();
                tokio::spawn(async move {
                    while let Some(Ok(message)) = stream.next().await {
                        if matches!(message, Message::Text(ref t) if t.contains("\"pong\"")) {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            };
            let until = Instant::now() + Duration::from_secs(seconds);
            let mut sent = 0u64;
            while Instant::now() < until {
                let ping = format!("{{\"v\":1,\"type\":\"ping\",\"id\":{sent}}}");
                if sink.send(Message::Text(ping.into())).await.is_err() {
                    break;
                }
                sent += 1;
            }
            let _ = sink.close().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), reading).await;
            Ok(format!(
                "{sent} pings in {seconds} s ({:.0}/s), {} answered",
                sent as f64 / seconds.max(1) as f64,
                answered.load(Ordering::Relaxed)
            ))
        })
        .await?,
    );

    if options.upload_bytes > 0 {
        let [
            (agent_name, agent_password),
            (auditor_name, auditor_password),
        ] = options.upload_logins.clone();
        let agent = server.login(&agent_name, &agent_password).await?;
        let auditor = server.login(&auditor_name, &auditor_password).await?;
        let size = options.upload_bytes;
        let case = server.open_case(&agent, "id-loss").await?;
        let gib = size as f64 / f64::from(1u32 << 30);
        phases.push(
            phase("streamed material upload", &prober, pid, async {
                let path = format!("/api/cases/{case}/materials?filename=flood.png");
                let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
                let status = server.post_stream(&path, &agent, "application/octet-stream", png, size).await?;
                Ok(format!("{gib:.1} GiB offered as one material: answered {status} (0: refused before the body ended)"))
            })
            .await?,
        );
        phases.push(
            phase("streamed archive to verify", &prober, pid, async {
                let status = server
                    .post_stream("/api/verify", &auditor, "application/zip", b"PK\x03\x04".to_vec(), size)
                    .await?;
                Ok(format!("{gib:.1} GiB offered to /api/verify: answered {status} (0: refused before the body ended)"))
            })
            .await?,
        );
        let depth = options.deep_json_depth;
        phases.push(
            phase("deep-JSON statement", &prober, pid, async {
                // A receipt whose statement nests `depth` arrays: the verifier's parse must
                // refuse it at its depth limit, in bounded memory.
                let statement = "[".repeat(depth) + &"]".repeat(depth);
                let receipt = serde_json::json!({
                    "format": "cloudhelp-receipt/1", "statement": statement, "approver_sig": "",
                    "seal_sig": "", "proof": "", "keys": "",
                });
                let started = Instant::now();
                let (status, report) = server
                    .post_bytes(
                        "/api/verify",
                        &auditor,
                        serde_json::to_vec(&receipt).unwrap_or_default(),
                    )
                    .await?;
                Ok(format!(
                    "{:.1} MB statement of depth {depth}: {status}, valid = {}, in {} ms",
                    (2 * depth) as f64 / 1e6,
                    report["valid"],
                    started.elapsed().as_millis()
                ))
            })
            .await?,
        );
    }
    Ok(phases)
}
