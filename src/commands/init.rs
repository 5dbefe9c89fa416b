//! `ecr-refresherd init`: a config for this host — its instance's registry and the auth files that exist — on stdout, or written once to an explicit path.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::ecr::registry::{Partition, Registry, partition_of_region};
use crate::startup::exit;

/// The registry line when IMDS gives no identity: `check` refuses it, saying what to put there.
const PLACEHOLDER: &str = "ACCOUNT.dkr.ecr.REGION.amazonaws.com";

/// One account of the system: name, uid, home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Account {
    pub name: String,
    pub uid: u32,
    pub home: PathBuf,
}

/// A proposed target: (name, path, user, why).
pub(crate) type Proposed = (String, PathBuf, Option<String>, String);

/// What `init` found, for the text.
#[derive(Debug)]
pub(crate) struct Found {
    /// The instance's registry host, or why there is none.
    pub registry: Result<String, String>,
    /// Each target, root's docker config first.
    pub targets: Vec<Proposed>,
    /// Auth files found but not proposed, each with why (the daemon would refuse it, ...).
    pub left_out: Vec<String>,
}

/// The registry host of an account in a region, in its partition's domain.
pub(crate) fn host_for(account: &str, region: &str) -> String {
    let domain = match partition_of_region(region) {
        Partition::Aws | Partition::AwsUsGov => "amazonaws.com",
        Partition::AwsCn => "amazonaws.com.cn",
        Partition::AwsEusc => "amazonaws.eu",
        Partition::AwsIso => "c2s.ic.gov",
        Partition::AwsIsoB => "sc2s.sgov.gov",
        Partition::AwsIsoE => "cloud.adc-e.uk",
        Partition::AwsIsoF => "csp.hci.ic.gov",
    };
    format!("{account}.dkr.ecr.{region}.{domain}")
}

/// The accounts of `passwd` (its text), in file order.
pub(crate) fn accounts(passwd: &str) -> Vec<Account> {
    passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(Account {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                home: PathBuf::from(f.get(5)?),
            })
        })
        .collect()
}

/// The targets for this host under `root` (`/` outside tests): root's docker config always; each
/// account's docker config and podman auth file that exist and that the daemon would write as
/// that account; podman's `/run/containers/0` file for root when podman is installed. Returns
/// them, and the files left out with why.
pub(crate) fn targets(root: &Path, accounts: &[Account]) -> (Vec<Proposed>, Vec<String>) {
    let under = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let mut out = vec![(
        "root".to_string(),
        under(Path::new("/root/.docker/config.json")),
        None,
        "root's docker and docker compose (created if missing)".to_string(),
    )];
    let mut left_out = Vec::new();
    let podman = ["/usr/bin/podman", "/usr/local/bin/podman"]
        .iter()
        .any(|p| under(Path::new(p)).exists());
    if podman {
        out.push((
            "podman".into(),
            under(Path::new("/run/containers/0/auth.json")),
            None,
            "podman, skopeo and buildah as root read this first".into(),
        ));
    }
    for a in accounts {
        if a.uid == 0 || a.home.as_os_str().is_empty() || a.home == Path::new("/") {
            continue;
        }
        let home = under(&a.home);
        for (rel, kind, why) in [
            (".docker/config.json", "docker", "docker config"),
            (".config/containers/auth.json", "podman", "podman auth file"),
        ] {
            let p = home.join(rel);
            // Only what exists: a file whose directories the user made (never created above a
            // home by root).
            if std::fs::symlink_metadata(&p).is_err() {
                continue;
            }
            // A home shared with another account (`operator`'s is /root): one target a path.
            if let Some((other, ..)) = out.iter().find(|t| t.1 == p) {
                left_out.push(format!(
                    "{}: {}'s {why} is also the target {other:?} above (a shared home)",
                    p.display(),
                    a.name
                ));
                continue;
            }
            // What the daemon would do with it, written as this account: the same walk and
            // checks (no link of the user's followed, the file theirs, one link), then parsed.
            let owner = crate::safe_fs::OwnerPolicy::User {
                uid: a.uid,
                gid: None,
            };
            let refusal = match crate::safe_fs::read(&p, owner) {
                Ok(Some(bytes)) => crate::targets::authfile::parse(&bytes)
                    .err()
                    .map(|e| format!("{}: it would be left untouched: {e}", p.display())),
                Ok(None) => continue,
                Err(e) => Some(e.to_string()),
            };
            if let Some(why_not) = refusal {
                left_out.push(format!(
                    "{}'s {why}, as the daemon would refuse it: {why_not}",
                    a.name
                ));
                continue;
            }
            let base = if kind == "docker" {
                a.name.clone()
            } else {
                format!("{}-podman", a.name)
            };
            let name = unique_name(&out, base, a.uid);
            // A name of digits would be read as a uid: give the uid itself.
            let user = if a.name.parse::<u32>().is_ok() {
                a.uid.to_string()
            } else {
                a.name.clone()
            };
            out.push((name, p, Some(user), format!("{}'s {why}", a.name)));
        }
    }
    (out, left_out)
}

/// `base`, or a variant no target has yet (an account named `podman` beside root's podman).
fn unique_name(out: &[Proposed], base: String, uid: u32) -> String {
    let taken = |n: &str| out.iter().any(|t| t.0 == n);
    if !taken(&base) {
        return base;
    }
    let mut name = format!("{base}-{uid}");
    let mut n = 2;
    while taken(&name) {
        name = format!("{base}-{uid}-{n}");
        n += 1;
    }
    name
}

/// `s` as one comment line: nothing in it can end the comment or act on a terminal.
fn comment(s: &str) -> String {
    crate::escape::shown(s).into_owned()
}

/// The config text for what was found.
pub(crate) fn render(found: &Found) -> String {
    let mut t = String::from(
        "# ecr-refresherd config for this host, made by `ecr-refresherd init`.\n\
         # Check it with `ecr-refresherd --config FILE check`; every key: config.example.toml.\n\n",
    );
    match &found.registry {
        Ok(host) => {
            let _ = writeln!(
                t,
                "# This instance's account and region (instance metadata)."
            );
            let _ = writeln!(t, "[[registry]]\nhost = \"{host}\"");
        }
        Err(why) => {
            let why = comment(why);
            let _ = writeln!(
                t,
                "# Instance metadata gave no identity ({why}): put your registry's account and region\n\
                 # here; `check` refuses the placeholder until you do."
            );
            let _ = writeln!(t, "[[registry]]\nhost = \"{PLACEHOLDER}\"");
        }
    }
    t.push_str(
        "# More registries (any account, region, partition; public.ecr.aws): one [[registry]] each.\n",
    );
    for (name, path, user, why) in &found.targets {
        let _ = writeln!(t, "\n# {}.", comment(why));
        let _ = writeln!(t, "[[target]]\nname = {}", toml_str(name));
        let _ = writeln!(t, "path = {}", toml_str(&path.display().to_string()));
        if let Some(u) = user {
            let _ = writeln!(t, "user = {}", toml_str(u));
        }
    }
    if !found.left_out.is_empty() {
        t.push_str("\n# Found but not proposed:\n");
        for l in &found.left_out {
            let _ = writeln!(t, "# - {}", comment(l));
        }
    }
    t
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `init [--write PATH]`: finds, renders, prints or writes (0600, atomically, never over a file).
pub async fn init(root: &Path, write: Option<&Path>) -> u8 {
    let registry = match crate::ecr::token::instance_identity().await {
        Ok((account, region)) => {
            let host = host_for(&account, &region);
            match Registry::parse(&host) {
                Ok(_) => Ok(host),
                Err(e) => Err(format!("its registry {host:?} is not an ECR host: {e}")),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let (targets, left_out) = targets(root, &accounts(&passwd));
    let found = Found {
        registry,
        targets,
        left_out,
    };
    let text = render(&found);
    match write {
        None => {
            print!("{text}");
            exit::OK
        }
        Some(path) => match write_new(path, text.as_bytes()) {
            Ok(()) => {
                eprintln!(
                    "ecr-refresherd: wrote {} (0600)",
                    crate::escape::shown(&path.display().to_string())
                );
                exit::OK
            }
            Err(e) => {
                eprintln!(
                    "ecr-refresherd: {}: {e}",
                    crate::escape::shown(&path.display().to_string())
                );
                exit::FAILED
            }
        },
    }
}

/// Writes `bytes` to a new file at `path`: a 0600 temp file beside it, fsynced, then renamed in
/// only if nothing is there (`RENAME_NOREPLACE`): never over an existing file, never
/// half-written. The one exception is the packaged config left as installed (comments only,
/// byte for byte [`crate::config::packaged_config`]): nothing of the operator's is in it, so it
/// is exchanged for the new file, as `sudo ecr-refresherd init --write` after installing expects. The directory must be one the daemon would read a config from (root's alone,
/// as `read_trusted` checks), and every step goes through its descriptor: no one can swap it
/// for a link between the steps to make root write elsewhere.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
    let path = std::path::absolute(path).map_err(|e| e.to_string())?;
    let name = path.file_name().ok_or("give a file name")?;
    let dir = crate::safe_fs::trusted_dir(&path).map_err(|e| match e {
        crate::safe_fs::FileError::Refused { reason, .. } => {
            format!("{reason}; the daemon would not read a config there")
        }
        e => e.to_string(),
    })?;
    // The one file it replaces: the packaged config as installed (comments only, byte for byte).
    let packaged = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(_) => None,
        Ok(_) => Some(packaged_as_installed(&dir, name)?),
    };
    // A random name: in a sticky directory (/tmp) anyone may take a predictable one first.
    let tmp = format!(
        ".{}.init-{:016x}",
        name.to_string_lossy(),
        rand::random::<u64>()
    );
    let fd = rustix::fs::openat(
        &dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| format!("cannot create a file in {}: {e}", dir_shown(&path)))?;
    let mut f = std::fs::File::from(fd);
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written {
        let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        return Err(e.to_string());
    }
    if let Some(installed) = packaged {
        return swap_in(&dir, &tmp, name, installed);
    }
    let renamed = rustix::fs::renameat_with(&dir, tmp.as_str(), &dir, name, RenameFlags::NOREPLACE);
    if let Err(e) = renamed {
        let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        return Err(if e == rustix::io::Errno::EXIST {
            "exists; init never writes over a file".into()
        } else {
            e.to_string()
        });
    }
    let _ = rustix::fs::fsync(&dir);
    Ok(())
}

/// `(device, inode)` of the file at `name` in `dir` when it is the packaged config as installed;
/// else why init leaves it alone.
fn packaged_as_installed(
    dir: &rustix::fd::OwnedFd,
    name: &std::ffi::OsStr,
) -> Result<(u64, u64), String> {
    use rustix::fs::{Mode, OFlags};
    use std::io::Read as _;
    const NEVER: &str = "exists; init never writes over a file (print it instead and compare)";
    let want = crate::config::packaged_config();
    let Ok(fd) = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return Err(NEVER.into());
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| e.to_string())?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(NEVER.into());
    }
    let mut text = Vec::new();
    let _ = std::fs::File::from(fd)
        .take(want.len() as u64 + 1)
        .read_to_end(&mut text);
    if text == want.as_bytes() {
        return Ok((st.st_dev, st.st_ino));
    }
    let says_nothing = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_some_and(|t| t.is_empty());
    Err(if says_nothing {
        "exists, with no settings but not as packaged (edited, or another version's): init never \
         writes over a file it did not install; remove it first, or print the config and compare"
            .into()
    } else {
        NEVER.into()
    })
}

/// Exchanges the new file at `tmp` with the installed one at `name` (`RENAME_EXCHANGE`), then
/// removes the old one, which must still be the file that was read: anything else is put back.
fn swap_in(
    dir: &rustix::fd::OwnedFd,
    tmp: &str,
    name: &std::ffi::OsStr,
    installed: (u64, u64),
) -> Result<(), String> {
    use rustix::fs::{AtFlags, RenameFlags};
    let undo = |e: String| {
        let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
        e
    };
    rustix::fs::renameat_with(dir, tmp, dir, name, RenameFlags::EXCHANGE)
        .map_err(|e| undo(format!("cannot replace the packaged config: {e}")))?;
    let old = rustix::fs::statat(dir, tmp, AtFlags::SYMLINK_NOFOLLOW);
    if old.is_ok_and(|st| (st.st_dev, st.st_ino) == installed) {
        let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
        let _ = rustix::fs::fsync(dir);
        return Ok(());
    }
    // Someone replaced it while init ran: theirs goes back, ours goes.
    let _ = rustix::fs::renameat_with(dir, tmp, dir, name, RenameFlags::EXCHANGE);
    Err(undo(
        "changed while init ran; init never writes over a file it did not install".into(),
    ))
}

fn dir_shown(path: &Path) -> String {
    path.parent()
        .map(|d| crate::escape::shown(&d.display().to_string()).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_in_each_partition() {
        assert_eq!(
            host_for("123456789012", "us-east-1"),
            "123456789012.dkr.ecr.us-east-1.amazonaws.com"
        );
        assert_eq!(
            host_for("123456789012", "cn-north-1"),
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            host_for("123456789012", "us-gov-west-1"),
            "123456789012.dkr.ecr.us-gov-west-1.amazonaws.com"
        );
        for r in ["us-east-1", "cn-north-1", "us-gov-west-1", "eusc-de-east-1"] {
            assert!(Registry::parse(&host_for("123456789012", r)).is_ok(), "{r}");
        }
    }

    #[test]
    fn passwd_lines() {
        let a = accounts(
            "root:x:0:0:root:/root:/bin/bash\n# c\nbad\nci:x:1000:1000::/home/ci:/bin/sh\n",
        );
        assert_eq!(a.len(), 2);
        assert_eq!(
            a[1],
            Account {
                name: "ci".into(),
                uid: 1000,
                home: "/home/ci".into()
            }
        );
    }

    #[test]
    fn the_placeholder_is_said_and_names_are_quoted() {
        let f = Found {
            registry: Err("instance metadata is disabled".into()),
            targets: vec![(
                "we\"ird".into(),
                "/home/a b/.docker/config.json".into(),
                Some("a".into()),
                "x".into(),
            )],
            left_out: vec![
                "/home/b/.docker/config.json\n[[target]]\npath = \"/etc/shadow\"".into(),
            ],
        };
        let t = render(&f);
        assert!(t.contains(&format!("host = \"{PLACEHOLDER}\"")), "{t}");
        let v: toml::Value = toml::from_str(&t).unwrap();
        assert_eq!(v["target"][0]["name"].as_str(), Some("we\"ird"), "{t}");
        assert_eq!(
            v["target"][0]["path"].as_str(),
            Some("/home/a b/.docker/config.json")
        );
        // What was left out stays in its comment, whatever it holds.
        assert_eq!(v["target"].as_array().map(Vec::len), Some(1), "{t}");
    }
}
