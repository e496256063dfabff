pub(crate) mod sync {
    pub(crate) mod atomic {
        pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
    }
}

pub(crate) mod cell {
    pub(crate) use loom::cell::UnsafeCell;

    /// Element by element, so loom sees every access.
    ///
    /// # Safety
    ///
    /// As the std version: exclusive access to the cells, equal lengths.
    pub(crate) unsafe fn copy_into_cells<T: Copy>(
        cells: &[UnsafeCell<std::mem::MaybeUninit<T>>],
        items: &[T],
    ) {
        for (cell, &item) in cells.iter().zip(items) {
            // SAFETY: the caller has exclusive access to the cells.
            cell.with_mut(|p| unsafe { p.write(std::mem::MaybeUninit::new(item)) });
        }
    }

    /// Element by element, so loom sees every access.
    ///
    /// # Safety
    ///
    /// As the std version: initialised cells, not written meanwhile, equal lengths.
    pub(crate) unsafe fn copy_from_cells<T: Copy>(
        cells: &[UnsafeCell<std::mem::MaybeUninit<T>>],
        out: &mut [T],
    ) {
        for (cell, slot) in cells.iter().zip(out) {
            // SAFETY: the caller guarantees the cell is initialised and not written meanwhile.
            *slot = cell.with(|p| unsafe { (*p).assume_init() });
        }
    }
}

pub(crate) mod thread {
    pub(crate) use loom::thread::yield_now;
}
