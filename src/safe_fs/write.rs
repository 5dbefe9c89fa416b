//! Replacing a file atomically and durably, only over the very file we read; cleaning up after a crash.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Stat};
use rustix::io::Errno;

use super::*;

use super::owner::{FsGid, FsIdentity, Located, PRIVATE_DIR, locate, locate_with};

/// The state of the target file when we read it; a rename happens only if it still matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) size: i64,
    pub(super) mtime: (i64, i64),
    pub(super) ctime: (i64, i64),
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

/// Reads the target as `owner`, checking what it is. `None` when it does not exist.
pub(super) fn read_target(loc: &Located, path: &Path) -> Result<Option<Current>, FileError> {
    let st = match rustix::fs::statat(&loc.dir.fd, loc.name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
    {
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(io_err(path, "stat", e)),
        Ok(st) => st,
    };
    check_file(&st, loc, path)?;
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
    check_file(&opened, loc, path)?;
    let file = File::from(fd);
    let bytes = read_at_most(&file, loc.limit, path)?;
    Ok(Some(Current {
        bytes,
        stat: opened,
        _held: file,
    }))
}

/// A target as we read it. The open file is held until our rename is done: while it is open its
/// inode number cannot be reused by another writer's new file, so "the same inode" really means
/// the same file (no ABA between our read and our rename).
pub(super) struct Current {
    pub(super) bytes: Vec<u8>,
    pub(super) stat: Stat,
    pub(super) _held: File,
}

/// Refuses a target that is not a plain file of its owner with a single link.
pub(super) fn check_file(st: &Stat, loc: &Located, path: &Path) -> Result<(), FileError> {
    let owner = loc.owner;
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
    if st.st_size as u64 > loc.limit as u64 {
        return Err(FileError::Content {
            path: path.to_path_buf(),
            reason: format!(
                "larger than {} ({} bytes)",
                size_name(loc.limit),
                st.st_size
            ),
        });
    }
    Ok(())
}

/// "4 MiB" for the default limit, bytes otherwise.
fn size_name(limit: usize) -> String {
    if limit.is_multiple_of(1024 * 1024) {
        format!("{} MiB", limit / (1024 * 1024))
    } else {
        format!("{limit} bytes")
    }
}

pub(super) fn temp_name(name: &OsStr) -> std::ffi::OsString {
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
    change: impl FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, E>,
) -> Result<Outcome, FileError> {
    update_sized(path, policy, mode, MAX_FILE_SIZE, change)
}

/// [`update`], for a file that may be up to `limit` bytes (the daemon's own state).
pub fn update_sized<E: std::fmt::Display>(
    path: &Path,
    policy: OwnerPolicy,
    mode: Option<u32>,
    limit: usize,
    change: impl FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, E>,
) -> Result<Outcome, FileError> {
    update_in(path, policy, mode, limit, PRIVATE_DIR, change)
}

/// [`update`] of a file others read (the metrics file, which node_exporter reads as its own
/// user): a missing directory is created 0755, not 0700.
pub fn update_shared<E: std::fmt::Display>(
    path: &Path,
    policy: OwnerPolicy,
    mode: Option<u32>,
    change: impl FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, E>,
) -> Result<Outcome, FileError> {
    update_in(path, policy, mode, MAX_FILE_SIZE, 0o755, change)
}

fn update_in<E: std::fmt::Display>(
    path: &Path,
    policy: OwnerPolicy,
    mode: Option<u32>,
    limit: usize,
    dir_mode: u32,
    mut change: impl FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, E>,
) -> Result<Outcome, FileError> {
    let mut loc = locate_with(path, &policy, true, dir_mode)?
        .ok_or_else(|| refused(path, "parent directory missing"))?;
    loc.limit = limit;
    if !rustix::process::geteuid().is_root() && loc.owner.uid != rustix::process::geteuid().as_raw()
    {
        return Err(refused(
            path,
            format!("writing as {} needs root", user_name(loc.owner.uid)),
        ));
    }
    let _id = FsIdentity::become_user(loc.owner, path)?;
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
                check_file(&st2, &loc, path)?;
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(m))
                    .map_err(|e| io_err(path, "chmod", e))?;
                return Ok(Outcome::Written);
            }
            return Ok(Outcome::Unchanged);
        };
        // Never write what we would ourselves refuse to read back.
        if new.len() > loc.limit {
            return Err(FileError::Content {
                path: path.to_path_buf(),
                reason: format!(
                    "the new content would be larger than {} ({} bytes); not written",
                    size_name(loc.limit),
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
/// Gives our new temp file (created by us, as the owner, in this very call) its final group and
/// mode, its content, and makes it durable.
fn fill_temp(
    fd: OwnedFd,
    loc: &Located,
    gid: u32,
    mode: u32,
    bytes: &[u8],
    path: &Path,
) -> Result<(), FileError> {
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
    let io = |op: &'static str| {
        move |source| FileError::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    file.write_all(bytes).map_err(io("write"))?;
    file.sync_all().map_err(io("fsync"))
}

pub(super) fn replace(
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
        fill_temp(fd, loc, gid, mode, bytes, path)?;
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
        if !install(loc, &tmp, seen, ours, path)? {
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
/// the file we read, give the name back to the other writer's newest version (see
/// [`give_back`]) and report `false` (redo). A target that did not exist is created with
/// `RENAME_NOREPLACE`. Where the file system has neither, a plain rename is used. On success the
/// temp name is gone. `ours` is the temp file's identity.
pub(super) fn install(
    loc: &Located,
    tmp: &OsStr,
    seen: Option<Seen>,
    ours: Option<(u64, u64)>,
    path: &Path,
) -> Result<bool, FileError> {
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
    let out = identity_at(loc, tmp);
    if out == Some((seen.dev, seen.ino)) {
        let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
        return Ok(true);
    }
    // Another writer replaced the file after our check: its version is at the temp name now.
    give_back(loc, tmp, ours, path)?;
    Ok(false)
}

/// The most swaps [`give_back`] makes while other writers keep renaming.
const MAX_GIVE_BACK: usize = 16;

/// Gives the target's name back to the newest version another writer made, after our exchange
/// took it. Each swap puts the temp name's file at the target and shows what the target held:
/// if that is what we put there, nobody wrote meanwhile and the temp name holds a superseded
/// file (ours, or an older version of theirs), which goes. If it is anything else, a writer
/// renamed it there after us: it is the newest, and the next swap puts it back. (A single blind
/// swap-back would resurrect an older version over a rename that came between the two swaps.)
fn give_back(
    loc: &Located,
    tmp: &OsStr,
    ours: Option<(u64, u64)>,
    path: &Path,
) -> Result<(), FileError> {
    let (dir, name) = (&loc.dir.fd, loc.name.as_os_str());
    let swap = || {
        rustix::fs::renameat_with(dir, tmp, dir, name, RenameFlags::EXCHANGE)
            .map_err(|e| io_err(path, "rename back", e))
    };
    let Some(ours) = ours else {
        // Without our file's identity nothing can be told apart: one swap back.
        return swap();
    };
    // What we believe the target holds: our file, since the exchange.
    let mut at_name = Some(ours);
    for _ in 0..MAX_GIVE_BACK {
        let putting = identity_at(loc, tmp);
        swap()?;
        let came_out = identity_at(loc, tmp);
        if came_out.is_some() && came_out == at_name {
            let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
            return Ok(());
        }
        at_name = putting;
    }
    // Writers kept renaming through every swap: the target holds one of their versions; the
    // temp name is left to the caller (removed only if it is ours) and to the stray-file sweep.
    Ok(())
}

/// The (device, inode) at `name` in the target's directory, without following a link.
fn identity_at(loc: &Located, name: &OsStr) -> Option<(u64, u64)> {
    rustix::fs::statat(&loc.dir.fd, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| (st.st_dev, st.st_ino))
        .ok()
}

/// Removes temp files a crashed run of ours left beside a target. Returns how many were removed.
pub fn remove_stray_temp_files(path: &Path, policy: OwnerPolicy) -> Result<usize, FileError> {
    let Some(loc) = locate(path, &policy, false)? else {
        return Ok(0);
    };
    let _id = FsIdentity::become_user(loc.owner, path)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safe_fs::OwnerPolicy;
    use crate::safe_fs::owner::locate;

    /// Puts a new file (a new inode, as a writer's rename does) with `text` at `name` in `dir`.
    fn renamed_in(dir: &Path, name: &OsStr, text: &str) {
        let fresh = dir.join("fresh");
        std::fs::write(&fresh, text).unwrap();
        std::fs::rename(&fresh, dir.join(name)).unwrap();
    }

    /// After our exchange took the name (our file at the target, the other writer's version at
    /// the temp name), the name goes back to that writer's newest version: the one at the temp
    /// name, or one it renamed over ours before we could swap back (a single blind swap-back
    /// resurrected the older one: an entry the writer had removed came back in tests/races.rs).
    #[test]
    fn the_name_goes_back_to_the_other_writers_newest_version() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("config.json");
        let me = rustix::process::geteuid().as_raw();
        let policy = OwnerPolicy::User { uid: me, gid: None };
        let loc = locate(&path, &policy, false).unwrap().unwrap();
        let tmp = temp_name(&loc.name);
        let name = loc.name.clone();
        let read = |n: &OsStr| std::fs::read_to_string(d.path().join(n)).ok();

        // Nobody writes meanwhile: their version comes back, ours goes.
        renamed_in(d.path(), &name, "ours");
        let ours = identity_at(&loc, &name);
        renamed_in(d.path(), &tmp, "theirs");
        give_back(&loc, &tmp, ours, &path).unwrap();
        assert_eq!(read(&name).as_deref(), Some("theirs"));
        assert_eq!(read(&tmp), None);

        // The writer renames a newer version over ours before we swap back: that one stays.
        renamed_in(d.path(), &name, "ours");
        let ours = identity_at(&loc, &name);
        renamed_in(d.path(), &tmp, "theirs, older");
        renamed_in(d.path(), &name, "theirs, newer");
        give_back(&loc, &tmp, ours, &path).unwrap();
        assert_eq!(read(&name).as_deref(), Some("theirs, newer"));
        assert_eq!(
            read(&tmp),
            None,
            "the superseded version is not left behind"
        );
    }
}
