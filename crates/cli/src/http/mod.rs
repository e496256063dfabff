//! `flowbalancer serve --http ADDR`: MCP's streamable HTTP transport (rmcp's server), in front
//! of one balancer shared by every client session.
//!
//! Before a request reaches rmcp it passes, in order: the path (`/healthz`, `/readyz`, the
//! MCP path, else 404), the drain (503 while shutting down), bearer tokens (401 with
//! `WWW-Authenticate`), the body cap (413), and the concurrency limits, overall and per
//! session (429 with `Retry-After`). rmcp then checks `Host` and `Origin` (403), the session
//! (`Mcp-Session-Id`) and the JSON-RPC itself. A session's `tools/call` that no MCP server may
//! serve is then answered in the connection's task (`sessions`); everything else goes through
//! rmcp's session worker to the session's `Gateway`. Logs carry the method, path, status and
//! time of a request, never a header value or a body.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flowbalancer::{Balancer, HttpConfig};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;
use sessions::Sessions;

mod sessions;

type Reply = Response<BoxBody<Bytes, Infallible>>;
type Rmcp = StreamableHttpService<Gateway, Sessions>;

/// Everything a request handler needs.
struct Front {
    balancer: Arc<Balancer>,
    settings: HttpConfig,
    tokens: Vec<String>,
    rmcp: Rmcp,
    draining: AtomicBool,
    /// The Prometheus recorder's handle, for `GET /metrics`.
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// POST requests being served (and their response bodies being streamed).
    in_flight: AtomicUsize,
    per_session: parking_lot::Mutex<HashMap<String, usize>>,
}

fn reply(status: StatusCode, body: serde_json::Value) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// An HTTP error with a JSON-RPC error body (the request's id is not known here).
/// 401 with `WWW-Authenticate`: a bearer token is missing or wrong.
fn unauthorized() -> Reply {
    let mut response = rpc_error(
        StatusCode::UNAUTHORIZED,
        -32001,
        "a valid bearer token is required",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"flowbalancer\""),
    );
    response
}

fn rpc_error(status: StatusCode, code: i64, message: &str) -> Reply {
    reply(
        status,
        json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": message } }),
    )
}

fn too_many(message: &str) -> Reply {
    let mut response = rpc_error(StatusCode::TOO_MANY_REQUESTS, -32000, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

/// Compares without an early exit, so that timing says nothing about a token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Releases a request's places in the limits when its response is done (or dropped).
struct Places {
    front: Arc<Front>,
    session: Option<String>,
}

impl Drop for Places {
    fn drop(&mut self) {
        self.front.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(session) = &self.session {
            let mut map = self.front.per_session.lock();
            if let Some(count) = map.get_mut(session) {
                *count -= 1;
                if *count == 0 {
                    map.remove(session);
                }
            }
        }
    }
}

/// A response body that keeps its request's places until it has been sent.
struct Held {
    body: BoxBody<Bytes, Infallible>,
    _places: Places,
}

impl Body for Held {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Front {
    fn authorized(&self, request: &Request<Incoming>) -> bool {
        if self.tokens.is_empty() {
            return true;
        }
        let Some(given) = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        self.tokens.iter().fold(false, |ok, token| {
            same(token.as_bytes(), given.trim().as_bytes()) | ok
        })
    }

    /// Takes a place overall and in the session, or says which limit is reached.
    fn take_places(self: &Arc<Self>, session: Option<String>) -> Result<Places, &'static str> {
        let overall = self.in_flight.fetch_add(1, Ordering::SeqCst);
        let mut places = Places {
            front: Arc::clone(self),
            session: None,
        };
        if overall >= self.settings.max_concurrent_requests {
            return Err("too many requests at once; retry shortly");
        }
        if let Some(session) = session {
            let mut map = self.per_session.lock();
            let count = map.entry(session.clone()).or_insert(0);
            if *count >= self.settings.max_requests_per_session {
                return Err("too many requests at once in this session; retry shortly");
            }
            *count += 1;
            drop(map);
            places.session = Some(session);
        }
        Ok(places)
    }

    fn readiness(&self) -> Reply {
        let tiers = self.balancer.readiness();
        let ready = tiers.iter().all(|(_, r)| r.is_ok());
        let detail: serde_json::Map<String, serde_json::Value> = tiers
            .into_iter()
            .map(|(tier, result)| {
                let value = match result {
                    Ok(()) => json!({ "ready": true }),
                    Err(why) => json!({ "ready": false, "reason": why }),
                };
                (tier, value)
            })
            .collect();
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        reply(status, json!({ "ready": ready, "tiers": detail }))
    }

    async fn mcp(self: &Arc<Self>, request: Request<Incoming>) -> Reply {
        if self.draining.load(Ordering::SeqCst) {
            let mut response = rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                -32000,
                "the server is shutting down",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            return response;
        }
        if !self.authorized(&request) {
            return unauthorized();
        }
        let max = self.settings.max_body_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return rpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                -32600,
                &format!("the request body is larger than {max} bytes"),
            );
        }
        // Limits apply to requests (POST); the long-lived GET stream and DELETE pass.
        let places = if request.method() == Method::POST {
            let session = request
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match self.take_places(session) {
                Ok(places) => Some(places),
                Err(why) => return too_many(why),
            }
        } else {
            None
        };
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, max).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return rpc_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    -32600,
                    &format!("the request body is larger than {max} bytes"),
                );
            }
        };
        if parts.method == Method::POST {
            // rmcp answers a body that is not JSON with a plain-text 415: give the client a
            // JSON-RPC error it can read, and refuse batches (not part of MCP since 2025-06-18).
            if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    -32600,
                    "Invalid Request: JSON-RPC batches are not supported",
                );
            }
            if let Err(answer) = crate::serve::vet(&body) {
                let mut response = reply(StatusCode::BAD_REQUEST, serde_json::Value::Null);
                *response.body_mut() = Full::new(Bytes::from(answer)).boxed();
                return response;
            }
        }
        // A `tools/list` answer gets the servers' whole tool definitions back (rmcp keeps
        // only the fields it models); its stream ends with that one answer.
        let listing_tools = parts.method == Method::POST
            && body
                .windows(b"tools/list".len())
                .any(|w| w == b"tools/list")
            && serde_json::from_slice::<serde_json::Value>(&body)
                .is_ok_and(|m| m.get("method").and_then(|v| v.as_str()) == Some("tools/list"));
        let deleting = parts.method == Method::DELETE;
        // `handle` borrows the service; its tower `call` would clone it (configuration
        // included) and box the future on every request.
        let mut response = self
            .rmcp
            .handle(Request::from_parts(parts, Full::new(body)))
            .await;
        if listing_tools && response.status().is_success() {
            response = self.restore_tool_list(response).await;
        }
        if deleting && response.status() == StatusCode::ACCEPTED {
            // The session is closed by now: say so plainly (clients expect 200 or 204).
            *response.status_mut() = StatusCode::NO_CONTENT;
        }
        match places {
            Some(places) => response.map(|body| {
                Held {
                    body,
                    _places: places,
                }
                .boxed()
            }),
            None => response,
        }
    }

    /// A `tools/list` answer (JSON, or an SSE stream that ends after it) with whole tool
    /// definitions.
    async fn restore_tool_list(&self, response: Reply) -> Reply {
        let (mut parts, body) = response.into_parts();
        let collected = tokio::time::timeout(Duration::from_secs(30), body.collect()).await;
        let Ok(Ok(collected)) = collected else {
            return rpc_error(
                StatusCode::GATEWAY_TIMEOUT,
                -32603,
                "tools/list did not complete",
            );
        };
        let bytes = collected.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        let mut out = String::with_capacity(text.len() + 256);
        let restore = |data: &str| -> String {
            let Ok(mut message) = serde_json::from_str::<serde_json::Value>(data) else {
                return data.to_string();
            };
            if crate::serve::restore_definitions(&mut message, &self.balancer) {
                message.to_string()
            } else {
                data.to_string()
            }
        };
        if text.trim_start().starts_with('{') {
            out.push_str(&restore(text.trim()));
        } else {
            for line in text.split_inclusive('\n') {
                match line.strip_prefix("data:") {
                    Some(data) => {
                        let ending = if data.ends_with("\r\n") {
                            "\r\n"
                        } else if data.ends_with('\n') {
                            "\n"
                        } else {
                            ""
                        };
                        out.push_str("data: ");
                        out.push_str(&restore(data.trim()));
                        out.push_str(ending);
                    }
                    None => out.push_str(line),
                }
            }
        }
        parts.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(parts, Full::new(Bytes::from(out)).boxed())
    }

    async fn route(self: &Arc<Self>, request: Request<Incoming>) -> Reply {
        match (request.method(), request.uri().path()) {
            // HEAD too, as load balancers and uptime monitors probe (hyper sends no body).
            (&Method::GET | &Method::HEAD, "/healthz") => {
                reply(StatusCode::OK, json!({ "status": "ok" }))
            }
            (&Method::GET | &Method::HEAD, "/readyz") => self.readiness(),
            (&Method::GET, "/metrics") if self.metrics.is_some() => {
                if !self.authorized(&request) {
                    return unauthorized();
                }
                match &self.metrics {
                    Some(handle) => crate::metrics::exposition(handle),
                    None => rpc_error(StatusCode::NOT_FOUND, -32601, "no metrics"),
                }
            }
            (_, path) if path == self.settings.path => self.mcp(request).await,
            _ => rpc_error(
                StatusCode::NOT_FOUND,
                -32601,
                "not found; the MCP endpoint is elsewhere",
            ),
        }
    }
}

/// The bearer tokens from the variable `bearer_tokens_env` names.
fn tokens(settings: &HttpConfig) -> Result<Vec<String>, String> {
    let Some(name) = &settings.bearer_tokens_env else {
        return Ok(Vec::new());
    };
    let value = std::env::var(name).map_err(|_| {
        format!("http.bearer_tokens_env names {name}, which is not set: refusing to serve without the tokens")
    })?;
    let tokens: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    if tokens.is_empty() {
        return Err(format!(
            "{name} holds no token: refusing to serve without the tokens"
        ));
    }
    Ok(tokens)
}

/// Serves `balancer` over streamable HTTP on `bind` until `stop` resolves, then drains: new
/// requests get 503, calls in flight have `shutdown_grace` to finish, and every session is
/// closed.
pub(crate) async fn serve_http(
    balancer: Arc<Balancer>,
    bind: SocketAddr,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let settings = balancer.config().http.clone();
    let tokens = tokens(&settings)?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| format!("cannot listen on {bind}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    if !local.ip().is_loopback() && tokens.is_empty() {
        // The Host check stops browsers (DNS rebinding), not a client that sets the header.
        tracing::warn!(
            address = %local,
            "serving beyond this machine without bearer tokens: anyone who can reach this port can call the tools (set http.bearer_tokens_env)"
        );
    }
    let closing = CancellationToken::new();
    let hosts = settings.allowed_hosts.clone().unwrap_or_else(|| {
        vec![
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
            "[::1]".into(),
        ]
    });
    let origins = if settings.allowed_origins.is_empty() {
        // Browsers on this machine only: a page elsewhere cannot reach a local server through
        // DNS rebinding.
        vec![
            "http://localhost:*".to_string(),
            "http://127.0.0.1:*".to_string(),
            "http://[::1]:*".to_string(),
        ]
    } else {
        settings.allowed_origins.clone()
    };
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .with_max_request_body_bytes(settings.max_body_bytes)
        // A 2026-07-28 request stands alone: when its first message is the answer, it goes out
        // as one JSON body, not an event stream (one write instead of several; a call that
        // sends progress or logs first still gets the stream). Sessions are not affected.
        .with_json_response(true)
        .with_cancellation_token(closing.child_token());
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(settings.session_ttl);
    // An idle session should cost little: a short queue per session is enough, since each
    // request has its own stream.
    sessions.session_config.channel_capacity = 4;
    let factory_balancer = Arc::clone(&balancer);
    let rmcp = StreamableHttpService::new(
        move || Ok(Gateway::new(Arc::clone(&factory_balancer))),
        Arc::new(Sessions::new(sessions, Arc::clone(&balancer))),
        config,
    );
    let front = Arc::new(Front {
        balancer: Arc::clone(&balancer),
        settings: settings.clone(),
        tokens,
        rmcp,
        draining: AtomicBool::new(false),
        metrics,
        in_flight: AtomicUsize::new(0),
        per_session: parking_lot::Mutex::new(HashMap::new()),
    });
    eprintln!(
        "flowbalancer: serving MCP over HTTP at http://{local}{}",
        settings.path
    );
    tracing::info!(address = %local, path = %settings.path, "serving MCP over streamable HTTP");
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let (stream, _) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Answers go out in several small writes (headers, SSE events): without this, Nagle's
        // algorithm and the client's delayed ACK add ~40 ms to each.
        let _ = stream.set_nodelay(true);
        let front = Arc::clone(&front);
        let closing = closing.clone();
        let header_read_timeout = settings.header_read_timeout;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let front = Arc::clone(&front);
                async move {
                    let started = Instant::now();
                    let method = request.method().clone();
                    let path = request.uri().path().to_string();
                    // Boxed: hyper keeps room for this future in every connection, busy or
                    // idle, so an unboxed one would make each idle session cost its full size.
                    let response = Box::pin(front.route(request)).await;
                    let status = response.status().as_u16();
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    if status >= 400 {
                        tracing::info!(target: "flowbalancer::http", %method, %path, status, ms, "request refused");
                    } else {
                        tracing::debug!(target: "flowbalancer::http", %method, %path, status, ms, "request");
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .max_buf_size(64 * 1024)
                // hyper enforces its header timeout only with a timer to keep it.
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = closing.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
                }
            }
        });
    }
    // Drain: refuse new requests, let those in flight finish within the grace.
    front.draining.store(true, Ordering::SeqCst);
    drop(listener);
    let deadline = Instant::now() + settings.shutdown_grace;
    while front.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unfinished = front.in_flight.load(Ordering::SeqCst);
    if unfinished > 0 {
        tracing::warn!(unfinished, grace = ?settings.shutdown_grace, "calls still running after the shutdown grace are cancelled");
    }
    // Every session closes (its gateway drops, releasing what the session held).
    closing.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
