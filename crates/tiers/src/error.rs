//! What a routed call can fail with: every attempt, honestly.

use std::fmt;
use std::time::Duration;

use flowbalancer_pool::WorkerId;
use serde::{Serialize, Serializer};

use crate::tier::TierFailure;

/// Why a tier was not tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SkipReason {
    /// Its breaker is open.
    BreakerOpen,
    /// The retry budget allowed no more fallbacks.
    RetryBudgetExhausted,
    /// It could not take the call (overloaded, no workers, shutting down, …).
    Unavailable {
        /// Its error kind (`overloaded`, `no_workers`, …).
        kind: String,
        /// Its message.
        message: String,
    },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::BreakerOpen => f.write_str("skipped (breaker open)"),
            SkipReason::RetryBudgetExhausted => f.write_str("skipped (retry budget exhausted)"),
            SkipReason::Unavailable { kind, .. } => {
                write!(f, "skipped ({})", kind.replace('_', " "))
            }
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// The tier was not tried.
    Skipped {
        /// Why.
        reason: SkipReason,
    },
    /// The tier failed the call.
    Failed {
        /// The error kind (`crashed`, `timeout`, `transient`, …).
        kind: String,
        /// The message.
        message: String,
    },
    /// The tier did not answer within the time left of the chain's deadline.
    TimedOut {
        /// How long it had.
        #[serde(serialize_with = "millis")]
        after: Duration,
    },
}

/// One tier tried (or skipped) for a call.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Attempt {
    /// The tier's name.
    pub tier: String,
    /// The worker involved, if one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerId>,
    /// When the attempt started, from the start of the call.
    #[serde(rename = "started_ms", serialize_with = "millis")]
    pub started: Duration,
    /// How long it took.
    #[serde(rename = "elapsed_ms", serialize_with = "millis")]
    pub elapsed: Duration,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.tier)?;
        match &self.outcome {
            Outcome::Skipped { reason } => write!(f, "{reason}"),
            Outcome::Failed { kind, message } => {
                write!(f, "{} ({message})", kind.replace('_', " "))
            }
            Outcome::TimedOut { after } => write!(f, "timed out after {after:?}"),
        }
    }
}

fn millis<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64() * 1000.0)
}

/// Writes `hot → warm → cold; hot: …; warm: …`.
fn chain(f: &mut fmt::Formatter<'_>, attempts: &[Attempt]) -> fmt::Result {
    let names: Vec<&str> = attempts.iter().map(|a| a.tier.as_str()).collect();
    f.write_str(&names.join(" → "))?;
    for attempt in attempts {
        write!(f, "; {attempt}")?;
    }
    Ok(())
}

/// A routed call failed.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RouteError {
    /// Every tier of the chain was tried or skipped, and none served the call.
    AllTiersFailed {
        /// The method.
        method: String,
        /// Every attempt, in order.
        attempts: Vec<Attempt>,
    },
    /// The chain's deadline passed.
    DeadlineExceeded {
        /// The method.
        method: String,
        /// The deadline given to the whole chain.
        #[serde(serialize_with = "millis")]
        deadline: Duration,
        /// The attempts made before it passed.
        attempts: Vec<Attempt>,
    },
    /// No tier offers this method: it was not tried anywhere.
    UnknownMethod {
        /// The method.
        method: String,
    },
    /// The call was refused as the caller's mistake (bad params, unknown method at the
    /// worker, a handler error): returned at once, without fallback.
    Rejected {
        /// The method.
        method: String,
        /// The tier that answered.
        tier: String,
        /// Its error: [`TierFailure::downcast_ref`] gives the original (a
        /// `PoolError` for a pool tier).
        error: TierFailure,
    },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::AllTiersFailed { method, attempts } => {
                write!(f, "all tiers failed for {method:?}: ")?;
                chain(f, attempts)
            }
            RouteError::DeadlineExceeded {
                method,
                deadline,
                attempts,
            } => {
                write!(f, "deadline of {deadline:?} exceeded for {method:?}")?;
                if !attempts.is_empty() {
                    f.write_str(": ")?;
                    chain(f, attempts)?;
                }
                Ok(())
            }
            RouteError::UnknownMethod { method } => {
                write!(f, "no tier offers the method {method:?}")
            }
            RouteError::Rejected {
                method,
                tier,
                error,
            } => write!(f, "{method:?} rejected by tier {tier}: {error}"),
        }
    }
}

impl RouteError {
    /// The attempts made, if any.
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            RouteError::AllTiersFailed { attempts, .. }
            | RouteError::DeadlineExceeded { attempts, .. } => attempts,
            _ => &[],
        }
    }

    /// The error as structured JSON (for a gateway's `structuredContent`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(
            |e| serde_json::json!({ "error": "unserializable", "message": e.to_string() }),
        )
    }
}
