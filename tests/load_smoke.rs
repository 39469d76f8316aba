//! A seconds-long smoke of each load scenario, the signaling and joins benchmarks and the UDP
//! baseline against `cloudhelp serve --demo` as a real process over HTTPS: keeps
//! `cloudhelp-load` and `scripts/bench` working. Not a benchmark: tiny loads, no timed
//! assertions.

use std::process::{Child, Stdio};
use std::time::Duration;

use cloudhelp_load::baseline::{BaselineOptions, run_baseline};
use cloudhelp_load::joins::{JoinsOptions, run_joins};
use cloudhelp_load::signaling_bench::{SignalingOptions, run_signaling};
use cloudhelp_load::{RunOptions, Scenario, Server, Trust, run};

/// The server process; killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(data: &std::path::Path) -> (Process, String) {
    let (child, base) = cloudhelp_load::process::start_demo_server(
        std::path::Path::new(env!("CARGO_BIN_EXE_cloudhelp")),
        data,
        Stdio::null(),
    )
    .unwrap();
    (Process(child), base)
}

/// Every field is in the JSON result (absent figures would be null, not missing).
fn has_fields(json: &serde_json::Value, fields: &[&str]) {
    for field in fields {
        assert!(json.get(field).is_some(), "{field} missing from {json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_moves_packets_at_a_tiny_load_and_reports_every_figure() {
    let data = tempfile::tempdir().unwrap();
    let (process, base) = start_server(data.path());
    let server = Server::new(&base, &Trust::Ca(data.path().join("tls/cert.pem"))).unwrap();
    for (scenario, load, simulcast) in [
        (Scenario::Consult, 1, false),
        (Scenario::Meeting, 3, false),
        (Scenario::Fanout, 2, false),
        (Scenario::Fanout, 2, true),
        (Scenario::AudioOnly, 1, false),
    ] {
        let options = RunOptions {
            duration: Duration::from_secs(2),
            video_kbps: 300,
            server_pid: Some(process.0.id()),
            progress: false,
            simulcast,
            ..RunOptions::new(scenario, load)
        };
        let result = run(&server, &options).await.unwrap();
        let step = &result.steps[0];
        assert_eq!(result.simulcast, simulcast);
        if simulcast {
            // Both subscribers climbed from the lowest layer to the top before the window (a
            // climb may go from the lowest to the top in one switch when the middle layer's
            // keyframe is still awaited as the estimate rises further).
            assert_eq!(step.below_top_layer, 0, "{step:#?}");
            let counters = server.relay_counters().await.unwrap();
            assert!(counters.layer_switches >= 2, "{counters:?}");
        }
        assert_eq!(step.failed_peers, 0, "{scenario:?}: {step:#?}");
        assert!(
            step.figures.packets_out_per_s > 0.0,
            "{scenario:?}: {step:#?}"
        );
        assert!(step.figures.packets_received_per_s > 0.0, "{scenario:?}");
        assert!(step.figures.added_latency_ms.is_some(), "stamped packets");
        assert!(step.join_ms.is_some());
        assert!(step.figures.server_cpu_cores.is_some());
        assert!(step.server_peak_memory_kib.is_some_and(|k| k > 0));
        assert!(step.memory_per_subscriber_stream_kib.is_some());
        assert!(!step.samples.is_empty());
        let json = serde_json::to_value(&result).unwrap();
        has_fields(
            &json,
            &[
                "target",
                "scenario",
                "unit",
                "ramp",
                "video_kbps",
                "limits",
                "steps",
                "highest_held",
            ],
        );
        has_fields(
            &json["steps"][0],
            &[
                "load",
                "rooms",
                "participants",
                "subscriber_streams",
                "failed_peers",
                "join_ms",
                "figures",
                "packets_out_per_relay_core",
                "server_peak_memory_kib",
                "memory_per_subscriber_stream_kib",
                "broken_by",
                "samples",
            ],
        );
        has_fields(
            &json["steps"][0]["figures"],
            &[
                "packets_in_per_s",
                "packets_out_per_s",
                "bitrate_out_mbps",
                "loss",
                "added_latency_ms",
                "server_cpu_cores",
                "generator_cpu_cores",
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_events_reach_every_held_connection() {
    let data = tempfile::tempdir().unwrap();
    let (process, base) = start_server(data.path());
    let server = Server::new(&base, &Trust::Insecure).unwrap();
    let result = run_signaling(
        &server,
        &SignalingOptions {
            connections: 5,
            events: 2,
            concurrency: 5,
            server_pid: Some(process.0.id()),
        },
    )
    .await
    .unwrap();
    assert_eq!(result.connections, 5);
    assert_eq!(result.deliveries, 10, "{result:?}");
    assert!(result.delivery_ms.is_some());
    assert!(result.memory_per_connection_kib.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_joins_completes_every_join_with_media_and_reports_a_rate() {
    let data = tempfile::tempdir().unwrap();
    let (process, base) = start_server(data.path());
    let server = Server::new(&base, &Trust::Insecure).unwrap();
    let options = JoinsOptions {
        rooms: Some(2),
        concurrency: 2,
        server_pid: Some(process.0.id()),
        progress: false,
        ..JoinsOptions::new(4)
    };
    let result = run_joins(&server, &options).await.unwrap();
    assert_eq!((result.rooms, result.joins), (2, 4), "{result:?}");
    assert_eq!(result.completed, 4, "{result:?}");
    assert_eq!(result.failed_joins, 0, "{result:?}");
    assert!(result.burst_s > 0.0, "{result:?}");
    assert!(result.joins_per_s > 0.0, "{result:?}");
    // The burst runs from the first `call.join` to the last first media: no join is longer.
    let join = result.join_ms.expect("join times");
    assert!(
        join.p50 > 0.0 && join.max <= result.burst_s * 1000.0 + 1.0,
        "{result:?}"
    );
    let connected = result.connected_ms.expect("connect times");
    assert!(
        connected.max <= join.max * 1.05,
        "connected before media: {result:?}"
    );
    assert!(
        result.server_cpu_cores.is_some_and(|c| c > 0.0),
        "{result:?}"
    );
    let json = serde_json::to_value(&result).unwrap();
    has_fields(
        &json,
        &[
            "rooms",
            "joins",
            "concurrency",
            "completed",
            "failed_joins",
            "burst_s",
            "joins_per_s",
            "join_ms",
            "connected_ms",
            "server_cpu_cores",
            "generator_cpu_cores",
        ],
    );
}

#[test]
fn the_udp_baseline_fans_packets_out() {
    let result = run_baseline(&BaselineOptions {
        fanout: 3,
        payload: 1200,
        duration: Duration::from_secs(1),
        relay_core: None,
    })
    .unwrap();
    assert!(result.packets_out_per_s > 0.0, "{result:?}");
    assert!(result.packets_received_per_s > 0.0, "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seconds_long_soak_reads_the_servers_memory_descriptors_and_tasks_and_counts_forwarding()
{
    use cloudhelp_load::soak::{SoakOptions, soak};
    let data = tempfile::tempdir().unwrap();
    let (process, base) = start_server(data.path());
    let server = Server::new(&base, &Trust::Ca(data.path().join("tls/cert.pem"))).unwrap();
    let options = SoakOptions {
        rooms: 1,
        duration: Duration::from_secs(14),
        warmup: Duration::from_secs(3),
        video_kbps: 200,
        server_pid: process.0.id(),
        progress: false,
    };
    let result = soak(&server, &options).await.unwrap();
    let v = &result.verdict;
    // Not judged at this length (memory is still settling); the trial's machinery is: the
    // server's state is read every second, and the relay's forwarding is counted.
    assert!(v.samples >= 10, "{v:?}");
    assert!(v.rss_start_kib > 0 && v.rss_end_kib > 0, "{v:?}");
    assert!(
        v.fds_start > 0 && v.threads_start > 0 && v.tasks_start > 0,
        "{v:?}"
    );
    assert!(v.relay_forwarded_share > 0.9, "{v:?}");
    let json = serde_json::to_value(&result).unwrap();
    assert!(
        json["run"]["steps"][0]["samples"][0]["figures"]["server_state"]["fds"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flood_phase_runs_while_readyz_is_probed_and_oversized_uploads_are_refused() {
    use cloudhelp_load::floods::{FloodOptions, run_floods};
    use cloudhelp_load::rooms::demo_password;
    let data = tempfile::tempdir().unwrap();
    let (process, base) = start_server(data.path());
    let trust = Trust::Ca(data.path().join("tls/cert.pem"));
    let login = |name: &str| (name.to_string(), demo_password(name).unwrap().to_string());
    let options = FloodOptions {
        failed_logins: 4,
        login_concurrency: 2,
        idle_connections: 3,
        ws_seconds: 1,
        ws_login: login("agent"),
        upload_logins: [login("agent"), login("auditor")],
        // Over the material limit (50 MiB): refused before the end.
        upload_bytes: 60 << 20,
        deep_json_depth: 100_000,
        login_rounds: 2,
        server_pid: Some(process.0.id()),
    };
    let phases = run_floods(
        Server::new(&base, &trust).unwrap(),
        Server::new(&base, &trust).unwrap(),
        &options,
    )
    .await
    .unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p.phase.as_str()).collect();
    assert_eq!(
        names,
        [
            "baseline",
            "failed logins",
            "failed logins, round 2",
            "idle TLS connections",
            "/ws ping flood",
            "streamed material upload",
            "streamed archive to verify",
            "deep-JSON statement"
        ]
    );
    for p in &phases {
        assert!(p.readyz.is_some() && p.rss_kib.is_some(), "{p:?}");
    }
    let detail = |name: &str| &phases.iter().find(|p| p.phase == name).unwrap().detail;
    let upload = detail("streamed material upload");
    assert!(
        upload.contains("answered 413") || upload.contains("answered 0"),
        "{upload}"
    );
    let deep = detail("deep-JSON statement");
    assert!(deep.contains("200, valid = false"), "{deep}");
}
