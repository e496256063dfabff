//! A circuit breaker per tier.

use std::time::Duration;

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

#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    consecutive: u32,
    /// Calls and failures of the ratio window, in `BUCKETS` slices (O(1), bounded memory).
    window: Window,
    open_until: Instant,
    ejections: u32,
    probe_in_flight: bool,
    pub(crate) transitions: u64,
    closed_since: Instant,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        let now = Instant::now();
        Self {
            window: Window::new(config.window, now),
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

    pub(crate) fn state(&self) -> BreakerState {
        self.state
    }

    pub(crate) fn admit(&mut self) -> Admission {
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
    pub(crate) fn abandon_probe(&mut self) {
        self.probe_in_flight = false;
    }

    /// Records a success. `now` is the time the caller already read (clock reads are not
    /// free on every machine).
    pub(crate) fn on_success(&mut self, now: Instant) {
        self.window.record(now, false);
        self.consecutive = 0;
        if self.state == BreakerState::HalfOpen {
            self.probe_in_flight = false;
            self.set(BreakerState::Closed);
            self.closed_since = now;
            self.window.clear(now);
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
    pub(crate) fn on_failure(&mut self) -> bool {
        let now = Instant::now();
        self.window.record(now, true);
        self.consecutive += 1;
        match self.state {
            BreakerState::HalfOpen => true,
            BreakerState::Open => false,
            BreakerState::Closed => {
                if self.consecutive >= self.config.consecutive_failures.max(1) {
                    return true;
                }
                let (calls, failures) = self.window.totals();
                calls >= u64::from(self.config.min_calls.max(1))
                    && failures as f64 / calls as f64 >= self.config.failure_ratio
            }
        }
    }

    /// Opens the breaker for a cooldown that doubles with each ejection.
    pub(crate) fn open(&mut self) -> Duration {
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
    pub(crate) fn stay_closed(&mut self) {
        self.probe_in_flight = false;
        if self.state == BreakerState::HalfOpen {
            self.set(BreakerState::Closed);
            self.closed_since = Instant::now();
        }
        self.consecutive = 0;
        self.window.clear(Instant::now());
    }

    fn set(&mut self, state: BreakerState) {
        if self.state != state {
            self.state = state;
            self.transitions += 1;
        }
    }
}

const BUCKETS: usize = 10;

/// Calls and failures over a sliding window, kept as `BUCKETS` slices of it.
#[derive(Debug)]
struct Window {
    slice: Duration,
    /// (slice number, calls, failures)
    buckets: [(u64, u64, u64); BUCKETS],
    origin: Instant,
}

impl Window {
    fn new(window: Duration, now: Instant) -> Self {
        Self {
            slice: (window / BUCKETS as u32).max(Duration::from_millis(1)),
            buckets: [(u64::MAX, 0, 0); BUCKETS],
            origin: now,
        }
    }

    fn slice_of(&self, now: Instant) -> u64 {
        (now.duration_since(self.origin).as_nanos() / self.slice.as_nanos()) as u64
    }

    fn record(&mut self, now: Instant, failed: bool) {
        let slice = self.slice_of(now);
        let bucket = &mut self.buckets[(slice % BUCKETS as u64) as usize];
        if bucket.0 != slice {
            *bucket = (slice, 0, 0);
        }
        bucket.1 += 1;
        bucket.2 += u64::from(failed);
    }

    /// (calls, failures) within the window.
    fn totals(&self) -> (u64, u64) {
        let current = self.slice_of(Instant::now());
        self.buckets
            .iter()
            .filter(|(slice, ..)| {
                *slice != u64::MAX && current.saturating_sub(*slice) < BUCKETS as u64
            })
            .fold((0, 0), |(c, f), (_, calls, failures)| {
                (c + calls, f + failures)
            })
    }

    fn clear(&mut self, now: Instant) {
        self.buckets = [(u64::MAX, 0, 0); BUCKETS];
        self.origin = now;
    }
}

/// `now + duration`, saturating: a duration past the clock's range (`Duration::MAX`) means
/// "never" and gives a time a century away instead of a panic.
pub(crate) fn saturating_after(now: Instant, duration: Duration) -> Instant {
    now.checked_add(duration)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}
