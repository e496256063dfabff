//! [`ScopeBuilder`]: a scope's name, grace period, limits and temp directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::limits::{LimitPolicy, Limits};
use crate::scope::{Inner, Scope};

/// Builds a [`Scope`].
#[derive(Debug, Clone)]
pub struct ScopeBuilder {
    name: String,
    grace: Duration,
    limits: Limits,
    policy: LimitPolicy,
    temp_dir: Option<PathBuf>,
}

impl Default for ScopeBuilder {
    fn default() -> Self {
        Self {
            name: "scope".into(),
            grace: Duration::from_secs(3),
            limits: Limits::default(),
            policy: LimitPolicy::default(),
            temp_dir: None,
        }
    }
}

impl ScopeBuilder {
    /// The name used in logs, errors and reports.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How long `close` lets tasks finish after cancellation and processes exit after
    /// SIGTERM before it aborts and SIGKILLs them (default 3 s).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The most resources of each kind (default 50 listeners, 20 processes, 100 temp files).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// What happens at a limit (default: refuse).
    pub fn policy(mut self, policy: LimitPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Where temp files and directories go (default: the system's temp directory).
    pub fn temp_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_dir = Some(dir.into());
        self
    }

    /// Builds the scope.
    pub fn build(self) -> Scope {
        Scope::from_inner(Arc::new(Inner::new(
            self.name,
            self.grace,
            self.limits,
            self.policy,
            self.temp_dir.unwrap_or_else(std::env::temp_dir),
        )))
    }
}
