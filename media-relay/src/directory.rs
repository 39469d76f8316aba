//! The relay's room directory: which rooms are open and how to reach each one's task. A room
//! leaves it under its lock, so that no command is ever sent to a room that has ended.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::error::RelayError;
use crate::messages::{ClientMessage, ParticipantId, RoomId};
use crate::metrics::RelayMetrics;
use crate::participant::Participant;
use crate::recording::RecordingResult;

/// What the relay handle and participant pumps send to a room's task.
pub(crate) enum RoomCommand {
    Join {
        participant: ParticipantId,
        /// A participant already in the room is replaced (removed, its old handle told so) in
        /// the same turn; otherwise the join is refused with `AlreadyInRoom`.
        replace: bool,
        reply: oneshot::Sender<Result<Participant, RelayError>>,
    },
    /// The same participant takes its place back with a fresh signaling handle.
    Resume {
        participant: ParticipantId,
        reply: oneshot::Sender<Result<Participant, RelayError>>,
    },
    /// A message from the participant's signaling handle `attachment`.
    Client {
        participant: ParticipantId,
        attachment: u64,
        message: ClientMessage,
    },
    /// The signaling handle `attachment` was dropped.
    Vanished {
        attachment: u64,
    },
    /// Start recording every track, now and to come, into `dir`.
    StartRecording {
        dir: std::path::PathBuf,
        reply: oneshot::Sender<Result<(), RelayError>>,
    },
    /// Stop recording; the reply carries every file, closed and hashed.
    StopRecording {
        reply: oneshot::Sender<Result<Vec<RecordingResult>, RelayError>>,
    },
    /// Take a participant out (`dismissed`).
    Remove {
        participant: ParticipantId,
    },
    Close,
}

struct RoomEntry {
    generation: u64,
    commands: mpsc::Sender<RoomCommand>,
}

/// The open rooms.
#[derive(Default)]
pub(crate) struct RoomDirectory {
    rooms: Mutex<HashMap<RoomId, RoomEntry>>,
    next_generation: AtomicU64,
}

/// A room the directory has just opened: its task is to be started with these.
pub(crate) struct NewRoom {
    pub(crate) generation: u64,
    pub(crate) inbox: mpsc::Receiver<RoomCommand>,
    pub(crate) commands: mpsc::WeakSender<RoomCommand>,
}

/// What an empty room hears when it asks to end ([`RoomDirectory::retire`]).
pub(crate) enum Retirement {
    /// It left the directory and its inbox is closed: the task ends.
    Retired,
    /// A command had come in: the room handles it and carries on.
    Command(RoomCommand),
    /// Someone looked the room up and may still send to it: ask again shortly.
    Held,
}

impl RoomDirectory {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, RoomEntry>> {
        // A poisoned map means a panic while holding it; the map itself is still consistent
        // (every critical section is a single insert/remove/get), so keep serving.
        self.rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn rooms(&self) -> Vec<RoomId> {
        self.lock().keys().cloned().collect()
    }

    /// The room's command sender, if it is open.
    pub(crate) fn get(&self, room: &RoomId) -> Option<mpsc::Sender<RoomCommand>> {
        self.lock().get(room).map(|e| e.commands.clone())
    }

    /// The room's command sender, opening the room if it is not (then `start` starts its task).
    pub(crate) fn get_or_open(
        &self,
        room: &RoomId,
        metrics: &RelayMetrics,
        start: impl FnOnce(NewRoom),
    ) -> mpsc::Sender<RoomCommand> {
        let mut rooms = self.lock();
        if let Some(entry) = rooms.get(room)
            && !entry.commands.is_closed()
        {
            return entry.commands.clone();
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let (commands, inbox) = mpsc::channel(64);
        rooms.insert(
            room.clone(),
            RoomEntry {
                generation,
                commands: commands.clone(),
            },
        );
        RelayMetrics::inc(&metrics.rooms);
        start(NewRoom {
            generation,
            inbox,
            commands: commands.downgrade(),
        });
        commands
    }

    /// An empty room's request to end. Decided under the directory's lock, where rooms are
    /// looked up, so that a room never ends with a command on its way: the directory's own
    /// sender is the only strong one left, and nothing is queued.
    pub(crate) fn retire(
        &self,
        room: &RoomId,
        generation: u64,
        inbox: &mut mpsc::Receiver<RoomCommand>,
        commands: &mpsc::WeakSender<RoomCommand>,
        metrics: &RelayMetrics,
    ) -> Retirement {
        let mut rooms = self.lock();
        if let Ok(command) = inbox.try_recv() {
            return Retirement::Command(command);
        }
        let ours = rooms.get(room).is_some_and(|e| e.generation == generation);
        if commands.strong_count() > usize::from(ours) {
            return Retirement::Held;
        }
        if ours {
            rooms.remove(room);
        }
        inbox.close();
        RelayMetrics::dec(&metrics.rooms);
        Retirement::Retired
    }
}
