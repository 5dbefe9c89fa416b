//! Diagnosis of each target without calling AWS: will docker and podman use what we write?

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::{Settings, TargetSettings};
use crate::safe_fs::{self, Owner};
use crate::targets::authfile;
use crate::targets::files::owner_policy;

/// What `check` found for one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetDiagnosis {
    pub name: String,
    pub path: PathBuf,
    /// Who the file is written as, when that could be resolved.
    pub owner: Option<u32>,
    /// Problems that make the target fail: it will not be written.
    pub errors: Vec<String>,
    /// Problems that make docker or podman ignore what we write, or weaken it.
    pub warnings: Vec<String>,
    /// Something hides our entries from docker or podman: a `credsStore` or `credHelpers`
    /// entry in the file, or another auth file podman reads first.
    pub shadowed: bool,
}

/// The hosts a target manages, with their aliases.
pub fn managed_hosts(settings: &Settings, target: &TargetSettings) -> BTreeSet<String> {
    settings
        .registries
        .iter()
        .filter(|r| r.targets.covers(&target.name))
        .flat_map(|r| r.names())
        .map(str::to_string)
        .collect()
}

/// Diagnoses every target. `run_dir` is `/run` outside tests.
pub fn diagnose(settings: &Settings, run_dir: &Path) -> Vec<TargetDiagnosis> {
    settings
        .targets
        .iter()
        .map(|t| diagnose_target(settings, t, run_dir))
        .collect()
}

pub fn diagnose_target(
    settings: &Settings,
    target: &TargetSettings,
    run_dir: &Path,
) -> TargetDiagnosis {
    let hosts = managed_hosts(settings, target);
    let mut d = TargetDiagnosis {
        name: target.name.clone(),
        path: target.path.clone(),
        ..Default::default()
    };
    if hosts.is_empty() {
        d.warnings
            .push("no registry is written to this target".into());
    }
    // Everything below comes from the write path's own checked descriptors: a link swapped into
    // the path cannot make us report on (or read) a file that is not the owner's.
    let seen = match safe_fs::inspect(&target.path, owner_policy(target)) {
        Ok(s) => s,
        Err(e) => {
            d.errors.push(e.to_string());
            return d;
        }
    };
    let owner = seen.owner;
    d.owner = Some(owner.uid);
    let mode = seen.file.as_ref().map(|f| f.mode & 0o777);
    if let Some(f) = &seen.file {
        match authfile::parse(&f.bytes) {
            Err(e) => d.errors.push(format!("it will be left untouched: {e}")),
            Ok(map) => {
                let hidden = authfile::diagnose(&map, &hosts);
                d.shadowed |= !hidden.is_empty();
                d.warnings.extend(hidden);
            }
        }
    }
    if let Some(m) = target.mode.or(mode)
        && m & 0o077 != 0
    {
        d.warnings.push(format!(
            "mode {m:04o} lets others read the credentials; set mode = \"0600\""
        ));
    }
    d.warnings.extend(unreachable_dirs(&seen.dirs, owner));
    let hidden = podman_shadows(settings, target, owner, &hosts, run_dir);
    d.shadowed |= !hidden.is_empty();
    d.warnings.extend(hidden);
    // One per managed host at most, and a file's own hosts are few: a bound keeps a status
    // answer small whatever a user's file holds.
    if d.warnings.len() > MAX_WARNINGS {
        let more = d.warnings.len() - MAX_WARNINGS;
        d.warnings.truncate(MAX_WARNINGS);
        d.warnings.push(format!(
            "… and {more} more warnings (see `ecr-refresherd check`)"
        ));
    }
    d
}

/// Warnings kept per target.
const MAX_WARNINGS: usize = 16;

/// Directories on the way that the owner cannot enter, so their own tools cannot read the file.
fn unreachable_dirs(dirs: &[safe_fs::DirInfo], owner: Owner) -> Vec<String> {
    if owner.uid == 0 {
        return Vec::new();
    }
    let blocked = dirs.iter().find(|d| {
        let bit = if d.uid == owner.uid {
            0o100
        } else if d.gid == owner.gid {
            0o010
        } else {
            0o001
        };
        d.mode & bit == 0
    });
    blocked
        .map(|d| {
            format!(
                "user {} cannot enter {} (mode {:04o}), so their docker/podman cannot read this file",
                safe_fs::user_name(owner.uid),
                d.path.display(),
                d.mode
            )
        })
        .into_iter()
        .collect()
}

/// podman reads `/run/containers/<uid>/auth.json` (and `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `~/.config/containers/auth.json`) before `~/.docker/config.json`: an entry there for one of our
/// hosts that we do not manage shadows ours.
fn podman_shadows(
    settings: &Settings,
    target: &TargetSettings,
    owner: Owner,
    hosts: &BTreeSet<String>,
    run_dir: &Path,
) -> Vec<String> {
    let is_docker_config = target.path.file_name().is_some_and(|n| n == "config.json")
        && target
            .path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == ".docker");
    if !is_docker_config {
        return Vec::new();
    }
    let home = target.path.parent().and_then(Path::parent);
    let mut higher = vec![
        run_dir.join(format!("containers/{}/auth.json", owner.uid)),
        run_dir.join(format!("user/{}/containers/auth.json", owner.uid)),
    ];
    if let Some(home) = home {
        higher.push(home.join(".config/containers/auth.json"));
    }
    let mut out = Vec::new();
    for file in higher {
        let ours: BTreeSet<String> = settings
            .targets
            .iter()
            .filter(|t| t.path == file)
            .flat_map(|t| managed_hosts(settings, t))
            .collect();
        let Ok(Some(bytes)) = safe_fs::read(&file, safe_fs::OwnerPolicy::Inherit) else {
            continue;
        };
        let Ok(map) = authfile::parse(&bytes) else {
            continue;
        };
        for host in hosts {
            if !ours.contains(host) && authfile::has_entry_for(&map, host) {
                out.push(format!(
                    "{} holds another entry for {host}; podman reads that file first, so it never uses ours: add it as a target or remove the entry",
                    file.display()
                ));
            }
        }
    }
    out
}
