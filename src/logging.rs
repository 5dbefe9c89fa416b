//! Logging setup: human-readable lines on stderr, `log_level` from config, `RUST_LOG` overrides.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
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

/// Installs the global subscriber at `level`.
pub fn init(level: &str) {
    let (layer, handle) = reload::Layer::new(filter(level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(tracing_subscriber::filter::filter_fn(not_secret_bearing));
    if tracing_subscriber::registry()
        .with(layer)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set(handle);
    }
}

/// Changes the level once the config is known (`RUST_LOG` still wins).
pub fn set_level(level: &str) {
    if let Some(h) = FILTER.get() {
        let _ = h.reload(filter(level));
    }
}
