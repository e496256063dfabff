//! The event-log record of a failed call: what failed where, with long tool output (a
//! traceback, linter output) replaced by its analysis, and — unless `log_payloads` is set —
//! without the text a worker or server wrote into the error, which may quote the call's
//! arguments.

use flowbalancer_telemetry::{Event, Level};
use flowbalancer_tiers::RouteError;
use serde_json::{Value, json};

/// The event recorded for a call to `method` that failed with `error`.
pub(crate) fn failure_event(method: &str, error: &RouteError, log_payloads: bool) -> Event {
    let kind = match error {
        RouteError::AllTiersFailed { .. } => "all_tiers_failed",
        RouteError::DeadlineExceeded { .. } => "deadline_exceeded",
        RouteError::UnknownMethod { .. } => "unknown_method",
        RouteError::Rejected { .. } => "rejected",
        _ => "failed",
    };
    let (details, analyses) = shaped(error.to_json(), log_payloads);
    let mut event = Event::new(
        Level::Warn,
        "flowbalancer::balancer",
        format!("call {method:?} failed"),
    )
    .field("error_kind", kind)
    .field("error", details);
    if !analyses.is_empty() {
        event = event.field("analysis", Value::Array(analyses));
    }
    event
}

/// A failure's details as recorded, and the analyses of the tool output in them.
fn shaped(mut details: Value, log_payloads: bool) -> (Value, Vec<Value>) {
    let mut analyses = summarise_output(&mut details);
    if !log_payloads {
        withhold_worker_text(&mut details);
        analyses.iter_mut().for_each(withhold_worker_text);
    }
    (details, analyses)
}

/// Fields of a failure whose text a worker or server wrote (an error's message and data, a
/// traceback, the key lines of one) and which may quote the call's arguments.
const WORKER_TEXT: &[&str] = &["message", "data", "traceback", "key_lines"];

/// What stands in a withheld field.
const WITHHELD: &str =
    "[withheld: may quote the call's arguments; telemetry.log_payloads records it]";

/// Replaces the [`WORKER_TEXT`] fields of a failure's details by a note. An error's `data`
/// keeps its `exception` (the exception's type name, from the worker library).
fn withhold_worker_text(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if !WORKER_TEXT.contains(&key.as_str()) {
                    withhold_worker_text(item);
                } else if key == "data"
                    && let Value::Object(data) = item
                {
                    for (name, field) in data.iter_mut() {
                        let type_name = name == "exception" && field.is_string();
                        if !(type_name || field.is_null()) {
                            *field = json!(WITHHELD);
                        }
                    }
                } else if !item.is_null() {
                    *item = json!(WITHHELD);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(withhold_worker_text),
        _ => {}
    }
}

/// Replaces tool output inside a failure's details — a traceback, or linter, type-checker
/// or test output in an error's message or data — by a note, and returns the analysis of each
/// (headline, kind, tool, hint, first error lines): a 50 KB dump becomes a few hundred bytes.
fn summarise_output(value: &mut Value) -> Vec<Value> {
    use flowbalancer_telemetry::analysis::{Kind, analyze};
    let mut found = Vec::new();
    match value {
        Value::String(text) if text.len() > 120 || text.contains('\n') => {
            let analysis = analyze(text);
            if analysis.kind != Kind::Unknown {
                found.push(serde_json::json!({
                    "headline": analysis.headline,
                    "kind": analysis.kind,
                    "tool": analysis.tool,
                    "hint": analysis.hint,
                    "key_lines": analysis.key_lines,
                }));
                *text = format!(
                    "[{} bytes of {} output; see analysis]",
                    text.len(),
                    analysis.tool.unwrap_or("tool")
                );
            }
        }
        Value::Array(items) => {
            for item in items {
                found.extend(summarise_output(item));
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                found.extend(summarise_output(item));
            }
        }
        _ => {}
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_text_is_withheld_and_the_shape_of_the_failure_kept() {
        let mut details = json!({
            "kind": "rejected", "method": "fib", "tier": "cold",
            "error": {"kind": "call", "worker": 1, "error": {
                "kind": "handler", "message": "ValueError: SECRET",
                "data": {"exception": "ValueError", "traceback": "SECRET", "extra": ["SECRET"]},
            }},
            "attempts": [{"tier": "hot", "outcome": "failed", "kind": "timeout",
                          "message": "SECRET", "elapsed_ms": 3.5, "data": "SECRET"}],
        });
        withhold_worker_text(&mut details);
        let text = details.to_string();
        assert!(!text.contains("SECRET"), "{text}");
        assert_eq!(details["error"]["error"]["data"]["exception"], "ValueError");
        assert_eq!(details["error"]["error"]["kind"], "handler");
        assert_eq!(details["attempts"][0]["elapsed_ms"], 3.5);
        assert_eq!(details["attempts"][0]["message"], WITHHELD);
        assert_eq!(details["tier"], "cold");
    }

    #[test]
    fn a_traceback_becomes_its_analysis_and_log_payloads_keeps_the_text() {
        let traceback = "Traceback (most recent call last):\n  File \"/w/tool.py\", line 7, in run\n    int(value)\nValueError: invalid literal for int() with base 10: 'SECRET'\n";
        let details = json!({"kind": "rejected", "error": {"kind": "handler",
            "message": "ValueError: SECRET", "data": {"exception": "ValueError", "traceback": traceback}}});
        let (kept, kept_analyses) = shaped(details.clone(), true);
        assert_eq!(kept["error"]["message"], "ValueError: SECRET");
        let (withheld, analyses) = shaped(details, false);
        assert_eq!(analyses.len(), 1, "{analyses:?}");
        assert_eq!(analyses[0]["headline"], kept_analyses[0]["headline"]);
        assert!(
            analyses[0]["headline"]
                .as_str()
                .is_some_and(|h| h.contains("tool.py:7")),
            "{analyses:?}"
        );
        let text = format!("{withheld} {analyses:?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(format!("{kept} {kept_analyses:?}").contains("SECRET"));
    }
}
