//! `TelemetryLayer`: ordinary `tracing` events into the telemetry log.

use std::fmt;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event as TracingEvent, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::event::{Event, Level};
use crate::telemetry::Telemetry;

/// Targets whose events carry call payloads (tool arguments and results): off unless
/// [`TelemetryLayer::log_payloads`] is set. rmcp logs whole JSON-RPC messages at debug level.
pub const PAYLOAD_TARGETS: &[&str] = &["rmcp", "flowbalancer::mcp_payload"];

/// A `tracing_subscriber` layer that records events (with the fields of their spans) into a
/// [`Telemetry`] log.
///
/// By default it takes INFO and above, and nothing from the targets that carry call payloads
/// ([`PAYLOAD_TARGETS`]); [`level`](Self::level), [`target`](Self::target) and
/// [`log_payloads`](Self::log_payloads) change that. The filter applies to this layer only:
/// other layers (a stderr log, say) see what their own filters let through.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
/// use flowbalancer_telemetry::{Telemetry, TelemetryLayer};
///
/// let dir = tempfile::tempdir().unwrap();
/// let telemetry = Telemetry::builder().path(dir.path().join("events.jsonl")).build().unwrap();
/// let subscriber = tracing_subscriber::registry().with(TelemetryLayer::new(telemetry.clone()));
/// tracing::subscriber::with_default(subscriber, || {
///     let span = tracing::info_span!("call", tool = "echo");
///     let _guard = span.enter();
///     tracing::warn!(worker = 3, "worker slow");
/// });
/// let recent = telemetry.recent();
/// assert_eq!(recent[0].message, "worker slow");
/// assert_eq!(recent[0].fields["tool"], "echo");
/// assert_eq!(recent[0].fields["worker"], 3);
/// telemetry.shutdown();
/// ```
#[derive(Debug, Clone)]
pub struct TelemetryLayer {
    telemetry: Telemetry,
    level: tracing::Level,
    /// `(target prefix, its level or None for off)`, longest prefix first.
    targets: Vec<(String, Option<tracing::Level>)>,
    log_payloads: bool,
}

impl TelemetryLayer {
    /// A layer writing into `telemetry`, INFO and above, payload targets off.
    pub fn new(telemetry: Telemetry) -> Self {
        Self {
            telemetry,
            level: tracing::Level::INFO,
            targets: Vec::new(),
            log_payloads: false,
        }
    }

    /// The least severe level recorded (default INFO).
    pub fn level(mut self, level: tracing::Level) -> Self {
        self.level = level;
        self
    }

    /// The level for events whose target is `target` or under it (`target::…`); `None`
    /// turns them off. The longest matching target wins.
    pub fn target(mut self, target: impl Into<String>, level: Option<tracing::Level>) -> Self {
        let target = target.into();
        self.targets.retain(|(t, _)| *t != target);
        self.targets.push((target, level));
        self.targets
            .sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        self
    }

    /// Records the payload-carrying targets too (default false: no tool argument or result
    /// reaches the log).
    pub fn log_payloads(mut self, yes: bool) -> Self {
        self.log_payloads = yes;
        self
    }

    /// Whether an event of `target` at `level` is recorded.
    pub fn records(&self, target: &str, level: &tracing::Level) -> bool {
        let under = |prefix: &str| {
            target == prefix
                || target
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with("::"))
        };
        if !self.log_payloads && PAYLOAD_TARGETS.iter().any(|t| under(t)) {
            return false;
        }
        // `Level` orders TRACE > DEBUG > … > ERROR ("more verbose is greater").
        match self.targets.iter().find(|(prefix, _)| under(prefix)) {
            Some((_, None)) => false,
            Some((_, Some(threshold))) => level <= threshold,
            None => *level <= self.level,
        }
    }
}

/// A field's value as recorded: scalars as they are, text as a range of the scratch string.
#[derive(Debug, Clone)]
enum FieldValue {
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Text(std::ops::Range<usize>),
}

/// The fields of a span, kept in its extensions (text cut to the bound when recorded).
#[derive(Default)]
struct SpanFields {
    fields: Vec<(&'static str, FieldValue)>,
    text: String,
}

/// Collects fields without a heap allocation per field: text goes into one scratch string.
struct Collect<'a> {
    fields: &'a mut Vec<(&'static str, FieldValue)>,
    text: &'a mut String,
    message: Option<std::ops::Range<usize>>,
}

impl Collect<'_> {
    fn text(&mut self, field: &Field, write: impl FnOnce(&mut String)) {
        let start = self.text.len();
        write(self.text);
        let range = start..self.text.len();
        if field.name() == "message" {
            self.message = Some(range);
        } else {
            self.fields.push((field.name(), FieldValue::Text(range)));
        }
    }
}

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, |text| {
            let _ = fmt::Write::write_fmt(text, format_args!("{value:?}"));
        });
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, |text| text.push_str(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), FieldValue::I64(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name(), FieldValue::U64(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.push((field.name(), FieldValue::F64(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), FieldValue::Bool(value)));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.text(field, |text| {
            let _ = fmt::Write::write_fmt(text, format_args!("{value}"));
        });
    }
}

/// One event's fields while it is formatted, reused per thread.
#[derive(Default)]
struct Scratch {
    fields: Vec<(&'static str, FieldValue)>,
    text: String,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

impl<S> Layer<S> for TelemetryLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    /// The most verbose level any target is recorded at. Without it the subscriber cannot
    /// tell that this layer never wants DEBUG or TRACE, and every `debug!`, `trace!` and span
    /// of every library (rmcp, hyper, tokio) would be built and handed to it on each call,
    /// only to be dropped in `on_event`.
    fn max_level_hint(&self) -> Option<tracing_subscriber::filter::LevelFilter> {
        let most_verbose = self
            .targets
            .iter()
            .filter_map(|(_, level)| *level)
            .chain(std::iter::once(self.level))
            .max()
            .unwrap_or(self.level);
        Some(tracing_subscriber::filter::LevelFilter::from_level(
            most_verbose,
        ))
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut Collect {
            fields: &mut fields.fields,
            text: &mut fields.text,
            message: None,
        });
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut Collect {
                fields: &mut fields.fields,
                text: &mut fields.text,
                message: None,
            });
        }
    }

    fn on_event(&self, event: &TracingEvent<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        if !self.records(metadata.target(), metadata.level()) {
            return;
        }
        if !self.telemetry.admit() {
            return;
        }
        let level = Level::from(metadata.level());
        let record = |scratch: &mut Scratch| {
            scratch.fields.clear();
            scratch.text.clear();
            // Span fields first (outermost to innermost), then the event's own win.
            if let Some(scope) = ctx.event_scope(event) {
                for span in scope.from_root() {
                    if let Some(span_fields) = span.extensions().get::<SpanFields>() {
                        let offset = scratch.text.len();
                        scratch.text.push_str(&span_fields.text);
                        for (name, value) in &span_fields.fields {
                            let value = match value {
                                FieldValue::Text(range) => {
                                    FieldValue::Text(range.start + offset..range.end + offset)
                                }
                                other => other.clone(),
                            };
                            scratch.fields.push((name, value));
                        }
                    }
                }
            }
            let mut collect = Collect {
                fields: &mut scratch.fields,
                text: &mut scratch.text,
                message: None,
            };
            event.record(&mut collect);
            let message = collect.message.take();
            self.write(level, metadata.target(), message, scratch);
        };
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => record(&mut scratch),
            Err(_) => record(&mut Scratch::default()),
        });
    }
}

impl TelemetryLayer {
    /// Formats the event straight into this thread's line buffer and hands the line over;
    /// an event over the field-count or size bound takes the general path (`record`).
    fn write(
        &self,
        level: Level,
        target: &str,
        message: Option<std::ops::Range<usize>>,
        scratch: &mut Scratch,
    ) {
        let Scratch { fields, text } = scratch;
        let slice = |range: &std::ops::Range<usize>| text.get(range.clone()).unwrap_or("");
        // Sorted by name, the last of equal names kept (an event's field over its span's).
        fields.sort_by(|a, b| a.0.cmp(b.0));
        let mut keep = 0;
        for i in 0..fields.len() {
            if i + 1 < fields.len() && fields[i].0 == fields[i + 1].0 {
                continue;
            }
            fields.swap(keep, i);
            keep += 1;
        }
        fields.truncate(keep);
        let bounds = self.telemetry.bounds();
        let message_text = message.as_ref().map(slice).unwrap_or("");
        if fields.len() > bounds.max_fields {
            self.slow_path(level, target, message_text, fields, text);
            return;
        }
        let mut cuts = 0;
        let cut_message = crate::truncate::truncate(message_text, bounds.max_string);
        let message_text = match &cut_message {
            Some(short) => {
                cuts += 1;
                short.as_str()
            }
            None => message_text,
        };
        let timestamp_us = crate::event::now_us();
        let fits = crate::telemetry::with_line_buffer(|buffer| {
            let started = buffer.start(timestamp_us, level, target, message_text);
            let mut kind: Option<(usize, usize, usize)> = None;
            for (name, value) in fields.iter() {
                buffer.key(name);
                let from = buffer.len();
                match value {
                    FieldValue::I64(n) => buffer.i64_value(*n),
                    FieldValue::U64(n) => buffer.u64_value(*n),
                    FieldValue::F64(n) => buffer.f64_value(*n),
                    FieldValue::Bool(b) => buffer.bool_value(*b),
                    FieldValue::Text(range) => {
                        let value = slice(range);
                        match crate::truncate::truncate(value, bounds.max_string) {
                            Some(short) => {
                                cuts += 1;
                                buffer.str_value(&short);
                            }
                            None => {
                                buffer.str_value(value);
                            }
                        }
                    }
                }
                if let Some(rank) = crate::dedup::KIND_FIELDS.iter().position(|k| k == name)
                    && kind.is_none_or(|(best, ..)| rank < best)
                {
                    kind = Some((rank, from, buffer.len()));
                }
            }
            if buffer.len() > bounds.max_event_bytes {
                return None;
            }
            let fingerprint = if self.telemetry.folds_repeats() {
                let kind = kind.and_then(|(_, from, to)| {
                    std::str::from_utf8(buffer.since(from).get(..to - from)?).ok()
                });
                crate::dedup::fingerprint_of(level, target, message_text, kind)
            } else {
                0
            };
            Some(crate::line::Line {
                bytes: buffer.finish(),
                fingerprint,
                timestamp_us,
                level,
                target: started.target,
                message: started.message,
            })
        });
        match fits {
            Some(line) => {
                self.telemetry.count_cuts(cuts);
                self.telemetry.enqueue(line);
            }
            None => self.slow_path(level, target, message_text, fields, text),
        }
    }

    /// The general path: an `Event`, bounded field by field and in total by `record`.
    fn slow_path(
        &self,
        level: Level,
        target: &str,
        message: &str,
        fields: &[(&'static str, FieldValue)],
        text: &str,
    ) {
        let mut event = Event::new(level, target, message);
        for (name, value) in fields {
            let value = match value {
                FieldValue::I64(n) => Value::from(*n),
                FieldValue::U64(n) => Value::from(*n),
                FieldValue::F64(n) => Value::from(*n),
                FieldValue::Bool(b) => Value::from(*b),
                FieldValue::Text(range) => {
                    Value::String(text.get(range.clone()).unwrap_or("").to_string())
                }
            };
            event.fields.insert((*name).to_string(), value);
        }
        self.telemetry.record_admitted(event);
    }
}
