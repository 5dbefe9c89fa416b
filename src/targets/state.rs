//! What we wrote where, kept in `state_dir`, so removed registries are cleaned up and foreign entries never touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::alias;
use crate::ecr::registry::Registry;
use crate::safe_fs::{self, FileError, OwnerPolicy};

const STATE_FILE: &str = "state.json";
/// The largest state file read or written. It is root's own file, and it grows with targets x
/// registries (about 90 bytes an entry): 1,000 registries in 100 targets take some 9 MB.
const STATE_LIMIT: usize = 64 * 1024 * 1024;

/// One entry we manage in one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Managed {
    /// When the token we wrote expires, seconds since the epoch.
    pub expires_at: u64,
    /// The entry is one of a registry's aliases: a name that is ours only because we wrote it
    /// (an ECR host is ours by its name alone).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alias: bool,
}

impl Managed {
    /// An entry whose token expires at `expires_at`.
    pub fn new(expires_at: SystemTime) -> Managed {
        Managed {
            expires_at: expires_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            alias: false,
        }
    }

    /// An alias entry whose token expires at `expires_at`.
    pub fn alias(expires_at: SystemTime) -> Managed {
        Managed {
            alias: true,
            ..Managed::new(expires_at)
        }
    }

    /// When the token we wrote expires.
    pub fn expires_at(&self) -> SystemTime {
        // Saturating: the number comes from a file.
        crate::clock::add(UNIX_EPOCH, Duration::from_secs(self.expires_at))
    }
}

/// Target path -> host -> what we wrote there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Target path -> host -> what we wrote there.
    #[serde(default)]
    pub targets: BTreeMap<PathBuf, BTreeMap<String, Managed>>,
}

impl State {
    /// Loads the state; a missing file is an empty state.
    ///
    /// A state file we cannot read (not JSON, larger than 4 MiB) is moved aside intact, to
    /// `state.json.unreadable-<unix time>`, and we start afresh: entries written before are then
    /// no longer cleaned up, but nothing is lost and nothing foreign is touched. Hosts that are not
    /// ECR registry hosts are dropped: we never write them, so the state has no say over them.
    /// The warning, if any, says what happened.
    pub fn load(dir: &Path) -> (State, Option<String>) {
        State::load_limited(dir, STATE_LIMIT)
    }

    /// The state as the daemon left it, read only (`doctor`): nothing is moved or changed; a
    /// missing or unreadable file is `None`.
    pub fn peek(dir: &Path) -> Option<State> {
        let bytes =
            safe_fs::read_sized(&dir.join(STATE_FILE), root_policy(), STATE_LIMIT).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    fn load_limited(dir: &Path, limit: usize) -> (State, Option<String>) {
        let path = dir.join(STATE_FILE);
        let why = match safe_fs::read_sized(&path, root_policy(), limit) {
            Ok(None) => return (State::default(), None),
            Ok(Some(bytes)) => match serde_json::from_slice::<State>(&bytes) {
                Ok(mut s) => {
                    let warning = s
                        .drop_foreign_hosts()
                        .map(|w| format!("{}: {w}", path.display()));
                    return (s, warning);
                }
                Err(e) => format!("not a state file: {e}"),
            },
            Err(FileError::Content { reason, .. }) => reason,
            // Refused (a symlink, another owner, hard links) or an I/O error: the writer refuses
            // the same file, so it is not replaced either.
            Err(e) => {
                return (
                    State::default(),
                    Some(format!("{e}; starting with an empty state")),
                );
            }
        };
        let warning = match move_aside(dir) {
            Ok(aside) => format!(
                "{}: unreadable state ({why}); moved aside to {} and starting afresh: entries written before it are no longer cleaned up",
                path.display(),
                aside.display()
            ),
            Err(e) => format!(
                "{}: unreadable state ({why}); cannot move it aside ({e}), so it will not be replaced and the state is not saved",
                path.display()
            ),
        };
        (State::default(), Some(warning))
    }

    /// Removes every host that is neither an ECR registry host nor a valid alias marked as one;
    /// says which, if any.
    fn drop_foreign_hosts(&mut self) -> Option<String> {
        let mut dropped = Vec::new();
        for (target, hosts) in &mut self.targets {
            hosts.retain(|host, m| {
                let ours = Registry::parse(host).is_ok() || (m.alias && alias::check(host).is_ok());
                if !ours {
                    dropped.push(format!("{host:?} for {}", target.display()));
                }
                ours
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
            "ignored {n} entries for hosts that are neither ECR hosts nor aliases ({}{more}): we only ever write those, so we never remove any other",
            dropped.join(", ")
        ))
    }

    /// Saves the state atomically (0600, root).
    ///
    /// Never replaces a state file it cannot read (see [`State::load`]), and never writes one the
    /// loader would refuse (larger than [`STATE_LIMIT`]).
    pub fn save(&self, dir: &Path) -> Result<(), FileError> {
        self.save_limited(dir, STATE_LIMIT)
    }

    /// The state as it is saved (compact JSON: at scale it is megabytes).
    pub fn encode(&self) -> Result<Vec<u8>, FileError> {
        // Never replace the state with an empty file: that would forget what we manage.
        serde_json::to_vec(self).map_err(|e| FileError::Content {
            path: PathBuf::from(STATE_FILE),
            reason: format!("cannot encode the state: {e}"),
        })
    }

    fn save_limited(&self, dir: &Path, limit: usize) -> Result<(), FileError> {
        save_encoded(&self.encode()?, dir, limit)
    }

    /// What we manage in one target.
    pub fn managed(&self, target: &Path) -> Option<&BTreeMap<String, Managed>> {
        self.targets.get(target)
    }
}

/// Saves an encoded state (see [`State::encode`]) atomically (0600, root): the loop encodes
/// it, a blocking thread writes it, so no copy of the whole state is made.
pub fn save_encoded_state(bytes: &[u8], dir: &Path) -> Result<(), FileError> {
    save_encoded(bytes, dir, STATE_LIMIT)
}

fn save_encoded(bytes: &[u8], dir: &Path, limit: usize) -> Result<(), FileError> {
    let path = dir.join(STATE_FILE);
    {
        if bytes.len() > limit {
            return Err(FileError::Content {
                path,
                reason: format!(
                    "the state would take {} bytes, more than the {} MiB it may be read back with; not saved",
                    bytes.len(),
                    limit / (1024 * 1024)
                ),
            });
        }
        // Only whether the file there is JSON: checked without building it (it may be megabytes).
        safe_fs::update_sized(&path, root_policy(), Some(0o600), limit, |old| {
            if let Some(old) = old
                && serde_json::from_slice::<serde::de::IgnoredAny>(old).is_err()
            {
                return Err(
                    "the state file there is unreadable and was not moved aside; move it away to save the state",
                );
            }
            Ok((old != Some(bytes)).then(|| bytes.to_vec()))
        })
        .map(|_| ())
    }
}

/// Renames the state file to `state.json.unreadable-<unix time>` (never over an existing file).
fn move_aside(dir: &Path) -> Result<PathBuf, rustix::io::Errno> {
    let from = dir.join(STATE_FILE);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut last = rustix::io::Errno::EXIST;
    for n in 0..100 {
        let name = match n {
            0 => format!("{STATE_FILE}.unreadable-{now}"),
            n => format!("{STATE_FILE}.unreadable-{now}-{n}"),
        };
        let to = dir.join(name);
        // The state directory is root's alone (safe_fs::read checked its chain): paths are safe here.
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &from,
            rustix::fs::CWD,
            &to,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => return Ok(to),
            Err(rustix::io::Errno::EXIST) => last = rustix::io::Errno::EXIST,
            Err(e) => return Err(e),
        }
    }
    Err(last)
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
    /// The tests use the auth files' limit for the state: the same rules, smaller files.
    const MAX_FILE_SIZE: usize = 4 * 1024 * 1024;
    use super::*;

    const H: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn one(path: &str, hosts: &[&str]) -> State {
        let mut s = State::default();
        s.targets.insert(
            PathBuf::from(path),
            hosts
                .iter()
                .map(|h| {
                    (
                        h.to_string(),
                        Managed {
                            expires_at: 7,
                            alias: false,
                        },
                    )
                })
                .collect(),
        );
        s
    }

    #[test]
    fn a_saved_state_loads_back() {
        let d = dir();
        let s = one("/root/.docker/config.json", &[H, "public.ecr.aws"]);
        s.save_limited(d.path(), MAX_FILE_SIZE).unwrap();
        assert_eq!(State::load_limited(d.path(), MAX_FILE_SIZE), (s, None));
        assert_eq!(
            State::load_limited(&d.path().join("none"), MAX_FILE_SIZE),
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
                Managed {
                    expires_at: 1,
                    alias: false,
                },
            )]
            .into(),
        );
        s.save_limited(d.path(), MAX_FILE_SIZE).unwrap();
        let (loaded, warning) = State::load_limited(d.path(), MAX_FILE_SIZE);
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
    fn alias_entries_are_kept_only_when_marked_and_valid() {
        let d = dir();
        let mut s = one("/a/config.json", &[H]);
        let entries = s.targets.get_mut(Path::new("/a/config.json")).unwrap();
        for (host, alias) in [
            ("mirror.internal:5000", true),
            ("[fd00::1]:5000", true),
            ("ghcr.io", false),
            ("https://mirror.internal", true),
            ("docker.io", true),
        ] {
            entries.insert(
                host.to_string(),
                Managed {
                    expires_at: 9,
                    alias,
                },
            );
        }
        s.save_limited(d.path(), MAX_FILE_SIZE).unwrap();
        let text = std::fs::read_to_string(d.path().join(STATE_FILE)).unwrap();
        assert_eq!(text.matches("\"alias\":true").count(), 4, "{text}");
        assert!(
            !text.contains("\"alias\":false"),
            "only aliases say so: {text}"
        );
        let (loaded, warning) = State::load_limited(d.path(), MAX_FILE_SIZE);
        let kept: Vec<(&str, bool)> = loaded.targets[Path::new("/a/config.json")]
            .iter()
            .map(|(h, m)| (h.as_str(), m.alias))
            .collect();
        assert_eq!(
            kept,
            [
                (H, false),
                ("[fd00::1]:5000", true),
                ("mirror.internal:5000", true)
            ]
        );
        let w = warning.expect("a warning");
        assert!(w.contains("ignored 3 entries"), "{w}");
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

    #[test]
    fn unreadable_states_are_moved_aside_intact() {
        let mut big = b"{\"targets\": {}}".to_vec();
        big.resize(MAX_FILE_SIZE + 1, b' ');
        for bad in [
            b"{\"targets\": ".to_vec(),
            b"".to_vec(),
            b"null".to_vec(),
            b"{\"targets\": {\"/a\": {\"h\": {\"expires_at\": -1}}}}".to_vec(),
            big,
        ] {
            let d = dir();
            let p = d.path().join(STATE_FILE);
            std::fs::write(&p, &bad).unwrap();
            let (s, warning) = State::load_limited(d.path(), MAX_FILE_SIZE);
            assert_eq!(s, State::default());
            let w = warning.unwrap_or_else(|| {
                panic!("{:?}", String::from_utf8_lossy(&bad[..bad.len().min(40)]))
            });
            let n = names(d.path());
            assert_eq!(n.len(), 1, "{n:?}");
            assert!(n[0].starts_with("state.json.unreadable-"), "{n:?}");
            assert!(w.contains("moved aside") && w.contains(&n[0]), "{w}");
            assert_eq!(std::fs::read(d.path().join(&n[0])).unwrap(), bad);
            // A second unreadable file in the same second gets its own name.
            std::fs::write(&p, &bad).unwrap();
            let (_, w2) = State::load_limited(d.path(), MAX_FILE_SIZE);
            assert_eq!(names(d.path()).len(), 2, "{w2:?}");
        }
    }

    #[test]
    fn save_never_replaces_a_state_it_cannot_read() {
        let d = dir();
        let p = d.path().join(STATE_FILE);
        std::fs::write(&p, b"garbage").unwrap();
        let err = one("/a/config.json", &[H])
            .save_limited(d.path(), MAX_FILE_SIZE)
            .unwrap_err();
        assert!(err.to_string().contains("unreadable"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"garbage");
        let mut big = b"{}".to_vec();
        big.resize(MAX_FILE_SIZE + 1, b' ');
        std::fs::write(&p, &big).unwrap();
        let err = one("/a/config.json", &[H])
            .save_limited(d.path(), MAX_FILE_SIZE)
            .unwrap_err();
        assert!(err.to_string().contains("larger than 4 MiB"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), big);
    }

    #[test]
    fn a_state_too_large_to_load_back_is_not_saved() {
        let d = dir();
        let host = |i: usize| format!("{i:012}.dkr.ecr.us-east-1.amazonaws.com");
        let mut s = State::default();
        // About 75 bytes per entry: 70,000 entries exceed 4 MiB.
        for t in 0..70 {
            s.targets.insert(
                PathBuf::from(format!("/home/u{t}/.docker/config.json")),
                (0..1000)
                    .map(|i| {
                        (
                            host(i),
                            Managed {
                                expires_at: 1,
                                alias: false,
                            },
                        )
                    })
                    .collect(),
            );
        }
        s.save_limited(d.path(), MAX_FILE_SIZE).unwrap_err();
        assert!(names(d.path()).is_empty(), "nothing written");
        one("/a/config.json", &[H])
            .save_limited(d.path(), MAX_FILE_SIZE)
            .unwrap();
        let err = s.save_limited(d.path(), MAX_FILE_SIZE).unwrap_err();
        assert!(err.to_string().contains("more than the 4 MiB"), "{err}");
        assert_eq!(
            State::load_limited(d.path(), MAX_FILE_SIZE).0,
            one("/a/config.json", &[H]),
            "the old state stays"
        );
    }
}
