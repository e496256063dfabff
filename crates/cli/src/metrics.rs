//! Prometheus export of the libraries' metrics: `serve --metrics ADDR`, and `GET /metrics` on
//! the HTTP front end. The libraries only emit through the `metrics` facade; this binary is
//! the one place that installs a recorder.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds) of every `…_seconds` histogram: 250 µs to a minute.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 60.0,
];

/// How often histograms are folded (the recorder needs it when it does not run its own
/// listener).
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder for this process, before any pool or router is built
/// (they register their metrics when built). Call once, inside the runtime.
pub(crate) fn install() -> Result<PrometheusHandle, String> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        .map_err(|e| format!("metrics: {e}"))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| format!("metrics: a recorder is already installed: {e}"))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// The Prometheus text exposition of everything recorded so far.
pub(crate) fn exposition(handle: &PrometheusHandle) -> Response<BoxBody<Bytes, Infallible>> {
    let mut response = Response::new(Full::new(Bytes::from(handle.render())).boxed());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Serves `GET /metrics` on `bind` until the process ends. Returns once listening.
pub(crate) async fn serve(
    handle: PrometheusHandle,
    bind: SocketAddr,
) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| format!("metrics: cannot listen on {bind}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(address = %local, "serving Prometheus metrics at /metrics");
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "metrics: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let response = match (request.method(), request.uri().path()) {
                        (&Method::GET, "/metrics") => exposition(&handle),
                        _ => {
                            let mut response = Response::new(
                                Full::new(Bytes::from_static(b"not found; try /metrics\n")).boxed(),
                            );
                            *response.status_mut() = StatusCode::NOT_FOUND;
                            response
                        }
                    };
                    std::future::ready(Ok::<_, Infallible>(response))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}
