//! Telemetry never deadlocks on its own queue: with `block_when_full`, a small queue and a
//! file that fails every write (`/dev/full`), the writer thread's own warnings go through
//! the global subscriber into the same telemetry — and are dropped and counted instead of
//! waiting for the queue only that thread drains.
#![cfg(target_os = "linux")]

use std::time::Duration;

use flowbalancer_telemetry::{Event, Level, Telemetry, TelemetryLayer};
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn events_from_telemetrys_own_threads_never_wait_on_its_queue() {
    let telemetry = Telemetry::builder()
        .path("/dev/full")
        .instance_lock(false)
        .queue(2)
        .block_when_full(true)
        .dedup_window(None)
        .build()
        .unwrap();
    // Everything, debug included, from every thread, into the telemetry itself.
    let layer = TelemetryLayer::new(telemetry.clone()).level(tracing::Level::TRACE);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let recorder = {
        let telemetry = telemetry.clone();
        std::thread::spawn(move || {
            for i in 0..2_000 {
                telemetry.record(Event::new(Level::Info, "test", "event").field("i", i));
            }
            let _ = done.send(());
        })
    };
    // A deadlock shows as a recorder that never finishes.
    match finished.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => {}
        Err(_) => panic!("recording blocked for 60 s: {:?}", telemetry.stats()),
    }
    recorder.join().unwrap();
    let stats = telemetry.stats();
    assert!(
        stats.io_errors > 0,
        "/dev/full failed the writes: {stats:?}"
    );
    assert!(
        stats.own_events_dropped > 0,
        "the writer's own warnings were dropped, not queued: {stats:?}"
    );
    // Shutting down does not hang either (the writer gives up the unwritable lines).
    let (stopped, stop) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        telemetry.shutdown();
        let _ = stopped.send(());
    });
    assert!(
        stop.recv_timeout(Duration::from_secs(60)).is_ok(),
        "shutdown hung"
    );
}
