//! Soak: many refresh cycles with very short tokens; memory, file descriptors, threads and tasks
//! must stay flat after a warm-up. `SOAK_CYCLES` sets the measured count (default 1,000;
//! docs/RELIABILITY.md runs 10,000 after a 5,000-cycle warm-up).

mod common;

use std::time::{Duration, Instant};

use common::*;

/// 99 token groups (one per fake region) refreshing about every 1.2 s: ~80 cycles per second.
const GROUPS: usize = 99;

fn proc_status(pid: i32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn refresh_cycles_leak_nothing() {
    let cycles: usize = std::env::var("SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let w = World::new();
    w.fake.set_token_lifetime(Duration::from_millis(2500));
    let target = w.path("d/config.json");
    let mut cfg = w
        .daemon_section()
        .replace("min_interval = \"1s\"", "min_interval = \"100ms\"");
    cfg += &format!("[[target]]\npath = \"{}\"\n", target.display());
    for i in 0..GROUPS {
        cfg += &format!(
            "[[registry]]\nhost = \"111111111111.dkr.ecr.zz-soak-{}.amazonaws.com\"\n",
            i + 1
        );
    }
    w.config(&cfg);
    let env: Vec<(String, String)> = std::env::var("SOAK_DAEMON_ENV")
        .ok()
        .and_then(|v| {
            v.split_once('=')
                .map(|(k, v)| vec![(k.to_string(), v.to_string())])
        })
        .unwrap_or_default();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let d = w.spawn_daemon(&env);
    d.wait_ready();
    let pid = d.pid();
    let calls = || w.fake.count(Service::Ecr);
    // Warm up (not counted): allocator arenas, connection pools and buffers reach their working size
    // over the first few thousand cycles (seen: about +1.5 MiB in one step before 4,000 cycles, then
    // flat). `SOAK_WARMUP` sets it; default half the measured cycles, at least 1,000.
    let warm: usize = std::env::var("SOAK_WARMUP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or((cycles / 2).max(1000));
    assert!(
        wait_for(Duration::from_secs(600), || calls() >= warm.max(3 * GROUPS)),
        "{}",
        d.log_text()
    );
    let tasks = || {
        w.status_json()
            .and_then(|s| s["tasks"].as_u64())
            .unwrap_or(u64::MAX)
    };
    let (rss0, fds0, threads0, tasks0) = (
        proc_status(pid, "VmRSS:"),
        fds(pid),
        proc_status(pid, "Threads:"),
        tasks(),
    );
    let start = Instant::now();
    let mut peak = rss0;
    let mut max_fds = fds0;
    let mut max_tasks = tasks0;
    let base = calls();
    let goal = base + cycles;
    let mut next_report = base + cycles / 10;
    while calls() < goal {
        if calls() >= next_report {
            eprintln!(
                "soak: {} cycles, RSS {} kB, fds {}",
                calls() - base,
                proc_status(pid, "VmRSS:"),
                fds(pid)
            );
            next_report += cycles / 10;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "too slow: {} of {cycles} cycles",
            calls() + cycles - goal
        );
        peak = peak.max(proc_status(pid, "VmRSS:"));
        max_fds = max_fds.max(fds(pid));
        max_tasks = max_tasks.max(tasks());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Quiesce between cycles, then compare. Open files move by a few as pooled connections to the
    // fake are replaced; a leak would grow without bound, so the bound is on the maximum.
    std::thread::sleep(Duration::from_millis(300));
    let (rss1, fds1, threads1, tasks1) = (
        proc_status(pid, "VmRSS:"),
        fds(pid),
        proc_status(pid, "Threads:"),
        tasks(),
    );
    let growth = peak.saturating_sub(rss0);
    eprintln!(
        "soak: {cycles} refresh cycles in {:.0?}; RSS {rss0} kB -> {rss1} kB (peak {peak} kB, growth {growth} kB); fds {fds0} -> {fds1} (max {max_fds}); threads {threads0} -> {threads1}; tasks {tasks0} -> {tasks1} (max {max_tasks})",
        start.elapsed()
    );
    assert!(growth < 1024, "peak RSS grew by {growth} kB");
    assert!(
        fds1 <= fds0 + 5 && max_fds <= fds0 + 8,
        "fds {fds0} -> {fds1} (max {max_fds})"
    );
    assert!(threads1 <= threads0 + 2, "threads {threads0} -> {threads1}");
    assert!(
        tasks1 <= tasks0 + GROUPS as u64,
        "tasks {tasks0} -> {tasks1}"
    );
    assert!(
        max_tasks <= tasks0 + 2 * GROUPS as u64 + 10,
        "tasks peaked at {max_tasks}"
    );
    assert_fresh_entry(&w, &target, "111111111111.dkr.ecr.zz-soak-1.amazonaws.com");
}
