//! Events formatted as JSON lines on the thread that records them, into a reused buffer:
//! the writer thread only copies bytes to the file.

use std::ops::Range;
use std::sync::Arc;

use crate::event::{Event, Level, rfc3339};

/// One formatted event on its way to the writer (and in the ring of recent events).
pub(crate) struct Line {
    /// The JSON line, with its `\n`.
    pub(crate) bytes: Arc<[u8]>,
    /// The identity under which repeats are folded (see `dedup`).
    pub(crate) fingerprint: u64,
    /// When it happened.
    pub(crate) timestamp_us: u64,
    /// Its level.
    pub(crate) level: Level,
    /// The target's JSON text (escaped, without quotes) within `bytes`.
    pub(crate) target: Range<usize>,
    /// The message's JSON text (escaped, without quotes) within `bytes`.
    pub(crate) message: Range<usize>,
}

impl Line {
    /// The escaped text of `range` (a range this line's writer recorded).
    pub(crate) fn text(&self, range: &Range<usize>) -> &str {
        self.bytes
            .get(range.clone())
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .unwrap_or("")
    }
}

/// A reusable buffer that writes event lines: `{"time":…,"ts_us":…,"level":…,"target":…,
/// "message":…,"fields":{…}}` — the same text as `Event::to_line`, fields in the order given.
#[derive(Debug, Default)]
pub(crate) struct LineBuffer {
    bytes: Vec<u8>,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`, reused within a second.
    date: String,
    second: u64,
    fields: usize,
}

/// The parts of a line the writer needs to fold repeats.
pub(crate) struct Started {
    pub(crate) target: Range<usize>,
    pub(crate) message: Range<usize>,
}

impl LineBuffer {
    /// Starts a line (clearing the buffer).
    pub(crate) fn start(
        &mut self,
        timestamp_us: u64,
        level: Level,
        target: &str,
        message: &str,
    ) -> Started {
        self.head(timestamp_us, level);
        let target = self.string(target);
        self.bytes.extend_from_slice(b",\"message\":");
        let message = self.string(message);
        Started { target, message }
    }

    /// Starts a line whose target and message are JSON text already (escaped, no quotes).
    pub(crate) fn start_escaped(
        &mut self,
        timestamp_us: u64,
        level: Level,
        target: &str,
        message: &str,
    ) {
        self.head(timestamp_us, level);
        for (i, text) in [target, message].into_iter().enumerate() {
            if i == 1 {
                self.bytes.extend_from_slice(b",\"message\":");
            }
            self.bytes.push(b'"');
            self.bytes.extend_from_slice(text.as_bytes());
            self.bytes.push(b'"');
        }
    }

    /// `{"time":…,"ts_us":…,"level":…,"target":` (clearing the buffer).
    fn head(&mut self, timestamp_us: u64, level: Level) {
        self.bytes.clear();
        self.fields = 0;
        let second = timestamp_us / 1_000_000;
        if second != self.second || self.date.is_empty() {
            self.second = second;
            let full = rfc3339(second.saturating_mul(1_000_000));
            self.date = full.get(..19).unwrap_or(&full).to_string();
        }
        self.bytes.extend_from_slice(b"{\"time\":\"");
        self.bytes.extend_from_slice(self.date.as_bytes());
        self.bytes.push(b'.');
        push_padded(&mut self.bytes, timestamp_us % 1_000_000, 6);
        self.bytes.extend_from_slice(b"Z\",\"ts_us\":");
        push_u64(&mut self.bytes, timestamp_us);
        self.bytes.extend_from_slice(match level {
            Level::Trace => b",\"level\":\"TRACE\",\"target\":",
            Level::Debug => b",\"level\":\"DEBUG\",\"target\":",
            Level::Info => b",\"level\":\"INFO\",\"target\":",
            Level::Warn => b",\"level\":\"WARN\",\"target\":",
            Level::Error => b",\"level\":\"ERROR\",\"target\":",
        });
    }

    /// Writes `text` as a JSON string; returns the range of its escaped text (no quotes).
    fn string(&mut self, text: &str) -> Range<usize> {
        let start = self.bytes.len() + 1;
        // Writing to a Vec cannot fail, and a str always serializes.
        let _ = serde_json::to_writer(&mut self.bytes, text);
        start..self.bytes.len().saturating_sub(1)
    }

    /// Starts the next field: its key.
    pub(crate) fn key(&mut self, key: &str) {
        self.bytes.extend_from_slice(if self.fields == 0 {
            b",\"fields\":{"
        } else {
            b","
        });
        self.fields += 1;
        self.string(key);
        self.bytes.push(b':');
    }

    /// A string value; returns the range of its escaped text.
    pub(crate) fn str_value(&mut self, value: &str) -> Range<usize> {
        self.string(value)
    }

    /// Any JSON value.
    pub(crate) fn json_value(&mut self, value: &serde_json::Value) {
        let _ = serde_json::to_writer(&mut self.bytes, value);
    }

    /// An unsigned integer value.
    pub(crate) fn u64_value(&mut self, value: u64) {
        push_u64(&mut self.bytes, value);
    }

    /// A signed integer value.
    pub(crate) fn i64_value(&mut self, value: i64) {
        if value < 0 {
            self.bytes.push(b'-');
        }
        push_u64(&mut self.bytes, value.unsigned_abs());
    }

    /// A float value (`null` when not finite, as serde_json writes it).
    pub(crate) fn f64_value(&mut self, value: f64) {
        let _ = serde_json::to_writer(&mut self.bytes, &value);
    }

    /// A boolean value.
    pub(crate) fn bool_value(&mut self, value: bool) {
        self.bytes
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// Ends the line; its bytes, shared.
    pub(crate) fn finish(&mut self) -> Arc<[u8]> {
        if self.fields > 0 {
            self.bytes.push(b'}');
        }
        self.bytes.extend_from_slice(b"}\n");
        Arc::from(&self.bytes[..])
    }

    /// The bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The JSON text written since `from`.
    pub(crate) fn since(&self, from: usize) -> &[u8] {
        self.bytes.get(from..).unwrap_or(&[])
    }
}

/// `event` as a line (its fields in the map's order, which is sorted).
pub(crate) fn format_event(buffer: &mut LineBuffer, event: &Event, fingerprint: u64) -> Line {
    let started = buffer.start(
        event.timestamp_us,
        event.level,
        &event.target,
        &event.message,
    );
    for (key, value) in &event.fields {
        buffer.key(key);
        buffer.json_value(value);
    }
    Line {
        bytes: buffer.finish(),
        fingerprint,
        timestamp_us: event.timestamp_us,
        level: event.level,
        target: started.target,
        message: started.message,
    }
}

fn push_u64(bytes: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    bytes.extend_from_slice(&digits[at..]);
}

fn push_padded(bytes: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut rest = value;
    for at in (0..width.min(digits.len())).rev() {
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    bytes.extend_from_slice(&digits[..width.min(digits.len())]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_the_same_text_as_the_events_own_serialization() {
        let mut event = Event::new(Level::Warn, "pool \"x\"", "worker 7\ncrashed")
            .field("a", -5)
            .field("b", "é \u{1}")
            .field("c", 2.5)
            .field("d", true)
            .field("e", serde_json::json!({"n": [1, null]}))
            .field("f", u64::MAX);
        event.timestamp_us = 1_764_000_000_000_042;
        let mut buffer = LineBuffer::default();
        let started = buffer.start(
            event.timestamp_us,
            event.level,
            &event.target,
            &event.message,
        );
        buffer.key("a");
        buffer.i64_value(-5);
        buffer.key("b");
        buffer.str_value("é \u{1}");
        buffer.key("c");
        buffer.f64_value(2.5);
        buffer.key("d");
        buffer.bool_value(true);
        buffer.key("e");
        buffer.json_value(&serde_json::json!({"n": [1, null]}));
        buffer.key("f");
        buffer.u64_value(u64::MAX);
        let bytes = buffer.finish();
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), event.to_line());
        let text = |r: Range<usize>| std::str::from_utf8(&bytes[r]).unwrap().to_string();
        assert_eq!(text(started.target), "pool \\\"x\\\"");
        assert_eq!(text(started.message), "worker 7\\ncrashed");

        let mut plain = Event::new(Level::Info, "t", "m");
        plain.timestamp_us = 5;
        buffer.start(plain.timestamp_us, plain.level, "t", "m");
        assert_eq!(
            std::str::from_utf8(&buffer.finish()).unwrap(),
            plain.to_line()
        );
    }
}
