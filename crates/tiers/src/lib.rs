//! Method routing with honest fallback.
//!
//! A [`Router`] sends each call to a primary tier chosen by its method (exact route, longest
//! prefix, default), then, if that tier fails, to every later tier that offers the method —
//! all within one deadline for the whole chain. When nothing serves the call, the error says
//! everything that was tried:
//!
//! ```text
//! all tiers failed for "fib": hot → warm → cold; hot: timeout (…); warm: skipped (breaker open); cold: crashed (…)
//! ```
//!
//! * Caller errors (bad params, an unknown method at the worker, handler errors) return at
//!   once, without fallback: trying them elsewhere would give the same answer.
//! * A tier that cannot take the call (overloaded, no workers, breaker open) is skipped; the
//!   skip is recorded and costs no retry budget.
//! * A method no tier offers is refused at once ([`RouteError::UnknownMethod`]) instead of
//!   being tried on every tier.
//! * A breaker per tier opens after N failures in a row or a failure ratio over a window, for
//!   a cooldown that doubles with each ejection; a half-open probe closes it; caller errors
//!   never count; the last usable tier for a method is never opened.
//! * An optional [`RetryBudget`] keeps fallbacks under a fraction of calls (with a floor).
//! * [`Router::stats`]: calls, successes, failures by kind, fallbacks in and out, skips,
//!   breaker state and transitions, latency percentiles (lock-free histograms) per tier.
//!
//! [`RouteError`] serializes with serde, so a gateway can return it as structured data.

mod attempt;
mod breaker;
mod budget;
mod builder;
mod call;
mod error;
mod metrics;
mod name;
mod router;
mod service;
mod table;
mod tier;

pub use breaker::{BreakerConfig, BreakerState};
pub use budget::RetryBudget;
pub use error::{Attempt, Outcome, RouteError, SkipReason};
pub use metrics::TierStats;
pub use name::TierName;
pub use router::{CallOptions, ConfigError, Routed, Router, RouterBuilder};
pub use service::RouterFuture;
pub use tier::{ErrorClass, ServiceTier, Tier, TierError, TierFailure, TierFuture};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
