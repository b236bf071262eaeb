//! Logs to the platform (logcat, os_log) through a foreign [`Logger`].

use std::sync::{Arc, OnceLock, RwLock};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// How much to log.
#[derive(uniffi::Enum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Failures.
    Error,
    /// Things that went wrong and were handled.
    Warn,
    /// Connections, payments.
    Info,
    /// Details.
    Debug,
}

/// Where the library's logs go (Android: `android.util.Log`; iOS: `os_log`). Called on
/// library threads.
#[uniffi::export(with_foreign)]
pub trait Logger: Send + Sync {
    /// One line.
    fn log(&self, level: LogLevel, target: String, message: String);
}

struct Sink {
    logger: Arc<dyn Logger>,
    level: LogLevel,
}

fn sink() -> &'static RwLock<Option<Sink>> {
    static SINK: OnceLock<RwLock<Option<Sink>>> = OnceLock::new();
    SINK.get_or_init(|| RwLock::new(None))
}

fn level_of(l: &tracing::Level) -> LogLevel {
    match *l {
        tracing::Level::ERROR => LogLevel::Error,
        tracing::Level::WARN => LogLevel::Warn,
        tracing::Level::INFO => LogLevel::Info,
        _ => LogLevel::Debug,
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

struct Layer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Layer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = level_of(meta.level());
        let guard = sink().read().unwrap_or_else(|p| p.into_inner());
        let Some(s) = guard.as_ref() else { return };
        if level > s.level {
            return;
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        s.logger.log(level, meta.target().to_string(), m.0);
    }
}

/// Send the library's logs at `level` and above to `logger` (replacing any earlier one).
#[uniffi::export]
pub fn set_logger(logger: Arc<dyn Logger>, level: LogLevel) {
    *sink().write().unwrap_or_else(|p| p.into_inner()) = Some(Sink { logger, level });
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Layer));
    });
}
