//! A worker pool that survives its workers.
//!
//! * [`Worker`] (async call, health check, shutdown, kill) and [`WorkerFactory`] (async
//!   start). In-process workers come from async closures ([`in_process`]); subprocess workers
//!   plug into the same traits.
//! * [`StateMachine`]: Initializing → Ready ⇄ Busy → Degraded → Terminating → Terminated,
//!   invalid moves refused with a typed error, a bounded history; health on its own axis.
//! * [`Pool`]: size + overflow, eager or lazy start, a bounded admission queue with a wait
//!   bound (`Overloaded` when full), call timeouts, health checks, recycling, restart backoff,
//!   least-loaded dispatch through a checkout guard that always gives the worker back, session
//!   affinity in three modes, graceful shutdown, `scale_to` in waves, and [`PoolStats`]
//!   readable while calls run.
//! * [`ProcessWorker`]: a subprocess speaking length-prefixed JSON frames on stdin/stdout
//!   (`docs/protocol.md`), in its own process group, stderr into `tracing`; [`WorkerServer`]
//!   is the worker side in Rust, `workers/python/flowbalancer_worker.py` in Python.
//!
//! Every call is answered exactly once: a [`Response`] or one [`PoolError`]; each failure
//! has a [`FailureClass`] telling a router whether to fall back.

mod config;
mod error;
mod histogram;
mod pool;
pub mod process;
mod request;
mod state;
mod stats;
mod worker;

pub use config::{AffinityMode, PoolConfig, StartMode};
pub use error::{FailureClass, PoolError};
pub use histogram::{LatencyHistogram, LatencySummary};
pub use pool::{Pool, PoolBuilder, PoolFuture, ScaleReport, WorkerInfo};
pub use process::{CallContext, ProcessFactory, ProcessSpec, ProcessWorker, WorkerServer};
pub use request::{
    Meta, Payload, Progress, ProgressSink, Request, Response, ToolSpec, Upstream, UpstreamError,
    UpstreamFuture, UpstreamHandle, WorkerId,
};
pub use state::{Health, StateMachine, Transition, TransitionError, WorkerState};
pub use stats::{AffinityStats, FAILURE_KINDS, PoolStats, WorkerCounts};
pub use worker::{
    ErrorKind, FnFactory, FnWorker, HandlerFuture, StartContext, StartError, Worker, WorkerError,
    WorkerFactory, in_process,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
