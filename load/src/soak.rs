//! The soak trial (docs/reliability.md): three-party rooms held for a long time, watching the
//! server for leaks. After a warm-up, its resident memory must grow less than 5 %, and its open
//! file descriptors and runtime tasks must not grow; the relay must forward every packet it
//! receives to each of the room's other two people (losses at the subscribers beyond that are the
//! generator's own, and are reported).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::LoadError;
use crate::measure::{Limits, ServerState};
use crate::run::{RunOptions, RunResult, Sample, run};
use crate::scenario::Scenario;
use crate::server::Server;

/// How a soak is run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Three-party rooms held.
    pub rooms: u32,
    /// The whole window, warm-up included.
    pub duration: Duration,
    /// The first part of the window, not judged (caches, pools and buffers fill up).
    pub warmup: Duration,
    /// Video per publisher, kb/s.
    pub video_kbps: u32,
    /// The server's pid (for memory and descriptors).
    pub server_pid: u32,
    /// Print a line per second.
    pub progress: bool,
}

/// What a soak found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoakVerdict {
    /// The samples judged (after the warm-up).
    pub samples: usize,
    /// Resident memory at the warm-up's end and at the end (medians of their first and last
    /// tenth), KiB.
    pub rss_start_kib: u64,
    /// See `rss_start_kib`.
    pub rss_end_kib: u64,
    /// (end − start) / start.
    pub rss_growth: f64,
    /// Open file descriptors, highest in the first and in the last tenth.
    pub fds_start: u64,
    /// See `fds_start`.
    pub fds_end: u64,
    /// Threads, highest in the first and in the last tenth.
    pub threads_start: u64,
    /// See `threads_start`.
    pub threads_end: u64,
    /// Runtime tasks, highest in the first and in the last tenth.
    pub tasks_start: u64,
    /// See `tasks_start`.
    pub tasks_end: u64,
    /// Packets the relay forwarded / (packets it received × 2), over the judged window.
    pub relay_forwarded_share: f64,
    /// Loss the subscribers saw (the generator's own included), over the judged window.
    pub subscriber_loss: f64,
    /// Why it failed; empty when it held.
    pub failures: Vec<String>,
}

/// A soak's result: the run, and the verdict on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoakResult {
    /// The run (its per-second samples included).
    pub run: RunResult,
    /// The verdict.
    pub verdict: SoakVerdict,
}

/// The server's state and runtime tasks at one sample.
type Reading = (ServerState, Option<u64>);

/// Most memory growth after the warm-up.
pub const MAX_RSS_GROWTH: f64 = 0.05;
/// Least share of the packets the relay must forward (each to both others).
pub const MIN_FORWARDED_SHARE: f64 = 0.999;

/// Judges the per-second samples of a soak (pure: tested on made-up samples).
pub fn judge(samples: &[Sample], warmup: Duration) -> Result<SoakVerdict, LoadError> {
    let judged: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t_s >= warmup.as_secs_f64())
        .collect();
    let states: Vec<_> = judged
        .iter()
        .filter_map(|s| {
            s.figures
                .server_state
                .map(|st| (st, s.figures.server_tasks))
        })
        .collect();
    if states.len() < 10 {
        return Err(LoadError::Protocol(format!(
            "a soak needs at least 10 samples with the server's state after the warm-up, got {}",
            states.len()
        )));
    }
    let tenth = (states.len() / 10).max(1);
    let (first, last) = (&states[..tenth], &states[states.len() - tenth..]);
    let median = |part: &[Reading]| {
        let mut rss: Vec<u64> = part.iter().map(|(s, _)| s.rss_kib).collect();
        rss.sort_unstable();
        rss[rss.len() / 2]
    };
    let highest =
        |part: &[Reading], f: &dyn Fn(&Reading) -> u64| part.iter().map(f).max().unwrap_or(0);
    let (rss_start_kib, rss_end_kib) = (median(first), median(last));
    let rss_growth = (rss_end_kib as f64 - rss_start_kib as f64) / (rss_start_kib.max(1) as f64);
    let fds = |p: &Reading| p.0.fds;
    let threads = |p: &Reading| p.0.threads;
    let tasks = |p: &Reading| p.1.unwrap_or(0);
    let (packets_in, packets_out, received, lost) =
        judged.iter().fold((0.0, 0.0, 0.0, 0.0), |(i, o, r, l), s| {
            let w = &s.figures;
            let lost = if w.loss < 1.0 {
                w.packets_received_per_s * w.loss / (1.0 - w.loss)
            } else {
                0.0
            };
            (
                i + w.packets_in_per_s * w.seconds,
                o + w.packets_out_per_s * w.seconds,
                r + w.packets_received_per_s * w.seconds,
                l + lost * w.seconds,
            )
        });
    let mut verdict = SoakVerdict {
        samples: judged.len(),
        rss_start_kib,
        rss_end_kib,
        rss_growth,
        fds_start: highest(first, &fds),
        fds_end: highest(last, &fds),
        threads_start: highest(first, &threads),
        threads_end: highest(last, &threads),
        tasks_start: highest(first, &tasks),
        tasks_end: highest(last, &tasks),
        relay_forwarded_share: if packets_in > 0.0 {
            packets_out / (packets_in * 2.0)
        } else {
            0.0
        },
        subscriber_loss: if received + lost > 0.0 {
            lost / (received + lost)
        } else {
            0.0
        },
        failures: Vec::new(),
    };
    let mut failures = Vec::new();
    if verdict.rss_growth >= MAX_RSS_GROWTH {
        failures.push(format!(
            "resident memory grew {:.1} % after the warm-up ({} → {} KiB)",
            verdict.rss_growth * 100.0,
            verdict.rss_start_kib,
            verdict.rss_end_kib
        ));
    }
    for (what, start, end) in [
        ("open file descriptors", verdict.fds_start, verdict.fds_end),
        ("threads", verdict.threads_start, verdict.threads_end),
        ("runtime tasks", verdict.tasks_start, verdict.tasks_end),
    ] {
        if end > start {
            failures.push(format!("{what} grew from {start} to {end}"));
        }
    }
    if verdict.relay_forwarded_share < MIN_FORWARDED_SHARE {
        failures.push(format!(
            "the relay forwarded {:.3} % of what it should",
            verdict.relay_forwarded_share * 100.0
        ));
    }
    verdict.failures = failures;
    Ok(verdict)
}

/// Runs a soak against our server and judges it.
pub async fn soak(server: &Server, options: &SoakOptions) -> Result<SoakResult, LoadError> {
    let run_options = RunOptions {
        duration: options.duration,
        video_kbps: options.video_kbps,
        server_pid: Some(options.server_pid),
        progress: options.progress,
        limits: Limits::default(),
        ..RunOptions::new(Scenario::Consult, options.rooms)
    };
    let run = run(server, &run_options).await?;
    let samples = run
        .steps
        .first()
        .map(|s| s.samples.as_slice())
        .unwrap_or_default();
    let verdict = judge(samples, options.warmup)?;
    Ok(SoakResult { run, verdict })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Window;

    fn sample(t_s: f64, rss_kib: u64, fds: u64, tasks: u64) -> Sample {
        Sample {
            t_s,
            figures: Window {
                seconds: 1.0,
                packets_in_per_s: 1000.0,
                packets_out_per_s: 2000.0,
                bitrate_out_mbps: 1.0,
                packets_received_per_s: 2000.0,
                loss: 0.0,
                added_latency_ms: None,
                server_cpu_cores: Some(0.1),
                generator_cpu_cores: 0.1,
                server_state: Some(ServerState {
                    rss_kib,
                    fds,
                    threads: 8,
                }),
                server_tasks: Some(tasks),
            },
        }
    }

    #[test]
    fn a_server_that_levels_off_after_the_warm_up_holds() {
        // Memory climbs during the warm-up, then stays within 1 %.
        let samples: Vec<Sample> = (0..100)
            .map(|t| {
                let rss = if t < 20 {
                    10_000 + t * 500
                } else {
                    20_000 + (t % 3) * 50
                };
                sample(t as f64, rss, 40, 120)
            })
            .collect();
        let verdict = judge(&samples, Duration::from_secs(20)).unwrap();
        assert_eq!(verdict.failures, Vec::<String>::new(), "{verdict:?}");
        assert_eq!(verdict.samples, 80);
        assert!(verdict.rss_growth.abs() < 0.01);
        assert!((verdict.relay_forwarded_share - 1.0).abs() < 1e-9);
    }

    #[test]
    fn growing_memory_descriptors_or_tasks_fail_the_soak_naming_each() {
        let samples: Vec<Sample> = (0..100)
            .map(|t| sample(t as f64, 20_000 + t * 100, 40 + t / 10, 120 + t))
            .collect();
        let verdict = judge(&samples, Duration::from_secs(10)).unwrap();
        let text = verdict.failures.join("; ");
        assert!(text.contains("resident memory grew"), "{text}");
        assert!(text.contains("open file descriptors grew"), "{text}");
        assert!(text.contains("runtime tasks grew"), "{text}");
        assert!(!text.contains("threads"), "{text}");
    }

    #[test]
    fn a_relay_that_drops_packets_fails_the_soak_and_too_few_samples_are_refused() {
        let mut samples: Vec<Sample> = (0..50).map(|t| sample(t as f64, 20_000, 40, 120)).collect();
        for s in &mut samples {
            s.figures.packets_out_per_s = 1900.0;
        }
        let verdict = judge(&samples, Duration::ZERO).unwrap();
        assert!(
            verdict
                .failures
                .iter()
                .any(|f| f.contains("forwarded 95.000 %")),
            "{verdict:?}"
        );
        assert!(judge(&samples, Duration::from_secs(45)).is_err());
    }
}
