//! The relay's estimate of a subscriber's downlink: GCC's delay-based half (webrtc-rs's `Gcc`)
//! beside a loss-based half that tolerates a line's own random loss.
//!
//! webrtc-rs's loss half lowers the target whenever more than 10 % of a batch is lost and raises it
//! only below 2 %. On a rural line that loses ~10 % at random whatever is sent (the `congested`
//! profile, a weak radio), that walked the estimate down to its floor within seconds although
//! the link had room: the relay then gave the subscriber no video it could repair (its
//! retransmissions are held to a share of the estimate) and chose layers far below what fitted.
//! Random loss does not grow with the rate, and what it costs is repaired downstream (NACK for
//! video, Opus RED for audio), so the loss half here counts only the loss above
//! [`TOLERATED_LOSS`]: a line losing 10 % each way holds the estimate where the delay half puts
//! it. Congestion, unlike a line's own loss, shows first as queueing delay or as heavy loss:
//! while the delay half has lowered its target within [`CONGESTION_MEMORY`], or while more than
//! [`HEAVY_LOSS`] is lost, all loss counts (a drop-tail queue overfilled by a video that does not
//! fit is brought down as fast as before).

use std::time::{Duration, Instant};

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, Gcc, LossController, PacketReport};

/// The share of packets a line may lose at random before loss lowers the estimate. The lost
/// feedback counts too (a packet whose report never came back is taken as lost), so a line
/// that loses 10 % each way shows ~19 % here (measured in Chromium over the `congested` profile).
pub(crate) const TOLERATED_LOSS: f64 = 0.20;

/// Loss above this share (smoothed over batches) is an overfull queue, not a line's own loss:
/// all of it counts.
pub(crate) const HEAVY_LOSS: f64 = 0.35;

/// How long after the delay half lowered its target loss is taken for congestion, all of it.
pub(crate) const CONGESTION_MEMORY: Duration = Duration::from_secs(2);

/// A downlink estimator for one subscriber connection.
pub(crate) struct DownlinkEstimator {
    /// The delay-based half is read from it (its own loss half is not used).
    gcc: Gcc,
    /// Fed only the loss above [`TOLERATED_LOSS`].
    loss: LossController,
    min: f64,
    max: f64,
    target: f64,
    /// The delay half's last target, and when it last went down.
    delay_target: f64,
    delay_fell_at: Option<Instant>,
    /// All loss, smoothed over batches (feedback often reports a handful of packets at a time).
    average_loss: Option<f64>,
}

impl DownlinkEstimator {
    /// An estimator starting at `initial`, held within `min..=max` (bit/s).
    pub(crate) fn new(initial: f64, min: f64, max: f64) -> Self {
        Self {
            gcc: Gcc::new(initial, min, max),
            loss: LossController::new(initial, min, max),
            min,
            max,
            target: initial.clamp(min, max),
            delay_target: initial.clamp(min, max),
            delay_fell_at: None,
            average_loss: None,
        }
    }
}

/// Counts in hundredths of a packet: feedback often reports a handful of packets at a time, and
/// the tolerated share of a handful is rarely a whole number of packets.
const SCALE: usize = 100;

/// The loss above the tolerated share as `(lost, total)` for the loss controller, both in
/// hundredths of a packet, when `lost` of `total` were lost.
fn excess_loss(lost: usize, total: usize) -> (usize, usize) {
    let excess = lost as f64 - total as f64 * TOLERATED_LOSS;
    (
        (excess.max(0.0) * SCALE as f64).round() as usize,
        total * SCALE,
    )
}

impl BandwidthEstimator for DownlinkEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        self.gcc.on_reports(now, reports);
        let delay_target = self.gcc.delay_based_bitrate();
        if delay_target < self.delay_target {
            self.delay_fell_at = Some(now);
        }
        self.delay_target = delay_target;
        let congested = self
            .delay_fell_at
            .is_some_and(|at| now.saturating_duration_since(at) < CONGESTION_MEMORY);
        let lost = reports.iter().filter(|report| !report.arrived).count();
        let sample = lost as f64 / reports.len() as f64;
        let average = self.average_loss.map_or(sample, |a| 0.8 * a + 0.2 * sample);
        self.average_loss = Some(average);
        let (lost, total) = if congested || average > HEAVY_LOSS {
            (lost * SCALE, reports.len() * SCALE)
        } else {
            excess_loss(lost, reports.len())
        };
        let loss_target = self.loss.update(now, lost, total);
        self.target = delay_target.min(loss_target).clamp(self.min, self.max);
    }

    fn target_bitrate(&self) -> f64 {
        self.target
    }

    fn stats(&self) -> EstimatorStats {
        let mut stats = self.gcc.stats();
        stats.loss_based_bitrate = Some(self.loss.target());
        stats
    }
}

#[cfg(test)]
mod tests {
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

    use super::*;

    /// Feeds `seconds` of reports: 100 packets of 1,200 bytes every 100 ms (9.6 Mbit/s offered,
    /// evenly spaced, arriving after a constant 20 ms: no queue), every `lose_every`-th lost.
    fn run(estimator: &mut dyn BandwidthEstimator, seconds: u64, lose_every: usize) -> f64 {
        let epoch = Instant::now();
        let mut id = 0u64;
        let remote = Duration::from_secs(1);
        for batch in 0..seconds * 10 {
            let sent = epoch + Duration::from_millis(batch * 100);
            let reports: Vec<PacketReport> = (0..100)
                .map(|i| {
                    id += 1;
                    let offset = Duration::from_millis(batch * 100 + i);
                    let lost = lose_every > 0 && (id as usize).is_multiple_of(lose_every);
                    PacketReport {
                        ssrc: 1,
                        id,
                        rtp_sequence_number: id as u16,
                        is_twcc: true,
                        twcc_sequence_number: id as u16,
                        size: 1_200,
                        departure: epoch + offset,
                        arrived: !lost,
                        // The receiver's clock: the same spacing, 20 ms later.
                        arrival: (!lost).then(|| remote + offset + Duration::from_millis(20)),
                        ecn: Ecn::NotEct,
                    }
                })
                .collect();
            estimator.on_reports(sent + Duration::from_millis(120), &reports);
        }
        estimator.target_bitrate()
    }

    #[test]
    fn a_line_losing_an_eighth_at_random_keeps_its_estimate_where_gccs_own_loss_half_sinks_it() {
        // 12.5 % lost, no queue: the `congested` profile's 10 % and a little more.
        let (initial, min, max) = (300_000.0, 30_000.0, 10_000_000.0);
        let ours = run(&mut DownlinkEstimator::new(initial, min, max), 10, 8);
        let gcc = run(&mut Gcc::new(initial, min, max), 10, 8);
        assert!(ours >= initial, "ours fell to {ours}");
        assert!(gcc < initial / 2.0, "GCC's own kept {gcc}");
    }

    #[test]
    fn heavy_loss_still_lowers_the_estimate() {
        let initial = 1_000_000.0;
        let ours = run(
            &mut DownlinkEstimator::new(initial, 30_000.0, 10_000_000.0),
            5,
            2,
        );
        assert!(ours < initial / 2.0, "50 % loss left {ours}");
    }

    #[test]
    fn loss_above_the_tolerated_share_keeps_the_loss_half_from_rising() {
        // 25 % lost: 5 % over what is tolerated, enough to keep the loss half from rising.
        let initial = 1_000_000.0;
        let ours = run(
            &mut DownlinkEstimator::new(initial, 30_000.0, 10_000_000.0),
            5,
            4,
        );
        assert!(ours <= initial, "25 % loss raised it to {ours}");
    }

    #[test]
    fn only_the_loss_above_the_tolerated_share_counts_in_hundredths_of_a_packet() {
        assert_eq!(excess_loss(20, 100), (0, 10_000));
        assert_eq!(excess_loss(35, 100), (1_500, 10_000));
        // Two of five lost: one packet over the fifth tolerated.
        assert_eq!(excess_loss(2, 5), (100, 500));
        assert_eq!(excess_loss(0, 0), (0, 0));
    }
}
