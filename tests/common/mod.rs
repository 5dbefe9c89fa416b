//! Shared test harness: a temp dir, the fake AWS on loopback, the real binary with a sealed environment.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use base64::Engine;
#[allow(unused_imports)]
pub use fake_aws::{FakeAws, Fault, Service};

pub const BIN: &str = env!("CARGO_BIN_EXE_ecr-refresherd");
pub const H1: &str = "111111111111.dkr.ecr.us-east-1.amazonaws.com";
pub const H2: &str = "222222222222.dkr.ecr.us-east-1.amazonaws.com";
pub const H3: &str = "111111111111.dkr.ecr.eu-west-1.amazonaws.com";
pub const PUBLIC: &str = "public.ecr.aws";

/// One test's world: its own temp dir, its own fake AWS, and every output it captured.
pub struct World {
    pub dir: tempfile::TempDir,
    pub fake: FakeAws,
    captured: Mutex<Vec<String>>,
    /// Secrets of other fakes (a Portainer's API keys and passwords) the scan looks for too.
    extra_secrets: Mutex<Vec<String>>,
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::Builder::new()
            .prefix("ecr-refresherd-test-")
            .tempdir()
            .expect("temp dir");
        let fake = FakeAws::start().expect("fake AWS");
        World {
            dir,
            fake,
            captured: Mutex::new(Vec::new()),
            extra_secrets: Mutex::new(Vec::new()),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a config file; `{dir}` in the text becomes the temp dir.
    pub fn config(&self, text: &str) -> PathBuf {
        let p = self.path("config.toml");
        let text = text.replace("{dir}", &self.dir.path().display().to_string());
        std::fs::write(&p, text).expect("write config");
        p
    }

    /// The binary with only what a test allows: fake endpoints, dummy static credentials, no IMDS,
    /// no AWS_REGION (each host brings its region), HOME in the temp dir.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear();
        for (k, v) in self.fake.env() {
            if k != "AWS_REGION" {
                c.env(k, v);
            }
        }
        c.env("AWS_EC2_METADATA_DISABLED", "true")
            .env("HOME", self.dir.path())
            .env("PATH", "/usr/bin:/bin")
            .env("NO_COLOR", "1");
        c
    }

    /// Runs the binary with `--config <dir>/config.toml` and `args`; records its output.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut c = self.cmd();
        c.arg("--config").arg(self.path("config.toml")).args(args);
        self.capture(c.output().expect("run binary"))
    }

    pub fn capture(&self, out: Output) -> Output {
        let mut all = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        all.push(String::from_utf8_lossy(&out.stdout).into_owned());
        all.push(String::from_utf8_lossy(&out.stderr).into_owned());
        out
    }

    pub fn capture_text(&self, text: String) {
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(text);
    }

    /// Adds secrets the scan must not find (another fake's keys and passwords).
    pub fn add_secrets(&self, secrets: impl IntoIterator<Item = String>) {
        self.extra_secrets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(secrets.into_iter().filter(|s| !s.is_empty()));
    }

    /// Forgets everything captured (for the test that checks the scan itself).
    pub fn clear_captured(&self) {
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// No secret the fake ever issued (nor the dummy secret key) appears in anything captured.
    /// One multi-pattern pass per text (Aho-Corasick), so long daemon logs stay cheap to scan.
    pub fn assert_no_secrets(&self) {
        let mut secrets = self.fake.secrets();
        secrets.push(fake_aws::FAKE_SECRET_ACCESS_KEY.to_string());
        secrets.extend(
            self.extra_secrets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        assert!(secrets.iter().all(|s| !s.is_empty()));
        let finder = aho_corasick::AhoCorasick::new(&secrets).expect("secret patterns");
        let all = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        for text in all.iter() {
            if let Some(m) = finder.find(text.as_str()) {
                let start = m.start().saturating_sub(200);
                panic!(
                    "a secret leaked into output, near: {}",
                    &text[text.floor_char_boundary(start)..text.floor_char_boundary(m.start())]
                );
            }
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_no_secrets();
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn read_json(p: &Path) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", p.display()))
}

/// The password inside a docker `auth` value (base64 of `AWS:<password>`); panics if malformed.
pub fn password_of(auth: &str) -> String {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .expect("auth is base64");
    let text = String::from_utf8(raw).expect("auth is UTF-8");
    text.strip_prefix("AWS:")
        .unwrap_or_else(|| panic!("auth does not decode to AWS:<password>"))
        .to_string()
}

/// Asserts `file` holds a valid docker entry for `host` whose password the fake issued.
pub fn assert_fresh_entry(world: &World, file: &Path, host: &str) -> String {
    let v = read_json(file);
    let auth = v["auths"][host]["auth"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no entry for {host}", file.display()));
    let pw = password_of(auth);
    assert!(
        world.fake.issued_passwords().contains(&pw),
        "{}: the password for {host} was not issued by the fake",
        file.display()
    );
    auth.to_string()
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Skips a test that needs root, saying why.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            eprintln!("SKIPPED: this test needs root (real uids and chown)");
            return;
        }
    };
}

/// A snapshot of a file that must not change: bytes, owner, mode, inode, link count.
#[derive(Debug, PartialEq, Eq)]
pub struct Sentinel {
    bytes: Vec<u8>,
    uid: u32,
    gid: u32,
    mode: u32,
    ino: u64,
    nlink: u64,
}

impl Sentinel {
    pub fn of(p: &Path) -> Sentinel {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::symlink_metadata(p).expect("sentinel stat");
        Sentinel {
            bytes: std::fs::read(p).expect("sentinel read"),
            uid: md.uid(),
            gid: md.gid(),
            mode: md.mode(),
            ino: md.ino(),
            nlink: md.nlink(),
        }
    }
}

pub fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).expect("chown");
}

pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Where `text` holds what would act on a terminal or split a log line if printed raw (a control
/// other than a line feed, C1, bidi and line separators): its byte offset and the character.
pub fn raw_control(text: &str) -> Option<(usize, char)> {
    text.char_indices().find(|(_, c)| {
        (c.is_control() && *c != '\n')
            || matches!(*c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

/// Panics, showing where, if `text` (what `what` printed) holds anything [`raw_control`] finds.
pub fn assert_inert(what: &str, text: &str) {
    if let Some((i, c)) = raw_control(text) {
        let from = text.floor_char_boundary(i.saturating_sub(80));
        panic!(
            "{what}: a raw {c:?} at byte {i}: {:?}",
            &text[from..text.floor_char_boundary((i + 40).min(text.len()))]
        );
    }
}

/// One HTTP/1.1 request as a scripted server reads it (the Engine's API in the swarm tests).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    /// The `X-Registry-Auth` header, if any.
    pub registry_auth: Option<String>,
    pub body: Vec<u8>,
}

/// Reads the next request from `r`: its line, headers, and a `Content-Length` body; `None` at the
/// end of the stream or when it breaks off.
pub fn read_http_request(r: &mut impl std::io::BufRead) -> Option<HttpRequest> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let (mut len, mut registry_auth) = (0usize, None);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((h, ""));
        match k.to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().unwrap_or(0),
            "x-registry-auth" => registry_auth = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(HttpRequest {
        method,
        path,
        registry_auth,
        body,
    })
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A fake systemd notify socket: every datagram the daemon sends, in order.
pub struct NotifySocket {
    pub path: PathBuf,
    messages: std::sync::Arc<Mutex<Vec<String>>>,
}

impl NotifySocket {
    pub fn bind(world: &World) -> NotifySocket {
        let path = world.path("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
        let messages = std::sync::Arc::new(Mutex::new(Vec::new()));
        let m = std::sync::Arc::clone(&messages);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                m.lock().unwrap_or_else(|e| e.into_inner()).push(text);
            }
        });
        NotifySocket { path, messages }
    }

    pub fn messages(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Index of the first datagram after `from` for which `pred` holds.
    pub fn find(&self, from: usize, pred: impl Fn(&str) -> bool) -> Option<usize> {
        self.messages()
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, m)| pred(m))
            .map(|(i, _)| i)
    }
}

/// The daemon (`run`) as a child process; its stderr goes to a file that is scanned for secrets.
pub struct Daemon<'w> {
    pub child: std::process::Child,
    pub log: PathBuf,
    world: &'w World,
}

impl World {
    /// The socket path tests use (set by `daemon_config`).
    pub fn socket(&self) -> PathBuf {
        self.path("ctl.sock")
    }

    /// A `[daemon]` section for fast tests: short intervals, socket and state in the temp dir.
    pub fn daemon_section(&self) -> String {
        format!(
            "[daemon]\nstate_dir = \"{}\"\nsocket = \"{}\"\nmin_interval = \"1s\"\nretry_min = \"1s\"\nretry_max = \"3s\"\n",
            self.path("state").display(),
            self.socket().display()
        )
    }

    /// A daemon config with one target (`<dir>/d/config.json`, returned) and `hosts`;
    /// `extra_daemon` adds `[daemon]` keys.
    pub fn one_target_config(&self, hosts: &[&str], extra_daemon: &str) -> PathBuf {
        let target = self.path("d/config.json");
        let mut cfg = self.daemon_section() + extra_daemon;
        cfg += &format!("\n[[target]]\npath = \"{}\"\n", target.display());
        for h in hosts {
            cfg += &format!("[[registry]]\nhost = \"{h}\"\n");
        }
        self.config(&cfg);
        target
    }

    pub fn spawn_daemon(&self, extra_env: &[(&str, &str)]) -> Daemon<'_> {
        let log = self.path(&format!("daemon-{}.log", rand::random::<u32>()));
        let file = std::fs::File::create(&log).expect("log file");
        let mut c = self.cmd();
        c.arg("--config").arg(self.path("config.toml")).arg("run");
        for (k, v) in extra_env {
            c.env(k, v);
        }
        c.stdout(std::process::Stdio::null()).stderr(file);
        let child = c.spawn().expect("spawn daemon");
        Daemon {
            child,
            log,
            world: self,
        }
    }

    /// `ecr-refresherd <args> --socket <ctl.sock>`.
    pub fn client(&self, args: &[&str]) -> Output {
        let mut c = self.cmd();
        c.args(args).arg("--socket").arg(self.socket());
        self.capture(c.output().expect("run client"))
    }

    /// The daemon's status as JSON.
    pub fn status_json(&self) -> Option<serde_json::Value> {
        let out = self.client(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).ok()
    }
}

impl Daemon<'_> {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("kill");
    }

    /// Waits until the control socket answers.
    pub fn wait_ready(&self) {
        assert!(
            wait_for(std::time::Duration::from_secs(20), || self
                .world
                .status_json()
                .is_some()),
            "the daemon never answered on its socket:\n{}",
            self.log_text()
        );
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                std::time::Instant::now() < end,
                "the daemon did not stop within 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.world.capture_text(self.log_text());
    }
}

/// A python3 process running `code` as `uid` (an attacker in the attack tests: no passwd entry;
/// std clears its supplementary groups), with `args` as `sys.argv[1:]`; its stdout lines read on
/// a thread; killed when dropped.
pub struct Py {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Py {
    pub fn spawn(uid: u32, code: &str, args: &[&str]) -> Py {
        use std::io::{BufRead, BufReader};
        use std::os::unix::process::CommandExt;
        use std::process::Stdio;
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
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Py { child, lines }
    }

    /// The next line it prints, waiting at most `timeout`.
    pub fn line(&self, timeout: std::time::Duration) -> String {
        self.lines
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("the attacker printed nothing in {timeout:?}: {e}"))
    }

    /// The next line it prints, if any within `timeout`.
    pub fn try_line(&self, timeout: std::time::Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
