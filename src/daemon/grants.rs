//! Who may ask for which registry's credential: the config's grants, resolved to uids and gids
//! when the config is loaded (and again every half minute, so accounts created later count),
//! checked against the caller's uid and groups as the kernel gives them (`SO_PEERCRED`,
//! `SO_PEERGROUPS`). A request is set lookups only: no account database on the request path,
//! and the same work whether a registry exists or not.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{Grant, Settings};

/// How often names are resolved again (users and groups created or removed meanwhile).
pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);
/// How long a reload waits for the account databases before it publishes the numeric grants
/// alone (names then count once they resolve): a hung NSS never holds the loop longer.
const RELOAD_WAIT: Duration = Duration::from_secs(2);

/// Publishes the grants to the sockets. Names are resolved on a blocking thread, never on the
/// loop; a resolution of an older config never lands after a newer one (generations).
pub struct GrantsFeed {
    tx: watch::Sender<Arc<Grants>>,
    generation: AtomicU64,
    resolving: AtomicBool,
}

impl GrantsFeed {
    /// The feed, publishing the numeric grants of `settings` at once (no account lookup), and
    /// the receiver the sockets read.
    pub fn new(settings: &Settings) -> (Arc<GrantsFeed>, watch::Receiver<Arc<Grants>>) {
        let (tx, rx) = watch::channel(Arc::new(Grants::numeric(settings)));
        let feed = Arc::new(GrantsFeed {
            tx,
            generation: AtomicU64::new(0),
            resolving: AtomicBool::new(false),
        });
        (feed, rx)
    }

    fn publish(&self, generation: u64, g: Grants) {
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        self.tx.send_if_modified(|held| {
            let changed = **held != g;
            if changed {
                *held = Arc::new(g);
            }
            changed
        });
    }

    /// Resolves names again in the background (skipped while one is under way).
    pub fn refresh(self: &Arc<Self>, settings: Arc<Settings>) {
        if self.resolving.swap(true, Ordering::SeqCst) {
            return;
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let feed = Arc::clone(self);
        tokio::spawn(async move {
            if let Ok(g) = tokio::task::spawn_blocking(move || Grants::of(&settings)).await {
                feed.publish(generation, g);
            }
            feed.resolving.store(false, Ordering::SeqCst);
        });
    }

    /// A new config: its grants are in force when this returns (a revoked grant is gone), with
    /// names resolved if the account databases answer within [`RELOAD_WAIT`], else numeric
    /// only until they do.
    pub async fn reload(self: &Arc<Self>, settings: Arc<Settings>) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let numeric = Grants::numeric(&settings);
        let feed = Arc::clone(self);
        let resolved = tokio::spawn(async move {
            if let Ok(g) = tokio::task::spawn_blocking(move || Grants::of(&settings)).await {
                feed.publish(generation, g);
                return true;
            }
            false
        });
        if !matches!(
            tokio::time::timeout(RELOAD_WAIT, resolved).await,
            Ok(Ok(true))
        ) {
            tracing::warn!(
                "the account databases did not answer within {}s: user and group names of grants count once they do",
                RELOAD_WAIT.as_secs()
            );
            self.publish(generation, numeric);
        }
    }
}

/// The grants of the running config, by registry host (lower case), resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    by_host: BTreeMap<String, Resolved>,
    /// Each name (lower case) -> the host (as written) of the registry whose credential it is.
    registry: BTreeMap<String, String>,
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
    /// The grants by number alone (names grant nobody yet): no account lookup.
    pub fn numeric(settings: &Settings) -> Grants {
        Grants::resolve(settings, &|_| None, &|_| None)
    }

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
            for name in r.names() {
                let name = name.to_ascii_lowercase();
                out.registry.insert(name.clone(), r.host.clone());
                out.by_host.insert(name, resolved.clone());
            }
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

    /// The host (as written) of the registry whose credential `name` (lower case: a host or an
    /// alias) is, by the config these grants were made from.
    pub fn registry_of(&self, name: &str) -> Option<&str> {
        self.registry.get(name).map(String::as_str)
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
        settings.registries[0].aliases = vec!["mirror.internal:5000".into()];
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

    fn settings(users: &[&str]) -> Settings {
        let mut s = crate::config::zero_config("111111111111", "us-east-1").unwrap();
        s.registries[0].host = "h".into();
        s.registries[0].grants.users = users
            .iter()
            .map(|u| UserSpec {
                name: u.to_string(),
                uid: u.parse().ok(),
            })
            .collect();
        s
    }

    /// A revoked grant is gone when `reload` returns, and a resolution started for the older
    /// config never brings it back.
    #[tokio::test]
    async fn an_older_resolution_never_lands_after_a_newer_config() {
        let old = settings(&["4242"]);
        let (feed, rx) = GrantsFeed::new(&old);
        assert!(rx.borrow().allows("h", 4242, &[]));
        let old_generation = feed.generation.load(Ordering::SeqCst);
        feed.reload(Arc::new(settings(&[]))).await;
        assert!(!rx.borrow().allows("h", 4242, &[]));
        feed.publish(old_generation, Grants::numeric(&old));
        assert!(!rx.borrow().allows("h", 4242, &[]));
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
        assert!(
            by_uid.allows("mirror.internal:5000", 4242, &[]),
            "an alias: the same grant"
        );
        assert!(!by_uid.allows("mirror.internal:5000", 4343, &[]));
        assert_eq!(by_uid.registry_of("mirror.internal:5000"), Some("h"));
        assert_eq!(by_uid.registry_of("h"), Some("h"));
        assert_eq!(by_uid.registry_of("other"), None);
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
