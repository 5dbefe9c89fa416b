//! File watching: inotify (notify crate) on the parent directories of targets and config, debounced.
//!
//! A directory that does not exist yet (`/run/containers/0` after boot, a new user's `~/.docker`)
//! is covered by watching its nearest existing ancestor; after each batch of events the watch set is
//! recomputed, so the directory is picked up when it appears.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// How long events are gathered before they are reported as one batch.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// What changed, after debouncing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Targets whose file (or a directory on the way) changed.
    pub targets: BTreeSet<PathBuf>,
    pub config: bool,
}

/// The paths to watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSet {
    pub targets: Vec<PathBuf>,
    pub config: Option<PathBuf>,
}

/// A handle to the watcher task; dropping it stops the task.
pub struct WatcherHandle {
    set: mpsc::UnboundedSender<WatchSet>,
}

impl WatcherHandle {
    /// Replaces the watched paths (after a config reload).
    pub fn update(&self, set: WatchSet) {
        let _ = self.set.send(set);
    }
}

/// The directory to watch for `path`: its parent, or the nearest ancestor that exists.
fn watch_dir(path: &Path) -> Option<PathBuf> {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.is_dir() {
            return Some(d.to_path_buf());
        }
        dir = d.parent();
    }
    None
}

/// Whether an event on `event_path` concerns `watched` (the file itself or a directory on its way).
fn concerns(event_path: &Path, watched: &Path) -> bool {
    watched == event_path || watched.starts_with(event_path)
}

/// Starts watching; batches of changes arrive on `out`.
pub fn spawn(set: WatchSet, out: mpsc::Sender<Changes>) -> notify::Result<WatcherHandle> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(move |ev| {
        let _ = raw_tx.send(ev);
    })?;
    let (set_tx, mut set_rx) = mpsc::unbounded_channel::<WatchSet>();
    tokio::spawn(async move {
        let mut set = set;
        let mut watching: BTreeSet<PathBuf> = BTreeSet::new();
        rewatch(&mut watcher, &set, &mut watching);
        loop {
            let first = tokio::select! {
                ev = raw_rx.recv() => match ev { Some(ev) => ev, None => return },
                new = set_rx.recv() => match new {
                    Some(new) => { set = new; rewatch(&mut watcher, &set, &mut watching); continue; }
                    None => return,
                },
            };
            let mut changes = Changes::default();
            collect(&set, first, &mut changes);
            let deadline = tokio::time::Instant::now() + DEBOUNCE;
            while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, raw_rx.recv()).await {
                collect(&set, ev, &mut changes);
            }
            // Directories may have appeared or gone: watch the right ones before reporting.
            rewatch(&mut watcher, &set, &mut watching);
            if (changes.config || !changes.targets.is_empty()) && out.send(changes).await.is_err() {
                return;
            }
        }
    });
    Ok(WatcherHandle { set: set_tx })
}

fn collect(set: &WatchSet, ev: notify::Result<notify::Event>, changes: &mut Changes) {
    let ev = match ev {
        Ok(ev) => ev,
        Err(e) => {
            tracing::warn!(error = %e, "file watch error; checking every target");
            changes.targets.extend(set.targets.iter().cloned());
            return;
        }
    };
    // Reads (ours included) are not changes; reacting to them would loop.
    if matches!(ev.kind, EventKind::Access(_)) {
        return;
    }
    if ev.need_rescan() {
        changes.targets.extend(set.targets.iter().cloned());
        changes.config = set.config.is_some();
    }
    for p in &ev.paths {
        for t in &set.targets {
            if concerns(p, t) {
                changes.targets.insert(t.clone());
            }
        }
        if set.config.as_deref().is_some_and(|c| concerns(p, c)) {
            changes.config = true;
        }
    }
}

fn rewatch(
    watcher: &mut notify::RecommendedWatcher,
    set: &WatchSet,
    watching: &mut BTreeSet<PathBuf>,
) {
    let wanted: BTreeSet<PathBuf> = set
        .targets
        .iter()
        .chain(set.config.iter())
        .filter_map(|p| watch_dir(p))
        .collect();
    for gone in watching.difference(&wanted) {
        let _ = watcher.unwatch(gone);
    }
    let mut now = BTreeSet::new();
    for dir in &wanted {
        // Re-adding an existing inotify watch is harmless, and heals one the kernel dropped
        // (the directory was removed and created again).
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                now.insert(dir.clone());
            }
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory"),
        }
    }
    *watching = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concerns_the_file_and_its_directories() {
        let t = Path::new("/home/u/.docker/config.json");
        assert!(concerns(Path::new("/home/u/.docker/config.json"), t));
        assert!(concerns(Path::new("/home/u/.docker"), t));
        assert!(!concerns(
            Path::new("/home/u/.docker/.config.json.ecr-refresherd-1.tmp"),
            t
        ));
        assert!(!concerns(Path::new("/home/u/.docker/other.json"), t));
    }

    #[test]
    fn nearest_existing_directory() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/config.json");
        assert_eq!(watch_dir(&p).as_deref(), Some(d.path()));
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        assert_eq!(watch_dir(&p), Some(d.path().join("a/b")));
    }
}
