//! Private by default: file modes, one instance per file, the layer's filter.

use std::os::unix::fs::PermissionsExt;

use flowbalancer_telemetry::{Event, FileConfig, Level, Telemetry, TelemetryLayer};
use tracing_subscriber::layer::SubscriberExt;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn files_are_private_and_created_directories_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/deeper/events.jsonl");
    let telemetry = Telemetry::builder()
        .file(FileConfig::default().path(path.clone()).max_bytes(2048))
        .dedup_window(None)
        .block_when_full(true)
        .build()
        .unwrap();
    for i in 0..200 {
        telemetry.record(Event::new(Level::Info, "t", "event").field("i", i));
    }
    telemetry.shutdown();
    assert_eq!(mode(&dir.path().join("new")), 0o700);
    assert_eq!(mode(&dir.path().join("new/deeper")), 0o700);
    let files: Vec<_> = std::fs::read_dir(dir.path().join("new/deeper"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        files.len() >= 3,
        "rotated and compressed files too: {files:?}"
    );
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn a_second_instance_gets_a_file_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let first = Telemetry::builder().path(&path).build().unwrap();
    let second = Telemetry::builder().path(&path).build().unwrap();
    assert_eq!(first.path(), path);
    assert_eq!(
        second.path(),
        dir.path()
            .join(format!("events-{}.jsonl", std::process::id()))
    );
    first.record(Event::new(Level::Info, "t", "from the first"));
    second.record(Event::new(Level::Info, "t", "from the second"));
    first.shutdown();
    second.shutdown();
    let one = std::fs::read_to_string(&path).unwrap();
    let two = std::fs::read_to_string(second.path()).unwrap();
    assert!(one.contains("from the first") && !one.contains("from the second"));
    assert!(two.contains("from the second") && !two.contains("from the first"));
    // Once the first is gone, its file is free again.
    let third = Telemetry::builder().path(&path).build().unwrap();
    assert_eq!(third.path(), path);
    third.shutdown();
}

#[test]
fn the_layer_takes_info_and_above_and_no_payload_target_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let telemetry = Telemetry::builder()
        .path(dir.path().join("events.jsonl"))
        .dedup_window(None)
        .build()
        .unwrap();
    let layer = TelemetryLayer::new(telemetry.clone());
    assert!(layer.records("flowbalancer_pool", &tracing::Level::INFO));
    assert!(!layer.records("flowbalancer_pool", &tracing::Level::DEBUG));
    assert!(!layer.records("rmcp::service", &tracing::Level::WARN));
    assert!(
        layer.records("rmcpx", &tracing::Level::INFO),
        "a prefix only on a :: boundary"
    );
    let subscriber = tracing_subscriber::registry().with(
        layer
            .clone()
            .target("noisy", None)
            .target("chatty::detail", Some(tracing::Level::DEBUG)),
    );
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(target: "rmcp::service", arguments = "secret-argument", "request");
        tracing::debug!(target: "flowbalancer", "debug detail");
        tracing::warn!(target: "noisy::part", "silenced");
        tracing::debug!(target: "chatty::detail", "wanted detail");
        tracing::info!(target: "flowbalancer", "kept");
    });
    let messages: Vec<String> = telemetry
        .recent()
        .iter()
        .map(|e| e.message.clone())
        .collect();
    assert_eq!(messages, ["wanted detail", "kept"]);
    // With payloads asked for, rmcp's events come in.
    let open = layer.log_payloads(true);
    assert!(open.records("rmcp::service", &tracing::Level::INFO));
    telemetry.shutdown();
}
