//! The control and helper sockets: a Unix-socket server and client speaking JSON lines (status,
//! refresh, reload; and a registry's credential, for root and whom the registry grants).

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, FileType, Mode};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::safe_fs::{self, FileError};
use crate::startup::StartupError;
use crate::status::Status;
use crate::targets::consumer::Credentials;

use super::grants::Grants;

/// A request line is small; anything longer is a hostile or broken client.
const MAX_REQUEST: u64 = 4096;
/// A client gets this long to send its request line (our client sends it at once).
const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// ... and this long to take our answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once for one uid other than root; more are refused at once.
const MAX_PER_UID: usize = 8;
/// Connections served at once for all uids but root together; root's are never counted nor
/// refused, so `status` and `reload` answer whatever the members of `socket_group` do.
const MAX_OTHERS: usize = 128;
/// Refused connections are logged at most this often.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// How long a `refresh` or `reload` may take before the client is told so.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(90);

/// A client's request, one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// The daemon's status snapshot.
    Status,
    /// Refresh every registry, or one.
    Refresh {
        /// One registry host; all when absent.
        #[serde(default)]
        host: Option<String>,
    },
    /// Re-read the config and say whether it was applied.
    Reload,
    /// A registry's credential from the daemon's memory (root only; for the docker credential
    /// helper and the kubelet credential provider).
    Credential {
        /// The registry: a host, or a server URL or image reference naming it.
        host: String,
    },
    /// The registries (hosts and aliases) whose credential the caller may have and the daemon
    /// holds now (docker's `GetAll` with the helper as `credsStore`: `list`, then `get` each).
    List,
    /// The status as Prometheus text (what `metrics_file` holds).
    Metrics,
}

/// The outcome of refreshing one registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshResult {
    /// The registry host.
    pub host: String,
    /// Whether it holds a valid token now.
    pub ok: bool,
    /// When that token expires (RFC 3339).
    pub expires_at: Option<String>,
    /// Why not, when it failed.
    pub error: Option<String>,
}

/// The daemon's answer, one JSON line. Not `Debug`: it may hold a secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Response {
    /// The answer to `status`.
    Status {
        /// The snapshot.
        status: Box<Status>,
    },
    /// The answer to `refresh`.
    Refresh {
        /// One per registry host.
        results: Vec<RefreshResult>,
    },
    /// The answer to `reload`: applied or not, and why.
    Reload {
        /// Whether the new config was applied.
        ok: bool,
        /// What happened, or why it was rejected.
        message: String,
    },
    /// The answer to `credential`: a secret, for root only.
    Credential {
        /// The registry host the credential is for.
        host: String,
        /// Always `AWS` for ECR.
        username: String,
        /// The token's password.
        secret: String,
        /// When it expires (RFC 3339).
        expires_at: String,
    },
    /// The answer to `metrics`: the Prometheus text exposition.
    Metrics {
        /// The exposition, format 0.0.4.
        text: String,
    },
    /// The answer to `list`: hosts only, no secret.
    List {
        /// The registries the caller may get now, sorted.
        hosts: Vec<String>,
    },
    /// The request could not be served.
    Error {
        /// Why.
        message: String,
    },
}

/// What the server asks of the daemon's main loop.
#[derive(Debug)]
pub enum Action {
    /// A client asks for a refresh.
    Refresh {
        /// One registry host; all when absent.
        host: Option<String>,
        /// Where the per-host outcome goes.
        reply: oneshot::Sender<Result<Vec<RefreshResult>, UnknownHost>>,
    },
    /// A client asks for a reload.
    Reload {
        /// Where the verdict goes.
        reply: oneshot::Sender<Result<String, StartupError>>,
    },
}

/// A `refresh` named a host that is not a configured registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a configured registry")]
pub struct UnknownHost(pub String);

/// Why a request line is not understood.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not one newline-terminated line of at most 4096 bytes.
    #[error("the request must be one JSON line of at most 4096 bytes")]
    NotALine,
    /// Not UTF-8.
    #[error("the request is not UTF-8")]
    NotUtf8,
    /// Not a request we know.
    #[error("bad request: {0}")]
    Bad(#[from] serde_json::Error),
}

/// Why the control socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A live daemon answers on that socket.
    #[error("{}: another ecr-refresherd is already answering on this socket; stop it first", .0.display())]
    InUse(PathBuf),
    /// Something that is not a socket is at that path.
    #[error("{}: exists and is not a socket; remove it or choose another `socket`", .0.display())]
    NotASocket(PathBuf),
    /// A directory on the way lets someone other than root swap the socket for a link.
    /// The socket's directory is not root's alone.
    #[error("{}: refusing the socket directory: {why}", path.display())]
    UnsafeDirectory {
        /// The socket path.
        path: PathBuf,
        /// What is wrong, and the fix.
        why: String,
    },
    /// A system call failed.
    #[error("{}: {op}: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What we were doing.
        op: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Where a refusal points the admin.
const SAFE_SOCKET: &str = "or set `socket` to a path in a directory only root can write (by default /run/ecr-refresherd/status.sock)";

/// Binds the control socket with its final owner, group and mode (0660 root:group, group root when
/// none is configured), replacing a stale socket file but refusing to steal one a live daemon
/// answers on.
///
/// Everything happens through the descriptor of the socket's directory, which no one but root can
/// write (else it is refused): the socket is bound through `/proc/self/fd/<dir>/<name>`, born with
/// its final mode (umask), chowned with `fchownat(AT_SYMLINK_NOFOLLOW)`; nothing is ever chmodded
/// by path, so a link swapped in for the socket cannot redirect a chmod.
pub async fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, BindError> {
    bind_mode(path, group, 0o117).await
}

/// Binds the helper socket: 0666, anyone may connect; each request is answered by the caller's
/// uid and the registries' grants, and only credential requests are.
pub async fn bind_helper(path: &Path) -> Result<UnixListener, BindError> {
    bind_mode(path, None, 0o111).await
}

async fn bind_mode(path: &Path, group: Option<u32>, umask: u32) -> Result<UnixListener, BindError> {
    let io = |op: &'static str| {
        move |source| BindError::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    let absolute = std::path::absolute(path).map_err(io("resolve"))?;
    let (Some(dir), Some(name)) = (absolute.parent(), absolute.file_name()) else {
        return Err(io("bind")(std::io::ErrorKind::InvalidInput.into()));
    };
    let dir = safe_fs::open_private_dir(&absolute).map_err(|e| match e {
        FileError::Refused { reason, .. } => BindError::UnsafeDirectory {
            path: path.to_path_buf(),
            why: format!("{reason}; {SAFE_SOCKET}"),
        },
        other => BindError::Io {
            path: dir.to_path_buf(),
            op: "open directory",
            source: std::io::Error::other(other.to_string()),
        },
    })?;
    // The directory by its descriptor (short, and it cannot be renamed under us); the full path
    // when /proc is missing or the name too long for a socket address (equally safe: every
    // directory on the way is root's).
    let via_fd = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    let at = if via_fd.as_os_str().len() < 100 && Path::new("/proc/self/fd").is_dir() {
        via_fd
    } else {
        absolute.clone()
    };
    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Socket => {
            if UnixStream::connect(&at).await.is_ok() {
                return Err(BindError::InUse(path.to_path_buf()));
            }
            rustix::fs::unlinkat(&dir, name, AtFlags::empty())
                .map_err(|e| io("remove stale socket")(e.into()))?;
        }
        Ok(_) => return Err(BindError::NotASocket(path.to_path_buf())),
        Err(Errno::NOENT) => {}
        Err(e) => return Err(io("stat")(e.into())),
    }
    // Born 0660 root:root (this runs at startup, before the daemon creates any other file), then
    // given its group: until then only root's group may connect.
    let old = rustix::process::umask(Mode::from_raw_mode(umask));
    let bound = UnixListener::bind(&at);
    rustix::process::umask(old);
    let listener = bound.map_err(io("bind"))?;
    if rustix::process::geteuid().is_root() {
        rustix::fs::chownat(
            &dir,
            name,
            Some(rustix::fs::Uid::ROOT),
            Some(rustix::fs::Gid::from_raw(group.unwrap_or(0))),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io("chown")(e.into()))?;
    }
    Ok(listener)
}

/// Who holds connections now, by peer uid (root never counted).
#[derive(Debug, Default)]
struct Budget {
    per_uid: HashMap<u32, usize>,
    others: usize,
    refused: u64,
    last_logged: Option<Instant>,
    /// When each uid but root last asked for a refresh or a reload.
    last_action: HashMap<u32, Instant>,
    /// Denied credential requests not yet logged, and when the last line was written.
    denied: u64,
    denied_logged: Option<Instant>,
}

/// A uid other than root may ask for one refresh or reload this often: each one is work for the
/// loop and lines in the log.
const ACTION_SPACING: Duration = Duration::from_secs(1);

/// Whether `uid` may ask for an action now (root always may).
fn may_act(budget: &Mutex<Budget>, uid: Option<u32>) -> bool {
    if uid == Some(0) {
        return true;
    }
    let uid = uid.unwrap_or(u32::MAX);
    let now = Instant::now();
    let mut b = budget.lock().unwrap_or_else(|e| e.into_inner());
    b.last_action
        .retain(|_, at| now.duration_since(*at) < ACTION_SPACING);
    if b.last_action.contains_key(&uid) {
        return false;
    }
    b.last_action.insert(uid, now);
    true
}

/// One admitted connection of a uid other than root; gives its place back when dropped.
struct Slot {
    budget: Arc<Mutex<Budget>>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut b = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        b.others = b.others.saturating_sub(1);
        if let Some(n) = b.per_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                b.per_uid.remove(&self.uid);
            }
        }
    }
}

/// Admits a connection from `uid` (`None`: the kernel did not say) or says why not.
/// Root is always admitted and never counted.
fn admit(
    budget: &Arc<Mutex<Budget>>,
    uid: Option<u32>,
    role: Role,
) -> Result<Option<Slot>, String> {
    if uid == Some(0) {
        return Ok(None);
    }
    // A peer whose credentials are unknown shares one budget with every other such peer.
    let uid = uid.unwrap_or(u32::MAX);
    let mut b = budget.lock().unwrap_or_else(|e| e.into_inner());
    let mine = b.per_uid.get(&uid).copied().unwrap_or(0);
    let why = if mine >= MAX_PER_UID {
        format!("too many connections from uid {uid} (at most {MAX_PER_UID} at once)")
    } else if b.others >= MAX_OTHERS {
        format!("too many connections from users other than root (at most {MAX_OTHERS} at once)")
    } else {
        b.others += 1;
        *b.per_uid.entry(uid).or_insert(0) += 1;
        return Ok(Some(Slot {
            budget: Arc::clone(budget),
            uid,
        }));
    };
    b.refused += 1;
    let now = Instant::now();
    if b.last_logged
        .is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_INTERVAL)
    {
        tracing::warn!(
            refused = b.refused,
            "{} socket: {why}; refusing the excess (logged at most once a minute)",
            match role {
                Role::Control => "control",
                Role::Helper => "helper",
            }
        );
        b.refused = 0;
        b.last_logged = Some(now);
    }
    Err(why)
}

/// Serves the socket until `shutdown` flips to true.
///
/// Every connection is accepted at once (a full backlog would queue root's `status` behind a
/// flood); each uid but root may hold a few at once, the excess is answered with an error and
/// closed, and an idle client is cut after a second.
pub async fn serve(
    listener: UnixListener,
    role: Role,
    status: watch::Receiver<Status>,
    credentials: watch::Receiver<Arc<Credentials>>,
    grants: watch::Receiver<Arc<Grants>>,
    actions: mpsc::Sender<Action>,
    mut shutdown: watch::Receiver<bool>,
) {
    let budget = Arc::new(Mutex::new(Budget::default()));
    let turned_away = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.changed() => return,
        };
        let stream = match conn {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                // Out of file descriptors, say: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let cred = stream.peer_cred().ok();
        let uid = cred.as_ref().map(|c| c.uid());
        // The caller's groups, as the kernel has them (primary first).
        let gids: Vec<u32> = cred
            .map(|c| c.gid())
            .into_iter()
            .chain(peer_groups(&stream))
            .collect();
        // The helper socket is anyone's: a caller granted nothing is answered at once, without
        // taking a place that a granted user may need.
        if role == Role::Helper && !uid.is_some_and(|u| grants.borrow().anything_for(u, &gids)) {
            note_denied(&budget, uid, "(any registry)");
            turn_away(stream, &turned_away);
            continue;
        }
        let slot = match admit(&budget, uid, role) {
            Ok(slot) => slot,
            Err(message) => {
                // Never wait on a refused client: what does not fit the socket buffer is dropped.
                let mut out = serde_json::to_vec(&Response::Error { message }).unwrap_or_default();
                out.push(b'\n');
                let _ = stream.try_write(&out);
                continue;
            }
        };
        let status = status.clone();
        let held = Held {
            credentials: credentials.clone(),
            grants: grants.clone(),
        };
        let actions = actions.clone();
        let budget = Arc::clone(&budget);
        tokio::spawn(async move {
            handle(stream, role, status, held, actions, &budget, uid, gids).await;
            drop(slot);
        });
    }
}

/// Which socket a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The control socket (root and `socket_group`): every request.
    Control,
    /// The helper socket (anyone): credential requests only.
    Helper,
}

/// What the daemon holds and who may have it, as the socket's tasks read it.
#[derive(Clone)]
struct Held {
    credentials: watch::Receiver<Arc<Credentials>>,
    grants: watch::Receiver<Arc<Grants>>,
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    stream: UnixStream,
    role: Role,
    status: watch::Receiver<Status>,
    held: Held,
    actions: mpsc::Sender<Action>,
    budget: &Mutex<Budget>,
    uid: Option<u32>,
    gids: Vec<u32>,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST + 1));
    let mut line = Vec::new();
    let response = match tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line))
        .await
    {
        Err(_) => Response::Error {
            message: format!("no request line within {} s", READ_TIMEOUT.as_secs()),
        },
        Ok(Err(e)) => Response::Error {
            message: format!("cannot read the request: {e}"),
        },
        Ok(Ok(_)) => match parse_request(&line) {
            Err(e) => Response::Error {
                message: e.to_string(),
            },
            Ok(Request::Credential { host }) => credential(&host, &held, uid, gids, budget),
            Ok(Request::List) => list(&held, uid, &gids),
            Ok(_) if role == Role::Helper => Response::Error {
                message: "this socket answers credential requests only; use the control socket"
                    .into(),
            },
            Ok(req)
                if !matches!(req, Request::Status | Request::Metrics) && !may_act(budget, uid) =>
            {
                Response::Error {
                    message: "at most one refresh or reload a second for each user; try again"
                        .into(),
                }
            }
            Ok(req) => answer(req, &status, &actions).await,
        },
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    let _ = tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&out)).await;
}

/// Connections of callers granted nothing being answered at once; beyond, they are just closed.
const MAX_TURNED_AWAY: usize = 256;

/// Answers "not found" to a caller granted nothing, then reads (and drops) its request for up to
/// the read timeout, so the close does not reset the connection before the client reads the
/// answer. Holds no place of the granted callers.
fn turn_away(stream: UnixStream, count: &Arc<std::sync::atomic::AtomicUsize>) {
    if count.fetch_add(1, Ordering::Relaxed) >= MAX_TURNED_AWAY {
        count.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let count = Arc::clone(count);
    tokio::spawn(async move {
        let mut out = serde_json::to_vec(&Response::Error {
            message: NOT_FOUND.into(),
        })
        .unwrap_or_default();
        out.push(b'\n');
        let (read, mut write) = stream.into_split();
        let _ = tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&out)).await;
        let mut sink = Vec::new();
        let mut reader = BufReader::new(read.take(MAX_REQUEST + 1));
        let _ = tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut sink)).await;
        count.fetch_sub(1, Ordering::Relaxed);
    });
}

/// How often a summary of denied credential requests is logged.
const DENIED_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Credential requests on the sockets since the process started, by result (for the metrics).
struct RequestCounts {
    answered: AtomicU64,
    not_found: AtomicU64,
    denied: AtomicU64,
}

static REQUESTS: RequestCounts = RequestCounts {
    answered: AtomicU64::new(0),
    not_found: AtomicU64::new(0),
    denied: AtomicU64::new(0),
};

/// The credential requests answered so far, by result.
pub fn request_counts() -> crate::status::HelperCounts {
    crate::status::HelperCounts {
        answered: REQUESTS.answered.load(Ordering::Relaxed),
        not_found: REQUESTS.not_found.load(Ordering::Relaxed),
        denied: REQUESTS.denied.load(Ordering::Relaxed),
    }
}

/// Logs a denied credential request: the first one, then at most one summary a minute for the
/// socket, whatever the number of callers and uids.
fn note_denied(budget: &Mutex<Budget>, uid: Option<u32>, host: &str) {
    REQUESTS.denied.fetch_add(1, Ordering::Relaxed);
    let mut b = budget.lock().unwrap_or_else(|e| e.into_inner());
    b.denied += 1;
    let now = Instant::now();
    if b.denied_logged
        .is_some_and(|t| now.duration_since(t) < DENIED_LOG_INTERVAL)
    {
        return;
    }
    let shown = crate::escape::shown(host);
    let cut: String = shown.chars().take(253).collect();
    tracing::warn!(
        uid = uid.map_or_else(|| "unknown".to_string(), |u| u.to_string()),
        registry = %cut,
        denied = b.denied,
        "credential request denied: no grant for this user (users/groups of the [[registry]]); {} denied since the last such line (logged at most once a minute)",
        b.denied
    );
    b.denied = 0;
    b.denied_logged = Some(now);
}

/// The supplementary groups of the peer (`SO_PEERGROUPS`, Linux 4.13+); none if unknown.
fn peer_groups(stream: &UnixStream) -> Vec<u32> {
    let mut groups = vec![0u32; 64];
    for _ in 0..2 {
        let mut len = (groups.len() * std::mem::size_of::<u32>()) as libc::socklen_t;
        // SAFETY: the buffer is valid for `len` bytes; the kernel writes at most that and says
        // how much it wrote (or needs, with ERANGE).
        let r = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<u32>();
        if r == 0 {
            groups.truncate(n.min(groups.len()));
            return groups;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) || n > 65_536 {
            return Vec::new();
        }
        groups = vec![0u32; n];
    }
    Vec::new()
}

/// What the credential helper protocol says for a host it has nothing for.
pub const NOT_FOUND: &str = "credentials not found in native keychain";

/// A registry's credential, for root and whom the registry's grants name. Anyone else gets "not
/// found", like an unknown host (nothing tells them which hosts exist), and is logged (at most
/// one request a second per uid).
fn credential(
    asked: &str,
    held: &Held,
    uid: Option<u32>,
    gids: Vec<u32>,
    budget: &Mutex<Budget>,
) -> Response {
    let not_found = Response::Error {
        message: NOT_FOUND.into(),
    };
    let host = registry_of(asked);
    // Set lookups only (names were resolved with the config): the same work whether the
    // registry exists or not.
    let grants = Arc::clone(&held.grants.borrow());
    let allowed = uid.is_some_and(|u| grants.allows(&host, u, &gids));
    if !allowed {
        note_denied(budget, uid, &host);
        return not_found;
    }
    let creds = Arc::clone(&held.credentials.borrow());
    // The grants and the credentials are two snapshots, published one after the other: while a
    // reload moves an alias to another registry, the name may still hold the old registry's
    // token under the new one's grants (or the reverse). Only the token of the registry whose
    // grants were checked is handed out.
    let registry = grants.registry_of(&host).and_then(|r| creds.get(r));
    let valid = creds
        .get(&host)
        .filter(|t| registry.is_some_and(|r| r.auth() == t.auth()))
        .filter(|t| t.expires_at > std::time::SystemTime::now());
    match valid.and_then(|t| Some((t.password()?, t.expires_at))) {
        Some((secret, expires_at)) => {
            REQUESTS.answered.fetch_add(1, Ordering::Relaxed);
            Response::Credential {
                host,
                username: crate::portainer::records::USERNAME.to_string(),
                secret,
                expires_at: crate::status::rfc3339(expires_at),
            }
        }
        None => {
            REQUESTS.not_found.fetch_add(1, Ordering::Relaxed);
            not_found
        }
    }
}

/// The hosts `uid` may have a credential for and the daemon holds a valid one for.
fn list(held: &Held, uid: Option<u32>, gids: &[u32]) -> Response {
    let Some(uid) = uid else {
        return Response::List { hosts: Vec::new() };
    };
    let grants = Arc::clone(&held.grants.borrow());
    let creds = Arc::clone(&held.credentials.borrow());
    let now = std::time::SystemTime::now();
    let hosts = creds
        .iter()
        .filter(|(h, t)| t.expires_at > now && grants.allows(h, uid, gids))
        .map(|(h, _)| h.clone())
        .collect();
    Response::List { hosts }
}

/// The registry host a server URL (`https://H/v2/`), an image (`H/repo:tag`) or a host names,
/// lower case; docker's rule: a first path component without `.`, `:` or `localhost` is
/// Docker Hub's repository, not a host.
pub fn registry_of(text: &str) -> String {
    let t = text.trim();
    let t = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"))
        .unwrap_or(t);
    let first = t.split('/').next().unwrap_or(t);
    // `user@host`: URL parsers (docker's, kubelet's) take the server after the '@'; a digest's
    // '@' only ever follows a '/'. Such a name is no registry of ours.
    if first.contains('@') {
        return String::new();
    }
    let has_path = t.contains('/');
    if has_path && !(first.contains('.') || first.contains(':') || first == "localhost") {
        return "docker.io".to_string();
    }
    first.to_ascii_lowercase()
}

/// Parses one request line as read from a client (at most 4096 bytes, ending in a newline).
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    if line.len() as u64 > MAX_REQUEST || line.last() != Some(&b'\n') {
        return Err(RequestError::NotALine);
    }
    let text = std::str::from_utf8(line).map_err(|_| RequestError::NotUtf8)?;
    Ok(serde_json::from_str(text.trim())?)
}

async fn answer(
    req: Request,
    status: &watch::Receiver<Status>,
    actions: &mpsc::Sender<Action>,
) -> Response {
    match req {
        // Answered without the loop, in `handle`.
        Request::Credential { .. } | Request::List => Response::Error {
            message: NOT_FOUND.into(),
        },
        Request::Status => Response::Status {
            status: Box::new(status.borrow().clone()),
        },
        Request::Metrics => {
            let mut now = status.borrow().clone();
            now.helper = request_counts();
            Response::Metrics {
                text: crate::metrics::render(&now),
            }
        }
        Request::Refresh { host } => {
            let (reply, rx) = oneshot::channel();
            if actions.send(Action::Refresh { host, reply }).await.is_err() {
                return Response::Error {
                    message: "the daemon is stopping".into(),
                };
            }
            match tokio::time::timeout(ACTION_TIMEOUT, rx).await {
                Ok(Ok(Ok(results))) => Response::Refresh { results },
                Ok(Ok(Err(e))) => Response::Error {
                    message: e.to_string(),
                },
                Ok(Err(_)) => Response::Error {
                    message: "the daemon is stopping".into(),
                },
                Err(_) => Response::Error {
                    message: "the refresh did not finish in time".into(),
                },
            }
        }
        Request::Reload => {
            let (reply, rx) = oneshot::channel();
            if actions.send(Action::Reload { reply }).await.is_err() {
                return Response::Error {
                    message: "the daemon is stopping".into(),
                };
            }
            match tokio::time::timeout(ACTION_TIMEOUT, rx).await {
                Ok(Ok(Ok(message))) => Response::Reload { ok: true, message },
                Ok(Ok(Err(e))) => Response::Reload {
                    ok: false,
                    message: e.to_string(),
                },
                Ok(Err(_)) => Response::Error {
                    message: "the daemon is stopping".into(),
                },
                Err(_) => Response::Error {
                    message: "the reload did not finish in time".into(),
                },
            }
        }
    }
}

/// Connects, waiting while the listen backlog is full (the kernel says EAGAIN then: the daemon
/// is there, only busy), up to the caller's deadline.
async fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    let mut pause = Duration::from_millis(5);
    loop {
        match UnixStream::connect(socket).await {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Why a client could not ask the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon is there but did not take the connection in time (a flood of connections).
    #[error("ecr-refresherd on {} is too busy to take the connection; try again", .0.display())]
    Busy(PathBuf),
    /// Nothing answers on the socket.
    #[error("no ecr-refresherd answers on {}: {source}", path.display())]
    NoDaemon {
        /// The socket path.
        path: PathBuf,
        /// Why the connection failed.
        #[source]
        source: std::io::Error,
    },
    /// The daemon is there, but the socket's mode or group keeps this user out.
    #[error("ecr-refresherd is running on {}, but this user may not ask it (the socket is root's and `socket_group`'s): run it as root (sudo), or add the user to the group set as socket_group in [daemon]", .0.display())]
    Denied(PathBuf),
    /// What listens on the socket is not root's, nor this user's: not the daemon.
    #[error("{} is served by uid {uid}, not by root: that is not ecr-refresherd, and its answer is not read (check `socket` in [daemon], --socket and ECR_REFRESHERD_SOCKET)", path.display())]
    NotDaemon {
        /// The socket path.
        path: PathBuf,
        /// Who listens on it.
        uid: u32,
    },
    /// The answer could not be read or understood.
    #[error("the daemon's answer: {0}")]
    Protocol(String),
}

/// Sends one request and reads the answer.
pub async fn request(
    socket: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let no_daemon = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::PermissionDenied => ClientError::Denied(socket.to_path_buf()),
        _ => ClientError::NoDaemon {
            path: socket.to_path_buf(),
            source,
        },
    };
    let mut stream = tokio::time::timeout(Duration::from_secs(5), connect(socket))
        .await
        .map_err(|_| ClientError::Busy(socket.to_path_buf()))?
        .map_err(no_daemon)?;
    // The daemon runs as root. A listener of another user's (on a socket path in a directory
    // they can write, or named by a hostile ECR_REFRESHERD_SOCKET) is not asked: its answers
    // would be taken for the daemon's (a reload "applied", a credential). This user's own
    // listener is its own business (a daemon run without root, the tests).
    let me = rustix::process::geteuid().as_raw();
    match stream.peer_cred() {
        Ok(c) if c.uid() == 0 || c.uid() == me => {}
        Ok(c) => {
            return Err(ClientError::NotDaemon {
                path: socket.to_path_buf(),
                uid: c.uid(),
            });
        }
        Err(e) => return Err(ClientError::Protocol(format!("who listens: {e}"))),
    }
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    // A daemon that answers before reading (a caller it turns away) may have closed its side:
    // its answer is still there to read.
    let _ = stream.write_all(&line).await;
    // Whatever answers on that path is read up to a bound: a credential is a few KB, a status
    // at most a few MB.
    let limit = match req {
        Request::Credential { .. } => 64 * 1024,
        // Hosts of at most 255 bytes, a few thousand registries and aliases.
        Request::List => 4 * 1024 * 1024,
        _ => 64 * 1024 * 1024,
    };
    let mut reader = BufReader::new(stream.take(limit));
    let mut answer = String::new();
    tokio::time::timeout(timeout, reader.read_line(&mut answer))
        .await
        .map_err(|_| ClientError::Protocol("no answer in time".into()))?
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    if !answer.ends_with('\n') {
        return Err(ClientError::Protocol(
            "the answer was cut short or too long".into(),
        ));
    }
    serde_json::from_str(answer.trim())
        .map_err(|e| ClientError::Protocol(format!("not understood: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_a_request_names() {
        const H: &str = "111111111111.dkr.ecr.us-east-1.amazonaws.com";
        for (text, want) in [
            (H.to_string(), H),
            (format!("https://{H}"), H),
            (format!("https://{H}/v2/"), H),
            (format!(" {} \n", H.to_uppercase()), H),
            (format!("{H}/team/app:v1"), H),
            (format!("{H}/app@sha256:00"), H),
            (
                "mirror.internal:5000/app".to_string(),
                "mirror.internal:5000",
            ),
            ("mirror.internal:5000".to_string(), "mirror.internal:5000"),
            ("localhost/app".to_string(), "localhost"),
            ("library/nginx".to_string(), "docker.io"),
            ("team/app:v1".to_string(), "docker.io"),
        ] {
            assert_eq!(registry_of(&text), want, "{text:?}");
        }
    }

    #[test]
    fn each_uid_but_root_gets_a_few_connections() {
        let budget = Arc::new(Mutex::new(Budget::default()));
        let mut held: Vec<_> = (0..MAX_PER_UID)
            .map(|_| admit(&budget, Some(1000), Role::Control).unwrap())
            .collect();
        let refused = admit(&budget, Some(1000), Role::Control).err().unwrap();
        assert!(refused.contains("uid 1000"), "{refused}");
        // Root is never counted nor refused; another uid has its own share.
        let root: Vec<_> = (0..1000)
            .map(|_| admit(&budget, Some(0), Role::Control))
            .collect();
        assert!(root.iter().all(|r| matches!(r, Ok(None))));
        assert!(admit(&budget, Some(1001), Role::Control).unwrap().is_some());
        held.pop();
        assert!(
            admit(&budget, Some(1000), Role::Control).is_ok(),
            "a closed slot is given back"
        );
        // All users but root together are bounded too.
        let mut many = Vec::new();
        for uid in 2000.. {
            match admit(&budget, Some(uid), Role::Control) {
                Ok(slot) => many.push(slot),
                Err(why) => {
                    assert!(why.contains("other than root"), "{why}");
                    break;
                }
            }
        }
        assert_eq!(budget.lock().unwrap().others, MAX_OTHERS);
        drop((held, many));
        assert_eq!(budget.lock().unwrap().others, 0);
        assert!(budget.lock().unwrap().per_uid.is_empty());
        assert!(admit(&budget, None, Role::Control).unwrap().is_some());
    }

    #[test]
    fn request_wire_format() {
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"cmd":"status"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"refresh"}"#).unwrap(),
            Request::Refresh { host: None }
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"refresh","host":"public.ecr.aws"}"#)
                .unwrap(),
            Request::Refresh {
                host: Some("public.ecr.aws".into())
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"rm -rf"}"#).is_err());
        assert_eq!(
            parse_request(b"{\"cmd\":\"status\"}\n").ok(),
            Some(Request::Status)
        );
        assert!(
            parse_request(b"{\"cmd\":\"status\"}")
                .unwrap_err()
                .to_string()
                .contains("one JSON line")
        );
        assert!(parse_request(&[b' '; 5000]).is_err());
        assert!(
            parse_request(b"\xff\n")
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
    }

    /// While a reload moves an alias from one registry to another, the grants and the
    /// credentials are published one after the other: a caller must never be handed the token of
    /// a registry other than the one whose grants let it in (the old one's token to the new
    /// one's grantees, or the reverse).
    #[test]
    fn an_alias_is_answered_only_with_the_token_of_the_registry_whose_grants_were_checked() {
        use crate::config::{Settings, UserSpec, zero_config};
        use crate::ecr::token::Token;
        use base64::Engine as _;
        const H1: &str = "111111111111.dkr.ecr.us-east-1.amazonaws.com";
        const H3: &str = "111111111111.dkr.ecr.eu-west-1.amazonaws.com";
        const M: &str = "mirror.internal:5000";
        let later = std::time::SystemTime::now() + Duration::from_secs(3600);
        let token = |pw: &str| {
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{pw}"));
            Token::new(auth, later).unwrap()
        };
        // The alias on registry `on` (0: H1, granted 4242; 1: H3, granted 4343).
        let config = |on: usize| -> Settings {
            let mut s = zero_config("111111111111", "us-east-1").unwrap();
            let mut r3 = s.registries[0].clone();
            r3.host = H3.into();
            s.registries.push(r3);
            for (i, uid) in [(0, 4242u32), (1, 4343)] {
                s.registries[i].grants.users = vec![UserSpec {
                    name: uid.to_string(),
                    uid: Some(uid),
                }];
            }
            s.registries[on].aliases = vec![M.into()];
            s
        };
        let creds = |on: usize| -> Credentials {
            let names = [H1, H3];
            let mut c: Credentials = names.iter().map(|h| (h.to_string(), token(h))).collect();
            c.insert(M.into(), token(names[on]));
            c
        };
        let ask = |grants_on: usize, creds_on: usize, uid: u32| -> Option<String> {
            let (_gt, grants) = watch::channel(Arc::new(Grants::numeric(&config(grants_on))));
            let (_ct, credentials) = watch::channel(Arc::new(creds(creds_on)));
            let held = Held {
                credentials,
                grants,
            };
            let budget = Mutex::new(Budget::default());
            match credential(M, &held, Some(uid), vec![uid], &budget) {
                Response::Credential { secret, .. } => Some(secret),
                _ => None,
            }
        };
        // Both snapshots agree: the alias's registry's grantees get its token, no one else.
        assert_eq!(ask(0, 0, 4242).as_deref(), Some(H1));
        assert_eq!(ask(0, 0, 4343), None);
        assert_eq!(ask(1, 1, 4343).as_deref(), Some(H3));
        assert_eq!(ask(1, 1, 4242), None);
        assert_eq!(ask(1, 1, 0).as_deref(), Some(H3), "root");
        // New grants, old credentials (and the reverse): nobody gets the other registry's token.
        for uid in [4242, 4343, 0] {
            assert_eq!(
                ask(1, 0, uid),
                None,
                "uid {uid}: H1's token under H3's grants"
            );
            assert_eq!(
                ask(0, 1, uid),
                None,
                "uid {uid}: H3's token under H1's grants"
            );
        }
    }
}
