//! Soak: many refresh cycles with very short tokens; memory, file descriptors, threads and tasks
//! must stay flat. `SOAK_CYCLES` sets the count (default 1,000; docs/RELIABILITY.md runs 10,000).

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
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    let pid = d.pid();
    let calls = || w.fake.count(Service::Ecr);
    // Warm up: every group refreshed a few times, allocator and buffers at their working size.
    let warm = cycles / 10;
    assert!(
        wait_for(Duration::from_secs(120), || calls() >= warm.max(3 * GROUPS)),
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
    let goal = calls() + cycles;
    while calls() < goal {
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
    // Quiesce between cycles, then compare.
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
        fds1 <= fds0 + 2 && max_fds <= fds0 + 8,
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
