//! `cloudhelp-load`: the command line of the load generator. Parses flags, runs, writes JSON.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use cloudhelp_load::baseline::{BaselineOptions, run_baseline};
use cloudhelp_load::janus::Janus;
use cloudhelp_load::joins::{JoinsOptions, run_joins};
use cloudhelp_load::measure::Limits;
use cloudhelp_load::report::{PageInputs, page, scenario_plot};
use cloudhelp_load::run::run_janus;
use cloudhelp_load::signaling_bench::{SignalingOptions, run_signaling};
use cloudhelp_load::{RunOptions, RunResult, Scenario, Server, Trust, run};

#[derive(Parser)]
#[command(
    name = "cloudhelp-load",
    version,
    about = "Load generator and benchmarks for cloudhelp"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The server to load.
#[derive(Args)]
struct Target {
    /// The server.
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    url: String,
    /// The server's certificate (`<data>/tls/cert.pem`).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Accept any certificate.
    #[arg(long)]
    insecure: bool,
    /// The server's pid, to read its CPU and memory from `/proc`.
    #[arg(long)]
    server_pid: Option<u32>,
}

impl Target {
    fn server(&self) -> Result<Server> {
        let trust = match (&self.ca, self.insecure) {
            (Some(ca), _) => Trust::Ca(ca.clone()),
            (None, true) => Trust::Insecure,
            (None, false) => Trust::PlainOnly,
        };
        Ok(Server::new(&self.url, &trust)?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Flood trials (docs/reliability.md): failed logins, idle TLS connections and a /ws ping
    /// flood, each while a second client probes /readyz every 20 ms.
    Floods {
        #[command(flatten)]
        target: Target,
        /// Failed logins sent (unknown names: a full password check each).
        #[arg(long, default_value_t = 1000)]
        failed_logins: u32,
        /// Failed logins in flight at once.
        #[arg(long, default_value_t = 100)]
        login_concurrency: u32,
        /// Idle TLS connections opened and held.
        #[arg(long, default_value_t = 1000)]
        idle_connections: u32,
        /// Seconds of the /ws ping flood.
        #[arg(long, default_value_t = 5)]
        ws_seconds: u64,
        /// GiB of each streamed upload (a material, and an archive to /api/verify); 0: none.
        #[arg(long, default_value_t = 4)]
        upload_gib: u64,
        /// Nesting depth of the crafted statement sent to /api/verify.
        #[arg(long, default_value_t = 6_000_000)]
        deep_json_depth: usize,
        /// Rounds of the failed-login flood (memory should level off after the first).
        #[arg(long, default_value_t = 3)]
        login_rounds: u32,
        /// Where to write the JSON.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Loads a running server (`cloudhelp serve --demo`) with one scenario.
    Run {
        /// consult, meeting, fanout or audio-only.
        scenario: Scenario,
        #[command(flatten)]
        target: Target,
        /// The load: rooms (consult, audio-only), participants (meeting), subscribers (fanout).
        /// With --ramp, the highest load tried.
        #[arg(long, default_value_t = 1)]
        load: u32,
        /// Raise the load until loss > 1 % or p99 added latency > 20 ms; report the highest held.
        #[arg(long)]
        ramp: bool,
        /// Seconds measured per load.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Load Janus's VideoRoom at this REST address (e.g. http://10.77.0.1:8088/janus) instead
        /// of cloudhelp; --server-pid is then Janus's pid.
        #[arg(long)]
        janus: Option<String>,
        /// The address the test peers bind (with --janus: the namespace's, 10.77.0.1).
        #[arg(long, default_value = "127.0.0.1")]
        peer_ip: std::net::IpAddr,
        /// Video per publisher, kb/s (with --simulcast, the top layer's).
        #[arg(long, default_value_t = 1500)]
        video_kbps: u32,
        /// Publishers send three simulcast layers; subscribers report enough bandwidth for the
        /// top one and climb to it before the window starts.
        #[arg(long)]
        simulcast: bool,
        /// Every subscriber a full webrtc-rs peer (decrypting everything), instead of light peers
        /// for all but one receive-only seat per room (see docs/benchmarks.md).
        #[arg(long)]
        full_subscribers: bool,
        /// Write the JSON result here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Crash trial (docs/reliability.md): starts `cloudhelp serve --demo` on DATA, SIGKILLs it at
    /// a random moment while uploads, signed decisions and key registrations run, starts it
    /// again, and checks that nothing acknowledged was lost or half-written; TRIALS times. Exits 1
    /// when a promise broke.
    Crash {
        /// The cloudhelp binary.
        #[arg(long, default_value = "target/release/cloudhelp")]
        binary: PathBuf,
        /// The data folder (kept across the trials; a fresh one is made when left out).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Kills.
        #[arg(long, default_value_t = 100)]
        trials: u32,
        /// Seeds the kill moments (the same seed kills at the same moments).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Earliest kill, ms after the work starts.
        #[arg(long, default_value_t = 50)]
        min_kill_ms: u64,
        /// Latest kill, ms after the work starts.
        #[arg(long, default_value_t = 1500)]
        max_kill_ms: u64,
        /// Write the JSON report here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Soak trial (docs/reliability.md): three-party rooms held for minutes; after the warm-up the
    /// server's memory must grow < 5 % and its descriptors, threads and tasks not at all, and the
    /// relay must forward every packet. Exits 1 when it does not hold.
    Soak {
        #[command(flatten)]
        target: Target,
        /// Three-party rooms.
        #[arg(long, default_value_t = 20)]
        rooms: u32,
        /// Seconds held, warm-up included.
        #[arg(long, default_value_t = 1800)]
        seconds: u64,
        /// Seconds of warm-up, not judged.
        #[arg(long, default_value_t = 300)]
        warmup: u64,
        /// Video per publisher, kb/s.
        #[arg(long, default_value_t = 300)]
        video_kbps: u32,
        /// Write the JSON result (every per-second sample and the verdict) here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Signaling: approver connections held, memory per connection, queue events to all of them.
    Signaling {
        #[command(flatten)]
        target: Target,
        /// Connections to hold.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Queue events (cases opened) to deliver to every connection.
        #[arg(long, default_value_t = 20)]
        events: usize,
        /// Write the JSON result here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Joins per second: participants joining calls at once, each from `call.join` on an open
    /// `/ws` to its first media received.
    Joins {
        #[command(flatten)]
        target: Target,
        /// Participants joining in the burst (each room's host, in the call before, not counted).
        #[arg(long, default_value_t = 100)]
        joins: usize,
        /// Rooms (cases) they join [default: ⌈joins / 2⌉, a host and two joiners each].
        #[arg(long)]
        rooms: Option<usize>,
        /// Joins in flight at once.
        #[arg(long, default_value_t = 8)]
        join_concurrency: usize,
        /// Video per participant, kb/s.
        #[arg(long, default_value_t = 300)]
        video_kbps: u32,
        /// Seconds a join may take before it counts as failed.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Write the JSON result here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The raw UDP fan-out baseline (no SRTP, no WebRTC).
    Baseline {
        /// Receivers per packet.
        #[arg(long, default_value_t = 7)]
        fanout: usize,
        /// Bytes per packet.
        #[arg(long, default_value_t = 1200)]
        payload: usize,
        /// Seconds measured.
        #[arg(long, default_value_t = 5)]
        duration: u64,
        /// Pin the relay thread to this core.
        #[arg(long)]
        relay_core: Option<usize>,
        /// Write the JSON result here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Writes the benchmarks page from a folder of results (what `scripts/bench` leaves).
    Report {
        /// The folder: `<scenario>.json` (`fanout-simulcast.json` for `--simulcast`), `baseline.json`, `janus-<scenario>.json`, `signaling.json`, `joins.json`, `esign.txt`, `machine.txt`, `commands.txt`.
        #[arg(long)]
        results: PathBuf,
        /// Hand-written notes to include.
        #[arg(long)]
        notes: Option<PathBuf>,
        /// The page; plots go beside it in `benchmarks/`.
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
    },
}

/// A fresh folder under the temporary directory, for a trial's data.
fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("cloudhelp-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    Ok(dir)
}

fn write_json(out: Option<&PathBuf>, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    match out {
        Some(path) => std::fs::write(path, text).with_context(|| path.display().to_string()),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

fn read(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A JSON result in the results folder, parsed; `None` when the run did not write it.
fn result_file<T: serde::de::DeserializeOwned>(
    results: &std::path::Path,
    name: &str,
) -> Result<Option<T>> {
    read(&results.join(name))
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .with_context(|| name.to_string())
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLOUDHELP_LOAD_LOG")
                .unwrap_or_else(|_| "warn,webrtc=error,rtc=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run {
            scenario,
            target,
            load,
            ramp,
            duration,
            video_kbps,
            simulcast,
            full_subscribers,
            janus,
            peer_ip,
            out,
        } => {
            let options = RunOptions {
                ramp,
                duration: Duration::from_secs(duration),
                video_kbps,
                simulcast,
                light_subscribers: !full_subscribers,
                server_pid: target.server_pid,
                limits: Limits::default(),
                peer_ip,
                ..RunOptions::new(scenario, load)
            };
            let result = match janus {
                Some(url) => run_janus(&Janus::new(&url)?, &options).await?,
                None => run(&target.server()?, &options).await?,
            };
            write_json(out.as_ref(), &result)?;
        }
        Command::Crash {
            binary,
            data,
            trials,
            seed,
            min_kill_ms,
            max_kill_ms,
            out,
        } => {
            let scratch = tempfile_dir()?;
            let options = cloudhelp_load::crash::CrashOptions {
                binary,
                data: data.unwrap_or_else(|| scratch.clone()),
                trials,
                seed,
                kill_after: (
                    Duration::from_millis(min_kill_ms),
                    Duration::from_millis(max_kill_ms),
                ),
            };
            let report = cloudhelp_load::crash::crash_trials(&options).await?;
            let _ = std::fs::remove_dir_all(&scratch);
            write_json(out.as_ref(), &report)?;
            eprintln!(
                "crash: {} kills; acknowledged and found after each restart: {} uploads, {} decisions ({} archives verified), {} key registrations; {} published checkpoints proven consistent",
                report.trials,
                report.uploads,
                report.decisions,
                report.archives_verified,
                report.keys,
                report.checkpoints
            );
            if !report.failures.is_empty() {
                eprintln!("crash trial failed:\n{}", report.failures.join("\n"));
                std::process::exit(1);
            }
        }
        Command::Soak {
            target,
            rooms,
            seconds,
            warmup,
            video_kbps,
            out,
        } => {
            let server_pid = target
                .server_pid
                .context("--server-pid: a soak watches the server's memory and descriptors")?;
            let options = cloudhelp_load::soak::SoakOptions {
                rooms,
                duration: Duration::from_secs(seconds),
                warmup: Duration::from_secs(warmup),
                video_kbps,
                server_pid,
                progress: true,
            };
            let result = cloudhelp_load::soak::soak(&target.server()?, &options).await?;
            write_json(out.as_ref(), &result)?;
            let v = &result.verdict;
            eprintln!(
                "soak: {} rooms, {} s judged; memory {} → {} KiB ({:+.1} %), descriptors {} → {}, threads {} → {}, tasks {} → {}, relay forwarded {:.3} %, subscriber loss {:.3} %",
                rooms,
                v.samples,
                v.rss_start_kib,
                v.rss_end_kib,
                v.rss_growth * 100.0,
                v.fds_start,
                v.fds_end,
                v.threads_start,
                v.threads_end,
                v.tasks_start,
                v.tasks_end,
                v.relay_forwarded_share * 100.0,
                v.subscriber_loss * 100.0
            );
            if !v.failures.is_empty() {
                eprintln!("soak did not hold: {}", v.failures.join("; "));
                std::process::exit(1);
            }
        }
        Command::Floods {
            target,
            failed_logins,
            login_concurrency,
            idle_connections,
            ws_seconds,
            upload_gib,
            deep_json_depth,
            login_rounds,
            out,
        } => {
            let options = cloudhelp_load::floods::FloodOptions {
                failed_logins,
                login_concurrency,
                idle_connections,
                ws_seconds,
                ws_login: ("agent".into(), "demo-agent-2026".into()),
                upload_logins: [
                    ("agent".into(), "demo-agent-2026".into()),
                    (
                        "auditor".into(),
                        cloudhelp_load::rooms::demo_password("auditor")?.into(),
                    ),
                ],
                upload_bytes: upload_gib * (1 << 30),
                deep_json_depth,
                login_rounds,
                server_pid: target.server_pid,
            };
            let phases =
                cloudhelp_load::floods::run_floods(target.server()?, target.server()?, &options)
                    .await?;
            for p in &phases {
                eprintln!(
                    "[floods] {:<22} readyz p50 {:>7} ms p99 {:>7} ms max {:>7} ms, {} failed; rss {} MiB (peak {}); {}",
                    p.phase,
                    p.readyz.map_or("-".into(), |r| format!("{:.1}", r.p50)),
                    p.readyz.map_or("-".into(), |r| format!("{:.1}", r.p99)),
                    p.readyz.map_or("-".into(), |r| format!("{:.1}", r.max)),
                    p.readyz_failures,
                    p.rss_kib.map_or("-".into(), |k| (k / 1024).to_string()),
                    p.peak_rss_kib
                        .map_or("-".into(), |k| (k / 1024).to_string()),
                    p.detail
                );
            }
            write_json(out.as_ref(), &phases)?;
        }
        Command::Signaling {
            target,
            connections,
            events,
            out,
        } => {
            let server = target.server()?;
            let options = SignalingOptions {
                connections,
                events,
                concurrency: 32,
                server_pid: target.server_pid,
            };
            let result = run_signaling(&server, &options).await?;
            eprintln!(
                "[signaling] {} connections held, {:.0} connects/s, {} of {} deliveries",
                result.connections,
                result.connects_per_s,
                result.deliveries,
                result.deliveries_expected
            );
            write_json(out.as_ref(), &result)?;
        }
        Command::Joins {
            target,
            joins,
            rooms,
            join_concurrency,
            video_kbps,
            timeout,
            out,
        } => {
            let options = JoinsOptions {
                rooms,
                concurrency: join_concurrency,
                video_kbps,
                timeout: Duration::from_secs(timeout),
                server_pid: target.server_pid,
                ..JoinsOptions::new(joins)
            };
            let result = run_joins(&target.server()?, &options).await?;
            write_json(out.as_ref(), &result)?;
        }
        Command::Baseline {
            fanout,
            payload,
            duration,
            relay_core,
            out,
        } => {
            let options = BaselineOptions {
                fanout,
                payload,
                duration: Duration::from_secs(duration),
                relay_core,
            };
            let result = tokio::task::spawn_blocking(move || run_baseline(&options)).await??;
            eprintln!(
                "[baseline fanout {fanout}] out {:.0} pkt/s, relay thread {:.0} % CPU, {:.0} pkt/s per core",
                result.packets_out_per_s,
                result.relay_cpu_cores * 100.0,
                result.packets_out_per_relay_core
            );
            write_json(out.as_ref(), &result)?;
        }
        Command::Report {
            results,
            notes,
            out,
        } => {
            let plots = out.with_extension("");
            std::fs::create_dir_all(&plots).with_context(|| plots.display().to_string())?;
            let plot_folder = plots
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut inputs = PageInputs {
                machine: read(&results.join("machine.txt")).unwrap_or_default(),
                commands: read(&results.join("commands.txt")).unwrap_or_default(),
                esign: read(&results.join("esign.txt")),
                notes: notes.as_deref().and_then(read).unwrap_or_default(),
                baseline: result_file(&results, "baseline.json")?,
                signaling: result_file(&results, "signaling.json")?,
                joins: result_file(&results, "joins.json")?,
                scenarios: Vec::new(),
                janus: Vec::new(),
            };
            for scenario in [
                "consult",
                "meeting",
                "fanout",
                "fanout-simulcast",
                "audio-only",
            ] {
                for (prefix, list) in [("", &mut inputs.scenarios), ("janus-", &mut inputs.janus)] {
                    let name = format!("{prefix}{scenario}");
                    let Some(result) = result_file::<RunResult>(&results, &format!("{name}.json"))?
                    else {
                        continue;
                    };
                    let file = format!("{name}.svg");
                    std::fs::write(plots.join(&file), scenario_plot(&result))?;
                    list.push((result, format!("{plot_folder}/{file}")));
                }
            }
            std::fs::write(&out, page(&inputs)).with_context(|| out.display().to_string())?;
            eprintln!("wrote {}", out.display());
        }
    }
    Ok(())
}
