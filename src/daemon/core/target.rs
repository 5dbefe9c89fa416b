//! One target's state (a consumer of tokens) and how `status` shows it.

use std::time::SystemTime;

use super::{STUCK, elapsed};
use crate::config::TargetSettings;
use crate::status::{self, TargetState, TargetStatus};

/// One target's state.
#[derive(Debug, Default, Clone)]
pub(crate) struct Target {
    pub(crate) owner: Option<String>,
    pub(crate) last_write: Option<SystemTime>,
    pub(crate) last_error: Option<String>,
    pub(crate) warnings: Vec<String>,
    pub(crate) written: bool,
    /// A delivery is running since then.
    pub(crate) writing: Option<SystemTime>,
    /// A delivery is wanted (again, when one is running).
    pub(crate) wanted: bool,
    /// Failed deliveries in a row, and when to try again without any other reason.
    pub(crate) failures: u32,
    pub(crate) retry_at: Option<SystemTime>,
    /// Failed deliveries since the daemon started.
    pub(crate) failures_total: u64,
    /// The last diagnosis found our entries hidden (credsStore, credHelpers, another file).
    pub(crate) shadowed: bool,
    pub(super) diagnosing: bool,
    /// A diagnosis is wanted once the running one ends.
    pub(super) rediagnose: bool,
    /// The file changed on disk (an inotify event) and was not looked at since.
    pub(super) changed: bool,
    /// When a change last started a delivery, and how long the last delivery took: changes
    /// start deliveries at most every [`super::EVENT_SPACING`], and never more often than
    /// [`super::EVENT_SHARE`] of the time, so a user rewriting their own (large) file in a loop
    /// costs the daemon a bounded share of a core.
    pub(super) last_change_delivery: Option<SystemTime>,
    pub(super) last_took: std::time::Duration,
}

pub(super) fn target_status(t: &TargetSettings, rt: &Target, now: SystemTime) -> TargetStatus {
    let stuck = rt.writing.map(|s| elapsed(s, now)).filter(|d| *d >= STUCK);
    TargetStatus {
        name: t.name.clone(),
        path: t.path.display().to_string(),
        owner: rt.owner.clone(),
        state: if rt.last_error.is_some() || stuck.is_some() {
            TargetState::Error
        } else if rt.written {
            TargetState::Ok
        } else {
            TargetState::Pending
        },
        last_write: rt.last_write,
        last_error: match stuck {
            Some(d) => Some(format!(
                "stuck: a write has been running for {} (a hung file system?); other targets go on",
                status::rough(d)
            )),
            None => rt.last_error.clone(),
        },
        warnings: rt.warnings.clone(),
        failures_total: rt.failures_total,
        shadowed: rt.shadowed,
    }
}
