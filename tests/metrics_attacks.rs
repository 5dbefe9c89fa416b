//! Hostile local users against the metrics (issue 13): the file root writes into a directory
//! that may be a user's (node_exporter's, `/tmp`), the churn a user can cause in what it says,
//! and `ecr-refresherd metrics` on the control socket. Attackers are real processes running as
//! real non-root uids without passwd entries.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// Granted H1 in the configs here.
const GRANTED: u32 = 4242;
/// Granted nothing.
const OTHER: u32 = 4343;

/// Connects to socket `argv[1]`, asks for host `argv[2]`, as fast as it can for `argv[3]`
/// seconds; prints the number of answers.
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

/// Counts the files renamed into a directory under `name` (each write of the metrics file is one
/// rename of a temp file over it), from a thread, until dropped.
struct RenameCounter {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RenameCounter {
    fn watch(file: &Path) -> RenameCounter {
        let dir = file.parent().expect("a directory").to_path_buf();
        let name = file.file_name().expect("a name").to_os_string();
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut ino = inotify::Inotify::init().expect("inotify");
        ino.watches()
            .add(&dir, inotify::WatchMask::MOVED_TO)
            .expect("watch the directory");
        let (c, s) = (Arc::clone(&count), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while !s.load(Ordering::Relaxed) {
                match ino.read_events(&mut buf) {
                    Ok(events) => {
                        let n = events.filter(|e| e.name == Some(name.as_os_str())).count();
                        c.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => return,
                }
            }
        });
        RenameCounter { count, stop }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for RenameCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The value of the sample whose name and labels start the line as `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn helper_sock(w: &World) -> PathBuf {
    w.path("helper.sock")
}

/// A daemon with one root target, H1 granted to GRANTED, and `metrics_file` at `prom`; returns
/// once the file was first written.
fn daemon_with_metrics<'w>(w: &'w World, prom: &Path, extra_daemon: &str) -> Daemon<'w> {
    chmod(w.dir.path(), 0o755);
    w.config(&format!(
        "{}metrics_file = \"{}\"\n{extra_daemon}\n[[target]]\npath = \"{}\"\n\
         [[registry]]\nhost = \"{H1}\"\nusers = [\"{GRANTED}\"]\n",
        w.daemon_section(),
        prom.display(),
        w.path("d/config.json").display(),
    ));
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(Duration::from_secs(30), || {
            std::fs::read_to_string(prom)
                .is_ok_and(|t| t.contains("ecr_refresherd_token_expiry_timestamp_seconds{"))
        }),
        "no metrics file:\n{}",
        d.log_text()
    );
    assert!(wait_for(Duration::from_secs(10), || helper_sock(w).exists()));
    d
}

// ---------------------------------------------------------------------------------------------
// Defects: these fail on the code as reviewed (see the report).
// ---------------------------------------------------------------------------------------------

/// Any local user may connect to the helper socket (0666), and every request, even one turned
/// away, moves a counter in the status. Each finished write of the metrics file wakes the loop,
/// which finds the status changed and starts the next: a flood of credential requests kept root
/// rendering and fsyncing the file back to back. The file must be rewritten at most about once a
/// second whatever the callers do (a scrape is every 15 s or more).
#[test]
fn a_flood_of_credential_requests_does_not_make_the_daemon_rewrite_the_file_continuously() {
    require_root!();
    let w = World::new();
    let prom = w.path("m/ecr-refresherd.prom");
    let d = daemon_with_metrics(&w, &prom, "");
    let sock = helper_sock(&w);
    let sock = sock.to_str().expect("UTF-8 path");
    let writes = RenameCounter::watch(&prom);
    let secs = 6.0;
    let attackers: Vec<Py> = [OTHER, GRANTED, OTHER + 1]
        .iter()
        .map(|uid| Py::spawn(*uid, FLOOD, &[sock, "nothing.example", &secs.to_string()]))
        .collect();
    // Anything that wakes the loop (a tick every 30 s, a refresh, an edit; here a reload) starts
    // the writes; they are counted from then on.
    std::thread::sleep(Duration::from_millis(500));
    let out = w.client(&["reload"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let started = Instant::now();
    let before = writes.count();
    let asked: u64 = attackers
        .iter()
        .map(|a| a.line(Duration::from_secs(60)).trim().parse().unwrap_or(0))
        .sum();
    let took = started.elapsed().as_secs_f64();
    let n = writes.count() - before;
    eprintln!("MEASURE asked={asked} took={took:.1} writes={n}");
    assert!(asked > 100, "the flood got only {asked} answers");
    assert!(
        (n as f64) <= took + 3.0,
        "{asked} credential requests in {took:.1} s made the daemon rewrite the metrics file {n} times ({:.0} a second)",
        n as f64 / took
    );
    // What was held back is written within about a second of the flood's end, without any
    // other event to wake the loop: the file counts what the socket does.
    let series = "ecr_refresherd_helper_requests_total{result=\"denied\"}";
    let live = sample(&stdout(&w.client(&["metrics"])), series);
    assert!(live.is_some_and(|n| n >= asked as f64 / 2.0), "{live:?}");
    assert!(
        wait_for(Duration::from_secs(5), || sample(
            &std::fs::read_to_string(&prom).unwrap_or_default(),
            series
        ) == live),
        "the file says {:?}, the socket {live:?}",
        sample(&std::fs::read_to_string(&prom).unwrap_or_default(), series)
    );
    w.capture_text(std::fs::read_to_string(&prom).unwrap_or_default());
    drop(d);
}

// ---------------------------------------------------------------------------------------------
// What held.
// ---------------------------------------------------------------------------------------------

/// Races the metrics file `argv[2]` in directory `argv[1]` for `argv[4]` seconds: every temp
/// file of ours it sees is moved away and replaced with a symbolic link to (and a hard link of)
/// `argv[3]`; the name itself is swapped between such a link and a regular file of its own.
/// Prints how many swaps it made.
const RACE: &str = r#"
import os, sys, time
d, name, victim, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
prefix = "." + name + ".ecr-refresherd-"
end = time.monotonic() + secs
n = 0
i = 0
while time.monotonic() < end:
    i += 1
    try:
        for e in os.listdir(d):
            if e.startswith(prefix) and e.endswith(".tmp"):
                p = os.path.join(d, e)
                try:
                    os.rename(p, os.path.join(d, "stolen-%d" % i))
                except OSError:
                    pass
                try:
                    os.link(victim, p)
                except OSError:
                    try:
                        os.symlink(victim, p)
                    except OSError:
                        pass
                n += 1
    except OSError:
        pass
    p = os.path.join(d, name)
    tmp = os.path.join(d, "swap")
    try:
        if i % 2:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            os.symlink(victim, tmp)
        else:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            with open(tmp, "w") as f:
                f.write("mine\n")
        os.rename(tmp, p)
        n += 1
    except OSError:
        pass
print(n, flush=True)
"#;

/// Victims of a race: a root file (0600, in a directory only root may enter) and a file of
/// `other` (not the attacker); both must be left byte for byte.
fn victims(w: &World, other: u32) -> Vec<PathBuf> {
    let root_dir = w.path("root-only");
    std::fs::create_dir(&root_dir).unwrap();
    let secret = root_dir.join("secret");
    std::fs::write(&secret, "root's secret\n").unwrap();
    chmod(&secret, 0o600);
    let other_dir = w.path("other");
    std::fs::create_dir(&other_dir).unwrap();
    chown(&other_dir, other, other);
    chmod(&other_dir, 0o755);
    let theirs = other_dir.join("file");
    std::fs::write(&theirs, "another user's file\n").unwrap();
    chown(&theirs, other, other);
    chmod(&theirs, 0o600);
    vec![secret, theirs]
}

/// The metrics file in a directory a user owns (node_exporter's, owned by its `prometheus`
/// user): written as that user, so whatever the user swaps in, root never writes, chmods or
/// chowns a file of root's or of another user through it, and creates nothing elsewhere.
#[test]
fn a_user_racing_links_in_the_metrics_directory_gains_nothing() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let victims = victims(&w, OTHER);
    let dir = w.path("node-exporter");
    std::fs::create_dir(&dir).unwrap();
    chown(&dir, GRANTED, GRANTED);
    let prom = dir.join("ecr-refresherd.prom");
    let d = daemon_with_metrics(&w, &prom, "");
    let before: Vec<Sentinel> = victims.iter().map(|v| Sentinel::of(v)).collect();
    let listing = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let top = listing(w.dir.path());
    let sock = helper_sock(&w);
    let sock = sock.to_str().expect("UTF-8 path");
    let dir_s = dir.to_str().expect("UTF-8 path");
    let secs = "8";
    let flood = Py::spawn(OTHER, FLOOD, &[sock, "nothing.example", secs]);
    let racers: Vec<Py> = victims
        .iter()
        .map(|v| {
            Py::spawn(
                GRANTED,
                RACE,
                &[dir_s, "ecr-refresherd.prom", v.to_str().unwrap(), secs],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(code(&w.client(&["reload"])), 0);
    let swaps: u64 = racers
        .iter()
        .map(|r| r.line(Duration::from_secs(60)).trim().parse().unwrap_or(0))
        .sum();
    let _ = flood.line(Duration::from_secs(60));
    eprintln!("MEASURE swaps={swaps}");
    assert!(swaps > 100, "the race made only {swaps} swaps");
    let after: Vec<Sentinel> = victims.iter().map(|v| Sentinel::of(v)).collect();
    assert_eq!(before, after, "a victim changed:\n{}", d.log_text());
    assert_eq!(
        top,
        listing(w.dir.path()),
        "something appeared above the directory"
    );
    // Everything root left in the directory is the user's.
    for e in std::fs::read_dir(&dir).unwrap() {
        use std::os::unix::fs::MetadataExt;
        let e = e.unwrap();
        let md = std::fs::symlink_metadata(e.path()).unwrap();
        assert_eq!(
            md.uid(),
            GRANTED,
            "{} is not the user's",
            e.path().display()
        );
    }
    drop(d);
}

/// The metrics file in a sticky world-writable directory (`/tmp`): written as root, which a user
/// racing links there cannot redirect, and whose file they cannot replace once written.
#[test]
fn a_user_racing_links_in_a_sticky_directory_gains_nothing() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let victims = victims(&w, GRANTED);
    let dir = w.path("tmp");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o1777);
    let prom = dir.join("ecr-refresherd.prom");
    // The user is there first, racing before the daemon's first write.
    let dir_s = dir.to_str().expect("UTF-8 path");
    let secs = "8";
    let racers: Vec<Py> = victims
        .iter()
        .map(|v| {
            Py::spawn(
                OTHER,
                RACE,
                &[dir_s, "ecr-refresherd.prom", v.to_str().unwrap(), secs],
            )
        })
        .collect();
    let before: Vec<Sentinel> = victims.iter().map(|v| Sentinel::of(v)).collect();
    chmod(w.dir.path(), 0o755);
    w.config(&format!(
        "{}metrics_file = \"{}\"\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\n",
        w.daemon_section(),
        prom.display(),
        w.path("d/config.json").display(),
    ));
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    let swaps: u64 = racers
        .iter()
        .map(|r| r.line(Duration::from_secs(60)).trim().parse().unwrap_or(0))
        .sum();
    eprintln!("MEASURE swaps={swaps}");
    assert!(swaps > 100, "the race made only {swaps} swaps");
    let after: Vec<Sentinel> = victims.iter().map(|v| Sentinel::of(v)).collect();
    assert_eq!(before, after, "a victim changed:\n{}", d.log_text());
    // Whatever is at the name now: the user's own (the daemon refused it) or root's own file.
    use std::os::unix::fs::MetadataExt;
    if let Ok(md) = std::fs::symlink_metadata(&prom) {
        if md.uid() == 0 {
            assert!(md.file_type().is_file() && md.nlink() == 1);
            assert!(
                std::fs::read_to_string(&prom)
                    .unwrap()
                    .contains("ecr_refresherd_")
            );
        } else {
            assert_eq!(md.uid(), OTHER);
            assert!(
                d.log_text().contains("cannot write the metrics file"),
                "{}",
                d.log_text()
            );
        }
    }
    drop(d);
}

/// Sends request `argv[2]` (a JSON line) on socket `argv[1]` over `argv[3]` connections at once,
/// as fast as answered, for `argv[4]` seconds; prints the answers and the bytes they held.
const ASK: &str = r#"
import socket, sys, threading, time
path, line, conns, secs = sys.argv[1], sys.argv[2].encode() + b"\n", int(sys.argv[3]), float(sys.argv[4])
end = time.monotonic() + secs
counts = [0, 0]
lock = threading.Lock()
def run():
    while time.monotonic() < end:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            s.sendall(line)
            got = 0
            while True:
                b = s.recv(1 << 20)
                if not b:
                    break
                got += len(b)
            s.close()
            with lock:
                counts[0] += 1
                counts[1] += got
        except OSError:
            pass
ts = [threading.Thread(target=run) for _ in range(conns)]
for t in ts: t.start()
for t in ts: t.join()
print(counts[0], counts[1], flush=True)
"#;

/// The CPU time (user + system) the process `pid` used so far.
fn cpu_of(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

/// A `socket_group` member (not root) is not rate limited for `metrics`, as for `status`: at a
/// thousand registries a metrics answer is 1.2 MB and costs about 5 times a status answer, but
/// a member asking over the 8 connections a uid may hold takes no more of the daemon's CPU with
/// `metrics` than it already could with `status` (about a core, either way).
#[test]
fn a_socket_group_member_asking_for_metrics_at_scale_costs_what_status_does() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let prom = w.path("m/ecr-refresherd.prom");
    let mut cfg = w.daemon_section();
    cfg += &format!(
        "socket_group = \"users\"\nmetrics_file = \"{}\"\n[[target]]\npath = \"{}\"\n",
        prom.display(),
        w.path("d/config.json").display()
    );
    for i in 0..1000 {
        cfg += &format!(
            "[[registry]]\nhost = \"{:012}.dkr.ecr.us-east-1.amazonaws.com\"\n",
            100_000_000_000u64 + i
        );
    }
    w.config(&cfg);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(Duration::from_secs(120), || {
            std::fs::read_to_string(&prom).is_ok_and(|t| {
                t.matches("ecr_refresherd_token_expiry_timestamp_seconds{")
                    .count()
                    == 1000
            })
        }),
        "no tokens:\n{}",
        d.log_text()
    );
    let sock = w.socket();
    let sock = sock.to_str().expect("UTF-8 path");
    let mut used_by = Vec::new();
    for cmd in ["metrics", "status"] {
        let line = format!("{{\"cmd\":\"{cmd}\"}}");
        let cpu = cpu_of(d.pid());
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={GRANTED}"))
            .arg(format!("--regid={GRANTED}"))
            .args([
                "--groups=100",
                "--",
                "/usr/bin/python3",
                "-c",
                ASK,
                sock,
                &line,
                "8",
                "4",
            ])
            .stdout(Stdio::piped());
        let out = c.output().expect("setpriv python3");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut it = text
            .split_whitespace()
            .map(|x| x.parse::<u64>().unwrap_or(0));
        let (n, bytes) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        let used = cpu_of(d.pid()) - cpu;
        eprintln!(
            "MEASURE {cmd}: {n} answers in 4 s ({} bytes each), daemon CPU {:.2} s ({:.1} ms an answer)",
            bytes / n.max(1),
            used.as_secs_f64(),
            used.as_secs_f64() * 1000.0 / n.max(1) as f64
        );
        assert!(n > 0, "{cmd}: no answer");
        used_by.push(used.as_secs_f64());
    }
    assert!(
        used_by[0] <= used_by[1] * 1.5 + 0.5,
        "4 s of metrics requests took {:.2} s of the daemon's CPU, 4 s of status requests {:.2} s",
        used_by[0],
        used_by[1]
    );
    drop(d);
}

/// node_exporter runs as its own user: a metrics directory the daemon creates (it was missing,
/// in a root directory) must let it in, as the file's 0644 says. It was made 0700, like a
/// user's `.docker`: the collector then cannot list it (node_textfile_scrape_error 1) and the
/// metrics are lost though the file is written.
#[test]
fn a_metrics_directory_the_daemon_creates_can_be_read_by_node_exporter() {
    require_root!();
    let w = World::new();
    chmod(w.dir.path(), 0o755);
    let dir = w.path("lib/prometheus/node-exporter");
    let prom = dir.join("ecr-refresherd.prom");
    w.config(&format!(
        "{}metrics_file = \"{}\"\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\n",
        w.daemon_section(),
        prom.display(),
        w.path("d/config.json").display(),
    ));
    // Under the unit's UMask=0077.
    let log = w.path("daemon.log");
    let mut c = w.cmd();
    c.arg("--config").arg(w.path("config.toml")).arg("run");
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    // SAFETY: umask is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        c.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    let mut child = c.spawn().expect("spawn daemon");
    let written = wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&prom).is_ok_and(|t| t.contains("ecr_refresherd_build_info{"))
    });
    let _ = child.kill();
    let _ = child.wait();
    w.capture_text(std::fs::read_to_string(&log).unwrap_or_default());
    assert!(
        written,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The collector's user (not the directory's owner, not root).
    let out = Command::new("setpriv")
        .arg(format!("--reuid={OTHER}"))
        .arg(format!("--regid={OTHER}"))
        .args(["--clear-groups", "--", "/usr/bin/python3", "-c"])
        .arg("import os, sys; d = sys.argv[1]; print([n for n in os.listdir(d) if n.endswith('.prom')]); print(open(os.path.join(d, 'ecr-refresherd.prom')).read().count('ecr_refresherd_build_info{'))")
        .arg(&dir)
        .output()
        .expect("setpriv python3");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        (code(&out), stdout(&out)),
        (0, "['ecr-refresherd.prom']\n1\n".to_string()),
        "node_exporter's user cannot read the metrics in {} (mode {mode:o}): {}",
        dir.display(),
        stderr(&out)
    );
}
