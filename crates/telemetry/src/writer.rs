//! The writer thread: takes lines from the handoff in batches, folds repeats, and writes
//! whole lines to the sink, retrying with backoff when the file is not writable.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::dedup::{Deduper, Verdict};
use crate::event::{Event, Level, now_us};
use crate::handoff::Handoff;
use crate::line::{Line, LineBuffer, format_event};
use crate::sink::Sink;
use crate::stats::Counters;

/// Lines kept for a retry when the file is not writable, at most (older ones are dropped
/// and counted).
const MAX_PENDING_LINES: usize = 100_000;
/// Lines taken from the ring at once.
const BATCH: usize = 4096;
/// How long the writer sleeps when idle before it looks at the dedup windows again.
const IDLE: Duration = Duration::from_millis(200);

/// What the recording side asks of the writer besides lines.
pub(crate) enum Command {
    /// Write everything recorded so far, then answer.
    Flush(Sender<()>),
    /// Write everything, close the dedup windows, answer, and stop.
    Shutdown(Sender<()>),
}

pub(crate) struct Writer {
    sink: Sink,
    dedup: Option<Deduper>,
    counters: Arc<Counters>,
    pending: Vec<Arc<[u8]>>,
    summaries: Vec<Arc<[u8]>>,
    notices: LineBuffer,
    retry_at: Instant,
    backoff: Duration,
}

impl Writer {
    pub(crate) fn new(sink: Sink, dedup: Option<Deduper>, counters: Arc<Counters>) -> Self {
        Self {
            sink,
            dedup,
            counters,
            pending: Vec::new(),
            summaries: Vec::new(),
            notices: LineBuffer::default(),
            retry_at: Instant::now(),
            backoff: Duration::from_millis(50),
        }
    }

    pub(crate) fn run(mut self, handoff: Arc<Handoff>, commands: Receiver<Command>) {
        handoff.register_writer();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let mut acks = Vec::new();
            let mut stop = None;
            let mut orphaned = false;
            loop {
                match commands.try_recv() {
                    Ok(Command::Flush(ack)) => acks.push(ack),
                    Ok(Command::Shutdown(ack)) => stop = Some(ack),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        orphaned = true;
                        break;
                    }
                }
            }
            let finishing = stop.is_some() || orphaned;
            let everything = finishing || !acks.is_empty();
            if finishing {
                handoff.close();
            }
            let mut took = 0;
            loop {
                let n = handoff.queue.pop_batch(&mut batch, BATCH);
                took += n;
                for line in batch.drain(..) {
                    self.accept(line);
                }
                if n > 0 {
                    handoff.drained();
                }
                // A flush or a stop takes every line recorded before it.
                if n == 0 || !everything {
                    break;
                }
                if n > 0 && self.pending.len() >= BATCH {
                    self.write(false);
                }
            }
            if let Some(dedup) = &mut self.dedup {
                dedup.expire(now_us(), &mut self.summaries);
            }
            self.report_drops();
            self.write(everything);
            for ack in acks {
                let _ = ack.send(());
            }
            if finishing {
                self.finish();
                if let Some(ack) = stop {
                    let _ = ack.send(());
                }
                return;
            }
            if took == 0 {
                handoff.park_writer(IDLE, || !commands.is_empty());
            }
        }
    }

    fn accept(&mut self, line: Line) {
        if let Some(dedup) = &mut self.dedup
            && dedup.observe(&line, line.timestamp_us, &mut self.summaries) == Verdict::Fold
        {
            self.counters.deduplicated.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.flush_summaries();
        self.pending.push(line.bytes);
    }

    fn flush_summaries(&mut self) {
        self.pending.append(&mut self.summaries);
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
            let line = format_event(&mut self.notices, &event, 0);
            self.pending.push(line.bytes);
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
