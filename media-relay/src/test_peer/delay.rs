//! How long stamped packets took from publisher to subscriber, kept as a histogram so that
//! percentiles of many tracks can be merged. Pure: fed durations, no clock.

use std::time::Duration;

/// Buckets below 1 ms are 10 µs wide; above, each is 2 % wider than the last (up to ~160 s).
const LINEAR_BUCKETS: usize = 100;
const LINEAR_WIDTH_MICROS: u64 = 10;
const GROWTH: f64 = 1.02;
const LOG_BUCKETS: usize = 600;

/// A histogram of delays (microsecond resolution below 1 ms, 2 % above).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DelayHistogram {
    /// Counts per bucket; empty until the first delay.
    buckets: Vec<u64>,
    count: u64,
    max_micros: u64,
}

fn bucket_of(micros: u64) -> usize {
    let linear_end = LINEAR_BUCKETS as u64 * LINEAR_WIDTH_MICROS;
    if micros < linear_end {
        return (micros / LINEAR_WIDTH_MICROS) as usize;
    }
    let steps = ((micros as f64) / (linear_end as f64)).ln() / GROWTH.ln();
    LINEAR_BUCKETS + (steps as usize).min(LOG_BUCKETS - 1)
}

/// The upper edge of a bucket, in microseconds.
fn upper_edge(bucket: usize) -> u64 {
    if bucket < LINEAR_BUCKETS {
        return (bucket as u64 + 1) * LINEAR_WIDTH_MICROS;
    }
    let linear_end = (LINEAR_BUCKETS as u64 * LINEAR_WIDTH_MICROS) as f64;
    (linear_end * GROWTH.powi((bucket - LINEAR_BUCKETS + 1) as i32)).ceil() as u64
}

impl DelayHistogram {
    /// Counts one delay.
    pub fn record(&mut self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        if self.buckets.is_empty() {
            self.buckets = vec![0; LINEAR_BUCKETS + LOG_BUCKETS];
        }
        self.buckets[bucket_of(micros)] += 1;
        self.count += 1;
        self.max_micros = self.max_micros.max(micros);
    }

    /// Delays counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest delay counted.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_micros)
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&mut self, other: &DelayHistogram) {
        if other.buckets.is_empty() {
            return;
        }
        if self.buckets.is_empty() {
            self.buckets = vec![0; LINEAR_BUCKETS + LOG_BUCKETS];
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.max_micros = self.max_micros.max(other.max_micros);
    }

    /// The counts added since `earlier` (an older copy of the same histogram): the delays of a
    /// measuring window. The maximum stays the overall one.
    pub fn since(&self, earlier: &DelayHistogram) -> DelayHistogram {
        let mut window = self.clone();
        for (mine, old) in window.buckets.iter_mut().zip(&earlier.buckets) {
            *mine = mine.saturating_sub(*old);
        }
        window.count = self.count.saturating_sub(earlier.count);
        window
    }

    /// The delay below which a fraction `q` (0..=1) of the counted delays fall (the upper edge of
    /// its bucket, so never an underestimate); `None` when nothing was counted.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let edge = upper_edge(bucket).min(self.max_micros.max(1));
                return Some(Duration::from_micros(edge));
            }
        }
        Some(self.max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_within_two_percent_of_the_true_delay() {
        let mut h = DelayHistogram::default();
        for micros in 1..=10_000u64 {
            h.record(Duration::from_micros(micros));
        }
        let p50 = h.quantile(0.5).unwrap().as_micros() as f64;
        let p99 = h.quantile(0.99).unwrap().as_micros() as f64;
        assert!((5000.0..=5000.0 * 1.021).contains(&p50), "{p50}");
        assert!((9900.0..=9900.0 * 1.021).contains(&p99), "{p99}");
        assert_eq!(h.max(), Duration::from_micros(10_000));
        let small = {
            let mut h = DelayHistogram::default();
            h.record(Duration::from_micros(123));
            h
        };
        assert_eq!(small.quantile(0.99), Some(Duration::from_micros(123)));
    }

    #[test]
    fn a_window_holds_only_the_delays_counted_since_the_earlier_copy() {
        let mut h = DelayHistogram::default();
        for _ in 0..100 {
            h.record(Duration::from_millis(50));
        }
        let earlier = h.clone();
        for _ in 0..100 {
            h.record(Duration::from_micros(200));
        }
        let window = h.since(&earlier);
        assert_eq!(window.count(), 100);
        assert_eq!(window.quantile(1.0), Some(Duration::from_micros(210)));
        let mut merged = DelayHistogram::default();
        merged.merge(&window);
        merged.merge(&earlier);
        assert_eq!(merged.count(), 200);
        assert_eq!(DelayHistogram::default().quantile(0.5), None);
    }
}
