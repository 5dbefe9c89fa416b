//! Looking at a file as the write path would, and reading a file only root can change.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::*;

use super::owner::{FsIdentity, Located, may_create, resolve};
use super::walk::{check_chain, walk_parent};
use super::write::read_target;

/// Reads a target as its writer would, with the same checks, without creating anything.
/// `Ok(None)` when the file or its directory does not exist.
pub fn read(path: &Path, policy: OwnerPolicy) -> Result<Option<Vec<u8>>, FileError> {
    read_sized(path, policy, MAX_FILE_SIZE)
}

/// [`read`], for a file that may be up to `limit` bytes (the daemon's own state).
pub fn read_sized(
    path: &Path,
    policy: OwnerPolicy,
    limit: usize,
) -> Result<Option<Vec<u8>>, FileError> {
    Ok(look(path, policy, false, limit)?.file.map(|f| f.bytes))
}

/// One directory on the way to a target, as the write path opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirInfo {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// The target file as the write path read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Permission bits.
    pub mode: u32,
    pub bytes: Vec<u8>,
}

/// What the write path sees of a target: who writes it, the directories on the way, the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub owner: Owner,
    /// Each existing directory from `/` to the target's own, as opened (links resolved).
    pub dirs: Vec<DirInfo>,
    /// `None` when the file (or a directory on the way) does not exist yet.
    pub file: Option<FileInfo>,
}

/// Looks at a target exactly as [`update`] would (same descriptors, same checks, read as its
/// owner), creating nothing. Diagnostics use this, never a lookup by path name, so a user who
/// swaps a link into the path cannot make them report on a file that is not theirs.
/// A target that does not exist yet is also refused here when `update` would refuse to create
/// its directories (a missing home, a missing user).
pub fn inspect(path: &Path, policy: OwnerPolicy) -> Result<Inspection, FileError> {
    look(path, policy, true, MAX_FILE_SIZE)
}

pub(super) fn look(
    path: &Path,
    policy: OwnerPolicy,
    creatable: bool,
    limit: usize,
) -> Result<Inspection, FileError> {
    if path.file_name().is_none() {
        return Err(refused(path, "the path does not name a file"));
    }
    let (chain, missing) = walk_parent(path)?;
    let owner = resolve(&policy, &chain, path)?;
    let last = chain.last().ok_or_else(|| refused(path, "empty walk"))?;
    check_chain(&chain, owner.uid, path)?;
    if let Some(first) = missing.first().filter(|_| creatable) {
        may_create(&last.path.join(first), &missing[1..], last, owner, path)?;
    }
    let dirs = chain
        .iter()
        .map(|d| DirInfo {
            path: d.path.clone(),
            uid: d.stat.st_uid,
            gid: d.stat.st_gid,
            mode: d.stat.st_mode & 0o7777,
        })
        .collect();
    let file = match missing.is_empty() {
        false => None,
        true => {
            let mut chain = chain;
            let dir = chain.pop().ok_or_else(|| refused(path, "empty walk"))?;
            let loc = Located {
                dir,
                name: path.file_name().unwrap_or_default().to_os_string(),
                owner,
                limit,
            };
            let _id = FsIdentity::become_user(owner, path)?;
            read_target(&loc, path)?.map(|c| FileInfo {
                mode: c.stat.st_mode & 0o7777,
                bytes: c.bytes,
            })
        }
    };
    Ok(Inspection { owner, dirs, file })
}

/// Reads a file that root acts on (the config): only root — or the daemon's own uid, when it
/// does not run as root — may be able to change it or any directory above it, as sshd's
/// StrictModes and sudo demand of their files. Links are followed only where `update` would.
/// A missing file (or directory) is an `Io` error of kind `NotFound`.
pub fn read_trusted(path: &Path, max: usize) -> Result<Vec<u8>, FileError> {
    read_trusted_at(path, max, 0, false)
}

/// [`read_trusted`] for a secret (an API key): also refused when group or others may read it.
pub fn read_secret(path: &Path, max: usize) -> Result<Vec<u8>, FileError> {
    read_trusted_at(path, max, 0, true)
}

/// A file root may act on: a regular file of root's (or ours) that no one else may write.
fn trusted_file(st: &Stat, me: u32, path: &Path, secret: bool) -> Result<(), FileError> {
    let ft = FileType::from_raw_mode(st.st_mode);
    if ft != FileType::RegularFile {
        return Err(refused(
            path,
            format!("it is {}, not a regular file", describe(ft)),
        ));
    }
    if st.st_uid != 0 && st.st_uid != me {
        return Err(refused(
            path,
            format!(
                "it belongs to {}, who could make root act on anything; fix with: chown root: {}",
                user_name(st.st_uid),
                path.display()
            ),
        ));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(refused(
            path,
            format!(
                "it is writable by group or others (mode {:04o}); fix with: chmod go-w {}",
                st.st_mode & 0o7777,
                path.display()
            ),
        ));
    }
    if secret && st.st_mode & 0o044 != 0 {
        return Err(refused(
            path,
            format!(
                "it holds a secret but group or others may read it (mode {:04o}); fix with: chmod 600 {}",
                st.st_mode & 0o7777,
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Every directory on the way to a file root trusts is root's alone (or the daemon's own uid's).
fn check_trusted_chain(
    chain: &[super::walk::Dir],
    me: u32,
    path: &Path,
    secret: bool,
) -> Result<(), FileError> {
    let last = chain.len().saturating_sub(1);
    for (i, d) in chain.iter().enumerate() {
        // Group write counts, root's group too: the config needs root and nobody else. A sticky
        // directory lets others add names, not change root's: fine above, but a secret's own
        // directory must not take a name someone else moved in (a root-owned file of theirs).
        let sticky = d.stat.st_mode & 0o1000 != 0 && !(secret && i == last);
        let writable = d.stat.st_mode & 0o022 != 0 && !sticky;
        if (d.stat.st_uid != 0 && d.stat.st_uid != me) || writable {
            return Err(refused(
                path,
                format!(
                    "{} can be changed by {} (owner {}, mode {:04o}); a file root trusts (config, API key, CA) must sit in directories only root can write",
                    d.path.display(),
                    if writable { "others" } else { "its owner" },
                    user_name(d.stat.st_uid),
                    d.stat.st_mode & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

/// The directory of `path`, a file root will trust (a config `init` writes), opened as
/// [`read_trusted`] will find it: the same walk, the same checks. Writing through it, nobody
/// but root can redirect the file or read it half-written; missing directories are an error.
pub fn trusted_dir(path: &Path) -> Result<std::os::fd::OwnedFd, FileError> {
    let me = rustix::process::geteuid().as_raw();
    let (mut chain, missing) = walk_parent(path)?;
    if let Some(first) = missing.first() {
        let last = chain.last().map_or(Path::new("/"), |d| d.path.as_path());
        return Err(io_err(&last.join(first), "open", Errno::NOENT));
    }
    check_trusted_chain(&chain, me, path, false)?;
    chain
        .pop()
        .map(|d| d.fd)
        .ok_or_else(|| refused(path, "empty walk"))
}

pub(super) fn read_trusted_at(
    path: &Path,
    max: usize,
    links: usize,
    secret: bool,
) -> Result<Vec<u8>, FileError> {
    let me = rustix::process::geteuid().as_raw();
    let name = path
        .file_name()
        .ok_or_else(|| refused(path, "the path does not name a file"))?;
    let (chain, missing) = walk_parent(path)?;
    if !missing.is_empty() {
        return Err(io_err(path, "open", Errno::NOENT));
    }
    check_trusted_chain(&chain, me, path, secret)?;
    let dir = chain.last().ok_or_else(|| refused(path, "empty walk"))?;
    // A link (e.g. from configuration management) is followed only if root owns it: its
    // directory was just checked to be root's alone.
    if let Ok(st) = rustix::fs::statat(&dir.fd, name, AtFlags::SYMLINK_NOFOLLOW)
        && FileType::from_raw_mode(st.st_mode) == FileType::Symlink
    {
        if st.st_uid != 0 || links >= MAX_SYMLINKS {
            return Err(refused(
                path,
                "it is a symbolic link root does not own (or too many links); point --config at the file itself",
            ));
        }
        let to = rustix::fs::readlinkat(&dir.fd, name, Vec::new())
            .map_err(|e| io_err(path, "readlink", e))?;
        let to = dir.path.join(OsStr::from_bytes(to.as_bytes()));
        return read_trusted_at(&to, max, links + 1, secret);
    }
    let fd = rustix::fs::openat(
        &dir.fd,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::LOOP => refused(path, "it changed into a symbolic link while we opened it"),
        e => io_err(path, "open", e),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| io_err(path, "stat", e))?;
    trusted_file(&st, me, path, secret)?;
    let bytes = read_at_most(&File::from(fd), max, path)?;
    if bytes.len() > max {
        return Err(FileError::Content {
            path: path.to_path_buf(),
            reason: format!("larger than {max} bytes"),
        });
    }
    Ok(bytes)
}
