//! Where a tier's workers come from (`workers = { … }`), read with messages that say which
//! form was meant when the table is not one of them.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Where a tier's workers come from.
///
/// In TOML, a table naming one kind: `{ builtin = ["echo"] }`, `{ mcp = ["npx", "-y", "…"] }`,
/// `{ python = "worker.py" }`, `{ command = […] }`, `{ mcp_url = "…" }` or
/// `{ nats = { url = "…" } }`. Anything else is refused with a message that says which form
/// was meant:
///
/// ```
/// let error = flowbalancer::Config::from_toml("[[tiers]]\nname = \"hot\"\nworkers = \"builtin\"\n")
///     .unwrap_err()
///     .to_string();
/// assert!(error.contains(r#"{ builtin = ["echo", "word_count", "sleep", "fib", "pid"] }"#), "{error}");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkersConfig {
    /// A worker process: the argv (never run through a shell).
    Command(Vec<String>),
    /// A Python worker script, run with the interpreter behind `python3`.
    Python(PathBuf),
    /// In-process built-in tools: any of `echo`, `word_count`, `sleep`, `fib`, `pid`.
    Builtin(Vec<String>),
    /// A stdio MCP server: the argv (never run through a shell), for example
    /// `["npx", "-y", "@modelcontextprotocol/server-everything", "stdio"]`. Each worker is one
    /// instance of it, spoken to as an MCP client.
    Mcp(Vec<String>),
    /// A streamable-HTTP MCP server (`http://host:port/mcp`): each worker is one client
    /// session there; `headers` are sent with every request.
    McpUrl(String),
    /// Every host serving a tier over NATS (`flowbalancer worker --nats …`), as this tier.
    Nats(NatsWorkersConfig),
}

/// A remote tier over NATS: `workers = { nats = { url = "nats://host:4222", tier = "warm" } }`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsWorkersConfig {
    /// The NATS server: `nats://host:4222`, or `tls://host:4222` for TLS.
    pub url: String,
    /// The tier name the hosts serve (default: this tier's name).
    #[serde(default)]
    pub tier: Option<String>,
    /// An environment variable holding the server's token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// A NATS credentials file (`.creds`: JWT and nkey seed).
    #[serde(default)]
    pub creds: Option<PathBuf>,
    /// A file holding a bare nkey seed.
    #[serde(default)]
    pub nkey: Option<PathBuf>,
    /// Calls are jobs on a JetStream work queue (long, idempotent jobs): a job whose host dies
    /// is delivered again after the tier's `call_timeout` (hosts keep their jobs alive with
    /// AckProgress while they run). The hosts run `flowbalancer worker --durable`.
    #[serde(default)]
    pub durable: bool,
    /// Durable tiers: deliveries after the first, at most (default 2).
    #[serde(default = "default_nats_retries")]
    pub retries: u32,
}

fn default_nats_retries() -> u32 {
    2
}

impl NatsWorkersConfig {
    /// The hosts of tier `tier` behind the server at `url`.
    pub fn new(url: impl Into<String>, tier: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            tier: Some(tier.into()),
            retries: default_nats_retries(),
            ..Self::default()
        }
    }
}

impl WorkersConfig {
    /// Whether these workers are MCP servers (stdio or HTTP).
    pub fn is_mcp(&self) -> bool {
        matches!(self, WorkersConfig::Mcp(_) | WorkersConfig::McpUrl(_))
    }
}

/// The kinds of worker, with the form each is written in.
const KINDS: [(&str, &str); 6] = [
    ("command", r#"{ command = ["./my-worker", "--flag"] }"#),
    ("python", r#"{ python = "worker.py" }"#),
    (
        "builtin",
        r#"{ builtin = ["echo", "word_count", "sleep", "fib", "pid"] }"#,
    ),
    (
        "mcp",
        r#"{ mcp = ["npx", "-y", "@modelcontextprotocol/server-everything"] }"#,
    ),
    ("mcp_url", r#"{ mcp_url = "http://127.0.0.1:3000/mcp" }"#),
    (
        "nats",
        r#"{ nats = { url = "nats://127.0.0.1:4222", tier = "warm" } }"#,
    ),
];

/// Every form, for a message.
fn every_form() -> String {
    KINDS
        .iter()
        .map(|(_, form)| *form)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The form of `kind`, if it is one.
fn form_of(kind: &str) -> Option<&'static str> {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, form)| *form)
}

impl<'de> Deserialize<'de> for WorkersConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WorkersVisitor)
    }
}

struct WorkersVisitor;

impl<'de> Visitor<'de> for WorkersVisitor {
    type Value = WorkersConfig;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a table naming one kind of worker: {}", every_form())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<WorkersConfig, E> {
        Err(E::custom(match form_of(text) {
            Some(form) => {
                format!("workers = \"{text}\" says the kind but not the workers: write {form}")
            }
            None => format!(
                "workers = \"{text}\" is not a kind of worker; write a table naming one: {}",
                every_form()
            ),
        }))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<WorkersConfig, A::Error> {
        Err(de::Error::custom(
            r#"a list alone does not say what kind of worker it starts: write { command = [...] } for a worker process or { mcp = [...] } for a stdio MCP server"#,
        ))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WorkersConfig, A::Error> {
        let Some(kind) = map.next_key::<String>()? else {
            return Err(de::Error::custom(format!(
                "workers = {{}} names no kind of worker; write one of {}",
                every_form()
            )));
        };
        let workers = match kind.as_str() {
            "command" => WorkersConfig::Command(map.next_value::<Argv>()?.0),
            "python" => WorkersConfig::Python(map.next_value()?),
            "builtin" => WorkersConfig::Builtin(map.next_value()?),
            "mcp" => WorkersConfig::Mcp(map.next_value::<Argv>()?.0),
            "mcp_url" => WorkersConfig::McpUrl(map.next_value()?),
            "nats" => WorkersConfig::Nats(map.next_value()?),
            other => {
                return Err(de::Error::custom(format!(
                    "unknown kind of worker `{other}`; write one of {}",
                    every_form()
                )));
            }
        };
        if let Some(second) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!(
                "workers names two kinds, `{kind}` and `{second}`: a tier's workers are of one kind (declare another tier for the other)"
            )));
        }
        Ok(workers)
    }
}

/// A command line as a list of arguments. A single string is refused with a message: it would
/// need a shell to split, and workers never run through one.
struct Argv(Vec<String>);

impl<'de> Deserialize<'de> for Argv {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgvVisitor;
        impl<'de> Visitor<'de> for ArgvVisitor {
            type Value = Argv;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"the command as a list of arguments, for example ["npx", "-y", "some-server"]"#)
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Argv, E> {
                let split: Vec<String> =
                    text.split_whitespace().map(|w| format!("{w:?}")).collect();
                Err(E::custom(format!(
                    "the command must be a list of arguments (it never runs through a shell): write [{}]",
                    split.join(", ")
                )))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Argv, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    argv.push(arg);
                }
                Ok(Argv(argv))
            }
        }
        deserializer.deserialize_any(ArgvVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message for `workers = <value>`.
    fn refusal(value: &str) -> String {
        crate::Config::from_toml(&format!("[[tiers]]\nname = \"hot\"\nworkers = {value}\n"))
            .expect_err(value)
            .to_string()
    }

    #[test]
    fn every_kind_reads() {
        let read = |value: &str| {
            let config =
                crate::Config::from_toml(&format!("[[tiers]]\nname = \"t\"\nworkers = {value}\n"));
            config.map(|c| c.tiers[0].workers.clone())
        };
        assert_eq!(
            read(r#"{ builtin = ["echo"] }"#).unwrap(),
            WorkersConfig::Builtin(vec!["echo".into()])
        );
        assert_eq!(
            read(r#"{ mcp = ["npx", "-y", "s"] }"#).unwrap(),
            WorkersConfig::Mcp(vec!["npx".into(), "-y".into(), "s".into()])
        );
        assert_eq!(
            read(r#"{ command = ["./w"] }"#).unwrap(),
            WorkersConfig::Command(vec!["./w".into()])
        );
        assert_eq!(
            read(r#"{ mcp_url = "http://127.0.0.1:1/mcp" }"#).unwrap(),
            WorkersConfig::McpUrl("http://127.0.0.1:1/mcp".into())
        );
        assert!(matches!(
            read(r#"{ nats = { url = "nats://127.0.0.1:4222", tier = "warm" } }"#).unwrap(),
            WorkersConfig::Nats(n) if n.tier.as_deref() == Some("warm") && n.retries == 2
        ));
        assert!(matches!(
            read(r#"{ python = "w.py" }"#).unwrap(),
            WorkersConfig::Python(p) if p.ends_with("w.py")
        ));
    }

    #[test]
    fn each_wrong_form_is_told_what_to_write() {
        let cases = [
            (r#""builtin""#, r#"write { builtin = ["echo""#),
            (r#""mcp""#, r#"write { mcp = ["npx""#),
            (r#""echo""#, "is not a kind of worker"),
            (
                r#"["python3", "w.py"]"#,
                "{ command = [...] } for a worker process",
            ),
            ("{}", "names no kind of worker"),
            ("{ foo = 1 }", "unknown kind of worker `foo`"),
            (
                r#"{ builtin = ["echo"], python = "w.py" }"#,
                "two kinds, `builtin` and `python`",
            ),
            (
                r#"{ mcp = "npx -y some-server" }"#,
                r#"write ["npx", "-y", "some-server"]"#,
            ),
            (r#"{ command = "./w --x" }"#, r#"write ["./w", "--x"]"#),
            (
                r#"{ nats = { url = "nats://h:1", bogus = 1 } }"#,
                "unknown field `bogus`",
            ),
        ];
        for (value, wanted) in cases {
            let message = refusal(value);
            assert!(message.contains(wanted), "{value}: {message}");
            // The location is kept: the line of the `workers` key.
            assert!(message.contains("line 3"), "{value}: {message}");
        }
    }

    #[test]
    fn a_config_round_trips_through_toml() {
        let workers = WorkersConfig::Mcp(vec!["npx".into(), "s".into()]);
        let text = toml::to_string(&std::collections::BTreeMap::from([("workers", &workers)]))
            .expect("serialize");
        #[derive(Deserialize)]
        struct Holder {
            workers: WorkersConfig,
        }
        let back: Holder = toml::from_str(&text).expect("deserialize");
        assert_eq!(back.workers, workers);
    }
}
