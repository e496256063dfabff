//! A retry budget: fallbacks are a fraction of calls, with a floor.

use std::time::Duration;

use tokio::time::Instant;

/// How many fallbacks the router may make: at most `ratio` of calls, but always at least
/// `min_per_second` (so a quiet router can still fall back).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryBudget {
    /// Fallbacks per call (default 0.2).
    pub ratio: f64,
    /// Fallbacks per second always allowed (default 10).
    pub min_per_second: f64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10.0,
        }
    }
}

impl RetryBudget {
    /// The same settings with `ratio`: fallbacks allowed per call.
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// The same settings with `min_per_second`: fallbacks per second always allowed.
    pub fn min_per_second(mut self, min_per_second: f64) -> Self {
        self.min_per_second = min_per_second;
        self
    }
}

/// The budget's token bucket: each call deposits `ratio`, each second deposits
/// `min_per_second`, each fallback withdraws one.
#[derive(Debug)]
pub(crate) struct Bucket {
    budget: RetryBudget,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    pub(crate) fn new(budget: RetryBudget) -> Self {
        Self {
            budget,
            tokens: budget.min_per_second,
            refilled: Instant::now(),
        }
    }

    fn cap(&self) -> f64 {
        // Ten seconds' worth of the floor plus a burst of calls' deposits.
        (self.budget.min_per_second * 10.0)
            .max(100.0 * self.budget.ratio)
            .max(1.0)
    }

    pub(crate) fn deposit_call(&mut self) {
        self.tokens = (self.tokens + self.budget.ratio).min(self.cap());
    }

    pub(crate) fn try_withdraw(&mut self) -> bool {
        let now = Instant::now();
        let elapsed: Duration = now.duration_since(self.refilled);
        self.refilled = now;
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() * self.budget.min_per_second).min(self.cap());
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
