//! Counters the server can export (Prometheus-style), as plain atomics: no exporter here.

use std::sync::atomic::{AtomicU64, Ordering};

/// Relay-wide counters; monotonic unless named as a gauge.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    /// Gauge: rooms open now.
    pub rooms: AtomicU64,
    /// Gauge: participants in all rooms now.
    pub participants: AtomicU64,
    /// RTP packets received from publishers.
    pub packets_received: AtomicU64,
    /// RTP packets written to subscribers.
    pub packets_forwarded: AtomicU64,
    /// RTP payload bytes written to subscribers.
    pub bytes_forwarded: AtomicU64,
    /// PLIs sent to publishers (after rate limiting).
    pub plis_sent: AtomicU64,
    /// Keyframe requests (PLI/FIR) received from subscribers.
    pub keyframe_requests_received: AtomicU64,
    /// NACKs the relay sent publishers (packets it missed), counted at each quality report.
    pub nacks_sent: AtomicU64,
    /// NACKs subscribers sent the relay (packets they missed).
    pub nacks_received: AtomicU64,
    /// Subscriber legs moved to another simulcast layer (on that layer's keyframe).
    pub layer_switches: AtomicU64,
    /// Datagrams dropped: a room's queue or the socket's send buffer was full.
    pub datagrams_dropped: AtomicU64,
    /// Datagrams from addresses no peer connection knows (stray or forged traffic).
    pub datagrams_unrouted: AtomicU64,
}

impl RelayMetrics {
    /// Adds one to a counter.
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one from a gauge, never below zero.
    pub(crate) fn dec(gauge: &AtomicU64) {
        let _ = gauge.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// Adds a room's counters (taken after each of its turns, so that a packet costs the room a
    /// plain addition and the process-wide atomics are touched once a turn, not once a packet).
    pub(crate) fn absorb(&self, counters: &RoomCounters) {
        let RoomCounters {
            packets_received,
            packets_forwarded,
            bytes_forwarded,
            plis_sent,
            keyframe_requests_received,
            nacks_sent,
            nacks_received,
            layer_switches,
        } = *counters;
        for (counter, value) in [
            (&self.packets_received, packets_received),
            (&self.packets_forwarded, packets_forwarded),
            (&self.bytes_forwarded, bytes_forwarded),
            (&self.plis_sent, plis_sent),
            (&self.keyframe_requests_received, keyframe_requests_received),
            (&self.nacks_sent, nacks_sent),
            (&self.nacks_received, nacks_received),
            (&self.layer_switches, layer_switches),
        ] {
            if value > 0 {
                counter.fetch_add(value, Ordering::Relaxed);
            }
        }
    }

    /// A point-in-time copy, e.g. for an exporter or a test.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            rooms: self.rooms.load(Ordering::Relaxed),
            participants: self.participants.load(Ordering::Relaxed),
            packets_received: self.packets_received.load(Ordering::Relaxed),
            packets_forwarded: self.packets_forwarded.load(Ordering::Relaxed),
            bytes_forwarded: self.bytes_forwarded.load(Ordering::Relaxed),
            plis_sent: self.plis_sent.load(Ordering::Relaxed),
            keyframe_requests_received: self.keyframe_requests_received.load(Ordering::Relaxed),
            nacks_sent: self.nacks_sent.load(Ordering::Relaxed),
            nacks_received: self.nacks_received.load(Ordering::Relaxed),
            layer_switches: self.layer_switches.load(Ordering::Relaxed),
            datagrams_dropped: self.datagrams_dropped.load(Ordering::Relaxed),
            datagrams_unrouted: self.datagrams_unrouted.load(Ordering::Relaxed),
        }
    }
}

/// One room's counters since they were last taken (see [`RelayMetrics`] for each meaning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RoomCounters {
    pub(crate) packets_received: u64,
    pub(crate) packets_forwarded: u64,
    pub(crate) bytes_forwarded: u64,
    pub(crate) plis_sent: u64,
    pub(crate) keyframe_requests_received: u64,
    pub(crate) nacks_sent: u64,
    pub(crate) nacks_received: u64,
    pub(crate) layer_switches: u64,
}

/// The values of [`RelayMetrics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// See [`RelayMetrics::rooms`].
    pub rooms: u64,
    /// See [`RelayMetrics::participants`].
    pub participants: u64,
    /// See [`RelayMetrics::packets_received`].
    pub packets_received: u64,
    /// See [`RelayMetrics::packets_forwarded`].
    pub packets_forwarded: u64,
    /// See [`RelayMetrics::bytes_forwarded`].
    pub bytes_forwarded: u64,
    /// See [`RelayMetrics::plis_sent`].
    pub plis_sent: u64,
    /// See [`RelayMetrics::keyframe_requests_received`].
    pub keyframe_requests_received: u64,
    /// See [`RelayMetrics::nacks_sent`].
    pub nacks_sent: u64,
    /// See [`RelayMetrics::nacks_received`].
    pub nacks_received: u64,
    /// See [`RelayMetrics::layer_switches`].
    pub layer_switches: u64,
    /// See [`RelayMetrics::datagrams_dropped`].
    pub datagrams_dropped: u64,
    /// See [`RelayMetrics::datagrams_unrouted`].
    pub datagrams_unrouted: u64,
}
