//! `std` (with parking_lot's mutex) normally, `loom` under `RUSTFLAGS="--cfg loom"`: the
//! wake-up protocol is written once against these names and model-checked as shipped.

#[cfg(not(loom))]
pub(crate) mod sync {
    pub(crate) use std::sync::Arc;

    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
    }

    /// A mutex whose `lock` cannot fail (parking_lot does not poison).
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(parking_lot::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, T> {
            self.0.lock()
        }
    }
}

/// A pause while another thread finishes a step it has started: a spin-loop hint normally,
/// a yield under loom (which never preempts, so a thread that only spins would wait forever).
#[cfg(not(loom))]
#[inline]
pub(crate) fn pause() {
    std::hint::spin_loop();
}

/// See the other `pause`.
#[cfg(loom)]
pub(crate) fn pause() {
    loom::thread::yield_now();
}

#[cfg(loom)]
pub(crate) mod sync {
    pub(crate) use loom::sync::Arc;

    pub(crate) mod atomic {
        pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
    }

    /// loom's mutex behind the same infallible `lock`.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            // A poisoned lock only means another thread panicked while holding it; the wait
            // list stays consistent (every mutation is a single map operation).
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }
}
