//! Per-session context: key → JSON value, forgotten after a TTL unused.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;

struct Session {
    values: HashMap<String, Value>,
    expires: Instant,
}

/// Context kept per session (for example what a tool learned about the user), forgotten when
/// a session goes unused for the TTL.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use flowbalancer::SessionManager;
///
/// let sessions = SessionManager::new(Duration::from_secs(300));
/// sessions.set("s1", "language", serde_json::json!("fr"));
/// assert_eq!(sessions.get("s1", "language"), Some(serde_json::json!("fr")));
/// assert_eq!(sessions.get("s2", "language"), None);
/// # });
/// ```
pub struct SessionManager {
    ttl: Duration,
    sessions: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("ttl", &self.ttl)
            .field("sessions", &self.len())
            .finish()
    }
}

impl SessionManager {
    /// An empty store whose sessions expire after `ttl` unused.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `value` under `key` for `session` (and keeps the session alive).
    pub fn set(&self, session: &str, key: &str, value: Value) {
        let expires = expiry(Instant::now(), self.ttl);
        let mut sessions = self.sessions.lock();
        let entry = sessions
            .entry(session.to_string())
            .or_insert_with(|| Session {
                values: HashMap::new(),
                expires,
            });
        entry.expires = expires;
        entry.values.insert(key.to_string(), value);
    }

    /// The value under `key` for `session`, if it lives (reading keeps it alive).
    pub fn get(&self, session: &str, key: &str) -> Option<Value> {
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        let entry = sessions.get_mut(session)?;
        if entry.expires <= now {
            sessions.remove(session);
            return None;
        }
        entry.expires = expiry(now, self.ttl);
        entry.values.get(key).cloned()
    }

    /// Forgets a session; returns whether it existed.
    pub fn remove(&self, session: &str) -> bool {
        self.sessions.lock().remove(session).is_some()
    }

    /// Forgets expired sessions; returns how many.
    pub fn expire(&self) -> usize {
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        let before = sessions.len();
        sessions.retain(|_, s| s.expires > now);
        before - sessions.len()
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Whether no session lives.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// `now + ttl`, saturating: a TTL too long for the clock (`Duration::MAX`) never expires.
fn expiry(now: Instant, ttl: std::time::Duration) -> Instant {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(std::time::Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}
