//! The daemon (`run`) end to end: schedule, faults, watching, reload, signals, systemd notify, socket.

mod common;

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use nix::sys::signal::Signal;

/// The entry for `host` in `file`, if valid per the fake: (password, expiry).
fn entry(w: &World, file: &std::path::Path, host: &str) -> Option<(String, SystemTime)> {
    let text = std::fs::read_to_string(file).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let auth = v["auths"][host]["auth"].as_str()?;
    let pw = password_of(auth);
    let exp = w.fake.expiry_of(&pw)?;
    Some((pw, exp))
}

fn registry_state(w: &World, host: &str) -> Option<(String, serde_json::Value)> {
    let st = w.status_json()?;
    let r = st["registries"]
        .as_array()?
        .iter()
        .find(|r| r["host"] == host)?
        .clone();
    Some((r["state"].as_str()?.to_string(), r))
}

#[test]
fn short_tokens_are_refreshed_on_schedule_and_never_lapse() {
    let w = World::new();
    w.fake.set_token_lifetime(Duration::from_secs(4));
    // A second group that hangs on every call must not delay the first.
    w.fake.set_fault(Service::EcrPublic, Fault::Blackhole);
    let target = w.one_target_config(&[H1, PUBLIC], "");
    let d = w.spawn_daemon(&[]);
    assert!(
        wait_for(Duration::from_secs(20), || entry(&w, &target, H1).is_some()),
        "{}",
        d.log_text()
    );
    let start = Instant::now();
    let mut samples = 0;
    let mut passwords = std::collections::BTreeSet::new();
    while start.elapsed() < Duration::from_secs(20) {
        let (pw, exp) = entry(&w, &target, H1).unwrap_or_else(|| {
            panic!(
                "no valid entry after {:?}:\n{}",
                start.elapsed(),
                d.log_text()
            )
        });
        assert!(
            exp > SystemTime::now(),
            "the entry expired at {:?} in the file",
            start.elapsed()
        );
        passwords.insert(pw);
        samples += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let calls = w.fake.count(Service::Ecr);
    // Refresh at half of 4 s minus up to 10 %: about every 1.8-2 s, so 9-12 calls in 20 s.
    assert!(
        (8..=14).contains(&calls),
        "{calls} calls in 20 s\n{}",
        d.log_text()
    );
    assert!(
        passwords.len() >= 8,
        "{} distinct tokens written",
        passwords.len()
    );
    assert!(samples >= 150, "{samples} samples");
}

#[test]
fn faults_back_off_show_failing_and_recover() {
    let w = World::new();
    w.fake.set_token_lifetime(Duration::from_secs(6));
    let target = w.one_target_config(&[H1], "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(20), || entry(&w, &target, H1).is_some()));
    let before = w.fake.count(Service::Ecr);
    let phases = [
        (Fault::Throttle, "throttled"),
        (Fault::ServerError, ""),
        (Fault::Blackhole, ""),
    ];
    let mut saw_failing_with_error = false;
    let t0 = Instant::now();
    for (i, (fault, word)) in phases.iter().enumerate() {
        w.fake.set_fault(Service::Ecr, fault.clone());
        let phase_end = t0 + Duration::from_millis(3300 * (i as u64 + 1));
        while Instant::now() < phase_end {
            if let Some((state, r)) = registry_state(&w, H1)
                && (state == "failing" || state == "expired")
                && r["consecutive_failures"].as_u64().unwrap_or(0) > 0
                && r["last_error"].as_str().is_some_and(|e| e.contains(word))
            {
                saw_failing_with_error = true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(
        saw_failing_with_error,
        "status never showed failing with the error\n{}",
        d.log_text()
    );
    let during = w.fake.count(Service::Ecr) - before;
    // Backing off (1 s doubling to 3 s, 3 SDK attempts each): far fewer than a tight loop would make.
    assert!(during <= 40, "{during} calls in 10 s of faults");
    w.fake.set_fault(Service::Ecr, Fault::None);
    assert!(
        wait_for(Duration::from_secs(60), || registry_state(&w, H1)
            .is_some_and(|(s, _)| s == "fresh")),
        "did not recover:\n{}",
        d.log_text()
    );
    assert!(wait_for(Duration::from_secs(10), || entry(&w, &target, H1)
        .is_some_and(|(_, e)| e > SystemTime::now())));
}

#[test]
fn config_edits_apply_and_a_broken_edit_keeps_the_old_config() {
    let w = World::new();
    let target = w.one_target_config(&[H1, H2], "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(20), || entry(&w, &target, H1)
        .is_some()
        && entry(&w, &target, H2).is_some()));

    // Add H3 (another region), remove H2.
    w.one_target_config(&[H1, H3], "");
    assert!(
        wait_for(Duration::from_secs(10), || entry(&w, &target, H3).is_some()
            && !read_json(&target)["auths"]
                .as_object()
                .unwrap()
                .contains_key(H2)),
        "{}",
        d.log_text()
    );
    assert!(entry(&w, &target, H1).is_some());

    // Break the syntax: the old config keeps running, status says where.
    let p = w.config(&format!(
        "{}[[registry]\nhost = \"{H1}\"\n",
        w.daemon_section()
    ));
    assert!(
        wait_for(Duration::from_secs(10), || {
            w.status_json().is_some_and(|s| {
                s["config"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains(&format!("{}:7:", p.display())))
            })
        }),
        "{}",
        d.log_text()
    );
    assert!(d.log_text().contains("config rejected"));
    std::fs::remove_file(&target).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || entry(&w, &target, H1).is_some()
            && entry(&w, &target, H3).is_some()),
        "old config still heals"
    );

    // Fix it: the error clears and the new config applies.
    w.one_target_config(&[H1], "");
    assert!(wait_for(Duration::from_secs(10), || {
        w.status_json().is_some_and(|s| {
            s["config"]["error"].is_null()
                && s["registries"].as_array().is_some_and(|r| r.len() == 1)
        })
    }));
    assert!(wait_for(Duration::from_secs(10), || {
        !read_json(&target)["auths"]
            .as_object()
            .unwrap()
            .contains_key(H3)
    }));
}

#[test]
fn deleted_target_or_removed_entry_is_restored_quickly_without_an_api_call() {
    let w = World::new();
    let target = w.one_target_config(&[H1], "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(20), || entry(&w, &target, H1).is_some()));
    let (pw, _) = entry(&w, &target, H1).unwrap();
    let calls = w.fake.count(Service::Ecr);
    let mut worst = Duration::ZERO;
    for round in 0..5 {
        let t = Instant::now();
        if round % 2 == 0 {
            std::fs::remove_file(&target).unwrap();
        } else {
            // `docker logout`: the entry goes, other entries stay.
            std::fs::write(
                &target,
                "{\"auths\": {\"other.example\": {\"auth\": \"b3RoZXI=\"}}}",
            )
            .unwrap();
        }
        assert!(
            wait_for(Duration::from_secs(5), || entry(&w, &target, H1)
                .is_some_and(|(p, _)| p == pw)),
            "round {round} not restored:\n{}",
            d.log_text()
        );
        worst = worst.max(t.elapsed());
        if round % 2 == 1 {
            assert_eq!(
                read_json(&target)["auths"]["other.example"]["auth"],
                "b3RoZXI="
            );
        }
    }
    assert!(
        worst < Duration::from_secs(1),
        "slowest restore took {worst:?}"
    );
    assert_eq!(
        w.fake.count(Service::Ecr),
        calls,
        "restored from the held token, no API call"
    );
    eprintln!("slowest restore: {worst:?}");
}

#[test]
fn a_target_directory_that_appears_later_is_picked_up() {
    let w = World::new();
    let target = w.path("run/containers/0/auth.json");
    w.config(&format!(
        "{}[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\n",
        w.daemon_section(),
        target.display()
    ));
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(20), || entry(&w, &target, H1).is_some()));
    // /run is a tmpfs: after a "reboot" of it the whole tree is gone.
    std::fs::remove_dir_all(w.path("run")).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || entry(&w, &target, H1).is_some()),
        "{}",
        d.log_text()
    );
}

#[test]
fn systemd_notify_ready_status_watchdog_reload_stopping() {
    let w = World::new();
    let notify = NotifySocket::bind(&w);
    let target = w.one_target_config(&[H1], "");
    let mut d = w.spawn_daemon(&[
        ("NOTIFY_SOCKET", notify.path.to_str().unwrap()),
        ("WATCHDOG_USEC", "400000"),
    ]);
    assert!(
        wait_for(Duration::from_secs(20), || notify
            .find(0, |m| m.lines().any(|l| l == "READY=1"))
            .is_some()),
        "{:?}",
        notify.messages()
    );
    let ready = notify
        .find(0, |m| m.lines().any(|l| l == "READY=1"))
        .unwrap();
    // READY came after the first round: the file was written before it.
    assert!(entry(&w, &target, H1).is_some());
    assert!(
        notify
            .find(0, |m| m
                .starts_with("STATUS=1/1 registries fresh, next refresh"))
            .is_some(),
        "{:?}",
        notify.messages()
    );
    // Watchdog pings at half of WATCHDOG_USEC: several within a second.
    let pings = |n: &NotifySocket| {
        n.messages()
            .iter()
            .filter(|m| m.trim() == "WATCHDOG=1")
            .count()
    };
    let p0 = pings(&notify);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        pings(&notify) - p0 >= 3,
        "{} pings in 1.1 s",
        pings(&notify) - p0
    );

    // A stuck loop stops pinging: SIGSTOP freezes it, no ping arrives meanwhile.
    d.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(100));
    let frozen = pings(&notify);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(pings(&notify), frozen, "pings while stopped");
    d.signal(Signal::SIGCONT);

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC in one datagram, then READY=1.
    let n = notify.messages().len();
    d.signal(Signal::SIGHUP);
    assert!(wait_for(Duration::from_secs(5), || notify
        .find(n, |m| m.contains("RELOADING=1"))
        .is_some()));
    let r = notify.find(n, |m| m.contains("RELOADING=1")).unwrap();
    let msg = &notify.messages()[r];
    let usec: u64 = msg
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC in the same datagram")
        .parse()
        .unwrap();
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    let now_usec = now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1000;
    assert!(
        usec <= now_usec && now_usec - usec < 10_000_000,
        "MONOTONIC_USEC={usec} now={now_usec}"
    );
    assert!(wait_for(Duration::from_secs(5), || notify
        .find(r + 1, |m| m.lines().any(|l| l == "READY=1"))
        .is_some()));
    assert!(ready < r);

    // SIGTERM: STOPPING=1 and exit 0 within 5 s.
    let t = Instant::now();
    let st = d.stop();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(st.code(), Some(0), "{}", d.log_text());
    assert!(
        notify.find(0, |m| m.contains("STOPPING=1")).is_some(),
        "{:?}",
        notify.messages()
    );
    assert!(!w.socket().exists(), "socket removed at exit");
}

#[test]
fn status_exit_codes_0_1_2_3() {
    let w = World::new();
    // 3: no daemon.
    let out = w.client(&["status"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("no ecr-refresherd answers on"));

    // 2: no valid token yet (every call denied); `refresh` says so too.
    w.fake.set_fault(Service::Ecr, Fault::AccessDenied);
    w.fake.set_token_lifetime(Duration::from_secs(6));
    w.one_target_config(&[H1], "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(10), || registry_state(&w, H1)
        .is_some_and(|(s, _)| s == "failing")));
    let out = w.client(&["status"]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert!(stdout(&out).contains("access denied"), "{}", stdout(&out));
    let out = w.client(&["refresh", H1]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    // Within the backoff the answer is the last failure and when the next attempt is (issue 9 #7).
    assert!(
        stdout(&out).contains(&format!("registry {H1}: FAILED: "))
            && stdout(&out).contains("access denied"),
        "{}",
        stdout(&out)
    );

    // 0: fresh.
    w.fake.set_fault(Service::Ecr, Fault::None);
    assert!(
        wait_for(Duration::from_secs(20), || code(&w.client(&["status"]))
            == 0),
        "{}",
        d.log_text()
    );
    let out = w.client(&["status"]);
    assert!(
        stdout(&out).contains(H1) && stdout(&out).contains("fresh"),
        "{}",
        stdout(&out)
    );

    // 1: the scheduled refresh (at ~3 s of a 6 s token) fails while the token is still valid.
    w.fake.set_fault(Service::Ecr, Fault::Unavailable);
    assert!(
        wait_for(Duration::from_secs(10), || code(&w.client(&["status"]))
            == 1),
        "{}",
        d.log_text()
    );
    // ... and 2 again once it expired.
    assert!(
        wait_for(Duration::from_secs(10), || code(&w.client(&["status"]))
            == 2),
        "{}",
        d.log_text()
    );
    assert!(wait_for(Duration::from_secs(5), || registry_state(&w, H1)
        .is_some_and(|(s, _)| s == "expired")));
}

#[test]
fn many_clients_and_a_silent_one_do_not_stop_the_daemon() {
    let w = World::new();
    w.one_target_config(&[H1], "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    // A client that never sends a newline, and one that sends a huge line.
    let mut silent = UnixStream::connect(w.socket()).unwrap();
    std::io::Write::write_all(&mut silent, b"{\"cmd\":").unwrap();
    let mut huge = UnixStream::connect(w.socket()).unwrap();
    let _ = std::io::Write::write_all(&mut huge, &vec![b'x'; 1 << 20]);
    let socket = w.socket();
    let handles: Vec<_> = (0..500)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket)?;
                s.set_read_timeout(Some(Duration::from_secs(60)))?;
                std::io::Write::write_all(&mut s, b"{\"cmd\":\"status\"}\n")?;
                let mut answer = String::new();
                std::io::Read::read_to_string(&mut s, &mut answer)?;
                Ok::<_, std::io::Error>(answer)
            })
        })
        .collect();
    let mut ok = 0;
    for h in handles {
        if let Ok(Ok(a)) = h.join()
            && a.contains("\"kind\":\"status\"")
        {
            ok += 1;
        }
    }
    assert_eq!(ok, 500, "every status client got an answer");
    // The silent client is cut off with an error, not served forever.
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut silent, &mut answer);
    assert!(answer.contains("\"kind\":\"error\""), "{answer}");
    assert_eq!(code(&w.client(&["status"])), 0);
    assert!(d.log_text().contains("token refreshed"));
}

#[test]
fn refresh_requests_are_coalesced() {
    let w = World::new();
    w.fake.set_latency(Service::Ecr, Duration::from_millis(300));
    w.one_target_config(&[H1, H2], "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(10), || code(
        &w.client(&["status"])
    ) == 0));
    w.fake.reset_calls();
    let socket = w.socket();
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).unwrap();
                std::io::Write::write_all(&mut s, b"{\"cmd\":\"refresh\"}\n").unwrap();
                let mut a = String::new();
                std::io::Read::read_to_string(&mut s, &mut a).unwrap();
                a
            })
        })
        .collect();
    for h in handles {
        let a = h.join().unwrap();
        assert!(a.contains("\"ok\":true"), "{a}");
    }
    // The first request ran within 10 s of the last success: answered from it, or one fetch shared.
    assert!(
        w.fake.count(Service::Ecr) <= 1,
        "{} calls for 20 refresh requests",
        w.fake.count(Service::Ecr)
    );
    assert!(d.log_text().contains("starting"));
}

#[test]
fn reload_command_reports_a_bad_config_and_applies_a_good_one() {
    let w = World::new();
    let target = w.one_target_config(&[H1], "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    // Write the bad config in a way the watcher may or may not have seen yet: `reload` must say.
    w.config(&format!(
        "{}[[registry]]\nhost = \"nope\"\n",
        w.daemon_section()
    ));
    let out = w.client(&["reload"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(
        stderr(&out).contains("config.toml:8:8: invalid registry host"),
        "{}",
        stderr(&out)
    );
    w.one_target_config(&[H1, H3], "");
    let out = w.client(&["reload"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(wait_for(Duration::from_secs(10), || entry(&w, &target, H3).is_some()));
    assert!(d.log_text().contains("config reloaded"));
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_and_a_stale_socket_is_replaced() {
    let w = World::new();
    w.one_target_config(&[H1], "");
    // A stale socket file from a crash: nobody listens.
    drop(std::os::unix::net::UnixListener::bind(w.socket()).unwrap());
    assert!(w.socket().exists());
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    let mut c = w.cmd();
    c.arg("--config").arg(w.path("config.toml")).arg("run");
    let out = w.capture(c.output().unwrap());
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("another ecr-refresherd is already answering on this socket"),
        "{}",
        stderr(&out)
    );
    assert!(
        wait_for(Duration::from_secs(10), || code(&w.client(&["status"]))
            == 0),
        "the first daemon is untouched"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(w.socket()).unwrap().permissions().mode() & 0o777,
        0o660
    );
}

#[test]
fn a_hung_first_round_does_not_block_ready() {
    let w = World::new();
    let notify = NotifySocket::bind(&w);
    w.fake.set_fault(Service::Ecr, Fault::Blackhole);
    w.one_target_config(&[H1], "");
    let log = w.path("daemon.log");
    let mut c = w.cmd();
    c.env("NOTIFY_SOCKET", &notify.path)
        .arg("--config")
        .arg(w.path("config.toml"))
        .args(["run", "--start-timeout", "2s"])
        .stderr(std::fs::File::create(&log).unwrap());
    let t = Instant::now();
    let mut child = c.spawn().unwrap();
    assert!(wait_for(Duration::from_secs(15), || notify
        .find(0, |m| m.contains("READY=1"))
        .is_some()));
    let waited = t.elapsed();
    let msg = &notify.messages()[notify.find(0, |m| m.contains("READY=1")).unwrap()];
    assert!(
        msg.contains("STATUS=starting: the first round is still running"),
        "{msg}"
    );
    assert!(
        waited >= Duration::from_secs(2),
        "READY before the first round or the timeout: {waited:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
    w.capture_text(std::fs::read_to_string(&log).unwrap_or_default());
}

#[test]
fn a_target_removed_from_the_config_loses_our_entries_only() {
    let w = World::new();
    let a = w.path("a/config.json");
    let b = w.path("b/config.json");
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    std::fs::write(
        &b,
        "{\"auths\": {\"keep.example\": {\"auth\": \"a2VlcA==\"}}}",
    )
    .unwrap();
    let cfg = |targets: &[&std::path::Path]| {
        let mut c = w.daemon_section();
        for t in targets {
            c += &format!("[[target]]\npath = \"{}\"\n", t.display());
        }
        c + &format!("[[registry]]\nhost = \"{H1}\"\n")
    };
    w.config(&cfg(&[&a, &b]));
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    assert!(wait_for(Duration::from_secs(20), || entry(&w, &a, H1)
        .is_some()
        && entry(&w, &b, H1).is_some()));
    w.config(&cfg(&[&a]));
    assert!(
        wait_for(Duration::from_secs(10), || read_json(&b)["auths"]
            .get(H1)
            .is_none()),
        "{}",
        d.log_text()
    );
    assert_eq!(read_json(&b)["auths"]["keep.example"]["auth"], "a2VlcA==");
    assert!(entry(&w, &a, H1).is_some());
    // The log line follows the write: wait for it rather than race it.
    assert!(wait_for(Duration::from_secs(10), || d
        .log_text()
        .contains("target removed from the config")));
}

/// `reload` reaches the daemon on the `socket` of a config that no longer parses, and says why
/// the edit is rejected (exit 1), rather than looking for the default socket (exit 3).
#[test]
fn reload_finds_a_custom_socket_in_a_broken_config_and_reports_the_error() {
    let w = World::new();
    w.one_target_config(&[H1], "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    let cfg = w.path("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}\n[[registry]\nhost = \"x\"\n")).unwrap();
    let out = w.run(&["reload"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("the new config was rejected")
            && stderr(&out).contains("config.toml:"),
        "{}",
        stderr(&out)
    );
    // An unknown host: the daemon refuses the request (2), which is not "no daemon" (3).
    let out = w.run(&["refresh", "nope.example"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    drop(d);
}

/// The socket answers from the first instant with what the daemon knows: every registry pending
/// or refreshing (exit 2), never an empty status that reads as all well (exit 0). The window was a
/// few milliseconds at each start: 20 starts, each polled as fast as the client runs.
#[test]
fn status_during_the_first_round_is_pending_not_empty() {
    let w = World::new();
    w.fake
        .set_latency(fake_aws::Service::Ecr, Duration::from_secs(2));
    w.one_target_config(&[H1], "");
    for round in 0..20 {
        let mut d = w.spawn_daemon(&[]);
        let end = Instant::now() + Duration::from_secs(20);
        let out = loop {
            let out = w.client(&["status", "--json"]);
            if code(&out) != 3 {
                break out;
            }
            assert!(Instant::now() < end, "the daemon never answered");
        };
        let st: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert!(
            st["pid"].as_u64().is_some_and(|p| p > 0) && st["registries"][0]["host"] == H1,
            "start {round}: an empty status: {st}"
        );
        let state = st["registries"][0]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(state == "pending" || state == "refreshing", "{st}");
        assert_eq!(code(&out), 2, "no valid token yet: {st}");
        d.stop();
    }
}

/// An auth file the daemon cannot write makes `status` exit 1 (its tokens are valid, a consumer's
/// file is not), shown as `error`; once it can, 0 again.
#[test]
fn status_exits_1_while_an_auth_file_cannot_be_written() {
    let w = World::new();
    let target = w.one_target_config(&[H1], "");
    // Its directory is a file: nothing can be written under it.
    let dir = target.parent().unwrap().to_path_buf();
    std::fs::write(&dir, "not a directory").unwrap();
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    let failing = wait_for(Duration::from_secs(30), || {
        let out = w.client(&["status"]);
        code(&out) == 1 && stdout(&out).contains("error")
    });
    let out = w.client(&["status"]);
    assert!(
        failing,
        "status while the file cannot be written: exit {}\n{}\n{}",
        code(&out),
        stdout(&out),
        d.log_text()
    );
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    assert!(
        wait_for(Duration::from_secs(60), || {
            entry(&w, &target, H1).is_some() && code(&w.client(&["status"])) == 0
        }),
        "{}\n{}",
        stdout(&w.client(&["status"])),
        d.log_text()
    );
}
