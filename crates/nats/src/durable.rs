//! Durable tiers: calls as jobs on a JetStream work-queue stream, for long idempotent work.
//!
//! The gateway creates the stream (`FLOWBALANCER_<tier>`, work-queue retention, subject
//! `flowbalancer.<tier>.jobs`) and the durable pull consumer every host shares, with
//! `ack_wait` = the tier's call timeout and `max_deliver` = its retries + 1. A host takes a
//! job, sends AckProgress while it runs, publishes the answer on the job's progress subject,
//! then acks it. A host that dies with a job never acks: JetStream delivers it again, to any
//! host, after `ack_wait`. A job cancelled by the gateway is terminated (never redelivered).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use bytes::Bytes;
use flowbalancer_tiers::Router;
use futures_util::StreamExt;

use crate::NatsError;
use crate::host::{Counters, Running, RunningCalls, header, run_call};
use crate::wire::{self, Notice};

/// A durable tier's queue settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueSettings {
    /// How long a job may run without an ack or AckProgress before it is delivered again.
    pub(crate) ack_wait: Duration,
    /// Deliveries of one job at most.
    pub(crate) max_deliver: i64,
}

/// Creates the stream and the shared consumer of `tier` when missing.
pub(crate) async fn ensure_queue(
    client: &async_nats::Client,
    tier: &str,
    settings: QueueSettings,
) -> Result<(), NatsError> {
    let js = jetstream::new(client.clone());
    let stream = js
        .get_or_create_stream(stream::Config {
            name: wire::stream_name(tier),
            subjects: vec![wire::jobs_subject(tier)],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .map_err(|e| NatsError::JetStream(format!("the stream of tier {tier}: {e}")))?;
    stream
        .get_or_create_consumer(
            &wire::consumer_name(tier),
            consumer::pull::Config {
                durable_name: Some(wire::consumer_name(tier)),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: settings.ack_wait,
                max_deliver: settings.max_deliver,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| NatsError::JetStream(format!("the consumer of tier {tier}: {e}")))?;
    Ok(())
}

/// Publishes a job; resolves when the stream has stored it.
pub(crate) async fn publish_job(
    client: &async_nats::Client,
    tier: &str,
    headers: async_nats::HeaderMap,
    body: Bytes,
) -> Result<(), NatsError> {
    let js = jetstream::new(client.clone());
    js.publish_with_headers(wire::jobs_subject(tier), headers, body)
        .await
        .map_err(|e| NatsError::JetStream(e.to_string()))?
        .await
        .map_err(|e| NatsError::JetStream(e.to_string()))?;
    Ok(())
}

/// A host takes jobs of `tier` until `stop`: waits for the consumer the gateway creates.
pub(crate) async fn take_jobs(
    client: async_nats::Client,
    router: Router,
    tier: String,
    instance: String,
    counters: Arc<Counters>,
    running: RunningCalls,
    stop: tokio_util_like::Stop,
) {
    let js = jetstream::new(client.clone());
    let consumer = loop {
        match js
            .get_consumer_from_stream::<consumer::pull::Config, _, _>(
                wire::consumer_name(&tier),
                wire::stream_name(&tier),
            )
            .await
        {
            Ok(consumer) => break consumer,
            Err(error) => {
                tracing::debug!(%tier, %error, "no durable queue for this tier yet");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.wait() => return,
                }
            }
        }
    };
    let ack_wait = consumer.cached_info().config.ack_wait;
    let Ok(mut jobs) = consumer.messages().await else {
        tracing::warn!(%tier, "cannot take jobs from the durable queue");
        return;
    };
    tracing::info!(%tier, "taking durable jobs");
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let job = tokio::select! {
            job = jobs.next() => job,
            () = stop.wait() => break,
        };
        let Some(Ok(job)) = job else { break };
        let id = header(&job.headers, wire::CALL_ID);
        let client = client.clone();
        let (router, instance, counters) =
            (router.clone(), instance.clone(), Arc::clone(&counters));
        let progress = header(&job.headers, wire::PROGRESS);
        let job = Arc::new(job);
        let held = Arc::clone(&job);
        let finished = (Arc::clone(&running), id.clone());
        // Under the lock: a job that ends at once removes its entry only after it is in.
        let mut entries = running.lock();
        let abort = tasks.spawn(async move {
            let _forget = Forget(finished);
            // Keep the job ours while it runs: AckProgress well within ack_wait.
            let keep = {
                let job = Arc::clone(&job);
                async move {
                    let every = (ack_wait / 3).max(Duration::from_millis(100));
                    loop {
                        tokio::time::sleep(every).await;
                        let _ = job.ack_with(AckKind::Progress).await;
                    }
                }
            };
            let answer = tokio::select! {
                answer = run_call(&client, &router, &counters, &job.headers, &job.payload) => answer,
                () = keep => return,
            };
            if let Some(subject) = progress {
                let notice = Notice::Answer { answer, instance };
                if let Ok(body) = serde_json::to_vec(&notice) {
                    let _ = client.publish(subject, Bytes::from(body)).await;
                    let _ = client.flush().await;
                }
            }
            let _ = job.ack().await;
        });
        if let Some(id) = id {
            entries.insert(
                id,
                Running {
                    abort,
                    job: Some(held),
                },
            );
        }
        drop(entries);
    }
    // Jobs in flight are left unacked: JetStream gives them to another host after ack_wait.
    tasks.abort_all();
}

/// Removes a job's entry from the running calls when its task ends (answered or aborted).
struct Forget((RunningCalls, Option<String>));

impl Drop for Forget {
    fn drop(&mut self) {
        let (running, id) = &self.0;
        if let Some(id) = id {
            running.lock().remove(id);
        }
    }
}

/// A stop signal several loops can wait on.
pub(crate) mod tokio_util_like {
    /// Resolves once `stop` is called (or was).
    #[derive(Clone, Debug)]
    pub(crate) struct Stop(tokio::sync::watch::Receiver<bool>);

    /// Makes a stop signal.
    pub(crate) fn stop() -> (tokio::sync::watch::Sender<bool>, Stop) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (tx, Stop(rx))
    }

    impl Stop {
        pub(crate) async fn wait(&self) {
            let mut rx = self.0.clone();
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
}
