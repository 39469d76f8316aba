//! The tokio task around a room's core: it reads the room's commands, its datagrams and its
//! timer, hands each to the core with the time, and carries out what the core asks (datagrams
//! onto the shared socket, messages into the participants' channels, routes into the socket's
//! table). Nothing here decides anything about the room.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Datagram, Input, Output, Recorder, RoomConfig, RoomCore};
use crate::directory::{NewRoom, Retirement, RoomCommand};
use crate::error::RelayError;
use crate::messages::{ClientMessage, LeaveReason, ParticipantId, RoomId, ServerMessage};
use crate::metrics::RelayMetrics;
use crate::participant::Participant;
use crate::recording::{self, RecordingResult};
use crate::relay::RelayInner;
use crate::socket::{Inbound, ROOM_QUEUE, UdpMux};

/// Datagrams taken from the socket's queue in one turn before the connections are driven.
const DATAGRAM_BURST: usize = 64;

/// How soon an empty room asks again to leave the directory when a caller still held its
/// address (it was between looking the room up and sending to it).
const RETIRE_RECHECK: std::time::Duration = std::time::Duration::from_millis(20);

/// Relay-wide ids of connections: the socket routes by them.
static NEXT_LINK: AtomicU64 = AtomicU64::new(1);

/// One signaling handle's channel to its participant, and the pump that tags its messages.
struct Handle {
    out: mpsc::Sender<ServerMessage>,
    pump: JoinHandle<()>,
}

struct RoomTask {
    core: RoomCore,
    relay: Arc<RelayInner>,
    mux: Arc<UdpMux>,
    commands: mpsc::WeakSender<RoomCommand>,
    datagrams: mpsc::Sender<Inbound>,
    handles: HashMap<u64, Handle>,
    next_attachment: u64,
    /// The results of the recording in progress, one per track, as its writers finish.
    recording: Option<Arc<Mutex<Vec<oneshot::Receiver<RecordingResult>>>>>,
    /// Members counted in the relay's gauge.
    members: usize,
}

pub(crate) async fn run_room(relay: Arc<RelayInner>, mux: Arc<UdpMux>, id: RoomId, new: NewRoom) {
    let NewRoom {
        generation,
        mut inbox,
        commands,
    } = new;
    let (datagrams, mut datagram_rx) = mpsc::channel(ROOM_QUEUE);
    let config = RoomConfig {
        max_participants: relay.config.max_participants,
        keyframe_request_interval: relay.config.keyframe_request_interval,
        resume_grace: relay.config.resume_grace,
        quality_interval: relay.config.quality_interval,
        host_candidates: mux.announced(),
    };
    let mut task = RoomTask {
        core: RoomCore::new(id.clone(), config, Instant::now()),
        relay,
        mux,
        commands,
        datagrams,
        handles: HashMap::new(),
        next_attachment: 1,
        recording: None,
        members: 0,
    };
    let mut recheck: Option<Instant> = None;
    loop {
        // An empty room ends by leaving the directory under its lock, so that no join can reach
        // a room that is ending: a command already sent is taken, a sender still held waits.
        if task.core.is_empty() {
            let relay = task.relay.clone();
            match relay.directory.retire(
                &id,
                generation,
                &mut inbox,
                &task.commands,
                &relay.metrics,
            ) {
                Retirement::Retired => break,
                Retirement::Command(command) => {
                    task.command(command);
                    task.carry_out();
                    continue;
                }
                Retirement::Held => recheck = Some(Instant::now() + RETIRE_RECHECK),
            }
        }
        let deadline = match (task.core.poll_timeout(), recheck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(tokio::time::Instant::from_std);
        tokio::select! {
            command = inbox.recv() => match command {
                None => {
                    let _ = task.input(Input::Close);
                    task.carry_out();
                    break;
                }
                Some(command) => task.command(command),
            },
            Some(inbound) = datagram_rx.recv() => {
                task.datagram(inbound);
                for _ in 1..DATAGRAM_BURST {
                    match datagram_rx.try_recv() {
                        Ok(inbound) => task.datagram(inbound),
                        Err(_) => break,
                    }
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                recheck = None;
                let _ = task.input(Input::Timeout);
            }
        }
        task.carry_out();
    }
    tracing::debug!(room = %id, "room closed");
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl RoomTask {
    fn input(&mut self, input: Input) -> Result<(), RelayError> {
        self.core.handle(Instant::now(), input)
    }

    fn datagram(&mut self, inbound: Inbound) {
        let _ = self.core.handle(
            inbound.at,
            Input::Datagram(Datagram {
                link: inbound.link,
                local: inbound.local,
                peer: inbound.peer,
                data: inbound.data,
            }),
        );
    }

    fn command(&mut self, command: RoomCommand) {
        match command {
            RoomCommand::Join {
                participant,
                replace,
                reply,
            } => {
                let link = NEXT_LINK.fetch_add(1, Ordering::Relaxed);
                let result = self.attach(&participant, |attachment| Input::Join {
                    participant: participant.clone(),
                    attachment,
                    link,
                    replace,
                });
                let _ = reply.send(result);
            }
            RoomCommand::Resume { participant, reply } => {
                let result = self.attach(&participant, |attachment| Input::Resume {
                    participant: participant.clone(),
                    attachment,
                });
                let _ = reply.send(result);
            }
            RoomCommand::Client {
                participant,
                attachment,
                message,
            } => {
                let _ = self.input(Input::Client {
                    participant,
                    attachment,
                    message,
                });
            }
            RoomCommand::Vanished { attachment } => {
                let _ = self.input(Input::Undeliverable {
                    attachment,
                    reason: LeaveReason::Vanished,
                });
            }
            RoomCommand::StartRecording { dir, reply } => {
                let _ = reply.send(self.start_recording(dir));
            }
            RoomCommand::StopRecording { reply } => {
                if let Err(err) = self.input(Input::StopRecording) {
                    let _ = reply.send(Err(err));
                    return;
                }
                let results = self
                    .recording
                    .take()
                    .map(|r| std::mem::take(&mut *lock(&r)))
                    .unwrap_or_default();
                // Writers close and hash on their own threads; do not hold the room for it.
                tokio::spawn(async move {
                    let mut files = Vec::new();
                    for result in results {
                        if let Ok(result) = result.await {
                            files.push(result);
                        }
                    }
                    let _ = reply.send(Ok(files));
                });
            }
            // Everyone goes; the room then ends unless someone joins again meanwhile.
            RoomCommand::Remove { participant } => {
                let _ = self.input(Input::Remove { participant });
            }
            RoomCommand::Close => {
                let _ = self.input(Input::Close);
            }
        }
    }

    /// A new signaling handle for `participant` (its channels and the pump that tags its
    /// messages), kept if the core accepts `input` for it.
    fn attach(
        &mut self,
        participant: &ParticipantId,
        input: impl FnOnce(u64) -> Input,
    ) -> Result<Participant, RelayError> {
        let commands = self.commands.upgrade().ok_or(RelayError::Gone)?;
        let attachment = self.next_attachment;
        self.next_attachment += 1;
        let (out, events) = mpsc::channel(self.relay.config.outbound_queue);
        let (sender, mut client_rx) = mpsc::channel::<ClientMessage>(64);
        let pump_id = participant.clone();
        let pump = tokio::spawn(async move {
            while let Some(message) = client_rx.recv().await {
                let command = RoomCommand::Client {
                    participant: pump_id.clone(),
                    attachment,
                    message,
                };
                if commands.send(command).await.is_err() {
                    return;
                }
            }
            let _ = commands.send(RoomCommand::Vanished { attachment }).await;
        });
        self.handles.insert(attachment, Handle { out, pump });
        match self.input(input(attachment)) {
            Ok(()) => Ok(Participant {
                id: participant.clone(),
                room: self.core.id.clone(),
                sender,
                events,
            }),
            Err(err) => {
                self.release(attachment);
                Err(err)
            }
        }
    }

    fn start_recording(&mut self, dir: std::path::PathBuf) -> Result<(), RelayError> {
        if !dir.is_dir() {
            return Err(RelayError::Recording(format!(
                "{} is not a folder",
                dir.display()
            )));
        }
        let results = Arc::new(Mutex::new(Vec::new()));
        let kept = results.clone();
        let recorder: Recorder = Box::new(move |participant, track_id, codec| {
            let (sink, result) =
                recording::start(&dir, participant.clone(), track_id.to_owned(), codec);
            lock(&kept).push(result);
            sink
        });
        self.input(Input::StartRecording(recorder))?;
        self.recording = Some(results);
        Ok(())
    }

    fn release(&mut self, attachment: u64) {
        if let Some(handle) = self.handles.remove(&attachment) {
            handle.pump.abort();
        }
    }

    /// Does what the core asks until it asks nothing more (a message that cannot be delivered
    /// goes back to it as an input), then brings the relay-wide metrics up to date.
    fn carry_out(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Transmit { from, to, data } => self.mux.send(from, to, &data),
                Output::Deliver {
                    attachment,
                    message,
                } => {
                    let Some(handle) = self.handles.get(&attachment) else {
                        continue;
                    };
                    let reason = match handle.out.try_send(message) {
                        Ok(()) => continue,
                        Err(mpsc::error::TrySendError::Full(_)) => LeaveReason::TooSlow,
                        Err(mpsc::error::TrySendError::Closed(_)) => LeaveReason::Vanished,
                    };
                    let _ = self.input(Input::Undeliverable { attachment, reason });
                }
                Output::Release { attachment } => self.release(attachment),
                Output::Route { ufrag, link } => {
                    self.mux.register(&ufrag, link, self.datagrams.clone())
                }
                Output::Unroute { link } => self.mux.forget(link),
            }
        }
        let metrics = &self.relay.metrics;
        metrics.absorb(&self.core.take_counters());
        let members = self.core.member_count();
        for _ in members..self.members {
            RelayMetrics::dec(&metrics.participants);
        }
        for _ in self.members..members {
            RelayMetrics::inc(&metrics.participants);
        }
        self.members = members;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
