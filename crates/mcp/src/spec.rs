//! How to start an MCP server and which of its tools to offer.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use flowbalancer_pool::process::{DEFAULT_ENV_ALLOW, worker_command};

/// The largest message a server may send (a longer line kills the instance): 32 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 32 * 1024 * 1024;

/// Which of a server's tools are offered: `allow` (when given) keeps only those names, then
/// `deny` removes names. Names are the server's own, before any prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolFilter {
    /// Only these tools (none: all).
    pub allow: Option<Vec<String>>,
    /// Never these tools.
    pub deny: Vec<String>,
}

impl ToolFilter {
    /// A filter offering only the tools in `allow` (all when `None`) that are not in `deny`.
    pub fn new(allow: Option<Vec<String>>, deny: Vec<String>) -> Self {
        Self { allow, deny }
    }

    /// Whether the tool named `name` is offered.
    pub fn admits(&self, name: &str) -> bool {
        self.allow
            .as_ref()
            .is_none_or(|allow| allow.iter().any(|a| a == name))
            && !self.deny.iter().any(|d| d == name)
    }
}

/// Whether `name` meets the MCP tool-name rules: 1 to 128 of `[A-Za-z0-9_.-]`.
pub fn is_valid_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// How to start one stdio MCP server: an argv (never run through a shell), its environment
/// and working directory, and what to offer of it.
///
/// ```
/// use flowbalancer_mcp::McpServerSpec;
///
/// let spec = McpServerSpec::new("files", "npx", ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"])
///     .env("NODE_OPTIONS", "--max-old-space-size=256")
///     .tool_prefix("fs_");
/// assert_eq!(spec.program.to_str(), Some("npx"));
///
/// // Printed, it names the variables of `env` and the `headers` but not their values
/// // (they often hold tokens).
/// let remote = McpServerSpec::http("search", "http://127.0.0.1:3000/mcp")
///     .header("Authorization", "Bearer s3cret");
/// let shown = format!("{spec:?} {remote:?}");
/// assert!(shown.contains("NODE_OPTIONS") && shown.contains("Authorization"));
/// assert!(!shown.contains("256") && !shown.contains("s3cret"));
/// ```
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct McpServerSpec {
    /// A name for logs and errors (the tier's name).
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its working directory (default: ours).
    pub cwd: Option<PathBuf>,
    /// Variables copied from our environment when set (default: the pool's
    /// `DEFAULT_ENV_ALLOW`: PATH, HOME, LANG, …).
    pub env_allow: Vec<String>,
    /// Variables set explicitly.
    pub env: Vec<(String, String)>,
    /// How long `initialize` and the first listings may take (default 60 s: `npx -y` may
    /// download the server first).
    pub start_timeout: Duration,
    /// The largest message the server may send (default [`DEFAULT_MAX_MESSAGE`]).
    pub max_message: usize,
    /// Put before each tool name offered (none by default).
    pub tool_prefix: Option<String>,
    /// Which tools are offered.
    pub tool_filter: ToolFilter,
    /// A streamable-HTTP server's endpoint (`http://…/mcp`) instead of a program: each worker
    /// is one client session there.
    pub url: Option<String>,
    /// HTTP headers sent with every request to `url` (an `Authorization`, say).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for McpServerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use flowbalancer_pool::process::RedactedValues;
        f.debug_struct("McpServerSpec")
            .field("name", &self.name)
            .field("program", &self.program)
            .field("args", &self.args)
            .field("cwd", &self.cwd)
            .field("env_allow", &self.env_allow)
            .field("env", &RedactedValues(&self.env))
            .field("start_timeout", &self.start_timeout)
            .field("max_message", &self.max_message)
            .field("tool_prefix", &self.tool_prefix)
            .field("tool_filter", &self.tool_filter)
            .field("url", &self.url)
            .field("headers", &RedactedValues(&self.headers))
            .finish()
    }
}

impl McpServerSpec {
    /// A server named `name` started as `program args…`.
    pub fn new(
        name: impl Into<String>,
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            cwd: None,
            env_allow: DEFAULT_ENV_ALLOW.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            start_timeout: Duration::from_secs(60),
            max_message: DEFAULT_MAX_MESSAGE,
            tool_prefix: None,
            tool_filter: ToolFilter::default(),
            url: None,
            headers: Vec::new(),
        }
    }

    /// A server named `name` reached over streamable HTTP at `url` (`http://host:port/mcp`);
    /// each worker is one client session.
    ///
    /// ```
    /// use flowbalancer_mcp::McpServerSpec;
    ///
    /// let spec = McpServerSpec::http("search", "http://127.0.0.1:9000/mcp")
    ///     .header("Authorization", "Bearer s3cret");
    /// assert_eq!(spec.url.as_deref(), Some("http://127.0.0.1:9000/mcp"));
    /// ```
    pub fn http(name: impl Into<String>, url: impl Into<String>) -> Self {
        let mut spec = Self::new(name, "", Vec::<String>::new());
        spec.url = Some(url.into());
        spec
    }

    /// Adds an HTTP header sent with every request (HTTP servers only).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Replaces the variables copied from our environment.
    pub fn env_allow(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.env_allow = names.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets how long the start (initialize and listings) may take.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Sets the largest message the server may send.
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes.max(1024);
        self
    }

    /// Puts `prefix` before every tool name offered.
    pub fn tool_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.tool_prefix = Some(prefix.into());
        self
    }

    /// Sets which tools are offered.
    pub fn tool_filter(mut self, filter: ToolFilter) -> Self {
        self.tool_filter = filter;
        self
    }

    pub(crate) fn command(&self) -> Command {
        worker_command(
            &self.program,
            &self.args,
            self.cwd.as_deref(),
            &self.env_allow,
            &self.env,
        )
    }

    /// The name a server tool is offered under (prefix added), or `None` when the filter
    /// drops it.
    pub fn offered_name(&self, name: &str) -> Option<String> {
        if !self.tool_filter.admits(name) {
            return None;
        }
        Some(match &self.tool_prefix {
            Some(prefix) => format!("{prefix}{name}"),
            None => name.to_string(),
        })
    }

    /// The server's own name of an offered tool (prefix removed).
    pub fn server_name<'a>(&self, offered: &'a str) -> Option<&'a str> {
        match &self.tool_prefix {
            Some(prefix) => offered.strip_prefix(prefix.as_str()),
            None => Some(offered),
        }
    }
}
