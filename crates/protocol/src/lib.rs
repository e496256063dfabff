//! The flowbalancer worker protocol, and the worker side of it in Rust.
//!
//! A pool (`flowbalancer-pool`) talks to each subprocess worker over the worker's stdin and
//! stdout with length-prefixed JSON frames ([`frame`]) carrying the [`message`]s of protocol
//! version 2: `hello`, `call`, `result`, `error`, `progress`, `cancel`, `ping`, `pong`,
//! `shutdown`. A Rust worker needs only this crate: register tools on a [`WorkerServer`] and
//! serve them on stdio — no pool, no process management, no `nix`.
//!
//! ```no_run
//! use flowbalancer_protocol::WorkerServer;
//! use serde_json::json;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> std::io::Result<()> {
//!     WorkerServer::new("my-worker")
//!         .tool("echo", "returns its params", json!({"type": "object"}), |params| async move {
//!             Ok(params)
//!         })
//!         .serve_stdio()
//!         .await
//! }
//! ```
//!
//! Serving in memory, as a test would:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use flowbalancer_protocol::frame::{read_frame, write_frame};
//! use flowbalancer_protocol::{Message, WorkerServer};
//! use serde_json::json;
//!
//! let (pool_side, worker_side) = tokio::io::duplex(64 * 1024);
//! let (worker_in, worker_out) = tokio::io::split(worker_side);
//! let server = WorkerServer::new("doubler").tool("double", "", json!({}), |p| async move {
//!     Ok(json!(p["n"].as_i64().unwrap_or(0) * 2))
//! });
//! tokio::spawn(server.serve(worker_in, worker_out));
//! let (mut from_worker, mut to_worker) = tokio::io::split(pool_side);
//! let hello: Message = serde_json::from_slice(&read_frame(&mut from_worker, 1 << 20).await?)?;
//! assert!(matches!(hello, Message::Hello { protocol: 2, .. }));
//! let call = json!({"type": "call", "id": 1, "method": "double", "params": {"n": 21}});
//! write_frame(&mut to_worker, call.to_string().as_bytes(), 1 << 20).await?;
//! let answer: Message = serde_json::from_slice(&read_frame(&mut from_worker, 1 << 20).await?)?;
//! assert_eq!(answer, Message::Result { id: 1, result: json!(42) });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod error;
pub mod frame;
pub mod message;
mod server;
mod tool;

pub use error::{ErrorKind, WorkerError};
pub use message::{CallMeta, ErrorBody, Message, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION};
pub use server::{CallContext, WorkerServer};
pub use tool::ToolSpec;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
