//! Which simulcast layer a subscriber gets: a pure struct fed bandwidth estimates, loss and times
//! (no clock, no I/O). It moves down at once when the estimate no longer carries the current
//! layer or loss is high, moves up only after the estimate has carried the higher layer for a
//! hold time (so a brief spike does not cause a switch and a keyframe), and switches only on a
//! keyframe of the target layer, so the subscriber's decoder never sees a layer change mid-GOP.
//!
//! Not yet wired into the forwarder: the relay does not accept simulcast publishers yet.

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
}

impl Default for LayerPolicy {
    fn default() -> Self {
        Self {
            up_headroom: 1.2,
            up_hold: Duration::from_secs(3),
            loss_step_down: 0.10,
        }
    }
}

/// The selector's verdict on one estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerDecision {
    /// Nothing changes.
    Keep,
    /// A new target: ask that layer's publisher stream for a keyframe; the switch happens on it.
    SwitchTo(usize),
}

/// Chooses a simulcast layer (0 = lowest) for one subscriber of one published video.
#[derive(Debug, Clone)]
pub struct LayerSelector {
    /// Each layer's bitrate in bit/s, lowest first.
    bitrates: Vec<u64>,
    policy: LayerPolicy,
    /// Highest layer worth sending, from the size the subscriber displays.
    max_layer: usize,
    target: usize,
    current: Option<usize>,
    up_since: Option<Instant>,
}

impl LayerSelector {
    /// A selector over layers with these bitrates (lowest first); starts aiming at layer 0.
    pub fn new(bitrates: Vec<u64>, policy: LayerPolicy) -> Self {
        let max_layer = bitrates.len().saturating_sub(1);
        Self {
            bitrates,
            policy,
            max_layer,
            target: 0,
            current: None,
            up_since: None,
        }
    }

    /// The layer being forwarded, if any yet.
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    /// The layer the selector is switching to (equal to `current` when settled).
    pub fn target(&self) -> usize {
        self.target
    }

    /// Caps the layer by the subscriber's display size (e.g. a thumbnail needs layer 0).
    pub fn set_max_layer(&mut self, max_layer: usize) -> LayerDecision {
        self.max_layer = max_layer.min(self.bitrates.len().saturating_sub(1));
        if self.target > self.max_layer {
            return self.retarget(self.max_layer);
        }
        LayerDecision::Keep
    }

    /// Feeds a bandwidth estimate (bit/s, from TWCC/REMB) and the loss fraction (0..1, from
    /// receiver reports) observed at `now`.
    pub fn on_estimate(&mut self, now: Instant, estimate_bps: u64, loss: f64) -> LayerDecision {
        // The highest layer the estimate carries as it is.
        let fits = self
            .bitrates
            .iter()
            .rposition(|&b| b <= estimate_bps)
            .unwrap_or(0)
            .min(self.max_layer);
        let mut wanted = fits;
        if loss > self.policy.loss_step_down {
            wanted = wanted.min(self.target.saturating_sub(1));
        }
        if wanted < self.target {
            self.up_since = None;
            return self.retarget(wanted);
        }
        if wanted == self.target || self.target >= self.max_layer {
            self.up_since = None;
            return LayerDecision::Keep;
        }
        // Going up: one layer at a time, with headroom, held for a while.
        let next = self.target + 1;
        let needed = self.bitrates[next] as f64 * self.policy.up_headroom;
        if (estimate_bps as f64) < needed || loss > self.policy.loss_step_down {
            self.up_since = None;
            return LayerDecision::Keep;
        }
        let since = *self.up_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= self.policy.up_hold {
            self.up_since = None;
            return self.retarget(next);
        }
        LayerDecision::Keep
    }

    /// A packet of `layer` arrived; `keyframe_start` if it begins a keyframe. Returns whether to
    /// forward it: packets of the current layer only, the switch happening on the target's
    /// keyframe.
    pub fn on_packet(&mut self, layer: usize, keyframe_start: bool) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const LAYERS: [u64; 3] = [150_000, 500_000, 1_500_000];

    fn selector() -> LayerSelector {
        LayerSelector::new(LAYERS.to_vec(), LayerPolicy::default())
    }

    /// Settles on `layer`: keyframe of it arrives.
    fn settle(selector: &mut LayerSelector, layer: usize) {
        assert!(selector.on_packet(layer, true));
        assert_eq!(selector.current(), Some(layer));
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
        assert_eq!(s.set_max_layer(0), LayerDecision::Keep);
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
}
