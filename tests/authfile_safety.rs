//! `once` end to end on auth files we must not misread: duplicate keys, podman's per-repository keys.

mod common;

use std::path::Path;

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
