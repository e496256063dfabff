//! The configs users already have: the `{"mcpServers": {…}}` JSON of Claude Desktop, Cursor
//! and most MCP clients, turned into MCP tiers; and the checks a config can only get on the
//! machine that runs it (is the program there, is the script there).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{Config, ConfigProblem, TierConfig, WorkersConfig};

/// One entry of `mcpServers`.
#[derive(Debug, Deserialize)]
struct ServerEntry {
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<PathBuf>,
    #[serde(default)]
    url: Option<String>,
    /// The transport, when the client writes it: `stdio`, `http` (streamable HTTP) or `sse`
    /// (the older HTTP+SSE transport).
    #[serde(default, rename = "type")]
    transport: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// flowbalancer's own addition: instances kept running (default 1).
    #[serde(default)]
    size: Option<usize>,
    #[serde(default)]
    disabled: bool,
}

/// `{"mcpServers": {…}}`, or VS Code's `{"servers": {…}}` (`.vscode/mcp.json`).
#[derive(Debug, Deserialize)]
struct McpServersFile {
    #[serde(rename = "mcpServers", alias = "servers")]
    mcp_servers: BTreeMap<String, serde_json::Value>,
}

/// What an entry's `type` says about how to reach the server, or why it cannot be served.
fn transport_problem(transport: Option<&str>) -> Option<String> {
    match transport {
        None | Some("stdio" | "http" | "streamable-http" | "streamableHttp" | "streamable_http") => {
            None
        }
        Some("sse") => Some(
            "\"type\": \"sse\" is MCP's older HTTP+SSE transport, which this gateway does not speak; \
             a server that also serves streamable HTTP can be given as \"type\": \"http\" with that URL"
                .to_string(),
        ),
        Some(other) => Some(format!(
            "unknown \"type\": {other:?} (stdio, http or streamable-http)"
        )),
    }
}

impl Config {
    /// A config with these tiers and every other key at its default.
    pub fn with_tiers(tiers: Vec<TierConfig>) -> Self {
        let mut config: Config = toml::from_str("tiers = []").unwrap_or_else(|_| Config {
            name: "flowbalancer".into(),
            timeout: std::time::Duration::from_secs(30),
            start_wait: std::time::Duration::from_secs(10),
            tiers: Vec::new(),
            routes: Default::default(),
            sessions: Default::default(),
            telemetry: Default::default(),
            breaker: Default::default(),
            http: Default::default(),
        });
        config.tiers = tiers;
        config
    }

    /// Reads the `{"mcpServers": {name: {command, args, env}}}` JSON that Claude Desktop,
    /// Cursor and most MCP clients use (or VS Code's `{"servers": {…}}`): each server becomes
    /// an MCP tier named after it, of size 1 (or the entry's `size`); an entry with a `url`
    /// instead of a `command` is a streamable-HTTP server. Entries with `"disabled": true`
    /// are left out.
    ///
    /// ```
    /// let tiers = flowbalancer::Config::tiers_from_mcp_servers(r#"{
    ///     "mcpServers": {
    ///         "time": { "command": "uvx", "args": ["mcp-server-time"], "env": { "TZ": "UTC" } }
    ///     }
    /// }"#)?;
    /// assert_eq!(tiers[0].name, "time");
    /// assert_eq!(tiers[0].size, 1);
    /// # Ok::<(), flowbalancer::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] with every problem at once: JSON that does not parse, an
    /// entry with neither a `command` nor a `url`, a `type` this gateway does not speak
    /// (`sse`, MCP's older HTTP+SSE transport, or one it does not know).
    pub fn tiers_from_mcp_servers(text: &str) -> Result<Vec<TierConfig>, crate::Error> {
        let (tiers, problems) = Self::parse_mcp_servers(text);
        if problems.is_empty() {
            Ok(tiers)
        } else {
            Err(crate::Error::Config { problems })
        }
    }

    /// As [`tiers_from_mcp_servers`](Self::tiers_from_mcp_servers), but returns the tiers
    /// of the good entries along with the problems of the others (for `check`, which
    /// reports everything at once).
    pub fn parse_mcp_servers(text: &str) -> (Vec<TierConfig>, Vec<ConfigProblem>) {
        let file: McpServersFile = match serde_json::from_str(text) {
            Ok(file) => file,
            Err(e) => {
                return (
                    Vec::new(),
                    vec![ConfigProblem {
                        location: format!("line {}, column {}", e.line(), e.column()),
                        message: format!("not an mcpServers file: {e}"),
                    }],
                );
            }
        };
        let mut tiers = Vec::new();
        let mut problems = Vec::new();
        for (name, value) in file.mcp_servers {
            let location = format!("mcpServers.{name}");
            let entry: ServerEntry = match serde_json::from_value(value) {
                Ok(entry) => entry,
                Err(e) => {
                    problems.push(ConfigProblem {
                        location,
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            if entry.disabled {
                continue;
            }
            if let Some(message) = transport_problem(entry.transport.as_deref()) {
                problems.push(ConfigProblem { location, message });
                continue;
            }
            let Some(command) = entry.command.filter(|c| !c.trim().is_empty()) else {
                match entry.url {
                    Some(url) => {
                        let mut tier = TierConfig::new(name, WorkersConfig::McpUrl(url));
                        tier.size = entry.size.unwrap_or(1);
                        tier.headers = entry.headers;
                        tiers.push(tier);
                    }
                    None => problems.push(ConfigProblem {
                        location,
                        message: "neither a \"command\" nor a \"url\"".to_string(),
                    }),
                }
                continue;
            };
            let mut argv = vec![command];
            argv.extend(entry.args);
            let mut tier = TierConfig::new(name, WorkersConfig::Mcp(argv));
            tier.size = entry.size.unwrap_or(1);
            tier.env = entry.env;
            tier.cwd = entry.cwd;
            tiers.push(tier);
        }
        if tiers.is_empty() && problems.is_empty() {
            problems.push(ConfigProblem {
                location: "mcpServers".into(),
                message: "no server to serve: the file lists none, or every one is disabled".into(),
            });
        }
        (tiers, problems)
    }

    /// Reads an `mcpServers` JSON file; see
    /// [`tiers_from_mcp_servers`](Self::tiers_from_mcp_servers).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Io`] when it cannot be read, else as `tiers_from_mcp_servers`, with
    /// the file's name in each location.
    pub fn tiers_from_mcp_servers_file(path: &Path) -> Result<Vec<TierConfig>, crate::Error> {
        let text = std::fs::read_to_string(path).map_err(|source| crate::Error::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        Self::tiers_from_mcp_servers(&text).map_err(|e| e.in_file(path))
    }

    /// What would fail on this machine: a worker program that is not on `PATH` or not
    /// executable, a script that is missing, a working directory that does not exist, an
    /// environment variable that an `env` or `headers` value names and that is not set. Every
    /// problem at once, each with its tier.
    pub fn environment_problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        for (i, tier) in self.tiers.iter().enumerate() {
            let at = format!("tiers[{i}] ({})", tier.name);
            let cwd = tier.cwd.as_deref();
            if let Some(dir) = cwd
                && !dir.is_dir()
            {
                problems.push(ConfigProblem {
                    location: format!("{at}.cwd"),
                    message: format!("{} is not a directory", dir.display()),
                });
            }
            let references = [("env", &tier.env), ("headers", &tier.headers)];
            for (table, values) in references {
                for (name, value) in values {
                    if let Err(missing) = crate::config::expand_env(value) {
                        problems.push(ConfigProblem {
                            location: format!("{at}.{table}.{name}"),
                            message: crate::config::unset_variable(&missing),
                        });
                    }
                }
            }
            let path_var = tier
                .env
                .get("PATH")
                .and_then(|path| crate::config::expand_env(path).ok())
                .or_else(|| std::env::var("PATH").ok())
                .unwrap_or_default();
            let (key, argv): (&str, Vec<String>) = match &tier.workers {
                WorkersConfig::Command(argv) => ("workers.command", argv.clone()),
                WorkersConfig::Mcp(argv) => ("workers.mcp", argv.clone()),
                WorkersConfig::Python(script) => {
                    let script = resolve(cwd, script);
                    if !script.is_file() {
                        problems.push(ConfigProblem {
                            location: format!("{at}.workers.python"),
                            message: format!("the script {} does not exist", script.display()),
                        });
                    }
                    continue;
                }
                WorkersConfig::Builtin(_) | WorkersConfig::McpUrl(_) | WorkersConfig::Nats(_) => {
                    continue;
                }
            };
            let Some((program, args)) = argv.split_first() else {
                continue;
            };
            if let Err(message) = find_program(program, cwd, &path_var) {
                problems.push(ConfigProblem {
                    location: format!("{at}.{key}"),
                    message,
                });
            }
            if let Some(script) = script_argument(program, args) {
                let script = resolve(cwd, Path::new(script));
                if !script.is_file() {
                    problems.push(ConfigProblem {
                        location: format!("{at}.{key}"),
                        message: format!("the script {} does not exist", script.display()),
                    });
                }
            }
        }
        problems
    }
}

fn resolve(cwd: Option<&Path>, path: &Path) -> PathBuf {
    match cwd {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds `program` as the worker's `execvp` would: a path as given, a bare name on `PATH`.
fn find_program(program: &str, cwd: Option<&Path>, path_var: &str) -> Result<PathBuf, String> {
    if program.contains('/') {
        let path = resolve(cwd, Path::new(program));
        return if !path.exists() {
            Err(format!("the program {} does not exist", path.display()))
        } else if !is_executable(&path) {
            Err(format!("the program {} is not executable", path.display()))
        } else {
            Ok(path)
        };
    }
    for dir in std::env::split_paths(path_var) {
        let candidate = dir.join(program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(format!("the program {program:?} is not on PATH"))
}

/// The script an interpreter is asked to run (`python x.py`, `node server.js`), if any.
fn script_argument<'a>(program: &str, args: &'a [String]) -> Option<&'a str> {
    let name = Path::new(program).file_name()?.to_str()?;
    let interpreter = ["python", "node", "bun", "deno", "ruby", "perl"]
        .iter()
        .any(|i| name.starts_with(i));
    if !interpreter {
        return None;
    }
    let first = args.iter().find(|a| !a.starts_with('-'))?;
    let scripts = [".py", ".js", ".mjs", ".cjs", ".ts", ".rb", ".pl"];
    scripts
        .iter()
        .any(|ext| first.ends_with(ext))
        .then_some(first.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_no_server_to_serve_says_so() {
        for text in [
            r#"{"mcpServers": {}}"#,
            r#"{"mcpServers": {"off": {"command": "x", "disabled": true}}}"#,
        ] {
            let (tiers, problems) = Config::parse_mcp_servers(text);
            assert!(tiers.is_empty());
            assert_eq!(problems.len(), 1, "{text}: {problems:?}");
            assert!(problems[0].message.contains("no server"), "{problems:?}");
        }
    }

    #[test]
    fn imports_every_server_and_reports_every_problem() {
        let tiers = Config::tiers_from_mcp_servers(
            r#"{"mcpServers": {
                "a": {"command": "npx", "args": ["-y", "pkg"], "env": {"K": "v"}},
                "b": {"command": "uvx", "args": ["x"], "size": 3},
                "off": {"command": "nope", "disabled": true}
            }}"#,
        )
        .expect("valid");
        assert_eq!(tiers.len(), 2);
        assert_eq!(
            tiers[0].workers,
            WorkersConfig::Mcp(vec!["npx".into(), "-y".into(), "pkg".into()])
        );
        assert_eq!(tiers[0].env.get("K").map(String::as_str), Some("v"));
        assert_eq!(tiers[1].size, 3);
        assert_eq!(tiers[0].max_in_flight(), 16);

        let (tiers, problems) = Config::parse_mcp_servers(
            r#"{"mcpServers": {"web": {"url": "http://x/mcp", "headers": {"Authorization": "Bearer ${T}"}}, "empty": {}, "bad": {"command": 5}}}"#,
        );
        assert_eq!(problems.len(), 2, "an HTTP server is a tier: {problems:?}");
        assert_eq!(
            tiers[0].workers,
            WorkersConfig::McpUrl("http://x/mcp".into())
        );
        assert_eq!(
            tiers[0].headers.get("Authorization").map(String::as_str),
            Some("Bearer ${T}")
        );
        let error = Config::tiers_from_mcp_servers("{").expect_err("not JSON");
        assert!(error.to_string().contains("line 1"), "{error}");
    }

    #[test]
    fn reads_the_transport_type_and_vs_code_files() {
        let tiers = Config::tiers_from_mcp_servers(
            r#"{"servers": {
                "local": {"type": "stdio", "command": "npx", "args": ["-y", "pkg"]},
                "web": {"type": "http", "url": "http://127.0.0.1:1/mcp"}
            }, "inputs": []}"#,
        )
        .expect("a VS Code mcp.json");
        assert_eq!(
            tiers.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["local", "web"]
        );
        assert_eq!(
            tiers[1].workers,
            WorkersConfig::McpUrl("http://127.0.0.1:1/mcp".into())
        );
        let (tiers, problems) = Config::parse_mcp_servers(
            r#"{"mcpServers": {
                "old": {"type": "sse", "url": "http://127.0.0.1:1/sse"},
                "odd": {"type": "websocket", "url": "ws://127.0.0.1:1"},
                "fine": {"command": "uvx", "args": ["x"]}
            }}"#,
        );
        assert_eq!(tiers.len(), 1, "{tiers:?}");
        let by_location = |name: &str| {
            problems
                .iter()
                .find(|p| p.location == format!("mcpServers.{name}"))
                .map(|p| p.message.clone())
                .unwrap_or_default()
        };
        assert!(by_location("old").contains("HTTP+SSE"), "{problems:?}");
        assert!(
            by_location("odd").contains("unknown \"type\""),
            "{problems:?}"
        );
    }

    #[test]
    fn names_unset_variables_of_env_and_headers() {
        let (tiers, problems) = Config::parse_mcp_servers(
            r#"{"servers": {
                "local": {"command": "sh", "env": {"KEY": "${FLOWBALANCER_SURELY_UNSET_KEY}", "OK": "${HOME}"}},
                "web": {"url": "http://127.0.0.1:1/mcp", "headers": {"Authorization": "Bearer ${input:token}"}}
            }}"#,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let problems = Config::with_tiers(tiers).environment_problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].location, "tiers[0] (local).env.KEY");
        assert!(
            problems[0]
                .message
                .contains("FLOWBALANCER_SURELY_UNSET_KEY")
        );
        assert_eq!(problems[1].location, "tiers[1] (web).headers.Authorization");
        assert!(
            problems[1].message.contains("VS Code input"),
            "{problems:?}"
        );
    }

    #[test]
    fn finds_missing_programs_and_scripts() {
        let plain = std::env::temp_dir().join(format!("fb-not-executable-{}", std::process::id()));
        std::fs::write(&plain, "not a program").expect("a scratch file");
        let mut config = Config::with_tiers(vec![
            TierConfig::new(
                "a",
                WorkersConfig::Mcp(vec!["surely-not-a-program-xyz".into()]),
            ),
            TierConfig::new(
                "b",
                WorkersConfig::Mcp(vec!["sh".into(), "-c".into(), "true".into()]),
            ),
            TierConfig::new(
                "c",
                WorkersConfig::Mcp(vec!["python3".into(), "/nonexistent/server.py".into()]),
            ),
            TierConfig::new(
                "d",
                WorkersConfig::Command(vec![plain.display().to_string()]),
            ),
        ]);
        config.tiers[1].cwd = Some("/nonexistent-dir".into());
        let problems = config.environment_problems();
        let _ = std::fs::remove_file(&plain);
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|p| p.contains("(a)") && p.contains("not on PATH")),
            "{text:?}"
        );
        assert!(text.iter().any(|p| p.contains("(b).cwd")), "{text:?}");
        assert!(
            text.iter()
                .any(|p| p.contains("(c)") && p.contains("/nonexistent/server.py")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|p| p.contains("(d)") && p.contains("not executable")),
            "{text:?}"
        );
        assert_eq!(problems.len(), 4, "{text:?}");
    }
}
