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

/// A `tracing_subscriber` layer that records every event (with the fields of its spans) into
/// a [`Telemetry`] log.
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
}

impl TelemetryLayer {
    /// A layer writing into `telemetry`.
    pub fn new(telemetry: Telemetry) -> Self {
        Self { telemetry }
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
        let metadata = event.metadata();
        let mut record = Event::new(Level::from(metadata.level()), metadata.target(), message);
        record.fields = fields;
        self.telemetry.record(record);
    }
}
