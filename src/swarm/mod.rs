//! Docker Swarm services kept fresh: after each rotation, every service on a managed registry gets the new credential.
//!
//! A service created with `--with-registry-auth` keeps the credential it was created with; after
//! 12 hours any new task (a reschedule, a scale-up) cannot pull. On a manager node, this task
//! lists the services whenever the daemon's credentials change (and every `check_every`), and
//! sends each service whose image is on a managed registry (or alias) its current spec, unchanged,
//! with the new credential in `X-Registry-Auth`: the swarm stores it for the tasks it starts from
//! then on, and running tasks are left alone. Once per token per service; a version conflict
//! (someone else updated it meanwhile) is read again and retried while the image stays on the
//! same registry, so one registry's credential never goes with another's image.
//!
//! Whatever the Engine answers, the cost stays bounded: at most [`MAX_SERVICES`] services, names
//! as swarm allows them, a round's updates within `check_every` or [`MIN_ROUND`], one log line
//! per round for each kind of event, and no credential in any error it echoes.

pub(crate) mod engine;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};

use crate::config::{Settings, SwarmSettings};
use crate::daemon::schedule::{self, Policy};
use crate::status::{SwarmServiceStatus, SwarmStatus};
use crate::targets::consumer::Credentials;
use engine::{Engine, EngineError, Role, Service};

/// Attempts of one service's update when its version keeps moving.
const CONFLICT_ATTEMPTS: u32 = 3;
/// The most services kept fresh (the first by id); the status says how many more there are.
const MAX_SERVICES: usize = 5000;
/// A round's updates end by then, or by `check_every` when that is longer: the status is
/// published, and the next round goes on where this one stopped (those given the token are
/// skipped), whatever pace the Engine answers at.
const MIN_ROUND: Duration = Duration::from_secs(60);
/// The most services named in one log line.
const NAMED: usize = 10;
/// The user name of an ECR credential.
const USERNAME: &str = "AWS";

/// The swarm task, when `[swarm]` is enabled; restarted when its settings change.
pub struct Swarm {
    credentials: watch::Receiver<Arc<Credentials>>,
    changed: Arc<Notify>,
    running: Option<Running>,
}

struct Running {
    settings: SwarmSettings,
    hosts: BTreeSet<String>,
    status: Arc<Mutex<SwarmStatus>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Swarm {
    /// No task yet; it will follow `credentials` and notify `changed` when its status moves.
    pub fn new(credentials: watch::Receiver<Arc<Credentials>>, changed: Arc<Notify>) -> Swarm {
        Swarm {
            credentials,
            changed,
            running: None,
        }
    }

    /// Starts, keeps or stops the task as the config says.
    pub fn configure(&mut self, settings: &Settings) {
        let hosts = crate::portainer::managed_hosts(settings);
        let policy = Policy::from(&settings.daemon);
        let Some(s) = &settings.swarm else {
            self.running = None;
            return;
        };
        if let Some(r) = &self.running
            && r.settings == *s
            && r.hosts == hosts
        {
            return;
        }
        let status = Arc::new(Mutex::new(SwarmStatus {
            socket: s.socket.display().to_string(),
            role: "unreachable".into(),
            ..SwarmStatus::default()
        }));
        let task = tokio::spawn(run(
            s.clone(),
            hosts.clone(),
            self.credentials.clone(),
            Arc::clone(&status),
            Arc::clone(&self.changed),
            policy,
        ));
        self.running = Some(Running {
            settings: s.clone(),
            hosts,
            status,
            task: task.abort_handle(),
        });
    }

    /// The task's status, when enabled.
    pub fn status(&self) -> Option<SwarmStatus> {
        self.running.as_ref().map(|r| match r.status.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        })
    }
}

/// What the task remembers of one service between rounds.
#[derive(Debug, Default)]
struct Kept {
    /// The credential last stored in the service.
    sent: Option<Arc<Sent>>,
    status: SwarmServiceStatus,
}

/// A credential as sent, shared by the services of one registry that got it in one round.
#[derive(Debug)]
struct Sent {
    /// The token's `auth`, to tell when a new one came.
    auth: String,
    /// The password and the `X-Registry-Auth` it went in: the Engine may echo them later.
    password: String,
    header: String,
}

/// How one service's update ended.
#[derive(Debug, PartialEq, Eq)]
enum Updated {
    /// The swarm stored the credential.
    Done,
    /// Removed meanwhile: nothing to keep fresh.
    Gone,
    /// Its image moved to another registry meanwhile: nothing was sent with the new spec; the
    /// next round sends that registry's credential, if it is one of ours.
    Moved,
}

async fn run(
    settings: SwarmSettings,
    hosts: BTreeSet<String>,
    mut credentials: watch::Receiver<Arc<Credentials>>,
    status: Arc<Mutex<SwarmStatus>>,
    changed: Arc<Notify>,
    policy: Policy,
) {
    let mut kept: BTreeMap<String, Kept> = BTreeMap::new();
    let mut failures: u32 = 0;
    let mut last_role: Option<String> = None;
    loop {
        let creds = Arc::clone(&credentials.borrow_and_update());
        let mut st = match status.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let ok = round(&settings, &hosts, &creds, &mut kept, &mut st).await;
        if last_role.as_deref() != Some(st.role.as_str()) {
            match st.role.as_str() {
                "manager" => {
                    tracing::info!(socket = %settings.socket.display(), "swarm: a manager node; services on managed registries get each new token")
                }
                "worker" => tracing::info!(
                    "swarm: a worker node; services are updated from a manager, nothing to do here"
                ),
                "none" => tracing::info!("swarm: not in a swarm; nothing to do"),
                _ => {}
            }
            last_role = Some(st.role.clone());
        }
        let retry = if ok {
            failures = 0;
            None
        } else {
            failures = failures.saturating_add(1);
            let wall = SystemTime::now();
            let at = schedule::after_failure(wall, failures, None, &policy, rand::random());
            Some(at.duration_since(wall).unwrap_or(Duration::ZERO))
        };
        match status.lock() {
            Ok(mut s) => *s = st,
            Err(p) => *p.into_inner() = st,
        }
        changed.notify_one();
        let wake = retry.map_or(settings.check_every, |r| r.min(settings.check_every));
        tokio::select! {
            r = credentials.changed() => {
                if r.is_err() {
                    return; // the daemon is stopping
                }
            }
            _ = tokio::time::sleep(wake) => {}
        }
    }
}

/// One round: this node's role, then each matching service that has not had the current token.
/// `false` when something failed (retried with backoff).
async fn round(
    settings: &SwarmSettings,
    hosts: &BTreeSet<String>,
    creds: &Credentials,
    kept: &mut BTreeMap<String, Kept>,
    st: &mut SwarmStatus,
) -> bool {
    let engine = match Engine::connect(&settings.socket, secrets(creds, kept)).await {
        Ok(e) => e,
        Err(e) => {
            return fail(st, "unreachable", &e);
        }
    };
    st.api_version = Some(engine.version().to_string());
    let role = match engine.role().await {
        Ok(r) => r,
        Err(e) => return fail(st, "unreachable", &e),
    };
    st.role = match role {
        Role::Manager => "manager",
        Role::Worker => "worker",
        Role::None => "none",
    }
    .into();
    if role != Role::Manager {
        kept.clear();
        st.services.clear();
        st.last_error = None;
        st.last_check = Some(SystemTime::now());
        return true;
    }
    let services = match engine.services().await {
        Ok(s) => s,
        Err(e) => return fail(st, "manager", &e),
    };
    let previous_error = st.last_error.take();
    st.last_check = Some(SystemTime::now());
    // The services on a managed registry, by id, so that the same ones are kept when there are
    // more than MAX_SERVICES (each is a status row, metric series and request per token).
    let mut matching: Vec<(Service, String)> = services
        .into_iter()
        .filter_map(|s| {
            let host = image_host(&s.image).filter(|h| hosts.contains(h))?;
            Some((s, host))
        })
        .collect();
    matching.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    let total = matching.len();
    let mut notes = Vec::new();
    if total > MAX_SERVICES {
        matching.truncate(MAX_SERVICES);
        notes.push(format!(
            "{total} services are on managed registries, more than the {MAX_SERVICES} kept fresh: {} are left out",
            total - MAX_SERVICES
        ));
    }
    // Those whose last update failed go last: slow failures do not hold the others back.
    matching.sort_by_key(|(s, _)| {
        kept.get(&s.id)
            .is_some_and(|k| k.status.last_error.is_some())
    });
    let limit = settings.check_every.max(MIN_ROUND);
    let deadline = tokio::time::Instant::now() + limit;
    let mut left = 0usize;
    let mut ok = true;
    let mut seen = BTreeSet::new();
    let (mut updated, mut failed) = (Vec::new(), Vec::new());
    let mut sent: BTreeMap<String, Arc<Sent>> = BTreeMap::new();
    for (s, host) in matching {
        seen.insert(s.id.clone());
        let k = kept.entry(s.id.clone()).or_default();
        k.status.id = s.id.clone();
        k.status.name = s.name.clone();
        k.status.host = host.clone();
        let Some(token) = creds.get(&host) else {
            continue; // no valid token for it now: the next rotation brings one
        };
        let (Some(password), auth) = (token.password(), token.auth().to_string()) else {
            continue;
        };
        if k.sent.as_ref().is_some_and(|s| s.auth == auth) {
            continue;
        }
        if tokio::time::Instant::now() >= deadline {
            left += 1;
            continue;
        }
        // An update cut here may have landed or not: it is sent again next round.
        let Ok(outcome) =
            tokio::time::timeout_at(deadline, update(&engine, s, &host, &password)).await
        else {
            left += 1;
            continue;
        };
        match outcome {
            Ok(Updated::Done) => {
                let shared = sent.entry(host.clone()).or_insert_with(|| {
                    Arc::new(Sent {
                        header: engine::registry_auth(&host, USERNAME, &password),
                        auth,
                        password,
                    })
                });
                k.sent = Some(Arc::clone(shared));
                k.status.credential_expires_at = Some(token.expires_at);
                k.status.updates += 1;
                k.status.last_update = Some(SystemTime::now());
                k.status.last_error = None;
                updated.push(k.status.name.clone());
            }
            Ok(Updated::Gone) => {}
            Ok(Updated::Moved) => ok = false, // read again soon, with backoff
            Err(e) => {
                ok = false;
                let text = e.to_string();
                if k.status.last_error.as_deref() != Some(text.as_str()) {
                    failed.push(format!("{}: {text}", k.status.name));
                }
                k.status.last_error = Some(text);
            }
        }
    }
    if left > 0 {
        ok = false;
        notes.push(format!(
            "the Engine is slow: a round's updates end after {}; {left} services are left for the next round",
            humantime::format_duration(limit)
        ));
    }
    if !notes.is_empty() {
        let text = notes.join("; ");
        if previous_error.as_deref() != Some(text.as_str()) {
            tracing::warn!(error = %text, "swarm: not every service was updated this round");
        }
        st.last_error = Some(text);
    }
    // One line per round for each kind of event, whatever the number of services.
    if !updated.is_empty() {
        tracing::info!(count = updated.len(), services = %named(&updated), "swarm services given the new token");
    }
    if !failed.is_empty() {
        tracing::warn!(count = failed.len(), failures = %named(&failed), "swarm service updates failed");
    }
    kept.retain(|id, _| seen.contains(id));
    st.services = kept.values().map(|k| k.status.clone()).collect();
    ok
}

/// The first few of `items`, then how many more.
fn named(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > NAMED {
        s += &format!("; and {} more", items.len() - NAMED);
    }
    s
}

/// Every credential the Engine could echo: each current password, and each one last sent to a
/// service, with the `X-Registry-Auth` it goes in.
fn secrets(creds: &Credentials, kept: &BTreeMap<String, Kept>) -> Vec<String> {
    let mut out = BTreeSet::new();
    for (host, token) in creds {
        if let Some(pw) = token.password() {
            out.insert(engine::registry_auth(host, USERNAME, &pw));
            out.insert(pw);
        }
    }
    let mut headers = BTreeSet::new();
    for s in kept.values().filter_map(|k| k.sent.as_ref()) {
        if headers.insert(s.header.as_str()) {
            out.insert(s.password.clone());
            out.insert(s.header.clone());
        }
    }
    out.into_iter().collect()
}

/// One service's update, read again and retried when its version moved meanwhile. Only while
/// it is the same service with its image on the same registry: the credential read for `host`
/// never goes with a spec whose image is elsewhere (the swarm would send it there on each pull).
async fn update(
    engine: &Engine,
    mut s: Service,
    host: &str,
    password: &str,
) -> Result<Updated, EngineError> {
    let mut attempt = 1;
    loop {
        match engine.update(&s, host, USERNAME, password).await {
            Ok(()) => return Ok(Updated::Done),
            Err(e) if e.is_conflict() && attempt < CONFLICT_ATTEMPTS => {
                attempt += 1;
                let Some(fresh) = engine.service(&s.id).await? else {
                    return Ok(Updated::Gone);
                };
                if fresh.id != s.id || image_host(&fresh.image).as_deref() != Some(host) {
                    return Ok(Updated::Moved);
                }
                s = fresh;
            }
            Err(e) => return Err(e),
        }
    }
}

fn fail(st: &mut SwarmStatus, role: &str, e: &EngineError) -> bool {
    let text = e.to_string();
    if st.last_error.as_deref() != Some(text.as_str()) {
        tracing::warn!(error = %text, "swarm: cannot list services");
    }
    st.role = role.into();
    st.last_error = Some(text);
    false
}

/// The registry host of a service's image, lower-cased; `None` when it does not parse.
fn image_host(image: &str) -> Option<String> {
    crate::doctor::reference::parse(image)
        .ok()
        .map(|r| r.host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_hosts() {
        assert_eq!(
            image_host("111111111111.dkr.ecr.us-east-1.amazonaws.com/app:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef").as_deref(),
            Some("111111111111.dkr.ecr.us-east-1.amazonaws.com")
        );
        assert_eq!(image_host("nginx:1").as_deref(), Some("docker.io"));
        assert_eq!(
            image_host("Mirror.Internal:5000/app").as_deref(),
            Some("mirror.internal:5000")
        );
        assert_eq!(image_host(""), None);
    }
}
