//! What travels over NATS: subjects, headers, and the JSON of calls and answers.

use flowbalancer_tiers::ErrorClass;
use serde::{Deserialize, Serialize};

/// Header: the call's id (for cancellation).
pub const CALL_ID: &str = "Flowbalancer-Call-Id";
/// Header: milliseconds the call may still take.
pub const DEADLINE_MS: &str = "Flowbalancer-Deadline-Ms";
/// Header: the client session (affinity on the host's pools).
pub const SESSION: &str = "Flowbalancer-Session";
/// Header: where the host publishes progress reports and heartbeats while the call runs.
pub const PROGRESS: &str = "Flowbalancer-Progress";
/// Header: W3C trace context, passed through.
pub const TRACEPARENT: &str = "traceparent";
/// Header on answers: the instance that served the call.
pub const INSTANCE: &str = "Flowbalancer-Instance";

/// How often a host says "still running" on the progress subject.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// The subject every host of `tier` serves in queue group `tier`: any idle host.
pub fn call_subject(tier: &str) -> String {
    format!("flowbalancer.{tier}.call")
}

/// The subject only instance `instance` of `tier` serves (session affinity).
pub fn instance_subject(tier: &str, instance: &str) -> String {
    format!("flowbalancer.{tier}.{instance}.call")
}

/// The subject every host of `tier` listens on for cancellations (the body is a call id).
pub fn cancel_subject(tier: &str) -> String {
    format!("flowbalancer.{tier}.cancel")
}

/// The NATS service name of `tier`'s hosts (`$SRV.INFO.<name>` lists them).
pub fn service_name(tier: &str) -> String {
    format!("flowbalancer-{tier}")
}

/// The subject of a durable tier's jobs (its JetStream work-queue stream).
pub fn jobs_subject(tier: &str) -> String {
    format!("flowbalancer.{tier}.jobs")
}

/// The JetStream stream of a durable tier's jobs.
pub fn stream_name(tier: &str) -> String {
    format!("FLOWBALANCER_{tier}")
}

/// The durable pull consumer every host of a durable tier takes jobs from.
pub fn consumer_name(tier: &str) -> String {
    format!("flowbalancer-{tier}")
}

/// Whether `name` can be a tier name in subjects and service names.
pub fn is_valid_tier_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A call's body.
#[derive(Debug, Serialize, Deserialize)]
pub struct CallBody {
    /// The method (tool).
    pub method: String,
    /// Its arguments.
    pub params: serde_json::Value,
}

/// A host's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The result.
    Ok(serde_json::Value),
    /// The call failed at the host.
    Error(RemoteError),
}

/// A failure at the host, classified for the gateway's router.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteError {
    /// The failure kind (`bad_params`, `timeout`, …).
    pub kind: String,
    /// `caller`, `unavailable` or `retryable`.
    pub class: String,
    /// What went wrong.
    pub message: String,
}

impl RemoteError {
    /// The class as the router knows it (an unknown class is retryable).
    pub fn error_class(&self) -> ErrorClass {
        match self.class.as_str() {
            "caller" => ErrorClass::Caller,
            "unavailable" => ErrorClass::Unavailable,
            _ => ErrorClass::Retryable,
        }
    }
}

/// What a host publishes on a call's progress subject.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// The call still runs.
    Heartbeat,
    /// A durable job's answer (jobs are not requests: the answer comes this way).
    Answer {
        /// The answer.
        answer: Answer,
        /// The instance that served it.
        instance: String,
    },
    /// A progress report of the worker.
    Progress {
        /// How far.
        progress: f64,
        /// Out of.
        total: Option<f64>,
        /// What it is doing.
        message: Option<String>,
    },
}
