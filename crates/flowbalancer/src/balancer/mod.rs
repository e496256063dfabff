//! `Balancer`: a config turned into pools, a router, telemetry and a session store, all owned
//! by one lifecycle scope.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flowbalancer_lifecycle::{CloseReport, Limits, Scope};
use flowbalancer_pool::{Pool, PoolStats, ToolSpec, Worker};
use flowbalancer_telemetry::{FileConfig, Telemetry};
use flowbalancer_tiers::{BreakerConfig, CallOptions, RouteError, Routed, Router, TierStats};
use serde::Serialize;

use crate::Error;
use crate::config::Config;
use crate::session::SessionManager;
use tiers::{TierPool, add_tier, start_tier, warn_duplicates};

mod tiers;

/// A pool of any worker type, for stats and shutdown.
trait ManagedPool: Send + Sync {
    fn stats(&self) -> PoolStats;
    fn readiness(&self) -> Result<(), String>;
    fn end_session(&self, session: &str) -> bool;
    fn shutdown(&self) -> Pin<Box<dyn Future<Output = CloseReport> + Send + '_>>;
}

impl<W: Worker> ManagedPool for Pool<W> {
    fn stats(&self) -> PoolStats {
        Pool::stats(self)
    }
    fn end_session(&self, session: &str) -> bool {
        Pool::end_session(self, session)
    }
    fn readiness(&self) -> Result<(), String> {
        if self.has_live_worker() {
            Ok(())
        } else {
            Err(self.last_start_error().unwrap_or_else(|| {
                if self.stats().workers.initializing > 0 {
                    "its first worker is still starting".into()
                } else {
                    "no worker is running yet".into()
                }
            }))
        }
    }
    fn shutdown(&self) -> Pin<Box<dyn Future<Output = CloseReport> + Send + '_>> {
        Box::pin(Pool::shutdown(self))
    }
}

/// Everything a balancer can tell about itself.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct BalancerStats {
    /// Per tier: routing metrics.
    pub tiers: Vec<TierStats>,
    /// Per tier with local workers: its pool (a NATS tier has none here).
    pub pools: Vec<PoolStats>,
    /// Live sessions.
    pub sessions: usize,
    /// The event log, when enabled.
    pub telemetry: Option<flowbalancer_telemetry::TelemetryStats>,
}

/// The bus topic on which MCP servers' list changes are broadcast.
pub const LIST_CHANGED_TOPIC: &str = "mcp.list_changed";

/// An MCP server's tools, resources or prompts changed (the message of
/// [`LIST_CHANGED_TOPIC`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListChanged {
    /// The tier whose server changed.
    pub tier: Arc<str>,
}

/// An MCP tier: its pool (for resources, prompts and completion, sent as raw methods with
/// [`mcp::RAW_METHOD_PREFIX`](flowbalancer_mcp::RAW_METHOD_PREFIX)) and the server's listings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct McpTier {
    /// The tier's name.
    pub name: String,
    /// Its pool of server instances.
    pub pool: Pool<flowbalancer_mcp::McpWorker>,
    /// The server's resources, templates, prompts and capabilities.
    pub catalog: Arc<flowbalancer_mcp::Catalog>,
}

/// Routes calls to tiered worker pools as its [`Config`] says, and owns everything it
/// started: dropping it (or [`shutdown`](Balancer::shutdown)) leaves no process or task
/// behind.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use flowbalancer::{Balancer, Config};
/// use flowbalancer::tiers::CallOptions;
///
/// let config = Config::from_toml(r#"
///     [telemetry]
///     enabled = false
///
///     [[tiers]]
///     name = "hot"
///     workers = { builtin = ["echo", "word_count"] }
///
///     [[tiers]]
///     name = "cold"
///     workers = { builtin = ["fib"] }
///
///     [routes]
///     exact = { fib = "cold" }
/// "#)?;
/// let balancer = Balancer::from_config(config).await?;
/// let routed = balancer.call("fib", serde_json::json!({"n": 10}), CallOptions::default()).await?;
/// assert_eq!(routed.tier, "cold");
/// assert_eq!(routed.payload().as_json().unwrap()["fib"], 55);
/// balancer.shutdown().await;
/// # Ok::<(), flowbalancer::Error>(())
/// # }).unwrap();
/// ```
pub struct Balancer {
    config: Config,
    mcp: Vec<McpTier>,
    /// The balancer's message bus: the `mcp.list_changed` topic.
    bus: flowbalancer_bus::Bus,
    changes: flowbalancer_bus::Topic<ListChanged>,
    router: Router,
    pools: Vec<Box<dyn ManagedPool>>,
    /// Per tier, in config order: what says whether it is ready.
    readiness: Vec<(String, Readiness)>,
    telemetry: Option<Telemetry>,
    sessions: Arc<SessionManager>,
    scope: Scope,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("name", &self.config.name)
            .field("tiers", &self.router.tier_names())
            .finish()
    }
}

impl Balancer {
    /// Starts every tier's workers (eagerly, in parallel), the router, telemetry and the
    /// session store.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid config, [`Error::Pool`] when a tier cannot start any
    /// worker, [`Error::Telemetry`] when its threads cannot start.
    pub async fn from_config(config: Config) -> Result<Self, Error> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(Error::Config { problems });
        }
        let scope = Scope::builder()
            .name(config.name.clone())
            .grace(Duration::from_secs(2))
            .limits(Limits::unlimited())
            .build();
        let telemetry = if config.telemetry.enabled {
            let path = config
                .telemetry
                .path
                .clone()
                .or_else(flowbalancer_telemetry::default_log_path)
                .unwrap_or_else(|| std::path::PathBuf::from("flowbalancer-events.jsonl"));
            Some(
                Telemetry::builder()
                    .file(
                        FileConfig::default()
                            .path(path)
                            .max_bytes(config.telemetry.max_file_bytes)
                            .keep_files(config.telemetry.keep_files),
                    )
                    .max_field_bytes(config.telemetry.max_field_bytes)
                    .build()?,
            )
        } else {
            None
        };
        let mut router = Router::builder().timeout(config.timeout).breaker(
            BreakerConfig::default()
                .consecutive_failures(config.breaker.consecutive_failures)
                .base_cooldown(config.breaker.cooldown),
        );
        let mut pools: Vec<Box<dyn ManagedPool>> = Vec::new();
        let mut readiness = Vec::new();
        // Start the tiers concurrently: a slow tier does not delay the others.
        let starts: Vec<_> = config
            .tiers
            .iter()
            .map(|tier| tokio::spawn(start_tier(tier.clone(), config.clone(), scope.handle())))
            .collect();
        let mut results = Vec::new();
        for start in starts {
            results.push(start.await.unwrap_or_else(|e| {
                Err(Error::Io {
                    what: "starting a tier".into(),
                    source: std::io::Error::other(e.to_string()),
                })
            }));
        }
        let mut mcp = Vec::new();
        for (tier, result) in config.tiers.iter().zip(results) {
            let result = result?;
            readiness.push((
                tier.name.clone(),
                match &result {
                    TierPool::Nats(remote) => Readiness::Remote(remote.clone()),
                    _ => Readiness::Pool(pools.len()),
                },
            ));
            match result {
                TierPool::Mcp(pool, catalog) => {
                    if !pool.has_live_worker() {
                        match pool.last_start_error() {
                            Some(error) => {
                                tracing::warn!(tier = %tier.name, %error, "no instance of this MCP server started; retrying in the background while the other tiers serve")
                            }
                            None => {
                                tracing::warn!(tier = %tier.name, wait = ?config.start_wait, "this MCP server is still starting; the other tiers serve meanwhile, and its tools appear (with a list_changed notification) when it is up")
                            }
                        }
                    }
                    pools.push(Box::new(pool.clone()));
                    mcp.push(McpTier {
                        name: tier.name.clone(),
                        pool: pool.clone(),
                        catalog,
                    });
                    router = add_tier(router, tier, crate::mcp_tier::ListedTier(pool));
                }
                TierPool::Process(pool) => {
                    pools.push(Box::new(pool.clone()));
                    router = add_tier(router, tier, pool);
                }
                TierPool::Builtin(pool) => {
                    pools.push(Box::new(pool.clone()));
                    router = add_tier(router, tier, pool);
                }
                TierPool::Nats(remote) => {
                    router = add_tier(router, tier, remote);
                }
            }
        }
        for (method, tier) in &config.routes.exact {
            router = match config.routes.fallback.get(method) {
                Some(fallback) => router.route_with_fallback(method, tier, fallback.clone()),
                None => router.route(method, tier),
            };
        }
        for (prefix, tier) in &config.routes.prefix {
            router = router.route_prefix(prefix, tier);
        }
        if let Some(default) = &config.routes.default {
            router = router.default_tier(default);
        }
        let router = router.build()?;
        let sessions = Arc::new(SessionManager::new(config.sessions.ttl));
        let expiring = Arc::downgrade(&sessions);
        let every = (config.sessions.ttl / 4).max(Duration::from_millis(100));
        let closing = scope.handle().token();
        scope.spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = closing.cancelled() => break,
                }
                match expiring.upgrade() {
                    Some(sessions) => {
                        sessions.expire();
                    }
                    None => break,
                }
            }
        })?;
        warn_duplicates(&mcp);
        let bus = flowbalancer_bus::Bus::new();
        let changes = bus
            .topic::<ListChanged>(LIST_CHANGED_TOPIC, 64)
            .map_err(|e| Error::Io {
                what: "creating the list_changed topic".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        for tier in &mcp {
            // A server's list_changed: the pool re-reads its tools, and clients hear of it.
            let mut changed = tier.catalog.subscribe();
            changed.borrow_and_update();
            let pool = tier.pool.clone();
            let changes = changes.clone();
            let closing = scope.handle().token();
            scope.spawn(async move {
                loop {
                    tokio::select! {
                        result = changed.changed() => if result.is_err() { break },
                        () = closing.cancelled() => break,
                    }
                    pool.refresh_tools();
                    changes.publish(ListChanged {
                        tier: Arc::from(pool.name()),
                    });
                }
            })?;
        }
        tracing::info!(name = %config.name, tiers = ?router.tier_names(), "balancer started");
        Ok(Self {
            mcp,
            bus,
            changes,
            config,
            router,
            pools,
            readiness,
            telemetry,
            sessions,
            scope,
        })
    }

    /// Routes one call; see [`Router::call`]. Failures are also recorded in the event log.
    ///
    /// # Errors
    ///
    /// The router's [`RouteError`], with every attempt.
    pub async fn call(
        &self,
        method: &str,
        params: serde_json::Value,
        options: CallOptions,
    ) -> Result<Routed, RouteError> {
        let result = self.router.call(method, params, options).await;
        if let (Err(error), Some(telemetry)) = (&result, &self.telemetry) {
            telemetry.record(crate::failure_log::failure_event(
                method,
                error,
                self.config.telemetry.log_payloads,
            ));
        }
        result
    }

    /// The tools of every tier (each name once), from the workers' announcements. Answered
    /// from what the pools already know: a dead backend never stalls it.
    pub fn tools(&self) -> Vec<ToolSpec> {
        self.router.tools()
    }

    /// The tool named `name` as [`tools`](Self::tools) lists it, without copying the others.
    pub fn tool(&self, name: &str) -> Option<ToolSpec> {
        self.router.tool(name)
    }

    /// Ends a client session everywhere: its bindings go, and the workers it owned in
    /// `isolation = "session"` tiers are retired. Returns whether any pool knew it.
    pub fn end_session(&self, session: &str) -> bool {
        self.sessions.remove(session);
        self.pools
            .iter()
            .fold(false, |known, pool| pool.end_session(session) | known)
    }

    /// Per tier, in config order: ready (a worker is running), or why not (the last start
    /// error). For `/readyz`.
    pub fn readiness(&self) -> Vec<(String, Result<(), String>)> {
        self.readiness
            .iter()
            .map(|(tier, check)| {
                let ready = match check {
                    Readiness::Pool(index) => self
                        .pools
                        .get(*index)
                        .map_or_else(|| Err("no pool".to_string()), |pool| pool.readiness()),
                    Readiness::Remote(remote) if remote.instances().is_empty() => {
                        Err("no NATS host serves this tier".to_string())
                    }
                    Readiness::Remote(_) => Ok(()),
                };
                (tier.clone(), ready)
            })
            .collect()
    }

    /// The MCP tiers, in config order.
    pub fn mcp_tiers(&self) -> &[McpTier] {
        &self.mcp
    }

    /// Whether `tier` is an MCP tier, whose results are MCP `tools/call` results to pass
    /// through untouched.
    pub fn is_mcp_tier(&self, tier: &str) -> bool {
        self.mcp.iter().any(|t| t.name == tier)
    }

    /// A subscriber of the `mcp.list_changed` topic: one message each time an MCP server's
    /// tools, resources or prompts changed (after its `list_changed` and the re-listing), for
    /// every client session to hear.
    pub fn subscribe_changes(&self) -> flowbalancer_bus::Subscriber<ListChanged> {
        self.changes.subscribe()
    }

    /// The balancer's message bus (its topics and queues, and their stats).
    pub fn bus(&self) -> &flowbalancer_bus::Bus {
        &self.bus
    }

    /// The router (for its chain and stats).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The per-session context store.
    pub fn sessions(&self) -> &SessionManager {
        &self.sessions
    }

    /// The event log, when enabled.
    pub fn telemetry(&self) -> Option<&Telemetry> {
        self.telemetry.as_ref()
    }

    /// A `tracing` layer feeding the event log, filtered as the config says (`level`,
    /// `targets`, `log_payloads`); `None` when the log is off.
    pub fn telemetry_layer(&self) -> Option<flowbalancer_telemetry::TelemetryLayer> {
        let telemetry = self.telemetry.as_ref()?;
        let settings = &self.config.telemetry;
        let mut layer = flowbalancer_telemetry::TelemetryLayer::new(telemetry.clone())
            .level(crate::config::parse_level(&settings.level).unwrap_or(tracing::Level::INFO))
            .log_payloads(settings.log_payloads);
        for (target, level) in &settings.targets {
            layer = layer.target(target.clone(), crate::config::parse_level(level));
        }
        Some(layer)
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Metrics of every tier, pool, the sessions and the event log.
    pub fn stats(&self) -> BalancerStats {
        BalancerStats {
            tiers: self.router.stats(),
            pools: self.pools.iter().map(|p| p.stats()).collect(),
            sessions: self.sessions.len(),
            telemetry: self.telemetry.as_ref().map(Telemetry::stats),
        }
    }

    /// Drains and stops every pool, flushes the event log, and closes the scope (nothing
    /// started by the balancer survives it). Returns the scope's report.
    pub async fn shutdown(&self) -> CloseReport {
        // Every pool drains and stops at the same time: shutdown takes the longest pool's
        // time, not the sum.
        let mut stopping: Vec<Option<_>> = self.pools.iter().map(|p| Some(p.shutdown())).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for slot in &mut stopping {
                if let Some(stop) = slot {
                    if stop.as_mut().poll(cx).is_ready() {
                        *slot = None;
                    } else {
                        pending = true;
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        let report = self.scope.close().await;
        if let Some(telemetry) = &self.telemetry {
            telemetry.shutdown();
        }
        report
    }
}

/// How a tier says it is ready.
enum Readiness {
    /// Its pool, by index in `Balancer::pools`.
    Pool(usize),
    /// A NATS tier: ready while some host serves it.
    Remote(flowbalancer_nats::NatsTier),
}
