//! `flowbalancer`: serve tiered worker pools over MCP, make one call, load-test, check a config.
//!
//! Logs go to stderr (and the event log); stdout carries only MCP messages (`serve`) or
//! results (`call`, `bench --json`).

mod assets;
mod bench;
mod gateway;
mod http;
mod metrics;
mod serve;
mod worker_host;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use flowbalancer::tiers::CallOptions;
use flowbalancer::{Balancer, Config};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use worker_host::{Credentials, worker_host};

#[derive(Parser)]
#[command(
    name = "flowbalancer",
    version,
    about = "Tiered worker pools behind an MCP server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the workers' tools as an MCP server on stdio, or over streamable HTTP with --http
    /// (the bundled workers without --config).
    Serve {
        /// The config file (TOML); see docs/configuration.md.
        #[arg(long)]
        config: Option<PathBuf>,
        /// An `{"mcpServers": {...}}` JSON file (Claude Desktop, Cursor): each server
        /// becomes an MCP tier of its own.
        #[arg(long)]
        mcp_config: Option<PathBuf>,
        /// Serve MCP over streamable HTTP on this address (for example 127.0.0.1:8080)
        /// instead of stdio; many clients share the pools. Overrides `[http] bind`.
        #[arg(long, value_parser = flowbalancer::HttpConfig::parse_bind)]
        http: Option<std::net::SocketAddr>,
        /// Export Prometheus metrics at http://ADDR/metrics (for example 127.0.0.1:9464).
        /// The HTTP front end also serves them at /metrics.
        #[arg(long, value_name = "ADDR", value_parser = flowbalancer::HttpConfig::parse_bind)]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Make one call and print its result as JSON.
    Call {
        /// The tool (method).
        tool: String,
        /// Its arguments, as a JSON object.
        #[arg(default_value = "{}")]
        args: String,
        /// The config file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// An `{"mcpServers": {...}}` JSON file; each server becomes an MCP tier.
        #[arg(long)]
        mcp_config: Option<PathBuf>,
        /// A session id (affinity).
        #[arg(long)]
        session: Option<String>,
        /// The deadline of the call (for example 5s).
        #[arg(long, value_parser = parse_positive_duration)]
        timeout: Option<Duration>,
    },
    /// Drive the balancer in-process and report throughput and latency per tier.
    Bench {
        /// The config file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// How long to run (for example 10s).
        #[arg(long, default_value = "5s", value_parser = parse_positive_duration)]
        duration: Duration,
        /// Concurrent callers (at least 1).
        #[arg(long, default_value_t = 32, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        concurrency: usize,
        /// The tool to call.
        #[arg(long, default_value = "echo")]
        tool: String,
        /// Its arguments, as a JSON object.
        #[arg(long, default_value = r#"{"text": "hello"}"#)]
        args: String,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Validate a config and explain every problem with its location, including programs
    /// and scripts missing on this machine.
    Check {
        /// The config file (TOML).
        #[arg(value_name = "CONFIG", conflicts_with = "config_option")]
        config: Option<PathBuf>,
        /// The config file, given as the other commands take it.
        #[arg(long = "config", value_name = "CONFIG")]
        config_option: Option<PathBuf>,
        /// An `{"mcpServers": {...}}` JSON file to check too (or alone).
        #[arg(long)]
        mcp_config: Option<PathBuf>,
    },
    /// Serve this machine's pools to gateways on other machines, over NATS: each tier of the
    /// config (or the one `--tier` names) becomes the NATS service `flowbalancer-<tier>`.
    /// SIGTERM or SIGINT drains (no new calls, calls in flight finish).
    Worker {
        /// The NATS server, for example nats://127.0.0.1:4222 (tls://… for TLS).
        #[arg(long, value_name = "URL")]
        nats: String,
        /// The config file (TOML) of the local pools; without one, the bundled workers.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Serve only this tier name (calls go through the local router, as with `call`).
        #[arg(long, value_name = "NAME")]
        tier: Option<String>,
        /// An environment variable holding the NATS server's token.
        #[arg(long, value_name = "VAR")]
        token_env: Option<String>,
        /// A NATS credentials file (.creds).
        #[arg(long, value_name = "FILE")]
        creds: Option<PathBuf>,
        /// A file holding an nkey seed.
        #[arg(long, value_name = "FILE")]
        nkey: Option<PathBuf>,
        /// Also take the tiers' durable jobs (JetStream work queues made by gateways whose
        /// tier says `durable = true`).
        #[arg(long)]
        durable: bool,
    },
    /// Summarise tool output (ruff, flake8, mypy, tsc, eslint, pytest, cargo, a Python
    /// traceback): what failed, how often, and what to run next.
    Analyze {
        /// The file holding the output; `-` or nothing reads standard input.
        #[arg(default_value = "-")]
        file: PathBuf,
        /// Print the analysis as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    flowbalancer::duration::parse(text)
}

/// A duration where zero would make the command do nothing (a deadline already past, a run
/// of no time).
fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("must be more than zero".to_string()),
        duration => Ok(duration),
    }
}

/// Logs to stderr; the event log joins once the balancer has started it.
///
/// By default stderr gets warnings and errors, except rmcp's warnings: rmcp logs every error
/// answer it sends (with the error's data, which a server may fill with the call's arguments)
/// and every unexpected message it receives (whole) at WARN. Those reach stderr only when
/// `FLOWBALANCER_LOG` asks for a level, as the event log leaves out rmcp unless
/// `log_payloads` is set.
fn init_logging() -> tracing_subscriber::reload::Handle<
    Option<flowbalancer::telemetry::TelemetryLayer>,
    tracing_subscriber::Registry,
> {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let level = std::env::var("FLOWBALANCER_LOG")
        .ok()
        .and_then(|l| l.parse::<LevelFilter>().ok());
    let filter = match level {
        Some(level) => Targets::new().with_default(level),
        None => Targets::new()
            .with_default(LevelFilter::WARN)
            .with_target("rmcp", LevelFilter::ERROR),
    };
    let (telemetry, handle) = tracing_subscriber::reload::Layer::new(None);
    let _ = tracing_subscriber::registry()
        .with(telemetry)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .try_init();
    handle
}

use tracing_subscriber::Layer as _;

/// The config from `--config`, or the embedded default (written into `scratch`) with a note
/// for stderr saying what it serves.
fn load_config(
    path: Option<&PathBuf>,
    mcp_config: Option<&PathBuf>,
    scratch: &std::path::Path,
) -> Result<(Config, Option<String>), String> {
    let imported = match mcp_config {
        Some(file) => Some(Config::tiers_from_mcp_servers_file(file).map_err(|e| e.to_string())?),
        None => None,
    };
    let (mut config, note) = match (path, &imported) {
        (Some(path), _) => (Config::from_file(path).map_err(|e| e.to_string())?, None),
        (None, Some(_)) => (Config::with_tiers(Vec::new()), None),
        (None, None) => {
            let (config, note) = assets::default_config(scratch).map_err(|e| e.to_string())?;
            (config, Some(note))
        }
    };
    if let Some(tiers) = imported {
        config.tiers.extend(tiers);
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(flowbalancer::Error::Config { problems }.to_string());
        }
    }
    Ok((config, note))
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("stop signal received: draining");
}

/// `flowbalancer check`: every problem of the config and the imported servers at once.
fn check(config: Option<&PathBuf>, mcp_config: Option<&PathBuf>) -> ExitCode {
    let mut problems: Vec<String> = Vec::new();
    let mut tiers = Vec::new();
    let mut merged = match config {
        Some(path) => match Config::from_file(path) {
            Ok(config) => Some(config),
            Err(error) => {
                problems.push(error.to_string());
                None
            }
        },
        None => Some(Config::with_tiers(Vec::new())),
    };
    if let Some(file) = mcp_config {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let (imported, found) = Config::parse_mcp_servers(&text);
                tiers = imported;
                problems.extend(found.iter().map(|p| format!("{}:{p}", file.display())));
            }
            Err(error) => problems.push(format!("reading {}: {error}", file.display())),
        }
    }
    if config.is_none() && mcp_config.is_none() {
        eprintln!("flowbalancer check: give a config file, --mcp-config FILE, or both");
        return ExitCode::from(2);
    }
    if let Some(config) = &mut merged {
        config.tiers.extend(tiers);
        if mcp_config.is_some() && !config.tiers.is_empty() {
            problems.extend(config.problems().iter().map(ToString::to_string));
        }
        problems.extend(
            config
                .environment_problems()
                .iter()
                .map(ToString::to_string),
        );
        for warning in config.warnings() {
            eprintln!("warning: {warning}");
        }
    }
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("{problem}");
        }
        return ExitCode::from(1);
    }
    if let Some(config) = merged {
        let names: Vec<&str> = config.tiers.iter().map(|t| t.name.as_str()).collect();
        println!("ok: {} tier(s): {}", names.len(), names.join(" → "));
    }
    ExitCode::SUCCESS
}

/// Opens the per-user run registry (see `flowbalancer_lifecycle::RunRegistry`).
fn open_run_registry() -> Option<flowbalancer::lifecycle::RunRegistry> {
    let dir = flowbalancer::lifecycle::RunRegistry::default_dir()?;
    match flowbalancer::lifecycle::RunRegistry::open(&dir) {
        Ok((registry, _swept)) => Some(registry),
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot record this run; a crash may leave workers behind");
            None
        }
    }
}

/// Starts the balancer of a one-shot command (`call`, `bench`).
async fn start(
    config: Option<&PathBuf>,
    mcp_config: Option<&PathBuf>,
    scratch: &std::path::Path,
    logs: &LogHandle,
) -> Result<Arc<Balancer>, String> {
    let (mut config, note) = load_config(config, mcp_config, scratch)?;
    // `call` and `bench` need their one tool: they wait for every server's first start
    // (within its hello_timeout) instead of serving the others meanwhile.
    config.start_wait = Duration::MAX;
    start_with(config, note, logs).await
}

/// Starts the balancer of a loaded config and points the log at its telemetry.
async fn start_with(
    config: Config,
    note: Option<String>,
    logs: &LogHandle,
) -> Result<Arc<Balancer>, String> {
    let balancer = Balancer::from_config(config)
        .await
        .map_err(|e| format!("cannot start: {e}"))?;
    if let Some(note) = note {
        match balancer.telemetry() {
            Some(telemetry) => eprintln!("{note}; events in {}", telemetry.path().display()),
            None => eprintln!("{note}"),
        }
    }
    if let Some(layer) = balancer.telemetry_layer() {
        let _ = logs.reload(Some(layer));
    }
    Ok(Arc::new(balancer))
}

type LogHandle = tracing_subscriber::reload::Handle<
    Option<flowbalancer::telemetry::TelemetryLayer>,
    tracing_subscriber::Registry,
>;

fn parse_args(text: &str) -> Result<serde_json::Value, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("the arguments are not JSON: {e}"))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err("the arguments must be a JSON object".into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("flowbalancer: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Worker processes are gone by now; do not wait for stray blocking reads of stdin.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("flowbalancer: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    let logs = init_logging();
    // Kill what a run that died without cleaning up (SIGKILL, OOM) left behind, and record
    // this run so that the next one can do the same for it. Not fatal when it cannot.
    // `analyze` only reads text: it starts nothing and has nothing to record.
    let run_record = (!matches!(cli.command, Command::Analyze { .. })).then(open_run_registry);
    let mut scratch = tempfile::Builder::new();
    scratch.prefix("flowbalancer-");
    #[cfg(unix)]
    {
        // Private: what runs from here (the bundled workers) is only ours to read.
        use std::os::unix::fs::PermissionsExt;
        scratch.permissions(std::fs::Permissions::from_mode(0o700));
    }
    let scratch = scratch
        .tempdir()
        .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    // Removed by the `TempDir` on the way out; if this run is killed, by the next run.
    if let Some(Some(registry)) = &run_record
        && let Err(error) = registry.record_scratch(scratch.path())
    {
        tracing::warn!(%error, "cannot record the scratch directory; a crash may leave it behind");
    }
    match cli.command {
        Command::Serve {
            config,
            mcp_config,
            http,
            metrics,
        } => {
            let (config, note) = load_config(config.as_ref(), mcp_config.as_ref(), scratch.path())?;
            let bind = match (http, &config.http.bind) {
                (Some(address), _) => Some(address),
                (None, Some(text)) => Some(
                    flowbalancer::HttpConfig::parse_bind(text)
                        .map_err(|e| format!("http.bind: {e}"))?,
                ),
                (None, None) => None,
            };
            // The recorder goes in before the pools are built: they register their metrics
            // then. Only when someone can read them (histograms are kept until exported).
            let exporter = if metrics.is_some() || bind.is_some() {
                Some(metrics::install()?)
            } else {
                None
            };
            if let (Some(address), Some(handle)) = (metrics, &exporter) {
                let local = metrics::serve(handle.clone(), address).await?;
                eprintln!("flowbalancer: Prometheus metrics at http://{local}/metrics");
            }
            let balancer = start_with(config, note, &logs).await?;
            let served = match bind {
                Some(bind) => {
                    http::serve_http(Arc::clone(&balancer), bind, exporter, stop_signal()).await
                }
                None => serve::serve(Arc::clone(&balancer)).await,
            };
            balancer.shutdown().await;
            served.map(|()| ExitCode::SUCCESS)
        }
        Command::Call {
            tool,
            args,
            config,
            mcp_config,
            session,
            timeout,
        } => {
            let params = parse_args(&args)?;
            let balancer =
                start(config.as_ref(), mcp_config.as_ref(), scratch.path(), &logs).await?;
            let mut options = CallOptions::default();
            options.session = session;
            options.timeout = timeout;
            let result = balancer.call(&tool, params, options).await;
            balancer.shutdown().await;
            match result {
                Ok(routed) => {
                    let output = serde_json::json!({ "tier": routed.tier, "result": routed.payload().to_json() });
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&output).unwrap_or_default()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    eprintln!("{error}");
                    eprintln!(
                        "{}",
                        serde_json::to_string_pretty(&error.to_json()).unwrap_or_default()
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Bench {
            config,
            duration,
            concurrency,
            tool,
            args,
            json,
        } => {
            let params = parse_args(&args)?;
            let balancer = start(config.as_ref(), None, scratch.path(), &logs).await?;
            let report =
                bench::run(Arc::clone(&balancer), &tool, params, duration, concurrency).await;
            balancer.shutdown().await;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report.to_json()).unwrap_or_default()
                );
            } else {
                eprintln!("{}", report.to_text());
            }
            Ok(if report.errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Worker {
            nats,
            config,
            tier,
            token_env,
            creds,
            nkey,
            durable,
        } => {
            let (config, note) = load_config(config.as_ref(), None, scratch.path())?;
            let balancer = start_with(config, note, &logs).await?;
            let credentials = Credentials {
                token_env,
                creds,
                nkey,
            };
            let served = worker_host(&balancer, &nats, tier, credentials, durable).await;
            balancer.shutdown().await;
            served.map(|()| ExitCode::SUCCESS)
        }
        Command::Analyze { file, json } => analyze(&file, json),
        Command::Check {
            config,
            config_option,
            mcp_config,
        } => Ok(check(
            config.or(config_option).as_ref(),
            mcp_config.as_ref(),
        )),
    }
}

/// `flowbalancer analyze`: the summary of tool output read from `file` (or stdin for `-`).
/// Exits 1 when the output shows a failure, so it can gate a script.
fn analyze(file: &std::path::Path, json: bool) -> Result<ExitCode, String> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
    } else {
        bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    }
    let text = String::from_utf8_lossy(&bytes);
    let analysis = flowbalancer::telemetry::analysis::analyze(&text);
    if json {
        let rendered = serde_json::to_string_pretty(&analysis)
            .map_err(|e| format!("cannot render the analysis: {e}"))?;
        println!("{rendered}");
    } else {
        println!("{}", analysis.headline);
        if let Some(hint) = &analysis.hint {
            println!("next: {hint}");
        }
        for line in &analysis.key_lines {
            println!("  {line}");
        }
    }
    Ok(if analysis.failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
