//! `check`: validates the config and diagnoses each target without calling AWS.

mod common;

use std::os::unix::fs::symlink;

use common::*;

fn one_target(w: &World, path: &std::path::Path, extra: &str) {
    w.config(&format!(
        "[daemon]\nstate_dir = \"{{dir}}/state\"\n[[registry]]\nhost = \"{H1}\"\n[[target]]\npath = \"{}\"\n{extra}",
        path.display()
    ));
}

#[test]
fn clean_config_exits_0_without_calling_aws() {
    let w = World::new();
    let target = w.path("d/config.json");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, "{\"auths\": {}}").unwrap();
    chmod(&target, 0o600);
    one_target(&w, &target, "");
    let out = w.run(&["check"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("target {}: ok", target.display())),
        "{}",
        stdout(&out)
    );
    assert!(w.fake.calls().is_empty(), "check never calls AWS");
}

#[test]
fn creds_store_and_cred_helpers_hiding_our_entry_warn() {
    let w = World::new();
    let target = w.path("d/config.json");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(
        &target,
        format!("{{\"credsStore\": \"desktop\", \"credHelpers\": {{\"{H1}\": \"ecr-login\"}}}}"),
    )
    .unwrap();
    chmod(&target, 0o600);
    one_target(&w, &target, "");
    let out = w.run(&["check"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}");
    assert!(
        text.contains("warning: \"credsStore\": \"desktop\" is set"),
        "{text}"
    );
    assert!(
        text.contains(&format!("\"credHelpers\" has \"{H1}\"")),
        "{text}"
    );
    // The exact snippet that sends the host to this daemon's helper instead.
    let snippet = format!("\"credHelpers\": {{\"{H1}\": \"ecr-refresherd\"}}");
    assert!(text.contains(&snippet), "{text}");
    // With it in place, nothing more to say.
    std::fs::write(
        &target,
        format!("{{\"credsStore\": \"desktop\", {snippet}}}"),
    )
    .unwrap();
    let out = w.run(&["check"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
}

#[test]
fn broad_mode_and_symlinked_target() {
    let w = World::new();
    let target = w.path("d/config.json");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, "{}").unwrap();
    chmod(&target, 0o644);
    one_target(&w, &target, "");
    let out = w.run(&["check"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("mode 0644 lets others read"),
        "{}",
        stdout(&out)
    );

    let link = w.path("d/link.json");
    symlink(&target, &link).unwrap();
    one_target(&w, &link, "");
    let out = w.run(&["check"]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("ERROR: ") && stdout(&out).contains("the file is a symbolic link"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn unparseable_target_is_an_error() {
    let w = World::new();
    let target = w.path("d/config.json");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, "{\n  \"auths\": [\n").unwrap();
    chmod(&target, 0o600);
    one_target(&w, &target, "");
    let out = w.run(&["check"]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("left untouched: not valid JSON at line 3"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn bad_config_exits_2() {
    let w = World::new();
    w.config("[[registry]]\nhost = \"nope\"\n");
    let out = w.run(&["check"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("config.toml:2:8: invalid registry host \"nope\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn podman_run_file_shadowing_the_docker_config_warns() {
    require_root!();
    let w = World::new();
    let home = w.path("home/user");
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    for d in [home.clone(), home.join(".docker")] {
        chown(&d, 4242, 4242);
    }
    let target = home.join(".docker/config.json");
    let run = w.path("run");
    let podman = run.join("containers/4242/auth.json");
    std::fs::create_dir_all(podman.parent().unwrap()).unwrap();
    chown(podman.parent().unwrap(), 4242, 4242);
    std::fs::write(
        &podman,
        format!("{{\"auths\": {{\"https://{H1}\": {{\"auth\": \"c3RhbGU=\"}}}}}}"),
    )
    .unwrap();
    chown(&podman, 4242, 4242);
    one_target(&w, &target, "");
    let mut c = w.cmd();
    c.arg("--config")
        .arg(w.path("config.toml"))
        .arg("--run-dir")
        .arg(&run)
        .arg("check");
    let out = w.capture(c.output().unwrap());
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}");
    assert!(
        text.contains(&format!(
            "{} holds another entry for {H1}; podman reads that file first",
            podman.display()
        )),
        "{text}"
    );

    // Once that file is a target too, its entry is ours and the warning goes.
    w.config(&format!(
        "[daemon]\nstate_dir = \"{{dir}}/state\"\n[[registry]]\nhost = \"{H1}\"\n[[target]]\npath = \"{}\"\n[[target]]\npath = \"{}\"\n",
        target.display(),
        podman.display()
    ));
    let mut c = w.cmd();
    c.arg("--config")
        .arg(w.path("config.toml"))
        .arg("--run-dir")
        .arg(&run)
        .arg("check");
    let out = w.capture(c.output().unwrap());
    assert!(
        !stdout(&out).contains("holds another entry"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_user_who_cannot_reach_the_file_warns() {
    require_root!();
    let w = World::new();
    // A root-only directory on the way: user 4242 cannot enter it.
    chmod(w.dir.path(), 0o700);
    let home = w.path("home/user");
    std::fs::create_dir_all(&home).unwrap();
    chown(&home, 4242, 4242);
    let target = home.join(".docker/config.json");
    one_target(&w, &target, "");
    let out = w.run(&["check"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}");
    assert!(
        text.contains(&format!(
            "user 4242 cannot enter {}",
            w.dir.path().display()
        )),
        "{text}"
    );
}
