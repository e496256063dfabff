//! A tier's workers on other machines, over NATS.
//!
//! * [`serve_host`]: a worker host serves its local pools (behind a router) as the NATS
//!   service `flowbalancer-<tier>`: calls on `flowbalancer.<tier>.call` in queue group
//!   `<tier>` (any idle host), `flowbalancer.<tier>.<instance>.call` (one host, for session
//!   affinity), cancellations on `flowbalancer.<tier>.cancel`, progress and heartbeats on a
//!   subject each call names. `$SRV.PING`, `$SRV.INFO` (tools, capacity, instance) and
//!   `$SRV.STATS` (calls, failures, cancellations) come with the service. On stop it drains.
//! * [`NatsTier`]: every host of a tier as one tier of the gateway's
//!   [`Router`](flowbalancer_tiers::Router), with discovery, session affinity, ejection,
//!   progress, cancellation, and a retry on another host when one dies with a call.
//! * Durable tiers ([`NatsTier::durable`], [`HostConfig::durable`]): calls as jobs on a
//!   JetStream work queue, kept alive with AckProgress, delivered again when a host dies.
//! * [`connect`]: a client from a URL (`nats://`, or `tls://` for TLS), with a token from an
//!   environment variable or a `.creds` file. Nothing of the gateway's environment is sent to
//!   the hosts: a call carries its method, arguments, session, deadline and call id only.

mod durable;
mod host;
mod tier;
pub mod wire;

use std::path::PathBuf;

use flowbalancer_tiers::{ErrorClass, TierError};

pub use host::{HostConfig, serve_host};
pub use tier::NatsTier;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// How to reach the NATS server.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConnectConfig {
    /// The server, e.g. `nats://127.0.0.1:4222` (`tls://…` for TLS).
    pub url: String,
    /// An environment variable holding the token, if the server wants one.
    pub token_env: Option<String>,
    /// A NATS credentials file (JWT and nkey seed).
    pub creds: Option<PathBuf>,
    /// A file holding a bare nkey seed (`SU…`), for servers that authenticate by nkey.
    pub nkey: Option<PathBuf>,
    /// The connection's name, as the server shows it.
    pub name: Option<String>,
    /// Return at once when the server is not reachable yet, and keep connecting in the
    /// background (a gateway's other tiers serve meanwhile); default false (fail).
    pub keep_trying: bool,
}

impl ConnectConfig {
    /// The server at `url`, no credentials.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// The same config with a token from `variable`.
    pub fn token_env(mut self, variable: impl Into<String>) -> Self {
        self.token_env = Some(variable.into());
        self
    }

    /// The same config with a credentials file.
    pub fn creds(mut self, path: impl Into<PathBuf>) -> Self {
        self.creds = Some(path.into());
        self
    }

    /// The same config, returning at once and connecting in the background when the server
    /// is not reachable yet.
    pub fn keep_trying(mut self, yes: bool) -> Self {
        self.keep_trying = yes;
        self
    }

    /// The same config with an nkey seed file.
    pub fn nkey(mut self, path: impl Into<PathBuf>) -> Self {
        self.nkey = Some(path.into());
        self
    }

    /// The same config with a connection name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// Connects to the NATS server of `config`.
///
/// # Errors
///
/// [`NatsError::Connect`] when the server cannot be reached or refuses the credentials;
/// [`NatsError::Credentials`] when the token variable is unset or a creds or nkey file
/// unreadable.
pub async fn connect(config: &ConnectConfig) -> Result<async_nats::Client, NatsError> {
    let mut options = async_nats::ConnectOptions::new();
    if let Some(name) = &config.name {
        options = options.name(name);
    }
    if let Some(variable) = &config.token_env {
        let token = std::env::var(variable).map_err(|_| {
            NatsError::Credentials(format!("the token variable {variable} is not set"))
        })?;
        options = options.token(token);
    }
    if let Some(path) = &config.creds {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| NatsError::Credentials(format!("{}: {e}", path.display())))?;
    }
    if let Some(path) = &config.nkey {
        let seed = std::fs::read_to_string(path)
            .map_err(|e| NatsError::Credentials(format!("{}: {e}", path.display())))?;
        options = options.nkey(seed.trim().to_string());
    }
    if config.keep_trying {
        options = options.retry_on_initial_connect();
    }
    options
        .connect(config.url.as_str())
        .await
        .map_err(|e| NatsError::Connect {
            url: config.url.clone(),
            message: e.to_string(),
        })
}

/// A host's classified failure, as it came over NATS.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.message)]
pub struct RemoteFailure(pub wire::RemoteError);

/// What can go wrong with NATS tiers and hosts.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The server cannot be reached or refused us.
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect {
        /// The server.
        url: String,
        /// Why.
        message: String,
    },
    /// A token or credentials file is missing.
    #[error("NATS credentials: {0}")]
    Credentials(String),
    /// A tier name that cannot be part of a subject (letters, digits, `-`, `_`).
    #[error("the tier name {0:?} cannot be a NATS subject token (letters, digits, - and _ only)")]
    InvalidTier(String),
    /// The service could not be registered.
    #[error("NATS service: {0}")]
    Service(String),
    /// A subscription failed.
    #[error("NATS subscription: {0}")]
    Subscribe(String),
    /// The gateway is not connected to the NATS server (down, or not up yet).
    #[error("not connected to the NATS server of tier {tier}")]
    Disconnected {
        /// The tier.
        tier: String,
    },
    /// No host serves the tier.
    #[error("no host serves tier {tier} over NATS")]
    NoResponders {
        /// The tier.
        tier: String,
    },
    /// The host running the call went silent (killed), twice.
    #[error("the NATS hosts of tier {tier} died with the call")]
    HostLost {
        /// The tier.
        tier: String,
    },
    /// JetStream (a durable tier's queue) failed.
    #[error("NATS JetStream: {0}")]
    JetStream(String),
    /// The request failed in the client.
    #[error("NATS request: {0}")]
    Request(String),
    /// A message we cannot read.
    #[error("NATS protocol: {0}")]
    Protocol(String),
    /// The host answered with a failure.
    #[error(transparent)]
    Remote(RemoteFailure),
}

impl TierError for NatsError {
    fn class(&self) -> ErrorClass {
        match self {
            NatsError::Remote(RemoteFailure(error)) => error.error_class(),
            NatsError::NoResponders { .. }
            | NatsError::Disconnected { .. }
            | NatsError::Connect { .. } => ErrorClass::Unavailable,
            _ => ErrorClass::Retryable,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            NatsError::Remote(RemoteFailure(error)) => remote_kind(&error.kind),
            NatsError::NoResponders { .. } | NatsError::Disconnected { .. } => "no_workers",
            NatsError::HostLost { .. } => "crashed",
            NatsError::Connect { .. } => "unavailable",
            NatsError::Protocol(_) => "protocol_violation",
            _ => "nats",
        }
    }

    fn is_deadline(&self) -> bool {
        matches!(self, NatsError::Remote(RemoteFailure(e)) if e.kind == "deadline_exceeded")
    }
}

/// The host's failure kind as a static name: a pool's kinds, the router's, or `remote`.
fn remote_kind(kind: &str) -> &'static str {
    const ROUTER_KINDS: [&str; 5] = [
        "all_tiers_failed",
        "invalid_config",
        "service",
        "unavailable",
        "error",
    ];
    flowbalancer_pool::FAILURE_KINDS
        .iter()
        .chain(&ROUTER_KINDS)
        .find(|k| **k == kind)
        .copied()
        .unwrap_or("remote")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(kind: &str, class: &str) -> NatsError {
        NatsError::Remote(RemoteFailure(wire::RemoteError {
            kind: kind.into(),
            class: class.into(),
            message: "m".into(),
        }))
    }

    #[test]
    fn a_hosts_failure_keeps_its_kind_and_class_for_the_router() {
        let caller = remote("bad_params", "caller");
        assert_eq!(
            (caller.kind(), caller.class()),
            ("bad_params", ErrorClass::Caller)
        );
        let deadline = remote("deadline_exceeded", "retryable");
        assert!(deadline.is_deadline());
        assert_eq!(remote("never-heard-of", "weird").kind(), "remote");
        assert_eq!(remote("x", "weird").class(), ErrorClass::Retryable);
        let gone = NatsError::NoResponders { tier: "t".into() };
        assert_eq!(gone.class(), ErrorClass::Unavailable);
        assert!(!wire::is_valid_tier_name("a.b") && wire::is_valid_tier_name("warm-2_x"));
    }
}
