//! The queue between the recording threads and the writer thread, and how each side wakes the
//! other without a system call per event.
//!
//! Lines go through the project's lock-free MPMC ring (`flowbalancer-ringbuf`). The writer
//! takes them in batches and parks only when the ring is empty; a recording thread unparks it
//! only when it is parked. With `block_when_full`, a recording thread that finds the ring full
//! waits until the writer has drained half of it, so a burst costs one wake-up per batch
//! instead of one per line.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::time::Duration;

use flowbalancer_ringbuf::Queue;
use parking_lot::{Condvar, Mutex};

use crate::line::Line;

pub(crate) struct Handoff {
    pub(crate) queue: Queue<Line>,
    /// Set while the writer sleeps for lack of lines.
    writer_parked: AtomicBool,
    writer: OnceLock<std::thread::Thread>,
    /// Recording threads waiting for room.
    waiting: AtomicUsize,
    room: Mutex<()>,
    room_freed: Condvar,
    closed: AtomicBool,
}

impl Handoff {
    pub(crate) fn new(queue: Queue<Line>) -> Self {
        Self {
            queue,
            writer_parked: AtomicBool::new(false),
            writer: OnceLock::new(),
            waiting: AtomicUsize::new(0),
            room: Mutex::new(()),
            room_freed: Condvar::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Called by the writer thread once, before it waits for lines.
    pub(crate) fn register_writer(&self) {
        let _ = self.writer.set(std::thread::current());
    }

    /// Whether the writer has stopped taking lines.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Stops taking lines: waiting recording threads give up.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _room = self.room.lock();
        self.room_freed.notify_all();
    }

    /// Wakes the writer if it sleeps.
    pub(crate) fn wake_writer(&self) {
        // Pairs with the fence in `park_writer`: either the writer sees our line, or we see
        // it parked.
        fence(Ordering::SeqCst);
        if self.writer_parked.load(Ordering::Relaxed)
            && let Some(writer) = self.writer.get()
        {
            writer.unpark();
        }
    }

    /// Wakes the writer whether or not it looks parked (a flush or a shutdown request).
    pub(crate) fn wake_writer_now(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }

    /// Hands `line` to the writer. When the ring is full: with `block`, waits for room;
    /// without, gives the line back.
    pub(crate) fn send(&self, mut line: Line, block: bool) -> Result<(), Line> {
        loop {
            match self.queue.push(line) {
                Ok(()) => {
                    self.wake_writer();
                    return Ok(());
                }
                Err(back) => {
                    line = back;
                    if !block || self.is_closed() {
                        return Err(line);
                    }
                    self.wake_writer();
                    let mut room = self.room.lock();
                    self.waiting.fetch_add(1, Ordering::SeqCst);
                    // Until the writer has taken half: one wake-up per batch, not per line.
                    // The timeout is a safety net only; `drained` notifies under this lock.
                    while self.queue.len() > self.queue.capacity() / 2 && !self.is_closed() {
                        self.room_freed
                            .wait_for(&mut room, Duration::from_millis(10));
                    }
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// Called by the writer after taking lines: wakes recording threads waiting for room.
    pub(crate) fn drained(&self) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let _room = self.room.lock();
            self.room_freed.notify_all();
        }
    }

    /// The writer sleeps until a line comes, `more_work` says so, or `timeout` passes.
    pub(crate) fn park_writer(&self, timeout: Duration, more_work: impl Fn() -> bool) {
        self.writer_parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.queue.is_empty() && !more_work() {
            std::thread::park_timeout(timeout);
        }
        self.writer_parked.store(false, Ordering::SeqCst);
    }
}
