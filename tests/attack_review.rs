//! The second review: a hostile local user against the built daemon (watches, homes, status size,
//! escapes in JSON, floods, sticky directories, missing capabilities). Attackers are real
//! processes as real non-root uids.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const USER: u32 = 4242;
const MEMBER: u32 = 4343;

fn as_user(uid: u32, script: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "--",
            "sh",
            "-ec",
            script,
        ])
        .output()
        .expect("setpriv")
}

/// inotify watches the process holds: (count, the inodes watched).
fn watches(pid: i32) -> (usize, Vec<u64>) {
    let mut inodes = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:inotify")
        {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            for l in info.lines().filter(|l| l.starts_with("inotify wd:")) {
                let ino = l
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("ino:"))
                    .and_then(|h| u64::from_str_radix(h, 16).ok());
                inodes.extend(ino);
            }
        }
    }
    (inodes.len(), inodes)
}

/// Root's target `<dir>/root/.docker/config.json` and a user's `<dir>/zz/u/.docker/config.json`.
fn two_targets(w: &World, extra: &str) -> (PathBuf, PathBuf) {
    chmod(w.dir.path(), 0o755);
    let root = w.path("root/.docker/config.json");
    std::fs::create_dir_all(root.parent().unwrap()).unwrap();
    chmod(&w.path("root"), 0o700);
    let home = w.path("zz/u");
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    chown(&home, USER, USER);
    chown(&home.join(".docker"), USER, USER);
    let user = home.join(".docker/config.json");
    w.config(&format!(
        "{}{extra}[[registry]]\nhost = \"{H1}\"\n[[target]]\npath = \"{}\"\n[[target]]\npath = \"{}\"\n",
        w.daemon_section(),
        root.display(),
        user.display()
    ));
    (root, user)
}

/// F1: renaming `.docker` around and pointing it at root's directories must not make root hold
/// more watches, nor any watch on a directory the user pointed at; and a link to root's own
/// target directory must not blind the daemon to root's file.
#[test]
fn a_user_cannot_multiply_or_redirect_roots_watches() {
    require_root!();
    let w = World::new();
    let (root, user) = two_targets(&w, "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(20), || root.exists() && user.exists()));
    let (before, _) = watches(d.pid());
    let home = user.parent().unwrap().parent().unwrap().to_path_buf();
    let etc_ino = std::fs::metadata("/etc").unwrap().ino();
    let out = as_user(
        USER,
        &format!(
            "cd {h}; for i in $(seq 60); do mv .docker old$i; mkdir -p .docker; touch .docker/x; sleep 0.02; done
             for t in /etc /usr/share {r}; do rm -rf .docker; ln -s $t .docker; touch old1/poke; sleep 0.2; done",
            h = home.display(),
            r = root.parent().unwrap().display()
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(500));
    let (after, inodes) = watches(d.pid());
    assert!(
        after <= before.max(3),
        "root's watches grew from {before} to {after}"
    );
    assert!(!inodes.contains(&etc_ino), "root watches /etc for a user");
    // `.docker` now links to root's target directory: root's file must still be healed.
    std::fs::remove_file(&root).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || root.exists()),
        "root's deleted file was not healed:\n{}",
        d.log_text()
    );
}

/// F5: a user rewriting their own file as fast as they can costs the daemon little: changes start
/// at most five reads a second and at most a fifth of the time, and the config is not reloaded.
#[test]
fn a_flood_of_a_users_edits_costs_the_daemon_little() {
    let has_h1 = |p: &Path| std::fs::read_to_string(p).is_ok_and(|t| t.contains(H1));
    require_root!();
    let w = World::new();
    let (_, user) = two_targets(&w, "log_level = \"debug\"\n");
    // A large file of the user's own: every needless re-read costs a parse of 3.5 MB.
    let big = serde_json::json!({"auths": {}, "pad": "x".repeat(3_500_000)});
    std::fs::write(&user, big.to_string()).unwrap();
    chown(&user, USER, USER);
    chmod(&user, 0o600);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(20), || has_h1(&user)));
    let stat = |pid: i32| -> (u64, u64) {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let f: Vec<&str> = s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let cpu = f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        let rss = f.get(21).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0) * 4;
        (cpu, rss)
    };
    let (cpu0, rss0) = stat(d.pid());
    let deliveries = || {
        let mark = format!("target_path={}", user.display());
        d.log_text()
            .lines()
            .filter(|l| l.contains("delivering") && l.contains(&mark))
            .count()
    };
    let before = deliveries();
    let t0 = Instant::now();
    let dir = user.parent().unwrap().display().to_string();
    let mut flooders: Vec<_> = (0..3)
        .map(|i| {
            Command::new("setpriv")
                .args([&format!("--reuid={USER}"), &format!("--regid={USER}"), "--clear-groups", "--", "/usr/bin/python3", "-c"])
                .arg(format!(
                    "import os,time\nopen('{dir}/f{i}','w').close()\nend=time.time()+5\nwhile time.time()<end:\n  os.utime('{dir}/config.json')\n  os.rename('{dir}/f{i}','{dir}/g{i}')\n  os.rename('{dir}/g{i}','{dir}/f{i}')\n"

                ))
                .spawn()
                .unwrap()
        })
        .collect();
    for f in &mut flooders {
        assert!(f.wait().is_ok_and(|s| s.success()), "a flooder failed");
    }
    let secs = t0.elapsed().as_secs_f64();
    let (cpu1, rss1) = stat(d.pid());
    let ticks = 100.0; // USER_HZ: /proc reports CPU time in 1/100 s on Linux
    let cpu = (cpu1 - cpu0) as f64 / ticks / secs;
    eprintln!(
        "flood of {secs:.1} s: daemon CPU {:.0} % of a core, RSS {rss0} -> {rss1} kB",
        cpu * 100.0
    );
    // Before the fix every batch of events re-read the 3.5 MB file (56 % of a core here in a
    // debug build, alone; CPU shares are too noisy on a shared machine to assert). Now changes
    // start at most five deliveries a second, and at most a fifth of the time.
    let n = deliveries() - before;
    eprintln!("{n} deliveries of the user's file during the flood");
    assert!(n >= 1, "the flood never reached the daemon");
    assert!(
        (n as f64) <= 5.0 * secs + 2.0,
        "{n} deliveries in {secs:.1} s"
    );
    assert!(rss1 < rss0 + 80_000, "RSS grew from {rss0} to {rss1} kB");
    assert!(
        !d.log_text().contains("config file changed"),
        "the flood reloaded the config"
    );
}

/// F2: root never creates a home: not under a home base reached through a link, not a missing
/// base above a user's home, not a system account's home.
#[test]
fn no_home_is_created_through_a_link_a_missing_base_or_for_a_system_account() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let d = w.dir.path().display().to_string();
    std::fs::create_dir_all(w.path("realhome")).unwrap();
    symlink(w.path("realhome"), w.path("homes")).unwrap();
    std::fs::create_dir_all(w.path("opt")).unwrap();
    let passwd = format!(
        "{}alice:x:4500:4500::{d}/homes/alice:/bin/sh\nerin:x:4501:4501::{d}/newbase/erin:/bin/sh\nsvc:x:990:990::{d}/opt/svc:/usr/sbin/nologin\n",
        std::fs::read_to_string("/etc/passwd").unwrap()
    );
    let targets = [
        format!("{d}/homes/ghost/.docker/config.json"),
        format!("{d}/newbase/ghost/.docker/config.json"),
        format!("{d}/opt/svc/.docker/config.json"),
    ];
    let mut cfg = format!("[daemon]\nstate_dir = \"{d}/state\"\n[[registry]]\nhost = \"{H1}\"\n");
    for t in &targets {
        cfg += &format!("[[target]]\npath = \"{t}\"\n");
    }
    w.config(&cfg);
    let dir = w.path("etc");
    std::fs::create_dir_all(dir.join("default")).unwrap();
    std::fs::write(dir.join("passwd"), passwd).unwrap();
    std::fs::write(dir.join("default/useradd"), "").unwrap();
    let envs: Vec<_> = w
        .cmd()
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
        .collect();
    let out = w.capture(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-ec"])
            .arg("mount --bind \"$DIR/passwd\" /etc/passwd; mount --bind \"$DIR/default\" /etc/default; \"$BIN\" --config \"$CONFIG\" once || true")
            .env_clear()
            .envs(envs)
            .env("DIR", &dir)
            .env("BIN", BIN)
            .env("CONFIG", w.path("config.toml"))
            .output()
            .unwrap(),
    );
    let text = stdout(&out);
    for t in &targets {
        let line = text
            .lines()
            .find(|l| l.contains(t.as_str()))
            .unwrap_or_else(|| panic!("{t}: no line\n{text}"));
        assert!(
            line.contains("refused"),
            "{t} was not refused:\n{text}\n{}",
            stderr(&out)
        );
    }
    for p in ["realhome/ghost", "newbase", "opt/svc"] {
        assert!(!w.path(p).exists(), "root created {p}");
    }
}

/// F7: with no `user`, a directory in a sticky world-writable directory is whoever's made it first.
#[test]
fn no_owner_is_inferred_below_a_sticky_directory() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let sticky = w.path("shared");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = as_user(USER, &format!("mkdir {}/ecr", sticky.display()));
    assert!(out.status.success());
    let target = sticky.join("ecr/config.json");
    w.config(&format!("[daemon]\nstate_dir = \"{{dir}}/state\"\n[[registry]]\nhost = \"{H1}\"\n[[target]]\npath = \"{}\"\n", target.display()));
    let out = w.run(&["once"]);
    assert!(stdout(&out).contains("set `user`"), "{}", stdout(&out));
    assert!(
        !target.exists(),
        "the token went to whoever made the directory"
    );
    // Saying whose it is works.
    w.config(&format!("[daemon]\nstate_dir = \"{{dir}}/state\"\n[[registry]]\nhost = \"{H1}\"\n[[target]]\npath = \"{}\"\nuser = \"{USER}\"\n", target.display()));
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert_eq!(std::fs::metadata(&target).unwrap().uid(), USER);
}

/// F3, F4: a user's file cannot make `status` huge, and `status --json` shows no raw C1 or bidi
/// control characters (the JSON still decodes to the same values).
#[test]
fn status_stays_small_and_its_json_holds_nothing_that_acts() {
    require_root!();
    let w = World::new();
    let (_, user) = two_targets(&w, "");
    let helper = format!("{}\u{9b}2J\u{202e}evil", "\\".repeat(2_000_000));
    let body =
        serde_json::json!({"auths": {}, "credHelpers": {H1: helper}, "credsStore": "x\u{9b}y"});
    std::fs::write(&user, body.to_string()).unwrap();
    chown(&user, USER, USER);
    chmod(&user, 0o600);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(20), || {
        w.status_json().is_some_and(|s| {
            s["targets"][1]["warnings"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        })
    }));
    let out = w.client(&["status", "--json"]);
    assert!(
        out.stdout.len() < 64 * 1024,
        "status --json is {} bytes",
        out.stdout.len()
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        !text.contains('\u{9b}') && !text.contains('\u{202e}'),
        "raw C1/bidi in status --json"
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("still JSON");
    assert!(
        v["targets"][1]["warnings"]
            .to_string()
            .contains("credsStore")
    );
}

/// F6: a socket_group member cannot flood the log (or the loop) with reloads.
#[test]
fn a_members_reload_flood_is_limited() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    w.one_target_config(&[H1], "socket_group = \"4343\"\n");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    let sock = w.socket().display().to_string();
    let out = Command::new("setpriv")
        .args([&format!("--reuid={MEMBER}"), &format!("--regid={MEMBER}"), "--groups=4343", "--", "/usr/bin/python3", "-c"])
        .arg(format!(
            "import socket,time\nend=time.time()+3\nok=limited=0\nwhile time.time()<end:\n  s=socket.socket(socket.AF_UNIX);s.connect('{sock}');s.sendall(b'{{\"cmd\":\"reload\"}}\\n');a=s.recv(4096);s.close()\n  ok+=b'\"reload\"' in a;limited+=b'at most one' in a\nprint(ok,limited)"
        ))
        .output()
        .unwrap();
    let counts = String::from_utf8_lossy(&out.stdout).to_string();
    let (ok, limited): (u64, u64) = {
        let mut it = counts.split_whitespace().map(|x| x.parse().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    };
    assert!(
        ok <= 5 && limited > 0,
        "{ok} reloads served, {limited} limited in 3 s: {counts}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = d
        .log_text()
        .lines()
        .filter(|l| l.contains("reload"))
        .count();
    assert!(lines < 20, "{lines} log lines about reloads");
    // Root is never limited.
    for _ in 0..5 {
        assert_eq!(code(&w.client(&["reload"])), 0);
    }
}

/// H1: without CAP_SETUID/CAP_SETGID, setfsuid does nothing and says nothing: the daemon must
/// refuse a user's target rather than write it as root.
#[test]
fn without_setuid_capability_a_users_target_is_refused_not_written_as_root() {
    require_root!();
    let w = World::new();
    let (_, user) = two_targets(&w, "");
    std::fs::remove_file(&user).ok();
    let mut c = Command::new("setpriv");
    c.args([
        "--bounding-set=-setuid,-setgid",
        "--inh-caps=-setuid,-setgid",
        "--",
    ])
    .arg(BIN)
    .arg("--config")
    .arg(w.path("config.toml"))
    .arg("once");
    c.env_clear().envs(
        w.cmd()
            .get_envs()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
    );
    let out = w.capture(c.output().unwrap());
    let text = stdout(&out);
    assert!(
        text.contains("cannot act as 4242"),
        "{text}\n{}",
        stderr(&out)
    );
    assert!(!user.exists(), "written without acting as the user");
}

/// H3: a config in a root-owned directory that root's group can write is refused too.
#[test]
fn a_config_in_a_group_writable_directory_is_refused() {
    require_root!();
    let w = World::new();
    let sub = w.path("conf");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o775)).unwrap();
    let cfg = sub.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[registry]]\nhost = \"{H1}\"\n[[target]]\npath = \"{}\"\n",
            w.path("d/config.json").display()
        ),
    )
    .unwrap();
    let mut c = w.cmd();
    c.arg("--config").arg(&cfg).arg("check");
    let out = w.capture(c.output().unwrap());
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("can be changed by others"),
        "{}",
        stderr(&out)
    );
    let _ = Path::new("/");
}
