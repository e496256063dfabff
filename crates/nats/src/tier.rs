//! The remote tier: every host serving a tier over NATS, as one tier of the gateway's router.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use flowbalancer_pool::{Payload, Progress, Request, Response, ToolSpec, WorkerId};
use flowbalancer_tiers::Tier;
use futures_util::StreamExt;
use parking_lot::RwLock;

use crate::host::header;
use crate::wire::{self, Answer, CallBody, Notice};
use crate::{NatsError, RemoteFailure};

/// How long without a heartbeat before a call's host counts as gone.
const HOST_SILENCE: Duration = Duration::from_secs(3);
/// How long an instance that failed to answer is left out of session affinity.
const EJECTION: Duration = Duration::from_secs(30);
/// How long discovery listens for `$SRV.INFO` answers.
const DISCOVERY_WINDOW: Duration = Duration::from_millis(300);
/// How long a new tier waits for a client that is still connecting.
const CONNECT_WAIT: Duration = Duration::from_secs(2);
/// How often the hosts are discovered again.
const REDISCOVERY: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Known {
    /// Instances that answered discovery, with when.
    instances: HashMap<String, Instant>,
    /// The union of their tools.
    tools: Vec<ToolSpec>,
    /// Instances that failed a call, with when they may be tried again.
    ejected: HashMap<String, Instant>,
    /// Session → instance.
    sessions: HashMap<String, String>,
    /// Whether discovery has ever found a host.
    discovered: bool,
}

struct Inner {
    client: async_nats::Client,
    tier: String,
    known: RwLock<Known>,
    next_call: AtomicU64,
    /// The subject prefix of this tier's progress subscription, once made.
    notices: tokio::sync::OnceCell<String>,
    /// Calls waiting for progress and heartbeats, by call id.
    listening: parking_lot::Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<Notice>>>,
    /// Durable: calls are jobs on the tier's JetStream work queue.
    durable: bool,
}

/// What a call needs once opened (see `NatsTier::open_call`).
struct OpenCall<'a> {
    headers: HeaderMap,
    notices: tokio::sync::mpsc::UnboundedReceiver<Notice>,
    cancel: CancelOnDrop,
    _listening: Listening<'a>,
}

/// Stops routing a call's notices when the call ends.
struct Listening<'a> {
    inner: &'a Inner,
    id: String,
}

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        self.inner.listening.lock().remove(&self.id);
    }
}

/// A tier whose workers are all the hosts serving `tier` over NATS
/// ([`serve_host`](crate::serve_host)).
///
/// * Its tools are the union of what the hosts advertise in their service info, rediscovered
///   every 2 s.
/// * A call is a NATS request with headers (call id, deadline, session, progress subject) to
///   the tier's queue group: any idle host. A session's calls go to the instance that served
///   its first call, and back to the queue group when that instance is gone.
/// * Progress reports travel back on a per-call subject; the host also sends a heartbeat
///   there every second. A call whose host falls silent for 3 s (killed) is sent once more to
///   the queue group, so it is answered by another host.
/// * Dropping a call (the router's deadline, a client that went away) publishes a cancel that
///   reaches the host running it.
/// * "No responders" ejects an instance from session affinity for 30 s; with no host at all
///   the tier is unavailable, and the router falls back to the next tier.
#[derive(Clone)]
pub struct NatsTier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NatsTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTier")
            .field("tier", &self.inner.tier)
            .finish()
    }
}

impl NatsTier {
    /// The remote tier `tier` on `client`; discovers its hosts now and every 2 s (until the
    /// last clone is dropped).
    ///
    /// # Errors
    ///
    /// [`NatsError::InvalidTier`] for a name that cannot be part of a subject.
    pub async fn new(
        client: async_nats::Client,
        tier: impl Into<String>,
    ) -> Result<Self, NatsError> {
        Self::start(client, tier.into(), None).await
    }

    /// The remote tier `tier` in durable mode: each call is a job on the tier's JetStream
    /// work-queue stream (made now if missing), taken by any host serving the tier with
    /// [`HostConfig::durable`](crate::HostConfig::durable). A job not acknowledged within
    /// `ack_wait` (its host died; hosts send AckProgress while a job runs) is delivered again,
    /// up to `max_deliver` times. For long, idempotent jobs; the server needs JetStream
    /// (`nats-server -js`).
    ///
    /// # Errors
    ///
    /// [`NatsError::InvalidTier`], or [`NatsError::JetStream`] when the stream or its
    /// consumer cannot be made.
    pub async fn durable(
        client: async_nats::Client,
        tier: impl Into<String>,
        ack_wait: Duration,
        max_deliver: u32,
    ) -> Result<Self, NatsError> {
        let settings = crate::durable::QueueSettings {
            ack_wait,
            max_deliver: i64::from(max_deliver.max(1)),
        };
        Self::start(client, tier.into(), Some(settings)).await
    }

    async fn start(
        client: async_nats::Client,
        tier: String,
        durable: Option<crate::durable::QueueSettings>,
    ) -> Result<Self, NatsError> {
        if !wire::is_valid_tier_name(&tier) {
            return Err(NatsError::InvalidTier(tier));
        }
        let inner = Arc::new(Inner {
            client,
            tier,
            known: RwLock::new(Known::default()),
            next_call: AtomicU64::new(1),
            notices: tokio::sync::OnceCell::new(),
            listening: parking_lot::Mutex::new(HashMap::new()),
            durable: durable.is_some(),
        });
        // A client still connecting (`keep_trying`): give it a moment, so that a server that is
        // up is used from the first call; one that is down leaves the tier unavailable.
        let connecting_until = tokio::time::Instant::now() + CONNECT_WAIT;
        while inner.client.connection_state() != async_nats::connection::State::Connected
            && tokio::time::Instant::now() < connecting_until
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(settings) = durable {
            crate::durable::ensure_queue(&inner.client, &inner.tier, settings).await?;
        }
        discover(&inner).await;
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REDISCOVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                discover(&inner).await;
            }
        });
        Ok(Self { inner })
    }

    /// The instances that answered the last discoveries.
    pub fn instances(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.known.read().instances.keys().cloned().collect();
        names.sort();
        names
    }

    /// The prefix of the subjects on which hosts send this tier's calls their progress and
    /// heartbeats: one wildcard subscription for every call, made on first use.
    async fn notices_prefix(&self) -> Result<&str, NatsError> {
        let inner = &self.inner;
        inner
            .notices
            .get_or_try_init(|| async {
                let prefix = inner.client.new_inbox();
                let mut subscription = inner
                    .client
                    .subscribe(format!("{prefix}.*"))
                    .await
                    .map_err(|e| NatsError::Subscribe(e.to_string()))?;
                let weak = Arc::downgrade(inner);
                tokio::spawn(async move {
                    while let Some(message) = subscription.next().await {
                        let Some(inner) = weak.upgrade() else { return };
                        let Some(id) = message.subject.rsplit('.').next() else {
                            continue;
                        };
                        let Ok(notice) = serde_json::from_slice::<Notice>(&message.payload) else {
                            continue;
                        };
                        if let Some(call) = inner.listening.lock().get(id) {
                            let _ = call.send(notice);
                        }
                    }
                });
                Ok(prefix)
            })
            .await
            .map(String::as_str)
    }

    /// A new call: its headers (a fresh id, and the subject its host sends progress and
    /// heartbeats to, through the tier's one wildcard subscription), where those arrive, the
    /// cancel sent if the call is dropped, and the registration that ends with the call.
    async fn open_call(&self, request: &Request) -> Result<OpenCall<'_>, NatsError> {
        let inner = &*self.inner;
        let id = format!(
            "{}-{}",
            inner.client.new_inbox().rsplit('.').next().unwrap_or("c"),
            inner.next_call.fetch_add(1, Ordering::Relaxed)
        );
        let prefix = self.notices_prefix().await?;
        let (notify, notices) = tokio::sync::mpsc::unbounded_channel();
        inner.listening.lock().insert(id.clone(), notify);
        Ok(OpenCall {
            headers: call_headers(&id, &format!("{prefix}.{id}"), request),
            notices,
            cancel: CancelOnDrop {
                client: inner.client.clone(),
                subject: wire::cancel_subject(&inner.tier),
                id: Some(id.clone()),
            },
            _listening: Listening { inner, id },
        })
    }

    /// Sends one attempt to `subject`; `Ok(None)` when its host fell silent.
    async fn attempt(
        &self,
        subject: String,
        body: &Bytes,
        request: &Request,
    ) -> Result<Option<(Answer, Option<String>)>, NatsError> {
        let inner = &*self.inner;
        let client = &inner.client;
        let OpenCall {
            headers,
            mut notices,
            mut cancel,
            _listening,
        } = self.open_call(request).await?;
        let answer = client.send_request(
            subject,
            async_nats::Request::new()
                .headers(headers)
                .payload(body.clone())
                .timeout(None),
        );
        tokio::pin!(answer);
        let mut last_heard = tokio::time::Instant::now();
        let outcome = loop {
            let silence = tokio::time::sleep_until(last_heard + HOST_SILENCE);
            tokio::select! {
                answer = &mut answer => break answer,
                notice = notices.recv() => {
                    last_heard = tokio::time::Instant::now();
                    if let Some(Notice::Progress { progress, total, message }) = notice
                        && let Some(sink) = &request.meta.progress
                    {
                        sink.report(Progress { progress, total, message });
                    }
                }
                () = silence => {
                    // The host died with the call (killed): nothing will answer it.
                    cancel.id = None;
                    return Ok(None);
                }
            }
        };
        cancel.id = None;
        let message = outcome.map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => NatsError::NoResponders {
                tier: inner.tier.clone(),
            },
            _ => NatsError::Request(e.to_string()),
        })?;
        let instance = header(&message.headers, wire::INSTANCE);
        let answer: Answer = serde_json::from_slice(&message.payload).map_err(|e| {
            NatsError::Protocol(format!("the host's answer is not JSON we know: {e}"))
        })?;
        Ok(Some((answer, instance)))
    }

    async fn run(&self, request: Request) -> Result<Response, NatsError> {
        let inner = &*self.inner;
        // Not connected (the server is down or not up yet): nothing can answer; say so at
        // once, so the router moves on.
        if inner.client.connection_state() != async_nats::connection::State::Connected {
            return Err(NatsError::Disconnected {
                tier: inner.tier.clone(),
            });
        }
        let body = Bytes::from(
            serde_json::to_vec(&CallBody {
                method: request.method.to_string(),
                params: request.payload.to_json(),
            })
            .map_err(|e| NatsError::Protocol(e.to_string()))?,
        );
        if inner.durable {
            return self.run_job(body, &request).await;
        }
        let session = request.meta.session.as_ref().map(|s| s.to_string());
        let bound = session.as_ref().and_then(|s| {
            let known = inner.known.read();
            known
                .sessions
                .get(s)
                .filter(|instance| !known.ejected.contains_key(*instance))
                .cloned()
        });
        let mut subjects = Vec::new();
        if let Some(instance) = &bound {
            subjects.push((
                Some(instance.clone()),
                wire::instance_subject(&inner.tier, instance),
            ));
        }
        // The queue group, and once more after a host died with the call.
        subjects.push((None, wire::call_subject(&inner.tier)));
        subjects.push((None, wire::call_subject(&inner.tier)));
        let mut last_error = None;
        for (instance, subject) in subjects {
            match self.attempt(subject, &body, &request).await {
                Ok(Some((answer, served_by))) => {
                    if let (Some(session), Some(served_by)) = (&session, &served_by) {
                        inner
                            .known
                            .write()
                            .sessions
                            .insert(session.clone(), served_by.clone());
                    }
                    let worker = WorkerId(served_by.as_deref().map(instance_number).unwrap_or(0));
                    return match answer {
                        Answer::Ok(value) => Ok(Response {
                            payload: Payload::json(value),
                            worker,
                            attempts: 1,
                            rebound: instance.is_none() && bound.is_some(),
                        }),
                        Answer::Error(error) => Err(NatsError::Remote(RemoteFailure(error))),
                    };
                }
                Ok(None) => {
                    if let Some(instance) = instance {
                        self.eject(&instance);
                    }
                    last_error = Some(NatsError::HostLost {
                        tier: inner.tier.clone(),
                    });
                }
                Err(NatsError::NoResponders { tier }) if instance.is_some() => {
                    if let Some(instance) = instance {
                        self.eject(&instance);
                    }
                    last_error = Some(NatsError::NoResponders { tier });
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or(NatsError::HostLost {
            tier: inner.tier.clone(),
        }))
    }

    /// A durable call: a job on the work queue; the answer comes on its progress subject,
    /// whichever host (and delivery) serves it. Dropping the call cancels the job.
    async fn run_job(&self, body: Bytes, request: &Request) -> Result<Response, NatsError> {
        let inner = &*self.inner;
        let client = &inner.client;
        let OpenCall {
            headers,
            mut notices,
            mut cancel,
            _listening,
        } = self.open_call(request).await?;
        crate::durable::publish_job(client, &inner.tier, headers, body).await?;
        loop {
            match notices.recv().await {
                Some(Notice::Answer { answer, instance }) => {
                    cancel.id = None;
                    return match answer {
                        Answer::Ok(value) => Ok(Response {
                            payload: Payload::json(value),
                            worker: WorkerId(instance_number(&instance)),
                            attempts: 1,
                            rebound: false,
                        }),
                        Answer::Error(error) => Err(NatsError::Remote(RemoteFailure(error))),
                    };
                }
                Some(Notice::Progress {
                    progress,
                    total,
                    message,
                }) => {
                    if let Some(sink) = &request.meta.progress {
                        sink.report(Progress {
                            progress,
                            total,
                            message,
                        });
                    }
                }
                Some(_) => {}
                None => {
                    return Err(NatsError::Protocol(
                        "the tier's progress subscription ended".into(),
                    ));
                }
            }
        }
    }

    fn eject(&self, instance: &str) {
        let mut known = self.inner.known.write();
        known
            .ejected
            .insert(instance.to_string(), Instant::now() + EJECTION);
        known.sessions.retain(|_, bound| bound != instance);
        tracing::warn!(tier = %self.inner.tier, %instance, "remote instance ejected");
    }
}

impl Tier for NatsTier {
    type Error = NatsError;

    fn call(
        &self,
        request: Request,
    ) -> impl std::future::Future<Output = Result<Response, NatsError>> + Send + '_ {
        self.run(request)
    }

    fn offers(&self, method: &str) -> Option<bool> {
        let known = self.inner.known.read();
        known
            .discovered
            .then(|| known.tools.iter().any(|t| t.name == method))
    }

    fn tools(&self) -> Vec<ToolSpec> {
        self.inner.known.read().tools.clone()
    }
}

/// A call's headers: its id, trace context, progress subject, session and time left.
fn call_headers(id: &str, progress_subject: &str, request: &Request) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(wire::CALL_ID, id);
    headers.insert(wire::TRACEPARENT, traceparent().as_str());
    headers.insert(wire::PROGRESS, progress_subject);
    if let Some(session) = &request.meta.session {
        headers.insert(wire::SESSION, session.as_ref());
    }
    if let Some(deadline) = request.meta.deadline {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        headers.insert(wire::DEADLINE_MS, left.as_millis().to_string().as_str());
    }
    headers
}

/// A fresh W3C trace context (`00-<trace id>-<span id>-01`), so that the gateway's and the
/// host's logs of one call can be matched.
fn traceparent() -> String {
    use std::hash::BuildHasher;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let random = std::collections::hash_map::RandomState::new();
    let word = |salt: u64| random.hash_one((n, salt)).max(1);
    format!("00-{:016x}{:016x}-{:016x}-01", word(1), word(2), word(3))
}

/// A stable number for an instance id (for `Response::worker`).
fn instance_number(instance: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    instance.hash(&mut hasher);
    hasher.finish()
}

/// Publishes a cancel for the call unless disarmed (`id = None`) first.
struct CancelOnDrop {
    client: async_nats::Client,
    subject: String,
    id: Option<String>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let client = self.client.clone();
            let subject = std::mem::take(&mut self.subject);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = client.publish(subject, Bytes::from(id)).await;
                    let _ = client.flush().await;
                });
            }
        }
    }
}

/// Asks every host of the tier for its service info, for a short window.
async fn discover(inner: &Inner) {
    let client = &inner.client;
    if client.connection_state() != async_nats::connection::State::Connected {
        return;
    }
    let inbox = client.new_inbox();
    let Ok(mut answers) = client.subscribe(inbox.clone()).await else {
        return;
    };
    let subject = format!("$SRV.INFO.{}", wire::service_name(&inner.tier));
    if client
        .publish_with_reply(subject, inbox, Bytes::new())
        .await
        .is_err()
    {
        return;
    }
    let mut instances = HashMap::new();
    let mut tools: Vec<ToolSpec> = Vec::new();
    let window = tokio::time::sleep(DISCOVERY_WINDOW);
    tokio::pin!(window);
    loop {
        tokio::select! {
            answer = answers.next() => {
                let Some(answer) = answer else { break };
                let Ok(info) = serde_json::from_slice::<async_nats::service::Info>(&answer.payload) else {
                    continue;
                };
                let Some(instance) = info.metadata.get("instance") else { continue };
                instances.insert(instance.clone(), Instant::now());
                let offered: Vec<ToolSpec> = info
                    .metadata
                    .get("tools")
                    .and_then(|t| serde_json::from_str(t).ok())
                    .unwrap_or_default();
                for tool in offered {
                    if !tools.iter().any(|t| t.name == tool.name) {
                        tools.push(tool);
                    }
                }
            }
            () = &mut window => break,
        }
    }
    let now = Instant::now();
    let mut known = inner.known.write();
    known.ejected.retain(|_, until| *until > now);
    // An instance that answers discovery again is back.
    let back: Vec<String> = instances
        .keys()
        .filter(|i| !known.instances.contains_key(*i))
        .cloned()
        .collect();
    for instance in back {
        known.ejected.remove(&instance);
    }
    if !instances.is_empty() {
        known.discovered = true;
        known.tools = tools;
    }
    known
        .sessions
        .retain(|_, bound| instances.contains_key(bound));
    known.instances = instances;
}
