pub(crate) mod sync {
    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
    }
}

pub(crate) mod cell {
    /// `std::cell::UnsafeCell` behind loom's closure API.
    #[derive(Debug)]
    #[repr(transparent)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// Copies `items` into consecutive cells.
    ///
    /// # Safety
    ///
    /// The caller has exclusive access to every cell in `cells` (no other thread reads or
    /// writes them during the copy), and `cells.len() == items.len()`.
    #[inline(always)]
    pub(crate) unsafe fn copy_into_cells<T: Copy>(
        cells: &[UnsafeCell<std::mem::MaybeUninit<T>>],
        items: &[T],
    ) {
        debug_assert_eq!(cells.len(), items.len());
        // SAFETY: `UnsafeCell<MaybeUninit<T>>` (ours and std's are `repr(transparent)`) has
        // the layout of `T`, the cells are contiguous, mutation through a shared reference is
        // what `UnsafeCell` allows, the caller guarantees exclusive access and equal lengths,
        // and a local slice cannot overlap the ring's cells.
        unsafe {
            std::ptr::copy_nonoverlapping(items.as_ptr(), cells.as_ptr() as *mut T, items.len())
        }
    }

    /// Copies initialised cells out into `out`.
    ///
    /// # Safety
    ///
    /// Every cell holds an initialised `T`, no other thread writes them during the copy, and
    /// `cells.len() == out.len()`.
    #[inline(always)]
    pub(crate) unsafe fn copy_from_cells<T: Copy>(
        cells: &[UnsafeCell<std::mem::MaybeUninit<T>>],
        out: &mut [T],
    ) {
        debug_assert_eq!(cells.len(), out.len());
        // SAFETY: same layout argument as `copy_into_cells`; the caller guarantees the cells
        // are initialised and not written meanwhile; `out` is a distinct, exclusive slice.
        unsafe {
            std::ptr::copy_nonoverlapping(cells.as_ptr() as *const T, out.as_mut_ptr(), out.len())
        }
    }
}

/// Only outside loom: under loom every wait is a yield (see `Backoff`).
pub(crate) mod hint {
    /// One step of a busy wait.
    #[inline(always)]
    pub(crate) fn spin_loop() {
        std::hint::spin_loop();
    }
}

pub(crate) mod thread {
    pub(crate) use std::thread::yield_now;
}
