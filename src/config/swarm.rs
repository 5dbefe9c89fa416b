//! The `[swarm]` table: Docker Swarm services whose stored registry credential is kept fresh.

use std::path::PathBuf;
use std::time::Duration;

use super::check::Checker;
use super::raw::RawSwarm;

/// The Engine's socket when the config does not say.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// How often services are listed again (new services, a node promoted) when the config does not say.
pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(300);
/// The shortest `check_every`.
pub const MIN_CHECK_EVERY: Duration = Duration::from_secs(1);
/// The longest `check_every`.
pub const MAX_CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Swarm services kept fresh, validated. Off unless `enabled = true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmSettings {
    /// The Docker Engine API's Unix socket.
    pub socket: PathBuf,
    /// How often the services are listed again besides every rotation.
    pub check_every: Duration,
}

/// Validates `[swarm]`; `None` when it is absent or not enabled.
pub(super) fn swarm(c: &mut Checker, raw: Option<&RawSwarm>) -> Option<SwarmSettings> {
    let raw = raw?;
    let socket = match &raw.socket {
        Some(v) => c.absolute_path("socket", v),
        None => PathBuf::from(DEFAULT_SOCKET),
    };
    let check_every = c.duration_at_least(
        "check_every",
        &raw.check_every,
        DEFAULT_CHECK_EVERY,
        MIN_CHECK_EVERY,
        MAX_CHECK_EVERY,
    );
    raw.enabled.unwrap_or(false).then_some(SwarmSettings {
        socket,
        check_every,
    })
}
