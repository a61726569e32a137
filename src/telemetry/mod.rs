//! Logging: one compact JSON object per line on stdout (default), or a human format.
//!
//! JSON lines are what Fly's log pipeline wants (DEPLOYING.md §4): nothing before the `{`, no ANSI
//! colour, no multi-line entries. Each line carries `timestamp` (RFC 3339, UTC, milliseconds),
//! `level`, `target`, `message`, then the fields of every enclosing span (outermost first, so
//! `reconcile_id` from the pass span and `user_id`/`app` from the action span), then the event's own
//! fields, all flattened into the top-level object; `span` names the innermost span. An event field
//! that would collide with `timestamp`/`level`/`target`/`span` gets a trailing `_`.
//!
//! The filter comes from `RUST_LOG` (default [`DEFAULT_FILTER`]). Panics are logged as one `error`
//! line (message, location, thread, and the backtrace as one escaped string when `RUST_BACKTRACE`
//! asks for one) instead of the standard multi-line report.

use std::fmt;
use std::io::IsTerminal;
use std::sync::Once;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Used when `RUST_LOG` is unset, empty or invalid.
pub const DEFAULT_FILTER: &str = "info,vyx_fleet=info,sqlx=warn";

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber (stdout) and the panic hook. A second call changes nothing (the
/// first subscriber stays); use [`try_init`] to know.
pub fn init(format: LogFormat) {
    let _ = try_init(format);
}

/// Like [`init`], but reports whether this call installed the subscriber. Safe to call repeatedly
/// (tests): later calls return `Err(AlreadyInstalled)` and leave everything as it was.
pub fn try_init(format: LogFormat) -> Result<(), TelemetryError> {
    let (filter, bad_rust_log) = filter_from_env();
    let result = match format {
        LogFormat::Json => {
            tracing::subscriber::set_global_default(json_subscriber(std::io::stdout).with(filter))
        }
        LogFormat::Pretty => {
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stdout)
                .with_ansi(std::io::stdout().is_terminal());
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(layer).with(filter),
            )
        }
    };
    result.map_err(|_| TelemetryError::AlreadyInstalled)?;
    install_panic_hook();
    if let Some(problem) = bad_rust_log {
        tracing::warn!(
            problem = %problem,
            default = DEFAULT_FILTER,
            "RUST_LOG is invalid; using the default filter"
        );
    }
    Ok(())
}

/// The JSON-lines subscriber writing to `writer`, with no filter (callers add one). Exposed so tests
/// can capture exactly what production prints, e.g. with `tracing::subscriber::with_default`.
pub fn json_subscriber<W>(writer: W) -> impl Subscriber + for<'a> LookupSpan<'a> + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .with_writer(writer),
    )
}

/// `RUST_LOG` if set and valid, else [`DEFAULT_FILTER`] plus the reason `RUST_LOG` was refused.
fn filter_from_env() -> (EnvFilter, Option<String>) {
    match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => match EnvFilter::try_new(&value) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some(e.to_string())),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    }
}

/// The event formatter behind [`json_subscriber`]. Span fields must have been recorded with
/// [`JsonFields`] (as [`json_subscriber`] does); others are kept as a `span_fields` string.
pub struct JsonLines;

const RESERVED: [&str; 4] = ["timestamp", "level", "target", "span"];

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut obj = Map::new();
        obj.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        obj.insert("level".into(), Value::String(meta.level().to_string()));
        obj.insert("target".into(), Value::String(meta.target().to_string()));

        if let Some(scope) = ctx.event_scope() {
            let mut innermost = None;
            for span in scope.from_root() {
                innermost = Some(span.name());
                let ext = span.extensions();
                let Some(fields) = ext.get::<FormattedFields<N>>() else {
                    continue;
                };
                if fields.fields.is_empty() {
                    continue;
                }
                match serde_json::from_str::<Map<String, Value>>(&fields.fields) {
                    Ok(map) => {
                        for (k, v) in map {
                            insert_field(&mut obj, k, v);
                        }
                    }
                    Err(_) => insert_field(
                        &mut obj,
                        "span_fields".into(),
                        Value::String(fields.fields.clone()),
                    ),
                }
            }
            if let Some(name) = innermost {
                obj.insert("span".into(), Value::String(name.to_string()));
            }
        }

        let mut visitor = JsonVisitor(Map::new());
        event.record(&mut visitor);
        // Keys come out sorted (serde_json's default map); consumers parse, they don't read order.
        for (k, v) in visitor.0 {
            insert_field(&mut obj, k, v);
        }

        let line = serde_json::to_string(&Value::Object(obj)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

fn insert_field(obj: &mut Map<String, Value>, key: String, value: Value) {
    if RESERVED.contains(&key.as_str()) {
        obj.insert(format!("{key}_"), value);
    } else {
        obj.insert(key, value);
    }
}

/// Records an event's fields as JSON values (numbers and booleans stay typed).
struct JsonVisitor(Map<String, Value>);

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.0.insert(field.name().into(), v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole source chain on one line: "outer: inner: root".
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        self.0.insert(field.name().into(), Value::String(text));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

/// Routes panics into the log as one `error` event (target `panic`). Installed by [`try_init`];
/// idempotent. On a thread with no subscriber at all, the previous hook runs instead, so nothing is
/// silently lost.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let no_subscriber =
                tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>());
            if no_subscriber {
                previous(info);
                return;
            }
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_string());
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            let thread = std::thread::current();
            let thread = thread.name().unwrap_or("unnamed");
            let backtrace = std::backtrace::Backtrace::capture();
            if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
                tracing::error!(
                    target: "panic",
                    panic_message = %message,
                    panic_location = %location,
                    panic_thread = thread,
                    panic_backtrace = %backtrace,
                    "panic"
                );
            } else {
                tracing::error!(
                    target: "panic",
                    panic_message = %message,
                    panic_location = %location,
                    panic_thread = thread,
                    "panic"
                );
            }
        }));
    });
}

#[cfg(test)]
mod tests;
