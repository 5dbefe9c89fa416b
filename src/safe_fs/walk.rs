//! Opening the directories on the way to a file, one descriptor at a time, and checking them.

use std::ffi::OsStr;
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

/// Opens the parent directory of `path`, component by component, following only symbolic links that
/// sit in root-controlled directories. Missing directories are reported as `None` from the first
/// missing one on, with the last existing directory.
pub(super) fn walk_parent(path: &Path) -> Result<(Vec<Dir>, Vec<std::ffi::OsString>), FileError> {
    let parent = path
        .parent()
        .ok_or_else(|| refused(path, "the path has no parent directory"))?;
    let open_dir = |at: &dyn AsFd, name: &OsStr, shown: &Path| -> Result<Dir, Errno> {
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
    };
    let root = open_dir(&rustix::fs::CWD, OsStr::new("/"), Path::new("/"))
        .map_err(|e| io_err(path, "open /", e))?;
    let mut chain = vec![root];
    // Components still to resolve, in reverse order (a stack), so symlink targets can be pushed.
    let mut todo: Vec<std::ffi::OsString> = parent
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            if chain.len() > 1 {
                chain.pop();
            }
            continue;
        }
        if name == "." {
            continue;
        }
        let here = chain.last().ok_or_else(|| refused(path, "empty walk"))?;
        let shown = here.path.join(&name);
        match rustix::fs::statat(&here.fd, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => {
                todo.push(name);
                todo.reverse();
                return Ok((chain, todo));
            }
            Err(e) => return Err(io_err(&shown, "stat", e)),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
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
                // In a sticky directory others may write (like /tmp) anyone can plant a link: as
                // the kernel's protected_symlinks rule, follow only a link root itself owns.
                if st.st_uid != 0 {
                    return Err(refused(
                        path,
                        format!(
                            "{} is a symbolic link owned by {} in {}, where others can add entries; we follow only root's links there",
                            shown.display(),
                            user_name(st.st_uid),
                            here.path.display()
                        ),
                    ));
                }
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(refused(path, "too many levels of symbolic links"));
                }
                let target = rustix::fs::readlinkat(&here.fd, name.as_os_str(), Vec::new())
                    .map_err(|e| io_err(&shown, "readlink", e))?;
                let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                if target.is_absolute() {
                    chain.truncate(1);
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::Directory => {
                return Err(refused(
                    path,
                    format!(
                        "{} is {}, not a directory",
                        shown.display(),
                        describe(FileType::from_raw_mode(st.st_mode))
                    ),
                ));
            }
            Ok(_) => {
                let dir = open_dir(&here.fd, &name, &shown).map_err(|e| match e {
                    Errno::LOOP | Errno::NOTDIR => refused(
                        path,
                        format!("{} changed while we opened it", shown.display()),
                    ),
                    e => io_err(&shown, "open", e),
                })?;
                chain.push(dir);
            }
        }
    }
    Ok((chain, Vec::new()))
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
