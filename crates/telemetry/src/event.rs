//! One telemetry event and its JSON line.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// An event's severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// Very detailed.
    Trace,
    /// Detailed.
    Debug,
    /// Normal.
    Info,
    /// Something to look at.
    Warn,
    /// Something failed.
    Error,
}

impl From<&tracing::Level> for Level {
    fn from(level: &tracing::Level) -> Self {
        match *level {
            tracing::Level::TRACE => Level::Trace,
            tracing::Level::DEBUG => Level::Debug,
            tracing::Level::INFO => Level::Info,
            tracing::Level::WARN => Level::Warn,
            _ => Level::Error,
        }
    }
}

/// One event: when, how severe, where from, what, and structured fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Microseconds since the Unix epoch.
    #[serde(rename = "ts_us")]
    pub timestamp_us: u64,
    /// Severity.
    pub level: Level,
    /// The module or component.
    pub target: String,
    /// The message.
    pub message: String,
    /// Structured fields.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    /// An event stamped now.
    pub fn new(level: Level, target: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            timestamp_us: now_us(),
            level,
            target: target.into(),
            message: message.into(),
            fields: serde_json::Map::new(),
        }
    }

    /// The same event with one more field.
    pub fn field(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// The event as one JSON line (with its `\n`), including an RFC 3339 `time`.
    pub fn to_line(&self) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            time: String,
            #[serde(flatten)]
            event: &'a Event,
        }
        let mut line = serde_json::to_string(&Line {
            time: rfc3339(self.timestamp_us),
            event: self,
        })
        .unwrap_or_else(|e| format!("{{\"message\":\"unserializable event: {e}\"}}"));
        line.push('\n');
        line
    }
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// `2026-11-23T19:30:00.123456Z` from microseconds since the epoch (no date crate needed).
pub fn rfc3339(us: u64) -> String {
    let secs = us / 1_000_000;
    let micros = us % 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
        assert_eq!(
            rfc3339(1_795_462_200_500_000),
            "2026-11-23T19:30:00.500000Z"
        );
    }

    #[test]
    fn a_buffered_line_is_the_same_text_across_seconds() {
        let mut buffer = crate::line::LineBuffer::default();
        for us in [
            1_795_462_200_500_000u64,
            1_795_462_200_999_999,
            1_795_462_201_000_001,
        ] {
            let mut event = Event::new(Level::Info, "t", "m \"quoted\"").field("k", 1);
            event.timestamp_us = us;
            let line = crate::line::format_event(&mut buffer, &event, 0);
            assert_eq!(std::str::from_utf8(&line.bytes).unwrap(), event.to_line());
        }
    }

    #[test]
    fn a_line_is_one_json_object() {
        let line = Event::new(Level::Warn, "pool", "worker \"w1\" died\nnew line")
            .field("pid", 42)
            .to_line();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["level"], "WARN");
        assert_eq!(value["fields"]["pid"], 42);
    }
}
