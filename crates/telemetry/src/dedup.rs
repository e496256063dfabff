//! Folding repeated events: the first is written, repeats within a window are counted, and
//! one line reports them when the window closes.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use crate::event::{Event, Level};
use crate::line::{Line, LineBuffer};

/// The identity of "the same event": level, target, message template (digits folded) and
/// error kind.
pub(crate) fn fingerprint(event: &Event) -> u64 {
    let kind = ["error_kind", "error.kind", "kind"]
        .iter()
        .find_map(|key| event.fields.get(*key))
        .map(|kind| kind.to_string());
    fingerprint_of(event.level, &event.target, &event.message, kind.as_deref())
}

/// [`fingerprint`] from the parts: `kind` is the error kind's JSON text (`"timeout"` with its
/// quotes for a string).
pub(crate) fn fingerprint_of(level: Level, target: &str, message: &str, kind: Option<&str>) -> u64 {
    let mut hasher = DefaultHasher::new();
    level.hash(&mut hasher);
    target.hash(&mut hasher);
    let mut in_digits = false;
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                '#'.hash(&mut hasher);
            }
            in_digits = true;
        } else {
            c.hash(&mut hasher);
            in_digits = false;
        }
    }
    if let Some(kind) = kind {
        kind.hash(&mut hasher);
    }
    hasher.finish()
}

/// The field names whose value is an event's error kind, in order of preference.
pub(crate) const KIND_FIELDS: [&str; 3] = ["error_kind", "error.kind", "kind"];

struct Seen {
    first_us: u64,
    repeats: u64,
    level: Level,
    /// The target's and the message's JSON text (escaped), from the first line.
    target: String,
    message: String,
}

/// What to do with an event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Write,
    Fold,
}

/// Fingerprints seen within the window, oldest first; at most `capacity` kept.
pub(crate) struct Deduper {
    window_us: u64,
    capacity: usize,
    seen: HashMap<u64, Seen>,
    order: VecDeque<u64>,
    summary: LineBuffer,
}

impl Deduper {
    pub(crate) fn new(window_us: u64, capacity: usize) -> Self {
        Self {
            window_us,
            capacity: capacity.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
            summary: LineBuffer::default(),
        }
    }

    /// Decides for `line` at `now_us`; may push the summary lines of evicted fingerprints.
    pub(crate) fn observe(
        &mut self,
        line: &Line,
        now_us: u64,
        summaries: &mut Vec<Arc<[u8]>>,
    ) -> Verdict {
        self.expire(now_us, summaries);
        let key = line.fingerprint;
        if let Some(seen) = self.seen.get_mut(&key) {
            seen.repeats += 1;
            return Verdict::Fold;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
            && let Some(seen) = self.seen.remove(&oldest)
        {
            self.summarize(seen, now_us, summaries);
        }
        self.seen.insert(
            key,
            Seen {
                first_us: now_us,
                repeats: 0,
                level: line.level,
                target: line.text(&line.target).to_string(),
                message: line.text(&line.message).to_string(),
            },
        );
        self.order.push_back(key);
        Verdict::Write
    }

    /// Closes the windows that ended by `now_us`.
    pub(crate) fn expire(&mut self, now_us: u64, summaries: &mut Vec<Arc<[u8]>>) {
        while let Some(&oldest) = self.order.front() {
            let Some(seen) = self.seen.get(&oldest) else {
                self.order.pop_front();
                continue;
            };
            if now_us.saturating_sub(seen.first_us) < self.window_us {
                break;
            }
            self.order.pop_front();
            if let Some(seen) = self.seen.remove(&oldest) {
                self.summarize(seen, now_us, summaries);
            }
        }
    }

    /// Closes every window (shutdown).
    pub(crate) fn drain(&mut self, now_us: u64, summaries: &mut Vec<Arc<[u8]>>) {
        while let Some(key) = self.order.pop_front() {
            if let Some(seen) = self.seen.remove(&key) {
                self.summarize(seen, now_us, summaries);
            }
        }
    }

    fn summarize(&mut self, seen: Seen, now_us: u64, summaries: &mut Vec<Arc<[u8]>>) {
        if seen.repeats == 0 {
            return;
        }
        let window_ms = now_us.saturating_sub(seen.first_us).min(self.window_us) / 1000;
        // The escaped message plus an ASCII suffix is still a valid JSON string.
        let message = format!(
            "{} (repeated {} times in {} ms)",
            seen.message, seen.repeats, window_ms
        );
        let line = &mut self.summary;
        line.start_escaped(now_us, seen.level, &seen.target, &message);
        line.key("repeated");
        line.u64_value(seen.repeats);
        line.key("window_ms");
        line.u64_value(window_ms);
        summaries.push(line.finish());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(message: &str) -> Event {
        Event::new(Level::Error, "pool", message)
    }

    /// `event` formatted as the recording thread does.
    fn line(event: &Event) -> Line {
        crate::line::format_event(&mut LineBuffer::default(), event, fingerprint(event))
    }

    fn parse(line: &[u8]) -> Event {
        serde_json::from_slice(line).unwrap()
    }

    #[test]
    fn repeats_fold_within_the_window_and_are_reported_when_it_closes() {
        // A clock we move by hand: the window logic never reads the real time.
        let second = 1_000_000;
        let mut dedup = Deduper::new(10 * second, 100);
        let mut out = Vec::new();
        assert_eq!(
            dedup.observe(&line(&event("worker 1 died")), 0, &mut out),
            Verdict::Write
        );
        for t in 1..=5 {
            assert_eq!(
                dedup.observe(
                    &line(&event(&format!("worker {t}7 died"))),
                    t * second,
                    &mut out
                ),
                Verdict::Fold
            );
        }
        assert_eq!(
            dedup.observe(&line(&event("other")), 6 * second, &mut out),
            Verdict::Write
        );
        assert!(out.is_empty(), "no summary before the window closes");
        dedup.expire(10 * second, &mut out);
        assert_eq!(out.len(), 1);
        let summary = parse(&out[0]);
        assert_eq!(
            summary.message,
            "worker 1 died (repeated 5 times in 10000 ms)"
        );
        assert_eq!(summary.fields["repeated"], 5);
        assert_eq!(
            (summary.level, summary.target.as_str()),
            (Level::Error, "pool")
        );
        // After the window, the same event is written again.
        assert_eq!(
            dedup.observe(&line(&event("worker 9 died")), 11 * second, &mut out),
            Verdict::Write
        );
    }

    #[test]
    fn the_number_of_fingerprints_is_bounded() {
        let mut dedup = Deduper::new(u64::MAX, 3);
        let mut out = Vec::new();
        for i in 0..10 {
            let event = Event::new(Level::Info, format!("t{i}"), "x");
            dedup.observe(&line(&event), 0, &mut out);
            dedup.observe(&line(&event), 0, &mut out);
        }
        assert_eq!(dedup.seen.len(), 3);
        assert_eq!(out.len(), 7, "each evicted fingerprint reported its repeat");
    }

    #[test]
    fn error_kind_and_level_are_part_of_the_fingerprint() {
        let a = event("failed").field("error_kind", "timeout");
        let b = event("failed").field("error_kind", "crash");
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_ne!(
            fingerprint(&event("x")),
            fingerprint(&Event::new(Level::Warn, "pool", "x"))
        );
        assert_eq!(
            fingerprint(&event("took 15 ms")),
            fingerprint(&event("took 2048 ms"))
        );
    }
}
