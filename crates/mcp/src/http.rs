//! The streamable-HTTP link: an MCP server at a URL (`http://…`), one client session per
//! worker. Every message we send is a POST carrying the session id; its answer is JSON, or an
//! SSE stream whose events (progress, log messages, the server's own requests, then the
//! answer) are routed as they arrive. A GET stream carries what the server sends outside any
//! request. The session ends with a DELETE when the worker stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use flowbalancer_pool::{ErrorKind, WorkerError};
use http::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::route::dispatch;
use crate::wire::parse;
use crate::worker::{Shared, Waiter};

const SESSION: &str = "mcp-session-id";
const PROTOCOL: &str = "mcp-protocol-version";

/// One client session with an HTTP MCP server.
pub(crate) struct HttpLink {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    session: Mutex<Option<HeaderValue>>,
    protocol: Mutex<Option<HeaderValue>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for HttpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No header values: they may hold credentials.
        f.debug_struct("HttpLink")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl HttpLink {
    /// A link to `url` sending `headers` with every request.
    ///
    /// # Errors
    ///
    /// Why the URL or a header cannot be used.
    pub(crate) fn new(url: &str, headers: &[(String, String)]) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{url:?}: https is not supported yet; reach the server through a local TLS-terminating proxy"
                ));
            }
            _ => return Err(format!("{url:?} is not an http:// URL")),
        }
        let headers = headers
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::try_from(name.as_str())
                    .map_err(|e| format!("header name {name:?}: {e}"))?;
                let value = HeaderValue::try_from(value.as_str())
                    .map_err(|e| format!("the value of header {name}: {e}"))?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        Ok(Self {
            client,
            uri,
            headers,
            session: Mutex::new(None),
            protocol: Mutex::new(None),
            closed: AtomicBool::new(false),
        })
    }

    fn request(&self, method: Method, body: Bytes) -> Result<Request<Full<Bytes>>, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(self.uri.clone())
            .header(ACCEPT, "application/json, text/event-stream");
        if !body.is_empty() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if let Some(session) = self.session.lock().clone() {
            request = request.header(SESSION, session);
        }
        if let Some(protocol) = self.protocol.lock().clone() {
            request = request.header(PROTOCOL, protocol);
        }
        request.body(Full::new(body)).map_err(|e| e.to_string())
    }

    /// The protocol revision agreed in `initialize`, sent with every later request.
    pub(crate) fn set_protocol(&self, version: &str) {
        if let Ok(value) = HeaderValue::try_from(version) {
            *self.protocol.lock() = Some(value);
        }
    }

    /// Ends the session (a DELETE), at most once.
    pub(crate) async fn end_session(&self) {
        if self.closed.swap(true, Ordering::SeqCst) || self.session.lock().is_none() {
            return;
        }
        if let Ok(request) = self.request(Method::DELETE, Bytes::new()) {
            let _ =
                tokio::time::timeout(Duration::from_secs(2), self.client.request(request)).await;
        }
    }

    /// Ends the session in the background.
    pub(crate) fn close(self: &Arc<Self>) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let link = Arc::clone(self);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { link.end_session().await });
        }
    }
}

/// Sends the queued messages, one POST each, all at once; routes what each answer carries.
pub(crate) async fn send_lines(
    shared: Arc<Shared>,
    link: Arc<HttpLink>,
    mut lines: mpsc::UnboundedReceiver<(Option<u64>, Vec<u8>)>,
) {
    loop {
        let died = shared.died.notified();
        tokio::pin!(died);
        died.as_mut().enable();
        if !shared.alive.load(Ordering::SeqCst) {
            return;
        }
        let (call, line) = tokio::select! {
            line = lines.recv() => match line {
                Some(line) => line,
                None => return,
            },
            () = &mut died => return,
        };
        let (shared, link) = (Arc::clone(&shared), Arc::clone(&link));
        tokio::spawn(async move {
            if let Err(error) = post(&shared, &link, call, line).await {
                shared.die(error);
            }
        });
    }
}

/// One POST and its answer. `Err` when the server cannot be used any more.
async fn post(
    shared: &Arc<Shared>,
    link: &HttpLink,
    call: Option<u64>,
    line: Vec<u8>,
) -> Result<(), WorkerError> {
    let crashed = |message: String| {
        WorkerError::new(ErrorKind::Crashed, format!("{}: {message}", shared.label))
    };
    let request = link
        .request(Method::POST, Bytes::from(line))
        .map_err(crashed)?;
    let response = link
        .client
        .request(request)
        .await
        .map_err(|e| crashed(format!("cannot reach {}: {e}", link.uri)))?;
    if let Some(id) = call
        && let Some(Waiter::Call { sent, .. }) = shared.pending.lock().waiting.get_mut(&id)
    {
        *sent = true;
    }
    if let Some(session) = response.headers().get(SESSION) {
        let mut known = link.session.lock();
        if known.is_none() {
            *known = Some(session.clone());
        }
    }
    let status = response.status();
    if status == StatusCode::ACCEPTED {
        return Ok(());
    }
    if status == StatusCode::NOT_FOUND && link.session.lock().is_some() {
        return Err(crashed("the server ended the session".into()));
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        // Nothing will be served without other credentials: the instance ends (its start
        // fails at once, with this reason, instead of waiting out the hello timeout).
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(|v| format!(" (WWW-Authenticate: {v})"))
            .unwrap_or_default();
        return Err(crashed(format!(
            "{} answered HTTP {status}{challenge}: it wants credentials; give them in the tier's headers, for example headers = {{ Authorization = \"Bearer ${{TOKEN}}\" }}",
            link.uri
        )));
    }
    let streaming = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let body = response.into_body();
    if streaming {
        return read_events(shared, body).await;
    }
    let bytes = http_body_util::Limited::new(body, shared.spec.max_message)
        .collect()
        .await
        .map_err(|e| crashed(format!("reading an answer: {e}")))?
        .to_bytes();
    match parse(&bytes) {
        Ok(message) => dispatch(shared, message),
        Err(_) if status.is_success() && bytes.iter().all(u8::is_ascii_whitespace) => Ok(()),
        Err(_) => {
            // Not JSON-RPC: the request (if any) fails; the server may be fine otherwise.
            if let Some(id) = call
                && let Some(Waiter::Call { answer, .. } | Waiter::Own(answer)) =
                    shared.pending.lock().waiting.remove(&id)
            {
                let _ = answer.send(Err(WorkerError::new(
                    ErrorKind::Handler,
                    format!(
                        "{}: {} answered HTTP {status} without a JSON-RPC answer",
                        shared.label, link.uri
                    ),
                )));
            }
            Ok(())
        }
    }
}

/// Routes the events of an SSE stream as they arrive.
async fn read_events(
    shared: &Arc<Shared>,
    mut body: hyper::body::Incoming,
) -> Result<(), WorkerError> {
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Ok(()); // the stream broke off; a resumed stream is not tried
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        buffer.extend_from_slice(data);
        if buffer.len() > shared.spec.max_message {
            return Err(WorkerError::new(
                ErrorKind::Crashed,
                format!(
                    "{}: sent an event larger than the cap of {} bytes",
                    shared.label, shared.spec.max_message
                ),
            ));
        }
        while let Some(end) = event_end(&buffer) {
            let event: Vec<u8> = buffer.drain(..end).collect();
            let mut payload = Vec::new();
            for line in event.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if let Some(data) = line.strip_prefix(b"data:") {
                    if !payload.is_empty() {
                        payload.push(b'\n');
                    }
                    payload.extend_from_slice(data.strip_prefix(b" ").unwrap_or(data));
                }
            }
            if payload.iter().all(u8::is_ascii_whitespace) {
                continue; // a priming or keep-alive event
            }
            let message = parse(&payload).map_err(|e| {
                WorkerError::new(ErrorKind::Crashed, format!("{}: {e}", shared.label))
            })?;
            dispatch(shared, message)?;
        }
    }
    Ok(())
}

/// The end (after the blank line) of the first complete event in `buffer`.
fn event_end(buffer: &[u8]) -> Option<usize> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Listens on the session's GET stream for what the server sends outside any request, while
/// the worker lives (a server without one answers 405, and that is that).
pub(crate) async fn listen(shared: Arc<Shared>, link: Arc<HttpLink>) {
    while shared.alive.load(Ordering::SeqCst) {
        let Ok(request) = link.request(Method::GET, Bytes::new()) else {
            return;
        };
        let response = tokio::select! {
            response = link.client.request(request) => response,
            () = shared.died.notified() => return,
        };
        match response {
            Ok(response) if response.status().is_success() => {
                let read = read_events(&shared, response.into_body());
                tokio::select! {
                    result = read => if let Err(error) = result {
                        shared.die(error);
                        return;
                    },
                    () = shared.died.notified() => return,
                }
            }
            Ok(_) => return, // 405: no such stream
            Err(error) => {
                // The server is gone: this instance is dead (its next call would fail anyway).
                shared.die(WorkerError::new(
                    ErrorKind::Crashed,
                    format!("{}: cannot reach {}: {error}", shared.label, link.uri),
                ));
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_event_ends_with_either_line_ending() {
        assert_eq!(event_end(b"data: {}\n\nrest"), Some(10));
        assert_eq!(event_end(b"data: {}\r\n\r\nrest"), Some(12));
        assert_eq!(event_end(b"data: {}\n"), None);
    }

    #[test]
    fn refuses_urls_it_cannot_serve() {
        assert!(
            HttpLink::new("https://example.com/mcp", &[])
                .unwrap_err()
                .contains("https")
        );
        assert!(HttpLink::new("ftp://example.com/", &[]).is_err());
        assert!(
            HttpLink::new("http://127.0.0.1:9/mcp", &[("bad name".into(), "v".into())]).is_err()
        );
        assert!(
            HttpLink::new(
                "http://127.0.0.1:9/mcp",
                &[("Authorization".into(), "Bearer x".into())]
            )
            .is_ok()
        );
    }
}
