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

/// What `init` found, for the text.
#[derive(Debug)]
pub(crate) struct Found {
    /// The instance's registry host, or why there is none.
    pub registry: Result<String, String>,
    /// (name, path, user, why) of each target, root's docker config first.
    pub targets: Vec<(String, PathBuf, Option<String>, String)>,
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
/// account's docker config and podman auth file that exist; podman's `/run/containers/0` file for
/// root when podman is installed.
pub(crate) fn targets(
    root: &Path,
    accounts: &[Account],
) -> Vec<(String, PathBuf, Option<String>, String)> {
    let under = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let mut out = vec![(
        "root".to_string(),
        under(Path::new("/root/.docker/config.json")),
        None,
        "root's docker and docker compose (created if missing)".to_string(),
    )];
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
            // home by root). Symlinks are not followed to decide.
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
                let name = if kind == "docker" {
                    a.name.clone()
                } else {
                    format!("{}-podman", a.name)
                };
                out.push((name, p, Some(a.name.clone()), format!("{}'s {why}", a.name)));
            }
        }
    }
    out
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
            let why: String = why
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
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
        let why: String = why
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let _ = writeln!(t, "\n# {why}.");
        let _ = writeln!(t, "[[target]]\nname = {}", toml_str(name));
        let _ = writeln!(t, "path = {}", toml_str(&path.display().to_string()));
        if let Some(u) = user {
            let _ = writeln!(t, "user = {}", toml_str(u));
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
    let found = Found {
        registry,
        targets: targets(root, &accounts(&passwd)),
    };
    let text = render(&found);
    match write {
        None => {
            print!("{text}");
            exit::OK
        }
        Some(path) => match write_new(path, text.as_bytes()) {
            Ok(()) => {
                eprintln!("ecr-refresherd: wrote {} (0600)", path.display());
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
/// only if nothing is there (`RENAME_NOREPLACE`): never over an existing file, never half-written.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or("give a path with its directory")?;
    let name = path.file_name().ok_or("give a file name")?;
    if std::fs::symlink_metadata(path).is_ok() {
        return Err("exists; init never writes over a file (print it instead and compare)".into());
    }
    let tmp = dir.join(format!(
        ".{}.init-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| format!("cannot create a file in {}: {e}", dir.display()))?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.to_string());
    }
    let renamed = rustix::fs::renameat_with(
        rustix::fs::CWD,
        &tmp,
        rustix::fs::CWD,
        path,
        rustix::fs::RenameFlags::NOREPLACE,
    );
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&tmp);
        return Err(if e == rustix::io::Errno::EXIST {
            "exists; init never writes over a file".into()
        } else {
            e.to_string()
        });
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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
        };
        let t = render(&f);
        assert!(t.contains(&format!("host = \"{PLACEHOLDER}\"")), "{t}");
        let v: toml::Value = toml::from_str(&t).unwrap();
        assert_eq!(v["target"][0]["name"].as_str(), Some("we\"ird"), "{t}");
        assert_eq!(
            v["target"][0]["path"].as_str(),
            Some("/home/a b/.docker/config.json")
        );
    }
}
