//! The concurrency primitives the algorithms use, from `std` normally and from `loom` when the
//! crate is built with `RUSTFLAGS="--cfg loom"`.
//!
//! The queue code only ever names `crate::loom::…`, so the same algorithm is model-checked and
//! shipped. `UnsafeCell` follows loom's closure API (`with`, `with_mut`), which loom needs to
//! track every access to the cell's contents.

#[cfg(not(loom))]
mod std_impl;
#[cfg(not(loom))]
pub(crate) use std_impl::*;

#[cfg(loom)]
mod loom_impl;
#[cfg(loom)]
pub(crate) use loom_impl::*;
