//! Who writes a file (its owner, by policy), and what may be created for it; acting as that owner.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::*;
use std::collections::BTreeSet;

use super::walk::{Dir, check_chain, walk_parent};

/// Sets the calling thread's filesystem uid/gid for as long as it lives (root only).
///
/// `setfsuid` is per thread and drops root's file capabilities (DAC override, chown, fowner) for
/// that thread, so the kernel treats our file operations as the user's.
pub(super) struct FsIdentity {
    saved: Option<(u32, u32)>,
}

impl FsIdentity {
    /// Acts as `owner` on this thread; refuses (rather than act as root) when the kernel did not
    /// take the change (no CAP_SETUID/CAP_SETGID), which `setfsuid` itself never reports.
    pub(super) fn become_user(owner: Owner, path: &Path) -> Result<FsIdentity, FileError> {
        if !rustix::process::geteuid().is_root() || owner.uid == 0 {
            return Ok(FsIdentity { saved: None });
        }
        let old_gid = nix::unistd::setfsgid(nix::unistd::Gid::from_raw(owner.gid)).as_raw();
        let old_uid = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(owner.uid)).as_raw();
        let id = FsIdentity {
            saved: Some((old_uid, old_gid)),
        };
        // An invalid id changes nothing and returns the current one.
        let now_uid = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(u32::MAX)).as_raw();
        let now_gid = nix::unistd::setfsgid(nix::unistd::Gid::from_raw(u32::MAX)).as_raw();
        if (now_uid, now_gid) != (owner.uid, owner.gid) {
            return Err(refused(
                path,
                format!(
                    "cannot act as {} (setfsuid/setfsgid did not take: CAP_SETUID/CAP_SETGID missing?)",
                    user_name(owner.uid)
                ),
            ));
        }
        Ok(id)
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
pub(super) struct FsGid {
    saved: Option<u32>,
}

impl FsGid {
    pub(super) fn set(owner: Owner, gid: u32) -> FsGid {
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

/// A target's directory, opened and checked, and who writes in it.
pub(super) struct Located {
    pub(super) dir: Dir,
    pub(super) name: std::ffi::OsString,
    pub(super) owner: Owner,
    /// The largest file read or written there.
    pub(super) limit: usize,
}

/// The home directory of `uid` in the passwd database.
pub(super) fn home_of(uid: u32) -> Option<PathBuf> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.dir)
}

/// Who writes a target, by its policy, from the existing directories on the way.
pub(super) fn resolve(
    policy: &OwnerPolicy,
    chain: &[Dir],
    path: &Path,
) -> Result<Owner, FileError> {
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
            refuse_sticky_inference(chain, path)?;
            let homes = (uid == 0).then(Homes::load);
            if let Some(homes) = homes
                && let Some(home) = chain
                    .windows(2)
                    .map(|w| &w[1])
                    .zip(chain.iter())
                    .find(|(d, up)| {
                        d.path.file_name().is_some_and(|n| {
                            homes.is_home(&up.path, Some((up.stat.st_dev, up.stat.st_ino)), n)
                        })
                    })
                    .map(|(d, _)| d)
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

/// With the owner inferred (no `user`), a directory below a sticky world-writable one (like /tmp)
/// belongs to whoever created it first: that is no owner to hand a token to.
fn refuse_sticky_inference(chain: &[Dir], path: &Path) -> Result<(), FileError> {
    for w in chain.windows(2) {
        let (up, d) = (&w[0], &w[1]);
        if up.stat.st_mode & 0o1002 == 0o1002 && d.stat.st_uid != 0 {
            return Err(refused(
                path,
                format!(
                    "{} belongs to {}, but it sits in {}, where anyone may create it first: set `user` for this target to say whose it is",
                    d.path.display(),
                    user_name(d.stat.st_uid),
                    up.path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Where home directories are: [`home_bases`] and every account's home but root's (system
/// accounts' too: a `portainer` service user made with `useradd -r`). Compared by path as
/// written and, for what exists, by device and inode, so a base reached through a link is
/// recognised too.
pub(super) struct Homes {
    bases: BTreeSet<PathBuf>,
    base_ids: Vec<(u64, u64)>,
    /// Each home as written, with its parent's identity when that exists.
    homes: Vec<(PathBuf, Option<(u64, u64)>)>,
}

fn id_of(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

impl Homes {
    pub(super) fn load() -> Homes {
        let bases = home_bases();
        let base_ids = bases.iter().filter_map(|b| id_of(b)).collect();
        let homes = passwd_homes(|uid| uid != 0)
            .into_iter()
            .filter(|h| h.parent().is_some())
            .map(|h| {
                let pid = h.parent().and_then(id_of);
                (h, pid)
            })
            .collect();
        Homes {
            bases,
            base_ids,
            homes,
        }
    }

    /// Whether `name` in the directory `parent` (`parent_id` when it exists) is a home, or where
    /// one goes (directly in a home base).
    pub(super) fn is_home(
        &self,
        parent: &Path,
        parent_id: Option<(u64, u64)>,
        name: &OsStr,
    ) -> bool {
        let in_base =
            self.bases.contains(parent) || parent_id.is_some_and(|id| self.base_ids.contains(&id));
        in_base
            || self.homes.iter().any(|(h, pid)| {
                h.file_name() == Some(name)
                    && (h.parent() == Some(parent) || (pid.is_some() && *pid == parent_id))
            })
    }

    /// Whether `dir` (to be created) is above some account's home or a home base.
    pub(super) fn is_above_a_home(&self, dir: &Path) -> bool {
        self.homes
            .iter()
            .map(|(h, _)| h)
            .chain(self.bases.iter())
            .any(|h| h != dir && h.starts_with(dir))
    }
}

/// The directories in which users' home directories live: `/home`, useradd's `HOME=` base, and the
/// parent of every regular user's home. Root never creates a directory there: it may be the home
/// of a user who does not exist yet, and `useradd -m` would then find a home it cannot write.
pub(super) fn home_bases() -> BTreeSet<PathBuf> {
    let mut bases = BTreeSet::from([PathBuf::from("/home")]);
    if let Ok(text) = std::fs::read_to_string("/etc/default/useradd") {
        for line in text.lines() {
            if let Some(v) = line.trim().strip_prefix("HOME=") {
                bases.insert(PathBuf::from(v.trim().trim_matches('"')));
            }
        }
    }
    for home in passwd_homes(|uid| (1000..65534).contains(&uid)) {
        // A user whose home sits at the top (`/app`) does not make `/` a place of homes.
        if let Some(parent) = home.parent().filter(|p| *p != Path::new("/")) {
            bases.insert(parent.to_path_buf());
        }
    }
    bases
}

/// The home directories of the passwd entries whose uid passes `keep` (never `/`).
pub(super) fn passwd_homes(keep: impl Fn(u32) -> bool) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/etc/passwd") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let uid: u32 = f.get(2)?.parse().ok()?;
            (keep(uid) && f.get(5).is_some_and(|h| h.starts_with('/') && *h != "/"))
                .then(|| PathBuf::from(f[5]))
        })
        .collect()
}

/// Whether `owner` may have `dir` created, as a new directory in `parent`, for a target.
///
/// A user's directories are created by that user (fsuid), only inside a directory they own, so
/// nothing is ever chowned. Root's are created by root in root-controlled directories, but never
/// where home directories live (see [`home_bases`]).
pub(super) fn may_create(
    dir: &Path,
    below: &[std::ffi::OsString],
    parent: &Dir,
    owner: Owner,
    path: &Path,
) -> Result<(), FileError> {
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
    let homes = Homes::load();
    let id = Some((parent.stat.st_dev, parent.stat.st_ino));
    let name_of = dir.file_name().unwrap_or_default();
    let deeper = below.iter().scan(dir.to_path_buf(), |at, name| {
        let up = at.clone();
        at.push(name);
        Some((up, at.clone()))
    });
    let mut home = homes.is_home(&parent.path, id, name_of) || homes.is_above_a_home(dir);
    for (up, d) in deeper {
        home |= homes.is_home(&up, None, d.file_name().unwrap_or_default())
            || homes.is_above_a_home(&d);
    }
    if home {
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
pub(super) fn locate(
    path: &Path,
    policy: &OwnerPolicy,
    create: bool,
) -> Result<Option<Located>, FileError> {
    locate_with(path, policy, create, PRIVATE_DIR)
}

/// The mode of a directory created for an auth file: its owner's alone.
pub(super) const PRIVATE_DIR: u32 = 0o700;

/// [`locate`], creating missing directories with `dir_mode` (whatever the umask).
pub(super) fn locate_with(
    path: &Path,
    policy: &OwnerPolicy,
    create: bool,
    dir_mode: u32,
) -> Result<Option<Located>, FileError> {
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
        may_create(&last.path.join(first), &missing[1..], last, owner, path)?;
    }
    for part in missing {
        let here = chain.last().ok_or_else(|| refused(path, "empty walk"))?;
        let shown = here.path.join(&part);
        let made = {
            let _id = FsIdentity::become_user(owner, path)?;
            match rustix::fs::mkdirat(&here.fd, part.as_os_str(), Mode::from_raw_mode(dir_mode)) {
                Ok(()) => true,
                Err(Errno::EXIST) => false,
                Err(e) => return Err(io_err(&shown, "create directory", e)),
            }
        };
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
        // Made by us just now: its mode whatever the umask (the unit's is 0077). Set as the
        // owner, on the directory opened and checked as theirs.
        if made && stat.st_mode & 0o7777 != dir_mode {
            let _id = FsIdentity::become_user(owner, path)?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(dir_mode))
                .map_err(|e| io_err(&shown, "chmod new directory", e))?;
        }
        let stat = rustix::fs::fstat(&fd).map_err(|e| io_err(&shown, "stat", e))?;
        let dir = Dir {
            fd,
            stat,
            path: shown,
        };
        check_chain(std::slice::from_ref(&dir), owner.uid, path)?;
        chain.push(dir);
    }
    let dir = chain.pop().ok_or_else(|| refused(path, "empty walk"))?;
    Ok(Some(Located {
        dir,
        name,
        owner,
        limit: MAX_FILE_SIZE,
    }))
}
