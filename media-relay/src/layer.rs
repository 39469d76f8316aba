//! Which simulcast layer a subscriber gets: a pure struct fed bandwidth estimates, loss, the
//! layers' measured bitrates and times (no clock, no I/O). It moves down at once when the
//! estimate no longer carries the current layer or loss is high, moves up one layer at a time and
//! only after the estimate has carried the higher layer for a hold time (so a brief spike does not
//! cause a switch and a keyframe), and switches only on a keyframe of the target layer, so the
//! subscriber's decoder never sees a layer change mid-GOP.
//!
//! Layers are named by their index in the publisher's track (the order their first packets
//! arrived) and ranked by measured bitrate, since browsers list their encodings in either order.
//! A layer measured at zero is not being sent (a browser pauses its top layers when its own uplink
//! is short) and is never chosen while another one is.

use std::time::{Duration, Instant};

/// Tuning of [`LayerSelector`].
#[derive(Debug, Clone)]
pub struct LayerPolicy {
    /// Go up only when the estimate exceeds the higher layer's bitrate by this factor…
    pub up_headroom: f64,
    /// …continuously for this long.
    pub up_hold: Duration,
    /// Loss fraction (0..1) above which the selector steps one layer down.
    pub loss_step_down: f64,
    /// The longest the hold before going up grows to: each step up that has to come back down
    /// within [`LayerPolicy::proven_after`] doubles the hold, up to this (an estimate that grows
    /// while the link is not full is tried less and less often instead of in a sawtooth).
    pub max_up_hold: Duration,
    /// How long a step up must last to count as having worked (the hold goes back to
    /// `up_hold`).
    pub proven_after: Duration,
    /// Video gives way: on the lowest layer, when the estimate no longer carries it and the
    /// subscriber reports more than this loss, the leg stops sending video altogether (audio,
    /// which the estimate has already set aside, then goes through); it comes back as a step up
    /// does, when the estimate has carried the lowest layer with headroom for the hold.
    pub suspend_loss: f64,
    /// …only for a lowest layer of at least this many bit/s: a small one costs the link little,
    /// and the estimate's own floor would otherwise switch off video the link carries.
    pub suspend_min_bps: u64,
}

impl Default for LayerPolicy {
    fn default() -> Self {
        Self {
            up_headroom: 1.2,
            up_hold: Duration::from_secs(3),
            loss_step_down: 0.10,
            max_up_hold: Duration::from_secs(60),
            proven_after: Duration::from_secs(10),
            suspend_loss: 0.25,
            suspend_min_bps: 100_000,
        }
    }
}

/// The selector's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerDecision {
    /// Nothing changes.
    Keep,
    /// A new target: ask that layer's publisher stream for a keyframe; the switch happens on it.
    SwitchTo(usize),
    /// Stop sending this video: the link cannot carry even the lowest layer (video gives way
    /// to audio). A later `SwitchTo` brings it back on a keyframe.
    Suspend,
}

/// Chooses a simulcast layer for one subscriber of one published video.
#[derive(Debug, Clone)]
pub struct LayerSelector {
    /// Each layer's measured bitrate in bit/s, by layer index (0 while unmeasured or paused).
    bitrates: Vec<u64>,
    policy: LayerPolicy,
    /// Highest rank worth sending, from the size the subscriber displays.
    max_rank: usize,
    target: usize,
    current: Option<usize>,
    up_since: Option<Instant>,
    /// An estimate has arrived; before that the target is the lowest layer sent.
    estimated: bool,
    /// The hold before the next step up (grows after failed steps up).
    hold: Duration,
    /// When the last step up was taken, until it proved itself or failed.
    stepped_up_at: Option<Instant>,
    /// No video is sent (it gave way to audio).
    suspended: bool,
}

impl LayerSelector {
    /// A selector over `layers` layers, aiming at layer 0 until bitrates are known.
    pub fn new(layers: usize, policy: LayerPolicy) -> Self {
        Self {
            bitrates: vec![0; layers.max(1)],
            max_rank: usize::MAX,
            target: 0,
            current: None,
            hold: policy.up_hold,
            policy,
            up_since: None,
            estimated: false,
            stepped_up_at: None,
            suspended: false,
        }
    }

    /// Whether the video gave way (nothing is sent until the link carries the lowest layer).
    pub fn suspended(&self) -> bool {
        self.suspended
    }

    /// The layer being forwarded, if any yet.
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    /// The layer the selector is switching to (equal to `current` when settled).
    pub fn target(&self) -> usize {
        self.target
    }

    /// The rank (0 = lowest bitrate) of the layer being forwarded, if any.
    pub fn current_rank(&self) -> Option<usize> {
        let current = self.current?;
        self.ranked().iter().position(|&l| l == current)
    }

    /// The layers being sent (measured above zero), lowest bitrate first.
    pub fn ranked(&self) -> Vec<usize> {
        let mut layers: Vec<usize> = (0..self.bitrates.len())
            .filter(|&l| self.bitrates[l] > 0)
            .collect();
        layers.sort_by_key(|&l| (self.bitrates[l], l));
        layers
    }

    /// New measurements of the layers' bitrates, by layer index (a track may gain layers as
    /// their first packets arrive). Until the subscriber reports an estimate the target is the
    /// lowest layer being sent: a new subscriber starts low and climbs, and one that never
    /// reports stays on the layer any link carries.
    pub fn set_bitrates(&mut self, bitrates: &[u64]) -> LayerDecision {
        self.bitrates.clear();
        self.bitrates.extend_from_slice(bitrates);
        if self.bitrates.is_empty() {
            self.bitrates.push(0);
        }
        let ranked = self.ranked();
        match ranked.first() {
            // Suspended: stays so until an estimate brings it back.
            _ if self.suspended => LayerDecision::Keep,
            Some(&lowest) if !self.estimated => self.retarget(lowest),
            // The target stopped being sent: fall back to the lowest layer sent at once (the
            // next estimate climbs again) rather than freeze the picture.
            Some(&lowest) if !ranked.contains(&self.target) => self.retarget(lowest),
            _ => LayerDecision::Keep,
        }
    }

    /// Caps the layer by the subscriber's display size (rank 0 = lowest bitrate; e.g. a
    /// thumbnail needs rank 0).
    pub fn set_max_rank(&mut self, max_rank: usize) -> LayerDecision {
        self.max_rank = max_rank;
        let ranked = self.ranked();
        let Some(rank) = ranked.iter().position(|&l| l == self.target) else {
            return LayerDecision::Keep;
        };
        if rank > max_rank {
            return self.retarget(ranked[max_rank.min(ranked.len() - 1)]);
        }
        LayerDecision::Keep
    }

    /// Feeds a bandwidth estimate (bit/s, from REMB or TWCC) and the loss fraction (0..1, from
    /// receiver reports) observed at `now`.
    pub fn on_estimate(&mut self, now: Instant, estimate_bps: u64, loss: f64) -> LayerDecision {
        self.estimated = true;
        let ranked = self.ranked();
        if ranked.is_empty() {
            return LayerDecision::Keep;
        }
        if self.suspended {
            return self.resume_when_carried(now, estimate_bps, ranked[0]);
        }
        let cap = self.max_rank.min(ranked.len() - 1);
        // The highest rank the estimate carries as it is.
        let fits = ranked
            .iter()
            .rposition(|&l| self.bitrates[l] <= estimate_bps)
            .unwrap_or(0)
            .min(cap);
        let Some(rank) = ranked.iter().position(|&l| l == self.target) else {
            // The target is not being sent: take what fits now.
            self.up_since = None;
            return self.retarget(ranked[fits]);
        };
        let mut wanted = fits;
        if loss > self.policy.loss_step_down {
            wanted = wanted.min(rank.saturating_sub(1));
        }
        let lowest = ranked[0];
        let give_way = rank == 0
            && loss > self.policy.suspend_loss
            && estimate_bps < self.bitrates[lowest]
            && self.bitrates[lowest] >= self.policy.suspend_min_bps;
        if let Some(at) = self.stepped_up_at {
            if wanted < rank || give_way {
                // The step up did not hold: wait longer before the next one.
                self.hold = (self.hold * 2).min(self.policy.max_up_hold);
                self.stepped_up_at = None;
            } else if now.saturating_duration_since(at) >= self.policy.proven_after {
                self.hold = self.policy.up_hold;
                self.stepped_up_at = None;
            }
        }
        if give_way {
            self.suspended = true;
            self.current = None;
            self.up_since = None;
            return LayerDecision::Suspend;
        }
        if wanted < rank {
            self.up_since = None;
            return self.retarget(ranked[wanted]);
        }
        if wanted == rank || rank >= cap {
            self.up_since = None;
            return LayerDecision::Keep;
        }
        // Going up: one layer at a time, with headroom, held for a while.
        let next = ranked[rank + 1];
        let needed = self.bitrates[next] as f64 * self.policy.up_headroom;
        if (estimate_bps as f64) < needed || loss > self.policy.loss_step_down {
            self.up_since = None;
            return LayerDecision::Keep;
        }
        let since = *self.up_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= self.hold {
            self.up_since = None;
            self.stepped_up_at = Some(now);
            return self.retarget(next);
        }
        LayerDecision::Keep
    }

    /// While suspended: back to `lowest` once the estimate has carried it with headroom for the
    /// hold (a resume is a step up: one that fails doubles the hold).
    fn resume_when_carried(
        &mut self,
        now: Instant,
        estimate_bps: u64,
        lowest: usize,
    ) -> LayerDecision {
        let needed = self.bitrates[lowest] as f64 * self.policy.up_headroom;
        if (estimate_bps as f64) < needed {
            self.up_since = None;
            return LayerDecision::Keep;
        }
        let since = *self.up_since.get_or_insert(now);
        if now.saturating_duration_since(since) < self.hold {
            return LayerDecision::Keep;
        }
        self.suspended = false;
        self.up_since = None;
        self.stepped_up_at = Some(now);
        self.target = lowest;
        self.current = None;
        LayerDecision::SwitchTo(lowest)
    }

    /// A packet of `layer` arrived; `keyframe_start` if it begins a keyframe. Returns whether to
    /// forward it: packets of the current layer only, the switch happening on the target's
    /// keyframe; nothing while suspended.
    pub fn on_packet(&mut self, layer: usize, keyframe_start: bool) -> bool {
        if self.suspended {
            return false;
        }
        if layer == self.target && keyframe_start && self.current != Some(layer) {
            self.current = Some(layer);
        }
        self.current == Some(layer)
    }

    fn retarget(&mut self, layer: usize) -> LayerDecision {
        if layer == self.target {
            return LayerDecision::Keep;
        }
        self.target = layer;
        if self.current == Some(layer) {
            // Back to the layer still being forwarded: nothing to switch.
            return LayerDecision::Keep;
        }
        LayerDecision::SwitchTo(layer)
    }
}

/// A layer's bitrate over the last whole window: fed byte counts and times. Windows run back to
/// back from the first byte, so a layer that stops sending reads zero one window later.
#[derive(Debug, Clone)]
pub struct BitrateMeter {
    window: Duration,
    /// Start of the window being filled.
    started: Option<Instant>,
    bytes: u64,
    last_bps: u64,
    /// A whole window has been measured (before that, the rate so far is given).
    measured: bool,
}

impl BitrateMeter {
    /// A meter measuring over windows of `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window: window.max(Duration::from_millis(1)),
            started: None,
            bytes: 0,
            last_bps: 0,
            measured: false,
        }
    }

    /// `bytes` arrived at `now`.
    pub fn add(&mut self, now: Instant, bytes: usize) {
        self.roll(now);
        self.started.get_or_insert(now);
        self.bytes += bytes as u64;
    }

    /// The bitrate of the last whole window, bit/s; before the first window ends, the rate so
    /// far (over at least a tenth of a window), so that a subscriber joining a track just opened
    /// can already be given its lowest layer.
    pub fn bps(&mut self, now: Instant) -> u64 {
        self.roll(now);
        match self.started {
            Some(started) if !self.measured => {
                let elapsed = now.saturating_duration_since(started).max(self.window / 10);
                (self.bytes as f64 * 8.0 / elapsed.as_secs_f64()) as u64
            }
            _ => self.last_bps,
        }
    }

    fn roll(&mut self, now: Instant) {
        let Some(started) = self.started else {
            return;
        };
        let windows = now.saturating_duration_since(started).as_nanos() / self.window.as_nanos();
        if windows == 0 {
            return;
        }
        self.last_bps = if windows == 1 {
            (self.bytes as f64 * 8.0 / self.window.as_secs_f64()) as u64
        } else {
            0 // at least one whole window without a byte
        };
        let windows = u32::try_from(windows).unwrap_or(u32::MAX);
        self.started = Some(started + self.window * windows);
        self.bytes = 0;
        self.measured = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const LAYERS: [u64; 3] = [150_000, 500_000, 1_500_000];

    fn selector() -> LayerSelector {
        let mut s = LayerSelector::new(3, LayerPolicy::default());
        assert_eq!(s.set_bitrates(&LAYERS), LayerDecision::Keep);
        s
    }

    /// Settles on `layer`: keyframe of it arrives.
    fn settle(selector: &mut LayerSelector, layer: usize) {
        assert!(selector.on_packet(layer, true));
        assert_eq!(selector.current(), Some(layer));
    }

    #[test]
    fn a_single_layer_gives_way_on_a_link_that_cannot_carry_it_and_comes_back_held_like_a_step_up()
    {
        let t0 = Instant::now();
        let mut s = LayerSelector::new(1, LayerPolicy::default());
        s.set_bitrates(&[450_000]);
        settle(&mut s, 0);
        // Short of the layer but hardly losing: it stays (a slow estimate on a good link).
        assert_eq!(s.on_estimate(t0, 250_000, 0.01), LayerDecision::Keep);
        assert!(s.on_packet(0, false));
        // Short of it and losing more than a quarter: video gives way.
        assert_eq!(s.on_estimate(t0, 250_000, 0.4), LayerDecision::Suspend);
        assert!(s.suspended());
        assert!(
            !s.on_packet(0, true),
            "nothing while suspended, not even a keyframe"
        );
        assert_eq!(s.set_bitrates(&[450_000]), LayerDecision::Keep);
        // The estimate recovers: back after the hold (3 s), on a keyframe.
        let good = 600_000;
        assert_eq!(s.on_estimate(t0 + S, good, 0.0), LayerDecision::Keep);
        assert_eq!(s.on_estimate(t0 + 3 * S, good, 0.0), LayerDecision::Keep);
        assert_eq!(
            s.on_estimate(t0 + 4 * S, good, 0.0),
            LayerDecision::SwitchTo(0)
        );
        assert!(!s.on_packet(0, false));
        assert!(s.on_packet(0, true));
        // It did not hold: suspended again, and the next try waits twice as long.
        assert_eq!(
            s.on_estimate(t0 + 5 * S, 200_000, 0.5),
            LayerDecision::Suspend
        );
        assert_eq!(s.on_estimate(t0 + 6 * S, good, 0.0), LayerDecision::Keep);
        assert_eq!(s.on_estimate(t0 + 11 * S, good, 0.0), LayerDecision::Keep);
        assert_eq!(
            s.on_estimate(t0 + 12 * S, good, 0.0),
            LayerDecision::SwitchTo(0)
        );
        // A small layer never gives way: it costs the link little.
        let mut small = LayerSelector::new(1, LayerPolicy::default());
        small.set_bitrates(&[60_000]);
        settle(&mut small, 0);
        assert_eq!(small.on_estimate(t0, 10_000, 0.6), LayerDecision::Keep);
    }

    #[test]
    fn with_simulcast_a_weak_link_goes_to_the_lowest_layer_before_the_video_gives_way() {
        let t0 = Instant::now();
        let mut s = selector();
        settle(&mut s, 0);
        assert_eq!(s.on_estimate(t0, 3_000_000, 0.0), LayerDecision::Keep);
        let mut top = LayerSelector::new(3, LayerPolicy::default());
        top.set_bitrates(&LAYERS);
        top.on_estimate(t0, 0, 0.0);
        settle(&mut top, 0);
        // Climb to the middle layer, then the link fails badly: down one layer, not off.
        for i in 1..=4 {
            top.on_estimate(t0 + i * S, 700_000, 0.0);
        }
        assert_eq!(top.target(), 1);
        settle(&mut top, 1);
        assert_eq!(
            top.on_estimate(t0 + 5 * S, 100_000, 0.5),
            LayerDecision::SwitchTo(0)
        );
        settle(&mut top, 0);
        assert_eq!(
            top.on_estimate(t0 + 6 * S, 100_000, 0.5),
            LayerDecision::Suspend
        );
    }

    #[test]
    fn nothing_is_forwarded_before_the_first_keyframe_of_the_target() {
        let mut s = selector();
        assert!(!s.on_packet(0, false));
        assert!(!s.on_packet(1, true), "not the target");
        assert!(s.on_packet(0, true));
        assert!(s.on_packet(0, false));
        assert!(!s.on_packet(1, false));
    }

    #[test]
    fn a_step_up_that_has_to_come_back_down_doubles_the_hold_and_one_that_lasts_resets_it() {
        let t0 = Instant::now();
        let mut s = selector();
        settle(&mut s, 0);
        let up = |s: &mut LayerSelector, at: Instant| s.on_estimate(at, 3_000_000, 0.0);
        assert_eq!(up(&mut s, t0), LayerDecision::Keep);
        assert_eq!(up(&mut s, t0 + 3 * S), LayerDecision::SwitchTo(1));
        settle(&mut s, 1);
        // Congestion 2 s later: down at once, and the next try waits 6 s instead of 3.
        assert_eq!(
            s.on_estimate(t0 + 5 * S, 200_000, 0.0),
            LayerDecision::SwitchTo(0)
        );
        settle(&mut s, 0);
        assert_eq!(up(&mut s, t0 + 6 * S), LayerDecision::Keep);
        assert_eq!(
            up(&mut s, t0 + 11 * S),
            LayerDecision::Keep,
            "3 s is not enough now"
        );
        assert_eq!(up(&mut s, t0 + 12 * S), LayerDecision::SwitchTo(1));
        settle(&mut s, 1);
        // Each failure doubles it, never past the policy's 60 s.
        s.hold = 40 * S;
        assert_eq!(
            s.on_estimate(t0 + 13 * S, 200_000, 0.0),
            LayerDecision::SwitchTo(0)
        );
        assert_eq!(s.hold, LayerPolicy::default().max_up_hold);
        // A step up that lasts 10 s brings the hold back to 3 s.
        let mut s = selector();
        settle(&mut s, 0);
        up(&mut s, t0);
        assert_eq!(up(&mut s, t0 + 3 * S), LayerDecision::SwitchTo(1));
        settle(&mut s, 1);
        s.hold = 8 * S;
        assert_eq!(up(&mut s, t0 + 13 * S), LayerDecision::Keep);
        assert_eq!(s.hold, 3 * S, "proven: back to the policy's hold");
    }

    #[test]
    fn climbs_one_layer_at_a_time_only_after_the_hold() {
        let t0 = Instant::now();
        let mut s = selector();
        settle(&mut s, 0);
        assert_eq!(s.on_estimate(t0, 3_000_000, 0.0), LayerDecision::Keep);
        assert_eq!(
            s.on_estimate(t0 + 2 * S, 3_000_000, 0.0),
            LayerDecision::Keep
        );
        assert_eq!(
            s.on_estimate(t0 + 3 * S, 3_000_000, 0.0),
            LayerDecision::SwitchTo(1)
        );
        // Still forwarding layer 0 until layer 1's keyframe.
        assert!(s.on_packet(0, false));
        assert!(!s.on_packet(1, false));
        assert!(s.on_packet(1, true));
        assert!(!s.on_packet(0, false));
        assert_eq!(
            s.on_estimate(t0 + 4 * S, 3_000_000, 0.0),
            LayerDecision::Keep
        );
        assert_eq!(
            s.on_estimate(t0 + 7 * S, 3_000_000, 0.0),
            LayerDecision::SwitchTo(2)
        );
    }

    #[test]
    fn a_brief_spike_does_not_move_it_up() {
        let t0 = Instant::now();
        let mut s = selector();
        settle(&mut s, 0);
        s.on_estimate(t0, 3_000_000, 0.0);
        s.on_estimate(t0 + 2 * S, 300_000, 0.0); // back down: the hold restarts
        assert_eq!(
            s.on_estimate(t0 + 3 * S, 3_000_000, 0.0),
            LayerDecision::Keep
        );
        assert_eq!(
            s.on_estimate(t0 + 5 * S, 3_000_000, 0.0),
            LayerDecision::Keep
        );
        assert_eq!(
            s.on_estimate(t0 + 6 * S, 3_000_000, 0.0),
            LayerDecision::SwitchTo(1)
        );
    }

    #[test]
    fn a_bandwidth_drop_moves_down_at_once_and_switches_on_the_lower_keyframe() {
        let t0 = Instant::now();
        let mut s = selector();
        s.on_estimate(t0, 3_000_000, 0.0);
        s.target = 2; // as if it had climbed
        settle(&mut s, 2);
        assert_eq!(
            s.on_estimate(t0 + S, 400_000, 0.0),
            LayerDecision::SwitchTo(0)
        );
        assert!(
            s.on_packet(2, false),
            "keeps the old layer until the switch"
        );
        assert!(s.on_packet(0, true));
        assert!(!s.on_packet(2, false));
    }

    #[test]
    fn heavy_loss_steps_down_one_layer_even_when_the_estimate_is_high() {
        let t0 = Instant::now();
        let mut s = selector();
        s.target = 2;
        settle(&mut s, 2);
        assert_eq!(
            s.on_estimate(t0, 3_000_000, 0.25),
            LayerDecision::SwitchTo(1)
        );
        assert_eq!(
            s.on_estimate(t0 + S, 3_000_000, 0.25),
            LayerDecision::SwitchTo(0)
        );
    }

    #[test]
    fn display_size_caps_the_layer() {
        let t0 = Instant::now();
        let mut s = selector();
        settle(&mut s, 0);
        assert_eq!(s.set_max_rank(0), LayerDecision::Keep);
        assert_eq!(s.on_estimate(t0, 3_000_000, 0.0), LayerDecision::Keep);
        assert_eq!(
            s.on_estimate(t0 + 10 * S, 3_000_000, 0.0),
            LayerDecision::Keep
        );
        assert_eq!(s.target(), 0);
    }

    #[test]
    fn returning_to_the_forwarded_layer_before_the_switch_needs_no_keyframe() {
        let t0 = Instant::now();
        let mut s = selector();
        s.target = 1;
        settle(&mut s, 1);
        assert_eq!(s.on_estimate(t0, 200_000, 0.0), LayerDecision::SwitchTo(0));
        // Recovers before layer 0's keyframe came: retarget to 1 (held) is a no-op switch.
        s.on_estimate(t0 + S, 1_000_000, 0.0);
        assert_eq!(
            s.on_estimate(t0 + 4 * S, 1_000_000, 0.0),
            LayerDecision::Keep
        );
        assert_eq!(s.target(), 1);
        assert!(s.on_packet(1, false));
    }

    #[test]
    fn layers_are_ranked_by_measured_bitrate_whatever_order_the_publisher_lists_them() {
        let t0 = Instant::now();
        // Listed highest first, as many browser examples do.
        let mut s = LayerSelector::new(3, LayerPolicy::default());
        assert_eq!(
            s.set_bitrates(&[1_500_000, 500_000, 150_000]),
            LayerDecision::SwitchTo(2),
            "a new subscriber starts on the lowest layer"
        );
        settle(&mut s, 2);
        assert_eq!(s.current_rank(), Some(0));
        s.on_estimate(t0, 800_000, 0.0);
        assert_eq!(
            s.on_estimate(t0 + 3 * S, 800_000, 0.0),
            LayerDecision::SwitchTo(1)
        );
        settle(&mut s, 1);
        assert_eq!(s.current_rank(), Some(1));
        assert_eq!(
            s.on_estimate(t0 + 4 * S, 100_000, 0.0),
            LayerDecision::SwitchTo(2)
        );
    }

    #[test]
    fn a_paused_layer_is_never_chosen_and_a_paused_target_falls_back_at_once() {
        let t0 = Instant::now();
        let mut s = selector();
        // The top layer stops (the publisher's uplink is short): an estimate that would carry it
        // still gets the middle one.
        s.set_bitrates(&[150_000, 500_000, 0]);
        s.on_estimate(t0, 5_000_000, 0.0);
        s.on_estimate(t0 + 3 * S, 5_000_000, 0.0);
        settle(&mut s, 1);
        assert_eq!(
            s.on_estimate(t0 + 7 * S, 5_000_000, 0.0),
            LayerDecision::Keep
        );
        assert_eq!(s.target(), 1);
        // Now the middle one stops too, while forwarded: back to the lowest without an estimate.
        assert_eq!(s.set_bitrates(&[150_000, 0, 0]), LayerDecision::SwitchTo(0));
    }

    #[test]
    fn before_any_layer_is_measured_nothing_is_decided() {
        let t0 = Instant::now();
        let mut s = LayerSelector::new(3, LayerPolicy::default());
        assert_eq!(s.on_estimate(t0, 5_000_000, 0.0), LayerDecision::Keep);
        assert_eq!(s.target(), 0);
        assert_eq!(s.current_rank(), None);
    }

    #[test]
    fn the_meter_gives_the_last_windows_bitrate_and_zero_once_a_layer_stops() {
        let t0 = Instant::now();
        let mut meter = BitrateMeter::new(S);
        assert_eq!(meter.bps(t0), 0, "nothing measured yet");
        for i in 0..5 {
            meter.add(t0 + i * S / 10, 12_500); // 100 kbit every 100 ms
        }
        assert_eq!(
            meter.bps(t0 + S / 2),
            1_000_000,
            "the rate so far while the first window runs: 5 × 100 kbit in 0.5 s"
        );
        for i in 5..10 {
            meter.add(t0 + i * S / 10, 12_500);
        }
        meter.add(t0 + S, 12_500); // the second window's only packet
        assert_eq!(meter.bps(t0 + S), 1_000_000);
        assert_eq!(meter.bps(t0 + 2 * S), 100_000);
        // The layer stops: a whole window without a byte reads zero.
        assert_eq!(meter.bps(t0 + 3 * S + S / 2), 0);
        meter.add(t0 + 4 * S, 25_000);
        assert_eq!(meter.bps(t0 + 5 * S), 200_000, "sending again");
    }
}
