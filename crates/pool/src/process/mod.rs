//! Subprocess workers over framed stdio (protocol: `docs/protocol.md`), and the Rust side of
//! the protocol for writing workers.

pub mod frame;
pub mod protocol;
mod serve;
mod worker;

pub use serve::{CallContext, WorkerServer};
pub use worker::{
    DEFAULT_ENV_ALLOW, ProcessFactory, ProcessSpec, ProcessWorker, python_interpreter,
};
