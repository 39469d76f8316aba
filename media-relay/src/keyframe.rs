//! When to ask a publisher for a keyframe: a rate limiter fed with times, no clock inside.
//!
//! A storm of requests (subscribers joining, unmuting, losing sync) must not reach the publisher
//! as a storm: at most one PLI per `min_interval` per publisher track. A request that arrives
//! inside the interval is not lost: it is deferred to the end of the interval, unless a keyframe
//! arrives first (which answers it, since every current subscriber receives that keyframe).

use std::time::{Duration, Instant};

/// What to do with a keyframe request right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeDecision {
    /// Send a PLI to the publisher now.
    SendNow,
    /// One was sent recently; one will be due at `until` (see [`KeyframeRequestLimiter::poll`]).
    Deferred {
        /// When the deferred request may go out.
        until: Instant,
    },
}

/// Rate-limits keyframe requests (PLI) for one publisher track.
#[derive(Debug, Clone)]
pub struct KeyframeRequestLimiter {
    min_interval: Duration,
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeRequestLimiter {
    /// A limiter allowing one request per `min_interval`.
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_sent: None,
            pending: false,
        }
    }

    /// Someone wants a keyframe at `now`.
    pub fn request(&mut self, now: Instant) -> KeyframeDecision {
        match self.last_sent {
            Some(last) if now.saturating_duration_since(last) < self.min_interval => {
                self.pending = true;
                KeyframeDecision::Deferred {
                    until: last + self.min_interval,
                }
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = false;
                KeyframeDecision::SendNow
            }
        }
    }

    /// When a deferred request falls due, if one is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.pending, self.last_sent) {
            (true, Some(last)) => Some(last + self.min_interval),
            _ => None,
        }
    }

    /// Whether a deferred request should be sent at `now`; if so, it counts as sent.
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.next_deadline() {
            Some(due) if now >= due => {
                self.last_sent = Some(now);
                self.pending = false;
                true
            }
            _ => false,
        }
    }

    /// A keyframe from the publisher was forwarded at `_now`: it answers any pending request.
    pub fn keyframe_forwarded(&mut self, _now: Instant) {
        self.pending = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn first_request_goes_out_at_once() {
        let t0 = Instant::now();
        let mut limiter = KeyframeRequestLimiter::new(500 * MS);
        assert_eq!(limiter.request(t0), KeyframeDecision::SendNow);
        assert_eq!(limiter.next_deadline(), None);
    }

    #[test]
    fn a_storm_of_requests_yields_one_pli_per_interval() {
        let t0 = Instant::now();
        let mut limiter = KeyframeRequestLimiter::new(500 * MS);
        let mut sent = 0;
        // 100 requests over 2 s, every 20 ms, with polls in between.
        for i in 0..100u32 {
            let now = t0 + i * 20 * MS;
            if limiter.poll(now) {
                sent += 1;
            }
            if limiter.request(now) == KeyframeDecision::SendNow {
                sent += 1;
            }
        }
        // 0, 500, 1000, 1500 ms (the request at 1980 ms is deferred to 2000 ms).
        assert_eq!(sent, 4);
        assert_eq!(limiter.next_deadline(), Some(t0 + 2000 * MS));
    }

    #[test]
    fn a_request_inside_the_interval_is_deferred_not_lost() {
        let t0 = Instant::now();
        let mut limiter = KeyframeRequestLimiter::new(500 * MS);
        limiter.request(t0);
        assert_eq!(
            limiter.request(t0 + 100 * MS),
            KeyframeDecision::Deferred {
                until: t0 + 500 * MS
            }
        );
        assert!(!limiter.poll(t0 + 499 * MS));
        assert!(limiter.poll(t0 + 500 * MS));
        assert!(
            !limiter.poll(t0 + 501 * MS),
            "a deferred request goes out once"
        );
    }

    #[test]
    fn a_keyframe_arriving_first_answers_the_deferred_request() {
        let t0 = Instant::now();
        let mut limiter = KeyframeRequestLimiter::new(500 * MS);
        limiter.request(t0);
        limiter.request(t0 + 100 * MS);
        limiter.keyframe_forwarded(t0 + 200 * MS);
        assert!(!limiter.poll(t0 + 600 * MS));
    }
}
