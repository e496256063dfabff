//! Ring buffers side by side: flowbalancer-ringbuf against crossbeam-queue's ArrayQueue,
//! crossbeam-channel, rtrb and the ringbuf crate, in one run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowbalancer_benches::{
    TryQueue, Wait, consume_batches, pin, produce_batches, repeat, rtrb_chunks, run_mpmc,
};
use flowbalancer_ringbuf::{Queue, spsc};

const ITEMS: u64 = 200_000;
const CAPACITY: usize = 1024;
const BATCH: usize = 256;

struct ArrayQueue(crossbeam_queue::ArrayQueue<u64>);
impl TryQueue<u64> for ArrayQueue {
    fn try_push(&self, item: u64) -> Result<(), u64> {
        self.0.push(item)
    }
    fn try_pop(&self) -> Option<u64> {
        self.0.pop()
    }
}

struct Channel(
    crossbeam_channel::Sender<u64>,
    crossbeam_channel::Receiver<u64>,
);
impl TryQueue<u64> for Channel {
    fn try_push(&self, item: u64) -> Result<(), u64> {
        self.0.try_send(item).map_err(|e| e.into_inner())
    }
    fn try_pop(&self) -> Option<u64> {
        self.1.try_recv().ok()
    }
}

fn ours() -> Arc<Queue<u64>> {
    Arc::new(Queue::new(CAPACITY).expect("capacity"))
}
fn array_queue() -> Arc<ArrayQueue> {
    Arc::new(ArrayQueue(crossbeam_queue::ArrayQueue::new(CAPACITY)))
}
fn channel() -> Arc<Channel> {
    let (tx, rx) = crossbeam_channel::bounded(CAPACITY);
    Arc::new(Channel(tx, rx))
}

fn mpmc(c: &mut Criterion) {
    for (producers, consumers) in [(1, 1), (2, 2)] {
        let mut group = c.benchmark_group(format!("mpmc_{producers}p{consumers}c"));
        group.throughput(Throughput::Elements(ITEMS));
        group.sample_size(20);
        group.bench_function("flowbalancer Queue", |b| {
            b.iter_custom(|n| repeat(n, || run_mpmc(ours(), producers, consumers, ITEMS)))
        });
        group.bench_function("crossbeam ArrayQueue", |b| {
            b.iter_custom(|n| repeat(n, || run_mpmc(array_queue(), producers, consumers, ITEMS)))
        });
        group.bench_function("crossbeam-channel bounded", |b| {
            b.iter_custom(|n| repeat(n, || run_mpmc(channel(), producers, consumers, ITEMS)))
        });
        group.finish();
    }
}

/// One producer and one consumer moving batches of 256 through the MPMC queue.
fn mpmc_batched(queue: &Queue<u64>) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            pin(0);
            let mut wait = Wait::default();
            let mut next = 0u64;
            let mut batch = Vec::with_capacity(BATCH);
            while next < ITEMS {
                batch.extend(next..(next + BATCH as u64).min(ITEMS));
                next += batch.len() as u64;
                while !batch.is_empty() {
                    if queue.push_batch(&mut batch) == 0 {
                        wait.retry();
                    } else {
                        wait.reset();
                    }
                }
            }
        });
        pin(1);
        let mut wait = Wait::default();
        let mut got = 0u64;
        let mut sum = 0u64;
        let mut out = Vec::with_capacity(BATCH);
        while got < ITEMS {
            out.clear();
            let n = queue.pop_batch(&mut out, BATCH);
            if n == 0 {
                wait.retry();
            } else {
                wait.reset();
                got += n as u64;
                sum = out.iter().fold(sum, |a, &v| a.wrapping_add(v));
            }
        }
        assert_eq!(sum, ITEMS * (ITEMS - 1) / 2);
    });
    start.elapsed()
}

fn mpmc_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("mpmc_1p1c_batch256");
    group.throughput(Throughput::Elements(ITEMS));
    group.sample_size(20);
    group.bench_function("flowbalancer Queue batch", |b| {
        b.iter_custom(|n| repeat(n, || mpmc_batched(&Queue::new(CAPACITY).expect("capacity"))))
    });
    group.bench_function("flowbalancer Queue single", |b| {
        b.iter_custom(|n| repeat(n, || run_mpmc(ours(), 1, 1, ITEMS)))
    });
    group.bench_function("crossbeam ArrayQueue single", |b| {
        b.iter_custom(|n| repeat(n, || run_mpmc(array_queue(), 1, 1, ITEMS)))
    });
    group.finish();
}

/// Runs `produce` and `consume` on two threads; `consume` returns the sum it saw.
fn spsc_run(produce: impl FnOnce() + Send, consume: impl FnOnce() -> u64) -> Duration {
    let start = Instant::now();
    let sum = std::thread::scope(|s| {
        s.spawn(|| {
            pin(0);
            produce()
        });
        pin(1);
        consume()
    });
    let elapsed = start.elapsed();
    assert_eq!(sum, ITEMS * (ITEMS - 1) / 2);
    elapsed
}

fn spsc_single(c: &mut Criterion) {
    let mut group = c.benchmark_group("spsc_single");
    group.throughput(Throughput::Elements(ITEMS));
    group.sample_size(20);
    group.bench_function("flowbalancer spsc", |b| {
        b.iter_custom(|n| {
            repeat(n, || {
                let (mut tx, mut rx) = spsc::channel::<u64>(CAPACITY).expect("capacity");
                spsc_run(
                    move || {
                        let mut wait = Wait::default();
                        for i in 0..ITEMS {
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
                        while got < ITEMS {
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
            })
        })
    });
    group.bench_function("rtrb", |b| {
        b.iter_custom(|n| {
            repeat(n, || {
                let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(CAPACITY);
                spsc_run(
                    move || {
                        let mut wait = Wait::default();
                        for i in 0..ITEMS {
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
                        while got < ITEMS {
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
            })
        })
    });
    group.bench_function("ringbuf HeapRb", |b| {
        use ringbuf::traits::{Consumer as _, Producer as _, Split as _};
        b.iter_custom(|n| {
            repeat(n, || {
                let (mut tx, mut rx) = ringbuf::HeapRb::<u64>::new(CAPACITY).split();
                spsc_run(
                    move || {
                        let mut wait = Wait::default();
                        for i in 0..ITEMS {
                            let mut item = i;
                            while let Err(back) = tx.try_push(item) {
                                item = back;
                                wait.retry();
                            }
                            wait.reset();
                        }
                    },
                    || {
                        let (mut wait, mut sum, mut got) = (Wait::default(), 0u64, 0);
                        while got < ITEMS {
                            match rx.try_pop() {
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
            })
        })
    });
    group.finish();
}

/// One run of `ITEMS` through an rtrb ring in chunks of `BATCH`, pushed with `push`.
fn rtrb_chunk_run(push: impl Fn(&mut rtrb::Producer<u64>, &[u64]) -> usize + Send) -> Duration {
    let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(CAPACITY);
    spsc_run(
        move || produce_batches(ITEMS, BATCH, |items| push(&mut tx, items)),
        || consume_batches(ITEMS, BATCH, |out| rtrb_chunks::pop_copied(&mut rx, out)),
    )
}

fn spsc_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("spsc_batch256");
    group.throughput(Throughput::Elements(ITEMS));
    group.sample_size(20);
    group.bench_function("flowbalancer spsc", |b| {
        b.iter_custom(|n| {
            repeat(n, || {
                let (mut tx, mut rx) = spsc::channel::<u64>(CAPACITY).expect("capacity");
                spsc_run(
                    move || produce_batches(ITEMS, BATCH, |items| tx.push_slice(items)),
                    || consume_batches(ITEMS, BATCH, |out| rx.pop_slice(out)),
                )
            })
        })
    });
    // rtrb in both of its ways to fill a chunk: a slice copy into uninitialised slots (the
    // same work as our `push_slice`), and `fill_from_iter`, item by item.
    group.bench_function("rtrb chunks copied from a slice", |b| {
        b.iter_custom(|n| repeat(n, || rtrb_chunk_run(rtrb_chunks::push_copied)))
    });
    group.bench_function("rtrb chunks from an iterator", |b| {
        b.iter_custom(|n| repeat(n, || rtrb_chunk_run(rtrb_chunks::push_from_iter)))
    });
    group.bench_function("ringbuf HeapRb slices", |b| {
        use ringbuf::traits::{Consumer as _, Producer as _, Split as _};
        b.iter_custom(|n| {
            repeat(n, || {
                let (mut tx, mut rx) = ringbuf::HeapRb::<u64>::new(CAPACITY).split();
                spsc_run(
                    move || produce_batches(ITEMS, BATCH, |items| tx.push_slice(items)),
                    || consume_batches(ITEMS, BATCH, |out| rx.pop_slice(out)),
                )
            })
        })
    });
    group.finish();
}

criterion_group!(benches, mpmc, mpmc_batch, spsc_single, spsc_batch);
criterion_main!(benches);
