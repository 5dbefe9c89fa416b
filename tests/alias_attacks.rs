//! Hostile local users against registry aliases: the helper socket while an alias moves between
//! registries, alias spellings, and root's writes into a user's directory while the user races
//! them. Attackers are real processes running as real non-root uids without passwd entries.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// Granted H1 (and its alias while it is H1's).
const A_USER: u32 = 4242;
/// Granted H3 (and the alias while it is H3's).
const B_USER: u32 = 4343;
const M: &str = "mirror.internal:5000";

/// Asks socket `argv[1]` for `argv[2]` as fast as it can until the file `argv[3]` exists; prints
/// "ready" after its first answer, then, at the end, the number of answers and every distinct
/// secret it was given (space separated, on one line).
const HARVEST: &str = r#"
import socket, sys, json, os
path, host, stop = sys.argv[1], sys.argv[2], sys.argv[3]
line = json.dumps({"cmd": "credential", "host": host}).encode() + b"\n"
got, n, said = set(), 0, False
while not os.path.exists(stop):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.sendall(line)
        buf = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            buf += b
        s.close()
        n += 1
        a = json.loads(buf)
        if a.get("kind") == "credential":
            got.add(a["secret"])
    except (OSError, ValueError):
        pass
    if not said:
        print("ready", flush=True)
        said = True
print(n, " ".join(sorted(got)), flush=True)
"#;

/// The config with the alias on `on` (H1 or H3): H1 granted to A_USER, H3 to B_USER, one root
/// target.
fn alias_config(w: &World, on: &str) -> PathBuf {
    let alias = |h: &str| {
        if h == on {
            format!("aliases = [\"{M}\"]\n")
        } else {
            String::new()
        }
    };
    w.config(&format!(
        "{}\n[[target]]\npath = \"{}\"\n\
         [[registry]]\nhost = \"{H1}\"\nusers = [\"{A_USER}\"]\n{}\
         [[registry]]\nhost = \"{H3}\"\nusers = [\"{B_USER}\"]\n{}",
        w.daemon_section(),
        w.path("d/config.json").display(),
        alias(H1),
        alias(H3),
    ))
}

/// The password in `file`'s entry for `host`.
fn password_in(file: &Path, host: &str) -> String {
    let v = read_json(file);
    password_of(v["auths"][host]["auth"].as_str().expect("an entry"))
}

/// An alias moved from one registry to another by a reload is answered, at every instant, with
/// the token of the registry whose grants let the caller have it: a caller granted only the new
/// registry never gets the old registry's token through the alias (nor the reverse), however
/// fast it asks while root moves the alias back and forth.
#[test]
fn an_alias_moved_between_registries_never_hands_one_registrys_token_to_the_others_grantees() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    std::fs::create_dir_all(w.path("d")).unwrap();
    alias_config(&w, H1);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    let target = w.path("d/config.json");
    assert!(
        wait_for(Duration::from_secs(30), || {
            std::fs::read(&target).is_ok_and(|b| {
                let t = String::from_utf8_lossy(&b);
                t.contains(H1) && t.contains(H3) && t.contains(M)
            })
        }),
        "no tokens written:\n{}",
        d.log_text()
    );
    let (p1, p3) = (password_in(&target, H1), password_in(&target, H3));
    assert_ne!(p1, p3);
    let sock = w.path("helper.sock");
    let stop = w.path("stop");
    let sock_s = sock.display().to_string();
    let stop_s = stop.display().to_string();
    let a = Py::spawn(A_USER, HARVEST, &[&sock_s, M, &stop_s]);
    let b = Py::spawn(B_USER, HARVEST, &[&sock_s, M, &stop_s]);
    assert_eq!(a.line(Duration::from_secs(20)), "ready");
    assert_eq!(b.line(Duration::from_secs(20)), "ready");
    const ROUNDS: usize = 200;
    for i in 0..ROUNDS {
        alias_config(&w, if i % 2 == 0 { H3 } else { H1 });
        let out = w.client(&["reload"]);
        assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    }
    std::fs::write(&stop, "").unwrap();
    let result = |p: &Py| {
        let l = p.line(Duration::from_secs(30));
        let mut f = l.split(' ');
        let n: usize = f.next().unwrap_or("0").parse().unwrap_or(0);
        let got: Vec<String> = f.filter(|s| !s.is_empty()).map(String::from).collect();
        (n, got)
    };
    let (na, got_a) = result(&a);
    let (nb, got_b) = result(&b);
    // Never printed: the secrets themselves stay out of the messages.
    assert!(
        !got_a.contains(&p3),
        "uid {A_USER}, granted H1 only, was given H3's token through the alias ({na} requests)"
    );
    assert!(
        !got_b.contains(&p1),
        "uid {B_USER}, granted H3 only, was given H1's token through the alias ({nb} requests)"
    );
    assert!(
        got_a.contains(&p1) && got_b.contains(&p3),
        "each was answered for the alias while it was its registry's ({na}, {nb} requests)"
    );
}

/// Races root's writes in `argv[1]` (the user's `.docker`) until the file `argv[2]` exists:
/// renames hard links to `argv[3]` (another user's file it may link), symbolic links to each
/// of `argv[3:]`, its own new versions, and root's temp files into root's temp names and the
/// target's name, in random order. Prints how many moves took, then how many were tried.
const RACER: &str = r#"
import os, sys, random
d, stop, victims = sys.argv[1], sys.argv[2], sys.argv[3:]
linkable = victims[0]
prefix, target = ".config.json.ecr-refresherd-", d + "/config.json"
took = tried = 0
def fresh(path):
    with open(path, "w") as f:
        f.write('{"auths": {"ghcr.io": {"auth": "dXNlcjpwdw=="}}}')
ready = d + "/.ready"
while not os.path.exists(stop):
    try:
        if not os.path.exists(ready):
            fresh(ready)
        tmps = [d + "/" + x for x in os.listdir(d) if x.startswith(prefix) and x.endswith(".tmp")]
    except OSError:
        continue
    tried += 1
    try:
        if tmps and random.random() < 0.5:
            # Root is writing: a version of ours takes the name at once (a writer's rename
            # between root's check and its exchange), then something else takes a name.
            os.rename(ready, target)
            took += 1
    except OSError:
        pass
    a = random.choice([0, 0, 1, 1, 2, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 7, 7, 8, 8])
    try:
        for junk in (d + "/.h", d + "/.s", d + "/.n"):
            try:
                os.unlink(junk)
            except OSError:
                pass
        if a == 0 and tmps:
            os.link(linkable, d + "/.h"); os.rename(d + "/.h", random.choice(tmps))
        elif a == 1 and tmps:
            os.symlink(random.choice(victims), d + "/.s"); os.rename(d + "/.s", random.choice(tmps))
        elif a == 2:
            os.link(linkable, d + "/.h"); os.rename(d + "/.h", target)
        elif a == 3:
            os.symlink(random.choice(victims), d + "/.s"); os.rename(d + "/.s", target)
        elif a == 4 or a == 5:
            fresh(d + "/.n"); os.rename(d + "/.n", target)
        elif a == 6 and tmps:
            os.rename(target, random.choice(tmps))
        elif a == 7 and tmps:
            os.rename(random.choice(tmps), target)
        elif a == 8 and tmps:
            fresh(d + "/.n"); os.rename(d + "/.n", random.choice(tmps))
        else:
            continue
        took += 1
    except OSError:
        pass
print(took, tried, flush=True)
"#;

/// What must not change about another user's (or root's) file: content, owner, mode, inode.
fn identity(p: &Path) -> (Vec<u8>, u32, u32, u32, u64) {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(p).expect("victim stat");
    (
        std::fs::read(p).unwrap_or_default(),
        md.uid(),
        md.gid(),
        md.mode(),
        md.ino(),
    )
}

/// The user of a target races the daemon's writes (with an alias, so each file holds two
/// entries) for hundreds of rounds: hard links to another user's file, symbolic links to other
/// users' and root's files and directories, its own versions, root's temp files moved about, all
/// renamed into root's temp names and the target's name between root's calls. Root never
/// changes, unlinks, chowns or fills another user's file, never leaves a file of its own there,
/// writes a token only into a file of the user's, and writes the target again once the user
/// stops.
#[test]
fn a_user_racing_the_writes_with_links_and_renames_never_gets_root_to_touch_anothers_file() {
    require_root!();
    const ROUNDS: usize = 300;
    use std::os::unix::fs::MetadataExt;
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    const USER: u32 = A_USER;
    const OTHER: u32 = B_USER;
    let victims = w.path("victims");
    std::fs::create_dir(&victims).unwrap();
    chmod(&victims, 0o755);
    // Another user's file the user may hard-link (fs.protected_hardlinks lets a user link a
    // file it may read and write), root's 0600 file and root's and another user's directories.
    let theirs = victims.join("theirs");
    std::fs::write(&theirs, "another user's data\n").unwrap();
    chown(&theirs, OTHER, OTHER);
    chmod(&theirs, 0o666);
    let roots = victims.join("roots");
    std::fs::write(&roots, "root:$6$do-not-touch\n").unwrap();
    chmod(&roots, 0o600);
    let their_dir = victims.join("their-dir");
    std::fs::create_dir(&their_dir).unwrap();
    chown(&their_dir, OTHER, OTHER);
    let files = [&theirs, &roots];
    let before: Vec<_> = files.iter().map(|p| identity(p)).collect();
    let home = w.path("home/u");
    let docker = home.join(".docker");
    std::fs::create_dir_all(&docker).unwrap();
    chown(&home, USER, USER);
    chown(&docker, USER, USER);
    let target = docker.join("config.json");
    w.config(&format!(
        "{}\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\naliases = [\"{M}\"]\n",
        w.daemon_section(),
        target.display()
    ));
    let mut d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(Duration::from_secs(30), || std::fs::read_to_string(&target)
            .is_ok_and(|t| t.contains(M))),
        "never written:\n{}",
        d.log_text()
    );
    let stop = w.path("stop");
    let args: Vec<String> = [&docker, &stop, &theirs, &roots, &their_dir, &victims]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let racer = Py::spawn(USER, RACER, &args);
    // Two writers of root's: the daemon (again each time the user's version, without our
    // entries, replaces the file, at most once per event spacing) and `once` runs, one after
    // the other, with a state of their own.
    let once = w.path("once.toml");
    std::fs::write(
        &once,
        format!(
            "[daemon]\nstate_dir = \"{}\"\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\naliases = [\"{M}\"]\n",
            w.path("once-state").display(),
            target.display()
        ),
    )
    .unwrap();
    let (mut written, mut refused, mut other) = (0, 0, 0);
    for _ in 0..ROUNDS {
        let mut c = w.cmd();
        c.arg("--config").arg(&once).arg("once");
        let out = w.capture(c.output().expect("once"));
        let text = stdout(&out);
        if code(&out) == 0 {
            written += 1;
        } else if text.contains("refused") {
            refused += 1;
        } else {
            other += 1;
        }
    }
    let rounds = format!("once: {written} written, {refused} refused, {other} otherwise");
    std::fs::write(&stop, "").unwrap();
    let l = racer.line(Duration::from_secs(30));
    eprintln!("racer: {l} (moves that took, moves tried); {rounds}");
    assert!(written >= 5, "root hardly wrote: {rounds}");
    let took: usize = l
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(took > 1000, "the racer hardly raced: {l}");

    // Other users' and root's files are as they were, where they were; nothing new beside them.
    let after: Vec<_> = files.iter().map(|p| identity(p)).collect();
    assert_eq!(after, before, "another user's or root's file changed");
    let mut beside: Vec<_> = std::fs::read_dir(&victims)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    beside.sort();
    assert_eq!(beside, ["roots", "their-dir", "theirs"]);
    assert_eq!(std::fs::read_dir(&their_dir).unwrap().count(), 0);
    // In the user's directory: every entry is the user's, or a link the user made to a victim;
    // a token is only ever in a plain file of the user's, 0600.
    let passwords = w.fake.issued_passwords();
    let victim_inodes: Vec<u64> = before.iter().map(|v| v.4).collect();
    for e in std::fs::read_dir(&docker).unwrap() {
        let p = e.unwrap().path();
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.file_type().is_symlink() {
            continue;
        }
        assert!(
            md.uid() == USER || victim_inodes.contains(&md.ino()),
            "{} belongs to uid {} and is no victim the user linked",
            p.display(),
            md.uid()
        );
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        if passwords.iter().any(|pw| text.contains(pw.as_str())) {
            assert_eq!(md.uid(), USER, "{}", p.display());
        }
    }
    assert_eq!(d.child.try_wait().unwrap(), None, "the daemon died");

    // The user stops and clears up: the next write puts both entries back.
    for e in std::fs::read_dir(&docker).unwrap() {
        let p = e.unwrap().path();
        let _ = std::fs::remove_file(&p);
    }
    let _ = w.client(&["refresh"]);
    assert!(
        wait_for(Duration::from_secs(20), || {
            std::fs::read(&target).is_ok_and(|b| {
                let t = String::from_utf8_lossy(&b);
                t.contains(M) && t.contains(H1)
            })
        }),
        "not written again:\n{}",
        d.log_text()
    );
    let md = std::fs::metadata(&target).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o777), (USER, 0o600));
    assert_fresh_entry(&w, &target, M);
    d.stop();
}

/// `check`'s output and exit code for a config with `aliases` on H1.
fn check_aliases(w: &World, aliases: &str) -> (i32, String) {
    w.config(&format!(
        "[daemon]\nstate_dir = \"{{dir}}/state\"\n[[registry]]\nhost = \"{H1}\"\naliases = [{aliases}]\n[[target]]\npath = \"{{dir}}/d/config.json\"\n"
    ));
    let out = w.run(&["check"]);
    (code(&out), format!("{}{}", stdout(&out), stderr(&out)))
}

/// Every spelling of this machine's loopback at a port any local user may bind is warned
/// about (a user who listens there first is sent the credential by docker and podman): the
/// unspecified addresses (a connection to 0.0.0.0 or [::] reaches this machine), IPv4-mapped
/// IPv6 addresses, and `*.localhost` (RFC 6761; systemd-resolved and nss-myhostname answer
/// 127.0.0.1). Shorthand IPv4 spellings that the C library reads as an address and Go's
/// resolver as a name (`127.1`, `2130706433`, `0x7f.1`, octal `0177.0.0.1`) are refused.
#[test]
fn every_loopback_spelling_of_an_alias_is_warned_about_or_refused() {
    let w = World::new();
    for alias in [
        "0.0.0.0:5000",
        "[::]:5000",
        "[::ffff:127.0.0.1]:5000",
        "[::ffff:0.0.0.0]:8080",
        "mirror.localhost:5000",
        "localhost:5000",
        "127.0.0.2:5000",
    ] {
        let (code, text) = check_aliases(&w, &format!("\"{alias}\""));
        assert!(
            text.contains("loopback") && text.contains("any local user who listens there"),
            "{alias}: no warning (exit {code}):\n{text}"
        );
        // In the report (stdout), and exit 1 as for any warning.
        assert!(
            text.lines().any(|l| l.starts_with("config ")
                && l.contains(": warning: ")
                && l.contains("loopback")),
            "{alias}: the warning is not in the report:\n{text}"
        );
        assert_eq!(code, 1, "{alias}:\n{text}");
    }
    for alias in [
        "127.1:5000",
        "2130706433:5000",
        "0x7f.1:5000",
        "0177.0.0.1:5000",
        "10.1",
    ] {
        let (code, text) = check_aliases(&w, &format!("\"{alias}\""));
        assert_eq!(code, 2, "{alias}: not refused:\n{text}");
        assert!(
            text.contains(&format!("invalid alias \"{alias}\"")) && text.contains("IPv4"),
            "{alias}:\n{text}"
        );
    }
    // Not loopback, or at a port only root may bind: no warning.
    for alias in [
        "mirror.internal:5000",
        "10.0.0.7:5000",
        "0.0.0.0:443",
        "[fd00::1]:5000",
    ] {
        let (_, text) = check_aliases(&w, &format!("\"{alias}\""));
        assert!(!text.contains("loopback"), "{alias}:\n{text}");
    }
}

/// Asks socket `argv[1]` once for each of `argv[2:]`; prints one line per name: "found <host>"
/// (never the secret) or the error message.
const ASK_EACH: &str = r#"
import socket, sys, json
for host in sys.argv[2:]:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall(json.dumps({"cmd": "credential", "host": host}).encode() + b"\n")
    buf = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        buf += b
    a = json.loads(buf)
    print("found " + a["host"] if a.get("kind") == "credential" else a.get("message"), flush=True)
"#;

/// Other spellings of an alias: a caller not granted its registry gets "not found" for every
/// one, exactly as for a name that is no alias; the granted caller gets the credential only for
/// spellings that name the same host and port.
#[test]
fn other_spellings_of_an_alias_give_an_ungranted_user_nothing_and_tell_nothing() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    std::fs::create_dir_all(w.path("d")).unwrap();
    w.config(&format!(
        "{}\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\nusers = [\"{A_USER}\"]\naliases = [\"{M}\"]\n[[registry]]\nhost = \"{H3}\"\nusers = [\"{B_USER}\"]\n",
        w.daemon_section(),
        w.path("d/config.json").display(),
    ));
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(Duration::from_secs(30), || std::fs::read_to_string(
            w.path("d/config.json")
        )
        .is_ok_and(|t| t.contains(M) && t.contains(H3))),
        "{}",
        d.log_text()
    );
    let same = [
        M.to_string(),
        format!("https://{M}"),
        format!("http://{M}/v2/"),
        format!("https://{M}/v1/"),
        format!("{M}/team/app:v1"),
        M.to_uppercase(),
        format!(" {M} "),
    ];
    let different = [
        format!("{M}."),
        "mirror.internal.:5000".to_string(),
        format!("user@{M}"),
        format!("https://user@{M}/v2/"),
        "mirror.internal".to_string(),
        "mirror.internal:05000".to_string(),
        "mirror.internal:5001".to_string(),
        "[mirror.internal]:5000".to_string(),
        "mirror.internal:5000#".to_string(),
        "mirror.internal%3a5000".to_string(),
        "mırror.internal:5000".to_string(),
        "unknown.internal:5000".to_string(),
    ];
    let sock = w.path("helper.sock").display().to_string();
    let ask = |uid: u32, names: &[String]| -> Vec<String> {
        let mut args = vec![sock.as_str()];
        args.extend(names.iter().map(String::as_str));
        let py = Py::spawn(uid, ASK_EACH, &args);
        names
            .iter()
            .map(|_| py.line(Duration::from_secs(20)))
            .collect()
    };
    let nf = "credentials not found in native keychain";
    for (name, got) in same.iter().zip(ask(A_USER, &same)) {
        assert_eq!(got, format!("found {M}"), "{name:?}");
    }
    for (name, got) in different.iter().zip(ask(A_USER, &different)) {
        assert_eq!(got, nf, "{name:?}");
    }
    let all: Vec<String> = same.iter().chain(&different).cloned().collect();
    for (name, got) in all.iter().zip(ask(B_USER, &all)) {
        assert_eq!(got, nf, "uid {B_USER}, {name:?}");
    }
}
