//! `[http]`: `serve` over MCP's streamable HTTP transport.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `serve` over MCP's streamable HTTP transport: many clients, one set of pools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Where to listen (none: stdio; `serve --http ADDR` overrides). Loopback unless told
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// The MCP endpoint's path (default `/mcp`).
    #[serde(default = "default_http_path")]
    pub path: String,
    /// Browser origins allowed to call (`https://app.example.com`, `http://localhost:*`).
    /// A request with another `Origin` gets 403 (DNS-rebinding protection); requests without
    /// an `Origin` (non-browser clients) pass.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Host names accepted in the `Host` header (default: `localhost`, `127.0.0.1`, `::1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_hosts: Option<Vec<String>>,
    /// An environment variable holding the accepted bearer tokens, comma-separated; a request
    /// without one of them gets 401 (none: no authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_tokens_env: Option<String>,
    /// The largest request body (default 4 MiB); a larger one gets 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Requests served at once overall (default 1024); one more gets 429 with `Retry-After`.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_requests: usize,
    /// Requests served at once per session (default 64); one more gets 429.
    #[serde(default = "default_max_per_session")]
    pub max_requests_per_session: usize,
    /// A session unused this long is closed and what it held released (default 30 min).
    #[serde(default = "default_session_ttl", with = "crate::duration")]
    pub session_ttl: Duration,
    /// On SIGTERM or SIGINT, how long in-flight calls may take to finish (default 10 s).
    #[serde(default = "default_drain", with = "crate::duration")]
    pub shutdown_grace: Duration,
    /// A connection that has not sent a whole request head within this is closed (default
    /// 30 s): a client that trickles its headers cannot hold a connection open for ever.
    #[serde(default = "default_header_read_timeout", with = "crate::duration")]
    pub header_read_timeout: Duration,
}

fn default_http_path() -> String {
    "/mcp".into()
}
fn default_max_body() -> usize {
    4 * 1024 * 1024
}
fn default_max_concurrent() -> usize {
    1024
}
fn default_max_per_session() -> usize {
    64
}
fn default_session_ttl() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_drain() -> Duration {
    Duration::from_secs(10)
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: None,
            path: default_http_path(),
            allowed_origins: Vec::new(),
            allowed_hosts: None,
            bearer_tokens_env: None,
            max_body_bytes: default_max_body(),
            max_concurrent_requests: default_max_concurrent(),
            max_requests_per_session: default_max_per_session(),
            session_ttl: default_session_ttl(),
            shutdown_grace: default_drain(),
            header_read_timeout: default_header_read_timeout(),
        }
    }
}

impl HttpConfig {
    /// Reads a listening address: an IP address with a port (`127.0.0.1:8080`, `[::1]:8080`,
    /// `0.0.0.0:8080`), or `localhost:PORT`, which is the IPv4 loopback.
    ///
    /// ```
    /// use flowbalancer::HttpConfig;
    ///
    /// assert_eq!(HttpConfig::parse_bind("localhost:8080").unwrap().to_string(), "127.0.0.1:8080");
    /// assert_eq!(HttpConfig::parse_bind("[::1]:9000").unwrap().port(), 9000);
    /// assert!(HttpConfig::parse_bind("8080").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// A message naming the text and what is accepted.
    pub fn parse_bind(text: &str) -> Result<std::net::SocketAddr, String> {
        let text = text.trim();
        if let Ok(address) = text.parse() {
            return Ok(address);
        }
        let port = text
            .rsplit_once(':')
            .filter(|(host, _)| host.eq_ignore_ascii_case("localhost"))
            .and_then(|(_, port)| port.parse::<u16>().ok());
        port.map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .ok_or_else(|| {
                format!(
                    "{text:?} is not an address with a port (127.0.0.1:8080, localhost:8080, [::1]:8080, 0.0.0.0:8080)"
                )
            })
    }
}
