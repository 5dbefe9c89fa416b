//! Who may ask for which registry's credential: the config's grants, checked against the
//! caller's uid and groups as the kernel gives them (`SO_PEERCRED`, `SO_PEERGROUPS`).

use std::collections::BTreeMap;

use crate::config::{Grant, Settings};

/// The grants of the running config, by registry host (lower case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    by_host: BTreeMap<String, Grant>,
}

impl Grants {
    /// The grants of every configured registry.
    pub fn of(settings: &Settings) -> Grants {
        Grants {
            by_host: settings
                .registries
                .iter()
                .map(|r| (r.host.to_ascii_lowercase(), r.grants.clone()))
                .collect(),
        }
    }

    /// Whether a caller with `uid` and `gids` (its primary and supplementary groups, from the
    /// kernel) may have `host`'s credential. Root always; anyone else only by a grant (names are
    /// looked up now, so a user or group created later is picked up; a uid without an account
    /// matches only a numeric grant). Blocking: it may read the account databases.
    pub fn allows(&self, host: &str, uid: u32, gids: &[u32]) -> bool {
        if uid == 0 {
            return true;
        }
        let Some(g) = self.by_host.get(host) else {
            return false;
        };
        let by_user = g.users.iter().any(|u| match u.uid {
            Some(n) => n == uid,
            None => nix::unistd::User::from_name(&u.name)
                .ok()
                .flatten()
                .is_some_and(|a| a.uid.as_raw() == uid),
        });
        if by_user {
            return true;
        }
        g.groups.iter().any(|name| {
            let gid = match name.parse::<u32>() {
                Ok(n) => Some(n),
                Err(_) => nix::unistd::Group::from_name(name)
                    .ok()
                    .flatten()
                    .map(|g| g.gid.as_raw()),
            };
            gid.is_some_and(|gid| gids.contains(&gid))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UserSpec;

    fn grants(users: &[&str], groups: &[&str]) -> Grants {
        Grants {
            by_host: [(
                "h".to_string(),
                Grant {
                    users: users
                        .iter()
                        .map(|u| UserSpec {
                            name: u.to_string(),
                            uid: u.parse().ok(),
                        })
                        .collect(),
                    groups: groups.iter().map(|g| g.to_string()).collect(),
                },
            )]
            .into(),
        }
    }

    #[test]
    fn root_always_others_by_grant() {
        let none = grants(&[], &[]);
        assert!(none.allows("h", 0, &[]));
        assert!(none.allows("unknown-host", 0, &[]));
        assert!(!none.allows("h", 4242, &[4242]));
        let by_uid = grants(&["4242"], &[]);
        assert!(by_uid.allows("h", 4242, &[]));
        assert!(!by_uid.allows("h", 4343, &[4242]));
        assert!(!by_uid.allows("other", 4242, &[]));
        // A uid without an account matches no name.
        let by_name = grants(&["nobody-such-user-here"], &[]);
        assert!(!by_name.allows("h", 4242, &[]));
        // Groups as the kernel gives them, by number or name.
        let by_group = grants(&[], &["4545"]);
        assert!(by_group.allows("h", 4646, &[4646, 4545]));
        assert!(!by_group.allows("h", 4646, &[4646]));
        let root_group = grants(&[], &["root"]);
        assert!(root_group.allows("h", 4646, &[0]));
        assert!(!root_group.allows("h", 4646, &[4646]));
    }
}
