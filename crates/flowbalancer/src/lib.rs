//! flowbalancer moves work from callers to pools of workers, fast and without losing any.
//!
//! This facade re-exports the workspace's crates, each usable on its own:
//!
//! | module | crate | job |
//! |---|---|---|
//! | [`ringbuf`] | `flowbalancer-ringbuf` | bounded lock-free queues (MPMC, SPSC), model-checked |
//! | [`bus`] | `flowbalancer-bus` | batched message bus with backpressure and broadcast |
//! | [`lifecycle`] | `flowbalancer-lifecycle` | RAII scopes for tasks, process groups, files |
//! | [`pool`] | `flowbalancer-pool` | worker pools that survive their workers |
//! | [`mcp`] | `flowbalancer-mcp` | stdio MCP servers as pool workers |
//! | [`tiers`] | `flowbalancer-tiers` | method routing with honest fallback |
//! | [`nats`] | `flowbalancer-nats` | a tier's workers on other machines, over NATS |
//! | [`telemetry`] | `flowbalancer-telemetry` | bounded, deduplicated, rotating event log |
//!
//! and adds [`Balancer`], built from a TOML [`Config`]: tiers of worker pools (processes
//! or built-in handlers), routes, sessions and telemetry, owned by one lifecycle scope.
//! The `flowbalancer` binary (crate `flowbalancer-cli`) serves a balancer over MCP.

#[cfg(feature = "bus")]
pub use flowbalancer_bus as bus;
#[cfg(feature = "ringbuf")]
pub use flowbalancer_ringbuf as ringbuf;

#[cfg(feature = "balancer")]
pub use flowbalancer_lifecycle as lifecycle;
#[cfg(feature = "balancer")]
pub use flowbalancer_mcp as mcp;
#[cfg(feature = "balancer")]
pub use flowbalancer_nats as nats;
#[cfg(feature = "balancer")]
pub use flowbalancer_pool as pool;
#[cfg(feature = "balancer")]
pub use flowbalancer_telemetry as telemetry;
#[cfg(feature = "balancer")]
pub use flowbalancer_tiers as tiers;

#[cfg(feature = "balancer")]
mod balancer;
#[cfg(feature = "balancer")]
pub mod builtin;
#[cfg(feature = "balancer")]
mod config;
#[cfg(feature = "balancer")]
pub mod duration;
#[cfg(feature = "balancer")]
mod error;
#[cfg(feature = "balancer")]
mod failure_log;
#[cfg(feature = "balancer")]
mod import;
#[cfg(feature = "balancer")]
mod mcp_tier;
#[cfg(feature = "balancer")]
mod session;

#[cfg(feature = "balancer")]
pub use balancer::{Balancer, BalancerStats, LIST_CHANGED_TOPIC, ListChanged, McpTier};
#[cfg(feature = "balancer")]
pub use config::{
    BreakerSettings, Config, ConfigProblem, HttpConfig, Isolation, NatsWorkersConfig, RoutesConfig,
    SessionsConfig, TelemetryConfig, TierConfig, ToolsConfig, WorkersConfig,
};
#[cfg(feature = "balancer")]
pub use error::Error;
#[cfg(feature = "balancer")]
pub use session::SessionManager;

/// The names most programs need.
#[cfg(feature = "balancer")]
pub mod prelude {
    pub use crate::pool::{Payload, Pool, PoolError, Request, Response, ToolSpec};
    pub use crate::tiers::{CallOptions, RouteError, Routed, Router};
    pub use crate::{Balancer, Config, Error, SessionManager};
}

/// The README's examples, compiled and run as doctests.
#[cfg(all(doctest, feature = "balancer"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
