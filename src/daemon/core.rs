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
use crate::config::{Settings, TargetSettings};
use crate::daemon::schedule::{self, Policy};
use crate::ecr::token::{GroupKey, Token, TokenError};
use crate::status::{self, RegistryState, RegistryStatus, TargetState, TargetStatus};
use crate::targets::consumer::Job;
use crate::targets::files;
use crate::targets::state::State;

/// A write running longer than this is shown as stuck, and no longer counts against
/// [`MAX_WRITES`]: a hung file system holds its one thread and delays nothing else.
pub(crate) const STUCK: Duration = Duration::from_secs(10);
/// Writes running at once (not counting stuck ones): bounds the memory of merging many large
/// files together.
pub(crate) const MAX_WRITES: usize = 4;
/// The loop wakes at least this often, so deadlines follow the wall clock across a suspend or a
/// clock jump (tokio's timers are monotonic and stand still while the machine sleeps).
pub(crate) const TICK: Duration = Duration::from_secs(30);

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

/// Which targets show which registries, computed once per config: no rescans per event.
#[derive(Debug, Default)]
struct Plan {
    group_of_host: BTreeMap<String, GroupKey>,
    hosts_of_group: BTreeMap<GroupKey, Vec<String>>,
    targets_of_group: BTreeMap<GroupKey, BTreeSet<usize>>,
    groups_of_target: Vec<BTreeSet<GroupKey>>,
}

impl Plan {
    fn of(settings: &Settings) -> Plan {
        let mut plan = Plan {
            groups_of_target: vec![BTreeSet::new(); settings.targets.len()],
            ..Plan::default()
        };
        for r in &settings.registries {
            let key = GroupKey::of(r);
            plan.group_of_host.insert(r.host.clone(), key.clone());
            plan.hosts_of_group
                .entry(key.clone())
                .or_default()
                .push(r.host.clone());
            for (i, t) in settings.targets.iter().enumerate() {
                if r.targets.contains(&t.name) {
                    plan.targets_of_group
                        .entry(key.clone())
                        .or_default()
                        .insert(i);
                    plan.groups_of_target[i].insert(key.clone());
                }
            }
        }
        plan
    }
}

/// One token group's state.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub(crate) token: Option<Token>,
    pub(crate) last_success: Option<SystemTime>,
    pub(crate) next: SystemTime,
    pub(crate) failures: u32,
    /// Tokens that arrived already expired (clock skew), in a row: backs off like failures.
    pub(crate) skewed: u32,
    pub(crate) last_error: Option<String>,
    pub(crate) in_flight: bool,
    /// A result (either way) came in at least once.
    pub(crate) attempted: bool,
    /// The expiry of the held token was logged.
    expiry_logged: bool,
    waiters: Vec<u64>,
}

impl Group {
    fn new(now: SystemTime) -> Group {
        Group {
            token: None,
            last_success: None,
            next: now,
            failures: 0,
            skewed: 0,
            last_error: None,
            in_flight: false,
            attempted: false,
            expiry_logged: false,
            waiters: Vec::new(),
        }
    }

    fn valid_token(&self, now: SystemTime) -> Option<&Token> {
        self.token.as_ref().filter(|t| t.expires_at > now)
    }

    /// What the group's hosts get now: the token while valid, or the one just fetched even if it
    /// arrived expired (clock skew: written as ECR gave it, shown in status). An expired token held
    /// from before (a suspend, a stop) never is.
    fn current(&self, now: SystemTime) -> Result<Token, TokenError> {
        match &self.token {
            Some(t) if t.expires_at > now || self.skewed > 0 => Ok(t.clone()),
            _ => Err(TokenError::Failed(
                self.last_error
                    .clone()
                    .unwrap_or_else(|| "no token yet".into()),
            )),
        }
    }
}

/// One target's state.
#[derive(Debug, Default, Clone)]
pub(crate) struct Target {
    pub(crate) owner: Option<String>,
    pub(crate) last_write: Option<SystemTime>,
    pub(crate) last_error: Option<String>,
    pub(crate) warnings: Vec<String>,
    pub(crate) written: bool,
    /// A delivery is running since then.
    pub(crate) writing: Option<SystemTime>,
    /// A delivery is wanted (again, when one is running).
    pub(crate) wanted: bool,
    /// Failed deliveries in a row, and when to try again without any other reason.
    pub(crate) failures: u32,
    pub(crate) retry_at: Option<SystemTime>,
    diagnosing: bool,
    /// A diagnosis is wanted once the running one ends.
    rediagnose: bool,
}

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
        self.want_due_deliveries(now);
        self.start_deliveries(now, &mut actions);
        self.check_ready(now, &mut actions);
        for (i, t) in self.targets.iter_mut().enumerate() {
            if t.rediagnose && !t.diagnosing {
                t.rediagnose = false;
                t.diagnosing = true;
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
        let busy = |t: &Target| t.wanted || t.writing.is_some_and(|s| elapsed(s, now) < STUCK);
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
        result: Result<bool, String>,
        now: SystemTime,
        rand: f64,
    ) -> Vec<Action> {
        let path = job.target.path.as_path();
        let Some(i) = self.index_of(path) else {
            // A consumer no longer configured: this was the removal of our entries.
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
        t.writing = None;
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
            Err(msg) => {
                if t.last_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!(target_path = %path.display(), error = %msg, "cannot write auth file");
                    t.rediagnose = true;
                }
                t.last_error = Some(msg);
                // Retried with backoff even when nothing else happens (a user created later,
                // a disk that was full, a file system that came back).
                t.failures = t.failures.saturating_add(1);
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
    pub(crate) fn diagnosed(&mut self, path: &Path, owner: Option<String>, notes: Vec<String>) {
        if let Some(i) = self.index_of(path) {
            let t = &mut self.targets[i];
            t.diagnosing = false;
            t.owner = owner;
            t.warnings = notes;
        }
    }

    /// These files (or directories on their way) changed on disk: bring them up to date.
    pub(crate) fn changed(&mut self, paths: &BTreeSet<PathBuf>) {
        for (i, t) in self.settings.targets.iter().enumerate() {
            if paths.contains(&t.path) {
                self.targets[i].wanted = true;
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
    ) -> Result<Vec<(Vec<String>, Ticket)>, String> {
        let keys: Vec<GroupKey> = match host {
            Some(h) => vec![
                self.plan
                    .group_of_host
                    .get(h)
                    .cloned()
                    .ok_or_else(|| format!("{h} is not a configured registry"))?,
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
                registry_status(&r.host, g, now, &self.policy)
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

fn elapsed(since: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(since).unwrap_or_default()
}

/// Takes a fetched token into its group and schedules the next refresh.
fn record_token(
    g: &mut Group,
    token: &Token,
    now: SystemTime,
    rand: f64,
    policy: &Policy,
    hosts: &str,
) {
    g.token = Some(token.clone());
    g.last_success = Some(now);
    g.failures = 0;
    g.last_error = None;
    g.expiry_logged = false;
    if token.expires_at <= clock::add(now, Duration::from_secs(1)) {
        g.skewed = g.skewed.saturating_add(1);
        g.next = schedule::after_failure(now, g.skewed, None, policy, rand);
        let skew = elapsed(token.expires_at, now);
        g.last_error = Some(format!(
            "ECR returned a token that had already expired ({} ago): check the clock",
            status::rough(skew)
        ));
        tracing::warn!(registry = %hosts, expires_at = %clock::rfc3339(token.expires_at), "ECR returned a token that expired {} ago (clock skew?); writing it anyway", status::rough(skew));
        return;
    }
    g.skewed = 0;
    g.next = schedule::next_refresh(now, token.expires_at, policy, rand);
    if let Some(gap) = schedule::lapses(token.expires_at, g.next) {
        tracing::warn!(registry = %hosts, "tokens live {}, less than min_interval ({}): each lapses for {} before its refresh", status::rough(elapsed(now, token.expires_at)), status::rough(policy.min_interval), status::rough(gap));
    }
    tracing::info!(registry = %hosts, expires_at = %clock::rfc3339(token.expires_at), next_refresh = %clock::rfc3339(g.next), "token refreshed");
}

/// The answer a refresh request gets from one group.
fn refresh_ticket(g: &mut Group, id: u64, now: SystemTime, policy: &Policy) -> Ticket {
    let earliest = if g.failures > 0 || g.skewed > 0 {
        g.next
    } else {
        g.last_success
            .map_or(now, |t| clock::add(t, policy.min_interval))
    };
    if g.in_flight {
        g.waiters.push(id); // coalesce onto the fetch under way
        return Ticket::Later(id);
    }
    if earliest <= now {
        g.next = now;
        g.waiters.push(id);
        return Ticket::Later(id);
    }
    if let Some(t) = g.valid_token(now).filter(|_| g.failures == 0) {
        return Ticket::Now(Ok(t.clone()));
    }
    let why = match &g.last_error {
        Some(e) if g.failures > 0 => format!(
            "backing off after {} failed attempts (last: {e})",
            g.failures
        ),
        Some(e) => e.clone(),
        None => format!(
            "min_interval ({}) since the last token",
            status::rough(policy.min_interval)
        ),
    };
    Ticket::Now(Err(TokenError::Failed(format!(
        "not refreshed now: the next attempt is at {} (in {}): {why}",
        clock::rfc3339(earliest),
        status::rough(elapsed(now, earliest))
    ))))
}

fn registry_status(
    host: &str,
    g: Option<&Group>,
    now: SystemTime,
    policy: &Policy,
) -> RegistryStatus {
    let state = match g {
        None => RegistryState::Pending,
        Some(g) => match &g.token {
            Some(t) if t.expires_at <= now => RegistryState::Expired,
            _ if g.in_flight => RegistryState::Refreshing,
            None if g.failures > 0 => RegistryState::Failing,
            None => RegistryState::Pending,
            Some(_) if g.failures > 0 => RegistryState::Failing,
            Some(_) => RegistryState::Fresh,
        },
    };
    let lapse = g.and_then(|g| {
        let t = g.token.as_ref().filter(|_| g.failures == 0 && g.skewed == 0)?;
        let gap = schedule::lapses(t.expires_at, g.next)?;
        Some(format!(
            "the token runs out {} before its next refresh: tokens live less than min_interval ({}), which bounds calls to ECR; lower min_interval",
            status::rough(gap),
            status::rough(policy.min_interval)
        ))
    });
    RegistryStatus {
        host: host.to_string(),
        state,
        expires_at: g.and_then(|g| g.token.as_ref()).map(|t| t.expires_at),
        next_refresh: g.map(|g| g.next),
        last_success: g.and_then(|g| g.last_success),
        last_error: g.and_then(|g| g.last_error.clone()),
        consecutive_failures: g.map_or(0, |g| g.failures),
        warnings: lapse.into_iter().collect(),
    }
}

fn target_status(t: &TargetSettings, rt: &Target, now: SystemTime) -> TargetStatus {
    let stuck = rt.writing.map(|s| elapsed(s, now)).filter(|d| *d >= STUCK);
    TargetStatus {
        name: t.name.clone(),
        path: t.path.display().to_string(),
        owner: rt.owner.clone(),
        state: if rt.last_error.is_some() || stuck.is_some() {
            TargetState::Error
        } else if rt.written {
            TargetState::Ok
        } else {
            TargetState::Pending
        },
        last_write: rt.last_write,
        last_error: match stuck {
            Some(d) => Some(format!(
                "stuck: a write has been running for {} (a hung file system?); other targets go on",
                status::rough(d)
            )),
            None => rt.last_error.clone(),
        },
        warnings: rt.warnings.clone(),
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
