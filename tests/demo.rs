//! `scripts/demo.sh` as a new user runs it: every step's outcome, no token shown, no process left.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::wait_for;

const PRIVATE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
/// base64 of `AWS:fakep`: every token of the fake starts so; a whole one must never be printed.
const TOKEN_PREFIX: &str = "QVdTOmZha2Vw";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The target dir this test was built in (`<target>/debug/ecr-refresherd`): the script's
/// `cargo build` then finds everything built and builds nothing twice.
fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_ecr-refresherd"));
    bin.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("no target dir above {}", bin.display()))
        .to_path_buf()
}

/// The script as a child in its own process group; its stdout lines and stderr as they come.
struct Demo {
    child: Child,
    started: Instant,
    lines: Arc<Mutex<Vec<String>>>,
    /// Its stdout reached EOF: the script and everything that inherited the pipe are gone.
    eof: Arc<AtomicBool>,
    stderr: Arc<Mutex<String>>,
}

impl Demo {
    fn spawn() -> Demo {
        let mut cmd = Command::new(repo().join("scripts/demo.sh"));
        // As a terminal's shell starts it: SIGINT and SIGQUIT at their defaults. A test run
        // started in the background of a non-interactive shell inherits them ignored, and a
        // shell cannot trap a signal ignored on entry (CI started that way failed the Ctrl-C test).
        // SAFETY: only sigaction, which is async-signal-safe, runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                use nix::sys::signal::{SigHandler, Signal, signal};
                for s in [Signal::SIGINT, Signal::SIGQUIT] {
                    signal(s, SigHandler::SigDfl).map_err(std::io::Error::from)?;
                }
                Ok(())
            });
        }
        let mut child = cmd
            .current_dir(repo())
            .env("CARGO_TARGET_DIR", target_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("run scripts/demo.sh");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let l = Arc::clone(&lines);
        let eof = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&eof);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
            done.store(true, Ordering::SeqCst);
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let e = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            e.lock().unwrap_or_else(|e| e.into_inner()).push_str(&text);
        });
        Demo {
            child,
            started: Instant::now(),
            lines,
            eof,
            stderr,
        }
    }

    fn stdout(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What it printed so far, for failure messages.
    fn transcript(&self) -> String {
        format!(
            "--- stdout:\n{}\n--- stderr:\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// Waits until a stdout line starts with `prefix`.
    fn wait_line(&self, prefix: &str, timeout: Duration) {
        assert!(
            wait_for(timeout, || self
                .lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|l| l.starts_with(prefix))),
            "the demo never printed {prefix:?} in {timeout:?}:\n{}",
            self.transcript()
        );
    }

    /// Waits for the script's exit, and for its stdout to be read to the end (a survivor that
    /// holds the pipe open is left to [`Demo::assert_nothing_left`]).
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        let exited = wait_for(timeout, || {
            status = self.child.try_wait().expect("wait for the demo");
            status.is_some()
        });
        assert!(
            exited,
            "the demo did not end within {timeout:?}:\n{}",
            self.transcript()
        );
        wait_for(Duration::from_secs(10), || self.eof.load(Ordering::SeqCst));
        status.expect("exited")
    }

    fn signal_group(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.child.id() as i32), sig)
            .expect("signal the demo's process group");
    }

    /// The pids the demo printed for the fake ECR and the daemon.
    fn pids(&self) -> Vec<i32> {
        let out = self.stdout();
        let mut pids = Vec::new();
        for line in out.lines() {
            let n = if let Some(rest) = line.strip_prefix("fake ECR (pid ") {
                rest.split(')').next()
            } else {
                line.strip_prefix("daemon pid ")
            };
            if let Some(n) = n.and_then(|n| n.trim().parse().ok()) {
                pids.push(n);
            }
        }
        pids
    }

    /// The demo's temp dir (`working in DIR`).
    fn work_dir(&self) -> PathBuf {
        let out = self.stdout();
        let dir = out
            .lines()
            .find_map(|l| l.strip_prefix("working in "))
            .unwrap_or_else(|| panic!("no temp dir printed:\n{}", self.transcript()));
        PathBuf::from(dir.trim())
    }

    /// After the script ended: none of the processes it started is alive, nothing runs in or
    /// names its temp dir, and the temp dir is gone.
    fn assert_nothing_left(&self) {
        let pids = self.pids();
        assert_eq!(
            pids.len(),
            2,
            "the fake's and the daemon's pids:\n{}",
            self.transcript()
        );
        let work = self.work_dir();
        let left = || survivors(&pids, &work);
        // Reaped by the script before it exits; the grace only covers a slow /proc.
        wait_for(Duration::from_secs(5), || left().is_empty());
        assert_eq!(
            left(),
            Vec::<String>::new(),
            "processes the demo started are still running:\n{}",
            self.transcript()
        );
        assert!(!work.exists(), "{} was not removed", work.display());
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // A failed assertion must not leave the demo running: its whole group goes, and any
        // process it started that outlived it.
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal_group(nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.wait();
        }
        for pid in self.pids() {
            if still_ours(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A live (not zombie) process's command line and working directory.
fn live(pid: i32) -> Option<(String, String)> {
    let p = Path::new("/proc").join(pid.to_string());
    let stat = std::fs::read_to_string(p.join("stat")).ok()?;
    if stat.rsplit_once(") ")?.1.starts_with('Z') {
        return None;
    }
    let cmdline = std::fs::read(p.join("cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    let cwd = std::fs::read_link(p.join("cwd"))
        .map(|c| c.display().to_string())
        .unwrap_or_default();
    Some((cmdline, cwd))
}

/// Whether `pid` still runs one of the demo's programs (not a later process with its pid).
fn still_ours(pid: i32) -> bool {
    live(pid).is_some_and(|(cmd, _)| cmd.contains("ecr-refresherd") || cmd.contains("fake-aws"))
}

/// Live processes that are one of `pids`, or whose command line or working directory is in
/// `work`.
fn survivors(pids: &[i32], work: &Path) -> Vec<String> {
    let work = work.display().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for pid in dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        let Some((cmdline, cwd)) = live(pid) else {
            continue;
        };
        let listed = pids.contains(&pid) && still_ours(pid);
        if listed || cmdline.contains(&work) || cwd.starts_with(&work) {
            found.push(format!("{pid}: {cmdline} (cwd {cwd})"));
        }
    }
    found
}

/// The line after the one that starts with `prefix`.
fn line_after<'a>(out: &'a str, prefix: &str) -> &'a str {
    let mut it = out.lines();
    it.by_ref().find(|l| l.starts_with(prefix));
    it.next()
        .unwrap_or_else(|| panic!("nothing after {prefix:?}:\n{out}"))
}

/// `<prefix>N ms: "<host>": {"auth": "<12 characters>…"}`: N, after checking the entry.
fn heal_ms(out: &str, prefix: &str, host: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line:\n{out}"));
    let (ms, entry) = line[prefix.len()..]
        .split_once(" ms: ")
        .unwrap_or_else(|| panic!("{line:?}"));
    assert_eq!(
        entry,
        format!("\"{host}\": {{\"auth\": \"{TOKEN_PREFIX}…\"}}"),
        "{line:?}"
    );
    ms.parse().unwrap_or_else(|_| panic!("{line:?}"))
}

fn parse_time(t: &str) -> SystemTime {
    humantime::parse_rfc3339(t.trim()).unwrap_or_else(|e| panic!("{t:?}: {e}"))
}

#[test]
fn the_demo_shows_every_step_and_leaves_nothing() {
    let mut demo = Demo::spawn();
    let status = demo.wait(Duration::from_secs(300));
    let took = demo.started.elapsed();
    let out = demo.stdout();
    let all = demo.transcript();
    assert!(status.success(), "the demo failed ({status}):\n{all}");
    eprintln!("{out}\n--- the demo took {took:?}");
    assert!(
        took < Duration::from_secs(120),
        "the demo took {took:?}:\n{all}"
    );
    demo.assert_nothing_left();

    // Each step is narrated.
    for step in [
        "== build",
        "== a fake ECR on loopback",
        "== start the daemon",
        "== ecr-refresherd status",
        "== the daemon heals a deleted file",
        "== the daemon heals a docker logout",
        "== edit the config",
        "== ecr-refresherd status --json",
        "== tokens rotate",
        "== stop the daemon cleanly",
        "== done in ",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(step)),
            "no step {step:?}:\n{all}"
        );
    }

    // The status table: its headers, a fresh registry, a written target.
    let cols = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let header = line_after(&out, "$ ecr-refresherd status");
    assert_eq!(
        header
            .split("  ")
            .filter(|c| !c.is_empty())
            .map(str::trim)
            .collect::<Vec<_>>(),
        ["REGISTRY", "STATE", "EXPIRES", "NEXT REFRESH", "LAST ERROR"],
        "{all}"
    );
    let row = out
        .lines()
        .find(|l| l.starts_with(PRIVATE))
        .map(cols)
        .unwrap_or_else(|| panic!("no row for {PRIVATE}:\n{all}"));
    assert_eq!(
        (row[1].as_str(), row[2].as_str()),
        ("fresh", "in"),
        "{row:?}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("TARGET ") && l.contains("LAST WRITE")),
        "{all}"
    );
    let target = out
        .lines()
        .find(|l| l.contains("/home/.docker/config.json  "))
        .map(cols)
        .unwrap_or_else(|| panic!("no row for the docker target:\n{all}"));
    assert_eq!(target[2], "ok", "{target:?}");

    // The file it wrote keeps what was there.
    assert!(out.contains("\"docker.io\": {"), "{all}");
    assert!(out.contains("\"gcr.io\": \"gcloud\""), "{all}");

    // Healed: a deleted file and a logout, each within a second, with the entry back.
    let restored = heal_ms(&out, "restored after ", PRIVATE);
    assert!(
        restored < 1000,
        "the deleted file came back after {restored} ms"
    );
    let healed = heal_ms(&out, "healed after ", PRIVATE);
    assert!(healed < 1000, "the logout was healed after {healed} ms");

    // The config edit: the daemon's verdict, and the new registry's entries.
    let verdict = line_after(&out, "$ ecr-refresherd reload");
    assert!(
        verdict == "config reloaded: 3 registries, 2 targets"
            || verdict == "config reloaded, unchanged",
        "reload said {verdict:?}:\n{all}"
    );
    for file in ["home/.docker/config.json", "run/containers/0/auth.json"] {
        let want =
            format!("new entry in {file}: \"public.ecr.aws\": {{\"auth\": \"{TOKEN_PREFIX}…\"}}");
        assert!(out.lines().any(|l| l == want), "no {want:?}:\n{all}");
    }

    // The JSON, for scripts.
    let json = out
        .split("$ ecr-refresherd status --json | head -n 24\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no JSON:\n{all}"));
    for key in [
        "\"version\"",
        "\"pid\"",
        "\"registries\"",
        "\"host\"",
        "\"expires_at\"",
        "\"next_refresh\"",
    ] {
        assert!(json.contains(key), "no {key} in the JSON:\n{all}");
    }
    assert!(json.contains("\"state\": \"fresh\""), "{all}");

    // Rotation: a later expiry, and the file holds the new token.
    let rotated = out
        .lines()
        .find_map(|l| l.strip_prefix("rotated: token expires "))
        .unwrap_or_else(|| panic!("no rotation:\n{all}"));
    let (before, after) = rotated
        .split_once(" -> ")
        .unwrap_or_else(|| panic!("{rotated:?}"));
    assert!(
        parse_time(after) > parse_time(before),
        "the expiry did not move on: {rotated:?}"
    );
    assert!(out.contains("holds the new token"), "{all}");
    let on_demand = line_after(&out, "$ ecr-refresherd refresh ");
    assert!(
        on_demand.starts_with(&format!("registry {PRIVATE}: ok, token expires ")),
        "{on_demand:?}"
    );

    // A clean stop.
    assert!(
        out.lines().any(|l| l == "the daemon exited with status 0"),
        "{all}"
    );
    assert!(out.contains("INFO stopped"), "{all}");

    // No token in full, no secret key.
    assert!(!all.contains("fakepw-"), "a password was printed:\n{all}");
    assert!(
        !all.contains("fake-secret-key"),
        "the secret key was printed:\n{all}"
    );
    for (i, _) in all.match_indices(TOKEN_PREFIX) {
        let next = all[i + TOKEN_PREFIX.len()..].chars().next();
        assert_eq!(next, Some('…'), "a whole token was printed:\n{all}");
    }
}

/// Ctrl-C in a terminal signals the whole foreground process group: the script, the daemon and
/// the fake at once.
#[test]
fn ctrl_c_leaves_no_process() {
    let mut demo = Demo::spawn();
    demo.wait_line("ready: ", Duration::from_secs(180));
    demo.signal_group(nix::sys::signal::Signal::SIGINT);
    let status = demo.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "{}", demo.transcript());
    demo.assert_nothing_left();
}

/// `kill <script>` alone (the daemon and the fake get nothing): the script stops them.
#[test]
fn sigterm_to_the_script_alone_leaves_no_process() {
    let mut demo = Demo::spawn();
    demo.wait_line("== tokens rotate", Duration::from_secs(180));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal the script");
    let status = demo.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(143), "{}", demo.transcript());
    demo.assert_nothing_left();
}
