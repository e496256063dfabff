//! One error for the whole workspace.

use crate::config::ConfigProblem;

/// Any flowbalancer error: each crate's errors, wrapped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config is not valid.
    #[error("invalid config:\n{}", problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Config {
        /// Every problem found, with its location.
        problems: Vec<ConfigProblem>,
    },
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A pool failed (building it, or a call).
    #[error(transparent)]
    Pool(#[from] flowbalancer_pool::PoolError),
    /// Routing failed.
    #[error(transparent)]
    Route(#[from] flowbalancer_tiers::RouteError),
    /// The route table is inconsistent.
    #[error(transparent)]
    Router(#[from] flowbalancer_tiers::ConfigError),
    /// Telemetry could not start.
    #[error(transparent)]
    Telemetry(#[from] flowbalancer_telemetry::TelemetryError),
    /// A lifecycle scope refused a resource.
    #[error(transparent)]
    Scope(#[from] flowbalancer_lifecycle::ScopeError),
    /// A NATS tier could not start.
    #[error("tier {tier}: {source}")]
    Nats {
        /// The tier.
        tier: String,
        /// What went wrong.
        source: flowbalancer_nats::NatsError,
    },
    /// The bus refused a queue or topic.
    #[cfg(feature = "bus")]
    #[error(transparent)]
    Bus(#[from] flowbalancer_bus::BusError),
}
