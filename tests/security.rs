//! Issue 9's review, as tests: a local user races and tricks the root daemon (renames of root-owned
//! directories into names we create, links in sticky directories, missing homes, a config or its
//! directory a user can write, diagnostics racing a link swap). Attackers are real processes
//! running as real non-root uids (no passwd entries needed), for many rounds.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const USER: u32 = 4242;
const LATER: u32 = 4343;

/// A real process running `code` (python3) as `uid`, in `dir`, until killed.
struct Attacker(Child);

impl Attacker {
    fn spawn(uid: u32, dir: &Path, code: &str) -> Attacker {
        use std::os::unix::process::CommandExt;
        let child = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(code)
            .current_dir(dir)
            .uid(uid)
            .gid(uid)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 attacker");
        Attacker(child)
    }
}

impl Attacker {
    /// Runs `f` while the attacker is stopped (SIGSTOP), so the test sees a still picture.
    fn paused<T>(&self, f: impl FnOnce() -> T) -> T {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
        let out = f();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
        out
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn home(w: &World, uid: u32) -> PathBuf {
    chmod(w.dir.path(), 0o755);
    let h = w.path(&format!("home/u{uid}"));
    std::fs::create_dir_all(&h).unwrap();
    chown(&h, uid, uid);
    h
}

fn one_target(w: &World, target: &Path, extra: &str) {
    w.config(&format!(
        "[daemon]\nstate_dir = \"{{dir}}/state\"\n[[registry]]\nhost = \"{H1}\"\n[[target]]\npath = \"{}\"\n{extra}",
        target.display()
    ));
}

/// The directory entry (anywhere directly in `dir`) with inode `ino`.
fn find_inode(dir: &Path, ino: u64) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.ino() == ino))
}

/// #1: while the daemon creates `.docker` in a user's home, the user renames a root-owned
/// directory (like one `sudo docker login` left, holding root's file) into that name. The daemon
/// must never chown it (or anything it did not create as that user).
#[test]
fn a_root_directory_renamed_into_a_new_directory_is_never_chowned() {
    require_root!();
    let w = World::new();
    let h = home(&w, USER);
    let rootdir = h.join(".rootdir");
    std::fs::create_dir(&rootdir).unwrap();
    std::fs::set_permissions(&rootdir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = rootdir.join("config.json");
    std::fs::write(
        &secret,
        "{\"auths\":{\"root-only.example\":{\"auth\":\"cm9vdDpz\"}}}",
    )
    .unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = Sentinel::of(&secret);
    let ino = std::fs::metadata(&rootdir).unwrap().ino();
    let target = h.join(".docker/config.json");
    one_target(&w, &target, "");
    // Keep putting root's directory where the daemon just made an empty `.docker`, and take it
    // back; clear a `.docker` the daemon finished (non-empty, ours) so the next round races again.
    let attacker = Attacker::spawn(
        USER,
        &h,
        r#"
import os, shutil
while True:
    try: os.rename('.rootdir', '.docker')
    except OSError: pass
    try: os.rename('.docker', '.rootdir')
    except OSError: pass
    try:
        st = os.lstat('.docker')
        if st.st_uid == os.getuid(): shutil.rmtree('.docker', ignore_errors=True)
    except OSError: pass
"#,
    );
    let (mut written, mut refused) = (0, 0);
    for _ in 0..300 {
        let out = w.run(&["once"]);
        let text = stdout(&out);
        if text.contains(": written") {
            written += 1;
        } else if text.contains("refused") {
            refused += 1;
        }
        let md = attacker.paused(|| {
            let now = find_inode(&h, ino).expect("root's directory is still in the home");
            std::fs::symlink_metadata(&now).unwrap()
        });
        assert_eq!(
            (md.uid(), md.gid()),
            (0, 0),
            "root's directory was given to the user (after {written} writes, {refused} refusals)"
        );
    }
    drop(attacker);
    let now = find_inode(&h, ino).expect("root's directory");
    assert_eq!(Sentinel::of(&now.join("config.json")), before);
    eprintln!(
        "300 rounds: {written} written as the user, {refused} refused, root's directory untouched"
    );
    assert!(written + refused > 0);
}

/// #2: in a root-owned sticky world-writable directory (like /tmp or a shared /srv/ci) anyone can
/// plant a link. It must not lead root into root's own files; a link root planted still works.
#[test]
fn a_users_link_in_a_sticky_directory_is_not_followed() {
    require_root!();
    let w = World::new();
    let etc = w.path("etc-like");
    std::fs::create_dir(&etc).unwrap();
    let secret = etc.join("config.json");
    std::fs::write(&secret, "{\"auths\":{}}").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = Sentinel::of(&secret);
    chmod(w.dir.path(), 0o755);
    let sticky = w.path("ci");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // The user plants `ci/shared -> etc-like` (as themselves, in a real process).
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={USER}"),
            &format!("--regid={USER}"),
            "--clear-groups",
            "--",
        ])
        .arg("ln")
        .arg("-s")
        .arg(&etc)
        .arg(sticky.join("shared"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = sticky.join("shared/config.json");
    one_target(&w, &target, "mode = \"0644\"\n");
    let out = w.run(&["once"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}");
    assert!(
        text.contains("refused") && text.contains("owned by 4242"),
        "{text}"
    );
    assert_eq!(
        Sentinel::of(&secret),
        before,
        "root's file was changed through the link"
    );

    // The same link planted by root is followed: root's own links are root's decision.
    std::fs::remove_file(sticky.join("shared")).unwrap();
    symlink(&etc, sticky.join("shared")).unwrap();
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert_fresh_entry(&w, &secret, H1);
}

/// Runs `script` (sh -e) in a private mount namespace where /etc/passwd and
/// /etc/default/useradd are the test's own (`$DIR/passwd`, `$DIR/useradd`), so users can be
/// "created" without touching the machine. `$BIN`, `$CONFIG`, `$SOCKET` are set.
fn with_own_passwd(w: &World, passwd: &str, script: &str) -> std::process::Output {
    let dir = w.path("etc");
    std::fs::create_dir_all(dir.join("default")).unwrap();
    std::fs::write(dir.join("passwd"), passwd).unwrap();
    std::fs::write(
        dir.join("default/useradd"),
        format!("HOME={}\n", w.path("home").display()),
    )
    .unwrap();
    let envs: Vec<_> = w
        .cmd()
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
        .collect();
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "--", "sh", "-ec"])
        .arg(format!(
            "mount --bind \"$DIR/passwd\" /etc/passwd\nmkdir -p /etc/default && mount --bind \"$DIR/default\" /etc/default\n{script}"
        ))
        .env_clear()
        .envs(envs)
        .env("DIR", &dir)
        .env("BIN", BIN)
        .env("CONFIG", w.path("config.toml"))
        .env("SOCKET", w.socket());
    w.capture(c.output().unwrap())
}

/// #4: a target in the home of a user who does not exist yet (the README's cloud-init order:
/// config first, `useradd -m portainer` later). Root must not create that home; the target waits,
/// `check` says why, and the user created later is picked up by the running daemon.
#[test]
fn a_home_that_does_not_exist_yet_is_never_created_and_is_picked_up_later() {
    require_root!();
    let w = World::new();
    std::fs::create_dir_all(w.path("home")).unwrap();
    chmod(w.dir.path(), 0o755);
    let portainer_home = w.path("home/portainer");
    let target = portainer_home.join(".docker/config.json");
    let named = w.path("home/named/.docker/config.json");
    w.config(&format!(
        "{}[[registry]]\nhost = \"{H1}\"\n[[target]]\npath = \"{}\"\n[[target]]\npath = \"{}\"\nuser = \"named\"\n",
        w.daemon_section(),
        target.display(),
        named.display()
    ));
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let out = with_own_passwd(
        &w,
        &passwd,
        &format!(
            r#"
"$BIN" --config "$CONFIG" check && echo "check exit 0" || echo "check exit $?"
test -e "{home}" && echo "HOME CREATED" || echo "no home"
"$BIN" --config "$CONFIG" run 2>"$DIR/daemon.log" &
pid=$!
for i in $(seq 400); do "$BIN" status --json --socket "$SOCKET" 2>/dev/null | grep -q 'does not exist' && break; sleep 0.05; done
"$BIN" status --json --socket "$SOCKET" | grep -o 'refused: [^"]*' | head -2
test -e "{home}" && echo "HOME CREATED BY RUN" || echo "still no home"
# useradd -m portainer, and a user called named:
echo "portainer:x:{later}:{later}::{home}:/bin/sh" >> "$DIR/passwd"
echo "named:x:{user}:{user}::{named_home}:/bin/sh" >> "$DIR/passwd"
mkdir -m 0700 "{home}" "{named_home}"
chown {later}:{later} "{home}"; chown {user}:{user} "{named_home}"
for i in $(seq 600); do test -s "{target}" && test -s "{named}" && break; sleep 0.05; done
stat -c 'file %u %a' "{target}" "{named}" || true
stat -c 'docker %u %a' "{home}/.docker" || true
kill $pid; wait $pid || true
cat "$DIR/daemon.log" >&2
"#,
            home = portainer_home.display(),
            named_home = w.path("home/named").display(),
            target = target.display(),
            named = named.display(),
            later = LATER,
            user = USER,
        ),
    );
    let text = stdout(&out);
    let err = stderr(&out);
    assert!(
        !text.contains("HOME CREATED"),
        "root created the home:\n{text}\n{err}"
    );
    assert!(text.contains("check exit 2"), "{text}\n{err}");
    assert!(
        text.contains(&format!("{}: ERROR", target.display()))
            && text.contains("where a user's home directory goes"),
        "check must report the missing home:\n{text}"
    );
    assert!(
        text.contains("user \"named\" does not exist (yet)"),
        "check must report the missing user:\n{text}"
    );
    assert!(
        text.contains("refused:"),
        "status shows the refusal:\n{text}\n{err}"
    );
    assert!(
        text.contains(&format!("file {LATER} 600")) && text.contains(&format!("file {USER} 600")),
        "the users created later were picked up without a restart:\n{text}\n{err}"
    );
    assert!(text.contains(&format!("docker {LATER} 700")), "{text}");
    assert_fresh_entry(&w, &target, H1);
    assert_fresh_entry(&w, &named, H1);
}

/// #13: root acts on its config (endpoints to sign requests for, files to write and chmod). A
/// config that anyone but root can change, or that sits in such a directory, is refused.
#[test]
fn a_config_anyone_but_root_can_change_is_refused() {
    require_root!();
    let w = World::new();
    let target = w.path("d/config.json");
    one_target(&w, &target, "");
    let cfg = w.path("config.toml");
    let check = |w: &World| {
        let out = w.run(&["check"]);
        (code(&out), stderr(&out))
    };
    assert_eq!(check(&w).0, 0, "{}", check(&w).1);

    chown(&cfg, USER, USER);
    let (c, err) = check(&w);
    assert_eq!(c, 2, "a user's config was accepted: {err}");
    assert!(
        err.contains("belongs to 4242") && err.contains("chown root:"),
        "{err}"
    );
    chown(&cfg, 0, 0);

    for mode in [0o666, 0o620] {
        chmod(&cfg, mode);
        let (c, err) = check(&w);
        assert_eq!(c, 2, "mode {mode:o} was accepted: {err}");
        assert!(err.contains("writable by group or others"), "{err}");
    }
    chmod(&cfg, 0o600);

    // Its directory writable by a user: they could replace the file.
    let sub = w.path("conf");
    std::fs::create_dir(&sub).unwrap();
    chown(&sub, USER, USER);
    let moved = sub.join("config.toml");
    std::fs::copy(&cfg, &moved).unwrap();
    let out = {
        let mut c = w.cmd();
        c.arg("--config").arg(&moved).arg("check");
        w.capture(c.output().unwrap())
    };
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("can be changed by its owner"),
        "{}",
        stderr(&out)
    );

    // A plain-http endpoint works (tests need it) but is said loudly.
    one_target(&w, &target, "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("host = \"{H1}\"\n"),
        &format!("host = \"{H1}\"\nendpoint_url = \"http://127.0.0.1:9\"\n"),
    );
    std::fs::write(&cfg, text).unwrap();
    let out = w.run(&["check"]);
    let report = stdout(&out);
    assert_eq!(
        code(&out),
        1,
        "a warning is exit 1:\n{report}{}",
        stderr(&out)
    );
    assert!(
        report.contains(": warning: ") && report.contains("plain http://"),
        "{report}"
    );
}

/// #13 with a running daemon: an edit that makes the config a user's is rejected like a syntax
/// error: the old config keeps running and `status` says why.
#[test]
fn the_daemon_rejects_a_config_that_became_a_users() {
    require_root!();
    let w = World::new();
    let target = w.one_target_config(&[H1], "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(20), || target.exists()));
    let cfg = w.path("config.toml");
    chown(&cfg, USER, USER);
    let reload = w.client(&["reload"]);
    assert_eq!(code(&reload), 1, "{}", stdout(&reload));
    assert!(
        stderr(&reload).contains("belongs to 4242"),
        "{}",
        stderr(&reload)
    );
    let st = w.status_json().expect("status");
    assert!(
        st["config"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("belongs to 4242")),
        "{st}"
    );
    assert_eq!(st["registries"][0]["host"], H1, "the old config still runs");
}

/// #16: `check` (like `status`) must learn nothing about a root-only file, however fast the user
/// swaps `.docker` between a real directory and a link to root's directory.
#[test]
fn diagnostics_racing_a_link_swap_never_describe_roots_files() {
    require_root!();
    let w = World::new();
    let rootonly = w.path("rootonly");
    std::fs::create_dir(&rootonly).unwrap();
    std::fs::set_permissions(&rootonly, std::fs::Permissions::from_mode(0o711)).unwrap();
    let secret = rootonly.join("config.json");
    std::fs::write(&secret, "{\"credsStore\":\"root-secret-store\"}").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o604)).unwrap();
    let h = home(&w, USER);
    let real = h.join(".docker");
    std::fs::create_dir(&real).unwrap();
    chown(&real, USER, USER);
    std::fs::write(real.join("config.json"), "{}").unwrap();
    chown(&real.join("config.json"), USER, USER);
    chmod(&real.join("config.json"), 0o600);
    symlink(&rootonly, h.join(".lnk")).unwrap();
    std::os::unix::fs::lchown(h.join(".lnk"), Some(USER), Some(USER)).unwrap();
    let target = real.join("config.json");
    one_target(&w, &target, "");
    let _attacker = Attacker::spawn(
        USER,
        &h,
        r#"
import os
while True:
    try:
        os.rename('.docker', '.real'); os.rename('.lnk', '.docker')
        os.rename('.docker', '.lnk'); os.rename('.real', '.docker')
    except OSError: pass
"#,
    );
    let mut leaks = Vec::new();
    for _ in 0..300 {
        let out = w.run(&["check"]);
        let text = stdout(&out);
        if text.contains("0604") || text.contains("root-secret-store") {
            leaks.push(text);
        }
    }
    assert!(
        leaks.is_empty(),
        "check described root's file {} times, e.g.:\n{}",
        leaks.len(),
        leaks[0]
    );
}
