//! sd_notify(3) messages to systemd: READY, RELOADING, STATUS, WATCHDOG, STOPPING (no-ops without NOTIFY_SOCKET).

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Startup is complete (after the socket is bound and the first round, or the start timeout).
pub fn ready(status: Option<&str>) {
    match status {
        Some(s) => send(&[NotifyState::Ready, NotifyState::Status(s)]),
        None => send(&[NotifyState::Ready]),
    }
}

/// A reload begins: `RELOADING=1` and `MONOTONIC_USEC=` in one datagram, as systemd wants them.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => tracing::warn!(error = %e, "cannot read the monotonic clock"),
    }
}

/// One short line for `systemctl status`.
pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// Keep-alive ping; sent by the loop that does the work, so a stuck loop stops the pings.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, if systemd asked for pings.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .map(|d| d / 2)
        .filter(|d| !d.is_zero())
}
