//! A participant's connection quality over the last interval (RTT, loss both ways, jitter,
//! bitrates, a grade), computed from two snapshots of cumulative counters. The arithmetic is pure
//! and fed times; reading the counters out of a webrtc-rs stats report is the one function here
//! that knows webrtc types.

use std::time::{Duration, Instant};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::statistics::report::{RTCStatsReport, RTCStatsReportEntry};
use serde::{Deserialize, Serialize};

/// Cumulative counters of one connection at one moment (relay side).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QualityTotals {
    /// Current round-trip time of the selected candidate pair, if measured.
    pub rtt: Option<Duration>,
    /// RTP packets the relay received from the participant.
    pub packets_received: u64,
    /// RTP packets of the participant the relay found missing.
    pub packets_lost: u64,
    /// Bytes the relay received from the participant.
    pub bytes_received: u64,
    /// Bytes the relay sent to the participant.
    pub bytes_sent: u64,
    /// Highest interarrival jitter among the participant's streams.
    pub jitter: Duration,
    /// Highest fraction lost the participant reports (RTCP receiver reports) for relay streams.
    pub downlink_fraction_lost: Option<f64>,
    /// NACKs the relay sent the participant (about its media).
    pub nacks_sent: u64,
}

/// A coarse verdict for the UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityGrade {
    /// Loss ≤ 3 %, RTT ≤ 250 ms, jitter ≤ 50 ms.
    Good,
    /// Loss ≤ 10 %, RTT ≤ 500 ms, jitter ≤ 100 ms.
    Fair,
    /// Worse.
    Poor,
}

/// A participant's connection over the last interval, as sent in `connection_quality`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConnectionQuality {
    /// Round-trip time between relay and participant, if measured.
    pub rtt_ms: Option<u32>,
    /// Fraction (0..1) of the participant's packets lost on the way to the relay.
    pub uplink_loss: f64,
    /// Fraction (0..1) of the relay's packets the participant reports lost.
    pub downlink_loss: f64,
    /// Interarrival jitter of the participant's media at the relay.
    pub jitter_ms: u32,
    /// What the participant sends, kbit/s.
    pub uplink_kbps: u32,
    /// What the relay sends the participant, kbit/s.
    pub downlink_kbps: u32,
    /// Freezes in the video the relay forwarded to the participant during the interval
    /// ([`FreezeCounter`]), and how long they lasted.
    #[serde(default)]
    pub freezes: u32,
    /// Total length of those freezes, ms.
    #[serde(default)]
    pub frozen_ms: u32,
    /// The lowest simulcast layer among the videos the participant receives now, as a rank
    /// (0 = the publisher's lowest bitrate); absent when it receives no simulcast video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<u8>,
    /// What the participant's downlink is estimated to carry, kbit/s: the lower of its own
    /// report (REMB) and the relay's estimate (GCC over its transport-wide feedback); absent
    /// before either exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_kbps: Option<u32>,
    /// The verdict.
    pub grade: QualityGrade,
}

impl ConnectionQuality {
    /// Whether the interval measured anything: a round trip, or media either way. The first
    /// report of a connection (before any RTCP or media) measures nothing and is all zeros.
    pub fn measured(&self) -> bool {
        self.rtt_ms.is_some() || self.uplink_kbps > 0 || self.downlink_kbps > 0
    }
}

/// Turns successive [`QualityTotals`] into per-interval [`ConnectionQuality`].
#[derive(Debug, Clone, Default)]
pub struct QualityTracker {
    last: Option<(Instant, QualityTotals)>,
}

impl QualityTracker {
    /// A tracker with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// The quality since the previous snapshot (since zero for the first).
    pub fn update(&mut self, now: Instant, totals: QualityTotals) -> ConnectionQuality {
        let (since, before) = self.last.unwrap_or((now, QualityTotals::default()));
        self.last = Some((now, totals));
        let seconds = now.saturating_duration_since(since).as_secs_f64();
        let received = totals
            .packets_received
            .saturating_sub(before.packets_received);
        let lost = totals.packets_lost.saturating_sub(before.packets_lost);
        let uplink_loss = if received + lost == 0 {
            0.0
        } else {
            lost as f64 / (received + lost) as f64
        };
        let kbps = |now_bytes: u64, then_bytes: u64| {
            if seconds <= 0.0 {
                return 0;
            }
            let bits = now_bytes.saturating_sub(then_bytes) as f64 * 8.0;
            (bits / seconds / 1000.0).round().min(u32::MAX as f64) as u32
        };
        let rtt_ms = totals
            .rtt
            .map(|rtt| rtt.as_millis().min(u32::MAX as u128) as u32);
        let jitter_ms = totals.jitter.as_millis().min(u32::MAX as u128) as u32;
        let downlink_loss = totals.downlink_fraction_lost.unwrap_or(0.0).clamp(0.0, 1.0);
        let worst_loss = uplink_loss.max(downlink_loss);
        let rtt = rtt_ms.unwrap_or(0);
        let grade = if worst_loss > 0.10 || rtt > 500 || jitter_ms > 100 {
            QualityGrade::Poor
        } else if worst_loss > 0.03 || rtt > 250 || jitter_ms > 50 {
            QualityGrade::Fair
        } else {
            QualityGrade::Good
        };
        ConnectionQuality {
            rtt_ms,
            uplink_loss,
            downlink_loss,
            jitter_ms,
            uplink_kbps: kbps(totals.bytes_received, before.bytes_received),
            downlink_kbps: kbps(totals.bytes_sent, before.bytes_sent),
            freezes: 0,
            frozen_ms: 0,
            layer: None,
            estimate_kbps: None,
            grade,
        }
    }
}

/// Video freezes as the W3C webrtc-stats define them for a receiver (a frame that comes more
/// than max(3 × the average inter-frame delay, the average + 150 ms) after the previous one),
/// counted on the frames the relay forwards to one subscriber. It sees freezes that start
/// upstream (publisher's network, a lost keyframe); the subscriber's own downlink shows in its
/// loss. Pure: fed frame times.
#[derive(Debug, Clone, Default)]
pub struct FreezeCounter {
    last_frame: Option<Instant>,
    average: Option<Duration>,
    freezes: u32,
    frozen: Duration,
}

impl FreezeCounter {
    /// A counter with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// A frame was forwarded at `now`.
    pub fn on_frame(&mut self, now: Instant) {
        if let Some(last) = self.last_frame {
            let delay = now.saturating_duration_since(last);
            match self.average {
                None => self.average = Some(delay),
                Some(average) => {
                    let threshold = (average * 3).max(average + Duration::from_millis(150));
                    if delay > threshold {
                        self.freezes += 1;
                        self.frozen += delay;
                    } else {
                        // About the last 30 frames, as the stats' definition has it.
                        self.average = Some((average * 29 + delay) / 30);
                    }
                }
            }
        }
        self.last_frame = Some(now);
    }

    /// The relay stopped forwarding on purpose (mute, camera off): the gap is not a freeze.
    pub fn pause(&mut self) {
        self.last_frame = None;
    }

    /// Freezes and their total length since the last call.
    pub fn take(&mut self) -> (u32, Duration) {
        (
            std::mem::take(&mut self.freezes),
            std::mem::take(&mut self.frozen),
        )
    }
}

/// Reads the counters out of a webrtc-rs stats report of the relay's side of a connection.
pub fn totals_from(report: &RTCStatsReport) -> QualityTotals {
    let mut totals = QualityTotals::default();
    let seconds = |s: f64| {
        if s.is_finite() && s > 0.0 {
            Duration::try_from_secs_f64(s).ok()
        } else {
            None
        }
    };
    for entry in report.iter() {
        match entry {
            RTCStatsReportEntry::IceCandidatePair(pair) if pair.nominated => {
                totals.rtt = seconds(pair.current_round_trip_time).or(totals.rtt);
            }
            RTCStatsReportEntry::InboundRtp(inbound) => {
                let received = &inbound.received_rtp_stream_stats;
                totals.packets_received += received.packets_received;
                totals.packets_lost += received.packets_lost.max(0) as u64;
                totals.bytes_received += inbound.bytes_received;
                totals.nacks_sent += u64::from(inbound.nack_count);
                // rtc 0.21 fills `jitter` with the receiver report's raw value, which is in RTP
                // timestamp units (RFC 3550 §6.4.1), not seconds: divide by the clock rate.
                let clock_rate = match received.rtp_stream_stats.kind {
                    RtpCodecKind::Audio => 48_000.0,
                    _ => 90_000.0,
                };
                if let Some(jitter) = seconds(received.jitter / clock_rate) {
                    totals.jitter = totals.jitter.max(jitter);
                }
            }
            RTCStatsReportEntry::OutboundRtp(outbound) => {
                totals.bytes_sent += outbound.sent_rtp_stream_stats.bytes_sent;
            }
            RTCStatsReportEntry::RemoteInboundRtp(remote) => {
                let lost = remote.fraction_lost;
                if lost.is_finite() {
                    totals.downlink_fraction_lost = Some(
                        totals
                            .downlink_fraction_lost
                            .map_or(lost, |l: f64| l.max(lost)),
                    );
                }
                if totals.rtt.is_none() {
                    totals.rtt = seconds(remote.round_trip_time);
                }
            }
            _ => {}
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_before_any_rtcp_or_media_measured_nothing_and_one_with_either_did() {
        let empty = ConnectionQuality {
            rtt_ms: None,
            uplink_loss: 0.0,
            downlink_loss: 0.0,
            jitter_ms: 0,
            uplink_kbps: 0,
            downlink_kbps: 0,
            freezes: 0,
            frozen_ms: 0,
            layer: None,
            estimate_kbps: None,
            grade: QualityGrade::Good,
        };
        assert!(!empty.measured());
        assert!(
            ConnectionQuality {
                rtt_ms: Some(0),
                ..empty
            }
            .measured()
        );
        assert!(
            ConnectionQuality {
                downlink_kbps: 1,
                ..empty
            }
            .measured()
        );
        assert!(
            ConnectionQuality {
                uplink_kbps: 1,
                ..empty
            }
            .measured()
        );
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn rates_and_loss_are_per_interval() {
        let t0 = Instant::now();
        let mut tracker = QualityTracker::new();
        let first = QualityTotals {
            packets_received: 1000,
            packets_lost: 100,
            bytes_received: 1_000_000,
            bytes_sent: 2_000_000,
            ..QualityTotals::default()
        };
        tracker.update(t0, first);
        let q = tracker.update(
            t0 + 2 * S,
            QualityTotals {
                packets_received: 1990,
                packets_lost: 110,
                bytes_received: 1_250_000,
                bytes_sent: 2_500_000,
                rtt: Some(Duration::from_millis(40)),
                ..QualityTotals::default()
            },
        );
        assert!((q.uplink_loss - 0.01).abs() < 1e-9, "{q:?}");
        assert_eq!((q.uplink_kbps, q.downlink_kbps), (1000, 2000));
        assert_eq!(q.rtt_ms, Some(40));
        assert_eq!(q.grade, QualityGrade::Good);
    }

    #[test]
    fn grades_follow_the_worst_of_loss_rtt_and_jitter() {
        let t0 = Instant::now();
        let grade = |totals: QualityTotals| QualityTracker::new().update(t0, totals).grade;
        assert_eq!(
            grade(QualityTotals {
                rtt: Some(Duration::from_millis(300)),
                ..QualityTotals::default()
            }),
            QualityGrade::Fair
        );
        assert_eq!(
            grade(QualityTotals {
                jitter: Duration::from_millis(150),
                ..QualityTotals::default()
            }),
            QualityGrade::Poor
        );
        assert_eq!(
            grade(QualityTotals {
                downlink_fraction_lost: Some(0.2),
                ..QualityTotals::default()
            }),
            QualityGrade::Poor
        );
        assert_eq!(
            grade(QualityTotals {
                packets_received: 95,
                packets_lost: 5,
                ..QualityTotals::default()
            }),
            QualityGrade::Fair
        );
    }

    #[test]
    fn a_long_gap_between_frames_is_a_freeze_and_a_pause_is_not() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut counter = FreezeCounter::new();
        for frame in 0..30 {
            counter.on_frame(at(frame * 33));
        }
        assert_eq!(counter.take(), (0, Duration::ZERO), "steady 30 fps");
        // A 33 ms average puts the threshold at max(99 ms, 183 ms): 120 ms is no freeze.
        counter.on_frame(at(29 * 33 + 120));
        assert_eq!(counter.take().0, 0, "below average + 150 ms");
        counter.on_frame(at(29 * 33 + 120 + 400));
        assert_eq!(counter.take(), (1, Duration::from_millis(400)));
        assert_eq!(counter.take(), (0, Duration::ZERO), "taken once");
        counter.pause();
        counter.on_frame(at(10_000));
        counter.on_frame(at(10_033));
        assert_eq!(counter.take().0, 0, "muted for 9 s: not a freeze");
    }

    #[test]
    fn counters_that_go_backwards_do_not_underflow() {
        let t0 = Instant::now();
        let mut tracker = QualityTracker::new();
        tracker.update(
            t0,
            QualityTotals {
                packets_received: 10,
                bytes_sent: 10,
                ..QualityTotals::default()
            },
        );
        let q = tracker.update(t0 + S, QualityTotals::default());
        assert_eq!((q.uplink_kbps, q.downlink_kbps), (0, 0));
        assert_eq!(q.uplink_loss, 0.0);
    }
}
