//! One refresh round: fetch every token group once, then bring every target up to date.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::task::JoinSet;

use crate::config::{Settings, TargetSettings, alias};
use crate::ecr::registry::Registry;
use crate::ecr::token::{GroupKey, Token, TokenError, TokenSource};
use crate::safe_fs::{self, FileError, Outcome, OwnerPolicy};
use crate::targets::authfile::{self, Desired};
use crate::targets::consumer::{Consumer, DeliveryError, Job};
use crate::targets::state::{Managed, State};

/// The result of one registry's token fetch.
#[derive(Debug, Clone)]
pub struct RegistryResult {
    /// The registry host.
    pub host: String,
    /// Its token, or why there is none.
    pub result: Result<Token, TokenError>,
}

/// The result of writing one target.
#[derive(Debug)]
pub struct TargetResult {
    /// The target's name.
    pub name: String,
    /// The auth file.
    pub path: PathBuf,
    /// What writing it did, or why it failed.
    pub result: Result<Written, FileError>,
}

/// What a successful target update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Whether the file changed.
    pub outcome: Outcome,
    /// Hosts whose entries now hold a fresh token.
    pub set: usize,
    /// Hosts whose entries were removed.
    pub removed: usize,
}

/// What one round (`once`) did.
#[derive(Debug)]
pub struct RoundReport {
    /// Per registry.
    pub registries: Vec<RegistryResult>,
    /// Per target.
    pub targets: Vec<TargetResult>,
}

impl RoundReport {
    /// Whether every registry and every target succeeded.
    pub fn all_ok(&self) -> bool {
        self.registries.iter().all(|r| r.result.is_ok())
            && self.targets.iter().all(|t| t.result.is_ok())
    }
}

/// How a target's owner is chosen, from its settings.
pub fn owner_policy(t: &TargetSettings) -> OwnerPolicy {
    match &t.user {
        Some(u) => match u.uid {
            Some(uid) => OwnerPolicy::User { uid, gid: None },
            None => OwnerPolicy::Named(u.name.clone()),
        },
        None => OwnerPolicy::Inherit,
    }
}

/// Fetches one token per group, concurrently. Returns each group's result.
pub async fn fetch_groups<S: TokenSource>(
    source: &Arc<S>,
    keys: BTreeSet<GroupKey>,
) -> BTreeMap<GroupKey, Result<Token, TokenError>> {
    let mut set = JoinSet::new();
    for key in keys {
        let source = Arc::clone(source);
        set.spawn(async move {
            let r = source.fetch(&key).await;
            (key, r)
        });
    }
    let mut out = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((key, r)) => {
                out.insert(key, r);
            }
            Err(e) => tracing::error!(error = %e, "a token fetch task failed"),
        }
    }
    out
}

/// What each target should hold, given each registry's token (or failure) and what we wrote before.
pub fn desired_for(
    settings: &Settings,
    target: &TargetSettings,
    tokens: &BTreeMap<String, Result<Token, TokenError>>,
    previous: Option<&BTreeMap<String, Managed>>,
    now: SystemTime,
) -> Desired {
    let mut d = Desired::default();
    let wanted = names_shown(settings, target);
    for r in settings
        .registries
        .iter()
        .filter(|r| r.targets.covers(&target.name))
    {
        d.aliases.extend(r.aliases.iter().cloned());
    }
    for (name, host) in &wanted {
        match tokens.get(*host) {
            Some(Ok(token)) => {
                d.set.insert(name.to_string(), token.auth().to_string());
            }
            _ => {
                let expired = previous
                    .and_then(|p| p.get(*name))
                    .is_some_and(|m| m.expires_at() <= now);
                if expired && settings.daemon.remove_expired {
                    d.remove.insert(name.to_string());
                }
            }
        }
    }
    if let Some(prev) = previous {
        // The state file only ever names hosts we wrote: ECR hosts, and aliases marked as such.
        // Anything else there is not ours to remove (a forged or damaged state), whatever it says.
        for (host, m) in prev {
            if wanted.contains_key(host.as_str()) {
                continue;
            }
            if Registry::parse(host).is_ok() {
                d.remove.insert(host.clone());
            } else if m.alias && alias::check(host).is_ok() {
                d.remove.insert(host.clone());
                d.aliases.insert(host.clone());
            }
        }
    }
    d
}

/// Writes one target with the desired entries; blocking (run it on a blocking thread).
///
/// The file's name decides whose lookup rules apply (docker's `config.json`, podman's `auth.json`).
pub fn write_target(target: &TargetSettings, desired: &Desired) -> Result<Written, FileError> {
    let format = authfile::Format::of_path(&target.path);
    let outcome = safe_fs::update(
        &target.path,
        owner_policy(target),
        target.mode,
        |existing| authfile::merge(existing, desired, format),
    )?;
    // merge touches ECR hosts and the job's aliases only; count what it was allowed to do.
    let ours = |h: &&String| Registry::parse(h).is_ok() || desired.aliases.contains(*h);
    Ok(Written {
        outcome,
        set: desired.set.keys().filter(ours).count(),
        removed: desired.remove.iter().filter(ours).count(),
    })
}

/// Writes every target concurrently (each on a blocking thread) and records what was written.
pub async fn write_all(
    settings: &Settings,
    tokens: &BTreeMap<String, Result<Token, TokenError>>,
    state: &mut State,
    now: SystemTime,
) -> Vec<TargetResult> {
    let all: BTreeSet<usize> = (0..settings.targets.len()).collect();
    write_some(settings, &all, tokens, state, now).await
}

/// Writes the targets with the given indices concurrently and records what was written.
pub async fn write_some(
    settings: &Settings,
    which: &BTreeSet<usize>,
    tokens: &BTreeMap<String, Result<Token, TokenError>>,
    state: &mut State,
    now: SystemTime,
) -> Vec<TargetResult> {
    let mut set = JoinSet::new();
    for &i in which {
        let Some(target) = settings.targets.get(i) else {
            continue;
        };
        let job = job_for(settings, target, tokens, state, now);
        set.spawn_blocking(move || {
            let r = write_target(&job.target, &job.desired);
            (i, job, r)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = set.join_next().await {
        let Ok((i, job, r)) = joined else {
            continue;
        };
        let target = &settings.targets[i];
        if r.is_ok() {
            job.record(state, &target.path);
        }
        results.push((
            i,
            TargetResult {
                name: target.name.clone(),
                path: target.path.clone(),
                result: r,
            },
        ));
    }
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Each name `target` shows (registry hosts and their aliases) -> the host whose token it holds.
fn names_shown<'a>(settings: &'a Settings, target: &TargetSettings) -> BTreeMap<&'a str, &'a str> {
    let mut wanted = BTreeMap::new();
    for r in settings
        .registries
        .iter()
        .filter(|r| r.targets.covers(&target.name))
    {
        for name in r.names() {
            wanted.insert(name, r.host.as_str());
        }
    }
    wanted
}

/// What `target` should receive given each host's token (or failure) and what we manage there.
pub fn job_for(
    settings: &Settings,
    target: &TargetSettings,
    tokens: &BTreeMap<String, Result<Token, TokenError>>,
    state: &State,
    now: SystemTime,
) -> Job {
    let desired = desired_for(settings, target, tokens, state.managed(&target.path), now);
    let shown = names_shown(settings, target);
    let expiries = desired
        .set
        .keys()
        .filter_map(|name| match tokens.get(*shown.get(name.as_str())?) {
            Some(Ok(t)) => Some((name.clone(), t.expires_at)),
            _ => None,
        })
        .collect();
    Job {
        target: target.clone(),
        desired,
        expiries,
    }
}

/// Auth files as a consumer of tokens: each job is a safe write of one file.
pub struct AuthFiles;

impl Consumer for AuthFiles {
    fn deliver(&self, job: &Job) -> Result<bool, DeliveryError> {
        let written = write_target(&job.target, &job.desired)?;
        Ok(written.outcome == Outcome::Written)
    }
}

/// A whole round: every group fetched once, every target written.
pub async fn round<S: TokenSource>(
    settings: &Settings,
    source: &Arc<S>,
    state: &mut State,
) -> RoundReport {
    let keys: BTreeSet<GroupKey> = settings.registries.iter().map(GroupKey::of).collect();
    let by_group = fetch_groups(source, keys).await;
    let now = SystemTime::now();
    let mut registries = Vec::new();
    let mut tokens = BTreeMap::new();
    for reg in &settings.registries {
        let result = by_group
            .get(&GroupKey::of(reg))
            .cloned()
            .unwrap_or_else(|| Err(TokenError::Failed("no result".into())));
        if let Ok(t) = &result
            && t.expires_at <= now
        {
            let skew = now.duration_since(t.expires_at).unwrap_or_default();
            tracing::warn!(
                registry = %reg.host,
                expires_at = %crate::clock::rfc3339(t.expires_at),
                "the token ECR returned expired {} ago (clock skew?); writing it anyway",
                humantime::format_duration(std::time::Duration::from_secs(skew.as_secs()))
            );
        }
        tokens.insert(reg.host.clone(), result.clone());
        registries.push(RegistryResult {
            host: reg.host.clone(),
            result,
        });
    }
    let targets = write_all(settings, &tokens, state, now).await;
    RoundReport {
        registries,
        targets,
    }
}
