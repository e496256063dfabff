//! A scriptable test worker.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    missing_debug_implementations
)]

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use flowbalancer_pool::{
    ErrorKind, Payload, Request, StartContext, StartError, Worker, WorkerError, WorkerFactory,
    WorkerId,
};
use parking_lot::Mutex;
use serde_json::json;

/// What the tests can see and steer.
#[derive(Default)]
pub struct Shared {
    pub unhealthy: Mutex<HashSet<u64>>,
    pub killed: Mutex<Vec<u64>>,
    pub shut_down: Mutex<Vec<u64>>,
    /// Start attempts that fail before a start succeeds (counts down).
    pub failing_starts: AtomicU32,
    pub starts: AtomicU64,
    /// The worker id that fails `flaky` calls transiently.
    pub flaky_worker: AtomicU64,
    /// While true, starts wait (a server that is slow to come up).
    pub starts_held: tokio::sync::watch::Sender<bool>,
}

pub struct TestWorker {
    id: WorkerId,
    shared: Arc<Shared>,
}

/// Methods: `echo` (params back), `whoami` (worker id), `crash`, `garbage` (protocol
/// violation), `hang`, `sleep` (params.ms), `bad` (bad params), `flaky` (transient on one
/// worker).
impl Worker for TestWorker {
    fn call(&self, request: Request) -> impl Future<Output = Result<Payload, WorkerError>> + Send {
        let id = self.id;
        let shared = Arc::clone(&self.shared);
        async move {
            match request.method.as_ref() {
                "echo" => Ok(request.payload),
                "whoami" => Ok(Payload::json(json!(id.0))),
                "crash" => Err(WorkerError::new(ErrorKind::Crashed, "exit status 137")),
                "garbage" => Err(WorkerError::new(ErrorKind::ProtocolViolation, "bad frame")),
                "hang" => std::future::pending().await,
                "sleep" => {
                    let ms = request.params()["ms"].as_u64().unwrap_or(10);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(Payload::json(json!(id.0)))
                }
                "bad" => Err(WorkerError::new(
                    ErrorKind::BadParams,
                    "missing field `text`",
                )),
                "flaky" if shared.flaky_worker.load(Ordering::SeqCst) == id.0 => Err(
                    WorkerError::new(ErrorKind::Transient, "busy, try elsewhere"),
                ),
                "flaky" => Ok(Payload::json(json!(id.0))),
                other => Err(WorkerError::new(ErrorKind::UnknownMethod, other)),
            }
        }
    }

    fn health_check(&self) -> impl Future<Output = Result<(), WorkerError>> + Send {
        let bad = self.shared.unhealthy.lock().contains(&self.id.0);
        async move {
            if bad {
                Err(WorkerError::new(ErrorKind::Transient, "no pong"))
            } else {
                Ok(())
            }
        }
    }

    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        self.shared.shut_down.lock().push(self.id.0);
        async {}
    }

    fn kill(&self) {
        self.shared.killed.lock().push(self.id.0);
    }
}

#[derive(Clone, Default)]
pub struct TestFactory {
    pub shared: Arc<Shared>,
}

impl WorkerFactory for TestFactory {
    type Worker = TestWorker;

    fn start(
        &self,
        context: StartContext,
    ) -> impl Future<Output = Result<TestWorker, StartError>> + Send {
        let shared = Arc::clone(&self.shared);
        async move {
            shared.starts.fetch_add(1, Ordering::SeqCst);
            let mut held = shared.starts_held.subscribe();
            let _ = held.wait_for(|held| !*held).await;
            let failing = shared.failing_starts.load(Ordering::SeqCst);
            if failing > 0 {
                shared.failing_starts.store(failing - 1, Ordering::SeqCst);
                return Err(StartError {
                    worker: context.id,
                    message: "python3: not found".into(),
                });
            }
            Ok(TestWorker {
                id: context.id,
                shared,
            })
        }
    }
}

pub fn request(method: &str) -> Request {
    Request::new(method, json!({}))
}

pub fn worker_of(response: &flowbalancer_pool::Response) -> u64 {
    response
        .payload
        .as_json()
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

/// One tracing event as a test sees it.
pub struct Event {
    pub level: tracing::Level,
    /// The event's message.
    pub message: String,
    /// Every field but the message, as `name=value `.
    pub fields: String,
}

/// Records every tracing event of this thread while the guard lives.
pub fn capture_events() -> (
    tracing::subscriber::DefaultGuard,
    Arc<std::sync::Mutex<Vec<Event>>>,
) {
    use tracing_subscriber::layer::{Context, SubscriberExt};

    struct Capture(Arc<std::sync::Mutex<Vec<Event>>>);
    struct Fields(String, String);
    impl tracing::field::Visit for Fields {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            } else {
                self.1.push_str(&format!("{}={:?} ", field.name(), value));
            }
        }
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            if field.name() == "message" {
                self.0 = value.to_string();
            } else {
                self.1.push_str(&format!("{}={} ", field.name(), value));
            }
        }
    }
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let mut fields = Fields(String::new(), String::new());
            event.record(&mut fields);
            if let Ok(mut events) = self.0.lock() {
                events.push(Event {
                    level: *event.metadata().level(),
                    message: fields.0,
                    fields: fields.1,
                });
            }
        }
    }
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let guard = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(Capture(Arc::clone(&events))),
    );
    (guard, events)
}
