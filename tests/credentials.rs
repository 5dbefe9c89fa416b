//! The docker credential helper and the kubelet credential provider: answered by the real daemon
//! from memory over its socket, for root only.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

fn with_stdin(mut c: Command, input: &str) -> Output {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    child.wait_with_output().expect("wait")
}

/// `credential-helper ACTION` against the test daemon's socket. Its stdout may hold the secret
/// (that is its job): only stderr is kept for the leak scan.
fn helper(w: &World, action: &str, input: &str) -> Output {
    let mut c = w.cmd();
    c.args(["credential-helper", action, "--socket"])
        .arg(w.socket());
    let out = with_stdin(c, input);
    w.capture_text(stderr(&out));
    out
}

fn provider(w: &World, input: &str) -> Output {
    let mut c = w.cmd();
    c.args(["credential-provider", "--socket"]).arg(w.socket());
    let out = with_stdin(c, input);
    w.capture_text(stderr(&out));
    out
}

/// Waits until the daemon holds a credential for each host (root's helper gets it): the fake having
/// issued a token is not enough, the daemon may not have taken it in yet.
fn wait_held(w: &World, hosts: &[&str]) {
    for h in hosts {
        assert!(
            wait_for(Duration::from_secs(30), || code(&helper(w, "get", h)) == 0),
            "the daemon never held a credential for {h}"
        );
    }
}

fn current_password(w: &World) -> String {
    w.fake
        .issued_passwords()
        .last()
        .cloned()
        .expect("a token was issued")
}

#[test]
fn root_gets_the_credential_from_memory_without_an_api_call() {
    let w = World::new();
    w.one_target_config(&[H1], "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    wait_held(&w, &[H1]);
    let calls = w.fake.count(Service::Ecr);
    for url in [
        H1.to_string(),
        format!("https://{H1}"),
        format!("https://{H1}/v2/"),
    ] {
        let out = helper(&w, "get", &format!("{url}\n"));
        assert_eq!(code(&out), 0, "{}", stdout(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(v["ServerURL"], url.as_str());
        assert_eq!(v["Username"], "AWS");
        assert_eq!(v["Secret"], current_password(&w).as_str());
    }
    assert_eq!(
        w.fake.count(Service::Ecr),
        calls,
        "the helper made an API call"
    );
    // Under docker's name, through a link to the executable.
    let link = w.path("docker-credential-ecr-refresherd");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let mut c = w.cmd();
    c.env("ECR_REFRESHERD_SOCKET", w.socket());
    let mut c2 = Command::new(&link);
    c2.env_clear()
        .envs(c.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .arg("get");
    let out = with_stdin(c2, H1);
    w.capture_text(stderr(&out));
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("\"Username\":\"AWS\""));
    // An unknown host: the protocol's "not found", on stdout, exit 1.
    let out = helper(&w, "get", "registry.example.com");
    assert_eq!(code(&out), 1);
    assert_eq!(
        stdout(&out).trim(),
        "credentials not found in native keychain"
    );
    // store and erase succeed and change nothing; list says nothing; version.
    let before = std::fs::read(w.path("d/config.json")).unwrap();
    let out = helper(
        &w,
        "store",
        &format!(r#"{{"ServerURL":"{H1}","Username":"AWS","Secret":"typed"}}"#),
    );
    assert_eq!(code(&out), 0);
    let out = helper(&w, "erase", H1);
    assert_eq!(code(&out), 0);
    assert_eq!(std::fs::read(w.path("d/config.json")).unwrap(), before);
    assert_eq!(
        helper(&w, "get", H1).status.code(),
        Some(0),
        "erase changed nothing"
    );
    // list: the registries root may get (all it holds), with user AWS.
    let out = helper(&w, "list", "");
    assert_eq!(
        (code(&out), stdout(&out).trim()),
        (0, format!(r#"{{"{H1}":"AWS"}}"#).as_str())
    );
    let out = helper(&w, "version", "");
    assert!(
        stdout(&out).starts_with("ecr-refresherd "),
        "{}",
        stdout(&out)
    );
    let out = helper(&w, "fly", "");
    assert_eq!(code(&out), 1);
    drop(d);
}

#[test]
fn a_user_gets_nothing_and_is_logged() {
    require_root!();
    let w = World::new();
    w.one_target_config(&[H1], "socket_group = \"4545\"\n");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    wait_held(&w, &[H1]);
    // A member of socket_group may ask for status, not for a secret.
    let run_as = |uid: &str, groups: &str| {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            &format!("--groups={groups}"),
            "--",
            BIN,
            "credential-helper",
            "get",
            "--socket",
        ])
        .arg(w.socket())
        .env_clear();
        let out = with_stdin(c, H1);
        w.capture(out)
    };
    let out = run_as("4343", "4545");
    assert_eq!(code(&out), 1);
    assert_eq!(
        stdout(&out).trim(),
        "credentials not found in native keychain"
    );
    assert!(
        wait_for(Duration::from_secs(10), || d
            .log_text()
            .contains("credential request denied")),
        "{}",
        d.log_text()
    );
    assert!(
        d.log_text().contains("uid=4343") || d.log_text().contains("uid=\"4343\""),
        "{}",
        d.log_text()
    );
    // Outside the group: the socket itself refuses.
    let out = run_as("4242", "4242");
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("permission denied"),
        "{}",
        stdout(&out)
    );
    // The kubelet provider as that member: an error, no auth.
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=4343",
        "--regid=4343",
        "--groups=4545",
        "--",
        BIN,
        "credential-provider",
        "--socket",
    ])
    .arg(w.socket())
    .env_clear();
    let out = w.capture(with_stdin(
        c,
        &format!(r#"{{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"{H1}/app:v1"}}"#),
    ));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["auth"], serde_json::json!({}));
    drop(d);
}

#[test]
fn a_daemon_that_is_down_is_a_clear_error() {
    let w = World::new();
    w.one_target_config(&[H1], "");
    for action in ["get", "list"] {
        let out = helper(&w, action, H1);
        assert_eq!(code(&out), 1, "{action}");
        assert!(
            stdout(&out).contains("ecr-refresherd is not running"),
            "{action}: {}",
            stdout(&out)
        );
    }
    let out = provider(
        &w,
        &format!(
            r#"{{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"{H1}/a"}}"#
        ),
    );
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("ecr-refresherd is not running"),
        "{}",
        stderr(&out)
    );
}

/// Requests as kubelet sends them (v1 and v1beta1), checked against the fields and types of
/// `credentialprovider.kubelet.k8s.io/v1` `CredentialProviderResponse`.
#[test]
fn the_kubelet_provider_answers_recorded_requests() {
    let w = World::new();
    w.one_target_config(&[H1], "");
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    wait_held(&w, &[H1]);
    for version in ["v1", "v1beta1"] {
        let api = format!("credentialprovider.kubelet.k8s.io/{version}");
        let out = provider(
            &w,
            &format!(
                r#"{{"kind":"CredentialProviderRequest","apiVersion":"{api}","image":"{H1}/team/app@sha256:0123"}}"#
            ),
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let obj = v.as_object().unwrap();
        let keys: std::collections::BTreeSet<_> = obj.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "apiVersion",
                "auth",
                "cacheDuration",
                "cacheKeyType",
                "kind"
            ]
            .into()
        );
        assert_eq!(v["apiVersion"], api.as_str());
        assert_eq!(v["kind"], "CredentialProviderResponse");
        assert_eq!(v["cacheKeyType"], "Registry");
        // Half the remaining life of a 12 h token.
        let secs: u64 = v["cacheDuration"]
            .as_str()
            .unwrap()
            .trim_end_matches('s')
            .parse()
            .unwrap();
        assert!((6 * 3600 - 120..=6 * 3600).contains(&secs), "{secs}");
        let auth = v["auth"].as_object().unwrap();
        assert_eq!(auth.len(), 1);
        assert_eq!(auth[H1]["username"], "AWS");
        assert_eq!(auth[H1]["password"], current_password(&w).as_str());
        assert_eq!(auth[H1].as_object().unwrap().len(), 2);
    }
    // An image of a registry the daemon does not hold: an empty auth, not cached, exit 0.
    for image in [
        "registry.example.com/app:v1",
        "nginx:latest",
        "library/nginx",
    ] {
        let out = provider(
            &w,
            &format!(
                r#"{{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"{image}"}}"#
            ),
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["auth"], serde_json::json!({}), "{image}");
        assert_eq!(v["cacheDuration"], "0s");
    }
    // Malformed requests: exit 1, a reason on stderr, nothing on stdout.
    for bad in [
        "not json",
        r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v2","kind":"CredentialProviderRequest","image":"x"}"#,
        r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"Other","image":"x"}"#,
        r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest"}"#,
    ] {
        let out = provider(&w, bad);
        assert_eq!(code(&out), 1, "{bad}");
        assert!(out.stdout.is_empty());
        assert!(
            stderr(&out).contains("credential-provider:"),
            "{}",
            stderr(&out)
        );
    }
    drop(d);
}

/// Grants on the helper socket (0666, beside the control socket): by uid, by a group the kernel
/// says the caller is in, and to the `user` of a target the registry is written to; nobody else,
/// and only for the registries granted.
#[test]
fn grants_decide_who_gets_which_registry() {
    require_root!();
    let w = World::new();
    let home = w.path("home5151");
    std::fs::create_dir(&home).unwrap();
    chown(&home, 5151, 5151);
    w.config(&format!(
        "{}\n[[target]]\nname = \"t\"\npath = \"{}\"\n[[target]]\nname = \"u\"\npath = \"{}\"\nuser = \"5151\"\n\
         [[registry]]\nhost = \"{H1}\"\nusers = [\"4242\"]\ngroups = [\"4545\"]\n\
         [[registry]]\nhost = \"{H3}\"\ntargets = [\"t\"]\n",
        w.daemon_section(),
        w.path("d/config.json").display(),
        home.join("config.json").display()
    ));
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    wait_held(&w, &[H1, H3]);
    let sock = w.path("helper.sock");
    assert!(wait_for(Duration::from_secs(10), || sock.exists()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o666
    );
    // `credential-helper ACTION` as `uid` with these supplementary groups (none if empty).
    let helper_as = |uid: u32, groups: &str, action: &str, input: &str| -> Output {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .args(if groups.is_empty() {
                vec!["--clear-groups".to_string()]
            } else {
                vec![format!("--groups={groups}")]
            })
            .args(["--", BIN, "credential-helper", action, "--socket"])
            .arg(&sock)
            .env_clear();
        let out = with_stdin(c, input);
        w.capture_text(stderr(&out));
        out
    };
    let get = |uid: u32, groups: &str, host: &str| helper_as(uid, groups, "get", host);
    let ok = |o: &Output| {
        code(o) == 0
            && serde_json::from_slice::<serde_json::Value>(&o.stdout).is_ok_and(|v| {
                v["Username"] == "AWS" && v["Secret"].as_str().is_some_and(|s| !s.is_empty())
            })
    };
    let not_found =
        |o: &Output| code(o) == 1 && stdout(o).trim() == "credentials not found in native keychain";
    for (who, uid, groups, host, allowed) in [
        ("a granted uid", 4242, "", H1, true),
        ("a granted uid, another registry", 4242, "", H3, false),
        ("a member of a granted group", 4646, "4545", H1, true),
        ("the same uid outside the group", 4646, "", H1, false),
        ("the user of a target H1 is written to", 5151, "", H1, true),
        (
            "that user, a registry not written to their target",
            5151,
            "",
            H3,
            false,
        ),
        ("anyone else", 4343, "4343", H1, false),
        ("root", 0, "0", H3, true),
    ] {
        let out = get(uid, groups, host);
        assert!(
            if allowed { ok(&out) } else { not_found(&out) },
            "{who}: exit {}, {}{}",
            code(&out),
            if allowed { String::new() } else { stdout(&out) },
            stderr(&out)
        );
    }
    assert!(wait_for(Duration::from_secs(10), || d
        .log_text()
        .contains("credential request denied")));
    // list: exactly the registries each caller may get; nothing for a caller granted nothing.
    let list = |uid: u32, groups: &str| -> Vec<String> {
        let out = helper_as(uid, groups, "list", "");
        assert_eq!(code(&out), 0, "list as {uid}: {}", stdout(&out));
        let v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&out.stdout).expect("a JSON object");
        assert!(v.values().all(|u| u == "AWS"), "{v:?}");
        v.keys().cloned().collect()
    };
    assert_eq!(list(4242, ""), [H1]);
    assert_eq!(list(4646, "4545"), [H1]);
    assert_eq!(list(5151, ""), [H1]);
    assert_eq!(list(4343, "4343"), Vec::<String>::new());
    let mut all = vec![H1.to_string(), H3.to_string()];
    all.sort();
    assert_eq!(list(0, "0"), all);
    // The helper socket answers credential requests only, whoever asks.
    let mut c = w.cmd();
    c.args(["status", "--socket"]).arg(&sock);
    let out = w.capture(c.output().unwrap());
    assert_ne!(code(&out), 0);
    assert!(
        stderr(&out).contains("credential requests only"),
        "{}",
        stderr(&out)
    );
    drop(d);
}

/// Requests shaped as kubelet writes them (tests/kubelet/requests.jsonl, including the service
/// account fields of kubelet 1.33+), each answered with a response that validates against the
/// published v1 schema (tests/kubelet/credentialprovider-v1.schema.json); a registry's alias
/// is answered like its host, any other image gets an empty `auth`.
#[test]
fn provider_answers_validate_against_the_published_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/kubelet/credentialprovider-v1.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let invalid = |v: &serde_json::Value| -> Vec<String> {
        validator.iter_errors(v).map(|e| e.to_string()).collect()
    };
    // The schema is not vacuous: what kubelet would not use is refused.
    let good = serde_json::json!({
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        "kind": "CredentialProviderResponse",
        "cacheKeyType": "Registry",
        "cacheDuration": "21600s",
        "auth": {"h.example:5000": {"username": "AWS", "password": "x"}}
    });
    assert_eq!(invalid(&good), Vec::<String>::new());
    for (path, bad) in [
        ("/cacheKeyType", serde_json::Value::Null),
        ("/cacheKeyType", "registry".into()),
        ("/cacheDuration", "6 hours".into()),
        ("/kind", "CredentialProviderRequest".into()),
        ("/apiVersion", "credentialprovider.kubelet.k8s.io/v2".into()),
        ("/extra", "x".into()),
        ("/auth/h.example:5000/password", serde_json::Value::Null),
        ("/auth/h.example:5000/password", 7.into()),
    ] {
        let mut v = good.clone();
        let (parent, key) = path.rsplit_once('/').unwrap();
        let obj = v.pointer_mut(parent).unwrap().as_object_mut().unwrap();
        if bad.is_null() {
            obj.remove(key);
        } else {
            obj.insert(key.to_string(), bad);
        }
        assert!(!invalid(&v).is_empty(), "{path} accepted: {v}");
    }

    let w = World::new();
    let target = w.path("d/config.json");
    w.config(&format!(
        "{}\n[[target]]\npath = \"{}\"\n[[registry]]\nhost = \"{H1}\"\naliases = [\"mirror.internal:5000\"]\n",
        w.daemon_section(),
        target.display()
    ));
    let d = w.spawn_daemon(&[]);
    d.wait_ready();
    wait_held(&w, &[H1]);
    let requests = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/kubelet/requests.jsonl"
    ))
    .unwrap();
    let mut answered = 0;
    for line in requests.lines() {
        let request = line.replace("@H1@", H1);
        let image = serde_json::from_str::<serde_json::Value>(&request).unwrap()["image"]
            .as_str()
            .unwrap()
            .to_string();
        let out = provider(&w, &format!("{request}\n"));
        assert_eq!(code(&out), 0, "{image}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(invalid(&v), Vec::<String>::new(), "{image}: {v}");
        let auth = v["auth"].as_object().unwrap();
        let host = image.split('/').next().unwrap();
        if host == H1 || host == "mirror.internal:5000" {
            assert_eq!(auth.keys().collect::<Vec<_>>(), [host], "{image}");
            assert_eq!(auth[host]["username"], "AWS");
            assert_eq!(auth[host]["password"], current_password(&w).as_str());
            assert_eq!(v["cacheKeyType"], "Registry");
            answered += 1;
        } else {
            assert!(auth.is_empty(), "{image}: {v}");
            assert_eq!(v["cacheDuration"], "0s");
        }
    }
    assert_eq!(answered, 5);
    // The alias is in the file too, with the host's credential.
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&target).unwrap()).unwrap();
    assert_eq!(
        file["auths"]["mirror.internal:5000"], file["auths"][H1],
        "{file}"
    );
    // And the docker credential helper answers for it.
    let out = helper(&w, "get", "https://mirror.internal:5000\n");
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["Secret"], current_password(&w).as_str());
    drop(d);
}
