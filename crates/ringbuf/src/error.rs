//! Errors of the queue constructors.

use std::fmt;

/// A queue was asked for with a capacity it cannot have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CapacityError {
    /// The capacity was zero: a bounded queue needs at least one slot.
    Zero,
    /// The capacity is larger than the queue can index (more than 2^60 slots) or than memory
    /// can hold.
    TooLarge {
        /// The capacity that was asked for.
        requested: usize,
    },
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapacityError::Zero => f.write_str("queue capacity must be at least 1, got 0"),
            CapacityError::TooLarge { requested } => {
                write!(f, "queue capacity {requested} is too large")
            }
        }
    }
}

impl std::error::Error for CapacityError {}
