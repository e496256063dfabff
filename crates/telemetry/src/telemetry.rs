//! `Telemetry`: the non-blocking front and the writer thread behind it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use flowbalancer_ringbuf::Queue;
use parking_lot::Mutex;

use crate::dedup::{Deduper, Verdict};
use crate::event::{Event, Level, now_us};
use crate::sink::{FileConfig, Sink, compressor};
use crate::stats::{Counters, TelemetryStats};
use crate::truncate::{Bounds, bound_fields};

thread_local! {
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
        let (tx, rx) = bounded(self.queue.max(1));
        let dedup = self
            .dedup_window
            .map(|w| Deduper::new(w.as_micros() as u64, self.dedup_capacity));
        let writer_counters = Arc::clone(&counters);
        let writer = std::thread::Builder::new()
            .name("flowbalancer-telemetry-writer".into())
            .spawn(move || {
                mark_own_thread();
                // The instance lock lives as long as the writer.
                let _lock = lock;
                Writer::new(sink, dedup, writer_counters).run(rx)
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

enum Command {
    Event(Arc<Event>),
    Flush(Sender<()>),
    Shutdown(Sender<()>),
}

/// The writer thread and, when compressing, the compression thread.
type Threads = (JoinHandle<()>, Option<JoinHandle<()>>);

struct Shared {
    /// The active file (after the instance lock chose it).
    path: PathBuf,
    tx: Sender<Command>,
    ring: Queue<Arc<Event>>,
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
    pub fn record(&self, mut event: Event) -> bool {
        let shared = &*self.shared;
        if OWN_THREAD.with(std::cell::Cell::get) {
            // Emitted by the writer or compression thread itself (a warning about the disk,
            // say): waiting for the queue here could wait forever. Dropped and counted.
            shared
                .counters
                .own_events_dropped
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        shared.counters.recorded.fetch_add(1, Ordering::Relaxed);
        let cut = bound_fields(&mut event.message, &mut event.fields, &shared.bounds);
        if cut > 0 {
            shared
                .counters
                .truncated
                .fetch_add(cut as u64, Ordering::Relaxed);
        }
        // One allocation shared by the ring of recent events and the writer.
        let event = Arc::new(event);
        let _ = shared.ring.force_push(Arc::clone(&event));
        let command = Command::Event(event);
        if shared.block_when_full {
            return shared.tx.send(command).is_ok();
        }
        match shared.tx.try_send(command) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
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
        let mut events = Vec::new();
        ring.pop_batch(&mut events, usize::MAX);
        for event in &events {
            let _ = ring.force_push(Arc::clone(event));
        }
        let mut events: Vec<Event> = events.iter().map(|e| Event::clone(e)).collect();
        events.sort_by_key(|e| e.timestamp_us);
        events
    }

    /// Waits until every event accepted so far is written to the file (or failed to be).
    pub fn flush(&self) {
        let (ack, done) = bounded(1);
        if self.shared.tx.send(Command::Flush(ack)).is_ok() {
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

/// Lines kept for a retry when the file is not writable, at most (older ones are dropped
/// and counted).
const MAX_PENDING_LINES: usize = 100_000;
const BATCH: usize = 4096;

struct Writer {
    lines: crate::event::LineFormatter,
    sink: Sink,
    dedup: Option<Deduper>,
    counters: Arc<Counters>,
    pending: Vec<String>,
    summaries: Vec<Event>,
    retry_at: Instant,
    backoff: Duration,
}

impl Writer {
    fn new(sink: Sink, dedup: Option<Deduper>, counters: Arc<Counters>) -> Self {
        Self {
            lines: crate::event::LineFormatter::default(),
            sink,
            dedup,
            counters,
            pending: Vec::new(),
            summaries: Vec::new(),
            retry_at: Instant::now(),
            backoff: Duration::from_millis(50),
        }
    }

    fn run(mut self, rx: Receiver<Command>) {
        loop {
            let first = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(command) => Some(command),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    self.finish();
                    return;
                }
            };
            let mut acks = Vec::new();
            let mut stop = None;
            for command in first.into_iter().chain(rx.try_iter().take(BATCH)) {
                match command {
                    Command::Event(event) => self.accept(event),
                    Command::Flush(ack) => acks.push(ack),
                    Command::Shutdown(ack) => {
                        stop = Some(ack);
                        break;
                    }
                }
            }
            if let Some(dedup) = &mut self.dedup {
                dedup.expire(now_us(), &mut self.summaries);
            }
            self.report_drops();
            self.write(!acks.is_empty() || stop.is_some());
            for ack in acks {
                let _ = ack.send(());
            }
            if let Some(ack) = stop {
                // Everything sent before the shutdown is written.
                for command in rx.try_iter() {
                    if let Command::Event(event) = command {
                        self.accept(event);
                    }
                }
                self.finish();
                let _ = ack.send(());
                return;
            }
        }
    }

    fn accept(&mut self, event: Arc<Event>) {
        if let Some(dedup) = &mut self.dedup
            && dedup.observe(&event, event.timestamp_us, &mut self.summaries) == Verdict::Fold
        {
            self.counters.deduplicated.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.flush_summaries();
        self.pending.push(self.lines.line(&event));
    }

    fn flush_summaries(&mut self) {
        for summary in self.summaries.drain(..) {
            self.pending.push(self.lines.line(&summary));
        }
    }

    fn report_drops(&mut self) {
        let drops = self.counters.unreported_drops.swap(0, Ordering::Relaxed);
        if drops > 0 {
            self.flush_summaries();
            let event = Event::new(
                Level::Warn,
                "flowbalancer_telemetry",
                format!("dropped {drops} events (queue full)"),
            )
            .field("dropped", drops);
            self.pending.push(self.lines.line(&event));
        }
    }

    /// Writes what is pending; after an error, waits for the backoff unless `force`.
    fn write(&mut self, force: bool) {
        self.flush_summaries();
        if self.pending.is_empty() || (!force && Instant::now() < self.retry_at) {
            return;
        }
        match self.sink.write_lines(&mut self.pending) {
            Ok(()) => self.backoff = Duration::from_millis(50),
            Err(error) => {
                self.counters.io_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, "telemetry write failed; will retry");
                self.retry_at = Instant::now()
                    .checked_add(self.backoff)
                    .unwrap_or_else(Instant::now);
                self.backoff = self.backoff.saturating_mul(2).min(Duration::from_secs(5));
                if self.pending.len() > MAX_PENDING_LINES {
                    let excess = self.pending.len() - MAX_PENDING_LINES;
                    self.pending.drain(..excess);
                    self.counters
                        .dropped_io
                        .fetch_add(excess as u64, Ordering::Relaxed);
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Some(dedup) = &mut self.dedup {
            dedup.drain(now_us(), &mut self.summaries);
        }
        self.report_drops();
        self.write(true);
        let _ = self.sink.flush();
        if !self.pending.is_empty() {
            self.counters
                .dropped_io
                .fetch_add(self.pending.len() as u64, Ordering::Relaxed);
        }
    }
}
