//! Events/s through `TelemetryLayer` against tracing-subscriber's JSON formatter over
//! tracing-appender's non_blocking file writer, both lossless (every event written), in one
//! run; and the memory high-water mark during a burst of events.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flowbalancer_telemetry::{FileConfig, Telemetry, TelemetryLayer};
use tracing_subscriber_fmt::layer::SubscriberExt;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `burst` while sampling RSS; returns (elapsed, peak RSS above the start, in MiB).
fn measure(burst: impl FnOnce()) -> (Duration, f64) {
    let base = rss_kb();
    let peak = Arc::new(AtomicU64::new(base));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let started = Instant::now();
    burst();
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    (
        elapsed,
        peak.load(Ordering::Relaxed).saturating_sub(base) as f64 / 1024.0,
    )
}

fn emit(events: u64) {
    for i in 0..events {
        tracing::info!(
            worker = i % 16,
            tool = "echo",
            latency_us = i % 1000,
            "call finished"
        );
    }
}

/// Our layer into one file; with `rotate`, rotated at 64 MiB and the rotated files gzipped on
/// the compression thread (work tracing-appender's `never` file does not do).
fn ours(dir: &Path, events: u64, rotate: bool) -> (Duration, f64) {
    measure(|| {
        let _ = std::fs::remove_file(dir.join("events.jsonl"));
        let max_bytes = if rotate { 64 * 1024 * 1024 } else { u64::MAX };
        let telemetry = Telemetry::builder()
            .file(
                FileConfig::default()
                    .path(dir.join("events.jsonl"))
                    .max_bytes(max_bytes),
            )
            .dedup_window(None)
            .block_when_full(true)
            .build()
            .expect("telemetry");
        let subscriber =
            tracing_subscriber_fmt::registry().with(TelemetryLayer::new(telemetry.clone()));
        tracing::subscriber::with_default(subscriber, || emit(events));
        telemetry.shutdown();
        assert_eq!(telemetry.stats().written, events);
    })
}

fn appender(dir: &Path, events: u64) -> (Duration, f64) {
    measure(|| {
        let _ = std::fs::remove_file(dir.join("appender.jsonl"));
        let file = tracing_appender::rolling::never(dir, "appender.jsonl");
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .finish(file);
        let subscriber = tracing_subscriber_fmt::registry().with(
            tracing_subscriber_fmt::fmt::layer()
                .json()
                .with_writer(writer),
        );
        tracing::subscriber::with_default(subscriber, || emit(events));
        drop(guard); // flushes everything
    })
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// In a child process: run one implementation, print "events_per_sec peak_rss_mib".
fn child(which: &str, events: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |n| match which {
        "ours" => ours(dir.path(), n, false),
        "ours-rotating" => ours(dir.path(), n, true),
        _ => appender(dir.path(), n),
    };
    run(10_000);
    let best = (0..3).map(|_| run(events).0).min().unwrap_or_default();
    println!("{} {}", events as f64 / best.as_secs_f64(), peak_rss_mib());
}

/// Runs one implementation in a fresh process, so each peak RSS is its own.
fn in_child(which: &str, events: u64) -> Option<(f64, f64)> {
    let exe = std::env::current_exe().ok()?;
    let output = std::process::Command::new(exe)
        .env("FB_TELEMETRY_CHILD", which)
        .env("FB_TELEMETRY_EVENTS", events.to_string())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut parts = text.split_whitespace().map(|p| p.parse::<f64>().ok());
    Some((parts.next()??, parts.next()??))
}

fn main() {
    if let Ok(which) = std::env::var("FB_TELEMETRY_CHILD") {
        let events = std::env::var("FB_TELEMETRY_EVENTS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(100_000);
        child(&which, events);
        return;
    }
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter
        .as_deref()
        .is_some_and(|f| !"telemetry".contains(f) && !f.contains("telemetry"))
    {
        return;
    }
    let quick = std::env::var_os("FLOWBALANCER_BENCH_QUICK").is_some();
    let events: u64 = if quick { 200_000 } else { 1_000_000 };
    let (Some((ours_rate, ours_mem)), Some((their_rate, their_mem)), rotating) = (
        in_child("ours", events),
        in_child("appender", events),
        in_child("ours-rotating", events),
    ) else {
        eprintln!("telemetry bench: a child run failed");
        return;
    };
    let rotating_row = match rotating {
        Some((rate, mem)) => format!(
            "| flowbalancer, rotating at 64 MiB and gzipping rotated files | {:.2} M/s | {mem:.1} MiB | {:.2}× |\n",
            rate / 1e6,
            ours_rate / rate
        ),
        None => String::new(),
    };
    let table = format!(
        "## telemetry: {events} tracing events written to a file, lossless\n\n\
         | implementation | events/s | peak RSS of the process | ours ÷ this |\n|---|---:|---:|---:|\n\
         | flowbalancer TelemetryLayer (queue 8192), one file | {:.2} M/s | {ours_mem:.1} MiB | 1.00× |\n\
         | tracing-subscriber JSON + tracing-appender non_blocking, one file | {:.2} M/s | {their_mem:.1} MiB | {:.2}× |\n\
         {rotating_row}\n\
         Best of 3 bursts each, each implementation in its own process (peak RSS = VmHWM). The \
         first two do the same work (one file, no rotation); the last row adds ours' rotation \
         and compression.\n\n",
        ours_rate / 1e6,
        their_rate / 1e6,
        ours_rate / their_rate,
    );
    eprintln!("{table}");
    if let Ok(extra) = std::env::var("FLOWBALANCER_BENCH_EXTRA") {
        let _ = std::fs::write(Path::new(&extra).join("telemetry.md"), &table);
    }
}
