//! Hostile local users against the credential helper socket (0666), the docker credential helper
//! and the kubelet credential provider: other spellings of a host, floods from many uids, denied
//! requests that fill the log, timing, descriptors handed on, revocation races, a hostile server
//! behind the clients' socket path. Attackers are real processes running as real non-root uids
//! without passwd entries (a user with a subordinate uid range holds 65536 such uids).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Granted H1 by uid in every config here, nothing else.
const GRANTED: u32 = 4242;
/// Granted nothing.
const OTHER: u32 = 4343;
/// What the helper protocol says for a host it has nothing for.
const NOT_FOUND: &str = "credentials not found in native keychain";

fn with_stdin(mut c: Command, input: &str) -> Output {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    child.wait_with_output().expect("wait")
}

/// The binary as `uid` (its own group only) through setpriv; as root when `uid` is 0. The
/// environment is the World's (fake endpoints, no AWS access of its own).
fn bin_as(w: &World, uid: u32) -> Command {
    let base = w.cmd();
    if uid == 0 {
        return base;
    }
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", "--"])
        .arg(BIN)
        .env_clear()
        .envs(base.get_envs().filter_map(|(k, v)| Some((k, v?))));
    c
}

/// `credential-helper get` as `uid` against `sock`. Its stdout may hold a secret (that is its
/// job): only stderr is kept for the leak scan; assertions print stdout only when it holds none.
fn helper_get(w: &World, uid: u32, sock: &Path, input: &str) -> Output {
    let mut c = bin_as(w, uid);
    c.args(["credential-helper", "get", "--socket"]).arg(sock);
    let out = with_stdin(c, input);
    w.capture_text(stderr(&out));
    out
}

/// `credential-provider` as `uid` against `sock`, for `image`.
fn provider(w: &World, uid: u32, sock: &Path, image: &str) -> Output {
    let mut c = bin_as(w, uid);
    c.args(["credential-provider", "--socket"]).arg(sock);
    let req = serde_json::json!({
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        "kind": "CredentialProviderRequest",
        "image": image,
    });
    let out = with_stdin(c, &req.to_string());
    w.capture_text(stderr(&out));
    out
}

/// Whether `out`'s stdout holds a password the fake issued.
fn holds_secret(w: &World, out: &Output) -> bool {
    let text = stdout(out);
    w.fake.issued_passwords().iter().any(|p| text.contains(p))
}

/// `out`'s stdout, or a note that it held a secret (never printed).
fn shown_stdout(w: &World, out: &Output) -> String {
    if holds_secret(w, out) {
        "<stdout holds an issued password>".to_string()
    } else {
        stdout(out)
    }
}

/// A daemon with one root target, H1 (granted to GRANTED by uid, plus `h1_extra` lines) and H3
/// (granted to nobody); returns once both tokens are in memory and the helper socket is bound.
fn daemon_with_grants<'w>(w: &'w World, h1_extra: &str) -> Daemon<'w> {
    chmod(w.dir.path(), 0o755);
    w.config(&format!(
        "{}\n[[target]]\npath = \"{}\"\n\
         [[registry]]\nhost = \"{H1}\"\nusers = [\"{GRANTED}\"]\n{h1_extra}\n\
         [[registry]]\nhost = \"{H3}\"\n",
        w.daemon_section(),
        w.path("d/config.json").display(),
    ));
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(Duration::from_secs(30), || w.fake.issued_passwords().len()
            >= 2),
        "no tokens:\n{}",
        d.log_text()
    );
    assert!(wait_for(Duration::from_secs(10), || helper_sock(w).exists()));
    d
}

fn helper_sock(w: &World) -> PathBuf {
    w.path("helper.sock")
}

/// A user holding a subordinate uid range: `n` uids from `first`, each a real process.
fn uids(first: u32, n: u32) -> impl Iterator<Item = u32> {
    first..first + n
}

/// Asks for `argv[2]` on socket `argv[1]` as fast as it can for `argv[3]` seconds, then prints
/// how many answers it got.
const FLOOD: &str = r#"
import socket, sys, json, time
path, host, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
line = json.dumps({"cmd": "credential", "host": host}).encode() + b"\n"
end = time.monotonic() + secs
n = 0
while time.monotonic() < end:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.sendall(line)
        while s.recv(65536):
            pass
        s.close()
        n += 1
    except OSError:
        pass
print(n, flush=True)
"#;

/// Holds `argv[2]` connections to socket `argv[1]` that never send a request (slowloris),
/// opening a new one 20 ms after the daemon answers or closes one (a hold, not a connection
/// flood); prints `ready` once the first `argv[2]` are open.
const HOLD: &str = r#"
import socket, sys, selectors, time
path, n = sys.argv[1], int(sys.argv[2])
sel = selectors.DefaultSelector()
def conn():
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
for _ in range(n):
    conn()
print("ready", flush=True)
while True:
    for key, _ in sel.select(1.0):
        s = key.fileobj
        sel.unregister(s)
        s.close()
        time.sleep(0.02)
        try:
            conn()
        except OSError:
            pass
"#;

// ---------------------------------------------------------------------------------------------
// Defects: these fail on the code as reviewed (see the report).
// ---------------------------------------------------------------------------------------------

/// `H@evil.example` is the server `evil.example` with user info `H` (RFC 3986; Go's url.Parse,
/// which docker and kubelet use): H's credential must not be handed out for it. docker with this
/// helper as its `credsStore` (`docker login H@evil.example`) or a kubelet whose `matchImages`
/// admit the image would otherwise send H's token to evil.example.
#[test]
fn a_host_behind_user_info_names_another_server_not_that_registry() {
    require_root!();
    let w = World::new();
    let d = daemon_with_grants(&w, "");
    let sock = helper_sock(&w);
    for uid in [0, GRANTED] {
        for text in [
            format!("{H1}@evil.example"),
            format!("https://{H1}@evil.example"),
            format!("https://{H1}@evil.example/v2/"),
            format!("{H1}@evil.example/team/app:v1"),
        ] {
            let out = helper_get(&w, uid, &sock, &text);
            assert!(
                !holds_secret(&w, &out) && stdout(&out).trim() == NOT_FOUND,
                "uid {uid}: the docker helper, asked for {text:?} (the server evil.example), answered: exit {}, {}",
                code(&out),
                shown_stdout(&w, &out)
            );
        }
    }
    let image = format!("{H1}@evil.example/team/app:v1");
    let out = provider(&w, 0, &sock, &image);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let keys: Vec<String> = v["auth"]
        .as_object()
        .map(|a| a.keys().cloned().collect())
        .unwrap_or_default();
    assert!(
        !holds_secret(&w, &out) && v["auth"] == serde_json::json!({}),
        "the kubelet provider (root) printed a credential for image {image:?} of evil.example: auth keys {keys:?}"
    );
    drop(d);
}

/// A denied request is logged with the caller's text (up to 4 KB) at most once a second *per
/// uid*: a user with a subordinate uid range writes as many lines a second as it has uids, and a
/// single uid 4 KB a second for ever (about 350 MB a day). Denials must be logged like refused
/// connections: a few lines, each short, however many uids ask.
#[test]
fn denied_requests_from_many_uids_do_not_flood_the_log() {
    require_root!();
    let w = World::new();
    let d = daemon_with_grants(&w, "");
    let sock = helper_sock(&w);
    let sock = sock.to_str().expect("UTF-8 path");
    let host = format!("{}.example", "a".repeat(4000));
    let attackers: Vec<Py> = uids(5200, 16)
        .map(|uid| Py::spawn(uid, FLOOD, &[sock, &host, "3"]))
        .collect();
    let answered: u64 = attackers
        .iter()
        .map(|a| {
            a.line(Duration::from_secs(120))
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
        })
        .sum();
    assert!(answered > 0, "the flood got no answer at all");
    let log = d.log_text();
    let denied: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("credential request denied"))
        .collect();
    let bytes: usize = denied.iter().map(|l| l.len()).sum();
    let longest = denied.iter().map(|l| l.len()).max().unwrap_or(0);
    assert!(
        denied.len() <= 3 && longest <= 1024,
        "{answered} denied requests from 16 uids in 3 s wrote {} log lines, {bytes} bytes (the longest {longest} bytes)",
        denied.len()
    );
    drop(d);
}

/// The helper socket admits 128 connections of all users but root together, whoever they are:
/// 20 uids that hold idle connections (no grant, no request) lock every granted user out of it
/// (docker and podman pulls fail with "too many connections").
#[test]
fn ungranted_uids_cannot_lock_granted_users_out_of_the_helper_socket() {
    require_root!();
    let w = World::new();
    let d = daemon_with_grants(&w, "");
    let sock = helper_sock(&w);
    let path = sock.to_str().expect("UTF-8 path");
    let attackers: Vec<Py> = uids(5300, 20)
        .map(|uid| Py::spawn(uid, HOLD, &[path, "8"]))
        .collect();
    for a in &attackers {
        assert_eq!(a.line(Duration::from_secs(60)), "ready");
    }
    let mut answered = 0;
    let mut last_failure = String::new();
    for _ in 0..10 {
        let out = helper_get(&w, GRANTED, &sock, H1);
        if code(&out) == 0 && holds_secret(&w, &out) {
            answered += 1;
        } else {
            last_failure = shown_stdout(&w, &out);
        }
    }
    assert!(
        answered >= 8,
        "the granted uid got its credential {answered} times out of 10 while 20 ungranted uids held idle connections; the last failure: {}",
        last_failure.trim()
    );
    drop(attackers);
    drop(d);
}

/// A denied request for a registry whose grants name users or groups (or whose target's user is
/// a name) does account lookups; one for a host that is not configured does not. Any local user
/// can tell them apart by the answer's time and so list the configured registries (account ids
/// and regions) without a grant.
#[test]
fn denied_requests_take_as_long_for_configured_and_unknown_registries() {
    require_root!();
    const TIMING: &str = r#"
import socket, sys, json, time
path, known, unknown, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def ask(h):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    t = time.perf_counter_ns()
    s.sendall(json.dumps({"cmd": "credential", "host": h}).encode() + b"\n")
    d = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        d += b
    dt = time.perf_counter_ns() - t
    s.close()
    if b"not found" not in d:
        print("unexpected answer: %r" % d[:200], flush=True)
        sys.exit(1)
    return dt
k, u = [], []
for i in range(n):
    if i % 2:
        k.append(ask(known)); u.append(ask(unknown))
    else:
        u.append(ask(unknown)); k.append(ask(known))
k.sort(); u.sort()
q = lambda v, f: v[int(len(v) * f)] / 1000.0
print(json.dumps({"known": [q(k, .25), q(k, .5)], "unknown": [q(u, .25), q(u, .5)]}), flush=True)
"#;
    let w = World::new();
    // Names looked up at each request, as the README has them: accounts made later, or in LDAP.
    let d = daemon_with_grants(&w, "groups = [\"ecr-pullers-later\", \"ci-later\"]\n");
    let sock = helper_sock(&w);
    let path = sock.to_str().expect("UTF-8 path");
    let unknown = "999999999999.dkr.ecr.us-east-1.amazonaws.com";
    let a = Py::spawn(OTHER, TIMING, &[path, H1, unknown, "1500"]);
    let line = a.line(Duration::from_secs(300));
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let at = |k: &str, i: usize| v[k][i].as_f64().unwrap_or(0.0);
    let (p25, median) = (
        at("known", 0) - at("unknown", 0),
        at("known", 1) - at("unknown", 1),
    );
    assert!(
        p25 < 100.0 || median < 100.0,
        "a denied request for the configured {H1} takes {median:.0} µs longer (median; {p25:.0} µs at the 25th percentile) than one for an unknown host: {line}"
    );
    drop(d);
}

/// The helper and the provider (run as root by kubelet) read the daemon's answer line without a
/// bound: whatever answers on their socket path (`--socket`, `ECR_REFRESHERD_SOCKET`, a config's
/// `helper_socket`) makes them allocate without limit for the 5 s the answer may take.
#[test]
fn the_helper_clients_bound_what_they_read_from_the_socket() {
    let w = World::new();
    let sock = w.path("hostile.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    std::thread::spawn(move || {
        // Two clients: the provider, then the docker helper.
        for _ in 0..2 {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            std::thread::spawn(move || {
                let chunk = vec![b'a'; 1 << 20];
                while conn.write_all(&chunk).is_ok() {}
            });
        }
    });
    for client in ["provider", "helper"] {
        let mut c = w.cmd();
        let input = if client == "provider" {
            c.arg("credential-provider");
            format!(
                r#"{{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"{H1}/app"}}"#
            )
        } else {
            c.args(["credential-helper", "get"]);
            H1.to_string()
        };
        c.arg("--socket")
            .arg(&sock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes());
        }
        let status = format!("/proc/{}/status", child.id());
        let mut peak_kb = 0u64;
        let start = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the {client} did not give up"
            );
            if let Ok(text) = std::fs::read_to_string(&status)
                && let Some(kb) = text
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse::<u64>().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
            if peak_kb >= 256 * 1024 {
                // Enough to tell; do not let it take the machine's memory.
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = w.capture(child.wait_with_output().expect("output"));
        assert!(
            peak_kb < 256 * 1024,
            "the {client} grew to {} MB reading an endless answer line (killed there)",
            peak_kb / 1024
        );
        assert_eq!(code(&out), 1, "{client}: {}", stderr(&out));
    }
}

/// Whatever answers on the provider's socket path is trusted for the key of kubelet's `auth` map:
/// an answer for `*.example` (a glob kubelet matches against every image of every host under
/// it) is printed as such, for a request about H1's image. The provider knows the registry it
/// asked for; it must key the answer by that, or refuse an answer for another host.
#[test]
fn the_provider_keys_its_answer_by_the_images_registry() {
    let w = World::new();
    let sock = w.path("hostile.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    std::thread::spawn(move || {
        if let Ok((conn, _)) = listener.accept() {
            let mut line = String::new();
            let _ = BufReader::new(&conn).read_line(&mut line);
            let answer = serde_json::json!({
                "kind": "credential",
                "host": "*.example",
                "username": "AWS",
                "secret": "not-a-real-secret",
                "expires_at": "2099-01-01T00:00:00Z",
            });
            let _ = (&conn).write_all(format!("{answer}\n").as_bytes());
        }
    });
    let out = provider(&w, 0, &sock, &format!("{H1}/team/app:v1"));
    w.capture_text(stdout(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let keys: Vec<String> = v["auth"]
        .as_object()
        .map(|a| a.keys().cloned().collect())
        .unwrap_or_default();
    assert!(
        keys.iter().all(|k| k == H1),
        "the provider, asked about an image of {H1}, printed auth for {keys:?}"
    );
}

/// Opens connections to socket `argv[1]` as fast as it can without ever sending (up to 900 at
/// once, then closes them all and starts again); prints `full` the first time the kernel says
/// the socket's listen backlog is full (EAGAIN).
const CONNECT_FLOOD: &str = r#"
import socket, sys
path = sys.argv[1]
held, told = [], False
while True:
    s = socket.socket(socket.AF_UNIX)
    s.setblocking(False)
    try:
        s.connect(path)
        held.append(s)
    except BlockingIOError:
        s.close()
        if not told:
            print("full", flush=True)
            told = True
    except OSError:
        s.close()
    if len(held) > 900:
        for h in held:
            h.close()
        held = []
"#;

/// Any two local users who open connections faster than the daemon accepts them fill the helper
/// socket's listen backlog; the clients connect without blocking, take the kernel's EAGAIN for
/// "ecr-refresherd is not running" and give up at once: kubelet's provider (root) and the docker
/// helper of granted users fail while the flood lasts. No per-uid budget helps: the backlog is
/// before `accept`.
#[test]
fn a_connection_flood_does_not_make_the_clients_give_up() {
    require_root!();
    let w = World::new();
    let d = daemon_with_grants(&w, "");
    let sock = helper_sock(&w);
    let path = sock.to_str().expect("UTF-8 path");
    let flood: Vec<Py> = uids(5500, 4)
        .map(|uid| Py::spawn(uid, CONNECT_FLOOD, &[path]))
        .collect();
    // Until each has seen the backlog full (or long enough that it never will).
    for a in &flood {
        let _ = a.try_line(Duration::from_secs(20));
    }
    let image = format!("{H1}/team/app:v1");
    let mut answered = 0;
    let mut last_failure = String::new();
    for _ in 0..20 {
        let out = provider(&w, 0, &sock, &image);
        if code(&out) == 0 && holds_secret(&w, &out) {
            answered += 1;
        } else {
            last_failure = stderr(&out);
        }
    }
    let mut granted = 0;
    for _ in 0..10 {
        let out = helper_get(&w, GRANTED, &sock, H1);
        if code(&out) == 0 && holds_secret(&w, &out) {
            granted += 1;
        } else {
            last_failure = shown_stdout(&w, &out);
        }
    }
    assert!(
        answered >= 18 && granted >= 9,
        "during a connection flood from 4 uids the kubelet provider (root) got the credential {answered} times of 20 and the granted uid's docker helper {granted} of 10; the last failure: {}",
        last_failure.trim()
    );
    drop(flood);
    drop(d);
}

// ---------------------------------------------------------------------------------------------
// What held: these pass on the code as reviewed.
// ---------------------------------------------------------------------------------------------

/// Other spellings of a registry a user is not granted (case, scheme, path, image references,
/// `..`) are that registry and still denied; spellings of other servers that look like a
/// configured host (trailing dot, port, a path naming it, look-alike Unicode, a suffix) get no
/// credential, not even for root.
#[test]
fn other_spellings_of_a_host_get_no_other_registry() {
    require_root!();
    let w = World::new();
    let d = daemon_with_grants(&w, "");
    let sock = helper_sock(&w);
    let upper = H3.to_uppercase();
    for text in [
        H3.to_string(),
        upper.clone(),
        format!("https://{H3}"),
        format!("http://{upper}/v2/"),
        format!("{H3}/team/app:v1"),
        format!("{H3}/team/app@sha256:0123"),
        format!("{H3}/../{H1}"),
        format!(" {H3}\t"),
    ] {
        let out = helper_get(&w, GRANTED, &sock, &text);
        assert!(
            !holds_secret(&w, &out) && stdout(&out).trim() == NOT_FOUND,
            "uid {GRANTED} (granted {H1} only) asked {text:?}: exit {}, {}",
            code(&out),
            shown_stdout(&w, &out)
        );
    }
    // The granted host itself, as a server URL and an image.
    for text in [format!("https://{H1}/v2/"), format!("{H1}/team/app:v1")] {
        let out = helper_get(&w, GRANTED, &sock, &text);
        assert!(code(&out) == 0 && holds_secret(&w, &out), "{text}");
    }
    let kelvin = H1.replace('k', "\u{212a}");
    for text in [
        format!("{H1}."),
        format!("{H1}:443"),
        format!("{H1}:5000/app"),
        format!("evil.example/{H1}"),
        format!("evil.example/{H1}/app"),
        format!("{H1}.evil.example"),
        format!("{H1}evil.example"),
        format!("evil.example#{H1}"),
        format!("evil.example?{H1}"),
        format!("evil.example\\{H1}"),
        format!("HTTPS://{H1}"),
        format!("//{H1}"),
        format!("{H1}\u{0}"),
        kelvin,
        "docker.io".to_string(),
        "localhost/app".to_string(),
    ] {
        let out = helper_get(&w, 0, &sock, &text);
        assert!(
            !holds_secret(&w, &out),
            "root's docker helper gave a credential for {text:?}: exit {}",
            code(&out)
        );
        let out = provider(&w, 0, &sock, &text);
        assert!(
            !holds_secret(&w, &out),
            "the kubelet provider gave a credential for image {text:?}"
        );
    }
    drop(d);
}

/// The helper socket serves one short request per connection: a huge line is refused, a second
/// request on the same connection is never answered, a silent client is cut after a second; and
/// while ungranted uids flood it (idle and busy connections), root's `status` and `refresh` on
/// the control socket answer and the root target is rewritten.
#[test]
fn a_flooded_helper_socket_leaves_root_served() {
    require_root!();
    let w = World::new();
    let d = daemon_with_grants(&w, "");
    let sock = helper_sock(&w);
    let path = sock.to_str().expect("UTF-8 path");
    const PROBE: &str = r#"
import socket, sys, json, time
path, h1 = sys.argv[1], sys.argv[2]
def conn():
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(30)
    return s
def answer(s):
    d = b""
    while True:
        b = s.recv(65536)
        if not b:
            return d
        d += b
req = lambda h: json.dumps({"cmd": "credential", "host": h}).encode() + b"\n"
s = conn(); s.sendall(b"{" + b" " * 5000 + b"}\n")
try:
    print("huge", answer(s).decode().strip(), flush=True)
except ConnectionResetError:
    # Closed with the rest of the line unread: the kernel resets the connection.
    print("huge reset", flush=True)
s = conn(); s.sendall(req(h1) + req(h1) + b'{"cmd":"status"}\n'); a = answer(s)
print("pipelined", a.count(b"\n"), b'"kind":"credential"' in a, flush=True)
s = conn(); t = time.monotonic(); a = answer(s); print("silent %.1f" % (time.monotonic() - t), a.decode().strip(), flush=True)
s = conn(); s.sendall(b'{"cmd":"status"}\n'); print("status", answer(s).decode().strip(), flush=True)
"#;
    let p = Py::spawn(GRANTED, PROBE, &[path, H1]);
    let huge = p.line(Duration::from_secs(60));
    assert!(
        huge.contains("at most 4096 bytes") || huge == "huge reset",
        "{huge}"
    );
    let pipelined = p.line(Duration::from_secs(60));
    assert_eq!(pipelined, "pipelined 1 True", "one answer per connection");
    let silent = p.line(Duration::from_secs(60));
    assert!(
        silent.starts_with("silent 1.") || silent.starts_with("silent 0.9"),
        "{silent}"
    );
    let status = p.line(Duration::from_secs(60));
    assert!(status.contains("credential requests only"), "{status}");
    drop(p);
    // Floods from 10 uids: idle connections and request churn.
    let host = format!("{}.example", "b".repeat(4000));
    let mut flood: Vec<Py> = uids(5400, 5)
        .map(|uid| Py::spawn(uid, HOLD, &[path, "8"]))
        .collect();
    flood.extend(uids(5405, 5).map(|uid| Py::spawn(uid, FLOOD, &[path, &host, "600"])));
    for a in &flood[..5] {
        assert_eq!(a.line(Duration::from_secs(60)), "ready");
    }
    let target = w.path("d/config.json");
    let before = assert_fresh_entry(&w, &target, H1);
    for _ in 0..3 {
        let t = Instant::now();
        assert!(w.status_json().is_some(), "root's status did not answer");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "status took {:?}",
            t.elapsed()
        );
    }
    let out = w.client(&["refresh"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(
        wait_for(Duration::from_secs(30), || {
            assert_fresh_entry(&w, &target, H1) != before
        }),
        "the root target was not rewritten during the flood:\n{}",
        d.log_text()
    );
    drop(flood);
    drop(d);
}

/// The kernel records who connected (`SO_PEERCRED`, `SO_PEERGROUPS` at `connect`): a socket an
/// ungranted process connected and handed to a granted one (SCM_RIGHTS) is still the
/// ungranted caller's. (The reverse, a granted process handing its connection on, is that
/// process giving its own credential away, which it could do with the secret itself.)
#[test]
fn a_connection_handed_on_is_still_its_connectors() {
    require_root!();
    const CONNECT_AND_PASS: &str = r#"
import socket, sys
path, relay = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX); s.connect(path)
r = socket.socket(socket.AF_UNIX); r.connect(relay)
socket.send_fds(r, [b"x"], [s.fileno()])
print("passed", flush=True)
r.recv(1)
"#;
    const RECEIVE_AND_ASK: &str = r#"
import socket, sys, json, os
relay, host = sys.argv[1], sys.argv[2]
l = socket.socket(socket.AF_UNIX); l.bind(relay); os.chmod(relay, 0o777); l.listen(1)
print("listening", flush=True)
c, _ = l.accept()
msg, fds, _, _ = socket.recv_fds(c, 1, 1)
s = socket.socket(fileno=fds[0])
s.sendall(json.dumps({"cmd": "credential", "host": host}).encode() + b"\n")
d = b""
while True:
    b = s.recv(4096)
    if not b:
        break
    d += b
v = json.loads(d)
print(v.get("kind"), v.get("message", ""), flush=True)
"#;
    let w = World::new();
    let d = daemon_with_grants(&w, "");
    let relay_dir = w.path("relay");
    std::fs::create_dir(&relay_dir).unwrap();
    chmod(&relay_dir, 0o777);
    let sock = helper_sock(&w);
    let path = sock.to_str().expect("UTF-8 path");
    for round in 0..20 {
        let relay = relay_dir.join(format!("r{round}"));
        let relay = relay.to_str().expect("UTF-8 path");
        let granted = Py::spawn(GRANTED, RECEIVE_AND_ASK, &[relay, H1]);
        assert_eq!(granted.line(Duration::from_secs(30)), "listening");
        let other = Py::spawn(OTHER, CONNECT_AND_PASS, &[path, relay]);
        assert_eq!(other.line(Duration::from_secs(30)), "passed");
        let answer = granted.line(Duration::from_secs(30));
        assert_eq!(answer, format!("error {NOT_FOUND}"), "round {round}");
    }
    drop(d);
}

/// A grant revoked by a reload is gone once `reload` says so, while the revoked uid asks as fast
/// as it can; given back, it works again. Many rounds.
#[test]
fn a_revoked_grant_is_gone_when_reload_returns() {
    require_root!();
    // Prints `ok T` or `no T` for every request, T the CLOCK_MONOTONIC time of its connect.
    const ASK_FOREVER: &str = r#"
import socket, sys, json, time
path, host = sys.argv[1], sys.argv[2]
line = json.dumps({"cmd": "credential", "host": host}).encode() + b"\n"
while True:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        t = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        s.sendall(line)
        d = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            d += b
        s.close()
        print("ok" if b'"kind":"credential"' in d else "no", t, flush=True)
    except OSError:
        pass
"#;
    let w = World::new();
    let d = daemon_with_grants(&w, "");
    let granted = std::fs::read_to_string(w.path("config.toml")).unwrap();
    let revoked = granted.replace(&format!("users = [\"{GRANTED}\"]"), "users = []");
    assert_ne!(granted, revoked);
    let sock = helper_sock(&w);
    let path = sock.to_str().expect("UTF-8 path");
    let asker = Py::spawn(GRANTED, ASK_FOREVER, &[path, H1]);
    let now_ns = || {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
        t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128
    };
    let next = || -> (bool, i128) {
        let line = asker.line(Duration::from_secs(60));
        let (verdict, t) = line.split_once(' ').unwrap_or(("", ""));
        (
            verdict == "ok",
            t.parse().unwrap_or_else(|_| panic!("{line}")),
        )
    };
    for round in 0..15 {
        // Granted: answers come.
        while !next().0 {}
        std::fs::write(w.path("config.toml"), &revoked).unwrap();
        let out = w.client(&["reload"]);
        assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
        let after = now_ns();
        // Revoked: nothing that connected after the verdict gets a credential (50 tries).
        let mut denied = 0;
        while denied < 50 {
            let (ok, t) = next();
            if t > after {
                assert!(
                    !ok,
                    "round {round}: a request that connected {} µs after the revoking reload returned got the credential",
                    (t - after) / 1000
                );
                denied += 1;
            }
        }
        std::fs::write(w.path("config.toml"), &granted).unwrap();
        let out = w.client(&["reload"]);
        assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    }
    drop(asker);
    drop(d);
}

/// `helper_socket` (root's config) in a directory a user can write, or whose directory is a
/// user's, is refused: the helper socket is not bound there and root is still served.
#[test]
fn a_helper_socket_in_a_users_directory_is_refused() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let users = w.path("users");
    std::fs::create_dir(&users).unwrap();
    chown(&users, OTHER, OTHER);
    let sticky = w.path("sticky");
    std::fs::create_dir(&sticky).unwrap();
    chmod(&sticky, 0o1777);
    for dir in [&users, &sticky] {
        let helper = dir.join("helper.sock");
        w.config(&format!(
            "{}helper_socket = \"{}\"\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\n",
            w.daemon_section(),
            helper.display(),
            w.path("d/config.json").display()
        ));
        let d = w.spawn_daemon(&[]);
        d.wait_ready();
        assert!(
            wait_for(Duration::from_secs(10), || d
                .log_text()
                .contains("credential helper socket")),
            "{}",
            d.log_text()
        );
        assert!(d.log_text().contains("refusing the socket directory"));
        assert!(!helper.exists(), "{}", helper.display());
        drop(d);
    }
}

/// `check`'s advice about a hostile `credsStore` / `credHelpers` in a user's file: their values
/// reach the terminal escaped; the snippet it suggests is JSON naming only configured hosts.
#[test]
fn checks_credhelpers_advice_escapes_a_users_values() {
    let w = World::new();
    let target = w.path("d/config.json");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(
        &target,
        format!(
            r#"{{"credsStore":"x\u001b[2J\u009b31m\u202eevil\nline","credHelpers":{{"{H1}":"y\u001b]0;T\u0007\u009b\u202e","\u001b[2J{H3}":"z"}}}}"#
        ),
    )
    .unwrap();
    w.config(&format!(
        "{}[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\n",
        w.daemon_section(),
        target.display()
    ));
    let out = w.run(&["check"]);
    let text = stdout(&out) + &stderr(&out);
    for bad in ['\u{1b}', '\u{9b}', '\u{202e}', '\u{7}'] {
        assert!(!text.contains(bad), "raw {bad:?} in:\n{text}");
    }
    let snippet = text
        .split("\"credHelpers\": {")
        .nth(1)
        .and_then(|s| s.split('}').next())
        .unwrap_or_else(|| panic!("no snippet in:\n{text}"));
    let json: serde_json::Value = serde_json::from_str(&format!("{{{snippet}}}"))
        .unwrap_or_else(|e| panic!("{e}: {snippet}"));
    assert_eq!(json, serde_json::json!({ H1: "ecr-refresherd" }), "{text}");
}
