//! Shared ownership of the ring by its two ends, without reference counts.
//!
//! A ring has exactly two owners, the [`Producer`](super::Producer) and the
//! [`Consumer`](super::Consumer), and neither can be cloned, so a count is more than it needs:
//! one flag says whether the other end is gone, and the end that finds it set frees the ring.
//! The ring is then a single allocation holding only its own fields, and dropping an end is
//! small enough to inline, so a caller's loop keeps the end's positions in registers.

use std::ops::Deref;
use std::ptr::NonNull;

use crate::loom::sync::atomic::{AtomicBool, Ordering};

/// One end's handle on the ring `R`: dereferences to it, and frees it when the second of the
/// two handles made by [`Owner::pair`] is dropped.
pub(super) struct Owner<R: Abandon> {
    ring: NonNull<R>,
}

/// A ring that carries the flag its owners share.
pub(super) trait Abandon {
    /// The flag: set by the first owner to go.
    fn abandoned(&self) -> &AtomicBool;
}

impl<R: Abandon> Owner<R> {
    /// Moves `ring` to the heap and returns its two handles.
    pub(super) fn pair(ring: R) -> (Self, Self) {
        let ring = NonNull::from(Box::leak(Box::new(ring)));
        (Self { ring }, Self { ring })
    }

    /// Whether the other handle has been dropped.
    pub(super) fn other_is_gone(&self) -> bool {
        self.abandoned().load(Ordering::Acquire)
    }
}

impl<R: Abandon> Deref for Owner<R> {
    type Target = R;

    #[inline(always)]
    fn deref(&self) -> &R {
        // SAFETY: `ring` came from `Box::leak` in `pair` and is freed only in `drop` by the
        // second of the two handles, so while this handle lives it points to a live `R`. Only
        // shared references are ever made from it.
        unsafe { self.ring.as_ref() }
    }
}

impl<R: Abandon> Drop for Owner<R> {
    #[inline]
    fn drop(&mut self) {
        // Release: everything this end did to the ring (its final position included) happens
        // before the other end sees the flag. Acquire: when we are second, everything the first
        // end did happens before we free the ring.
        if self.abandoned().swap(true, Ordering::AcqRel) {
            // SAFETY: the flag was already set, so the other handle has been dropped and will
            // not touch the ring again; `ring` came from `Box::leak` (in `pair`), and exactly
            // one handle (this one, the second) reaches this line, so it is freed once.
            drop(unsafe { Box::from_raw(self.ring.as_ptr()) });
        }
    }
}

// SAFETY: a handle gives shared access to the ring and may free it, so sending one to another
// thread is sound when the ring may be shared (`Sync`) and dropped (`Send`) there.
unsafe impl<R: Abandon + Send + Sync> Send for Owner<R> {}
// SAFETY: `&Owner` only gives `&R`.
unsafe impl<R: Abandon + Sync> Sync for Owner<R> {}
