//! Logging: the journal (structured fields) under systemd, human-readable stderr otherwise;
//! `log_level` from config, `RUST_LOG` overrides.

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
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
            l.with_syslog_identifier("ecr-refresherd".into())
                .with_field_prefix(None)
        })
    } else {
        None
    };
    let fmt = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
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
