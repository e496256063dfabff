//! Counters of the telemetry pipeline.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) recorded: AtomicU64,
    pub(crate) written: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_io: AtomicU64,
    /// Drops not yet reported in the log.
    pub(crate) unreported_drops: AtomicU64,
    pub(crate) deduplicated: AtomicU64,
    pub(crate) truncated: AtomicU64,
    pub(crate) rotations: AtomicU64,
    pub(crate) compression_errors: AtomicU64,
    pub(crate) io_errors: AtomicU64,
    pub(crate) own_events_dropped: AtomicU64,
}

/// Dropped events by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct Dropped {
    /// The queue to the writer was full (non-blocking mode).
    pub queue_full: u64,
    /// The file could not be written for long enough that the retry buffer overflowed.
    pub io: u64,
}

/// The pipeline at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct TelemetryStats {
    /// Events handed to `record`.
    pub recorded: u64,
    /// Lines written to the file (events, summaries, drop notices).
    pub written: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Dropped events, by reason.
    pub dropped: Dropped,
    /// Repeats folded into a "repeated N times" line.
    pub deduplicated: u64,
    /// String values cut to the bound.
    pub truncated: u64,
    /// Files rotated.
    pub rotations: u64,
    /// Rotated files that could not be compressed.
    pub compression_errors: u64,
    /// Failed opens and writes (each retried with backoff).
    pub io_errors: u64,
    /// Events emitted by telemetry's own threads, dropped so they never wait on their own
    /// queue.
    pub own_events_dropped: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> TelemetryStats {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        TelemetryStats {
            recorded: load(&self.recorded),
            written: load(&self.written),
            bytes: load(&self.bytes),
            dropped: Dropped {
                queue_full: load(&self.dropped_queue_full),
                io: load(&self.dropped_io),
            },
            deduplicated: load(&self.deduplicated),
            truncated: load(&self.truncated),
            rotations: load(&self.rotations),
            compression_errors: load(&self.compression_errors),
            io_errors: load(&self.io_errors),
            own_events_dropped: load(&self.own_events_dropped),
        }
    }
}
