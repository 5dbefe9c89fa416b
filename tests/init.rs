//! `ecr-refresherd init`: the instance's registry from (a fake) IMDS, the auth files that exist in
//! a temp root, a config `check` accepts; `--write` makes a new 0600 file and never overwrites.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

/// A temp root: `daemon` (uid 1, as on this machine) with a docker config, `bin` (uid 2) with a
/// podman auth file only, `sys` (uid 3) with a home and nothing in it; podman installed.
fn root_fs(w: &World) -> std::path::PathBuf {
    let root = w.path("root-fs");
    let mk = |p: &str, uid: u32, body: Option<&str>| {
        let f = root.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        if let Some(b) = body {
            std::fs::write(&f, b).unwrap();
            chown(&f, uid, uid);
        }
    };
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/home/daemon:/bin/sh\nbin:x:2:2::/home/bin:/bin/sh\nsys:x:3:3::/home/sys:/bin/sh\n",
    )
    .unwrap();
    mk("root/.docker/x", 0, None);
    mk(
        "home/daemon/.docker/config.json",
        1,
        Some("{\"auths\": {}}"),
    );
    mk("home/bin/.config/containers/auth.json", 2, Some("{}"));
    std::fs::create_dir_all(root.join("home/sys")).unwrap();
    for (d, uid) in [
        ("home/daemon", 1),
        ("home/daemon/.docker", 1),
        ("home/bin", 2),
        ("home/bin/.config", 2),
        ("home/bin/.config/containers", 2),
        ("home/sys", 3),
    ] {
        chown(&root.join(d), uid, uid);
        chmod(&root.join(d), 0o700);
    }
    chmod(&root.join("home/daemon/.docker/config.json"), 0o600);
    chmod(&root.join("home/bin/.config/containers/auth.json"), 0o600);
    mk("usr/bin/podman", 0, Some("#!/bin/sh\n"));
    root
}

fn init(w: &World, args: &[&str], imds: bool) -> std::process::Output {
    let mut c = w.cmd();
    if imds {
        c.env_remove("AWS_EC2_METADATA_DISABLED");
    }
    c.arg("init").args(args);
    w.capture(c.output().expect("run init"))
}

#[test]
fn init_finds_the_registry_and_the_files_and_check_accepts_it() {
    require_root!();
    let w = World::new();
    w.fake.set_imds_identity("210987654321", "eu-west-1");
    let root = root_fs(&w);
    let out = init(&w, &["--root", root.to_str().unwrap()], true);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let v: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        v["registry"][0]["host"].as_str(),
        Some("210987654321.dkr.ecr.eu-west-1.amazonaws.com"),
        "{text}"
    );
    let targets: Vec<(String, String, Option<String>)> = v["target"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["path"].as_str().unwrap().to_string(),
                t.get("user").and_then(|u| u.as_str()).map(str::to_string),
            )
        })
        .collect();
    let r = |p: &str| root.join(p).display().to_string();
    assert_eq!(
        targets,
        [
            ("root".into(), r("root/.docker/config.json"), None),
            ("podman".into(), r("run/containers/0/auth.json"), None),
            (
                "daemon".into(),
                r("home/daemon/.docker/config.json"),
                Some("daemon".into())
            ),
            (
                "bin-podman".into(),
                r("home/bin/.config/containers/auth.json"),
                Some("bin".into())
            ),
        ],
        "a home with no auth file (sys) gets no target:\n{text}"
    );
    // Its output is a config `check` accepts (the podman target's directory is created by the
    // daemon; `check` says so without an error).
    let cfg = w.path("init.toml");
    std::fs::write(&cfg, &text).unwrap();
    let mut c = w.cmd();
    c.arg("--config").arg(&cfg).arg("check");
    let chk = w.capture(c.output().unwrap());
    assert!(
        code(&chk) <= 1 && !stdout(&chk).contains("ERROR"),
        "check of init's output: {}\n{}",
        stdout(&chk),
        stderr(&chk)
    );
}

#[test]
fn without_imds_the_placeholder_is_refused_by_check_with_what_to_do() {
    let w = World::new();
    let root = w.path("empty-root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let out = init(&w, &["--root", root.to_str().unwrap()], false);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(
        text.contains("ACCOUNT.dkr.ecr.REGION.amazonaws.com"),
        "{text}"
    );
    assert!(text.contains("disabled"), "says why: {text}");
    let cfg = w.path("init.toml");
    std::fs::write(&cfg, &text).unwrap();
    let mut c = w.cmd();
    c.arg("--config").arg(&cfg).arg("check");
    let chk = w.capture(c.output().unwrap());
    assert_eq!(code(&chk), 2, "{}", stdout(&chk));
    assert!(
        stderr(&chk).contains("init.toml:") && stderr(&chk).contains("ACCOUNT"),
        "a located error naming the placeholder: {}",
        stderr(&chk)
    );
}

#[test]
fn write_makes_a_new_0600_file_and_never_overwrites() {
    let w = World::new();
    let root = w.path("empty-root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let dest = w.path("etc-ecr/config.toml");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let out = init(
        &w,
        &[
            "--root",
            root.to_str().unwrap(),
            "--write",
            dest.to_str().unwrap(),
        ],
        false,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "written, not printed");
    let md = std::fs::metadata(&dest).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    let first = std::fs::read(&dest).unwrap();
    std::fs::write(&dest, "# mine\n").unwrap();
    let again = init(
        &w,
        &[
            "--root",
            root.to_str().unwrap(),
            "--write",
            dest.to_str().unwrap(),
        ],
        false,
    );
    assert_eq!(code(&again), 1);
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        b"# mine\n",
        "never over an existing file"
    );
    assert!(!first.is_empty());
    // No temp file left beside it.
    let left: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    // A link at the path is not written through either.
    let link = w.path("etc-ecr/link.toml");
    std::os::unix::fs::symlink(Path::new("/tmp/ecr-init-should-not-exist"), &link).unwrap();
    let out = init(
        &w,
        &[
            "--root",
            root.to_str().unwrap(),
            "--write",
            link.to_str().unwrap(),
        ],
        false,
    );
    assert_eq!(code(&out), 1);
    assert!(!Path::new("/tmp/ecr-init-should-not-exist").exists());
}

/// The one file `--write` replaces: the packaged config as installed, byte for byte (a fresh
/// package install ships it, and `init --write /etc/ecr-refresherd/config.toml` must work then).
/// The same file with one line of the operator's, or another no-settings file, is left alone.
#[test]
fn write_replaces_the_packaged_config_as_installed_and_nothing_else() {
    let w = World::new();
    let root = w.path("empty-root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let dest = w.path("etc-ecr/config.toml");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let packaged = ecr_refresherd::config::packaged_config();
    let write = |w: &World| {
        init(
            w,
            &[
                "--root",
                root.to_str().unwrap(),
                "--write",
                dest.to_str().unwrap(),
            ],
            false,
        )
    };
    for kept in [
        format!("{packaged}# the operator's note\n"),
        "# mine, no settings\n".to_string(),
        packaged.replacen("# ", "#  ", 1),
    ] {
        std::fs::write(&dest, &kept).unwrap();
        let out = write(&w);
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        assert!(
            stderr(&out).contains("init never writes over a file"),
            "{}",
            stderr(&out)
        );
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), kept);
    }
    std::fs::write(&dest, &packaged).unwrap();
    chmod(&dest, 0o600);
    let out = write(&w);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = std::fs::read_to_string(&dest).unwrap();
    assert!(
        text.contains("[[target]]") && text.contains("made by `ecr-refresherd init`"),
        "{text}"
    );
    let md = std::fs::metadata(&dest).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    // The old file went; no temp file is left beside the new one.
    let left: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("config.toml")]);
    // Now it is the operator's: a second run leaves it alone.
    let again = write(&w);
    assert_eq!(code(&again), 1);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), text);
}
