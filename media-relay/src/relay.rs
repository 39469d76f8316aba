//! The relay handle the server holds: configuration, the room directory, and `join`.
//! Each room is one task that owns its participants (a sans-IO core, `room/`, driven by
//! `room/task.rs`); this file only finds or starts that task, through the directory.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::directory::{RoomCommand, RoomDirectory};
use crate::error::RelayError;
use crate::messages::{ParticipantId, RoomId};
use crate::metrics::RelayMetrics;
use crate::participant::Participant;
use crate::recording::{RecordedTrack, RecordingError};
use crate::room::task::run_room;
use crate::socket::UdpMux;
use crate::turn::{IceServer, TurnConfig};

/// Largest room the relay accepts (issue 3: agent, approver and invited experts).
pub const MAX_ROOM_SIZE: usize = 8;

/// How the relay binds and what it tells peers.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The UDP addresses the relay binds, one socket each, shared by every peer connection of
    /// every room (port 0: one ephemeral port chosen at bind). A wildcard address needs
    /// `public_ip`.
    pub udp_addrs: Vec<SocketAddr>,
    /// The public address of a 1:1 NAT in front of the relay: host candidates announce it instead
    /// of the local address (same port).
    pub public_ip: Option<IpAddr>,
    /// A TURN server whose time-limited credentials clients get (see [`Relay::ice_servers_for`]).
    pub turn: Option<TurnConfig>,
    /// Participants per room, at most [`MAX_ROOM_SIZE`].
    pub max_participants: usize,
    /// At most one PLI per publisher track per this interval.
    pub keyframe_request_interval: Duration,
    /// Queued messages to one participant before it counts as too slow and is removed.
    pub outbound_queue: usize,
    /// How long a participant whose signaling handle was dropped, or whose connection failed,
    /// keeps its place (the others see nothing) before it has left. Zero: it leaves at once.
    /// Within it, [`Relay::resume`] gives the place back.
    pub resume_grace: Duration,
    /// How often every participant is sent everyone's `connection_quality`; zero: never.
    pub quality_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            udp_addrs: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            public_ip: None,
            turn: None,
            max_participants: MAX_ROOM_SIZE,
            keyframe_request_interval: Duration::from_millis(500),
            outbound_queue: 256,
            resume_grace: Duration::ZERO,
            quality_interval: Duration::from_secs(5),
        }
    }
}

impl RelayConfig {
    fn validate(&self) -> Result<(), RelayError> {
        if self.udp_addrs.is_empty() {
            return Err(RelayError::Config(
                "udp_addrs is empty: give at least one address to bind, e.g. 127.0.0.1:0".into(),
            ));
        }
        if self.public_ip.is_none() && self.udp_addrs.iter().any(|a| a.ip().is_unspecified()) {
            return Err(RelayError::Config(
                "a wildcard UDP address (0.0.0.0 or ::) needs the public address peers reach \
                 (public_ip): candidates must name a reachable address"
                    .into(),
            ));
        }
        if !(1..=MAX_ROOM_SIZE).contains(&self.max_participants) {
            return Err(RelayError::Config(format!(
                "max_participants must be 1..={MAX_ROOM_SIZE}, got {}",
                self.max_participants
            )));
        }
        if self.outbound_queue == 0 {
            return Err(RelayError::Config(
                "outbound_queue must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// The SFU. Cheap to clone; all clones share rooms and metrics.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<RelayInner>,
}

pub(crate) struct RelayInner {
    pub(crate) config: RelayConfig,
    pub(crate) metrics: Arc<RelayMetrics>,
    /// The shared sockets, bound on first use (or by [`Relay::bind`]).
    mux: tokio::sync::OnceCell<Arc<UdpMux>>,
    pub(crate) directory: RoomDirectory,
}

impl Relay {
    /// A relay with this configuration; no socket is bound until [`Relay::bind`] or the first join.
    pub fn new(config: RelayConfig) -> Result<Self, RelayError> {
        config.validate()?;
        Ok(Self {
            inner: Arc::new(RelayInner {
                config,
                metrics: Arc::new(RelayMetrics::default()),
                mux: tokio::sync::OnceCell::new(),
                directory: RoomDirectory::default(),
            }),
        })
    }

    /// Binds the relay's UDP sockets now (otherwise the first join does), so that a busy port
    /// fails at start-up; returns the bound local addresses. Idempotent.
    pub async fn bind(&self) -> Result<Vec<SocketAddr>, RelayError> {
        Ok(self.mux().await?.local_addrs())
    }

    async fn mux(&self) -> Result<Arc<UdpMux>, RelayError> {
        let inner = &self.inner;
        inner
            .mux
            .get_or_try_init(|| {
                UdpMux::bind(
                    &inner.config.udp_addrs,
                    inner.config.public_ip,
                    inner.metrics.clone(),
                )
            })
            .await
            .cloned()
    }

    /// The relay's counters.
    pub fn metrics(&self) -> &RelayMetrics {
        &self.inner.metrics
    }

    /// The ICE servers to hand a client before it builds its connection: time-limited TURN
    /// credentials for `participant` (valid from `now`) when TURN is configured.
    pub fn ice_servers_for(
        &self,
        participant: &ParticipantId,
        now: std::time::SystemTime,
    ) -> Vec<IceServer> {
        self.inner
            .config
            .turn
            .iter()
            .map(|turn| turn.credentials(&participant.0, now))
            .collect()
    }

    /// How many rooms are open.
    pub fn room_count(&self) -> usize {
        self.inner.directory.len()
    }

    /// The rooms that are open now.
    pub fn open_rooms(&self) -> Vec<RoomId> {
        self.inner.directory.rooms()
    }

    /// Puts a participant into a room (opening the room if needed) and binds its peer connection.
    /// The first event is `ServerMessage::Joined`; the participant then sends its offer.
    /// `AlreadyInRoom` if it is there already (see [`Relay::join_replacing`]).
    pub async fn join(
        &self,
        room: RoomId,
        participant: ParticipantId,
    ) -> Result<Participant, RelayError> {
        self.join_with(room, participant, false).await
    }

    /// Like [`Relay::join`], but a place the participant still holds (a reload, a new tab or
    /// device, a connection that cannot be resumed) is replaced in the same room turn: the old
    /// place is removed, its handle gets `Removed { reason: replaced }`, the others see it leave
    /// and join again. No caller waits for the old place to go.
    pub async fn join_replacing(
        &self,
        room: RoomId,
        participant: ParticipantId,
    ) -> Result<Participant, RelayError> {
        self.join_with(room, participant, true).await
    }

    async fn join_with(
        &self,
        room: RoomId,
        participant: ParticipantId,
        replace: bool,
    ) -> Result<Participant, RelayError> {
        let mux = self.mux().await?;
        let commands = self.room_commands(&room, &mux);
        let (reply, answer) = oneshot::channel();
        let join = RoomCommand::Join {
            participant,
            replace,
            reply,
        };
        // A room in the directory takes every command sent by whoever looked it up: it leaves
        // the directory only when no such sender is left (`RoomDirectory::retire`).
        commands.send(join).await.map_err(|_| RelayError::Gone)?;
        answer.await.map_err(|_| RelayError::Gone)?
    }

    /// Gives a participant still in the room (e.g. within its grace period after its socket
    /// dropped) a fresh signaling handle; the old handle, if any, is cut off. The others see
    /// nothing. The first events repeat `joined` and `track_published`, and an outstanding relay
    /// offer is sent again; a client whose network changed then re-offers with an ICE restart.
    /// `Gone` if the participant is no longer in the room (then `join` afresh).
    pub async fn resume(
        &self,
        room: &RoomId,
        participant: ParticipantId,
    ) -> Result<Participant, RelayError> {
        let commands = self.inner.directory.get(room).ok_or(RelayError::Gone)?;
        let (reply, answer) = oneshot::channel();
        commands
            .send(RoomCommand::Resume { participant, reply })
            .await
            .map_err(|_| RelayError::Gone)?;
        answer.await.map_err(|_| RelayError::Gone)?
    }

    /// Starts recording every track of the room, present and future, into `dir` (an existing
    /// folder): Opus as `<track_id>.ogg`, VP8 as `<track_id>.ivf`, files 0600. Call it only once
    /// every participant has consented: the relay does not check.
    pub async fn start_recording(
        &self,
        room: &RoomId,
        dir: std::path::PathBuf,
    ) -> Result<(), RelayError> {
        let (reply, answer) = oneshot::channel();
        self.room_command(room, RoomCommand::StartRecording { dir, reply })
            .await?;
        answer.await.map_err(|_| RelayError::Gone)?
    }

    /// Stops recording and returns every file written since `start_recording`, closed and
    /// hashed (tracks that ended earlier included). Call it before `close_room`.
    pub async fn stop_recording(
        &self,
        room: &RoomId,
    ) -> Result<Vec<Result<RecordedTrack, RecordingError>>, RelayError> {
        let (reply, answer) = oneshot::channel();
        self.room_command(room, RoomCommand::StopRecording { reply })
            .await?;
        answer.await.map_err(|_| RelayError::Gone)?
    }

    async fn room_command(&self, room: &RoomId, command: RoomCommand) -> Result<(), RelayError> {
        let commands = self.inner.directory.get(room).ok_or(RelayError::Gone)?;
        commands.send(command).await.map_err(|_| RelayError::Gone)
    }

    /// Takes a participant out of a room: it gets `Removed { reason: dismissed }`, the others see
    /// it leave. Nothing happens if it is not there.
    pub async fn remove(&self, room: &RoomId, participant: ParticipantId) {
        let _ = self
            .room_command(room, RoomCommand::Remove { participant })
            .await;
    }

    /// Closes a room: every participant gets `Removed { reason: room_closed }` and is dropped.
    pub async fn close_room(&self, room: &RoomId) {
        let commands = self.inner.directory.get(room);
        if let Some(commands) = commands {
            let _ = commands.send(RoomCommand::Close).await;
        }
    }

    fn room_commands(&self, room: &RoomId, mux: &Arc<UdpMux>) -> mpsc::Sender<RoomCommand> {
        self.inner
            .directory
            .get_or_open(room, &self.inner.metrics, |new| {
                tokio::spawn(run_room(self.inner.clone(), mux.clone(), room.clone(), new));
            })
    }
}
