//! [`McpFactory`]: how the pool starts MCP workers.

use std::sync::Arc;

use flowbalancer_pool::{StartContext, StartError, WorkerFactory};

use crate::catalog::Catalog;
use crate::spec::McpServerSpec;
use crate::worker::McpWorker;

/// Starts [`McpWorker`]s from an [`McpServerSpec`]; all of them share one [`Catalog`].
#[derive(Debug, Clone)]
pub struct McpFactory {
    spec: Arc<McpServerSpec>,
    catalog: Arc<Catalog>,
}

impl McpFactory {
    /// A factory for `spec`.
    pub fn new(spec: McpServerSpec) -> Self {
        Self {
            spec: Arc::new(spec),
            catalog: Arc::new(Catalog::default()),
        }
    }

    /// The server's listings, shared by all its instances.
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&self.catalog)
    }

    /// The spec.
    pub fn spec(&self) -> &McpServerSpec {
        &self.spec
    }
}

impl WorkerFactory for McpFactory {
    type Worker = McpWorker;

    fn start(
        &self,
        context: StartContext,
    ) -> impl std::future::Future<Output = Result<McpWorker, StartError>> + Send {
        McpWorker::start(Arc::clone(&self.spec), Arc::clone(&self.catalog), context)
    }
}
