//! `TelemetryLayer`: ordinary `tracing` events into the telemetry log.

use std::fmt;

use serde_json::{Map, Value};
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

/// The fields of a span, kept in its extensions.
struct SpanFields(Map<String, Value>);

struct Collect<'a> {
    fields: &'a mut Map<String, Value>,
    message: Option<String>,
}

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        } else {
            self.fields.insert(
                field.name().to_string(),
                Value::String(format!("{value:?}")),
            );
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.fields
                .insert(field.name().to_string(), Value::String(value.to_string()));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().to_string(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().to_string(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name().to_string(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().to_string(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.fields
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }
}

impl<S> Layer<S> for TelemetryLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Map::new();
        attrs.record(&mut Collect {
            fields: &mut fields,
            message: None,
        });
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
            values.record(&mut Collect {
                fields,
                message: None,
            });
        }
    }

    fn on_event(&self, event: &TracingEvent<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        if !self.records(metadata.target(), metadata.level()) {
            return;
        }
        let mut fields = Map::new();
        // Span fields first (outermost to innermost), then the event's own win.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(span_fields)) = span.extensions().get::<SpanFields>() {
                    for (k, v) in span_fields {
                        fields.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        let mut collect = Collect {
            fields: &mut fields,
            message: None,
        };
        event.record(&mut collect);
        let message = collect.message.take().unwrap_or_default();
        let mut record = Event::new(Level::from(metadata.level()), metadata.target(), message);
        record.fields = fields;
        self.telemetry.record(record);
    }
}
