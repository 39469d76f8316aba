//! The figures of a measuring window, from two snapshots taken at its ends. Pure: the snapshots
//! carry the instants they were taken at, so nothing here reads a clock.

use std::time::{Duration, Instant};

use media_relay::test_peer::PeerReport;
use media_relay::test_peer::delay::DelayHistogram;
use serde::{Deserialize, Serialize};

use crate::procfs::{ProcSample, cores_used};
use crate::server::RelayCounters;

/// What the subscribers have received so far, summed over every peer and track.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Packets received.
    pub packets: u64,
    /// Packets missing (gaps not filled).
    pub lost: u64,
    /// Delays of the stamped packets.
    pub delays: DelayHistogram,
}

impl Received {
    /// Adds one peer's report.
    pub fn add(&mut self, report: &PeerReport) {
        for track in &report.tracks {
            self.packets += track.counts.packets;
            self.lost += track.counts.lost;
            self.delays.merge(&track.delays);
        }
    }
}

/// Everything read at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was taken.
    pub at: Instant,
    /// The server's relay counters.
    pub relay: RelayCounters,
    /// The server process, when its pid is known.
    pub server: Option<ProcSample>,
    /// The generator itself.
    pub generator: ProcSample,
    /// What the subscribers received.
    pub received: Received,
    /// Tasks alive on the server's runtime (our server only).
    pub relay_tasks: Option<u64>,
}

/// Delay percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Percentiles {
    /// From a histogram; `None` when it is empty.
    pub fn of(h: &DelayHistogram) -> Option<Self> {
        Some(Self {
            p50: ms(h.quantile(0.50)?),
            p95: ms(h.quantile(0.95)?),
            p99: ms(h.quantile(0.99)?),
            max: ms(h.max()),
        })
    }

    /// Of a list of durations (join times); `None` when empty.
    pub fn of_durations(values: &[Duration]) -> Option<Self> {
        let mut h = DelayHistogram::default();
        for v in values {
            h.record(*v);
        }
        Self::of(&h)
    }
}

/// The figures of a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Its length in seconds.
    pub seconds: f64,
    /// RTP packets per second into the relay.
    pub packets_in_per_s: f64,
    /// RTP packets per second out of the relay.
    pub packets_out_per_s: f64,
    /// Megabits per second out of the relay (RTP payload and headers as the relay counts them).
    pub bitrate_out_mbps: f64,
    /// Packets per second the subscribers received.
    pub packets_received_per_s: f64,
    /// Lost / (received + lost) at the subscribers.
    pub loss: f64,
    /// Publisher-to-subscriber delay of stamped packets.
    pub added_latency_ms: Option<Percentiles>,
    /// Cores' worth of CPU the server used.
    pub server_cpu_cores: Option<f64>,
    /// Cores' worth of CPU the generator used.
    pub generator_cpu_cores: f64,
    /// The server at the window's end: resident memory (KiB), open file descriptors, threads.
    #[serde(default)]
    pub server_state: Option<ServerState>,
    /// Tasks alive on the server's runtime at the window's end (ours only).
    #[serde(default)]
    pub server_tasks: Option<u64>,
}

/// What a soak watches for leaks, read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerState {
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// Threads.
    pub threads: u64,
}

/// The figures between two snapshots.
pub fn window(a: &Snapshot, b: &Snapshot) -> Window {
    let wall = b.at.saturating_duration_since(a.at);
    let seconds = wall.as_secs_f64().max(1e-9);
    let rate = |before: u64, after: u64| after.saturating_sub(before) as f64 / seconds;
    let received = b.received.packets.saturating_sub(a.received.packets);
    let lost = b.received.lost.saturating_sub(a.received.lost);
    let loss = if received + lost == 0 {
        0.0
    } else {
        lost as f64 / (received + lost) as f64
    };
    Window {
        seconds: wall.as_secs_f64(),
        packets_in_per_s: rate(a.relay.packets_received, b.relay.packets_received),
        packets_out_per_s: rate(a.relay.packets_forwarded, b.relay.packets_forwarded),
        bitrate_out_mbps: rate(a.relay.bytes_forwarded, b.relay.bytes_forwarded) * 8.0 / 1e6,
        packets_received_per_s: received as f64 / seconds,
        loss,
        added_latency_ms: Percentiles::of(&b.received.delays.since(&a.received.delays)),
        server_cpu_cores: match (&a.server, &b.server) {
            (Some(x), Some(y)) => Some(cores_used(x, y, wall)),
            _ => None,
        },
        generator_cpu_cores: cores_used(&a.generator, &b.generator, wall),
        server_state: b.server.map(|s| ServerState {
            rss_kib: s.rss_kib,
            fds: s.fds,
            threads: s.threads,
        }),
        server_tasks: b.relay_tasks,
    }
}

/// The limits a ramp step must stay within to count as held.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Highest loss (fraction).
    pub max_loss: f64,
    /// Highest p99 added latency, ms.
    pub max_p99_ms: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_loss: 0.01,
            max_p99_ms: 20.0,
        }
    }
}

impl Limits {
    /// Why a window broke the limits, or `None` when it held. A window where peers failed to
    /// join, or where nothing was received, does not hold.
    pub fn broken_by(&self, w: &Window, failed_peers: usize) -> Option<String> {
        if failed_peers > 0 {
            return Some(format!("{failed_peers} peers did not join"));
        }
        if w.packets_received_per_s <= 0.0 {
            return Some("nothing was received".into());
        }
        if w.loss > self.max_loss {
            return Some(format!(
                "loss {:.2}% > {:.2}%",
                w.loss * 100.0,
                self.max_loss * 100.0
            ));
        }
        match w.added_latency_ms {
            Some(p) if p.p99 > self.max_p99_ms => Some(format!(
                "p99 added latency {:.1} ms > {} ms",
                p.p99, self.max_p99_ms
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(at: Instant, forwarded: u64, received: u64, lost: u64, cpu_ms: u64) -> Snapshot {
        let mut delays = DelayHistogram::default();
        for _ in 0..received {
            delays.record(Duration::from_millis(2));
        }
        Snapshot {
            at,
            relay: RelayCounters {
                packets_received: forwarded / 2,
                packets_forwarded: forwarded,
                bytes_forwarded: forwarded * 1000,
                layer_switches: 0,
                runtime_tasks: 0,
            },
            relay_tasks: None,
            server: Some(ProcSample {
                cpu: Duration::from_millis(cpu_ms),
                ..ProcSample::default()
            }),
            generator: ProcSample::default(),
            received: Received {
                packets: received,
                lost,
                delays,
            },
        }
    }

    #[test]
    fn a_window_turns_counter_differences_into_rates_loss_and_cpu() {
        let t0 = Instant::now();
        let a = snapshot(t0, 1000, 900, 0, 100);
        let b = snapshot(t0 + Duration::from_secs(2), 21_000, 20_700, 200, 1100);
        let w = window(&a, &b);
        assert_eq!(w.packets_out_per_s, 10_000.0);
        assert_eq!(w.packets_in_per_s, 5_000.0);
        assert_eq!(w.bitrate_out_mbps, 80.0);
        assert!((w.loss - 0.01).abs() < 1e-9);
        assert_eq!(w.server_cpu_cores, Some(0.5));
        let p = w.added_latency_ms.unwrap();
        assert!((2.0..2.1).contains(&p.p99), "{p:?}");
        assert_eq!(Limits::default().broken_by(&w, 0), None);
        assert!(Limits::default().broken_by(&w, 1).is_some());
        let lossy = snapshot(t0 + Duration::from_secs(2), 21_000, 20_700, 400, 1100);
        assert!(
            Limits::default()
                .broken_by(&window(&a, &lossy), 0)
                .unwrap()
                .starts_with("loss")
        );
    }
}
