//! Hostile local users against issue 16's features: `init` reading their homes and writing its
//! config, root's clients reaching a listener a user controls, and a target re-diagnosed on each
//! change of a user's file. Attackers are real processes of uids without passwd entries.

mod common;

use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const USER: u32 = 4242;
const OTHER: u32 = 4343;

fn mkdir_owned(p: &Path, uid: u32, mode: u32) {
    std::fs::create_dir_all(p).unwrap();
    chown(p, uid, uid);
    chmod(p, mode);
}

fn write_owned(p: &Path, body: &str, uid: u32, mode: u32) {
    std::fs::write(p, body).unwrap();
    chown(p, uid, uid);
    chmod(p, mode);
}

fn init(w: &World, args: &[&str]) -> std::process::Output {
    let mut c = w.cmd();
    c.arg("init").args(args);
    w.capture(c.output().expect("run init"))
}

/// The `[[target]]`s of a config text: (name, path, user).
fn targets_of(text: &str) -> Vec<(String, String, Option<String>)> {
    let v: toml::Value = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    v.get("target")
        .and_then(|t| t.as_array())
        .map(|a| {
            a.iter()
                .map(|t| {
                    (
                        t["name"].as_str().unwrap_or_default().to_string(),
                        t["path"].as_str().unwrap_or_default().to_string(),
                        t.get("user").and_then(|u| u.as_str()).map(str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `check` on a config text with a real registry instead of the placeholder, and the temp
/// root's account names (which this machine does not have) as their uids: its exit code and
/// stdout + stderr.
fn check_text(w: &World, text: &str, uids: &[(&str, u32)]) -> (i32, String) {
    let mut text = text.replace("ACCOUNT.dkr.ecr.REGION.amazonaws.com", H1)
        + &format!(
            "\n[daemon]\nstate_dir = \"{}\"\n",
            w.path("state").display()
        );
    for (name, uid) in uids {
        text = text.replace(&format!("user = \"{name}\""), &format!("user = \"{uid}\""));
    }
    let cfg = w.path("init-check.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut c = w.cmd();
    c.arg("--config").arg(&cfg).arg("check");
    let out = w.capture(c.output().unwrap());
    (code(&out), format!("{}{}", stdout(&out), stderr(&out)))
}

// ---------------------------------------------------------------------------------------------
// init: what it proposes from users' homes

/// A temp root whose passwd holds root, `operator` (uid 11, home /root, as on Amazon Linux 2023
/// and RHEL), two accounts sharing a home, and the attackers.
fn hostile_root(w: &World) -> PathBuf {
    let root = w.path("root-fs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        format!(
            "root:x:0:0:root:/root:/bin/bash\n\
             operator:x:11:0:operator:/root:/sbin/nologin\n\
             svc-a:x:{USER}:{USER}::/srv/shared:/bin/sh\n\
             svc-b:x:{OTHER}:{OTHER}::/srv/shared:/bin/sh\n\
             podman:x:4444:4444::/home/podman:/bin/sh\n"
        ),
    )
    .unwrap();
    // podman installed: root's /run/containers/0 target is named "podman" too.
    mkdir_owned(&root.join("usr/bin"), 0, 0o755);
    write_owned(&root.join("usr/bin/podman"), "#!/bin/sh\n", 0, 0o755);
    mkdir_owned(&root.join("home"), 0, 0o755);
    mkdir_owned(&root.join("home/podman"), 4444, 0o700);
    mkdir_owned(&root.join("home/podman/.docker"), 4444, 0o700);
    write_owned(
        &root.join("home/podman/.docker/config.json"),
        "{}",
        4444,
        0o600,
    );
    mkdir_owned(&root.join("root/.docker"), 0, 0o700);
    write_owned(&root.join("root/.docker/config.json"), "{}", 0, 0o600);
    mkdir_owned(&root.join("srv"), 0, 0o755);
    mkdir_owned(&root.join("srv/shared"), USER, 0o700);
    mkdir_owned(&root.join("srv/shared/.docker"), USER, 0o700);
    write_owned(
        &root.join("srv/shared/.docker/config.json"),
        "{}",
        USER,
        0o600,
    );
    root
}

/// An account whose home is root's (`operator` on Amazon Linux 2023), or two accounts sharing a
/// home, made init print the same path twice, and an account named `podman` the same name as
/// root's podman target: `check` then refused the whole config.
#[test]
fn init_never_proposes_one_file_twice_for_accounts_sharing_a_home() {
    require_root!();
    let w = World::new();
    let root = hostile_root(&w);
    let out = init(&w, &["--root", root.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let targets = targets_of(&text);
    let mut paths: Vec<&String> = targets.iter().map(|t| &t.1).collect();
    paths.sort();
    let n = paths.len();
    paths.dedup();
    assert_eq!(paths.len(), n, "a path proposed twice:\n{text}");
    let mut names: Vec<&String> = targets.iter().map(|t| &t.0).collect();
    names.sort();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "a name given twice:\n{text}");
    let (rc, said) = check_text(
        &w,
        &text,
        &[("svc-a", USER), ("svc-b", OTHER), ("podman", 4444)],
    );
    assert!(
        rc <= 1 && !said.contains("ERROR"),
        "check refused init's output ({rc}): {said}\n{text}"
    );
    // The shared home's file is proposed for the account that owns it.
    assert!(
        targets
            .iter()
            .any(|t| t.1.ends_with("srv/shared/.docker/config.json")
                && t.2.as_deref() == Some("svc-a")),
        "{text}"
    );
}

/// A user's auth file the daemon would refuse (a link into root's directory, root's file left by
/// `sudo docker login`, another user's file, a hard link) was proposed as a target: `check` then
/// printed an ERROR for a config init had just made. Init leaves it out and says why.
#[test]
fn init_leaves_out_what_the_daemon_would_refuse_and_says_why() {
    require_root!();
    let w = World::new();
    let root = w.path("root-fs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/bash\n");
    let homes = ["link", "rootfile", "otherfile", "hardlink", "dirlink", "ok"];
    for (i, h) in homes.iter().enumerate() {
        passwd += &format!("u{h}:x:{}:{}::/home/{h}:/bin/sh\n", 5000 + i, 5000 + i);
    }
    std::fs::write(root.join("etc/passwd"), passwd).unwrap();
    mkdir_owned(&root.join("root/.docker"), 0, 0o700);
    write_owned(
        &root.join("root/.docker/config.json"),
        "{\"auths\": {}}",
        0,
        0o600,
    );
    mkdir_owned(&root.join("home"), 0, 0o755);
    for (i, h) in homes.iter().enumerate() {
        let uid = 5000 + i as u32;
        mkdir_owned(&root.join("home").join(h), uid, 0o700);
        if *h != "dirlink" {
            mkdir_owned(&root.join("home").join(h).join(".docker"), uid, 0o700);
        }
    }
    let cfg = |h: &str| root.join("home").join(h).join(".docker/config.json");
    // ~/.docker/config.json -> root's config.
    symlink(root.join("root/.docker/config.json"), cfg("link")).unwrap();
    std::os::unix::fs::lchown(cfg("link"), Some(5000), Some(5000)).unwrap();
    // Root's own file in the user's directory.
    write_owned(&cfg("rootfile"), "{}", 0, 0o600);
    // Another account's file.
    write_owned(&cfg("otherfile"), "{}", 5005, 0o600);
    // The user's file, hard-linked elsewhere too.
    write_owned(&cfg("hardlink"), "{}", 5003, 0o600);
    std::fs::hard_link(cfg("hardlink"), root.join("home/hardlink/second")).unwrap();
    // ~/.docker -> root's .docker.
    symlink(root.join("root/.docker"), root.join("home/dirlink/.docker")).unwrap();
    std::os::unix::fs::lchown(root.join("home/dirlink/.docker"), Some(5004), Some(5004)).unwrap();
    write_owned(&cfg("ok"), "{}", 5005, 0o600);

    let out = init(&w, &["--root", root.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let proposed: Vec<String> = targets_of(&text).into_iter().map(|t| t.0).collect();
    assert_eq!(
        proposed,
        ["root", "uok"],
        "only what the daemon would write:\n{text}"
    );
    for h in ["link", "rootfile", "otherfile", "hardlink", "dirlink"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with('#') && l.contains(&format!("/home/{h}/.docker"))),
            "no comment says why u{h}'s file is left out:\n{text}"
        );
    }
    let (rc, said) = check_text(&w, &text, &[("uok", 5005)]);
    assert!(rc <= 1 && !said.contains("ERROR"), "{said}\n{text}");
}

// ---------------------------------------------------------------------------------------------
// init --write: where root writes

/// Swaps `<dir>/cfg` between a directory of its own and a link to `<target>` as fast as it can.
const SWAP_DIR: &str = r#"
import os, sys
base, target = sys.argv[1], sys.argv[2]
os.chdir(base)
os.mkdir("real")
os.symlink(target, "link")
print("ready", flush=True)
while True:
    for n in ("real", "link"):
        try:
            os.rename(n, "cfg")
            os.rename("cfg", n)
        except OSError:
            pass
"#;

/// `sudo ecr-refresherd init --write ~user/cfg/config.toml` wrote through the names: a user
/// swapping `cfg` for a link made root create the file in a directory of root's the user chose.
/// A config in a directory a user can change is also one the daemon refuses to read: init
/// refuses it, saying so, and never writes anywhere else.
#[test]
fn init_write_into_a_users_directory_is_refused_and_never_lands_elsewhere() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let rootonly = w.path("rootonly");
    mkdir_owned(&rootonly, 0, 0o700);
    let home = w.path("home-u");
    mkdir_owned(&home, USER, 0o755);
    let empty = w.path("empty-root");
    std::fs::create_dir_all(empty.join("etc")).unwrap();
    let swapper = Py::spawn(
        USER,
        SWAP_DIR,
        &[home.to_str().unwrap(), rootonly.to_str().unwrap()],
    );
    assert_eq!(swapper.line(Duration::from_secs(20)), "ready");
    let dest = home.join("cfg/config.toml");
    let mut results = Vec::new();
    for _ in 0..150 {
        let out = init(
            &w,
            &[
                "--root",
                empty.to_str().unwrap(),
                "--write",
                dest.to_str().unwrap(),
            ],
        );
        let landed: Vec<_> = std::fs::read_dir(&rootonly)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            landed.is_empty(),
            "root wrote into a directory the user chose with a link: {landed:?} (init said: {} {})",
            code(&out),
            stderr(&out)
        );
        results.push((code(&out), stderr(&out)));
    }
    drop(swapper);
    // Refused whatever the swapper had there at that instant: a directory of the user's, their
    // link, or nothing (the directory renamed away).
    let wrong: Vec<_> = results
        .iter()
        .filter(|(c, e)| {
            *c != 1
                || !(e.contains("the daemon would not read a config there")
                    || e.contains("No such file"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "init must refuse a directory a user can change: {wrong:?}"
    );
    assert!(
        results
            .iter()
            .any(|(_, e)| e.contains("only root can write")),
        "says why: {:?}",
        &results[..3]
    );
    assert!(!home.join("real/config.toml").exists());
}

/// In a sticky directory anyone may create names in (`/tmp`), the temp file's name was
/// `.NAME.init-<pid>`: a user who planted the next pids' names made root's init fail.
#[test]
fn init_write_in_a_sticky_directory_cannot_be_blocked_by_planted_temp_names() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let sticky = w.path("sticky");
    mkdir_owned(&sticky, 0, 0o1777);
    let empty = w.path("empty-root");
    std::fs::create_dir_all(empty.join("etc")).unwrap();
    let next: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let plant = Py::spawn(
        USER,
        "import os, sys\nd, a, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\nfor p in range(a, b):\n    open(os.path.join(d, '.config.toml.init-%d' % p), 'w').close()\nprint('done', flush=True)\n",
        &[
            sticky.to_str().unwrap(),
            &next.to_string(),
            &(next + 5000).to_string(),
        ],
    );
    assert_eq!(plant.line(Duration::from_secs(60)), "done");
    let dest = sticky.join("config.toml");
    let out = init(
        &w,
        &[
            "--root",
            empty.to_str().unwrap(),
            "--write",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(
        code(&out),
        0,
        "a planted name blocked init: {}",
        stderr(&out)
    );
    let md = std::fs::symlink_metadata(&dest).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o7777), (0, 0o600));
    let ours = std::fs::read_dir(&sticky)
        .unwrap()
        .flatten()
        .filter(|e| e.metadata().is_ok_and(|m| m.uid() == 0))
        .count();
    assert_eq!(ours, 1, "a temp file of root's was left behind");
}

// ---------------------------------------------------------------------------------------------
// Clients run by root reaching a listener a user controls

/// A listener of the user's: answers every request as the daemon would, with escapes in every
/// string and "all is well".
const FAKE_DAEMON: &str = r##"
import json, os, socket, sys
p = sys.argv[1]
s = socket.socket(socket.AF_UNIX)
s.bind(p)
os.chmod(p, 0o777)
s.listen(16)
print("ready", flush=True)
esc = "\u001b]0;pwned\u0007\u001b[2J"
while True:
    c, _ = s.accept()
    try:
        cmd = json.loads(c.makefile().readline()).get("cmd")
        if cmd == "reload":
            r = {"kind": "reload", "ok": True, "message": "config reloaded" + esc}
        elif cmd == "metrics":
            r = {"kind": "metrics", "text": "# " + esc + "\n"}
        elif cmd == "refresh":
            r = {"kind": "refresh", "results": [{"host": "h" + esc, "ok": True,
                 "expires_at": "2099-01-01T00:00:00Z", "error": None}]}
        else:
            r = {"kind": "status", "status": {"version": "9" + esc, "pid": 1,
                 "started_at": None, "registries": [], "targets": [],
                 "config": {"path": None, "loaded_at": None, "error": None}}}
        c.sendall((json.dumps(r) + "\n").encode())
    except Exception:
        pass
    c.close()
"##;

/// Root's `reload` (the unit's ExecReload), `status`, `refresh` and `metrics`, pointed at a
/// socket a user listens on (a config naming a socket in a directory the user can write, which
/// the daemon refuses to bind; `ECR_REFRESHERD_SOCKET` in root's environment), took the user's
/// answers for the daemon's: `reload` exited 0 ("applied") with no daemon, `metrics` printed the
/// user's terminal escapes raw. A client now asks the kernel who listens: root's or its own
/// uid's listener only.
#[test]
fn roots_clients_do_not_take_a_users_listener_for_the_daemon() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let dir = w.path("userdir");
    mkdir_owned(&dir, USER, 0o755);
    let sock = dir.join("ctl.sock");
    let fake = Py::spawn(USER, FAKE_DAEMON, &[sock.to_str().unwrap()]);
    assert_eq!(fake.line(Duration::from_secs(20)), "ready");
    for args in [
        &["reload"][..],
        &["status"],
        &["status", "--json"],
        &["refresh"],
        &["metrics"],
    ] {
        let mut c = w.cmd();
        c.args(args).arg("--socket").arg(&sock);
        let out = w.capture(c.output().unwrap());
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !all.contains('\u{1b}'),
            "{args:?}: the user's escapes reached root's terminal raw: {all:?}"
        );
        assert_eq!(
            code(&out),
            3,
            "{args:?}: a user's listener was taken for the daemon: {all}"
        );
        assert!(
            all.contains(&USER.to_string()),
            "{args:?}: says whose listener it is: {all}"
        );
    }
    // The same through the environment variable.
    let mut c = w.cmd();
    c.arg("reload").env("ECR_REFRESHERD_SOCKET", &sock);
    let out = w.capture(c.output().unwrap());
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
}

// ---------------------------------------------------------------------------------------------
// Status re-diagnosis: a user changing their file in a loop

fn has_entry(p: &Path) -> bool {
    std::fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["auths"][H1].is_object())
}

/// CPU time (user + system) of a process, from /proc.
fn cpu_of(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |v| v.max(1) as u64);
    Duration::from_millis(ticks * 1000 / hz)
}

/// Touches a file as fast as it can (each an inotify ATTRIB event, nothing rewritten).
const TOUCH: &str = r#"
import os, sys
print("ready", flush=True)
while True:
    try:
        os.utime(sys.argv[1])
    except OSError:
        pass
"#;

/// A user's large auth file, touched in a loop: every change re-diagnosed it (read and parsed as
/// root) as fast as the watcher reported changes, unspaced, while the deliveries those changes
/// start are held to a fifth of the time. A diagnosis of a docker config also reads the user's
/// podman auth file (which podman reads first) and a delivery does not: that file's reads count
/// the diagnoses.
#[test]
fn a_user_touching_a_large_file_in_a_loop_is_diagnosed_no_more_often_than_written() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let home = w.path("home/user");
    mkdir_owned(&home, USER, 0o700);
    mkdir_owned(&home.join(".docker"), USER, 0o700);
    for d in [".config", ".config/containers"] {
        mkdir_owned(&home.join(d), USER, 0o700);
    }
    write_owned(
        &home.join(".config/containers/auth.json"),
        "{}",
        USER,
        0o600,
    );
    let target = home.join(".docker/config.json");
    // Many small values (what makes a parse expensive), laid out as the daemon writes them so
    // its own rewrite stays under the 4 MiB bound.
    let mut big = String::from("{\n\t\"auths\": {},\n\t\"x\": {\n");
    let mut i = 0;
    while big.len() < 1_500_000 {
        big += &format!("\t\t\"k{i}\": 1,\n");
        i += 1;
    }
    big += "\t\t\"end\": 1\n\t}\n}\n";
    write_owned(&target, &big, USER, 0o600);
    let cfg = w.daemon_section()
        + &format!(
            "\n[[registry]]\nhost = \"{H1}\"\n[[target]]\npath = \"{}\"\nuser = \"{USER}\"\n",
            target.display()
        );
    w.config(&cfg);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(Duration::from_secs(60), || has_entry(&target)),
        "{}",
        d.log_text()
    );
    let mut ino = inotify::Inotify::init().unwrap();
    ino.watches()
        .add(home.join(".docker"), inotify::WatchMask::CLOSE_NOWRITE)
        .unwrap();
    ino.watches()
        .add(
            home.join(".config/containers"),
            inotify::WatchMask::CLOSE_NOWRITE,
        )
        .unwrap();
    let toucher = Py::spawn(USER, TOUCH, &[target.to_str().unwrap()]);
    assert_eq!(toucher.line(Duration::from_secs(20)), "ready");
    let mut buf = vec![0u8; 65536];
    let (mut file_reads, mut diagnoses) = (0usize, 0usize);
    let (cpu0, t0) = (cpu_of(d.pid()), Instant::now());
    while t0.elapsed() < Duration::from_secs(15) {
        // The queue read every 50 ms (the descriptor does not block): each close is one read.
        if let Ok(evs) = ino.read_events(&mut buf) {
            for e in evs {
                match e.name.and_then(|n| n.to_str()) {
                    Some("config.json") => file_reads += 1,
                    Some("auth.json") => diagnoses += 1,
                    _ => {}
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let share = cpu_of(d.pid()).saturating_sub(cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    drop(toucher);
    let deliveries = file_reads.saturating_sub(diagnoses);
    eprintln!(
        "in 15 s: {diagnoses} diagnoses, {deliveries} deliveries; daemon CPU share {share:.2}"
    );
    assert!(
        diagnoses <= deliveries + 1,
        "a user touching their file made root diagnose it {diagnoses} times for {deliveries} deliveries in 15 s (CPU share {share:.2})"
    );
    assert!(w.status_json().is_some(), "the daemon still answers");
}

/// A user touching a two-byte auth file in a loop: each touch is an inotify event, and the
/// watcher woke for each one while it gathered a batch, so the daemon spent most of a core
/// (70% measured) following a loop that costs the user one system call per event.
#[test]
fn a_user_touching_a_small_file_in_a_loop_costs_the_daemon_little() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let home = w.path("home/user");
    mkdir_owned(&home, USER, 0o700);
    mkdir_owned(&home.join(".docker"), USER, 0o700);
    let target = home.join(".docker/config.json");
    write_owned(&target, "{}", USER, 0o600);
    let cfg = w.daemon_section()
        + &format!(
            "\n[[registry]]\nhost = \"{H1}\"\n[[target]]\npath = \"{}\"\nuser = \"{USER}\"\n",
            target.display()
        );
    w.config(&cfg);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(Duration::from_secs(60), || has_entry(&target)),
        "{}",
        d.log_text()
    );
    let toucher = Py::spawn(USER, TOUCH, &[target.to_str().unwrap()]);
    assert_eq!(toucher.line(Duration::from_secs(20)), "ready");
    let (cpu0, t0) = (cpu_of(d.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let share = cpu_of(d.pid()).saturating_sub(cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    drop(toucher);
    eprintln!("daemon CPU share while the user touched its file: {share:.2}");
    assert!(
        share < 0.2,
        "the daemon spent {:.0}% of a core following a user's touch loop",
        share * 100.0
    );
    assert!(w.status_json().is_some(), "the daemon still answers");
    assert!(
        wait_for(Duration::from_secs(20), || has_entry(&target)),
        "the target is still kept"
    );
}

/// Swaps the user's file, in a loop, for a link to a root-only auth file, a FIFO, and back.
const SWAP_FILE: &str = r#"
import os, sys
d, secret = sys.argv[1], sys.argv[2]
os.chdir(d)
with open("mine", "w") as f:
    f.write("{}")
os.symlink(secret, "link")
os.mkfifo("fifo")
print("ready", flush=True)
while True:
    for n in ("link", "fifo", "mine"):
        try:
            os.rename(n, "config.json")
            os.rename("config.json", n)
        except OSError:
            pass
"#;

/// Held: the re-diagnosis of a changed file reads through the write path's descriptors, as the
/// file's owner: a link swapped in never brings root's file's content (here a credsStore naming
/// a marker) into `status`, and a FIFO never blocks it.
#[test]
fn a_file_swapped_for_a_link_or_a_fifo_never_brings_roots_file_into_status() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    // Readable by anyone: only the rule (no link of the user's is followed) keeps it out, not
    // the permissions the read as the user would meet.
    let secret = w.path("roots/config.json");
    mkdir_owned(secret.parent().unwrap(), 0, 0o755);
    write_owned(
        &secret,
        "{\"credsStore\": \"ROOT-ONLY-MARKER\", \"auths\": {}}",
        0,
        0o644,
    );
    let home = w.path("home/user");
    mkdir_owned(&home, USER, 0o700);
    let docker = home.join(".docker");
    mkdir_owned(&docker, USER, 0o700);
    let target = docker.join("config.json");
    let cfg = w.daemon_section()
        + &format!(
            "\n[[registry]]\nhost = \"{H1}\"\n[[target]]\npath = \"{}\"\nuser = \"{USER}\"\n",
            target.display()
        );
    w.config(&cfg);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    let swapper = Py::spawn(
        USER,
        SWAP_FILE,
        &[docker.to_str().unwrap(), secret.to_str().unwrap()],
    );
    assert_eq!(swapper.line(Duration::from_secs(20)), "ready");
    let end = Instant::now() + Duration::from_secs(8);
    let mut answers = 0;
    while Instant::now() < end {
        let out = w.client(&["status", "--json"]);
        assert_eq!(code(&out).min(2), code(&out), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(
            !text.contains("ROOT-ONLY-MARKER"),
            "root's file reached status: {text}"
        );
        answers += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(swapper);
    assert!(answers > 10, "status answered {answers} times");
    assert!(
        std::fs::read_to_string(&secret)
            .unwrap()
            .contains("ROOT-ONLY-MARKER"),
        "root's file is untouched"
    );
    assert_eq!(
        std::fs::symlink_metadata(&secret).unwrap().uid(),
        0,
        "and still root's"
    );
}
