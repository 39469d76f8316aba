//! A participant's handle on its place in a room, as the relay gives it out.

use tokio::sync::mpsc;

use crate::error::RelayError;
use crate::messages::{ClientMessage, ParticipantId, RoomId, ServerMessage};

/// A participant's place in a room: send [`ClientMessage`]s, receive [`ServerMessage`]s.
/// Dropping it (or its sender half) counts as the participant vanishing: it is removed.
#[derive(Debug)]
pub struct Participant {
    /// Who.
    pub id: ParticipantId,
    /// Where.
    pub room: RoomId,
    /// Messages to the relay.
    pub sender: mpsc::Sender<ClientMessage>,
    /// Messages from the relay, starting with `ServerMessage::Joined`.
    pub events: mpsc::Receiver<ServerMessage>,
}

impl Participant {
    /// Sends one message to the relay; fails once the participant is no longer in the room.
    pub async fn send(&self, message: ClientMessage) -> Result<(), RelayError> {
        self.sender
            .send(message)
            .await
            .map_err(|_| RelayError::Gone)
    }

    /// The next message from the relay; `None` once the participant is out of the room.
    pub async fn recv(&mut self) -> Option<ServerMessage> {
        self.events.recv().await
    }

    /// The two halves, for a server that pumps them from separate tasks.
    pub fn into_parts(self) -> (mpsc::Sender<ClientMessage>, mpsc::Receiver<ServerMessage>) {
        (self.sender, self.events)
    }
}
