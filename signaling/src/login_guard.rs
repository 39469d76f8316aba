//! What keeps a login flood from stalling the server: a limit of login attempts per client
//! address, and password checks on a small pool of their own, outside the database lock.
//!
//! An argon2 check costs ~20 MiB and tens of milliseconds of one core by design. Run on tokio's
//! blocking pool inside the database lock (as it once was), 16 concurrent bad logins held every
//! other query for seconds and 80 left the process at 1.6 GB. Now:
//!
//! - each client address (an IPv4 address, or an IPv6 /64) may try `login_attempts_per_minute`
//!   logins, with bursts of as many; beyond that it gets `429 too_many_logins` with `Retry-After`
//!   (`governor`'s GCRA, on the state's clock so tests run on virtual time);
//! - checks run on `VERIFIERS` threads of their own, so memory is bounded by that number of argon2
//!   blocks however many requests arrive, and at most `QUEUED` wait; more get `503 busy`;
//! - the database is locked only to read the account and, after the check, to record the result.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::Clock;
use crate::error::{Error, Result};

/// Password checks that run at once (each holds one argon2 block, ~20 MiB).
pub const VERIFIERS: usize = 2;
/// Password checks that may wait for a verifier; more are refused with `503 busy`.
pub const QUEUED: usize = 64;

/// The state's clock as `governor` sees it.
#[derive(Clone)]
struct StateClock(Arc<dyn Clock>);

impl GovernorClock for StateClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::new(u64::try_from(self.0.now_ms()).unwrap_or(0) * 1_000_000)
    }
}

/// The key one client's attempts are counted under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AddressKey(u128);

impl AddressKey {
    /// An IPv4 address as itself; an IPv6 address by its /64, which one subscriber usually holds whole.
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => AddressKey(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey(u128::from(u32::from(v4))),
                None => AddressKey(u128::from(v6) & !((1u128 << 64) - 1) | (1 << 32)),
            },
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Login attempt limits and the password-check pool.
pub struct LoginGuard {
    per_address:
        RateLimiter<AddressKey, DashMapStateStore<AddressKey>, StateClock, NoOpMiddleware<Nanos>>,
    clock: StateClock,
    jobs: Mutex<mpsc::SyncSender<Job>>,
    waiting: Arc<AtomicUsize>,
}

impl LoginGuard {
    /// A guard allowing `attempts_per_minute` logins per client address (at least 1).
    pub fn new(attempts_per_minute: u32, clock: Arc<dyn Clock>) -> Self {
        let per_minute = NonZeroU32::new(attempts_per_minute).unwrap_or(NonZeroU32::MIN);
        let clock = StateClock(clock);
        let per_address =
            RateLimiter::dashmap_with_clock(Quota::per_minute(per_minute), clock.clone());
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUED);
        let queue = Arc::new(Mutex::new(queue));
        let waiting = Arc::new(AtomicUsize::new(0));
        for n in 0..VERIFIERS {
            let (queue, waiting) = (queue.clone(), waiting.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only to take the next job, never while running it.
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match next {
                            Ok(job) => {
                                waiting.fetch_sub(1, Ordering::SeqCst);
                                job()
                            }
                            Err(_) => return, // the guard is gone
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password-check thread");
            }
        }
        LoginGuard {
            per_address,
            clock,
            jobs: Mutex::new(jobs),
            waiting,
        }
    }

    /// Counts one login attempt from `address`; refuses it when the address is over its limit.
    ///
    /// Loopback is not limited: it is this machine (the tests, the load generator, a local reverse
    /// proxy that does not pass `client_address_header`), where one address stands for everyone.
    /// The password-check pool still bounds it.
    pub fn admit(&self, address: IpAddr) -> Result<()> {
        if address.is_loopback() {
            return Ok(());
        }
        self.per_address
            .check_key(&AddressKey::of(address))
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(self.clock.now());
                Error::TooManyRequests {
                    code: "too_many_logins",
                    message: format!(
                        "too many login attempts from this address; try again in {} s",
                        wait.as_secs().max(1)
                    ),
                    retry_after_s: wait.as_secs().max(1),
                }
            })
    }

    /// Runs `check` (a password check) on the pool and returns its answer.
    pub async fn check<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(check());
        });
        let sent = {
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            // Counted before it is sent, so a verifier never takes a job not yet counted.
            self.waiting.fetch_add(1, Ordering::SeqCst);
            jobs.try_send(job)
        };
        if sent.is_err() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        match sent {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => {
                return Err(Error::Busy {
                    message: "too many logins are being checked at once; try again in a moment"
                        .into(),
                    retry_after_s: 1,
                });
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                return Err(Error::Internal(
                    "the password-check threads are gone".into(),
                ));
            }
        }
        answered
            .await
            .map_err(|_| Error::Internal("a password check did not answer".into()))
    }

    /// Forgets addresses whose limit has fully recovered (called periodically), so that the table
    /// holds only recent clients.
    pub fn forget_idle(&self) {
        self.per_address.retain_recent();
        self.per_address.shrink_to_fit();
    }

    /// Password checks waiting for a verifier.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Addresses currently remembered.
    pub fn addresses(&self) -> usize {
        self.per_address.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ManualClock;

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_and_a_mapped_ipv4_as_the_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddressKey::of(a), AddressKey::of(b));
        assert_ne!(AddressKey::of(a), AddressKey::of(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(AddressKey::of(v4), AddressKey::of(mapped));
        assert_ne!(
            AddressKey::of(v4),
            AddressKey::of("192.0.2.8".parse().unwrap())
        );
    }

    #[test]
    fn loopback_is_not_limited_per_address() {
        let guard = LoginGuard::new(1, Arc::new(ManualClock::at(0)));
        for _ in 0..10 {
            guard.admit("127.0.0.1".parse().unwrap()).unwrap();
            guard.admit("::1".parse().unwrap()).unwrap();
        }
        guard.admit("192.0.2.1".parse().unwrap()).unwrap();
        assert!(guard.admit("192.0.2.1".parse().unwrap()).is_err());
    }

    #[test]
    fn an_address_over_its_limit_waits_for_the_limit_to_recover_on_the_clock() {
        let clock = Arc::new(ManualClock::at(1_000_000));
        let guard = LoginGuard::new(6, clock.clone());
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..6 {
            guard.admit(one).unwrap();
        }
        let Err(Error::TooManyRequests { retry_after_s, .. }) = guard.admit(one) else {
            panic!("the seventh attempt in a minute was admitted");
        };
        assert_eq!(retry_after_s, 10, "6 a minute: one more every 10 s");
        guard.admit(other).unwrap();
        clock.advance_ms(10_000);
        guard.admit(one).unwrap();
        assert!(guard.admit(one).is_err());
        clock.advance_ms(120_000);
        guard.forget_idle();
        assert_eq!(guard.addresses(), 0, "recovered addresses are forgotten");
    }
}
