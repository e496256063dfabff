//! How a balancer starts its tiers: each tier's config turned into a pool (process, MCP or
//! built-in workers) or a NATS tier, and the checks made on what they serve.

use std::sync::Arc;

use flowbalancer_pool::{Pool, PoolConfig, ProcessFactory, ProcessSpec, StartMode, WorkerFactory};

use super::McpTier;
use crate::config::{Config, TierConfig, WorkersConfig};
use crate::{Error, builtin};

pub(super) enum TierPool {
    Mcp(
        Pool<flowbalancer_mcp::McpWorker>,
        Arc<flowbalancer_mcp::Catalog>,
    ),
    Process(Pool<flowbalancer_pool::ProcessWorker>),
    Builtin(Pool<flowbalancer_pool::FnWorker>),
    Nats(flowbalancer_nats::NatsTier),
}

pub(super) fn add_tier(
    router: flowbalancer_tiers::RouterBuilder,
    tier: &TierConfig,
    pool: impl flowbalancer_tiers::Tier,
) -> flowbalancer_tiers::RouterBuilder {
    match &tier.methods {
        Some(methods) => router.tier_with_methods(&tier.name, pool, methods.clone()),
        None => router.tier(&tier.name, pool),
    }
}

fn pool_config(tier: &TierConfig, config: &Config) -> PoolConfig {
    let mut pool = PoolConfig::default();
    pool.name = tier.name.clone();
    pool.size = tier.size;
    pool.max_overflow = tier.max_overflow;
    pool.start = StartMode::Eager;
    pool.queue_capacity = tier.queue_capacity;
    pool.queue_timeout = tier.queue_timeout;
    pool.call_timeout = tier.call_timeout;
    pool.cancel_grace = tier.cancel_grace;
    pool.max_in_flight = tier.max_in_flight();
    pool.health_interval = Some(tier.health_interval);
    pool.health_failures_before_removal = tier.health_failures;
    pool.recycle_after_calls = tier.recycle_after_calls;
    pool.recycle_after_age = tier.recycle_after_age;
    pool.affinity = match tier.isolation {
        crate::config::Isolation::Session => flowbalancer_pool::AffinityMode::Exclusive,
        _ => config.sessions.affinity,
    };
    pool.session_ttl = config.sessions.ttl;
    pool
}

async fn build<F: WorkerFactory>(
    factory: F,
    tier: &TierConfig,
    config: &Config,
    scope: &flowbalancer_lifecycle::ScopeHandle,
) -> Result<Pool<F::Worker>, Error> {
    Ok(Pool::builder(factory)
        .config(pool_config(tier, config))
        .parent_scope(scope.clone())
        .build()
        .await?)
}

pub(super) async fn start_tier(
    tier: TierConfig,
    config: Config,
    scope: flowbalancer_lifecycle::ScopeHandle,
) -> Result<TierPool, Error> {
    let (tier, config, scope) = (&tier, &config, &scope);
    let env = expanded(tier, "env", &tier.env)?;
    let env = &env;
    let spec = |mut spec: ProcessSpec| {
        if let Some(cwd) = &tier.cwd {
            spec = spec.cwd(cwd);
        }
        if let Some(allow) = &tier.env_allow {
            spec.env_allow = allow.clone();
        }
        for (key, value) in env {
            spec = spec.env(key, value);
        }
        spec.hello_timeout(tier.hello_timeout())
    };
    match &tier.workers {
        WorkersConfig::Nats(nats) => {
            // A server that is down must not keep the other tiers from serving: the tier is
            // unavailable (the router falls back) until the connection comes up.
            let mut connect = flowbalancer_nats::ConnectConfig::new(&nats.url)
                .name(format!("flowbalancer gateway, tier {}", tier.name))
                .keep_trying(true);
            if let Some(variable) = &nats.token_env {
                connect = connect.token_env(variable);
            }
            if let Some(creds) = &nats.creds {
                connect = connect.creds(creds);
            }
            if let Some(nkey) = &nats.nkey {
                connect = connect.nkey(nkey);
            }
            let remote = nats.tier.clone().unwrap_or_else(|| tier.name.clone());
            let client = flowbalancer_nats::connect(&connect)
                .await
                .map_err(|e| Error::Nats {
                    tier: tier.name.clone(),
                    source: e,
                })?;
            let remote_tier = if nats.durable {
                flowbalancer_nats::NatsTier::durable(
                    client,
                    remote,
                    tier.call_timeout,
                    nats.retries.saturating_add(1),
                )
                .await
            } else {
                flowbalancer_nats::NatsTier::new(client, remote).await
            }
            .map_err(|e| Error::Nats {
                tier: tier.name.clone(),
                source: e,
            })?;
            if remote_tier.instances().is_empty() {
                tracing::warn!(tier = %tier.name, "no NATS host serves this tier yet; calls fall back until one does");
            }
            Ok(TierPool::Nats(remote_tier))
        }
        WorkersConfig::Builtin(tools) => Ok(TierPool::Builtin(
            build(builtin::factory(tools), tier, config, scope).await?,
        )),
        WorkersConfig::Command(argv) => {
            let (program, args) = argv.split_first().ok_or_else(|| Error::Config {
                problems: vec![crate::config::ConfigProblem {
                    location: format!("tier {:?}.workers.command", tier.name),
                    message: "the command is empty".into(),
                }],
            })?;
            let factory =
                ProcessFactory::new(spec(ProcessSpec::new(program, args.iter().cloned())));
            Ok(TierPool::Process(
                build(factory, tier, config, scope).await?,
            ))
        }
        WorkersConfig::Mcp(_) | WorkersConfig::McpUrl(_) => {
            let mut spec = mcp_spec(tier)?.start_timeout(tier.hello_timeout());
            if let Some(cwd) = &tier.cwd {
                spec = spec.cwd(cwd);
            }
            if let Some(allow) = &tier.env_allow {
                spec = spec.env_allow(allow.iter().cloned());
            }
            for (key, value) in env {
                spec = spec.env(key, value);
            }
            if let Some(prefix) = &tier.tool_prefix {
                spec = spec.tool_prefix(prefix);
            }
            if let Some(tools) = &tier.tools {
                spec = spec.tool_filter(flowbalancer_mcp::ToolFilter::new(
                    tools.allow.clone(),
                    tools.deny.clone(),
                ));
            }
            let factory = flowbalancer_mcp::McpFactory::new(spec);
            let catalog = factory.catalog();
            let mut pool_config = pool_config(tier, config);
            // One broken server must not keep the others from serving.
            pool_config.start = StartMode::EagerKeepTrying;
            // Nor keep clients waiting: a server still starting comes up in the background.
            pool_config.start_wait = Some(config.start_wait);
            let pool = Pool::builder(factory)
                .config(pool_config)
                .parent_scope(scope.clone())
                .build()
                .await?;
            Ok(TierPool::Mcp(pool, catalog))
        }
        WorkersConfig::Python(script) => {
            let factory = ProcessFactory::new(spec(ProcessSpec::python(
                script,
                tier.python_args.clone(),
                Vec::<String>::new(),
            )));
            Ok(TierPool::Process(
                build(factory, tier, config, scope).await?,
            ))
        }
    }
}

/// Warns about resources and prompts offered by more than one MCP tier: the first tier in
/// config order serves them, the others' copies are unreachable.
pub(super) fn warn_duplicates(tiers: &[McpTier]) {
    let mut seen: std::collections::HashMap<(&'static str, String), &str> =
        std::collections::HashMap::new();
    let listings: Vec<(&str, flowbalancer_mcp::Listing)> = tiers
        .iter()
        .map(|t| (t.name.as_str(), t.catalog.listing()))
        .collect();
    for (tier, listing) in &listings {
        let keys = listing
            .resources
            .iter()
            .filter_map(|r| r.get("uri").and_then(|u| u.as_str()))
            .map(|uri| ("resource", uri.to_string()))
            .chain(
                listing
                    .prompts
                    .iter()
                    .filter_map(|p| p.get("name").and_then(|n| n.as_str()))
                    .map(|name| ("prompt", name.to_string())),
            );
        for key in keys {
            match seen.get(&key) {
                Some(first) => tracing::warn!(
                    kind = key.0,
                    name = %key.1,
                    served_by = first,
                    hidden_in = tier,
                    "a resource or prompt is offered by two MCP tiers; the first tier in order serves it"
                ),
                None => {
                    seen.insert(key, *tier);
                }
            }
        }
    }
}

/// The tier's `table` (`env` or `headers`), with `${NAME}` in each value taken from our
/// environment; the first value naming an unset variable stops the start.
fn expanded(
    tier: &TierConfig,
    table: &str,
    values: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, Error> {
    values
        .iter()
        .map(|(key, value)| {
            let value = crate::config::expand_env(value).map_err(|missing| Error::Config {
                problems: vec![crate::config::ConfigProblem {
                    location: format!("tier {:?}.{table}.{key}", tier.name),
                    message: crate::config::unset_variable(&missing),
                }],
            })?;
            Ok((key.clone(), value))
        })
        .collect()
}

/// The server an MCP tier runs: a command, or an HTTP endpoint with its headers (`${NAME}`
/// expanded from the environment).
fn mcp_spec(tier: &TierConfig) -> Result<flowbalancer_mcp::McpServerSpec, Error> {
    let problem = |location: String, message: String| Error::Config {
        problems: vec![crate::config::ConfigProblem { location, message }],
    };
    match &tier.workers {
        WorkersConfig::McpUrl(url) => {
            let mut spec = flowbalancer_mcp::McpServerSpec::http(&tier.name, url);
            for (name, value) in expanded(tier, "headers", &tier.headers)? {
                spec = spec.header(name, value);
            }
            Ok(spec)
        }
        WorkersConfig::Mcp(argv) => {
            let (program, args) = argv.split_first().ok_or_else(|| {
                problem(
                    format!("tier {:?}.workers.mcp", tier.name),
                    "the command is empty".into(),
                )
            })?;
            Ok(flowbalancer_mcp::McpServerSpec::new(
                &tier.name,
                program,
                args.iter().cloned(),
            ))
        }
        _ => Err(problem(
            format!("tier {:?}.workers", tier.name),
            "not an MCP tier".into(),
        )),
    }
}
