//! The whole pipeline with real files: rotation, compression, exactly-once, failures.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use flowbalancer_telemetry::{Event, FileConfig, Level, Telemetry};

/// Every line of the active file and of every rotated file (decompressed).
fn all_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut text = String::new();
        if name.ends_with(".gz") {
            flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
                .read_to_string(&mut text)
                .unwrap();
        } else if name.ends_with(".jsonl") {
            text = std::fs::read_to_string(&path).unwrap();
        } else if name.ends_with(".jsonl.lock") {
            continue; // the instance lock: empty
        } else {
            panic!("unexpected file {name}");
        }
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{name} ends mid-line"
        );
        lines.extend(text.lines().map(str::to_string));
    }
    lines
}

#[test]
fn eight_threads_rotating_every_64_kib_write_every_accepted_event_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let telemetry = Telemetry::builder()
        .file(
            FileConfig::default()
                .path(dir.path().join("events.jsonl"))
                .max_bytes(64 * 1024)
                .keep_files(usize::MAX)
                .keep_bytes(u64::MAX),
        )
        .dedup_window(None)
        .queue(8192)
        .build()
        .unwrap();
    let accepted: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                let telemetry = telemetry.clone();
                s.spawn(move || {
                    let mut accepted = Vec::new();
                    for i in 0..100_000u64 {
                        let id = t * 1_000_000 + i;
                        if telemetry
                            .record(Event::new(Level::Info, "load", "event").field("id", id))
                        {
                            accepted.push(id);
                        }
                    }
                    accepted
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    telemetry.shutdown();
    let stats = telemetry.stats();
    let accepted: Vec<u64> = accepted.into_iter().flatten().collect();
    assert_eq!(accepted.len() as u64 + stats.dropped.queue_full, 800_000);
    let mut seen = HashSet::new();
    let mut drop_notices = 0;
    for line in all_lines(dir.path()) {
        let value: serde_json::Value = serde_json::from_str(&line).expect("every line parses");
        match value["fields"]["id"].as_u64() {
            Some(id) => assert!(seen.insert(id), "event {id} written twice"),
            None => {
                assert!(
                    value["message"].as_str().unwrap().starts_with("dropped "),
                    "{line}"
                );
                drop_notices += value["fields"]["dropped"].as_u64().unwrap();
            }
        }
    }
    assert_eq!(seen.len(), accepted.len(), "every accepted event written");
    assert!(accepted.iter().all(|id| seen.contains(id)));
    assert_eq!(
        drop_notices, stats.dropped.queue_full,
        "every drop reported in the log"
    );
    assert!(stats.rotations >= 10, "rotated {} times", stats.rotations);
    assert_eq!(stats.compression_errors, 0);
    assert_eq!(stats.io_errors, 0);
}

#[test]
fn retention_keeps_the_newest_files_within_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    // A user's files next to the log, with names close to the rotations': never touched.
    for other in [
        "events.2024.csv",
        "events.1.jsonl.bak",
        "events.old.jsonl",
        "notes.txt",
    ] {
        std::fs::write(dir.path().join(other), "mine").unwrap();
    }
    let telemetry = Telemetry::builder()
        .file(
            FileConfig::default()
                .path(dir.path().join("events.jsonl"))
                .max_bytes(4 * 1024)
                .keep_files(3),
        )
        .dedup_window(None)
        .block_when_full(true)
        .build()
        .unwrap();
    for i in 0..5_000 {
        telemetry.record(Event::new(Level::Info, "t", "e").field("i", i));
    }
    telemetry.shutdown();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("events.") && !n.ends_with(".lock"))
        .filter(|n| {
            !["events.2024.csv", "events.1.jsonl.bak", "events.old.jsonl"].contains(&n.as_str())
        })
        .collect();
    names.sort();
    assert_eq!(names.len(), 4, "the active file and 3 rotated: {names:?}");
    for other in [
        "events.2024.csv",
        "events.1.jsonl.bak",
        "events.old.jsonl",
        "notes.txt",
    ] {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(other)).unwrap(),
            "mine",
            "{other} untouched by retention"
        );
    }
    assert!(
        names.iter().filter(|n| n.ends_with(".jsonl.gz")).count() == 3,
        "{names:?}"
    );
    let rotations = telemetry.stats().rotations;
    assert!(
        names.contains(&format!("events.{rotations}.jsonl.gz")),
        "the newest is kept: {names:?}"
    );
}

#[test]
fn a_full_disk_never_panics_and_is_counted() {
    let telemetry = Telemetry::builder()
        .path("/dev/full")
        .dedup_window(None)
        .build()
        .unwrap();
    for i in 0..1_000 {
        telemetry.record(Event::new(Level::Error, "t", "e").field("i", i));
    }
    telemetry.flush();
    let stats = telemetry.stats();
    assert!(stats.io_errors >= 1, "{stats:?}");
    assert_eq!(stats.written, 0);
    telemetry.shutdown();
    assert!(
        telemetry.stats().dropped.io > 0,
        "events that could never be written are counted"
    );
}

#[test]
fn an_unwritable_directory_is_counted_or_refused_when_strict() {
    // As root, permissions do not stop writes; a path under a regular file or /proc cannot be
    // created by anyone.
    for path in [
        "/proc/flowbalancer-test/events.jsonl",
        "/etc/hostname/events.jsonl",
    ] {
        let telemetry = Telemetry::builder().path(path).build().unwrap();
        assert!(telemetry.record(Event::new(Level::Info, "t", "still works")));
        assert_eq!(telemetry.recent().len(), 1, "the application keeps going");
        telemetry.flush();
        assert!(telemetry.stats().io_errors >= 1);
        telemetry.shutdown();
        let error = Telemetry::builder()
            .path(path)
            .strict(true)
            .build()
            .unwrap_err();
        assert!(
            error.to_string().contains("cannot open the telemetry file"),
            "{error}"
        );
    }
}

#[test]
fn a_full_queue_drops_counts_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let telemetry = Telemetry::builder()
        .path(dir.path().join("events.jsonl"))
        .queue(1)
        .dedup_window(None)
        .build()
        .unwrap();
    let accepted = (0..20_000)
        .filter(|i| telemetry.record(Event::new(Level::Info, "t", "e").field("i", *i)))
        .count();
    telemetry.shutdown();
    let stats = telemetry.stats();
    assert!(stats.dropped.queue_full > 0, "a queue of 1 overflows");
    assert_eq!(accepted as u64 + stats.dropped.queue_full, 20_000);
    let text = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    assert!(text.contains("dropped "), "a drop notice was written");
}

#[test]
fn repeated_events_are_folded_and_summarized() {
    let dir = tempfile::tempdir().unwrap();
    let telemetry = Telemetry::builder()
        .path(dir.path().join("events.jsonl"))
        .dedup_window(Some(Duration::from_secs(3600)))
        .build()
        .unwrap();
    for i in 0..1_000 {
        telemetry.record(
            Event::new(Level::Error, "pool", format!("worker {i} crashed"))
                .field("error_kind", "crash"),
        );
    }
    telemetry.record(Event::new(Level::Info, "pool", "something else"));
    telemetry.shutdown(); // closes the window
    let text = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[2].contains("repeated 999 times"), "{}", lines[2]);
    assert_eq!(telemetry.stats().deduplicated, 999);
}

#[test]
fn recent_returns_the_last_events_in_order() {
    let telemetry = Telemetry::builder()
        .path("/dev/null")
        .recent(5)
        .dedup_window(None)
        .build()
        .unwrap();
    for i in 0..12 {
        telemetry.record(Event::new(Level::Info, "t", format!("e{i}")));
    }
    let recent: Vec<String> = telemetry.recent().into_iter().map(|e| e.message).collect();
    assert_eq!(recent, ["e7", "e8", "e9", "e10", "e11"]);
    assert_eq!(telemetry.recent().len(), 5, "reading does not consume");
    telemetry.shutdown();
}
