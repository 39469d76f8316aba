//! One direction of an impaired path, sans-IO: datagrams go in with [`Link::send`] and come out
//! of [`Link::poll`] when their time has come.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

/// How datagrams are lost, before they reach the queue.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Nothing is lost.
    #[default]
    None,
    /// Each datagram is lost with this probability (0–1), independently.
    Random(f64),
    /// Losses come in bursts (a two-state Gilbert–Elliott model: nothing lost in the good state,
    /// everything in the bad one), `mean` of all datagrams (0–1) in bursts of `burst` datagrams
    /// on average, as on a radio link that fades.
    Bursty { mean: f64, burst: f64 },
}

impl Loss {
    /// What is wrong with these numbers, if anything.
    pub fn check(&self) -> Result<(), String> {
        match *self {
            Loss::None => Ok(()),
            Loss::Random(p) if (0.0..=1.0).contains(&p) => Ok(()),
            Loss::Random(p) => Err(format!("random loss {p} is not between 0 and 1")),
            Loss::Bursty { mean, burst } if (0.0..1.0).contains(&mean) && burst >= 1.0 => Ok(()),
            Loss::Bursty { mean, burst } => Err(format!(
                "bursty loss needs 0 <= mean < 1 and burst >= 1 (got mean {mean}, burst {burst})"
            )),
        }
    }
}

/// What one direction of the path does, for as long as a phase lasts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Conditions {
    /// The bottleneck's rate in kbit/s (none: no limit).
    pub rate_kbps: Option<u64>,
    /// How long the bottleneck's queue may get, in milliseconds of sending at `rate_kbps`: a
    /// datagram arriving to a fuller queue is dropped (drop-tail).
    pub queue_ms: u64,
    /// One-way propagation delay, in milliseconds.
    pub delay_ms: u64,
    /// Up to this much more or less delay per datagram (uniform), without reordering.
    pub jitter_ms: u64,
    /// Loss before the queue.
    pub loss: Loss,
    /// Nothing passes (an outage, or UDP blocked); what was in flight is lost.
    pub blocked: bool,
}

impl Conditions {
    /// A blocked path.
    pub fn blocked() -> Self {
        Conditions {
            blocked: true,
            ..Conditions::default()
        }
    }

    /// What is wrong with these conditions, if anything.
    pub fn check(&self) -> Result<(), String> {
        if self.rate_kbps == Some(0) {
            return Err("rate_kbps 0 passes nothing: use blocked".into());
        }
        if self.rate_kbps.is_some() && self.queue_ms == 0 {
            return Err("a rate needs a queue: set queue_ms".into());
        }
        if self.jitter_ms > self.delay_ms {
            return Err(format!(
                "jitter_ms {} exceeds delay_ms {}",
                self.jitter_ms, self.delay_ms
            ));
        }
        self.loss.check()
    }
}

/// What a link did with what it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LinkStats {
    /// Datagrams given to the link.
    pub offered: u64,
    pub offered_bytes: u64,
    /// Datagrams that came out the other end.
    pub delivered: u64,
    pub delivered_bytes: u64,
    /// Lost by the loss model.
    pub lost: u64,
    /// Dropped because the queue was full.
    pub queue_drops: u64,
    /// Dropped because the path was blocked (including what was in flight when it was).
    pub blocked_drops: u64,
}

struct InFlight<T> {
    due: Instant,
    size: usize,
    tag: T,
    data: Vec<u8>,
}

/// One direction of the path. `T` tags each datagram (the proxy uses it for the flow).
pub struct Link<T> {
    conditions: Conditions,
    rng: StdRng,
    /// When the bottleneck has sent everything queued so far.
    busy_until: Option<Instant>,
    /// The Gilbert–Elliott state: losing.
    in_burst: bool,
    in_flight: VecDeque<InFlight<T>>,
    stats: LinkStats,
}

impl<T> Link<T> {
    pub fn new(conditions: Conditions, rng: StdRng) -> Self {
        Link {
            conditions,
            rng,
            busy_until: None,
            in_burst: false,
            in_flight: VecDeque::new(),
            stats: LinkStats::default(),
        }
    }

    pub fn conditions(&self) -> &Conditions {
        &self.conditions
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// New conditions from now on. A path that becomes blocked loses what is in flight; what is
    /// queued otherwise keeps its place (a lower rate applies to datagrams that arrive after).
    pub fn set_conditions(&mut self, conditions: Conditions) {
        if conditions.blocked {
            self.stats.blocked_drops += self.in_flight.len() as u64;
            self.in_flight.clear();
            self.busy_until = None;
        }
        self.conditions = conditions;
    }

    /// A datagram arrives at the link. Returns whether it was taken (it may still come out later).
    pub fn send(&mut self, now: Instant, tag: T, data: Vec<u8>) -> bool {
        let size = data.len();
        self.stats.offered += 1;
        self.stats.offered_bytes += size as u64;
        let c = self.conditions;
        if c.blocked {
            self.stats.blocked_drops += 1;
            return false;
        }
        if self.loses() {
            self.stats.lost += 1;
            return false;
        }
        let departs = match c.rate_kbps {
            Some(kbps) => {
                let start = self.busy_until.filter(|b| *b > now).unwrap_or(now);
                if start - now > Duration::from_millis(c.queue_ms) {
                    self.stats.queue_drops += 1;
                    return false;
                }
                // Wire size: the datagram plus IPv4 and UDP headers.
                let bits = (size as u64 + 28) * 8;
                let done = start + Duration::from_micros(bits * 1000 / kbps);
                self.busy_until = Some(done);
                done
            }
            None => now,
        };
        let mut delay = Duration::from_millis(c.delay_ms);
        if c.jitter_ms > 0 {
            let jitter = self.rng.gen_range(0..=2 * c.jitter_ms * 1000);
            delay = delay + Duration::from_micros(jitter) - Duration::from_millis(c.jitter_ms);
        }
        let mut due = departs + delay;
        // Jitter without reordering: never before the datagram ahead of it.
        if let Some(last) = self.in_flight.back() {
            due = due.max(last.due);
        }
        self.in_flight.push_back(InFlight {
            due,
            size,
            tag,
            data,
        });
        true
    }

    fn loses(&mut self) -> bool {
        match self.conditions.loss {
            Loss::None => false,
            Loss::Random(p) => self.rng.gen_bool(p),
            Loss::Bursty { mean, burst } => {
                // Leave the bad state with 1/burst per datagram (bursts of `burst` on average);
                // enter it so that the bad state's share of the time is `mean`.
                let leave = 1.0 / burst;
                let enter = (mean * leave / (1.0 - mean)).min(1.0);
                self.in_burst = if self.in_burst {
                    !self.rng.gen_bool(leave)
                } else {
                    self.rng.gen_bool(enter)
                };
                self.in_burst
            }
        }
    }

    /// The next datagram whose time has come.
    pub fn poll(&mut self, now: Instant) -> Option<(T, Vec<u8>)> {
        if self.in_flight.front()?.due > now {
            return None;
        }
        let packet = self.in_flight.pop_front()?;
        self.stats.delivered += 1;
        self.stats.delivered_bytes += packet.size as u64;
        Some((packet.tag, packet.data))
    }

    /// When the next datagram comes out, if one is in flight.
    pub fn next_due(&self) -> Option<Instant> {
        self.in_flight.front().map(|p| p.due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn link(conditions: Conditions) -> Link<()> {
        Link::new(conditions, StdRng::seed_from_u64(7))
    }

    /// Offers `kbps` of 1,000-byte datagrams for `seconds`, polling every millisecond; returns
    /// the delivery times (after the start) of what came out.
    fn drive(link: &mut Link<()>, kbps: u64, seconds: u64) -> Vec<Duration> {
        let start = Instant::now();
        let gap_us = 1_028 * 8 * 1000 / kbps;
        let mut next_send = Duration::ZERO;
        let mut out = Vec::new();
        for ms in 0..(seconds * 1000 + 2000) {
            let t = Duration::from_millis(ms);
            while next_send <= t && next_send < Duration::from_secs(seconds) {
                link.send(start + next_send, (), vec![0; 1000]);
                next_send += Duration::from_micros(gap_us);
            }
            while link.poll(start + t).is_some() {
                out.push(t);
            }
        }
        out
    }

    #[test]
    fn a_rate_limit_delivers_the_rate_and_drops_the_rest_at_the_full_queue() {
        let mut l = link(Conditions {
            rate_kbps: Some(300),
            queue_ms: 200,
            ..Conditions::default()
        });
        // Offered twice what the bottleneck carries, for 10 s.
        let out = drive(&mut l, 600, 10);
        let stats = l.stats();
        let delivered_kbps = stats.delivered_bytes * 8 / 10 / 1000;
        assert!(
            (270..=300).contains(&delivered_kbps),
            "delivered {delivered_kbps} kbit/s through a 300 kbit/s bottleneck"
        );
        assert!(stats.queue_drops > stats.offered / 3, "{stats:?}");
        assert_eq!(stats.lost + stats.blocked_drops, 0);
        // Delivered evenly over the run, not in a lump at the end.
        let first_half = out.iter().filter(|t| **t < Duration::from_secs(5)).count();
        assert!(
            first_half * 2 >= out.len() - 20,
            "{first_half} of {}",
            out.len()
        );
    }

    #[test]
    fn queueing_delay_is_bounded_by_the_queue_length() {
        let mut l = link(Conditions {
            rate_kbps: Some(300),
            queue_ms: 200,
            ..Conditions::default()
        });
        let start = Instant::now();
        // A burst of 40 datagrams at once: ~28 ms each at 300 kbit/s, so about 8 fit in 200 ms.
        let taken = (0..40).filter(|_| l.send(start, (), vec![0; 1000])).count();
        assert!((7..=9).contains(&taken), "{taken} taken");
        let mut last = start;
        while let Some(due) = l.next_due() {
            l.poll(due).expect("due");
            last = due;
        }
        assert!(
            last - start <= Duration::from_millis(200 + 28),
            "{:?}",
            last - start
        );
    }

    #[test]
    fn delay_and_jitter_keep_order_and_stay_in_their_window() {
        let mut l = link(Conditions {
            delay_ms: 75,
            jitter_ms: 15,
            ..Conditions::default()
        });
        let start = Instant::now();
        for i in 0..500u64 {
            l.send(
                start + Duration::from_millis(i * 2),
                (),
                i.to_be_bytes().to_vec(),
            );
        }
        let mut expected = 0u64;
        let mut delays = Vec::new();
        while let Some(due) = l.next_due() {
            let (_, data) = l.poll(due).expect("due");
            let i = u64::from_be_bytes(data.try_into().expect("8 bytes"));
            assert_eq!(i, expected, "reordered");
            expected += 1;
            delays.push((due - start).as_millis() as u64 - i * 2);
        }
        assert_eq!(expected, 500);
        assert!(delays.iter().all(|d| (60..=92).contains(d)), "{delays:?}");
        let spread = delays.iter().max().unwrap() - delays.iter().min().unwrap();
        assert!(spread >= 15, "no jitter: {spread} ms of spread");
    }

    #[test]
    fn random_loss_loses_its_share() {
        let mut l = link(Conditions {
            loss: Loss::Random(0.10),
            ..Conditions::default()
        });
        let start = Instant::now();
        for _ in 0..20_000 {
            l.send(start, (), vec![0; 100]);
        }
        let share = l.stats().lost as f64 / 20_000.0;
        assert!((0.09..0.11).contains(&share), "{share}");
    }

    /// The mean length of runs of consecutive losses.
    fn mean_burst(loss: Loss) -> (f64, f64) {
        let mut l = link(Conditions {
            loss,
            ..Conditions::default()
        });
        let start = Instant::now();
        let (mut runs, mut run, mut lost) = (0u64, 0u64, 0u64);
        for _ in 0..50_000 {
            if l.send(start, (), vec![0; 100]) {
                if run > 0 {
                    runs += 1;
                }
                run = 0;
            } else {
                run += 1;
                lost += 1;
            }
        }
        (lost as f64 / 50_000.0, lost as f64 / runs.max(1) as f64)
    }

    #[test]
    fn bursty_loss_has_its_mean_and_comes_in_bursts_unlike_random_loss() {
        let (share, burst) = mean_burst(Loss::Bursty {
            mean: 0.03,
            burst: 4.0,
        });
        assert!((0.024..0.036).contains(&share), "{share}");
        assert!((3.2..4.8).contains(&burst), "bursts of {burst}");
        let (_, random_burst) = mean_burst(Loss::Random(0.03));
        assert!(random_burst < 1.2, "random bursts of {random_burst}");
    }

    #[test]
    fn a_blocked_path_drops_everything_including_what_was_in_flight_and_then_recovers() {
        let mut l = link(Conditions {
            delay_ms: 50,
            ..Conditions::default()
        });
        let start = Instant::now();
        assert!(l.send(start, (), vec![1]));
        l.set_conditions(Conditions::blocked());
        assert!(!l.send(start, (), vec![2]));
        assert_eq!(l.poll(start + Duration::from_secs(1)), None);
        assert_eq!(l.stats().blocked_drops, 2);
        l.set_conditions(Conditions::default());
        assert!(l.send(start + Duration::from_secs(1), (), vec![3]));
        assert_eq!(l.poll(start + Duration::from_secs(1)), Some(((), vec![3])));
    }

    #[test]
    fn conditions_that_make_no_sense_are_named() {
        let bad = Conditions {
            rate_kbps: Some(300),
            ..Conditions::default()
        };
        assert!(bad.check().unwrap_err().contains("queue_ms"));
        let bad = Conditions {
            loss: Loss::Random(1.5),
            ..Conditions::default()
        };
        assert!(bad.check().unwrap_err().contains("1.5"));
        let bad = Conditions {
            delay_ms: 10,
            jitter_ms: 20,
            ..Conditions::default()
        };
        assert!(bad.check().unwrap_err().contains("jitter_ms"));
    }
}
