//! What we wrote where, kept in `state_dir`, so removed registries are cleaned up and foreign entries never touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::atomic::{self, FileError, OwnerPolicy};
use crate::registry::Registry;

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
    /// Hosts that are not ECR registry hosts are dropped: we never write them, so the state has no
    /// say over them.
    pub fn load(dir: &Path) -> (State, Option<String>) {
        let path = dir.join(STATE_FILE);
        match atomic::read(&path, root_policy()) {
            Ok(None) => (State::default(), None),
            Ok(Some(bytes)) => match serde_json::from_slice::<State>(&bytes) {
                Ok(mut s) => {
                    let warning = s
                        .drop_foreign_hosts()
                        .map(|w| format!("{}: {w}", path.display()));
                    (s, warning)
                }
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

    /// Removes every host that is not an ECR registry host; says which, if any.
    fn drop_foreign_hosts(&mut self) -> Option<String> {
        let mut dropped = Vec::new();
        for (target, hosts) in &mut self.targets {
            hosts.retain(|host, _| {
                let ecr = Registry::parse(host).is_ok();
                if !ecr {
                    dropped.push(format!("{host:?} for {}", target.display()));
                }
                ecr
            });
        }
        self.targets.retain(|_, hosts| !hosts.is_empty());
        if dropped.is_empty() {
            return None;
        }
        let n = dropped.len();
        dropped.truncate(5);
        let more = if n > 5 {
            format!(" and {} more", n - 5)
        } else {
            String::new()
        };
        Some(format!(
            "ignored {n} entries for hosts that are not ECR hosts ({}{more}): we only ever write ECR hosts, so we never remove any other",
            dropped.join(", ")
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn one(path: &str, hosts: &[&str]) -> State {
        let mut s = State::default();
        s.targets.insert(
            PathBuf::from(path),
            hosts
                .iter()
                .map(|h| (h.to_string(), Managed { expires_at: 7 }))
                .collect(),
        );
        s
    }

    #[test]
    fn a_saved_state_loads_back() {
        let d = dir();
        let s = one("/root/.docker/config.json", &[H, "public.ecr.aws"]);
        s.save(d.path()).unwrap();
        assert_eq!(State::load(d.path()), (s, None));
        assert_eq!(
            State::load(&d.path().join("none")),
            (State::default(), None)
        );
    }

    #[test]
    fn non_ecr_hosts_are_dropped_on_load_with_a_warning() {
        let d = dir();
        let mut s = one("/a/config.json", &[H, "index.docker.io", "ghcr.io"]);
        s.targets.insert(
            PathBuf::from("/b/auth.json"),
            [(
                "https://index.docker.io/v1/".to_string(),
                Managed { expires_at: 1 },
            )]
            .into(),
        );
        s.save(d.path()).unwrap();
        let (loaded, warning) = State::load(d.path());
        assert_eq!(
            loaded,
            one("/a/config.json", &[H]),
            "the /b target is left empty, so gone"
        );
        let w = warning.expect("a warning");
        for part in [
            "ignored 3 entries",
            "\"ghcr.io\" for /a/config.json",
            "\"index.docker.io\" for /a/config.json",
            "\"https://index.docker.io/v1/\" for /b/auth.json",
        ] {
            assert!(w.contains(part), "{part}: {w}");
        }
    }

    #[test]
    fn many_dropped_hosts_are_summarised() {
        let hosts: Vec<String> = (0..9).map(|i| format!("h{i}.example")).collect();
        let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let mut s = one("/a/config.json", &refs);
        let w = s.drop_foreign_hosts().unwrap();
        assert!(
            w.contains("ignored 9 entries") && w.contains("and 4 more"),
            "{w}"
        );
        assert!(s.targets.is_empty());
    }
}
