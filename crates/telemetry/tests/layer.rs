//! Events from `tracing` are formatted on the recording thread: the lines must say exactly
//! what an `Event` with the same content says, within the same bounds, folded the same way.

use std::path::Path;

use flowbalancer_telemetry::{Event, Level, Telemetry, TelemetryLayer};
use tracing_subscriber::layer::SubscriberExt;

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn with_layer(telemetry: &Telemetry, emit: impl FnOnce()) {
    let subscriber = tracing_subscriber::registry().with(TelemetryLayer::new(telemetry.clone()));
    tracing::subscriber::with_default(subscriber, emit);
    telemetry.flush();
}

#[test]
fn a_tracing_event_is_written_as_the_same_line_an_event_makes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let telemetry = Telemetry::builder()
        .path(&path)
        .max_field_bytes(64)
        .dedup_window(None)
        .build()
        .unwrap();
    let long = "x".repeat(500);
    with_layer(&telemetry, || {
        let span = tracing::info_span!("call", tool = "echo", worker = 1u64, shared = "span");
        let _guard = span.enter();
        tracing::warn!(
            shared = "event wins",
            quote = "a \"quoted\"\nline\u{1}",
            negative = -7i64,
            ratio = 0.25,
            flag = true,
            debug = ?vec![1, 2],
            long = %long,
            "worker {} slow: {}",
            3,
            "é"
        );
    });
    let written = lines(&path);
    assert_eq!(written.len(), 1, "{written:?}");
    let event: Event = serde_json::from_str(&written[0]).unwrap();
    assert_eq!(event.level, Level::Warn);
    assert_eq!(event.message, "worker 3 slow: é");
    assert_eq!(event.fields["tool"], "echo");
    assert_eq!(event.fields["worker"], 1);
    assert_eq!(event.fields["shared"], "event wins");
    assert_eq!(event.fields["quote"], "a \"quoted\"\nline\u{1}");
    assert_eq!(event.fields["negative"], -7);
    assert_eq!(event.fields["ratio"], 0.25);
    assert_eq!(event.fields["flag"], true);
    assert_eq!(event.fields["debug"], "[1, 2]");
    let cut = event.fields["long"].as_str().unwrap();
    assert!(cut.len() < 200 && cut.contains("cut"), "{cut}");
    // Byte for byte what the event itself serializes to (fields sorted, same escaping).
    assert_eq!(format!("{}\n", written[0]), event.to_line());
    assert_eq!(telemetry.stats().truncated, 1);
    assert_eq!(telemetry.recent(), vec![event]);
    telemetry.shutdown();
}

#[test]
fn events_over_the_field_count_or_size_bound_are_cut_like_any_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let telemetry = Telemetry::builder()
        .path(&path)
        .max_fields(3)
        .max_field_bytes(4000)
        .max_event_bytes(1000)
        .dedup_window(None)
        .build()
        .unwrap();
    let big = "y".repeat(3000);
    with_layer(&telemetry, || {
        tracing::info!(a = 1, b = 2, c = 3, d = 4, e = 5, "many");
        tracing::info!(big = %big, small = 1, "large");
    });
    let written: Vec<Event> = lines(&path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(written.len(), 2);
    assert_eq!(written[0].fields.len(), 4, "{:?}", written[0].fields);
    assert_eq!(written[0].fields["fields_cut"], 2);
    assert!(lines(&path)[1].len() <= 1100, "{}", lines(&path)[1].len());
    assert!(
        written[1].fields["big"]
            .as_str()
            .unwrap()
            .contains("bytes cut")
    );
    assert_eq!(written[1].fields["small"], 1);
    telemetry.shutdown();
}

#[test]
fn repeats_through_the_layer_fold_by_level_target_template_and_error_kind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let telemetry = Telemetry::builder().path(&path).build().unwrap();
    with_layer(&telemetry, || {
        for i in 0..5 {
            tracing::error!(error_kind = "timeout", "call {} failed", i);
        }
        tracing::error!(error_kind = "crash", "call 9 failed");
    });
    telemetry.shutdown();
    let written: Vec<Event> = lines(&path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let messages: Vec<&str> = written.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[0], "call 0 failed");
    assert_eq!(
        messages[1], "call 9 failed",
        "another error kind is another event"
    );
    assert!(
        messages[2].starts_with("call 0 failed (repeated 4 times in "),
        "{messages:?}"
    );
    assert_eq!(written[2].fields["repeated"], 4);
    assert_eq!(telemetry.stats().deduplicated, 4);
}

/// The layer tells the subscriber the most verbose level it records: with it alone, a
/// `debug!` is not even built (the subscriber's max level says so), while a target turned up
/// to DEBUG raises the hint.
#[test]
fn the_layer_bounds_the_subscribers_level_so_unwanted_events_are_never_built() {
    use tracing::subscriber::Subscriber as _;
    use tracing_subscriber::filter::LevelFilter;
    let dir = tempfile::tempdir().unwrap();
    let telemetry = Telemetry::builder()
        .path(dir.path().join("events.jsonl"))
        .build()
        .unwrap();
    let default = tracing_subscriber::registry().with(TelemetryLayer::new(telemetry.clone()));
    assert_eq!(default.max_level_hint(), Some(LevelFilter::INFO));
    let raised = tracing_subscriber::registry().with(
        TelemetryLayer::new(telemetry.clone())
            .level(tracing::Level::WARN)
            .target("flowbalancer_pool", Some(tracing::Level::DEBUG)),
    );
    assert_eq!(raised.max_level_hint(), Some(LevelFilter::DEBUG));
    let mut built = false;
    tracing::subscriber::with_default(default, || {
        tracing::debug!(
            value = {
                built = true;
                1
            },
            "not wanted"
        );
    });
    assert!(
        !built,
        "a DEBUG event's fields were evaluated under an INFO layer"
    );
    telemetry.shutdown();
}
