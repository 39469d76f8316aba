//! Who is speaking, from the RFC 6464 audio level a browser puts on each Opus packet: a pure
//! detector fed levels and times. Starts after a short run of loud packets (a cough or a click
//! is not speech) and stops after a hangover of quiet, so the indicator does not flicker between
//! words.

use std::time::{Duration, Instant};

/// Tuning of [`SpeakingDetector`].
#[derive(Debug, Clone)]
pub struct SpeakingPolicy {
    /// A packet is loud when its level is at most this (−dBov: 0 loudest, 127 silence).
    pub loud_at_most: u8,
    /// Loud packets must span at least this long before speaking starts…
    pub start_after: Duration,
    /// …with no quiet gap longer than this inside the run.
    pub max_gap: Duration,
    /// Speaking stops after this long without a loud packet.
    pub hangover: Duration,
}

impl Default for SpeakingPolicy {
    fn default() -> Self {
        Self {
            loud_at_most: 50,
            start_after: Duration::from_millis(100),
            max_gap: Duration::from_millis(100),
            hangover: Duration::from_millis(600),
        }
    }
}

/// Turns audio levels into speaking on/off changes for one publisher.
#[derive(Debug, Clone)]
pub struct SpeakingDetector {
    policy: SpeakingPolicy,
    run_start: Option<Instant>,
    last_loud: Option<Instant>,
    speaking: bool,
}

impl SpeakingDetector {
    /// A silent detector.
    pub fn new(policy: SpeakingPolicy) -> Self {
        Self {
            policy,
            run_start: None,
            last_loud: None,
            speaking: false,
        }
    }

    /// Whether the publisher is speaking now.
    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// A packet with this level arrived at `now`; returns the new state if it changed.
    pub fn on_level(&mut self, now: Instant, level: u8) -> Option<bool> {
        if level <= self.policy.loud_at_most {
            let continues = self
                .last_loud
                .is_some_and(|t| now.saturating_duration_since(t) <= self.policy.max_gap);
            if !continues {
                self.run_start = Some(now);
            }
            self.last_loud = Some(now);
            let run = now.saturating_duration_since(self.run_start.unwrap_or(now));
            if !self.speaking && run >= self.policy.start_after {
                self.speaking = true;
                return Some(true);
            }
            return None;
        }
        self.poll(now)
    }

    /// When the hangover would end speaking, if it is speaking.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.speaking, self.last_loud) {
            (true, Some(last)) => Some(last + self.policy.hangover),
            _ => None,
        }
    }

    /// Time passed without loud packets (or with none at all); returns `Some(false)` when
    /// speaking stops.
    pub fn poll(&mut self, now: Instant) -> Option<bool> {
        match self.next_deadline() {
            Some(end) if now >= end => {
                self.speaking = false;
                self.run_start = None;
                Some(false)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds one packet every 20 ms from `from` for `count` packets; returns the changes.
    fn feed(d: &mut SpeakingDetector, from: Instant, count: u32, level: u8) -> Vec<(u32, bool)> {
        (0..count)
            .filter_map(|i| d.on_level(from + i * 20 * MS, level).map(|c| (i * 20, c)))
            .collect()
    }

    #[test]
    fn speech_starts_after_a_tenth_of_a_second_of_loud_packets() {
        let t0 = Instant::now();
        let mut d = SpeakingDetector::new(SpeakingPolicy::default());
        assert_eq!(feed(&mut d, t0, 10, 30), vec![(100, true)]);
        assert!(d.speaking());
    }

    #[test]
    fn a_click_is_not_speech() {
        let t0 = Instant::now();
        let mut d = SpeakingDetector::new(SpeakingPolicy::default());
        assert!(feed(&mut d, t0, 3, 20).is_empty());
        assert!(feed(&mut d, t0 + 60 * MS, 50, 127).is_empty());
        assert!(!d.speaking());
    }

    #[test]
    fn pauses_between_words_do_not_end_speech_but_silence_does() {
        let t0 = Instant::now();
        let mut d = SpeakingDetector::new(SpeakingPolicy::default());
        feed(&mut d, t0, 10, 30);
        // A 400 ms pause, then more words: still speaking throughout.
        assert!(feed(&mut d, t0 + 200 * MS, 20, 127).is_empty());
        assert!(feed(&mut d, t0 + 600 * MS, 10, 30).is_empty());
        // Then silence: stops 600 ms after the last loud packet (at 780 ms).
        let changes = feed(&mut d, t0 + 800 * MS, 40, 127);
        assert_eq!(changes, vec![(580, false)]);
    }

    #[test]
    fn speech_stops_even_when_packets_stop_arriving() {
        let t0 = Instant::now();
        let mut d = SpeakingDetector::new(SpeakingPolicy::default());
        feed(&mut d, t0, 10, 30);
        let deadline = d.next_deadline().expect("speaking");
        assert_eq!(deadline, t0 + 180 * MS + 600 * MS);
        assert_eq!(d.poll(deadline - MS), None);
        assert_eq!(d.poll(deadline), Some(false));
        assert_eq!(d.next_deadline(), None);
    }
}
