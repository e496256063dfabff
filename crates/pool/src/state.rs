//! The worker state machine: six states, a transition table, a bounded history, and health
//! as a separate axis.

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

use serde::Serialize;

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkerState {
    /// Starting (spawning, waiting for its hello).
    Initializing,
    /// Idle, can take calls.
    Ready,
    /// Running calls.
    Busy,
    /// Failing health checks: takes no new calls until it recovers or is replaced.
    Degraded,
    /// Being shut down or killed.
    Terminating,
    /// Gone.
    Terminated,
}

impl WorkerState {
    /// All six, in life order.
    pub const ALL: [WorkerState; 6] = [
        WorkerState::Initializing,
        WorkerState::Ready,
        WorkerState::Busy,
        WorkerState::Degraded,
        WorkerState::Terminating,
        WorkerState::Terminated,
    ];

    /// Its name in snake case (`initializing`, `ready`, …), as metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Initializing => "initializing",
            WorkerState::Ready => "ready",
            WorkerState::Busy => "busy",
            WorkerState::Degraded => "degraded",
            WorkerState::Terminating => "terminating",
            WorkerState::Terminated => "terminated",
        }
    }

    /// Its position in [`ALL`](Self::ALL).
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Whether the table allows `self → to`.
    pub fn can_become(self, to: WorkerState) -> bool {
        use WorkerState::*;
        matches!(
            (self, to),
            (Initializing, Ready | Terminating | Terminated)
                | (Ready, Busy | Degraded | Terminating)
                | (Busy, Ready | Busy | Degraded | Terminating)
                | (Degraded, Ready | Busy | Terminating)
                | (Terminating, Terminated)
        )
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Health, apart from the life state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Health {
    /// Not checked yet.
    #[default]
    Unknown,
    /// The last check passed.
    Healthy,
    /// The last check failed.
    Unhealthy,
}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// From.
    pub from: WorkerState,
    /// To.
    pub to: WorkerState,
    /// Why.
    pub reason: String,
    /// When.
    pub at: Instant,
}

/// A transition the table does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid worker transition {from} → {to} ({reason})")]
pub struct TransitionError {
    /// The current state.
    pub from: WorkerState,
    /// The refused target.
    pub to: WorkerState,
    /// The reason given for the attempt.
    pub reason: String,
}

/// A worker's life state, its health, and the last transitions.
///
/// ```
/// use flowbalancer_pool::{StateMachine, WorkerState};
///
/// let mut machine = StateMachine::new(8);
/// machine.transition(WorkerState::Ready, "started")?;
/// assert!(machine.transition(WorkerState::Initializing, "again").is_err());
/// assert_eq!(machine.history().len(), 1);
/// # Ok::<(), flowbalancer_pool::TransitionError>(())
/// ```
#[derive(Debug, Clone)]
pub struct StateMachine {
    /// Who the machine belongs to, for its tracing events (`pool/w3`).
    owner: Option<String>,
    state: WorkerState,
    health: Health,
    history: VecDeque<Transition>,
    history_limit: usize,
    /// Transitions counted by the state entered (`metrics` facade), when a pool counts them.
    counted: Option<std::sync::Arc<[metrics::Counter; WorkerState::ALL.len()]>>,
}

impl StateMachine {
    /// A machine in `Initializing` that keeps the last `history_limit` transitions.
    pub fn new(history_limit: usize) -> Self {
        Self {
            owner: None,
            state: WorkerState::Initializing,
            health: Health::Unknown,
            history: VecDeque::with_capacity(history_limit.min(64)),
            history_limit,
            counted: None,
        }
    }

    /// Counts this machine's transitions into `counters`, indexed by state.
    pub(crate) fn counted_in(
        mut self,
        counters: std::sync::Arc<[metrics::Counter; WorkerState::ALL.len()]>,
    ) -> Self {
        self.counted = Some(counters);
        self
    }

    /// Names the machine's owner in its tracing events.
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// The current state.
    pub fn state(&self) -> WorkerState {
        self.state
    }

    /// The current health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Sets the health.
    pub fn set_health(&mut self, health: Health) {
        self.health = health;
    }

    /// Moves to `to`, recording why.
    ///
    /// # Errors
    ///
    /// [`TransitionError`] when the table refuses the move; the state is unchanged.
    pub fn transition(
        &mut self,
        to: WorkerState,
        reason: impl Into<String>,
    ) -> Result<(), TransitionError> {
        let reason = reason.into();
        if !self.state.can_become(to) {
            return Err(TransitionError {
                from: self.state,
                to,
                reason,
            });
        }
        if self.state != to {
            if let Some(counted) = &self.counted {
                counted[to.index()].increment(1);
            }
            let owner = self.owner.as_deref().unwrap_or("worker");
            // Every transition is an event; the per-call Ready ⇄ Busy flips at trace level.
            if matches!(
                (self.state, to),
                (WorkerState::Ready, WorkerState::Busy) | (WorkerState::Busy, WorkerState::Ready)
            ) {
                tracing::trace!(worker = owner, from = %self.state, to = %to, reason = %reason, "worker transition");
            } else {
                tracing::debug!(worker = owner, from = %self.state, to = %to, reason = %reason, "worker transition");
            }
            if self.history.len() == self.history_limit {
                self.history.pop_front();
            }
            if self.history_limit > 0 {
                self.history.push_back(Transition {
                    from: self.state,
                    to,
                    reason,
                    at: Instant::now(),
                });
            }
            self.state = to;
        }
        Ok(())
    }

    /// The last transitions, oldest first.
    pub fn history(&self) -> &VecDeque<Transition> {
        &self.history
    }
}
