//! `once` end to end on auth files and state files we must not misread: duplicate keys, podman's
//! per-repository keys, a forged state, an unreadable or oversized state.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A config with `hosts` as registries and each `(name, path)` as a target.
fn config(w: &World, hosts: &[&str], targets: &[(&str, &Path)]) {
    let mut cfg = "[daemon]\nstate_dir = \"{dir}/state\"\n".to_string();
    for h in hosts {
        cfg += &format!("[[registry]]\nhost = \"{h}\"\n");
    }
    for (name, p) in targets {
        cfg += &format!(
            "[[target]]\nname = \"{name}\"\npath = \"{}\"\n",
            p.display()
        );
    }
    w.config(&cfg);
}

/// The line `once` prints for the target `name`.
fn target_line(text: &str, name: &str) -> String {
    text.lines()
        .find(|l| l.starts_with(&format!("target {name} ")))
        .unwrap_or_else(|| panic!("no line for {name}:\n{text}"))
        .to_string()
}

fn write_file(p: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
    std::fs::write(p, bytes).expect("write");
}

/// The keys of the `auths` object, in file order.
fn auth_keys(p: &Path) -> Vec<String> {
    read_json(p)["auths"]
        .as_object()
        .unwrap_or_else(|| panic!("{}: no auths", p.display()))
        .keys()
        .cloned()
        .collect()
}

/// The state directory of a test, created as the daemon would (root, 0700).
fn state_dir(w: &World) -> PathBuf {
    let d = w.path("state");
    std::fs::create_dir_all(&d).expect("mkdir state");
    chmod(&d, 0o700);
    d
}

/// Names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn duplicate_keys_leave_the_file_byte_identical_and_say_why() {
    let w = World::new();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "two-auths",
            // Docker merges both objects; serde_json keeps the last: ghcr.io would be lost.
            "{\n\t\"auths\": {\"ghcr.io\": {\"auth\": \"Z2g=\"}},\n\t\"auths\": {\"quay.io\": {\"auth\": \"cXU=\"}}\n}".into(),
            "duplicate key \"auths\" at line 3",
        ),
        (
            "two-entries",
            format!("{{\"auths\": {{\"ghcr.io\": {{\"auth\": \"YQ==\"}}, \"ghcr.io\": {{\"auth\": \"Yg==\"}}, \"{H1}\": {{}}}}}}"),
            "duplicate key \"ghcr.io\" at line 1",
        ),
        (
            "in-foreign-entry",
            "{\"auths\": {\"ghcr.io\": {\"auth\": \"YQ==\", \"auth\": \"Yg==\"}}}".into(),
            "duplicate key \"auth\"",
        ),
        (
            "in-foreign-key",
            "{\"proxies\": {\"default\": {\"httpProxy\": \"a\", \"httpProxy\": \"b\"}}}".into(),
            "duplicate key \"httpProxy\"",
        ),
        (
            "escaped",
            "{\"auths\": {}, \"\\u0061uths\": {\"quay.io\": {}}}".into(),
            "duplicate key \"auths\"",
        ),
        (
            "in-array",
            "{\"x\": [{\"k\": 1}, {\"k\": 1, \"k\": 2}]}".into(),
            "duplicate key \"k\"",
        ),
    ];
    let mut targets = Vec::new();
    for (name, text, _) in &cases {
        let p = w.path(&format!("{name}/config.json"));
        write_file(&p, text.as_bytes());
        targets.push((*name, p));
    }
    let good = w.path("good/config.json");
    targets.push(("good", good.clone()));
    let refs: Vec<(&str, &Path)> = targets.iter().map(|(n, p)| (*n, p.as_path())).collect();
    config(&w, &[H1], &refs);
    let out = w.run(&["once"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}\n{}", stderr(&out));
    for (name, bytes, reason) in &cases {
        let p = w.path(&format!("{name}/config.json"));
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            *bytes,
            "{name} changed"
        );
        let line = target_line(&text, name);
        assert!(
            line.contains("FAILED") && line.contains("left untouched") && line.contains(reason),
            "{name}: {line}"
        );
        assert_eq!(
            names_in(p.parent().expect("parent")),
            ["config.json"],
            "{name}: nothing beside it"
        );
    }
    assert_fresh_entry(&w, &good, H1);
}

#[test]
fn a_key_serde_json_would_read_as_a_number_is_refused() {
    let w = World::new();
    let p = w.path("docker/config.json");
    let text = "{\"auths\": {}, \"x\": {\"$serde_json::private::Number\": \"1\"}}";
    write_file(&p, text.as_bytes());
    config(&w, &[H1], &[("docker", &p)]);
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert_eq!(std::fs::read_to_string(&p).expect("read"), text);
    let line = target_line(&stdout(&out), "docker");
    assert!(line.contains("reserved key"), "{line}");
}

#[test]
fn podman_files_keep_per_repository_keys_docker_files_do_not() {
    let w = World::new();
    let existing = format!(
        r#"{{"auths": {{
  "{H1}/team-a": {{"auth": "dGVhbS1h"}},
  "https://{H1}": {{"auth": "c2NoZW1l"}},
  "http://{H1}/v2/": {{"auth": "djI="}},
  "{H1}/team-b/app": {{"auth": "dGVhbS1i"}},
  "ghcr.io": {{"auth": "Z2g="}}
}}}}"#
    );
    let podman = w.path("run/containers/0/auth.json");
    let docker = w.path("root/.docker/config.json");
    write_file(&podman, existing.as_bytes());
    write_file(&docker, existing.as_bytes());
    config(&w, &[H1], &[("podman", &podman), ("docker", &docker)]);
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    // containers/image: `H/ns` keys are per-namespace credentials (containers-auth.json(5)), more
    // specific than ours; scheme keys normalise to the bare host and are variants of it.
    assert_eq!(
        auth_keys(&podman),
        [
            format!("{H1}/team-a"),
            format!("{H1}/team-b/app"),
            "ghcr.io".to_string(),
            H1.to_string()
        ],
        "podman"
    );
    let v = read_json(&podman);
    assert_eq!(v["auths"][format!("{H1}/team-a")]["auth"], "dGVhbS1h");
    assert_eq!(v["auths"][format!("{H1}/team-b/app")]["auth"], "dGVhbS1i");
    assert_fresh_entry(&w, &podman, H1);
    // docker: any key whose host part is H is a fallback for H; we keep only the bare key.
    assert_eq!(auth_keys(&docker), ["ghcr.io", H1], "docker");
    assert_fresh_entry(&w, &docker, H1);
}

#[test]
fn a_podman_file_keeps_per_repository_keys_when_our_host_is_removed() {
    let w = World::new();
    let podman = w.path("run/containers/0/auth.json");
    write_file(
        &podman,
        format!("{{\"auths\": {{\"{H2}/team\": {{\"auth\": \"dGVhbQ==\"}}}}}}").as_bytes(),
    );
    config(&w, &[H1, H2], &[("podman", &podman)]);
    assert_eq!(code(&w.run(&["once"])), 0);
    config(&w, &[H1], &[("podman", &podman)]);
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert_eq!(auth_keys(&podman), [format!("{H2}/team"), H1.to_string()]);
}

#[test]
fn a_forged_state_cannot_remove_foreign_logins() {
    let w = World::new();
    let target = w.path("root/.docker/config.json");
    let existing = format!(
        r#"{{"auths": {{"index.docker.io": {{"auth": "aHViOmh1Yg=="}}, "https://index.docker.io/v1/": {{"auth": "djE6djE="}}, "ghcr.io": {{"auth": "Z2g6Z2g="}}, "{H2}": {{"auth": "b2xk"}}}}}}"#
    );
    write_file(&target, existing.as_bytes());
    let forged = serde_json::json!({
        "targets": {
            target.display().to_string(): {
                "index.docker.io": {"expires_at": 1},
                "ghcr.io": {"expires_at": 1},
                "https://index.docker.io/v1/": {"expires_at": 1},
                H2: {"expires_at": 1}
            }
        }
    });
    std::fs::write(
        state_dir(&w).join("state.json"),
        serde_json::to_vec(&forged).expect("json"),
    )
    .expect("write state");
    config(&w, &[H1], &[("docker", &target)]);
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let v = read_json(&target);
    assert_eq!(v["auths"]["index.docker.io"]["auth"], "aHViOmh1Yg==");
    assert_eq!(
        v["auths"]["https://index.docker.io/v1/"]["auth"],
        "djE6djE="
    );
    assert_eq!(v["auths"]["ghcr.io"]["auth"], "Z2g6Z2g=");
    assert!(
        v["auths"].get(H2).is_none(),
        "an ECR host the state names and the config no longer does is still cleaned up"
    );
    assert_fresh_entry(&w, &target, H1);
    let err = stderr(&out);
    assert!(
        err.contains("neither ECR hosts nor aliases") && err.contains("\"index.docker.io\" for"),
        "the ignored state entries are reported: {err}"
    );
    let saved = std::fs::read_to_string(w.path("state/state.json")).expect("state");
    assert!(
        !saved.contains("index.docker.io") && !saved.contains("ghcr.io"),
        "{saved}"
    );
}

/// Runs `once` over a state file holding `bad`; it must be kept intact beside a fresh state.
fn unreadable_state_is_kept(bad: &[u8], why: &str) {
    let w = World::new();
    let target = w.path("root/.docker/config.json");
    let dir = state_dir(&w);
    std::fs::write(dir.join("state.json"), bad).expect("write state");
    config(&w, &[H1], &[("docker", &target)]);
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert_fresh_entry(&w, &target, H1);
    let names = names_in(&dir);
    let aside: Vec<&String> = names
        .iter()
        .filter(|n| {
            n.strip_prefix("state.json.unreadable-")
                .is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    assert_eq!(aside.len(), 1, "{why}: moved aside once: {names:?}");
    assert!(
        std::fs::read(dir.join(aside[0])).expect("read aside") == bad,
        "{why}: the unreadable state is kept byte for byte"
    );
    let fresh: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).expect("new state"))
            .expect("the new state is JSON");
    assert!(
        fresh["targets"][target.display().to_string()]
            .get(H1)
            .is_some(),
        "{why}: {fresh}"
    );
    let err = stderr(&out);
    assert!(
        err.contains("moved aside") && err.contains(aside[0].as_str()),
        "{why}: says where it went: {err}"
    );
    // A second run reads the new state and moves nothing else aside.
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(names_in(&dir), names, "{why}: second run");
}

#[test]
fn a_corrupt_state_is_moved_aside_not_replaced() {
    unreadable_state_is_kept(
        b"{\"targets\": {\"/x\": {\"h\": {\"expires_at\": ",
        "corrupt",
    );
}

#[test]
fn an_oversized_state_is_moved_aside_not_replaced() {
    let mut big = b"{\"targets\": {}}".to_vec();
    big.resize(64 * 1024 * 1024 + 1, b' ');
    unreadable_state_is_kept(&big, "oversized");
}

#[test]
fn desired_for_removes_only_ecr_hosts_the_state_names() {
    use ecr_refresherd::config::{self, SystemAccounts};
    use ecr_refresherd::targets::files::desired_for;
    use ecr_refresherd::targets::state::Managed;
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    let target = "/root/.docker/config.json";
    let settings = config::parse(
        &format!("[[registry]]\nhost = \"{H1}\"\n[[target]]\npath = \"{target}\"\n"),
        None,
        &SystemAccounts,
    )
    .expect("config");
    let now = SystemTime::now();
    let gone = Managed::new(now - Duration::from_secs(60));
    let previous: BTreeMap<String, Managed> = [
        H1,
        H2,
        PUBLIC,
        "index.docker.io",
        "docker.io",
        "ghcr.io",
        "https://index.docker.io/v1/",
        "quay.io/org",
        "",
    ]
    .iter()
    .map(|h| (h.to_string(), gone))
    .collect();
    // H1 has no token this round (it failed) and expired: it goes too.
    let d = desired_for(
        &settings,
        &settings.targets[0],
        &BTreeMap::new(),
        Some(&previous),
        now,
    );
    assert!(d.set.is_empty());
    assert_eq!(
        d.remove.iter().map(String::as_str).collect::<Vec<_>>(),
        [H1, H2, PUBLIC]
    );
}

#[test]
fn desired_for_removes_only_aliases_the_state_marks_and_the_config_could_name() {
    use ecr_refresherd::config::{self, SystemAccounts};
    use ecr_refresherd::targets::files::desired_for;
    use ecr_refresherd::targets::state::Managed;
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    let target = "/root/.docker/config.json";
    let settings = config::parse(
        &format!(
            "[[registry]]\nhost = \"{H1}\"\naliases = [\"kept.internal\"]\n[[target]]\npath = \"{target}\"\n"
        ),
        None,
        &SystemAccounts,
    )
    .expect("config");
    let now = SystemTime::now();
    let previous: BTreeMap<String, Managed> = [
        ("kept.internal", true),
        ("gone.internal:5000", true),
        ("unmarked.internal", false),
        ("docker.io", true),
        ("https://gone.internal", true),
        (H2, false),
    ]
    .iter()
    .map(|(h, alias)| {
        let at = now + Duration::from_secs(3600);
        let m = if *alias {
            Managed::alias(at)
        } else {
            Managed::new(at)
        };
        (h.to_string(), m)
    })
    .collect();
    let d = desired_for(
        &settings,
        &settings.targets[0],
        &BTreeMap::new(),
        Some(&previous),
        now,
    );
    assert!(d.set.is_empty(), "no token this round");
    // Not expired: the configured alias stays as it is; the one no longer configured goes.
    assert_eq!(
        d.remove.iter().map(String::as_str).collect::<Vec<_>>(),
        [H2, "gone.internal:5000"]
    );
    assert_eq!(
        d.aliases.iter().map(String::as_str).collect::<Vec<_>>(),
        ["gone.internal:5000", "kept.internal"]
    );
}
