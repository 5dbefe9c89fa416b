//! Safe, atomic, durable reads and rewrites of files as root in directories other users own.
//!
//! The daemon runs as root and writes into `/home/<user>/.docker`. Such a user must not be able to
//! make it read, write, chmod or chown a file they do not own. So every path component is opened
//! relative to its parent's file descriptor with `O_NOFOLLOW`, its owner is checked on the opened
//! descriptor, symbolic links are followed only where root alone could have placed them, and the
//! final read/create/rename runs with the thread's filesystem uid and gid set to the target's owner,
//! so the kernel itself denies anything that user could not do. Nothing here knows auth files or
//! configs: `config` reads its file and `targets` write theirs through it.
//!
//! `walk` opens the way, `owner` decides who writes and what may be created, `write` replaces
//! files, `read` looks at them.

mod owner;
mod read;
mod walk;
mod write;

pub use read::{DirInfo, inspect, read, read_secret, read_sized, read_trusted, trusted_dir};

pub use walk::{nearest_dir, open_private_dir};
pub use write::{remove_stray_temp_files, update, update_shared, update_sized};

use std::path::{Path, PathBuf};

use rustix::fs::FileType;
use rustix::io::Errno;

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

/// Files larger than this are not ours to read or write (docker's own are a few KiB).
pub const MAX_FILE_SIZE: usize = 4 * 1024 * 1024;

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

/// Reads `file` up to `max + 1` bytes (so a caller can tell it was too large).
fn read_at_most(file: &std::fs::File, max: usize, path: &Path) -> Result<Vec<u8>, FileError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| FileError::Io {
            path: path.to_path_buf(),
            op: "read",
            source,
        })?;
    Ok(bytes)
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
