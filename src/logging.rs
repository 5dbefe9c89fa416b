//! Logging: the journal (structured fields) under systemd, human-readable stderr otherwise;
//! `log_level` from config, `RUST_LOG` overrides; every field escaped before either sink sees it.

use std::fmt;
use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use tracing::field::{DisplayValue, Field, FieldSet, Value, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

type Handle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

static FILTER: OnceLock<Handle> = OnceLock::new();

fn filter(level: &str) -> EnvFilter {
    // The AWS SDK's own logs stay at warn unless RUST_LOG asks for more.
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,ecr_refresherd={level}")))
}

/// The AWS SDK logs whole HTTP bodies, tokens included, at TRACE: those events are never shown,
/// whatever `RUST_LOG` says.
fn not_secret_bearing(meta: &tracing::Metadata<'_>) -> bool {
    let t = meta.target();
    !(*meta.level() == tracing::Level::TRACE
        && (t.starts_with("aws_") || t.starts_with("hyper") || t.starts_with("h2")))
}

/// Whether stderr is connected to the journal: systemd sets `JOURNAL_STREAM=<dev>:<inode>` of it.
pub fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let Ok(md) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(md.dev()) && ino.parse::<u64>().ok() == Some(md.ino())
}

/// Installs the global subscriber at `level`: to the journal when `journal` and it is reachable.
pub fn init(level: &str, journal: bool) {
    let (layer, handle) = reload::Layer::new(filter(level));
    let journald = if journal {
        tracing_journald::layer().ok().map(|l| {
            Escaped(
                l.with_syslog_identifier("ecr-refresherd".into())
                    .with_field_prefix(None),
            )
        })
    } else {
        None
    };
    let fmt = journald.is_none().then(|| {
        Escaped(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(std::io::stderr().is_terminal()),
        )
    });
    let installed = tracing_subscriber::registry()
        .with(layer)
        .with(
            journald
                .map(|j| j.with_filter(tracing_subscriber::filter::filter_fn(not_secret_bearing))),
        )
        .with(fmt.map(|f| f.with_filter(tracing_subscriber::filter::filter_fn(not_secret_bearing))))
        .try_init();
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Changes the level once the config is known (`RUST_LOG` still wins).
pub fn set_level(level: &str) {
    if let Some(h) = FILTER.get() {
        let _ = h.reload(filter(level));
    }
}

/// A sink layer whose events and spans reach it with every field value [`shown`]: the one place
/// where log text is escaped, for the journal and stderr alike. Escaped, a message (or an error
/// from the endpoint, a value from a user's file) cannot forge a log line, write a control sequence
/// to the terminal of whoever reads the log (`journalctl -a`, `-o cat`), or fill it with megabytes.
///
/// [`shown`]: crate::escape::shown
struct Escaped<L>(L);

/// One field's value, escaped, kept as the kind it was recorded as so each sink formats it as
/// before (`%x` and messages bare, `"strings"` quoted by the text format, numbers as numbers).
enum Captured {
    Text(DisplayValue<String>),
    Str(String),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    Bool(bool),
}

impl Captured {
    fn value(&self) -> &dyn Value {
        match self {
            Captured::Text(v) => v,
            Captured::Str(v) => v,
            Captured::I64(v) => v,
            Captured::U64(v) => v,
            Captured::I128(v) => v,
            Captured::U128(v) => v,
            Captured::F64(v) => v,
            Captured::Bool(v) => v,
        }
    }
}

/// The escaped values of one event or span, by field index.
struct Capture(Vec<Option<Captured>>);

impl Capture {
    fn of(fields: &FieldSet, record: impl FnOnce(&mut Capture)) -> Capture {
        let mut c = Capture((0..fields.len()).map(|_| None).collect());
        record(&mut c);
        c
    }

    fn set(&mut self, field: &Field, v: Captured) {
        if let Some(slot) = self.0.get_mut(field.index()) {
            *slot = Some(v);
        }
    }

    fn values(&self) -> Vec<Option<&dyn Value>> {
        self.0
            .iter()
            .map(|v| v.as_ref().map(Captured::value))
            .collect()
    }
}

fn text(s: &str) -> Captured {
    Captured::Text(tracing::field::display(
        crate::escape::shown(s).into_owned(),
    ))
}

impl Visit for Capture {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field, text(&format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(
            field,
            Captured::Str(crate::escape::shown(value).into_owned()),
        );
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut chain = value.to_string();
        let mut source = value.source();
        while let Some(e) = source {
            chain += &format!(": {e}");
            source = e.source();
        }
        self.set(field, text(&chain));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field, Captured::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field, Captured::U64(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.set(field, Captured::I128(value));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.set(field, Captured::U128(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field, Captured::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field, Captured::Bool(value));
    }
}

impl<S, L> Layer<S> for Escaped<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }
    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }
    fn register_callsite(
        &self,
        metadata: &'static Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        self.0.register_callsite(metadata)
    }
    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.0.enabled(metadata, ctx)
    }
    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.0.event_enabled(event, ctx)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        let captured = Capture::of(meta.fields(), |c| attrs.record(c));
        let values = captured.values();
        let set = meta.fields().value_set_all(&values);
        let escaped = match attrs.parent() {
            Some(parent) => Attributes::child_of(parent.clone(), meta, &set),
            None if attrs.is_root() => Attributes::new_root(meta, &set),
            None => Attributes::new(meta, &set),
        };
        self.0.on_new_span(&escaped, id, ctx);
    }

    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(meta) = ctx.metadata(span) else {
            return;
        };
        let captured = Capture::of(meta.fields(), |c| values.record(c));
        let vals = captured.values();
        let set = meta.fields().value_set_all(&vals);
        self.0.on_record(span, &Record::new(&set), ctx);
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, S>) {
        self.0.on_follows_from(span, follows, ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let captured = Capture::of(meta.fields(), |c| event.record(c));
        let values = captured.values();
        let set = meta.fields().value_set_all(&values);
        let escaped = if event.is_contextual() {
            Event::new(meta, &set)
        } else {
            Event::new_child_of(event.parent().cloned(), meta, &set)
        };
        self.0.on_event(&escaped, ctx);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        self.0.on_enter(id, ctx);
    }
    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        self.0.on_exit(id, ctx);
    }
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        self.0.on_close(id, ctx);
    }
    fn on_id_change(&self, old: &Id, new: &Id, ctx: Context<'_, S>) {
        self.0.on_id_change(old, new, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A sink that keeps what it was given, field by field, as `name=value` (Debug of values).
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    struct Fields<'a>(&'a mut Vec<String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0.push(format!("{}={value:?}", field.name()));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push(format!("{}=str:{value}", field.name()));
        }
        fn record_u64(&mut self, field: &Field, value: u64) {
            self.0.push(format!("{}=u64:{value}", field.name()));
        }
    }

    impl<S: Subscriber> Layer<S> for Recorder {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let mut seen = Vec::new();
            event.record(&mut Fields(&mut seen));
            self.0.lock().unwrap().extend(seen);
        }
        fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
            let mut seen = Vec::new();
            attrs.record(&mut Fields(&mut seen));
            self.0.lock().unwrap().extend(seen);
        }
    }

    #[test]
    fn every_field_reaches_the_sink_escaped_and_of_its_kind() {
        let rec = Recorder::default();
        let subscriber = tracing_subscriber::registry().with(Escaped(rec.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let hostile = "x\n2099 INFO forged\r\u{1b}]0;t\u{7}";
            let span = tracing::info_span!("round", host = %hostile);
            let _in = span.enter();
            tracing::warn!(
                error = %hostile,
                path = hostile,
                attempt = 3u64,
                "failed: {hostile}"
            );
        });
        let seen = rec.0.lock().unwrap().clone();
        let esc = "x\\n2099 INFO forged\\r\\x1b]0;t\\x07";
        assert_eq!(
            seen,
            [
                format!("host={esc}"),
                format!("message=failed: {esc}"),
                format!("error={esc}"),
                format!("path=str:{esc}"),
                "attempt=u64:3".to_string(),
            ]
        );
    }
}
