//! The `[daemon]` table: timing, the control socket, the state directory, the log level.

use toml::Spanned;

use super::check::Checker;
use super::raw::RawDaemon;
use super::{Accounts, DaemonSettings, GroupSpec, MAX_MIN_INTERVAL, MAX_RETRY_MAX, MAX_RETRY_MIN};

/// Validates `[daemon]`; what it leaves out keeps its default.
pub(super) fn daemon(c: &mut Checker, d: &RawDaemon, accounts: &dyn Accounts) -> DaemonSettings {
    let defaults = DaemonSettings::default();
    let (refresh_at, jitter) = fractions(c, d, &defaults);
    let retry_min = c.duration("retry_min", &d.retry_min, defaults.retry_min, MAX_RETRY_MIN);
    let retry_max = c.duration("retry_max", &d.retry_max, defaults.retry_max, MAX_RETRY_MAX);
    if retry_max < retry_min
        && let Some(v) = d.retry_max.as_ref().or(d.retry_min.as_ref())
    {
        c.error(v.span(), "retry_max must not be shorter than retry_min");
    }
    let min_interval = c.duration(
        "min_interval",
        &d.min_interval,
        defaults.min_interval,
        MAX_MIN_INTERVAL,
    );
    let socket = d
        .socket
        .as_ref()
        .map_or(defaults.socket, |v| c.absolute_path("socket", v));
    let helper_socket = d
        .helper_socket
        .as_ref()
        // Beside the control socket unless set: a test's or a second daemon's stays its own.
        .map_or_else(
            || socket.with_file_name("helper.sock"),
            |v| c.absolute_path("helper_socket", v),
        );
    if helper_socket == socket
        && let Some(v) = &d.helper_socket
    {
        c.error(v.span(), "helper_socket must differ from socket");
    }
    let state_dir = d
        .state_dir
        .as_ref()
        .map_or(defaults.state_dir, |v| c.absolute_path("state_dir", v));
    let socket_group = d
        .socket_group
        .as_ref()
        .and_then(|v| socket_group(c, v, accounts));
    let log_level = match &d.log_level {
        Some(v) => log_level(c, v),
        None => defaults.log_level,
    };
    let metrics_file = d.metrics_file.as_ref().map(|v| {
        let path = c.absolute_path("metrics_file", v);
        if path.extension().is_none_or(|e| e != "prom") {
            c.warning(
                v.span(),
                "metrics_file does not end in .prom: node_exporter's textfile collector reads only *.prom files",
            );
        }
        path
    });
    DaemonSettings {
        refresh_at,
        jitter,
        retry_min,
        retry_max,
        min_interval,
        remove_expired: d.remove_expired.unwrap_or(defaults.remove_expired),
        socket,
        socket_group,
        helper_socket,
        state_dir,
        log_level,
        metrics_file,
    }
}

/// `refresh_at` and `jitter`, the two fractions of a token's lifetime.
fn fractions(c: &mut Checker, d: &RawDaemon, defaults: &DaemonSettings) -> (f64, f64) {
    let refresh_at = match &d.refresh_at {
        Some(v) if !(*v.get_ref() > 0.0 && *v.get_ref() < 1.0) => {
            c.error(
                v.span(),
                format!(
                    "refresh_at must be between 0 and 1 (exclusive), found {}",
                    v.get_ref()
                ),
            );
            defaults.refresh_at
        }
        Some(v) => *v.get_ref(),
        None => defaults.refresh_at,
    };
    let jitter = match &d.jitter {
        Some(v) if !(*v.get_ref() >= 0.0 && *v.get_ref() < 1.0) => {
            c.error(
                v.span(),
                format!(
                    "jitter must be at least 0 and below 1, found {}",
                    v.get_ref()
                ),
            );
            defaults.jitter
        }
        Some(v) => *v.get_ref(),
        None => defaults.jitter,
    };
    (refresh_at, jitter)
}

/// A group given by number, or by a name resolved now.
fn socket_group(
    c: &mut Checker,
    v: &Spanned<String>,
    accounts: &dyn Accounts,
) -> Option<GroupSpec> {
    let name = v.get_ref();
    let found = match name.parse::<u32>() {
        Ok(gid) => Some(GroupSpec {
            name: name.clone(),
            gid,
        }),
        Err(_) => accounts.group(name),
    };
    if found.is_none() {
        c.error(v.span(), format!("unknown group {name:?} in socket_group"));
    }
    found
}

fn log_level(c: &mut Checker, v: &Spanned<String>) -> String {
    let l = v.get_ref().to_lowercase();
    if !["error", "warn", "info", "debug", "trace"].contains(&l.as_str()) {
        c.error(
            v.span(),
            format!(
                "log_level must be one of error, warn, info, debug, trace; found {:?}",
                v.get_ref()
            ),
        );
    }
    l
}
