//! The worker host: local pools (behind a router) served as a NATS service.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use flowbalancer_pool::{Progress, ProgressSink, Request};
use flowbalancer_tiers::{ErrorClass, RouteError, Router};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::task::AbortHandle;

use crate::NatsError;
use crate::wire::{self, Answer, CallBody, Notice, RemoteError};

/// What a host serves: one tier name, answered by a local router.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HostConfig {
    /// The tier this host's service answers for.
    pub tier: String,
    /// This instance's id (unique among the tier's hosts; default: the NATS client's id).
    pub instance: Option<String>,
    /// Calls this host takes at once (advertised; calls beyond wait in the pools' queues).
    pub capacity: usize,
    /// How long a drain lets calls in flight finish.
    pub drain_grace: Duration,
    /// Also take the tier's durable jobs (its JetStream work queue, made by a gateway whose
    /// tier says `durable = true`).
    pub durable: bool,
}

impl HostConfig {
    /// Serves `tier` with the defaults (capacity 64, drain grace 10 s).
    pub fn new(tier: impl Into<String>) -> Self {
        Self {
            tier: tier.into(),
            instance: None,
            capacity: 64,
            drain_grace: Duration::from_secs(10),
            durable: false,
        }
    }

    /// The same config, also taking the tier's durable jobs.
    pub fn durable(mut self, yes: bool) -> Self {
        self.durable = yes;
        self
    }

    /// The same config with this instance id.
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// The same config with this advertised capacity.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    calls: AtomicU64,
    failures: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    in_flight: AtomicU64,
}

/// A call or job running at this host, by call id: what a cancel stops.
pub(crate) struct Running {
    pub(crate) abort: AbortHandle,
    /// A durable job: terminated on cancel, so that it is not delivered again.
    pub(crate) job: Option<Arc<async_nats::jetstream::Message>>,
}

pub(crate) type RunningCalls = Arc<Mutex<HashMap<String, Running>>>;

/// Serves `router` as tier `config.tier` on `client` until `stop` resolves, then drains:
/// deregisters (no new calls), lets calls in flight finish within the grace, and returns.
///
/// The service is `flowbalancer-<tier>` (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`), with the
/// tools, capacity and instance in its metadata. Calls come on `flowbalancer.<tier>.call`
/// (queue group `<tier>`) and `flowbalancer.<tier>.<instance>.call`; cancellations on
/// `flowbalancer.<tier>.cancel`.
///
/// # Errors
///
/// [`NatsError`] when the service or a subscription cannot be set up.
pub async fn serve_host(
    client: async_nats::Client,
    router: Router,
    config: HostConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), NatsError> {
    if !wire::is_valid_tier_name(&config.tier) {
        return Err(NatsError::InvalidTier(config.tier));
    }
    let tier = config.tier.clone();
    let instance = config.instance.clone().unwrap_or_else(|| {
        // The client's inbox is unique: its last part names this connection.
        client
            .new_inbox()
            .rsplit('.')
            .next()
            .unwrap_or("host")
            .to_string()
    });
    let tools = serde_json::to_string(&router.tools()).unwrap_or_else(|_| "[]".into());
    let counters = Arc::new(Counters::default());
    let stats_counters = Arc::clone(&counters);
    let capacity = config.capacity;
    let service = async_nats::service::ServiceExt::service_builder(&client)
        .description(format!("flowbalancer workers of tier {tier}"))
        .metadata(HashMap::from([
            ("tier".to_string(), tier.clone()),
            ("instance".to_string(), instance.clone()),
            ("capacity".to_string(), config.capacity.to_string()),
            ("tools".to_string(), tools),
        ]))
        .stats_handler(move |_endpoint, _stats| {
            serde_json::json!({
                "calls": stats_counters.calls.load(Ordering::Relaxed),
                "failures": stats_counters.failures.load(Ordering::Relaxed),
                "cancelled": stats_counters.cancelled.load(Ordering::Relaxed),
                "in_flight": stats_counters.in_flight.load(Ordering::Relaxed),
                "capacity": capacity,
            })
        })
        .start(wire::service_name(&tier), env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| NatsError::Service(e.to_string()))?;
    let shared = service
        .endpoint_builder()
        .name("call")
        .queue_group(&tier)
        .add(wire::call_subject(&tier))
        .await
        .map_err(|e| NatsError::Service(e.to_string()))?;
    let own = service
        .endpoint_builder()
        .name("instance")
        .queue_group(&instance)
        .add(wire::instance_subject(&tier, &instance))
        .await
        .map_err(|e| NatsError::Service(e.to_string()))?;
    let mut cancels = client
        .subscribe(wire::cancel_subject(&tier))
        .await
        .map_err(|e| NatsError::Subscribe(e.to_string()))?;
    tracing::info!(%tier, %instance, "serving tier over NATS");
    let running: RunningCalls = Arc::default();
    let (stop_jobs, jobs_stop) = crate::durable::tokio_util_like::stop();
    let jobs = config.durable.then(|| {
        tokio::spawn(crate::durable::take_jobs(
            client.clone(),
            router.clone(),
            tier.clone(),
            instance.clone(),
            Arc::clone(&counters),
            Arc::clone(&running),
            jobs_stop,
        ))
    });
    let mut calls = futures_util::stream::select(shared, own);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            request = calls.next() => {
                let Some(request) = request else { break };
                let host = Call {
                    client: client.clone(),
                    router: router.clone(),
                    instance: instance.clone(),
                    counters: Arc::clone(&counters),
                    running: Arc::clone(&running),
                };
                let id = header(&request.message.headers, wire::CALL_ID);
                // Under the lock: a call that ends at once removes its entry only after it
                // is in (no entry is left behind).
                let mut entries = running.lock();
                let abort = tasks.spawn(async move { host.serve(request).await });
                if let Some(id) = id {
                    entries.insert(id, Running { abort, job: None });
                }
                drop(entries);
            }
            cancel = cancels.next() => {
                let Some(cancel) = cancel else { break };
                let id = String::from_utf8_lossy(&cancel.payload).to_string();
                // Out of the map first: the lock is not held while the task is aborted.
                let call = running.lock().remove(&id);
                if let Some(call) = call {
                    call.abort.abort();
                    if let Some(job) = call.job {
                        tokio::spawn(async move {
                            let _ = job.ack_with(async_nats::jetstream::AckKind::Term).await;
                        });
                    }
                    counters.cancelled.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(call = %id, "call cancelled by the gateway");
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = &mut stop => break,
        }
    }
    // Drain: no new calls (the service deregisters), calls in flight get the grace.
    drop(calls);
    let _ = service.stop().await;
    let _ = stop_jobs.send(true);
    if let Some(jobs) = jobs {
        let _ = jobs.await;
    }
    let drained = tokio::time::timeout(config.drain_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            unfinished = tasks.len(),
            "calls still running after the drain grace are cancelled"
        );
        tasks.abort_all();
    }
    let _ = client.flush().await;
    Ok(())
}

/// One call at the host.
struct Call {
    client: async_nats::Client,
    router: Router,
    instance: String,
    counters: Arc<Counters>,
    running: RunningCalls,
}

impl Call {
    async fn serve(self, request: async_nats::service::Request) {
        let id = header(&request.message.headers, wire::CALL_ID);
        let answer = run_call(
            &self.client,
            &self.router,
            &self.counters,
            &request.message.headers,
            &request.message.payload,
        )
        .await;
        if let Some(id) = &id {
            self.running.lock().remove(id);
        }
        let body = serde_json::to_vec(&answer).unwrap_or_else(|e| {
            format!("{{\"error\":{{\"kind\":\"internal\",\"class\":\"retryable\",\"message\":\"unserializable answer: {e}\"}}}}").into_bytes()
        });
        let mut answer_headers = HeaderMap::new();
        answer_headers.insert(wire::INSTANCE, self.instance.as_str());
        if let Err(error) = request
            .respond_with_headers(Ok(Bytes::from(body)), answer_headers)
            .await
        {
            tracing::debug!(%error, "the answer could not be sent (the gateway is gone?)");
        }
    }
}

/// Runs one call (or job) through the host's router: its answer for the gateway.
pub(crate) async fn run_call(
    client: &async_nats::Client,
    router: &Router,
    counters: &Counters,
    headers: &Option<HeaderMap>,
    payload: &[u8],
) -> Answer {
    let id = header(headers, wire::CALL_ID);
    let deadline = header(headers, wire::DEADLINE_MS)
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(Duration::from_millis);
    let session = header(headers, wire::SESSION);
    let progress = header(headers, wire::PROGRESS);
    let trace = header(headers, wire::TRACEPARENT);
    tracing::debug!(
        call = id.as_deref().unwrap_or(""),
        traceparent = trace.as_deref().unwrap_or(""),
        "call from a gateway"
    );
    counters.calls.fetch_add(1, Ordering::Relaxed);
    counters.in_flight.fetch_add(1, Ordering::Relaxed);
    let _in_flight = InFlight(counters);
    match serde_json::from_slice::<CallBody>(payload) {
        Err(e) => Answer::Error(RemoteError {
            kind: "bad_params".into(),
            class: "caller".into(),
            message: format!("the call is not a flowbalancer call body: {e}"),
        }),
        Ok(body) => {
            let mut call = Request::new(body.method, body.params);
            if let Some(session) = session {
                call = call.with_session(session);
            }
            if let Some(subject) = &progress {
                call = call.with_progress(progress_sink(client.clone(), subject.clone()));
            }
            let routed = router.call_request(call, deadline);
            let heartbeat = heartbeats(client.clone(), progress.clone());
            let result = tokio::select! {
                result = routed => result,
                never = heartbeat => match never {},
            };
            match result {
                Ok(routed) => Answer::Ok(routed.response.payload.to_json()),
                Err(error) => {
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                    Answer::Error(remote_error(&error))
                }
            }
        }
    }
}

/// Counts a call out of `in_flight` when it ends (answered or aborted).
struct InFlight<'a>(&'a Counters);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Never resolves: publishes a heartbeat every second while the call runs.
async fn heartbeats(
    client: async_nats::Client,
    subject: Option<String>,
) -> std::convert::Infallible {
    let Some(subject) = subject else {
        return std::future::pending().await;
    };
    let beat = serde_json::to_vec(&Notice::Heartbeat).unwrap_or_default();
    // The first beat after one period: a quick call sends none.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + wire::HEARTBEAT,
        wire::HEARTBEAT,
    );
    loop {
        tick.tick().await;
        let _ = client
            .publish(subject.clone(), Bytes::from(beat.clone()))
            .await;
    }
}

/// Progress reports of the local worker, published for the gateway.
fn progress_sink(client: async_nats::Client, subject: String) -> ProgressSink {
    ProgressSink::new(move |progress: Progress| {
        let notice = Notice::Progress {
            progress: progress.progress,
            total: progress.total,
            message: progress.message,
        };
        if let Ok(body) = serde_json::to_vec(&notice) {
            let client = client.clone();
            let subject = subject.clone();
            tokio::spawn(async move {
                let _ = client.publish(subject, Bytes::from(body)).await;
            });
        }
    })
}

/// A local routing failure, classified for the gateway's router.
fn remote_error(error: &RouteError) -> RemoteError {
    let (kind, class) = match error {
        RouteError::Rejected { error, .. } => (
            error.kind().to_string(),
            match error.class() {
                ErrorClass::Caller => "caller",
                ErrorClass::Unavailable => "unavailable",
                _ => "retryable",
            },
        ),
        RouteError::UnknownMethod { .. } => ("unknown_method".to_string(), "caller"),
        RouteError::DeadlineExceeded { .. } => ("deadline_exceeded".to_string(), "retryable"),
        // Every local tier failed or was unavailable: another host may serve it.
        _ => ("all_tiers_failed".to_string(), "retryable"),
    };
    RemoteError {
        kind,
        class: class.into(),
        message: error.to_string(),
    }
}

pub(crate) fn header(headers: &Option<HeaderMap>, name: &str) -> Option<String> {
    headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_string())
}
