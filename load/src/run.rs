//! Runs a scenario against a server: accounts, cases, rooms of test peers, a measuring window
//! with progress lines, and a ramp that raises the load until the limits break.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use media_relay::test_peer::TestPeerConfig;
use media_relay::{ClientMessage, MediaKind};
use serde::{Deserialize, Serialize};

use crate::LoadError;
use crate::call::{CallPeer, LightCallPeer};
use crate::janus::{Janus, JanusPeer, create_room};
use crate::measure::{Limits, Percentiles, Received, Snapshot, Window, window};
use crate::procfs;
use crate::rooms::{Accounts, open_rooms};
use crate::scenario::{RoomPlan, Scenario, plan};
use crate::server::{RelayCounters, Server};
use media_relay::test_peer::PeerReport;

/// How a run goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Which calls.
    pub scenario: Scenario,
    /// The load (see [`Scenario::unit`]); with `ramp`, the highest load tried.
    pub load: u32,
    /// Raise the load step by step until the limits break.
    pub ramp: bool,
    /// Length of each measuring window.
    pub duration: Duration,
    /// Video bitrate each publisher sends, kb/s (delta frames; keyframes are 4× larger).
    pub video_kbps: u32,
    /// Video frames per second.
    pub fps: u32,
    /// The server's pid, to read its CPU and memory from `/proc`.
    pub server_pid: Option<u32>,
    /// How long peers may take to join and receive everything.
    pub join_timeout: Duration,
    /// Peers joining at once.
    pub join_concurrency: usize,
    /// Print a line per second.
    pub progress: bool,
    /// The limits of a held step.
    pub limits: Limits,
    /// The address the test peers bind (Janus needs a non-loopback one).
    pub peer_ip: std::net::IpAddr,
    /// Publishers send three simulcast layers (`video_kbps` is the top one's, the others a third
    /// and a ninth of it); every peer reports twice that as its bandwidth, and the window starts
    /// once every subscriber has climbed to the top layer.
    pub simulcast: bool,
    /// Receive-only seats are light peers (`media_relay::test_peer::light`: packets counted from
    /// their headers, not decrypted), all but the first of each room, which stays a full peer and
    /// measures the latency: so the generator is lighter than the relay it loads. Not with
    /// `simulcast` (a light peer cannot read which layer it gets).
    pub light_subscribers: bool,
}

impl RunOptions {
    /// Defaults for a scenario: 1.5 Mb/s at 30 fps, 10 s windows.
    pub fn new(scenario: Scenario, load: u32) -> Self {
        Self {
            scenario,
            load,
            ramp: false,
            duration: Duration::from_secs(10),
            video_kbps: 1500,
            fps: 30,
            server_pid: None,
            join_timeout: Duration::from_secs(30),
            join_concurrency: 8,
            progress: true,
            limits: Limits::default(),
            peer_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            simulcast: false,
            light_subscribers: true,
        }
    }

    /// Whether seat `index` of `room` is a light peer (see `light_subscribers`).
    fn light(&self, room: &RoomPlan, index: usize) -> bool {
        let receive_only = |m: &crate::scenario::Member| !(m.audio || m.video);
        self.light_subscribers
            && !self.simulcast
            && receive_only(&room.members[index])
            && room.members[..index].iter().any(receive_only)
    }

    fn peer_config(&self, audio: bool, video: bool) -> TestPeerConfig {
        let config = media_peer_config(self.peer_ip, self.video_kbps, self.fps, audio, video);
        if !self.simulcast {
            return config;
        }
        TestPeerConfig {
            simulcast: video,
            reported_bandwidth: Some(u64::from(self.video_kbps) * 2_000),
            ..config
        }
    }
}

/// A test peer that publishes `audio` (Opus, 50 packets/s) and `video` (VP8 at `video_kbps` and
/// `fps`, keyframes 4× a delta frame), stamps every payload with its send time and binds
/// `peer_ip`.
pub(crate) fn media_peer_config(
    peer_ip: std::net::IpAddr,
    video_kbps: u32,
    fps: u32,
    audio: bool,
    video: bool,
) -> TestPeerConfig {
    let fps = fps.max(1);
    let frame_bytes = (video_kbps as usize * 1000 / 8 / fps as usize).max(10);
    TestPeerConfig {
        publish_audio: audio,
        publish_video: video,
        video_fps: fps,
        delta_frame_bytes: frame_bytes,
        keyframe_bytes: frame_bytes * 4,
        stamp_packets: true,
        udp_addr: std::net::SocketAddr::new(peer_ip, 0),
        ..TestPeerConfig::default()
    }
}

/// One per-second line of a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the window began.
    pub t_s: f64,
    /// The second's figures.
    pub figures: Window,
}

/// The result of one load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// The load (see `unit`).
    pub load: u32,
    /// Rooms (cases) used.
    pub rooms: usize,
    /// Peers in all rooms.
    pub participants: usize,
    /// Streams the relay forwards (one per track per receiver).
    pub subscriber_streams: usize,
    /// Peers that did not join or receive everything in time.
    pub failed_peers: usize,
    /// With simulcast: receiving peers that had not climbed to the top layer within the join
    /// timeout when the window started (they were measured where they were).
    #[serde(default)]
    pub below_top_layer: usize,
    /// Time from opening `/ws` to the peer connection being up.
    pub join_ms: Option<Percentiles>,
    /// The whole window's figures.
    pub figures: Window,
    /// Outbound packets per second per core of relay CPU.
    pub packets_out_per_relay_core: Option<f64>,
    /// The server's peak resident memory (VmHWM), KiB.
    pub server_peak_memory_kib: Option<u64>,
    /// Server memory grown since before the rooms opened, per forwarded stream, KiB.
    pub memory_per_subscriber_stream_kib: Option<f64>,
    /// Why the step broke the limits (`None`: it held).
    pub broken_by: Option<String>,
    /// Per-second figures.
    pub samples: Vec<Sample>,
}

/// The result of a run (one load, or a ramp).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The server kind loaded.
    pub target: String,
    /// The scenario.
    pub scenario: Scenario,
    /// What a unit of load is.
    pub unit: String,
    /// A ramp.
    pub ramp: bool,
    /// Video bitrate per publisher, kb/s.
    pub video_kbps: u32,
    /// Publishers sent three simulcast layers.
    #[serde(default)]
    pub simulcast: bool,

    /// Limits of a held step.
    pub limits: Limits,
    /// The steps run.
    pub steps: Vec<StepResult>,
    /// The highest load that held (ramp), or the load if it held.
    pub highest_held: Option<u32>,
}

/// The server loaded: ours (its relay counters from `/metrics`), or Janus (no counters of its
/// own: packets in are what the publishers sent, packets out what the subscribers received).
enum Target<'a> {
    Cloudhelp(&'a Server, Accounts),
    Janus(&'a Janus, u64),
}

impl Target<'_> {
    fn name(&self) -> &'static str {
        match self {
            Target::Cloudhelp(..) => "cloudhelp",
            Target::Janus(..) => "janus",
        }
    }
}

/// A peer of the run: joined through the server's `/ws` (full or light), or a Janus publisher
/// or subscriber.
enum Held {
    Call(CallPeer),
    Light(LightCallPeer),
    Janus(JanusPeer),
}

impl Held {
    fn report(&self) -> PeerReport {
        match self {
            Held::Call(p) => p.peer.report(),
            Held::Light(p) => p.peer.report(),
            Held::Janus(p) => p.peer.report(),
        }
    }

    async fn wait_until(
        &self,
        timeout: Duration,
        done: impl FnMut(&PeerReport) -> bool,
    ) -> Result<PeerReport, Box<PeerReport>> {
        match self {
            Held::Call(p) => p.peer.wait_until(timeout, done).await,
            Held::Light(p) => p.peer.wait_until(timeout, done).await,
            Held::Janus(p) => p.peer.wait_until(timeout, done).await,
        }
    }

    fn leave(&self) {
        match self {
            Held::Call(p) => p.peer.send(ClientMessage::Leave),
            // A light peer's socket closing is its leave.
            Held::Light(_) => {}
            Held::Janus(p) => p.peer.send(ClientMessage::Leave),
        }
    }
}

struct Joined {
    peer: Held,
    expected: usize,
    started: Instant,
}

async fn snapshot(
    target: &Target<'_>,
    pid: Option<u32>,
    peers: &[Joined],
) -> Result<Snapshot, LoadError> {
    let mut received = Received::default();
    let mut counted = RelayCounters::default();
    for joined in peers {
        let report = joined.peer.report();
        received.add(&report);
        counted.packets_received += report.packets_sent;
        for track in &report.tracks {
            counted.packets_forwarded += track.counts.packets;
            counted.bytes_forwarded += track.counts.bytes;
        }
    }
    let (relay, relay_tasks) = match target {
        Target::Cloudhelp(server, _) => {
            let relay = server.relay_counters().await?;
            let tasks = relay.runtime_tasks;
            (relay, Some(tasks))
        }
        Target::Janus(..) => (counted, None),
    };
    Ok(Snapshot {
        at: Instant::now(),
        relay,
        relay_tasks,
        server: pid
            .map(|p| procfs::read(&procfs::dir_of(Some(p))))
            .transpose()?,
        generator: procfs::read(&procfs::dir_of(None))?,
        received,
    })
}

fn progress_line(scenario: Scenario, load: u32, t: f64, w: &Window) -> String {
    let p99 = w
        .added_latency_ms
        .map_or("-".to_string(), |p| format!("{:.1} ms", p.p99));
    let server = w
        .server_cpu_cores
        .map_or("-".to_string(), |c| format!("{:.0}%", c * 100.0));
    format!(
        "[{} {load}] {t:>4.0}s  in {:>7.0} pkt/s  out {:>7.0} pkt/s  {:>6.1} Mb/s  loss {:.2}%  p99 {p99}  relay cpu {server}  generator cpu {:.0}%",
        scenario.name(),
        w.packets_in_per_s,
        w.packets_out_per_s,
        w.bitrate_out_mbps,
        w.loss * 100.0,
        w.generator_cpu_cores * 100.0
    )
}

/// Opens the rooms on our server and joins every seat over `/ws`.
async fn join_cloudhelp(
    server: &Server,
    accounts: &mut Accounts,
    options: &RunOptions,
    rooms: &[RoomPlan],
) -> Result<Vec<Result<Joined, LoadError>>, LoadError> {
    let cases = open_rooms(server, accounts, rooms).await?;
    let mut joins = Vec::new();
    for (room, case) in rooms.iter().zip(&cases) {
        for (index, member) in room.members.iter().enumerate() {
            let config = options.peer_config(member.audio, member.video);
            let token = accounts.token(member.seat).clone();
            let expected = room.expected_tracks(index);
            let case = *case;
            let light = options.light(room, index);
            joins.push(async move {
                let started = Instant::now();
                let peer = if light {
                    LightCallPeer::join(server, &token, case, config.udp_addr)
                        .await
                        .map(Held::Light)
                } else {
                    CallPeer::join(server, &token, case, config)
                        .await
                        .map(Held::Call)
                };
                peer.map(|peer| Joined {
                    peer,
                    expected,
                    started,
                })
            });
        }
    }
    Ok(futures_util::stream::iter(joins)
        .buffer_unordered(options.join_concurrency.max(1))
        .collect()
        .await)
}

/// Creates the rooms on Janus, publishes every sender, then subscribes every receiver to the
/// others' feeds (one subscriber connection per seat).
async fn join_janus(
    janus: &Janus,
    first_room: u64,
    options: &RunOptions,
    rooms: &[RoomPlan],
) -> Result<Vec<Result<Joined, LoadError>>, LoadError> {
    let mut joined = Vec::new();
    for (n, room) in rooms.iter().enumerate() {
        let id = first_room + n as u64;
        create_room(janus, id, room.members.len()).await?;
        let mut feeds = vec![None; room.members.len()];
        for (index, member) in room.members.iter().enumerate() {
            if !(member.audio || member.video) {
                continue;
            }
            let started = Instant::now();
            let config = options.peer_config(member.audio, member.video);
            match JanusPeer::publish(janus, id, config).await {
                Ok((peer, feed)) => {
                    // Janus knows a feed only once its connection is up.
                    if peer
                        .peer
                        .wait_until(options.join_timeout, |r| r.connected)
                        .await
                        .is_ok()
                    {
                        feeds[index] = Some(feed);
                    }
                    joined.push(Ok(Joined {
                        peer: Held::Janus(peer),
                        expected: 0,
                        started,
                    }));
                }
                Err(err) => joined.push(Err(err)),
            }
        }
        for index in 0..room.members.len() {
            let others: Vec<u64> = feeds
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != index)
                .filter_map(|(_, f)| *f)
                .collect();
            if others.is_empty() {
                continue;
            }
            let started = Instant::now();
            let config = options.peer_config(false, false);
            let light = options.light(room, index);
            joined.push(
                JanusPeer::subscribe(janus, id, &others, config, light)
                    .await
                    .map(|peer| Joined {
                        peer: Held::Janus(peer),
                        expected: room.expected_tracks(index),
                        started,
                    }),
            );
        }
    }
    Ok(joined)
}

/// Runs one load: rooms up, peers joined, one measuring window, peers gone.
async fn run_step(
    target: &mut Target<'_>,
    options: &RunOptions,
    load: u32,
) -> Result<StepResult, LoadError> {
    let rooms = plan(options.scenario, load)?;
    let before = options
        .server_pid
        .map(|p| procfs::read(&procfs::dir_of(Some(p))))
        .transpose()?;
    if options.progress {
        eprintln!(
            "[{} {load}] {} rooms; joining",
            options.scenario.name(),
            rooms.len()
        );
    }
    let results = match target {
        Target::Cloudhelp(server, accounts) => {
            join_cloudhelp(server, accounts, options, &rooms).await?
        }
        Target::Janus(janus, next_room) => {
            let first = *next_room;
            *next_room += rooms.len() as u64;
            join_janus(janus, first, options, &rooms).await?
        }
    };
    let participants = rooms.iter().map(|r| r.members.len()).sum::<usize>();
    let mut peers = Vec::new();
    let mut failed = 0;
    for result in results {
        match result {
            Ok(joined) => peers.push(joined),
            Err(err) => {
                failed += 1;
                tracing::warn!(%err, "a peer did not join");
            }
        }
    }
    let connections = peers.len() + failed;
    // Everyone connected and receiving every track they should.
    let mut join_times = Vec::new();
    let waits = peers.iter().map(|j| {
        let expected = j.expected;
        j.peer.wait_until(options.join_timeout, move |r| {
            r.connected && r.tracks.iter().filter(|t| t.counts.packets > 0).count() >= expected
        })
    });
    for (joined, outcome) in peers
        .iter()
        .zip(futures_util::future::join_all(waits).await)
    {
        match outcome {
            Ok(report) => {
                if let Some(at) = report.connected_at {
                    join_times.push(at.saturating_duration_since(joined.started));
                }
            }
            Err(_) => failed += 1,
        }
    }
    if options.progress {
        eprintln!(
            "[{} {load}] {} of {} peers receiving; measuring {} s",
            options.scenario.name(),
            connections - failed,
            connections,
            options.duration.as_secs()
        );
    }
    let mut below_top_layer = 0;
    if options.simulcast {
        // Every subscriber climbs to the top layer first (each climb waits out the relay's
        // up-hold); one that does not within the join timeout is measured where it is.
        let top = media_relay::test_peer::SIMULCAST_LAYERS
            .iter()
            .map(|(_, rank, _)| *rank)
            .max();
        let climbs = peers.iter().map(|j| {
            // A peer that receives nothing (the fanout's publisher) has nothing to climb; one that
            // does must have its video before it can be on the top layer (an empty list of
            // tracks would pass at once and measure before the climb).
            let receives = j.expected > 0;
            j.peer.wait_until(options.join_timeout, move |r| {
                let mut video = r.live_tracks(MediaKind::Video).peekable();
                !receives || (video.peek().is_some() && video.all(|t| t.counts.layer == top))
            })
        });
        below_top_layer = futures_util::future::join_all(climbs)
            .await
            .iter()
            .filter(|climbed| climbed.is_err())
            .count();
    }
    // A second for the joins' keyframes and retransmissions to settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = snapshot(target, options.server_pid, &peers).await?;
    let mut last = first.clone();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let end = tokio::time::Instant::now() + options.duration;
    while tokio::time::Instant::now() < end {
        tick.tick().await;
        let now = snapshot(target, options.server_pid, &peers).await?;
        let figures = window(&last, &now);
        let t_s = now.at.saturating_duration_since(first.at).as_secs_f64();
        if options.progress {
            eprintln!("{}", progress_line(options.scenario, load, t_s, &figures));
        }
        samples.push(Sample { t_s, figures });
        last = now;
    }
    let figures = window(&first, &last);
    for joined in &peers {
        joined.peer.leave();
    }
    // Let the leaves reach the server before the sockets drop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(peers);
    let subscriber_streams: usize = rooms.iter().map(RoomPlan::forwarded_streams).sum();
    let memory_per_subscriber_stream_kib = match (&before, &last.server) {
        (Some(b), Some(a)) if subscriber_streams > 0 => {
            Some(a.rss_kib.saturating_sub(b.rss_kib) as f64 / subscriber_streams as f64)
        }
        _ => None,
    };
    Ok(StepResult {
        load,
        rooms: rooms.len(),
        participants,
        subscriber_streams,
        failed_peers: failed,
        below_top_layer,
        join_ms: Percentiles::of_durations(&join_times),
        packets_out_per_relay_core: figures
            .server_cpu_cores
            .filter(|c| *c > 0.0)
            .map(|c| figures.packets_out_per_s / c),
        server_peak_memory_kib: last.server.map(|s| s.peak_rss_kib),
        memory_per_subscriber_stream_kib,
        broken_by: options.limits.broken_by(&figures, failed),
        figures,
        samples,
    })
}

/// Runs the scenario: one load, or a ramp that stops at the first step that breaks the limits.
pub async fn run(server: &Server, options: &RunOptions) -> Result<RunResult, LoadError> {
    let accounts = Accounts::login(server).await?;
    run_target(Target::Cloudhelp(server, accounts), options).await
}

/// The same scenario against Janus's VideoRoom (`options.server_pid`: Janus's pid).
pub async fn run_janus(janus: &Janus, options: &RunOptions) -> Result<RunResult, LoadError> {
    // Room ids of this process's own, so that a second run on the same Janus does not collide.
    let first_room = u64::from(std::process::id()) * 10_000;
    run_target(Target::Janus(janus, first_room), options).await
}

async fn run_target(mut target: Target<'_>, options: &RunOptions) -> Result<RunResult, LoadError> {
    let loads = if options.ramp {
        options.scenario.ramp(options.load)
    } else {
        vec![options.load]
    };
    let mut steps = Vec::new();
    let mut highest_held = None;
    for load in loads {
        let step = run_step(&mut target, options, load).await?;
        let held = step.broken_by.is_none();
        if options.progress {
            eprintln!(
                "[{} {load}] {}",
                options.scenario.name(),
                step.broken_by.as_deref().unwrap_or("held")
            );
        }
        steps.push(step);
        if !held {
            break;
        }
        highest_held = Some(load);
        // Rooms close and sockets go before the next step is measured.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(RunResult {
        target: target.name().into(),
        scenario: options.scenario,
        unit: options.scenario.unit().into(),
        ramp: options.ramp,
        video_kbps: options.video_kbps,
        simulcast: options.simulcast,
        limits: options.limits,
        steps,
        highest_held,
    })
}
