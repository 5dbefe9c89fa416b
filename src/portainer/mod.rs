//! Portainer's registry records kept fresh through its API, one task per instance.
//!
//! Portainer never reads a `config.json`: its pulls, stack deploys and webhooks use the
//! credentials in its own registry records. Each configured instance gets a task that is fed the
//! daemon's credentials ([`Credentials`]) whenever they change, sets the password of each
//! record whose host got a new token (one PUT per record per rotation), reads the records back
//! every `check_every` to restore any that someone changed, and retries failures with the
//! daemon's backoff. A Portainer that is down or slow only delays its own task.

mod api;
mod instance;
pub(crate) mod records;
mod tls;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};

use crate::config::{PortainerSettings, Settings};
use crate::daemon::schedule::{self, Policy};
use crate::status::PortainerStatus;
use crate::targets::consumer::Credentials;

pub use instance::Instance;

/// The managed registry hosts and their aliases: what a record's URL must name to be ours.
pub fn managed_hosts(settings: &Settings) -> BTreeSet<String> {
    settings
        .registries
        .iter()
        .flat_map(|r| r.names())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The daemon's Portainer tasks, restarted when their settings change.
pub struct Portainers {
    credentials: watch::Receiver<Arc<Credentials>>,
    changed: Arc<Notify>,
    running: Vec<Running>,
}

struct Running {
    settings: PortainerSettings,
    hosts: BTreeSet<String>,
    policy: Policy,
    status: Arc<Mutex<PortainerStatus>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Portainers {
    /// No tasks yet; each task will follow `credentials` (what the daemon holds).
    pub fn new(credentials: watch::Receiver<Arc<Credentials>>) -> Portainers {
        Portainers {
            credentials,
            changed: Arc::new(Notify::new()),
            running: Vec::new(),
        }
    }

    /// Starts, keeps or stops tasks so that one runs per configured instance. A task whose
    /// instance, hosts and backoff are unchanged keeps running (and what it knows).
    pub fn configure(&mut self, settings: &Settings) {
        let hosts = managed_hosts(settings);
        let policy = Policy::from(&settings.daemon);
        let mut old = std::mem::take(&mut self.running);
        for p in &settings.portainers {
            let same = old
                .iter()
                .position(|r| r.settings == *p && r.hosts == hosts && r.policy == policy);
            match same {
                Some(i) => self.running.push(old.swap_remove(i)),
                None => self
                    .running
                    .push(self.start(p.clone(), hosts.clone(), policy)),
            }
        }
        drop(old);
        self.changed.notify_one();
    }

    fn start(
        &self,
        settings: PortainerSettings,
        hosts: BTreeSet<String>,
        policy: Policy,
    ) -> Running {
        let status = Arc::new(Mutex::new(PortainerStatus {
            url: settings.url.clone(),
            ..PortainerStatus::default()
        }));
        let instance = Instance::new(settings.clone(), hosts.clone());
        let task = tokio::spawn(run(
            instance,
            self.credentials.clone(),
            Arc::clone(&status),
            Arc::clone(&self.changed),
            policy,
        ));
        Running {
            settings,
            hosts,
            policy,
            status,
            task: task.abort_handle(),
        }
    }

    /// Every instance's status, in config order.
    pub fn statuses(&self) -> Vec<PortainerStatus> {
        self.running
            .iter()
            .map(|r| match r.status.lock() {
                Ok(s) => s.clone(),
                Err(p) => p.into_inner().clone(),
            })
            .collect()
    }

    /// Notified whenever a task's status changed.
    pub fn changed(&self) -> Arc<Notify> {
        Arc::clone(&self.changed)
    }
}

/// One instance's task: a round at start, on every change of credentials, every `check_every`
/// (reading the records back), and after a failure with the daemon's backoff.
async fn run(
    mut instance: Instance,
    mut credentials: watch::Receiver<Arc<Credentials>>,
    status: Arc<Mutex<PortainerStatus>>,
    changed: Arc<Notify>,
    policy: Policy,
) {
    let every = instance.settings().check_every;
    let mut next_check = tokio::time::Instant::now();
    let mut failures: u32 = 0;
    loop {
        let check = tokio::time::Instant::now() >= next_check;
        let creds = Arc::clone(&credentials.borrow_and_update());
        let outcome = instance.round(Some(&creds), check).await;
        let now = tokio::time::Instant::now();
        if check && instance.status().last_check.is_some() {
            next_check = now + every;
        }
        let retry_at = if outcome.ok {
            failures = 0;
            None
        } else {
            failures = failures.saturating_add(1);
            let wall = SystemTime::now();
            let at = schedule::after_failure(wall, failures, None, &policy, rand::random());
            Some(now + at.duration_since(wall).unwrap_or(Duration::ZERO))
        };
        {
            let st = instance.status_mut();
            st.consecutive_failures = failures;
            st.next_attempt = Some(
                SystemTime::now()
                    + retry_at
                        .unwrap_or(next_check)
                        .min(next_check)
                        .saturating_duration_since(now),
            );
        }
        match status.lock() {
            Ok(mut s) => *s = instance.status().clone(),
            Err(p) => *p.into_inner() = instance.status().clone(),
        }
        changed.notify_one();
        let wake = retry_at.map_or(next_check, |r| r.min(next_check));
        tokio::select! {
            r = credentials.changed() => {
                if r.is_err() {
                    return; // the daemon is stopping
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}
