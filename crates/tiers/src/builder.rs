//! Declaring a router: tiers, routes, breakers, the retry budget and the chain's deadline,
//! checked when it is built.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::breaker::{BreakerCell, BreakerConfig};
use crate::budget::{Bucket, RetryBudget};
use crate::metrics::TierMetrics;
use crate::name::TierName;
use crate::router::{Inner, Router, TierEntry};
use crate::table::{Route, RouteTable};
use crate::tier::{ErasedTier, Tier};

/// A tier as declared: name, backend, declared methods.
type DeclaredTier = (String, Arc<dyn ErasedTier>, Option<Vec<String>>);
/// A route as declared: method or prefix, tier, fallback list.
type DeclaredRoute = (String, String, Option<Vec<String>>);

/// Builds a [`Router`].
pub struct RouterBuilder {
    tiers: Vec<DeclaredTier>,
    exact: Vec<DeclaredRoute>,
    prefixes: Vec<DeclaredRoute>,
    default: Option<(String, Option<Vec<String>>)>,
    breaker: BreakerConfig,
    budget: Option<RetryBudget>,
    timeout: Duration,
}

impl std::fmt::Debug for RouterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tiers.iter().map(|(n, ..)| n.as_str()).collect();
        f.debug_struct("RouterBuilder")
            .field("tiers", &names)
            .finish()
    }
}

/// The route table or tiers are inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A route names a tier that does not exist.
    #[error("route {route:?} names the unknown tier {tier:?} (tiers: {known})")]
    UnknownTier {
        /// The route (method, prefix or `default`).
        route: String,
        /// The tier named.
        tier: String,
        /// The tiers that exist.
        known: String,
    },
    /// Two tiers share a name.
    #[error("two tiers are named {0:?}")]
    DuplicateTier(String),
    /// No tier at all.
    #[error("a router needs at least one tier")]
    NoTiers,
}

impl RouterBuilder {
    pub(crate) fn new() -> Self {
        Self {
            tiers: Vec::new(),
            exact: Vec::new(),
            prefixes: Vec::new(),
            default: None,
            breaker: BreakerConfig::default(),
            budget: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// Adds a tier; the order of tiers is the fallback order.
    ///
    /// A tier is a [`Pool`](flowbalancer_pool::Pool), any tower `Service` wrapped in
    /// [`ServiceTier`](crate::ServiceTier), or your own [`Tier`].
    pub fn tier(mut self, name: impl Into<String>, tier: impl Tier) -> Self {
        self.tiers.push((name.into(), Arc::new(tier), None));
        self
    }

    /// Adds a tier that offers exactly `methods` (overriding what its workers announce).
    pub fn tier_with_methods(
        mut self,
        name: impl Into<String>,
        tier: impl Tier,
        methods: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        let methods = methods.into_iter().map(Into::into).collect();
        self.tiers
            .push((name.into(), Arc::new(tier), Some(methods)));
        self
    }

    /// Routes `method` to `tier`.
    pub fn route(mut self, method: impl Into<String>, tier: impl Into<String>) -> Self {
        self.exact.push((method.into(), tier.into(), None));
        self
    }

    /// Routes `method` to `tier`, falling back only to `fallback`, in that order.
    pub fn route_with_fallback(
        mut self,
        method: impl Into<String>,
        tier: impl Into<String>,
        fallback: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        let fallback = fallback.into_iter().map(Into::into).collect();
        self.exact
            .push((method.into(), tier.into(), Some(fallback)));
        self
    }

    /// Routes every method starting with `prefix` to `tier` (the longest prefix wins).
    pub fn route_prefix(mut self, prefix: impl Into<String>, tier: impl Into<String>) -> Self {
        self.prefixes.push((prefix.into(), tier.into(), None));
        self
    }

    /// Routes methods no other route matches to `tier` (default: the first tier).
    pub fn default_tier(mut self, tier: impl Into<String>) -> Self {
        self.default = Some((tier.into(), None));
        self
    }

    /// The breaker settings of every tier.
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// Limits fallbacks to a fraction of calls (default: no limit).
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The deadline of a whole chain when a call gives none (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the router.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when there is no tier, two share a name, or a route names an unknown
    /// tier.
    pub fn build(self) -> Result<Router, ConfigError> {
        if self.tiers.is_empty() {
            return Err(ConfigError::NoTiers);
        }
        let names: Vec<String> = self.tiers.iter().map(|(n, ..)| n.clone()).collect();
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(ConfigError::DuplicateTier(name.clone()));
            }
        }
        let index = |route: &str, tier: &str| -> Result<usize, ConfigError> {
            names
                .iter()
                .position(|n| n == tier)
                .ok_or_else(|| ConfigError::UnknownTier {
                    route: route.to_string(),
                    tier: tier.to_string(),
                    known: names.join(", "),
                })
        };
        let make = |route: &str,
                    tier: &str,
                    fallback: &Option<Vec<String>>|
         -> Result<Route, ConfigError> {
            let fallback = fallback
                .as_ref()
                .map(|list| {
                    list.iter()
                        .map(|t| index(route, t))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
            Ok(Route::new(
                index(route, tier)?,
                fallback.as_deref(),
                names.len(),
            ))
        };
        let mut exact = Vec::new();
        for (method, tier, fallback) in &self.exact {
            exact.push((method.clone(), make(method, tier, fallback)?));
        }
        let mut prefixes = Vec::new();
        for (prefix, tier, fallback) in &self.prefixes {
            prefixes.push((prefix.clone(), make(prefix, tier, fallback)?));
        }
        let default = match &self.default {
            Some((tier, fallback)) => make("default", tier, fallback)?,
            None => Route::new(0, None, names.len()),
        };
        let tiers = self
            .tiers
            .into_iter()
            .map(|(name, tier, methods)| TierEntry {
                metrics: TierMetrics::new(&name),
                name: TierName::from(name),
                tier,
                methods,
                breaker: BreakerCell::new(self.breaker.clone()),
            })
            .collect();
        Ok(Router {
            inner: Arc::new(Inner {
                tiers,
                routes: RouteTable::new(exact, prefixes, default),
                budget: self.budget.map(|b| Mutex::new(Bucket::new(b))),
                timeout: self.timeout,
                opening: Mutex::new(()),
            }),
        })
    }
}
