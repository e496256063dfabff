//! Folding repeated events: the first is written, repeats within a window are counted, and
//! one line reports them when the window closes.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::event::{Event, Level};

/// The identity of "the same event": level, target, message template (digits folded) and
/// error kind.
pub(crate) fn fingerprint(event: &Event) -> u64 {
    let mut hasher = DefaultHasher::new();
    event.level.hash(&mut hasher);
    event.target.hash(&mut hasher);
    let mut in_digits = false;
    for c in event.message.chars() {
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
    for key in ["error_kind", "error.kind", "kind"] {
        if let Some(kind) = event.fields.get(key) {
            kind.to_string().hash(&mut hasher);
            break;
        }
    }
    hasher.finish()
}

struct Seen {
    first_us: u64,
    repeats: u64,
    level: Level,
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
}

impl Deduper {
    pub(crate) fn new(window_us: u64, capacity: usize) -> Self {
        Self {
            window_us,
            capacity: capacity.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Decides for `event` at `now_us`; may push summary events of evicted fingerprints.
    pub(crate) fn observe(
        &mut self,
        event: &Event,
        now_us: u64,
        summaries: &mut Vec<Event>,
    ) -> Verdict {
        self.expire(now_us, summaries);
        let key = fingerprint(event);
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
                level: event.level,
                target: event.target.clone(),
                message: event.message.clone(),
            },
        );
        self.order.push_back(key);
        Verdict::Write
    }

    /// Closes the windows that ended by `now_us`.
    pub(crate) fn expire(&mut self, now_us: u64, summaries: &mut Vec<Event>) {
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
    pub(crate) fn drain(&mut self, now_us: u64, summaries: &mut Vec<Event>) {
        while let Some(key) = self.order.pop_front() {
            if let Some(seen) = self.seen.remove(&key) {
                self.summarize(seen, now_us, summaries);
            }
        }
    }

    fn summarize(&self, seen: Seen, now_us: u64, summaries: &mut Vec<Event>) {
        if seen.repeats == 0 {
            return;
        }
        let window_ms = now_us.saturating_sub(seen.first_us).min(self.window_us) / 1000;
        let mut event = Event::new(
            seen.level,
            seen.target,
            format!(
                "{} (repeated {} times in {} ms)",
                seen.message, seen.repeats, window_ms
            ),
        );
        event.timestamp_us = now_us;
        event.fields.insert("repeated".into(), seen.repeats.into());
        event.fields.insert("window_ms".into(), window_ms.into());
        summaries.push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(message: &str) -> Event {
        Event::new(Level::Error, "pool", message)
    }

    #[test]
    fn repeats_fold_within_the_window_and_are_reported_when_it_closes() {
        // A clock we move by hand: the window logic never reads the real time.
        let second = 1_000_000;
        let mut dedup = Deduper::new(10 * second, 100);
        let mut out = Vec::new();
        assert_eq!(
            dedup.observe(&event("worker 1 died"), 0, &mut out),
            Verdict::Write
        );
        for t in 1..=5 {
            assert_eq!(
                dedup.observe(&event(&format!("worker {t}7 died")), t * second, &mut out),
                Verdict::Fold
            );
        }
        assert_eq!(
            dedup.observe(&event("other"), 6 * second, &mut out),
            Verdict::Write
        );
        assert!(out.is_empty(), "no summary before the window closes");
        dedup.expire(10 * second, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].message,
            "worker 1 died (repeated 5 times in 10000 ms)"
        );
        assert_eq!(out[0].fields["repeated"], 5);
        // After the window, the same event is written again.
        assert_eq!(
            dedup.observe(&event("worker 9 died"), 11 * second, &mut out),
            Verdict::Write
        );
    }

    #[test]
    fn the_number_of_fingerprints_is_bounded() {
        let mut dedup = Deduper::new(u64::MAX, 3);
        let mut out = Vec::new();
        for i in 0..10 {
            dedup.observe(&Event::new(Level::Info, format!("t{i}"), "x"), 0, &mut out);
            dedup.observe(&Event::new(Level::Info, format!("t{i}"), "x"), 0, &mut out);
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
