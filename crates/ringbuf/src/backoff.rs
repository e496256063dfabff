//! Exponential backoff for the short waits inside the queues.

#[cfg(not(loom))]
use crate::loom::hint;
use crate::loom::thread;

// Under loom a wait is one yield (see below): no limits.
#[cfg(not(loom))]
const SPIN_LIMIT: u32 = 6;
#[cfg(not(loom))]
const YIELD_LIMIT: u32 = 10;

/// Spins with an exponentially growing number of pause instructions, then yields the thread.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    step: u32,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self { step: 0 }
    }

    /// After losing a race (a failed compare-exchange): spin briefly, never yield.
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn spin(&mut self) {
        for _ in 0..1u32 << self.step.min(SPIN_LIMIT) {
            hint::spin_loop();
        }
        if self.step <= SPIN_LIMIT {
            self.step += 1;
        }
    }

    /// While another thread finishes its part (a claimed slot not yet published): spin, then
    /// yield so a preempted peer gets the core back.
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn snooze(&mut self) {
        if self.step <= SPIN_LIMIT {
            for _ in 0..1u32 << self.step {
                hint::spin_loop();
            }
        } else {
            thread::yield_now();
        }
        if self.step <= YIELD_LIMIT {
            self.step += 1;
        }
    }

    /// Under loom a wait is one yield: loom explores orderings, not timing, and every extra
    /// yield multiplies the branches of a model without adding an ordering.
    #[cfg(loom)]
    pub(crate) fn spin(&mut self) {
        self.step = self.step.saturating_add(1);
        thread::yield_now();
    }

    /// See [`spin`](Self::spin).
    #[cfg(loom)]
    pub(crate) fn snooze(&mut self) {
        self.spin();
    }
}
