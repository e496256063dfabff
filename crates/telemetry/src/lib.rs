//! A bounded, deduplicated, rotating event log that can never fill a disk or memory.
//!
//! * [`Event`]s are written as one JSON line each.
//! * Long strings are cut to a bound (default 500 bytes), keeping head and tail on UTF-8
//!   boundaries, with a marker saying how many bytes were cut and a hash of the whole value.
//! * Repeats of an event (same level, target, message template and error kind) within a
//!   window are folded: the first is written, and "repeated N times in W" closes the window.
//!   The fingerprints kept are bounded.
//! * A ring of the most recent events (on `flowbalancer-ringbuf`, overwriting the oldest)
//!   answers [`Telemetry::recent`].
//! * [`Telemetry::record`] never blocks by default: events go through a bounded queue to one
//!   writer thread that batches writes; when the queue is full, events are dropped, counted,
//!   and a "dropped N events" line is written as soon as there is room.
//! * Files rotate by size (and optionally age) between lines, never splitting one; rotated
//!   files are compressed on their own thread (gzip; zstd with the `zstd` feature) and kept
//!   by count and total bytes.
//! * An unwritable directory or a full disk never panics and never stops the application:
//!   errors are counted in [`TelemetryStats`] and writes are retried with backoff.
//! * [`TelemetryLayer`] turns ordinary `tracing` events into telemetry.
//! * [`analysis`] turns raw linter, type-checker, test and build output into a short summary
//!   and a hint.
//!
//! ```
//! use flowbalancer_telemetry::{Event, Level, Telemetry};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let telemetry = Telemetry::builder()
//!     .path(dir.path().join("events.jsonl"))
//!     .max_file_bytes(1024 * 1024)
//!     .build()
//!     .unwrap();
//! telemetry.record(Event::new(Level::Error, "pool", "worker crashed").field("error", "x".repeat(50_000)));
//! telemetry.flush();
//! let text = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
//! assert!(text.len() < 1000, "the 50 KB field was cut");
//! assert_eq!(telemetry.stats().truncated, 1);
//! telemetry.shutdown();
//! ```

pub mod analysis;
mod dedup;
mod event;
mod handoff;
mod layer;
mod line;
mod location;
mod sink;
mod stats;
mod telemetry;
mod truncate;
mod writer;

pub use event::{Event, Level, rfc3339};
pub use layer::{PAYLOAD_TARGETS, TelemetryLayer};
pub use location::default_log_path;
pub use sink::FileConfig;
pub use stats::{Dropped, TelemetryStats};
pub use telemetry::{Telemetry, TelemetryBuilder, TelemetryError};
pub use truncate::{short_hash, truncate};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
