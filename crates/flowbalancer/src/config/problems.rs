//! What `check` reports: every semantic problem of a config, each with its location.

use super::{Config, ConfigProblem, HttpConfig, WorkersConfig, parse_level};

impl Config {
    /// Every semantic problem, each with its location (empty when the config makes sense).
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut problem =
            |location: String, message: String| problems.push(ConfigProblem { location, message });
        if self.tiers.is_empty() {
            problem("tiers".into(), "at least one tier is needed".into());
        }
        if !self.http.path.starts_with('/') {
            problem(
                "http.path".into(),
                format!("{:?} must start with /", self.http.path),
            );
        }
        if let Some(Err(message)) = self.http.bind.as_deref().map(HttpConfig::parse_bind) {
            problem("http.bind".into(), message);
        }
        if self.http.max_concurrent_requests == 0 || self.http.max_requests_per_session == 0 {
            problem(
                "http".into(),
                "max_concurrent_requests and max_requests_per_session must be at least 1".into(),
            );
        }
        // Zero where zero makes the gateway useless: every call, session or start would fail
        // at once, or a timer would fire without pause.
        if self.timeout.is_zero() {
            problem(
                "timeout".into(),
                "0s: every call would be given up before it starts".into(),
            );
        }
        if self.sessions.ttl.is_zero() {
            problem(
                "sessions.ttl".into(),
                "0s: a session would be forgotten between its calls".into(),
            );
        }
        if self.http.session_ttl.is_zero() {
            problem(
                "http.session_ttl".into(),
                "0s: every HTTP session would be closed as soon as it is made".into(),
            );
        }
        if self.http.header_read_timeout.is_zero() {
            problem(
                "http.header_read_timeout".into(),
                "0s: every connection would be closed before its request".into(),
            );
        }
        if self.http.max_body_bytes == 0 {
            problem(
                "http.max_body_bytes".into(),
                "0: every request would be refused as too large".into(),
            );
        }
        if parse_level(&self.telemetry.level).is_none() {
            problem(
                "telemetry.level".into(),
                format!(
                    "{:?} is not a level (error, warn, info, debug, trace)",
                    self.telemetry.level
                ),
            );
        }
        for (target, level) in &self.telemetry.targets {
            if level != "off" && parse_level(level).is_none() {
                problem(
                    format!("telemetry.targets.{target}"),
                    format!("{level:?} is not a level (off, error, warn, info, debug, trace)"),
                );
            }
        }
        let names: Vec<&str> = self.tiers.iter().map(|t| t.name.as_str()).collect();
        for (i, tier) in self.tiers.iter().enumerate() {
            let at = format!("tiers[{i}]");
            if tier.name.trim().is_empty() {
                problem(format!("{at}.name"), "a tier needs a name".into());
            }
            if names[..i].contains(&tier.name.as_str()) {
                problem(
                    format!("{at}.name"),
                    format!("the name {:?} is used twice", tier.name),
                );
            }
            if tier.size == 0 && tier.max_overflow == 0 {
                problem(
                    format!("{at}.size"),
                    "size 0 with no overflow: the tier could never run a call".into(),
                );
            }
            if tier.max_in_flight_setting == Some(0) {
                problem(format!("{at}.max_in_flight"), "must be at least 1".into());
            }
            if tier.call_timeout.is_zero() {
                problem(
                    format!("{at}.call_timeout"),
                    "0s: every call would time out at once".into(),
                );
            }
            if tier.hello_timeout_setting.is_some_and(|t| t.is_zero()) {
                problem(
                    format!("{at}.hello_timeout"),
                    "0s: no worker could start".into(),
                );
            }
            if tier.health_interval.is_zero() {
                problem(
                    format!("{at}.health_interval"),
                    "0s: idle workers would be pinged without pause".into(),
                );
            }
            if tier.recycle_after_calls == Some(0) {
                problem(
                    format!("{at}.recycle_after_calls"),
                    "must be at least 1 (leave it out to never recycle by calls)".into(),
                );
            }
            if tier.recycle_after_age.is_some_and(|t| t.is_zero()) {
                problem(
                    format!("{at}.recycle_after_age"),
                    "0s: workers would be replaced without pause (leave it out to never recycle by age)".into(),
                );
            }
            match &tier.workers {
                WorkersConfig::Command(argv) if argv.is_empty() => problem(
                    format!("{at}.workers.command"),
                    "the command is empty".into(),
                ),
                WorkersConfig::Mcp(argv) if argv.is_empty() => {
                    problem(format!("{at}.workers.mcp"), "the command is empty".into())
                }
                WorkersConfig::McpUrl(url) if !url.starts_with("http://") => problem(
                    format!("{at}.workers.mcp_url"),
                    format!(
                        "{url:?}: only http:// URLs are served (for https, put a TLS-terminating proxy in front)"
                    ),
                ),
                WorkersConfig::Nats(nats) => {
                    if !(nats.url.starts_with("nats://") || nats.url.starts_with("tls://")) {
                        problem(
                            format!("{at}.workers.nats.url"),
                            format!("{:?}: a NATS URL starts with nats:// or tls://", nats.url),
                        );
                    }
                    let remote = nats.tier.as_deref().unwrap_or(&tier.name);
                    if !flowbalancer_nats::wire::is_valid_tier_name(remote) {
                        problem(
                            format!("{at}.workers.nats.tier"),
                            format!(
                                "{remote:?}: a NATS tier name has only letters, digits, - and _"
                            ),
                        );
                    }
                }
                WorkersConfig::Builtin(tools) => {
                    for tool in tools {
                        if !crate::builtin::NAMES.contains(&tool.as_str()) {
                            problem(
                                format!("{at}.workers.builtin"),
                                format!(
                                    "unknown built-in tool {tool:?} (known: {})",
                                    crate::builtin::NAMES.join(", ")
                                ),
                            );
                        }
                    }
                }
                _ => {}
            }
            if let Some(prefix) = &tier.tool_prefix {
                if !tier.workers.is_mcp() {
                    problem(
                        format!("{at}.tool_prefix"),
                        "only MCP tiers (workers = { mcp = [...] }) take a tool_prefix".into(),
                    );
                } else if prefix.len() > 64
                    || !prefix
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                {
                    problem(
                        format!("{at}.tool_prefix"),
                        format!(
                            "{prefix:?} cannot start an MCP tool name: use at most 64 of A-Z, a-z, 0-9, _, . and -"
                        ),
                    );
                }
            }
            if !tier.headers.is_empty() && !matches!(tier.workers, WorkersConfig::McpUrl(_)) {
                problem(
                    format!("{at}.headers"),
                    "only mcp_url tiers send HTTP headers".into(),
                );
            }
            if tier.tools.is_some() && !tier.workers.is_mcp() {
                problem(
                    format!("{at}.tools"),
                    "only MCP tiers (workers = { mcp = [...] }) take a tools filter".into(),
                );
            }
        }
        let mut check = |location: String, tier: &str| {
            if !names.contains(&tier) {
                problems.push(ConfigProblem {
                    location,
                    message: format!("unknown tier {tier:?} (tiers: {})", names.join(", ")),
                });
            }
        };
        if let Some(default) = &self.routes.default {
            check("routes.default".into(), default);
        }
        for (method, tier) in &self.routes.exact {
            check(format!("routes.exact.{method}"), tier);
        }
        for (prefix, tier) in &self.routes.prefix {
            check(format!("routes.prefix.{prefix:?}"), tier);
        }
        for (method, tiers) in &self.routes.fallback {
            for tier in tiers {
                check(format!("routes.fallback.{method}"), tier);
            }
        }
        problems
    }
}
