//! The `Config` a `Balancer` is built from, read from TOML.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flowbalancer_pool::AffinityMode;
use serde::{Deserialize, Serialize};

mod http;
mod problems;
mod workers;

pub use http::HttpConfig;
pub use workers::{NatsWorkersConfig, WorkersConfig};

/// Everything a balancer is built from. See `docs/configuration.md` for every key.
///
/// ```
/// let config = flowbalancer::Config::from_toml(r#"
///     [[tiers]]
///     name = "hot"
///     workers = { builtin = ["echo", "word_count"] }
///     size = 2
///
///     [routes]
///     default = "hot"
/// "#)?;
/// assert_eq!(config.tiers[0].size, 2);
/// # Ok::<(), flowbalancer::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The server's name (MCP `serverInfo.name`).
    #[serde(default = "default_name")]
    pub name: String,
    /// The deadline of a whole call across tiers (default 30 s).
    #[serde(default = "default_timeout", with = "crate::duration")]
    pub timeout: Duration,
    /// How long the start waits for the MCP tiers' first instances (default 10 s). A server
    /// still starting then comes up in the background while the other tiers serve, and its
    /// tools appear with a `list_changed` notification; one that hangs never keeps a client
    /// from connecting.
    #[serde(default = "default_start_wait", with = "crate::duration")]
    pub start_wait: Duration,
    /// The tiers, in fallback order.
    pub tiers: Vec<TierConfig>,
    /// Which method goes to which tier.
    #[serde(default)]
    pub routes: RoutesConfig,
    /// Session affinity and session context.
    #[serde(default)]
    pub sessions: SessionsConfig,
    /// The event log.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Breaker settings of every tier.
    #[serde(default)]
    pub breaker: BreakerSettings,
    /// `serve` over streamable HTTP.
    #[serde(default)]
    pub http: HttpConfig,
}

fn default_name() -> String {
    "flowbalancer".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_start_wait() -> Duration {
    Duration::from_secs(10)
}

/// How a tier's workers are shared between client sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Isolation {
    /// Any worker serves any session; affinity (the `[sessions]` setting) is a preference.
    #[default]
    Shared,
    /// Each client session gets a worker of its own (a stateful server: a browser, a shell),
    /// started on demand up to `size + max_overflow` and retired when the session ends or
    /// expires.
    Session,
}

/// Which of an MCP tier's tools are offered (names as the server gives them, before any
/// prefix).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ToolsConfig {
    /// Only these tools (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Never these tools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// One tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TierConfig {
    /// Its name (used by routes).
    pub name: String,
    /// Its workers.
    pub workers: WorkersConfig,
    /// Workers kept running (default 2).
    #[serde(default = "default_size")]
    pub size: usize,
    /// Extra workers under load (default 0).
    #[serde(default)]
    pub max_overflow: usize,
    /// Calls in flight per worker (default 1; 16 for MCP servers, which multiplex calls on
    /// one connection). See [`TierConfig::max_in_flight`].
    #[serde(
        default,
        rename = "max_in_flight",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_in_flight_setting: Option<usize>,
    /// A call running longer kills its worker (default 30 s).
    #[serde(default = "default_call_timeout", with = "crate::duration")]
    pub call_timeout: Duration,
    /// How long a worker has to stop a call the caller gave up on (the chain's deadline, a
    /// client cancel) before it is killed and replaced; its slot stays taken meanwhile
    /// (default 2 s).
    #[serde(default = "default_cancel_grace", with = "crate::duration")]
    pub cancel_grace: Duration,
    /// Callers that may wait for a worker (default 1024).
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// How long a caller waits for a worker (default 5 s).
    #[serde(default = "default_queue_timeout", with = "crate::duration")]
    pub queue_timeout: Duration,
    /// Health-check interval (default 30 s).
    #[serde(default = "default_health", with = "crate::duration")]
    pub health_interval: Duration,
    /// Failed checks in a row before a worker is replaced (default 3).
    #[serde(default = "three")]
    pub health_failures: u32,
    /// Recycle a worker after this many calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recycle_after_calls: Option<u64>,
    /// Recycle a worker after this age.
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub recycle_after_age: Option<Duration>,
    /// The methods this tier offers (default: what its workers announce).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Working directory of worker processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Extra environment variables of worker processes; `${NAME}` (or `${NAME:-default}`) in
    /// a value is taken from our environment when the workers start.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Variables passed through from our environment (default: PATH, HOME, LANG, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_allow: Option<Vec<String>>,
    /// Interpreter flags for `python` workers (for example `["-S"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub python_args: Vec<String>,
    /// How long a worker process has to say hello, or an MCP server to answer `initialize`
    /// and the listings (default 10 s; 60 s for MCP servers, which `npx -y` may download
    /// first). See [`TierConfig::hello_timeout`].
    #[serde(
        default,
        rename = "hello_timeout",
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub hello_timeout_setting: Option<Duration>,
    /// MCP tiers: put before each tool name offered (the result must still be an MCP tool
    /// name: 1 to 128 of `[A-Za-z0-9_.-]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_prefix: Option<String>,
    /// MCP tiers: which tools are offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<ToolsConfig>,
    /// `shared` (default) or `session`: one worker per client session.
    #[serde(default)]
    pub isolation: Isolation,
    /// `mcp_url` tiers: HTTP headers sent with every request; `${NAME}` in a value is the
    /// environment variable `NAME` (so a token need not be written in the file).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// `${NAME}` in `text` replaced by the environment variable `NAME`, and `${NAME:-default}` by
/// `NAME` or, when it is unset or empty, `default` (as Claude Code's `.mcp.json` and shells
/// write them). `${env:NAME}` is `NAME` too, as VS Code writes it.
///
/// # Errors
///
/// The name of a variable that is not set (and has no default).
pub(crate) fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let reference = &after[..end];
        let reference = reference.strip_prefix("env:").unwrap_or(reference);
        let value = match reference.split_once(":-") {
            Some((name, default)) => std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string()),
            None => std::env::var(reference).map_err(|_| reference.to_string())?,
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Why a `${…}` reference has no value, for a config problem.
pub(crate) fn unset_variable(name: &str) -> String {
    if name.starts_with("input:") {
        format!(
            "${{{name}}} is a VS Code input, which only VS Code can ask for: set an environment variable and write ${{NAME}} instead"
        )
    } else {
        format!("the environment variable {name} is not set")
    }
}

impl TierConfig {
    /// A tier named `name` running `workers`, every other key at its default.
    pub fn new(name: impl Into<String>, workers: WorkersConfig) -> Self {
        Self {
            name: name.into(),
            workers,
            size: default_size(),
            max_overflow: 0,
            max_in_flight_setting: None,
            call_timeout: default_call_timeout(),
            cancel_grace: default_cancel_grace(),
            queue_capacity: default_queue(),
            queue_timeout: default_queue_timeout(),
            health_interval: default_health(),
            health_failures: three(),
            recycle_after_calls: None,
            recycle_after_age: None,
            methods: None,
            cwd: None,
            env: BTreeMap::new(),
            env_allow: None,
            python_args: Vec::new(),
            hello_timeout_setting: None,
            tool_prefix: None,
            tools: None,
            isolation: Isolation::Shared,
            headers: BTreeMap::new(),
        }
    }

    /// Calls in flight per worker: the `max_in_flight` key, else 16 for MCP servers and 1
    /// for the others.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight_setting
            .unwrap_or(if self.workers.is_mcp() { 16 } else { 1 })
    }

    /// The start timeout: the `hello_timeout` key, else 60 s for MCP servers and 10 s for
    /// the others.
    pub fn hello_timeout(&self) -> Duration {
        self.hello_timeout_setting
            .unwrap_or(if self.workers.is_mcp() {
                Duration::from_secs(60)
            } else {
                default_hello()
            })
    }
}

fn default_size() -> usize {
    2
}
fn three() -> u32 {
    3
}
fn default_cancel_grace() -> Duration {
    Duration::from_secs(2)
}

fn default_call_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_queue() -> usize {
    1024
}
fn default_queue_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_health() -> Duration {
    Duration::from_secs(30)
}
fn default_hello() -> Duration {
    Duration::from_secs(10)
}

/// Routes: exact methods, prefixes, the default tier, per-method fallback lists.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RoutesConfig {
    /// Methods that match nothing else (default: the first tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// method → tier.
    #[serde(default)]
    pub exact: BTreeMap<String, String>,
    /// prefix → tier (the longest prefix wins).
    #[serde(default)]
    pub prefix: BTreeMap<String, String>,
    /// method → the tiers to fall back to, in order (default: every later tier).
    #[serde(default)]
    pub fallback: BTreeMap<String, Vec<String>>,
}

/// Session affinity and the session context store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SessionsConfig {
    /// `hint` (default), `strict_queue` or `strict_fail_fast`.
    #[serde(default)]
    pub affinity: AffinityMode,
    /// A session is forgotten after this long unused (default 5 min).
    #[serde(default = "default_ttl", with = "crate::duration")]
    pub ttl: Duration,
}

fn default_ttl() -> Duration {
    Duration::from_secs(300)
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            affinity: AffinityMode::Hint,
            ttl: default_ttl(),
        }
    }
}

/// The event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TelemetryConfig {
    /// Write an event log at all (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The active file (default: `events.jsonl` in the per-user state directory,
    /// `$XDG_STATE_HOME/flowbalancer/`, else `~/.local/state/flowbalancer/`; a second instance
    /// using the same file writes `events-<pid>.jsonl` instead).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The least severe level recorded: `error`, `warn`, `info` (default), `debug`, `trace`.
    #[serde(default = "default_level")]
    pub level: String,
    /// Levels per target (`"flowbalancer_pool" = "debug"`, `"noisy" = "off"`); the longest
    /// matching target wins.
    #[serde(default)]
    pub targets: std::collections::BTreeMap<String, String>,
    /// Record the targets that carry tool arguments and results (rmcp's message logs).
    /// Default false: no payload reaches the log.
    #[serde(default)]
    pub log_payloads: bool,
    /// Rotate at this size (default 10 MiB).
    #[serde(default = "default_file_bytes")]
    pub max_file_bytes: u64,
    /// Rotated files kept (default 10).
    #[serde(default = "default_keep")]
    pub keep_files: usize,
    /// Longest string value before it is cut (default 500).
    #[serde(default = "default_field")]
    pub max_field_bytes: usize,
}

fn yes() -> bool {
    true
}
fn default_level() -> String {
    "info".into()
}
fn default_file_bytes() -> u64 {
    10 * 1024 * 1024
}
fn default_keep() -> usize {
    10
}
fn default_field() -> usize {
    500
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: None,
            level: default_level(),
            targets: std::collections::BTreeMap::new(),
            log_payloads: false,
            max_file_bytes: default_file_bytes(),
            keep_files: default_keep(),
            max_field_bytes: default_field(),
        }
    }
}

/// Breaker settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BreakerSettings {
    /// Failures in a row that open a tier's breaker (default 5).
    #[serde(default = "five")]
    pub consecutive_failures: u32,
    /// The first cooldown (default 1 s); doubles with each ejection.
    #[serde(default = "default_cooldown", with = "crate::duration")]
    pub cooldown: Duration,
}

fn five() -> u32 {
    5
}
fn default_cooldown() -> Duration {
    Duration::from_secs(1)
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: five(),
            cooldown: default_cooldown(),
        }
    }
}

/// A config that is valid TOML but does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
#[non_exhaustive]
pub struct ConfigProblem {
    /// Where: a key path such as `tiers[1].workers` or `routes.exact.fib`.
    pub location: String,
    /// What is wrong.
    pub message: String,
}

impl Config {
    /// What is allowed but probably not meant, one sentence each with what it means.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for tier in &self.tiers {
            if self.timeout < tier.call_timeout {
                warnings.push(format!(
                    "tier {:?}: call_timeout ({}) is longer than the chain's timeout ({}): a call \
                     that hangs on this tier is given up by the chain first, cancelled at the \
                     worker, and the worker is killed only if it has not stopped within \
                     cancel_grace ({}); the tier's call_timeout never applies",
                    tier.name,
                    crate::duration::format(&tier.call_timeout),
                    crate::duration::format(&self.timeout),
                    crate::duration::format(&tier.cancel_grace),
                ));
            }
        }
        warnings
    }

    /// Parses TOML (relative paths stay relative to the working directory).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] with the line and column of a syntax or type error, or every
    /// semantic problem (unknown tier in a route, duplicate names, …).
    pub fn from_toml(text: &str) -> Result<Self, crate::Error> {
        let config: Config = toml::from_str(text).map_err(|e| crate::Error::Config {
            problems: vec![ConfigProblem {
                location: location_of(text, e.span()),
                message: e.message().to_string(),
            }],
        })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(crate::Error::Config { problems })
        }
    }

    /// Reads a TOML file; relative paths in it are resolved against its directory.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Io`] when the file cannot be read, else as [`from_toml`](Self::from_toml).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, crate::Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| crate::Error::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        let mut config = Self::from_toml(&text).map_err(|e| e.in_file(path))?;
        if let Some(dir) = path.parent() {
            config.resolve_paths(dir);
        }
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for tier in &mut self.tiers {
            if let WorkersConfig::Python(script) = &mut tier.workers {
                resolve(script);
            }
            if let Some(cwd) = &mut tier.cwd {
                resolve(cwd);
            }
        }
        if let Some(path) = &mut self.telemetry.path {
            resolve(path);
        }
    }
}

impl crate::Error {
    /// The same error, each config problem's location prefixed with the file it is in.
    pub(crate) fn in_file(self, path: &Path) -> Self {
        match self {
            crate::Error::Config { problems } => crate::Error::Config {
                problems: problems
                    .into_iter()
                    .map(|p| ConfigProblem {
                        location: format!("{}:{}", path.display(), p.location),
                        message: p.message,
                    })
                    .collect(),
            },
            other => other,
        }
    }
}

/// "line L, column C" of a byte span.
fn location_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return "config".into();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map(|i| before.len() - i)
        .unwrap_or(before.len() + 1);
    format!("line {line}, column {column}")
}

/// A level name (`error` … `trace`, any case).
pub(crate) fn parse_level(text: &str) -> Option<tracing::Level> {
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::expand_env;

    #[test]
    fn references_expand_from_the_environment_with_defaults() {
        let home = std::env::var("HOME").unwrap_or_default();
        assert_eq!(expand_env("a ${HOME} b"), Ok(format!("a {home} b")));
        assert_eq!(
            expand_env("${FLOWBALANCER_SURELY_UNSET_VAR:-fallback}/x"),
            Ok("fallback/x".to_string())
        );
        assert_eq!(
            expand_env("${HOME:-unused}"),
            Ok(home.clone()),
            "a set variable wins over its default"
        );
        assert_eq!(
            expand_env("Bearer ${FLOWBALANCER_SURELY_UNSET_VAR}"),
            Err("FLOWBALANCER_SURELY_UNSET_VAR".to_string())
        );
        assert_eq!(
            expand_env("no reference, ${unclosed"),
            Ok("no reference, ${unclosed".to_string())
        );
        assert_eq!(expand_env("${env:HOME}"), Ok(home), "VS Code's form");
        assert_eq!(expand_env("${input:token}"), Err("input:token".to_string()));
        assert!(super::unset_variable("input:token").contains("VS Code input"));
    }
}
