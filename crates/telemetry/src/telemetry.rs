//! `Telemetry`: the non-blocking front and the writer thread behind it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, bounded};
use flowbalancer_ringbuf::Queue;
use parking_lot::Mutex;

use crate::dedup::{Deduper, fingerprint};
use crate::event::Event;
use crate::handoff::Handoff;
use crate::line::{Line, LineBuffer, format_event};
use crate::sink::{FileConfig, Sink, compressor};
use crate::stats::{Counters, TelemetryStats};
use crate::truncate::{Bounds, bound_fields};
use crate::writer::{Command, Writer};

thread_local! {
    /// The line each recording thread formats its events into, reused.
    static LINE: std::cell::RefCell<LineBuffer> = std::cell::RefCell::new(LineBuffer::default());
    /// Set on telemetry's own threads (writer, compression). An event they emit through
    /// `tracing` must not wait on the queue only they drain: it is dropped and counted.
    static OWN_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn mark_own_thread() {
    OWN_THREAD.with(|own| own.set(true));
}

/// Starting telemetry failed (only in strict mode).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The log file cannot be opened or created.
    #[error("cannot open the telemetry file {path:?}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start the telemetry {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Configures [`Telemetry`].
#[derive(Debug, Clone)]
pub struct TelemetryBuilder {
    file: FileConfig,
    max_field_bytes: usize,
    max_depth: usize,
    max_items: usize,
    max_fields: usize,
    max_event_bytes: usize,
    dedup_window: Option<Duration>,
    dedup_capacity: usize,
    recent: usize,
    queue: usize,
    block_when_full: bool,
    strict: bool,
    instance_lock: bool,
}

impl Default for TelemetryBuilder {
    fn default() -> Self {
        Self {
            file: FileConfig::default(),
            max_field_bytes: 500,
            max_depth: 8,
            max_items: 64,
            max_fields: 64,
            max_event_bytes: 16 * 1024,
            dedup_window: Some(Duration::from_secs(60)),
            dedup_capacity: 10_000,
            recent: 1000,
            queue: 8192,
            block_when_full: false,
            strict: false,
            instance_lock: true,
        }
    }
}

impl TelemetryBuilder {
    /// The active log file (default `events.jsonl`).
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.file.path = path.into();
        self
    }

    /// File, rotation and retention settings at once.
    pub fn file(mut self, file: FileConfig) -> Self {
        self.file = file;
        self
    }

    /// Rotate when the file would pass this size (default 10 MiB).
    pub fn max_file_bytes(mut self, bytes: u64) -> Self {
        self.file.max_bytes = bytes;
        self
    }

    /// Rotated files kept (default 10) and their total size (default 100 MiB).
    pub fn retention(mut self, files: usize, bytes: u64) -> Self {
        self.file.keep_files = files;
        self.file.keep_bytes = bytes;
        self
    }

    /// Longest string value before it is cut (default 500 bytes).
    pub fn max_field_bytes(mut self, bytes: usize) -> Self {
        self.max_field_bytes = bytes;
        self
    }

    /// Deepest nesting of arrays and objects in a field (default 8); deeper values are
    /// replaced by a marker.
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth.max(1);
        self
    }

    /// Most items kept per array or object (default 64); the rest is counted in a marker.
    pub fn max_items(mut self, items: usize) -> Self {
        self.max_items = items;
        self
    }

    /// Most fields per event (default 64); the rest is counted in `fields_cut`.
    pub fn max_fields(mut self, fields: usize) -> Self {
        self.max_fields = fields;
        self
    }

    /// Largest event (message and fields as JSON, default 16 KiB): the largest fields of a
    /// bigger event are replaced by markers until it fits.
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }

    /// The dedup window (default 60 s; `None` writes every event).
    pub fn dedup_window(mut self, window: Option<Duration>) -> Self {
        self.dedup_window = window;
        self
    }

    /// Recent events kept for [`Telemetry::recent`] (default 1000).
    pub fn recent(mut self, events: usize) -> Self {
        self.recent = events;
        self
    }

    /// Events that may wait for the writer (default 8192): the memory bound of the queue.
    pub fn queue(mut self, events: usize) -> Self {
        self.queue = events;
        self
    }

    /// Make `record` wait when the queue is full instead of dropping (default: drop, count,
    /// and report).
    pub fn block_when_full(mut self, block: bool) -> Self {
        self.block_when_full = block;
        self
    }

    /// Claim the file for this instance with an advisory lock (`path.lock`, default on): when
    /// another instance holds it, this one writes to `stem-<pid>.ext` instead, so two
    /// instances never interleave, rotate or delete each other's files.
    pub fn instance_lock(mut self, lock: bool) -> Self {
        self.instance_lock = lock;
        self
    }

    /// Fail `build` when the file cannot be opened (default: start anyway, count the errors and
    /// keep retrying).
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Starts the writer (and compression) threads.
    ///
    /// # Errors
    ///
    /// In strict mode, [`TelemetryError::Open`] when the file cannot be opened; always,
    /// [`TelemetryError::Thread`] when a thread cannot start.
    pub fn build(mut self) -> Result<Telemetry, TelemetryError> {
        let counters = Arc::new(Counters::default());
        let lock = if self.instance_lock {
            let (path, lock) = crate::location::claim(&self.file.path);
            self.file.path = path;
            lock
        } else {
            None
        };
        let (compress_tx, compress_handle) = if self.file.compress {
            let (tx, rx) = crossbeam_channel::unbounded();
            let config = self.file.clone();
            let c = Arc::clone(&counters);
            let handle = std::thread::Builder::new()
                .name("flowbalancer-telemetry-compress".into())
                .spawn(move || {
                    mark_own_thread();
                    compressor(config, c, rx)
                })
                .map_err(|source| TelemetryError::Thread {
                    what: "compression",
                    source,
                })?;
            (Some(tx), Some(handle))
        } else {
            (None, None)
        };
        let mut sink = Sink::new(self.file.clone(), Arc::clone(&counters), compress_tx);
        if let Err(source) = sink.open() {
            if self.strict {
                return Err(TelemetryError::Open {
                    path: self.file.path.clone(),
                    source,
                });
            }
            counters.io_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(path = %self.file.path.display(), error = %source, "telemetry file not writable yet; retrying in the background");
        }
        let handoff = Arc::new(Handoff::new(Queue::new(self.queue.max(2)).map_err(
            |e| TelemetryError::Thread {
                what: "queue",
                source: std::io::Error::other(e.to_string()),
            },
        )?));
        let (tx, rx) = crossbeam_channel::unbounded();
        let dedup = self
            .dedup_window
            .map(|w| Deduper::new(w.as_micros() as u64, self.dedup_capacity));
        let writer_counters = Arc::clone(&counters);
        let writer_handoff = Arc::clone(&handoff);
        let writer = std::thread::Builder::new()
            .name("flowbalancer-telemetry-writer".into())
            .spawn(move || {
                mark_own_thread();
                // The instance lock lives as long as the writer.
                let _lock = lock;
                Writer::new(sink, dedup, writer_counters).run(writer_handoff, rx)
            })
            .map_err(|source| TelemetryError::Thread {
                what: "writer",
                source,
            })?;
        let path = self.file.path.clone();
        Ok(Telemetry {
            shared: Arc::new(Shared {
                path,
                tx,
                handoff,
                dedup: self.dedup_window.is_some(),
                ring: Queue::new(self.recent.max(1)).map_err(|e| TelemetryError::Thread {
                    what: "ring",
                    source: std::io::Error::other(e.to_string()),
                })?,
                counters,
                bounds: Bounds {
                    max_string: self.max_field_bytes,
                    max_depth: self.max_depth,
                    max_items: self.max_items,
                    max_fields: self.max_fields,
                    max_event_bytes: self.max_event_bytes,
                },
                block_when_full: self.block_when_full,
                reading: Mutex::new(()),
                threads: Mutex::new(Some((writer, compress_handle))),
            }),
        })
    }
}

/// The writer thread and, when compressing, the compression thread.
type Threads = (JoinHandle<()>, Option<JoinHandle<()>>);

struct Shared {
    /// The active file (after the instance lock chose it).
    path: PathBuf,
    /// Flush and shutdown requests.
    tx: Sender<Command>,
    /// Formatted lines on their way to the writer.
    handoff: Arc<Handoff>,
    /// Whether repeats are folded (then each line carries its fingerprint).
    dedup: bool,
    /// The most recent lines, for `recent()`.
    ring: Queue<Arc<[u8]>>,
    counters: Arc<Counters>,
    bounds: Bounds,
    block_when_full: bool,
    reading: Mutex<()>,
    threads: Mutex<Option<Threads>>,
}

/// A bounded, deduplicated, rotating JSONL event log. Cheap to clone; `record` never blocks
/// by default. See the crate docs.
#[derive(Clone)]
pub struct Telemetry {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Telemetry {
    /// Configures telemetry.
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder::default()
    }

    /// The active log file this instance writes.
    pub fn path(&self) -> &std::path::Path {
        &self.shared.path
    }

    /// Records an event: long strings are cut, the event joins the ring of recent events and
    /// goes to the writer. Returns whether it was accepted (false: dropped because the queue
    /// was full; counted and reported in the log).
    pub fn record(&self, event: Event) -> bool {
        if !self.admit() {
            return false;
        }
        self.record_admitted(event)
    }

    /// `record` after [`admit`](Self::admit) said yes.
    pub(crate) fn record_admitted(&self, mut event: Event) -> bool {
        let shared = &*self.shared;
        let cut = bound_fields(&mut event.message, &mut event.fields, &shared.bounds);
        self.count_cuts(cut);
        let fingerprint = if shared.dedup { fingerprint(&event) } else { 0 };
        let line = with_line_buffer(|buffer| format_event(buffer, &event, fingerprint));
        self.enqueue(line)
    }

    /// Whether a record may go ahead (counted as recorded); false on telemetry's own threads
    /// (dropped and counted: waiting for the queue only they drain could wait forever) and
    /// after shutdown.
    pub(crate) fn admit(&self) -> bool {
        let shared = &*self.shared;
        if OWN_THREAD.with(std::cell::Cell::get) {
            shared
                .counters
                .own_events_dropped
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if shared.handoff.is_closed() {
            return false;
        }
        shared.counters.recorded.fetch_add(1, Ordering::Relaxed);
        true
    }

    pub(crate) fn count_cuts(&self, cuts: usize) {
        if cuts > 0 {
            self.shared
                .counters
                .truncated
                .fetch_add(cuts as u64, Ordering::Relaxed);
        }
    }

    pub(crate) fn bounds(&self) -> &Bounds {
        &self.shared.bounds
    }

    pub(crate) fn folds_repeats(&self) -> bool {
        self.shared.dedup
    }

    /// Puts a formatted line in the ring of recent events and hands it to the writer.
    pub(crate) fn enqueue(&self, line: Line) -> bool {
        let shared = &*self.shared;
        let _ = shared.ring.force_push(Arc::clone(&line.bytes));
        match shared.handoff.send(line, shared.block_when_full) {
            Ok(()) => true,
            Err(_) if shared.handoff.is_closed() => false,
            Err(_) => {
                shared
                    .counters
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                shared
                    .counters
                    .unreported_drops
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// The most recent events (up to the ring's size), oldest first.
    ///
    /// The ring is lock-free; reading takes its events out and puts them back, so while other
    /// threads record at the same moment, the snapshot is exact but an event recorded during
    /// the read may be evicted a little early.
    pub fn recent(&self) -> Vec<Event> {
        let ring = &self.shared.ring;
        let _one_reader = self.shared.reading.lock();
        let mut lines = Vec::new();
        ring.pop_batch(&mut lines, usize::MAX);
        for line in &lines {
            let _ = ring.force_push(Arc::clone(line));
        }
        let mut events: Vec<Event> = lines
            .iter()
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect();
        events.sort_by_key(|e| e.timestamp_us);
        events
    }

    /// Waits until every event accepted so far is written to the file (or failed to be).
    pub fn flush(&self) {
        let (ack, done) = bounded(1);
        if self.shared.tx.send(Command::Flush(ack)).is_ok() {
            self.shared.handoff.wake_writer_now();
            let _ = done.recv();
        }
    }

    /// Writes everything accepted, closes the dedup windows, waits for the compression of
    /// rotated files, and stops the threads. Later records are dropped.
    pub fn shutdown(&self) {
        self.shared.stop();
    }

    /// The counters.
    pub fn stats(&self) -> TelemetryStats {
        self.shared.counters.snapshot()
    }
}

impl Shared {
    /// Asks the writer to finish, then waits for it and for the compression thread (which
    /// ends when the writer drops its channel).
    fn stop(&self) {
        let Some((writer, compressor)) = self.threads.lock().take() else {
            return;
        };
        let (ack, done) = bounded(1);
        if self.tx.send(Command::Shutdown(ack)).is_ok() {
            self.handoff.wake_writer_now();
            let _ = done.recv();
        }
        let _ = writer.join();
        if let Some(compressor) = compressor {
            let _ = compressor.join();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `f` with this thread's line buffer (a fresh one if it is in use).
pub(crate) fn with_line_buffer<R>(f: impl FnOnce(&mut LineBuffer) -> R) -> R {
    LINE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => f(&mut buffer),
        Err(_) => f(&mut LineBuffer::default()),
    })
}
