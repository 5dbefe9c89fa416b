//! Issue 9's review of the daemon's limits, as tests: expiry enforced while ECR fails,
//! `min_interval` as a floor, `refresh` under backoff, a hostile endpoint's expiries, and a target
//! whose file system hangs.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use nix::sys::signal::Signal;

fn has_entry(file: &Path, host: &str) -> bool {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["auths"][host]["auth"].is_string())
}

/// A one-target config (`<dir>/d/config.json`) with the test daemon section, some of whose
/// values are replaced: `(key, value)` pairs.
fn config_with(w: &World, hosts: &[&str], set: &[(&str, &str)]) -> std::path::PathBuf {
    let target = w.one_target_config(hosts, "");
    let mut text = std::fs::read_to_string(w.path("config.toml")).unwrap();
    for (k, v) in set {
        let old = text
            .lines()
            .find(|l| l.starts_with(&format!("{k} = ")))
            .map(str::to_string);
        text = match old {
            Some(l) => text.replace(&l, &format!("{k} = \"{v}\"")),
            None => text.replacen("[daemon]\n", &format!("[daemon]\n{k} = \"{v}\"\n"), 1),
        };
    }
    std::fs::write(w.path("config.toml"), text).unwrap();
    target
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// #5a: an entry that expired while the daemon was down is removed at start even though every
/// fetch fails (no token is ever held, so expiry cannot depend on one).
#[test]
fn an_entry_that_expired_while_down_is_removed_although_ecr_fails() {
    let w = World::new();
    w.fake.set_fault(Service::Ecr, Fault::AccessDenied);
    let target = w.one_target_config(&[H1], "");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(
        &target,
        format!(
            "{{\"auths\": {{\"{H1}\": {{\"auth\": \"QVdTOm9sZA==\"}}, \"ghcr.io\": {{\"auth\": \"Z2g6eA==\"}}}}}}"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(w.path("state")).unwrap();
    std::fs::write(
        w.path("state/state.json"),
        format!(
            "{{\"targets\": {{\"{}\": {{\"{H1}\": {{\"expires_at\": {}}}}}}}}}",
            target.display(),
            unix_now() - 3600
        ),
    )
    .unwrap();
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(Duration::from_secs(15), || !has_entry(&target, H1)),
        "the expired entry stayed while ECR failed:\n{}",
        d.log_text()
    );
    assert!(has_entry(&target, "ghcr.io"), "a foreign entry was lost");
}

/// #5b: stopped (suspend, SIGSTOP) across the expiry while ECR hangs: on waking the expired
/// token is never written back, and the entry is removed.
#[test]
fn a_token_that_expired_during_a_stop_is_removed_not_written_back() {
    let w = World::new();
    w.fake.set_token_lifetime(Duration::from_secs(6));
    let target = config_with(&w, &[H1], &[("min_interval", "1m")]);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(20), || has_entry(&target, H1)));
    w.fake.set_fault(Service::Ecr, Fault::Blackhole);
    d.signal(Signal::SIGSTOP);
    // The stimulus is time passing while the daemon is stopped: the token's 6 s run out.
    std::thread::sleep(Duration::from_secs(7));
    d.signal(Signal::SIGCONT);
    // Generous: the expiry is on the wall clock, which a fresh machine's time sync may step back.
    assert!(
        wait_for(Duration::from_secs(40), || !has_entry(&target, H1)),
        "the expired entry was kept or written back (wall clock now {}):\n{}",
        humantime::format_rfc3339_millis(SystemTime::now()),
        d.log_text()
    );
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        assert!(!has_entry(&target, H1), "the expired token came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// #6: `min_interval` bounds successful fetches even for tokens that live less: 5-second tokens
/// with `min_interval = "30s"` are not fetched every 4 s; status warns instead.
#[test]
fn min_interval_is_a_floor_for_short_tokens() {
    let w = World::new();
    w.fake.set_token_lifetime(Duration::from_secs(5));
    config_with(&w, &[H1], &[("min_interval", "30s")]);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(20), || w
        .fake
        .count(Service::Ecr)
        >= 1));
    let start = w.fake.count(Service::Ecr);
    let mut warned = false;
    let end = Instant::now() + Duration::from_secs(12);
    while Instant::now() < end {
        if let Some(st) = w.status_json() {
            warned |= st["registries"][0]["warnings"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x.as_str().is_some_and(|s| s.contains("min_interval")))
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let calls = w.fake.count(Service::Ecr) - start;
    assert_eq!(
        calls,
        0,
        "{calls} fetches in 12 s with min_interval 30s:\n{}",
        d.log_text()
    );
    assert!(warned, "status never warned that the token lapses");
}

/// Sends one raw request line and returns the answer line.
fn ask(socket: &Path, line: &str) -> String {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.write_all(line.as_bytes()).unwrap();
    let mut a = String::new();
    s.read_to_string(&mut a).unwrap();
    a
}

/// #7: under throttling, a loop of `refresh` requests must not bypass the backoff.
#[test]
fn refresh_requests_respect_the_backoff() {
    let w = World::new();
    config_with(&w, &[H1], &[("retry_min", "2s"), ("retry_max", "5s")]);
    w.fake.set_fault(Service::Ecr, Fault::Throttle);
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(20), || w
        .fake
        .count(Service::Ecr)
        >= 1));
    let start = Instant::now();
    let mut answers = 0;
    let mut told = None;
    while start.elapsed() < Duration::from_secs(6) {
        let a = ask(&w.socket(), "{\"cmd\":\"refresh\"}\n");
        if a.contains("next attempt is at") {
            told = Some(a.clone());
        }
        answers += 1;
    }
    let calls = w.fake.count(Service::Ecr);
    // Backoff of 2 s to 5 s: at most one call per 2 s, plus the first.
    assert!(
        calls <= 5,
        "{calls} GetAuthorizationToken calls for {answers} refresh requests in 6 s:\n{}",
        d.log_text()
    );
    let told = told.expect("no answer said when the next attempt is");
    assert!(
        told.contains("backing off") && told.contains("Throttl"),
        "{told}"
    );
    eprintln!("{answers} refresh requests, {calls} calls");
}

/// #17: an endpoint's absurd expiry (before 1970) is a failed fetch, not a crash.
#[test]
fn an_expiry_before_1970_is_a_failed_fetch_not_a_crash() {
    let w = World::new();
    let offset = -((unix_now() + 86400) as i64);
    w.fake
        .set_fault(Service::Ecr, Fault::ExpiresAtOffset(offset));
    let target = w.one_target_config(&[H1], "");
    let mut d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(
        wait_for(Duration::from_secs(20), || {
            w.status_json().is_some_and(|st| {
                st["registries"][0]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("before 1970"))
            })
        }),
        "{}",
        d.log_text()
    );
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon died:\n{}",
        d.log_text()
    );
    assert!(
        !target.exists(),
        "nothing was written from an invalid token"
    );
    // Recovers when the endpoint does.
    w.fake.clear_faults(Service::Ecr);
    let out = w.client(&["refresh"]);
    let _ = out;
    assert!(
        wait_for(Duration::from_secs(30), || has_entry(&target, H1)),
        "{}",
        d.log_text()
    );
}

/// #12: a target whose file system hangs (every open of its file blocks, as on a dead NFS
/// server; emulated with a fanotify permission mark that is never answered) must not delay
/// other targets, token refreshes or watchdog pings; status shows it stuck.
#[test]
fn a_hung_target_delays_nothing_else() {
    use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};
    require_root!();
    let w = World::new();
    w.fake.set_token_lifetime(Duration::from_secs(6));
    let hung = w.path("hung/config.json");
    let good = w.path("good/config.json");
    for f in [&hung, &good] {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, "{}").unwrap();
    }
    w.config(&format!(
        "{}[[target]]\npath = \"{}\"\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\n",
        w.daemon_section(),
        hung.display(),
        good.display()
    ));
    let fan = match Fanotify::init(
        InitFlags::FAN_CLASS_CONTENT | InitFlags::FAN_CLOEXEC,
        EventFFlags::O_RDONLY,
    ) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("SKIPPED: fanotify permission events are not available here: {e}");
            return;
        }
    };
    let dir = std::fs::File::open(hung.parent().unwrap()).unwrap();
    fan.mark(
        MarkFlags::FAN_MARK_ADD,
        MaskFlags::FAN_OPEN_PERM | MaskFlags::FAN_EVENT_ON_CHILD,
        &dir,
        None::<&Path>,
    )
    .expect("fanotify mark");
    let notify = NotifySocket::bind(&w);
    let d = w.spawn_daemon(&[
        ("NOTIFY_SOCKET", notify.path.to_str().unwrap()),
        ("WATCHDOG_USEC", "2000000"),
    ]);
    assert!(
        wait_for(Duration::from_secs(20), || notify
            .find(0, |m| m.contains("READY=1"))
            .is_some()),
        "no READY while one target hangs:\n{}",
        d.log_text()
    );
    assert!(wait_for(Duration::from_secs(20), || has_entry(&good, H1)));
    let first = std::fs::read_to_string(&good).unwrap();
    // 6-second tokens are refreshed every ~3 s: the good target keeps getting new ones.
    assert!(
        wait_for(Duration::from_secs(20), || std::fs::read_to_string(&good)
            .is_ok_and(|t| t != first)),
        "the good target was not refreshed while another hung:\n{}",
        d.log_text()
    );
    let stuck = wait_for(Duration::from_secs(20), || {
        w.status_json().is_some_and(|st| {
            st["targets"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("stuck"))
        })
    });
    assert!(stuck, "status never showed the hung target as stuck");
    let pings_before = notify
        .messages()
        .iter()
        .filter(|m| m.contains("WATCHDOG=1"))
        .count();
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let pings = notify
        .messages()
        .iter()
        .filter(|m| m.contains("WATCHDOG=1"))
        .count()
        - pings_before;
    assert!(
        pings >= 2,
        "{pings} watchdog pings in 4 s with a 2 s watchdog"
    );
    // The file system comes back (unanswered permission events are allowed on close).
    drop(fan);
    assert!(
        wait_for(Duration::from_secs(30), || has_entry(&hung, H1)),
        "{}",
        d.log_text()
    );
}

/// #20: what members of socket_group see in `status` never holds config values (a role's
/// external_id) or a credential_process's output: only where it failed and what kind of failure.
#[test]
fn status_errors_hold_no_config_values_or_process_output() {
    let w = World::new();
    let aws_config = w.path("aws-config");
    std::fs::write(
        &aws_config,
        "[profile broken]\ncredential_process = sh -c 'echo STDERR-SECRET-7f3a >&2; exit 1'\n",
    )
    .unwrap();
    w.fake.set_fault(Service::Sts, Fault::AccessDenied);
    w.config(&format!(
        "{}[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\nprofile = \"broken\"\n[[registry]]\nhost = \"{H3}\"\nrole_arn = \"arn:aws:iam::111111111111:role/pull\"\nexternal_id = \"EXTID-VALUE-91c2\"\n",
        w.daemon_section(),
        w.path("d/config.json").display()
    ));
    let d = w.spawn_daemon(&[("AWS_CONFIG_FILE", aws_config.to_str().unwrap())]);
    d.wait_ready();
    let failing = |st: &serde_json::Value| {
        st["registries"].as_array().is_some_and(|a| {
            a.iter()
                .all(|r| r["consecutive_failures"].as_u64().unwrap_or(0) > 0)
        })
    };
    assert!(
        wait_for(Duration::from_secs(30), || w
            .status_json()
            .is_some_and(|st| failing(&st))),
        "{}",
        d.log_text()
    );
    let out = w.client(&["status", "--json"]);
    let text = stdout(&out);
    for value in ["STDERR-SECRET-7f3a", "EXTID-VALUE-91c2"] {
        assert!(!text.contains(value), "status shows {value}:\n{text}");
    }
    assert!(
        text.contains("credentials"),
        "status says what kind of failure:\n{text}"
    );
    let table = stdout(&w.client(&["status"]));
    assert!(
        !table.contains("STDERR-SECRET") && !table.contains("EXTID-VALUE"),
        "{table}"
    );
}

/// #18: a huge token from the endpoint is a failed fetch (ECR's are 2-3 KB), and no file is ever
/// written larger than the daemon itself would read back (4 MiB): the target never gets stuck.
#[test]
fn a_huge_token_is_refused_and_no_file_outgrows_what_we_read() {
    let w = World::new();
    let target = w.path("d/config.json");
    let big = w.path("big/config.json");
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    // Foreign content just under 4 MiB: our entry would push it over.
    let filler = "x".repeat(4 * 1024 * 1024 - 60);
    std::fs::write(&big, format!("{{\"filler\": \"{filler}\"}}")).unwrap();
    let before = std::fs::read(&big).unwrap();
    w.config(&format!(
        "[daemon]\nstate_dir = \"{{dir}}/state\"\n[[registry]]\nhost = \"{H1}\"\n[[target]]\npath = \"{}\"\n[[target]]\npath = \"{}\"\n",
        target.display(),
        big.display()
    ));
    w.fake.set_fault(Service::Ecr, Fault::HugeToken(300_000));
    let out = w.run(&["once"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}");
    assert!(text.contains("a few KB"), "{text}");
    assert!(
        text.len() < 20_000,
        "the token reached the output: {} bytes",
        text.len()
    );
    assert!(!target.exists(), "a target was written from a 4 MB token");

    w.fake.clear_faults(Service::Ecr);
    let out = w.run(&["once"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}");
    assert!(text.contains("would be larger than 4 MiB"), "{text}");
    assert!(
        std::fs::read(&big).unwrap() == before,
        "the big file changed"
    );
    assert_fresh_entry(&w, &target, H1);
}
