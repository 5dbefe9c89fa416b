//! Who may ask for which registry's credential: the config's grants, resolved to uids and gids
//! when the config is loaded (and again every half minute, so accounts created later count),
//! checked against the caller's uid and groups as the kernel gives them (`SO_PEERCRED`,
//! `SO_PEERGROUPS`). A request is set lookups only: no account database on the request path,
//! and the same work whether a registry exists or not.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::config::{Grant, Settings};

/// How often names are resolved again (users and groups created or removed meanwhile).
pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// The grants of the running config, by registry host (lower case), resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    by_host: BTreeMap<String, Resolved>,
    /// Every uid and gid granted anything: the helper socket turns everyone else away at once.
    any_uid: BTreeSet<u32>,
    any_gid: BTreeSet<u32>,
}

/// One registry's grant as ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Resolved {
    uids: BTreeSet<u32>,
    gids: BTreeSet<u32>,
}

impl Grants {
    /// Resolves every registry's grant with the machine's account databases (blocking).
    pub fn of(settings: &Settings) -> Grants {
        Grants::resolve(
            settings,
            &|name| {
                nix::unistd::User::from_name(name)
                    .ok()
                    .flatten()
                    .map(|u| u.uid.as_raw())
            },
            &|name| {
                nix::unistd::Group::from_name(name)
                    .ok()
                    .flatten()
                    .map(|g| g.gid.as_raw())
            },
        )
    }

    fn resolve(
        settings: &Settings,
        user: &dyn Fn(&str) -> Option<u32>,
        group: &dyn Fn(&str) -> Option<u32>,
    ) -> Grants {
        let mut out = Grants::default();
        for r in &settings.registries {
            let g: &Grant = &r.grants;
            let resolved = Resolved {
                uids: g
                    .users
                    .iter()
                    .filter_map(|u| u.uid.or_else(|| user(&u.name)))
                    .collect(),
                gids: g
                    .groups
                    .iter()
                    .filter_map(|name| name.parse::<u32>().ok().or_else(|| group(name)))
                    .collect(),
            };
            out.any_uid.extend(&resolved.uids);
            out.any_gid.extend(&resolved.gids);
            out.by_host.insert(r.host.to_ascii_lowercase(), resolved);
        }
        out
    }

    /// Whether a caller with `uid` and `gids` (its primary and supplementary groups, from the
    /// kernel) may have `host`'s credential: root always, anyone else only by a grant.
    pub fn allows(&self, host: &str, uid: u32, gids: &[u32]) -> bool {
        if uid == 0 {
            return true;
        }
        self.by_host
            .get(host)
            .is_some_and(|r| r.uids.contains(&uid) || gids.iter().any(|g| r.gids.contains(g)))
    }

    /// Whether the caller is granted any registry at all (root always is).
    pub fn anything_for(&self, uid: u32, gids: &[u32]) -> bool {
        uid == 0 || self.any_uid.contains(&uid) || gids.iter().any(|g| self.any_gid.contains(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Grant, UserSpec};

    fn grants(users: &[&str], groups: &[&str]) -> Grants {
        let mut settings = crate::config::zero_config("111111111111", "us-east-1").unwrap();
        settings.registries[0].host = "h".into();
        settings.registries[0].grants = Grant {
            users: users
                .iter()
                .map(|u| UserSpec {
                    name: u.to_string(),
                    uid: u.parse().ok(),
                })
                .collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        let user = |n: &str| (n == "builder").then_some(5001);
        let group = |n: &str| (n == "docker").then_some(6001);
        Grants::resolve(&settings, &user, &group)
    }

    #[test]
    fn root_always_others_by_grant() {
        let none = grants(&[], &[]);
        assert!(none.allows("h", 0, &[]));
        assert!(none.allows("unknown-host", 0, &[]));
        assert!(!none.allows("h", 4242, &[4242]));
        assert!(!none.anything_for(4242, &[4242]));
        let by_uid = grants(&["4242"], &[]);
        assert!(by_uid.allows("h", 4242, &[]));
        assert!(!by_uid.allows("h", 4343, &[4242]));
        assert!(!by_uid.allows("other", 4242, &[]));
        assert!(by_uid.anything_for(4242, &[]));
        // Names resolved when the grants are built; an unknown name grants nobody.
        let by_name = grants(&["builder", "nobody-such-user-here"], &[]);
        assert!(by_name.allows("h", 5001, &[]));
        assert!(!by_name.allows("h", 4242, &[]));
        // Groups as the kernel gives them, by number or name.
        let by_group = grants(&[], &["4545", "docker"]);
        assert!(by_group.allows("h", 4646, &[4646, 4545]));
        assert!(by_group.allows("h", 4646, &[6001]));
        assert!(!by_group.allows("h", 4646, &[4646]));
        assert!(by_group.anything_for(4646, &[4545]));
        assert!(!by_group.anything_for(4646, &[4646]));
    }
}
