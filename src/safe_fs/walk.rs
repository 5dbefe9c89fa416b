//! Opening the directories on the way to a file, one descriptor at a time, and checking them.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::*;

/// A directory no one but root can change: owned by root, and not writable by a group or others
/// (unless sticky, where others may add entries but not replace root's).
pub(super) fn root_controlled(st: &Stat) -> bool {
    let mode = st.st_mode;
    st.st_uid == 0
        && (mode & 0o002 == 0 || mode & 0o1000 != 0)
        && (mode & 0o020 == 0 || st.st_gid == 0 || mode & 0o1000 != 0)
}

/// Replaceable by someone other than its owner: writable by group (non-root) or others, not sticky.
pub(super) fn writable_by_others(st: &Stat) -> bool {
    let mode = st.st_mode;
    mode & 0o1000 == 0 && (mode & 0o002 != 0 || (mode & 0o020 != 0 && st.st_gid != 0))
}

/// An opened directory on the way to a target.
pub(super) struct Dir {
    pub(super) fd: OwnedFd,
    pub(super) stat: Stat,
    pub(super) path: PathBuf,
}

/// Opens the directory `name` in `at` without following a link there.
fn open_dir(at: &dyn AsFd, name: &OsStr, shown: &Path) -> Result<Dir, Errno> {
    let fd = rustix::fs::openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let stat = rustix::fs::fstat(&fd)?;
    Ok(Dir {
        fd,
        stat,
        path: shown.to_path_buf(),
    })
}

/// Pushes the components of `p` onto the walk's stack (last first), keeping `..`.
fn push_components(todo: &mut Vec<OsString>, p: &Path) {
    for c in p.components().rev() {
        match c {
            Component::Normal(n) => todo.push(n.to_os_string()),
            Component::ParentDir => todo.push("..".into()),
            _ => {}
        }
    }
}

/// Where the link `name` in `here` points, if we may follow it: only in a root-controlled
/// directory, and (as the kernel's `protected_symlinks` rule, since in a sticky directory others
/// may write, like /tmp, anyone can plant a link) only a link root itself owns.
fn link_target(here: &Dir, name: &OsStr, link: &Stat, path: &Path) -> Result<PathBuf, FileError> {
    let shown = here.path.join(name);
    if !root_controlled(&here.stat) {
        return Err(refused(
            path,
            format!(
                "{} is a symbolic link in {}, which {} controls; we never follow such links",
                shown.display(),
                here.path.display(),
                user_name(here.stat.st_uid)
            ),
        ));
    }
    if link.st_uid != 0 {
        return Err(refused(
            path,
            format!(
                "{} is a symbolic link owned by {} in {}, where others can add entries; we follow only root's links there",
                shown.display(),
                user_name(link.st_uid),
                here.path.display()
            ),
        ));
    }
    let target = rustix::fs::readlinkat(&here.fd, name, Vec::new())
        .map_err(|e| io_err(&shown, "readlink", e))?;
    Ok(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
}

/// Opens the parent directory of `path`, component by component, following only symbolic links
/// root placed where only root can change them. When a directory is missing, returns the chain
/// up to the last existing one and the missing names.
pub(super) fn walk_parent(path: &Path) -> Result<(Vec<Dir>, Vec<OsString>), FileError> {
    let parent = path
        .parent()
        .ok_or_else(|| refused(path, "the path has no parent directory"))?;
    let root = open_dir(&rustix::fs::CWD, OsStr::new("/"), Path::new("/"))
        .map_err(|e| io_err(path, "open /", e))?;
    let mut chain = vec![root];
    // Components still to resolve, as a stack, so a link's target can be pushed in its place.
    let mut todo = Vec::new();
    push_components(&mut todo, parent);
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            if chain.len() > 1 {
                chain.pop();
            }
            continue;
        }
        let here = chain.last().ok_or_else(|| refused(path, "empty walk"))?;
        let shown = here.path.join(&name);
        let st = match rustix::fs::statat(&here.fd, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => {
                todo.push(name);
                todo.reverse();
                return Ok((chain, todo));
            }
            Err(e) => return Err(io_err(&shown, "stat", e)),
            Ok(st) => st,
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(refused(path, "too many levels of symbolic links"));
                }
                let target = link_target(here, &name, &st, path)?;
                if target.is_absolute() {
                    chain.truncate(1);
                }
                push_components(&mut todo, &target);
            }
            FileType::Directory => {
                let dir = open_dir(&here.fd, &name, &shown).map_err(|e| match e {
                    Errno::LOOP | Errno::NOTDIR => refused(
                        path,
                        format!("{} changed while we opened it", shown.display()),
                    ),
                    e => io_err(&shown, "open", e),
                })?;
                chain.push(dir);
            }
            other => {
                let why = format!(
                    "{} is {}, not a directory",
                    shown.display(),
                    describe(other)
                );
                return Err(refused(path, why));
            }
        }
    }
    Ok((chain, Vec::new()))
}

/// Opens the directory of `path` (e.g. a socket's) requiring that only root (or the daemon's own
/// uid) can change it or anything above it: owned so, and writable by no one else; an ancestor
/// may be sticky world-writable (others cannot replace root's entries there), the directory
/// itself not. Missing directories are created 0755 through their parent's descriptor.
pub fn open_private_dir(path: &Path) -> Result<OwnedFd, FileError> {
    let me = rustix::process::geteuid().as_raw();
    let (mut chain, missing) = walk_parent(path)?;
    for d in &chain {
        private_check(d, me, path, false)?;
    }
    for name in missing {
        let here = chain.last().ok_or_else(|| refused(path, "empty walk"))?;
        let shown = here.path.join(&name);
        match rustix::fs::mkdirat(&here.fd, name.as_os_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(io_err(&shown, "create directory", e)),
        }
        let d = open_dir(&here.fd, &name, &shown).map_err(|e| io_err(&shown, "open", e))?;
        if d.stat.st_uid == me {
            // Ours, just made: 0755 whatever the umask, so clients reach what is inside.
            rustix::fs::fchmod(&d.fd, Mode::from_raw_mode(0o755))
                .map_err(|e| io_err(&shown, "chmod", e))?;
        }
        private_check(&d, me, path, false)?;
        chain.push(d);
    }
    let last = chain.pop().ok_or_else(|| refused(path, "empty walk"))?;
    private_check(&last, me, path, true)?;
    Ok(last.fd)
}

fn private_check(d: &Dir, me: u32, path: &Path, last: bool) -> Result<(), FileError> {
    let (mode, uid) = (d.stat.st_mode, d.stat.st_uid);
    if uid != 0 && uid != me {
        return Err(refused(
            path,
            format!(
                "{} belongs to {}, who could swap what we create there for a link to any file; fix with: chown root: {}",
                d.path.display(),
                user_name(uid),
                d.path.display()
            ),
        ));
    }
    if mode & 0o022 != 0 && (last || mode & 0o1000 == 0) {
        let who = if mode & 0o002 != 0 {
            "everyone".to_string()
        } else {
            format!("group {}", d.stat.st_gid)
        };
        return Err(refused(
            path,
            format!(
                "{} is writable by {who} (mode {:04o}), so they could swap what we create there for a link to any file; it must be writable by root only; fix with: chmod go-w {}",
                d.path.display(),
                mode & 0o7777,
                d.path.display()
            ),
        ));
    }
    Ok(())
}

/// Checks that no one but `uid` (and root) can change anything on the way, from the first
/// directory `uid` owns on. Returns the refusal reason otherwise.
pub(super) fn check_chain(chain: &[Dir], uid: u32, file: &Path) -> Result<(), FileError> {
    let mut in_user_dir = false;
    for d in chain {
        let owner = d.stat.st_uid;
        if in_user_dir && owner != uid {
            let name = user_name(uid);
            return Err(refused(
                file,
                format!(
                    "{} belongs to {}, inside a directory of {name}; fix with: chown {name}: {}",
                    d.path.display(),
                    user_name(owner),
                    d.path.display()
                ),
            ));
        }
        if owner == uid && uid != 0 {
            in_user_dir = true;
        } else if owner != 0 {
            return Err(refused(
                file,
                format!(
                    "{} belongs to {}, who could redirect our write; set user = \"{}\" for this target or fix the ownership",
                    d.path.display(),
                    user_name(owner),
                    user_name(owner)
                ),
            ));
        }
        if writable_by_others(&d.stat) {
            return Err(refused(
                file,
                format!(
                    "{} is writable by others without the sticky bit (mode {:o}); fix with: chmod go-w {}",
                    d.path.display(),
                    d.stat.st_mode & 0o7777,
                    d.path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The nearest existing directory on the way to `path`, opened as the write path opens it (no
/// link followed but root's own in root's directories): its descriptor, (device, inode) and
/// path. `None` when the walk refuses the way (a user's link, say): nothing is watched there.
pub fn nearest_dir(path: &Path) -> Option<(OwnedFd, (u64, u64), PathBuf)> {
    let (mut chain, _) = walk_parent(path).ok()?;
    let d = chain.pop()?;
    Some((d.fd, (d.stat.st_dev, d.stat.st_ino), d.path))
}
