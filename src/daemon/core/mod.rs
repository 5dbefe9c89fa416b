//! The daemon's rules, pure: token groups and targets as data, events in, actions out.
//!
//! Nothing here does I/O, reads the clock, draws random numbers or spawns. Each event method takes
//! `now` (and `rand` where jitter applies), updates the state and returns what must be done; the
//! loop in [`super`] performs those [`Action`]s and feeds their outcomes back as events. So every
//! rule (schedule, backoff, coalescing, expiry, `remove_expired`, reload diffs, skew, stuck writes)
//! is tested here with an injected clock, without processes or sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::clock;
use crate::config::Settings;
use crate::daemon::control::UnknownHost;
use crate::daemon::schedule::{self, Policy};
use crate::ecr::token::{GroupKey, Token, TokenError};
use crate::status::{RegistryStatus, TargetStatus};
use crate::targets::consumer::{DeliveryError, Job};
use crate::targets::files;
use crate::targets::state::Managed;
use crate::targets::state::State;

/// A write running longer than this is shown as stuck, and no longer counts against
/// [`MAX_WRITES`]: a hung file system holds its one thread and delays nothing else.
pub(crate) const STUCK: Duration = Duration::from_secs(10);
/// Writes (and, apart, diagnoses) running at once, not counting stuck ones: bounds the memory
/// of parsing many large files together.
pub(crate) const MAX_WRITES: usize = 4;
/// The loop wakes at least this often, so deadlines follow the wall clock across a suspend or a
/// clock jump (tokio's timers are monotonic and stand still while the machine sleeps).
pub(crate) const TICK: Duration = Duration::from_secs(30);
/// Changes on disk start a target's delivery at most this often...
pub(crate) const EVENT_SPACING: Duration = Duration::from_millis(200);
/// ...and at most this share of the time: the next one waits for `took × (1/share − 1)`.
pub(crate) const EVENT_SHARE: u32 = 5;

/// Something the loop must do for the core.
#[derive(Debug)]
pub(crate) enum Action {
    /// Fetch this group's token; report with [`Core::fetched`].
    Fetch(GroupKey),
    /// Stop a fetch under way (its group was removed by a reload).
    Abort(GroupKey),
    /// Deliver credentials to a consumer; report with [`Core::delivered`].
    Deliver(Job),
    /// Diagnose target `i` (owner, warnings); report with [`Core::diagnosed`].
    Diagnose(usize),
    /// Save [`Core::state`].
    SaveState,
    /// Answer the refresh request `id`.
    Answer {
        id: u64,
        result: Result<Token, TokenError>,
    },
    /// Every group was tried once: tell systemd.
    Ready,
}

/// What a `refresh` request gets for one group: an answer now, or one later under this id.
#[derive(Debug)]
pub(crate) enum Ticket {
    Now(Result<Token, TokenError>),
    Later(u64),
}
mod group;
mod plan;
mod target;

pub(crate) use group::Group;
use group::{record_token, refresh_ticket, registry_status};
use plan::Plan;
pub(crate) use target::Target;
use target::target_status;

/// The daemon's whole mutable state, and the rules that change it.
#[derive(Debug)]
pub(crate) struct Core {
    settings: Arc<Settings>,
    policy: Policy,
    plan: Plan,
    groups: BTreeMap<GroupKey, Group>,
    targets: Vec<Target>,
    state: State,
    ready_sent: bool,
    next_id: u64,
}

impl Core {
    /// A core for `settings` and the state loaded from disk; every group is due now and every
    /// target is diagnosed and written once.
    pub(crate) fn new(settings: Arc<Settings>, state: State, now: SystemTime) -> Core {
        let plan = Plan::of(&settings);
        let groups = plan
            .hosts_of_group
            .keys()
            .map(|k| (k.clone(), Group::new(now)))
            .collect();
        let targets = vec![
            Target {
                wanted: true,
                rediagnose: true,
                ..Target::default()
            };
            settings.targets.len()
        ];
        Core {
            policy: Policy::from(&settings.daemon),
            settings,
            plan,
            groups,
            targets,
            state,
            ready_sent: false,
            next_id: 0,
        }
    }

    pub(crate) fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    #[cfg(test)]
    pub(crate) fn group(&self, host: &str) -> Option<&Group> {
        self.plan
            .group_of_host
            .get(host)
            .and_then(|k| self.groups.get(k))
    }

    #[cfg(test)]
    pub(crate) fn target(&self, i: usize) -> &Target {
        &self.targets[i]
    }

    /// What is due at `now`: fetches, deliveries (wanted, retries, expiries), diagnoses.
    pub(crate) fn poll(&mut self, now: SystemTime) -> Vec<Action> {
        let mut actions = Vec::new();
        for (key, g) in self.groups.iter_mut() {
            if !g.in_flight && g.next <= now {
                g.in_flight = true;
                tracing::debug!(group = %key, attempt = g.failures + 1, "fetching a token");
                actions.push(Action::Fetch(key.clone()));
            }
            if let Some(t) = &g.token
                && t.expires_at <= now
                && g.skewed == 0
                && !g.expiry_logged
            {
                g.expiry_logged = true;
                tracing::error!(group = %key, expires_at = %clock::rfc3339(t.expires_at), "token expired and no new one could be had yet");
            }
        }
        self.want_changed(now);
        self.want_due_deliveries(now);
        self.start_deliveries(now, &mut actions);
        self.check_ready(now, &mut actions);
        // Diagnoses read and parse the files too: as many at once as writes, no more.
        let mut running = self.targets.iter().filter(|t| t.diagnosing).count();
        for (i, t) in self.targets.iter_mut().enumerate() {
            if running >= MAX_WRITES {
                break;
            }
            if t.rediagnose && !t.diagnosing {
                t.rediagnose = false;
                t.diagnosing = true;
                running += 1;
                actions.push(Action::Diagnose(i));
            }
        }
        actions
    }

    /// Marks targets whose retry is due, and (with `remove_expired`) those holding an entry whose
    /// token ran out with no valid successor: expiry follows the state, whatever ECR does now.
    fn want_due_deliveries(&mut self, now: SystemTime) {
        for (i, t) in self.settings.targets.iter().enumerate() {
            let rt = &self.targets[i];
            if rt.wanted || rt.writing.is_some() || rt.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            let expired = self.settings.daemon.remove_expired
                && self.state.managed(&t.path).is_some_and(|m| {
                    m.iter().any(|(host, e)| {
                        e.expires_at() <= now && self.host_token(host, now).is_none()
                    })
                });
            if rt.retry_at.is_some() || expired {
                self.targets[i].wanted = true;
            }
        }
    }

    /// Starts wanted deliveries, at most [`MAX_WRITES`] running (stuck ones aside).
    fn start_deliveries(&mut self, now: SystemTime, actions: &mut Vec<Action>) {
        let stuck = |t: &Target| t.writing.is_some_and(|s| elapsed(s, now) >= STUCK);
        let mut running = self
            .targets
            .iter()
            .filter(|t| t.writing.is_some() && !stuck(t))
            .count();
        for i in 0..self.targets.len() {
            if running >= MAX_WRITES {
                break;
            }
            let t = &self.targets[i];
            if !t.wanted || t.writing.is_some() {
                continue;
            }
            let job = self.job(i, now);
            let t = &mut self.targets[i];
            t.wanted = false;
            t.writing = Some(now);
            running += 1;
            actions.push(Action::Deliver(job));
        }
    }

    /// What target `i` should receive now.
    fn job(&self, i: usize, now: SystemTime) -> Job {
        let tokens: BTreeMap<String, Result<Token, TokenError>> = self
            .groups_of_target(i)
            .flat_map(|k| {
                let t = self.token_for(k, now);
                let hosts = self.plan.hosts_of_group.get(k).into_iter().flatten();
                hosts.map(move |h| (h.clone(), t.clone()))
            })
            .collect();
        files::job_for(
            &self.settings,
            &self.settings.targets[i],
            &tokens,
            &self.state,
            now,
        )
    }

    fn groups_of_target(&self, i: usize) -> impl Iterator<Item = &GroupKey> {
        self.plan.groups_of_target.get(i).into_iter().flatten()
    }

    fn token_for(&self, key: &GroupKey, now: SystemTime) -> Result<Token, TokenError> {
        match self.groups.get(key) {
            Some(g) => g.current(now),
            None => Err(TokenError::Failed("the registry was removed".into())),
        }
    }

    /// The token `host` would get now, if any.
    fn host_token(&self, host: &str, now: SystemTime) -> Option<Token> {
        self.plan
            .group_of_host
            .get(host)
            .and_then(|k| self.token_for(k, now).ok())
    }

    /// A fetch finished. `rand` in `[0, 1)` draws the jitter.
    pub(crate) fn fetched(
        &mut self,
        key: &GroupKey,
        result: Result<Token, TokenError>,
        now: SystemTime,
        rand: f64,
    ) -> Vec<Action> {
        let policy = self.policy;
        let hosts = self
            .plan
            .hosts_of_group
            .get(key)
            .map(|h| h.join(","))
            .unwrap_or_default();
        let Some(g) = self.groups.get_mut(key) else {
            return Vec::new(); // removed by a reload meanwhile
        };
        g.in_flight = false;
        g.attempted = true;
        match &result {
            Ok(token) => record_token(g, token, now, rand, &policy, &hosts),
            Err(e) => {
                g.failures = g.failures.saturating_add(1);
                g.fetched_failed = g.fetched_failed.saturating_add(1);
                g.last_error = Some(e.to_string());
                let held = g.valid_token(now).map(|t| t.expires_at);
                g.next = schedule::after_failure(now, g.failures, held, &policy, rand);
                tracing::warn!(registry = %hosts, attempt = g.failures, retry_at = %clock::rfc3339(g.next), error = %e, "token refresh failed");
            }
        }
        let actions: Vec<Action> = g
            .waiters
            .drain(..)
            .map(|id| Action::Answer {
                id,
                result: result.clone(),
            })
            .collect();
        if result.is_ok() {
            for &i in self.plan.targets_of_group.get(key).into_iter().flatten() {
                self.targets[i].wanted = true;
            }
        }
        actions
    }

    /// Ready (for systemd) once every group was tried and what that brought is delivered; a
    /// delivery stuck on a hung file system does not hold it.
    fn check_ready(&mut self, now: SystemTime, actions: &mut Vec<Action>) {
        let busy = |t: &Target| match t.writing {
            Some(since) => elapsed(since, now) < STUCK,
            None => t.wanted,
        };
        if !self.ready_sent
            && self.groups.values().all(|g| g.attempted)
            && !self.targets.iter().any(busy)
        {
            self.ready_sent = true;
            actions.push(Action::Ready);
        }
    }

    /// A delivery finished (`Ok(changed)`, or the error's message). Returns a state save when
    /// what we manage changed.
    pub(crate) fn delivered(
        &mut self,
        job: &Job,
        result: Result<bool, DeliveryError>,
        now: SystemTime,
        rand: f64,
    ) -> Vec<Action> {
        let path = job.target.path.as_path();
        let Some(i) = self.index_of(path) else {
            // A consumer no longer configured. A write that was under way when the reload
            // removed it may have put our entries back after their removal: remove them again.
            if result.is_ok() && !job.desired.set.is_empty() {
                let mut managed = self.state.managed(path).cloned().unwrap_or_default();
                for host in job.desired.set.keys() {
                    let m = if job.desired.aliases.contains(host) {
                        Managed::alias(now)
                    } else {
                        Managed::new(now)
                    };
                    managed.insert(host.clone(), m);
                }
                return vec![Action::Deliver(Job::unmanage(job.target.clone(), &managed))];
            }
            // This was the removal of our entries.
            return match result {
                Ok(_) => {
                    tracing::info!(target_path = %path.display(), "target removed from the config; its entries were removed");
                    self.unmanaged(path)
                }
                Err(e) => {
                    tracing::error!(target_path = %path.display(), error = %e, "cannot remove entries from a target no longer configured");
                    Vec::new()
                }
            };
        };
        let policy = self.policy;
        let t = &mut self.targets[i];
        if let Some(since) = t.writing.take() {
            t.last_took = elapsed(since, now);
        }
        match result {
            Ok(written) => {
                t.rediagnose |= t.last_error.is_some();
                t.last_error = None;
                t.failures = 0;
                t.retry_at = None;
                if written || !t.written {
                    t.last_write = Some(now);
                }
                t.written = true;
                let before = self.state.managed(path).cloned();
                job.record(&mut self.state, path);
                if self.state.managed(path) != before.as_ref() {
                    return vec![Action::SaveState];
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if t.last_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!(target_path = %path.display(), error = %msg, "cannot write auth file");
                    t.rediagnose = true;
                }
                t.last_error = Some(msg);
                // Retried with backoff even when nothing else happens (a user created later,
                // a disk that was full, a file system that came back).
                t.failures = t.failures.saturating_add(1);
                t.failures_total = t.failures_total.saturating_add(1);
                t.retry_at = Some(clock::add(
                    now,
                    schedule::retry_delay(t.failures, &policy, rand),
                ));
            }
        }
        Vec::new()
    }

    /// Entries were removed from a target no longer configured: forget them.
    fn unmanaged(&mut self, path: &Path) -> Vec<Action> {
        match self.state.targets.remove(path) {
            Some(_) => vec![Action::SaveState],
            None => Vec::new(),
        }
    }

    /// A diagnosis finished.
    pub(crate) fn diagnosed(
        &mut self,
        path: &Path,
        owner: Option<String>,
        notes: Vec<String>,
        shadowed: bool,
    ) {
        if let Some(i) = self.index_of(path) {
            let t = &mut self.targets[i];
            t.diagnosing = false;
            t.owner = owner;
            t.warnings = notes;
            t.shadowed = shadowed;
        }
    }

    /// These files (or directories on their way) changed on disk: bring them up to date.
    pub(crate) fn changed(&mut self, paths: &BTreeSet<PathBuf>) {
        for (i, t) in self.settings.targets.iter().enumerate() {
            if paths.contains(&t.path) {
                // Diagnosed again with the delivery this starts (see `want_changed`).
                self.targets[i].changed = true;
            }
        }
    }

    /// Changes on disk become deliveries and diagnoses, at most one per target per
    /// [`EVENT_SPACING`] (and [`EVENT_SHARE`] of the time).
    fn want_changed(&mut self, now: SystemTime) {
        for t in &mut self.targets {
            let spaced = t
                .last_change_delivery
                .is_none_or(|at| clock::add(at, change_spacing(t)) <= now);
            if t.changed && t.writing.is_none() && spaced {
                t.changed = false;
                t.wanted = true;
                t.last_change_delivery = Some(now);
                // What docker and podman will use may have changed too (a credsStore added, a
                // mode fixed): `status` says what `check` would. With the delivery, not at each
                // event: a user touching a large file in a loop would have root read and parse
                // it without pause.
                t.rediagnose = true;
            }
        }
    }

    fn index_of(&self, path: &Path) -> Option<usize> {
        self.settings.targets.iter().position(|t| t.path == path)
    }

    /// A client asks to refresh every registry (or `host`). A request may move a group's refresh
    /// earlier, but not past its own limits: after a failure not before its backoff ends, after a
    /// success not within `min_interval`. Returns, per group, its hosts and a ticket.
    pub(crate) fn refresh(
        &mut self,
        host: Option<&str>,
        now: SystemTime,
    ) -> Result<Vec<(Vec<String>, Ticket)>, UnknownHost> {
        let keys: Vec<GroupKey> = match host {
            Some(h) => vec![
                self.plan
                    .group_of_host
                    .get(h)
                    .cloned()
                    .ok_or_else(|| UnknownHost(h.to_string()))?,
            ],
            None => self.groups.keys().cloned().collect(),
        };
        let mut out = Vec::new();
        for key in keys {
            let hosts: Vec<String> = self
                .plan
                .hosts_of_group
                .get(&key)
                .into_iter()
                .flatten()
                .filter(|h| host.is_none_or(|x| x == h.as_str()))
                .cloned()
                .collect();
            let id = self.next_id;
            let policy = self.policy;
            let Some(g) = self.groups.get_mut(&key) else {
                continue;
            };
            let ticket = refresh_ticket(g, id, now, &policy);
            if matches!(ticket, Ticket::Later(_)) {
                self.next_id += 1;
            }
            out.push((hosts, ticket));
        }
        Ok(out)
    }

    /// A new config: groups that still exist keep their tokens and schedules, new ones are due
    /// now, removed ones are stopped; targets no longer configured lose our entries; every target
    /// is diagnosed and brought up to date.
    pub(crate) fn reload(&mut self, new: Arc<Settings>, now: SystemTime) -> Vec<Action> {
        let plan = Plan::of(&new);
        let mut actions = Vec::new();
        self.groups.retain(|k, g| {
            let keep = plan.hosts_of_group.contains_key(k);
            if !keep && g.in_flight {
                actions.push(Action::Abort(k.clone()));
            }
            keep
        });
        for k in plan.hosts_of_group.keys() {
            self.groups
                .entry(k.clone())
                .or_insert_with(|| Group::new(now));
        }
        for t in &self.settings.targets {
            if new.targets.iter().any(|n| n.path == t.path) {
                continue;
            }
            if let Some(managed) = self.state.managed(&t.path) {
                actions.push(Action::Deliver(Job::unmanage(t.clone(), managed)));
            }
        }
        let old: BTreeMap<&Path, &Target> = self
            .settings
            .targets
            .iter()
            .map(|t| t.path.as_path())
            .zip(&self.targets)
            .collect();
        let targets = new
            .targets
            .iter()
            .map(|t| {
                let mut rt = old
                    .get(t.path.as_path())
                    .map(|r| (*r).clone())
                    .unwrap_or_default();
                rt.wanted = true;
                rt.rediagnose = true;
                rt
            })
            .collect();
        self.targets = targets;
        self.policy = Policy::from(&new.daemon);
        self.plan = plan;
        self.settings = new;
        actions
    }

    /// How long the loop may sleep before something is due (at most [`TICK`]).
    pub(crate) fn next_wake(&self, now: SystemTime) -> Duration {
        let mut wake = TICK;
        let mut until = |t: SystemTime| wake = wake.min(t.duration_since(now).unwrap_or_default());
        for g in self.groups.values() {
            if !g.in_flight {
                until(g.next);
            }
            if let Some(t) = &g.token
                && !g.expiry_logged
                && t.expires_at > now
            {
                until(t.expires_at);
            }
        }
        for t in &self.targets {
            if let Some(at) = t.retry_at {
                until(at);
            }
            if let Some(s) = t.writing {
                until(clock::add(s, STUCK));
            }
            if let (true, Some(at)) = (t.changed, t.last_change_delivery) {
                until(clock::add(at, change_spacing(t)));
            }
        }
        if self.settings.daemon.remove_expired {
            for e in self.state.targets.values().flat_map(|m| m.values()) {
                if e.expires_at() > now {
                    until(e.expires_at());
                }
            }
        }
        wake
    }

    /// Every configured host's and alias's valid token, for the consumers answered from memory.
    pub(crate) fn credentials(&self, now: SystemTime) -> crate::targets::consumer::Credentials {
        let mut out = crate::targets::consumer::Credentials::new();
        for r in &self.settings.registries {
            let token = self
                .plan
                .group_of_host
                .get(&r.host)
                .and_then(|k| self.groups.get(k))
                .and_then(|g| g.valid_token(now));
            if let Some(token) = token {
                for name in r.names() {
                    out.insert(name.to_string(), token.clone());
                }
            }
        }
        out
    }

    /// The registries and targets as `status` shows them.
    pub(crate) fn snapshot(&self, now: SystemTime) -> (Vec<RegistryStatus>, Vec<TargetStatus>) {
        let registries = self
            .settings
            .registries
            .iter()
            .map(|r| {
                let g = self
                    .plan
                    .group_of_host
                    .get(&r.host)
                    .and_then(|k| self.groups.get(k));
                RegistryStatus {
                    aliases: r.aliases.clone(),
                    ..registry_status(&r.host, g, now, &self.policy)
                }
            })
            .collect();
        let targets = self
            .settings
            .targets
            .iter()
            .zip(&self.targets)
            .map(|(t, rt)| target_status(t, rt, now))
            .collect();
        (registries, targets)
    }
}

/// How long after a change-started delivery the next may start.
fn change_spacing(t: &Target) -> Duration {
    EVENT_SPACING.max(t.last_took.saturating_mul(EVENT_SHARE))
}

fn elapsed(since: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(since).unwrap_or_default()
}
#[cfg(test)]
#[path = "../core_tests.rs"]
mod tests;
