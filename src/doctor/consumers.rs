//! Which credential docker and podman would use for a host, file by file: ours, a stale one, or a helper that hides it.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::config::Settings;
use crate::safe_fs::{self, OwnerPolicy};
use crate::targets::authfile::{self, Format, OUR_HELPER};
use crate::targets::diagnose::managed_hosts;
use crate::targets::files::owner_policy;

/// What a file gives its reader for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Use {
    /// A credential helper answers instead of `auths` (`credHelpers` for the host, or
    /// `credsStore`); `ours` when it is this daemon's.
    Helper {
        helper: String,
        via: &'static str,
        ours: bool,
    },
    /// An `auths` entry: its `auth` value (base64 `user:password`) and the key it is under.
    Entry { key: String, auth: String },
    /// Nothing for this host: the pull goes anonymous.
    Nothing,
}

/// What docker (`Format::Docker`) or podman reads for `host` in a parsed file: a helper for
/// the host, then (docker only) `credsStore`, then `auths`.
pub fn what_is_used(map: &Map<String, Value>, host: &str, format: Format) -> Use {
    if let Some(Value::Object(helpers)) = map.get("credHelpers")
        && let Some(h) = helpers
            .iter()
            .find(|(k, _)| format.names_host(k, host))
            .map(|(_, v)| v)
    {
        let helper = h.as_str().unwrap_or_default().to_string();
        return Use::Helper {
            ours: helper == OUR_HELPER,
            helper: authfile_short(&helper),
            via: "credHelpers",
        };
    }
    // containers/image does not use credsStore; docker asks it for every host.
    if format == Format::Docker
        && let Some(Value::String(store)) = map.get("credsStore")
        && !store.is_empty()
    {
        return Use::Helper {
            ours: store == OUR_HELPER,
            helper: authfile_short(store),
            via: "credsStore",
        };
    }
    if let Some(Value::Object(auths)) = map.get("auths") {
        // The exact key first, then any key naming the host (`https://host/v1/`).
        let found = auths
            .get_key_value(host)
            .or_else(|| auths.iter().find(|(k, _)| format.names_host(k, host)));
        if let Some((key, v)) = found {
            let auth = match v.get("auth").and_then(Value::as_str) {
                Some(a) if !a.is_empty() => a.to_string(),
                _ => match (
                    v.get("username").and_then(Value::as_str),
                    v.get("password").and_then(Value::as_str),
                ) {
                    (Some(u), Some(p)) => {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                    }
                    _ => String::new(),
                },
            };
            return Use::Entry {
                key: authfile_short(key),
                auth,
            };
        }
    }
    Use::Nothing
}

fn authfile_short(s: &str) -> String {
    crate::doctor::explain::quote(&s.chars().take(80).collect::<String>())
}

/// One file a consumer reads, in the order that consumer reads them.
#[derive(Debug, Clone)]
pub struct File {
    /// Who reads it: "docker", "podman", "docker and podman".
    pub reader: &'static str,
    pub path: PathBuf,
    pub policy: OwnerPolicy,
    /// The user it belongs to, for the line ("root", "portainer").
    pub user: String,
}

/// The files to look at: each target that covers `host`.
pub fn target_files(settings: &Settings, host: &str) -> Vec<File> {
    settings
        .targets
        .iter()
        .filter(|t| managed_hosts(settings, t).contains(host))
        .map(|t| File {
            reader: match Format::of_path(&t.path) {
                Format::Docker => "docker and podman",
                Format::Podman => "podman",
            },
            path: t.path.clone(),
            policy: owner_policy(t),
            user: t
                .user
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_else(|| "the file's owner".into()),
        })
        .collect()
}

/// The files one user's docker and podman read, in podman's order (containers/image
/// `getPathToAuthWithOS`: `/run/containers/UID`, `$XDG_RUNTIME_DIR/containers`,
/// `~/.config/containers`, then docker's `~/.docker/config.json`).
pub fn user_files(name: &str, uid: u32, home: &Path, run_dir: &Path) -> Vec<File> {
    let policy = OwnerPolicy::Inherit;
    let mut v: Vec<(PathBuf, &'static str)> = vec![
        (
            run_dir.join(format!("containers/{uid}/auth.json")),
            "podman",
        ),
        (
            run_dir.join(format!("user/{uid}/containers/auth.json")),
            "podman",
        ),
        (home.join(".config/containers/auth.json"), "podman"),
        (home.join(".docker/config.json"), "docker and podman"),
    ];
    if uid != 0 {
        // podman as root reads /run/containers/0; a user's podman reads $XDG_RUNTIME_DIR's.
        v.swap(0, 1);
    }
    v.into_iter()
        .map(|(path, reader)| File {
            reader,
            path,
            policy: policy.clone(),
            user: name.to_string(),
        })
        .collect()
}

/// Reads one file through `safe_fs` (no link followed into another user's file); `None` when
/// it does not exist.
pub fn read(file: &File) -> Result<Option<Map<String, Value>>, String> {
    match safe_fs::read(&file.path, file.policy.clone()) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => authfile::parse(&bytes)
            .map(Some)
            .map_err(|e| format!("docker and podman cannot read it: {e}")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

    fn map(json: &str) -> Map<String, Value> {
        authfile::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn a_helper_for_the_host_wins_then_the_store_then_auths() {
        let m = map(&format!(
            r#"{{"auths":{{"{H}":{{"auth":"QVdTOnA="}}}},"credsStore":"desktop","credHelpers":{{"{H}":"ecr-login"}}}}"#
        ));
        assert_eq!(
            what_is_used(&m, H, Format::Docker),
            Use::Helper {
                helper: "ecr-login".into(),
                via: "credHelpers",
                ours: false
            }
        );
        let m = map(&format!(
            r#"{{"auths":{{"{H}":{{"auth":"QVdTOnA="}}}},"credsStore":"desktop"}}"#
        ));
        assert_eq!(
            what_is_used(&m, H, Format::Docker),
            Use::Helper {
                helper: "desktop".into(),
                via: "credsStore",
                ours: false
            }
        );
        assert_eq!(
            what_is_used(&m, H, Format::Podman),
            Use::Entry {
                key: H.into(),
                auth: "QVdTOnA=".into()
            },
            "containers/image does not use credsStore"
        );
        let m = map(r#"{"credsStore":"ecr-refresherd"}"#);
        assert!(matches!(
            what_is_used(&m, H, Format::Docker),
            Use::Helper { ours: true, .. }
        ));
    }

    #[test]
    fn entries_under_other_keys_and_username_password() {
        let m = map(&format!(
            r#"{{"auths":{{"https://{H}/v1/":{{"auth":"QVdTOnE="}}}}}}"#
        ));
        assert_eq!(
            what_is_used(&m, H, Format::Docker),
            Use::Entry {
                key: format!("https://{H}/v1/"),
                auth: "QVdTOnE=".into()
            }
        );
        let m = map(&format!(
            r#"{{"auths":{{"{H}":{{"username":"AWS","password":"p"}}}}}}"#
        ));
        assert_eq!(
            what_is_used(&m, H, Format::Podman),
            Use::Entry {
                key: H.into(),
                auth: "QVdTOnA=".into()
            }
        );
        assert_eq!(what_is_used(&map("{}"), H, Format::Docker), Use::Nothing);
        let other = map(r#"{"auths":{"ghcr.io":{"auth":"eDp5"}}}"#);
        assert_eq!(what_is_used(&other, H, Format::Docker), Use::Nothing);
    }

    #[test]
    fn a_users_files_in_podmans_order() {
        let f = user_files("ci", 1000, Path::new("/home/ci"), Path::new("/run"));
        let paths: Vec<_> = f.iter().map(|f| f.path.display().to_string()).collect();
        assert_eq!(
            paths,
            [
                "/run/user/1000/containers/auth.json",
                "/run/containers/1000/auth.json",
                "/home/ci/.config/containers/auth.json",
                "/home/ci/.docker/config.json"
            ]
        );
        let r = user_files("root", 0, Path::new("/root"), Path::new("/run"));
        assert_eq!(r[0].path, Path::new("/run/containers/0/auth.json"));
    }
}
