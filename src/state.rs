//! What we wrote where, kept in `state_dir`, so removed registries are cleaned up and foreign entries never touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::atomic::{self, FileError, OwnerPolicy};

const STATE_FILE: &str = "state.json";

/// One entry we manage in one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Managed {
    /// When the token we wrote expires, seconds since the epoch.
    pub expires_at: u64,
}

impl Managed {
    pub fn new(expires_at: SystemTime) -> Managed {
        Managed {
            expires_at: expires_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.expires_at)
    }
}

/// Target path -> host -> what we wrote there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub targets: BTreeMap<PathBuf, BTreeMap<String, Managed>>,
}

impl State {
    /// Loads the state; a missing file is an empty state. A corrupt one is reported and replaced
    /// by an empty state (we then only forget to clean up, we never touch foreign entries).
    pub fn load(dir: &Path) -> (State, Option<String>) {
        let path = dir.join(STATE_FILE);
        match atomic::read(&path, root_policy()) {
            Ok(None) => (State::default(), None),
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(s) => (s, None),
                Err(e) => (
                    State::default(),
                    Some(format!(
                        "{}: unreadable state, starting afresh: {e}",
                        path.display()
                    )),
                ),
            },
            Err(e) => (State::default(), Some(e.to_string())),
        }
    }

    /// Saves the state atomically (0600, root).
    pub fn save(&self, dir: &Path) -> Result<(), FileError> {
        let path = dir.join(STATE_FILE);
        // Never replace the state with an empty file: that would forget what we manage.
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| FileError::Content {
            path: path.clone(),
            reason: format!("cannot encode the state: {e}"),
        })?;
        atomic::update(&path, root_policy(), Some(0o600), |old| {
            Ok::<_, String>((old != Some(bytes.as_slice())).then(|| bytes.clone()))
        })
        .map(|_| ())
    }

    pub fn managed(&self, target: &Path) -> Option<&BTreeMap<String, Managed>> {
        self.targets.get(target)
    }
}

/// The state directory belongs to the user the daemon runs as.
fn root_policy() -> OwnerPolicy {
    OwnerPolicy::User {
        uid: rustix::process::geteuid().as_raw(),
        gid: Some(rustix::process::getegid().as_raw()),
    }
}
