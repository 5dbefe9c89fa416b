//! File watching: inotify on the directories of targets and config, as the write path opens them.
//!
//! Each watched path (a target, the config) is covered by a watch on its nearest existing
//! directory, opened the way `safe_fs` opens it: no link is followed but root's own in root's
//! directories, and the watch is added through that very descriptor (`/proc/self/fd/N`). So a
//! user who owns a target's directory cannot point a root-held watch anywhere else. One watch per
//! directory (by device and inode), shared by every path under it; a watch whose directory went
//! away or was replaced is removed; at most one watch per watched path. Events are gathered on a
//! thread of their own into a set of changed paths (bounded by the number of paths), debounced,
//! and the watches recomputed after each batch, so a directory that appears is picked up.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use rustix::event::{PollFd, PollFlags};
use tokio::sync::mpsc;

use crate::safe_fs;

/// How long events are gathered before they are reported as one batch.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// While a batch is gathered, the queue is read at most this often (it holds 16384 events by
/// default: a million a second would be needed to overflow it).
const DRAIN_EVERY: Duration = Duration::from_millis(10);

/// What changed, after debouncing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Targets whose file (or a directory on the way) changed.
    pub targets: BTreeSet<PathBuf>,
    /// The config file changed.
    pub config: bool,
}

impl Changes {
    fn is_empty(&self) -> bool {
        !self.config && self.targets.is_empty()
    }
}

/// The paths to watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSet {
    /// Every target's file.
    pub targets: Vec<PathBuf>,
    /// The config file.
    pub config: Option<PathBuf>,
}

/// A handle to the watcher thread; dropping it stops the thread.
pub struct WatcherHandle {
    next: Arc<Mutex<Option<WatchSet>>>,
    wake: OwnedFd,
}

impl WatcherHandle {
    /// Replaces the watched paths (after a config reload).
    pub fn update(&self, set: WatchSet) {
        if let Ok(mut next) = self.next.lock() {
            *next = Some(set);
        }
        let _ = rustix::io::write(&self.wake, &[1]);
    }
}

/// One watched directory and the paths it covers.
struct Watched {
    id: (u64, u64),
    dir: PathBuf,
    paths: Vec<PathBuf>,
}

/// The watcher thread's state.
struct Watcher {
    inotify: Inotify,
    set: WatchSet,
    watched: HashMap<WatchDescriptor, Watched>,
    /// The config file's identity and times, to tell a real change from a queue overflow.
    config_seen: Option<(u64, u64, i64, i64)>,
}

/// Starts watching; batches of changes arrive on `out`.
pub fn spawn(set: WatchSet, out: mpsc::Sender<Changes>) -> std::io::Result<WatcherHandle> {
    let inotify = Inotify::init()?;
    let (wake_rx, wake_tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let next = Arc::new(Mutex::new(None));
    let shared = Arc::clone(&next);
    let mut w = Watcher {
        inotify,
        set,
        watched: HashMap::new(),
        config_seen: None,
    };
    std::thread::Builder::new()
        .name("watcher".into())
        .spawn(move || w.run(&wake_rx, &shared, &out))?;
    Ok(WatcherHandle {
        next,
        wake: wake_tx,
    })
}

/// What inotify reports for a watched directory: entries created, removed, renamed, written or
/// changed in their metadata, and the directory itself going away.
fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::EXCL_UNLINK
}

impl Watcher {
    fn run(&mut self, wake: &OwnedFd, next: &Mutex<Option<WatchSet>>, out: &mpsc::Sender<Changes>) {
        self.rewatch();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            // Wait for events or a new set; then gather for DEBOUNCE.
            if !self.wait(wake, None) {
                return;
            }
            if let Some(set) = next.lock().ok().and_then(|mut n| n.take()) {
                self.set = set;
                self.rewatch();
            }
            let mut changes = Changes::default();
            self.read(&mut buffer, &mut changes);
            let deadline = std::time::Instant::now() + DEBOUNCE;
            while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
                if !self.wait(wake, Some(left)) {
                    return;
                }
                self.read(&mut buffer, &mut changes);
                // Read in slices, not at each event: a user touching their file in a loop
                // queues one per touch, and waking for each cost most of a core.
                std::thread::sleep(DRAIN_EVERY.min(left));
            }
            // Directories may have appeared or gone: watch the right ones before reporting.
            self.rewatch();
            if !changes.is_empty() && out.blocking_send(changes).is_err() {
                return;
            }
        }
    }

    /// Waits until inotify or the wake pipe is readable (or `timeout`); false when the handle
    /// was dropped (the pipe's write end closed).
    fn wait(&self, wake: &OwnedFd, timeout: Option<Duration>) -> bool {
        let mut fds = [
            PollFd::new(&self.inotify, PollFlags::IN),
            PollFd::new(wake, PollFlags::IN),
        ];
        let ts = timeout.and_then(|t| rustix::event::Timespec::try_from(t).ok());
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
        let woken = fds[1].revents();
        if woken.contains(PollFlags::HUP) && !woken.contains(PollFlags::IN) {
            return false;
        }
        if woken.contains(PollFlags::IN) {
            let mut byte = [0u8; 64];
            if matches!(rustix::io::read(wake, &mut byte), Ok(0)) {
                return false;
            }
        }
        true
    }

    /// Reads what inotify has and notes which watched paths it concerns.
    fn read(&mut self, buffer: &mut [u8], changes: &mut Changes) {
        loop {
            let events = match self.inotify.read_events(buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "file watch error; checking every target");
                    self.everything(changes);
                    return;
                }
            };
            for ev in events {
                if ev.mask.contains(EventMask::Q_OVERFLOW) {
                    tracing::warn!("file watch queue overflow; checking every target");
                    self.everything(changes);
                    continue;
                }
                let Some(w) = self.watched.get(&ev.wd) else {
                    continue;
                };
                for p in &w.paths {
                    if ev.name.is_none_or(|n| next_component(&w.dir, p) == Some(n)) {
                        self.mark(p, changes);
                    }
                }
            }
        }
    }

    fn mark(&self, path: &Path, changes: &mut Changes) {
        if self.set.config.as_deref() == Some(path) {
            changes.config = true;
        }
        if self.set.targets.iter().any(|t| t == path) {
            changes.targets.insert(path.to_path_buf());
        }
    }

    /// Events were lost: every target is checked; the config only if it really changed.
    fn everything(&mut self, changes: &mut Changes) {
        changes.targets.extend(self.set.targets.iter().cloned());
        let now = self.config_signature();
        if now != self.config_seen {
            changes.config = true;
        }
    }

    fn config_signature(&self) -> Option<(u64, u64, i64, i64)> {
        let md = std::fs::symlink_metadata(self.set.config.as_deref()?).ok()?;
        Some((
            md.dev(),
            md.ino(),
            md.mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(md.mtime_nsec()),
            md.ctime(),
        ))
    }

    /// Watches exactly the nearest existing directory of every path, as `safe_fs` opens it.
    fn rewatch(&mut self) {
        self.config_seen = self.config_signature();
        let mut dirs: HashMap<(u64, u64), (OwnedFd, PathBuf, Vec<PathBuf>)> = HashMap::new();
        for p in self.set.targets.iter().chain(self.set.config.iter()) {
            let Some((fd, id, dir)) = safe_fs::nearest_dir(p) else {
                continue;
            };
            dirs.entry(id)
                .or_insert_with(|| (fd, dir, Vec::new()))
                .2
                .push(p.clone());
        }
        let mut watched = HashMap::new();
        for (id, (fd, dir, paths)) in dirs {
            // Through our own descriptor: the kernel resolves the magic link to that directory.
            let via = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
            match self.inotify.watches().add(&via, mask()) {
                Ok(wd) => {
                    watched.insert(wd, Watched { id, dir, paths });
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory")
                }
            }
        }
        for (wd, old) in self.watched.drain() {
            if watched.get(&wd).is_none_or(|w: &Watched| w.id != old.id) {
                let _ = self.inotify.watches().remove(wd);
            }
        }
        self.watched = watched;
    }
}

/// The name under `dir` on the way to `path` (its first component below `dir`).
fn next_component<'a>(dir: &Path, path: &'a Path) -> Option<&'a std::ffi::OsStr> {
    match path.strip_prefix(dir).ok()?.components().next()? {
        Component::Normal(n) => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_on_the_way_below_a_directory() {
        let t = Path::new("/home/u/.docker/config.json");
        let n = |d: &str| next_component(Path::new(d), t).map(|s| s.to_string_lossy().into_owned());
        assert_eq!(n("/home/u/.docker").as_deref(), Some("config.json"));
        assert_eq!(n("/home/u").as_deref(), Some(".docker"));
        assert_eq!(n("/home").as_deref(), Some("u"));
        assert_eq!(n("/elsewhere"), None);
    }
}
