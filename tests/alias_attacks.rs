//! Hostile local users against registry aliases: the helper socket while an alias moves between
//! registries, alias spellings, and root's writes into a user's directory while the user races
//! them. Attackers are real processes running as real non-root uids without passwd entries.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// Granted H1 (and its alias while it is H1's).
const A_USER: u32 = 4242;
/// Granted H3 (and the alias while it is H3's).
const B_USER: u32 = 4343;
const M: &str = "mirror.internal:5000";

/// A python3 process running `code` as `uid` (no passwd entry; std clears its supplementary
/// groups), with `args` as `sys.argv[1:]`; its stdout lines reach the test through a channel.
struct Py {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Py {
    fn spawn(uid: u32, code: &str, args: &[&str]) -> Py {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(code)
            .args(args)
            .uid(uid)
            .gid(uid)
            .current_dir("/")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 attacker");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Py { child, lines }
    }

    fn line(&self, timeout: Duration) -> String {
        self.lines
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("the attacker printed nothing in {timeout:?}: {e}"))
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
