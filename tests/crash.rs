//! A `kill -9` at any instant of a write leaves the old or the new complete file, never a partial one.
//! The target holds our entry (old or new token) and every foreign entry after every kill.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Kills `once` at random instants while it rewrites a 2 MiB target; checks the target after each.
fn kill_loop(rounds: usize) {
    let w = World::new();
    let target = w.path("d/config.json");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    // A big file makes the write and fsync long enough to be hit.
    let mut auths = serde_json::Map::new();
    for i in 0..20_000 {
        auths.insert(
            format!("registry-{i}.example"),
            serde_json::json!({"auth": format!("{i:0>80}")}),
        );
    }
    let initial = serde_json::json!({"auths": auths, "credHelpers": {"x.example": "y"}});
    std::fs::write(&target, serde_json::to_vec(&initial).unwrap()).unwrap();
    w.config(&format!(
        "[daemon]\nstate_dir = \"{{dir}}/state\"\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\n",
        target.display()
    ));
    // How long one run takes, to spread the kills over it.
    let t0 = Instant::now();
    assert_eq!(code(&w.run(&["once"])), 0);
    let span = t0.elapsed().as_micros().max(1000) as u64;
    let mut killed_mid_run = 0;
    for round in 0..rounds {
        let mut c = w.cmd();
        c.arg("--config").arg(w.path("config.toml")).arg("once");
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(Duration::from_micros(rand::random::<u64>() % span));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let bytes = std::fs::read(&target).unwrap();
        assert!(!bytes.is_empty(), "round {round}: empty target");
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("round {round}: partial target: {e}"));
        let got = v["auths"].as_object().unwrap();
        assert_eq!(got.len(), 20_001, "round {round}: every entry survives");
        assert_eq!(v["credHelpers"], initial["credHelpers"]);
        password_of(got[H1]["auth"].as_str().unwrap());
    }
    assert!(
        killed_mid_run >= rounds / 4,
        "only {killed_mid_run} of {rounds} kills hit a running process"
    );
    // The next start removes what the kills left behind.
    assert_eq!(code(&w.run(&["once"])), 0);
    let names: Vec<_> = std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["config.json"], "no temp file survives a restart");
    eprintln!("{rounds} kills, {killed_mid_run} while running");
}

/// `CRASH_KILLS` sets the count (default 200; docs/RELIABILITY.md runs 1,000).
#[test]
fn kill_9_during_writes_never_leaves_a_partial_target() {
    let kills = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    kill_loop(kills);
}
