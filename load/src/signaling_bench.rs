//! The signaling benchmark: authenticated `/ws` connections held and the server's memory per
//! connection, and how fast a queue event reaches every connected approver.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::LoadError;
use crate::measure::Percentiles;
use crate::procfs;
use crate::rooms::{ITEM, demo_password};
use crate::server::Server;

/// How the signaling benchmark runs.
#[derive(Debug, Clone)]
pub struct SignalingOptions {
    /// Approver connections to hold.
    pub connections: usize,
    /// Cases opened, one after another; each is a `queue.added` to every connection.
    pub events: usize,
    /// Connections opened at once.
    pub concurrency: usize,
    /// The server's pid, for its memory.
    pub server_pid: Option<u32>,
}

/// What it measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalingResult {
    /// Connections opened and held.
    pub connections: usize,
    /// Connections that could not be opened.
    pub failed_connections: usize,
    /// Connections opened per second (TLS, WebSocket upgrade, `hello` and `queue.snapshot`).
    pub connects_per_s: f64,
    /// Server memory grown per held connection, KiB.
    pub memory_per_connection_kib: Option<f64>,
    /// Events sent.
    pub events: usize,
    /// Deliveries expected (connections × events) and received.
    pub deliveries_expected: usize,
    /// Deliveries received within 10 s.
    pub deliveries: usize,
    /// Time from sending `POST /api/cases` to each connection receiving its `queue.added`.
    pub delivery_ms: Option<Percentiles>,
}

/// Opens the connections as the demo approver, opens cases as the demo agent, times deliveries.
pub async fn run_signaling(
    server: &Server,
    options: &SignalingOptions,
) -> Result<SignalingResult, LoadError> {
    let approver = server.login("approver", demo_password("approver")?).await?;
    let agent = server.login("agent", demo_password("agent")?).await?;
    let memory = || {
        options
            .server_pid
            .map(|p| procfs::read(&procfs::dir_of(Some(p))))
            .transpose()
    };
    let before = memory()?;
    let (arrivals, mut arrived) = mpsc::unbounded_channel::<(i64, Instant)>();
    let started = Instant::now();
    let sockets: Vec<Result<_, LoadError>> =
        futures_util::stream::iter((0..options.connections).map(|_| server.websocket(&approver)))
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
    let connect_time = started.elapsed();
    let mut readers = Vec::new();
    let mut failed = 0;
    for socket in sockets {
        let Ok(mut socket) = socket else {
            failed += 1;
            continue;
        };
        let arrivals = arrivals.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if value["type"] == "queue.added"
                    && let Some(case) = value["item"]["case_id"].as_i64()
                    && arrivals.send((case, Instant::now())).is_err()
                {
                    break;
                }
            }
        }));
    }
    let connected = readers.len();
    // Let every connection get its hello and snapshot before the memory is read.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = memory()?;
    let mut sent_at = HashMap::new();
    for _ in 0..options.events {
        let at = Instant::now();
        let case = server.open_case(&agent, ITEM).await?;
        sent_at.insert(case, at);
    }
    let expected = connected * options.events;
    let mut delays = Vec::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while delays.len() < expected {
        match tokio::time::timeout_at(deadline, arrived.recv()).await {
            Ok(Some((case, at))) => {
                if let Some(sent) = sent_at.get(&case) {
                    delays.push(at.saturating_duration_since(*sent));
                }
            }
            _ => break,
        }
    }
    for reader in readers {
        reader.abort();
    }
    Ok(SignalingResult {
        connections: connected,
        failed_connections: failed,
        connects_per_s: connected as f64 / connect_time.as_secs_f64().max(1e-9),
        memory_per_connection_kib: match (before, held) {
            (Some(b), Some(h)) if connected > 0 => {
                Some(h.rss_kib.saturating_sub(b.rss_kib) as f64 / connected as f64)
            }
            _ => None,
        },
        events: options.events,
        deliveries_expected: expected,
        deliveries: delays.len(),
        delivery_ms: Percentiles::of_durations(&delays),
    })
}
