//! Subprocess workers over framed stdio (protocol: `docs/protocol.md`), and the Rust side of
//! the protocol for writing workers.

mod redact;
mod spec;
mod worker;

/// Length-prefixed frames (from `flowbalancer-protocol`).
pub use flowbalancer_protocol::frame;
/// The protocol's messages (from `flowbalancer-protocol`).
pub use flowbalancer_protocol::message as protocol;
pub use flowbalancer_protocol::{CallContext, WorkerServer};
pub use redact::RedactedValues;
pub use spec::{DEFAULT_ENV_ALLOW, ProcessSpec, python_interpreter, worker_command};
pub use worker::{ProcessFactory, ProcessWorker};
