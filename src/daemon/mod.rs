//! The long-running daemon: startup order, the loop that performs the core's actions, reload and shutdown.
//!
//! All rules live in [`core`], which is pure. This loop owns the [`core::Core`] and does its I/O:
//! fetches run as tasks and deliveries (file writes) and diagnoses on blocking threads, each
//! reporting back over a channel, so a slow group or a hung file system never delays the others,
//! the control socket or the watchdog. The watcher, the socket and signals talk to the loop over
//! channels; everyone else reads the `watch` status snapshot.

pub mod control;
pub(crate) mod core;
pub mod grants;
pub(crate) mod schedule;
pub(crate) mod systemd;
pub(crate) mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch as snapshot};

use self::control::{Action as Request, RefreshResult, UnknownHost};
use self::core::{Action, Core, Ticket};
use self::grants::GrantsFeed;
use self::watch::{Changes, WatchSet, WatcherHandle};
use crate::cli::Cli;
use crate::config::Settings;
use crate::ecr::token::{AwsTokenSource, GroupKey, Token, TokenError, TokenSource};
use crate::logging;
use crate::portainer::Portainers;
use crate::startup::{self, Source, StartupError, exit};
use crate::status::{self, ConfigStatus, Status};
use crate::targets::consumer::{Consumer, Credentials, DeliveryError, Job};
use crate::targets::diagnose;
use crate::targets::files::AuthFiles;
use crate::targets::state::State;

/// What a blocking task reports back to the loop.
enum Done {
    Delivered {
        job: Job,
        result: Result<bool, DeliveryError>,
    },
    Diagnosed {
        path: PathBuf,
        owner: Option<String>,
        notes: Vec<String>,
        shadowed: bool,
    },
    /// A state save finished.
    Saved,
    /// A write of the metrics file finished: the status it shows, or the error.
    MetricsWritten(Result<Box<Status>, String>),
}

/// The loop's own state: the core, and the handles of what it started.
struct Loop<S: TokenSource> {
    core: Core,
    source: Arc<S>,
    consumer: Arc<dyn Consumer>,
    config: Source,
    config_status: ConfigStatus,
    run_dir: PathBuf,
    started_at: SystemTime,
    fetches: BTreeMap<GroupKey, tokio::task::AbortHandle>,
    fetch_tx: mpsc::UnboundedSender<(GroupKey, Result<Token, TokenError>)>,
    fetch_rx: mpsc::UnboundedReceiver<(GroupKey, Result<Token, TokenError>)>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    waiters: BTreeMap<u64, oneshot::Sender<Result<Token, TokenError>>>,
    status_tx: snapshot::Sender<Status>,
    watcher: Option<WatcherHandle>,
    /// What the daemon holds now, for the consumers answered from memory (Portainer's tasks,
    /// the socket's `credential`); sent only when it changed.
    credentials: snapshot::Sender<Arc<Credentials>>,
    /// Who may ask the helper socket for which registry.
    grants: Arc<GrantsFeed>,
    grants_resolved: Instant,
    /// Portainer instances, each on its own task, fed the credentials when they change.
    portainers: Portainers,
    /// Docker Swarm services, when `[swarm]` is enabled; its status changes wake the loop
    /// through the Portainer tasks' notifier.
    swarm: crate::swarm::Swarm,
    ready: Option<oneshot::Sender<()>>,
    watchdog: Option<Duration>,
    last_ping: Instant,
    last_summary: String,
    /// A state save is running; another was asked for meanwhile. One at a time, so an older
    /// snapshot never lands after a newer one.
    saving: bool,
    save_again: bool,
    /// The metrics file: being written now, what it last got (and when), the last error logged.
    metrics: MetricsFile,
}

/// The state of `metrics_file`'s writes: one at a time, on change and at least every
/// [`METRICS_EVERY`] (node_exporter shows the file's mtime: a stale file means a stopped daemon).
#[derive(Default)]
struct MetricsFile {
    /// A write is under way, started (rendering included) then.
    writing: Option<Instant>,
    written: Option<(Box<Status>, Instant)>,
    last_error: Option<String>,
    /// After a failed write, the next attempt waits until then.
    retry_at: Option<Instant>,
    /// The earliest the next write may start: [`METRICS_SPACING`] or [`METRICS_SHARE`] after
    /// the last one.
    next_at: Option<Instant>,
    /// The status changed since the last write, which waits for `next_at`.
    pending: bool,
}

impl MetricsFile {
    /// When the loop must wake to write a change held back by the spacing.
    fn wake_at(&self) -> Option<Instant> {
        if self.pending && self.writing.is_none() {
            self.next_at
        } else {
            None
        }
    }
}

/// The longest the metrics file goes without a rewrite while the daemon runs.
const METRICS_EVERY: Duration = Duration::from_secs(60);
/// Writes of the metrics file start at least this far apart, whatever changes: anyone may move
/// the credential request counters (the helper socket is open to all) as fast as they can
/// connect, and a scrape reads the file every 15 s or more...
const METRICS_SPACING: Duration = Duration::from_secs(1);
/// ...and take at most 1/this of the time (rendering a thousand registries is a megabyte):
/// the next write waits for `took × METRICS_SHARE`.
const METRICS_SHARE: u32 = 20;

/// Whether two snapshots say the same in the metrics (the runtime's task count, which every
/// connection moves, and the pid are not in them).
fn same_metrics(a: &Status, b: &Status) -> bool {
    let Status {
        version,
        pid: _,
        started_at,
        tasks: _,
        registries,
        targets,
        portainer,
        swarm,
        config,
        helper,
    } = a;
    *version == b.version
        && *started_at == b.started_at
        && *registries == b.registries
        && *targets == b.targets
        && *portainer == b.portainer
        && *swarm == b.swarm
        && *config == b.config
        && *helper == b.helper
}

/// What to watch: every target, and the config path asked for (also while the instance default
/// applies, so a config written later is picked up).
fn watch_set(settings: &Settings, config: &Source) -> WatchSet {
    WatchSet {
        targets: settings.targets.iter().map(|t| t.path.clone()).collect(),
        config: Some(config.path.clone()),
    }
}

impl Loop<AwsTokenSource> {
    // Each argument is one channel or handle the loop owns from here on.
    #[allow(clippy::too_many_arguments)]
    fn new(
        core: Core,
        config: Source,
        run_dir: PathBuf,
        status_tx: snapshot::Sender<Status>,
        credentials: snapshot::Sender<Arc<Credentials>>,
        grants: Arc<GrantsFeed>,
        watcher: Option<WatcherHandle>,
        ready: oneshot::Sender<()>,
    ) -> Self {
        let now = SystemTime::now();
        let (fetch_tx, fetch_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut portainers = Portainers::new(credentials.subscribe());
        portainers.configure(core.settings());
        let mut swarm = crate::swarm::Swarm::new(credentials.subscribe(), portainers.changed());
        swarm.configure(core.settings());
        Loop {
            config_status: ConfigStatus {
                path: core
                    .settings()
                    .source
                    .as_ref()
                    .map(|p| p.display().to_string()),
                loaded_at: Some(now),
                error: None,
                reloads_ok: 0,
                reloads_failed: 0,
            },
            core,
            source: Arc::new(AwsTokenSource::new(1)),
            consumer: Arc::new(AuthFiles),
            config,
            run_dir,
            started_at: now,
            fetches: BTreeMap::new(),
            fetch_tx,
            fetch_rx,
            done_tx,
            done_rx,
            waiters: BTreeMap::new(),
            status_tx,
            watcher,
            credentials,
            grants,
            grants_resolved: Instant::now(),
            portainers,
            swarm,
            ready: Some(ready),
            watchdog: systemd::watchdog_interval(),
            last_ping: Instant::now(),
            last_summary: String::new(),
            saving: false,
            save_again: false,
            metrics: MetricsFile::default(),
        }
    }
}

impl<S: TokenSource> Loop<S> {
    /// Performs the core's actions.
    fn perform(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Fetch(key) => {
                    let (source, tx, k) =
                        (Arc::clone(&self.source), self.fetch_tx.clone(), key.clone());
                    let task = tokio::spawn(async move {
                        let r = source.fetch(&k).await;
                        let _ = tx.send((k, r));
                    });
                    self.fetches.insert(key, task.abort_handle());
                }
                Action::Abort(key) => {
                    if let Some(h) = self.fetches.remove(&key) {
                        h.abort();
                    }
                }
                Action::Deliver(job) => {
                    tracing::debug!(target_path = %job.target.path.display(), "delivering");
                    let (consumer, tx) = (Arc::clone(&self.consumer), self.done_tx.clone());
                    tokio::task::spawn_blocking(move || {
                        let result = consumer.deliver(&job);
                        let _ = tx.send(Done::Delivered { job, result });
                    });
                }
                Action::Diagnose(i) => self.diagnose(i),
                Action::SaveState => self.save_state(),
                Action::Answer { id, result } => {
                    if let Some(tx) = self.waiters.remove(&id) {
                        let _ = tx.send(result);
                    }
                }
                Action::Ready => {
                    if let Some(tx) = self.ready.take() {
                        let _ = tx.send(());
                    }
                }
            }
        }
    }

    fn save_state(&mut self) {
        if self.saving {
            self.save_again = true;
            return;
        }
        let bytes = match self.core.state().encode() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot save state");
                return;
            }
        };
        self.saving = true;
        let dir = self.core.settings().daemon.state_dir.clone();
        let tx = self.done_tx.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = crate::targets::state::save_encoded_state(&bytes, &dir) {
                tracing::error!(error = %e, "cannot save state");
            }
            let _ = tx.send(Done::Saved);
        });
    }

    fn diagnose(&self, i: usize) {
        let settings = Arc::clone(self.core.settings());
        let Some(target) = settings.targets.get(i).cloned() else {
            return;
        };
        let (run_dir, tx) = (self.run_dir.clone(), self.done_tx.clone());
        tokio::task::spawn_blocking(move || {
            let d = diagnose::diagnose_target(&settings, &target, &run_dir);
            let mut notes = d.warnings;
            notes.extend(d.errors);
            let owner = d.owner.map(crate::safe_fs::user_name);
            let _ = tx.send(Done::Diagnosed {
                path: target.path,
                owner,
                notes,
                shadowed: d.shadowed,
            });
        });
    }

    fn on_fetched(&mut self, key: GroupKey, result: Result<Token, TokenError>) {
        self.fetches.remove(&key);
        let actions = self
            .core
            .fetched(&key, result, SystemTime::now(), rand::random());
        self.perform(actions);
    }

    fn on_done(&mut self, done: Done) {
        let actions = match done {
            Done::Delivered { job, result } => {
                if matches!(result, Ok(true)) {
                    tracing::info!(target_path = %job.target.path.display(), set = job.desired.set.len(), removed = job.desired.remove.len(), "auth file written");
                }
                self.core
                    .delivered(&job, result, SystemTime::now(), rand::random())
            }
            Done::Diagnosed {
                path,
                owner,
                notes,
                shadowed,
            } => {
                self.core.diagnosed(&path, owner, notes, shadowed);
                Vec::new()
            }
            Done::Saved => {
                self.saving = false;
                if std::mem::take(&mut self.save_again) {
                    self.save_state();
                }
                Vec::new()
            }
            Done::MetricsWritten(r) => {
                if let Some(started) = self.metrics.writing.take() {
                    let spacing = METRICS_SPACING.max(started.elapsed() * METRICS_SHARE);
                    self.metrics.next_at = Some(Instant::now() + spacing);
                }
                match r {
                    Ok(status) => {
                        if self.metrics.last_error.take().is_some() {
                            tracing::info!("metrics file written again");
                        }
                        self.metrics.written = Some((status, Instant::now()));
                        self.metrics.retry_at = None;
                    }
                    Err(e) => {
                        if self.metrics.last_error.as_deref() != Some(e.as_str()) {
                            tracing::error!(error = %e, "cannot write the metrics file");
                        }
                        self.metrics.last_error = Some(e);
                        self.metrics.retry_at = Some(Instant::now() + METRICS_EVERY);
                    }
                }
                Vec::new()
            }
        };
        self.perform(actions);
    }

    fn snapshot(&self, now: SystemTime) -> Status {
        let (registries, targets) = self.core.snapshot(now);
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started_at: Some(self.started_at),
            tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
            registries,
            targets,
            portainer: self.portainers.statuses(),
            swarm: self.swarm.status(),
            config: self.config_status.clone(),
            helper: control::request_counts(),
        }
    }

    /// Hands the consumers answered from memory what the daemon holds now, when it changed.
    fn share_credentials(&self) {
        let now = self.core.credentials(SystemTime::now());
        self.credentials.send_if_modified(|held| {
            let same = held.len() == now.len()
                && held.iter().zip(&now).all(|((h1, t1), (h2, t2))| {
                    h1 == h2 && t1.auth() == t2.auth() && t1.expires_at == t2.expires_at
                });
            if !same {
                *held = Arc::new(now);
            }
            !same
        });
    }

    fn publish(&mut self, now: SystemTime) {
        let snap = self.snapshot(now);
        let line = status::summary(&snap, now);
        if line != self.last_summary {
            systemd::status(&line);
            self.last_summary = line;
        }
        self.write_metrics(&snap);
        self.status_tx.send_replace(snap);
    }

    /// Rewrites `metrics_file` when what it says changed, or when it was last written
    /// [`METRICS_EVERY`] ago; one write at a time, on a blocking thread (the directory is
    /// node_exporter's, and may be another user's: written as its owner, through `safe_fs`).
    fn write_metrics(&mut self, snap: &Status) {
        let Some(path) = self.core.settings().daemon.metrics_file.clone() else {
            return;
        };
        if self.metrics.writing.is_some()
            || self.metrics.retry_at.is_some_and(|t| Instant::now() < t)
        {
            return;
        }
        // The same status as written, and not a minute ago: nothing to render (at a thousand
        // registries the text is a megabyte; comparing the snapshots is far cheaper).
        if let Some((last, at)) = &self.metrics.written
            && same_metrics(last, snap)
            && at.elapsed() < METRICS_EVERY
        {
            self.metrics.pending = false;
            return;
        }
        // A change too soon after the last write waits for the spacing (the loop wakes then).
        if self.metrics.next_at.is_some_and(|t| Instant::now() < t) {
            self.metrics.pending = true;
            return;
        }
        self.metrics.pending = false;
        self.metrics.writing = Some(Instant::now());
        let status = Box::new(snap.clone());
        let bytes = crate::metrics::render(&status).into_bytes();
        let tx = self.done_tx.clone();
        tokio::task::spawn_blocking(move || {
            let r = crate::safe_fs::update_shared(
                &path,
                crate::safe_fs::OwnerPolicy::Inherit,
                Some(0o644),
                |_| Ok::<_, std::convert::Infallible>(Some(bytes.clone())),
            )
            .map(|_| status)
            .map_err(|e| e.to_string());
            let _ = tx.send(Done::MetricsWritten(r));
        });
    }

    fn ping_watchdog(&mut self) {
        if let Some(every) = self.watchdog
            && self.last_ping.elapsed() >= every
        {
            systemd::watchdog();
            self.last_ping = Instant::now();
        }
    }

    fn on_changes(&mut self, changes: Changes) -> Option<()> {
        self.core.changed(&changes.targets);
        changes.config.then_some(())
    }

    /// Re-reads the config. An invalid one is reported and the running config stays.
    async fn reload(&mut self) -> Result<String, StartupError> {
        systemd::reloading();
        let result = self.reload_inner().await;
        match &result {
            Ok(m) if m.ends_with("unchanged") => tracing::debug!("{m}"),
            Ok(m) => tracing::info!("{m}"),
            Err(e) => {
                tracing::error!(error = %e, "config rejected; still running the previous config");
                self.config_status.error = Some(e.to_string());
            }
        }
        if result.is_ok() {
            self.config_status.reloads_ok += 1;
        } else {
            self.config_status.reloads_failed += 1;
        }
        self.publish(SystemTime::now());
        systemd::ready(Some(&self.last_summary));
        result
    }

    async fn reload_inner(&mut self) -> Result<String, StartupError> {
        let source = self.config.clone();
        let read = tokio::task::spawn_blocking(move || source.read())
            .await
            .map_err(|_| StartupError::Interrupted)?;
        let new = match read? {
            Some(s) => s,
            // No settings in the file: the instance default, kept if it already applies.
            None if self.core.settings().source.is_none() => {
                return Ok(
                    "no settings in the config; still using this instance's registry".into(),
                );
            }
            None => self.config.instance_default().await?,
        };
        let now = SystemTime::now();
        self.config_status = ConfigStatus {
            path: Some(self.config.path.display().to_string()),
            loaded_at: Some(now),
            error: None,
            ..self.config_status.clone()
        };
        if new == **self.core.settings() {
            return Ok("config reloaded, unchanged".into());
        }
        if new.daemon.socket != self.core.settings().daemon.socket {
            tracing::warn!("a new control socket path takes effect at the next restart");
        }
        if new.daemon.helper_socket != self.core.settings().daemon.helper_socket {
            tracing::warn!("a new helper socket path takes effect at the next restart");
        }
        logging::set_level(&new.daemon.log_level);
        let new = Arc::new(new);
        let actions = self.core.reload(Arc::clone(&new), now);
        self.perform(actions);
        self.portainers.configure(&new);
        self.swarm.configure(&new);
        self.grants.reload(Arc::clone(&new)).await;
        self.grants_resolved = Instant::now();
        self.share_credentials();
        if let Some(w) = &self.watcher {
            w.update(watch_set(&new, &self.config));
        }
        tokio::task::spawn_blocking(move || startup::remove_stray_temp_files(&new));
        let s = self.core.settings();
        Ok(format!(
            "config reloaded: {} registries, {} targets",
            s.registries.len(),
            s.targets.len()
        ))
    }

    fn on_refresh(
        &mut self,
        host: Option<String>,
        reply: oneshot::Sender<Result<Vec<RefreshResult>, UnknownHost>>,
    ) {
        let tickets = match self.core.refresh(host.as_deref(), SystemTime::now()) {
            Ok(t) => t,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let mut pending = Vec::new();
        for (hosts, ticket) in tickets {
            let (tx, rx) = oneshot::channel();
            match ticket {
                Ticket::Now(r) => {
                    let _ = tx.send(r);
                }
                Ticket::Later(id) => {
                    self.waiters.insert(id, tx);
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
                for host in hosts {
                    results.push(RefreshResult {
                        host,
                        ok: r.is_ok(),
                        expires_at: r.as_ref().ok().map(|t| status::rfc3339(t.expires_at)),
                        error: r.as_ref().err().map(ToString::to_string),
                    });
                }
            }
            let _ = reply.send(Ok(results));
        });
    }

    async fn run(
        mut self,
        mut changes: mpsc::Receiver<Changes>,
        mut requests: mpsc::Receiver<Request>,
        mut signals: Signals,
    ) -> u8 {
        let portainer_changed = self.portainers.changed();
        loop {
            let now = SystemTime::now();
            let actions = self.core.poll(now);
            self.perform(actions);
            // Accounts come and go: names are resolved again now and then, never on this task.
            if self.grants_resolved.elapsed() >= grants::RESOLVE_EVERY {
                self.grants.refresh(Arc::clone(self.core.settings()));
                self.grants_resolved = Instant::now();
            }
            self.publish(now);
            self.ping_watchdog();
            let mut wake = self.core.next_wake(SystemTime::now());
            if let Some(every) = self.watchdog {
                wake = wake.min(every.saturating_sub(self.last_ping.elapsed()));
            }
            if let Some(at) = self.metrics.wake_at() {
                wake = wake.min(at.saturating_duration_since(Instant::now()));
            }
            let wake = wake.max(Duration::from_millis(5));
            tokio::select! {
                _ = signals.term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
                _ = signals.int.recv() => { tracing::info!("SIGINT: stopping"); break; }
                _ = signals.hup.recv() => { tracing::info!("SIGHUP: reloading"); let _ = self.reload().await; }
                Some((key, r)) = self.fetch_rx.recv() => {
                    self.on_fetched(key, r);
                    // Results waiting too: take them now, so each target is written once for all.
                    while let Ok((key, r)) = self.fetch_rx.try_recv() {
                        self.on_fetched(key, r);
                    }
                    self.share_credentials();
                }
                _ = portainer_changed.notified() => {}
                Some(done) = self.done_rx.recv() => self.on_done(done),
                Some(c) = changes.recv() => {
                    if self.on_changes(c).is_some() {
                        tracing::info!("config file changed; reloading");
                        let _ = self.reload().await;
                    }
                }
                Some(r) = requests.recv() => match r {
                    Request::Refresh { host, reply } => self.on_refresh(host, reply),
                    Request::Reload { reply } => { let r = self.reload().await; let _ = reply.send(r); }
                },
                _ = tokio::time::sleep(wake) => {}
            }
        }
        systemd::stopping();
        for h in self.fetches.values() {
            h.abort();
        }
        exit::OK
    }
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

fn signals() -> Option<Signals> {
    Some(Signals {
        term: signal(SignalKind::terminate()).ok()?,
        int: signal(SignalKind::interrupt()).ok()?,
        hup: signal(SignalKind::hangup()).ok()?,
    })
}

/// `ecr-refresherd run`: config, logging, socket, first round, READY, then the loop until SIGTERM.
pub async fn run(cli: &Cli, start_timeout: Duration) -> u8 {
    logging::init("info", logging::stderr_is_journal());
    let config = Source::of(cli.config.as_deref());
    let settings = match config.load().await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!("{e}");
            eprintln!(
                "ecr-refresherd: {}",
                crate::escape::shown_lines(&e.to_string())
            );
            return exit::CONFIG;
        }
    };
    logging::set_level(&settings.daemon.log_level);
    let gid = settings.daemon.socket_group.as_ref().map(|g| g.gid);
    let listener = match control::bind(&settings.daemon.socket, gid).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("ecr-refresherd: {}", crate::escape::shown(&e.to_string()));
            return exit::FAILED;
        }
    };
    let Some(signals) = signals() else {
        eprintln!("ecr-refresherd: cannot install signal handlers");
        return exit::FAILED;
    };
    let now = SystemTime::now();
    let state = load_state(&settings).await;
    let s = Arc::clone(&settings);
    tokio::task::spawn_blocking(move || startup::remove_stray_temp_files(&s));
    let (changes_tx, changes_rx) = mpsc::channel(16);
    let watcher = match watch::spawn(watch_set(&settings, &config), changes_tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(error = %e, "cannot watch files; edits are picked up at the next refresh");
            None
        }
    };
    // The socket answers from the first instant: with what the daemon knows (every registry
    // pending), never an empty status that `status` would read as all well.
    let core = Core::new(Arc::clone(&settings), state, now);
    let (registries, targets) = core.snapshot(now);
    let (status_tx, status_rx) = snapshot::channel(Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        started_at: Some(now),
        registries,
        targets,
        ..Status::default()
    });
    let (requests_tx, requests_rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = snapshot::channel(false);
    let (credentials_tx, credentials_rx) = snapshot::channel(Arc::new(Credentials::new()));
    // Numeric grants at once; names resolve in the background (a hung NSS must not hold the start).
    let (grants_tx, grants_rx) = GrantsFeed::new(&settings);
    grants_tx.refresh(Arc::clone(&settings));
    let server = tokio::spawn(control::serve(
        listener,
        control::Role::Control,
        status_rx.clone(),
        credentials_rx.clone(),
        grants_rx.clone(),
        requests_tx.clone(),
        stop_rx.clone(),
    ));
    // The helper socket is a convenience: without it the control socket still serves root.
    let helper = match control::bind_helper(&settings.daemon.helper_socket).await {
        Ok(l) => Some(tokio::spawn(control::serve(
            l,
            control::Role::Helper,
            status_rx,
            credentials_rx,
            grants_rx,
            requests_tx,
            stop_rx,
        ))),
        Err(e) => {
            tracing::error!(
                "credential helper socket: {e}; only root gets credentials, over the control socket"
            );
            None
        }
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    tracing::info!(
        registries = settings.registries.len(),
        targets = settings.targets.len(),
        socket = %settings.daemon.socket.display(),
        "ecr-refresherd {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let daemon = Loop::new(
        core,
        config,
        cli.run_dir.clone(),
        status_tx,
        credentials_tx,
        grants_tx,
        watcher,
        ready_tx,
    );
    let main = tokio::spawn(daemon.run(changes_rx, requests_rx, signals));
    let code = ready_then_wait(main, ready_rx, start_timeout).await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Some(h) = helper {
        let _ = h.await;
        let _ = std::fs::remove_file(&settings.daemon.helper_socket);
    }
    let _ = std::fs::remove_file(&settings.daemon.socket);
    tracing::info!("stopped");
    code
}

/// The state is root's own small file, read before the loop; the targets are looked at off the
/// loop (a hung file system in one must not hold the start).
async fn load_state(settings: &Settings) -> State {
    let state_dir = settings.daemon.state_dir.clone();
    tokio::task::spawn_blocking(move || {
        let (state, warning) = State::load(&state_dir);
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
        state
    })
    .await
    .unwrap_or_default()
}

/// Tells systemd READY after the first round, or after the start timeout (a hung round must not
/// block the boot), then waits for the loop's exit code.
async fn ready_then_wait(
    mut main: tokio::task::JoinHandle<u8>,
    ready_rx: oneshot::Receiver<()>,
    start_timeout: Duration,
) -> u8 {
    let ended = tokio::select! {
        r = ready_rx => { if r.is_ok() { systemd::ready(None); } None }
        _ = tokio::time::sleep(start_timeout) => {
            tracing::warn!("the first round is taking longer than {}s; reporting ready anyway", start_timeout.as_secs());
            systemd::ready(Some("starting: the first round is still running"));
            None
        }
        r = &mut main => Some(r),
    };
    match ended {
        Some(r) => r.unwrap_or(exit::FAILED),
        None => main.await.unwrap_or(exit::FAILED),
    }
}
