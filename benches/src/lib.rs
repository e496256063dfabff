//! Shared harness for the side-by-side benchmarks: run producers and consumers over any queue
//! with the same waiting strategy, so only the queue differs between implementations.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A bounded queue with non-blocking push and pop, as the MPMC benches drive it.
pub trait TryQueue<T>: Send + Sync {
    /// Pushes, or hands the item back when full.
    fn try_push(&self, item: T) -> Result<(), T>;
    /// Pops, or `None` when empty.
    fn try_pop(&self) -> Option<T>;
}

impl<T: Send> TryQueue<T> for flowbalancer_ringbuf::Queue<T> {
    fn try_push(&self, item: T) -> Result<(), T> {
        self.push(item)
    }
    fn try_pop(&self) -> Option<T> {
        self.pop()
    }
}

/// The wait between failed attempts, the same for every implementation: exponential
/// spinning (1, 2, 4 … 64 pause instructions), then yielding. Retrying at once makes the
/// failing side steal the other side's cache lines on every attempt, and the figures then
/// swing by 10× between runs depending on whether the queue settled full or empty.
#[derive(Debug, Default)]
pub struct Wait(u32, bool);

impl Wait {
    /// No backoff: every failed attempt is retried after a single pause instruction (the
    /// harness variant that shows how a queue behaves under its own contention).
    pub fn spinning() -> Self {
        Self(0, true)
    }

    /// One failed attempt.
    #[inline]
    pub fn retry(&mut self) {
        if self.1 {
            std::hint::spin_loop();
            return;
        }
        if self.0 <= 6 {
            for _ in 0..1u32 << self.0 {
                std::hint::spin_loop();
            }
            self.0 += 1;
        } else {
            std::thread::yield_now();
        }
    }

    /// After a success.
    #[inline]
    pub fn reset(&mut self) {
        self.0 = 0;
    }
}

/// Pins the calling thread to core `index` modulo the number of cores, so producer and
/// consumer threads of a bench land on different cores run after run (without it, the
/// scheduler sometimes stacks both on one core and the figures swing by 5×).
///
/// The cores are listed once, before any thread is pinned: the list comes from the calling
/// thread's affinity mask, and a thread spawned by a pinned thread inherits its single core,
/// so listing them per call would stack every later thread on that core.
pub fn pin(index: usize) {
    static CORES: std::sync::OnceLock<Vec<core_affinity::CoreId>> = std::sync::OnceLock::new();
    let cores = CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default());
    if !cores.is_empty() {
        core_affinity::set_for_current(cores[index % cores.len()]);
    }
}

/// Moves `items` u64 values through `queue` from `producers` threads to `consumers` threads
/// and returns the elapsed time. Checks the sum so no implementation can cheat.
pub fn run_mpmc<Q: TryQueue<u64> + 'static>(
    queue: Arc<Q>,
    producers: usize,
    consumers: usize,
    items: u64,
) -> Duration {
    run_mpmc_with(queue, producers, consumers, items, true)
}

/// [`run_mpmc`], with (`backoff`) or without ([`Wait::spinning`]) the harness's backoff.
pub fn run_mpmc_with<Q: TryQueue<u64> + 'static>(
    queue: Arc<Q>,
    producers: usize,
    consumers: usize,
    items: u64,
    backoff: bool,
) -> Duration {
    let new_wait = move || {
        if backoff {
            Wait::default()
        } else {
            Wait::spinning()
        }
    };
    let per_producer = items / producers as u64;
    let total = per_producer * producers as u64;
    let consumed = AtomicU64::new(0);
    let start = Instant::now();
    let sum = std::thread::scope(|s| {
        for p in 0..producers {
            let queue = Arc::clone(&queue);
            s.spawn(move || {
                pin(p);
                let mut wait = new_wait();
                for i in 0..per_producer {
                    let mut item = p as u64 * per_producer + i;
                    loop {
                        match queue.try_push(item) {
                            Ok(()) => break,
                            Err(back) => {
                                item = back;
                                wait.retry();
                            }
                        }
                    }
                    wait.reset();
                }
            });
        }
        let consumed = &consumed;
        let handles: Vec<_> = (0..consumers)
            .map(|c| {
                let queue = Arc::clone(&queue);
                s.spawn(move || {
                    pin(c + 1);
                    let mut wait = new_wait();
                    let mut sum = 0u64;
                    let mut unflushed = 0;
                    loop {
                        match queue.try_pop() {
                            Some(v) => {
                                sum = sum.wrapping_add(v);
                                unflushed += 1;
                                wait.reset();
                            }
                            None => {
                                // Only when the queue looks empty: publish our count and stop
                                // once every item has been taken by someone.
                                let seen =
                                    consumed.fetch_add(unflushed, Ordering::AcqRel) + unflushed;
                                unflushed = 0;
                                if seen >= total {
                                    break;
                                }
                                wait.retry();
                            }
                        }
                    }
                    sum
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(0))
            .fold(0u64, u64::wrapping_add)
    });
    let elapsed = start.elapsed();
    assert_eq!(sum, total * (total - 1) / 2, "items lost or duplicated");
    elapsed
}

/// Runs `run` for `iters` iterations and returns the summed time (criterion's `iter_custom`).
pub fn repeat(iters: u64, mut run: impl FnMut() -> Duration) -> Duration {
    (0..iters).map(|_| run()).sum()
}

/// `rounds` interleaved rounds of `a` and `b`, after one warm-up of each: every round runs
/// both back to back, alternating which goes first, so both see the same machine state.
/// Returns each round's pair of results, `a`'s first.
pub fn interleaved<T>(rounds: usize, a: impl Fn() -> T, b: impl Fn() -> T) -> Vec<(T, T)> {
    a();
    b();
    (0..rounds)
        .map(|round| {
            if round % 2 == 0 {
                let first = a();
                (first, b())
            } else {
                let second = b();
                (a(), second)
            }
        })
        .collect()
}

/// The median, smallest and largest of `values` (which must not be empty).
pub fn median_and_spread(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

/// A slice-batch producer loop for the SPSC benches: pushes `0..items` in batches of up to
/// `batch` through `push` (copies what fits from a slice and returns how many it took).
pub fn produce_batches(items: u64, batch: usize, mut push: impl FnMut(&[u64]) -> usize) {
    let mut wait = Wait::default();
    let mut buffer = vec![0u64; batch];
    let mut next = 0u64;
    while next < items {
        let len = (items - next).min(batch as u64) as usize;
        for (k, slot) in buffer[..len].iter_mut().enumerate() {
            *slot = next + k as u64;
        }
        let mut sent = 0;
        while sent < len {
            let n = push(&buffer[sent..len]);
            if n == 0 {
                wait.retry();
            } else {
                sent += n;
                wait.reset();
            }
        }
        next += len as u64;
    }
}

/// The matching consumer loop: `pop` fills a slice of up to `batch` and returns how many it
/// wrote; returns the sum of the `items` values received.
pub fn consume_batches(items: u64, batch: usize, mut pop: impl FnMut(&mut [u64]) -> usize) -> u64 {
    let mut wait = Wait::default();
    let mut buffer = vec![0u64; batch];
    let (mut sum, mut got) = (0u64, 0u64);
    while got < items {
        let n = pop(&mut buffer);
        if n == 0 {
            wait.retry();
        } else {
            wait.reset();
            got += n as u64;
            sum = buffer[..n].iter().fold(sum, |a, &v| a.wrapping_add(v));
        }
    }
    sum
}

/// What the custom (non-criterion) benches share: the command-line filter, quick mode, the
/// runtime, the release binary they drive, and where their tables go.
pub mod harness {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    /// Whether the bench `name` runs under the command line's filter (none, a part of `name`,
    /// or a filter containing `key`).
    pub fn selected(name: &str, key: &str) -> bool {
        std::env::args()
            .skip(1)
            .find(|a| !a.starts_with('-'))
            .is_none_or(|f| name.contains(&f) || f.contains(key))
    }

    /// `cargo xtask bench --quick`: short runs.
    pub fn quick() -> bool {
        std::env::var_os("FLOWBALANCER_BENCH_QUICK").is_some()
    }

    /// The runtime every custom bench drives its clients from: 2 worker threads.
    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    }

    /// The workspace's root.
    pub fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// `target/release/flowbalancer`, built first (so the bench measures the current code);
    /// `None`, said on stderr, when it cannot be built. `FLOWBALANCER_BENCH_BINARY` names
    /// another build to measure instead (for an A/B of two commits), used as it is.
    pub fn release_binary(bench: &str) -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("FLOWBALANCER_BENCH_BINARY") {
            return Some(PathBuf::from(path));
        }
        let built = std::process::Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "flowbalancer-cli"])
            .current_dir(root())
            .status();
        if built.is_ok_and(|s| s.success()) {
            Some(root().join("target/release/flowbalancer"))
        } else {
            eprintln!("{bench} bench: cannot build flowbalancer");
            None
        }
    }

    /// A loopback port nothing listens on right now.
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_or(18_500, |a| a.port())
    }

    /// A duration in whole microseconds, for tables.
    pub fn micros(d: Duration) -> String {
        format!("{:.0} µs", d.as_nanos() as f64 / 1000.0)
    }

    /// `ours − floor` in whole microseconds, signed: negative when ours took less.
    pub fn micros_over(ours: Duration, floor: Duration) -> String {
        let nanos = ours.as_nanos() as f64 - floor.as_nanos() as f64;
        format!("{:.0} µs", nanos / 1000.0)
    }

    /// Prints a bench's table and hands it to `cargo xtask bench`'s report as `file`.
    pub fn report(file: &str, table: &str) {
        eprintln!("{table}");
        if let Ok(extra) = std::env::var("FLOWBALANCER_BENCH_EXTRA") {
            let _ = std::fs::write(Path::new(&extra).join(file), table);
        }
    }
}

/// rtrb's two ways to move a chunk, shared by the criterion and the interleaved-rounds benches
/// so that both compare the same code.
pub mod rtrb_chunks {
    /// Pushes what fits of `items` as one chunk of uninitialised slots, filled with one
    /// `copy_nonoverlapping` per part of the ring: the same work as our `push_slice`.
    #[inline]
    pub fn push_copied(tx: &mut rtrb::Producer<u64>, items: &[u64]) -> usize {
        let n = items.len().min(tx.slots());
        if n == 0 {
            return 0;
        }
        let Ok(mut chunk) = tx.write_chunk_uninit(n) else {
            return 0;
        };
        let (first, second) = chunk.as_mut_slices();
        let (head, tail) = items[..n].split_at(first.len());
        // SAFETY: `head` has `first.len()` items and `tail` the remaining `second.len()` (the
        // chunk has exactly `n` slots); the slots are ours until the commit, and `u64` needs
        // no drop.
        unsafe {
            std::ptr::copy_nonoverlapping(head.as_ptr(), first.as_mut_ptr().cast(), head.len());
            std::ptr::copy_nonoverlapping(tail.as_ptr(), second.as_mut_ptr().cast(), tail.len());
            // SAFETY: every slot of the chunk was written just above.
            chunk.commit_all();
        }
        n
    }

    /// Pushes what fits of `items` with rtrb's `fill_from_iter`, item by item.
    #[inline]
    pub fn push_from_iter(tx: &mut rtrb::Producer<u64>, items: &[u64]) -> usize {
        let n = items.len().min(tx.slots());
        if n == 0 {
            return 0;
        }
        match tx.write_chunk_uninit(n) {
            Ok(chunk) => chunk.fill_from_iter(items[..n].iter().copied()),
            Err(_) => 0,
        }
    }

    /// Pops up to `out.len()` items as one chunk, copied out with `copy_from_slice`.
    #[inline]
    pub fn pop_copied(rx: &mut rtrb::Consumer<u64>, out: &mut [u64]) -> usize {
        let n = out.len().min(rx.slots());
        if n == 0 {
            return 0;
        }
        match rx.read_chunk(n) {
            Ok(chunk) => {
                let (first, second) = chunk.as_slices();
                out[..first.len()].copy_from_slice(first);
                out[first.len()..first.len() + second.len()].copy_from_slice(second);
                let taken = first.len() + second.len();
                chunk.commit_all();
                taken
            }
            Err(_) => 0,
        }
    }
}
