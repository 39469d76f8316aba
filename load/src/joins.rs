//! Joins per second: how many call joins our server completes per second when many participants
//! join at once, each from its `call.join` on an open `/ws` to a connected peer connection with
//! media flowing, and how long each took.
//!
//! The set-up is the relay scenarios' ([`crate::rooms`]): cases opened, accepted and invited to.
//! In every room the agent joins first and publishes (the host), untimed; then the burst: every
//! other seat's socket is already open, and the joiners send `call.join`, at most
//! `concurrency` of them in flight at once. A join is done at its first media packet received,
//! which is the host's: so each join's time is its own, not a wait for other joiners to
//! publish.
//!
//! It is a subcommand of its own (`cloudhelp-load joins`, its own `joins.json`) rather than part
//! of `signaling`: a join is more than signaling (a webrtc-rs peer connection, ICE and DTLS with
//! the relay, media), it needs rooms that a call may be joined in, and run apart it keeps the
//! signaling benchmark's held sockets and memory per connection free of peer connections, and
//! `signaling.json` as it was.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use media_relay::ClientMessage;
use media_relay::test_peer::{PeerReport, TestPeerConfig};
use serde::{Deserialize, Serialize};

use crate::LoadError;
use crate::call::CallPeer;
use crate::measure::Percentiles;
use crate::procfs::{self, cores_used};
use crate::rooms::{Accounts, open_rooms};
use crate::run::media_peer_config;
use crate::scenario::{Member, ROOM_CAPACITY, RoomPlan, Seat};
use crate::server::{Server, Socket};

/// How the joins benchmark runs.
#[derive(Debug, Clone)]
pub struct JoinsOptions {
    /// Participants joining in the burst (hosts not counted).
    pub joins: usize,
    /// Rooms (cases) they join; `None`: ⌈joins / 2⌉, consult-sized rooms of a host and two
    /// joiners.
    pub rooms: Option<usize>,
    /// Joins in flight at once: from `call.join` sent to first media received.
    pub concurrency: usize,
    /// How long a join may take, from its `call.join`, before it counts as failed.
    pub timeout: Duration,
    /// Video every participant publishes, kb/s (and Opus audio).
    pub video_kbps: u32,
    /// The server's pid, for its CPU over the burst.
    pub server_pid: Option<u32>,
    /// Print a line a second.
    pub progress: bool,
}

impl JoinsOptions {
    /// Defaults for `joins` participants: consult-sized rooms, 8 at once, 30 s, 300 kb/s video.
    pub fn new(joins: usize) -> Self {
        Self {
            joins,
            rooms: None,
            concurrency: 8,
            timeout: Duration::from_secs(30),
            video_kbps: 300,
            server_pid: None,
            progress: true,
        }
    }

    /// Every participant, host or joiner: Opus and VP8 at `video_kbps`, 30 fps, on loopback.
    fn peer_config(&self) -> TestPeerConfig {
        let loopback = std::net::Ipv4Addr::LOCALHOST.into();
        media_peer_config(loopback, self.video_kbps, 30, true, true)
    }
}

/// What the burst measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinsResult {
    /// Rooms (cases), each with a host in the call before the burst.
    pub rooms: usize,
    /// Participants that tried to join.
    pub joins: usize,
    /// Joins in flight at once.
    pub concurrency: usize,
    /// Joins that reached a connected peer connection with media received.
    pub completed: usize,
    /// Joins refused, or without media within the timeout.
    pub failed_joins: usize,
    /// From the first `call.join` sent to the last completed join's first media, seconds.
    pub burst_s: f64,
    /// Completed joins per second of the burst.
    pub joins_per_s: f64,
    /// Each completed join, from its `call.join` sent to its first media packet received.
    pub join_ms: Option<Percentiles>,
    /// Each completed join, from its `call.join` sent to its peer connection connected.
    pub connected_ms: Option<Percentiles>,
    /// Cores' worth of CPU the server used during the burst.
    pub server_cpu_cores: Option<f64>,
    /// Cores' worth of CPU the generator used during the burst.
    pub generator_cpu_cores: f64,
}

/// The rooms of a burst: in each, the agent as host, then its share of the joiners (the
/// approver, then experts), spread as evenly as the rooms allow; everyone publishes.
pub fn plan_joins(joins: usize, rooms: usize) -> Result<Vec<RoomPlan>, LoadError> {
    if joins == 0 {
        return Err(LoadError::Config {
            setting: "--joins",
            reason: "must be at least 1".into(),
        });
    }
    let per_room = ROOM_CAPACITY as usize - 1;
    if rooms == 0 || rooms > joins || joins.div_ceil(rooms) > per_room {
        return Err(LoadError::Config {
            setting: "--rooms",
            reason: format!(
                "{joins} joins need {} to {joins} rooms: a room holds {ROOM_CAPACITY}, one of them the host",
                joins.div_ceil(per_room)
            ),
        });
    }
    let sends = |seat| Member {
        seat,
        audio: true,
        video: true,
    };
    Ok((0..rooms)
        .map(|room| {
            let joiners = joins / rooms + usize::from(room < joins % rooms);
            let mut members = vec![sends(Seat::Agent), sends(Seat::Approver)];
            members.extend((0..joiners - 1).map(|n| sends(Seat::Expert(n))));
            RoomPlan { members }
        })
        .collect())
}

/// One join's instants; `connected` and `first_media` are `None` where it did not get there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinTimes {
    /// Its `call.join` was sent.
    pub sent: Instant,
    /// Its peer connection connected (ICE and DTLS up).
    pub connected: Option<Instant>,
    /// Its first media packet arrived.
    pub first_media: Option<Instant>,
}

/// The burst's figures from every join's instants. Pure: the instants are the only clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Burst {
    /// Joins with media.
    pub completed: usize,
    /// Joins without.
    pub failed: usize,
    /// From the first `call.join` to the last first media.
    pub length: Duration,
    /// Completed joins per second of `length` (0 when none completed).
    pub joins_per_s: f64,
    /// Join times of the completed joins, to first media.
    pub join_ms: Option<Percentiles>,
    /// Join times of the completed joins, to connected.
    pub connected_ms: Option<Percentiles>,
}

impl Burst {
    /// The figures of a burst of joins.
    pub fn of(joins: &[JoinTimes]) -> Self {
        let done: Vec<(&JoinTimes, Instant)> = joins
            .iter()
            .filter_map(|j| j.first_media.map(|m| (j, m)))
            .collect();
        let length = match (
            joins.iter().map(|j| j.sent).min(),
            done.iter().map(|(_, m)| *m).max(),
        ) {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        };
        let to_media: Vec<Duration> = done
            .iter()
            .map(|(j, m)| m.saturating_duration_since(j.sent))
            .collect();
        let to_connected: Vec<Duration> = done
            .iter()
            .filter_map(|(j, _)| j.connected.map(|c| c.saturating_duration_since(j.sent)))
            .collect();
        Self {
            completed: done.len(),
            failed: joins.len() - done.len(),
            length,
            joins_per_s: if length.is_zero() {
                0.0
            } else {
                done.len() as f64 / length.as_secs_f64()
            },
            join_ms: Percentiles::of_durations(&to_media),
            connected_ms: Percentiles::of_durations(&to_connected),
        }
    }
}

fn first_media(report: &PeerReport) -> Option<Instant> {
    report.tracks.iter().filter_map(|t| t.first_packet_at).min()
}

/// Sends `call.join` on the open socket and waits for the first media; the peer is kept (to
/// leave at the end) whenever it started.
async fn join_one(
    socket: Socket,
    case: i64,
    options: &JoinsOptions,
) -> (JoinTimes, Option<CallPeer>) {
    let sent = Instant::now();
    let config = options.peer_config();
    let mut times = JoinTimes {
        sent,
        connected: None,
        first_media: None,
    };
    let peer = match CallPeer::join_on(socket, case, config).await {
        Ok(peer) => peer,
        Err(err) => {
            tracing::warn!(%err, "a join was refused");
            return (times, None);
        }
    };
    let left = options.timeout.saturating_sub(sent.elapsed());
    match peer
        .peer
        .wait_until(left, |r| first_media(r).is_some())
        .await
    {
        Ok(report) => {
            times.connected = report.connected_at;
            times.first_media = first_media(&report);
        }
        Err(report) => {
            tracing::warn!(connected = report.connected, "a join got no media in time");
            times.connected = report.connected_at;
        }
    }
    (times, Some(peer))
}

fn percentiles_line(p: Option<Percentiles>) -> String {
    p.map_or("-".into(), |p| {
        format!("{:.0}/{:.0}/{:.0} ms", p.p50, p.p95, p.p99)
    })
}

/// Opens the rooms, brings the hosts in, opens the joiners' sockets, then times the burst.
pub async fn run_joins(server: &Server, options: &JoinsOptions) -> Result<JoinsResult, LoadError> {
    let tag = format!("[joins {}]", options.joins);
    let rooms = plan_joins(
        options.joins,
        options.rooms.unwrap_or(options.joins.div_ceil(2)),
    )?;
    let mut accounts = Accounts::login(server).await?;
    let cases = open_rooms(server, &mut accounts, &rooms).await?;
    if options.progress {
        eprintln!("{tag} {} rooms; hosts joining", rooms.len());
    }
    let mut hosts = Vec::with_capacity(rooms.len());
    for (room, case) in rooms.iter().zip(&cases) {
        let token = accounts.token(room.members[0].seat);
        hosts.push(CallPeer::join(server, token, *case, options.peer_config()).await?);
    }
    let connected = futures_util::future::join_all(
        hosts
            .iter()
            .map(|h| h.peer.wait_until(options.timeout, |r| r.connected)),
    )
    .await;
    if connected.iter().any(Result::is_err) {
        return Err(LoadError::Timeout("a host's peer connection".into()));
    }
    // Every joiner's socket is open before the burst: it times joins, not TLS and upgrades.
    let seats: Vec<(i64, Seat)> = rooms
        .iter()
        .zip(&cases)
        .flat_map(|(room, case)| room.members[1..].iter().map(|m| (*case, m.seat)))
        .collect();
    let sockets: Vec<Socket> = futures_util::stream::iter(
        seats
            .iter()
            .map(|(_, seat)| server.websocket(accounts.token(*seat))),
    )
    .buffered(options.concurrency.max(1))
    .try_collect()
    .await?;
    if options.progress {
        eprintln!(
            "{tag} {} sockets open; joining, {} at once",
            sockets.len(),
            options.concurrency.max(1)
        );
    }
    let (joined, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let server_before = procfs_server(options.server_pid)?;
    let generator_before = procfs::read(&procfs::dir_of(None))?;
    let started = Instant::now();
    let burst =
        futures_util::stream::iter(sockets.into_iter().zip(&seats).map(|(socket, (case, _))| {
            let (joined, failed) = (&joined, &failed);
            async move {
                let outcome = join_one(socket, *case, options).await;
                let counter = if outcome.0.first_media.is_some() {
                    joined
                } else {
                    failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
                outcome
            }
        }))
        .buffer_unordered(options.concurrency.max(1))
        .collect::<Vec<_>>();
    tokio::pin!(burst);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let outcomes = loop {
        tokio::select! {
            outcomes = &mut burst => break outcomes,
            _ = tick.tick() => if options.progress {
                eprintln!(
                    "{tag} {:>4.0}s  joined {} of {}  failed {}",
                    started.elapsed().as_secs_f64(),
                    joined.load(Ordering::Relaxed),
                    seats.len(),
                    failed.load(Ordering::Relaxed)
                );
            }
        }
    };
    let wall = started.elapsed();
    let server_after = procfs_server(options.server_pid)?;
    let generator_after = procfs::read(&procfs::dir_of(None))?;
    let (times, peers): (Vec<JoinTimes>, Vec<Option<CallPeer>>) = outcomes.into_iter().unzip();
    let figures = Burst::of(&times);
    if options.progress {
        eprintln!(
            "{tag} {} of {} joined in {:.1} s: {:.1} joins/s, join p50/p95/p99 {}",
            figures.completed,
            times.len(),
            figures.length.as_secs_f64(),
            figures.joins_per_s,
            percentiles_line(figures.join_ms)
        );
    }
    let peers: Vec<CallPeer> = hosts
        .into_iter()
        .chain(peers.into_iter().flatten())
        .collect();
    for peer in &peers {
        peer.peer.send(ClientMessage::Leave);
    }
    // Let the leaves reach the server before the sockets drop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(peers);
    Ok(JoinsResult {
        rooms: rooms.len(),
        joins: times.len(),
        concurrency: options.concurrency.max(1),
        completed: figures.completed,
        failed_joins: figures.failed,
        burst_s: figures.length.as_secs_f64(),
        joins_per_s: figures.joins_per_s,
        join_ms: figures.join_ms,
        connected_ms: figures.connected_ms,
        server_cpu_cores: match (server_before, server_after) {
            (Some(a), Some(b)) => Some(cores_used(&a, &b, wall)),
            _ => None,
        },
        generator_cpu_cores: cores_used(&generator_before, &generator_after, wall),
    })
}

fn procfs_server(pid: Option<u32>) -> Result<Option<procfs::ProcSample>, LoadError> {
    pid.map(|p| procfs::read(&procfs::dir_of(Some(p))))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joiners_spread_evenly_over_rooms_that_each_have_a_host() {
        let rooms = plan_joins(10, 4).unwrap();
        let joiners: Vec<usize> = rooms.iter().map(|r| r.members.len() - 1).collect();
        assert_eq!(joiners, [3, 3, 2, 2]);
        assert!(rooms.iter().all(|r| r.members[0].seat == Seat::Agent));
        assert_eq!(rooms[0].experts(), 2);
        assert_eq!(plan_joins(7, 1).unwrap()[0].members.len(), 8);
        assert!(plan_joins(8, 1).is_err(), "a room holds 8 with its host");
        assert!(plan_joins(3, 4).is_err(), "a room without a joiner");
        assert!(plan_joins(0, 1).is_err());
    }

    #[test]
    fn the_rate_runs_from_the_first_join_sent_to_the_last_first_media() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let join = |sent, connected, media| JoinTimes {
            sent: ms(sent),
            connected: Some(ms(connected)),
            first_media: Some(ms(media)),
        };
        let failed = JoinTimes {
            sent: ms(0),
            connected: None,
            first_media: None,
        };
        let burst = Burst::of(&[
            join(0, 300, 400),
            join(100, 350, 500),
            join(200, 900, 2000),
            failed,
        ]);
        assert_eq!(burst.completed, 3);
        assert_eq!(burst.failed, 1);
        assert_eq!(burst.length, Duration::from_secs(2));
        assert_eq!(burst.joins_per_s, 1.5);
        let p = burst.join_ms.unwrap();
        assert!((390.0..=410.0).contains(&p.p50), "{p:?}");
        assert!((1780.0..=1820.0).contains(&p.max), "{p:?}");
        assert!(burst.connected_ms.unwrap().max < 720.0);
        let none = Burst::of(&[failed]);
        assert_eq!((none.completed, none.joins_per_s), (0, 0.0));
        assert_eq!(none.join_ms, None);
    }
}
