//! The long-running daemon: startup order, the main loop that owns all state, reload and shutdown.
//!
//! One task (the loop in [`Daemon::run`]) owns the settings, every token group, the state file and
//! the target statuses. Token fetches run as separate tasks and report back over a channel, so a
//! slow or failing group never delays the others. The watcher, the control socket and signals talk
//! to the loop over channels; everyone else reads the `watch` status snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};

use crate::atomic::{FileError, Outcome};
use crate::authfile::Desired;
use crate::check;
use crate::cli::Cli;
use crate::clock;
use crate::commands;
use crate::config::{self, Settings, SystemAccounts, TargetSettings};
use crate::control::{self, Action, RefreshResult};
use crate::logging;
use crate::refresh;
use crate::schedule::{self, Policy};
use crate::state::State;
use crate::status::{
    self, ConfigStatus, RegistryState, RegistryStatus, Status, TargetState, TargetStatus,
};
use crate::systemd;
use crate::token::{AwsTokenSource, GroupKey, Token, TokenError, TokenSource};
use crate::watch::{self as files, Changes, WatchSet, WatcherHandle};

/// The loop wakes at least this often, so deadlines follow the wall clock across a suspend or a
/// clock jump (tokio's timers are monotonic and stand still while the machine sleeps).
const TICK: Duration = Duration::from_secs(30);
/// A target write running longer than this is shown as stuck (a hung file system, say).
const STUCK: Duration = Duration::from_secs(10);

/// One token group's state, owned by the loop.
#[derive(Debug)]
struct Group {
    token: Option<Token>,
    last_success: Option<SystemTime>,
    next: SystemTime,
    failures: u32,
    /// Tokens that arrived already expired (clock skew), in a row: backs off like failures.
    skewed: u32,
    last_error: Option<String>,
    in_flight: Option<tokio::task::AbortHandle>,
    /// A result (either way) came in at least once.
    attempted: bool,
    /// The expiry of the held token has been acted on (entries removed).
    expiry_handled: bool,
    waiters: Vec<oneshot::Sender<Result<Token, TokenError>>>,
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
            in_flight: None,
            attempted: false,
            expiry_handled: false,
            waiters: Vec::new(),
        }
    }

    fn valid_token(&self, now: SystemTime) -> Option<&Token> {
        self.token.as_ref().filter(|t| t.expires_at > now)
    }
}

/// A target's runtime status.
#[derive(Debug, Default, Clone)]
struct TargetRt {
    owner: Option<String>,
    last_write: Option<SystemTime>,
    last_error: Option<String>,
    warnings: Vec<String>,
    written: bool,
    /// A write is running (on a blocking thread) since then; one target at a time, so a hung
    /// file system holds one thread and delays nothing else.
    writing: Option<Instant>,
    /// Another write was asked for while one was running: do it when that one ends.
    again: bool,
    /// Failed writes in a row, and when to try again without any other reason.
    failures: u32,
    retry_at: Option<SystemTime>,
    /// A diagnosis is running.
    diagnosing: bool,
}

/// What a blocking task reports back to the loop.
enum Done {
    Write {
        path: PathBuf,
        desired: Desired,
        tokens: BTreeMap<String, Result<Token, TokenError>>,
        result: Result<refresh::Written, FileError>,
    },
    Diagnosed {
        path: PathBuf,
        owner: Option<String>,
        notes: Vec<String>,
    },
    /// Entries removed from a target no longer in the config.
    Unmanaged {
        path: PathBuf,
        result: Result<refresh::Written, FileError>,
    },
}

struct Daemon<S: TokenSource> {
    source: Arc<S>,
    settings: Arc<Settings>,
    policy: Policy,
    groups: BTreeMap<GroupKey, Group>,
    state: State,
    targets: Vec<TargetRt>,
    config: ConfigStatus,
    run_dir: PathBuf,
    started_at: SystemTime,
    status_tx: watch::Sender<Status>,
    fetch_tx: mpsc::UnboundedSender<(GroupKey, Result<Token, TokenError>)>,
    fetch_rx: mpsc::UnboundedReceiver<(GroupKey, Result<Token, TokenError>)>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    watcher: Option<WatcherHandle>,
    ready: Option<oneshot::Sender<()>>,
    watchdog: Option<Duration>,
    last_ping: Instant,
    last_summary: String,
}

fn watch_set(settings: &Settings) -> WatchSet {
    WatchSet {
        targets: settings.targets.iter().map(|t| t.path.clone()).collect(),
        // Without a config (instance default), watch for one being written.
        config: Some(
            settings
                .source
                .clone()
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG)),
        ),
    }
}

/// Owner and `check` warnings of one target (blocking: reads the file).
fn diagnose_target(
    settings: &Settings,
    target: &TargetSettings,
    run_dir: &std::path::Path,
) -> (Option<String>, Vec<String>) {
    let d = check::diagnose_target(settings, target, run_dir);
    let mut notes = d.warnings;
    notes.extend(d.errors);
    (d.owner.map(crate::atomic::user_name), notes)
}

impl<S: TokenSource> Daemon<S> {
    fn group_of(&self, host: &str) -> Option<GroupKey> {
        self.settings
            .registries
            .iter()
            .find(|r| r.host == host)
            .map(GroupKey::of)
    }

    /// The targets that show the registries of `key`.
    fn targets_of(&self, key: &GroupKey) -> BTreeSet<usize> {
        let names: BTreeSet<&str> = self
            .settings
            .registries
            .iter()
            .filter(|r| &GroupKey::of(r) == key)
            .flat_map(|r| r.targets.iter().map(String::as_str))
            .collect();
        self.settings
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| names.contains(t.name.as_str()))
            .map(|(i, _)| i)
            .collect()
    }

    /// What each host should get: the group's token while valid, or the one just fetched even if
    /// it arrived expired (clock skew: written as ECR gave it, shown in status); otherwise the
    /// reason there is none. An expired token held from before (a suspend, a stop) never is.
    fn tokens(&self, now: SystemTime) -> BTreeMap<String, Result<Token, TokenError>> {
        self.settings
            .registries
            .iter()
            .map(|r| (r.host.clone(), self.token_for(&GroupKey::of(r), now)))
            .collect()
    }

    fn token_for(&self, key: &GroupKey, now: SystemTime) -> Result<Token, TokenError> {
        let g = self.groups.get(key);
        let t = g.and_then(|g| match &g.token {
            Some(t) if t.expires_at > now || g.skewed > 0 => Some(t.clone()),
            _ => None,
        });
        t.ok_or_else(|| {
            TokenError::Failed(
                g.and_then(|g| g.last_error.clone())
                    .unwrap_or_else(|| "no token yet".into()),
            )
        })
    }

    fn start_due_fetches(&mut self, now: SystemTime) {
        for (key, g) in self.groups.iter_mut() {
            if g.in_flight.is_some() || g.next > now {
                continue;
            }
            let source = Arc::clone(&self.source);
            let tx = self.fetch_tx.clone();
            let k = key.clone();
            tracing::debug!(group = %key, attempt = g.failures + 1, "fetching a token");
            let task = tokio::spawn(async move {
                let r = source.fetch(&k).await;
                let _ = tx.send((k, r));
            });
            g.in_flight = Some(task.abort_handle());
        }
    }

    /// Records fetch results (this one and any others already waiting) and writes the affected
    /// targets once: at startup many groups finish together, and each target is written once for
    /// all of them rather than once per group.
    fn on_fetched(&mut self, key: GroupKey, result: Result<Token, TokenError>) {
        let mut which = self.record_fetch(key, result);
        while let Ok((key, result)) = self.fetch_rx.try_recv() {
            which.extend(self.record_fetch(key, result));
        }
        self.write(&which);
        self.check_ready();
    }

    /// Takes one group's result into its state; returns the targets to write.
    fn record_fetch(
        &mut self,
        key: GroupKey,
        result: Result<Token, TokenError>,
    ) -> BTreeSet<usize> {
        let now = SystemTime::now();
        let hosts: Vec<String> = self
            .settings
            .registries
            .iter()
            .filter(|r| GroupKey::of(r) == key)
            .map(|r| r.host.clone())
            .collect();
        let policy = self.policy;
        let Some(g) = self.groups.get_mut(&key) else {
            return BTreeSet::new(); // the group was removed by a reload meanwhile
        };
        g.in_flight = None;
        g.attempted = true;
        let hosts = hosts.join(",");
        match &result {
            Ok(token) => {
                g.token = Some(token.clone());
                g.last_success = Some(now);
                g.failures = 0;
                g.last_error = None;
                g.expiry_handled = false;
                if token.expires_at <= clock::add(now, Duration::from_secs(1)) {
                    g.skewed += 1;
                    g.next = schedule::after_failure(now, g.skewed, None, &policy, rand::random());
                    let skew = now.duration_since(token.expires_at).unwrap_or_default();
                    g.last_error = Some(format!(
                        "ECR returned a token that had already expired ({} ago): check the clock",
                        status::rough(skew)
                    ));
                    tracing::warn!(
                        registry = %hosts,
                        expires_at = %clock::rfc3339(token.expires_at),
                        "ECR returned a token that expired {} ago (clock skew?); writing it anyway",
                        status::rough(skew)
                    );
                } else {
                    g.skewed = 0;
                    g.next = schedule::next_refresh(now, token.expires_at, &policy, rand::random());
                    if let Some(gap) = schedule::lapses(token.expires_at, g.next) {
                        tracing::warn!(
                            registry = %hosts,
                            "tokens live {}, less than min_interval ({}): each lapses for {} before its refresh",
                            status::rough(token.expires_at.duration_since(now).unwrap_or_default()),
                            status::rough(policy.min_interval),
                            status::rough(gap)
                        );
                    }
                    tracing::info!(
                        registry = %hosts,
                        expires_at = %clock::rfc3339(token.expires_at),
                        next_refresh = %clock::rfc3339(g.next),
                        "token refreshed"
                    );
                }
            }
            Err(e) => {
                g.failures = g.failures.saturating_add(1);
                g.last_error = Some(e.to_string());
                let held = g.valid_token(now).map(|t| t.expires_at);
                g.next = schedule::after_failure(now, g.failures, held, &policy, rand::random());
                tracing::warn!(
                    registry = %hosts,
                    attempt = g.failures,
                    retry_at = %clock::rfc3339(g.next),
                    error = %e,
                    "token refresh failed"
                );
            }
        }
        for w in g.waiters.drain(..) {
            let _ = w.send(result.clone());
        }
        if result.is_ok() {
            self.targets_of(&key)
        } else {
            BTreeSet::new()
        }
    }

    fn check_ready(&mut self) {
        if self.groups.values().all(|g| g.attempted)
            && let Some(tx) = self.ready.take()
        {
            let _ = tx.send(());
        }
    }

    /// Starts writing the given targets with what we hold now, each on its own blocking thread.
    /// A target still being written is marked to be written again when that write ends.
    fn write(&mut self, which: &BTreeSet<usize>) {
        if which.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let tokens = self.tokens(now);
        for &i in which {
            let (Some(target), Some(rt)) = (self.settings.targets.get(i), self.targets.get_mut(i))
            else {
                continue;
            };
            if rt.writing.is_some() {
                rt.again = true;
                continue;
            }
            let desired = refresh::desired_for(
                &self.settings,
                target,
                &tokens,
                self.state.managed(&target.path),
                now,
            );
            // Only this target's tokens travel with the write (to record their expiry).
            let mine: BTreeMap<String, Result<Token, TokenError>> = desired
                .set
                .keys()
                .filter_map(|h| tokens.get(h).map(|t| (h.clone(), t.clone())))
                .collect();
            rt.writing = Some(Instant::now());
            rt.again = false;
            let t = target.clone();
            let tx = self.done_tx.clone();
            tokio::task::spawn_blocking(move || {
                let result = refresh::write_target(&t, &desired);
                let _ = tx.send(Done::Write {
                    path: t.path,
                    desired,
                    tokens: mine,
                    result,
                });
            });
        }
    }

    /// A blocking task finished: record its outcome.
    fn on_done(&mut self, done: Done) {
        match done {
            Done::Write {
                path,
                desired,
                tokens,
                result,
            } => self.on_written(path, desired, tokens, result),
            Done::Diagnosed { path, owner, notes } => {
                if let Some(i) = self.target_index(&path) {
                    let rt = &mut self.targets[i];
                    rt.diagnosing = false;
                    rt.owner = owner;
                    rt.warnings = notes;
                }
            }
            Done::Unmanaged { path, result } => match result {
                Ok(_) => {
                    self.state.targets.remove(&path);
                    self.save_state();
                    tracing::info!(target_path = %path.display(), "target removed from the config; its entries were removed");
                }
                Err(e) => {
                    tracing::error!(target_path = %path.display(), error = %e, "cannot remove entries from a target no longer configured")
                }
            },
        }
    }

    fn target_index(&self, path: &std::path::Path) -> Option<usize> {
        self.settings.targets.iter().position(|t| t.path == path)
    }

    fn on_written(
        &mut self,
        path: PathBuf,
        desired: Desired,
        tokens: BTreeMap<String, Result<Token, TokenError>>,
        result: Result<refresh::Written, FileError>,
    ) {
        let now = SystemTime::now();
        let Some(i) = self.target_index(&path) else {
            return; // removed from the config meanwhile
        };
        let policy = self.policy;
        let target = self.settings.targets[i].clone();
        let rt = &mut self.targets[i];
        rt.writing = None;
        let mut rediagnose = false;
        match result {
            Ok(w) => {
                rediagnose |= rt.last_error.is_some();
                rt.last_error = None;
                rt.failures = 0;
                rt.retry_at = None;
                if w.outcome == Outcome::Written || !rt.written {
                    rt.last_write = Some(now);
                }
                if w.outcome == Outcome::Written {
                    tracing::info!(
                        target_path = %path.display(),
                        set = w.set,
                        removed = w.removed,
                        "auth file written"
                    );
                }
                rt.written = true;
            }
            Err(e) => {
                let msg = e.to_string();
                if rt.last_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!(target_path = %path.display(), error = %msg, "cannot write auth file");
                    rediagnose = true;
                }
                rt.last_error = Some(msg);
                // Retried with backoff even when nothing else happens (a user created later,
                // a disk that was full, a file system that came back).
                rt.failures = rt.failures.saturating_add(1);
                rt.retry_at = Some(clock::add(
                    now,
                    schedule::retry_delay(rt.failures, &policy, rand::random()),
                ));
            }
        }
        let again = std::mem::take(&mut rt.again);
        if rt.last_error.is_none() {
            let before = self.state.managed(&path).cloned();
            refresh::record(&mut self.state, &target, &desired, &tokens);
            if self.state.managed(&path) != before.as_ref() {
                self.save_state();
            }
        }
        if rediagnose {
            self.rediagnose(i);
        }
        if again {
            self.write(&BTreeSet::from([i]));
        }
    }

    /// Diagnoses one target again, off the loop.
    fn rediagnose(&mut self, i: usize) {
        let (Some(target), Some(rt)) = (self.settings.targets.get(i), self.targets.get_mut(i))
        else {
            return;
        };
        if rt.diagnosing {
            return;
        }
        rt.diagnosing = true;
        let settings = Arc::clone(&self.settings);
        let target = target.clone();
        let run_dir = self.run_dir.clone();
        let tx = self.done_tx.clone();
        tokio::task::spawn_blocking(move || {
            let (owner, notes) = diagnose_target(&settings, &target, &run_dir);
            let _ = tx.send(Done::Diagnosed {
                path: target.path,
                owner,
                notes,
            });
        });
    }

    /// Saves the state in the background (a small root-owned file in the state directory).
    fn save_state(&mut self) {
        let state = self.state.clone();
        let dir = self.settings.daemon.state_dir.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = state.save(&dir) {
                tracing::error!(error = %e, "cannot save state");
            }
        });
    }

    /// Enforces expiry from what the state records we wrote, whatever ECR does now: with
    /// `remove_expired`, an entry whose token ran out and has no valid successor is removed (a
    /// stale entry breaks even anonymous pulls). Also retries failed writes that are due.
    fn handle_expiries(&mut self, now: SystemTime) {
        for (key, g) in self.groups.iter_mut() {
            if let Some(t) = &g.token
                && t.expires_at <= now
                && !g.expiry_handled
                && g.skewed == 0
            {
                g.expiry_handled = true;
                tracing::error!(group = %key, expires_at = %clock::rfc3339(t.expires_at), "token expired and no new one could be had yet");
            }
        }
        let mut which = BTreeSet::new();
        for (i, t) in self.settings.targets.iter().enumerate() {
            let rt = &self.targets[i];
            if rt.writing.is_some() {
                continue;
            }
            let retry_due = rt.retry_at.is_some_and(|at| at <= now);
            let expired = self.settings.daemon.remove_expired
                && rt.retry_at.is_none_or(|at| at <= now)
                && self.state.managed(&t.path).is_some_and(|m| {
                    m.iter().any(|(host, e)| {
                        e.expires_at() <= now && self.host_token(host, now).is_none()
                    })
                });
            if retry_due || expired {
                which.insert(i);
            }
        }
        self.write(&which);
    }

    /// The valid token `host` would get now, if any.
    fn host_token(&self, host: &str, now: SystemTime) -> Option<Token> {
        self.group_of(host)
            .and_then(|k| self.token_for(&k, now).ok())
    }

    fn next_wake(&self, now: SystemTime) -> Duration {
        let mut wake = TICK;
        let mut until = |t: SystemTime| {
            wake = wake.min(t.duration_since(now).unwrap_or_default());
        };
        for g in self.groups.values() {
            if g.in_flight.is_none() {
                until(g.next);
            }
            if let Some(t) = &g.token
                && !g.expiry_handled
                && t.expires_at > now
            {
                until(t.expires_at);
            }
        }
        for rt in &self.targets {
            if let Some(at) = rt.retry_at {
                until(at);
            }
        }
        if self.settings.daemon.remove_expired {
            for m in self.state.targets.values() {
                for e in m.values() {
                    if e.expires_at() > now {
                        until(e.expires_at());
                    }
                }
            }
        }
        if let Some(every) = self.watchdog {
            wake = wake.min(every.saturating_sub(self.last_ping.elapsed()));
        }
        wake.max(Duration::from_millis(5))
    }

    /// When `min_interval` holds the next refresh past the token's expiry.
    fn lapse_warning(&self, g: &Group) -> Option<String> {
        let t = g
            .token
            .as_ref()
            .filter(|_| g.failures == 0 && g.skewed == 0)?;
        let gap = schedule::lapses(t.expires_at, g.next)?;
        Some(format!(
            "the token runs out {} before its next refresh: tokens live less than min_interval ({}), which bounds calls to ECR; lower min_interval",
            status::rough(gap),
            status::rough(self.policy.min_interval)
        ))
    }

    fn ping_watchdog(&mut self) {
        if let Some(every) = self.watchdog
            && self.last_ping.elapsed() >= every
        {
            systemd::watchdog();
            self.last_ping = Instant::now();
        }
    }

    fn snapshot(&self, now: SystemTime) -> Status {
        let registries = self
            .settings
            .registries
            .iter()
            .map(|r| {
                let g = self.groups.get(&GroupKey::of(r));
                let state = match g {
                    None => RegistryState::Pending,
                    Some(g) => match &g.token {
                        Some(t) if t.expires_at <= now => RegistryState::Expired,
                        _ if g.in_flight.is_some() => RegistryState::Refreshing,
                        None if g.failures > 0 => RegistryState::Failing,
                        None => RegistryState::Pending,
                        Some(_) if g.failures > 0 => RegistryState::Failing,
                        Some(_) => RegistryState::Fresh,
                    },
                };
                RegistryStatus {
                    host: r.host.clone(),
                    state,
                    expires_at: g
                        .and_then(|g| g.token.as_ref())
                        .map(|t| status::rfc3339(t.expires_at)),
                    next_refresh: g.map(|g| status::rfc3339(g.next)),
                    last_success: g.and_then(|g| g.last_success).map(status::rfc3339),
                    last_error: g.and_then(|g| g.last_error.clone()),
                    consecutive_failures: g.map_or(0, |g| g.failures),
                    warnings: g.and_then(|g| self.lapse_warning(g)).into_iter().collect(),
                }
            })
            .collect();
        let targets = self
            .settings
            .targets
            .iter()
            .zip(&self.targets)
            .map(|(t, rt)| TargetStatus {
                name: t.name.clone(),
                path: t.path.display().to_string(),
                owner: rt.owner.clone(),
                state: if rt.last_error.is_some()
                    || rt.writing.is_some_and(|since| since.elapsed() >= STUCK)
                {
                    TargetState::Error
                } else if rt.written {
                    TargetState::Ok
                } else {
                    TargetState::Pending
                },
                last_write: rt.last_write.map(status::rfc3339),
                last_error: match rt.writing {
                    Some(since) if since.elapsed() >= STUCK => Some(format!(
                        "stuck: a write has been running for {} (a hung file system?); other targets go on",
                        status::rough(since.elapsed())
                    )),
                    _ => rt.last_error.clone(),
                },
                warnings: rt.warnings.clone(),
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started_at: Some(status::rfc3339(self.started_at)),
            tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
            registries,
            targets,
            config: self.config.clone(),
        }
    }

    fn publish(&mut self, now: SystemTime) {
        let snap = self.snapshot(now);
        let line = status::summary(&snap, now);
        if line != self.last_summary {
            systemd::status(&line);
            self.last_summary = line;
        }
        self.status_tx.send_replace(snap);
    }

    async fn on_changes(&mut self, changes: Changes) {
        if changes.config {
            tracing::info!("config file changed; reloading");
            let _ = self.reload().await;
        }
        let which: BTreeSet<usize> = self
            .settings
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| changes.targets.contains(&t.path))
            .map(|(i, _)| i)
            .collect();
        self.write(&which);
    }

    /// Re-reads the config. An invalid one is reported and the running config stays.
    async fn reload(&mut self) -> Result<String, String> {
        systemd::reloading();
        let result = self.reload_inner().await;
        match &result {
            Ok(m) => tracing::info!("{m}"),
            Err(e) => {
                tracing::error!(error = %e, "config rejected; still running the previous config");
                self.config.error = Some(e.clone());
            }
        }
        self.publish(SystemTime::now());
        systemd::ready(Some(&self.last_summary));
        result
    }

    async fn reload_inner(&mut self) -> Result<String, String> {
        let path = self
            .settings
            .source
            .clone()
            .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG));
        let p = path.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&p, &SystemAccounts))
            .await
            .map_err(|e| e.to_string())?;
        let new = match loaded {
            Ok(s) => s,
            Err(config::ConfigError::Read { source, .. })
                if self.settings.source.is_none()
                    && source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok("no config file; still using this instance's registry".into());
            }
            Err(config::ConfigError::Empty { .. }) if self.settings.source.is_none() => {
                return Ok(
                    "the config holds no settings; still using this instance's registry".into(),
                );
            }
            Err(e) => return Err(e.to_string()),
        };
        config::log_warnings(&new);
        let now = SystemTime::now();
        self.config = ConfigStatus {
            path: Some(path.display().to_string()),
            loaded_at: Some(status::rfc3339(now)),
            error: None,
        };
        if new == *self.settings {
            return Ok("config reloaded, unchanged".into());
        }
        if new.daemon.socket != self.settings.daemon.socket {
            tracing::warn!("a new control socket path takes effect at the next restart");
        }
        logging::set_level(&new.daemon.log_level);
        let old = std::mem::replace(&mut self.settings, Arc::new(new));
        self.policy = Policy::from(&self.settings.daemon);

        // Groups: keep what still exists (tokens and schedules), start new ones now.
        let keys: BTreeSet<GroupKey> = self.settings.registries.iter().map(GroupKey::of).collect();
        self.groups.retain(|k, g| {
            let keep = keys.contains(k);
            if !keep && let Some(h) = g.in_flight.take() {
                h.abort();
            }
            keep
        });
        for k in keys {
            self.groups.entry(k).or_insert_with(|| Group::new(now));
        }

        // Targets no longer configured lose the entries we wrote there.
        for t in &old.targets {
            if self.settings.targets.iter().any(|n| n.path == t.path) {
                continue;
            }
            let Some(managed) = self.state.managed(&t.path).cloned() else {
                continue;
            };
            let desired = Desired {
                set: BTreeMap::new(),
                remove: managed.keys().cloned().collect(),
            };
            let t: TargetSettings = t.clone();
            let tx = self.done_tx.clone();
            tokio::task::spawn_blocking(move || {
                let result = refresh::write_target(&t, &desired);
                let _ = tx.send(Done::Unmanaged {
                    path: t.path,
                    result,
                });
            });
        }
        let old_rt: BTreeMap<PathBuf, TargetRt> = old
            .targets
            .iter()
            .zip(self.targets.drain(..))
            .map(|(t, rt)| (t.path.clone(), rt))
            .collect();
        self.targets = self
            .settings
            .targets
            .iter()
            .map(|t| old_rt.get(&t.path).cloned().unwrap_or_default())
            .collect();
        if let Some(w) = &self.watcher {
            w.update(watch_set(&self.settings));
        }
        let s = Arc::clone(&self.settings);
        tokio::task::spawn_blocking(move || commands::remove_stray_temp_files(&s));
        for i in 0..self.settings.targets.len() {
            self.rediagnose(i);
        }
        let all: BTreeSet<usize> = (0..self.settings.targets.len()).collect();
        self.write(&all);
        Ok(format!(
            "config reloaded: {} registries, {} targets",
            self.settings.registries.len(),
            self.settings.targets.len()
        ))
    }

    fn on_refresh(
        &mut self,
        host: Option<String>,
        reply: oneshot::Sender<Result<Vec<RefreshResult>, String>>,
    ) {
        let now = SystemTime::now();
        let keys: Vec<GroupKey> = match &host {
            Some(h) => match self.group_of(h) {
                Some(k) => vec![k],
                None => {
                    let _ = reply.send(Err(format!("{h} is not a configured registry")));
                    return;
                }
            },
            None => self.groups.keys().cloned().collect(),
        };
        let mut pending = Vec::new();
        for key in keys {
            let Some(g) = self.groups.get_mut(&key) else {
                continue;
            };
            let hosts: Vec<String> = self
                .settings
                .registries
                .iter()
                .filter(|r| GroupKey::of(r) == key && host.as_ref().is_none_or(|h| h == &r.host))
                .map(|r| r.host.clone())
                .collect();
            let (tx, rx) = oneshot::channel();
            // A client may move a refresh earlier, but not past the group's own limits: after
            // a failure not before its backoff ends, after a success not within min_interval.
            let earliest = if g.failures > 0 || g.skewed > 0 {
                g.next
            } else {
                g.last_success
                    .map_or(now, |t| clock::add(t, self.policy.min_interval))
            };
            match (&g.in_flight, g.valid_token(now)) {
                // Coalesce onto a fetch under way.
                (Some(_), _) => g.waiters.push(tx),
                _ if earliest <= now => {
                    g.next = now;
                    g.waiters.push(tx);
                }
                (None, Some(t)) if g.failures == 0 => {
                    let _ = tx.send(Ok(t.clone()));
                }
                _ => {
                    let wait = status::rough(earliest.duration_since(now).unwrap_or_default());
                    let why = match &g.last_error {
                        Some(e) if g.failures > 0 => format!(
                            "backing off after {} failed attempts (last: {e})",
                            g.failures
                        ),
                        Some(e) => e.clone(),
                        None => format!(
                            "min_interval ({}) since the last token",
                            status::rough(self.policy.min_interval)
                        ),
                    };
                    let _ = tx.send(Err(TokenError::Failed(format!(
                        "not refreshed now: the next attempt is at {} (in {wait}): {why}",
                        clock::rfc3339(earliest)
                    ))));
                }
            }
            pending.push((hosts, rx));
        }
        tokio::spawn(async move {
            let mut results = Vec::new();
            for (hosts, rx) in pending {
                let r = rx
                    .await
                    .unwrap_or_else(|_| Err(TokenError::Failed("the registry was removed".into())));
                for h in hosts {
                    results.push(match &r {
                        Ok(t) => RefreshResult {
                            host: h,
                            ok: true,
                            expires_at: Some(status::rfc3339(t.expires_at)),
                            error: None,
                        },
                        Err(e) => RefreshResult {
                            host: h,
                            ok: false,
                            expires_at: None,
                            error: Some(e.to_string()),
                        },
                    });
                }
            }
            let _ = reply.send(Ok(results));
        });
    }

    async fn run(
        mut self,
        mut changes: mpsc::Receiver<Changes>,
        mut actions: mpsc::Receiver<Action>,
        mut signals: Signals,
    ) -> u8 {
        for i in 0..self.settings.targets.len() {
            self.rediagnose(i);
        }
        loop {
            let now = SystemTime::now();
            self.start_due_fetches(now);
            self.handle_expiries(now);
            self.publish(now);
            self.ping_watchdog();
            let wake = self.next_wake(SystemTime::now());
            tokio::select! {
                _ = signals.term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
                _ = signals.int.recv() => { tracing::info!("SIGINT: stopping"); break; }
                _ = signals.hup.recv() => { tracing::info!("SIGHUP: reloading"); let _ = self.reload().await; }
                Some((key, r)) = self.fetch_rx.recv() => self.on_fetched(key, r),
                Some(done) = self.done_rx.recv() => self.on_done(done),
                Some(c) = changes.recv() => self.on_changes(c).await,
                Some(a) = actions.recv() => match a {
                    Action::Refresh { host, reply } => self.on_refresh(host, reply),
                    Action::Reload { reply } => { let r = self.reload().await; let _ = reply.send(r); }
                },
                _ = tokio::time::sleep(wake) => {}
            }
        }
        systemd::stopping();
        for g in self.groups.values_mut() {
            if let Some(h) = g.in_flight.take() {
                h.abort();
            }
        }
        commands::EXIT_OK
    }
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// `ecr-refresherd run`: config, logging, socket, first round, READY, then the loop until SIGTERM.
pub async fn run(cli: &Cli, start_timeout: Duration) -> u8 {
    logging::init("info", logging::stderr_is_journal());
    let settings = match commands::load_settings(cli).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("ecr-refresherd: {}", crate::escape::shown_lines(&e));
            return commands::EXIT_CONFIG;
        }
    };
    logging::set_level(&settings.daemon.log_level);
    let gid = settings.daemon.socket_group.as_ref().map(|g| g.gid);
    let listener = match control::bind(&settings.daemon.socket, gid).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("ecr-refresherd: {}", crate::escape::shown(&e.to_string()));
            return commands::EXIT_FAILED;
        }
    };
    let signals = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(term), Ok(int), Ok(hup)) => Signals { term, int, hup },
        _ => {
            eprintln!("ecr-refresherd: cannot install signal handlers");
            return commands::EXIT_FAILED;
        }
    };
    let now = SystemTime::now();
    let settings = Arc::new(settings);
    let run_dir = cli.run_dir.clone();
    // The state is root's own small file; the targets are looked at off the loop (a hung file
    // system in one must not hold the start).
    let state_dir = settings.daemon.state_dir.clone();
    let state = tokio::task::spawn_blocking(move || {
        let (state, warning) = State::load(&state_dir);
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
        state
    })
    .await
    .unwrap_or_default();
    let s = Arc::clone(&settings);
    tokio::task::spawn_blocking(move || commands::remove_stray_temp_files(&s));
    let (changes_tx, changes_rx) = mpsc::channel(16);
    let watcher = match files::spawn(watch_set(&settings), changes_tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(error = %e, "cannot watch files; edits are picked up at the next refresh");
            None
        }
    };
    let (status_tx, status_rx) = watch::channel(Status::default());
    let (actions_tx, actions_rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(control::serve(listener, status_rx, actions_tx, stop_rx));
    let (fetch_tx, fetch_rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = oneshot::channel();
    let groups = settings
        .registries
        .iter()
        .map(|r| (GroupKey::of(r), Group::new(now)))
        .collect();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let targets = vec![TargetRt::default(); settings.targets.len()];
    let daemon = Daemon {
        source: Arc::new(AwsTokenSource::new(1)),
        policy: Policy::from(&settings.daemon),
        config: ConfigStatus {
            path: settings.source.as_ref().map(|p| p.display().to_string()),
            loaded_at: Some(status::rfc3339(now)),
            error: None,
        },
        settings: Arc::clone(&settings),
        groups,
        state,
        targets,
        run_dir,
        started_at: now,
        status_tx,
        fetch_tx,
        fetch_rx,
        done_tx,
        done_rx,
        watcher,
        ready: Some(ready_tx),
        watchdog: systemd::watchdog_interval(),
        last_ping: Instant::now(),
        last_summary: String::new(),
    };
    tracing::info!(
        registries = settings.registries.len(),
        targets = settings.targets.len(),
        socket = %settings.daemon.socket.display(),
        "ecr-refresherd {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let mut main = tokio::spawn(daemon.run(changes_rx, actions_rx, signals));
    // READY after the first round, or after the start timeout: a hung round must not block boot.
    let ended = tokio::select! {
        r = ready_rx => { if r.is_ok() { systemd::ready(None); } None }
        _ = tokio::time::sleep(start_timeout) => {
            tracing::warn!("the first round is taking longer than {}s; reporting ready anyway", start_timeout.as_secs());
            systemd::ready(Some("starting: the first round is still running"));
            None
        }
        r = &mut main => Some(r),
    };
    let code = match ended {
        Some(r) => r.unwrap_or(commands::EXIT_FAILED),
        None => main.await.unwrap_or(commands::EXIT_FAILED),
    };
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = std::fs::remove_file(&settings.daemon.socket);
    tracing::info!("stopped");
    code
}
