//! The wake-up protocol: tasks park on a `WaitList` until a condition holds.
//!
//! A waiting task registers its waker, then re-checks its condition (queue not empty, queue
//! not full, closed); a task that changes the state makes the change first, then looks for
//! waiters. Either the waiter sees the new state, or the notifier sees the waiter — never
//! neither (the "store buffering" outcome), because every access in the pattern is `SeqCst`:
//!
//! - the changes: the queue's position compare-exchanges (every push and pop, batches and
//!   `force_push` included), `closed`, and the handle counts' last step to "gone";
//! - the conditions' reads of them (`Queue::is_empty`, `Queue::is_full`, `closed`, the
//!   handle counts);
//! - the waiter count's stores (under the list's lock) and the notifier's load of it.
//!
//! All `SeqCst` accesses lie in one total order that agrees with each thread's program order.
//! If the waiter's re-check comes before the change in it, the waiter's registration (before
//! its re-check) comes before the notifier's count load (after its change), and that load sees
//! the waiter. So the hot path (a notification after each send or receive) needs no fence: on
//! x86 it is one plain load. The waiter's side keeps a fence, which costs only when it parks.
//!
//! loom regards `SeqCst` accesses as `AcqRel` (it would report this pattern as a lost
//! wake-up that cannot happen), so under loom the notifier puts a `SeqCst` fence, which loom
//! does model, in place of that order. Modelled with loom in `tests/loom.rs`.
//!
//! A notification goes to the oldest waiter, which leaves the list. If that waiter is dropped
//! (its future cancelled) before it acts, it passes the notification on, so a cancelled future
//! never swallows the wake-up another task needed.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::loom::sync::Mutex;
use crate::loom::sync::atomic::{AtomicUsize, Ordering, fence};

/// Tasks waiting for one kind of change, oldest first.
#[derive(Debug)]
pub(crate) struct WaitList {
    /// The number of registered waiters, readable without the lock (the notifier's fast path).
    count: AtomicUsize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// Registration order = id order, so the first entry is the oldest waiter.
    waiting: BTreeMap<u64, Waker>,
}

impl WaitList {
    pub(crate) fn new() -> Self {
        Self {
            count: AtomicUsize::new(0),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Wakes the oldest waiter, if any. The caller has made its change visible already.
    pub(crate) fn notify_one(&self) {
        self.notify(1);
    }

    /// Wakes up to `n` waiters, oldest first. The caller made its change with a `SeqCst`
    /// atomic operation that the waiters' conditions read with `SeqCst` loads (see the module
    /// documentation).
    pub(crate) fn notify(&self, n: usize) {
        // Under loom only: loom does not order `SeqCst` accesses (see the module docs).
        #[cfg(loom)]
        fence(Ordering::SeqCst);
        // `SeqCst`: ordered after the caller's change, against the waiter's registration.
        if n == 0 || self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut woken = Vec::new();
        {
            let mut inner = self.inner.lock();
            while woken.len() < n {
                let Some((_, waker)) = inner.waiting.pop_first() else {
                    break;
                };
                woken.push(waker);
            }
            self.count.store(inner.waiting.len(), Ordering::SeqCst);
        }
        // Wake outside the lock: a waker may run the task inline.
        for waker in woken {
            waker.wake();
        }
    }

    /// Wakes every waiter (close).
    pub(crate) fn notify_all(&self) {
        self.notify(usize::MAX);
    }

    /// The number of registered waiters right now.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Registers `waker` (a new entry, or updates entry `id` if it is still waiting).
    fn register(&self, id: Option<u64>, waker: &Waker) -> u64 {
        let mut inner = self.inner.lock();
        if let Some(id) = id
            && let Some(existing) = inner.waiting.get_mut(&id)
        {
            if !existing.will_wake(waker) {
                existing.clone_from(waker);
            }
            return id;
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.waiting.insert(id, waker.clone());
        self.count.store(inner.waiting.len(), Ordering::SeqCst);
        id
    }

    /// Removes entry `id`; `false` when it was no longer there (it was notified).
    fn remove(&self, id: u64) -> bool {
        let mut inner = self.inner.lock();
        let present = inner.waiting.remove(&id).is_some();
        self.count.store(inner.waiting.len(), Ordering::SeqCst);
        present
    }

    fn contains(&self, id: u64) -> bool {
        self.inner.lock().waiting.contains_key(&id)
    }
}

/// One task's place on a `WaitList`, kept across the waits of one operation and cleaned up
/// when the operation ends or is cancelled.
#[derive(Debug)]
pub(crate) struct Waiter<'a> {
    list: &'a WaitList,
    id: Option<u64>,
    /// Waits in a row that found their condition already true (see `Until::poll`).
    ready_at_once: u32,
}

/// How many waits in a row may find their condition true at once before the task gives the
/// runtime a turn (see `Until::poll`).
const SPINS_BEFORE_YIELD: u32 = 64;

impl<'a> Waiter<'a> {
    pub(crate) fn new(list: &'a WaitList) -> Self {
        Self {
            list,
            id: None,
            ready_at_once: 0,
        }
    }

    /// A future that is ready once `condition()` holds, checked on every wake-up.
    pub(crate) fn until<F: Fn() -> bool>(&mut self, condition: F) -> Until<'_, 'a, F> {
        Until {
            waiter: self,
            condition,
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take()
            && !self.list.remove(id)
        {
            // We were notified but are going away without acting on it: pass it on.
            self.list.notify_one();
        }
    }
}

/// See [`Waiter::until`].
#[derive(Debug)]
pub(crate) struct Until<'w, 'a, F> {
    waiter: &'w mut Waiter<'a>,
    condition: F,
}

// `Until` never pins its closure: it only calls it through `&`. So it can move freely.
impl<F> Unpin for Until<'_, '_, F> {}

impl<F: Fn() -> bool> Future for Until<'_, '_, F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // `Until` holds only a reference and a closure; nothing is pinned structurally.
        let this = self.get_mut();
        let list = this.waiter.list;
        // A notification we received is used up by this poll, whatever it finds.
        if let Some(id) = this.waiter.id
            && !list.contains(id)
        {
            this.waiter.id = None;
        }
        if (this.condition)() {
            // The operation failed, yet the state says it may succeed: the state changed
            // meanwhile, or the item (or free slot) is still in another thread's hands. The
            // queue answers from the one slot it would use, so a message whose producer has
            // claimed its position but not finished writing it reads as "not empty" here and
            // "nothing to take" to `pop`, for the few instructions that producer needs. Pause
            // for it; and if it takes long (that thread was preempted), let the runtime run
            // other tasks before the next try instead of spinning in this poll.
            this.waiter.ready_at_once += 1;
            if this.waiter.ready_at_once < SPINS_BEFORE_YIELD {
                crate::loom::pause();
                return Poll::Ready(());
            }
            this.waiter.ready_at_once = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.waiter.ready_at_once = 0;
        this.waiter.id = Some(list.register(this.waiter.id, cx.waker()));
        // Our registration, then this re-check (the registration's count store is `SeqCst`
        // already; the fence keeps the order under loom too, and costs only when parking).
        fence(Ordering::SeqCst);
        if (this.condition)() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wake-ups.
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_wait_that_keeps_finding_its_condition_true_gives_the_runtime_a_turn() {
        let list = WaitList::new();
        let mut waiter = Waiter::new(&list);
        let counting = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counting));
        let mut cx = Context::from_waker(&waker);
        // An operation that keeps failing while its condition says it may succeed (an item
        // still being written): the first waits pause and return at once ...
        for attempt in 1..SPINS_BEFORE_YIELD {
            let ready = Pin::new(&mut waiter.until(|| true)).poll(&mut cx);
            assert_eq!(ready, Poll::Ready(()), "attempt {attempt}");
        }
        assert_eq!(counting.0.load(Ordering::SeqCst), 0);
        // ... then one returns to the runtime, already woken so it is polled again soon,
        // without registering on the list.
        {
            let mut until = waiter.until(|| true);
            assert_eq!(Pin::new(&mut until).poll(&mut cx), Poll::Pending);
            assert_eq!(counting.0.load(Ordering::SeqCst), 1);
            assert_eq!(list.len(), 0);
            // The next poll goes on retrying, and the count starts again.
            assert_eq!(Pin::new(&mut until).poll(&mut cx), Poll::Ready(()));
        }
        assert_eq!(waiter.ready_at_once, 1);
    }

    #[test]
    fn a_wait_that_parks_starts_the_count_again() {
        let list = WaitList::new();
        let mut waiter = Waiter::new(&list);
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..10 {
            let _ = Pin::new(&mut waiter.until(|| true)).poll(&mut cx);
        }
        assert_eq!(waiter.ready_at_once, 10);
        assert_eq!(
            Pin::new(&mut waiter.until(|| false)).poll(&mut cx),
            Poll::Pending
        );
        assert_eq!(waiter.ready_at_once, 0);
        assert_eq!(list.len(), 1, "parked on the list");
    }
}
