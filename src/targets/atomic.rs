//! Safe, atomic, durable rewrites of files in directories other users own (openat, O_NOFOLLOW, fsuid).
//!
//! The daemon runs as root and writes into `/home/<user>/.docker`. Such a user must not be able to
//! make it read, write, chmod or chown a file they do not own. So every path component is opened
//! relative to its parent's file descriptor with `O_NOFOLLOW`, its owner is checked on the opened
//! descriptor, symbolic links are followed only where root alone could have placed them, and the
//! final read/create/rename runs with the thread's filesystem uid and gid set to the target's owner,
//! so the kernel itself denies anything that user could not do.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Stat};
use rustix::io::Errno;

use crate::targets::authfile::MAX_FILE_SIZE;

/// A failure to update one file. The file is then as it was.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// We will not touch this path; `reason` says why and how to fix it.
    #[error("{}: refused: {reason}", path.display())]
    Refused { path: PathBuf, reason: String },
    #[error("{}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The content could not be merged (not JSON, ...); the file is left byte for byte.
    #[error("{}: left untouched: {reason}", path.display())]
    Content { path: PathBuf, reason: String },
    #[error("{}: the file kept changing while we wrote it (another writer); will retry", path.display())]
    Busy { path: PathBuf },
}

/// Who a file is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    /// The group for a new file; an existing file keeps its group.
    pub gid: u32,
}

/// How to choose the owner of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerPolicy {
    /// This uid (a number in the config, or the daemon itself).
    User { uid: u32, gid: Option<u32> },
    /// A user named in the config, looked up at each use: it may not exist yet (a `portainer`
    /// user created after the daemon started is picked up then).
    Named(String),
    /// The owner of the nearest existing ancestor directory.
    Inherit,
}

/// What happened to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    Unchanged,
}

/// The prefix of our temp files: `.<name>.ecr-refresherd-<random>.tmp`.
const TEMP_MARK: &str = ".ecr-refresherd-";
/// How often a read-modify-write is redone when another writer changes the file under us.
const MAX_ATTEMPTS: usize = 8;
/// Symbolic links followed in one path, like the kernel's limit.
const MAX_SYMLINKS: usize = 40;

fn io_err(path: &Path, op: &'static str, e: Errno) -> FileError {
    FileError::Io {
        path: path.to_path_buf(),
        op,
        source: e.into(),
    }
}

fn refused(path: &Path, reason: impl Into<String>) -> FileError {
    FileError::Refused {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The user name of `uid`, or the number when it has no passwd entry.
pub fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

fn primary_gid(uid: u32) -> Option<u32> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.gid.as_raw())
}

fn describe(ft: FileType) -> &'static str {
    match ft {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of an unknown type",
    }
}

/// A directory no one but root can change: owned by root, and not writable by a group or others
/// (unless sticky, where others may add entries but not replace root's).
fn root_controlled(st: &Stat) -> bool {
    let mode = st.st_mode;
    st.st_uid == 0
        && (mode & 0o002 == 0 || mode & 0o1000 != 0)
        && (mode & 0o020 == 0 || st.st_gid == 0 || mode & 0o1000 != 0)
}

/// Replaceable by someone other than its owner: writable by group (non-root) or others, not sticky.
fn writable_by_others(st: &Stat) -> bool {
    let mode = st.st_mode;
    mode & 0o1000 == 0 && (mode & 0o002 != 0 || (mode & 0o020 != 0 && st.st_gid != 0))
}

/// An opened directory on the way to a target.
struct Dir {
    fd: OwnedFd,
    stat: Stat,
    path: PathBuf,
}

/// Opens the parent directory of `path`, component by component, following only symbolic links that
/// sit in root-controlled directories. Missing directories are reported as `None` from the first
/// missing one on, with the last existing directory.
fn walk_parent(path: &Path) -> Result<(Vec<Dir>, Vec<std::ffi::OsString>), FileError> {
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
fn check_chain(chain: &[Dir], uid: u32, file: &Path) -> Result<(), FileError> {
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

/// Sets the calling thread's filesystem uid/gid for as long as it lives (root only).
///
/// `setfsuid` is per thread and drops root's file capabilities (DAC override, chown, fowner) for
/// that thread, so the kernel treats our file operations as the user's.
struct FsIdentity {
    saved: Option<(u32, u32)>,
}

impl FsIdentity {
    fn become_user(owner: Owner) -> FsIdentity {
        if !rustix::process::geteuid().is_root() || owner.uid == 0 {
            return FsIdentity { saved: None };
        }
        let old_gid = nix::unistd::setfsgid(nix::unistd::Gid::from_raw(owner.gid)).as_raw();
        let old_uid = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(owner.uid)).as_raw();
        FsIdentity {
            saved: Some((old_uid, old_gid)),
        }
    }
}

impl Drop for FsIdentity {
    fn drop(&mut self) {
        if let Some((uid, gid)) = self.saved {
            nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
            nix::unistd::setfsgid(nix::unistd::Gid::from_raw(gid));
        }
    }
}

/// Sets the thread's filesystem gid while it lives, when `FsIdentity` is in force.
struct FsGid {
    saved: Option<u32>,
}

impl FsGid {
    fn set(owner: Owner, gid: u32) -> FsGid {
        if !rustix::process::geteuid().is_root() || owner.uid == 0 || gid == owner.gid {
            return FsGid { saved: None };
        }
        let old = nix::unistd::setfsgid(nix::unistd::Gid::from_raw(gid)).as_raw();
        FsGid { saved: Some(old) }
    }
}

impl Drop for FsGid {
    fn drop(&mut self) {
        if let Some(gid) = self.saved {
            nix::unistd::setfsgid(nix::unistd::Gid::from_raw(gid));
        }
    }
}

/// The state of the target file when we read it; a rename happens only if it still matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Seen {
    fn of(st: &Stat) -> Seen {
        Seen {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime, st.st_ctime_nsec as i64),
        }
    }
}

/// A target's directory, opened and checked, and who writes in it.
struct Located {
    dir: Dir,
    name: std::ffi::OsString,
    owner: Owner,
}

/// The home directory of `uid` in the passwd database.
fn home_of(uid: u32) -> Option<PathBuf> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.dir)
}

/// Who writes a target, by its policy, from the existing directories on the way.
fn resolve(policy: &OwnerPolicy, chain: &[Dir], path: &Path) -> Result<Owner, FileError> {
    let last = chain.last().ok_or_else(|| refused(path, "empty walk"))?;
    Ok(match policy {
        OwnerPolicy::User { uid, gid } => Owner {
            uid: *uid,
            gid: gid
                .or_else(|| primary_gid(*uid))
                .unwrap_or(if last.stat.st_uid == *uid {
                    last.stat.st_gid
                } else {
                    *uid
                }),
        },
        OwnerPolicy::Named(name) => {
            let u = nix::unistd::User::from_name(name).ok().flatten().ok_or_else(|| {
                refused(
                    path,
                    format!(
                        "user {name:?} does not exist (yet); this target is written once it does"
                    ),
                )
            })?;
            Owner {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }
        }
        OwnerPolicy::Inherit => {
            let uid = last.stat.st_uid;
            // A root-owned home is a home being made (`useradd -m` creates it as root, then
            // chowns it) or made by hand: inferring "root" there would put root's files in
            // the user's home.
            let homes = (uid == 0).then(Homes::load);
            if let Some(homes) = homes
                && let Some(home) = chain.iter().find(|d| homes.is_home(&d.path))
            {
                return Err(refused(
                    path,
                    format!(
                        "{} is where a user's home directory goes, but root owns it (a home being created, or made by hand): not written as root; chown it to its user, or set user = \"root\" for this target",
                        home.path.display()
                    ),
                ));
            }
            Owner {
                uid,
                gid: primary_gid(uid).unwrap_or(last.stat.st_gid),
            }
        }
    })
}

/// Where home directories are: [`home_bases`] and every regular user's home (uid 1000 and up;
/// system accounts have homes like `/bin` or `/`).
struct Homes {
    bases: BTreeSet<PathBuf>,
    homes: Vec<PathBuf>,
}

impl Homes {
    fn load() -> Homes {
        Homes {
            bases: home_bases(),
            homes: passwd_homes(|uid| (1000..65534).contains(&uid)),
        }
    }

    /// A regular user's home, or a directory directly in a home base (never `/` itself).
    fn is_home(&self, dir: &Path) -> bool {
        dir.parent().is_some_and(|p| self.bases.contains(p))
            || (dir != Path::new("/") && self.homes.iter().any(|h| h == dir))
    }
}

/// The directories in which users' home directories live: `/home`, useradd's `HOME=` base, and the
/// parent of every regular user's home. Root never creates a directory there: it may be the home
/// of a user who does not exist yet, and `useradd -m` would then find a home it cannot write.
fn home_bases() -> BTreeSet<PathBuf> {
    let mut bases = BTreeSet::from([PathBuf::from("/home")]);
    if let Ok(text) = std::fs::read_to_string("/etc/default/useradd") {
        for line in text.lines() {
            if let Some(v) = line.trim().strip_prefix("HOME=") {
                bases.insert(PathBuf::from(v.trim().trim_matches('"')));
            }
        }
    }
    for home in passwd_homes(|uid| (1000..65534).contains(&uid)) {
        if let Some(parent) = home.parent() {
            bases.insert(parent.to_path_buf());
        }
    }
    bases
}

/// The home directories of the passwd entries whose uid passes `keep`.
fn passwd_homes(keep: impl Fn(u32) -> bool) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/etc/passwd") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let uid: u32 = f.get(2)?.parse().ok()?;
            (keep(uid) && f.get(5).is_some_and(|h| h.starts_with('/'))).then(|| PathBuf::from(f[5]))
        })
        .collect()
}

/// Whether `owner` may have `dir` created, as a new directory in `parent`, for a target.
///
/// A user's directories are created by that user (fsuid), only inside a directory they own, so
/// nothing is ever chowned. Root's are created by root in root-controlled directories, but never
/// where home directories live (see [`home_bases`]).
fn may_create(dir: &Path, parent: &Dir, owner: Owner, path: &Path) -> Result<(), FileError> {
    let name = user_name(owner.uid);
    if owner.uid != 0 {
        if parent.stat.st_uid == owner.uid {
            return Ok(());
        }
        let home = home_of(owner.uid);
        if let Some(home) = home.filter(|h| h.starts_with(dir)) {
            return Err(refused(
                path,
                format!(
                    "the home directory {} of {name} does not exist; we never create a home (useradd -m does); the target is written once it exists",
                    home.display()
                ),
            ));
        }
        return Err(refused(
            path,
            format!(
                "{} does not exist, and {name} may not create it in {} (owned by {}); create it with: install -d -o {name} -m 0700 {}",
                dir.display(),
                parent.path.display(),
                user_name(parent.stat.st_uid),
                dir.display()
            ),
        ));
    }
    if Homes::load().is_home(dir) {
        return Err(refused(
            path,
            format!(
                "{} does not exist, and it is where a user's home directory goes: we never create it as root (useradd -m would find a home its user cannot write); the target is written once the directory exists, or set `user` for it",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Resolves the owner and opens (creating if asked) the target's directory.
///
/// Nothing is ever chowned: a missing directory is created by the owner itself (its filesystem
/// uid), and the new directory is then accepted only if the owner owns it. A user who owns the
/// parent may swap anything into that name between our mkdir and our open; whatever we then find
/// must be theirs, which gives them nothing they did not already have.
fn locate(path: &Path, policy: &OwnerPolicy, create: bool) -> Result<Option<Located>, FileError> {
    let name = path
        .file_name()
        .ok_or_else(|| refused(path, "the path does not name a file"))?
        .to_os_string();
    let (mut chain, missing) = walk_parent(path)?;
    let owner = resolve(policy, &chain, path)?;
    let last = chain.last().ok_or_else(|| refused(path, "empty walk"))?;
    check_chain(&chain, owner.uid, path)?;
    if let Some(first) = missing.first() {
        if !create {
            return Ok(None);
        }
        may_create(&last.path.join(first), last, owner, path)?;
    }
    for part in missing {
        let here = chain.last().ok_or_else(|| refused(path, "empty walk"))?;
        let shown = here.path.join(&part);
        {
            let _id = FsIdentity::become_user(owner);
            match rustix::fs::mkdirat(&here.fd, part.as_os_str(), Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(io_err(&shown, "create directory", e)),
            }
        }
        let fd = rustix::fs::openat(
            &here.fd,
            part.as_os_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => refused(
                path,
                format!("{} changed while we created it", shown.display()),
            ),
            e => io_err(&shown, "open new directory", e),
        })?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| io_err(&shown, "stat", e))?;
        if stat.st_uid != owner.uid {
            return Err(refused(
                path,
                format!(
                    "{} appeared with owner {} while we created it for {}; not touched",
                    shown.display(),
                    user_name(stat.st_uid),
                    user_name(owner.uid)
                ),
            ));
        }
        let dir = Dir {
            fd,
            stat,
            path: shown,
        };
        check_chain(std::slice::from_ref(&dir), owner.uid, path)?;
        chain.push(dir);
    }
    let dir = chain.pop().ok_or_else(|| refused(path, "empty walk"))?;
    Ok(Some(Located { dir, name, owner }))
}

/// Reads the target as `owner`, checking what it is. `None` when it does not exist.
fn read_target(loc: &Located, path: &Path) -> Result<Option<Current>, FileError> {
    let st = match rustix::fs::statat(&loc.dir.fd, loc.name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
    {
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(io_err(path, "stat", e)),
        Ok(st) => st,
    };
    check_file(&st, loc.owner, path)?;
    let fd = rustix::fs::openat(
        &loc.dir.fd,
        loc.name.as_os_str(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::LOOP => refused(path, "the file is a symbolic link; we never follow it"),
        Errno::NOENT => FileError::Busy {
            path: path.to_path_buf(),
        },
        e => io_err(path, "open", e),
    })?;
    let opened = rustix::fs::fstat(&fd).map_err(|e| io_err(path, "stat", e))?;
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) {
        return Err(FileError::Busy {
            path: path.to_path_buf(),
        });
    }
    check_file(&opened, loc.owner, path)?;
    let mut bytes = Vec::new();
    let file = File::from(fd);
    (&file)
        .take(MAX_FILE_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| FileError::Io {
            path: path.to_path_buf(),
            op: "read",
            source,
        })?;
    Ok(Some(Current {
        bytes,
        stat: opened,
        _held: file,
    }))
}

/// A target as we read it. The open file is held until our rename is done: while it is open its
/// inode number cannot be reused by another writer's new file, so "the same inode" really means
/// the same file (no ABA between our read and our rename).
struct Current {
    bytes: Vec<u8>,
    stat: Stat,
    _held: File,
}

/// Refuses a target that is not a plain file of its owner with a single link.
fn check_file(st: &Stat, owner: Owner, path: &Path) -> Result<(), FileError> {
    let ft = FileType::from_raw_mode(st.st_mode);
    if ft == FileType::Symlink {
        return Err(refused(
            path,
            "the file is a symbolic link; we never follow it (replace it with a regular file)",
        ));
    }
    if ft != FileType::RegularFile {
        return Err(refused(
            path,
            format!("it is {}, not a regular file", describe(ft)),
        ));
    }
    if st.st_uid != owner.uid {
        let name = user_name(owner.uid);
        return Err(refused(
            path,
            format!(
                "the file belongs to {}, but this target is written as {name}; fix with: chown {name}: {}",
                user_name(st.st_uid),
                path.display()
            ),
        ));
    }
    if st.st_nlink > 1 {
        return Err(refused(
            path,
            format!(
                "the file has {} hard links; give it a single link (cp it to a new file and mv it over)",
                st.st_nlink
            ),
        ));
    }
    if st.st_size as u64 > MAX_FILE_SIZE as u64 {
        return Err(FileError::Content {
            path: path.to_path_buf(),
            reason: format!("larger than 4 MiB ({} bytes)", st.st_size),
        });
    }
    Ok(())
}

fn temp_name(name: &OsStr) -> std::ffi::OsString {
    let mut n = std::ffi::OsString::from(".");
    n.push(name);
    n.push(format!("{TEMP_MARK}{:016x}.tmp", rand::random::<u64>()));
    n
}

/// Reads a file, lets `change` compute its new content, and replaces it atomically and durably.
///
/// `change` gets the current bytes (`None` if the file does not exist) and returns the new bytes, or
/// `None` to leave the file as it is; an error from it leaves the file untouched. If another writer
/// replaces the file between our read and our rename, the whole cycle is redone on the new content.
/// `mode`: the mode to set; `None` keeps an existing file's mode (0600 for a new file).
pub fn update<E: std::fmt::Display>(
    path: &Path,
    policy: OwnerPolicy,
    mode: Option<u32>,
    mut change: impl FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, E>,
) -> Result<Outcome, FileError> {
    let loc =
        locate(path, &policy, true)?.ok_or_else(|| refused(path, "parent directory missing"))?;
    if !rustix::process::geteuid().is_root() && loc.owner.uid != rustix::process::geteuid().as_raw()
    {
        return Err(refused(
            path,
            format!("writing as {} needs root", user_name(loc.owner.uid)),
        ));
    }
    let _id = FsIdentity::become_user(loc.owner);
    for _ in 0..MAX_ATTEMPTS {
        let current = match read_target(&loc, path) {
            Err(FileError::Busy { .. }) => continue,
            other => other?,
        };
        let seen = current.as_ref().map(|c| Seen::of(&c.stat));
        let new = change(current.as_ref().map(|c| c.bytes.as_slice())).map_err(|e| {
            FileError::Content {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        let existing_mode = current.as_ref().map(|c| c.stat.st_mode & 0o777);
        let target_mode = mode.or(existing_mode).unwrap_or(0o600);
        let Some(new) = new else {
            // Content is right; still enforce a configured mode.
            if let (Some(m), Some(Current { stat: st, .. })) = (mode, &current)
                && st.st_mode & 0o777 != m
            {
                let fd = rustix::fs::openat(
                    &loc.dir.fd,
                    loc.name.as_os_str(),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io_err(path, "open", e))?;
                let st2 = rustix::fs::fstat(&fd).map_err(|e| io_err(path, "stat", e))?;
                check_file(&st2, loc.owner, path)?;
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(m))
                    .map_err(|e| io_err(path, "chmod", e))?;
                return Ok(Outcome::Written);
            }
            return Ok(Outcome::Unchanged);
        };
        // Never write what we would ourselves refuse to read back.
        if new.len() > MAX_FILE_SIZE {
            return Err(FileError::Content {
                path: path.to_path_buf(),
                reason: format!(
                    "the new content would be larger than 4 MiB ({} bytes); not written",
                    new.len()
                ),
            });
        }
        let gid = current.as_ref().map_or(loc.owner.gid, |c| c.stat.st_gid);
        match replace(&loc, path, &new, target_mode, gid, seen)? {
            true => return Ok(Outcome::Written),
            false => continue,
        }
    }
    Err(FileError::Busy {
        path: path.to_path_buf(),
    })
}

/// Writes `bytes` to a temp file and renames it over the target if the target is still as `seen`.
/// Returns false (and leaves no temp file) when the target changed meanwhile.
fn replace(
    loc: &Located,
    path: &Path,
    bytes: &[u8],
    mode: u32,
    gid: u32,
    seen: Option<Seen>,
) -> Result<bool, FileError> {
    let tmp = temp_name(&loc.name);
    // Create the temp file with the group it must end with: as the user we may not chown to a
    // group we are not in, but the kernel gives a new file our filesystem gid.
    let _gid = FsGid::set(loc.owner, gid);
    let fd = rustix::fs::openat(
        &loc.dir.fd,
        tmp.as_os_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| io_err(path, "create temp file", e))?;
    let ours = rustix::fs::fstat(&fd).map(|st| (st.st_dev, st.st_ino)).ok();
    // Removes the temp name only while it is still our file (after a swap-back race it may not be).
    let remove_ours = || {
        let at_tmp = rustix::fs::statat(&loc.dir.fd, tmp.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map(|st| (st.st_dev, st.st_ino))
            .ok();
        if at_tmp.is_some() && (at_tmp == ours || ours.is_none()) {
            let _ = rustix::fs::unlinkat(&loc.dir.fd, tmp.as_os_str(), AtFlags::empty());
        }
    };
    let cleanup = |e: FileError| {
        remove_ours();
        e
    };
    let result = (|| {
        let st = rustix::fs::fstat(&fd).map_err(|e| io_err(path, "stat temp file", e))?;
        if st.st_uid != loc.owner.uid || st.st_gid != gid {
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(loc.owner.uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .map_err(|e| io_err(path, "chown temp file", e))?;
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(|e| io_err(path, "chmod temp file", e))?;
        let mut file = File::from(fd);
        file.write_all(bytes).map_err(|source| FileError::Io {
            path: path.to_path_buf(),
            op: "write",
            source,
        })?;
        file.sync_all().map_err(|source| FileError::Io {
            path: path.to_path_buf(),
            op: "fsync",
            source,
        })?;
        let now = match rustix::fs::statat(
            &loc.dir.fd,
            loc.name.as_os_str(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => Some(Seen::of(&st)),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(io_err(path, "stat", e)),
        };
        if now != seen {
            return Ok(false);
        }
        if !install(loc, &tmp, seen, path)? {
            return Ok(false);
        }
        rustix::fs::fsync(&loc.dir.fd).map_err(|e| io_err(&loc.dir.path, "fsync directory", e))?;
        Ok(true)
    })();
    match result {
        Ok(true) => Ok(true),
        Ok(false) => {
            remove_ours();
            Ok(false)
        }
        Err(e) => Err(cleanup(e)),
    }
}

/// Puts the temp file in place of the target, but only over the very file we read.
///
/// A plain rename after a check leaves a window in which another writer's rename is overwritten.
/// So: swap the two names atomically (`RENAME_EXCHANGE`) and look at what came out; if it is not
/// the file we read, swap back at once and report `false` (redo). A target that did not exist is
/// created with `RENAME_NOREPLACE`. Where the file system has neither, a plain rename is used.
/// On success the temp name is gone.
fn install(loc: &Located, tmp: &OsStr, seen: Option<Seen>, path: &Path) -> Result<bool, FileError> {
    let (dir, name) = (&loc.dir.fd, loc.name.as_os_str());
    let plain = || {
        rustix::fs::renameat(dir, tmp, dir, name)
            .map(|()| true)
            .map_err(|e| io_err(path, "rename", e))
    };
    let Some(seen) = seen else {
        return match rustix::fs::renameat_with(dir, tmp, dir, name, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(true),
            Err(Errno::EXIST) => Ok(false),
            Err(Errno::INVAL | Errno::NOSYS) => plain(),
            Err(e) => Err(io_err(path, "rename", e)),
        };
    };
    match rustix::fs::renameat_with(dir, tmp, dir, name, RenameFlags::EXCHANGE) {
        Ok(()) => {}
        Err(Errno::NOENT) => return Ok(false), // deleted meanwhile
        Err(Errno::INVAL | Errno::NOSYS) => return plain(),
        Err(e) => return Err(io_err(path, "rename", e)),
    }
    let out = rustix::fs::statat(dir, tmp, AtFlags::SYMLINK_NOFOLLOW).map(|st| Seen::of(&st));
    if out
        .as_ref()
        .is_ok_and(|o| (o.dev, o.ino) == (seen.dev, seen.ino))
    {
        let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
        return Ok(true);
    }
    // Another writer replaced the file after our check: give its version back its name.
    rustix::fs::renameat_with(dir, tmp, dir, name, RenameFlags::EXCHANGE)
        .map_err(|e| io_err(path, "rename back", e))?;
    Ok(false)
}

/// Reads a target as its writer would, with the same checks, without creating anything.
/// `Ok(None)` when the file or its directory does not exist.
pub fn read(path: &Path, policy: OwnerPolicy) -> Result<Option<Vec<u8>>, FileError> {
    Ok(look(path, policy, false)?.file.map(|f| f.bytes))
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
    look(path, policy, true)
}

fn look(path: &Path, policy: OwnerPolicy, creatable: bool) -> Result<Inspection, FileError> {
    if path.file_name().is_none() {
        return Err(refused(path, "the path does not name a file"));
    }
    let (chain, missing) = walk_parent(path)?;
    let owner = resolve(&policy, &chain, path)?;
    let last = chain.last().ok_or_else(|| refused(path, "empty walk"))?;
    check_chain(&chain, owner.uid, path)?;
    if let Some(first) = missing.first().filter(|_| creatable) {
        may_create(&last.path.join(first), last, owner, path)?;
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
            };
            let _id = FsIdentity::become_user(owner);
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
    read_trusted_at(path, max, 0)
}

fn read_trusted_at(path: &Path, max: usize, links: usize) -> Result<Vec<u8>, FileError> {
    let me = rustix::process::geteuid().as_raw();
    let name = path
        .file_name()
        .ok_or_else(|| refused(path, "the path does not name a file"))?;
    let (chain, missing) = walk_parent(path)?;
    if !missing.is_empty() {
        return Err(io_err(path, "open", Errno::NOENT));
    }
    for d in &chain {
        if (d.stat.st_uid != 0 && d.stat.st_uid != me) || writable_by_others(&d.stat) {
            return Err(refused(
                path,
                format!(
                    "{} can be changed by {} (owner {}, mode {:04o}); a config root acts on must sit in directories only root can write",
                    d.path.display(),
                    if writable_by_others(&d.stat) {
                        "others"
                    } else {
                        "its owner"
                    },
                    user_name(d.stat.st_uid),
                    d.stat.st_mode & 0o7777
                ),
            ));
        }
    }
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
        return read_trusted_at(&to, max, links + 1);
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
    let mut bytes = Vec::new();
    File::from(fd)
        .take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| FileError::Io {
            path: path.to_path_buf(),
            op: "read",
            source,
        })?;
    if bytes.len() > max {
        return Err(FileError::Content {
            path: path.to_path_buf(),
            reason: format!("larger than {max} bytes"),
        });
    }
    Ok(bytes)
}

/// Removes temp files a crashed run of ours left beside a target. Returns how many were removed.
pub fn remove_stray_temp_files(path: &Path, policy: OwnerPolicy) -> Result<usize, FileError> {
    let Some(loc) = locate(path, &policy, false)? else {
        return Ok(0);
    };
    let _id = FsIdentity::become_user(loc.owner);
    let mut prefix = b".".to_vec();
    prefix.extend_from_slice(loc.name.as_bytes());
    prefix.extend_from_slice(TEMP_MARK.as_bytes());
    let fd = rustix::fs::openat(
        &loc.dir.fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(&loc.dir.path, "open", e))?;
    let dir = rustix::fs::Dir::read_from(&fd).map_err(|e| io_err(&loc.dir.path, "list", e))?;
    let mut removed = 0;
    for entry in dir {
        let entry = entry.map_err(|e| io_err(&loc.dir.path, "list", e))?;
        let name = entry.file_name().to_bytes();
        if name.starts_with(&prefix) && name.ends_with(b".tmp") {
            let name = OsStr::from_bytes(name);
            if let Ok(st) = rustix::fs::statat(&loc.dir.fd, name, AtFlags::SYMLINK_NOFOLLOW)
                && FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                && (st.st_uid == loc.owner.uid || st.st_uid == 0)
                && rustix::fs::unlinkat(&loc.dir.fd, name, AtFlags::empty()).is_ok()
            {
                removed += 1;
            }
        }
    }
    Ok(removed)
}
