//! A participant's address that changes under the connection (NAT rebinding, a middlebox
//! restarting): its datagrams start coming from a new address while its browser sees nothing
//! wrong. The browser's checks reach the relay from there and are answered, but webrtc-rs's ICE
//! agent keeps the pair it selected first (it takes a nomination only while none is selected),
//! so everything the relay sends would go on to the old address, and the call would stay dead.
//!
//! [`PathLatch`] follows the move as media servers do ("latching"): when the address the member
//! was heard from has been silent for [`SILENCE`] and a STUN binding request that passes
//! MESSAGE-INTEGRITY with the relay's own ICE password arrives from another, what the connection
//! sends to the old address goes to the new one. Only a request that proves knowledge of the
//! password moves it, so a forged datagram cannot divert a call; a live address is never left
//! for another (browsers also check their other candidate pairs now and then).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the current address must have been silent before another may take its place.
/// Browsers send media or consent checks far more often than this while a path works.
pub(super) const SILENCE: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(super) struct PathLatch {
    /// The address the member was last heard from on its current path, and when.
    heard: Option<(SocketAddr, Instant)>,
    /// The connection's own idea of the address (what it sends to), and where that now goes.
    moved: Option<(SocketAddr, SocketAddr)>,
}

impl PathLatch {
    /// A datagram from `from`; `authenticated` says whether it is a binding request that passes
    /// integrity (asked only when it matters). Returns the new address when the path moves.
    pub(super) fn heard(
        &mut self,
        now: Instant,
        from: SocketAddr,
        authenticated: impl FnOnce() -> bool,
    ) -> Option<SocketAddr> {
        match self.heard {
            None => {
                self.heard = Some((from, now));
                None
            }
            Some((current, _)) if current == from => {
                self.heard = Some((from, now));
                None
            }
            Some((current, at)) => {
                if now.saturating_duration_since(at) < SILENCE || !authenticated() {
                    return None;
                }
                let original = match self.moved {
                    Some((original, to)) if to == current => original,
                    _ => current,
                };
                self.moved = (original != from).then_some((original, from));
                self.heard = Some((from, now));
                Some(from)
            }
        }
    }

    /// Where a datagram the connection addresses to `to` goes.
    pub(super) fn destination(&self, to: SocketAddr) -> SocketAddr {
        match self.moved {
            Some((original, moved)) if original == to => moved,
            _ => to,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_silent_path_moves_to_an_authenticated_new_address_and_back() {
        let t0 = Instant::now();
        let mut latch = PathLatch::default();
        assert_eq!(latch.heard(t0, addr(1), || true), None);
        // Another address while the first is live: never (a browser checking another pair).
        assert_eq!(
            latch.heard(t0 + Duration::from_millis(500), addr(2), || true),
            None
        );
        assert_eq!(latch.destination(addr(1)), addr(1));
        // The first has gone silent: an authenticated request from the new one moves the path.
        let later = t0 + SILENCE + Duration::from_millis(1);
        assert_eq!(latch.heard(later, addr(2), || true), Some(addr(2)));
        assert_eq!(latch.destination(addr(1)), addr(2));
        assert_eq!(
            latch.destination(addr(9)),
            addr(9),
            "other destinations are left alone"
        );
        // It moves again later; the connection still addresses the original.
        let again = later + SILENCE * 2;
        assert_eq!(latch.heard(again, addr(3), || true), Some(addr(3)));
        assert_eq!(latch.destination(addr(1)), addr(3));
        // And back to the original address: nothing to redirect any more.
        let back = again + SILENCE * 2;
        assert_eq!(latch.heard(back, addr(1), || true), Some(addr(1)));
        assert_eq!(latch.destination(addr(1)), addr(1));
    }

    #[test]
    fn an_unauthenticated_datagram_never_moves_the_path() {
        let t0 = Instant::now();
        let mut latch = PathLatch::default();
        latch.heard(t0, addr(1), || true);
        let later = t0 + SILENCE * 5;
        assert_eq!(latch.heard(later, addr(2), || false), None);
        assert_eq!(latch.destination(addr(1)), addr(1));
    }
}
