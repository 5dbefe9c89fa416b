//! `once` end to end: the real binary and the real AWS SDK against the fake AWS on loopback.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

use common::*;
use serde_json::json;

#[test]
fn once_writes_every_target_and_keeps_everything_else() {
    let w = World::new();
    let docker = w.path("root/.docker/config.json");
    std::fs::create_dir_all(docker.parent().unwrap()).unwrap();
    let existing = json!({
        "zeta-unknown": {"keep": [1, 2.5, "é\u{1}"]},
        "auths": {
            "docker.io": {"auth": "dXNlcjpwYXNz"},
            format!("https://{H1}"): {"auth": "c3RhbGU="},
            "ghcr.io": {"auth": "Z2g=", "email": "x@example.com"}
        },
        "credHelpers": {"gcr.io": "gcloud"},
        "proxies": {"default": {"httpProxy": "http://proxy:3128"}},
        "HttpHeaders": {"User-Agent": "tests"},
        "detachKeys": "ctrl-e,e"
    });
    std::fs::write(&docker, serde_json::to_string_pretty(&existing).unwrap()).unwrap();
    let podman = w.path("run/containers/0/auth.json");
    let third = w.path("home/other/.docker/config.json");
    std::fs::create_dir_all(third.parent().unwrap()).unwrap();
    w.config(&format!(
        r#"
[daemon]
state_dir = "{{dir}}/state"

[[registry]]
host = "{H1}"
[[registry]]
host = "{H2}"
targets = ["docker", "podman"]
[[registry]]
host = "{PUBLIC}"
targets = ["third"]

[[target]]
name = "docker"
path = "{}"
[[target]]
name = "podman"
path = "{}"
[[target]]
name = "third"
path = "{}"
mode = "0640"
"#,
        docker.display(),
        podman.display(),
        third.display()
    ));
    let out = w.run(&["once"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}\n{}", stderr(&out));
    for line in [
        format!("registry {H1}: ok"),
        format!("registry {H2}: ok"),
        format!("registry {PUBLIC}: ok"),
        format!(
            "target docker ({}): written (2 entries set, 0 removed)",
            docker.display()
        ),
        format!(
            "target podman ({}): written (2 entries set, 0 removed)",
            podman.display()
        ),
        format!(
            "target third ({}): written (2 entries set, 0 removed)",
            third.display()
        ),
    ] {
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }

    // Docker's file: our entries, the scheme variant gone, everything else equal and in order.
    assert_fresh_entry(&w, &docker, H1);
    assert_fresh_entry(&w, &docker, H2);
    let got = read_json(&docker);
    let keys: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "zeta-unknown",
            "auths",
            "credHelpers",
            "proxies",
            "HttpHeaders",
            "detachKeys"
        ]
    );
    for k in [
        "zeta-unknown",
        "credHelpers",
        "proxies",
        "HttpHeaders",
        "detachKeys",
    ] {
        assert_eq!(got[k], existing[k], "{k}");
    }
    let auths: Vec<&str> = got["auths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(auths, ["docker.io", "ghcr.io", H1, H2]);
    assert_eq!(got["auths"]["docker.io"], existing["auths"]["docker.io"]);
    assert_eq!(got["auths"]["ghcr.io"], existing["auths"]["ghcr.io"]);
    assert!(
        std::fs::read_to_string(&docker)
            .unwrap()
            .contains("\n\t\"auths\""),
        "tab indented"
    );
    assert_eq!(
        std::fs::metadata(&docker).unwrap().mode() & 0o777,
        0o644,
        "an existing file keeps its mode"
    );

    // Podman's file in a directory that did not exist (like /run/containers/0 after boot).
    assert_fresh_entry(&w, &podman, H1);
    assert_fresh_entry(&w, &podman, H2);
    assert_eq!(std::fs::metadata(&podman).unwrap().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(podman.parent().unwrap()).unwrap().mode() & 0o777,
        0o700
    );

    // The public registry and the configured mode.
    assert_fresh_entry(&w, &third, PUBLIC);
    assert_fresh_entry(&w, &third, H1);
    assert_eq!(std::fs::metadata(&third).unwrap().mode() & 0o777, 0o640);
    assert_eq!(w.fake.count(Service::Ecr), 1, "H1 and H2 share one call");
    assert_eq!(w.fake.count(Service::EcrPublic), 1);

    // Nothing but the target in its directory: no lock, backup or temp file.
    let names: Vec<_> = std::fs::read_dir(docker.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["config.json"]);

    // A second round with the same token content would not rewrite; a new token does, in place.
    let before = std::fs::metadata(&docker).unwrap().ino();
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert_ne!(
        std::fs::metadata(&docker).unwrap().ino(),
        before,
        "replaced by rename"
    );
}

#[test]
fn registries_in_one_region_share_one_call_and_regions_do_not() {
    let w = World::new();
    let target = w.path("config.json");
    let cfg = |hosts: &[&str]| {
        let mut t = format!(
            "[daemon]\nstate_dir = \"{{dir}}/state\"\n[[target]]\npath = \"{}\"\n",
            target.display()
        );
        for h in hosts {
            t += &format!("[[registry]]\nhost = \"{h}\"\n");
        }
        t
    };
    w.config(&cfg(&[H1, H2]));
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert_eq!(w.fake.count(Service::Ecr), 1);

    w.fake.reset_calls();
    w.config(&cfg(&[H1, H2, H3]));
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let regions: BTreeSet<String> = w
        .fake
        .calls()
        .iter()
        .filter(|c| c.service == Service::Ecr)
        .filter_map(|c| c.region.clone())
        .collect();
    assert_eq!(w.fake.count(Service::Ecr), 2);
    assert_eq!(
        regions,
        BTreeSet::from(["eu-west-1".to_string(), "us-east-1".to_string()])
    );
    for h in [H1, H2, H3] {
        assert_fresh_entry(&w, &target, h);
    }
}

#[test]
fn assumed_role_and_profile_are_used_in_the_host_region() {
    let w = World::new();
    let target = w.path("config.json");
    let aws_config = w.path("aws-config");
    std::fs::write(&aws_config, "[profile other]\naws_access_key_id = PROFILEKEYID\naws_secret_access_key = profile-secret-do-not-use\n").unwrap();
    w.config(&format!(
        r#"
[daemon]
state_dir = "{{dir}}/state"
[[target]]
path = "{}"
[[registry]]
host = "{H3}"
role_arn = "arn:aws:iam::111111111111:role/pull"
external_id = "ext-123"
session_name = "refresher-test"
[[registry]]
host = "{H1}"
profile = "other"
"#,
        target.display()
    ));
    let mut c = w.cmd();
    c.env("AWS_CONFIG_FILE", &aws_config)
        .arg("--config")
        .arg(w.path("config.toml"))
        .arg("once");
    let out = w.capture(c.output().unwrap());
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let calls = w.fake.calls();
    let sts: Vec<_> = calls.iter().filter(|c| c.service == Service::Sts).collect();
    assert_eq!(sts.len(), 1);
    assert_eq!(
        sts[0].role_arn.as_deref(),
        Some("arn:aws:iam::111111111111:role/pull")
    );
    assert_eq!(sts[0].external_id.as_deref(), Some("ext-123"));
    assert_eq!(sts[0].session_name.as_deref(), Some("refresher-test"));
    assert_eq!(
        sts[0].region.as_deref(),
        Some("eu-west-1"),
        "STS in the registry's region"
    );
    let ecr: Vec<_> = calls.iter().filter(|c| c.service == Service::Ecr).collect();
    assert_eq!(ecr.len(), 2);
    let eu = ecr
        .iter()
        .find(|c| c.region.as_deref() == Some("eu-west-1"))
        .expect("eu call");
    assert!(
        eu.access_key_id
            .as_deref()
            .unwrap_or("")
            .starts_with("FAKEASSUMED"),
        "{:?}",
        eu.access_key_id
    );
    let us = ecr
        .iter()
        .find(|c| c.region.as_deref() == Some("us-east-1"))
        .expect("us call");
    assert_eq!(us.access_key_id.as_deref(), Some("PROFILEKEYID"));
    assert_fresh_entry(&w, &target, H1);
    assert_fresh_entry(&w, &target, H3);
    w.capture_text("profile-secret-do-not-use".into());
}

#[test]
fn one_failing_region_does_not_stop_the_others() {
    let w = World::new();
    let target = w.path("config.json");
    w.config(&format!(
        "[daemon]\nstate_dir = \"{{dir}}/state\"\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\n[[registry]]\nhost = \"{PUBLIC}\"\n",
        target.display()
    ));
    w.fake.set_fault(Service::EcrPublic, Fault::AccessDenied);
    let out = w.run(&["once"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}");
    assert!(
        text.contains(&format!("registry {PUBLIC}: FAILED: access denied")),
        "{text}"
    );
    assert_fresh_entry(&w, &target, H1);
    assert!(read_json(&target)["auths"].get(PUBLIC).is_none());
}

#[test]
fn invalid_tokens_are_never_written() {
    for fault in [
        Fault::NotBase64,
        Fault::NoAwsPrefix,
        Fault::NoExpiresAt,
        Fault::MissingFields,
        Fault::NotJson,
    ] {
        let w = World::new();
        let target = w.path("config.json");
        std::fs::write(&target, "{\"auths\": {\"keep.example\": {}}}").unwrap();
        w.config(&format!("[daemon]\nstate_dir = \"{{dir}}/state\"\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\n", target.display()));
        w.fake.set_fault(Service::Ecr, fault.clone());
        let out = w.run(&["once"]);
        assert_eq!(code(&out), 1, "{fault:?}: {}", stdout(&out));
        assert!(
            stdout(&out).contains(&format!("registry {H1}: FAILED")),
            "{fault:?}: {}",
            stdout(&out)
        );
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "{\"auths\": {\"keep.example\": {}}}",
            "{fault:?}"
        );
    }
}

#[test]
fn an_already_expired_token_is_written_with_a_warning() {
    let w = World::new();
    let target = w.path("config.json");
    w.config(&format!("[daemon]\nstate_dir = \"{{dir}}/state\"\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\n", target.display()));
    w.fake.set_fault(Service::Ecr, Fault::ExpiresAtOffset(-600));
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert_fresh_entry(&w, &target, H1);
    let err = stderr(&out);
    assert!(
        err.contains("expired 10m") || err.contains("expired 9m"),
        "{err}"
    );
}

#[test]
fn removed_registries_lose_their_entries_and_foreign_entries_stay() {
    let w = World::new();
    let target = w.path("config.json");
    std::fs::write(
        &target,
        format!("{{\"auths\": {{\"{H3}\": {{\"auth\": \"Zm9yZWlnbg==\"}}}}}}"),
    )
    .unwrap();
    let cfg = |hosts: &[&str]| {
        let mut t = format!(
            "[daemon]\nstate_dir = \"{{dir}}/state\"\n[[target]]\npath = \"{}\"\n",
            target.display()
        );
        for h in hosts {
            t += &format!("[[registry]]\nhost = \"{h}\"\n");
        }
        t
    };
    w.config(&cfg(&[H1, H2]));
    assert_eq!(code(&w.run(&["once"])), 0);
    w.config(&cfg(&[H1]));
    let out = w.run(&["once"]);
    assert!(
        stdout(&out).contains("(1 entries set, 1 removed)"),
        "{}",
        stdout(&out)
    );
    let v = read_json(&target);
    assert!(
        v["auths"].get(H2).is_none(),
        "H2 was ours and is no longer configured"
    );
    assert_eq!(
        v["auths"][H3]["auth"], "Zm9yZWlnbg==",
        "never ours, never touched"
    );
    assert_fresh_entry(&w, &target, H1);
}

#[test]
fn expired_entries_are_removed_when_no_new_token_comes() {
    let w = World::new();
    let target = w.path("config.json");
    w.config(&format!("[daemon]\nstate_dir = \"{{dir}}/state\"\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{PUBLIC}\"\n", target.display()));
    w.fake
        .set_fault(Service::EcrPublic, Fault::ExpiresAtOffset(-5));
    assert_eq!(code(&w.run(&["once"])), 0);
    assert_fresh_entry(&w, &target, PUBLIC);
    w.fake.set_fault(Service::EcrPublic, Fault::Unavailable);
    let out = w.run(&["once"]);
    assert_eq!(code(&out), 1);
    assert!(
        read_json(&target)["auths"].get(PUBLIC).is_none(),
        "a stale public.ecr.aws entry breaks anonymous pulls"
    );
}

#[test]
fn ten_malformed_targets_stay_byte_identical() {
    let w = World::new();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            b"{\"auths\": {".to_vec(),
            "not valid JSON at line 1 column 11",
        ),
        (
            "missing-value",
            b"{\n\"auths\": {\"a\": }\n}".to_vec(),
            "not valid JSON at line 2",
        ),
        (
            "array",
            b"[1, 2]".to_vec(),
            "top level is not a JSON object",
        ),
        (
            "string",
            b"\"hello\"".to_vec(),
            "top level is not a JSON object",
        ),
        (
            "auths-array",
            b"{\"auths\": []}".to_vec(),
            "\"auths\" is not a JSON object",
        ),
        (
            "auths-number",
            b"{\"auths\": 3}".to_vec(),
            "\"auths\" is not a JSON object",
        ),
        ("two-values", b"{}{}".to_vec(), "trailing characters"),
        ("latin1", b"{\"x\": \"caf\xe9\"}".to_vec(), "not UTF-8"),
        (
            "comment",
            b"{ // docker does not allow comments\n}".to_vec(),
            "not valid JSON",
        ),
        (
            "trailing-comma",
            b"{\"auths\": {},}".to_vec(),
            "trailing comma",
        ),
        (
            "huge",
            vec![b' '; 4 * 1024 * 1024 + 10],
            "larger than 4 MiB",
        ),
    ];
    let mut cfg =
        format!("[daemon]\nstate_dir = \"{{dir}}/state\"\n[[registry]]\nhost = \"{H1}\"\n");
    for (name, bytes, _) in &cases {
        let p = w.path(&format!("{name}/config.json"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        cfg += &format!(
            "[[target]]\nname = \"{name}\"\npath = \"{}\"\n",
            p.display()
        );
    }
    let good = w.path("good/config.json");
    cfg += &format!(
        "[[target]]\nname = \"good\"\npath = \"{}\"\n",
        good.display()
    );
    w.config(&cfg);
    let out = w.run(&["once"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}");
    for (name, bytes, reason) in &cases {
        let p = w.path(&format!("{name}/config.json"));
        assert_eq!(&std::fs::read(&p).unwrap(), bytes, "{name} changed");
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("target {name} ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{text}"));
        assert!(
            line.contains("FAILED")
                && line.contains(&p.display().to_string())
                && line.contains(reason),
            "{name}: {line}"
        );
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["config.json"], "{name}: nothing left beside it");
    }
    assert_fresh_entry(&w, &good, H1);
}

#[test]
fn twenty_malformed_configs_exit_2_with_line_and_column() {
    let w = World::new();
    let reg = format!("[[registry]]\nhost = \"{H1}\"\n");
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{reg}role-arn = \"x\"\n"),
            ":3:1: unknown key \"role-arn\" in [[registry]]; did you mean \"role_arn\"?",
        ),
        (
            "[[registry]]\nhost = \"example.com\"\n".into(),
            ":2:8: invalid registry host",
        ),
        ("[daemon]\n".into(), ":1:1: no [[registry]]"),
        (
            format!("{reg}[[target]]\npath = \"relative.json\"\n"),
            ":4:8: path must be an absolute path",
        ),
        // A user that does not exist (yet) is no config error: that target waits for it (issue 9 #4).
        (
            format!("{reg}[[target]]\npath = \"/x/config.json\"\nuser = \"\"\n"),
            ":5:8: user must not be empty",
        ),
        // Durations are bounded: a huge one used to pass `check` and crash `run` (issue 9 #8).
        (
            format!("[daemon]\nmin_interval = \"500000000000y\"\n{reg}"),
            ":2:16: min_interval must be at most 12h",
        ),
        (
            format!("[daemon]\nretry_max = \"10000000000000000000s\"\n{reg}"),
            ":2:13: retry_max",
        ),
        // A mode that lets others write the credentials is refused (issue 9 #19).
        (
            format!("{reg}[[target]]\npath = \"/x/config.json\"\nmode = \"0666\"\n"),
            ":5:8: mode 0666 would let others replace the credentials",
        ),
        (
            format!("{reg}[[target]]\npath = \"/x/config.json\"\nmode = \"0620\"\n"),
            ":5:8: mode 0620 would let others replace",
        ),
        (
            format!("{reg}targets = [\"nope\"]\n"),
            ":3:12: unknown target \"nope\"",
        ),
        (
            format!("{reg}external_id = \"e\"\n"),
            ":3:15: external_id needs role_arn",
        ),
        (format!("[daemon]\njitter = 1.5\n{reg}"), ":2:10: jitter"),
        (format!("[daemon]\nrefresh_at = 0\n{reg}"), ":2:1"),
        (
            format!("[daemon]\nretry_max = \"forever\"\n{reg}"),
            ":2:13: retry_max: \"forever\" is not a duration",
        ),
        (
            format!("[daemon]\nmin_interval = \"0s\"\n{reg}"),
            ":2:16: min_interval must be longer than zero",
        ),
        (
            format!("{reg}[[target]]\npath = \"/x/config.json\"\nmode = \"999\"\n"),
            ":5:8: mode must be an octal string",
        ),
        (format!("{reg}{reg}"), ":4:8: duplicate registry host"),
        (format!("{reg}host = \"x\"\n"), ":3:1"),
        (
            format!(
                "{reg}[[target]]\nname = \"a\"\npath = \"/a/c.json\"\n[[target]]\nname = \"a\"\npath = \"/b/c.json\"\n"
            ),
            ":7:8: duplicate target name",
        ),
        (
            format!("[deamon]\n{reg}"),
            ":1:2: unknown key \"deamon\" at the top level; did you mean \"daemon\"?",
        ),
        (format!("{reg}role_arn = 42\n"), ":3:12"),
        (
            format!("[daemon]\nsocket = \"relative.sock\"\n{reg}"),
            ":2:10: socket must be an absolute path",
        ),
        (
            format!("{reg}endpoint_url = \"ftp://x\"\n"),
            ":3:16: endpoint_url must start with https://",
        ),
        ("[[registry]\nhost = 1\n".into(), ":1:"),
        (
            format!("{reg}[[target]]\npath = \"/x/config.json\"\n[target.extra]\n"),
            ":",
        ),
        (
            format!("[daemon]\nsocket_group = \"no-such-group-here\"\n{reg}"),
            ":2:16: unknown group",
        ),
        // A Portainer URL must be https (issue 11).
        (
            format!(
                "{reg}[[target]]\npath = \"/x/config.json\"\n[[portainer]]\nurl = \"x\"\napi_key_file = \"/k\"\n"
            ),
            ":6:7: url \"x\": must start with https://",
        ),
        // A header names a top-level table, whatever table came before it (issue 10).
        (
            format!("{reg}[[target]]\npath = \"/x/config.json\"\n[[registries]]\nhost = \"x\"\n"),
            ":5:3: unknown key \"registries\" at the top level; did you mean \"registry\"? The top-level tables are: daemon, registry, target",
        ),
        // A key below a header belongs to that table (TOML's rule).
        (
            format!("{reg}[[target]]\npath = \"/x/config.json\"\nlog_level = \"debug\"\n"),
            ":5:1: unknown key \"log_level\" in [[target]]; expected one of: name, path, user, mode",
        ),
    ];
    assert!(cases.len() >= 20);
    for (text, want) in &cases {
        let p = w.config(text);
        let out = w.run(&["once"]);
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{text:?}\n{err}");
        let located = format!("{}{want}", p.display());
        assert!(
            err.contains(&located),
            "{text:?}: want {located:?} in\n{err}"
        );
        assert_eq!(
            w.fake.count(Service::Ecr),
            0,
            "no API call with a bad config"
        );
    }
}

#[test]
fn a_missing_config_file_is_an_error_not_imds() {
    let w = World::new();
    let mut c = w.cmd();
    c.args(["--config", "/nonexistent/ecr-refresherd.toml", "once"]);
    let out = w.capture(c.output().unwrap());
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("/nonexistent/ecr-refresherd.toml: cannot read"),
        "{}",
        stderr(&out)
    );
    assert_eq!(w.fake.count(Service::Imds), 0);
}

#[test]
fn zero_config_uses_the_instance_identity() {
    if std::path::Path::new("/etc/ecr-refresherd/config.toml").exists() {
        eprintln!("SKIPPED: this machine has /etc/ecr-refresherd/config.toml");
        return;
    }
    let w = World::new();
    w.fake.set_imds_identity("333333333333", "ap-south-1");
    // `check` so nothing is written to this machine's /root/.docker.
    let mut c = w.cmd();
    c.env_remove("AWS_EC2_METADATA_DISABLED").arg("check");
    let out = w.capture(c.output().unwrap());
    assert!(
        stdout(&out).contains(
            "using this instance's registry 333333333333.dkr.ecr.ap-south-1.amazonaws.com"
        ),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        w.fake.count(Service::Imds) >= 2,
        "token + identity document"
    );

    // A config whose every line is commented out (as packaged) means the same.
    w.config("# [[registry]]\n# host = \"123456789012.dkr.ecr.us-east-1.amazonaws.com\"\n");
    let mut c = w.cmd();
    c.env_remove("AWS_EC2_METADATA_DISABLED")
        .arg("--config")
        .arg(w.path("config.toml"))
        .arg("check");
    let out = w.capture(c.output().unwrap());
    assert!(
        stdout(&out).contains(
            "using this instance's registry 333333333333.dkr.ecr.ap-south-1.amazonaws.com"
        ),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );

    w.fake.set_fault(Service::Imds, Fault::DropConnection);
    let mut c = w.cmd();
    c.env_remove("AWS_EC2_METADATA_DISABLED").arg("check");
    let out = w.capture(c.output().unwrap());
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("write a config file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn stray_temp_files_are_removed_at_the_next_start() {
    let w = World::new();
    let target = w.path("d/config.json");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let stray = w.path("d/.config.json.ecr-refresherd-00000000deadbeef.tmp");
    let foreign = w.path("d/.config.json.someone-else.tmp");
    std::fs::write(&stray, "{").unwrap();
    std::fs::write(&foreign, "{").unwrap();
    w.config(&format!("[daemon]\nstate_dir = \"{{dir}}/state\"\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\n", target.display()));
    assert_eq!(code(&w.run(&["once"])), 0);
    assert!(!stray.exists());
    assert!(foreign.exists(), "not ours");
}

#[test]
fn no_secret_in_any_output_even_at_trace_level() {
    let w = World::new();
    let target = w.path("config.json");
    w.config(&format!(
        "[daemon]\nstate_dir = \"{{dir}}/state\"\nlog_level = \"trace\"\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\nrole_arn = \"arn:aws:iam::111111111111:role/r\"\n[[registry]]\nhost = \"{PUBLIC}\"\n",
        target.display()
    ));
    let mut c = w.cmd();
    c.env("RUST_LOG", "trace")
        .arg("--config")
        .arg(w.path("config.toml"))
        .arg("once");
    let out = w.capture(c.output().unwrap());
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(stderr(&out).len() > 1000, "trace logging produced output");
    assert!(!w.fake.secrets().is_empty());
    w.assert_no_secrets();
}

#[test]
fn the_secret_scan_catches_a_leak() {
    let w = World::new();
    let target = w.path("config.json");
    w.config(&format!("[daemon]\nstate_dir = \"{{dir}}/state\"\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\n", target.display()));
    assert_eq!(code(&w.run(&["once"])), 0);
    w.assert_no_secrets();
    let pw = password_of(&assert_fresh_entry(&w, &target, H1));
    w.capture_text(format!("a careless log line with {pw} in it"));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.assert_no_secrets()));
    assert!(caught.is_err(), "the scan missed a leaked password");
    w.clear_captured();
}
