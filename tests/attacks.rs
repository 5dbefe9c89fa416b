//! A target directory's owner attacks the root daemon: symlinks, hardlinks, foreign directories.
//! None of it may make the daemon read, write, chmod or chown a file that user does not own.

mod common;

use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;

use common::*;

/// An unprivileged uid with no passwd entry, so the machine's accounts are not touched.
const USER: u32 = 4242;
const OTHER: u32 = 4343;

/// `<dir>/secret`: a root-owned 0600 file the attacker wants us to clobber or leak.
fn sentinel(w: &World) -> std::path::PathBuf {
    let p = w.path("secret");
    std::fs::write(&p, "root:$6$do-not-touch\n").unwrap();
    chmod(&p, 0o600);
    p
}

/// `<dir>/home/user`, owned by USER, like /home/portainer.
fn home(w: &World) -> std::path::PathBuf {
    let h = w.path("home/user");
    std::fs::create_dir_all(&h).unwrap();
    chown(&h, USER, USER);
    h
}

fn config_for(w: &World, target: &Path) {
    w.config(&format!(
        "[daemon]\nstate_dir = \"{{dir}}/state\"\n[[registry]]\nhost = \"{H1}\"\n[[target]]\npath = \"{}\"\n",
        target.display()
    ));
}

fn assert_refused(w: &World, target: &Path, why: &str) {
    let out = w.run(&["once"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}\n{}", stderr(&out));
    let line = text
        .lines()
        .find(|l| l.starts_with("target "))
        .unwrap_or_else(|| panic!("no target line:\n{text}"));
    assert!(
        line.contains("FAILED") && line.contains("refused") && line.contains(why),
        "want refusal with {why:?}, got: {line}"
    );
    assert!(line.contains(&target.display().to_string()), "{line}");
}

#[test]
fn symlink_at_the_target_is_never_followed() {
    require_root!();
    let w = World::new();
    let secret = sentinel(&w);
    let before = Sentinel::of(&secret);
    let docker = home(&w).join(".docker");
    std::fs::create_dir(&docker).unwrap();
    chown(&docker, USER, USER);
    let target = docker.join("config.json");
    symlink(&secret, &target).unwrap();
    std::os::unix::fs::lchown(&target, Some(USER), Some(USER)).unwrap();
    config_for(&w, &target);
    assert_refused(&w, &target, "symbolic link");
    assert_eq!(Sentinel::of(&secret), before);
    assert!(
        std::fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link itself stays"
    );
}

#[test]
fn symlinked_docker_dir_owned_by_the_user_is_never_followed() {
    require_root!();
    let w = World::new();
    let secret_dir = w.path("rootonly");
    std::fs::create_dir(&secret_dir).unwrap();
    chmod(&secret_dir, 0o700);
    let secret = secret_dir.join("config.json");
    std::fs::write(&secret, "{\"auths\": {}}").unwrap();
    chmod(&secret, 0o600);
    let before = Sentinel::of(&secret);
    let h = home(&w);
    let docker = h.join(".docker");
    symlink(&secret_dir, &docker).unwrap();
    std::os::unix::fs::lchown(&docker, Some(USER), Some(USER)).unwrap();
    let target = docker.join("config.json");
    config_for(&w, &target);
    assert_refused(&w, &target, "symbolic link");
    assert_eq!(Sentinel::of(&secret), before);
    let names: Vec<_> = std::fs::read_dir(&secret_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["config.json"],
        "no temp file was created in the root-only dir"
    );
}

#[test]
fn hardlink_to_a_root_file_is_refused() {
    require_root!();
    let w = World::new();
    let secret = sentinel(&w);
    let docker = home(&w).join(".docker");
    std::fs::create_dir(&docker).unwrap();
    chown(&docker, USER, USER);
    let target = docker.join("config.json");
    std::fs::hard_link(&secret, &target).unwrap();
    let before = Sentinel::of(&secret);
    config_for(&w, &target);
    assert_refused(&w, &target, "belongs to root");
    assert_eq!(Sentinel::of(&secret), before);
}

#[test]
fn hardlinked_file_of_the_user_is_refused() {
    require_root!();
    let w = World::new();
    let h = home(&w);
    let docker = h.join(".docker");
    std::fs::create_dir(&docker).unwrap();
    chown(&docker, USER, USER);
    let target = docker.join("config.json");
    std::fs::write(&target, "{}").unwrap();
    chown(&target, USER, USER);
    std::fs::hard_link(&target, h.join("second-link")).unwrap();
    config_for(&w, &target);
    assert_refused(&w, &target, "hard links");
}

#[test]
fn a_root_owned_file_in_a_users_dir_is_refused_with_the_fix() {
    require_root!();
    let w = World::new();
    let docker = home(&w).join(".docker");
    std::fs::create_dir(&docker).unwrap();
    chown(&docker, USER, USER);
    let target = docker.join("config.json");
    std::fs::write(&target, "{}").unwrap(); // left by `sudo docker login`
    config_for(&w, &target);
    assert_refused(&w, &target, &format!("chown {USER}: {}", target.display()));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "{}");
}

#[test]
fn a_directory_of_another_user_on_the_way_is_refused() {
    require_root!();
    let w = World::new();
    let h = home(&w);
    let docker = h.join(".docker");
    std::fs::create_dir(&docker).unwrap();
    chown(&docker, OTHER, OTHER);
    let target = docker.join("config.json");
    w.config(&format!(
        "[daemon]\nstate_dir = \"{{dir}}/state\"\n[[registry]]\nhost = \"{H1}\"\n[[target]]\npath = \"{}\"\nuser = \"{USER}\"\n",
        target.display()
    ));
    assert_refused(&w, &target, &format!("belongs to {OTHER}"));
    assert!(!target.exists());
}

#[test]
fn a_world_writable_directory_without_sticky_bit_is_refused() {
    require_root!();
    let w = World::new();
    let open = w.path("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let target = open.join("config.json");
    config_for(&w, &target);
    assert_refused(&w, &target, "writable by others");
    assert!(!target.exists());
}

#[test]
fn sticky_world_writable_directory_with_root_entries_is_fine() {
    require_root!();
    let w = World::new();
    let tmp = w.path("sticky");
    std::fs::create_dir(&tmp).unwrap();
    chmod(&tmp, 0o1777);
    let target = tmp.join("config.json");
    config_for(&w, &target);
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert_fresh_entry(&w, &target, H1);
}

#[test]
fn a_users_file_is_written_as_that_user_with_their_owner_and_0600() {
    require_root!();
    let w = World::new();
    let h = home(&w);
    let target = h.join(".docker/config.json");
    config_for(&w, &target);
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert_fresh_entry(&w, &target, H1);
    let md = std::fs::metadata(&target).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o777), (USER, USER, 0o600));
    let dmd = std::fs::metadata(h.join(".docker")).unwrap();
    assert_eq!(
        (dmd.uid(), dmd.mode() & 0o777),
        (USER, 0o700),
        "missing .docker created for the user"
    );

    // An existing file keeps its owner, group and mode.
    std::os::unix::fs::chown(&target, Some(USER), Some(4444)).unwrap();
    chmod(&target, 0o640);
    w.fake.reset_calls();
    std::fs::write(&target, "{\"auths\": {}}").unwrap();
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let md = std::fs::metadata(&target).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o777), (USER, 4444, 0o640));
    assert_fresh_entry(&w, &target, H1);
}

#[test]
fn symlink_in_a_root_controlled_dir_is_followed() {
    require_root!();
    let w = World::new();
    let real = w.path("real");
    std::fs::create_dir(&real).unwrap();
    symlink(&real, w.path("alias")).unwrap();
    let target = w.path("alias/config.json");
    config_for(&w, &target);
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert_fresh_entry(&w, &real.join("config.json"), H1);
}

#[test]
fn fifo_and_directory_targets_are_refused_without_blocking() {
    require_root!();
    let w = World::new();
    let fifo = w.path("fifo/config.json");
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    config_for(&w, &fifo);
    assert_refused(&w, &fifo, "a FIFO");
    let dir = w.path("dir/config.json");
    std::fs::create_dir_all(&dir).unwrap();
    config_for(&w, &dir);
    assert_refused(&w, &dir, "a directory");
}
