//! Ratios in interleaved rounds: each round runs ours and the peer back to back (alternating
//! which goes first), so both see the same machine state; the report gives the median of the
//! per-round ratios with their spread. MPMC against crossbeam's ArrayQueue (with and without
//! the harness's backoff), SPSC against rtrb (single items and 256-item chunks).
//! Writes a Markdown section into `$FLOWBALANCER_BENCH_EXTRA` for `cargo xtask bench`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowbalancer_benches::{
    TryQueue, Wait, consume_batches, interleaved, median_and_spread, pin, produce_batches,
    rtrb_chunks, run_mpmc_with,
};
use flowbalancer_ringbuf::{Queue, spsc};

// Runs of 5–40 ms and 31 rounds: the VM's phases (cache-line transfers between its two
// vCPUs cost 2–4× more in some stretches than in others) last several rounds, so a figure needs
// rounds from more than one of them; shorter runs mostly measured scheduler noise.
const MPMC_ITEMS: u64 = 1_000_000;
const SPSC_ITEMS: u64 = 2_000_000;
const CAPACITY: usize = 1024;
const CHUNK: usize = 256;

struct ArrayQueue(crossbeam_queue::ArrayQueue<u64>);
impl TryQueue<u64> for ArrayQueue {
    fn try_push(&self, item: u64) -> Result<(), u64> {
        self.0.push(item)
    }
    fn try_pop(&self) -> Option<u64> {
        self.0.pop()
    }
}

/// One producer and one consumer; returns the elapsed time and checks the sum.
fn spsc_pair(produce: impl FnOnce() + Send, consume: impl FnOnce() -> u64) -> Duration {
    let start = Instant::now();
    let sum = std::thread::scope(|s| {
        s.spawn(|| {
            pin(0);
            produce();
        });
        pin(1);
        consume()
    });
    let elapsed = start.elapsed();
    assert_eq!(sum, SPSC_ITEMS * (SPSC_ITEMS - 1) / 2, "items lost");
    elapsed
}

fn ours_single() -> Duration {
    let (mut tx, mut rx) = spsc::channel::<u64>(CAPACITY).expect("capacity");
    spsc_pair(
        move || {
            let mut wait = Wait::default();
            for i in 0..SPSC_ITEMS {
                let mut item = i;
                while let Err(back) = tx.push(item) {
                    item = back;
                    wait.retry();
                }
                wait.reset();
            }
        },
        || {
            let (mut wait, mut sum, mut got) = (Wait::default(), 0u64, 0);
            while got < SPSC_ITEMS {
                match rx.pop() {
                    Some(v) => {
                        sum = sum.wrapping_add(v);
                        got += 1;
                        wait.reset();
                    }
                    None => wait.retry(),
                }
            }
            sum
        },
    )
}

fn rtrb_single() -> Duration {
    let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(CAPACITY);
    spsc_pair(
        move || {
            let mut wait = Wait::default();
            for i in 0..SPSC_ITEMS {
                let mut item = i;
                while let Err(rtrb::PushError::Full(back)) = tx.push(item) {
                    item = back;
                    wait.retry();
                }
                wait.reset();
            }
        },
        || {
            let (mut wait, mut sum, mut got) = (Wait::default(), 0u64, 0);
            while got < SPSC_ITEMS {
                match rx.pop() {
                    Ok(v) => {
                        sum = sum.wrapping_add(v);
                        got += 1;
                        wait.reset();
                    }
                    Err(_) => wait.retry(),
                }
            }
            sum
        },
    )
}

fn ours_chunked() -> Duration {
    let (mut tx, mut rx) = spsc::channel::<u64>(CAPACITY).expect("capacity");
    spsc_pair(
        move || produce_batches(SPSC_ITEMS, CHUNK, |items| tx.push_slice(items)),
        || consume_batches(SPSC_ITEMS, CHUNK, |out| rx.pop_slice(out)),
    )
}

/// Ours fed from an iterator, as rtrb is with `rtrb_chunks::push_from_iter`.
fn ours_chunked_iter() -> Duration {
    let (mut tx, mut rx) = spsc::channel::<u64>(CAPACITY).expect("capacity");
    spsc_pair(
        move || {
            produce_batches(SPSC_ITEMS, CHUNK, |items| {
                tx.push_iter(&mut items.iter().copied())
            })
        },
        || consume_batches(SPSC_ITEMS, CHUNK, |out| rx.pop_slice(out)),
    )
}

/// rtrb in chunks, each pushed with `push` (its slice copy or its iterator fill, see
/// `rtrb_chunks`) and read with one copy per part.
fn rtrb_chunked(push: impl Fn(&mut rtrb::Producer<u64>, &[u64]) -> usize + Send) -> Duration {
    let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(CAPACITY);
    spsc_pair(
        move || produce_batches(SPSC_ITEMS, CHUNK, |items| push(&mut tx, items)),
        || {
            consume_batches(SPSC_ITEMS, CHUNK, |out| {
                rtrb_chunks::pop_copied(&mut rx, out)
            })
        },
    )
}

/// `rounds` interleaved rounds of `ours` and `peer`: the per-round ratios peer time ÷ our
/// time (above 1: we are faster), as median, smallest and largest.
fn rounds(
    rounds: usize,
    ours: impl Fn() -> Duration,
    peer: impl Fn() -> Duration,
) -> (f64, f64, f64) {
    let mut ratios: Vec<f64> = interleaved(rounds, ours, peer)
        .into_iter()
        .map(|(ours_time, peer_time)| peer_time.as_secs_f64() / ours_time.as_secs_f64())
        .collect();
    median_and_spread(&mut ratios)
}

fn main() {
    // `cargo bench` passes flags such as `--bench`; only a filter word would matter, and this
    // bench has a single report.
    let quick = std::env::var_os("FLOWBALANCER_BENCH_QUICK").is_some();
    let n = if quick { 7 } else { 31 };
    let mut rows = Vec::new();
    for (producers, consumers) in [(1, 1), (2, 2)] {
        for backoff in [true, false] {
            let result = rounds(
                n,
                || {
                    run_mpmc_with(
                        Arc::new(Queue::new(CAPACITY).expect("capacity")),
                        producers,
                        consumers,
                        MPMC_ITEMS,
                        backoff,
                    )
                },
                || {
                    run_mpmc_with(
                        Arc::new(ArrayQueue(crossbeam_queue::ArrayQueue::new(CAPACITY))),
                        producers,
                        consumers,
                        MPMC_ITEMS,
                        backoff,
                    )
                },
            );
            let harness = if backoff { "backoff" } else { "no backoff" };
            rows.push((
                format!("MPMC {producers}p{consumers}c, {harness}"),
                "crossbeam ArrayQueue",
                "≥ 1.2×",
                result,
            ));
        }
    }
    rows.push((
        "SPSC single items".to_string(),
        "rtrb",
        "≥ 1.0×",
        rounds(n, ours_single, rtrb_single),
    ));
    rows.push((
        format!("SPSC chunks of {CHUNK}, copied from a slice"),
        "rtrb",
        "≥ 1.0×",
        rounds(n, ours_chunked, || rtrb_chunked(rtrb_chunks::push_copied)),
    ));
    rows.push((
        format!("SPSC chunks of {CHUNK}, taken from an iterator"),
        "rtrb",
        "≥ 1.0×",
        rounds(n, ours_chunked_iter, || {
            rtrb_chunked(rtrb_chunks::push_from_iter)
        }),
    ));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Queues in interleaved rounds\n\n{n} rounds each (ours and the peer back to back, alternating which runs first); ratio = peer time ÷ our time, so above 1 means ours is faster.\n\n| what | peer | goal | median ratio | spread (min – max) |\n|---|---|---|---|---|"
    );
    for (what, peer, goal, (median, low, high)) in &rows {
        let _ = writeln!(
            out,
            "| {what} | {peer} | {goal} | {median:.2}× | {low:.2}× – {high:.2}× |"
        );
    }
    println!("{out}");
    if let Some(dir) = std::env::var_os("FLOWBALANCER_BENCH_EXTRA") {
        let path = std::path::Path::new(&dir).join("10-ringbuf-rounds.md");
        if let Err(e) = std::fs::write(&path, &out) {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
}
