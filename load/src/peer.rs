//! The peers a run holds: a full webrtc-rs test peer (publishes, decrypts and measures latency)
//! or a light receive-only one (counts packets from their headers; see
//! `media_relay::test_peer::light`), behind one face.

use std::time::Duration;

use media_relay::ClientMessage;
use media_relay::test_peer::light::LightPeer;
use media_relay::test_peer::{PeerReport, TestPeer};

/// A full or a light peer.
pub enum Peer {
    /// A full test peer.
    Full(TestPeer),
    /// A light receive-only peer.
    Light(LightPeer),
}

impl Peer {
    /// What it has seen so far.
    pub fn report(&self) -> PeerReport {
        match self {
            Peer::Full(peer) => peer.report(),
            Peer::Light(peer) => peer.report(),
        }
    }

    /// Waits until `done` holds for its report, or `timeout` passes.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl FnMut(&PeerReport) -> bool,
    ) -> Result<PeerReport, Box<PeerReport>> {
        match self {
            Peer::Full(peer) => peer.wait_until(timeout, done).await,
            Peer::Light(peer) => peer.wait_until(timeout, done).await,
        }
    }

    /// Sends a relay message (a full peer only: a light one only answers).
    pub fn send(&self, message: ClientMessage) {
        if let Peer::Full(peer) = self {
            peer.send(message);
        }
    }
}
