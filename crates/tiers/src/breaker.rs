//! A circuit breaker per tier.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Opens after this many failures in a row (default 5).
    pub consecutive_failures: u32,
    /// Also opens when the failure ratio over `window` reaches this (default 0.5)...
    pub failure_ratio: f64,
    /// ...with at least this many calls in the window (default 20).
    pub min_calls: u32,
    /// The window of the ratio (default 10 s).
    pub window: Duration,
    /// The first cooldown (default 1 s); each ejection doubles it...
    pub base_cooldown: Duration,
    /// ...up to this (default 60 s).
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_calls: 20,
            window: Duration::from_secs(10),
            base_cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(60),
        }
    }
}

impl BreakerConfig {
    /// The same settings with `consecutive_failures`: opens after this many failures in a row.
    pub fn consecutive_failures(mut self, consecutive_failures: u32) -> Self {
        self.consecutive_failures = consecutive_failures;
        self
    }

    /// The same settings with `failure_ratio`: also opens when the failure ratio over the window reaches this.
    pub fn failure_ratio(mut self, failure_ratio: f64) -> Self {
        self.failure_ratio = failure_ratio;
        self
    }

    /// The same settings with `min_calls`: the fewest calls in the window for the ratio to count.
    pub fn min_calls(mut self, min_calls: u32) -> Self {
        self.min_calls = min_calls;
        self
    }

    /// The same settings with `window`: the window of the ratio.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The same settings with `base_cooldown`: the first cooldown, doubled with each ejection.
    pub fn base_cooldown(mut self, base_cooldown: Duration) -> Self {
        self.base_cooldown = base_cooldown;
        self
    }

    /// The same settings with `max_cooldown`: the longest cooldown.
    pub fn max_cooldown(mut self, max_cooldown: Duration) -> Self {
        self.max_cooldown = max_cooldown;
        self
    }
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are skipped until the cooldown ends.
    Open,
    /// One probe call is let through; its outcome closes or reopens the breaker.
    HalfOpen,
}

/// What `Breaker::admit` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Go ahead.
    Allowed,
    /// Go ahead: this call is the half-open probe.
    Probe,
    /// Skip this tier.
    Rejected,
}

/// A tier's breaker as the router holds it: the state behind a lock, and beside it what the
/// common case needs without one.
///
/// While the breaker is closed, with no failure in a row and no ejection left to forgive
/// ("clean"), admitting a call and recording its success touch only atomics: the `clean` flag
/// and the lock-free window. Everything else takes the lock and keeps `clean` up to date
/// before releasing it. A success that read `clean` just before a failure set it false is
/// ordered before that failure, which is what it would have been had it taken the lock.
#[derive(Debug)]
pub(crate) struct BreakerCell {
    clean: AtomicBool,
    window: Window,
    locked: Mutex<Breaker>,
}

impl BreakerCell {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        let now = Instant::now();
        Self {
            clean: AtomicBool::new(true),
            window: Window::new(config.window, now),
            locked: Mutex::new(Breaker::new(config, now)),
        }
    }

    /// Runs `change` under the lock, then republishes whether the breaker is clean.
    fn with<R>(&self, change: impl FnOnce(&mut Breaker, &Window) -> R) -> R {
        let mut breaker = self.locked.lock();
        let result = change(&mut breaker, &self.window);
        self.clean.store(breaker.is_clean(), Ordering::Release);
        result
    }

    pub(crate) fn admit(&self) -> Admission {
        if self.clean.load(Ordering::Acquire) {
            return Admission::Allowed;
        }
        self.with(|breaker, _| breaker.admit())
    }

    pub(crate) fn abandon_probe(&self) {
        self.with(|breaker, _| breaker.abandon_probe());
    }

    /// Records a success. `now` is the time the caller already read (clock reads are not
    /// free on every machine).
    pub(crate) fn on_success(&self, now: Instant) {
        self.window.record(now, false);
        if self.clean.load(Ordering::Acquire) {
            return;
        }
        self.with(|breaker, window| breaker.on_success(now, window));
    }

    /// Records a failure; returns true when the breaker wants to open.
    pub(crate) fn on_failure(&self) -> bool {
        self.with(|breaker, window| breaker.on_failure(window))
    }

    /// Opens the breaker; returns its cooldown.
    pub(crate) fn open(&self) -> Duration {
        self.with(|breaker, _| breaker.open())
    }

    /// Keeps the breaker closed and starts counting anew.
    pub(crate) fn stay_closed(&self) {
        self.with(|breaker, window| breaker.stay_closed(window));
    }

    /// The state and the number of transitions so far.
    pub(crate) fn state(&self) -> (BreakerState, u64) {
        let breaker = self.locked.lock();
        (breaker.state, breaker.transitions)
    }
}

#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    consecutive: u32,
    open_until: Instant,
    ejections: u32,
    probe_in_flight: bool,
    transitions: u64,
    closed_since: Instant,
}

impl Breaker {
    fn new(config: BreakerConfig, now: Instant) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            consecutive: 0,
            open_until: now,
            ejections: 0,
            probe_in_flight: false,
            transitions: 0,
            closed_since: now,
        }
    }

    /// Closed, no failure in a row, no ejection to forgive: the lock-free case.
    fn is_clean(&self) -> bool {
        self.state == BreakerState::Closed && self.consecutive == 0 && self.ejections == 0
    }

    fn admit(&mut self) -> Admission {
        match self.state {
            BreakerState::Closed => Admission::Allowed,
            BreakerState::Open => {
                if Instant::now() >= self.open_until {
                    self.set(BreakerState::HalfOpen);
                    self.probe_in_flight = true;
                    Admission::Probe
                } else {
                    Admission::Rejected
                }
            }
            BreakerState::HalfOpen if !self.probe_in_flight => {
                self.probe_in_flight = true;
                Admission::Probe
            }
            BreakerState::HalfOpen => Admission::Rejected,
        }
    }

    /// A probe that never reported (cancelled): let the next call probe.
    fn abandon_probe(&mut self) {
        self.probe_in_flight = false;
    }

    /// A success (already in the window).
    fn on_success(&mut self, now: Instant, window: &Window) {
        self.consecutive = 0;
        if self.state == BreakerState::HalfOpen {
            self.probe_in_flight = false;
            self.set(BreakerState::Closed);
            self.closed_since = now;
            window.clear();
        }
        // Ejections are forgiven after a long enough quiet spell.
        if self.ejections > 0
            && self.state == BreakerState::Closed
            && now.duration_since(self.closed_since) >= self.config.max_cooldown
        {
            self.ejections = 0;
        }
    }

    /// Records a failure; returns true when the breaker wants to open (the router decides,
    /// since it never opens the last usable tier).
    fn on_failure(&mut self, window: &Window) -> bool {
        let now = Instant::now();
        window.record(now, true);
        self.consecutive += 1;
        match self.state {
            BreakerState::HalfOpen => true,
            BreakerState::Open => false,
            BreakerState::Closed => {
                if self.consecutive >= self.config.consecutive_failures.max(1) {
                    return true;
                }
                let (calls, failures) = window.totals(now);
                calls >= u64::from(self.config.min_calls.max(1))
                    && failures as f64 / calls as f64 >= self.config.failure_ratio
            }
        }
    }

    /// Opens the breaker for a cooldown that doubles with each ejection.
    fn open(&mut self) -> Duration {
        let factor = 1u32 << self.ejections.min(16);
        let cooldown = self
            .config
            .base_cooldown
            .saturating_mul(factor)
            .min(self.config.max_cooldown);
        self.ejections = self.ejections.saturating_add(1);
        self.probe_in_flight = false;
        // A cooldown too long for the clock means "open for good" (until a reset).
        self.open_until = saturating_after(Instant::now(), cooldown);
        self.set(BreakerState::Open);
        cooldown
    }

    /// The router refused to open (last usable tier): stay closed, start counting anew.
    fn stay_closed(&mut self, window: &Window) {
        self.probe_in_flight = false;
        if self.state == BreakerState::HalfOpen {
            self.set(BreakerState::Closed);
            self.closed_since = Instant::now();
        }
        self.consecutive = 0;
        window.clear();
    }

    fn set(&mut self, state: BreakerState) {
        if self.state != state {
            self.state = state;
            self.transitions += 1;
        }
    }
}

const BUCKETS: usize = 10;

/// Calls and failures over a sliding window, kept as `BUCKETS` slices of it, without a lock.
///
/// Each bucket is one `AtomicU64` per count: the slice number in the high 32 bits, the count
/// (saturating) in the low 32. Recording is one compare-exchange that either bumps the count
/// of the current slice or restarts the bucket for it, so no count is lost at a slice
/// boundary. Slice numbers wrap after 2^32 slices (at least 49 days); only their distance to
/// the current slice is compared.
#[derive(Debug)]
struct Window {
    /// The length of a slice in nanoseconds (at least 1 ms).
    slice_nanos: u64,
    origin: Instant,
    calls: [AtomicU64; BUCKETS],
    failures: [AtomicU64; BUCKETS],
}

impl Window {
    fn new(window: Duration, now: Instant) -> Self {
        Self {
            slice_nanos: u64::try_from((window / BUCKETS as u32).as_nanos())
                .unwrap_or(u64::MAX)
                .max(1_000_000),
            origin: now,
            calls: Default::default(),
            failures: Default::default(),
        }
    }

    /// The slice `now` falls in, counted from 1 (0 marks an empty bucket).
    fn slice_of(&self, now: Instant) -> u32 {
        let elapsed = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        let slice = elapsed / self.slice_nanos;
        (slice as u32).wrapping_add(1).max(1)
    }

    fn record(&self, now: Instant, failed: bool) {
        let slice = self.slice_of(now);
        let index = slice as usize % BUCKETS;
        bump(&self.calls[index], slice);
        if failed {
            bump(&self.failures[index], slice);
        }
    }

    /// (calls, failures) within the window ending at `now`.
    fn totals(&self, now: Instant) -> (u64, u64) {
        let current = self.slice_of(now);
        let sum = |buckets: &[AtomicU64; BUCKETS]| {
            buckets
                .iter()
                .map(|bucket| bucket.load(Ordering::Relaxed))
                .filter(|&packed| {
                    let slice = (packed >> 32) as u32;
                    slice != 0 && current.wrapping_sub(slice) < BUCKETS as u32
                })
                .map(|packed| packed & u64::from(u32::MAX))
                .sum::<u64>()
        };
        (sum(&self.calls), sum(&self.failures))
    }

    fn clear(&self) {
        for bucket in self.calls.iter().chain(&self.failures) {
            bucket.store(0, Ordering::Relaxed);
        }
    }
}

/// Adds one to `bucket` for `slice`, restarting it when it holds an older slice.
fn bump(bucket: &AtomicU64, slice: u32) {
    let _ = bucket.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
        let count = if (packed >> 32) as u32 == slice {
            (packed & u64::from(u32::MAX))
                .saturating_add(1)
                .min(u64::from(u32::MAX))
        } else {
            1
        };
        Some(u64::from(slice) << 32 | count)
    });
}

/// `now + duration`, saturating: a duration past the clock's range (`Duration::MAX`) means
/// "never" and gives a time a century away instead of a panic.
pub(crate) fn saturating_after(now: Instant, duration: Duration) -> Instant {
    now.checked_add(duration)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_counts_calls_and_failures_per_slice_and_forgets_old_slices() {
        let origin = Instant::now();
        let window = Window::new(Duration::from_secs(10), origin);
        let at = |ms: u64| origin + Duration::from_millis(ms);
        window.record(at(0), false);
        window.record(at(10), true);
        window.record(at(1500), false);
        assert_eq!(window.totals(at(2000)), (3, 1));
        // Ten slices of 1 s: the first slice leaves the window once the eleventh starts.
        assert_eq!(window.totals(at(10_500)), (1, 0));
        // A bucket reused by a later slice (12 reuses 2's) starts from zero.
        window.record(at(11_200), true);
        assert_eq!(window.totals(at(11_300)), (1, 1));
        assert_eq!(window.totals(at(60_000)), (0, 0));
        window.clear();
        assert_eq!(window.totals(at(11_300)), (0, 0));
    }

    #[test]
    fn concurrent_successes_are_all_counted() {
        let origin = Instant::now();
        let window = Window::new(Duration::from_secs(3600), origin);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        window.record(origin, false);
                    }
                });
            }
        });
        assert_eq!(window.totals(origin), (40_000, 0));
    }

    #[test]
    fn a_clean_breaker_admits_without_its_lock_and_a_failure_makes_it_take_the_lock() {
        let cell = BreakerCell::new(BreakerConfig::default().consecutive_failures(2));
        assert_eq!(cell.admit(), Admission::Allowed);
        assert!(!cell.on_failure());
        assert!(!cell.clean.load(Ordering::Acquire));
        cell.on_success(Instant::now());
        assert!(
            cell.clean.load(Ordering::Acquire),
            "a success ends the run of failures"
        );
        assert!(!cell.on_failure());
        assert!(
            cell.on_failure(),
            "two failures in a row want the breaker open"
        );
        cell.open();
        assert_eq!(cell.admit(), Admission::Rejected);
        assert_eq!(cell.state().0, BreakerState::Open);
    }
}
